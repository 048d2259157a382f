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
import { createHash, createHmac, randomBytes } from 'node:crypto';
import dns from 'node:dns';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import { after, before, describe, it } from 'node:test';
import { crc32 } from 'node:zlib';
import { S3Store, type S3StoreOptions, crc32Header } from '../../electron/engine/store/s3';
import { DirectPut } from '../../electron/engine/store/s3direct';
import { expectStoreError } from '../helpers/storeConformance';

const CREDS = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' };

interface Seen {
  method: string;
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** The client's port: requests with the same one came on one connection. */
  port: number;
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

/**
 * A loopback S3 stand-in: records every request, checks its signature and CRC32, answers as
 * `answer` says; over TLS when given a key and certificate.
 */
async function s3StandIn(tlsOptions?: { key: Buffer; cert: Buffer }): Promise<{
  port: number;
  seen: Seen[];
  answer: Answer;
  setAnswer(a: Answer): void;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Closes the connections the server holds (kept ones included). */
  dropConnections(): void;
  close(): Promise<void>;
}> {
  const seen: Seen[] = [];
  const sockets = new Set<net.Socket>();
  const ok: Answer = (_s, res) => {
    res.writeHead(200, { ETag: '"etag-1"' });
    res.end();
  };
  let answer = ok;
  let connections = 0;
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const s: Seen = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(parts),
        port: req.socket.remotePort ?? 0,
      };
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
  };
  const server = tlsOptions ? https.createServer(tlsOptions, handler) : http.createServer(handler);
  server.on('connection', (sock: net.Socket) => {
    connections++;
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
    get connections() {
      return connections;
    },
    dropConnections: () => {
      for (const sock of sockets) sock.destroy();
    },
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

  it('lets a body that goes out slowly but steadily take longer than the request timeout, and times out one that stalls', async () => {
    // A server that takes the body in pieces with a pause after each (a slow uplink, as the
    // engine sees one), then answers; or, once `stall` is set, stops reading after the first piece.
    let stall = false;
    const slow = http.createServer((req, res) => {
      req.on('data', () => {
        req.pause();
        if (!stall) setTimeout(() => req.resume(), 5);
      });
      req.on('end', () => {
        res.writeHead(200, { ETag: '"slow"' });
        res.end();
      });
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const { port } = slow.address() as net.AddressInfo;
    try {
      // Far more than the loopback socket buffers hold: most of it goes out at the server's pace.
      const body = randomBytes(48 * 1024 * 1024);
      const store = storeAt({ endpoint: `http://127.0.0.1:${port}`, maxAttempts: 1, requestTimeoutMs: 500 });
      const started = performance.now();
      await store.put('chunks/ab/slow', body, { crc32: crc32(body) });
      // At most 64 KiB per piece and 5 ms after each: seconds, many times the request timeout.
      const took = performance.now() - started;
      assert.ok(took > 1000, `the body took ${Math.round(took)} ms, longer than the 500 ms request timeout`);
      stall = true;
      const e = await expectStoreError(store.put('chunks/ab/stalled', body, { crc32: crc32(body) }), 'Timeout');
      assert.ok(e.retryable);
    } finally {
      slow.closeAllConnections();
      await new Promise<void>((r) => slow.close(() => r()));
    }
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

/** A GET's request head as a raw server reads it. */
interface RawRequest {
  readonly head: string;
  /** Requests before this one on the same connection. */
  readonly nth: number;
  readonly sock: net.Socket;
}

/**
 * A loopback server that speaks HTTP by hand, to answer in ways node:http never does: the head
 * and body in tiny writes, a body longer than its Content-Length, `Connection: close` on a
 * connection it keeps open, a request dropped unanswered on a kept connection.
 */
async function rawServer(onRequest: (r: RawRequest) => void): Promise<{
  port: number;
  requests: RawRequest[];
  readonly connections: number;
  close(): Promise<void>;
}> {
  const sockets = new Set<net.Socket>();
  const requests: RawRequest[] = [];
  let connections = 0;
  const server = net.createServer((sock) => {
    connections++;
    sockets.add(sock);
    sock.setNoDelay(true);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => undefined);
    let pending = '';
    let nth = 0;
    sock.on('data', (d: Buffer) => {
      pending += d.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end >= 0; end = pending.indexOf('\r\n\r\n')) {
        const r = { head: pending.slice(0, end), nth: nth++, sock };
        pending = pending.slice(end + 4);
        requests.push(r);
        onRequest(r);
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    requests,
    get connections() {
      return connections;
    },
    close: async () => {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

function answerHead(status: number, headers: Record<string, string | number>): string {
  return `HTTP/1.1 ${status} X\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`;
}

/** Writes `pieces` one write each, each after the previous one left (so most arrive as reads of their own). */
async function dribble(sock: net.Socket, pieces: Buffer[]): Promise<void> {
  for (const piece of pieces) {
    await new Promise<void>((resolve) => sock.write(piece, () => setImmediate(resolve)));
  }
}

describe('S3Store direct chunk GET connections', () => {
  const stores: S3Store[] = [];
  const closers: Array<() => Promise<void>> = [];
  const storeAt = (port: number, over: Partial<S3StoreOptions> = {}) => {
    const s = new S3Store({
      bucket: 'bucket-1',
      endpoint: `http://127.0.0.1:${port}`,
      region: 'eu-west-1',
      pathStyle: true,
      maxAttempts: 1,
      credentials: CREDS,
      ...over,
    });
    stores.push(s);
    return s;
  };
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    for (const close of closers) await close();
  });
  const standIn = async (tlsOptions?: { key: Buffer; cert: Buffer }) => {
    const srv = await s3StandIn(tlsOptions);
    closers.push(() => srv.close());
    return srv;
  };
  const raw = async (onRequest: (r: RawRequest) => void) => {
    const srv = await rawServer(onRequest);
    closers.push(() => srv.close());
    return srv;
  };
  const objectOf = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 7) % 256));

  it('keeps the connection for the next GET, and opens a new one once the server closed it', async () => {
    const srv = await standIn();
    const object = objectOf(70_000);
    srv.setAnswer((_s, res) => {
      res.writeHead(200, { 'content-length': object.length, ETag: '"k"' });
      res.end(object);
    });
    const store = storeAt(srv.port);
    const into = Buffer.alloc(100_000);
    assert.ok((await store.get('chunks/ab/1', undefined, { into }))?.body.equals(object));
    assert.ok((await store.get('chunks/ab/2', undefined, { into }))?.body.equals(object));
    assert.equal(srv.connections, 1, 'two GETs, one connection');
    assert.equal(srv.seen[0]!.port, srv.seen[1]!.port);
    // The server closes its kept connections (as its idle timeout would): the next GET still
    // succeeds, with one attempt allowed.
    srv.dropConnections();
    assert.ok((await store.get('chunks/ab/3', undefined, { into }))?.body.equals(object));
    assert.equal(srv.connections, 2);
    for (const s of srv.seen) assert.equal(s.badSignature, undefined);
  });

  it('sends a GET once more on a new connection when a kept one is found closed, without counting an attempt', async () => {
    const object = objectOf(1000);
    const srv = await raw(({ sock, nth }) => {
      // The second request on a connection: the server had closed it meanwhile (it hangs up unanswered).
      if (nth === 1) {
        sock.destroy();
        return;
      }
      sock.write(Buffer.concat([Buffer.from(answerHead(200, { 'content-length': object.length, etag: '"s"' })), object]));
    });
    const store = storeAt(srv.port, { maxAttempts: 1 });
    assert.ok((await store.get('chunks/ab/1', undefined, { into: Buffer.alloc(4096) }))?.body.equals(object));
    assert.ok((await store.get('chunks/ab/2', undefined, { into: Buffer.alloc(4096) }))?.body.equals(object));
    assert.equal(srv.connections, 2);
    assert.equal(srv.requests.length, 3, 'the kept connection took the request and dropped it; a new one answered');
  });

  it('honours Connection: close, even from a server that keeps the connection open', async () => {
    const object = objectOf(500);
    const srv = await raw(({ sock }) => {
      sock.write(answerHead(200, { 'content-length': object.length, etag: '"c"', connection: 'close' }));
      sock.write(object);
    });
    const store = storeAt(srv.port);
    const into = Buffer.alloc(1000);
    assert.ok((await store.get('chunks/ab/1', undefined, { into }))?.body.equals(object));
    assert.ok((await store.get('chunks/ab/2', undefined, { into }))?.body.equals(object));
    assert.equal(srv.connections, 2, 'a new connection for the second GET');
    assert.deepEqual(
      srv.requests.map((r) => r.nth),
      [0, 0],
    );
  });

  it('reads a head and body that arrive in tiny pieces, the end of the head and the start of the body in one', async () => {
    const object = objectOf(3000);
    const head = Buffer.from(
      answerHead(200, { 'content-length': object.length, etag: '"tiny"', 'x-amz-request-id': 'R'.repeat(40) }),
    );
    const srv = await raw(({ sock }) => {
      const pieces: Buffer[] = [];
      let at = 0;
      for (let n = 1; at < head.length - 2; n = (n % 7) + 1) {
        pieces.push(head.subarray(at, Math.min(at + n, head.length - 2)));
        at = Math.min(at + n, head.length - 2);
      }
      const all = Buffer.concat([head, object]);
      pieces.push(all.subarray(at, head.length + 5)); // "\r\n" and the body's first five bytes
      at = head.length + 5;
      for (let n = 1; at < all.length; n = (n % 13) + 1) {
        pieces.push(all.subarray(at, at + n));
        at += n;
      }
      void dribble(sock, pieces);
    });
    const store = storeAt(srv.port);
    const into = Buffer.alloc(4096);
    const got = await store.get('chunks/ab/t', undefined, { into });
    assert.ok(got && got.body.equals(object));
    assert.equal(got.etag, 'tiny');
    assert.equal(got.body.buffer, into.buffer, 'into the caller buffer');
    // The connection is in step: the next answer on it reads whole.
    assert.ok((await store.get('chunks/ab/t', undefined, { into }))?.body.equals(object));
    assert.equal(srv.connections, 1);
  });

  it('reads a chunked error answer (mapped as S3 meant it; retried when transient) and a chunked body', async () => {
    const srv = await standIn();
    const object = objectOf(50_000);
    let n = 0;
    srv.setAnswer((s, res) => {
      n++;
      if (s.url.endsWith('/denied')) {
        res.writeHead(403, { 'content-type': 'application/xml' });
        res.write('<?xml version="1.0" encoding="UTF-8"?><Error><Code>Access');
        res.end('Denied</Code><Message>no</Message></Error>');
      } else if (n === 2) {
        res.writeHead(503, { 'content-type': 'application/xml' });
        res.write(errorXml('SlowDown', 'Please reduce your request rate.').slice(0, 30));
        res.end(errorXml('SlowDown', 'Please reduce your request rate.').slice(30));
      } else {
        // No Content-Length: node:http sends the body chunked.
        res.writeHead(200, { ETag: '"chunked"' });
        res.write(object.subarray(0, 20_000));
        res.end(object.subarray(20_000));
      }
    });
    const store = storeAt(srv.port, { maxAttempts: 2 });
    const e = await expectStoreError(store.get('chunks/ab/denied', undefined, { into: Buffer.alloc(16) }), 'AccessDenied');
    assert.match(e.message, /AccessDenied/);
    const got = await store.get('chunks/ab/c', undefined, { into: Buffer.alloc(60_000) });
    assert.ok(got && got.body.equals(object));
    assert.equal(got.etag, 'chunked');
    assert.equal(srv.seen.length, 3, 'the chunked 503 was retried');
    assert.equal(srv.connections, 1, 'every chunked answer was read to its end: one connection for all');
  });

  it('fails an answer that runs past its Content-Length, and does not use that connection again', async () => {
    const object = objectOf(100);
    let over = true;
    const srv = await raw(({ sock }) => {
      const extra = over ? Buffer.from('and some more') : Buffer.alloc(0);
      sock.write(Buffer.concat([Buffer.from(answerHead(200, { 'content-length': object.length })), object, extra]));
    });
    const store = storeAt(srv.port, { maxAttempts: 1 });
    const e = await expectStoreError(store.get('chunks/ab/o', undefined, { into: Buffer.alloc(1000) }), 'Other');
    assert.match(e.message, /ran past its Content-Length of 100 bytes/);
    over = false;
    assert.ok((await store.get('chunks/ab/o', undefined, { into: Buffer.alloc(1000) }))?.body.equals(object));
    assert.equal(srv.connections, 2);
  });

  it('retries a body cut short, and a head cut short', async () => {
    const object = objectOf(200_000);
    const head = answerHead(200, { 'content-length': object.length, etag: '"cut"' });
    const srv = await raw(({ sock }) => {
      const n = srv.requests.length;
      if (n === 1) sock.end(head.slice(0, 20));
      else if (n === 2) sock.end(Buffer.concat([Buffer.from(head), object.subarray(0, 150_000)]));
      else sock.write(Buffer.concat([Buffer.from(head), object]));
    });
    const store = storeAt(srv.port, { maxAttempts: 3 });
    const got = await store.get('chunks/ab/c', undefined, { into: Buffer.alloc(200_000) });
    assert.ok(got?.body.equals(object));
    assert.equal(srv.requests.length, 3);
  });

  it('stops a GET mid-body when the caller gives up: the connection is closed, nothing retried', async () => {
    const object = objectOf(100_000);
    let closed!: Promise<void>;
    let sent!: () => void;
    const halfSent = new Promise<void>((r) => (sent = r));
    const srv = await raw(({ sock }) => {
      closed = new Promise((r) => sock.on('close', () => r()));
      sock.write(
        Buffer.concat([Buffer.from(answerHead(200, { 'content-length': object.length })), object.subarray(0, 50_000)]),
        () => sent(),
      );
    });
    const into = Buffer.alloc(100_000, 0xee);
    const ac = new AbortController();
    const p = storeAt(srv.port, { maxAttempts: 5, requestTimeoutMs: 60_000 }).get('chunks/ab/a', undefined, {
      signal: ac.signal,
      into,
    });
    await halfSent;
    ac.abort();
    const e = await expectStoreError(p, 'Timeout');
    assert.match(e.message, /abandoned/);
    await closed;
    assert.equal(srv.requests.length, 1);
  });

  it('times out a body that stalls mid-way, retrying as configured', async () => {
    const object = objectOf(100_000);
    const srv = await raw(({ sock }) => {
      sock.write(Buffer.concat([Buffer.from(answerHead(200, { 'content-length': object.length })), object.subarray(0, 30_000)]));
    });
    const e = await expectStoreError(
      storeAt(srv.port, { maxAttempts: 2, requestTimeoutMs: 300 }).get('chunks/ab/s', undefined, { into: Buffer.alloc(100_000) }),
      'Timeout',
    );
    assert.ok(e.retryable);
    assert.equal(srv.requests.length, 2);
  });

  it('keeps no idle connection that holds the process alive', async () => {
    const srv = await standIn();
    srv.setAnswer((_s, res) => {
      res.writeHead(200, { 'content-length': 3, ETag: '"u"' });
      res.end('abc');
    });
    const modulePath = path.resolve(__dirname, '..', '..', 'electron', 'engine', 'store', 's3.js');
    // The child GETs and never closes its store: it must end by itself, its kept connection
    // (still open on the server's side) not among what keeps its event loop alive.
    const script = `
      const { S3Store } = require(${JSON.stringify(modulePath)});
      const store = new S3Store(${JSON.stringify({
        bucket: 'bucket-1',
        endpoint: `http://127.0.0.1:${srv.port}`,
        region: 'eu-west-1',
        pathStyle: true,
        credentials: CREDS,
      })});
      store.get('chunks/ab/u', undefined, { into: Buffer.alloc(16) }).then((got) => {
        setImmediate(() => process.stdout.write(JSON.stringify({ body: got.body.toString(), alive: process.getActiveResourcesInfo() })));
      }, (e) => { console.error(e); process.exit(1); });
    `;
    const out = await new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(stderr))));
    });
    const { body, alive } = JSON.parse(out) as { body: string; alive: string[] };
    assert.equal(body, 'abc');
    assert.ok(!alive.some((r) => /TCP|TLS/.test(r)), alive.join(', '));
    assert.equal(srv.seen.length, 1);
  });

  it('GETs over HTTPS with the TLS options of the agent it is given, within its socket bound', async () => {
    const dir = path.resolve(__dirname, '..', '..', '..', 'test', 'fixtures', 'tls');
    const cert = readFileSync(path.join(dir, 'loopback-cert.pem'));
    const srv = await standIn({ key: readFileSync(path.join(dir, 'loopback-key.pem')), cert });
    const object = objectOf(300_000);
    srv.setAnswer((_s, res) => {
      res.writeHead(200, { 'content-length': object.length, ETag: '"tls"' });
      res.end(object);
    });
    const client = new S3Client({
      region: 'eu-west-1',
      endpoint: `https://127.0.0.1:${srv.port}`,
      forcePathStyle: true,
      credentials: CREDS,
    });
    const direct = (agent: https.Agent) =>
      new DirectPut({
        client,
        bucket: 'bucket-1',
        httpAgent: new http.Agent(),
        httpsAgent: agent,
        connectTimeoutMs: 5000,
        requestTimeoutMs: 30_000,
        maxAttempts: 1,
      });
    const trusted = direct(new https.Agent({ keepAlive: true, maxSockets: 1, ca: cert }));
    const untrusted = direct(new https.Agent({ keepAlive: true }));
    try {
      assert.equal(await trusted.usable(), true);
      const intos = [Buffer.alloc(300_000), Buffer.alloc(300_000), Buffer.alloc(300_000)];
      const got = await Promise.all(intos.map((into, i) => trusted.get({ key: `chunks/ab/${i}`, into })));
      for (const [i, g] of got.entries()) {
        assert.ok(g.body.equals(object));
        assert.equal(g.body.buffer, intos[i]!.buffer);
        assert.equal(g.etag, '"tls"');
      }
      assert.equal(srv.connections, 1, 'three GETs at once through one connection (maxSockets: 1)');
      for (const s of srv.seen) assert.equal(s.badSignature, undefined);
      assert.equal(await untrusted.usable(), true);
      await assert.rejects(untrusted.get({ key: 'chunks/ab/x', into: Buffer.alloc(16) }), (err: NodeJS.ErrnoException) =>
        /CERT|SELF_SIGNED/.test(String(err.code)),
      );
    } finally {
      trusted.close();
      untrusted.close();
      client.destroy();
    }
  });
});
