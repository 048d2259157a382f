/**
 * Integration tests of S3Store against a real S3-compatible server (moto on loopback): the
 * shared conformance suite (also with every PUT sent as a chunk PUT, the direct path), prefix isolation, and the errors a user meets first (missing
 * bucket, unreachable endpoint).
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { crc32 } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import { type ObjectStore, StoreError } from '../../electron/engine/store/types';
import { createBucket, freePort, s3StoreFor, startMoto, type MotoServer } from '../helpers/moto';
import { expectStoreError, runStoreConformance } from '../helpers/storeConformance';

describe('S3Store against moto', () => {
  let moto: MotoServer;
  const bucket = 'filespace-test';
  let n = 0;

  before(async () => {
    moto = await startMoto();
    await createBucket(moto.endpoint, bucket);
  });

  after(async () => {
    await moto?.stop();
  });

  runStoreConformance('S3Store', async () => {
    const store = s3StoreFor(moto.endpoint, bucket, `suite/${++n}`);
    return {
      store,
      cleanup: async () => {
        try {
          await store.deleteMany(await store.list(''));
        } finally {
          await store.close();
        }
      },
    };
  });

  // The same semantics when every PUT carries a CRC32, as chunk PUTs do: those go straight over
  // HTTP (store/s3direct.ts), conditional writes included.
  runStoreConformance('S3Store, direct PUTs', async () => {
    const inner = s3StoreFor(moto.endpoint, bucket, `suite/${++n}`);
    const store: ObjectStore = {
      description: inner.description,
      get: (key, range, call) => inner.get(key, range, call),
      head: (key, call) => inner.head(key, call),
      put: (key, body, options) => inner.put(key, body, { ...options, crc32: crc32(body) }),
      delete: (key, call) => inner.delete(key, call),
      deleteMany: (keys, call) => inner.deleteMany(keys, call),
      list: (prefix, call) => inner.list(prefix, call),
      close: () => inner.close(),
    };
    return {
      store,
      cleanup: async () => {
        try {
          await store.deleteMany(await store.list(''));
        } finally {
          await store.close();
        }
      },
    };
  });

  it("stores an object sent with the caller's CRC32 and no body hash", async () => {
    const store = s3StoreFor(moto.endpoint, bucket, 'crc');
    try {
      const body = randomBytes(3 * 1024 * 1024 + 17);
      await store.put('chunks/ab/abcd', body, { crc32: crc32(body) });
      assert.ok((await store.get('chunks/ab/abcd'))?.body.equals(body));
    } finally {
      await store.close();
    }
  });

  it('keeps filespaces under different prefixes apart', async () => {
    const a = s3StoreFor(moto.endpoint, bucket, '/iso/a/');
    const b = s3StoreFor(moto.endpoint, bucket, 'iso/b');
    const root = s3StoreFor(moto.endpoint, bucket);
    try {
      await a.put('k', Buffer.from('a'));
      await b.put('k', Buffer.from('b'));
      assert.equal((await a.get('k'))?.body.toString(), 'a');
      assert.equal((await b.get('k'))?.body.toString(), 'b');
      assert.deepEqual(await a.list(''), ['k']);
      assert.deepEqual(await root.list('iso/'), ['iso/a/k', 'iso/b/k']);
      await a.deleteMany(['k']);
      assert.equal((await b.get('k'))?.body.toString(), 'b');
      assert.equal(a.description, `s3://${bucket}/iso/a at ${moto.endpoint}`);
    } finally {
      await b.deleteMany(['k']);
      await Promise.all([a.close(), b.close(), root.close()]);
    }
  });

  it('reports a missing bucket as NoSuchBucket', async () => {
    const s = s3StoreFor(moto.endpoint, 'no-such-bucket-here', 'p');
    try {
      const e = await expectStoreError(s.put('k', Buffer.from('x')), 'NoSuchBucket');
      assert.match(e.message, /no-such-bucket-here/);
      await expectStoreError(s.get('k'), 'NoSuchBucket');
      await expectStoreError(s.list(''), 'NoSuchBucket');
      assert.equal(e.retryable, false);
    } finally {
      await s.close();
    }
  });

  it('reports a closed port as Unreachable within seconds', async () => {
    const port = await freePort();
    const s = s3StoreFor(`http://127.0.0.1:${port}`, bucket, 'p', {
      maxAttempts: 1,
      connectTimeoutMs: 1000,
      requestTimeoutMs: 2000,
    });
    try {
      const t0 = Date.now();
      const e = await expectStoreError(s.get('k'), 'Unreachable');
      assert.ok(Date.now() - t0 < 5000);
      assert.ok(e instanceof StoreError && e.retryable);
      assert.ok(!e.message.includes('\n'));
      await expectStoreError(s.put('k', Buffer.from('x')), 'Unreachable');
    } finally {
      await s.close();
    }
  });

  it('reports a server that never answers as Timeout', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => undefined);
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as net.AddressInfo).port;
    const s = s3StoreFor(`http://127.0.0.1:${port}`, bucket, 'p', {
      maxAttempts: 1,
      connectTimeoutMs: 1000,
      requestTimeoutMs: 500,
    });
    try {
      const t0 = Date.now();
      const e = await expectStoreError(s.get('k'), 'Timeout');
      assert.ok(Date.now() - t0 < 3000, `took ${Date.now() - t0} ms`);
      assert.ok(e.retryable);
    } finally {
      await s.close();
      for (const sock of sockets) sock.destroy();
      await new Promise((r) => silent.close(r));
    }
  });
});
