// Pins down Tree.apply for every op kind, chunk reference counting, snapshots, and that apply is deterministic and total.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ChunkRef, Inode, MetaOp, ROOT_INO, Tree, TreeSnapshot } from '../../electron/engine/meta/tree';
import { checkTree } from '../../electron/engine/check';

const CS = 1024;

function fresh(): Tree {
  return Tree.create(CS, 1000, 1000, 1);
}

function mk(parent: number, name: string, ino: number, kind: Inode['kind'] = 'file', ms = 2, target?: string): MetaOp {
  return { t: 'mk', parent, name, ino, kind, mode: kind === 'dir' ? 0o755 : 0o644, uid: 7, gid: 8, target, ms };
}

function size(ino: number, bytes: number, ms = 3): MetaOp {
  return { t: 'attr', ino, size: bytes, ms };
}

function chunk(ino: number, idx: number, ref: ChunkRef | null): MetaOp {
  return { t: 'chunk', ino, idx, ref };
}

/** A file `name` under `parent` of `bytes` bytes whose chunks are named `${prefix}<idx>`. */
function fileWithChunks(t: Tree, parent: number, name: string, ino: number, bytes: number, prefix: string): void {
  t.apply(mk(parent, name, ino));
  t.apply(size(ino, bytes));
  for (let idx = 0; idx * CS < bytes; idx++) t.apply(chunk(ino, idx, [`${prefix}${idx}`, Math.min(CS, bytes - idx * CS)]));
}

/** Reference counts recomputed from scratch, to compare with the tree's incremental ones. */
function recount(t: Tree): Map<string, number> {
  const m = new Map<string, number>();
  for (const inode of t.inodes.values()) for (const c of inode.chunks ?? []) if (c) m.set(c[0], (m.get(c[0]) ?? 0) + 1);
  return m;
}

function sortedMap<V>(m: Iterable<[string, V]>): Array<[string, V]> {
  return [...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

describe('Tree.apply mk', () => {
  it('creates files, directories and symlinks under a directory and advances nextIno', () => {
    const t = fresh();
    assert.deepEqual(t.apply(mk(ROOT_INO, 'f', 2, 'file', 5)), []);
    t.apply(mk(ROOT_INO, 'd', 10, 'dir', 6));
    t.apply(mk(ROOT_INO, 'l', 3, 'symlink', 7, 'café/x'));

    const f = t.lookup(ROOT_INO, 'f')!;
    assert.equal(f.kind, 'file');
    assert.equal(f.size, 0);
    assert.equal(f.mode, 0o644);
    assert.deepEqual([f.uid, f.gid, f.atimeMs, f.mtimeMs, f.ctimeMs], [7, 8, 5, 5, 5]);
    assert.equal(f.entries, undefined);

    const d = t.lookup(ROOT_INO, 'd')!;
    assert.equal(d.kind, 'dir');
    assert.ok(d.entries instanceof Map);
    assert.equal(d.entries.size, 0);

    const l = t.lookup(ROOT_INO, 'l')!;
    assert.equal(l.target, 'café/x');
    assert.equal(l.size, Buffer.byteLength('café/x'), 'symlink size counts UTF-8 bytes');

    const root = t.get(ROOT_INO)!;
    assert.equal(root.mtimeMs, 7);
    assert.equal(root.ctimeMs, 7);
    assert.equal(t.nextIno, 11, 'nextIno moves past the largest ino seen');
    assert.equal(t.allocIno(), 11);
  });

  it('ignores a name that exists, an ino that exists, a missing parent and a parent that is a file', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    const before = JSON.stringify(t.snapshot());
    t.apply(mk(ROOT_INO, 'f', 3));
    t.apply(mk(ROOT_INO, 'g', 2));
    t.apply(mk(99, 'h', 4));
    t.apply(mk(2, 'inside-a-file', 5));
    assert.equal(JSON.stringify(t.snapshot()), before);
  });
});

describe('Tree.apply rm', () => {
  it('removes the entry and the inode, returns the released ino and releases its chunk refs', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'f', 2, 2 * CS + 1, 'a');
    assert.equal(t.chunkRefs.size, 3);
    assert.deepEqual(t.apply({ t: 'rm', parent: ROOT_INO, name: 'f', ms: 9 }), [2]);
    assert.equal(t.lookup(ROOT_INO, 'f'), undefined);
    assert.equal(t.get(2), undefined);
    assert.equal(t.chunkRefs.size, 0);
    assert.equal(t.get(ROOT_INO)!.mtimeMs, 9);
  });

  it('ignores a missing name or parent', () => {
    const t = fresh();
    assert.deepEqual(t.apply({ t: 'rm', parent: ROOT_INO, name: 'nope', ms: 9 }), []);
    assert.deepEqual(t.apply({ t: 'rm', parent: 42, name: 'nope', ms: 9 }), []);
    assert.equal(t.get(ROOT_INO)!.mtimeMs, 1);
  });
});

describe('Tree.apply mv', () => {
  it('renames within a directory and moves across directories, touching both parents', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'd', 2, 'dir'));
    t.apply(mk(ROOT_INO, 'f', 3));
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'f', dp: ROOT_INO, dn: 'g', ms: 10 }), []);
    assert.equal(t.lookup(ROOT_INO, 'f'), undefined);
    assert.equal(t.lookup(ROOT_INO, 'g')!.ino, 3);
    assert.equal(t.get(3)!.ctimeMs, 10);

    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'g', dp: 2, dn: 'h', ms: 11 }), []);
    assert.equal(t.lookup(ROOT_INO, 'g'), undefined);
    assert.equal(t.lookup(2, 'h')!.ino, 3);
    assert.equal(t.get(ROOT_INO)!.mtimeMs, 11);
    assert.equal(t.get(2)!.mtimeMs, 11);
  });

  it('renaming over an existing file releases the replaced inode and its chunk refs', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'src', 2, CS, 's');
    fileWithChunks(t, ROOT_INO, 'dst', 3, 2 * CS, 'd');
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'src', dp: ROOT_INO, dn: 'dst', ms: 12 }), [3]);
    assert.equal(t.get(3), undefined);
    assert.equal(t.lookup(ROOT_INO, 'dst')!.ino, 2);
    assert.equal(t.lookup(ROOT_INO, 'src'), undefined);
    assert.deepEqual(sortedMap(t.chunkRefs), [['s0', 1]]);
  });

  it('renaming over a file that shares a chunk keeps the shared chunk referenced once', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 2));
    t.apply(size(2, CS));
    t.apply(chunk(2, 0, ['same', CS]));
    t.apply(mk(ROOT_INO, 'b', 3));
    t.apply(size(3, CS));
    t.apply(chunk(3, 0, ['same', CS]));
    assert.equal(t.chunkRefs.get('same'), 2);
    t.apply({ t: 'mv', sp: ROOT_INO, sn: 'a', dp: ROOT_INO, dn: 'b', ms: 12 });
    assert.equal(t.chunkRefs.get('same'), 1);
  });

  it('moves a directory with its contents', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 2, 'dir'));
    t.apply(mk(ROOT_INO, 'b', 3, 'dir'));
    t.apply(mk(2, 'sub', 4, 'dir'));
    fileWithChunks(t, 4, 'leaf', 5, 10, 'x');
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'a', dp: 3, dn: 'a2', ms: 13 }), []);
    assert.equal(t.lookup(ROOT_INO, 'a'), undefined);
    const moved = t.lookup(3, 'a2')!;
    assert.equal(moved.ino, 2);
    const leaf = t.lookup(t.lookup(moved.ino, 'sub')!.ino, 'leaf')!;
    assert.equal(leaf.ino, 5);
    assert.equal(leaf.size, 10);
    assert.equal(t.chunkRefs.get('x0'), 1);
  });

  it('is a no-op when source and destination are the same entry, and ignores missing ends', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    const before = JSON.stringify(t.snapshot());
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'f', dp: ROOT_INO, dn: 'f', ms: 20 }), []);
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'missing', dp: ROOT_INO, dn: 'x', ms: 20 }), []);
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'f', dp: 77, dn: 'x', ms: 20 }), []);
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'f', dp: 2, dn: 'x', ms: 20 }), [], 'a file is not a directory');
    assert.equal(JSON.stringify(t.snapshot()), before);
  });
});

describe('Tree.apply attr', () => {
  it('sets mode (permission bits only), owner and times; ctime is the op time', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply({ t: 'attr', ino: 2, mode: 0o170755, uid: 1, gid: 2, atimeMs: 100, mtimeMs: 200, ms: 300 });
    const f = t.get(2)!;
    assert.equal(f.mode, 0o0755);
    assert.deepEqual([f.uid, f.gid, f.atimeMs, f.mtimeMs, f.ctimeMs], [1, 2, 100, 200, 300]);
  });

  it('growing a file leaves its chunks alone; size is ignored on directories', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'f', 2, 100, 'a');
    t.apply(size(2, 10 * CS));
    assert.equal(t.get(2)!.size, 10 * CS);
    assert.deepEqual(t.get(2)!.chunks, [['a0', 100]]);
    t.apply(mk(ROOT_INO, 'd', 3, 'dir'));
    t.apply(size(3, 5000));
    assert.equal(t.get(3)!.size, 0);
  });

  it('shrinking drops the chunk refs past the new end and clamps the last chunk', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'f', 2, 3 * CS + 100, 'a');
    assert.equal(t.get(2)!.chunks!.length, 4);

    t.apply(size(2, CS + 10));
    const f = t.get(2)!;
    assert.equal(f.size, CS + 10);
    assert.deepEqual(f.chunks, [
      ['a0', CS],
      ['a1', 10],
    ]);
    assert.deepEqual(sortedMap(t.chunkRefs), [
      ['a0', 1],
      ['a1', 1],
    ]);

    t.apply(size(2, CS));
    assert.deepEqual(t.get(2)!.chunks, [['a0', CS]], 'a cut on a chunk boundary keeps the previous chunk whole');
    assert.deepEqual(sortedMap(t.chunkRefs), [['a0', 1]]);

    t.apply(size(2, 0));
    assert.deepEqual(t.get(2)!.chunks, []);
    assert.equal(t.chunkRefs.size, 0);
  });

  it('shrinking inside a chunk that is already shorter than the cut leaves it alone', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply(size(2, 2 * CS));
    t.apply(chunk(2, 1, ['short', 50]));
    t.apply(size(2, CS + 500));
    assert.deepEqual(t.get(2)!.chunks, [null, ['short', 50]]);
  });
});

describe('Tree.apply chunk', () => {
  it('ignores a chunk that starts at or beyond the file size', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply(size(2, CS));
    t.apply(chunk(2, 1, ['beyond', CS]));
    assert.equal(t.get(2)!.chunks, undefined);
    assert.equal(t.chunkRefs.size, 0);
  });

  it('clamps a chunk longer than the file to the file size', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply(size(2, CS + 300));
    t.apply(chunk(2, 1, ['tail', CS]));
    assert.deepEqual(t.get(2)!.chunks, [null, ['tail', 300]]);
  });

  it('pads with holes, punches holes with null, and trims trailing holes', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply(size(2, 4 * CS));
    t.apply(chunk(2, 2, ['c2', CS]));
    assert.deepEqual(t.get(2)!.chunks, [null, null, ['c2', CS]]);
    t.apply(chunk(2, 0, ['c0', CS]));
    t.apply(chunk(2, 2, null));
    assert.deepEqual(t.get(2)!.chunks, [['c0', CS]]);
    assert.deepEqual(sortedMap(t.chunkRefs), [['c0', 1]]);
    t.apply(chunk(2, 3, null));
    assert.deepEqual(t.get(2)!.chunks, [['c0', CS]], 'a hole past the end adds nothing');
  });

  it('replacing a chunk releases the old name', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'f', 2, CS, 'old');
    t.apply(chunk(2, 0, ['new', CS]));
    assert.deepEqual(sortedMap(t.chunkRefs), [['new', 1]]);
  });

  it('is ignored for directories, symlinks and missing inodes', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'd', 2, 'dir'));
    t.apply(mk(ROOT_INO, 'l', 3, 'symlink', 2, 'target'));
    t.apply(chunk(2, 0, ['x', 1]));
    t.apply(chunk(3, 0, ['x', 1]));
    t.apply(chunk(99, 0, ['x', 1]));
    assert.equal(t.chunkRefs.size, 0);
    assert.equal(t.get(2)!.chunks, undefined);
    assert.equal(t.get(3)!.chunks, undefined);
  });
});

describe('Tree.apply xattr', () => {
  it('sets, replaces and removes extended attributes', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply({ t: 'xattr', ino: 2, name: 'user.a', value: 'AQI=', ms: 30 });
    t.apply({ t: 'xattr', ino: 2, name: 'user.b', value: 'Aw==', ms: 31 });
    t.apply({ t: 'xattr', ino: 2, name: 'user.a', value: 'BA==', ms: 32 });
    assert.deepEqual(t.get(2)!.xattrs, { 'user.a': 'BA==', 'user.b': 'Aw==' });
    assert.equal(t.get(2)!.ctimeMs, 32);
    t.apply({ t: 'xattr', ino: 2, name: 'user.a', value: null, ms: 33 });
    t.apply({ t: 'xattr', ino: 2, name: 'user.never-set', value: null, ms: 34 });
    assert.deepEqual(t.get(2)!.xattrs, { 'user.b': 'Aw==' });
    assert.equal(t.get(2)!.ctimeMs, 34);
  });

  it('removing from an inode without xattrs leaves it without xattrs', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'f', 2));
    t.apply({ t: 'xattr', ino: 2, name: 'user.a', value: null, ms: 30 });
    assert.equal(t.get(2)!.xattrs, undefined);
  });
});

describe('Tree chunk reference counting', () => {
  it('counts one chunk name used by two files once per use, and releases on rm and truncate', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'a', 2, 2 * CS, 'shared');
    fileWithChunks(t, ROOT_INO, 'b', 3, 2 * CS, 'shared');
    assert.deepEqual(sortedMap(t.chunkRefs), [
      ['shared0', 2],
      ['shared1', 2],
    ]);

    t.apply({ t: 'rm', parent: ROOT_INO, name: 'a', ms: 40 });
    assert.deepEqual(sortedMap(t.chunkRefs), [
      ['shared0', 1],
      ['shared1', 1],
    ]);

    t.apply(size(3, CS));
    assert.deepEqual(sortedMap(t.chunkRefs), [['shared0', 1]]);

    t.apply(size(3, 0));
    assert.equal(t.chunkRefs.size, 0);
  });

  it('counts a name repeated inside one file once per index', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'zeros', 2));
    t.apply(size(2, 3 * CS));
    for (let i = 0; i < 3; i++) t.apply(chunk(2, i, ['z', CS]));
    assert.equal(t.chunkRefs.get('z'), 3);
    t.apply(size(2, CS + 1));
    assert.equal(t.chunkRefs.get('z'), 2, 'the clamped chunk keeps its name');
    t.apply(chunk(2, 0, ['z', CS]));
    assert.equal(t.chunkRefs.get('z'), 2, 'rewriting the same ref does not change the count');
  });
});

/** A tree with some of everything. */
function richTree(): Tree {
  const t = fresh();
  t.apply(mk(ROOT_INO, 'dir', 2, 'dir'));
  fileWithChunks(t, 2, 'big', 3, 3 * CS + 7, 'b');
  fileWithChunks(t, ROOT_INO, 'copy', 4, CS, 'b');
  t.apply(mk(ROOT_INO, 'link', 5, 'symlink', 4, '../elsewhere'));
  t.apply({ t: 'xattr', ino: 3, name: 'user.tag', value: 'dGFn', ms: 5 });
  t.apply({ t: 'attr', ino: 3, mode: 0o600, atimeMs: 50, mtimeMs: 60, ms: 70 });
  t.apply(mk(ROOT_INO, 'sparse', 9));
  t.apply(size(9, 5 * CS));
  t.apply(chunk(9, 3, ['s3', CS]));
  return t;
}

describe('Tree snapshots', () => {
  it('fromSnapshot(snapshot()) reproduces inodes, nextIno and chunk refs, also through JSON', () => {
    const t = richTree();
    const viaJson = JSON.parse(JSON.stringify(t.snapshot())) as TreeSnapshot;
    for (const snap of [t.snapshot(), viaJson]) {
      const u = Tree.fromSnapshot(CS, snap);
      assert.deepEqual(u.inodes, t.inodes);
      assert.deepEqual(sortedMap(u.chunkRefs), sortedMap(t.chunkRefs));
      assert.equal(u.nextIno, t.nextIno);
      assert.deepEqual(u.snapshot(), t.snapshot());
    }
  });

  it('a restored tree keeps applying ops exactly like the original', () => {
    const t = richTree();
    const u = Tree.fromSnapshot(CS, JSON.parse(JSON.stringify(t.snapshot())) as TreeSnapshot);
    const more: MetaOp[] = [
      size(3, CS + 1),
      { t: 'rm', parent: ROOT_INO, name: 'copy', ms: 80 },
      { t: 'mv', sp: 2, sn: 'big', dp: ROOT_INO, dn: 'sparse', ms: 81 },
      mk(ROOT_INO, 'new', t.nextIno),
    ];
    for (const op of more) assert.deepEqual(u.apply(op), t.apply(op));
    assert.deepEqual(u.snapshot(), t.snapshot());
    assert.deepEqual(sortedMap(u.chunkRefs), sortedMap(t.chunkRefs));
  });

  it('refuses a snapshot without a root directory', () => {
    assert.throws(() => Tree.fromSnapshot(CS, { nextIno: 5, inodes: [] }), /root/);
  });

  it('a snapshot is a value: ops applied after taking it do not change it', () => {
    const t = richTree();
    const snap = t.snapshot();
    const frozen = JSON.stringify(snap);
    t.apply(chunk(3, 0, ['rewritten', CS]));
    t.apply({ t: 'xattr', ino: 3, name: 'user.tag', value: 'bmV3', ms: 90 });
    assert.equal(JSON.stringify(snap), frozen);
  });
});

/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

function randomOps(seed: number, n: number): MetaOp[] {
  const r = rng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const inos = [1, 2, 3, 4, 5, 6, 7, 8, 50];
  const names = ['a', 'b', 'c', 'd'];
  const chunkNames = ['k1', 'k2', 'k3'];
  const ops: MetaOp[] = [];
  for (let i = 0; i < n; i++) {
    const ms = 100 + i;
    switch (Math.floor(r() * 7)) {
      case 0:
        ops.push(mk(pick(inos), pick(names), pick(inos), pick(['file', 'file', 'dir', 'symlink'] as const), ms, 'tgt'));
        break;
      case 1:
        ops.push({ t: 'rm', parent: pick(inos), name: pick(names), ms });
        break;
      case 2:
        ops.push({ t: 'mv', sp: pick(inos), sn: pick(names), dp: pick(inos), dn: pick(names), ms });
        break;
      case 3:
        ops.push({ t: 'attr', ino: pick(inos), size: Math.floor(r() * 5 * CS), mode: r() < 0.3 ? 0o644 : undefined, ms });
        break;
      case 4:
      case 5:
        ops.push(chunk(pick(inos), Math.floor(r() * 5), r() < 0.2 ? null : [pick(chunkNames), 1 + Math.floor(r() * CS)]));
        break;
      default:
        ops.push({ t: 'xattr', ino: pick(inos), name: pick(['user.x', 'user.y']), value: r() < 0.3 ? null : 'dg==', ms });
    }
  }
  return ops;
}

describe('Tree.apply is deterministic and total', () => {
  it('ops on missing inodes or names change nothing and never throw', () => {
    const t = richTree();
    const before = JSON.stringify(t.snapshot());
    const refsBefore = sortedMap(t.chunkRefs);
    const strays: MetaOp[] = [
      { t: 'rm', parent: 404, name: 'x', ms: 1 },
      { t: 'rm', parent: ROOT_INO, name: 'no-such', ms: 1 },
      { t: 'mv', sp: 404, sn: 'x', dp: ROOT_INO, dn: 'y', ms: 1 },
      { t: 'mv', sp: ROOT_INO, sn: 'dir', dp: 404, dn: 'y', ms: 1 },
      { t: 'attr', ino: 404, size: 0, mode: 0o777, ms: 1 },
      chunk(404, 0, ['z', 1]),
      chunk(404, 0, null),
      { t: 'xattr', ino: 404, name: 'user.z', value: 'eg==', ms: 1 },
      mk(404, 'orphan', 405),
    ];
    for (const op of strays) assert.deepEqual(t.apply(op), []);
    assert.equal(JSON.stringify(t.snapshot()), before);
    assert.deepEqual(sortedMap(t.chunkRefs), refsBefore);
  });

  it('random op sequences never throw, keep refcounts exact and chunk refs inside the file size, and replay identically', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const ops = randomOps(seed, 1500);
      const t = fresh();
      for (const op of ops) assert.doesNotThrow(() => t.apply(op), `seed ${seed}: ${JSON.stringify(op)}`);

      assert.deepEqual(sortedMap(t.chunkRefs), sortedMap(recount(t)), `seed ${seed}: refcounts`);
      for (const inode of t.inodes.values()) {
        const chunks = inode.chunks ?? [];
        if (chunks.length > 0) assert.notEqual(chunks[chunks.length - 1], null, `seed ${seed}: trailing hole in ${inode.ino}`);
        chunks.forEach((c, idx) => {
          if (!c) return;
          assert.ok(idx * CS < inode.size, `seed ${seed}: chunk ${idx} of ${inode.ino} starts past size ${inode.size}`);
          assert.ok(c[1] <= inode.size - idx * CS, `seed ${seed}: chunk ${idx} of ${inode.ino} runs past size`);
        });
      }

      // Replaying from a mid-way snapshot (as another machine would) gives the same tree.
      const half = Math.floor(ops.length / 2);
      const first = fresh();
      for (const op of ops.slice(0, half)) first.apply(op);
      const resumed = Tree.fromSnapshot(CS, JSON.parse(JSON.stringify(first.snapshot())) as TreeSnapshot);
      for (const op of ops.slice(half)) resumed.apply(op);
      assert.deepEqual(resumed.snapshot(), t.snapshot(), `seed ${seed}: replay`);
      assert.deepEqual(sortedMap(resumed.chunkRefs), sortedMap(t.chunkRefs));
    }
  });
});

describe('Tree nameless inodes (files deleted while open)', () => {
  it('keep a copy of the inode and its chunk references, apply ops to it, and release them when removed', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'open.bin', 5, 3 * CS, 'c');
    const kept = new Tree(CS);
    kept.addNameless(t.get(5)!);
    t.apply({ t: 'rm', parent: ROOT_INO, name: 'open.bin', ms: 9 });
    assert.equal(t.get(5), undefined);
    assert.equal(t.chunkRefs.size, 0, 'the committed tree no longer references the chunks');
    assert.deepEqual([...kept.chunkRefs.keys()].sort(), ['c0', 'c1', 'c2']);
    // A truncate through an open handle applies to the kept copy alone.
    kept.apply(size(5, CS + 10, 10));
    assert.equal(kept.get(5)!.size, CS + 10);
    assert.deepEqual(kept.get(5)!.chunks, [
      ['c0', CS],
      ['c1', 10],
    ]);
    assert.deepEqual([...kept.chunkRefs.keys()].sort(), ['c0', 'c1']);
    kept.removeNameless(5);
    assert.equal(kept.get(5), undefined);
    assert.equal(kept.chunkRefs.size, 0);
  });
});

describe('Tree special files (FIFOs, sockets, devices)', () => {
  it('are metadata only: type, mode and device number survive a snapshot and a replay; sizes and chunks never stick', () => {
    const t = fresh();
    const ops: MetaOp[] = [
      { t: 'mk', parent: ROOT_INO, name: 'pipe', ino: 2, kind: 'fifo', mode: 0o640, uid: 7, gid: 8, ms: 2 },
      { t: 'mk', parent: ROOT_INO, name: 'sock', ino: 3, kind: 'socket', mode: 0o755, uid: 7, gid: 8, ms: 2 },
      { t: 'mk', parent: ROOT_INO, name: 'tty', ino: 4, kind: 'chardev', mode: 0o620, uid: 7, gid: 8, rdev: 0x407, ms: 2 },
      { t: 'mk', parent: ROOT_INO, name: 'disk', ino: 5, kind: 'blockdev', mode: 0o660, uid: 7, gid: 8, rdev: 0x801, ms: 2 },
      // A FIFO's rdev is not kept; a size or a chunk aimed at a special file changes nothing.
      { t: 'mk', parent: ROOT_INO, name: 'pipe2', ino: 6, kind: 'fifo', mode: 0o600, uid: 7, gid: 8, rdev: 99, ms: 2 },
      size(2, 5000),
      chunk(2, 0, ['x', 100]),
      { t: 'mv', sp: ROOT_INO, sn: 'pipe2', dp: ROOT_INO, dn: 'renamed', ms: 3 },
    ];
    for (const op of ops) t.apply(op);
    assert.equal(t.lookup(ROOT_INO, 'pipe')!.kind, 'fifo');
    assert.equal(t.lookup(ROOT_INO, 'pipe')!.size, 0);
    assert.equal(t.lookup(ROOT_INO, 'pipe')!.chunks, undefined);
    assert.equal(t.lookup(ROOT_INO, 'tty')!.rdev, 0x407);
    assert.equal(t.lookup(ROOT_INO, 'disk')!.rdev, 0x801);
    assert.equal(t.lookup(ROOT_INO, 'renamed')!.rdev, undefined);
    assert.equal(t.chunkRefs.size, 0);
    assert.deepEqual(checkTree(t, 'tree'), []);
    const copy = Tree.fromSnapshot(CS, JSON.parse(JSON.stringify(t.snapshot())) as TreeSnapshot);
    assert.deepEqual(copy.snapshot(), t.snapshot());
    const replayed = fresh();
    for (const op of ops) replayed.apply(op);
    assert.deepEqual(replayed.snapshot(), t.snapshot());
    t.apply({ t: 'rm', parent: ROOT_INO, name: 'tty', ms: 4 });
    assert.equal(t.get(4), undefined);
  });

  it('check reports a special file that holds content and an inode of unknown kind', () => {
    const t = fresh();
    t.apply({ t: 'mk', parent: ROOT_INO, name: 'pipe', ino: 2, kind: 'fifo', mode: 0o640, uid: 7, gid: 8, ms: 2 });
    t.apply({ t: 'mk', parent: ROOT_INO, name: 'odd', ino: 3, kind: 'file', mode: 0o640, uid: 7, gid: 8, ms: 2 });
    t.get(2)!.chunks = [['x', 10]];
    (t.get(3) as { kind: string }).kind = 'whiteout';
    assert.deepEqual(checkTree(t, 'tree'), [
      'tree: special file 2 (fifo) holds content',
      'tree: inode 3 is of unknown kind "whiteout"',
    ]);
  });
});

describe('Tree names and inodes (hard links)', () => {
  it('ln adds a name to an inode: data and attributes are shared, nlink counts the names', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'a', 2, 2 * CS, 'c');
    t.apply(mk(ROOT_INO, 'd', 3, 'dir'));
    t.apply({ t: 'ln', ino: 2, parent: 3, name: 'b', ms: 5 });
    assert.equal(t.lookup(3, 'b'), t.lookup(ROOT_INO, 'a'));
    assert.equal(Tree.namesOf(t.get(2)!), 2);
    assert.equal(t.get(2)!.ctimeMs, 5);
    assert.equal(t.get(3)!.mtimeMs, 5);
    // A change through one name is the change of the one inode.
    t.apply({ t: 'attr', ino: 2, mode: 0o600, ms: 6 });
    assert.equal(t.lookup(3, 'b')!.mode, 0o600);
    assert.deepEqual(sortedMap(t.chunkRefs), sortedMap(recount(t)), 'chunks are counted once per inode, not per name');
    assert.deepEqual(checkTree(t, 'tree'), []);
  });

  it('rm and mv over a name keep the inode while another name is left; the last one releases it and its chunks', () => {
    const t = fresh();
    fileWithChunks(t, ROOT_INO, 'a', 2, 2 * CS, 'c');
    t.apply({ t: 'ln', ino: 2, parent: ROOT_INO, name: 'b', ms: 5 });
    t.apply({ t: 'ln', ino: 2, parent: ROOT_INO, name: 'c', ms: 5 });
    assert.equal(Tree.namesOf(t.get(2)!), 3);
    assert.deepEqual(t.apply({ t: 'rm', parent: ROOT_INO, name: 'a', ms: 6 }), []);
    assert.equal(Tree.namesOf(t.get(2)!), 2);
    // Renaming one name over another of the same inode does nothing (rename(2)).
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'b', dp: ROOT_INO, dn: 'c', ms: 7 }), []);
    assert.deepEqual([...t.get(ROOT_INO)!.entries!.keys()].sort(), ['b', 'c']);
    // A file renamed over one name takes that name; the inode keeps its other one.
    fileWithChunks(t, ROOT_INO, 'other', 4, 10, 'o');
    assert.deepEqual(t.apply({ t: 'mv', sp: ROOT_INO, sn: 'other', dp: ROOT_INO, dn: 'b', ms: 8 }), []);
    assert.equal(t.get(2)!.nlink, undefined, 'one name left');
    assert.equal(t.lookup(ROOT_INO, 'c')!.ino, 2);
    assert.deepEqual(checkTree(t, 'tree'), []);
    assert.deepEqual(t.apply({ t: 'rm', parent: ROOT_INO, name: 'c', ms: 9 }), [2]);
    assert.equal(t.get(2), undefined);
    assert.deepEqual([...t.chunkRefs.keys()], ['o0']);
  });

  it('ln is ignored for a directory, a missing inode, a name in use or a missing parent; snapshots and replays keep nlink', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 2));
    t.apply(mk(ROOT_INO, 'd', 3, 'dir'));
    const ops: MetaOp[] = [
      { t: 'ln', ino: 3, parent: ROOT_INO, name: 'dirlink', ms: 4 },
      { t: 'ln', ino: 99, parent: ROOT_INO, name: 'x', ms: 4 },
      { t: 'ln', ino: 2, parent: ROOT_INO, name: 'd', ms: 4 },
      { t: 'ln', ino: 2, parent: 42, name: 'y', ms: 4 },
      { t: 'ln', ino: 2, parent: 2, name: 'z', ms: 4 },
    ];
    const before = JSON.stringify(t.snapshot());
    for (const op of ops) assert.deepEqual(t.apply(op), []);
    assert.equal(JSON.stringify(t.snapshot()), before);
    t.apply({ t: 'ln', ino: 2, parent: 3, name: 'b', ms: 5 });
    const copy = Tree.fromSnapshot(CS, JSON.parse(JSON.stringify(t.snapshot())) as TreeSnapshot);
    assert.deepEqual(copy.snapshot(), t.snapshot());
    assert.equal(copy.get(2)!.nlink, 2);
  });

  it('check reports a link count that does not match the names', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 2));
    t.apply({ t: 'ln', ino: 2, parent: ROOT_INO, name: 'b', ms: 5 });
    t.get(2)!.nlink = 3;
    assert.deepEqual(checkTree(t, 'tree'), ['tree: inode 2 is named 2 times but counts 3 name(s)']);
    t.get(ROOT_INO)!.entries!.set('c', 2);
    t.get(2)!.nlink = undefined;
    assert.deepEqual(checkTree(t, 'tree'), ['tree: inode 2 is named 3 times but counts 1 name(s)']);
  });
});

/** Directories naming each inode, recomputed from the entry tables: what `dirsOf` must say. */
function namingDirs(t: Tree): Map<number, number[]> {
  const m = new Map<number, number[]>();
  for (const dir of t.inodes.values()) {
    for (const child of dir.entries?.values() ?? []) {
      const dirs = m.get(child) ?? [];
      if (!dirs.includes(dir.ino)) dirs.push(dir.ino);
      m.set(child, dirs);
    }
  }
  for (const dirs of m.values()) dirs.sort((a, b) => a - b);
  return m;
}

function assertHomes(t: Tree, label: string): void {
  const want = namingDirs(t);
  for (const ino of new Set([...t.inodes.keys(), ...want.keys()])) {
    const dirs = want.get(ino) ?? [];
    assert.deepEqual(t.dirsOf(ino), dirs, `${label}: dirs of ${ino}`);
    const home = t.parentOf(ino);
    if (dirs.length === 0) assert.equal(home, undefined, `${label}: home of ${ino}`);
    else assert.ok(home !== undefined && dirs.includes(home), `${label}: home of ${ino} is ${home}, names in ${dirs.join(',')}`);
  }
}

describe('Tree home directories (parentOf)', () => {
  it('mk, mv within and across directories, and rm keep each inode’s home directory', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 10, 'dir'));
    t.apply(mk(ROOT_INO, 'b', 11, 'dir'));
    t.apply(mk(10, 'f', 20));
    t.apply(mk(10, 'sub', 21, 'dir'));
    t.apply(mk(21, 'deep', 22));
    assert.equal(t.parentOf(ROOT_INO), undefined);
    assert.deepEqual([t.parentOf(10), t.parentOf(11), t.parentOf(20), t.parentOf(21), t.parentOf(22)], [1, 1, 10, 10, 21]);

    t.apply({ t: 'mv', sp: 10, sn: 'f', dp: 10, dn: 'g', ms: 3 });
    assert.equal(t.parentOf(20), 10);
    t.apply({ t: 'mv', sp: 10, sn: 'g', dp: 11, dn: 'g', ms: 4 });
    assert.equal(t.parentOf(20), 11);
    // A directory moves with its contents: its children keep it as their home.
    t.apply({ t: 'mv', sp: 10, sn: 'sub', dp: 11, dn: 'sub', ms: 5 });
    assert.deepEqual([t.parentOf(21), t.parentOf(22)], [11, 21]);
    // Renaming over a file: the replaced inode has no home any more, the moved one has the new one.
    t.apply(mk(ROOT_INO, 'h', 23));
    t.apply({ t: 'mv', sp: ROOT_INO, sn: 'h', dp: 11, dn: 'g', ms: 6 });
    assert.deepEqual([t.parentOf(23), t.parentOf(20)], [11, undefined]);
    t.apply({ t: 'rm', parent: 21, name: 'deep', ms: 7 });
    assert.equal(t.parentOf(22), undefined);
    assertHomes(t, 'after mk/mv/rm');
    assertHomes(Tree.fromSnapshot(CS, t.snapshot()), 'loaded');
  });

  it('hard links: every naming directory is known; the home follows the names that are left', () => {
    const t = fresh();
    t.apply(mk(ROOT_INO, 'a', 10, 'dir'));
    t.apply(mk(ROOT_INO, 'b', 11, 'dir'));
    t.apply(mk(10, 'f', 20));
    t.apply({ t: 'ln', ino: 20, parent: 11, name: 'f2', ms: 3 });
    t.apply({ t: 'ln', ino: 20, parent: 11, name: 'f3', ms: 3 });
    assert.deepEqual(t.dirsOf(20), [10, 11]);
    assertHomes(t, 'three names');
    assert.deepEqual(Tree.fromSnapshot(CS, t.snapshot()).dirsOf(20), [10, 11]);

    // The name in the home directory goes: the home moves to a directory that still names it.
    t.apply({ t: 'rm', parent: 10, name: 'f', ms: 4 });
    assert.deepEqual(t.dirsOf(20), [11]);
    assert.equal(t.parentOf(20), 11);
    // One of two names in one directory moves away, then back; then only one name is left.
    t.apply({ t: 'mv', sp: 11, sn: 'f2', dp: ROOT_INO, dn: 'top', ms: 5 });
    assert.deepEqual(t.dirsOf(20), [ROOT_INO, 11]);
    t.apply({ t: 'mv', sp: 11, sn: 'f3', dp: 10, dn: 'f', ms: 6 });
    assert.deepEqual(t.dirsOf(20), [ROOT_INO, 10]);
    t.apply({ t: 'rm', parent: ROOT_INO, name: 'top', ms: 7 });
    assert.deepEqual(t.dirsOf(20), [10]);
    assert.equal(t.parentOf(20), 10);
    assert.equal(t.get(20)?.nlink, undefined);
    // mv over a linked name keeps the inode named in the other directory.
    t.apply({ t: 'ln', ino: 20, parent: 11, name: 'x', ms: 8 });
    t.apply(mk(ROOT_INO, 'n', 21));
    t.apply({ t: 'mv', sp: ROOT_INO, sn: 'n', dp: 10, dn: 'f', ms: 9 });
    assert.deepEqual([t.dirsOf(20), t.dirsOf(21)], [[11], [10]]);
    assertHomes(t, 'after links');
  });

  it('random op sequences keep homes equal to what the entry tables say, live and after loading', () => {
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      const ops = randomOps(seed, 1500);
      const r = rng(seed + 100);
      const t = fresh();
      for (const op of ops) {
        t.apply(op);
        // Links as well, which randomOps does not make.
        if (r() < 0.15)
          t.apply({
            t: 'ln',
            ino: 2 + Math.floor(r() * 7),
            parent: [1, 2, 3, 4][Math.floor(r() * 4)]!,
            name: 'l' + Math.floor(r() * 3),
            ms: 1,
          });
        assertHomes(t, `seed ${seed} after ${JSON.stringify(op)}`);
      }
      assertHomes(Tree.fromSnapshot(CS, t.snapshot()), `seed ${seed} loaded`);
    }
  });
});
