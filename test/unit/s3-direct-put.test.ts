/**
 * The direct chunk PUT and GET (store/s3direct.ts) seen from a loopback server that checks what S3
 * checks: every request's SigV4 signature, recomputed here independently of the SDK (the SDK's
 * own PUTs pass the same check, which is what proves the checker), the CRC32 header against the
 * body, conditional headers; and that answers with the faults the engine meets: 5xx and
 * throttling (retried with backoff), 4xx (final, mapped to the same StoreError codes as the
 * SDK's), a server that never answers (Timeout), an abandoned call (Timeout, no retry), a
 * closed port (Unreachable). Path-style and virtual-host endpoints both.
 */

import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import dns from 'node:dns';
import * as http from 'node:http';
import * as net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { S3Store, type S3StoreOptions, crc32Header } from '../../electron/engine/store/s3';
import { expectStoreError } from '../helpers/storeConformance';

const CREDS = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Why the signature check failed; undefined when it held. */
  badSignature?: string;
}

type Answer = (seen: Seen, res: http.ServerResponse) => void;

function errorXml(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

/** Checks a SigV4 `Authorization` header as S3 does (single-encoded path, signed headers as sent). */
function checkSignature(seen: Seen, secret: string): string | undefined {
  const auth = String(seen.headers.authorization ?? '');
  const m =
    /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(
      auth,
    );
  if (!m) return `malformed authorization: ${auth}`;
  const [, , date, region, service, signedList, signature] = m as unknown as string[];
  const amzDate = String(seen.headers['x-amz-date'] ?? '');
  if (!amzDate.startsWith(date!)) return 'x-amz-date does not match the scope';
  const payloadHash = String(seen.headers['x-amz-content-sha256'] ?? '');
  if (payloadHash !== 'UNSIGNED-PAYLOAD' && payloadHash !== createHash('sha256').update(seen.body).digest('hex'))
    return 'x-amz-content-sha256 does not match the body';
  const names = signedList!.split(';');
  for (const must of ['host', 'x-amz-date', 'x-amz-content-sha256']) if (!names.includes(must)) return `${must} not signed`;
  const canonicalHeaders = names
    .map((n) => {
      const v = seen.headers[n];
      return `${n}:${(Array.isArray(v) ? v.join(',') : String(v ?? '')).trim().replace(/\s+/g, ' ')}\n`;
    })
    .join('');
  const [pathPart, queryPart = ''] = seen.url.split('?');
  const query = queryPart
    .split('&')
    .filter(Boolean)
    .map((kv) => (kv.includes('=') ? kv : `${kv}=`))
    .sort()
    .join('&');
  const canonical = [seen.method, pathPart, query, canonicalHeaders, signedList, payloadHash].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(date!).digest();
  for (const part of [region!, service!, 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  const expected = createHmac('sha256', key).update(toSign).digest('hex');
  return expected === signature ? undefined : 'signature does not match';
}

/** A loopback S3 stand-in: records every request, checks its signature and CRC32, answers as `answer` says. */
async function s3StandIn(): Promise<{
  port: number;
  seen: Seen[];
  answer: Answer;
  setAnswer(a: Answer): void;
  close(): Promise<void>;
}> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const ok: Answer = (_s, res) => {
    res.writeHead(200, { ETag: '"etag-1"' });
    res.end();
  };
  let answer = ok;
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const s: Seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(parts) };
      s.badSignature = checkSignature(s, CREDS.secretAccessKey);
      seen.push(s);
      if (s.badSignature) {
        res.writeHead(403, { 'content-type': 'application/xml' });
        res.end(errorXml('SignatureDoesNotMatch', s.badSignature));
        return;
      }
      const sent = req.headers['x-amz-checksum-crc32'];
      if (typeof sent === 'string' && sent !== crc32Header(crc32(s.body))) {
        res.writeHead(400, { 'content-type': 'application/xml' });
        res.end(errorXml('BadDigest', 'The CRC32 you specified did not match the calculated checksum.'));
        return;
      }
      answer(s, res);
    });
  });
  server.on('connection', (sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    seen,
    get answer() {
      return answer;
    },
    setAnswer: (a) => (answer = a),
    close: async () => {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

describe('S3Store direct chunk PUT', () => {
  let srv: Awaited<ReturnType<typeof s3StandIn>>;
  const stores: S3Store[] = [];
  const storeAt = (over: Partial<S3StoreOptions> = {}) => {
    const s = new S3Store({
      bucket: 'bucket-1',
      prefix: 'team fs/ü',
      endpoint: `http://127.0.0.1:${srv.port}`,
      region: 'eu-west-1',
      pathStyle: true,
      maxAttempts: 3,
      credentials: CREDS,
      ...over,
    });
    stores.push(s);
    return s;
  };
  const chunk = (text = 'a sealed chunk, say') => {
    const body = Buffer.from(text);
    return { body, crc32: crc32(body) };
  };

  before(async () => {
    srv = await s3StandIn();
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await srv.close();
  });
  const reset = () => {
    srv.seen.length = 0;
    srv.setAnswer((_s, res) => {
      res.writeHead(200, { ETag: '"etag-1"' });
      res.end();
    });
  };

  it('signs as S3 checks (the SDK path passes the same check), one request per PUT', async () => {
    reset();
    const store = storeAt();
    const { body, crc32: crc } = chunk();
    await store.put('meta/x', Buffer.from('{"through":"the SDK"}'));
    assert.equal(await store.put('chunks/ab/ab(c)d!', body, { crc32: crc }), 'etag-1');
    assert.equal(srv.seen.length, 2, 'no HEAD, no retry');
    const [sdk, direct] = srv.seen as [Seen, Seen];
    assert.equal(sdk.badSignature, undefined, 'the checker accepts the SDK');
    assert.equal(direct.badSignature, undefined);
    assert.equal(direct.method, 'PUT');
    assert.equal(direct.url, '/bucket-1/team%20fs/%C3%BC/chunks/ab/ab%28c%29d%21');
    assert.equal(sdk.url.split('?')[0], '/bucket-1/team%20fs/%C3%BC/meta/x', 'the two paths encode keys alike');
    assert.ok(direct.body.equals(body));
    assert.equal(direct.headers['x-amz-checksum-crc32'], crc32Header(crc));
    assert.equal(direct.headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
    const signed = /SignedHeaders=([^,]+)/.exec(String(direct.headers.authorization))?.[1]?.split(';') ?? [];
    assert.ok(signed.includes('x-amz-checksum-crc32'), signed.join(';'));
    assert.match(String(direct.headers.authorization), /\/eu-west-1\/s3\/aws4_request/);
  });

  it('signs a session token and the conditional headers', async () => {
    reset();
    const store = storeAt({ credentials: { ...CREDS, sessionToken: 'token-of-the-session' } });
    const { body, crc32: crc } = chunk();
    await store.put('chunks/ab/one', body, { crc32: crc, ifNoneMatch: '*' });
    await store.put('chunks/ab/two', body, { crc32: crc, ifMatch: 'etag-0' });
    const [a, b] = srv.seen as [Seen, Seen];
    assert.equal(a.badSignature, undefined);
    assert.equal(b.badSignature, undefined);
    assert.equal(a.headers['x-amz-security-token'], 'token-of-the-session');
    assert.equal(a.headers['if-none-match'], '*');
    assert.equal(b.headers['if-match'], '"etag-0"');
    const signedA = /SignedHeaders=([^,]+)/.exec(String(a.headers.authorization))?.[1]?.split(';') ?? [];
    assert.ok(signedA.includes('if-none-match') && signedA.includes('x-amz-security-token'), signedA.join(';'));
  });

  it('addresses a virtual-host bucket as the SDK does', async (t) => {
    reset();
    // *.localhost names the stand-in on loopback (for both paths: they share the resolver).
    const original = dns.lookup;
    t.after(() => {
      (dns as { lookup: typeof dns.lookup }).lookup = original;
    });
    (dns as { lookup: unknown }).lookup = (host: string, opts: unknown, cb: unknown) =>
      (original as (...a: unknown[]) => void)(host.endsWith('.localhost') ? '127.0.0.1' : host, opts, cb);
    const store = storeAt({ endpoint: `http://localhost:${srv.port}`, pathStyle: false, prefix: 'p' });
    const { body, crc32: crc } = chunk();
    await store.put('meta/x', Buffer.from('{}'));
    await store.put('chunks/ab/cd', body, { crc32: crc });
    const [sdk, direct] = srv.seen as [Seen, Seen];
    assert.equal(sdk.headers.host, `bucket-1.localhost:${srv.port}`);
    assert.equal(direct.headers.host, sdk.headers.host);
    assert.equal(direct.url, '/p/chunks/ab/cd');
    assert.equal(direct.badSignature, undefined);
  });

  it('retries 5xx and throttling with backoff, then succeeds', async () => {
    reset();
    let n = 0;
    srv.setAnswer((_s, res) => {
      n++;
      if (n === 1) {
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.end(errorXml('SlowDown', 'Please reduce your request rate.'));
      } else if (n === 2) {
        res.writeHead(500, { 'content-type': 'application/xml' });
        res.end(errorXml('InternalError', 'We encountered an internal error.'));
      } else {
        res.writeHead(200, { ETag: '"etag-3"' });
        res.end();
      }
    });
    const { body, crc32: crc } = chunk();
    assert.equal(await storeAt().put('chunks/ab/r', body, { crc32: crc }), 'etag-3');
    assert.equal(srv.seen.length, 3);
  });

  it('gives up after maxAttempts with the code the SDK path gives', async () => {
    reset();
    srv.setAnswer((_s, res) => {
      res.writeHead(503, { 'content-type': 'application/xml' });
      res.end(errorXml('SlowDown', 'Please reduce your request rate.'));
    });
    const { body, crc32: crc } = chunk();
    const e = await expectStoreError(storeAt({ maxAttempts: 2 }).put('chunks/ab/t', body, { crc32: crc }), 'Throttled');
    assert.equal(srv.seen.length, 2);
    assert.ok(e.retryable);
    srv.seen.length = 0;
    srv.setAnswer((_s, res) => {
      res.writeHead(500);
      res.end();
    });
    await expectStoreError(storeAt({ maxAttempts: 2 }).put('chunks/ab/u', body, { crc32: crc }), 'ServerError');
    assert.equal(srv.seen.length, 2);
  });

  it('does not retry a 4xx, and maps it as the SDK path does', async () => {
    const { body, crc32: crc } = chunk();
    const cases: Array<[number, string, Parameters<typeof expectStoreError>[1], Record<string, unknown>]> = [
      [412, 'PreconditionFailed', 'PreconditionFailed', { ifNoneMatch: '*' }],
      [404, 'NoSuchKey', 'PreconditionFailed', { ifMatch: 'etag-0' }],
      [404, 'NoSuchBucket', 'NoSuchBucket', {}],
      [403, 'AccessDenied', 'AccessDenied', {}],
      [403, 'InvalidAccessKeyId', 'InvalidCredentials', {}],
    ];
    for (const [status, code, want, extra] of cases) {
      reset();
      srv.setAnswer((_s, res) => {
        res.writeHead(status, { 'content-type': 'application/xml' });
        res.end(errorXml(code, `${code} happened`));
      });
      const e = await expectStoreError(storeAt().put('chunks/ab/x', body, { crc32: crc, ...extra }), want);
      assert.equal(srv.seen.length, 1, `${code}: not retried`);
      assert.ok(e.message.includes('s3://bucket-1/team fs/ü/chunks/ab/x'), e.message);
      if (want === 'AccessDenied') assert.equal(e.action, 's3:PutObject');
    }
    reset();
    const damaged = await expectStoreError(storeAt().put('chunks/ab/y', body, { crc32: crc ^ 1 }), 'Corrupt');
    assert.equal(srv.seen.length, 1);
    assert.ok(damaged.retryable);
  });

  it('times out on a server that never answers, retrying as configured', async () => {
    reset();
    srv.setAnswer(() => undefined); // reads the request, never answers
    const { body, crc32: crc } = chunk();
    const e = await expectStoreError(
      storeAt({ maxAttempts: 2, requestTimeoutMs: 300 }).put('chunks/ab/s', body, { crc32: crc }),
      'Timeout',
    );
    assert.equal(srv.seen.length, 2);
    assert.ok(e.retryable);
  });

  it('stops at once, without retrying, when the caller gives up', async () => {
    reset();
    const arrived = new Promise<void>((resolve) => srv.setAnswer(() => resolve()));
    const { body, crc32: crc } = chunk();
    const ac = new AbortController();
    const p = storeAt({ maxAttempts: 5, requestTimeoutMs: 60_000 }).put('chunks/ab/a', body, { crc32: crc, signal: ac.signal });
    await arrived;
    ac.abort();
    const e = await expectStoreError(p, 'Timeout');
    assert.match(e.message, /abandoned/);
    assert.equal(srv.seen.length, 1);
  });

  it("corrects a clock that is off from the bucket's answer, and signs again", async () => {
    reset();
    const store = storeAt();
    const serverAhead = 60 * 60_000; // the bucket's clock is an hour ahead of this machine's
    srv.setAnswer((s, res) => {
      const amz = String(s.headers['x-amz-date']);
      const signedAt = Date.parse(
        `${amz.slice(0, 4)}-${amz.slice(4, 6)}-${amz.slice(6, 8)}T${amz.slice(9, 11)}:${amz.slice(11, 13)}:${amz.slice(13, 15)}Z`,
      );
      const serverNow = Date.now() + serverAhead;
      if (Math.abs(serverNow - signedAt) > 15 * 60_000) {
        res.writeHead(403, { 'content-type': 'application/xml', date: new Date(serverNow).toUTCString() });
        res.end(errorXml('RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.'));
        return;
      }
      res.writeHead(200, { ETag: '"etag-skew"' });
      res.end();
    });
    const { body, crc32: crc } = chunk();
    assert.equal(await store.put('chunks/ab/k1', body, { crc32: crc }), 'etag-skew');
    assert.equal(srv.seen.length, 2, "refused once, then signed at the bucket's time");
    assert.equal(await store.put('chunks/ab/k2', body, { crc32: crc }), 'etag-skew');
    assert.equal(srv.seen.length, 3, 'the correction is kept');
  });

  it('GETs a chunk straight, signed, into the caller buffer; a missing one is absent; 5xx and a cut body are retried', async () => {
    reset();
    const object = Buffer.alloc(200_000, 7);
    let n = 0;
    srv.setAnswer((s, res) => {
      n++;
      if (s.url.endsWith('/missing')) {
        res.writeHead(404, { 'content-type': 'application/xml' });
        res.end(errorXml('NoSuchKey', 'The specified key does not exist.'));
      } else if (n === 1) {
        res.writeHead(500, { 'content-type': 'application/xml' });
        res.end(errorXml('InternalError', 'We encountered an internal error.'));
      } else if (n === 2) {
        // Announces the whole object, sends half of it, hangs up.
        res.writeHead(200, { 'content-length': object.length, ETag: '"e"' });
        res.write(object.subarray(0, 100_000), () => res.socket?.destroy());
      } else {
        res.writeHead(200, { 'content-length': object.length, ETag: '"etag-get"' });
        for (let at = 0; at < object.length; at += 30_000) res.write(object.subarray(at, at + 30_000));
        res.end();
      }
    });
    const store = storeAt();
    const into = Buffer.alloc(300_000);
    const got = await store.get('chunks/ab/g', undefined, { into });
    assert.ok(got && got.body.equals(object));
    assert.equal(got.etag, 'etag-get');
    assert.equal(got.body.buffer, into.buffer, 'received into the caller buffer');
    assert.equal(srv.seen.length, 3, 'a 500 and a cut body, each retried');
    for (const s of srv.seen) {
      assert.equal(s.method, 'GET');
      assert.equal(s.badSignature, undefined);
      assert.equal(s.url, '/bucket-1/team%20fs/%C3%BC/chunks/ab/g');
      assert.equal(s.headers['user-agent'], undefined, 'not the SDK');
    }
    assert.equal(await store.get('chunks/ab/missing', undefined, { into }), undefined);
    // Without a buffer of the caller's or a range, GETs stay on the SDK.
    srv.seen.length = 0;
    assert.ok((await store.get('chunks/ab/g'))?.body.equals(object));
    assert.ok(srv.seen[0]?.headers['user-agent'], 'the SDK');
  });

  it('GETs a range straight, signed; a server that ignores Range, a clamped end and a range past the end read as a file does', async () => {
    reset();
    const object = Buffer.from(Array.from({ length: 100_000 }, (_, i) => i % 251));
    let ignoreRange = false;
    srv.setAnswer((s, res) => {
      if (s.method === 'HEAD') {
        res.writeHead(200, { 'content-length': object.length, ETag: '"etag-r"' });
        res.end();
        return;
      }
      const m = /^bytes=(\d+)-(\d+)$/.exec(String(s.headers.range ?? ''));
      if (!m || ignoreRange) {
        res.writeHead(200, { 'content-length': object.length, ETag: '"etag-r"' });
        res.end(object);
        return;
      }
      const start = Number(m[1]);
      const end = Math.min(Number(m[2]), object.length - 1);
      if (start >= object.length) {
        res.writeHead(416, { 'content-type': 'application/xml' });
        res.end(errorXml('InvalidRange', 'The requested range is not satisfiable'));
        return;
      }
      res.writeHead(206, {
        'content-length': end - start + 1,
        'content-range': `bytes ${start}-${end}/${object.length}`,
        ETag: '"etag-r"',
      });
      res.end(object.subarray(start, end + 1));
    });
    const store = storeAt();
    const got = await store.get('chunks/ab/r', { start: 65_564, end: 65_564 + 4095 });
    assert.ok(got && got.body.equals(object.subarray(65_564, 65_564 + 4096)));
    assert.equal(got.etag, 'etag-r');
    assert.equal(srv.seen.length, 1);
    assert.equal(srv.seen[0]!.headers.range, 'bytes=65564-69659');
    assert.equal(srv.seen[0]!.badSignature, undefined, 'the Range header is signed as S3 checks it');
    assert.ok(
      /SignedHeaders=[^,]*\brange\b/.test(String(srv.seen[0]!.headers.authorization)),
      'range is among the signed headers',
    );
    assert.equal(srv.seen[0]!.headers['user-agent'], undefined, 'not the SDK');
    // An end past the object's end is clamped by the server.
    assert.ok((await store.get('chunks/ab/r', { start: 99_000, end: 120_000 }))?.body.equals(object.subarray(99_000)));
    // A start past the end: no bytes, as a file read there gives.
    const past = await store.get('chunks/ab/r', { start: 100_000, end: 100_010 });
    assert.equal(past?.body.length, 0);
    // A server that answers the whole object: the range is cut out of it.
    ignoreRange = true;
    assert.ok((await store.get('chunks/ab/r', { start: 10, end: 19 }))?.body.equals(object.subarray(10, 20)));
  });

  it('stops a GET at once, without retrying, when the caller gives up', async () => {
    reset();
    const arrived = new Promise<void>((resolve) => srv.setAnswer(() => resolve()));
    const ac = new AbortController();
    const p = storeAt({ maxAttempts: 5, requestTimeoutMs: 60_000 }).get('chunks/ab/a', undefined, {
      signal: ac.signal,
      into: Buffer.alloc(16),
    });
    await arrived;
    ac.abort();
    const e = await expectStoreError(p, 'Timeout');
    assert.match(e.message, /abandoned/);
    assert.equal(srv.seen.length, 1);
  });

  it('reports a closed port as Unreachable', async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as net.AddressInfo;
    await new Promise((r) => probe.close(r));
    const { body, crc32: crc } = chunk();
    await expectStoreError(
      storeAt({ endpoint: `http://127.0.0.1:${port}`, maxAttempts: 2 }).put('chunks/ab/c', body, { crc32: crc }),
      'Unreachable',
    );
  });
});
