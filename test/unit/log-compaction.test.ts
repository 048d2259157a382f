// Pins down compaction of the metadata log (meta/compaction.ts) against an in-memory store and a
// fake monotonic clock: the mark follows the older kept checkpoint, the header is raised before
// the first mark, nothing is deleted before the grace has passed since the mark was written, a
// mark is never lowered, and a load never reads a segment at or below the mark (a slot there may
// hold a late write of a writer that lost the lease).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { Compactor } from '../../electron/engine/meta/compaction';
import { CKPT_PREFIX, LOG_PREFIX, RemoteMeta, seqKey } from '../../electron/engine/meta/remote';
import { MetaOp, ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { PAGE_PREFIX, PageWriter, isManifest, pageHashKey, pageSeqOf } from '../../electron/engine/meta/pages';
import { SNAPSHOT_TREE_PREFIX, SnapshotStore } from '../../electron/engine/meta/snapshots';

const CS = 64 * 1024;
const W = { id: 'machine-a', epoch: 1 };
const OLD = { id: 'machine-old', epoch: 0 };
const GRACE = 10_000;

const mk = (name: string, ino: number): MetaOp => ({
  t: 'mk',
  parent: ROOT_INO,
  name,
  ino,
  kind: 'file',
  mode: 0o644,
  uid: 1,
  gid: 1,
  ms: ino,
});

/** A log of `n` segments (one file each) with checkpoints at `ckpts`. */
async function bucketWith(n: number, ckpts: number[]): Promise<{ store: MemoryStore; remote: RemoteMeta }> {
  const store = new MemoryStore();
  const remote = new RemoteMeta(store, randomBytes(32));
  const tree = Tree.create(CS, 1, 1, 1);
  if (ckpts.includes(0)) await remote.writeCheckpoint(0, tree.snapshot());
  for (let seq = 1; seq <= n; seq++) {
    const op = mk(`f${seq}`, seq + 1);
    await remote.pushSegment(seq, [op], W);
    tree.apply(op);
    if (ckpts.includes(seq)) await remote.writeCheckpoint(seq, tree.snapshot());
  }
  return { store, remote };
}

function compactor(
  store: MemoryStore,
  remote: RemoteMeta,
  clock: { now: number },
  calls: string[],
  snapshots?: SnapshotStore,
): Compactor {
  return new Compactor({
    ...(snapshots ? { snapshotPages: () => snapshots.namedPages() } : {}),
    store,
    remote,
    writer: () => W,
    beforeWrite: () => Promise.resolve(),
    confirm: () => Promise.resolve(),
    checkpointIfBehind: () => Promise.resolve(),
    flushLocal: async () => void calls.push('flush'),
    beforeFirstMark: async () => void calls.push('format'),
    graceMs: () => GRACE,
    log: () => undefined,
    monotonic: () => clock.now,
  });
}

describe('metadata log compaction', () => {
  it('marks the older kept checkpoint, raises the format first, and deletes only after the grace', async () => {
    const { store, remote } = await bucketWith(12, [0, 5, 10]);
    await remote.pruneCheckpoints();
    const clock = { now: 0 };
    const calls: string[] = [];
    const c = compactor(store, remote, clock, calls);
    assert.deepEqual(await c.tick(), { raisedTo: 5, deletedSegments: 0, deletedCheckpoints: 0 });
    assert.deepEqual(calls, ['flush', 'format'], 'local position durable and header raised before the mark');
    assert.equal((await remote.readCompaction()).mark.upTo, 5);
    clock.now += GRACE - 1;
    assert.deepEqual(await c.tick(), { deletedSegments: 0, deletedCheckpoints: 0 }, 'nothing before the grace');
    assert.equal((await store.list(LOG_PREFIX)).length, 12);
    clock.now += 1;
    assert.deepEqual(await c.tick(), { deletedSegments: 5, deletedCheckpoints: 0 });
    assert.deepEqual(
      await store.list(LOG_PREFIX),
      [6, 7, 8, 9, 10, 11, 12].map((s) => seqKey(LOG_PREFIX, s)),
    );
    assert.deepEqual(await store.list(CKPT_PREFIX), [seqKey(CKPT_PREFIX, 5), seqKey(CKPT_PREFIX, 10)]);
    // The same tree as before, from what is left.
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 12);
    assert.equal(tree.lookup(ROOT_INO, 'f1')?.ino, 2);
    assert.equal(tree.lookup(ROOT_INO, 'f12')?.ino, 13);
    // Nothing new to mark: the next round does nothing; the header is raised only once.
    assert.deepEqual(await c.tick(), { deletedSegments: 0, deletedCheckpoints: 0 });
    assert.deepEqual(calls, ['flush', 'format']);
  });

  it('a restarted writer counts the grace of a mark it finds from when it found it', async () => {
    const { store, remote } = await bucketWith(12, [0, 5, 10]);
    await remote.pruneCheckpoints();
    await remote.raiseCompaction(5, W, await remote.readCompaction());
    const clock = { now: 1_000_000 };
    const c = compactor(store, remote, clock, []);
    assert.deepEqual(await c.tick(), { deletedSegments: 0, deletedCheckpoints: 0 });
    clock.now += GRACE;
    assert.equal((await c.tick()).deletedSegments, 5);
  });

  it('never lowers the mark: a raise from a stale view keeps the higher mark', async () => {
    const { remote } = await bucketWith(12, [0, 5, 10]);
    const stale = await remote.readCompaction();
    await remote.raiseCompaction(10, W, stale);
    const got = await remote.raiseCompaction(5, OLD, stale);
    assert.equal(got.mark.upTo, 10);
    assert.equal((await remote.readCompaction()).mark.upTo, 10);
  });

  it('a load never reads a late segment written into a compacted slot', async () => {
    const { store, remote } = await bucketWith(12, [0, 5, 10]);
    await remote.pruneCheckpoints();
    await remote.raiseCompaction(10, W, await remote.readCompaction());
    await remote.deleteSegmentsThrough(10);
    await store.delete(seqKey(CKPT_PREFIX, 5));
    // A writer that lost the lease long ago writes into the emptied slot 6.
    await remote.pushSegment(6, [mk('stray', 99)], OLD);
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 12);
    assert.equal(tree.lookup(ROOT_INO, 'stray'), undefined);
    assert.equal(tree.lookup(ROOT_INO, 'f6')?.ino, 7);
  });

  it('a load that meets a gap above its checkpoint because the log was compacted meanwhile loads again', async () => {
    const { store, remote } = await bucketWith(12, [0, 10]);
    // As if the loader had read checkpoint 0 and the writer then compacted past it: the
    // checkpoint 0 is still listed (pruned later), but segments 1..10 are gone.
    await remote.raiseCompaction(10, W, await remote.readCompaction());
    await remote.deleteSegmentsThrough(10);
    await store.delete(seqKey(CKPT_PREFIX, 10));
    await assert.rejects(remote.load(CS), /compacted past every checkpoint/, 'no checkpoint covers the mark: it says so');
  });
});

/**
 * A bucket written by a page writer: checkpoint(seq) applies the ops of segment seq (a folder
 * d, then one file in it per segment: a, b, c, e), writes a paged checkpoint and prunes.
 */
function pagedBucket() {
  const store = new MemoryStore();
  const key = randomBytes(32);
  const remote = new RemoteMeta(store, key);
  const writer = new PageWriter(pageHashKey(key));
  const tree = Tree.create(CS, 1, 1, 1);
  const dirOp: MetaOp = { t: 'mk', parent: ROOT_INO, name: 'd', ino: 2, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 1 };
  const inD = (name: string, ino: number): MetaOp => ({ ...dirOp, parent: 2, name, ino, kind: 'file', mode: 0o644, ms: ino });
  const ops: MetaOp[][] = [[dirOp, inD('a', 3)], [inD('b', 4)], [inD('c', 5)], [inD('e', 6)]];
  writer.adopt(undefined);
  const checkpoint = async (seq: number) => {
    for (const op of ops[seq - 1]!) tree.apply(op);
    writer.noteSegment(tree, seq, ops[seq - 1]!);
    assert.ok(await remote.writePagedCheckpoint(writer.plan(tree, seq, undefined)));
    writer.planned();
    await remote.pruneCheckpoints();
  };
  return { store, key, remote, checkpoint };
}

describe('compaction of the pages of paged checkpoints', () => {
  it('deletes a page only once no kept manifest has named it for the grace; leaves named pages and a checkpoint being written alone', async () => {
    const { store, remote, checkpoint } = pagedBucket();
    await checkpoint(1); // pages of / and d at seq 1
    await checkpoint(2); // both rewritten: the seq-1 pages are named by manifest 1 only (kept)
    const clock = { now: 0 };
    const c = compactor(store, remote, clock, []);
    const pages1 = await store.list(PAGE_PREFIX);
    assert.equal(pages1.length, 4);
    await c.tick();
    assert.deepEqual(await store.list(PAGE_PREFIX), pages1, 'all named by a kept manifest');
    await checkpoint(3); // manifest 1 pruned: its pages are named by none
    // A page of a checkpoint being written (above the newest manifest) is not garbage.
    await store.put(`${PAGE_PREFIX}000000000004-cafe0000-0`, Buffer.from('x'));
    await c.tick();
    clock.now += GRACE - 1;
    const round = await c.tick();
    assert.equal(round.deletedPages, undefined, 'nothing before the grace');
    assert.equal((await store.list(PAGE_PREFIX)).length, 7);
    clock.now += 1;
    assert.equal((await c.tick()).deletedPages, 2);
    const left = await store.list(PAGE_PREFIX);
    assert.ok(!left.some((k) => pageSeqOf(k) === 1), left.join(','));
    assert.equal(left.length, 5);
    assert.deepEqual((await remote.load(CS)).tree.lookup(2, 'c')?.ino, 5, 'the newest checkpoint still loads');
  });

  it('keeps the pages a snapshot tree names after no manifest names them, until the snapshot is deleted; keeps every page while a snapshot tree does not open', async () => {
    const { store, key, remote, checkpoint } = pagedBucket();
    const snaps = new SnapshotStore(store, key, CS);
    await checkpoint(1);
    const m1 = await remote.readCheckpoint(seqKey(CKPT_PREFIX, 1));
    assert.ok(m1 && isManifest(m1));
    const id = '20261205-120000-abcd';
    await snaps.writeTree(id, 1, { manifest: m1 });
    await snaps.writeRecord({ id, createdAt: 0, label: '', kind: 'manual', seq: 1, files: 1, bytes: 0 });
    const kept = m1.pages.map((p) => p.key).sort();
    assert.deepEqual([...((await snaps.namedPages()) ?? [])].sort(), kept);
    await checkpoint(2);
    await checkpoint(3); // manifest 1 pruned: its pages are named by the snapshot alone
    const clock = { now: 0 };
    const c = compactor(store, remote, clock, [], snaps);
    await c.tick();
    clock.now += GRACE;
    assert.equal((await c.tick()).deletedPages, undefined, 'the snapshot names them');
    for (const k of kept) assert.ok((await store.head(k)) !== undefined, `page ${k} kept`);
    const back = await snaps.loadTree(id);
    assert.equal(back.lookup(2, 'a')?.ino, 3);
    assert.equal(back.lookup(2, 'b'), undefined, 'the snapshot reads as of its segment');

    // A snapshot tree that does not open may name any page: none is deleted while it is there.
    const bad = '20261205-120001-abcd';
    await store.put(`${SNAPSHOT_TREE_PREFIX}${bad}`, randomBytes(64));
    await snaps.delete(id);
    await c.tick();
    clock.now += GRACE;
    assert.equal((await c.tick()).deletedPages, undefined, 'an unreadable snapshot tree keeps every page');
    await store.delete(`${SNAPSHOT_TREE_PREFIX}${bad}`);
    await c.tick();
    clock.now += GRACE;
    assert.equal((await c.tick()).deletedPages, kept.length, 'once deleted, its pages go after the grace');
    for (const k of kept) assert.equal(await store.head(k), undefined);
    assert.equal((await remote.load(CS)).tree.lookup(2, 'c')?.ino, 5, 'the newest checkpoint still loads');
  });
});
