// Pins down the clean chunk cache: a miss is undefined, eviction is least-recently-used, the cap (counting dirty bytes) holds, init() rebuilds the index from disk, and a cache file that was modified or renamed is refused (removed, read as a miss). Byte counts are bytes on disk (sealed files, see sealed.ts). In memory, it keeps a bounded number of cache file headers and counts the whole chunks it keeps for sequential readers by what their buffers hold.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rename, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { CacheLimits, ChunkCache, FILE_HEADERS_KEPT, MEMORY_IDLE_MS } from '../../electron/engine/cache/chunkCache';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';
import { HEADER, SealedIO, UNIT, physicalSize } from '../../electron/engine/cache/sealed';

let dir: string;
let handles: HandlePool;
let dirtyBytes: number;
let io: SealedIO;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-cache-'));
  handles = new HandlePool(8);
  dirtyBytes = 0;
  io = new SealedIO(randomBytes(32));
});

afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function newCache(limits: CacheLimits): Promise<ChunkCache> {
  const c = new ChunkCache(dir, limits, handles, () => dirtyBytes, io);
  await c.init();
  return c;
}

/**
 * Writes a sealed file holding `data` (as the dirty store leaves one), bound to `chunkName`
 * if given (as the cache leaves one); returns what adopt() needs.
 */
async function sealedFile(file: string, data: Buffer, chunkName?: string): Promise<{ size: number; fileId: Buffer }> {
  const { header, fileId } = io.newHeader();
  const fh = await open(file, 'w+', 0o600);
  try {
    await fh.write(header, 0, header.length, 0);
    if (chunkName !== undefined) await io.writeNameTag(fh, fileId, chunkName, data.length);
    await io.write(fh, fileId, 0, data, 0, file);
  } finally {
    await fh.close();
  }
  const size = physicalSize(data.length);
  assert.equal((await stat(file)).size, size);
  return { size, fileId };
}

/** Flips one bit of the byte at `offset`, in place (an open handle sees the change). */
async function flipByte(file: string, offset: number): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    const b = Buffer.alloc(1);
    await fh.read(b, 0, 1, offset);
    b[0]! ^= 0x01;
    await fh.write(b, 0, 1, offset);
  } finally {
    await fh.close();
  }
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
  it('a miss resolves to undefined', async () => {
    const c = await newCache(roomy);
    const buf = Buffer.alloc(10);
    assert.equal(await c.read(name(1), buf, 0, 10, 0), undefined);
    assert.equal(await c.readAll(name(1)), undefined);
    assert.equal(c.has(name(1)), false);
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
    assert.equal(c.cleanUsedBytes, physicalSize(10));
    const raw = await readFile(c.pathOf(name(2)));
    assert.equal(raw.length, physicalSize(10));
    assert.equal(raw.includes(data), false, 'the data is not on disk in plaintext');
    assert.equal(path.basename(path.dirname(c.pathOf(name(2)))), name(2).slice(0, 2));
  });

  it('a second put of a cached name is a no-op', async () => {
    const c = await newCache(roomy);
    await c.put(name(3), Buffer.from('first'));
    await c.put(name(3), Buffer.from('second!'));
    assert.deepEqual(await c.readAll(name(3)), Buffer.from('first'));
    assert.equal(c.cleanUsedBytes, physicalSize(5));
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
    // The file a dirty chunk leaves once uploaded.
    const dirty = new DirtyStore(dir, handles, io);
    await dirty.init(() => 'deleted', 0);
    const d = await dirty.create(1, 0, undefined, 1);
    await dirty.write(d, Buffer.from('uploaded bytes'), 0, 2);
    const src = dirty.release(d);
    assert.equal(src.size, physicalSize(14));
    await c.adopt(name(6), src.file, src.size, src.fileId);
    assert.deepEqual(await c.readAll(name(6)), Buffer.from('uploaded bytes'));
    assert.equal(c.cleanUsedBytes, physicalSize(14));
    await assert.rejects(stat(src.file), { code: 'ENOENT' });

    const dup = path.join(dir, 'dirty-2.0');
    const sealed = await sealedFile(dup, Buffer.from('uploaded bytes'));
    await c.adopt(name(6), dup, sealed.size, sealed.fileId);
    assert.equal(c.cleanUsedBytes, physicalSize(14));
    await assert.rejects(stat(dup), { code: 'ENOENT' });

    // The adopted file was bound to its name: a cache started afresh reads it.
    const handles2 = new HandlePool(8);
    try {
      const c2 = new ChunkCache(dir, roomy, handles2, () => dirtyBytes, io);
      await c2.init();
      assert.deepEqual(await c2.readAll(name(6)), Buffer.from('uploaded bytes'));
    } finally {
      await handles2.closeAll();
    }
  });

  it('a cache file modified on disk is refused: read and readAll miss and the file is removed', async () => {
    const c = await newCache(roomy);
    const damaged: string[] = [];
    c.onDamaged = (n) => damaged.push(n);
    const data = bytes(3000, 9);
    await c.put(name(7), data);
    await c.put(name(8), data);
    await c.put(name(9), data);
    assert.ok(await c.read(name(7), Buffer.alloc(10), 0, 10, 0), 'readable before the change (handle now open)');
    // One byte of the body (the first unit's ciphertext) flipped behind the cache's back.
    await flipByte(c.pathOf(name(7)), HEADER + 12 + 100);
    await flipByte(c.pathOf(name(8)), HEADER + 12 + 2000);

    assert.equal(await c.read(name(7), Buffer.alloc(10), 0, 10, 0), undefined, 'a miss');
    assert.equal(c.has(name(7)), false);
    await assert.rejects(stat(c.pathOf(name(7))), { code: 'ENOENT' });

    assert.equal(await c.readAll(name(8)), undefined);
    assert.equal(c.has(name(8)), false);
    await assert.rejects(stat(c.pathOf(name(8))), { code: 'ENOENT' });

    assert.deepEqual(damaged, [name(7), name(8)]);
    assert.equal(c.cleanUsedBytes, physicalSize(3000), 'only the intact chunk is still counted');
    assert.deepEqual(await c.readAll(name(9)), data, 'the intact chunk still reads');
    // Refetched from the bucket, the chunk is cached again.
    await c.put(name(7), data);
    assert.deepEqual(await c.readAll(name(7)), data);
  });

  it('a cache file renamed to another chunk name is refused the same way', async () => {
    const c1 = await newCache(roomy);
    await c1.put(name(10), bytes(500, 1));
    await c1.put(name(12), bytes(500, 2));
    await c1.put(name(14), bytes(500, 3));
    await handles.closeAll();
    // Same size, valid sealing, right key: only the name it was sealed as differs.
    await rename(c1.pathOf(name(10)), c1.pathOf(name(11)));
    await rename(c1.pathOf(name(12)), c1.pathOf(name(13)));

    const c = new ChunkCache(dir, roomy, handles, () => dirtyBytes, io);
    const damaged: string[] = [];
    c.onDamaged = (n) => damaged.push(n);
    await c.init();
    assert.ok(c.has(name(11)) && c.has(name(13)), 'indexed from disk by file name');

    assert.equal(await c.read(name(11), Buffer.alloc(10), 0, 10, 0), undefined);
    assert.equal(c.has(name(11)), false);
    await assert.rejects(stat(c.pathOf(name(11))), { code: 'ENOENT' });

    assert.equal(await c.readAll(name(13)), undefined);
    assert.equal(c.has(name(13)), false);
    await assert.rejects(stat(c.pathOf(name(13))), { code: 'ENOENT' });

    assert.deepEqual(damaged, [name(11), name(13)]);
    assert.equal(c.cleanUsedBytes, physicalSize(500));
    assert.deepEqual(await c.readAll(name(14)), bytes(500, 3), 'a file under its own name still reads');

    // Within one running cache too: a file moved over another chunk's file is refused.
    await c.put(name(20), bytes(500, 4));
    await c.put(name(21), bytes(500, 5));
    await rename(c.pathOf(name(20)), c.pathOf(name(21)));
    handles.forget(c.pathOf(name(21)));
    assert.equal(await c.readAll(name(21)), undefined);
    assert.equal(c.has(name(21)), false);
    await assert.rejects(stat(c.pathOf(name(21))), { code: 'ENOENT' });
  });

  it('a cache file cut short at a unit boundary is refused after a restart too', async () => {
    const c1 = await newCache(roomy);
    const data = randomBytes(2 * UNIT + 100);
    await c1.put(name(30), data);
    await handles.closeAll();
    await truncate(c1.pathOf(name(30)), physicalSize(UNIT));

    const c = new ChunkCache(dir, roomy, handles, () => dirtyBytes, io);
    await c.init();
    const got = await c.readAll(name(30));
    assert.equal(got?.length, undefined, `served ${got?.length} of ${data.length} bytes`);
    assert.equal(c.has(name(30)), false);
  });
});

describe('ChunkCache eviction and cap', () => {
  const K = 10_000;
  /** Bytes on disk of a K-byte chunk; the cap is set in these so the ratios stay as planned. */
  const PK = physicalSize(K);
  const P2K = physicalSize(2 * K);
  const limits: CacheLimits = { capBytes: 10 * PK, highWatermark: 0.9, lowWatermark: 0.5 };

  it('evicts least recently used first; reading an entry keeps it', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(2 * K, i)); // about 80% of the cap
    assert.equal(c.cleanUsedBytes, 4 * P2K);
    assert.ok(c.usedBytes <= limits.capBytes * limits.highWatermark && 5 * P2K > limits.capBytes * limits.highWatermark);
    assert.ok(await c.read(name(1), Buffer.alloc(1), 0, 1, 0)); // 1 becomes the most recent
    await c.put(name(5), bytes(2 * K, 5)); // past the high watermark: evict to the low one
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((i) => c.has(name(i))),
      [true, false, false, false, true],
    );
    assert.equal(c.cleanUsedBytes, 2 * P2K);
    await assert.rejects(stat(c.pathOf(name(2))), { code: 'ENOENT' });
  });

  it('readAll also counts as a use', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(2 * K, i));
    await c.readAll(name(2));
    await c.put(name(5), bytes(2 * K, 5));
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((i) => c.has(name(i))),
      [false, true, false, false, true],
    );
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
    dirtyBytes = 5 * PK;
    assert.equal(c.usedBytes, 9 * PK);
    await c.put(name(5), bytes(K, 5)); // 10 PK total: past the high watermark
    assert.ok(c.usedBytes <= limits.capBytes * limits.highWatermark, `${c.usedBytes}`);
    assert.equal(c.usedBytes, 6 * PK, 'every clean chunk but the new one went; dirty data stays');
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((i) => c.has(name(i))),
      [false, false, false, false, true],
    );
  });

  it('makeRoomForDirty evicts clean chunks before dirty data grows; wouldExceedCap looks at dirty data only', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 8; i++) await c.put(name(i), bytes(K, i));
    assert.equal(c.cleanUsedBytes, 8 * PK);
    await c.makeRoomForDirty(3 * PK);
    assert.ok(c.usedBytes + 3 * PK <= limits.capBytes * limits.lowWatermark + 3 * PK);
    assert.ok(c.cleanUsedBytes <= 2 * PK, `${c.cleanUsedBytes}`);
    assert.ok(c.has(name(8)), 'the most recent chunks stay');
    dirtyBytes = 9 * PK;
    assert.equal(c.wouldExceedCap(PK), false);
    assert.equal(c.wouldExceedCap(PK + 1), true);
  });

  it('caches no fetched chunk that would not fit even after every clean chunk went', async () => {
    const c = await newCache(limits);
    assert.equal(await c.put(name(1), bytes(K, 1)), true);
    dirtyBytes = 9 * PK + PK / 2; // dirty data fills the cache
    assert.equal(await c.put(name(2), bytes(K, 2)), false, 'not stored');
    assert.equal(c.has(name(2)), false);
    assert.equal(c.has(name(1)), false, 'the clean chunk made what room it could');
    assert.equal(c.usedBytes, dirtyBytes, 'nothing stays reserved');
    assert.deepEqual(await readdir(path.join(dir, 'chunks', '00')), [], 'no file was left behind');
    dirtyBytes = 8 * PK;
    assert.equal(await c.put(name(2), bytes(K, 2)), true, 'stored once there is room');
  });

  it('reserves room for dirty data only while dirty data and reservations fit under the cap', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 8; i++) await c.put(name(i), bytes(K, i));
    dirtyBytes = 6 * PK;
    const first = c.reserveForDirty(3 * PK);
    assert.ok(first, 'clean chunks do not count: they make room');
    assert.equal(c.reserveForDirty(2 * PK), undefined, 'the room taken counts for the next writer');
    const small = c.reserveForDirty(PK);
    assert.ok(small);
    first();
    first(); // giving it back twice changes nothing
    assert.ok(c.reserveForDirty(2 * PK), 'the room given back is free again');
    small();
    dirtyBytes = 0;
    assert.equal(c.usedBytes - c.cleanUsedBytes, 2 * PK, 'only what is still held is counted');
    const c2 = await newCache(limits);
    dirtyBytes = 0;
    assert.ok(c2.reserveForDirty(100 * PK), 'with nothing else held, any growth is let through');
  });

  it('lowering the cap evicts at once', async () => {
    const c = await newCache(limits);
    for (let i = 1; i <= 8; i++) await c.put(name(i), bytes(K, i));
    c.setLimits({ ...limits, capBytes: 4 * PK });
    assert.ok(await eventually(() => c.usedBytes <= 2 * PK), `still ${c.usedBytes}`);
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
    assert.ok(
      await eventually(() => c.usedBytes <= c.capBytes, 1000),
      `cache settled at ${c.usedBytes} bytes with a cap of ${c.capBytes}`,
    );
  });

  it('concurrent adopts of one chunk name count its bytes once', async () => {
    const c = await newCache(roomy);
    const a = path.join(dir, 'dirty-1.0');
    const b = path.join(dir, 'dirty-2.0');
    const sa = await sealedFile(a, bytes(1000, 7));
    const sb = await sealedFile(b, bytes(1000, 7));
    // Two files with identical content upload at the same time and both hand their chunk over.
    await Promise.all([c.adopt(name(42), a, sa.size, sa.fileId), c.adopt(name(42), b, sb.size, sb.fileId)]);
    assert.equal(c.cleanUsedBytes, physicalSize(1000));
    assert.equal(c.usedBytes, physicalSize(1000), 'no reservation is left behind');
    await c.remove(name(42));
    assert.equal(c.cleanUsedBytes, 0, 'nothing is left counted after the chunk is gone');
  });

  it('concurrent adopts of one chunk name leave it readable whichever rename resumes first', async () => {
    const c = await newCache(roomy);
    const damaged: string[] = [];
    c.onDamaged = (n) => damaged.push(n);
    const a = path.join(dir, 'dirty-1.0');
    const b = path.join(dir, 'dirty-2.0');
    const sa = await sealedFile(a, bytes(1000, 7));
    const sb = await sealedFile(b, bytes(1000, 7));
    // The first rename reaches the disk first but its caller resumes after the second's has
    // (a thread-pool completion order the real fs can produce, here made certain).
    const realRename = fsp.rename;
    let calls = 0;
    let secondDone: () => void = () => undefined;
    const second = new Promise<void>((r) => (secondDone = r));
    (fsp as { rename: typeof realRename }).rename = async (from, to) => {
      const n = ++calls;
      await realRename(from, to);
      if (n === 1) await Promise.race([second, new Promise((r) => setTimeout(r, 500))]);
      else setImmediate(secondDone);
    };
    try {
      await Promise.all([c.adopt(name(42), a, sa.size, sa.fileId), c.adopt(name(42), b, sb.size, sb.fileId)]);
    } finally {
      (fsp as { rename: typeof realRename }).rename = realRename;
    }
    assert.equal(c.cleanUsedBytes, physicalSize(1000));
    assert.deepEqual(await c.readAll(name(42)), bytes(1000, 7));
    assert.deepEqual(damaged, []);
  });
});

describe('ChunkCache.init', () => {
  it('rebuilds the index and byte count from disk and removes temp files', async () => {
    const c1 = await newCache(roomy);
    await c1.put(name(1), bytes(300, 1));
    await c1.put('ab' + name(2).slice(2), bytes(200, 2));
    const sub = path.join(dir, 'chunks', '00');
    await writeFile(path.join(sub, `${name(3)}.tmp123.abc`), 'half written');

    const c2 = new ChunkCache(dir, roomy, handles, () => dirtyBytes, io);
    await c2.init();
    assert.ok(c2.has(name(1)));
    assert.ok(c2.has('ab' + name(2).slice(2)));
    assert.equal(c2.has(name(3)), false);
    assert.equal(c2.cleanUsedBytes, physicalSize(300) + physicalSize(200));
    assert.deepEqual((await readdir(sub)).sort(), [name(1)]);
    assert.deepEqual(await c2.readAll(name(1)), bytes(300, 1));
    assert.deepEqual(await c2.readAll('ab' + name(2).slice(2)), bytes(200, 2));
  });

  it('starts empty without a cache directory', async () => {
    const c = await newCache(roomy);
    assert.equal(c.cleanUsedBytes, 0);
    assert.equal(c.usedBytes, 0);
  });

  it('evicts down to the cap on start, oldest access time first', async () => {
    const K = 10_000;
    const P2K = physicalSize(2 * K);
    const sub = path.join(dir, 'chunks', '00');
    await mkdir(sub, { recursive: true });
    for (let i = 1; i <= 5; i++) {
      const f = path.join(sub, name(i));
      await sealedFile(f, bytes(2 * K, i), name(i));
      const t = new Date(Date.UTC(2024, 0, 1) + [0, 5, 1, 4, 2, 3][i]! * 60_000);
      await utimes(f, t, t);
    }
    // Access order, oldest first: 2, 4, 5, 3, 1 (minutes 1, 2, 3, 4, 5).
    const c = await newCache({ capBytes: 4 * P2K, highWatermark: 0.9, lowWatermark: 0.5 });
    assert.ok(c.usedBytes <= 2 * P2K, `${c.usedBytes}`);
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((i) => c.has(name(i))),
      [true, false, true, false, false],
    );
    assert.deepEqual((await readdir(sub)).sort(), [name(1), name(3)]);
    assert.deepEqual(await c.readAll(name(3)), bytes(2 * K, 3));
  });
});

describe('ChunkCache on a disk smaller than its cap', () => {
  const K = 10_000;
  const P = physicalSize(K);

  it('keeps within what the disk has room for, and counts it against writers', async () => {
    const c = await newCache(roomy);
    for (let i = 1; i <= 6; i++) await c.put(name(i), bytes(K, i));
    assert.equal(c.cleanUsedBytes, 6 * P);
    assert.equal(c.wouldExceedCap(4 * P), false);
    c.setDiskLimit(4 * P);
    assert.equal(c.effectiveCapBytes, 4 * P);
    assert.equal(c.capBytes, roomy.capBytes, 'the configured cap is still reported');
    assert.ok(await eventually(() => c.usedBytes <= 4 * P * 0.85), `${c.usedBytes}`);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((i) => c.has(name(i))),
      [false, false, false, true, true, true],
      'least recently used first',
    );
    dirtyBytes = 3 * P;
    assert.equal(c.wouldExceedCap(2 * P), true, 'writers wait when dirty data would not fit the disk');
  });

  it('does not keep a fetched chunk it has no room for', async () => {
    const c = await newCache(roomy);
    dirtyBytes = 3 * P;
    c.setDiskLimit(3 * P);
    await c.put(name(7), bytes(K, 7));
    assert.equal(c.has(name(7)), false);
    assert.deepEqual(await readdir(path.join(dir, 'chunks')), []);
  });

  it('gives back clean chunks, oldest first, when the disk is full', async () => {
    const c = await newCache(roomy);
    for (let i = 1; i <= 4; i++) await c.put(name(i), bytes(K, i));
    await c.readAll(name(1)); // now the most recently used
    assert.equal(await c.evictForDisk(2 * P), 2 * P);
    assert.deepEqual(
      [1, 2, 3, 4].map((i) => c.has(name(i))),
      [true, false, false, true],
    );
    assert.equal(await c.evictForDisk(100 * P), 2 * P);
    assert.equal(await c.evictForDisk(P), 0, 'nothing left');
  });
});

describe('ChunkCache memory', () => {
  const K = 10_000;

  it('keeps the headers of at most FILE_HEADERS_KEPT cache files, the most recently read', async () => {
    const c = await newCache(roomy);
    const n = FILE_HEADERS_KEPT + 50;
    for (let i = 1; i <= n; i++) await c.put(name(i), bytes(16, i & 0xff));
    for (let i = 1; i <= n; i++) assert.deepEqual(await c.readAll(name(i)), bytes(16, i & 0xff));
    assert.equal(c.headersKept, FILE_HEADERS_KEPT);
    // One whose header was let go is read again from its file, and checked as before.
    assert.deepEqual(await c.readAll(name(1)), bytes(16, 1));
    assert.equal(c.headersKept, FILE_HEADERS_KEPT);
    await flipByte(c.pathOf(name(2)), 30); // inside the sealed name tag
    handles.forget(c.pathOf(name(2)));
    assert.equal(await c.readAll(name(2)), undefined, 'a damaged header is refused when read again');
  });

  it('counts what the chunks it keeps in memory hold: a small chunk is not a view into a larger buffer', async () => {
    const memoryBytes = 64 * 1024;
    const c = new ChunkCache(dir, roomy, handles, () => dirtyBytes, io, undefined, memoryBytes);
    await c.init();
    const garbage: Buffer[] = [];
    for (let i = 0; i < 2000; i++) {
      // Small buffers come from slabs of Node's shared pool; other work takes the rest of each.
      c.remember(name(i), Buffer.from(bytes(100, i & 0xff)));
      garbage.push(Buffer.from(bytes(Buffer.poolSize / 2 - 1, 1)));
      if (garbage.length > 4) garbage.shift();
    }
    assert.ok(c.memoryHeldBytes <= memoryBytes);
    const stores = new Set<ArrayBufferLike>();
    let kept = 0;
    for (let i = 0; i < 2000; i++) {
      if (!c.inMemoryPeek(name(i))) continue;
      const buf = c.inMemory(name(i))!;
      assert.deepEqual(buf, bytes(100, i & 0xff));
      stores.add(buf.buffer);
      kept++;
    }
    assert.ok(kept > 100, `it keeps many small chunks (${kept})`);
    let held = 0;
    for (const s of stores) held += s.byteLength;
    assert.ok(held <= memoryBytes, `the buffers behind them hold ${held} bytes`);
  });

  it('lets go of the chunks in memory once none was used for a while, read or read ahead', async () => {
    const c = new ChunkCache(dir, roomy, handles, () => dirtyBytes, io, undefined, 1024 * 1024);
    await c.init();
    c.remember(name(1), bytes(K, 1));
    c.remember(name(2), bytes(K, 2), true); // downloaded ahead of its reader
    assert.deepEqual(c.inMemory(name(1)), bytes(K, 1));
    assert.equal(c.memoryHeldBytes, 2 * K);
    assert.ok(await eventually(() => c.memoryHeldBytes === 0, 4 * MEMORY_IDLE_MS), 'idle memory is let go');
    assert.equal(c.inMemoryPeek(name(1)), false);
    assert.equal(c.inMemoryPeek(name(2)), false);
    // Kept again afterwards, and counted from zero.
    c.remember(name(3), bytes(K, 3), true);
    c.remember(name(4), bytes(K, 4));
    assert.equal(c.memoryHeldBytes, 2 * K);
    assert.deepEqual(c.inMemory(name(3)), bytes(K, 3));
  });
});
