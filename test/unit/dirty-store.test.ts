// Pins down the dirty chunk store: create/write/read/truncate/drop keep file and byte accounting exact (totalBytes counts bytes on disk, dataBytes the data), the data is sealed on disk, and init() recovers a previous run's chunks, trimming or removing what no longer fits.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { SpareFiles } from '../../electron/engine/cache/spareFiles';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO, UNIT, physicalSize } from '../../electron/engine/cache/sealed';

let dir: string;
let handles: HandlePool;
let io: SealedIO;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-dirty-'));
  handles = new HandlePool(4);
  io = new SealedIO(randomBytes(32));
});

afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function freshStore(): Promise<DirtyStore> {
  const s = new DirtyStore(dir, handles, io);
  await s.init(() => 'deleted', 0);
  return s;
}

/** Writes a sealed file holding `data`, as a previous run's DirtyStore leaves one. */
async function sealedFile(file: string, data: Buffer): Promise<void> {
  const { header, fileId } = io.newHeader();
  const fh = await open(file, 'w+', 0o600);
  try {
    await fh.write(header, 0, header.length, 0);
    await io.write(fh, fileId, 0, data, 0, file);
  } finally {
    await fh.close();
  }
}

/** Decrypts a file on disk independently of the store (header, then `len` bytes of data). */
async function unseal(file: string, len: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const fileId = await io.readHeader(fh, file);
    return await io.readAll(fh, fileId, len, file);
  } finally {
    await fh.close();
  }
}

describe('DirtyStore operations', () => {
  it('create seeds the chunk from its clean bytes, or starts it empty', async () => {
    const s = await freshStore();
    const seeded = await s.create(1, 0, Buffer.from('clean bytes'), 100);
    const empty = await s.create(1, 1, undefined, 101);
    assert.equal(seeded.len, 11);
    assert.equal(empty.len, 0);
    assert.deepEqual([seeded.gen, seeded.firstDirtyMs, seeded.lastWriteMs], [1, 100, 100]);
    assert.deepEqual(await s.readAll(seeded), Buffer.from('clean bytes'));
    assert.deepEqual(await unseal(s.pathOf(1, 0), 11), Buffer.from('clean bytes'));
    assert.equal((await stat(s.pathOf(1, 0))).size, physicalSize(11));
    assert.equal((await stat(s.pathOf(1, 1))).size, physicalSize(0), 'an empty chunk is just its header');
    assert.equal(s.totalBytes, physicalSize(11) + physicalSize(0));
    assert.equal(s.dataBytes, 11);
    assert.equal(s.count, 2);
    assert.equal(s.fileCount, 1);
  });

  it('write extends len and totalBytes only past the current end, bumps gen and the write time', async () => {
    const s = await freshStore();
    const d = await s.create(2, 0, undefined, 1);
    assert.equal(s.totalBytes, physicalSize(0));
    await s.write(d, Buffer.from('hello'), 0, 10);
    assert.deepEqual([d.len, s.totalBytes, s.dataBytes, d.gen, d.lastWriteMs, d.firstDirtyMs], [5, physicalSize(5), 5, 2, 10, 1]);
    await s.write(d, Buffer.from('HE'), 0, 11);
    assert.deepEqual([d.len, s.totalBytes, s.dataBytes, d.gen], [5, physicalSize(5), 5, 3]);
    await s.write(d, Buffer.from('!'), 9, 12);
    assert.deepEqual([d.len, s.totalBytes, s.dataBytes], [10, physicalSize(10), 10]);
    assert.deepEqual(await s.readAll(d), Buffer.from('HEllo\0\0\0\0!'));
    assert.equal(
      (await stat(s.pathOf(2, 0))).size,
      physicalSize(10),
      'the file is kept at the sealed size of the logical length',
    );
    // Past one unit, and a write inside the first unit afterwards, keep the accounting exact.
    await s.write(d, Buffer.alloc(10, 0x41), UNIT - 5, 13);
    assert.deepEqual([d.len, s.totalBytes, s.dataBytes], [UNIT + 5, physicalSize(UNIT + 5), UNIT + 5]);
    await s.write(d, Buffer.from('x'), 3, 14);
    assert.deepEqual([d.len, s.totalBytes], [UNIT + 5, physicalSize(UNIT + 5)]);
    assert.equal((await stat(s.pathOf(2, 0))).size, physicalSize(UNIT + 5));
    const all = await s.readAll(d);
    assert.deepEqual(all.subarray(0, 10), Buffer.from('HElxo\0\0\0\0!'));
    assert.deepEqual(all.subarray(UNIT - 5), Buffer.alloc(10, 0x41));
  });

  it('read returns at most up to len, and zero past it', async () => {
    const s = await freshStore();
    const d = await s.create(3, 0, Buffer.from('0123456789'), 1);
    const buf = Buffer.alloc(8, 0xee);
    assert.equal(await s.read(d, buf, 2, 4, 3), 4);
    assert.deepEqual(buf, Buffer.from([0xee, 0xee, 0x33, 0x34, 0x35, 0x36, 0xee, 0xee]));
    assert.equal(await s.read(d, buf, 0, 8, 7), 3, 'short at the end');
    assert.equal(await s.read(d, buf, 0, 8, 10), 0);
    assert.equal(await s.read(d, buf, 0, 8, 50), 0);
  });

  it('truncate shrinks and grows the chunk with exact accounting; growing reads zeros', async () => {
    const s = await freshStore();
    const d = await s.create(4, 0, Buffer.from('abcdefgh'), 1);
    await s.truncate(d, 3, 5);
    assert.deepEqual([d.len, s.totalBytes, s.dataBytes, d.gen, d.lastWriteMs], [3, physicalSize(3), 3, 2, 5]);
    assert.deepEqual(await s.readAll(d), Buffer.from('abc'));
    assert.equal((await stat(s.pathOf(4, 0))).size, physicalSize(3));
    await s.truncate(d, 6, 6);
    assert.equal(s.totalBytes, physicalSize(6));
    assert.deepEqual(await s.readAll(d), Buffer.from('abc\0\0\0'));
    assert.equal((await stat(s.pathOf(4, 0))).size, physicalSize(6));
    await s.truncate(d, 2 * UNIT + 1, 7);
    assert.deepEqual([s.totalBytes, s.dataBytes], [physicalSize(2 * UNIT + 1), 2 * UNIT + 1]);
    assert.equal((await stat(s.pathOf(4, 0))).size, physicalSize(2 * UNIT + 1));
    const grown = await s.readAll(d);
    assert.deepEqual(grown.subarray(0, 3), Buffer.from('abc'));
    assert.ok(
      grown.subarray(3).every((b) => b === 0),
      'growing reads zeros',
    );
    await s.truncate(d, UNIT + 2, 8);
    assert.equal(s.totalBytes, physicalSize(UNIT + 2));
    assert.equal((await s.readAll(d)).length, UNIT + 2);
    await s.truncate(d, 0, 9);
    assert.equal(s.totalBytes, physicalSize(0));
    assert.equal(s.dataBytes, 0);
    assert.equal((await stat(s.pathOf(4, 0))).size, physicalSize(0));
  });

  it('drop forgets the chunk, removes its file and its bytes; a second drop is harmless', async () => {
    const s = await freshStore();
    const a = await s.create(5, 0, Buffer.alloc(100), 1);
    const b = await s.create(5, 1, Buffer.alloc(50), 1);
    const c = await s.create(6, 0, Buffer.alloc(25), 1);
    assert.equal(s.totalBytes, physicalSize(100) + physicalSize(50) + physicalSize(25));
    assert.equal(s.dataBytes, 175);
    assert.deepEqual(s.indexesOf(5).sort(), [0, 1]);
    await s.drop(a);
    assert.equal(s.totalBytes, physicalSize(50) + physicalSize(25));
    assert.equal(s.dataBytes, 75);
    assert.equal(s.get(5, 0), undefined);
    await assert.rejects(stat(s.pathOf(5, 0)), { code: 'ENOENT' });
    await s.drop(a);
    assert.equal(s.totalBytes, physicalSize(50) + physicalSize(25));
    await s.drop(b);
    assert.equal(s.totalBytes, physicalSize(25));
    assert.deepEqual(s.inodes(), [6]);
    assert.equal(s.fileCount, 1);
    assert.equal(s.get(6, 0), c);
  });

  it('drop of a stale handle does not remove a newer chunk at the same place', async () => {
    const s = await freshStore();
    const old = await s.create(7, 0, Buffer.from('old'), 1);
    await s.drop(old);
    const current = await s.create(7, 0, Buffer.from('newer'), 2);
    await s.drop(old);
    assert.equal(s.get(7, 0), current);
    assert.deepEqual(await s.readAll(current), Buffer.from('newer'));
    assert.equal(s.totalBytes, physicalSize(5));
  });

  it('release hands the file over and stops counting it', async () => {
    const s = await freshStore();
    const d = await s.create(8, 2, Buffer.from('uploaded'), 1);
    const { file, fileId, size } = s.release(d);
    assert.equal(file, s.pathOf(8, 2));
    assert.ok(fileId.equals(d.fileId));
    assert.equal(size, physicalSize(8));
    assert.equal(s.totalBytes, 0);
    assert.equal(s.dataBytes, 0);
    assert.equal(s.count, 0);
    assert.equal((await stat(file)).size, size, 'the file stays for its new owner');
    assert.deepEqual(await unseal(file, 8), Buffer.from('uploaded'));
    const fh = await open(file, 'r');
    try {
      assert.ok((await io.readHeader(fh, file)).equals(fileId), "the sealing id handed over is the file's");
    } finally {
      await fh.close();
    }
  });

  it('counts the pre-images of rewritten fsynced units as bytes on disk, until a sync empties them or the chunk goes', async () => {
    const s = await freshStore();
    const preSize = async (ino: number, idx: number) =>
      (await stat(`${s.pathOf(ino, idx)}.pre`).catch(() => ({ size: -1 }))).size;
    const d = await s.create(30, 0, undefined, 1);
    await s.write(d, randomBytes(2 * UNIT), 0, 2);
    await s.syncInode(30);
    const chunkBytes = physicalSize(2 * UNIT);
    assert.equal(s.totalBytes, chunkBytes, 'no pre-image for data that was never synced');
    await s.write(d, randomBytes(100), UNIT - 50, 3); // rewrites both (durable) units
    assert.ok((await preSize(30, 0)) > 2 * UNIT, 'both units were saved');
    assert.equal(s.totalBytes, chunkBytes + (await preSize(30, 0)));
    await s.syncInode(30);
    assert.equal(await preSize(30, 0), 0);
    assert.equal(s.totalBytes, chunkBytes, 'a sync empties the pre-images');

    // Released to the clean cache (uploaded): the pre-images go, counted until they are gone.
    await s.write(d, randomBytes(10), 0, 4);
    const pre = await preSize(30, 0);
    assert.ok(pre > 0);
    s.release(d);
    assert.equal(s.totalBytes, pre, 'the chunk file is handed over; its pre-images are still on disk');
    await s.create(30, 0, undefined, 5); // a new chunk of that name waits for their removal
    assert.equal(await preSize(30, 0), -1);
    assert.equal(s.totalBytes, physicalSize(0));

    // Dropped (file deleted or truncated away): both go.
    const e = await s.create(31, 0, undefined, 1);
    await s.write(e, randomBytes(UNIT), 0, 2);
    await s.syncInode(31);
    await s.write(e, randomBytes(10), 5, 3);
    assert.ok((await preSize(31, 0)) > 0);
    await s.drop(e);
    assert.equal(await preSize(31, 0), -1);
    assert.equal(s.totalBytes, physicalSize(0), 'only the new chunk 30.0 is left');
  });

  it('syncs the chunks of one file and of all files', async () => {
    const s = await freshStore();
    const d = await s.create(9, 0, undefined, 1);
    await s.write(d, Buffer.from('durable'), 0, 2);
    await s.syncInode(9);
    await s.syncAll();
    assert.deepEqual(await unseal(s.pathOf(9, 0), 7), Buffer.from('durable'));
  });

  it('has nothing to sync for a chunk that left the store, and never skips one that is still dirty', async () => {
    const s = await freshStore();
    const handedOver = await s.create(11, 0, undefined, 1);
    await s.write(handedOver, Buffer.from('uploaded'), 0, 2);
    const dropped = await s.create(11, 1, undefined, 1);
    await s.write(dropped, Buffer.from('truncated away'), 0, 2);
    // The uploader hands the first to the clean cache (its file moves away); a truncate drops the second.
    const { file } = s.release(handedOver);
    await rm(file);
    await s.drop(dropped);
    await s.syncChunk(handedOver);
    await s.syncChunk(dropped);
    await s.syncInode(11);
    // A chunk still in the store whose file is missing is an error, not something to skip.
    const kept = await s.create(11, 2, undefined, 1);
    await s.write(kept, Buffer.from('still dirty'), 0, 2);
    await handles.closeAll();
    await rm(s.pathOf(11, 2));
    await assert.rejects(s.syncChunk(kept), { code: 'ENOENT' });
  });

  it('keeps working with more chunks than the handle pool holds', async () => {
    const s = await freshStore();
    const chunks = [];
    for (let i = 0; i < 12; i++) chunks.push(await s.create(10, i, undefined, 1));
    for (const [i, d] of chunks.entries()) await s.write(d, Buffer.from(`chunk ${i}`), 0, 2);
    for (const [i, d] of chunks.entries()) assert.equal((await s.readAll(d)).toString(), `chunk ${i}`);
    assert.equal(
      s.totalBytes,
      chunks.reduce((n, d) => n + physicalSize(d.len), 0),
    );
    assert.equal(
      s.dataBytes,
      chunks.reduce((n, d) => n + d.len, 0),
    );
  });

  it('writes unit patches in one batch: whole units as given, partial ones over the old bytes, zeros in a gap, exact accounting', async () => {
    const s = await freshStore();
    const full = randomBytes(UNIT);
    const part = Buffer.alloc(UNIT);
    randomBytes(4900).copy(part, 100);
    // A new chunk from patches alone: unit 0 whole, unit 1 never written (zeros), unit 2 in part.
    const end = 2 * UNIT + 5000;
    const d = await s.createWithUnits(
      1,
      0,
      [
        { index: 0, data: full, ranges: [0, UNIT] },
        { index: 2, data: part, ranges: [100, 5000] },
      ],
      end,
      50,
      20,
    );
    const expected = Buffer.alloc(end);
    full.copy(expected, 0);
    part.copy(expected, 2 * UNIT + 100, 100, 5000);
    assert.equal(d.len, end);
    assert.equal(d.firstDirtyMs, 20, 'dirty since the first buffered byte arrived');
    assert.deepEqual(await s.readAll(d), expected);
    assert.equal(s.totalBytes, physicalSize(end));
    assert.equal((await stat(s.pathOf(1, 0))).size, physicalSize(end));
    // A batch over it: a few bytes inside unit 1, unit 2 again in part, and unit 4 past the end.
    const u1 = Buffer.alloc(UNIT);
    randomBytes(10).copy(u1, 10);
    const u2 = Buffer.alloc(UNIT);
    randomBytes(UNIT - 4000).copy(u2, 4000);
    const u4 = Buffer.alloc(UNIT);
    randomBytes(7).copy(u4, 0);
    const gen = d.gen;
    await s.writeUnits(
      d,
      [
        { index: 1, data: u1, ranges: [10, 20] },
        { index: 2, data: u2, ranges: [4000, UNIT] },
        { index: 4, data: u4, ranges: [0, 7] },
      ],
      4 * UNIT + 7,
      60,
    );
    const after = Buffer.alloc(4 * UNIT + 7);
    expected.copy(after, 0);
    u1.copy(after, UNIT + 10, 10, 20);
    u2.copy(after, 2 * UNIT + 4000, 4000, UNIT);
    u4.copy(after, 4 * UNIT, 0, 7);
    assert.equal(d.len, after.length);
    assert.ok(d.gen > gen);
    assert.deepEqual(await s.readAll(d), after);
    assert.equal(s.totalBytes, physicalSize(after.length));
    assert.equal((await stat(s.pathOf(1, 0))).size, physicalSize(after.length));
    // What is on disk is what a restart reads back.
    await handles.closeAll();
    const again = new DirtyStore(dir, handles, io);
    await again.init(() => after.length, 0, { uncleanStop: true });
    assert.deepEqual(await again.readAll(again.get(1, 0)!), after);
  });

  it('keeps the data out of the file on disk in plaintext', async () => {
    const s = await freshStore();
    const marker = Buffer.from('PLAINTEXT-MARKER-0123456789');
    const pattern = Buffer.alloc(3 * UNIT + 100);
    for (let off = 0; off < pattern.length; off += marker.length) marker.copy(pattern, off);
    const seeded = await s.create(11, 0, marker, 1);
    const d = await s.create(11, 1, undefined, 1);
    await s.write(d, pattern, 0, 2);
    await s.write(d, marker, UNIT - 10, 3); // across a unit boundary
    await s.truncate(d, 2 * UNIT + 50, 4);
    for (const file of [s.pathOf(11, 0), s.pathOf(11, 1)]) {
      const raw = await readFile(file);
      assert.equal(raw.includes(marker.subarray(0, 12)), false, `${path.basename(file)} holds plaintext`);
      assert.equal(raw.includes(Buffer.from('PLAINTEXT')), false);
    }
    assert.deepEqual(await s.readAll(seeded), marker);
    assert.deepEqual((await s.readAll(d)).subarray(UNIT - 10, UNIT - 10 + marker.length), marker);
  });
});

describe('DirtyStore chunk lock and upload bookkeeping', () => {
  it('withChunk runs one holder of a chunk at a time, and other chunks alongside', async () => {
    const s = await freshStore();
    const order: string[] = [];
    let letFirstGo!: () => void;
    const gate = new Promise<void>((r) => (letFirstGo = r));
    const first = s.withChunk(1, 0, async () => {
      order.push('first in');
      await gate;
      order.push('first out');
    });
    const second = s.withChunk(1, 0, async () => {
      order.push('second');
    });
    const other = s.withChunk(1, 1, async () => {
      order.push('other chunk');
    });
    await other;
    assert.deepEqual(order, ['first in', 'other chunk'], 'the same chunk waits; another chunk does not');
    letFirstGo();
    await Promise.all([first, second]);
    assert.deepEqual(order, ['first in', 'other chunk', 'first out', 'second']);
  });

  it("uploadedAsOf moves the dirty age of a chunk written during its upload to the upload's read, never back", async () => {
    const s = await freshStore();
    const d = await s.create(1, 0, undefined, 100);
    await s.write(d, Buffer.from('later'), 0, 300);
    s.uploadedAsOf(d, 200);
    assert.equal(d.firstDirtyMs, 200);
    s.uploadedAsOf(d, 150);
    assert.equal(d.firstDirtyMs, 200, 'an older read does not make it older again');
    await s.drop(d);
    s.uploadedAsOf(d, 250);
    assert.equal(d.firstDirtyMs, 200, 'a record that left the store is not changed');
  });
});

describe('DirtyStore.init', () => {
  it('recovers chunks of a previous run, trimming files longer than the limit and removing those of deleted files', async () => {
    const root = path.join(dir, 'dirty');
    await mkdir(root, { recursive: true });
    await sealedFile(path.join(root, '1.0'), Buffer.alloc(100, 1)); // fits
    await sealedFile(path.join(root, '1.1'), Buffer.alloc(100, 2)); // file shrank: limit 40
    await sealedFile(path.join(root, '2.0'), Buffer.alloc(100, 3)); // inode deleted
    await sealedFile(path.join(root, '3.5'), Buffer.alloc(10, 4)); // chunk now past the end: limit 0
    await writeFile(path.join(root, 'junk.tmp'), 'x'); // not a chunk
    const limits = new Map<string, number | 'deleted'>([
      ['1.0', 1000],
      ['1.1', 40],
      ['2.0', 'deleted'],
      ['3.5', 0],
    ]);
    const s = new DirtyStore(dir, handles, io);
    await s.init((ino, idx) => limits.get(`${ino}.${idx}`)!, 777);

    assert.deepEqual((await readdir(root)).sort(), ['1.0', '1.1']);
    assert.equal((await stat(path.join(root, '1.1'))).size, physicalSize(40));
    assert.equal(s.count, 2);
    assert.equal(s.totalBytes, physicalSize(100) + physicalSize(40));
    assert.equal(s.dataBytes, 140);
    const a = s.get(1, 0)!;
    const b = s.get(1, 1)!;
    assert.deepEqual([a.len, b.len], [100, 40]);
    assert.equal(a.firstDirtyMs, 777);
    assert.equal(a.lastWriteMs, 0, 'recovered chunks upload without waiting for a new write');
    assert.deepEqual(await s.readAll(a), Buffer.alloc(100, 1));
    assert.deepEqual(await s.readAll(b), Buffer.alloc(40, 2));
  });

  it('keeps chunks whose file is unknown on disk as orphans, readable, until removeOrphans', async () => {
    const root = path.join(dir, 'dirty');
    await mkdir(root, { recursive: true });
    const data = randomBytes(UNIT + 321);
    await sealedFile(path.join(root, '9.2'), data); // no record of inode 9 at all
    await sealedFile(path.join(root, '1.0'), Buffer.alloc(50, 1));
    const s = new DirtyStore(dir, handles, io);
    await s.init((ino) => (ino === 1 ? 1000 : 'unknown'), 0);

    assert.equal(s.count, 1, 'an orphan is not loaded as dirty data to upload');
    assert.deepEqual(s.inodes(), [1]);
    assert.deepEqual(
      s.orphans.map((o) => [o.ino, o.idx, o.len]),
      [[9, 2, UNIT + 321]],
    );
    assert.deepEqual((await readdir(root)).sort(), ['1.0', '9.2'], 'the orphan stays on disk');
    assert.deepEqual(await s.readOrphan(s.orphans[0]!), data);
    await s.removeOrphans();
    assert.deepEqual(s.orphans, []);
    assert.deepEqual((await readdir(root)).sort(), ['1.0']);
  });

  it('a second store on the same directory and key reads back what the first wrote (restart after a crash)', async (t) => {
    const s1 = await freshStore();
    const big = randomBytes(2 * UNIT + 123);
    const lens: Array<[number, number, number]> = []; // ino, idx, len
    await s1.create(20, 0, undefined, 1); // empty
    lens.push([20, 0, 0]);
    const small = await s1.create(20, 1, Buffer.from('small'), 1);
    await s1.write(small, Buffer.from('!'), 9, 2);
    lens.push([20, 1, 10]);
    const exact = await s1.create(20, 2, undefined, 1);
    await s1.write(exact, big.subarray(0, UNIT), 0, 2); // exactly one unit
    lens.push([20, 2, UNIT]);
    const multi = await s1.create(21, 0, big, 1);
    await s1.write(multi, Buffer.from('patched'), UNIT - 3, 2); // across a unit boundary
    lens.push([21, 0, big.length]);
    const trimmed = await s1.create(21, 1, big, 1); // the file shrank meanwhile: trimmed to the limit
    lens.push([21, 1, UNIT + 7]);
    const expected = new Map<string, Buffer>([
      ['20.0', Buffer.alloc(0)],
      ['20.1', Buffer.from('small\0\0\0\0!')],
      ['20.2', big.subarray(0, UNIT)],
      ['21.0', Buffer.concat([big.subarray(0, UNIT - 3), Buffer.from('patched'), big.subarray(UNIT + 4)])],
      ['21.1', big.subarray(0, UNIT + 7)],
    ]);
    assert.deepEqual(await s1.readAll(multi), expected.get('21.0'));
    assert.equal(trimmed.len, big.length);
    // No clean shutdown: the first store's handles are simply abandoned.

    const handles2 = new HandlePool(4);
    t.after(() => handles2.closeAll());
    const s2 = new DirtyStore(dir, handles2, io);
    await s2.init((ino, idx) => (ino === 21 && idx === 1 ? UNIT + 7 : 10 * UNIT), 5);
    assert.equal(s2.count, lens.length);
    for (const [ino, idx, len] of lens) {
      const d = s2.get(ino, idx)!;
      assert.ok(d, `${ino}.${idx} recovered`);
      assert.equal(d.len, len, `${ino}.${idx} length`);
      assert.deepEqual(await s2.readAll(d), expected.get(`${ino}.${idx}`), `${ino}.${idx} data`);
      assert.equal((await stat(s2.pathOf(ino, idx))).size, physicalSize(len));
    }
    assert.equal(
      s2.totalBytes,
      lens.reduce((n, [, , len]) => n + physicalSize(len), 0),
    );
    assert.equal(
      s2.dataBytes,
      lens.reduce((n, [, , len]) => n + len, 0),
    );
    // The recovered chunks keep working. Their data counts as durable, so rewriting its last
    // unit first saves that unit's pre-image beside it, and the count covers that file too.
    const again = s2.get(20, 1)!;
    await s2.write(again, Buffer.from('more'), again.len, 6);
    assert.deepEqual(await s2.readAll(again), Buffer.from('small\0\0\0\0!more'));
    const pre = (await stat(`${s2.pathOf(20, 1)}.pre`)).size;
    assert.ok(pre > 0, 'a pre-image was kept');
    assert.equal(
      s2.totalBytes,
      lens.reduce((n, [, , len]) => n + physicalSize(len), 0) - physicalSize(10) + physicalSize(14) + pre,
    );
    let onDisk = 0;
    for (const f of await readdir(path.join(dir, 'dirty'))) onDisk += (await stat(path.join(dir, 'dirty', f))).size;
    assert.equal(s2.totalBytes, onDisk, 'every byte in the dirty folder is counted');
  });

  it('removes a leftover file whose header is not a sealed one, and keeps a damaged last unit out', async () => {
    const root = path.join(dir, 'dirty');
    await mkdir(root, { recursive: true });
    await writeFile(path.join(root, '1.0'), Buffer.alloc(200, 1)); // plaintext from an older version
    await writeFile(path.join(root, '1.1'), Buffer.alloc(10, 1)); // shorter than a header
    // A power loss cut the last unit short: the whole units before it are kept.
    await sealedFile(path.join(root, '2.0'), Buffer.alloc(UNIT + 50, 5));
    const cut = await open(path.join(root, '2.0'), 'r+');
    await cut.truncate(physicalSize(UNIT) + 20);
    await cut.close();
    const logs: string[] = [];
    const s = new DirtyStore(dir, handles, io, (m) => logs.push(m));
    await s.init(() => 10 * UNIT, 0);
    assert.deepEqual((await readdir(root)).sort(), ['2.0']);
    assert.equal(logs.length, 2, logs.join('\n'));
    const d = s.get(2, 0)!;
    assert.equal(d.len, UNIT);
    assert.equal(s.totalBytes, physicalSize(UNIT));
    assert.equal((await stat(path.join(root, '2.0'))).size, physicalSize(UNIT));
    assert.deepEqual(await s.readAll(d), Buffer.alloc(UNIT, 5));
  });

  it('creates its directory when there is none', async () => {
    const s = new DirtyStore(path.join(dir, 'nested'), handles, io);
    await s.init(() => 1, 0);
    assert.equal(s.count, 0);
    assert.deepEqual(await readdir(path.join(dir, 'nested', 'dirty')), []);
  });
});

describe('DirtyStore spare files', () => {
  it('places new chunks by renaming ready spares, which never hold data, and a restart keeps the chunks and drops the spares', async () => {
    const s = new DirtyStore(dir, handles, io, undefined, { spareFiles: 3 });
    await s.init(() => 'deleted', 0);
    const spareDir = path.join(dir, 'spare');
    const first = randomBytes(5000);
    // None is ready before the first new chunk (it creates its own file and starts the making).
    const d1 = await s.createWithUnits(1, 0, [{ index: 0, data: first, ranges: [0, first.length] }], first.length, 10);
    await s.sparesFilled();
    const ready = await readdir(spareDir);
    assert.equal(ready.length, 3, 'three spares made after the first take');
    for (const f of ready) assert.equal((await stat(path.join(spareDir, f))).size, 0, 'a spare is empty');
    const inodeOf = async (f: string) => (await stat(f)).ino;
    const spareInodes = new Set(await Promise.all(ready.map((f) => inodeOf(path.join(spareDir, f)))));
    const second = randomBytes(3 * UNIT + 7);
    const d2 = await s.createWithUnits(2, 0, [{ index: 0, data: second.subarray(0, UNIT), ranges: [0, UNIT] }], UNIT, 20);
    await s.writeUnits(
      d2,
      [1, 2, 3].map((u) => ({
        index: u,
        data: Buffer.concat([second.subarray(u * UNIT), Buffer.alloc(UNIT)]).subarray(0, UNIT),
        ranges: [0, Math.min(UNIT, second.length - u * UNIT)],
      })),
      second.length,
      21,
    );
    assert.ok(spareInodes.has(await inodeOf(s.pathOf(2, 0))), 'the new chunk is a spare renamed into place');
    await s.sparesFilled();
    const readyNow = await readdir(spareDir);
    const inodesNow = new Set(await Promise.all(readyNow.map((f) => inodeOf(path.join(spareDir, f)))));
    const seeded = await s.create(3, 1, Buffer.from('seeded'), 30);
    assert.ok(inodesNow.has(await inodeOf(s.pathOf(3, 1))), 'a seeded chunk too');
    await s.sparesFilled();
    for (const f of await readdir(spareDir)) assert.equal((await stat(path.join(spareDir, f))).size, 0, 'spares left are empty');
    assert.deepEqual(await s.readAll(d1), first);
    assert.deepEqual(await s.readAll(d2), second);
    assert.deepEqual(await s.readAll(seeded), Buffer.from('seeded'));
    assert.equal(s.totalBytes, physicalSize(first.length) + physicalSize(second.length) + physicalSize(6));
    // A crash leaves spares behind: the next start removes them and loads the chunks alone.
    await handles.closeAll();
    const again = new DirtyStore(dir, handles, io, undefined, { spareFiles: 3 });
    await again.init((ino) => (ino === 1 ? first.length : ino === 2 ? second.length : 4 * 1024 * 1024), 0, { uncleanStop: true });
    assert.equal(again.count, 3);
    assert.deepEqual(await again.readAll(again.get(2, 0)!), second);
    await assert.rejects(readdir(spareDir), { code: 'ENOENT' }, 'leftover spares are removed at start');
    // Closing removes the spares made since, and later chunks create their own files.
    await again.createWithUnits(4, 0, [{ index: 0, data: first, ranges: [0, first.length] }], first.length, 40);
    await again.closeSpares();
    await assert.rejects(readdir(spareDir), { code: 'ENOENT' });
    const late = await again.createWithUnits(5, 0, [{ index: 0, data: first, ranges: [0, first.length] }], first.length, 50);
    assert.deepEqual(await again.readAll(late), first);
    await assert.rejects(readdir(spareDir), { code: 'ENOENT' }, 'no spare is made after closing');
  });
});

describe('DirtyStore files created ahead', () => {
  it('a new chunk takes the file created ahead for it (no spare, no rename); one no chunk took goes at its last close', async () => {
    const logs: string[] = [];
    const s = new DirtyStore(dir, handles, io, (m) => logs.push(m), { spareFiles: 2 });
    await s.init(() => 'deleted', 0);
    const inodeOf = async (f: string) => (await stat(f)).ino;
    s.openAhead(1, 0);
    s.openAhead(1, 0); // asked twice: one file
    s.openAhead(2, 0);
    assert.equal(s.openedAheadCount, 2);
    const ahead = async (f: string) => {
      for (let i = 0; i < 200; i++) {
        const st = await stat(f).catch(() => undefined);
        if (st) return st;
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      throw new Error(`${f} was not created ahead`);
    };
    const made = await ahead(s.pathOf(1, 0));
    assert.equal(made.size, 0, 'a file created ahead is empty until its chunk starts');
    const data = randomBytes(5000);
    const d = await s.withChunk(1, 0, () =>
      s.createWithUnits(1, 0, [{ index: 0, data, ranges: [0, data.length] }], data.length, 10),
    );
    assert.equal(await inodeOf(s.pathOf(1, 0)), made.ino, 'the chunk is written into the file created ahead');
    assert.deepEqual(await s.readAll(d), data);
    assert.equal(s.openedAheadCount, 1);
    await assert.rejects(readdir(path.join(dir, 'spare')), { code: 'ENOENT' }, 'no spare was taken, so none is made');
    // Closed without data: the file goes; a chunk that started meanwhile keeps its file.
    await ahead(s.pathOf(2, 0));
    s.notNeededAhead(2, 0);
    s.notNeededAhead(1, 0); // its chunk took the file: nothing to do
    await s.withChunk(2, 0, async () => undefined); // after the drop, which runs under the lock
    assert.equal(s.openedAheadCount, 0);
    await assert.rejects(stat(s.pathOf(2, 0)), { code: 'ENOENT' });
    assert.deepEqual(await s.readAll(d), data);
    // Not over an existing chunk, and never over a file of that name.
    s.openAhead(1, 0);
    assert.equal(s.openedAheadCount, 0, 'chunk 1.0 exists');
    await writeFile(s.pathOf(3, 0), 'not ours');
    s.openAhead(3, 0);
    const d3 = await s.withChunk(3, 0, () =>
      s.createWithUnits(3, 0, [{ index: 0, data, ranges: [0, data.length] }], data.length, 20),
    );
    assert.deepEqual(await s.readAll(d3), data, 'the exclusive create failed, and the chunk made its file as before');
    // Closing the store removes files created ahead that no chunk took.
    s.openAhead(4, 0);
    await s.closeSpares();
    await assert.rejects(stat(s.pathOf(4, 0)), { code: 'ENOENT' });
    s.openAhead(5, 0);
    assert.equal(s.openedAheadCount, 0, 'nothing is created ahead once closing');
    assert.deepEqual(logs, []);
  });

  it('an empty file under a chunk name (a crash before its first write) is removed at start, quietly', async () => {
    await mkdir(path.join(dir, 'dirty'), { recursive: true });
    await writeFile(path.join(dir, 'dirty', '7.0'), '');
    await sealedFile(path.join(dir, 'dirty', '8.0'), Buffer.from('kept'));
    const logs: string[] = [];
    const s = new DirtyStore(dir, handles, io, (m) => logs.push(m));
    await s.init(() => 4 * 1024 * 1024, 0, { uncleanStop: true });
    assert.equal(s.count, 1);
    assert.equal(s.get(7, 0), undefined);
    assert.deepEqual(await s.readAll(s.get(8, 0)!), Buffer.from('kept'));
    assert.deepEqual((await readdir(path.join(dir, 'dirty'))).sort(), ['8.0']);
    assert.deepEqual(logs, [], 'an empty file is not a damaged chunk');
  });
});

describe('SpareFiles', () => {
  it('makes its folder once, and again after it was removed under it', async () => {
    const spareDir = path.join(dir, 'spare');
    const spares = new SpareFiles(spareDir, 2);
    await spares.init();
    assert.equal(spares.take(), undefined, 'none ready before the first take');
    await spares.filled();
    assert.equal((await readdir(spareDir)).length, 2);
    const a = spares.take()!;
    await a.fh.close();
    await spares.filled();
    assert.equal(spares.readyCount, 2);
    // Someone removes the folder: the fill after the next take fails (no spare made) ...
    await rm(spareDir, { recursive: true, force: true });
    const b = spares.take()!;
    await b.fh.close();
    await spares.filled();
    assert.equal(spares.readyCount, 1, 'the fill could not make a spare in a missing folder');
    // ... and the one after it makes the folder again.
    const c = spares.take()!;
    await c.fh.close();
    await spares.filled();
    assert.equal(spares.readyCount, 2);
    assert.equal((await readdir(spareDir)).length, 2);
    await spares.close();
    await assert.rejects(readdir(spareDir), { code: 'ENOENT' });
  });
});
