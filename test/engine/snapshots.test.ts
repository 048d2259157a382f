/**
 * Snapshots in process (meta/snapshots.ts, the engine's snapshot calls): a snapshot keeps the
 * chunks the live tree dropped alive through garbage collection and reads back byte-identical
 * through its read-only filesystem; deleting it frees them after the grace period; the
 * schedule takes automatic snapshots and expires the oldest of each kind, never a manual one;
 * a damaged snapshot stops garbage collection (nothing deleted) and is named by the checker.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkFilespace } from '../../electron/engine/check';
import { SNAPSHOT_TREE_PREFIX, SnapshotStore, schedulePlan } from '../../electron/engine/meta/snapshots';
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
    const before = new Set(await chunkObjects(space.store));
    const snap = await m.engine.createSnapshot('before');
    assert.equal(snap.files, 2);
    assert.equal(snap.bytes, a.length + b.length);

    await writeFile(m.fs, '/a.bin', random(CS));
    await m.fs.unlink('/b.bin');
    await m.sync();
    // Two passes past a grace of 0: anything unreferenced would be marked, then deleted.
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const kept = new Set(await chunkObjects(space.store));
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
    const after = new Set(await chunkObjects(space.store));
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
    const m2 = await bed.mount(space, { cacheDir: m.cacheDir, settings: { gcGraceMs: 0 } });
    const chunks = await chunkObjects(space.store);
    await assert.rejects(m2.engine.collectGarbage(), new RegExp(`snapshot ${snap.id}.*garbage collection does not run`));
    assert.deepEqual(await chunkObjects(space.store), chunks, 'nothing was deleted');
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header });
    assert.ok(
      report.problems.some((p) => p.includes(`snapshot ${snap.id}`) && /damaged/.test(p)),
      report.problems.join('\n'),
    );
    await m2.close();
  });
});
