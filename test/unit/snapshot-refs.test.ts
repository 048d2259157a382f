/**
 * SnapshotRefs (meta/snapshots.ts): the chunk names every snapshot holds, counted by page in a
 * SQLite database of their own. A page two snapshots name is read and counted once and stays
 * until neither names it; a count that fails part way, a snapshot being taken and a count not
 * yet done make every name count as referenced (GC deletes nothing a snapshot might name).
 * The database is kept across a clean close only, and brought up to the bucket's list of
 * snapshots at the next `ready`. The snapshots come from a stand-in for the bucket's SnapshotStore (pages as lists of records).
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { InodeRecord } from '../../electron/engine/meta/pages';
import { openDatabase } from '../../electron/engine/meta/db';
import { SnapshotRecord, SnapshotRefs } from '../../electron/engine/meta/snapshots';

const name = (c: string) => c.repeat(64);
const file = (ino: number, size: number, ...chunks: string[]): InodeRecord => ({
  ino,
  kind: 'file',
  mode: 0o644,
  uid: 0,
  gid: 0,
  size,
  atimeMs: 0,
  mtimeMs: 0,
  ctimeMs: 0,
  chunks: chunks.map((c) => [name(c), 10] as [string, number]),
});

/** Snapshots by id, each a list of pages (key -> records); counts the pages read. */
class Bucket {
  readonly snaps = new Map<string, Map<string, InodeRecord[]>>();
  readonly reads: string[] = [];
  failAfter: number | undefined;
  /** Awaited before each page of a snapshot but its first (a count held part way). */
  gate: Promise<void> | undefined;
  /** Called when a count reaches the gate. */
  onGate: (() => void) | undefined;

  list(): Promise<{ records: SnapshotRecord[]; damaged: string[] }> {
    const records = [...this.snaps.keys()].map((id) => ({
      id,
      createdAt: 0,
      label: '',
      kind: 'manual' as const,
      seq: 1,
      files: 0,
      bytes: 0,
    }));
    return Promise.resolve({ records, damaged: [] });
  }

  pagesOf(id: string): Promise<string[]> {
    return Promise.resolve([...(this.snaps.get(id)?.keys() ?? [])]);
  }

  async recordsOf(
    id: string,
    each: (page: string, records: readonly InodeRecord[] | undefined) => void | Promise<void>,
    skip: (page: string) => boolean = () => false,
  ): Promise<void> {
    let n = 0;
    let first = true;
    for (const [key, records] of this.snaps.get(id) ?? []) {
      if (!first && this.gate) {
        this.onGate?.();
        await this.gate;
      }
      first = false;
      if (skip(key)) {
        await each(key, undefined);
        continue;
      }
      if (this.failAfter !== undefined && n++ >= this.failAfter) throw new Error('no answer from the bucket');
      this.reads.push(key);
      await each(key, records);
    }
  }
}

describe('the chunk names snapshots hold (SnapshotRefs)', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });
  const refsFile = async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'snaprefs-'));
    dirs.push(dir);
    return path.join(dir, 'refs.db');
  };
  const refsOver = async (bucket: Bucket) => new SnapshotRefs(bucket, await refsFile());
  /** s1 and s2 share page p-shared (names a, b); s1 alone names c (p-old), s2 alone d (p-new). */
  const twoSnapshots = () => {
    const bucket = new Bucket();
    const shared = [file(2, 100, 'a', 'b')];
    bucket.snaps.set(
      's1',
      new Map([
        ['p-shared', shared],
        ['p-old', [file(3, 7, 'c')]],
      ]),
    );
    bucket.snaps.set(
      's2',
      new Map([
        ['p-shared', shared],
        ['p-new', [file(4, 1, 'd')]],
      ]),
    );
    return bucket;
  };

  it('counts a page two snapshots name once, and keeps its names until neither names it', async () => {
    const bucket = new Bucket();
    const shared = [file(2, 100, 'a', 'b'), file(3, 5, 'b')];
    bucket.snaps.set(
      's1',
      new Map([
        ['p-shared', shared],
        ['p-old', [file(4, 7, 'c')]],
      ]),
    );
    const refs = await refsOver(bucket);
    await refs.ready();
    assert.equal(refs.has(name('a')), true);
    assert.equal(refs.has(name('c')), true);
    assert.equal(refs.has(name('d')), false, 'a name no snapshot holds');

    bucket.snaps.set(
      's2',
      new Map([
        ['p-shared', shared],
        ['p-new', [file(5, 1, 'd')]],
      ]),
    );
    bucket.reads.length = 0;
    assert.deepEqual(await refs.add('s2'), { files: 3, bytes: 106 });
    assert.deepEqual(bucket.reads, ['p-new'], 'the shared page is not read again');
    assert.equal(refs.has(name('d')), true);

    await refs.remove('s1');
    assert.equal(refs.has(name('a')), true, 'still named by s2 through the shared page');
    assert.equal(refs.has(name('b')), true);
    assert.equal(refs.has(name('c')), false, 'only s1 named it');
    await refs.remove('s2');
    for (const c of ['a', 'b', 'd']) assert.equal(refs.has(name(c)), false);
    refs.close();
  });

  it('answers "referenced" for every name while a snapshot is taken, before the count, and after a count that failed', async () => {
    const bucket = new Bucket();
    bucket.snaps.set('s1', new Map([['p1', [file(2, 1, 'a')]]]));
    const refs = await refsOver(bucket);
    assert.equal(refs.has(name('z')), true, 'not counted yet');
    await refs.ready();
    assert.equal(refs.has(name('z')), false);
    const release = refs.hold();
    assert.equal(refs.has(name('z')), true, 'held while a snapshot is taken');
    release();
    release();
    assert.equal(refs.has(name('z')), false, 'a release counts once');

    bucket.snaps.set(
      's2',
      new Map([
        ['p2', [file(3, 1, 'b')]],
        ['p3', [file(4, 1, 'c')]],
      ]),
    );
    bucket.failAfter = 1;
    await assert.rejects(refs.add('s2'), /no answer/);
    assert.equal(refs.has(name('z')), true, 'after a failed count nothing is known');
    assert.equal(refs.has(name('a')), true);
    bucket.failAfter = undefined;
    await refs.ready();
    assert.equal(refs.has(name('a')), true, 'counted again from the bucket');
    assert.equal(refs.has(name('c')), true);
    assert.equal(refs.has(name('z')), false);
    refs.close();
  });

  it('keeps what it counted across a clean close, and brings it up to the bucket at the next ready', async () => {
    const bucket = twoSnapshots();
    const file1 = await refsFile();
    const first = new SnapshotRefs(bucket, file1);
    await first.ready();
    first.close();

    // While the engine was stopped another machine deleted s1 and took s3.
    bucket.snaps.delete('s1');
    bucket.snaps.set('s3', new Map([['p-3', [file(5, 3, 'e')]]]));
    bucket.reads.length = 0;
    const again = new SnapshotRefs(bucket, file1);
    assert.equal(again.has(name('z')), true, 'not ready yet: every name counts');
    await again.ready();
    assert.deepEqual(bucket.reads, ['p-3'], 'only the snapshot taken meanwhile is read');
    assert.equal(again.has(name('c')), false, 'named only by the snapshot deleted meanwhile');
    for (const c of ['a', 'b', 'd', 'e']) assert.equal(again.has(name(c)), true, `${c} is still named`);
    assert.equal(again.has(name('z')), false);
    assert.deepEqual(await again.add('s2'), { files: 2, bytes: 101 }, "a kept snapshot's totals");
    assert.deepEqual(bucket.reads, ['p-3']);
    again.close();
  });

  it('counts everything from the bucket again after a stop that was not clean, a failed count, or a file it cannot use', async () => {
    const bucket = twoSnapshots();
    const allPages = ['p-shared', 'p-old', 'p-new'];
    const readsOfReady = async (file: string) => {
      bucket.reads.length = 0;
      const refs = new SnapshotRefs(bucket, file);
      await refs.ready();
      for (const c of ['a', 'b', 'c', 'd']) assert.equal(refs.has(name(c)), true, `${c} is named`);
      assert.equal(refs.has(name('z')), false);
      return { refs, reads: [...bucket.reads].sort() };
    };

    // A kill: the first engine never closes its database.
    const killed = await refsFile();
    const first = new SnapshotRefs(bucket, killed);
    await first.ready();
    const afterKill = await readsOfReady(killed);
    assert.deepEqual(afterKill.reads, [...allPages].sort(), 'counted anew after a kill');
    afterKill.refs.close();
    first.close();

    // A count that failed part way, then a clean close.
    const failed = await refsFile();
    const second = new SnapshotRefs(bucket, failed);
    bucket.failAfter = 1;
    await assert.rejects(second.ready(), /no answer/);
    bucket.failAfter = undefined;
    second.close();
    const afterFailure = await readsOfReady(failed);
    assert.deepEqual(afterFailure.reads, [...allPages].sort(), 'counted anew after a failed count');
    afterFailure.refs.close();

    // A stop in the middle of a count.
    const cut = await refsFile();
    const third = new SnapshotRefs(bucket, cut);
    let letGo!: () => void;
    bucket.gate = new Promise((resolve) => (letGo = resolve));
    const atGate = new Promise<void>((resolve) => (bucket.onGate = resolve));
    const counting = third.ready().then(
      () => 'counted',
      () => 'failed',
    );
    await atGate;
    third.close();
    letGo();
    bucket.gate = undefined;
    assert.equal(await counting, 'failed', 'a count goes no further once its database is closed');
    const afterCut = await readsOfReady(cut);
    assert.deepEqual(afterCut.reads, [...allPages].sort(), 'counted anew after a stop in the middle of a count');
    afterCut.refs.close();

    // Not a database, and a database of another layout (an older release's scratch file).
    const garbage = await refsFile();
    await fsp.writeFile(garbage, Buffer.alloc(8192, 7));
    const fromGarbage = await readsOfReady(garbage);
    assert.deepEqual(fromGarbage.reads, [...allPages].sort());
    fromGarbage.refs.close();
    const older = await refsFile();
    const made = new SnapshotRefs(bucket, older);
    await made.ready();
    made.close();
    const db = openDatabase(older, { readOnly: false, mustExist: true });
    db.exec('DROP TABLE state');
    db.close();
    const fromOlder = await readsOfReady(older);
    assert.deepEqual(fromOlder.reads, [...allPages].sort());
    fromOlder.refs.close();
  });
});
