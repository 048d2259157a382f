/**
 * DirectPut: the PUT and the GET of a chunk object straight over HTTP, signed with SigV4,
 * without the AWS SDK's middleware pipeline. S3Store (s3.ts) sends the bulk of its traffic this
 * way: one PUT per uploaded chunk (over node:http(s)), so on a tree of small files one per file,
 * and one GET per chunk read from the bucket. GETs go over connections of their own
 * (getclient.ts) whose sockets read the body straight into one buffer (the caller's, when it
 * fits): no Buffer per socket read, no copy, no SDK stream.
 *
 * Why (measured): each SDK `send` of a small PUT cost about 1.9 ms of the engine's one JS
 * thread (schema serialisation, the endpoint rule set, log filters, a dozen middleware
 * closures, XML parsing of the answer), the same thread that answers FUSE requests; this path
 * costs a fraction of that (s3.ts's header has the figures). Everything else (HEAD, LIST,
 * DELETE, ranged GETs, GETs of anything but chunks, and PUTs without a caller's CRC32:
 * metadata, lease, marks) stays on the SDK.
 *
 * What it keeps of the SDK, so the two paths are interchangeable:
 * - the endpoint: resolved once per store by the SDK's own rule set for this bucket
 *   (`getEndpointFromInstructions`: path-style or virtual-host, custom endpoints, regions,
 *   FIPS/dual-stack settings); a bucket whose rule set asks for anything but plain SigV4
 *   (S3 Express) is not served here and the SDK sends its PUTs;
 * - the credentials: the client's own provider (env, profile, SSO, instance role; refreshed
 *   by the SDK), and SigV4 (sigv4.ts, which matches @smithy/signature-v4's output), with `x-amz-content-sha256:
 *   UNSIGNED-PAYLOAD` and the caller's `x-amz-checksum-crc32` signed (s3.ts explains why);
 * - the sockets: PUTs use the same keep-alive agents as the SDK's handler; GETs keep their own
 *   connections, bounded as those agents are and with their TLS options (getclient.ts);
 * - the timeouts: connecting (`connectTimeoutMs`); waiting for a free connection, and for the
 *   answer's headers once the body is sent (`requestTimeoutMs` each); and a socket idle
 *   mid-transfer for as long. Sending the body has no time limit of its own, only that idle
 *   one: a PUT on a slow uplink is slow, not hung;
 * - the retries: `maxAttempts` attempts in all, after a network error, a timeout, a 5xx, a 429
 *   or an S3 throttling/timeout code, with exponential backoff and full jitter (base 100 ms,
 *   500 ms when throttled, at most 20 s), as the SDK's standard mode; none after any other
 *   answer (a 4xx is final: 412, 403, BadDigest go to the caller, which decides);
 * - the clock: requests are signed at the client's `systemClockOffset` from the local clock (the
 *   SDK keeps it from the bucket's Date headers), and an answer that says the clock is off
 *   (RequestTimeTooSkewed and the like) corrects that offset from its Date header, for both
 *   paths, and is retried at once, as the SDK does;
 * - the errors: a failed attempt is thrown shaped as the SDK throws it (`name`/`Code` from the
 *   S3 error XML, `$metadata.httpStatusCode`, or the socket's own error with its errno), so
 *   S3Store's one `toStoreError` maps both paths alike;
 * - the caller's AbortSignal: it destroys the request in flight and stops the retries.
 */

import * as http from 'node:http';
import * as https from 'node:https';
import { getEndpointFromInstructions } from '@smithy/core/endpoints';
import { PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { GetClient } from './getclient';
import { SigV4, type SigningCredentials } from './sigv4';

/** Answer headers, from node:http or from GetClient. */
type Headers = Readonly<Record<string, string | string[] | undefined>>;

export interface DirectPutOptions {
  readonly client: S3Client;
  readonly bucket: string;
  readonly httpAgent: http.Agent;
  readonly httpsAgent: https.Agent;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly maxAttempts: number;
}

export interface DirectPutRequest {
  /** The full key in the bucket (prefix included). */
  readonly key: string;
  readonly body: Buffer;
  readonly crc32Header: string;
  readonly ifNoneMatch?: '*';
  /** Quoted ETag. */
  readonly ifMatch?: string;
  readonly signal?: AbortSignal;
}

export interface DirectGetRequest {
  /** The full key in the bucket (prefix included). */
  readonly key: string;
  /** Receives the body when it fits (see GetOptions.into). */
  readonly into?: Buffer;
  /** Bytes start..end (inclusive) of the object only, as a Range header asks. */
  readonly range?: { readonly start: number; readonly end: number };
  readonly signal?: AbortSignal;
}

export interface DirectGetResult {
  readonly body: Buffer;
  /** The ETag header as sent (quoted), or '' if none. */
  readonly etag: string;
  /** The Content-Length the answer announced, if any (the caller compares). */
  readonly length: number | undefined;
  /**
   * Where the body starts in the object: the first byte of the Content-Range of a 206 answer,
   * 0 for a whole object (a 200, which is what a server that ignores Range sends).
   */
  readonly from: number;
}

/** Where and how requests of this bucket go, resolved once. */
interface Target {
  readonly https: boolean;
  readonly hostname: string;
  readonly port: number | undefined;
  readonly host: string;
  /** The URL path before the key, without a trailing slash ('' or '/bucket'). */
  readonly basePath: string;
  readonly signer: SigV4;
}

/** The body of an S3 error answer is read up to this many bytes (it is a short XML document). */
const ERROR_BODY_MAX = 64 * 1024;
const RETRY_BASE_MS = 100;
const THROTTLED_RETRY_BASE_MS = 500;
const RETRY_MAX_DELAY_MS = 20_000;
/** A skew of the clock at least this large, once corrected, is worth a retry (the SDK's threshold). */
const SKEW_RETRY_MS = 240_000;
const CLOCK_SKEW_CODES = new Set([
  'RequestTimeTooSkewed',
  'RequestExpired',
  'RequestInTheFuture',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'AuthFailure',
]);
const TRANSIENT_CODES = new Set(['RequestTimeout', 'RequestTimeoutException', 'InternalError', 'ServiceUnavailable']);
/** S3 and AWS error codes that mean "slow down" (both paths back off longer after them). */
export const THROTTLING_CODES: ReadonlySet<string> = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'TooManyRequestsException',
  'RequestLimitExceeded',
  'RequestThrottled',
  'RequestThrottledException',
  'ProvisionedThroughputExceededException',
]);

/** An error answer from S3, shaped as the SDK throws it. */
class S3AnswerError extends Error {
  readonly Code: string;
  readonly $metadata: { httpStatusCode: number };
  /** The clock was found off and the offset corrected: the same request, signed again, may pass. */
  skewCorrected = false;
  constructor(
    code: string,
    message: string,
    status: number,
    /** The bucket's clock when it answered (its Date header, ms), if it said. */
    readonly serverTimeMs: number | undefined,
  ) {
    super(message || code);
    this.name = code;
    this.Code = code;
    this.$metadata = { httpStatusCode: status };
  }
}

export class DirectPut {
  private target: Promise<Target | undefined> | undefined;
  /** The GETs' own connections (getclient.ts), made at the first GET. */
  private getClient: GetClient | undefined;

  constructor(private readonly o: DirectPutOptions) {}

  /**
   * Whether PUTs of this bucket can go this way (plain SigV4); resolved once. A failure to
   * resolve is not remembered: the SDK path reports it, and the next call tries again.
   */
  async usable(): Promise<boolean> {
    this.target ??= this.resolve().catch((err: unknown) => {
      this.target = undefined;
      throw err;
    });
    try {
      return (await this.target) !== undefined;
    } catch {
      return false;
    }
  }

  /** Sends the PUT, retrying as the header says; resolves to the ETag header as sent (quoted), or '' if none. */
  put(req: DirectPutRequest): Promise<string> {
    return this.retrying(req.signal, (t) => this.attempt(t, req));
  }

  private client(t: Target): GetClient {
    this.getClient ??= new GetClient({
      https: t.https,
      hostname: t.hostname,
      port: t.port,
      agent: t.https ? this.o.httpsAgent : this.o.httpAgent,
      connectTimeoutMs: this.o.connectTimeoutMs,
      requestTimeoutMs: this.o.requestTimeoutMs,
      errorBodyMax: ERROR_BODY_MAX,
    });
    return this.getClient;
  }

  /** Sends the GET, retrying as the header says (S3Store maps a 404 to "absent"). */
  get(req: DirectGetRequest): Promise<DirectGetResult> {
    return this.retrying(req.signal, async (t) => {
      const path = `${t.basePath}/${encodeKey(req.key)}`;
      const unsigned: Record<string, string> = { host: t.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' };
      if (req.range) unsigned.range = `bytes=${req.range.start}-${req.range.end}`;
      const headers = await this.sign(t, 'GET', path, unsigned);
      if (req.signal?.aborted) throw abortError();
      const answer = await this.client(t).get(path, headers, req.into, req.signal);
      const status = answer.status;
      if (status < 200 || status >= 300) throw answerError(status, answer.body.toString('utf8'), answer.headers);
      let from = 0;
      if (status === 206) {
        const contentRange = answer.headers['content-range'];
        const range = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(contentRange ?? '');
        if (!range) throw new Error(`a partial answer without a usable Content-Range (${String(contentRange)})`);
        from = Number(range[1]);
      }
      return { body: answer.body, etag: answer.headers.etag ?? '', length: answer.length, from };
    });
  }

  /** Closes the kept connections of the GETs. */
  close(): void {
    this.getClient?.close();
  }

  private async retrying<T>(signal: AbortSignal | undefined, fn: (t: Target) => Promise<T>): Promise<T> {
    const target = await this.target;
    if (!target) throw new Error('direct request used before usable() said yes');
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(target);
      } catch (err) {
        if (err instanceof S3AnswerError) this.correctClock(err);
        if (signal?.aborted || attempt >= this.o.maxAttempts) throw err;
        if (err instanceof S3AnswerError && err.skewCorrected) continue; // signed again at the corrected time
        if (!retryable(err)) throw err;
        const base = isThrottling(err) ? THROTTLED_RETRY_BASE_MS : RETRY_BASE_MS;
        await sleep(Math.random() * Math.min(RETRY_MAX_DELAY_MS, base * 2 ** (attempt - 1)), signal);
        if (signal?.aborted) throw err;
      }
    }
  }

  /** An answer that says the local clock is off: the client's offset follows the bucket's clock. */
  private correctClock(err: S3AnswerError): void {
    if (!CLOCK_SKEW_CODES.has(err.Code) || err.serverTimeMs === undefined) return;
    const config = this.o.client.config as { systemClockOffset?: number };
    const before = config.systemClockOffset ?? 0;
    const offset = err.serverTimeMs - Date.now();
    config.systemClockOffset = offset;
    err.skewCorrected = Math.abs(offset) >= SKEW_RETRY_MS && offset !== before;
  }

  private async resolve(): Promise<Target | undefined> {
    const { client, bucket } = this.o;
    const endpoint = await getEndpointFromInstructions({ Bucket: bucket, Key: 'k' }, PutObjectCommand, client.config);
    const schemes = (endpoint.properties?.authSchemes ?? []) as Array<{
      name?: string;
      signingName?: string;
      signingRegion?: string;
    }>;
    const scheme = schemes[0];
    if (!scheme || scheme.name !== 'sigv4') return undefined;
    const url = endpoint.url;
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return undefined;
    if (url.search) return undefined;
    const signingRegion = scheme.signingRegion ?? (await client.config.region());
    const signingService = scheme.signingName ?? 's3';
    const provider = client.config.credentials as unknown;
    const credentials =
      typeof provider === 'function'
        ? (provider as () => Promise<SigningCredentials>)
        : () => Promise.resolve(provider as SigningCredentials);
    // S3 signs the path as sent (no second encoding): the key is encoded once, in the path.
    const signer = new SigV4({ credentials, region: signingRegion, service: signingService });
    const port = url.port ? Number(url.port) : undefined;
    return {
      https: url.protocol === 'https:',
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port,
      host: url.port ? `${url.hostname}:${url.port}` : url.hostname,
      basePath: url.pathname.replace(/\/+$/, ''),
      signer,
    };
  }

  private async attempt(t: Target, req: DirectPutRequest): Promise<string> {
    const headers: Record<string, string> = {
      host: t.host,
      'content-type': 'application/octet-stream',
      'content-length': String(req.body.length),
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
      'x-amz-checksum-crc32': req.crc32Header,
    };
    if (req.ifNoneMatch !== undefined) headers['if-none-match'] = req.ifNoneMatch;
    if (req.ifMatch !== undefined) headers['if-match'] = req.ifMatch;
    const path = `${t.basePath}/${encodeKey(req.key)}`;
    const signed = await this.sign(t, 'PUT', path, headers);
    if (req.signal?.aborted) throw abortError();
    return await this.send<string>(t, 'PUT', path, signed, req.body, req.signal, (res, settle) => {
      const etag = res.headers.etag;
      res.on('end', () => settle(undefined, typeof etag === 'string' ? etag : ''));
      res.resume();
    });
  }

  /** The headers signed for `method` on `path`, at the client's clock offset. */
  private async sign(t: Target, method: string, path: string, headers: Record<string, string>): Promise<Record<string, string>> {
    const offset = (this.o.client.config as { systemClockOffset?: number }).systemClockOffset ?? 0;
    return t.signer.sign(method, path, headers, new Date(Date.now() + offset));
  }

  /**
   * Sends one request; a 2xx answer goes to `ok`, which settles the call (after the call is
   * settled, `ok`'s handlers are never called again: a failed request is destroyed).
   */
  private send<T>(
    t: Target,
    method: 'PUT',
    path: string,
    headers: Record<string, string>,
    body: Buffer | undefined,
    signal: AbortSignal | undefined,
    ok: (res: http.IncomingMessage, settle: (err: Error | undefined, value?: T) => void) => void,
  ): Promise<T> {
    const { connectTimeoutMs, requestTimeoutMs } = this.o;
    return new Promise<T>((resolve, reject) => {
      let done = false;
      let connectTimer: NodeJS.Timeout | undefined;
      let requestTimer: NodeJS.Timeout | undefined;
      const finish = (err: Error | undefined, value?: T) => {
        if (done) return;
        done = true;
        if (connectTimer) clearTimeout(connectTimer);
        if (requestTimer) clearTimeout(requestTimer);
        signal?.removeEventListener('abort', onAbort);
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(value as T);
      };
      const options: http.RequestOptions = {
        method,
        hostname: t.hostname,
        port: t.port,
        path,
        headers,
        agent: t.https ? this.o.httpsAgent : this.o.httpAgent,
      };
      let answered = false;
      const req = (t.https ? https : http).request(options, (res) => {
        answered = true;
        if (requestTimer) clearTimeout(requestTimer);
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) {
          res.on('error', (err) => finish(err));
          ok(res, (err, value) => (done ? undefined : finish(err, value)));
          return;
        }
        const parts: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          if (size < ERROR_BODY_MAX) parts.push(d);
          size += d.length;
        });
        res.on('error', (err) => finish(err));
        res.on('end', () => finish(answerError(status, Buffer.concat(parts).toString('utf8'), res.headers)));
      });
      const onAbort = () => {
        req.destroy();
        finish(abortError());
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', (err) => finish(err));
      if (requestTimeoutMs > 0) {
        // Waiting for a connection, and waiting for the answer once the body is sent, are bounded
        // by requestTimeoutMs each; sending the body is not, only a stall in it is (the idle timer
        // below): a chunk's PUT over a slow uplink that is shared by several uploads may take
        // minutes and still make progress, and a time limit on the whole would fail it at every
        // attempt.
        const armRequestTimer = (what: string) => {
          if (requestTimer) clearTimeout(requestTimer);
          requestTimer = setTimeout(() => {
            const err = Object.assign(new Error(`${what} within ${requestTimeoutMs} ms`), {
              name: 'TimeoutError',
              code: 'ETIMEDOUT',
            });
            req.destroy(err);
            finish(err);
          }, requestTimeoutMs);
        };
        armRequestTimer('no connection was free');
        req.once('socket', () => {
          if (requestTimer) clearTimeout(requestTimer);
        });
        req.once('finish', () => {
          if (!done && !answered) armRequestTimer('the request was not answered');
        });
        // Idle mid-transfer (either way) for as long: the same verdict.
        req.setTimeout(requestTimeoutMs, () => {
          const err = Object.assign(new Error(`the connection sat idle for ${requestTimeoutMs} ms`), { name: 'TimeoutError' });
          req.destroy(err);
          finish(err);
        });
      }
      if (connectTimeoutMs > 0) {
        req.once('socket', (socket) => {
          if (!socket.connecting) return;
          connectTimer = setTimeout(() => {
            const err = Object.assign(new Error(`no connection within ${connectTimeoutMs} ms`), { name: 'TimeoutError' });
            req.destroy(err);
            finish(err);
          }, connectTimeoutMs);
          socket.once(t.https ? 'secureConnect' : 'connect', () => {
            if (connectTimer) clearTimeout(connectTimer);
          });
        });
      }
      req.end(body);
    });
  }
}

/** The S3 error answer as the SDK would throw it: its XML Code and Message, or the status alone. */
function answerError(status: number, text: string, headers: Headers): S3AnswerError {
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? statusName(status, headers);
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? '';
  const date = typeof headers.date === 'string' ? Date.parse(headers.date) : NaN;
  return new S3AnswerError(code, message, status, Number.isNaN(date) ? undefined : date);
}

function statusName(status: number, headers: Headers): string {
  const amzCode = headers['x-amz-error-code'];
  if (typeof amzCode === 'string' && amzCode) return amzCode;
  if (status === 404) return 'NotFound';
  if (status === 412) return 'PreconditionFailed';
  if (status === 403) return 'Forbidden';
  if (status === 429) return 'TooManyRequestsException';
  if (status >= 500) return status === 503 ? 'ServiceUnavailable' : 'InternalError';
  return `HTTP${status}`;
}

/** Retried as the SDK's standard mode retries: no answer, a timeout, a server error or throttling. */
function retryable(err: unknown): boolean {
  if (err instanceof S3AnswerError) {
    const s = err.$metadata.httpStatusCode;
    return s >= 500 || s === 429 || TRANSIENT_CODES.has(err.Code) || THROTTLING_CODES.has(err.Code);
  }
  // No answer: a socket error (errno), a timeout of ours, a hang-up.
  return err instanceof Error && err.name !== 'AbortError';
}

function isThrottling(err: unknown): boolean {
  return err instanceof S3AnswerError && (err.$metadata.httpStatusCode === 429 || THROTTLING_CODES.has(err.Code));
}

function abortError(): Error {
  return Object.assign(new Error('the request was abandoned'), { name: 'AbortError' });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

/** A key as S3 expects it in the path: each segment URI-encoded once (RFC 3986 unreserved kept), slashes kept. */
export function encodeKey(key: string): string {
  return key
    .split('/')
    .map((seg) => encodeURIComponent(seg).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
    .join('/');
}
