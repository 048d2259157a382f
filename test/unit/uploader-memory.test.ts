// Pins down the uploader's memory: chunks are read, sealed and sent from pooled buffers whose
// total never exceeds the bound it reports (ENCODING_SLOTS plaintext buffers, one body per upload
// in flight), PUTs in flight never exceed the upload concurrency, a body whose PUT failed is never
// reused (a cut-off request may still be sending it), and each PUT carries the CRC32 of its body.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO, sealedBodySize } from '../../electron/engine/cache/sealed';
import { decodeChunk, maxEncodedBytes } from '../../electron/engine/chunk/format';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { MonitoredStore } from '../../electron/engine/store/monitored';
import { PutOptions, StoreError } from '../../electron/engine/store/types';
import { ENCODING_SLOTS, Uploader } from '../../electron/engine/upload/uploader';

const CS = 1024 * 1024;
const CONCURRENCY = 3;
const keys = { nameKey: randomBytes(32), chunkKey: randomBytes(32), cacheKey: randomBytes(32) };

interface PutSeen {
  readonly key: string;
  readonly body: Buffer;
  readonly options: PutOptions | undefined;
  /** CRC32 of the body when the PUT was made (the buffer is reused once the PUT is over). */
  readonly crc: number;
}

/** A bucket whose chunk PUTs the test holds, fails, or lets through. */
class HeldStore extends MemoryStore {
  inflight = 0;
  maxInflight = 0;
  seen: PutSeen[] = [];
  /** Resolved by the test to let one held PUT through. */
  gates: Array<() => void> = [];
  hold = false;
  failNext = 0;
  onPut: () => void = () => undefined;

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    if (!key.startsWith('chunks/')) return super.put(key, body, options);
    this.seen.push({ key, body, options, crc: crc32(body) });
    if (this.failNext > 0) {
      this.failNext--;
      // Fails at once but keeps `body`, as a request cut off while still sending would.
      throw new StoreError('ServerError', 'injected failure');
    }
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    this.onPut();
    try {
      if (this.hold) await new Promise<void>((resolve) => this.gates.push(resolve));
      return await super.put(key, Buffer.from(body), options);
    } finally {
      this.inflight--;
    }
  }
}

let dir: string;
let handles: HandlePool;
let meta: MetaStore;
let dirty: DirtyStore;
let cache: ChunkCache;
let bucket: HeldStore;
let uploader: Uploader;

for (const encodeWorkers of [0, 1]) {
  describe(`upload memory (${encodeWorkers ? 'encoded in a worker thread' : 'encoded on the engine thread'})`, () => {
    beforeEach(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-upload-memory-'));
      handles = new HandlePool();
      const sealed = new SealedIO(keys.cacheKey);
      meta = await MetaStore.create(path.join(dir, 'meta'), Tree.create(CS, 0, 0, 1), 0);
      dirty = new DirtyStore(dir, handles, sealed);
      await dirty.init(() => 'deleted', 0);
      cache = new ChunkCache(
        dir,
        { capBytes: 256 * CS, highWatermark: 0.9, lowWatermark: 0.7 },
        handles,
        () => dirty.totalBytes,
        sealed,
      );
      await cache.init();
      bucket = new HeldStore();
      uploader = new Uploader({
        dirty,
        meta,
        cache,
        store: new MonitoredStore(bucket, { probeKey: 'filespace.json', probeTimeoutMs: () => 60_000 }),
        keys,
        names: { acquire: async () => undefined, release: () => undefined },
        files: { isUnlinked: () => false, commitSize: () => undefined },
        freed: () => undefined,
        limitBytesPerSec: 0,
        uploadConcurrency: () => CONCURRENCY,
        encodeWorkers,
        log: () => undefined,
      });
    });

    afterEach(async () => {
      await uploader.close();
      await meta.close();
      await handles.closeAll();
      await rm(dir, { recursive: true, force: true });
    });

    async function fileWithChunks(name: string, chunks: Buffer[]): Promise<number> {
      const ino = meta.tree.allocIno();
      meta.commit({ t: 'mk', parent: ROOT_INO, name, ino, kind: 'file', mode: 0o644, uid: 0, gid: 0, ms: 1 });
      for (let idx = 0; idx < chunks.length; idx++) {
        const d = await dirty.create(ino, idx, undefined, 1);
        await dirty.write(d, chunks[idx]!, 0, 1);
      }
      meta.commit({ t: 'attr', ino, size: (chunks.length - 1) * CS + chunks[chunks.length - 1]!.length, ms: 1 });
      return ino;
    }

    describe('upload buffers', () => {
      it('keeps its buffers within the bound it reports, and PUTs in flight within the concurrency', async () => {
        const chunks = Array.from({ length: 12 }, (_, i) => (i % 3 === 0 ? randomBytes(CS) : randomBytes(1 + ((i * 7919) % CS))));
        const ino = await fileWithChunks('many', chunks);
        const bound = ENCODING_SLOTS * sealedBodySize(CS) + CONCURRENCY * maxEncodedBytes(CS);
        assert.equal(uploader.memory.boundBytes, bound);
        bucket.hold = true;
        let overBound = 0;
        bucket.onPut = () => {
          if (uploader.memory.heldBytes > bound) overBound++;
        };
        const all = chunks.map((_, idx) => uploader.upload(dirty.get(ino, idx)!));
        // Let one PUT through whenever as many as the concurrency allows are waiting, or when the
        // waiting ones are all that is left (nothing else moved for a while), until all are done.
        let done = false;
        const finished = Promise.all(all).then(() => (done = true));
        const deadline = Date.now() + 120_000;
        let lastSeen = -1;
        let still = 0;
        while (!done) {
          assert.ok(Date.now() < deadline, 'uploads finish');
          still = bucket.seen.length === lastSeen ? still + 1 : 0;
          lastSeen = bucket.seen.length;
          if (bucket.gates.length >= CONCURRENCY || (bucket.gates.length > 0 && still > 20)) {
            bucket.gates.shift()!();
            still = 0;
          }
          await new Promise((r) => setTimeout(r, 2));
        }
        await finished;
        assert.equal(overBound, 0, 'held bytes stayed within the bound at every PUT');
        assert.ok(uploader.memory.peakBytes <= bound, `peak ${uploader.memory.peakBytes} over the bound ${bound}`);
        assert.ok(bucket.maxInflight <= CONCURRENCY, `${bucket.maxInflight} PUTs in flight with a concurrency of ${CONCURRENCY}`);
        assert.ok(bucket.maxInflight > 1, 'PUTs did overlap');
        assert.deepEqual(
          meta.tree.get(ino)!.chunks!.map((c) => c?.[1]),
          chunks.map((c) => c.length),
        );
        for (let idx = 0; idx < chunks.length; idx++) {
          const name = meta.tree.get(ino)!.chunks![idx]![0];
          const got = await bucket.get(`chunks/${name.slice(0, 2)}/${name}`);
          assert.ok((await decodeChunk(keys.chunkKey, name, got!.body)).equals(chunks[idx]!), `chunk ${idx} in the bucket`);
        }
      });

      it('never reuses the body of a failed PUT, which may still be on its way out', async () => {
        const first = randomBytes(CS);
        const ino = await fileWithChunks('a', [first, randomBytes(CS), randomBytes(CS), randomBytes(CS)]);
        bucket.failNext = 1;
        await assert.rejects(uploader.upload(dirty.get(ino, 0)!), /injected failure/);
        const failed = bucket.seen[0]!;
        const failedBytes = Buffer.from(failed.body);
        for (const idx of [1, 2, 3, 0]) await uploader.upload(dirty.get(ino, idx)!);
        for (const later of bucket.seen.slice(1))
          assert.notEqual(later.body.buffer, failed.body.buffer, "a later PUT got the failed body's memory");
        assert.ok(failed.body.equals(failedBytes), 'the failed body still holds what was being sent');
        const name = meta.tree.get(ino)!.chunks![0]![0];
        assert.ok((await decodeChunk(keys.chunkKey, name, failed.body)).equals(first));
      });

      it('sends every chunk with the CRC32 of its body', async () => {
        const ino = await fileWithChunks('c', [randomBytes(CS), Buffer.alloc(CS, 7), randomBytes(100)]);
        for (let idx = 0; idx < 3; idx++) await uploader.upload(dirty.get(ino, idx)!);
        assert.equal(bucket.seen.length, 3);
        for (const put of bucket.seen) assert.equal(put.options?.crc32, put.crc, put.key);
      });
    });
  });
}
