/**
 * A mount learns every extended-attribute name in use (so the FUSE addon can answer a getxattr
 * of any other name on its own thread) from the tree's running set, kept in the metadata
 * database's state, not by reading every inode; a database written before the set was kept is
 * read once, and keeps it from then on.
 */

import assert from 'node:assert/strict';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { after, before, describe, it } from 'node:test';
import type { Engine } from '../../electron/engine/engine';
import type { MetaStore } from '../../electron/engine/meta/metastore';
import { openDatabase } from '../../electron/engine/meta/db';
import { TreeDb } from '../../electron/engine/meta/treeDb';
import { EngineBed, writeFile } from '../helpers/engineBed';
import { statementCalls } from '../helpers/statementCalls';

const databaseOf = (engine: Engine) => (engine as unknown as { meta: MetaStore }).meta.database;

/** How many batches of inode rows `fn` reads in order (a walk of every inode). */
function walksOf<T>(engine: Engine, fn: () => T): { result: T; batches: number } {
  const { result, calls } = statementCalls(databaseOf(engine), 'inodesAfter', fn);
  return { result, batches: calls };
}

/** Rewrites the state row of the database in `cacheDir` as a release that did not keep the names wrote it. */
function forgetNames(cacheDir: string): void {
  const raw = openDatabase(TreeDb.fileIn(path.join(cacheDir, 'meta')), { readOnly: false, mustExist: true });
  try {
    const row = raw.prepare("SELECT v FROM meta WHERE k = 'state'").get() as { v: string };
    const { xattrNames, ...older } = JSON.parse(row.v) as Record<string, unknown>;
    assert.ok(Array.isArray(xattrNames), 'the state kept the names');
    const v = JSON.stringify(older);
    raw.prepare("UPDATE meta SET v = ?, crc = ? WHERE k = 'state'").run(v, crc32(v));
  } finally {
    raw.close();
  }
}

describe('extended-attribute names at mount', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('come from the state, not from a walk of every inode; an older state is walked once', async () => {
    const space = await bed.filespace();
    const first = await bed.mount(space);
    for (let f = 0; f < 30; f++) await writeFile(first.fs, `/f${f}`, Buffer.from('x'));
    first.fs.setxattr('/f3', 'user.kept', Buffer.from('v'), 0);
    first.fs.setxattr('/f4', 'user.dropped', Buffer.from('v'), 0);
    first.fs.removexattr('/f4', 'user.dropped');
    await first.close();

    const again = await bed.mount(space, { cacheDir: first.cacheDir });
    const { result: names, batches } = walksOf(again.engine, () => again.fs.xattrNames!());
    assert.equal(batches, 0, 'no inode was read to learn the names');
    // A name no inode has any more may stay: the addon then asks the filesystem, which answers.
    assert.deepEqual([...names].sort(), ['user.dropped', 'user.kept']);
    await again.close();

    forgetNames(first.cacheDir);
    const older = await bed.mount(space, { cacheDir: first.cacheDir });
    const walked = walksOf(older.engine, () => older.fs.xattrNames!());
    assert.ok(walked.batches > 0, 'an older state has no names: every inode is read once');
    assert.deepEqual(walked.result, ['user.kept']);
    older.fs.setxattr('/f5', 'user.new', Buffer.from('v'), 0);
    await older.close();

    const last = await bed.mount(space, { cacheDir: first.cacheDir });
    const kept = walksOf(last.engine, () => last.fs.xattrNames!());
    assert.equal(kept.batches, 0, 'the names found by that walk were kept');
    assert.deepEqual([...kept.result].sort(), ['user.kept', 'user.new']);
    await last.close();
  });
});
