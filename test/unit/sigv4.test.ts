// The SigV4 signer of the requests sent without the SDK (store/sigv4.ts) signs exactly as
// @smithy/signature-v4 does: for the same request, credentials and time, the same headers and
// the same Authorization, with and without a session token, across a change of day and of
// credentials (its signing key is kept per day and credentials).

import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { describe, it } from 'node:test';
import { SignatureV4 } from '@smithy/signature-v4';
import { SigV4, type SigningCredentials } from '../../electron/engine/store/sigv4';

type Data = string | ArrayBuffer | ArrayBufferView;
const bytes = (d: Data): string | Uint8Array =>
  typeof d === 'string' ? d : d instanceof ArrayBuffer ? new Uint8Array(d) : new Uint8Array(d.buffer, d.byteOffset, d.byteLength);

/** node:crypto in the shape @smithy/signature-v4 asks for. */
class Sha256 {
  private readonly h;
  constructor(secret?: Data) {
    this.h = secret !== undefined ? createHmac('sha256', bytes(secret)) : createHash('sha256');
  }
  update(data: Data): void {
    this.h.update(bytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(this.h.digest());
  }
}

async function smithy(
  creds: SigningCredentials,
  method: string,
  path: string,
  headers: Record<string, string>,
  date: Date,
): Promise<Record<string, string>> {
  const signer = new SignatureV4({
    credentials: creds,
    region: 'eu-west-3',
    service: 's3',
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
  const signed = await signer.sign(
    { method, protocol: 'http:', hostname: '127.0.0.1', port: 9000, path, query: {}, headers },
    { signingDate: date },
  );
  return signed.headers;
}

const requests: Array<[string, string, Record<string, string>]> = [
  [
    'PUT',
    '/bucket/fs/chunks/ab/abcdef',
    {
      host: '127.0.0.1:9000',
      'content-type': 'application/octet-stream',
      'content-length': '4133',
      'x-amz-content-sha256': 'UNSIGNED-PAYLOAD',
      'x-amz-checksum-crc32': 'q7ZBgA==',
      'if-none-match': '*',
    },
  ],
  [
    'GET',
    '/bucket/fs/chunks/0f/0f%20name%21',
    { host: '127.0.0.1:9000', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', range: 'bytes=0-65551' },
  ],
  [
    'PUT',
    '/fs/meta/x',
    { host: 'bucket.s3.eu-west-3.amazonaws.com', 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD', 'if-match': '"  a  b "' },
  ],
];

describe('SigV4 for direct requests', () => {
  it('signs as @smithy/signature-v4 does', { timeout: 30_000 }, async () => {
    const plain: SigningCredentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
    const temporary: SigningCredentials = { accessKeyId: 'ASIAOTHER', secretAccessKey: 'other/secret', sessionToken: 'token+/=' };
    let current = plain;
    const ours = new SigV4({ credentials: () => Promise.resolve(current), region: 'eu-west-3', service: 's3' });
    const dates = [new Date('2026-12-03T23:59:59.250Z'), new Date('2026-12-04T00:00:01.000Z')];
    let compared = 0;
    for (const creds of [plain, temporary, plain]) {
      current = creds;
      for (const date of dates) {
        for (const [method, path, headers] of requests) {
          const got = await ours.sign(method, path, headers, date);
          const want = await smithy(creds, method, path, headers, date);
          assert.deepEqual(got, want, `${method} ${path} at ${date.toISOString()} as ${creds.accessKeyId}`);
          compared++;
        }
      }
    }
    assert.equal(compared, 18);
  });
});
