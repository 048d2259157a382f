// Paged checkpoints (meta/pages.ts): a tree split into pages and read back is the same tree, and
// a checkpoint rewrites exactly the pages whose content changed, for every op kind.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  CheckpointPlan,
  Manifest,
  PAGE_PREFIX,
  PART_MAX,
  PageCover,
  PageWriter,
  isDirCover,
  pageHashKey,
} from '../../electron/engine/meta/pages';
import { CKPT_PREFIX, RemoteMeta, seqKey } from '../../electron/engine/meta/remote';
import { Inode, MetaOp, ROOT_INO, Tree, TreeSnapshot } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { seal } from '../../electron/engine/chunk/crypto';

const CS = 1024;
const KEY = randomBytes(32);
const ID = { id: '00000000-0000-4000-8000-000000000001', chunkSize: CS };

function mk(parent: number, name: string, ino: number, kind: Inode['kind'] = 'file', extra: Partial<MetaOp> = {}): MetaOp {
  return { t: 'mk', parent, name, ino, kind, mode: kind === 'dir' ? 0o755 : 0o644, uid: 7, gid: 8, ms: 2, ...extra } as MetaOp;
}

/** A tree's content, independent of the order of entries and inodes. */
function canonical(t: Tree): unknown {
  const snap = t.snapshot();
  return {
    nextIno: snap.nextIno,
    inodes: [...snap.inodes]
      .sort((a, b) => a.ino - b.ino)
      .map((i) => (i.entries ? { ...i, entries: [...i.entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) } : i)),
  };
}

/** Root; dirs 2 (big: 2.5 parts), 3, 4 (empty), 5 (nested in 3); files with chunks, xattrs, links, specials. */
function richTree(bigEntries = Math.floor(PART_MAX * 2.5)): Tree {
  const t = Tree.create(CS, 1000, 1000, 1);
  const ops: MetaOp[] = [mk(ROOT_INO, 'big', 2, 'dir'), mk(ROOT_INO, 'a', 3, 'dir'), mk(ROOT_INO, 'empty', 4, 'dir')];
  ops.push(mk(3, 'nested', 5, 'dir'));
  let ino = 100;
  for (let i = 0; i < bigEntries; i++) ops.push(mk(2, `f${String(i).padStart(6, '0')}`, ino++));
  ops.push(mk(3, 'data', 10), { t: 'attr', ino: 10, size: 3000, ms: 3 });
  for (let idx = 0; idx < 3; idx++) ops.push({ t: 'chunk', ino: 10, idx, ref: [`c${idx}`, idx < 2 ? CS : 3000 - 2 * CS] });
  ops.push(
    { t: 'xattr', ino: 10, name: 'user.k', value: 'dg==', ms: 4 },
    { t: 'xattr', ino: ROOT_INO, name: 'user.r', value: 'eA==', ms: 4 },
  );
  ops.push(mk(5, 'link', 11, 'symlink', { target: '../data' }));
  ops.push(mk(5, 'fifo', 12, 'fifo'), mk(5, 'dev', 13, 'chardev', { rdev: 0x0103 }));
  ops.push(
    mk(3, 'shared', 14),
    { t: 'ln', ino: 14, parent: 5, name: 'shared2', ms: 5 },
    { t: 'ln', ino: 14, parent: 3, name: 'shared3', ms: 5 },
  );
  ops.push(mk(ROOT_INO, 'far', 9000)); // an inode number in another link range
  ops.push({ t: 'ln', ino: 9000, parent: 2, name: 'far2', ms: 6 });
  for (const op of ops) t.apply(op);
  return t;
}

const covers = (plan: CheckpointPlan): string[] => plan.write.map((w) => coverName(w.ref)).sort();
function coverName(c: PageCover): string {
  return isDirCover(c) ? `dir ${c.dir} ${JSON.stringify(c.first)}` : `links ${c.lo}`;
}

/** A writer whose last checkpoint is `tree` at `seq` (planned and written to `remote`). */
async function based(remote: RemoteMeta, tree: Tree, seq: number): Promise<PageWriter> {
  const w = new PageWriter(pageHashKey(KEY));
  w.adopt(undefined);
  const plan = w.plan(tree, seq, ID);
  assert.equal(await remote.writePagedCheckpoint(plan), true);
  w.planned();
  return w;
}

const WRITER = { id: 'writer-a', epoch: 1 };

/** Random ops over richTree(50)'s directories and inodes, six per segment, from `seed`. */
function randomSegments(seed: number): (seq: number) => MetaOp[] {
  let a = seed;
  const r = () => (a = (a * 1103515245 + 12345) % 2147483648) / 2147483648;
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const dirs = [ROOT_INO, 2, 3, 4, 5, 20, 21];
  const inos = [10, 11, 12, 13, 14, 20, 21, 22, 23, 100, 101, 102, 9000];
  const names = ['a', 'b', 'c', 'nested', 'data', 'f000001'];
  return (seq) => {
    const ops: MetaOp[] = [];
    for (let i = 0; i < 6; i++) {
      const ms = seq * 10 + i;
      switch (Math.floor(r() * 7)) {
        case 0:
          ops.push(mk(pick(dirs), pick(names), pick(inos), pick(['file', 'dir'] as const)));
          break;
        case 1:
          ops.push({ t: 'rm', parent: pick(dirs), name: pick(names), ms });
          break;
        case 2:
          ops.push({ t: 'mv', sp: pick(dirs), sn: pick(names), dp: pick(dirs), dn: pick(names), ms });
          break;
        case 3:
          ops.push({ t: 'ln', ino: pick(inos), parent: pick(dirs), name: pick(names), ms });
          break;
        case 4:
          ops.push({ t: 'attr', ino: pick(inos), mode: 0o600 + i, ms });
          break;
        case 5:
          ops.push({ t: 'xattr', ino: pick(inos), name: 'user.x', value: r() < 0.3 ? null : 'dg==', ms });
          break;
        default:
          ops.push({ t: 'attr', ino: pick(inos), size: Math.floor(r() * 3 * CS), ms });
      }
    }
    return ops;
  };
}

/** What a writer that knows nothing would write after `prev`: the pages whose content differs. */
function truth(tree: Tree, seq: number, prev: Manifest): string[] {
  const w = new PageWriter(pageHashKey(KEY));
  w.adopt(prev);
  return covers(w.plan(tree, seq, ID));
}

describe('paged checkpoints: split and read back', () => {
  it('a tree split into pages and loaded is the same tree (big directory in parts, links, symlinks, specials, xattrs)', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree();
    const w = new PageWriter(pageHashKey(KEY));
    const plan = w.plan(t, 7, ID);
    // The big directory is in parts, the links in two link pages, the empty directory in none.
    const cv = covers(plan);
    const bigParts = plan.write.filter((p) => isDirCover(p.ref) && p.ref.dir === 2);
    assert.ok(bigParts.length >= 3, cv.join('\n'));
    for (const p of bigParts) assert.ok((JSON.parse(p.body.toString()) as { entries: unknown[] }).entries.length <= PART_MAX);
    assert.deepEqual(
      cv.filter((c) => c.startsWith('links')),
      ['links 0', 'links 8192'],
    );
    assert.ok(!cv.some((c) => c.startsWith('dir 4 ')));
    for (const p of plan.write) assert.ok(p.ref.bytes === p.body.length && p.body.length > 0);
    assert.ok(await remote.writePagedCheckpoint(plan));
    assert.equal((await store.list(PAGE_PREFIX)).length, plan.write.length);
    assert.deepEqual(await store.list(CKPT_PREFIX), [seqKey(CKPT_PREFIX, 7)]);

    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 7);
    assert.deepEqual(canonical(tree), canonical(t));
    assert.deepEqual([...tree.chunkRefs].sort(), [...t.chunkRefs].sort());
    assert.deepEqual(tree.dirsOf(14), [3, 5]);
    assert.equal(tree.get(4)?.entries?.size, 0);

    // One directory's pages alone.
    const manifest = (await remote.readCheckpoint(seqKey(CKPT_PREFIX, 7))) as Manifest;
    const pages = await remote.readDirectory(manifest, 3);
    assert.deepEqual(pages.flatMap((p) => ('entries' in p ? p.entries.map((e) => e[0]) : [])).sort(), [
      'data',
      'nested',
      'shared',
      'shared3',
    ]);
  });

  it('a missing page makes the load list again; a damaged or swapped page, or one of other content, passes the checkpoint over for an older one', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree(10);
    const w = await based(remote, t, 3);
    t.apply(mk(3, 'later', 50));
    w.noteSegment(t, 4, [mk(3, 'later', 50)]);
    const plan = w.plan(t, 4, ID);
    assert.ok(await remote.writePagedCheckpoint(plan));
    w.planned();
    // Swap the new page of directory 3 for the old one: authentication fails (key as associated data).
    const newKey = plan.write.find((p) => isDirCover(p.ref) && p.ref.dir === 3)!.ref.key;
    const m3 = (await remote.readCheckpoint(seqKey(CKPT_PREFIX, 3))) as Manifest;
    const oldKey = m3.pages.find((p) => isDirCover(p) && p.dir === 3)!.key;
    const saved = (await store.get(newKey))!.body;
    await store.put(newKey, (await store.get(oldKey))!.body);
    const tolerant = await remote.loadTolerant(CS);
    assert.equal(tolerant.seq, 3, 'the older checkpoint, with no segment after it');
    assert.deepEqual(tolerant.damage.checkpoints, [seqKey(CKPT_PREFIX, 4)]);
    await store.put(newKey, saved);
    assert.deepEqual(canonical((await remote.load(CS)).tree), canonical(t));
    // A manifest that names an older page of the same directory (authentic, but other content).
    const m4key = seqKey(CKPT_PREFIX, 4);
    const m4 = (await remote.readCheckpoint(m4key)) as Manifest;
    const stale = { ...m4, pages: m4.pages.map((p) => (p.key === newKey ? { ...p, key: oldKey } : p)) };
    await store.put(m4key, seal(KEY, Buffer.from(JSON.stringify(stale)), `meta:${m4key}`));
    const passedOver = await remote.loadTolerant(CS);
    assert.equal(passedOver.seq, 3);
    assert.deepEqual(passedOver.damage.checkpoints, [m4key]);
  });
});

describe('paged checkpoints: what is rewritten', () => {
  // The ops, and the pages they change (a directory's record, with its mtime, is in its parent's page).
  const cases: Array<[string, MetaOp[], string[]]> = [
    ['mk in a directory', [mk(3, 'new', 60)], ['dir 3 ""', 'dir 1 ""']],
    ['attr of a file', [{ t: 'attr', ino: 10, mode: 0o600, ms: 9 }], ['dir 3 ""']],
    ['attr of a directory: its record is in its parent', [{ t: 'attr', ino: 5, mode: 0o700, ms: 9 }], ['dir 3 ""']],
    ['attr of the root: the manifest only', [{ t: 'attr', ino: ROOT_INO, mode: 0o700, ms: 9 }], []],
    ['chunk of a file', [{ t: 'chunk', ino: 10, idx: 0, ref: ['z', CS] }], ['dir 3 ""']],
    ['xattr of a file', [{ t: 'xattr', ino: 12, name: 'user.q', value: 'eQ==', ms: 9 }], ['dir 5 ""']],
    ['rm in one part of the big directory', [{ t: 'rm', parent: 2, name: 'f000005', ms: 9 }], ['dir 2 ""', 'dir 1 ""']],
    ['mk in the last part of the big directory', [mk(2, 'zzz', 61)], ['dir 1 ""']],
    ['mv across directories', [{ t: 'mv', sp: 3, sn: 'data', dp: 5, dn: 'data', ms: 9 }], ['dir 1 ""', 'dir 3 ""', 'dir 5 ""']],
    ['mv of a directory', [{ t: 'mv', sp: 3, sn: 'nested', dp: ROOT_INO, dn: 'nested', ms: 9 }], ['dir 3 ""', 'dir 1 ""']],
    [
      'ln: the inode leaves its home page for a link page',
      [{ t: 'ln', ino: 10, parent: 5, name: 'd2', ms: 9 }],
      ['dir 3 ""', 'dir 5 ""', 'links 0'],
    ],
    [
      'rm of a link down to one name: back in its home page',
      [
        { t: 'rm', parent: 5, name: 'shared2', ms: 9 },
        { t: 'rm', parent: 3, name: 'shared3', ms: 9 },
      ],
      ['dir 1 ""', 'dir 3 ""', 'dir 5 ""'],
    ],
    ['attr of a linked inode: its link page', [{ t: 'attr', ino: 9000, mode: 0o600, ms: 9 }], ['links 8192']],
    ['rmdir of an empty directory', [{ t: 'rm', parent: ROOT_INO, name: 'empty', ms: 9 }], ['dir 1 ""']],
    [
      'rm of a directory with entries (a replay of odd ops): its pages go',
      [{ t: 'rm', parent: 3, name: 'nested', ms: 9 }],
      ['dir 1 ""', 'dir 3 ""', 'links 0'],
    ],
  ];
  for (const [what, ops, want] of cases) {
    it(`${what}: exactly the changed pages`, async () => {
      const store = new MemoryStore();
      const remote = new RemoteMeta(store, KEY, ID);
      const t = richTree();
      const w = await based(remote, t, 1);
      const prev = (await remote.readCheckpoint(seqKey(CKPT_PREFIX, 1))) as Manifest;
      for (const op of ops) t.apply(op);
      w.noteSegment(t, 2, ops);
      assert.ok(w.tracks(t, 2));
      const plan = w.plan(t, 2, ID);
      const expected = [...want];
      // The big directory's last part covers names from its bound on.
      const got = covers(plan).map((c) => (c.startsWith('dir 2 ') && !c.endsWith('""') ? 'dir 2 last' : c));
      if (what.startsWith('mk in the last part')) expected.push('dir 2 last');
      assert.deepEqual(got, expected.sort());
      assert.deepEqual(covers(plan), truth(t, 2, prev), 'what a writer comparing every page would write');
      assert.ok(await remote.writePagedCheckpoint(plan));
      w.planned();
      assert.deepEqual(canonical((await remote.load(CS)).tree), canonical(t));
    });
  }

  it('random op sequences: each checkpoint writes what a full comparison would, and loads the same tree', async () => {
    for (const seed of [1, 2, 3]) {
      const next = randomSegments(seed);
      const store = new MemoryStore();
      const remote = new RemoteMeta(store, KEY, ID);
      const t = richTree(50);
      const w = await based(remote, t, 0);
      for (let seq = 1; seq <= 30; seq++) {
        const ops = next(seq);
        const prev = (await remote.readCheckpoint((await store.list(CKPT_PREFIX)).pop()!)) as Manifest;
        for (const op of ops) t.apply(op);
        w.noteSegment(t, seq, ops);
        if (seq % 3 !== 0) continue; // several segments per checkpoint
        const plan = w.plan(t, seq, ID);
        assert.deepEqual(covers(plan), truth(t, seq, prev), `seed ${seed} seq ${seq}`);
        assert.ok(await remote.writePagedCheckpoint(plan));
        w.planned();
        assert.deepEqual(canonical((await remote.load(CS)).tree), canonical(t), `seed ${seed} seq ${seq}`);
      }
    }
  });

  it('a restarted writer takes up from the newest manifest and the segments since: it recomputes what they changed and writes what a full comparison would', async () => {
    for (const seed of [4, 5, 6, 7]) {
      const next = randomSegments(seed);
      const store = new MemoryStore();
      const remote = new RemoteMeta(store, KEY, ID);
      const t = richTree(50);
      // Directories the ops never touch: their pages are not recomputed.
      for (let d = 0; d < 20; d++) {
        t.apply(mk(ROOT_INO, `quiet${d}`, 500 + d, 'dir'));
        t.apply(mk(500 + d, 'file', 600 + d));
      }
      let w = await based(remote, t, 0);
      let seq = 0;
      for (let round = 1; round <= 6; round++) {
        // A run of segments pushed (and noted by the writer that pushed them), then a restart:
        // a new writer knows only the bucket and the tree as it is now.
        const count = 1 + (round % 4);
        for (let i = 0; i < count; i++) {
          const ops = next(++seq);
          for (const op of ops) t.apply(op);
          await remote.pushSegment(seq, ops, WRITER);
          w.noteSegment(t, seq, ops);
        }
        const manifest = (await remote.newestManifest())!;
        const restarted = new PageWriter(pageHashKey(KEY));
        const segments = await remote.readSegments(manifest.seq + 1, seq);
        assert.ok(segments, `seed ${seed} round ${round}: the segments since the manifest are there`);
        assert.equal(restarted.resume(t, manifest, await remote.linkInodes(manifest), segments), true);
        assert.ok(restarted.tracks(t, seq));
        const plan = restarted.plan(t, seq, ID);
        assert.deepEqual(covers(plan), truth(t, seq, manifest), `seed ${seed} round ${round}`);
        const full = new PageWriter(pageHashKey(KEY));
        full.adopt(manifest);
        assert.ok(plan.recomputed < full.plan(t, seq, ID).recomputed, 'fewer pages recomputed than a full comparison');
        assert.ok(await remote.writePagedCheckpoint(plan));
        restarted.planned();
        assert.deepEqual(canonical((await remote.load(CS)).tree), canonical(t), `seed ${seed} round ${round}`);
        w = restarted;
      }
      assert.ok(w.tracks(t, seq));
    }
  });

  it('a restarted writer moves an inode that lost its other names back to its home page (known from the link pages)', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree(10);
    // Inode 100 is named in directory 2 and in directory 5 (inside 3): removing its name in 5
    // names directories 5 and 3 only, and the inode goes back to directory 2's page.
    t.apply({ t: 'ln', ino: 100, parent: 5, name: 'l', ms: 8 });
    await based(remote, t, 1);
    const op: MetaOp = { t: 'rm', parent: 5, name: 'l', ms: 9 };
    t.apply(op);
    await remote.pushSegment(2, [op], WRITER);
    const manifest = (await remote.newestManifest())!;
    const w = new PageWriter(pageHashKey(KEY));
    assert.ok(w.resume(t, manifest, await remote.linkInodes(manifest), (await remote.readSegments(2, 2))!));
    const plan = w.plan(t, 2, ID);
    assert.deepEqual(covers(plan), truth(t, 2, manifest));
    assert.ok(covers(plan).includes('dir 2 ""'), "directory 2's page takes the inode back");
    assert.ok(await remote.writePagedCheckpoint(plan));
    assert.deepEqual(canonical((await remote.load(CS)).tree), canonical(t));
  });

  it('a writer cannot take up when a segment since the manifest is missing or out of order', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree(10);
    await based(remote, t, 1);
    const op: MetaOp = { t: 'attr', ino: 10, mode: 0o600, ms: 9 };
    t.apply(op);
    await remote.pushSegment(2, [op], WRITER);
    await remote.pushSegment(4, [op], WRITER);
    assert.equal(await remote.readSegments(2, 4), undefined, 'segment 3 is missing');
    const manifest = (await remote.newestManifest())!;
    const w = new PageWriter(pageHashKey(KEY));
    assert.equal(w.resume(t, manifest, new Map(), [{ seq: 3, ops: [op] }]), false);
    assert.equal(w.tracks(t, 3), false);
  });

  it('a page does not depend on the order in which fields were set: a reloaded tree with its fields reordered writes no page', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree(20);
    await based(remote, t, 1);
    const snap = t.snapshot();
    const reordered = {
      nextIno: snap.nextIno,
      inodes: snap.inodes.map((i) => {
        const keys = Object.keys(i).reverse();
        const o: Record<string, unknown> = {};
        for (const k of keys) o[k] = (i as Record<string, unknown>)[k];
        if (i.xattrs) o.xattrs = Object.fromEntries(Object.entries(i.xattrs).reverse());
        return o;
      }),
    } as unknown as TreeSnapshot;
    const loaded = Tree.fromSnapshot(CS, reordered);
    const w = new PageWriter(pageHashKey(KEY));
    w.adopt(await remote.newestManifest());
    assert.deepEqual(covers(w.plan(loaded, 1, ID)), []);
  });

  it('a writer that does not know what changed compares with the newest manifest and writes only what differs', async () => {
    const store = new MemoryStore();
    const remote = new RemoteMeta(store, KEY, ID);
    const t = richTree();
    await based(remote, t, 1);
    const before = (await store.list(PAGE_PREFIX)).length;
    t.apply({ t: 'attr', ino: 10, mode: 0o600, ms: 9 });
    const restarted = new PageWriter(pageHashKey(KEY));
    assert.equal(restarted.tracks(t, 2), false);
    restarted.adopt(await remote.newestManifest());
    const plan = restarted.plan(t, 2, ID);
    assert.deepEqual(covers(plan), ['dir 3 ""']);
    assert.ok(plan.recomputed > 5, 'every page was recomputed');
    assert.ok(await remote.writePagedCheckpoint(plan));
    assert.equal((await store.list(PAGE_PREFIX)).length, before + 1);
    // Out-of-order segments make the next plan a full one.
    restarted.planned();
    restarted.noteSegment(t, 4, []);
    assert.equal(restarted.tracks(t, 4), false);
  });
});
