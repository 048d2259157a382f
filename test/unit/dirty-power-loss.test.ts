// A power cut can tear a unit rewrite in the middle (a crash of the process cannot). The
// dirty store keeps pre-images of durable units it rewrites, so after such a tear every byte
// that an fsync made durable is back, unsynced writes are the only loss, and nothing fails
// authentication later. Tears are simulated by overwriting part of a unit on disk with what a
// half-finished write leaves: some new bytes, some old.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, readdir, rm, stat } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO, UNIT, unitOffset } from '../../electron/engine/cache/sealed';

let dir: string;
let key: Buffer;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-tear-'));
  key = randomBytes(32);
});
afterEach(() => rm(dir, { recursive: true, force: true }));

async function store(opts: { uncleanStop?: boolean; limit?: number } = {}): Promise<{ s: DirtyStore; handles: HandlePool }> {
  const handles = new HandlePool(4);
  const s = new DirtyStore(dir, handles, new SealedIO(key));
  await s.init(() => opts.limit ?? 8 * UNIT, 0, { uncleanStop: opts.uncleanStop });
  return { s, handles };
}

/** What a torn write leaves: garbage over `n` bytes from `at` inside unit u. */
async function tear(ino: number, idx: number, u: number, at = 1000, n = 5000): Promise<void> {
  const fh = await open(path.join(dir, 'dirty', `${ino}.${idx}`), 'r+');
  try {
    await fh.write(randomBytes(n), 0, n, unitOffset(u) + at);
  } finally {
    await fh.close();
  }
}

async function content(s: DirtyStore, ino: number, idx: number): Promise<Buffer> {
  const d = s.get(ino, idx);
  assert.ok(d, 'the chunk is still there');
  return s.readAll(d);
}

describe('dirty store after a power loss', () => {
  it('puts a torn rewrite of a synced unit back to its synced content', async () => {
    const { s, handles } = await store();
    const synced = randomBytes(UNIT + 30_000);
    const d = await s.create(2, 0, undefined, 1);
    await s.write(d, synced, 0, 1);
    await s.syncInode(2);
    await s.write(d, Buffer.from('unsynced change'), 500, 2); // a small write into unit 0
    assert.ok((await readdir(path.join(dir, 'dirty'))).includes('2.0.pre'), 'the pre-image is on disk before the rewrite');
    await handles.closeAll();
    await tear(2, 0, 0);
    const again = await store({ uncleanStop: true });
    assert.deepEqual(await content(again.s, 2, 0), synced, 'every synced byte is back; only the unsynced change is lost');
    assert.ok(!(await readdir(path.join(dir, 'dirty'))).includes('2.0.pre'));
    await again.handles.closeAll();
  });

  it('puts back a torn append to the partial last unit, with the synced length', async () => {
    const { s, handles } = await store();
    const synced = randomBytes(10_000);
    const d = await s.create(3, 1, undefined, 1);
    await s.write(d, synced, 0, 1);
    await s.syncInode(3);
    await s.write(d, randomBytes(UNIT), synced.length, 2); // append past the unit
    await handles.closeAll();
    await tear(3, 1, 0, 2000, 20_000);
    const again = await store({ uncleanStop: true });
    assert.deepEqual(await content(again.s, 3, 1), synced);
    await again.handles.closeAll();
  });

  it('a torn unit that only ever held unsynced data reads as zeros; the synced units are intact', async () => {
    const { s, handles } = await store();
    const first = randomBytes(UNIT);
    const d = await s.create(4, 0, undefined, 1);
    await s.write(d, first, 0, 1);
    await s.syncInode(4);
    const second = randomBytes(UNIT);
    await s.write(d, second, UNIT, 2); // a new unit: nothing durable in it, no pre-image needed
    await handles.closeAll();
    await tear(4, 0, 1);
    const again = await store({ uncleanStop: true });
    const got = await content(again.s, 4, 0);
    assert.deepEqual(got.subarray(0, UNIT), first);
    assert.deepEqual(got.subarray(UNIT), Buffer.alloc(UNIT));
    await again.handles.closeAll();
  });

  it('a unit that was synced again after its pre-image was taken keeps its newer content', async () => {
    const { s, handles } = await store();
    const d = await s.create(5, 0, undefined, 1);
    await s.write(d, Buffer.alloc(UNIT, 1), 0, 1);
    await s.syncInode(5);
    await s.write(d, Buffer.alloc(100, 2), 0, 2);
    // Keep the pre-image file as if its deletion at the next sync never reached the disk.
    const pre = await open(path.join(dir, 'dirty', '5.0.pre'), 'r');
    const saved = await pre.readFile();
    await pre.close();
    await s.syncInode(5);
    await handles.closeAll();
    const fh = await open(path.join(dir, 'dirty', '5.0.pre'), 'w');
    await fh.writeFile(saved);
    await fh.close();
    const again = await store({ uncleanStop: true });
    const got = await content(again.s, 5, 0);
    assert.deepEqual(got.subarray(0, 100), Buffer.alloc(100, 2), 'an intact unit is never rolled back');
    await again.handles.closeAll();
  });

  it('takes no pre-image for data never synced, and none twice between syncs', async () => {
    const { s, handles } = await store();
    const d = await s.create(6, 0, undefined, 1);
    await s.write(d, randomBytes(3 * UNIT), 0, 1);
    await s.write(d, randomBytes(100), 10, 2);
    assert.ok(!(await readdir(path.join(dir, 'dirty'))).includes('6.0.pre'), 'nothing durable yet: no pre-image');
    await s.syncInode(6);
    await s.write(d, randomBytes(100), 10, 3);
    const pre = path.join(dir, 'dirty', '6.0.pre');
    const size1 = (await stat(pre)).size;
    await s.write(d, randomBytes(100), 20, 4);
    const size2 = (await stat(pre)).size;
    assert.equal(size2, size1, 'the unit is not durable any more after its first rewrite');
    await s.syncInode(6);
    assert.equal((await stat(pre)).size, 0, 'a sync ends the need for pre-images');
    await handles.closeAll();
  });
});
