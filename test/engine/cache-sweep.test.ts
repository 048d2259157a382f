/**
 * The clean cache lets go of chunks nothing reads any more (vfs.ts `freeUnreferencedCache`),
 * and each sweep weighs what changed since the last one, not every cached chunk: a deletion, a
 * rewrite, a truncation, another machine's change and a chunk that entered the cache unnamed
 * are each freed, with about as many chunks weighed as they concern, while the live files'
 * chunks stay cached.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EngineBed, Mounted, patchFile, random, readFile, until, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

/** Totals of every sweep of `m`'s VFS from now on, the engine's own (every second) included. */
function sweeps(m: Mounted): { freed: number; weighed: number; reset(): void } {
  const vfs = m.engine.vfs;
  const sweep = vfs.freeUnreferencedCache.bind(vfs);
  const totals = {
    freed: 0,
    weighed: 0,
    reset() {
      totals.freed = 0;
      totals.weighed = 0;
    },
  };
  vfs.freeUnreferencedCache = async () => {
    const r = await sweep();
    totals.freed += r.freed;
    totals.weighed += r.weighed;
    return r;
  };
  return totals;
}

function chunkNames(m: Mounted, name: string): string[] {
  const tree = m.engine.vfs['meta'].tree;
  const inode = tree.lookup(1, name);
  assert.ok(inode, `${name} exists`);
  return (tree.get(inode.ino)!.chunks ?? []).flatMap((c) => (c ? [c[0]] : []));
}

function cached(m: Mounted, names: readonly string[]): number {
  const cache = m.engine.vfs['cache'];
  return names.filter((n) => cache.has(n)).length;
}

describe('freeing the clean cache of chunks nothing reads', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('weighs what a deletion, a rewrite, a truncation or an unnamed new chunk concerns, not the whole cache', async () => {
    const m = await bed.mount(await bed.filespace({ chunkSize: CS }));
    const totals = sweeps(m);
    const kept = random(30 * CS);
    await writeFile(m.fs, '/kept', kept);
    await writeFile(m.fs, '/gone', random(20 * CS));
    await m.sync();
    const keptNames = chunkNames(m, 'kept');
    const goneNames = chunkNames(m, 'gone');
    assert.equal(cached(m, keptNames), 30);
    assert.equal(cached(m, goneNames), 20);
    await m.engine.vfs.freeUnreferencedCache();
    totals.reset();

    await m.fs.unlink('/gone');
    await m.engine.vfs.freeUnreferencedCache();
    assert.equal(cached(m, goneNames), 0, "the deleted file's chunks left the cache");
    assert.equal(totals.freed, 20);
    assert.ok(totals.weighed >= 20 && totals.weighed <= 22, `weighed ${totals.weighed} of 50 cached chunks`);
    assert.equal(cached(m, keptNames), 30, "the live file's chunks stay");

    // A rewrite of one chunk, uploaded: the replaced chunk goes, its successor stays.
    totals.reset();
    await patchFile(m.fs, '/kept', 5 * CS + 10, Buffer.from('changed'));
    kept.write('changed', 5 * CS + 10);
    await m.sync();
    await m.engine.vfs.freeUnreferencedCache();
    const now = chunkNames(m, 'kept');
    assert.notEqual(now[5], keptNames[5]);
    assert.equal(cached(m, [keptNames[5]!]), 0, 'the replaced chunk left the cache');
    assert.equal(cached(m, now), 30);
    assert.equal(totals.freed, 1);
    assert.ok(totals.weighed <= 3, `weighed ${totals.weighed}`);

    // A truncation cuts ten chunks away.
    totals.reset();
    await m.fs.truncate('/kept', 20 * CS);
    await m.sync();
    await m.engine.vfs.freeUnreferencedCache();
    assert.equal(cached(m, now.slice(20)), 0);
    assert.equal(cached(m, now.slice(0, 20)), 20);
    assert.equal(totals.freed, 10);
    assert.ok(totals.weighed >= 10 && totals.weighed <= 12, `weighed ${totals.weighed}`);
    assert.deepEqual(await readFile(m.fs, '/kept'), kept.subarray(0, 20 * CS));

    // A chunk that enters the cache while nothing names it (an upload whose file went meanwhile).
    totals.reset();
    const stray = 'f'.repeat(64);
    await m.engine.vfs['cache'].put(stray, random(1000));
    assert.equal(cached(m, [stray]), 1);
    await m.engine.vfs.freeUnreferencedCache();
    assert.equal(cached(m, [stray]), 0);
    assert.equal(totals.freed, 1);
    assert.equal(totals.weighed, 1);
    await m.close();
  });

  it("on a follower: weighs the chunks another machine's change let go of", async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const w = await bed.mount(space);
    await writeFile(w.fs, '/a', random(10 * CS));
    const b = random(10 * CS);
    await writeFile(w.fs, '/b', b);
    await w.sync();
    const f = await bed.mount(space, { mode: 'read', settings: { followIntervalMs: 100 } });
    const totals = sweeps(f);
    await readFile(f.fs, '/a');
    assert.deepEqual(await readFile(f.fs, '/b'), b);
    const aNames = chunkNames(f, 'a');
    const bNames = chunkNames(f, 'b');
    await until('the follower to cache both files', async () => cached(f, [...aNames, ...bNames]) === 20 || undefined);
    await f.engine.vfs.freeUnreferencedCache();
    totals.reset();

    await w.fs.unlink('/a');
    await w.sync();
    await until('the follower to let go of the deleted file', async () => {
      await f.engine.vfs.freeUnreferencedCache();
      return cached(f, aNames) === 0 || undefined;
    });
    assert.equal(cached(f, bNames), 10);
    assert.equal(totals.freed, 10);
    assert.ok(totals.weighed >= 10 && totals.weighed <= 12, `weighed ${totals.weighed} of 20 cached chunks`);
    await f.close();
    await w.close();
  });
});
