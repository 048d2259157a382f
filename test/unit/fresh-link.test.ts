// A fresh machine's link (MetaStore.link): the bucket's checkpoint goes into the local database
// page by page. Pins down that the tree it builds is the one a load into memory builds (hard
// links, deduplicated chunks, statfs totals, next inode, the segments after the checkpoint, a
// whole-tree checkpoint of an older format), that a damaged page is an error that leaves no
// database, and that a link killed half-way leaves nothing a mount would take, and starts over.

import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { PAGE_PREFIX, PageWriter, isDirCover, pageHashKey } from '../../electron/engine/meta/pages';
import { DamagedMetadataError, RemoteMeta, STREAM_AHEAD, STREAM_AHEAD_BYTES } from '../../electron/engine/meta/remote';
import { MetaOp, ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { TreeDb } from '../../electron/engine/meta/treeDb';
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

async function linkAndCompare(remote: RemoteMeta, dir: string): Promise<MetaStore> {
  const expected = await remote.load(CS);
  const ms = await MetaStore.link(dir, remote, CS);
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

  it('keeps many page reads in flight for small folders, and a bounded number of bytes for big ones', async () => {
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
    /** Links `tree` published on `store`, counting the link's reads only; the tree as a load into memory has it. */
    const linkCounted = async (store: Distant, tree: Tree, name: string) => {
      const remote = await publish(store, tree, 2);
      const expected = await remote.load(CS);
      store.most = 0;
      const linked = await MetaStore.link(path.join(root, name), remote, CS);
      assert.deepEqual(whole(linked.tree), whole(expected.tree));
      return linked;
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
    const victim = plan.write.filter((p) => isDirCover(p.ref))[6]!.ref.key;
    const body = (await store.get(victim))!.body;
    body[body.length - 3]! ^= 1;
    await store.put(victim, body);
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
    const tree = apply(Tree.create(CS, 1, 1, 1), treeOps(300, 100));
    const later = laterOps(tree);
    const remote = await publish(store, tree, 9, [later]);
    const dir = path.join(root, 'meta');
    const child = fork(
      path.join(__dirname, '..', 'helpers', 'linkChild.js'),
      [bucket, KEY.toString('hex'), String(CS), dir, '280'],
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
