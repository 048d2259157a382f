/**
 * Unit tests for the object stores that need no network: the conformance suite on MemoryStore
 * and LocalDiskStore, the local store's own guarantees (unsafe keys refused, conditional
 * writes exclusive across instances and processes, abandoned locks broken), the S3
 * store's error translation, which is a pure function, and the checksums its PUTs carry, seen
 * by a loopback server that checks them as S3 does.
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as http from 'node:http';
import { crc32 } from 'node:zlib';
import { mkdtemp, readdir, rm, writeFile, mkdir, utimes } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { createHash, randomBytes } from 'node:crypto';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { MemoryStore } from '../../electron/engine/store/memory';
import { S3Store, crc32Header, toStoreError } from '../../electron/engine/store/s3';
import { StoreError } from '../../electron/engine/store/types';
import { expectStoreError, runStoreConformance } from '../helpers/storeConformance';

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'filespace-store-'));
}

runStoreConformance('MemoryStore', async () => ({ store: new MemoryStore(), cleanup: async () => {} }));

runStoreConformance('LocalDiskStore', async () => {
  const dir = await tempDir();
  const store = new LocalDiskStore(dir);
  return {
    store,
    cleanup: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('MemoryStore counters', () => {
  it('counts requests', async () => {
    const s = new MemoryStore();
    await s.put('a', Buffer.from('1'));
    await s.get('a');
    await s.get('b');
    assert.equal(s.puts, 1);
    assert.equal(s.gets, 2);
    assert.equal(s.size, 1);
  });
});

describe('LocalDiskStore', () => {
  const withDir = (fn: (dir: string) => Promise<void>) => async () => {
    const dir = await tempDir();
    try {
      await fn(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };

  it(
    'refuses unsafe keys with StoreError(Other) and writes nothing',
    withDir(async (dir) => {
      const s = new LocalDiskStore(path.join(dir, 'root'));
      const bad = [
        '../escape',
        'a/../../escape',
        'a/./b',
        'a//b',
        '/abs',
        'trailing/',
        '',
        'nul\0byte',
        '.tmp/x',
        '.locks/y',
        '..',
      ];
      for (const k of bad) {
        await expectStoreError(s.put(k, Buffer.from('x')), 'Other');
        await expectStoreError(s.get(k), 'Other');
        await expectStoreError(s.head(k), 'Other');
        await expectStoreError(s.delete(k), 'Other');
      }
      await expectStoreError(s.deleteMany(['ok', '../x']), 'Other');
      assert.deepEqual(await readdir(dir), [], 'nothing was created');
      assert.deepEqual(await s.list(''), []);
    }),
  );

  it(
    'lays objects out as files and keeps its bookkeeping out of listings',
    withDir(async (dir) => {
      const s = new LocalDiskStore(dir);
      await s.put('chunks/ab/cdef', Buffer.from('hello'));
      assert.equal((await readdir(path.join(dir, 'chunks', 'ab'))).join(), 'cdef');
      assert.deepEqual(await s.list(''), ['chunks/ab/cdef']);
      assert.deepEqual(await readdir(path.join(dir, '.tmp')), [], 'no temp files left behind');
      assert.deepEqual(await readdir(path.join(dir, '.locks')), [], 'no lock files left behind');
      // Deleting the last object in a folder prunes the empty folders.
      await s.delete('chunks/ab/cdef');
      assert.deepEqual((await readdir(dir)).sort(), ['.locks', '.tmp']);
    }),
  );

  it(
    'refuses a key that would need a file and a folder of the same name',
    withDir(async (dir) => {
      const s = new LocalDiskStore(dir);
      await s.put('a', Buffer.from('file'));
      await expectStoreError(s.put('a/b', Buffer.from('x')), 'Other');
      await s.put('c/d', Buffer.from('x'));
      await expectStoreError(s.put('c', Buffer.from('x')), 'Other');
      assert.equal(await s.get('c'), undefined);
      assert.equal(await s.head('a/b'), undefined);
      assert.deepEqual(await s.list(''), ['a', 'c/d']);
    }),
  );

  it(
    'a second instance on the same root sees conditional-write conflicts',
    withDir(async (dir) => {
      const a = new LocalDiskStore(dir);
      const b = new LocalDiskStore(dir);
      const e1 = await a.put('lease', Buffer.from('a'), { ifNoneMatch: '*' });
      await expectStoreError(b.put('lease', Buffer.from('b'), { ifNoneMatch: '*' }), 'PreconditionFailed');
      assert.equal((await b.head('lease'))?.etag, e1);
      const e2 = await b.put('lease', Buffer.from('b2'), { ifMatch: e1 });
      await expectStoreError(a.put('lease', Buffer.from('a2'), { ifMatch: e1 }), 'PreconditionFailed');
      assert.equal((await a.get('lease'))?.etag, e2);

      // Racing creates from both instances: exactly one winner per key.
      const keys = Array.from({ length: 20 }, (_, i) => `race/${i}`);
      const attempts = keys.flatMap((k) => [a, b, a, b].map((s, j) => s.put(k, Buffer.from(`${j}`), { ifNoneMatch: '*' })));
      const results = await Promise.allSettled(attempts);
      for (let i = 0; i < keys.length; i++) {
        const mine = results.slice(i * 4, i * 4 + 4);
        assert.equal(mine.filter((r) => r.status === 'fulfilled').length, 1, keys[i]);
      }
    }),
  );

  it(
    'conditional writes are exclusive across processes',
    withDir(async (dir) => {
      const modulePath = path.resolve(__dirname, '../../electron/engine/store/local.js');
      const keys = 40;
      const script = `
      const { LocalDiskStore } = require(${JSON.stringify(modulePath)});
      const s = new LocalDiskStore(${JSON.stringify(dir)});
      (async () => {
        let won = [];
        await Promise.all(Array.from({ length: ${keys} }, async (_, i) => {
          try { await s.put('race/' + i, Buffer.from(String(process.pid)), { ifNoneMatch: '*' }); won.push(i); }
          catch (e) { if (e.code !== 'PreconditionFailed') throw e; }
        }));
        process.stdout.write(JSON.stringify(won));
      })().catch((e) => { console.error(e); process.exit(1); });
    `;
      const run = () =>
        new Promise<number[]>((resolve, reject) => {
          const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
          let out = '';
          let err = '';
          child.stdout.on('data', (d) => (out += d));
          child.stderr.on('data', (d) => (err += d));
          // 'close', not 'exit': the child's output may still be in the pipe when it exits.
          child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out) as number[]) : reject(new Error(err))));
        });
      const wins = (await Promise.all([run(), run(), run(), run()])).flat();
      assert.equal(wins.length, keys, 'each key created exactly once');
      assert.deepEqual(
        [...wins].sort((x, y) => x - y),
        Array.from({ length: keys }, (_, i) => i),
      );
    }),
  );

  it(
    'breaks a lock left by a dead process at once, and a stale lock after the limit; an unconditional put takes no lock file',
    withDir(async (dir) => {
      const lockFor = (key: string) =>
        path.join(dir, '.locks', `${createHash('sha256').update(key).digest('hex').slice(0, 40)}.lock`);
      await mkdir(path.join(dir, '.locks'), { recursive: true });

      // A dead holder on this host: find a pid that is not running.
      const dead = await new Promise<number>((resolve) => {
        const c = spawn(process.execPath, ['-e', '0']);
        c.on('exit', () => resolve(c.pid!));
      });
      await writeFile(lockFor('k1'), `${dead} ${os.hostname()} token`);
      const s = new LocalDiskStore(dir, { lockTimeoutMs: 2000 });
      const t0 = Date.now();
      await s.put('k1', Buffer.from('x'), { ifNoneMatch: '*' });
      assert.ok(Date.now() - t0 < 1500);

      // A live holder (this process) whose lock is older than the stale limit.
      await writeFile(lockFor('k2'), `${process.pid} ${os.hostname()} token`);
      const old = new Date(Date.now() - 60_000);
      await utimes(lockFor('k2'), old, old);
      await s.put('k2', Buffer.from('y'), { ifNoneMatch: '*' });

      // A fresh lock held by a live process is respected until the timeout.
      await writeFile(lockFor('k3'), `${process.pid} ${os.hostname()} token`);
      const impatient = new LocalDiskStore(dir, { lockTimeoutMs: 300 });
      await expectStoreError(impatient.put('k3', Buffer.from('z'), { ifNoneMatch: '*' }), 'Timeout');
      await expectStoreError(impatient.delete('k3'), 'Timeout');
      assert.equal(await impatient.head('k3'), undefined);
      // An unconditional put (a chunk's) needs no order against another process: its rename is
      // atomic by itself, and it does not wait for the lock.
      await impatient.put('k3', Buffer.from('u'));
      assert.equal((await impatient.get('k3'))?.body.toString(), 'u');
      await expectStoreError(impatient.put('k3', Buffer.from('v'), { ifMatch: (await impatient.head('k3'))!.etag }), 'Timeout');
      assert.equal((await impatient.get('k3'))?.body.toString(), 'u');
    }),
  );

  it(
    'puts into a folder removed since its last put: by a delete here, or from outside',
    withDir(async (dir) => {
      const s = new LocalDiskStore(dir);
      await s.put('chunks/ab/one', Buffer.from('1'));
      await s.delete('chunks/ab/one'); // prunes chunks/ab and chunks
      await s.put('chunks/ab/two', Buffer.from('2'));
      await rm(path.join(dir, 'chunks'), { recursive: true }); // another process's prune
      await s.put('chunks/ab/three', Buffer.from('3'));
      assert.deepEqual(await s.list('chunks/'), ['chunks/ab/three']);
      assert.equal((await s.get('chunks/ab/three'))?.body.toString(), '3');
    }),
  );

  it(
    'serves ETags from cache and notices a replaced file',
    withDir(async (dir) => {
      const a = new LocalDiskStore(dir);
      const b = new LocalDiskStore(dir);
      const e1 = await a.put('x', Buffer.from('one'));
      assert.equal((await a.head('x'))?.etag, e1);
      const e2 = await b.put('x', Buffer.from('two'));
      assert.equal((await a.head('x'))?.etag, e2);
      assert.equal((await a.get('x', { start: 0, end: 1 }))?.etag, e2);
    }),
  );
});

describe('S3Store error translation', () => {
  const where = 's3://bucket/pre/key';
  const sdkError = (name: string, status?: number, extra: Record<string, unknown> = {}) =>
    Object.assign(new Error(`${name} happened`), { name, $metadata: { httpStatusCode: status }, ...extra });

  const cases: Array<[string, unknown, string, string, StoreError['code']]> = [
    ['412', sdkError('PreconditionFailed', 412), 's3:PutObject', where, 'PreconditionFailed'],
    ['409 conflict', sdkError('ConditionalRequestConflict', 409), 's3:PutObject', where, 'PreconditionFailed'],
    ['no bucket', sdkError('NoSuchBucket', 404), 's3:GetObject', where, 'NoSuchBucket'],
    ['denied', sdkError('AccessDenied', 403), 's3:PutObject', where, 'AccessDenied'],
    ['bad key id', sdkError('InvalidAccessKeyId', 403), 's3:ListBucket', where, 'InvalidCredentials'],
    ['bad signature', sdkError('SignatureDoesNotMatch', 403), 's3:GetObject', where, 'InvalidCredentials'],
    ['expired', sdkError('ExpiredToken', 400), 's3:GetObject', where, 'InvalidCredentials'],
    [
      'no creds',
      Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }),
      's3:GetObject',
      where,
      'InvalidCredentials',
    ],
    [
      'refused',
      Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }),
      's3:GetObject',
      where,
      'Unreachable',
    ],
    ['dns', Object.assign(new Error('getaddrinfo ENOTFOUND x'), { code: 'ENOTFOUND' }), 's3:GetObject', where, 'Unreachable'],
    [
      'reset renamed',
      Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', name: 'TimeoutError' }),
      's3:GetObject',
      where,
      'Unreachable',
    ],
    ['hang up', new Error('socket hang up'), 's3:GetObject', where, 'Unreachable'],
    [
      'aggregate',
      Object.assign(new AggregateError([Object.assign(new Error('x'), { code: 'ECONNREFUSED' })], 'x')),
      's3:GetObject',
      where,
      'Unreachable',
    ],
    ['timeout', Object.assign(new Error('timed out'), { name: 'TimeoutError' }), 's3:GetObject', where, 'Timeout'],
    ['s3 timeout', sdkError('RequestTimeout', 400), 's3:PutObject', where, 'Timeout'],
    ['slow down', sdkError('SlowDown', 503), 's3:PutObject', where, 'Throttled'],
    ['429', sdkError('TooManyRequests', 429), 's3:PutObject', where, 'Throttled'],
    ['500', sdkError('InternalError', 500), 's3:PutObject', where, 'ServerError'],
    ['503', sdkError('ServiceUnavailable', 503), 's3:PutObject', where, 'ServerError'],
    ['501', sdkError('NotImplemented', 501), 's3:PutObject', where, 'Other'],
    ['checksum mismatch', sdkError('BadDigest', 400), 's3:PutObject', where, 'Corrupt'],
    ['other', sdkError('InvalidArgument', 400), 's3:PutObject', where, 'Other'],
  ];
  for (const [label, err, action, w, code] of cases) {
    it(`maps ${label} to ${code}`, () => {
      const e = toStoreError(err, action, w);
      assert.ok(e instanceof StoreError);
      assert.equal(e.code, code, e.message);
      assert.ok(!e.message.includes('\n'));
      assert.ok(e.message.includes(w), e.message);
      if (code === 'AccessDenied') {
        assert.equal(e.action, action);
        assert.ok(e.message.includes(action));
      }
    });
  }

  it('keeps secrets out of messages', () => {
    const secret = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
    const e = toStoreError(
      Object.assign(new Error(`bad thing with ${secret} and AKIAIOSFODNN7EXAMPLE`), { name: 'Weird' }),
      's3:GetObject',
      where,
    );
    assert.ok(!e.message.includes(secret), e.message);
    assert.ok(!e.message.includes('AKIAIOSFODNN7EXAMPLE'), e.message);
  });

  it('describes the location without credentials', async () => {
    const s = new S3Store({
      bucket: 'b',
      prefix: '/team/fs/',
      endpoint: 'http://user:pw@127.0.0.1:9000',
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'secret' },
    });
    assert.equal(s.description, 's3://b/team/fs at http://127.0.0.1:9000');
    await s.close();
    const plain = new S3Store({ bucket: 'b', region: 'eu-west-1' });
    assert.equal(plain.description, 's3://b');
    await plain.close();
  });
});

/** A loopback server answering PUTs as S3 does about checksums: a CRC32 header that does not match the body is refused. */
async function checkingServer(): Promise<{
  endpoint: string;
  seen: Array<{ headers: http.IncomingHttpHeaders; body: Buffer }>;
  close(): Promise<void>;
}> {
  const seen: Array<{ headers: http.IncomingHttpHeaders; body: Buffer }> = [];
  const server = http.createServer((req, res) => {
    const parts: Buffer[] = [];
    req.on('data', (d: Buffer) => parts.push(d));
    req.on('end', () => {
      const body = Buffer.concat(parts);
      seen.push({ headers: req.headers, body });
      const sent = req.headers['x-amz-checksum-crc32'];
      if (typeof sent === 'string' && sent !== crc32Header(crc32(body))) {
        res.writeHead(400, { 'content-type': 'application/xml' });
        res.end(
          '<?xml version="1.0" encoding="UTF-8"?><Error><Code>BadDigest</Code><Message>The CRC32 you specified did not match the calculated checksum.</Message></Error>',
        );
        return;
      }
      res.writeHead(200, { ETag: '"abc"' });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  return { endpoint: `http://127.0.0.1:${port}`, seen, close: () => new Promise((r) => server.close(() => r())) };
}

describe('S3Store GET bodies', () => {
  it("receives a body into the caller's buffer when it fits, else into one of its own", async () => {
    const object = randomBytes(300_000);
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-length': object.length, ETag: '"e"' });
      // In pieces, as a socket delivers them.
      for (let at = 0; at < object.length; at += 70_000) res.write(object.subarray(at, at + 70_000));
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    const store = new S3Store({
      bucket: 'b',
      endpoint: `http://127.0.0.1:${port}`,
      region: 'us-east-1',
      pathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'secret' },
    });
    try {
      const into = Buffer.alloc(400_000);
      const filled = await store.get('chunks/ab/abcd', undefined, { into });
      assert.ok(filled && filled.body.equals(object));
      assert.equal(filled.body.buffer, into.buffer, 'a view of the caller buffer');
      assert.equal(filled.body.byteOffset, into.byteOffset);
      const small = Buffer.alloc(1000);
      const own = await store.get('chunks/ab/abcd', undefined, { into: small });
      assert.ok(own && own.body.equals(object));
      assert.notEqual(own.body.buffer, small.buffer);
      assert.ok(small.equals(Buffer.alloc(1000)), 'a buffer too small is left alone');
      const plain = await store.get('chunks/ab/abcd');
      assert.ok(plain && plain.body.equals(object));
      assert.equal(plain.body.byteLength, plain.body.buffer.byteLength, 'owns its memory');
    } finally {
      await store.close();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe('S3Store PUT checksums', () => {
  const storeAt = (endpoint: string) =>
    new S3Store({
      bucket: 'b',
      endpoint,
      region: 'us-east-1',
      pathStyle: true,
      maxAttempts: 1,
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'secret' },
    });

  it("sends the caller's CRC32, signed, and no hash of the body", async () => {
    const srv = await checkingServer();
    const store = storeAt(srv.endpoint);
    try {
      const body = Buffer.from('a sealed chunk, say');
      await store.put('chunks/ab/abcd', body, { crc32: crc32(body) });
      const { headers, body: got } = srv.seen[0]!;
      assert.ok(got.equals(body));
      assert.equal(headers['x-amz-checksum-crc32'], crc32Header(crc32(body)));
      assert.equal(headers['x-amz-content-sha256'], 'UNSIGNED-PAYLOAD');
      const signed = /SignedHeaders=([^,]+)/.exec(String(headers.authorization))?.[1]?.split(';') ?? [];
      assert.ok(signed.includes('x-amz-checksum-crc32'), `signed headers: ${signed.join(';')}`);
      assert.ok(signed.includes('x-amz-content-sha256'));
      assert.equal(
        Object.keys(headers).filter((h) => h.startsWith('x-amz-checksum-')).length,
        1,
        'no second checksum from the SDK',
      );
    } finally {
      await store.close();
      await srv.close();
    }
  });

  it('reports a body the bucket received damaged as Corrupt, which is retried', async () => {
    const srv = await checkingServer();
    const store = storeAt(srv.endpoint);
    try {
      const body = Buffer.from('a sealed chunk, say');
      const e = await expectStoreError(store.put('chunks/ab/abcd', body, { crc32: crc32(body) ^ 1 }), 'Corrupt');
      assert.ok(e.retryable);
      assert.match(e.message, /damaged/);
    } finally {
      await store.close();
      await srv.close();
    }
  });

  it("keeps the SDK's own checksums for PUTs without a caller's CRC32", async () => {
    const srv = await checkingServer();
    const store = storeAt(srv.endpoint);
    try {
      const body = Buffer.from('{"small":"metadata"}');
      await store.put('meta/x', body);
      const { headers } = srv.seen[0]!;
      assert.equal(headers['x-amz-content-sha256'], createHash('sha256').update(body).digest('hex'));
      assert.equal(headers['x-amz-checksum-crc32'], crc32Header(crc32(body)));
    } finally {
      await store.close();
      await srv.close();
    }
  });
});
