/**
 * The reference model of a POSIX filesystem for the operations the model tests use, and a
 * seeded generator of random operation sequences over a small namespace (so operations
 * collide): writes at random offsets with holes and across chunk boundaries (64 KiB chunks),
 * truncates up and down, renames over files, over empty and non-empty directories and into
 * other directories, symlinks (every target dangles), modes, reads and listings.
 *
 * The model is what Linux does on a local disk; test/integration/reference-model.test.ts pins
 * it to a real local directory on every operation. The same model and generator drive the
 * mounted filespace (integration) and the engine through the FUSE interface (test/engine).
 */

export const CHUNK = 64 * 1024;
const MAX_FILE = 1024 * 1024 - 1;
const NAMES = ['a', 'b', 'c', 'd'];
const MAX_DEPTH = 3;
export const UMASK = 0o022;
const FILE_MODES = [0o644, 0o600, 0o640, 0o664, 0o755, 0o700];
const DIR_MODES = [0o755, 0o700, 0o750, 0o775, 0o711];
// Every target is dangling (its first component never exists), so following one fails with ENOENT.
const TARGETS = [
  'zz/none',
  '/nonexistent-filespace-target/x',
  'zz/with space/ünïcødé',
  `zz/${'long'.repeat(60)}`,
  'zz/a/b/c/d/e',
];

/** mulberry32: small, fast, seeded. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- operations and results ----------------------------------------------------------------

export type WriteFlags = 'r+' | 'w' | 'wx' | 'a' | 'create';

export type Op =
  | { k: 'write'; path: string; flags: WriteFlags; mode: number; pos: number; data: Buffer }
  | { k: 'truncate'; path: string; size: number; viaHandle: boolean }
  | { k: 'read'; path: string; pos: number; len: number }
  | { k: 'readAll'; path: string }
  | { k: 'unlink'; path: string }
  | { k: 'mkdir'; path: string; mode: number }
  | { k: 'rmdir'; path: string }
  | { k: 'rename'; from: string; to: string }
  | { k: 'symlink'; target: string; path: string }
  | { k: 'readlink'; path: string }
  | { k: 'chmod'; path: string; mode: number }
  | { k: 'stat'; path: string }
  | { k: 'readdir'; path: string }
  | { k: 'sync' }
  | { k: 'remount' };

export type Result = { ok: true; value?: unknown } | { ok: false; code: string };

export function describeOp(op: Op): string {
  return JSON.stringify('data' in op ? { ...op, data: `<${op.data.length} bytes>` } : op);
}

export function describeResult(r: Result): string {
  if (!r.ok) return `error ${r.code}`;
  if (Buffer.isBuffer(r.value)) return `ok <${r.value.length} bytes>`;
  return `ok ${JSON.stringify(r.value)}`;
}

export function sameResult(a: Result, b: Result): string | undefined {
  if (a.ok !== b.ok) return 'one succeeded, the other failed';
  if (!a.ok || !b.ok) return (a as { code: string }).code === (b as { code: string }).code ? undefined : 'different error codes';
  if (Buffer.isBuffer(a.value) || Buffer.isBuffer(b.value)) {
    const x = a.value as Buffer;
    const y = b.value as Buffer;
    if (!Buffer.isBuffer(x) || !Buffer.isBuffer(y)) return 'different value types';
    if (x.length !== y.length) return `lengths differ (${x.length} vs ${y.length})`;
    const at = x.findIndex((v, i) => v !== y[i]);
    return at < 0 ? undefined : `bytes differ first at offset ${at} (${x[at]} vs ${y[at]})`;
  }
  return JSON.stringify(a.value) === JSON.stringify(b.value) ? undefined : 'different values';
}

// ---- the model -----------------------------------------------------------------------------

type Node = { type: 'file'; data: Buffer; mode: number } | { type: 'dir'; mode: number } | { type: 'symlink'; target: string };

class Errno extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

const parts = (p: string) => p.split('/');

/** What Linux does on a local disk, for the operations above, kept in a Map of path -> node. */
export class Model {
  readonly nodes = new Map<string, Node>();

  get(p: string): Node | undefined {
    return p === '' ? { type: 'dir', mode: 0o755 } : this.nodes.get(p);
  }

  /** Walks every component but the last, as path lookup does: each must be a directory. */
  private walkParent(p: string): void {
    const ps = parts(p);
    for (let i = 1; i < ps.length; i++) {
      const node = this.get(ps.slice(0, i).join('/'));
      if (!node) throw new Errno('ENOENT');
      if (node.type === 'symlink') throw new Errno('ENOENT'); // following a dangling link
      if (node.type !== 'dir') throw new Errno('ENOTDIR');
    }
  }

  private children(p: string): string[] {
    const prefix = p === '' ? '' : `${p}/`;
    return [...this.nodes.keys()]
      .filter((k) => k.startsWith(prefix) && k !== p && !k.slice(prefix.length).includes('/'))
      .map((k) => k.slice(prefix.length))
      .sort();
  }

  /** Resolves a path whose last component is followed if it is a symlink (open, stat, chmod, truncate). */
  private follow(p: string): Node | undefined {
    this.walkParent(p);
    const node = this.get(p);
    if (node?.type === 'symlink') throw new Errno('ENOENT');
    return node;
  }

  private openWrite(p: string, flags: WriteFlags, mode: number): { type: 'file'; data: Buffer; mode: number } {
    this.walkParent(p);
    const existing = this.get(p);
    const create = flags !== 'r+';
    if (existing && flags === 'wx') throw new Errno('EEXIST');
    if (existing?.type === 'symlink') throw new Errno('ENOENT');
    if (existing?.type === 'dir') throw new Errno('EISDIR');
    if (!existing) {
      if (!create) throw new Errno('ENOENT');
      const node = { type: 'file' as const, data: Buffer.alloc(0), mode: mode & ~UMASK };
      this.nodes.set(p, node);
      return node;
    }
    if (flags === 'w' || flags === 'wx') existing.data = Buffer.alloc(0);
    return existing;
  }

  apply(op: Op): Result {
    try {
      return { ok: true, value: this.run(op) };
    } catch (err) {
      if (err instanceof Errno) return { ok: false, code: err.code };
      throw err;
    }
  }

  private run(op: Op): unknown {
    switch (op.k) {
      case 'write': {
        const f = this.openWrite(op.path, op.flags, op.mode);
        const pos = op.flags === 'a' ? f.data.length : op.pos;
        const end = pos + op.data.length;
        const next = Buffer.alloc(Math.max(f.data.length, end));
        f.data.copy(next);
        op.data.copy(next, pos);
        f.data = next;
        return undefined;
      }
      case 'truncate': {
        const node = this.follow(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type === 'dir') throw new Errno('EISDIR');
        if (node.type !== 'file') throw new Error('unreachable');
        const next = Buffer.alloc(op.size);
        node.data.copy(next, 0, 0, Math.min(op.size, node.data.length));
        node.data = next;
        return undefined;
      }
      case 'read':
      case 'readAll': {
        const node = this.follow(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type === 'dir') throw new Errno('EISDIR');
        if (node.type !== 'file') throw new Error('unreachable');
        if (op.k === 'readAll') return Buffer.from(node.data);
        return Buffer.from(node.data.subarray(Math.min(op.pos, node.data.length), Math.min(op.pos + op.len, node.data.length)));
      }
      case 'unlink': {
        this.walkParent(op.path);
        const node = this.get(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type === 'dir') throw new Errno('EISDIR');
        this.nodes.delete(op.path);
        return undefined;
      }
      case 'mkdir': {
        this.walkParent(op.path);
        if (this.get(op.path)) throw new Errno('EEXIST');
        this.nodes.set(op.path, { type: 'dir', mode: op.mode & ~UMASK });
        return undefined;
      }
      case 'rmdir': {
        this.walkParent(op.path);
        const node = this.get(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type !== 'dir') throw new Errno('ENOTDIR');
        if (this.children(op.path).length > 0) throw new Errno('ENOTEMPTY');
        this.nodes.delete(op.path);
        return undefined;
      }
      case 'symlink': {
        this.walkParent(op.path);
        if (this.get(op.path)) throw new Errno('EEXIST');
        this.nodes.set(op.path, { type: 'symlink', target: op.target });
        return undefined;
      }
      case 'readlink': {
        this.walkParent(op.path);
        const node = this.get(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type !== 'symlink') throw new Errno('EINVAL');
        return node.target;
      }
      case 'chmod': {
        const node = this.follow(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type === 'symlink') throw new Error('unreachable');
        node.mode = op.mode;
        return undefined;
      }
      case 'stat': {
        this.walkParent(op.path);
        const node = this.get(op.path);
        if (!node) throw new Errno('ENOENT');
        return statOf(node);
      }
      case 'readdir': {
        const node = this.follow(op.path);
        if (!node) throw new Errno('ENOENT');
        if (node.type !== 'dir') throw new Errno('ENOTDIR');
        return this.children(op.path);
      }
      case 'rename':
        return this.rename(op.from, op.to);
      case 'sync':
      case 'remount':
        return undefined;
    }
  }

  private rename(from: string, to: string): void {
    this.walkParent(from);
    this.walkParent(to);
    const src = this.get(from);
    if (!src) throw new Errno('ENOENT');
    const dst = this.get(to);
    if (to.startsWith(`${from}/`)) throw new Errno('EINVAL'); // into its own subtree
    if (from.startsWith(`${to}/`)) throw new Errno('ENOTEMPTY'); // over its own ancestor
    if (from === to) return;
    if (dst) {
      if (src.type === 'dir' && dst.type !== 'dir') throw new Errno('ENOTDIR');
      if (src.type !== 'dir' && dst.type === 'dir') throw new Errno('EISDIR');
      if (dst.type === 'dir' && this.children(to).length > 0) throw new Errno('ENOTEMPTY');
    }
    const moved = [...this.nodes.entries()].filter(([k]) => k === from || k.startsWith(`${from}/`));
    for (const [k] of moved) this.nodes.delete(k);
    this.nodes.delete(to);
    for (const [k, v] of moved) this.nodes.set(to + k.slice(from.length), v);
  }

  /** What a path names, for the tally of operations: missing, file, symlink, empty dir or dir. */
  describe(p: string): string {
    const node = this.get(p);
    if (!node) return 'missing';
    if (node.type !== 'dir') return node.type;
    return this.children(p).length ? 'dir' : 'empty dir';
  }

  /** The whole tree as the listing compared with the mount. */
  snapshot(): Map<string, Entry> {
    const out = new Map<string, Entry>();
    for (const [p, node] of this.nodes) {
      out.set(
        p,
        node.type === 'file'
          ? { ...statOf(node), data: node.data }
          : node.type === 'symlink'
            ? { ...statOf(node), target: node.target }
            : statOf(node),
      );
    }
    return out;
  }
}

export interface Entry {
  type: 'file' | 'dir' | 'symlink';
  mode: number;
  size?: number;
  data?: Buffer;
  target?: string;
}

function statOf(node: Node): Entry {
  if (node.type === 'file') return { type: 'file', mode: node.mode, size: node.data.length };
  if (node.type === 'dir') return { type: 'dir', mode: node.mode };
  return { type: 'symlink', mode: 0o777, size: Buffer.byteLength(node.target) };
}

export function treeDiff(expected: Map<string, Entry>, actual: Map<string, Entry>, max = 10): string[] {
  const diffs: string[] = [];
  const keys = [...new Set([...expected.keys(), ...actual.keys()])].sort();
  const brief = (e: Entry) => JSON.stringify({ ...e, data: e.data ? `<${e.data.length} bytes>` : undefined });
  for (const k of keys) {
    const e = expected.get(k);
    const a = actual.get(k);
    if (!e) diffs.push(`${k}: unexpected ${brief(a!)}`);
    else if (!a) diffs.push(`${k}: missing, expected ${brief(e)}`);
    else if (e.type !== a.type || e.mode !== a.mode || e.size !== a.size || e.target !== a.target)
      diffs.push(`${k}: expected ${brief(e)}, got ${brief(a)}`);
    else if (e.data && a.data && !e.data.equals(a.data)) {
      diffs.push(`${k}: contents differ first at offset ${e.data.findIndex((v, i) => v !== a.data![i])}`);
    }
    if (diffs.length >= max) break;
  }
  return diffs;
}

// ---- the generator -------------------------------------------------------------------------

export class Generator {
  private readonly rand: () => number;

  constructor(
    seed: number,
    private readonly model: Model,
  ) {
    this.rand = prng(seed);
  }

  private int(n: number): number {
    return Math.floor(this.rand() * n);
  }

  private pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  private bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i += 4) {
      const v = (this.rand() * 4294967296) >>> 0;
      for (let k = 0; k < 4 && i + k < n; k++) b[i + k] = (v >>> (8 * k)) & 0xff;
    }
    return b;
  }

  private existing(type?: Node['type']): string | undefined {
    const ps = [...this.model.nodes.entries()]
      .filter(([, n]) => !type || n.type === type)
      .map(([p]) => p)
      .sort();
    return ps.length ? this.pick(ps) : undefined;
  }

  /** A name inside an existing directory (or, sometimes, anywhere in the namespace). */
  private fresh(): string {
    if (this.rand() < 0.15) {
      const depth = 1 + this.int(MAX_DEPTH);
      return Array.from({ length: depth }, () => this.pick(NAMES)).join('/');
    }
    const dirs = [
      '',
      ...[...this.model.nodes.entries()]
        .filter(([p, n]) => n.type === 'dir' && parts(p).length < MAX_DEPTH)
        .map(([p]) => p)
        .sort(),
    ];
    const dir = this.pick(dirs);
    return dir ? `${dir}/${this.pick(NAMES)}` : this.pick(NAMES);
  }

  /** Mostly an existing entry of the wanted type, else a fresh or random name. */
  private path(type?: Node['type'], pExisting = 0.6): string {
    if (this.rand() < pExisting) {
      const p = this.existing(type) ?? this.existing();
      if (p !== undefined) return p;
    }
    return this.fresh();
  }

  private sizeOf(p: string): number {
    const n = this.model.nodes.get(p);
    return n?.type === 'file' ? n.data.length : 0;
  }

  /** An offset: anywhere in the file, just before a chunk boundary, past the end (a hole), or 0. */
  private offset(size: number): number {
    const r = this.rand();
    if (r < 0.35) return this.int(size + 1);
    if (r < 0.65) return Math.max(0, (1 + this.int(Math.floor(MAX_FILE / CHUNK))) * CHUNK - this.int(3000));
    if (r < 0.85) return size + 1 + this.int(3 * CHUNK);
    return 0;
  }

  private length(): number {
    const r = this.rand();
    if (r < 0.3) return 1 + this.int(100);
    if (r < 0.6) return 100 + this.int(8000);
    if (r < 0.9) return 1 + this.int(2 * CHUNK + 10);
    return CHUNK + this.int(3 * CHUNK);
  }

  private truncSize(size: number): number {
    const r = this.rand();
    if (r < 0.15) return 0;
    if (r < 0.4) return this.int(size + 1);
    if (r < 0.7) return Math.max(0, Math.min(MAX_FILE, this.int(Math.floor(MAX_FILE / CHUNK) + 1) * CHUNK + this.int(3) - 1));
    return Math.min(MAX_FILE, size + this.int(3 * CHUNK));
  }

  next(): Op {
    const table: Array<[number, () => Op]> = [
      [
        22,
        () => {
          const p = this.path('file', 0.7);
          const flags = this.pick<WriteFlags>(['r+', 'r+', 'create', 'create', 'w', 'wx']);
          const size = flags === 'w' || flags === 'wx' ? 0 : this.sizeOf(p);
          const pos = Math.min(this.offset(size), MAX_FILE - 1);
          const len = Math.max(1, Math.min(this.length(), MAX_FILE - pos));
          return { k: 'write', path: p, flags, mode: this.pick(FILE_MODES), pos, data: this.bytes(len) };
        },
      ],
      [
        6,
        () => {
          const p = this.path('file', 0.8);
          const len = Math.max(1, Math.min(this.length(), MAX_FILE - this.sizeOf(p)));
          return { k: 'write', path: p, flags: 'a', mode: this.pick(FILE_MODES), pos: 0, data: this.bytes(len) };
        },
      ],
      [
        9,
        () => {
          const p = this.path('file', 0.85);
          return { k: 'truncate', path: p, size: this.truncSize(this.sizeOf(p)), viaHandle: this.rand() < 0.5 };
        },
      ],
      [
        12,
        () => {
          const p = this.path('file', 0.85);
          const size = this.sizeOf(p);
          const pos = this.rand() < 0.3 ? Math.max(0, Math.floor(size / CHUNK) * CHUNK - this.int(2000)) : this.int(size + 100);
          return { k: 'read', path: p, pos, len: this.length() };
        },
      ],
      [3, () => ({ k: 'readAll', path: this.path('file', 0.8) })],
      [6, () => ({ k: 'unlink', path: this.path(undefined, 0.7) })],
      [8, () => ({ k: 'mkdir', path: this.path('dir', 0.2), mode: this.pick(DIR_MODES) })],
      [5, () => ({ k: 'rmdir', path: this.path('dir', 0.7) })],
      [
        12,
        () => {
          const from = this.path(this.pick([undefined, 'file', 'dir'] as const), 0.85);
          const to = this.rand() < 0.25 ? this.path(this.pick([undefined, 'file', 'dir'] as const), 1) : this.fresh();
          return { k: 'rename', from, to };
        },
      ],
      [3, () => ({ k: 'symlink', target: this.pick(TARGETS), path: this.path(undefined, 0.2) })],
      [2, () => ({ k: 'readlink', path: this.path('symlink', 0.7) })],
      [
        4,
        () => {
          const p = this.path(undefined, 0.8);
          return { k: 'chmod', path: p, mode: this.pick(this.model.nodes.get(p)?.type === 'dir' ? DIR_MODES : FILE_MODES) };
        },
      ],
      [6, () => ({ k: 'stat', path: this.path(undefined, 0.8) })],
      [4, () => ({ k: 'readdir', path: this.path('dir', 0.7) })],
      [1.2, () => ({ k: 'sync' })],
      [0.3, () => ({ k: 'remount' })],
    ];
    let r = this.rand() * table.reduce((s, [w]) => s + w, 0);
    for (const [w, make] of table) {
      if ((r -= w) < 0) return make();
    }
    return table[0]![1]();
  }
}
