// Ranged reads of segmented chunks (FSC2): a reader that is not streaming gets the segments
// covering its read with one ranged GET, far smaller than the chunk, and the right bytes; an
// FSC1 object, a reference shorter than its chunk or a damaged range falls back to the whole
// chunk (checked as a whole), and a damaged whole chunk is still refused. A chunk of a file
// brought whole for a random reader goes into the cache as received, unopened: its segments are
// checked when they are read, so a damaged one is still never served.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { HandlePool } from '../../electron/engine/cache/handles';
import { ReceivedIO } from '../../electron/engine/cache/received';
import { SealedIO } from '../../electron/engine/cache/sealed';
import { chunkName, seal } from '../../electron/engine/chunk/crypto';
import { SEGMENT_BYTES, chunkKey, encodeChunk } from '../../electron/engine/chunk/format';
import { ChunkFetcher } from '../../electron/engine/prefetch/fetcher';
import { MemoryStore } from '../../electron/engine/store/memory';
import { CallOptions, GetResult } from '../../electron/engine/store/types';

/** A memory store that records the byte ranges asked for and the bytes sent. */
class CountingStore extends MemoryStore {
  readonly ranges: Array<{ start: number; end: number } | undefined> = [];
  sentBytes = 0;

  override async get(
    key: string,
    range?: { readonly start: number; readonly end: number },
    _call?: CallOptions,
  ): Promise<GetResult | undefined> {
    this.ranges.push(range && { ...range });
    const got = await super.get(key, range);
    this.sentBytes += got?.body.length ?? 0;
    return got;
  }
}

const CHUNK = 4 * 1024 * 1024;
const key = randomBytes(32);
const nameKey = randomBytes(32);
let dir: string;
let handles: HandlePool;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-segments-'));
  handles = new HandlePool(8);
});
afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function setUp(
  o: { received?: boolean } = {},
): Promise<{ store: CountingStore; cache: ChunkCache; fetcher: ChunkFetcher }> {
  const store = new CountingStore();
  const cache = new ChunkCache(
    dir,
    { capBytes: 64 * 1024 * 1024, highWatermark: 0.9, lowWatermark: 0.7 },
    handles,
    () => 0,
    new SealedIO(randomBytes(32)),
    o.received ? new ReceivedIO(randomBytes(32), key) : undefined,
  );
  await cache.init();
  const fetcher = new ChunkFetcher(
    store,
    cache,
    key,
    4,
    () => 60_000,
    () => undefined,
    undefined,
    CHUNK,
  );
  return { store, cache, fetcher };
}

async function upload(store: MemoryStore, data: Buffer, v1 = false): Promise<string> {
  const name = chunkName(nameKey, data);
  const obj = v1
    ? Buffer.concat([Buffer.from('FSC1'), Buffer.from([0]), seal(key, data, `chunk:${name}:0`)])
    : await encodeChunk(key, name, data);
  await store.put(chunkKey(name), obj);
  return name;
}

describe('segment reads', () => {
  it('GETs only the segments covering a read, and they hold the right bytes', async () => {
    const { store, fetcher, cache } = await setUp();
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    for (const [pos, n] of [
      [12_345, 4096],
      [SEGMENT_BYTES - 100, 4096],
      [CHUNK - 4096, 4096],
      [0, 1],
    ] as const) {
      const before = store.sentBytes;
      const span = (await fetcher.fetchSegments(name, data.length, pos, n))!;
      assert.ok(span, `a span for ${pos}+${n}`);
      assert.deepEqual(span.data.subarray(pos - span.from, pos - span.from + n), data.subarray(pos, pos + n));
      const sent = store.sentBytes - before;
      assert.ok(sent <= 2 * (SEGMENT_BYTES + 28), `${sent} bytes sent for a read of ${n}`);
      assert.ok(store.ranges.at(-1), 'a ranged GET');
    }
    assert.equal(cache.has(name), false, 'a part of a chunk is not cached');
    assert.equal(fetcher.stats.segmentFallbacks, 0);
  });

  it('receives and opens ranged reads into buffers used again once released, never while a reader holds one', async () => {
    const { store, fetcher } = await setUp();
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    const read = async (pos: number) => {
      const span = (await fetcher.fetchSegments(name, data.length, pos, 4096))!;
      assert.deepEqual(
        span.data.subarray(pos - span.from, pos - span.from + 4096),
        data.subarray(pos, pos + 4096),
        `bytes at ${pos}`,
      );
      return span;
    };
    const a = await read(10_000);
    const b = await read(2 * SEGMENT_BYTES + 5);
    assert.notEqual(a.data.buffer, b.data.buffer, 'both held: two buffers');
    const aBytes = Buffer.from(a.data);
    a.release();
    a.release(); // twice is once
    const c = await read(5 * SEGMENT_BYTES + 9);
    assert.equal(c.data.buffer, a.data.buffer, 'the released buffer is used again');
    assert.notEqual(c.data.buffer, b.data.buffer);
    assert.deepEqual(
      b.data.subarray(0, 4096),
      data.subarray(2 * SEGMENT_BYTES, 2 * SEGMENT_BYTES + 4096),
      'a held span keeps its bytes',
    );
    assert.notDeepEqual(aBytes.subarray(0, 4096), c.data.subarray(0, 4096));
    b.release();
    c.release();
  });

  it('leaves a large read, an FSC1 object and a shorter reference to the whole chunk, which then reads right', async () => {
    const { store, fetcher } = await setUp();
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    assert.equal(await fetcher.fetchSegments(name, data.length, 0, CHUNK / 2 + 1), undefined, 'half the chunk or more: whole');

    const old = randomBytes(CHUNK);
    const oldName = await upload(store, old, true);
    assert.equal(await fetcher.fetchSegments(oldName, old.length, 100_000, 4096), undefined);
    assert.equal(fetcher.stats.segmentFallbacks, 1);
    const gets = store.ranges.length;
    assert.equal(await fetcher.fetchSegments(oldName, old.length, 300_000, 4096), undefined, 'remembered: no second try');
    assert.equal(store.ranges.length, gets);
    assert.deepEqual(await fetcher.fetch(oldName), old);

    // A file truncated inside its last chunk: its reference is shorter than the chunk.
    const other = randomBytes(CHUNK);
    const otherName = await upload(store, other);
    assert.equal(await fetcher.fetchSegments(otherName, CHUNK / 2, 100_000, 4096), undefined);
    assert.deepEqual(await fetcher.fetch(otherName), other);
    await fetcher.cacheWritesDone();
  });

  it('reads a chunk whole once its ranged reads have brought a quarter of it', async () => {
    const { store, fetcher } = await setUp();
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    const quarter = CHUNK / 4 / SEGMENT_BYTES;
    for (let i = 0; i < quarter; i++) {
      assert.ok(await fetcher.fetchSegments(name, data.length, i * 2 * SEGMENT_BYTES + 7, 100), `ranged read ${i}`);
    }
    assert.equal(await fetcher.fetchSegments(name, data.length, 3 * SEGMENT_BYTES, 100), undefined);
    assert.deepEqual(await fetcher.fetch(name), data);
    await fetcher.cacheWritesDone();
  });

  it('a damaged segment is never served: the range falls back, and the whole chunk is refused', async () => {
    const { store, fetcher } = await setUp();
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    const obj = (await store.get(chunkKey(name)))!.body;
    obj[5 + 3 * (SEGMENT_BYTES + 28) + 40]! ^= 1;
    await store.put(chunkKey(name), obj);
    assert.equal(await fetcher.fetchSegments(name, data.length, 3 * SEGMENT_BYTES + 10, 100), undefined);
    await assert.rejects(fetcher.fetch(name), { errno: 'EIO' });
  });
});

describe('chunks of a file brought whole for a random reader', () => {
  it('go into the cache unopened, and read right from there without another GET', async () => {
    const { store, cache, fetcher } = await setUp({ received: true });
    const data = randomBytes(CHUNK - 1000);
    const name = await upload(store, data);
    assert.equal(await fetcher.background(name, true), true);
    assert.equal(store.ranges.length, 1);
    const got = Buffer.alloc(4096);
    const pos = 3 * SEGMENT_BYTES + 17;
    assert.equal(await cache.read(name, got, 0, 4096, pos), 4096);
    assert.deepEqual(got, data.subarray(pos, pos + 4096));
    assert.deepEqual(await fetcher.fetch(name), data);
    assert.equal(store.ranges.length, 1, 'read from the cache');
  });

  it('a damaged segment is stored unopened but never served: found on its read, and the chunk is refused', async () => {
    const { store, cache, fetcher } = await setUp({ received: true });
    const damaged: string[] = [];
    cache.onDamaged = (n) => damaged.push(n);
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    const obj = (await store.get(chunkKey(name)))!.body;
    obj[5 + 3 * (SEGMENT_BYTES + 28) + 40]! ^= 1;
    await store.put(chunkKey(name), obj);
    store.ranges.length = 0;
    // Kept unopened: an opened download would have been refused (twice, then EIO).
    assert.equal(await fetcher.background(name, true), true);
    assert.equal(store.ranges.length, 1, 'one GET, not checked');
    const got = Buffer.alloc(100);
    assert.equal(await cache.read(name, got, 0, 100, 10), 100, 'an intact segment reads');
    assert.deepEqual(got, data.subarray(10, 110));
    assert.equal(await cache.read(name, got, 0, 100, 3 * SEGMENT_BYTES + 10), undefined, 'the damaged one is a miss');
    assert.deepEqual(damaged, [name]);
    assert.equal(cache.has(name), false, 'the file is dropped');
    await assert.rejects(fetcher.fetch(name), { errno: 'EIO' });
  });

  it('pinned data is opened on its way in: a damaged chunk is refused then', async () => {
    const { store, cache, fetcher } = await setUp({ received: true });
    const data = randomBytes(CHUNK);
    const name = await upload(store, data);
    const obj = (await store.get(chunkKey(name)))!.body;
    obj[5 + 40]! ^= 1;
    await store.put(chunkKey(name), obj);
    await assert.rejects(fetcher.background(name), { errno: 'EIO' });
    assert.equal(cache.has(name), false);
  });
});
