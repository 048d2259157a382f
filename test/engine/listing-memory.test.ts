/**
 * A listing with attributes (readdirPlus, what the mount answers `ls -l` and the kernel's
 * lookups from) reads its entries without keeping them: the entries it reads for the answer
 * stay out of the tree's working set and are not remembered weakly, so listing a folder of
 * folders does not hold each of them with its entry table until the request returns.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { MetaStore } from '../../electron/engine/meta/metastore';
import type { Engine } from '../../electron/engine/engine';
import { EngineBed, writeFile } from '../helpers/engineBed';
import { statementCalls } from '../helpers/statementCalls';

const FOLDERS = 40;
const FILES = 25;

/** The metadata store of an engine (the working set's counters are read from its database). */
const metaOf = (engine: Engine) => (engine as unknown as { meta: MetaStore }).meta;
const databaseOf = (engine: Engine) => metaOf(engine).database;

/** How many directories' entry tables `fn` reads from the database `db`. */
function entryTablesRead<T>(db: ReturnType<typeof databaseOf>, fn: () => T): { result: T; read: number } {
  const { result, calls } = statementCalls(db, 'entriesOf', fn);
  return { result, read: calls };
}

describe('listing a folder of folders', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('answers every entry with its attributes and keeps none of them in memory', async () => {
    const space = await bed.filespace();
    const first = await bed.mount(space);
    first.fs.mkdir('/top', 0o755);
    for (let d = 0; d < FOLDERS; d++) {
      first.fs.mkdir(`/top/s${d}`, 0o750);
      if (d % 4 === 0) first.fs.mkdir(`/top/s${d}/inner`, 0o755);
      for (let f = 0; f < FILES; f++) await writeFile(first.fs, `/top/s${d}/f${f}`, Buffer.alloc(f));
    }
    // Uploaded (an engine reads the inodes of dirty files as it opens) and into the database, so
    // the next engine reads the tree from there on demand.
    await first.sync();
    await metaOf(first.engine).checkpoint();
    await first.close();

    // A new engine on the same machine reads the tree from its database on demand.
    const m = await bed.mount(space, { cacheDir: first.cacheDir });
    const db = databaseOf(m.engine);
    // Its link count asks each entry's kind: the subfolders' records, not their entry tables.
    const { result: top, read } = entryTablesRead(db, () => m.fs.getattr('/top'));
    assert.equal(top.nlink, 2 + FOLDERS);
    assert.ok(read <= 2, `${read} entry tables read for a stat of /top (the root's and its own)`);
    const held = db.heldInodes;
    assert.ok(held < FOLDERS, `${held} inodes held before the listing: the folders must not be among them`);

    const listing = m.fs.readdirPlus!('/top');
    assert.equal(listing.names.length, 2 + FOLDERS);
    assert.deepEqual(listing.names.slice(0, 2), ['.', '..']);
    for (let k = 2; k < listing.names.length; k++) {
      const d = Number(listing.names[k]!.slice(1));
      const st = listing.stats[k]!;
      assert.equal(st.mode, 0o040750, `mode of ${listing.names[k]}`);
      assert.equal(st.nlink, d % 4 === 0 ? 3 : 2, `link count of ${listing.names[k]}`);
      assert.deepEqual(st, m.fs.getattr(`/top/${listing.names[k]}`), `the listing answers as getattr does`);
    }
    // The getattrs just above read the folders the ordinary way: count from a fresh engine.
    await m.close();

    const again = await bed.mount(space, { cacheDir: first.cacheDir });
    const db2 = databaseOf(again.engine);
    again.fs.getattr('/top');
    const held2 = db2.heldInodes;
    const weak2 = db2.weaklyHeld;
    assert.equal(again.fs.readdirPlus!('/top').names.length, 2 + FOLDERS);
    assert.equal(db2.heldInodes, held2, 'the listing added nothing to the working set');
    assert.equal(db2.weaklyHeld, weak2, 'nor to the inodes remembered weakly');
    // What is used after the listing is read as ever.
    assert.equal(again.fs.getattr('/top/s7/f3').size, 3);
    assert.ok(db2.weaklyHeld > weak2 && db2.heldInodes > held2);
  });
});
