// Pins down the clean chunk cache: a miss is undefined, eviction is least-recently-used, the cap (counting dirty bytes) holds, and init() rebuilds the index from disk.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { CacheLimits, ChunkCache } from '../../electron/engine/cache/chunkCache';
import { HandlePool } from '../../electron/engine/cache/handles';

let dir: string;
let handles: HandlePool;
let dirtyBytes: number;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-cache-'));
  handles = new HandlePool(8);
  dirtyBytes = 0;
});

afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function newCache(limits: CacheLimits): Promise<ChunkCache> {
  const c = new ChunkCache(dir, limits, handles, () => dirtyBytes);
  await c.init();
  return c;
}

/** Chunk names as the engine makes them: 40 hex characters. */
function name(n: number): string {
  return n.toString(16).padStart(40, '0');
}

function bytes(n: number, fill: number): Buffer {
  return Buffer.alloc(n, fill);
}

/** Waits, one event-loop turn at a time, until `cond` holds; false if it never does within `ms`. */
async function eventually(cond: () => boolean, ms = 3000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return true;
}

const roomy: CacheLimits = { capBytes: 100 * 1024 * 1024, highWatermark: 0.95, lowWatermark: 0.85 };

describe('ChunkCache reads', () => {
  it('a miss resolves to undefined and counts as a miss', async () => {
    const c = await newCache(roomy);
    const buf = Buffer.alloc(10);
    assert.equal(await c.read(name(1), buf, 0, 10, 0), undefined);
    assert.equal(await c.readAll(name(1)), undefined);
    assert.equal(c.has(name(1)), false);
    assert.equal(c.misses, 1);
    assert.equal(c.hitRatio, 0);
  });

  it('put then read returns the bytes; reads past the end are short', async () => {
    const c = await newCache(roomy);
    const data = Buffer.from('0123456789');
    await c.put(name(2), data);
    assert.ok(c.has(name(2)));
    assert.deepEqual(await c.readAll(name(2)), data);
    const buf = Buffer.alloc(6, 0xff);
    assert.equal(await c.read(name(2), buf, 1, 4, 3), 4);
    assert.deepEqual(buf, Buffer.from([0xff, 0x33, 0x34, 0x35, 0x36, 0xff]));
    assert.equal(await c.read(name(2), buf, 0, 6, 8), 2);
    assert.equal(c.hits, 2);
    assert.equal(c.cleanUsedBytes, 10);
    assert.deepEqual(await readFile(c.pathOf(name(2))), data);
    assert.equal(path.basename(path.dirname(c.pathOf(name(2)))), name(2).slice(0, 2));
  });

  it('a second put of a cached name is a no-op', async () => {
    const c = await newCache(roomy);
    await c.put(name(3), Buffer.from('first'));
    await c.put(name(3), Buffer.from('second!'));
    assert.deepEqual(await c.readAll(name(3)), Buffer.from('first'));
    assert.equal(c.cleanUsedBytes, 5);
  });

  it('a chunk file removed behind the cache reads as a miss and leaves the index', async () => {
    const c = await newCache(roomy);
    await c.put(name(4), Buffer.from('gone soon'));
    await rm(c.pathOf(name(4)));
    assert.equal(await c.read(name(4), Buffer.alloc(4), 0, 4, 0), undefined);
    assert.equal(c.has(name(4)), false);
    assert.equal(c.cleanUsedBytes, 0);
  });

  it('remove drops the chunk and its bytes', async () => {
    const c = await newCache(roomy);
    await c.put(name(5), bytes(100, 1));
    await c.remove(name(5));
    assert.equal(c.has(name(5)), false);
    assert.equal(c.cleanUsedBytes, 0);
    await assert.rejects(stat(c.pathOf(name(5))), { code: 'ENOENT' });
  });

  it('adopt takes over an uploaded dirty file; adopting a name already cached drops the file', async () => {
    const c = await newCache(roomy);
    const src = path.join(dir, 'dirty-1.0');
    await writeFile(src, 'uploaded bytes');
    await c.adopt(name(6), src, 14);
    assert.deepEqual(await c.readAll(name(6)), Buffer.from('uploaded bytes'));
    assert.equal(c.cleanUsedBytes, 14);
    await assert.rejects(stat(src), { code: 'ENOENT' });

    const dup = path.join(dir, 'dirty-2.0');
    await writeFile(dup, 'uploaded bytes');
    await c.adopt(name(6), dup, 14);
    assert.equal(c.cleanUsedBytes, 14);
    await assert.rejects(stat(dup), { code: 'ENOENT' });
  });
});

describe('ChunkCache eviction and cap', () => {
  const K = 10_000;
  const limits: CacheLimits = { capBytes: 10 * K, highWatermark: 0.9, lowWatermark: 0.5 };

  it('evicts least recently used first; reading an entry keeps it', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(2 * K, i)); // 80% of the cap
    assert.equal(c.cleanUsedBytes, 8 * K);
    assert.ok(await c.read(name(1), Buffer.alloc(1), 0, 1, 0)); // 1 becomes the most recent
    await c.put(name(5), bytes(2 * K, 5)); // past the high watermark: evict to the low one
    assert.deepEqual([1, 2, 3, 4, 5].map((i) => c.has(name(i))), [true, false, false, false, true]);
    assert.equal(c.cleanUsedBytes, 4 * K);
    await assert.rejects(stat(c.pathOf(name(2))), { code: 'ENOENT' });
  });

  it('readAll also counts as a use', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(2 * K, i));
    await c.readAll(name(2));
    await c.put(name(5), bytes(2 * K, 5));
    assert.deepEqual([1, 2, 3, 4, 5].map((i) => c.has(name(i))), [false, true, false, false, true]);
  });

  it('usedBytes stays within the cap after every put of a long sequence', async () => {
    const c = await newCache(limits);
    const sizes = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4].map((n) => n * 1000);
    for (const [i, size] of sizes.entries()) {
      await c.put(name(100 + i), bytes(size, i));
      assert.ok(c.usedBytes <= limits.capBytes, `after put ${i}: ${c.usedBytes} > ${limits.capBytes}`);
      assert.ok(c.usedBytes <= limits.capBytes * limits.highWatermark, `after put ${i}: above the high watermark`);
      assert.ok(c.has(name(100 + i)), 'the chunk just put is kept');
    }
    const onDisk = (await readdir(path.join(dir, 'chunks', '00'))).length;
    assert.equal(onDisk, sizes.filter((_, i) => c.has(name(100 + i))).length, 'evicted files are gone from disk');
  });

  it('dirty bytes count toward the cap: clean chunks make room for them', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(K, i));
    dirtyBytes = 5 * K;
    assert.equal(c.usedBytes, 9 * K);
    await c.put(name(5), bytes(K, 5)); // 10K total: past the high watermark
    assert.ok(c.usedBytes <= limits.capBytes * limits.highWatermark, `${c.usedBytes}`);
    assert.equal(c.usedBytes, 6 * K, "every clean chunk but the new one went; dirty data stays");
    assert.deepEqual([1, 2, 3, 4, 5].map((i) => c.has(name(i))), [false, false, false, false, true]);
  });

  it('makeRoomForDirty evicts clean chunks before dirty data grows; wouldExceedCap looks at dirty data only', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 8; i++) await c.put(name(i), bytes(K, i));
    await c.makeRoomForDirty(3 * K);
    assert.ok(c.usedBytes + 3 * K <= limits.capBytes * limits.lowWatermark + 3 * K);
    assert.ok(c.cleanUsedBytes <= 2 * K, `${c.cleanUsedBytes}`);
    assert.ok(c.has(name(8)), 'the most recent chunks stay');
    dirtyBytes = 9 * K;
    assert.equal(c.wouldExceedCap(K), false);
    assert.equal(c.wouldExceedCap(K + 1), true);
  });

  it('lowering the cap evicts at once', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 8; i++) await c.put(name(i), bytes(K, i));
    c.setLimits({ ...limits, capBytes: 4 * K });
    assert.ok(await eventually(() => c.usedBytes <= 2 * K), `still ${c.usedBytes}`);
    assert.ok(c.has(name(8)));
  });

  it('after concurrent puts settle, the cap holds', async () => {
    const c = await newCache({ capBytes: 1_000_000, highWatermark: 0.9, lowWatermark: 0.5 });
    // Many small chunks, so an eviction takes many steps.
    for (let i = 0; i < 400; i++) await c.put(name(i), bytes(100, 1));
    const before = c.usedBytes;
    // A 400 KB fetch lands: it reserves its size and finds the cache under the high watermark.
    const landing = c.put(name(9999), bytes(400_000, 2));
    assert.ok(await eventually(() => c.usedBytes > before), 'the put reserved its bytes');
    // Meanwhile the user lowers the cap: an eviction of the small chunks starts.
    c.setLimits({ capBytes: 300_000, highWatermark: 0.9, lowWatermark: 0.5 });
    await landing;
    assert.ok(await eventually(() => !c.has(name(399))), 'the small chunks were evicted');
    assert.ok(await eventually(() => c.usedBytes <= c.capBytes, 1000), `cache settled at ${c.usedBytes} bytes with a cap of ${c.capBytes}`);
  });

  it('concurrent adopts of one chunk name count its bytes once', async () => {
    const c = await newCache(roomy);
    const a = path.join(dir, 'dirty-1.0');
    const b = path.join(dir, 'dirty-2.0');
    await writeFile(a, bytes(1000, 7));
    await writeFile(b, bytes(1000, 7));
    // Two files with identical content upload at the same time and both hand their chunk over.
    await Promise.all([c.adopt(name(42), a, 1000), c.adopt(name(42), b, 1000)]);
    assert.equal(c.cleanUsedBytes, 1000);
    await c.remove(name(42));
    assert.equal(c.cleanUsedBytes, 0, 'nothing is left counted after the chunk is gone');
  });
});

describe('ChunkCache.init', () => {
  it('rebuilds the index and byte count from disk and removes temp files', async () => {
    const c1 = await newCache(roomy);
    await c1.put(name(1), bytes(300, 1));
    await c1.put('ab' + name(2).slice(2), bytes(200, 2));
    const sub = path.join(dir, 'chunks', '00');
    await writeFile(path.join(sub, `${name(3)}.tmp123.abc`), 'half written');

    const c2 = new ChunkCache(dir, roomy, handles, () => dirtyBytes);
    await c2.init();
    assert.ok(c2.has(name(1)));
    assert.ok(c2.has('ab' + name(2).slice(2)));
    assert.equal(c2.has(name(3)), false);
    assert.equal(c2.cleanUsedBytes, 500);
    assert.deepEqual((await readdir(sub)).sort(), [name(1)]);
    assert.deepEqual(await c2.readAll(name(1)), bytes(300, 1));
  });

  it('starts empty without a cache directory', async () => {
    const c = await newCache(roomy);
    assert.equal(c.cleanUsedBytes, 0);
    assert.equal(c.usedBytes, 0);
  });

  it('evicts down to the cap on start, oldest access time first', async () => {
    const K = 10_000;
    const sub = path.join(dir, 'chunks', '00');
    await mkdir(sub, { recursive: true });
    for (let i = 1; i <= 5; i++) {
      const f = path.join(sub, name(i));
      await writeFile(f, bytes(2 * K, i));
      const t = new Date(Date.UTC(2024, 0, 1) + [0, 5, 1, 4, 2, 3][i]! * 60_000);
      await utimes(f, t, t);
    }
    // Access order, oldest first: 2, 4, 5, 3, 1 (minutes 1, 2, 3, 4, 5).
    const c = await newCache({ capBytes: 8 * K, highWatermark: 0.9, lowWatermark: 0.5 });
    assert.ok(c.usedBytes <= 4 * K, `${c.usedBytes}`);
    assert.deepEqual([1, 2, 3, 4, 5].map((i) => c.has(name(i))), [true, false, true, false, false]);
  });
});
