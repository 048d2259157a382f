// Pins down the local metadata database (meta/treeDb.ts) under MetaStore: a bounded working set
// that still answers like the whole tree, one object per inode while it is held, checkpoints that
// write what changed, a crash at any point of a checkpoint, and the upgrade of an older release's
// snapshot and journal (a fixture written by that release).

import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { cpSync, readFileSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { LINK_SPAN, PageWriter, linkPage, pageHashKey } from '../../electron/engine/meta/pages';
import { MetaOp, ROOT_INO, Tree, TreeSnapshot, pathsOf, pathsOfInodes } from '../../electron/engine/meta/tree';
import { POSTED_MAX, TreeDbBuilder } from '../../electron/engine/meta/build';
import { TreeDb, entryChecksum } from '../../electron/engine/meta/treeDb';
import { checkTree } from '../../electron/engine/check';
import { REPO } from '../helpers/bed';
import { statementCalls } from '../helpers/statementCalls';

const CS = 64 * 1024;

let root: string;
let dir: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'filespace-treedb-'));
  dir = path.join(root, 'meta');
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

let crashes = 0;
async function crashCopy(): Promise<string> {
  const copy = path.join(root, `crash-${crashes++}`);
  await cp(dir, copy, { recursive: true });
  return copy;
}

/** Ops making `dirs` folders of `perDir` files each, every file with one chunk. */
function manyFiles(dirs: number, perDir: number): MetaOp[] {
  const ops: MetaOp[] = [];
  let ino = 2;
  for (let d = 0; d < dirs; d++) {
    const dino = ino++;
    ops.push({ t: 'mk', parent: ROOT_INO, name: `d${d}`, ino: dino, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 10 });
    for (let f = 0; f < perDir; f++) {
      const fino = ino++;
      ops.push({ t: 'mk', parent: dino, name: `f${f}`, ino: fino, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 11 });
      ops.push({ t: 'attr', ino: fino, size: 10 + f, ms: 12 });
      ops.push({ t: 'chunk', ino: fino, idx: 0, ref: [`c${fino}`, 10 + f] });
    }
  }
  return ops;
}

function reference(ops: readonly MetaOp[]): Tree {
  const t = Tree.create(CS, 1, 1, 1);
  for (const op of ops) t.apply(op);
  return t;
}

/** How many folders' entry tables `fn` reads from the database of `ms`. */
function entryTablesRead<T>(ms: MetaStore, fn: () => T): { result: T; read: number } {
  const { result, calls } = statementCalls(ms.database, 'entriesOf', fn);
  return { result, read: calls };
}

function canonical(snap: TreeSnapshot): TreeSnapshot {
  return Tree.fromSnapshot(CS, snap).snapshot();
}

/** 4,000 files in 40 directories, in a database loaded again with a working set of 300; and the same tree in memory. */
async function bigTreeLoaded(): Promise<{ again: MetaStore; ref: Tree }> {
  const ops = manyFiles(40, 100);
  const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
  for (const op of ops) ms.commit(op);
  await ms.close();
  return { again: (await MetaStore.load(dir, { cacheWeight: 300 }))!, ref: reference(ops) };
}

describe('the local metadata database', () => {
  it('keeps a bounded working set and still answers like the whole tree', async () => {
    const { again, ref } = await bigTreeLoaded();
    // Every lookup a walk makes, in a tree far larger than the working set.
    let files = 0;
    for (const [name, dino] of ref.get(ROOT_INO)!.entries!) {
      assert.equal(again.tree.lookup(ROOT_INO, name)?.ino, dino);
      for (const [fname, fino] of ref.get(dino)!.entries!) {
        const got = again.tree.lookup(dino, fname)!;
        assert.equal(got.ino, fino);
        assert.equal(got.size, ref.get(fino)!.size);
        assert.deepEqual(got.chunks, ref.get(fino)!.chunks);
        files++;
      }
    }
    assert.equal(files, 4000);
    assert.ok(again.database.heldInodes <= 300, `${again.database.heldInodes} inodes held`);
    assert.equal(again.tree.inodes.size, ref.inodes.size);
    assert.equal(again.tree.chunkRefs.size, ref.chunkRefs.size);
    assert.equal(again.tree.chunkRefs.get('c3'), 1);
    assert.equal(again.tree.chunkRefs.has('nope'), false);
    assert.deepEqual(again.tree.snapshot(), ref.snapshot());
    assert.equal(again.tree.allocatedBytes, ref.allocatedBytes);
    assert.equal(again.tree.dirs, 41);
    await again.close();
  });

  it('finds the paths of a few inodes upward from them, as a walk of the whole tree finds them', async () => {
    const { again } = await bigTreeLoaded();
    const t = again.tree;
    const d3 = t.lookup(ROOT_INO, 'd3')!.ino;
    const d7 = t.lookup(ROOT_INO, 'd7')!.ino;
    const f5 = t.lookup(d3, 'f5')!.ino;
    // A nested folder with a file, and a file with three names in two folders.
    const sub = t.nextIno;
    again.commit({ t: 'mk', parent: d3, name: 'sub', ino: sub, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 20 });
    again.commit({ t: 'mk', parent: sub, name: 'deep', ino: sub + 1, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 20 });
    again.commit({ t: 'ln', ino: f5, parent: d7, name: 'also', ms: 21 });
    again.commit({ t: 'ln', ino: f5, parent: d3, name: 'twice', ms: 21 });
    await again.close();
    const loaded = (await MetaStore.load(dir, { cacheWeight: 300 }))!;
    const wanted = [f5, sub + 1, sub, d7, ROOT_INO, 999_999];
    const { result: got, read } = entryTablesRead(loaded, () => pathsOfInodes(loaded.tree, wanted));
    assert.deepEqual(
      wanted.map((ino) => [...(got.get(ino) ?? [])].sort()),
      [['/d3/f5', '/d3/twice', '/d7/also'], ['/d3/sub/deep'], ['/d3/sub'], ['/d7'], ['/'], []],
    );
    // The first path of each is the one a walk of the whole tree finds first, or another name.
    const all = pathsOf(loaded.tree);
    for (const ino of wanted.slice(1, 5)) assert.equal(got.get(ino)![0], all.get(ino));
    assert.ok(read <= 4, `${read} folders read for 6 inodes of a tree of 43 folders (root, d3, d7, sub)`);
    await loaded.close();
  });

  it('keeps the extended-attribute names in use with its state, through a crash, and knows when it does not know them', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(2, 3)) ms.commit(op);
    ms.commit({ t: 'xattr', ino: 3, name: 'user.a', value: 'eA==', ms: 20 });
    ms.commit({ t: 'xattr', ino: 4, name: 'user.gone', value: 'eA==', ms: 20 });
    ms.commit({ t: 'xattr', ino: 4, name: 'user.gone', value: null, ms: 21 });
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    // From the state row: no inode read. A name no inode has any more may stay (a superset).
    assert.deepEqual([...again.tree.xattrNames!].sort(), ['user.a', 'user.gone']);
    again.commit({ t: 'xattr', ino: 5, name: 'user.b', value: 'eA==', ms: 22 });
    await again.sync();
    const crashed = await crashCopy(); // the journal holds user.b, the database does not
    await again.close();
    const replayed = (await MetaStore.load(crashed))!;
    assert.ok(replayed.tree.xattrNames!.has('user.b'), 'a name set since the checkpoint comes back from the journal');
    await replayed.close();
    // A database whose state does not keep them (written before they were kept): not known.
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
    const row = raw.prepare("SELECT v FROM meta WHERE k = 'state'").get() as { v: string };
    const { xattrNames: _names, ...older } = JSON.parse(row.v) as Record<string, unknown>;
    const v = JSON.stringify(older);
    raw.prepare("UPDATE meta SET v = ?, crc = ? WHERE k = 'state'").run(v, crc32(v));
    raw.close();
    const legacy = (await MetaStore.load(dir))!;
    assert.equal(legacy.tree.xattrNames, undefined);
    await legacy.close();
  });

  it('reads in scan mode without taking what it reads into the working set, and answers the same', async () => {
    const { again, ref } = await bigTreeLoaded();
    const tree = again.tree;
    // A file changed since the database's checkpoint is dirty: scan mode hands out that object.
    const changed = tree.lookup(tree.lookup(ROOT_INO, 'd3')!.ino, 'f7')!;
    again.commit({ t: 'attr', ino: changed.ino, size: 777, ms: 99 });
    const held = again.database.heldInodes;
    const weak = again.database.weaklyHeld;
    let files = 0;
    tree.scan(() => {
      for (const [, dino] of ref.get(ROOT_INO)!.entries!) {
        const d = tree.get(dino)!;
        assert.deepEqual(d.entries, ref.get(dino)!.entries);
        for (const [, fino] of d.entries!) {
          const got = tree.get(fino)!;
          const want = ref.get(fino)!;
          assert.equal(got.size, fino === changed.ino ? 777 : want.size);
          assert.deepEqual(got.chunks, want.chunks);
          if (fino === changed.ino) assert.equal(got, changed, 'a dirty inode is the live object');
          files++;
        }
      }
      assert.equal([...tree.inodes.values()].length, ref.inodes.size, 'a pass over every inode');
    });
    assert.equal(files, 4000);
    assert.equal(again.database.heldInodes, held, 'the working set did not change');
    assert.equal(again.database.weaklyHeld, weak, 'nothing read was remembered weakly');
    // Outside scan mode, reads join the working set as before.
    tree.get(tree.lookup(ROOT_INO, 'd9')!.ino);
    assert.ok(again.database.weaklyHeld > weak);
    await again.close();
  });

  it('reads many inodes in one read transaction (scan, reading), ended when the pass ends, even by a throw', async () => {
    const { again, ref } = await bigTreeLoaded();
    const tree = again.tree;
    const { openDatabase } = await import('../../electron/engine/meta/db');
    // A second connection writes a row of its own and checkpoints the WAL: that is held up while
    // a read transaction of the engine's connection is open, and only then.
    const other = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
    const probe = other.prepare("INSERT OR REPLACE INTO meta (k, v, crc) VALUES ('probe', ?, 0)");
    let writes = 0;
    const blocked = () => {
      probe.run(String(writes++));
      return (other.pragma('wal_checkpoint(TRUNCATE)') as Array<{ busy: number }>)[0]!.busy === 1;
    };
    const files = [...ref.get(ref.get(ROOT_INO)!.entries!.get('d5')!)!.entries!.values()];
    try {
      assert.equal(blocked(), false, 'no transaction is open between reads');
      tree.get(files[1]!);
      assert.equal(blocked(), false, 'a read outside a pass ends with it');
      let during: boolean[] = [];
      const sizes = tree.reading(() => {
        const got = files.slice(2, 40).map((ino) => tree.get(ino)!.size);
        during.push(blocked());
        // A pass within a pass is the same transaction.
        tree.scan(() => tree.get(files[50]!));
        during.push(blocked());
        return got;
      });
      assert.deepEqual(
        sizes,
        files.slice(2, 40).map((ino) => ref.get(ino)!.size),
      );
      assert.deepEqual(during, [true, true], 'the reads of the pass are one transaction');
      assert.equal(blocked(), false, 'the transaction ends with the pass');
      during = [];
      assert.throws(
        () =>
          tree.scan(() => {
            tree.get(files[60]!);
            during.push(blocked());
            throw new Error('a pass that fails');
          }),
        /a pass that fails/,
      );
      assert.deepEqual(during, [true]);
      assert.equal(blocked(), false, 'a pass that throws ends its transaction too');
      // The connection still writes: a checkpoint after the passes.
      again.commit({ t: 'attr', ino: files[70]!, size: 70, ms: 70 });
      await again.checkpoint();
      assert.equal(tree.get(files[70]!)!.size, 70);
    } finally {
      other.close();
      await again.close();
    }
  });

  it('counts the folders among entries from their rows, as a look at each record does, with changes since the checkpoint', async () => {
    const { again, ref } = await bigTreeLoaded();
    const tree = again.tree;
    const byRecord = (inos: readonly number[]) => inos.filter((ino) => tree.record(ino)?.kind === 'dir').length;
    const rootEntries = () => [...tree.get(ROOT_INO)!.entries!.values()];
    assert.equal(tree.dirsAmong(rootEntries()), 40);
    // Changes held since the checkpoint: new folders and a file in the root, a folder emptied and removed.
    let ino = tree.nextIno;
    for (const name of ['n1', 'n2']) {
      again.commit({ t: 'mk', parent: ROOT_INO, name, ino: ino++, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 20 });
    }
    again.commit({ t: 'mk', parent: ROOT_INO, name: 'file', ino, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 20 });
    const d7 = tree.lookup(ROOT_INO, 'd7')!.ino;
    for (const name of [...ref.get(d7)!.entries!.keys()]) again.commit({ t: 'rm', parent: d7, name, ms: 21 });
    again.commit({ t: 'rm', parent: ROOT_INO, name: 'd7', ms: 21 });
    assert.equal(byRecord(rootEntries()), 41);
    assert.equal(tree.dirsAmong(rootEntries()), 41, 'held changes count as they are now');
    assert.equal(
      tree.scan(() => tree.dirsAmong(rootEntries())),
      41,
      'and the same in scan mode',
    );
    const d3 = tree.lookup(ROOT_INO, 'd3')!.ino;
    assert.equal(tree.dirsAmong([...tree.get(d3)!.entries!.values()]), 0, 'a folder of files');
    assert.equal(tree.dirsAmong([]), 0);
    // After a checkpoint the rows hold it all.
    await again.close();
    const reopened = (await MetaStore.load(dir, { cacheWeight: 300 }))!;
    try {
      const t2 = reopened.tree;
      assert.equal(t2.dirsAmong([...t2.get(ROOT_INO)!.entries!.values()]), 41);
    } finally {
      await reopened.close();
    }
    // A tree in memory counts by record.
    assert.equal(ref.dirsAmong([...ref.get(ROOT_INO)!.entries!.values()]), 40);
  });

  it('finds the inodes of a link page by counting names in the database, as a look at every inode does', async () => {
    let a = 7;
    const r = (n: number) => Math.floor((a = (a * 1103515245 + 12345) % 2147483648) / (2147483648 / n));
    const ops = manyFiles(30, 300); // inodes 2..9031: three link ranges
    const files = ops.flatMap((op) => (op.t === 'mk' && op.kind === 'file' ? [op.ino] : []));
    const dirs = ops.flatMap((op) => (op.t === 'mk' && op.kind === 'dir' ? [op.ino] : []));
    const churn = (n: number, ms: number): MetaOp[] => {
      const out: MetaOp[] = [];
      for (let k = 0; k < n; k++) {
        const dir = dirs[r(dirs.length)]!;
        switch (r(4)) {
          case 0:
            out.push({ t: 'ln', ino: files[r(files.length)]!, parent: dir, name: `l${ms}-${k}`, ms });
            break;
          case 1:
            out.push({ t: 'rm', parent: dir, name: `f${r(300)}`, ms });
            break;
          case 2:
            out.push({ t: 'mv', sp: dir, sn: `f${r(300)}`, dp: dirs[r(dirs.length)]!, dn: `m${ms}-${k}`, ms });
            break;
          default:
            out.push({ t: 'rm', parent: dir, name: `l${ms - 1}-${r(n)}`, ms });
        }
      }
      return out;
    };
    const all = [...ops, ...churn(400, 20)];
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of all) ms.commit(op);
    const same = (tree: Tree, what: string) => {
      const ref = reference(all);
      let linked = 0;
      for (let lo = 0; lo <= 9031; lo += LINK_SPAN) {
        assert.ok(tree.unhomedIn(lo, lo + LINK_SPAN - 1), 'the database answers');
        const want = linkPage(ref, lo);
        assert.deepEqual(linkPage(tree, lo), want, `${what}: link page ${lo}`);
        linked += want?.inodes.length ?? 0;
      }
      assert.ok(linked > 50, `${what}: ${linked} linked inodes`);
    };
    same(ms.tree, 'changes not yet in the database');
    await ms.close();
    const again = (await MetaStore.load(dir, { cacheWeight: 300 }))!;
    same(again.tree, 'read from the database');
    for (const op of churn(300, 21)) {
      again.commit(op);
      all.push(op);
    }
    same(again.tree, 'the database with changes on top');
    await again.close();
  });

  it("keeps statfs's running totals equal to a walk of the tree through every kind of change", async () => {
    const ops: MetaOp[] = [
      ...manyFiles(3, 4),
      { t: 'attr', ino: 3, size: 5000, ms: 20 },
      { t: 'chunk', ino: 3, idx: 0, ref: ['big', 5000] },
      { t: 'attr', ino: 4, size: 1, ms: 21 }, // truncation
      { t: 'rm', parent: 2, name: 'f3', ms: 22 },
      { t: 'mv', sp: 2, sn: 'f0', dp: 7, dn: 'f1', ms: 23 }, // over another file
      { t: 'ln', ino: 9, parent: ROOT_INO, name: 'link', ms: 24 },
      { t: 'rm', parent: 7, name: 'f2', ms: 25 },
      { t: 'mk', parent: ROOT_INO, name: 'empty', ino: 100, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 26 },
      { t: 'rm', parent: ROOT_INO, name: 'empty', ms: 27 },
    ];
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of ops) ms.commit(op);
    const walk = (t: Tree) => {
      let bytes = 0;
      let dirs = 0;
      for (const i of t.inodes.values()) {
        if (i.kind === 'dir') dirs++;
        if (i.kind === 'file') bytes += Tree.blocksBytes(i);
      }
      return { bytes, dirs };
    };
    assert.deepEqual({ bytes: ms.tree.allocatedBytes, dirs: ms.tree.dirs }, walk(ms.tree));
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.deepEqual({ bytes: again.tree.allocatedBytes, dirs: again.tree.dirs }, walk(again.tree));
    assert.deepEqual(walk(again.tree), walk(reference(ops)));
    await again.close();
  });

  it('gives one object per inode while it is held, even after it left the working set', async () => {
    const ops = manyFiles(10, 50);
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of ops) ms.commit(op);
    await ms.close();
    const again = (await MetaStore.load(dir, { cacheWeight: 20 }))!;
    const held = again.tree.get(5)!;
    // Push it out of the working set.
    for (let ino = 100; ino < 500; ino++) again.tree.get(ino);
    assert.equal(again.tree.get(5), held, 'the same object comes back');
    again.commit({ t: 'attr', ino: 5, mode: 0o600, ms: 99 });
    assert.equal(held.mode, 0o600, 'a change reaches the object the caller holds');
    await again.close();
  });

  it('names the directories of each inode, before and after a checkpoint', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(3, 3)) ms.commit(op); // d0=2 (files 3-5), d1=6 (7-9), d2=10 (11-13)
    const dirsOf = (ino: number) => ms.database.storage.dirsOf(ino);
    assert.deepEqual(dirsOf(4), [2]);
    ms.commit({ t: 'ln', ino: 4, parent: 10, name: 'again', ms: 30 });
    assert.deepEqual(dirsOf(4), [2, 10]);
    await ms.checkpoint();
    assert.deepEqual(dirsOf(4), [2, 10]);
    ms.commit({ t: 'mv', sp: 2, sn: 'f1', dp: 6, dn: 'moved', ms: 31 });
    assert.deepEqual(dirsOf(4), [6, 10]);
    ms.commit({ t: 'mv', sp: 6, sn: 'f0', dp: 10, dn: 'f1', ms: 32 }); // over file 12
    assert.deepEqual(dirsOf(7), [10]);
    assert.deepEqual(dirsOf(12), []);
    ms.commit({ t: 'rm', parent: 10, name: 'again', ms: 33 });
    assert.deepEqual(dirsOf(4), [6]);
    assert.deepEqual(dirsOf(6), [ROOT_INO]);
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.deepEqual(again.database.storage.dirsOf(4), [6]);
    assert.deepEqual(again.database.storage.dirsOf(7), [10]);
    await again.close();
  });

  it('a checkpoint writes what changed, not the tree', async () => {
    const ops = manyFiles(40, 100);
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of ops) ms.commit(op);
    await ms.checkpoint();
    ms.commit({ t: 'attr', ino: 5, size: 1, ms: 50 });
    ms.commit({ t: 'mk', parent: 2, name: 'new', ino: ms.tree.allocIno(), kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 51 });
    ms.commit({ t: 'rm', parent: 2, name: 'f7', ms: 52 });
    // Held until the checkpoint: the changed file, the new one, the removed one, their folder;
    // two entries; the chunk references the truncation and removal dropped.
    assert.ok(ms.database.dirtyCount <= 8, `${ms.database.dirtyCount} changes held`);
    await ms.checkpoint();
    assert.equal(ms.database.dirtyCount, 0);
    const ref = reference([
      ...ops,
      { t: 'attr', ino: 5, size: 1, ms: 50 },
      { t: 'mk', parent: 2, name: 'new', ino: ops.length + 2, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 51 },
    ]);
    void ref;
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.equal(again.tree.lookup(2, 'f7'), undefined);
    assert.equal(again.tree.lookup(2, 'new')?.kind, 'file');
    assert.equal(again.tree.get(5)!.size, 1);
    await again.close();
  });

  it("reads a chunk's count from the table once for an upload's questions, and anew after a checkpoint or a crash wrote the table", async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(1, 3)) ms.commit(op); // folder 2; files 3, 4, 5 naming c3, c4, c5
    await ms.checkpoint();
    const refs = ms.tree.chunkRefs;
    // An upload of content already stored as c4, into file 3: asked whether c4 is referenced,
    // then its commit counts c4 up and c3 down.
    const { calls } = statementCalls(ms.database, 'ref', () => {
      assert.equal(refs.has('c4'), true);
      ms.commit({ t: 'chunk', ino: 3, idx: 0, ref: ['c4', 11] });
    });
    assert.equal(calls, 2, 'c4 read once for the question and the count, c3 once');
    assert.equal(refs.get('c4'), 2);
    assert.equal(refs.has('c3'), false);
    await ms.checkpoint();
    // The table changed under what was read: c4 is read again, and is 2, not the 1 read before.
    const after = statementCalls(ms.database, 'ref', () => [refs.get('c4'), refs.get('c3'), refs.get('c5')]);
    assert.deepEqual(after.result, [2, undefined, 1]);
    assert.equal(after.calls, 3);
    ms.commit({ t: 'rm', parent: 2, name: 'f1', ms: 60 }); // file 4: c4 down to 1
    await ms.sync();
    const crashed = (await MetaStore.load(await crashCopy()))!;
    assert.deepEqual([crashed.tree.chunkRefs.get('c4'), crashed.tree.chunkRefs.get('c3')], [1, undefined]);
    await crashed.close();
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.deepEqual([again.tree.chunkRefs.get('c4'), again.tree.chunkRefs.get('c5'), again.tree.chunkRefs.size], [1, 1, 2]);
    await again.close();
  });

  it("finds a chunk's referenced place in a pack by the chunk's name, as the table holds it", async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(1, 2)) ms.commit(op); // folder 2; files 3, 4 naming c3, c4
    const packed = `c9~${'ab'.repeat(16)}~0~10`;
    ms.commit({ t: 'chunk', ino: 3, idx: 0, ref: [packed, 10] });
    const refs = ms.tree.chunkRefs;
    assert.equal(refs.packedOf!('c9'), undefined, 'not before a checkpoint writes it to the table');
    await ms.checkpoint();
    assert.equal(refs.has('c9'), false, 'the name alone is not referenced');
    assert.equal(refs.packedOf!('c9'), packed);
    assert.equal(refs.packedOf!('c4'), undefined, 'c4 is stored alone');
    ms.commit({ t: 'chunk', ino: 3, idx: 0, ref: ['c3', 10] });
    assert.equal(refs.packedOf!('c9'), undefined, 'no longer referenced since the checkpoint');
    await ms.close();
  });

  it('holds a bounded weight of changes, for files made in turn across folders, on a writer and a follower', async () => {
    const base = manyFiles(40, 200); // each folder weighs 201 with its entry table
    const inTurn = (from: number, rounds: number): MetaOp[] => {
      const ops: MetaOp[] = [];
      let ino = from;
      for (let r = 0; r < rounds; r++)
        for (let d = 0; d < 40; d++)
          ops.push({
            t: 'mk',
            parent: 2 + d * 201,
            name: `n${r}`,
            ino: ino++,
            kind: 'file',
            mode: 0o644,
            uid: 1,
            gid: 1,
            ms: 40,
          });
      return ops;
    };
    const more = inTurn(base.length + 2, 5);
    const heldAtMost = async (apply: (ms: MetaStore) => number) => {
      let most = 0;
      const ms = (await MetaStore.load(dir, { cacheWeight: 300 }))!;
      try {
        for (;;) {
          if (apply(ms) === 0) break;
          most = Math.max(most, ms.database.dirtyCount);
          // As between two requests of a mount: what was queued (a journal switch) runs.
          await ms.flush();
          await new Promise(setImmediate);
        }
      } finally {
        await ms.close();
      }
      return most;
    };
    const check = async (what: string) => {
      const again = (await MetaStore.load(dir))!;
      assert.deepEqual(canonical(again.tree.snapshot()), canonical(reference([...base, ...more]).snapshot()), what);
      await again.close();
    };

    // The writer: 200 files made one per folder in turn. Each folder it touches is held whole
    // until a checkpoint; all 40 of them (8,040 entries) were, with the 200 files.
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of base) ms.commit(op);
    await ms.close();
    let next = 0;
    const mostOnWriter = await heldAtMost((w) => {
      if (next === more.length) return 0;
      w.commit(more[next++]!);
      return 1;
    });
    assert.ok(mostOnWriter < 40, `the writer held ${mostOnWriter} changes at most`);
    await check('the writer');

    // A follower applying the same changes as segments of 4 ops.
    await rm(dir, { recursive: true, force: true });
    const f = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    f.applyRemote(1, base);
    await f.close();
    let seq = 2;
    next = 0;
    const mostOnFollower = await heldAtMost((fm) => {
      if (next === more.length) return 0;
      fm.applyRemote(seq++, more.slice(next, next + 4));
      next += 4;
      return 1;
    });
    assert.ok(mostOnFollower < 40, `the follower held ${mostOnFollower} changes at most`);
    await check('the follower');
  });

  const writers = [
    { how: '', opts: {} },
    { how: ', writer in its own thread', opts: { offThread: true } },
    // A writer thread that cannot start (its script does not load): this thread writes.
    {
      how: ', writer thread that cannot start',
      opts: { offThread: true, workerScript: path.join(os.tmpdir(), 'no-such-script.js') },
    },
  ];
  for (const { how, opts } of writers)
    it(`a build (a fresh machine${how}) takes what pages give it, a record given twice replacing the first, counts included`, async () => {
      const ops = manyFiles(3, 100);
      const changed: MetaOp[] = [
        { t: 'attr', ino: 5, size: 5000, ms: 30 },
        { t: 'chunk', ino: 5, idx: 0, ref: ['other', 5000] },
      ];
      const first = reference(ops);
      const want = reference([...ops, ...changed]);
      const records = (t: Tree) => [...t.inodes.values()].map(({ entries: _e, ...r }) => r);
      const lists = [...first.inodes.values()].flatMap((i) => (i.entries ? [{ dir: i.ino, list: [...i.entries] }] : []));
      await mkdir(dir);
      const b = await TreeDbBuilder.start(dir, CS, opts);
      assert.equal(b.offThread, how.includes('its own'));
      const all = records(first);
      await b.add(all.slice(0, 200), lists);
      await b.add(all.slice(150)); // 50 given again, as they were
      await b.add(all.slice(150, 160).concat(all.slice(150, 151))); // twice within one call
      await b.add(records(want).filter((r) => r.ino === 5)); // given again, changed: the later one wins
      // 5,000 more rows, so that some go to the writer before others are given: records
      // given twice across batches, and ino 5 both ways within a batch not yet written.
      for (let k = 0; k < 50; k++) await b.add(all.slice(0, 100));
      await b.add(all.filter((r) => r.ino === 5));
      await b.add(records(want).filter((r) => r.ino === 5));
      const { db, state } = await b.finish({ gen: 1, nextIno: want.nextIno, remoteSeq: 0 });
      try {
        db.verifyAll(); // the inode count and every chunk's count against the rows
        const tree = db.tree(state);
        assert.deepEqual(canonical(tree.snapshot()), canonical(want.snapshot()));
        assert.equal(tree.allocatedBytes, want.allocatedBytes);
        assert.equal(tree.dirs, want.dirs);
        assert.equal(tree.chunkRefs.get('other'), 1);
        assert.equal(tree.chunkRefs.get('c5'), undefined);
      } finally {
        db.close();
      }
    });

  it('a build with its writer in its own thread waits for it; one that fails or is dropped leaves nothing behind, one that cannot open its database says why', async () => {
    const tree = reference(manyFiles(20, 200));
    const records = [...tree.inodes.values()].map(({ entries: _e, ...r }) => r);
    await mkdir(dir);
    // Backpressure: each add resolves only while at most POSTED_MAX batches wait for the writer.
    const b = await TreeDbBuilder.start(dir, CS, { offThread: true });
    let most = 0;
    for (let k = 0; k < 20; k++) {
      await b.add(records);
      assert.ok(b.queued < POSTED_MAX, `${b.queued} batches wait for the writer`);
      most = Math.max(most, b.queued);
    }
    assert.ok(most > 0, 'batches were handed to the writer');
    await b.abort();
    assert.deepEqual(await readdir(dir), [], 'a dropped build removes its database');
    // A write the writer refuses (an entry naming its folder twice in one statement is fine;
    // a record that is not text is not) fails the build with the writer's error.
    const bad = await TreeDbBuilder.start(dir, CS, { offThread: true });
    const broken = { ...records[0]!, ino: 'x' as unknown as number };
    await assert.rejects(async () => {
      for (let k = 0; k < 10; k++) await bad.add([broken, ...records]);
      await bad.finish({ gen: 1, nextIno: tree.nextIno, remoteSeq: 0 });
    }, /datatype mismatch|SQLITE/);
    await bad.abort();
    assert.deepEqual(await readdir(dir), []);
    // A database that cannot be opened at all: the thread cannot, nor can this one; it says why.
    const notAFolder = path.join(root, 'a-file');
    await writeFile(notAFolder, 'x');
    await assert.rejects(
      TreeDbBuilder.start(notAFolder, CS, { offThread: true }),
      /ENOTDIR|SQLITE_CANTOPEN|not a directory|unable to open/i,
    );
  });

  it('a checkpoint plan after a few changes reads the folders they name, not every folder', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(60, 20)) ms.commit(op);
    ms.commit({ t: 'mk', parent: 2, name: 'gone', ino: 5000, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 13 });
    ms.commit({ t: 'mk', parent: 5000, name: 'x', ino: 5001, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 13 });
    await ms.close();
    const again = (await MetaStore.load(dir, { cacheWeight: 50 }))!;
    const w = new PageWriter(pageHashKey(Buffer.alloc(32, 1)));
    w.adopt(undefined);
    const first = w.plan(again.tree, 0, undefined);
    w.planned();
    // Count the entry tables read from the database from here on.
    const st = (again.database as unknown as { st: { entriesOf: { all: (...a: unknown[]) => unknown[] } } }).st;
    const all = st.entriesOf.all.bind(st.entriesOf);
    let read = 0;
    st.entriesOf.all = (...a: unknown[]) => {
      read++;
      return all(...a);
    };
    const ops: MetaOp[] = [
      { t: 'attr', ino: 25, size: 1, ms: 50 }, // a file of folder 23
      { t: 'rm', parent: 5000, name: 'x', ms: 51 },
      { t: 'rm', parent: 2, name: 'gone', ms: 52 }, // a folder with a page, removed
    ];
    for (const op of ops) again.commit(op);
    w.noteSegment(again.tree, 1, ops);
    const plan = w.plan(again.tree, 1, undefined);
    assert.ok(read <= 4, `${read} folders' entries read for 3 changes in a tree of ${first.manifest.pages.length} pages`);
    const covered = plan.manifest.pages.map((r) => ('dir' in r ? r.dir : -r.lo));
    assert.ok(!covered.includes(5000), 'the removed folder has no page any more');
    assert.ok(
      first.manifest.pages.some((r) => 'dir' in r && r.dir === 5000),
      'it had one',
    );
    await again.close();
  });

  it('a crash right after a checkpoint wrote the database replays nothing twice', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    const ops = manyFiles(3, 5);
    for (const op of ops) ms.commit(op);
    ms.commit({ t: 'ln', ino: 4, parent: ROOT_INO, name: 'second', ms: 70 });
    await ms.sync();
    // The database is written when checkpoint() returns; the journal switch is still queued.
    const switched = ms.checkpoint();
    // Copied at once (synchronously): nothing queued has run yet.
    const copy = path.join(root, 'crash-at-switch');
    cpSync(dir, copy, { recursive: true });
    assert.ok((await readdir(copy)).includes('journal.1'), 'the old journal is still there');
    await switched;
    const crashed = (await MetaStore.load(copy))!;
    assert.equal(crashed.pendingRemote.length, ops.length + 1, 'each change is pending once');
    assert.equal(crashed.tree.get(4)!.nlink, 2);
    assert.deepEqual(crashed.tree.snapshot(), ms.tree.snapshot());
    await crashed.close();
    await ms.close();
  });

  it('changes synced after a checkpoint survive a crash; pushed ones stay pushed', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    const ops = manyFiles(2, 5);
    for (const op of ops) ms.commit(op);
    ms.markPushed(1, 10);
    await ms.checkpoint();
    ms.commit({
      t: 'mk',
      parent: ROOT_INO,
      name: 'late',
      ino: ms.tree.allocIno(),
      kind: 'file',
      mode: 0o644,
      uid: 1,
      gid: 1,
      ms: 80,
    });
    ms.markPushed(2, 5);
    await ms.sync();
    const crashed = (await MetaStore.load(await crashCopy()))!;
    assert.deepEqual(crashed.pendingRemote, ms.pendingRemote);
    assert.equal(crashed.remoteSeq, 2);
    assert.equal(crashed.tree.lookup(ROOT_INO, 'late')?.kind, 'file');
    await crashed.close();
    await ms.close();
    const clean = (await MetaStore.load(dir))!;
    assert.deepEqual(clean.pendingRemote, ms.pendingRemote);
    await clean.close();
  });

  it('reading an unmounted filespace (status, check) leaves its metadata folder as it was', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(2, 3)) ms.commit(op);
    await ms.checkpoint();
    // While the engine has it open the database keeps its WAL beside it.
    assert.ok((await readdir(dir)).includes(`${path.basename(TreeDb.fileIn(dir))}-wal`));
    await ms.close();
    const files = (await readdir(dir)).sort();
    assert.ok(!files.some((f) => f.endsWith('-wal') || f.endsWith('-shm')), files.join(' '));
    const seen = await MetaStore.inspect(dir, { withTree: true });
    assert.equal(seen.snapshotError, undefined);
    assert.equal(seen.tree?.lookup(ROOT_INO, 'd1')?.kind, 'dir');
    assert.deepEqual((await readdir(dir)).sort(), files);
    // The next writer takes it back to WAL, and leaves it the same way.
    const again = (await MetaStore.load(dir))!;
    again.commit({ t: 'attr', ino: 3, size: 5, ms: 60 });
    await again.checkpoint();
    await again.close();
    const after = await readdir(dir);
    assert.ok(!after.some((f) => f.endsWith('-wal') || f.endsWith('-shm')), after.join(' '));
    assert.equal((await MetaStore.inspect(dir, { withTree: true })).tree?.get(3)?.size, 5);
    assert.deepEqual(await readdir(dir), after);
  });

  it('the inspection (the checker) finds a chunk count that disagrees with the inodes', async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(2, 3)) ms.commit(op);
    await ms.close();
    assert.equal((await MetaStore.inspect(dir)).snapshotError, undefined);
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
    // A valid row with a matching checksum, but a count no inode agrees with.
    raw.prepare("UPDATE chunks SET n = 2, crc = ? WHERE name = 'c3'").run(crc32('c3:2'));
    raw.close();
    const seen = await MetaStore.inspect(dir);
    assert.match(seen.snapshotError?.message ?? '', /chunk c3 is counted 2 times but named 1 times/);
  });

  it('the inspection finds a chunk no inode names, an entry naming no inode, and a wrong inode count', async () => {
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const damage: Array<{ sql: string; params: unknown[]; want: RegExp }> = [
      {
        sql: 'INSERT INTO chunks (name, n, crc) VALUES (?, 1, ?)',
        params: ['stray', crc32('stray:1')],
        want: /chunk stray is counted 1 times but named 0 times/,
      },
      { sql: 'DELETE FROM chunks WHERE name = ?', params: ['c3'], want: /it counts \d+ chunks where its inodes name \d+/ },
      { sql: 'DELETE FROM inodes WHERE ino = ?', params: [5], want: /a directory entry names inode 5, which it does not hold/ },
      {
        // A valid record no directory names: more inodes than the state row counts.
        sql: 'INSERT INTO inodes (ino, rec, crc) SELECT 999, rec, crc FROM inodes WHERE ino = ?',
        params: [2],
        want: /it holds 10 inodes where its state counts 9/,
      },
    ];
    for (const { sql, params, want } of damage) {
      await rm(dir, { recursive: true, force: true });
      const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
      for (const op of manyFiles(2, 3)) ms.commit(op);
      await ms.close();
      assert.equal((await MetaStore.inspect(dir)).snapshotError, undefined);
      const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
      raw.prepare(sql).run(...params);
      raw.close();
      assert.match((await MetaStore.inspect(dir)).snapshotError?.message ?? '', want, sql);
    }
  });

  it("the checker's structural checks run on a tree in the database: a missing inode named, an orphan, a wrong name count", async () => {
    const ms = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    for (const op of manyFiles(2, 3)) ms.commit(op); // d0 = 2 (f0..f2 = 3..5), d1 = 6 (7..9)
    await ms.close();
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
    const addEntry = raw.prepare('INSERT INTO entries (parent, name, ino, crc) VALUES (?, ?, ?, ?)');
    const entry = (parent: number, name: string, ino: number) =>
      addEntry.run(parent, Buffer.from(name, 'utf16le'), ino, entryChecksum(parent, name, ino));
    entry(2, 'ghost', 999_999); // far past the next inode number
    entry(6, 'again', 3); // a second name the record does not count
    raw.prepare('DELETE FROM entries WHERE parent = 6 AND ino = 8').run(); // 8 loses its only name
    raw.close();
    const opened = TreeDb.open(dir, { readOnly: true })!;
    try {
      assert.deepEqual(checkTree(opened.db.tree(opened.state), 'local'), [
        'local: directory 2 names missing inode 999999 ("ghost")',
        'local: inode 3 is named 2 times but counts 1 name(s)',
        'local: inode 8 is not in any directory (orphan)',
      ]);
    } finally {
      opened.db.close();
    }
  });

  it("upgrades an older release's snapshot and journal in place", async () => {
    const fixture = path.join(REPO, 'test', 'fixtures', 'local-meta-v1');
    const expected = JSON.parse(readFileSync(`${fixture}.expected.json`, 'utf8')) as {
      tree: TreeSnapshot;
      pendingRemote: MetaOp[];
      remoteSeq: number;
    };
    await cp(fixture, dir, { recursive: true });
    const ms = (await MetaStore.load(dir))!;
    assert.deepEqual(ms.tree.snapshot(), canonical(expected.tree));
    assert.deepEqual(ms.pendingRemote, expected.pendingRemote);
    assert.equal(ms.remoteSeq, expected.remoteSeq);
    const files = await readdir(dir);
    assert.ok(files.includes('tree.db'), files.join(','));
    assert.ok(!files.includes('state.json'), `the old snapshot is gone: ${files.join(',')}`);
    // A name that is not UTF-8 keeps its bytes.
    assert.ok(ms.tree.lookup(ROOT_INO, 'n\udc80me-not-utf8'));
    ms.commit({
      t: 'mk',
      parent: ROOT_INO,
      name: 'after-upgrade',
      ino: ms.tree.allocIno(),
      kind: 'dir',
      mode: 0o755,
      uid: 1,
      gid: 1,
      ms: 90,
    });
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.equal(again.tree.lookup(ROOT_INO, 'after-upgrade')?.kind, 'dir');
    assert.deepEqual(again.pendingRemote.slice(0, expected.pendingRemote.length), expected.pendingRemote);
    await again.close();
  });

  it('a database of layout 1 (no folders waiting) opens: read-only as it is, for writing upgraded to layout 2; a newer layout is refused', async () => {
    await mkdir(dir, { recursive: true });
    const made = TreeDb.create(dir, reference(manyFiles(3, 4)), { gen: 1, chunkSize: CS, nextIno: 100, remoteSeq: 0 }, []);
    made.close();
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const asLayout = (n: number, dropTable: boolean) => {
      const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
      if (dropTable) raw.exec('DROP TABLE unloaded');
      raw.pragma(`user_version = ${n}`);
      raw.pragma('journal_mode = DELETE');
      raw.close();
    };
    const layout = () => {
      const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: true, mustExist: true });
      try {
        return raw.pragma('user_version', { simple: true });
      } finally {
        raw.close();
      }
    };
    asLayout(1, true);
    const ro = TreeDb.open(dir, { readOnly: true })!;
    assert.equal(ro.db.unloadedCount, 0);
    assert.equal(ro.db.tree(ro.state).lookup(ROOT_INO, 'd1')?.kind, 'dir');
    ro.db.verifyAll();
    ro.db.close();
    assert.equal(layout(), 1, 'a read-only open changes nothing');
    const rw = TreeDb.open(dir)!;
    assert.equal(rw.db.tree(rw.state).get(rw.db.tree(rw.state).lookup(ROOT_INO, 'd1')!.ino)!.entries!.size, 4);
    rw.db.close();
    assert.equal(layout(), 2);
    asLayout(3, false);
    assert.throws(() => TreeDb.open(dir), /layout 3 was written by a newer version of Filespace/);
  });

  it('an upgrade cut short leaves the older snapshot in use, and the next load finishes it', async () => {
    const fixture = path.join(REPO, 'test', 'fixtures', 'local-meta-v1');
    await cp(fixture, dir, { recursive: true });
    // A database whose creation never finished (no layout mark): as if the engine died in it.
    const db = TreeDb.create(dir, Tree.create(CS, 1, 1, 1), { gen: 9, chunkSize: CS, nextIno: 2, remoteSeq: 0 }, []);
    db.close();
    const { openDatabase } = await import('../../electron/engine/meta/db');
    const raw = openDatabase(TreeDb.fileIn(dir), { readOnly: false, mustExist: true });
    raw.pragma('user_version = 0');
    raw.close();
    const ms = (await MetaStore.load(dir))!;
    assert.ok(ms.tree.lookup(ROOT_INO, 'docs'), 'the tree is the older snapshot');
    await ms.close();
  });
});
