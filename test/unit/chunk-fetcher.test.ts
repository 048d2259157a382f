// Pins down how the fetcher uses the bucket: read-ahead fills every download slot (a sequential
// reader keeps `download-concurrency` GETs in flight), a chunk a reader waits on goes before
// queued read-ahead, and a reader gets its chunk as soon as it is decoded, before the copy into
// the clean cache is prepared or written (served from memory meanwhile, without a second GET);
// a download's slot goes to the next GET while its copy is written, within a bound on the
// objects held.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { HandlePool } from '../../electron/engine/cache/handles';
import { ReceivedIO } from '../../electron/engine/cache/received';
import { SealedIO } from '../../electron/engine/cache/sealed';
import { chunkName } from '../../electron/engine/chunk/crypto';
import { chunkKey, encodeChunk } from '../../electron/engine/chunk/format';
import { ChunkFetcher, READERS_QUIET_MS, heldObjects } from '../../electron/engine/prefetch/fetcher';
import { MemoryStore } from '../../electron/engine/store/memory';
import { ALWAYS_ONLINE } from '../../electron/engine/store/monitored';
import { CallOptions, GetResult } from '../../electron/engine/store/types';
import { until } from '../helpers/until';

/** A store whose GETs wait until the test lets them go (unless `ungated`), counting those in flight. */
class GatedStore extends MemoryStore {
  inFlight = 0;
  maxInFlight = 0;
  /** Keys in the order their GETs reached the store. */
  readonly started: string[] = [];
  private readonly gates: Array<() => void> = [];

  constructor(private readonly ungated = false) {
    super();
  }

  override async get(
    key: string,
    range?: { readonly start: number; readonly end: number },
    _call?: CallOptions,
  ): Promise<GetResult | undefined> {
    if (this.ungated) return super.get(key, range);
    this.started.push(key);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise<void>((resolve) => this.gates.push(resolve));
      return await super.get(key, range);
    } finally {
      this.inFlight--;
    }
  }

  /** Lets the oldest waiting GET answer. */
  releaseOne(): void {
    this.gates.shift()?.();
  }

  releaseAll(): void {
    for (const g of this.gates.splice(0)) g();
  }
}

/** Lets every pending promise callback run (no I/O is pending in between). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

const chunkKeyBytes = randomBytes(32);
const nameKey = randomBytes(32);
let dir: string;
let handles: HandlePool;
/** The fetchers a test made: their copies into the clean cache finish before its folder goes. */
const fetchers: ChunkFetcher[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-fetcher-'));
  handles = new HandlePool(8);
});

afterEach(async () => {
  // A fetch returns before its copy into the cache is written: removing the folder under that
  // write failed with ENOTEMPTY now and then.
  for (const f of fetchers.splice(0)) await f.cacheWritesDone();
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function setUp(
  count: number,
  concurrency: number,
  o: { ungated?: boolean; memoryBytes?: number; chunkSize?: number; received?: boolean } = {},
): Promise<{ store: GatedStore; cache: ChunkCache; fetcher: ChunkFetcher; names: string[]; datas: Buffer[] }> {
  const store = new GatedStore(o.ungated);
  const names: string[] = [];
  const datas: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const data = randomBytes(100_000 + i);
    const name = chunkName(nameKey, data);
    await store.put(chunkKey(name), await encodeChunk(chunkKeyBytes, name, data));
    names.push(name);
    datas.push(data);
  }
  const cache = new ChunkCache(
    dir,
    { capBytes: 64 * 1024 * 1024, highWatermark: 0.9, lowWatermark: 0.7 },
    handles,
    () => 0,
    new SealedIO(randomBytes(32)),
    o.received ? new ReceivedIO(randomBytes(32), chunkKeyBytes) : undefined,
    o.memoryBytes,
  );
  await cache.init();
  const fetcher = new ChunkFetcher(
    store,
    cache,
    chunkKeyBytes,
    concurrency,
    () => 60_000,
    () => undefined,
    ALWAYS_ONLINE,
    o.chunkSize,
  );
  fetchers.push(fetcher);
  return { store, cache, fetcher, names, datas };
}

describe('ChunkFetcher', () => {
  it('read-ahead fills every download slot, and a chunk a reader waits on goes before queued read-ahead', async () => {
    const { store, fetcher, names, datas } = await setUp(7, 4);
    for (const [i, n] of names.slice(0, 6).entries()) {
      fetcher.prefetch(n);
      if (i < 4) await until(`read-ahead GET ${i + 1} in flight`, () => store.inFlight === i + 1);
    }
    assert.equal(store.started.length, 4, 'the other two wait for a slot');
    // A reader now needs the last queued chunk: it takes the next free slot.
    const wanted = fetcher.fetch(names[5]!);
    store.releaseOne();
    await until('a fifth GET', () => store.started.length === 5);
    assert.equal(store.started[4], chunkKey(names[5]!));
    store.releaseAll();
    assert.deepEqual(await wanted, datas[5]);
    await until('every GET answered', () => (store.releaseAll(), store.started.length === 6 && store.inFlight === 0));
    assert.equal(store.maxInFlight, 4);
    await fetcher.cacheWritesDone();
  });

  it('a reader gets its chunk before its copy is in the cache, and meanwhile it is served without another GET', async () => {
    const { store, cache, fetcher, names, datas } = await setUp(1, 4);
    const name = names[0]!;
    let letWrite!: () => void;
    const writeGate = new Promise<void>((resolve) => (letWrite = resolve));
    const putReceived = cache.putReceived.bind(cache);
    cache.putReceived = async (...args) => {
      await writeGate;
      return putReceived(...args);
    };
    let got: Buffer | undefined;
    void fetcher.fetch(name).then((b) => (got = b));
    await until('the GET', () => store.inFlight === 1);
    store.releaseAll();
    await until('the reader to get the chunk while its copy waits', () => got !== undefined);
    assert.deepEqual(got, datas[0]);
    assert.equal(cache.has(name), false);
    assert.deepEqual(await fetcher.fetch(name), datas[0]);
    assert.equal(store.started.length, 1, 'no second GET');
    const written = fetcher.cacheWritesDone();
    letWrite();
    await written;
    assert.equal(cache.has(name), true);
    assert.deepEqual(await cache.readAll(name), datas[0]);
  });

  it('a reader gets its chunk before the copy into the cache is prepared (no pass over the chunk before the reply)', async () => {
    const { store, cache, fetcher, names, datas } = await setUp(1, 4);
    const name = names[0]!;
    let got: Buffer | undefined;
    let readerHadItAtCopy: boolean | undefined;
    const putReceived = cache.putReceived.bind(cache);
    cache.putReceived = (...args) => {
      readerHadItAtCopy ??= got !== undefined;
      return putReceived(...args);
    };
    void fetcher.fetch(name).then((b) => (got = b));
    await until('the GET', () => store.inFlight === 1);
    store.releaseAll();
    await until('the reader to get the chunk', () => got !== undefined);
    await fetcher.cacheWritesDone();
    assert.equal(readerHadItAtCopy, true, 'the copy started only after the reader had its bytes');
    assert.deepEqual(got, datas[0]);
    assert.deepEqual(await cache.readAll(name), datas[0]);
  });

  it('holds three 4 MiB objects above its slots, and one with chunks of 12 MiB or more', async () => {
    assert.equal(heldObjects(8), 11);
    assert.equal(heldObjects(8, 1024 * 1024), 11);
    assert.equal(heldObjects(8, 8 * 1024 * 1024), 9);
    assert.equal(heldObjects(2, 16 * 1024 * 1024), 3);
    const chunkSize = 16 * 1024 * 1024;
    const { fetcher } = await setUp(1, 2, { chunkSize });
    const perObject = fetcher.heldBodyBytes.bound / 3;
    assert.ok(
      perObject >= chunkSize && perObject < chunkSize * 1.01,
      `3 objects of a 16 MiB chunk: ${fetcher.heldBodyBytes.bound} bytes`,
    );
  });

  it('a slot goes to the next GET while the copy of its chunk is written, within the bound on objects held', async () => {
    const concurrency = 2;
    const held = heldObjects(concurrency);
    assert.equal(held, 5);
    const { store, cache, fetcher, names, datas } = await setUp(held + 2, concurrency);
    let letWrite!: () => void;
    const writeGate = new Promise<void>((resolve) => (letWrite = resolve));
    const putReceived = cache.putReceived.bind(cache);
    cache.putReceived = async (...args) => {
      await writeGate;
      return putReceived(...args);
    };
    for (const n of names) fetcher.prefetch(n);
    await until('two GETs in flight', () => store.inFlight === 2);
    // Both answer; their copies wait on the disk. The next GETs start in the freed slots.
    store.releaseAll();
    await until('more GETs while two copies wait', () => store.started.length === 4);
    // GETs go on while copies wait (read-ahead asked again, as a reader would), until the objects held reach the bound.
    await until('GETs up to the bound', () => {
      store.releaseAll();
      for (const n of names) fetcher.prefetch(n);
      return store.started.length === held && store.inFlight === 0;
    });
    // Every object is held by a copy waiting: no further GET until a copy is written.
    for (let i = 0; i < 20; i++) await settle();
    assert.equal(store.started.length, held, 'GETs in flight and copies being written hold at most the bound');
    assert.ok(fetcher.heldBodyBytes.now <= fetcher.heldBodyBytes.bound);
    for (const n of names) fetcher.prefetch(n);
    for (let i = 0; i < 20; i++) await settle();
    assert.equal(store.started.length, held, 'still none while every copy waits');
    letWrite();
    await until('every chunk downloaded', () => {
      store.releaseAll();
      for (const n of names) fetcher.prefetch(n);
      return store.started.length === held + 2 && store.inFlight === 0;
    });
    await fetcher.cacheWritesDone();
    assert.equal(store.maxInFlight, concurrency);
    for (const [i, n] of names.entries()) assert.deepEqual(await cache.readAll(n), datas[i]);
    assert.ok(fetcher.heldBodyBytes.peak <= fetcher.heldBodyBytes.bound);
  });
});

describe('whether readers are at work (what background work yields to)', () => {
  it('a file brought whole for a reader counts until its chunks are written, pinned data does not', async () => {
    const { store, fetcher, names } = await setUp(3, 2);
    assert.equal(fetcher.readersBusy, false, 'nothing read yet');
    const pinned = fetcher.background(names[0]!);
    await until('the pinned GET in flight', () => store.inFlight === 1);
    assert.equal(fetcher.readersBusy, false, 'a download for pinned data is no reader');
    store.releaseAll();
    assert.equal(await pinned, true);
    const forReader = [fetcher.background(names[1]!, true), fetcher.background(names[2]!, true)];
    assert.equal(fetcher.readersBusy, true, 'queued for a reader');
    await until('the GETs in flight', () => store.inFlight >= 1);
    assert.equal(fetcher.readersBusy, true, 'on its way for a reader');
    await until('every GET answered', () => (store.releaseAll(), store.inFlight === 0 && store.started.length === 3));
    assert.deepEqual(await Promise.all(forReader), [true, true]);
    assert.equal(fetcher.readersBusy, true, 'just finished: still counts for a moment');
    await new Promise((r) => setTimeout(r, READERS_QUIET_MS + 50));
    assert.equal(fetcher.readersBusy, false, 'quiet since');
    await fetcher.cacheWritesDone();
  });
});

describe('a file brought whole for a random reader', () => {
  it('a reader who comes to wait on a chunk on its way gets it opened from that one GET', async () => {
    // Three slots: background downloads leave one free.
    const { store, cache, fetcher, names, datas } = await setUp(2, 3, { received: true });
    const background = [fetcher.background(names[0]!, true), fetcher.background(names[1]!, true)];
    await until('both GETs in flight', () => store.inFlight === 2);
    const read = fetcher.fetch(names[1]!);
    store.releaseAll();
    assert.deepEqual(await read, datas[1]);
    assert.equal(cache.inMemoryPeek(names[1]!), true, 'opened on arrival, and kept in memory for its reader');
    assert.deepEqual(await Promise.all(background), [true, true]);
    assert.equal(cache.inMemoryPeek(names[0]!), false, 'nobody waited: kept unopened');
    // The other was kept unopened, and a reader now reads it from the cache.
    assert.deepEqual(await fetcher.fetch(names[0]!), datas[0]);
    assert.equal(store.started.length, 2, 'one GET each');
    await fetcher.cacheWritesDone();
  });
});

describe('chunks kept in memory for sequential readers', () => {
  it('evicts chunks already read before read-ahead, and read-ahead never evicts read-ahead', async () => {
    const KB = 1000;
    const cache = new ChunkCache(
      dir,
      { capBytes: 64 * 1024 * 1024, highWatermark: 0.9, lowWatermark: 0.7 },
      handles,
      () => 0,
      new SealedIO(randomBytes(32)),
      undefined,
      3 * KB,
    );
    const chunk = () => Buffer.alloc(KB);
    cache.remember('read', chunk());
    cache.remember('ahead1', chunk(), true);
    cache.remember('ahead2', chunk(), true);
    cache.remember('ahead3', chunk(), true);
    assert.deepEqual(
      ['read', 'ahead1', 'ahead2', 'ahead3'].map((n) => cache.inMemoryPeek(n)),
      [false, true, true, true],
    );
    cache.remember('ahead4', chunk(), true);
    assert.equal(cache.inMemoryPeek('ahead4'), false, 'memory full of read-ahead: the newest waits on disk');
    assert.equal(cache.inMemoryPeek('ahead1'), true);
    assert.ok(cache.inMemory('ahead1'), 'read now');
    cache.remember('ahead5', chunk(), true);
    assert.deepEqual(
      ['ahead1', 'ahead2', 'ahead3', 'ahead5'].map((n) => cache.inMemoryPeek(n)),
      [false, true, true, true],
      'the chunk read goes first',
    );
    cache.remember('wanted', chunk());
    assert.deepEqual(
      ['ahead2', 'ahead3', 'ahead5', 'wanted'].map((n) => cache.inMemoryPeek(n)),
      [false, true, true, true],
      'a chunk a reader waits on displaces the oldest read-ahead',
    );
  });
});

describe('buffers whole chunks are decoded into', () => {
  it('are used again once the memory cache and the copy into the cache let go, never while a fetch caller may keep one', async () => {
    // Chunks of 100 kB in a 128 KiB filespace; three chunks in memory: the stream below evicts as it goes.
    const cs = 128 * 1024;
    const { cache, fetcher, names, datas } = await setUp(12, 2, { ungated: true, memoryBytes: 3 * cs, chunkSize: cs });

    const kept = await fetcher.fetch(names[0]!); // a caller that keeps what it was given
    for (let i = 1; i < names.length; i++) {
      // As a sequential reader: read-ahead, then a synchronous copy out of memory.
      fetcher.prefetch(names[i]!);
      await until(`chunk ${i} in memory`, () => cache.inMemoryPeek(names[i]!));
      assert.ok(cache.inMemory(names[i]!)!.equals(datas[i]!), `chunk ${i} reads back`);
    }
    // The copies into the clean cache were written behind the stream, from the same buffers.
    await fetcher.cacheWritesDone();
    assert.ok(kept.equals(datas[0]!), 'the buffer a fetch caller kept was never decoded into again');
    const { allocated, reused } = fetcher.decoded;
    assert.ok(allocated > 0, 'chunks were decoded into pooled buffers');
    assert.ok(reused > 0 && allocated < names.length - 1, `buffers used again (${allocated} allocated, ${reused} reused)`);
    for (let i = 1; i < names.length; i++) {
      const back = await cache.readAll(names[i]!);
      assert.ok(back?.equals(datas[i]!), `chunk ${i} in the clean cache is the chunk`);
    }

    cache.releaseIdleMemory();
    assert.equal(fetcher.decoded.heldCount, 0, 'an idle memory cache holds no pooled buffer');
  });

  it('are used again when a reader waits on each chunk in turn through the memory (a cold stream), never with fetch', async () => {
    const cs = 128 * 1024;
    const { cache, fetcher, names, datas } = await setUp(12, 2, { ungated: true, memoryBytes: 3 * cs, chunkSize: cs });
    for (let i = 0; i < 6; i++) {
      await fetcher.fetchIntoMemory(names[i]!);
      assert.ok(cache.inMemory(names[i]!)!.equals(datas[i]!), `chunk ${i} is served from memory`);
    }
    await fetcher.cacheWritesDone();
    const streamed = { ...fetcher.decoded };
    assert.ok(streamed.reused > 0, `buffers used again along the stream (${streamed.allocated} allocated)`);
    // A fetch caller may keep what it gets: none of those buffers is decoded into again.
    const kept: Buffer[] = [];
    for (let i = 6; i < 9; i++) kept.push(await fetcher.fetch(names[i]!));
    for (let i = 9; i < names.length; i++) {
      await fetcher.fetchIntoMemory(names[i]!);
      const inMemory = cache.inMemory(names[i]!)!;
      assert.ok(inMemory.equals(datas[i]!), `chunk ${i} is served from memory`);
      assert.ok(!kept.some((k) => k.buffer === inMemory.buffer), `chunk ${i} was not decoded into a buffer a fetch handed out`);
    }
    await fetcher.cacheWritesDone();
    kept.forEach((k, j) => assert.ok(k.equals(datas[6 + j]!), `fetched chunk ${6 + j} is intact`));
    assert.ok(fetcher.decoded.reused > streamed.reused, 'the stream went on reusing buffers');
  });

  it('are not used again while the copy into the cache is still to be written from them', async () => {
    // Nothing fits in memory: the copy being written is a chunk's only holder.
    const { cache, fetcher, names, datas } = await setUp(10, 4, { ungated: true, memoryBytes: 1, chunkSize: 128 * 1024 });
    await Promise.all(names.map((n) => fetcher.background(n)));
    await fetcher.cacheWritesDone();
    assert.ok(fetcher.decoded.allocated > 0, 'chunks were decoded into pooled buffers');
    for (let i = 0; i < names.length; i++) {
      const back = await cache.readAll(names[i]!);
      assert.ok(back?.equals(datas[i]!), `chunk ${i} in the clean cache is the chunk`);
    }
    assert.equal(fetcher.decoded.heldCount, 0);
  });

  it('are what chunks loaded from the disk cache are read into, and go back on eviction or a damaged file', async () => {
    // Every chunk in the clean cache first; then a stream of loads through a memory of two chunks.
    const cs = 128 * 1024;
    const { cache, fetcher, names, datas } = await setUp(10, 2, { ungated: true, memoryBytes: 2 * cs, chunkSize: cs });
    await Promise.all(names.map((n) => fetcher.background(n)));
    await fetcher.cacheWritesDone();
    cache.releaseIdleMemory();
    assert.equal(fetcher.decoded.heldCount, 0);
    assert.ok(cache.loadsPooled(datas[0]!.length), 'a chunk of 100 kB in a 128 KiB filespace is loaded into a pooled buffer');
    assert.ok(!cache.loadsPooled(1000), 'a small chunk is not');

    const before = { ...fetcher.decoded };
    for (let i = 0; i < names.length; i++) {
      assert.ok(await cache.loadIntoMemory(names[i]!), `chunk ${i} loads`);
      assert.ok(cache.inMemory(names[i]!)!.equals(datas[i]!), `chunk ${i} reads back from memory`);
    }
    const allocated = fetcher.decoded.allocated - before.allocated;
    const reused = fetcher.decoded.reused - before.reused;
    assert.ok(reused >= names.length - 4, `loads reuse the buffers the memory let go (${allocated} allocated, ${reused} reused)`);
    assert.ok(fetcher.decoded.heldCount <= 2, 'only what the memory keeps is held');

    // A damaged cache file: the load is a miss and its buffer is not left held.
    cache.releaseIdleMemory();
    const file = path.join(dir, 'chunks', names[3]!.slice(0, 2), names[3]!);
    const fh = await open(file, 'r+');
    const st = await fh.stat();
    const byte = Buffer.alloc(1);
    await fh.read(byte, 0, 1, st.size - 10);
    byte[0]! ^= 0xff;
    await fh.write(byte, 0, 1, st.size - 10);
    await fh.close();
    assert.equal(await cache.loadIntoMemory(names[3]!), false, 'a tampered cache file is refused (a miss)');
    assert.equal(fetcher.decoded.heldCount, 0, 'the buffer it was read into went back');
    const again = await fetcher.fetch(names[3]!);
    assert.ok(again.equals(datas[3]!), 'and the chunk is fetched again');
  });
});
