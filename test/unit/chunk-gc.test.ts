// Garbage collection of unreferenced chunks: deleted only after staying unreferenced for the
// grace period, never while referenced or in use by an upload, and never when reused since
// being marked.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { chunkKey } from '../../electron/engine/chunk/format';
import { ChunkCollector } from '../../electron/engine/gc';
import { MemoryStore } from '../../electron/engine/store/memory';

const name = (i: number) => i.toString(16).padStart(40, '0');

/** A bucket holding `n` chunks named name(0)…, or the chunks `names`. */
async function setup(n: number | readonly string[]) {
  const store = new MemoryStore();
  const names = typeof n === 'number' ? Array.from({ length: n }, (_, i) => name(i)) : n;
  for (const [i, k] of names.entries()) await store.put(chunkKey(k), Buffer.from([i]));
  const refs = new Map<string, number>();
  const c = { t: 1_000_000 };
  const gc = new ChunkCollector(
    store,
    randomBytes(32),
    () => refs,
    () => 60_000,
    () => c.t,
  );
  const present = async () => (await store.list('chunks/')).map((k) => k.slice(k.lastIndexOf('/') + 1)).sort();
  return { store, refs, c, gc, present };
}

describe('chunk garbage collection', () => {
  it('deletes an unreferenced chunk only once it stayed unreferenced past the grace period', async () => {
    const { refs, c, gc, present } = await setup(4);
    refs.set(name(0), 1);
    refs.set(name(1), 2);
    let r = await gc.run();
    assert.deepEqual({ deleted: r.deleted, marked: r.marked }, { deleted: 0, marked: 2 });
    c.t += 30_000;
    r = await gc.run();
    assert.equal(r.deleted, 0, 'still inside the grace period');
    c.t += 30_000;
    r = await gc.run();
    assert.equal(r.deleted, 2);
    assert.deepEqual(await present(), [name(0), name(1)]);
  });

  it('lists the bucket a sixteenth at a time, never whole, and still sees every chunk', async () => {
    const names = Array.from({ length: 200 }, () => randomBytes(20).toString('hex'));
    const { store, refs, c, gc, present } = await setup(names);
    for (const n of names.filter((_, i) => i % 2 === 0)) refs.set(n, 1);
    const asked: string[] = [];
    const list = store.list.bind(store);
    store.list = (prefix: string) => {
      asked.push(prefix);
      return list(prefix);
    };
    let r = await gc.run();
    assert.deepEqual(
      asked.filter((p) => p.startsWith('chunks')),
      [...'0123456789abcdef'].map((d) => `chunks/${d}`),
    );
    assert.deepEqual(
      { scanned: r.scanned, referenced: r.referenced, marked: r.marked },
      { scanned: 200, referenced: 100, marked: 100 },
    );
    c.t += 61_000;
    r = await gc.run();
    assert.equal(r.deleted, 100);
    assert.deepEqual(await present(), [...refs.keys()].sort());
  });

  it('keeps a chunk that became referenced again, and one an upload is using', async () => {
    const { refs, c, gc, present } = await setup(3);
    await gc.run();
    refs.set(name(0), 1); // committed again (dedup)
    await gc.acquire(name(1)); // an upload is between its PUT and its commit
    c.t += 61_000;
    const r = await gc.run();
    assert.equal(r.deleted, 1);
    assert.deepEqual(await present(), [name(0), name(1)]);
    gc.release(name(1));
  });

  it('a chunk used since it was marked starts its grace period again', async () => {
    const { c, gc, present } = await setup(1);
    await gc.run();
    c.t += 50_000;
    await gc.acquire(name(0));
    gc.release(name(0)); // used, then its reference went away again
    c.t += 20_000;
    assert.equal((await gc.run()).deleted, 0);
    c.t += 61_000;
    assert.equal((await gc.run()).deleted, 1);
    assert.deepEqual(await present(), []);
  });

  it('an upload of a chunk being deleted waits for the delete, so its PUT lands after it', async () => {
    const { store, c, gc } = await setup(1);
    await gc.run();
    c.t += 61_000;
    const order: string[] = [];
    const origDelete = store.deleteMany.bind(store);
    let acquired: Promise<void> | undefined;
    store.deleteMany = async (keys) => {
      acquired = gc.acquire(name(0)).then(() => {
        order.push('upload may PUT');
      });
      await new Promise((r) => setImmediate(r));
      await origDelete(keys);
      order.push('deleted');
    };
    await gc.run();
    await acquired;
    assert.deepEqual(order, ['deleted', 'upload may PUT']);
  });
});
