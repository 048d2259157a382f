/**
 * Snapshots in process (meta/snapshots.ts, the engine's snapshot calls): a snapshot keeps the
 * chunks the live tree dropped alive through garbage collection and reads back byte-identical
 * through its read-only filesystem; deleting it frees them after the grace period; the
 * schedule takes automatic snapshots and expires the oldest of each kind, never a manual one;
 * a damaged snapshot stops garbage collection (nothing deleted) on a machine that counts it, and
 * is named by the checker; a machine that counted it before the damage and stopped cleanly keeps
 * that count, so its collection runs and keeps every chunk the snapshot names.
 * A snapshot keeps its tree as the manifest of a paged checkpoint (format 6): a later one reads
 * only the pages that changed, and one written as a whole tree (before format 6) still reads
 * and keeps its chunks.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkFilespace } from '../../electron/engine/check';
import { FORMAT_SNAPSHOT_PAGES, HEADER_KEY } from '../../electron/engine/filespace';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import {
  BROWSE_DIR,
  LISTING_LEFT_MS,
  LISTING_PREFIX,
  ORPHAN_TREE_GRACE_MS,
  SNAPSHOT_TREE_PREFIX,
  SnapshotStore,
  chunksOf,
  newSnapshotId,
  schedulePlan,
  snapshotIdTime,
} from '../../electron/engine/meta/snapshots';
import { snapshotsIn } from '../../electron/host/snapshots';
import { MemoryStore } from '../../electron/engine/store/memory';
import { PutOptions, StoreError } from '../../electron/engine/store/types';
import { EngineBed, chunkObjects, expectContent, failsWith, random, readFile, until, writeFile } from '../helpers/engineBed';

/** A bucket whose answer to the next snapshot record's PUT is lost after the record was written (a timeout). */
class LostAnswerStore extends MemoryStore {
  loseNextRecordAnswer = false;

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const etag = await super.put(key, body, options);
    if (this.loseNextRecordAnswer && key.startsWith('meta/snapshots/')) {
      this.loseNextRecordAnswer = false;
      throw new StoreError('Timeout', `no answer to the PUT of ${key}`);
    }
    return etag;
  }
}

/** A bucket that counts the GETs of metadata pages. */
class PageCountingStore extends MemoryStore {
  pageGets = 0;

  override async get(key: string, options?: Parameters<MemoryStore['get']>[1]): ReturnType<MemoryStore['get']> {
    if (key.startsWith('meta/page/')) this.pageGets++;
    return super.get(key, options);
  }
}

const CS = 64 * 1024;
const HOUR = 3600_000;

describe('snapshots (in process)', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('keeps the chunks a snapshot names through GC, reads them back, and frees them once it is deleted', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    const a = random(3 * CS + 100);
    const b = random(CS / 2);
    await writeFile(m.fs, '/a.bin', a);
    await writeFile(m.fs, '/b.bin', b);
    await m.sync();
    const before = new Set(await chunkObjects(space.store, space.keys));
    const snap = await m.engine.createSnapshot('before');
    assert.equal(snap.files, 2);
    assert.equal(snap.bytes, a.length + b.length);

    await writeFile(m.fs, '/a.bin', random(CS));
    await m.fs.unlink('/b.bin');
    await m.sync();
    // Two passes past a grace of 0: anything unreferenced would be marked, then deleted.
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const kept = new Set(await chunkObjects(space.store, space.keys));
    for (const k of before) assert.ok(kept.has(k), `chunk ${k} named by the snapshot was deleted`);

    const sfs = await m.engine.snapshotFs(snap.id);
    await expectContent(sfs, '/a.bin', a, CS, 'the snapshot');
    await expectContent(sfs, '/b.bin', b, CS, 'the snapshot');
    assert.deepEqual(sfs.readdir('/').sort(), ['.', '..', 'a.bin', 'b.bin']);
    assert.equal(await failsWith(() => sfs.open('/a.bin', 2)), 'EROFS');
    assert.equal(await failsWith(() => sfs.mkdir()), 'EROFS');

    await m.engine.deleteSnapshot(snap.id);
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const after = new Set(await chunkObjects(space.store, space.keys));
    const freed = [...before].filter((k) => !after.has(k));
    assert.ok(freed.length >= 4, `the chunks only the snapshot named are deleted (freed ${freed.length})`);
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header });
    assert.deepEqual(report.problems, []);
    assert.equal((await readFile(m.fs, '/a.bin')).length, CS);
    await assert.rejects(m.engine.deleteSnapshot(snap.id), /there is no snapshot/);
    await m.close();
  });

  it('keeps the chunks of a snapshot whose record was written though its PUT got no answer', async () => {
    const store = new LostAnswerStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    const a = random(2 * CS + 10);
    await writeFile(m.fs, '/a.bin', a);
    await m.sync();
    store.loseNextRecordAnswer = true;
    await assert.rejects(m.engine.createSnapshot('maybe'), /no answer/);
    const snaps = new SnapshotStore(space.store, space.keys.metaKey, CS, space.header);
    const [record] = (await snaps.list()).records;
    assert.ok(record, 'the record reached the bucket');

    await m.fs.unlink('/a.bin');
    await m.sync();
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header });
    assert.deepEqual(report.problems, [], 'a snapshot in the bucket names only chunks the bucket has');
    await expectContent(await m.engine.snapshotFs(record.id), '/a.bin', a, CS, 'the snapshot');
    await m.close();
  });

  it('keeps the chunks of a file open in a snapshot mount in the cache while the live tree no longer names them', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const a = random(2 * CS);
    await writeFile(m.fs, '/a.bin', a);
    await m.sync();
    const snap = await m.engine.createSnapshot('');
    await m.fs.unlink('/a.bin');
    await m.sync();
    const sfs = await m.engine.snapshotFs(snap.id);
    const fh = sfs.open('/a.bin', 0);
    const buf = Buffer.alloc(1000);
    const downloaded = () => m.engine.stats().downloadedBytes;
    // Once the chunk is in the cache, another read of it downloads nothing.
    await until('the chunk to be in the cache', async () => {
      const before = downloaded();
      await sfs.read(fh, buf, 1000, 0);
      return downloaded() === before;
    });
    // The live mount sweeps chunks its tree does not name: this one is read here, so it stays.
    m.engine.vfs.noteDirtyFreed();
    await m.engine.vfs.freeUnreferencedCache();
    const before = downloaded();
    await sfs.read(fh, buf, 1000, 5000);
    assert.equal(downloaded(), before, 'the open snapshot file read its chunk again from the bucket');
    assert.deepEqual(buf, a.subarray(5000, 6000));
    await sfs.release(fh);
    m.engine.releaseSnapshotFs(sfs);
    // Once nothing reads it through the snapshot, the live mount lets it go.
    const cache = m.engine.vfs['cache'];
    const names = cache.names();
    await until('the chunk read only through the snapshot to leave the cache', async () => {
      await m.engine.vfs.freeUnreferencedCache();
      return cache.names().length < names.length || undefined;
    });
    await m.close();
  });

  it('applies the schedule: takes what is due, expires the oldest automatic ones, never a manual one', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', random(100));
    const manual = await m.engine.createSnapshot('mine', 'manual', Date.now() + 60_000, Date.UTC(2026, 0, 1));
    await m.engine.setSnapshotSchedule({ hourly: 2, daily: 1 });
    const t0 = Date.UTC(2026, 0, 2);
    const snaps = new SnapshotStore(space.store, space.keys.metaKey, CS, space.header);
    const kinds = async () => (await snaps.list()).records.map((r) => `${r.kind}@${(r.createdAt - t0) / HOUR}`).sort();

    await m.engine.applySnapshotSchedule(t0);
    assert.deepEqual(await kinds(), ['daily@0', 'hourly@0', 'manual@-24']);
    await m.engine.applySnapshotSchedule(t0 + HOUR / 2); // nothing due yet
    assert.deepEqual(await kinds(), ['daily@0', 'hourly@0', 'manual@-24']);
    await m.engine.applySnapshotSchedule(t0 + HOUR);
    await m.engine.applySnapshotSchedule(t0 + 2 * HOUR);
    await m.engine.applySnapshotSchedule(t0 + 3 * HOUR);
    assert.deepEqual(await kinds(), ['daily@0', 'hourly@2', 'hourly@3', 'manual@-24']);
    await m.engine.applySnapshotSchedule(t0 + 24 * HOUR);
    assert.deepEqual(await kinds(), ['daily@24', 'hourly@24', 'hourly@3', 'manual@-24']);
    assert.ok(
      (await snaps.list()).records.some((r) => r.id === manual.id),
      'the manual snapshot is never expired',
    );
    await m.close();
  });

  it('deletes a snapshot tree without a record once its id is a day old, and no other', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { browseKeepMs: 20 });
    await writeFile(m.fs, '/f', random(CS + 7));
    const kept = await m.engine.createSnapshot('kept');
    // A deletion that stopped between its two deletes: the record gone, the tree left.
    const half = await m.engine.createSnapshot('half');
    await space.store.delete(`meta/snapshots/${half.id}`);
    // A creation that stopped between its two writes, long ago: a tree and no record.
    const old = '20200101-000000-abcd';
    await space.store.put(`${SNAPSHOT_TREE_PREFIX}${old}`, (await space.store.get(`${SNAPSHOT_TREE_PREFIX}${half.id}`))!.body);
    const trees = async () =>
      (await space.store.list(SNAPSHOT_TREE_PREFIX)).map((k) => k.slice(SNAPSHOT_TREE_PREFIX.length)).sort();
    assert.deepEqual(await trees(), [old, kept.id, half.id].sort());
    const t = Date.UTC(2026, 11, 5, 13, 4, 59, 700);
    assert.equal(snapshotIdTime(newSnapshotId(t)), Date.UTC(2026, 11, 5, 13, 4, 59), "an id's time, to the second");

    const now = Date.now();
    await m.engine.applySnapshotSchedule(now);
    assert.deepEqual(await trees(), [kept.id, half.id].sort(), 'the old tree without a record went, the young one stays');
    await m.engine.applySnapshotSchedule(now + ORPHAN_TREE_GRACE_MS / 2);
    assert.deepEqual(await trees(), [kept.id, half.id].sort(), 'looked for at most once an hour');
    await m.engine.applySnapshotSchedule(now + ORPHAN_TREE_GRACE_MS + HOUR);
    assert.deepEqual(await trees(), [kept.id], 'a day on, the other one too; a snapshot with its record is kept');
    const listed = await m.engine.listSnapshots();
    assert.deepEqual(
      listed.snapshots.map((r) => r.id),
      [kept.id],
    );
    const fs = await m.engine.snapshotFs(kept.id);
    assert.equal(fs.getattr('/f').size, CS + 7, 'the kept snapshot still reads');
    m.engine.releaseSnapshotFs(fs);
    const browsed = path.join(m.cacheDir, BROWSE_DIR);
    await until('the browsed tree to go once kept its time', async () => (await fsp.readdir(browsed)).length === 0);
    await m.close();
  });

  it('a kept browse tree is not used once the snapshot left the bucket', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', random(100));
    const snap = await m.engine.createSnapshot('gone soon');
    m.engine.releaseSnapshotFs(await m.engine.snapshotFs(snap.id));
    const browsed = path.join(m.cacheDir, BROWSE_DIR);
    assert.equal((await fsp.readdir(browsed)).length, 1, 'kept');
    // Deleted by another machine: this one's kept tree knows nothing of it.
    await space.store.delete(`meta/snapshots/${snap.id}`);
    await assert.rejects(m.engine.snapshotFs(snap.id), new RegExp(`there is no snapshot ${snap.id}`));
    await until('the kept tree to go', async () => (await fsp.readdir(browsed)).length === 0);
    await m.close();
  });

  it('plans retention per kind and leaves manual snapshots alone', () => {
    const rec = (kind: 'manual' | 'hourly' | 'daily', h: number) => ({
      id: `x${kind}${h}`,
      createdAt: h * HOUR,
      label: '',
      kind,
      seq: 1,
      files: 0,
      bytes: 0,
    });
    const records = [rec('manual', 0), rec('manual', 1), rec('hourly', 1), rec('hourly', 2), rec('hourly', 3)];
    const plan = schedulePlan(records, { hourly: 2, daily: 0 }, 3.5 * HOUR);
    assert.deepEqual(plan.due, []);
    assert.deepEqual(
      plan.expired.map((r) => r.id),
      ['xhourly1'],
    );
    const due = schedulePlan(records, { hourly: 2, daily: 0 }, 4 * HOUR);
    assert.deepEqual(due.due, ['hourly']);
    assert.deepEqual(
      due.expired.map((r) => r.id),
      ['xhourly2', 'xhourly1'],
    );
    assert.deepEqual(schedulePlan(records, { hourly: 0, daily: 0 }, 100 * HOUR), { due: [], expired: [] });
  });

  it('a damaged snapshot stops garbage collection and is named by the checker', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    await writeFile(m.fs, '/a', random(2 * CS));
    const snap = await m.engine.createSnapshot('x');
    await m.fs.unlink('/a');
    await m.sync();
    const key = `${SNAPSHOT_TREE_PREFIX}${snap.id}`;
    const got = (await space.store.get(key))!;
    got.body.writeUInt8(got.body.readUInt8(got.body.length - 1) ^ 1, got.body.length - 1);
    await space.store.put(key, got.body);
    await m.close();
    const chunks = await chunkObjects(space.store, space.keys);
    // The machine that counted the snapshot before the damage keeps its count across its clean
    // stop: it knows what the snapshot names, and its collection keeps all of it.
    const again = await bed.mount(space, { cacheDir: m.cacheDir, settings: { gcGraceMs: 0 } });
    await again.engine.collectGarbage();
    await again.engine.collectGarbage();
    assert.deepEqual(await chunkObjects(space.store, space.keys), chunks, "the snapshot's chunks stay");
    await again.close();
    // Another machine counts the snapshots from the bucket and finds the damage.
    const m2 = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    await assert.rejects(m2.engine.collectGarbage(), new RegExp(`snapshot ${snap.id}.*garbage collection does not run`));
    const good = await m2.engine.createSnapshot('after');
    const listing = await snapshotsIn(space.store, space.header, space.keys, m2.cacheDir);
    assert.deepEqual(listing.damaged, [snap.id], 'the listing names the damaged one');
    assert.deepEqual(
      listing.snapshots.map((r) => r.id),
      [good.id],
      'and lists the others, counted again after the damaged one failed',
    );
    assert.deepEqual(await chunkObjects(space.store, space.keys), chunks, 'nothing was deleted');
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header });
    assert.ok(
      report.problems.some((p) => p.includes(`snapshot ${snap.id}`) && /damaged/.test(p)),
      report.problems.join('\n'),
    );
    await m2.close();
  });

  it('keeps its tree as a paged checkpoint (format 6): a later snapshot reads only the pages that changed, and deleting one keeps what the other names', async () => {
    const store = new PageCountingStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    const files = new Map<string, Buffer>();
    for (let d = 0; d < 3; d++) {
      m.fs.mkdir(`/d${d}`, 0o755);
      for (let f = 0; f < 5; f++) {
        const data = random(CS + 10 * f + d);
        files.set(`/d${d}/f${f}`, data);
        await writeFile(m.fs, `/d${d}/f${f}`, data);
      }
    }
    await m.sync();
    const s1 = await m.engine.createSnapshot('one');
    assert.equal(s1.files, 15);
    assert.equal(
      s1.bytes,
      [...files.values()].reduce((n, b) => n + b.length, 0),
    );
    const raw = JSON.parse((await store.get(HEADER_KEY))!.body.toString('utf8')) as { format: number };
    assert.ok(raw.format >= FORMAT_SNAPSHOT_PAGES, `the header says snapshots may keep paged trees (format ${raw.format})`);
    const snaps = new SnapshotStore(store, space.keys.metaKey, CS, space.header);
    const pages1 = await snaps.pagesOf(s1.id);
    assert.ok(pages1.length >= 4, `the tree is a manifest of pages (${pages1.length})`);

    const changed = random(2 * CS);
    await writeFile(m.fs, '/d1/f0', changed);
    await m.fs.unlink('/d2/f4');
    await m.sync();
    const chunksOfOne = new Set(await chunkObjects(store, space.keys));
    const before = store.pageGets;
    const s2 = await m.engine.createSnapshot('two');
    const pages2 = await snaps.pagesOf(s2.id);
    const fresh = pages2.filter((p) => !pages1.includes(p));
    assert.ok(fresh.length > 0 && fresh.length < pages2.length, `some pages are new (${fresh.length} of ${pages2.length})`);
    assert.equal(
      store.pageGets - before,
      fresh.length,
      'counting its chunks read only the pages the first snapshot did not name',
    );
    assert.equal(s2.files, 14);

    // The listing's size-unique, counted by page, is what the whole trees give.
    const listing = await snapshotsIn(store, space.header, space.keys, m.cacheDir);
    const one1 = chunksOf(await snaps.loadTree(s1.id));
    const two2 = chunksOf(await snaps.loadTree(s2.id));
    const live = chunksOf((await new RemoteMeta(store, space.keys.metaKey, space.header).load(CS)).tree);
    const only = (a: Map<string, number>, ...others: Map<string, number>[]) =>
      [...a].filter(([n]) => others.every((o) => !o.has(n))).reduce((sum, [, len]) => sum + len, 0);
    const unique = new Map(listing.snapshots.map((r) => [r.id, r.uniqueBytes]));
    assert.ok(only(one1, two2, live) > CS, 'snapshot one holds the old contents alone');
    assert.equal(unique.get(s1.id), only(one1, two2, live));
    assert.equal(unique.get(s2.id), only(two2, one1, live));
    assert.deepEqual(listing.damaged, []);

    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const kept = new Set(await chunkObjects(store, space.keys));
    for (const k of chunksOfOne) assert.ok(kept.has(k), `chunk ${k} a snapshot names was kept`);
    const one = await m.engine.snapshotFs(s1.id);
    const browsed = path.join(m.cacheDir, BROWSE_DIR);
    assert.equal((await fsp.readdir(browsed)).length, 1, "browsing writes the snapshot's tree into a database of its own");
    await expectContent(one, '/d1/f0', files.get('/d1/f0')!, CS, 'snapshot one');
    await expectContent(one, '/d2/f4', files.get('/d2/f4')!, CS, 'snapshot one');
    assert.deepEqual(one.readdir('/d2').sort(), ['.', '..', 'f0', 'f1', 'f2', 'f3', 'f4']);
    // A second browser of the same snapshot, and one after both left, share the tree written once.
    const pagesBefore = store.pageGets;
    const again = await m.engine.snapshotFs(s1.id);
    m.engine.releaseSnapshotFs(one);
    m.engine.releaseSnapshotFs(again);
    const third = await m.engine.snapshotFs(s1.id);
    await expectContent(third, '/d2/f4', files.get('/d2/f4')!, CS, 'snapshot one, browsed again');
    assert.equal(store.pageGets, pagesBefore, 'no page read again');
    assert.equal((await fsp.readdir(browsed)).length, 1, 'one database');
    m.engine.releaseSnapshotFs(third);
    // Deleting the snapshot drops its kept tree at once.

    await m.engine.deleteSnapshot(s1.id);
    assert.deepEqual(await fsp.readdir(browsed), [], "the deleted snapshot's tree is gone");
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const left = new Set(await chunkObjects(store, space.keys));
    assert.ok(
      [...chunksOfOne].some((k) => !left.has(k)),
      'the chunks only snapshot one named were freed',
    );
    const two = await m.engine.snapshotFs(s2.id);
    await expectContent(two, '/d1/f0', changed, CS, 'snapshot two');
    await expectContent(two, '/d0/f3', files.get('/d0/f3')!, CS, 'snapshot two');
    assert.equal(await failsWith(() => two.open('/d2/f4', 0)), 'ENOENT');
    m.engine.releaseSnapshotFs(two);
    assert.equal((await fsp.readdir(browsed)).length, 1, 'kept after its browser left');
    const report = await checkFilespace({ store, keys: space.keys, header: space.header });
    assert.deepEqual(report.problems, []);
    await m.close();
  });

  it('reads a snapshot kept as a whole tree (before format 6) and keeps its chunks through GC', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    const a = random(3 * CS);
    await writeFile(m.fs, '/a', a);
    await m.sync();
    await m.close();
    const { tree, seq } = await new RemoteMeta(space.store, space.keys.metaKey, space.header).load(CS);
    const snaps = new SnapshotStore(space.store, space.keys.metaKey, CS, space.header);
    const id = '20261201-000000-0abc';
    await snaps.writeTree(id, seq, { tree: tree.snapshot() });
    await snaps.writeRecord({
      id,
      createdAt: Date.UTC(2026, 11, 1),
      label: 'old',
      kind: 'manual',
      seq,
      files: 1,
      bytes: a.length,
    });
    assert.deepEqual(await snaps.pagesOf(id), [], 'a whole tree names no pages');

    // What a stopped listing left is removed at the next start; one under way (young) is not.
    const left = path.join(m.cacheDir, `${LISTING_PREFIX}old`);
    const young = path.join(m.cacheDir, `${LISTING_PREFIX}young`);
    await fsp.mkdir(left);
    await fsp.mkdir(young);
    const past = new Date(Date.now() - LISTING_LEFT_MS - 60_000);
    await fsp.utimes(left, past, past);
    const m2 = await bed.mount(space, { cacheDir: m.cacheDir, settings: { gcGraceMs: 0 } });
    assert.equal(await fsp.stat(left).catch(() => undefined), undefined, 'a listing folder left an hour ago is removed');
    assert.ok(await fsp.stat(young), 'a young one stays');
    await fsp.rm(young, { recursive: true });
    const chunks = await chunkObjects(space.store, space.keys);
    await m2.fs.unlink('/a');
    await m2.sync();
    await m2.engine.collectGarbage();
    await m2.engine.collectGarbage();
    const keptChunks = new Set(await chunkObjects(space.store, space.keys));
    for (const k of chunks) assert.ok(keptChunks.has(k), `chunk ${k} the old snapshot names was kept`);
    const sfs = await m2.engine.snapshotFs(id);
    await expectContent(sfs, '/a', a, CS, 'the whole-tree snapshot');
    m2.engine.releaseSnapshotFs(sfs);
    await m2.engine.deleteSnapshot(id);
    await m2.engine.collectGarbage();
    await m2.engine.collectGarbage();
    assert.ok((await chunkObjects(space.store, space.keys)).length < chunks.length, 'its chunks go once it is deleted');
    await m2.close();
  });
});
