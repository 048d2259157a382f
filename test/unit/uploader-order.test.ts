// Pins down the order of one chunk upload, on the uploader alone (real dirty store, clean cache and metadata on disk, an in-memory bucket): the reference is committed only after the PUT, the GC's hold on the name spans PUT and commit, the file's size is committed before the reference, a chunk written during its upload stays dirty, and chunks of files deleted while open or of a stopping engine are not committed.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO } from '../../electron/engine/cache/sealed';
import { chunkName } from '../../electron/engine/chunk/crypto';
import { chunkKey } from '../../electron/engine/chunk/format';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { MonitoredStore } from '../../electron/engine/store/monitored';
import { PutOptions } from '../../electron/engine/store/types';
import { Uploader } from '../../electron/engine/upload/uploader';

const CS = 64 * 1024;
const keys = { nameKey: randomBytes(32), chunkKey: randomBytes(32), cacheKey: randomBytes(32) };

/** Calls `onPut` before each chunk PUT reaches the bucket. */
class WatchedStore extends MemoryStore {
  onPut: (key: string) => Promise<void> | void = () => undefined;

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    if (key.startsWith('chunks/')) await this.onPut(key);
    return super.put(key, body, options);
  }
}

let dir: string;
let handles: HandlePool;
let meta: MetaStore;
let dirty: DirtyStore;
let cache: ChunkCache;
let bucket: WatchedStore;
let events: string[];
let unlinked: Set<number>;
let liveSize: Map<number, number>;
let raiseHeader: () => Promise<void>;
let uploader: Uploader;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-uploader-'));
  handles = new HandlePool();
  const sealed = new SealedIO(keys.cacheKey);
  meta = await MetaStore.create(path.join(dir, 'meta'), Tree.create(CS, 0, 0, 1), 0);
  dirty = new DirtyStore(dir, handles, sealed);
  await dirty.init(() => 'deleted', 0);
  cache = new ChunkCache(
    dir,
    { capBytes: 64 * CS, highWatermark: 0.9, lowWatermark: 0.7 },
    handles,
    () => dirty.totalBytes,
    sealed,
  );
  await cache.init();
  bucket = new WatchedStore();
  events = [];
  unlinked = new Set();
  liveSize = new Map();
  raiseHeader = async () => undefined;
  uploader = new Uploader({
    dirty,
    meta,
    cache,
    store: new MonitoredStore(bucket, { probeKey: 'filespace.json', probeTimeoutMs: () => 60_000 }),
    keys,
    names: {
      acquire: async (name) => void events.push(`hold ${name}`),
      release: (name) => void events.push(`let go ${name}`),
    },
    files: {
      isUnlinked: (ino) => unlinked.has(ino),
      commitSize: (ino) => {
        const size = liveSize.get(ino);
        if (size === undefined) return;
        liveSize.delete(ino);
        events.push(`size ${size}`);
        meta.commit({ t: 'attr', ino, size, ms: 2 });
      },
    },
    freed: () => void events.push('freed'),
    limitBytesPerSec: 0,
    uploadConcurrency: () => 4,
    encodeWorkers: 0,
    beforeSegmentedPut: () => raiseHeader(),
    log: () => undefined,
  });
});

afterEach(async () => {
  await meta.close();
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

/** A file with one dirty chunk holding `data`; its size is still only in memory (as the VFS keeps it). */
async function fileWithDirtyChunk(name: string, data: Buffer): Promise<number> {
  const ino = meta.tree.allocIno();
  meta.commit({ t: 'mk', parent: ROOT_INO, name, ino, kind: 'file', mode: 0o644, uid: 0, gid: 0, ms: 1 });
  const d = await dirty.create(ino, 0, undefined, 1);
  await dirty.write(d, data, 0, 1);
  liveSize.set(ino, data.length);
  return ino;
}

describe('Uploader.upload', () => {
  it('commits the size, then the reference, only after the PUT, inside the GC hold; then the clean cache has the chunk', async () => {
    const data = randomBytes(1000);
    const ino = await fileWithDirtyChunk('a', data);
    const name = chunkName(keys.nameKey, data);
    bucket.onPut = (key) => {
      assert.equal(key, chunkKey(name));
      const named = meta.pendingRemote.some((op) => op.t === 'chunk' && op.ref?.[0] === name);
      assert.equal(named || meta.tree.chunkRefs.has(name), false, 'no reference before the PUT');
      events.push('put');
    };
    await uploader.upload(dirty.get(ino, 0)!);
    assert.deepEqual(events, [`hold ${name}`, 'put', 'size 1000', `let go ${name}`, 'freed']);
    assert.deepEqual(meta.tree.get(ino)!.chunks, [[name, 1000]]);
    assert.equal(dirty.get(ino, 0), undefined, 'no longer dirty');
    assert.equal(cache.has(name), true, 'adopted by the clean cache');
    assert.equal(uploader.uploadedBytes > 1000, true);
  });

  it('raises the header before a chunk sealed in segments is PUT, not for a deflated one; a failed raise stops the PUT', async () => {
    raiseHeader = async () => void events.push('raise');
    bucket.onPut = () => void events.push('put');
    const deflated = await fileWithDirtyChunk('text', Buffer.alloc(CS, 'a text that deflates well '));
    await uploader.upload(dirty.get(deflated, 0)!);
    assert.equal(dirty.get(deflated, 0), undefined, 'uploaded');
    assert.deepEqual(
      events.filter((e) => e === 'raise' || e === 'put'),
      ['put'],
      'a deflated chunk (FSC1) needs no raise',
    );
    events.length = 0;
    const random = randomBytes(1000);
    const segmented = await fileWithDirtyChunk('random', random);
    raiseHeader = async () => {
      events.push('raise');
      throw new Error('filespace.json could not be raised');
    };
    await assert.rejects(uploader.upload(dirty.get(segmented, 0)!), /could not be raised/);
    assert.equal(events.includes('put'), false, 'no PUT after a failed raise');
    assert.equal(await bucket.get(chunkKey(chunkName(keys.nameKey, random))), undefined);
    assert.ok(dirty.get(segmented, 0), 'still dirty');
    assert.deepEqual(meta.tree.get(segmented)!.chunks ?? [], [], 'nothing committed');
    events.length = 0;
    raiseHeader = async () => void events.push('raise');
    await uploader.upload(dirty.get(segmented, 0)!);
    assert.deepEqual(
      events.filter((e) => e === 'raise' || e === 'put'),
      ['raise', 'put'],
      'the raise before the PUT',
    );
    assert.deepEqual(meta.tree.get(segmented)!.chunks, [[chunkName(keys.nameKey, random), 1000]]);
  });

  it('a chunk written during its PUT stays dirty, counted dirty from the read, with the sent content committed', async () => {
    const first = Buffer.alloc(1000, 1);
    const ino = await fileWithDirtyChunk('b', first);
    const d = dirty.get(ino, 0)!;
    const before = Date.now();
    bucket.onPut = async () => {
      // A write lands while the PUT is on its way (the uploader holds no chunk lock now).
      await dirty.withChunk(ino, 0, () => dirty.write(d, Buffer.alloc(10, 2), 0, Date.now()));
    };
    await uploader.upload(d);
    assert.equal(dirty.get(ino, 0), d, 'still dirty');
    assert.ok(d.firstDirtyMs >= before, 'dirty since the read, not since the first write');
    assert.deepEqual(meta.tree.get(ino)!.chunks, [[chunkName(keys.nameKey, first), 1000]]);
  });

  it('does not upload the data of a file deleted while still open', async () => {
    const ino = await fileWithDirtyChunk('c', randomBytes(100));
    unlinked.add(ino);
    await uploader.upload(dirty.get(ino, 0)!);
    assert.equal(bucket.puts, 0);
    assert.notEqual(dirty.get(ino, 0), undefined, 'kept until the last close');
  });

  it('drops the data of a file that is gone, without uploading it', async () => {
    const ino = await fileWithDirtyChunk('d', randomBytes(100));
    meta.commit({ t: 'rm', parent: ROOT_INO, name: 'd', ms: 3 });
    await uploader.upload(dirty.get(ino, 0)!);
    assert.equal(bucket.puts, 0);
    assert.equal(dirty.get(ino, 0), undefined);
  });

  it('commits nothing once stopped during the PUT: the chunk stays dirty for the next start', async () => {
    const data = randomBytes(100);
    const ino = await fileWithDirtyChunk('e', data);
    bucket.onPut = () => uploader.stop();
    await uploader.upload(dirty.get(ino, 0)!);
    assert.equal(meta.tree.chunkRefs.has(chunkName(keys.nameKey, data)), false);
    assert.notEqual(dirty.get(ino, 0), undefined);
  });
});
