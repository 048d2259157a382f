/**
 * AWS Signature Version 4 for the requests DirectPut sends itself (chunk PUTs and GETs): one
 * method, a path already encoded as it goes on the wire, no query string, an unsigned payload
 * (`x-amz-content-sha256: UNSIGNED-PAYLOAD`, which the caller sets). Every header given is
 * signed (the callers give only signable ones: host, content type and length, checksums,
 * conditions, range), with `x-amz-date` and, for temporary credentials, `x-amz-security-token`.
 *
 * Why not @smithy/signature-v4, whose output this matches byte for byte (the unit test signs the
 * same requests with both): per request it clones the request, normalises every header through
 * generic paths, and derives its signing-key cache key with an HMAC of the credentials, about
 * 6% of the engine thread's time in the upload of many small files (one PUT each). Here the
 * signing key is kept per day, region, service and credentials, and a request costs one SHA-256
 * and one HMAC.
 */

import { createHash, createHmac } from 'node:crypto';

export interface SigningCredentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface SigV4Options {
  /** The SDK client's provider (cached and refreshed by the SDK). */
  readonly credentials: () => Promise<SigningCredentials>;
  readonly region: string;
  readonly service: string;
}

const ALGORITHM = 'AWS4-HMAC-SHA256';

export class SigV4 {
  private key: { shortDate: string; accessKeyId: string; secretAccessKey: string; key: Buffer } | undefined;

  constructor(private readonly o: SigV4Options) {}

  /**
   * The headers to send: `headers` (names in lower case) with `x-amz-date`, the session token if
   * any, and `authorization`, for `method` on `path` at time `date`.
   */
  async sign(
    method: string,
    path: string,
    headers: Readonly<Record<string, string>>,
    date: Date,
  ): Promise<Record<string, string>> {
    const creds = await this.o.credentials();
    const amzDate = date
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const shortDate = amzDate.slice(0, 8);
    const out: Record<string, string> = { ...headers, 'x-amz-date': amzDate };
    if (creds.sessionToken) out['x-amz-security-token'] = creds.sessionToken;
    const names = Object.keys(out).sort();
    let canonical = `${method}\n${path}\n\n`;
    for (const name of names) canonical += `${name}:${out[name]!.trim().replace(/\s+/g, ' ')}\n`;
    const signedHeaders = names.join(';');
    canonical += `\n${signedHeaders}\n${out['x-amz-content-sha256'] ?? 'UNSIGNED-PAYLOAD'}`;
    const scope = `${shortDate}/${this.o.region}/${this.o.service}/aws4_request`;
    const toSign = `${ALGORITHM}\n${amzDate}\n${scope}\n${createHash('sha256').update(canonical).digest('hex')}`;
    const signature = createHmac('sha256', this.signingKey(creds, shortDate)).update(toSign).digest('hex');
    out.authorization = `${ALGORITHM} Credential=${creds.accessKeyId}/${scope}, SignedHeaders=${signedHeaders}, Signature=${signature}`;
    return out;
  }

  private signingKey(creds: SigningCredentials, shortDate: string): Buffer {
    const k = this.key;
    if (k && k.shortDate === shortDate && k.accessKeyId === creds.accessKeyId && k.secretAccessKey === creds.secretAccessKey)
      return k.key;
    let key: Buffer = Buffer.from(`AWS4${creds.secretAccessKey}`, 'utf8');
    for (const part of [shortDate, this.o.region, this.o.service, 'aws4_request'])
      key = createHmac('sha256', key).update(part).digest();
    this.key = { shortDate, accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey, key };
    return key;
  }
}
