// Pins down the dirty chunk store: create/write/read/truncate/drop keep file and byte accounting exact, and init() recovers a previous run's chunks, trimming or removing what no longer fits.

import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';

let dir: string;
let handles: HandlePool;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-dirty-'));
  handles = new HandlePool(4);
});

afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

async function freshStore(): Promise<DirtyStore> {
  const s = new DirtyStore(dir, handles);
  await s.init(() => undefined, 0);
  return s;
}

describe('DirtyStore operations', () => {
  it('create seeds the chunk from its clean bytes, or starts it empty', async () => {
    const s = await freshStore();
    const seeded = await s.create(1, 0, Buffer.from('clean bytes'), 100);
    const empty = await s.create(1, 1, undefined, 101);
    assert.equal(seeded.len, 11);
    assert.equal(empty.len, 0);
    assert.deepEqual([seeded.gen, seeded.firstDirtyMs, seeded.lastWriteMs, seeded.uploading, seeded.attempts], [1, 100, 100, false, 0]);
    assert.deepEqual(await s.readAll(seeded), Buffer.from('clean bytes'));
    assert.equal((await readFile(s.pathOf(1, 0))).toString(), 'clean bytes');
    assert.equal(s.totalBytes, 11);
    assert.equal(s.count, 2);
    assert.equal(s.fileCount, 1);
  });

  it('write extends len and totalBytes only past the current end, bumps gen and the write time', async () => {
    const s = await freshStore();
    const d = await s.create(2, 0, undefined, 1);
    await s.write(d, Buffer.from('hello'), 0, 10);
    assert.deepEqual([d.len, s.totalBytes, d.gen, d.lastWriteMs, d.firstDirtyMs], [5, 5, 2, 10, 1]);
    await s.write(d, Buffer.from('HE'), 0, 11);
    assert.deepEqual([d.len, s.totalBytes, d.gen], [5, 5, 3]);
    await s.write(d, Buffer.from('!'), 9, 12);
    assert.deepEqual([d.len, s.totalBytes], [10, 10]);
    assert.deepEqual(await s.readAll(d), Buffer.from('HEllo\0\0\0\0!'));
    assert.equal((await stat(s.pathOf(2, 0))).size, 10, 'the file is kept at the logical length');
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
    assert.deepEqual([d.len, s.totalBytes, d.gen, d.lastWriteMs], [3, 3, 2, 5]);
    assert.deepEqual(await s.readAll(d), Buffer.from('abc'));
    await s.truncate(d, 6, 6);
    assert.equal(s.totalBytes, 6);
    assert.deepEqual(await s.readAll(d), Buffer.from('abc\0\0\0'));
    await s.truncate(d, 0, 7);
    assert.equal(s.totalBytes, 0);
    assert.equal((await stat(s.pathOf(4, 0))).size, 0);
  });

  it('drop forgets the chunk, removes its file and its bytes; a second drop is harmless', async () => {
    const s = await freshStore();
    const a = await s.create(5, 0, Buffer.alloc(100), 1);
    const b = await s.create(5, 1, Buffer.alloc(50), 1);
    const c = await s.create(6, 0, Buffer.alloc(25), 1);
    assert.equal(s.totalBytes, 175);
    assert.deepEqual(s.indexesOf(5).sort(), [0, 1]);
    await s.drop(a);
    assert.equal(s.totalBytes, 75);
    assert.equal(s.get(5, 0), undefined);
    await assert.rejects(stat(s.pathOf(5, 0)), { code: 'ENOENT' });
    await s.drop(a);
    assert.equal(s.totalBytes, 75);
    await s.drop(b);
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
    assert.equal(s.totalBytes, 5);
  });

  it('release hands the file over and stops counting it', async () => {
    const s = await freshStore();
    const d = await s.create(8, 2, Buffer.from('uploaded'), 1);
    const file = s.release(d);
    assert.equal(file, s.pathOf(8, 2));
    assert.equal(s.totalBytes, 0);
    assert.equal(s.count, 0);
    assert.equal((await readFile(file)).toString(), 'uploaded', 'the file stays for its new owner');
  });

  it('syncs the chunks of one file and of all files', async () => {
    const s = await freshStore();
    const d = await s.create(9, 0, undefined, 1);
    await s.write(d, Buffer.from('durable'), 0, 2);
    await s.syncInode(9);
    await s.syncAll();
    assert.equal((await readFile(s.pathOf(9, 0))).toString(), 'durable');
  });

  it('keeps working with more chunks than the handle pool holds', async () => {
    const s = await freshStore();
    const chunks = [];
    for (let i = 0; i < 12; i++) chunks.push(await s.create(10, i, undefined, 1));
    for (const [i, d] of chunks.entries()) await s.write(d, Buffer.from(`chunk ${i}`), 0, 2);
    for (const [i, d] of chunks.entries()) assert.equal((await s.readAll(d)).toString(), `chunk ${i}`);
    assert.equal(s.totalBytes, chunks.reduce((n, d) => n + d.len, 0));
  });
});

describe('DirtyStore.init', () => {
  it('recovers chunks of a previous run, trimming files longer than the limit and removing unknown ones', async () => {
    const root = path.join(dir, 'dirty');
    await mkdir(root, { recursive: true });
    await writeFile(path.join(root, '1.0'), Buffer.alloc(100, 1)); // fits
    await writeFile(path.join(root, '1.1'), Buffer.alloc(100, 2)); // file shrank: limit 40
    await writeFile(path.join(root, '2.0'), Buffer.alloc(100, 3)); // inode gone
    await writeFile(path.join(root, '3.5'), Buffer.alloc(10, 4)); // chunk now past the end: limit 0
    await writeFile(path.join(root, 'junk.tmp'), 'x'); // not a chunk
    const limits = new Map([['1.0', 1000], ['1.1', 40], ['3.5', 0]]);
    const s = new DirtyStore(dir, handles);
    await s.init((ino, idx) => limits.get(`${ino}.${idx}`), 777);

    assert.deepEqual((await readdir(root)).sort(), ['1.0', '1.1']);
    assert.equal((await stat(path.join(root, '1.1'))).size, 40);
    assert.equal(s.count, 2);
    assert.equal(s.totalBytes, 140);
    const a = s.get(1, 0)!;
    const b = s.get(1, 1)!;
    assert.deepEqual([a.len, b.len], [100, 40]);
    assert.equal(a.firstDirtyMs, 777);
    assert.equal(a.lastWriteMs, 0, 'recovered chunks upload without waiting for a new write');
    assert.deepEqual(await s.readAll(b), Buffer.alloc(40, 2));
  });

  it('creates its directory when there is none', async () => {
    const s = new DirtyStore(path.join(dir, 'nested'), handles);
    await s.init(() => 1, 0);
    assert.equal(s.count, 0);
    assert.deepEqual(await readdir(path.join(dir, 'nested', 'dirty')), []);
  });
});
