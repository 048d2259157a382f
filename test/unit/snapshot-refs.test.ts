/**
 * SnapshotRefs (meta/snapshots.ts): the chunk names every snapshot holds, counted by page in a
 * SQLite database of their own. A page two snapshots name is read and counted once and stays
 * until neither names it; a count that fails part way, a snapshot being taken and a count not
 * yet done make every name count as referenced (GC deletes nothing a snapshot might name).
 * The snapshots come from a stand-in for the bucket's SnapshotStore (pages as lists of records).
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import type { InodeRecord } from '../../electron/engine/meta/pages';
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
    for (const [key, records] of this.snaps.get(id) ?? []) {
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
  const refsOver = async (bucket: Bucket) => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'snaprefs-'));
    dirs.push(dir);
    return new SnapshotRefs(bucket, path.join(dir, 'refs.db'));
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
});
