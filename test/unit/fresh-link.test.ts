// A fresh machine's link (MetaStore.link): the bucket's checkpoint goes into the local database
// page by page; of a paged checkpoint, the root's pages and the link pages, the other folders
// loaded on demand (pageLoader.ts). Pins down that the tree it builds, once every folder is
// loaded, is the one a load into memory builds (hard links, deduplicated chunks, statfs totals,
// next inode, the segments after the checkpoint, a whole-tree checkpoint of an older format),
// that a damaged page is an error that leaves no database, and that a link killed half-way
// leaves nothing a mount would take, and starts over. The checker's read of every page (the
// same sink, not lazy) keeps reads in flight within its bounds.

import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { databaseSink } from '../../electron/engine/meta/build';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { FILL_FIRST_BATCH_DIRS, FILL_YIELD_MAX_MS, type ReaderActivity } from '../../electron/engine/meta/pageLoader';
import { homesOf } from '../../electron/engine/meta/replicator';
import { PAGE_PREFIX, PageWriter, isDirCover, pageHashKey } from '../../electron/engine/meta/pages';
import { DamagedMetadataError, RemoteMeta, STREAM_AHEAD, STREAM_AHEAD_BYTES } from '../../electron/engine/meta/remote';
import { MetaOp, ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { NotLoadedError, TreeDb } from '../../electron/engine/meta/treeDb';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { MemoryStore } from '../../electron/engine/store/memory';
import type { ObjectStore } from '../../electron/engine/store/types';
import { killWhenStalled } from '../helpers/stalledChild';

const CS = 4096;
const KEY = randomBytes(32);
const WRITER = { id: 'machine-a', epoch: 1 };

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'filespace-link-'));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function mk(parent: number, name: string, ino: number, kind: 'file' | 'dir' | 'symlink' = 'file'): MetaOp {
  return {
    t: 'mk',
    parent,
    name,
    ino,
    kind,
    mode: kind === 'dir' ? 0o755 : 0o644,
    uid: 3,
    gid: 4,
    ms: 2,
    ...(kind === 'symlink' ? { target: 'x' } : {}),
  };
}

/**
 * `dirs` directories of `perDir` files; every file has a chunk, every third one a chunk named
 * like another file's (deduplicated); hard links within and across directories (one in another
 * link range); a directory big enough for several parts; xattrs, a symlink, an empty directory.
 */
function treeOps(dirs: number, perDir: number, bigDir = 0): MetaOp[] {
  const ops: MetaOp[] = [];
  let ino = 2;
  const files: number[] = [];
  for (let d = 0; d < dirs; d++) {
    const dino = ino++;
    ops.push(mk(ROOT_INO, `d${d}`, dino, 'dir'));
    const n = d === 0 ? perDir + bigDir : perDir;
    for (let f = 0; f < n; f++) {
      const fino = ino++;
      files.push(fino);
      ops.push(mk(dino, `f${f}`, fino), { t: 'attr', ino: fino, size: 100 + f, ms: 3 });
      ops.push({ t: 'chunk', ino: fino, idx: 0, ref: [f % 3 === 0 ? `shared${f % 7}` : `c${fino}`, 100 + f] });
    }
  }
  ops.push({ t: 'ln', ino: files[1]!, parent: 2, name: 'again', ms: 4 });
  ops.push({ t: 'ln', ino: files[1]!, parent: ROOT_INO, name: 'top', ms: 4 });
  ops.push({ t: 'ln', ino: files[files.length - 1]!, parent: 2, name: 'far', ms: 4 });
  ops.push({ t: 'xattr', ino: files[2]!, name: 'user.k', value: 'dg==', ms: 5 });
  ops.push({ t: 'xattr', ino: ROOT_INO, name: 'user.r', value: 'eA==', ms: 5 });
  ops.push(mk(ROOT_INO, 'empty', ino, 'dir'), mk(ROOT_INO, 'sym', ino + 1, 'symlink'));
  return ops;
}

/** Later changes: removals (of a linked name too), a rename, new files, a new link, chunk changes. */
function laterOps(tree: Tree): MetaOp[] {
  const ino = tree.nextIno;
  return [
    { t: 'rm', parent: 2, name: 'again', ms: 10 },
    { t: 'rm', parent: 2, name: 'f5', ms: 10 },
    { t: 'mv', sp: 2, sn: 'f7', dp: ROOT_INO, dn: 'moved', ms: 10 },
    mk(ROOT_INO, 'later', ino),
    { t: 'chunk', ino, idx: 0, ref: ['shared1', 50] },
    { t: 'ln', ino, parent: 2, name: 'later-link', ms: 11 },
    { t: 'chunk', ino: 4, idx: 1, ref: ['c-new', 4096] },
    { t: 'xattr', ino: 4, name: 'user.later', value: 'eA==', ms: 11 },
  ];
}

function apply(tree: Tree, ops: readonly MetaOp[]): Tree {
  for (const op of ops) {
    if (op.t === 'mk') tree.nextIno = Math.max(tree.nextIno, op.ino + 1);
    tree.apply(op);
  }
  return tree;
}

/** Everything a tree is, in a canonical form: inodes and entries, chunk counts, running totals, next inode. */
function whole(t: Tree): unknown {
  return {
    snap: t.snapshot(),
    refs: [...t.chunkRefs].sort(([a], [b]) => (a < b ? -1 : 1)),
    allocatedBytes: t.allocatedBytes,
    dirs: t.dirs,
    nextIno: t.nextIno,
    xattrNames: [...(t.xattrNames ?? ['not known'])].sort(),
  };
}

/** Writes `tree` as a paged checkpoint at `seq`, then `later` as segment(s) after it. */
async function publish(store: ObjectStore, tree: Tree, seq: number, later: MetaOp[][] = []): Promise<RemoteMeta> {
  const remote = new RemoteMeta(store, KEY);
  const plan = new PageWriter(pageHashKey(KEY)).plan(tree, seq, undefined);
  assert.ok(await remote.writePagedCheckpoint(plan));
  for (let i = 0; i < later.length; i++) await remote.pushSegment(seq + 1 + i, later[i]!, WRITER);
  return remote;
}

/** Links, then loads every folder still in the bucket's pages. */
async function linkAll(dir: string, remote: RemoteMeta): Promise<MetaStore> {
  const ms = await MetaStore.link(dir, remote, CS);
  await ms.pages(remote).loadAll();
  assert.equal(ms.unloadedDirs, 0);
  return ms;
}

async function linkAndCompare(remote: RemoteMeta, dir: string): Promise<MetaStore> {
  const expected = await remote.load(CS);
  const ms = await linkAll(dir, remote);
  assert.deepEqual(whole(ms.tree), whole(expected.tree));
  assert.equal(ms.remoteSeq, expected.seq);
  assert.deepEqual(ms.pendingRemote, []);
  ms.database.verifyAll();
  return ms;
}

describe('a fresh machine builds its database page by page', () => {
  it('the tree equals the one a load into memory builds, segments after the checkpoint applied', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(30, 40, 9000));
    const later = laterOps(tree);
    const remote = await publish(store, tree, 5, [later.slice(0, 3), later.slice(3)]);
    const dir = path.join(root, 'meta');
    const ms = await linkAndCompare(remote, dir);
    // Against the tree the ops make too (not only against the other loader).
    assert.deepEqual(whole(ms.tree), whole(apply(tree, later)));
    assert.equal(ms.remoteSeq, 7);
    assert.deepEqual(ms.tree.dirsOf(ms.tree.nextIno - 1), [ROOT_INO, 2]);
    await ms.close();
    // What was linked opens again as it was.
    const again = await MetaStore.load(dir);
    assert.deepEqual(whole(again!.tree), whole(tree));
    await again!.close();
  });

  it('reading every page (the checker) keeps many reads in flight for small folders, and a bounded number of bytes for big ones', async () => {
    /** A bucket whose GETs take a few ms, counting the page reads in flight and noting their sizes. */
    class Distant extends MemoryStore {
      inFlight = 0;
      most = 0;
      readonly sizes = new Map<string, number>();
      override async get(...args: Parameters<MemoryStore['get']>): ReturnType<MemoryStore['get']> {
        if (!args[0].startsWith(PAGE_PREFIX)) return super.get(...args);
        this.inFlight++;
        this.most = Math.max(this.most, this.inFlight);
        await new Promise((resolve) => setTimeout(resolve, 3));
        try {
          const got = await super.get(...args);
          this.sizes.set(args[0], got?.body.length ?? 0);
          return got;
        } finally {
          this.inFlight--;
        }
      }
    }
    /** Reads `tree` published on `store` into a database, counting those reads only; the tree as a load into memory has it. */
    const linkCounted = async (store: Distant, tree: Tree, name: string) => {
      const remote = await publish(store, tree, 2);
      const expected = await remote.load(CS);
      store.most = 0;
      await mkdir(path.join(root, name));
      const into = databaseSink(path.join(root, name), CS);
      const { tree: read } = await remote.loadInto(CS, into.sink);
      assert.deepEqual(whole(read), whole(expected.tree));
      return { close: () => into.drop() };
    };
    const small = new Distant();
    const ms = await linkCounted(small, apply(Tree.create(CS, 1, 1, 1), treeOps(80, 5)), 'small');
    await ms.close();
    assert.equal(small.most, STREAM_AHEAD, 'a link of small pages keeps the most reads in flight');

    // 24 folders of 1,000 long names that do not compress: pages of about 100 KB or more.
    const ops: MetaOp[] = [];
    let ino = 2;
    for (let d = 0; d < 24; d++) {
      const dino = ino++;
      ops.push(mk(ROOT_INO, `d${d}`, dino, 'dir'));
      for (let f = 0; f < 1000; f++) ops.push(mk(dino, randomBytes(60).toString('hex'), ino++));
    }
    const big = new Distant();
    const msBig = await linkCounted(big, apply(Tree.create(CS, 1, 1, 1), ops), 'big');
    await msBig.close();
    const bigPages = [...big.sizes.values()].filter((n) => n > 50_000);
    assert.equal(bigPages.length, 24);
    const bound = 1 + Math.floor(STREAM_AHEAD_BYTES / Math.min(...bigPages));
    assert.ok(bound < 24, `pages of ${Math.min(...bigPages)} bytes at least`);
    assert.ok(big.most <= bound, `${big.most} big pages read at a time (at most ${bound})`);
  });

  it('a whole-tree checkpoint (an older format) gives the same tree', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(5, 20));
    const remote = new RemoteMeta(store, KEY);
    await remote.writeCheckpoint(3, tree.snapshot());
    await remote.pushSegment(4, laterOps(tree), WRITER);
    const ms = await linkAndCompare(remote, path.join(root, 'meta'));
    assert.equal(ms.remoteSeq, 4);
    await ms.close();
  });

  it('a damaged page is a clear error and leaves no database; with an older checkpoint the link starts from it', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(10, 10));
    const remote = new RemoteMeta(store, KEY);
    const plan = new PageWriter(pageHashKey(KEY)).plan(tree, 3, undefined);
    assert.ok(await remote.writePagedCheckpoint(plan));
    const damage = async (key: string) => {
      const body = (await store.get(key))!.body;
      body[body.length - 3]! ^= 1;
      await store.put(key, body);
    };
    // A folder's page, read when the folder is loaded: the link goes through; the load is an
    // error, and the folder stays waiting (never read as empty).
    const folderPage = plan.write.find((p) => isDirCover(p.ref) && p.ref.dir !== ROOT_INO)!.ref;
    await damage(folderPage.key);
    const lazy = await MetaStore.link(path.join(root, 'lazy'), remote, CS);
    const folder = isDirCover(folderPage) ? folderPage.dir : 0;
    assert.ok(lazy.database.isUnloaded(folder));
    await assert.rejects(lazy.pages(remote).loadAll(), DamagedMetadataError);
    assert.ok(lazy.database.isUnloaded(folder));
    assert.throws(() => lazy.tree.lookup(folder, 'f1'), NotLoadedError);
    await lazy.close();
    // The root's page is read at link: no database.
    await damage(plan.write.find((p) => isDirCover(p.ref) && p.ref.dir === ROOT_INO)!.ref.key);
    const dir = path.join(root, 'meta');
    await assert.rejects(MetaStore.link(dir, remote, CS), (err: Error) => {
      assert.ok(err instanceof DamagedMetadataError, String(err));
      return true;
    });
    assert.equal(TreeDb.open(dir), undefined);
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('tree.db')),
      [],
    );
    // A newer checkpoint that opens, and the damaged one kept as the older: the link uses the newer.
    const later = laterOps(tree);
    apply(tree, later);
    await remote.pushSegment(4, later, WRITER);
    const plan2 = new PageWriter(pageHashKey(KEY)).plan(tree, 4, undefined);
    assert.ok(await remote.writePagedCheckpoint(plan2));
    const ms = await linkAndCompare(remote, dir);
    assert.deepEqual(whole(ms.tree), whole(tree));
    await ms.close();
  });

  it('a link killed half-way leaves a database no load takes, and the next link starts over', { timeout: 120_000 }, async () => {
    const bucket = path.join(root, 'bucket');
    const store = new LocalDiskStore(bucket);
    // Files in the root (its pages are read at link), and hard links (the link pages).
    const ops = treeOps(30, 100);
    let ino = 100_000;
    for (let f = 0; f < 16_000; f++) ops.push(mk(ROOT_INO, `r${f}`, ino++));
    for (let f = 0; f < 2_000; f++) ops.push({ t: 'ln', ino: 100_000 + f, parent: 2, name: `l${f}`, ms: 4 });
    const tree = apply(Tree.create(CS, 1, 1, 1), ops);
    const later = laterOps(tree);
    const remote = await publish(store, tree, 9, [later]);
    const dir = path.join(root, 'meta');
    const child = fork(
      path.join(__dirname, '..', 'helpers', 'linkChild.js'),
      [bucket, KEY.toString('hex'), String(CS), dir, '3'],
      {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      },
    );
    await killWhenStalled(child);
    assert.ok(existsSync(TreeDb.fileIn(dir)), 'the child was building the database');
    assert.equal(await MetaStore.load(dir), undefined, 'a half-built database is not metadata');
    const ms = await linkAndCompare(remote, dir);
    assert.deepEqual(whole(ms.tree), whole(apply(tree, later)));
    await ms.close();
  });
});

describe('a fresh machine loads folders on demand', () => {
  it('links without the folders, loads one when asked, and never reads one as empty', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(12, 30));
    const remote = await publish(store, tree, 5);
    const reads: string[] = [];
    const get = store.get.bind(store);
    store.get = (key, range) => {
      reads.push(key);
      return get(key, range);
    };
    const ms = await MetaStore.link(path.join(root, 'meta'), remote, CS);
    const manifest = (await remote.newestManifest())!;
    const folders = new Set(
      manifest.pages.filter((r) => isDirCover(r) && r.dir !== ROOT_INO).map((r) => (isDirCover(r) ? r.dir : 0)),
    );
    assert.equal(ms.unloadedDirs, folders.size);
    assert.equal(folders.size, 12, 'every folder with entries waits ("empty" has no page)');
    const folderPages = manifest.pages.filter((r) => isDirCover(r) && r.dir !== ROOT_INO).map((r) => r.key);
    assert.deepEqual(
      reads.filter((k) => folderPages.includes(k)),
      [],
      'the link read no folder page',
    );
    // The root, the empty folder and hard-linked files are there; a waiting folder throws.
    assert.equal(ms.tree.lookup(ROOT_INO, 'top')!.nlink, 3);
    assert.equal(ms.tree.lookup(ROOT_INO, 'empty')!.entries!.size, 0);
    const d3 = ms.tree.lookup(ROOT_INO, 'd3')!.ino;
    assert.throws(() => ms.tree.lookup(d3, 'f1'), NotLoadedError);
    assert.throws(() => ms.tree.snapshot(), NotLoadedError);
    const pages = ms.pages(remote);
    const dirsBefore = ms.tree.dirs;
    const bytesBefore = ms.tree.allocatedBytes;
    await pages.ensure([d3]);
    assert.equal(pages.ensure([d3]), undefined, 'a loaded folder needs no wait');
    assert.deepEqual(ms.tree.lookup(d3, 'f1'), tree.lookup(d3, 'f1'));
    assert.equal(ms.tree.get(d3)!.entries!.size, 30);
    assert.equal(ms.unloadedDirs, 11);
    assert.equal(ms.tree.dirs, dirsBefore, 'a folder counts once its own record is here (its home page)');
    assert.ok(ms.tree.allocatedBytes > bytesBefore);
    ms.database.verifyAll();
    await pages.loadAll();
    assert.deepEqual(whole(ms.tree), whole(tree));
    ms.database.verifyAll();
    await ms.close();
  });

  it('changes made while folders wait survive a restart and a crash, and the folders load after them', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(8, 20));
    const remote = await publish(store, tree, 5);
    const dir = path.join(root, 'meta');
    const ms = await MetaStore.link(dir, remote, CS);
    const d3 = ms.tree.lookup(ROOT_INO, 'd3')!.ino;
    const d4 = ms.tree.lookup(ROOT_INO, 'd4')!.ino;
    const f1 = tree.lookup(d3, 'f1')!.ino;
    const ino = ms.tree.nextIno;
    const ops: MetaOp[] = [
      mk(d3, 'new', ino),
      { t: 'chunk', ino, idx: 0, ref: ['c-new', 10] },
      { t: 'rm', parent: d3, name: 'f2', ms: 20 },
      { t: 'mv', sp: d3, sn: 'f3', dp: d4, dn: 'from-d3', ms: 20 },
      { t: 'attr', ino: f1, size: 7, ms: 20 },
      { t: 'chunk', ino: f1, idx: 1, ref: ['shared1', 5] },
    ];
    // As the mount does: what an op names is loaded before it is committed.
    await ms.pages(remote).ensureForOps(ops);
    for (const op of ops) {
      if (op.t === 'mk') ms.tree.nextIno = op.ino + 1;
      ms.commit(op);
    }
    await ms.flush();
    const expected = apply(tree, ops);
    // A crash: the journal holds the changes, the database the loads (a copy of the folder as
    // the store left it, opened while the store is still open: it never checkpointed).
    const crashDir = path.join(root, 'crashed');
    await cp(dir, crashDir, { recursive: true });
    const crashed = await MetaStore.load(crashDir);
    assert.ok(crashed);
    assert.equal(crashed.unloadedDirs, 6);
    await crashed.pages(remote).loadAll();
    assert.deepEqual(whole(crashed.tree), whole(expected));
    crashed.database.verifyAll();
    await crashed.close();
    // A clean restart of the first store, the other folders loaded after it.
    await ms.close();
    const again = await MetaStore.load(dir);
    assert.ok(again);
    assert.equal(again.unloadedDirs, 6);
    await again.pages(remote).loadAll();
    await again.close();
    const reopened = (await MetaStore.load(dir))!;
    assert.equal(reopened.unloadedDirs, 0);
    assert.deepEqual(whole(reopened.tree), whole(expected));
    reopened.database.verifyAll();
    await reopened.close();
  });

  it('a segment naming a file of a waiting folder loads the folder its writer named, or every folder without one', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(6, 10));
    const d5 = tree.lookup(ROOT_INO, 'd5')!.ino;
    const d1 = tree.lookup(ROOT_INO, 'd1')!.ino;
    const later: MetaOp[] = [{ t: 'rm', parent: d1, name: 'f0', ms: 9 }];
    const byIno: MetaOp[] = [{ t: 'attr', ino: tree.lookup(d5, 'f3')!.ino, mode: 0o600, ms: 9 }];
    const remote = await publish(store, tree, 5, [later]);
    const ms = await MetaStore.link(path.join(root, 'one'), remote, CS);
    assert.equal(ms.unloadedDirs, 5, 'the segment loaded the folder it names');
    await ms.pages(remote).loadAll();
    assert.deepEqual(whole(ms.tree), whole(apply(Tree.fromSnapshot(CS, tree.snapshot()), later)));
    await ms.close();
    // The writer names the file's folder: that one loads.
    const homes = homesOf(tree, byIno);
    assert.deepEqual(homes, { [String(tree.lookup(d5, 'f3')!.ino)]: [d5] });
    await remote.pushSegment(7, byIno, WRITER, homes);
    const hinted = await MetaStore.link(path.join(root, 'hinted'), remote, CS);
    assert.equal(hinted.unloadedDirs, 4, 'the folder the segment says holds that file');
    await hinted.pages(remote).loadAll();
    const expected = apply(apply(tree, later), byIno);
    assert.deepEqual(whole(hinted.tree), whole(expected));
    await hinted.close();
    // A segment of an older writer (no homes), or homes that do not hold the file: every folder.
    const d3 = tree.lookup(ROOT_INO, 'd3')!.ino;
    const byIno2: MetaOp[] = [{ t: 'chunk', ino: tree.lookup(d3, 'f4')!.ino, idx: 0, ref: ['c-late', 9] }];
    await remote.pushSegment(8, byIno2, WRITER, { [String(tree.lookup(d3, 'f4')!.ino)]: [tree.lookup(ROOT_INO, 'd2')!.ino] });
    const all = await MetaStore.link(path.join(root, 'all'), remote, CS);
    assert.equal(all.unloadedDirs, 0, 'nothing says where that file is');
    assert.deepEqual(whole(all.tree), whole(apply(expected, byIno2)));
    await all.close();
  });

  it('the background fill waits while readers use the bucket, at most its longest wait a batch', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(4, 10));
    const remote = await publish(store, tree, 5);
    const ms = await MetaStore.link(path.join(root, 'meta'), remote, CS);
    const waiting = ms.unloadedDirs;
    assert.ok(waiting > 0);
    const pages = ms.pages(remote);
    let readers = true;
    const gets = store.gets;
    pages.startFill(undefined, () => (readers ? 'bucket' : 'none'));
    await new Promise((r) => setTimeout(r, Math.min(500, FILL_YIELD_MAX_MS / 4)));
    assert.equal(ms.unloadedDirs, waiting, 'nothing loaded while readers use the bucket');
    assert.equal(store.gets, gets, 'no page read meanwhile');
    readers = false;
    await pages.whenFilled();
    assert.deepEqual(whole(ms.tree), whole(tree));
    await ms.close();

    // Readers that never stop hold each batch back the longest wait, no longer: a small batch
    // (8 folders) goes each time.
    const busy = await MetaStore.link(path.join(root, 'busy'), remote, CS);
    const started = Date.now();
    busy.pages(remote).startFill(undefined, () => 'bucket', { maxYieldMs: 300 });
    await busy.pages(remote).whenFilled();
    assert.ok(Date.now() - started >= 300 - 50, 'it waited for the readers');
    assert.deepEqual(whole(busy.tree), whole(tree));
    await busy.close();
  });

  /**
   * A fresh machine with `dirs` folders, filled in the background while `readers(n)` says what
   * readers do before the n-th batch (from 1); the folders each batch loaded.
   */
  async function fillBatches(dirs: number, readers: (n: number) => ReaderActivity): Promise<number[]> {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(dirs, 1));
    const remote = await publish(store, tree, 5);
    const ms = await MetaStore.link(path.join(root, `fill-${dirs}`), remote, CS);
    const pages = ms.pages(remote);
    // Asked before each batch (and while it waits for readers): the folders still waiting then.
    const waiting: number[] = [];
    pages.startFill(undefined, () => (waiting.push(ms.unloadedDirs), readers(waiting.length)));
    await pages.whenFilled();
    waiting.push(ms.unloadedDirs);
    assert.deepEqual(whole(ms.tree), whole(tree));
    await ms.close();
    return waiting
      .slice(1)
      .map((w, i) => waiting[i]! - w)
      .filter((n) => n > 0);
  }

  it('background batches start small and grow while no reader comes; a reader makes them small again', async () => {
    const batches = await fillBatches(200, (n) => (n === 5 ? 'bucket' : 'none'));
    const f = FILL_FIRST_BATCH_DIRS;
    assert.deepEqual(batches.slice(0, 6), [f, 2 * f, 4 * f, 8 * f, f, 2 * f], `batches: ${batches.join(', ')}`);
  });

  it('while readers read only what is here, batches stay small and the fill still ends', async () => {
    const batches = await fillBatches(40, () => 'local');
    assert.deepEqual(
      batches,
      Array.from({ length: 40 / FILL_FIRST_BATCH_DIRS }, () => FILL_FIRST_BATCH_DIRS),
      `batches: ${batches.join(', ')}`,
    );
  });

  it('a folder whose page is gone loads from the newest checkpoint when this machine is at it', async () => {
    const store = new MemoryStore();
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(4, 10));
    const remote = await publish(store, tree, 5);
    const ms = await MetaStore.link(path.join(root, 'meta'), remote, CS);
    const d2 = ms.tree.lookup(ROOT_INO, 'd2')!.ino;
    // The writer changes another folder, checkpoints (d2's page rewritten under a new key here),
    // and the old page is deleted (compaction).
    const later: MetaOp[] = [{ t: 'rm', parent: tree.lookup(ROOT_INO, 'd0')!.ino, name: 'f0', ms: 9 }];
    await remote.pushSegment(6, later, WRITER);
    apply(tree, later);
    assert.ok(await remote.writePagedCheckpoint(new PageWriter(pageHashKey(KEY)).plan(tree, 6, undefined)));
    const old = ms.database.unloadedRefs(d2)!;
    for (const ref of old) await store.delete(ref.key);
    const pages = ms.pages(remote);
    await assert.rejects(pages.ensure([d2])!, /not yet at the newest checkpoint/);
    assert.ok(ms.database.isUnloaded(d2), 'still waiting, not empty');
    // Caught up: the newest checkpoint's pages serve.
    await pages.ensureForOps(later);
    ms.applyRemote(6, later);
    await pages.ensure([d2]);
    await pages.loadAll();
    assert.deepEqual(whole(ms.tree), whole(tree));
    await ms.close();
  });
});
