/**
 * The file tree: inodes, directory entries and chunk lists, held in memory for fast lookups.
 *
 * The tree changes only by applying `MetaOp`s. The same ops are appended to the local journal
 * (crash safety) and shipped to the bucket as log segments (replication), so replaying them
 * on another machine yields the same tree. `apply` is therefore deterministic and total: it
 * never consults clocks or randomness, and an op that no longer fits (e.g. a chunk commit for
 * a file deleted meanwhile) is ignored rather than failing the replay.
 *
 * A file's content is a list of chunk references `[name, length]`, one per fixed-size chunk
 * index; `null` is a hole (zeros). Bytes of a chunk past its length, up to the file size, read
 * as zeros.
 *
 * Names and inodes are apart: a directory maps names to inode numbers, and a non-directory may
 * be named more than once (hard links, op `ln`). `nlink` counts its names when more than one
 * (absent means one, so trees written before links existed read unchanged); removing a name
 * (`rm`, or `mv` over it) drops the inode and its chunk references only with its last name.
 * (A file deleted while open lives on without a name, but only in a separate local tree kept
 * by the VFS; see `addNameless`.)
 *
 * Where the inodes live: in memory (plain maps, the default: trees read from the bucket, the
 * VFS's tree of nameless files, snapshots) or in the local metadata database (treeDb.ts),
 * which keeps only a bounded working set in memory. The tree reaches its storage through
 * `TreeStorage`: `apply` reports every inode it changed (`touched`) and every directory entry
 * it added or removed (`entryChanged`), so a database-backed storage writes only what changed.
 *
 * Every named inode other than the root has a home directory (`parentOf`): the directory that
 * names it. An inode with several names (hard links) is named by several directories
 * (`dirsOf`); its home is then one of them. The tree keeps both up to date as ops apply and
 * derives them when loading a snapshot, so the snapshot format does not carry them.
 */

import { UserError } from '../errors';
import { nameBytes } from '../util/names';

/**
 * `fifo`, `socket`, `chardev` and `blockdev` are special files: metadata only (type, mode,
 * owner, times and, for devices, `rdev`). The kernel serves their I/O itself (a FIFO's pipe, a
 * socket's endpoint, a device's driver); no byte of theirs is ever stored, here or in the bucket.
 */
export type InodeKind = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

/** Every kind a tree knows, for validating what is read (see `isSpecialKind`). */
export const INODE_KINDS: readonly InodeKind[] = ['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev'];

/** Kinds that are metadata only, with no content of their own. */
export function isSpecialKind(kind: InodeKind): boolean {
  return kind === 'fifo' || kind === 'socket' || kind === 'chardev' || kind === 'blockdev';
}
export type ChunkRef = readonly [name: string, length: number];

export interface Inode {
  ino: number;
  kind: InodeKind;
  mode: number; // permission bits only (07777)
  uid: number;
  gid: number;
  size: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  target?: string;
  /** Device number of a `chardev` or `blockdev` (Linux's encoding of major and minor). */
  rdev?: number;
  chunks?: Array<ChunkRef | null>;
  xattrs?: Record<string, string>; // name -> base64 value
  entries?: Map<string, number>; // directories only
  /** How many names a non-directory has, when more than one (hard links). */
  nlink?: number;
}

export type MetaOp =
  | {
      t: 'mk';
      parent: number;
      name: string;
      ino: number;
      kind: InodeKind;
      mode: number;
      uid: number;
      gid: number;
      target?: string;
      rdev?: number;
      ms: number;
    }
  | { t: 'rm'; parent: number; name: string; ms: number }
  /** A further name for an existing non-directory (a hard link). */
  | { t: 'ln'; ino: number; parent: number; name: string; ms: number }
  | { t: 'mv'; sp: number; sn: string; dp: number; dn: string; ms: number }
  | {
      t: 'attr';
      ino: number;
      mode?: number;
      uid?: number;
      gid?: number;
      size?: number;
      atimeMs?: number;
      mtimeMs?: number;
      ms: number;
    }
  | { t: 'chunk'; ino: number; idx: number; ref: ChunkRef | null }
  | { t: 'xattr'; ino: number; name: string; value: string | null; ms: number };

export const ROOT_INO = 1;

/** Every op this version knows; an op of another kind was written by a newer version. */
const OP_KINDS: ReadonlySet<string> = new Set<MetaOp['t']>(['mk', 'rm', 'ln', 'mv', 'attr', 'chunk', 'xattr']);

/** An op this version does not know: the filespace was written by a newer version of Filespace. */
export class UnknownOpError extends UserError {
  constructor(readonly op: string) {
    super(
      `the filespace metadata holds a change of a kind this version does not know (${JSON.stringify(op).slice(0, 40)}): ` +
        'it was written by a newer version of Filespace; update Filespace on this machine',
      'NEWER_VERSION',
    );
    this.name = 'UnknownOpError';
  }
}

/** Throws UnknownOpError for the first op in `ops` this version does not know (nothing applied). */
export function assertKnownOps(ops: readonly unknown[]): void {
  for (const op of ops) {
    const t = (op as { t?: unknown } | null)?.t;
    if (typeof t !== 'string' || !OP_KINDS.has(t)) throw new UnknownOpError(String(t));
  }
}

export interface TreeSnapshot {
  readonly nextIno: number;
  readonly inodes: ReadonlyArray<Omit<Inode, 'entries'> & { entries?: Array<[string, number]> }>;
}

/** The inodes of a tree by number (a Map is one). */
export interface InodeTable {
  get(ino: number): Inode | undefined;
  has(ino: number): boolean;
  set(ino: number, inode: Inode): unknown;
  delete(ino: number): boolean;
  readonly size: number;
  values(): IterableIterator<Inode>;
  keys(): IterableIterator<number>;
}

/** Reference counts of chunk names, to read (a Map is one). */
export interface RefCounts extends Iterable<[string, number]> {
  get(name: string): number | undefined;
  has(name: string): boolean;
  readonly size: number;
  keys(): IterableIterator<string>;
  entries(): IterableIterator<[string, number]>;
}

/** Reference counts of chunk names (a Map is one). */
export interface RefTable extends RefCounts {
  set(name: string, n: number): unknown;
  delete(name: string): boolean;
  /**
   * A referenced place of chunk `name` in a pack that the table knows without a search of
   * every name (meta/treeDb.ts: its rows as of the last checkpoint), if any.
   */
  packedOf?(name: string): string | undefined;
}

/** Where a tree keeps its inodes and chunk references (see the module header). */
export interface TreeStorage {
  readonly inodes: InodeTable;
  readonly chunkRefs: RefTable;
  /** `inode` (held in `inodes`) was changed in place. */
  touched(inode: Inode): void;
  /**
   * Directory `parent`'s entry `name` now names `ino` (undefined: removed); it named
   * `previous` before (undefined: it was new).
   */
  entryChanged(parent: number, name: string, ino: number | undefined, previous: number | undefined): void;
  /** Every directory that names `ino`, ascending (more than one only for hard links). */
  dirsOf(ino: number): number[];
  /** Runs `fn`, a synchronous read-only pass over many inodes (see `Tree.scan`). */
  scan?<T>(fn: () => T): T;
  /** Runs `fn`, which reads several inodes and changes none, as one read (see `Tree.reading`). */
  reading?<T>(fn: () => T): T;
  /** See `Tree.dirsAmong`. */
  dirsAmong?(inos: readonly number[]): number;
  /** See `Tree.unhomedIn`. */
  unhomedIn?(lo: number, hi: number): number[];
  /** See `Tree.record`. */
  record?(ino: number): Omit<Inode, 'entries'> | undefined;
}

const NO_TRACKING = {
  touched: (): void => undefined,
  entryChanged: (): void => undefined,
};

export class Tree {
  readonly inodes: InodeTable;
  nextIno = ROOT_INO + 1;
  /** Reference counts of chunk names, for dedup and garbage collection. */
  readonly chunkRefs: RefTable;
  private readonly storage: Pick<TreeStorage, 'touched' | 'entryChanged'> &
    Partial<Pick<TreeStorage, 'dirsOf' | 'scan' | 'reading' | 'dirsAmong' | 'unhomedIn' | 'record'>>;
  /**
   * Running totals for statfs, so it does not walk the tree: the committed data of every file
   * (its chunks' stored lengths, rounded up to 4 KiB blocks per file) and how many directories.
   */
  allocatedBytes = 0;
  dirs = 0;
  /**
   * Every extended-attribute name an inode has, or had since the set was started (a name no
   * inode has any more may stay: it is a superset), so a mount learns them without reading every
   * inode (vfs.ts `xattrNames`). Undefined when not known: a database written before it was
   * kept, until the names are gathered once.
   */
  xattrNames: Set<string> | undefined = new Set();
  /**
   * Called with a chunk name whose last reference this tree just dropped (the VFS frees cached
   * chunks nothing reads any more from these, instead of weighing every cached chunk).
   */
  onUnreferenced: ((name: string) => void) | undefined;
  /** Home directory of every named non-root inode, for a tree in memory (see `parentOf`). */
  private readonly parents = new Map<number, number>();
  /** For inodes named more than once: how many of their names each directory holds (in memory). */
  private readonly linkDirs = new Map<number, Map<number, number>>();

  constructor(
    readonly chunkSize: number,
    storage?: TreeStorage,
  ) {
    this.inodes = storage?.inodes ?? new Map<number, Inode>();
    this.chunkRefs = storage?.chunkRefs ?? new Map<string, number>();
    this.storage = storage ?? NO_TRACKING;
  }

  /** Stored bytes of a file's committed chunks. */
  static storedBytes(inode: Omit<Inode, 'entries'>): number {
    let n = 0;
    for (const c of inode.chunks ?? []) if (c) n += c[1];
    return n;
  }

  /** What statfs counts for `inode`'s committed chunks: whole 4 KiB blocks. */
  static blocksBytes(inode: Omit<Inode, 'entries'>): number {
    return Math.ceil(Tree.storedBytes(inode) / 4096) * 4096;
  }

  /** What `inode` adds to the statfs totals (`dirs`, `allocatedBytes`). */
  static countOf(inode: Omit<Inode, 'entries'>): { dirs: number; allocatedBytes: number } {
    if (inode.kind === 'dir') return { dirs: 1, allocatedBytes: 0 };
    return { dirs: 0, allocatedBytes: inode.kind === 'file' ? Tree.blocksBytes(inode) : 0 };
  }

  private counted(inode: Inode, sign: 1 | -1): void {
    const c = Tree.countOf(inode);
    this.dirs += sign * c.dirs;
    this.allocatedBytes += sign * c.allocatedBytes;
  }

  /**
   * Runs `fn`, which reads many inodes and changes none, synchronously: a tree on disk then
   * reads what is not in its working set without keeping it there (meta/treeDb.ts, `scan`),
   * so memory does not grow with how much `fn` reads. Inodes got within `fn` are for reading
   * there only.
   */
  scan<T>(fn: () => T): T {
    return this.storage.scan ? this.storage.scan(fn) : fn();
  }

  /**
   * Runs `fn`, which reads several inodes and changes none, synchronously, as one read of the
   * storage (a tree on disk reads them in one database transaction instead of one each); unlike
   * `scan`, what it reads joins the working set as any read does.
   */
  reading<T>(fn: () => T): T {
    return this.storage.reading ? this.storage.reading(fn) : fn();
  }

  /**
   * How many of `inos` are directories (a directory's link count): a tree on disk counts those
   * it does not hold with one query on their rows, without decoding them (meta/treeDb.ts).
   */
  dirsAmong(inos: readonly number[]): number {
    if (this.storage.dirsAmong) return this.storage.dirsAmong(inos);
    let n = 0;
    for (const ino of inos) if (this.record(ino)?.kind === 'dir') n++;
    return n;
  }

  /**
   * The inodes numbered `lo`..`hi` that are not named exactly once (named by no directory, or
   * hard-linked), ascending, the root excluded: where the storage can tell without reading
   * every inode of the range (a tree on disk counts names by inode in its database); otherwise
   * undefined, and the caller looks at each inode.
   */
  unhomedIn(lo: number, hi: number): number[] | undefined {
    return this.storage.unhomedIn?.(lo, hi);
  }

  /**
   * Inode `ino`'s own record, for reading only: a directory's entry table may be missing (a tree
   * on disk reads a directory's record without its entries when it is not held; a page that
   * names a folder's subfolders needs their records, not every entry under them).
   */
  record(ino: number): Omit<Inode, 'entries'> | undefined {
    return this.storage.record ? this.storage.record(ino) : this.inodes.get(ino);
  }

  /** Whether the inodes live in memory only (no storage reports changes). */
  get inMemory(): boolean {
    return this.storage === NO_TRACKING;
  }

  static create(chunkSize: number, uid: number, gid: number, ms: number): Tree {
    const t = new Tree(chunkSize);
    t.inodes.set(ROOT_INO, {
      ino: ROOT_INO,
      kind: 'dir',
      mode: 0o755,
      uid,
      gid,
      size: 0,
      atimeMs: ms,
      mtimeMs: ms,
      ctimeMs: ms,
      entries: new Map(),
    });
    t.dirs = 1;
    return t;
  }

  static fromSnapshot(chunkSize: number, snap: TreeSnapshot): Tree {
    const t = new Tree(chunkSize);
    t.nextIno = snap.nextIno;
    for (const raw of snap.inodes) {
      const inode: Inode = { ...raw, entries: raw.entries ? new Map(raw.entries) : undefined };
      if (raw.xattrs) {
        inode.xattrs = { ...raw.xattrs };
        for (const n in raw.xattrs) t.xattrNames!.add(n);
      }
      if (!inode.entries) delete inode.entries;
      if (inode.chunks) inode.chunks = inode.chunks.map((c) => (c ? ([c[0], c[1]] as const) : null));
      t.inodes.set(inode.ino, inode);
      for (const c of inode.chunks ?? []) if (c) t.ref(c[0], 1);
      t.counted(inode, 1);
    }
    if (!t.inodes.has(ROOT_INO)) throw new Error('snapshot has no root directory');
    for (const dir of t.inodes.values()) {
      if (dir.entries) for (const child of dir.entries.values()) t.addName(child, dir.ino);
    }
    return t;
  }

  /**
   * The home directory of `ino`: the directory that names it; for an inode with several names,
   * the directory of one of them (see `dirsOf`). Undefined for the root and unknown or nameless
   * inodes.
   */
  parentOf(ino: number): number | undefined {
    if (this.storage.dirsOf) return this.storage.dirsOf(ino)[0];
    return this.parents.get(ino);
  }

  /** Every directory that names `ino` (more than one only for hard links), ascending. */
  dirsOf(ino: number): number[] {
    if (this.storage.dirsOf) return this.storage.dirsOf(ino);
    const dirs = this.linkDirs.get(ino);
    if (dirs) return [...dirs.keys()].sort((a, b) => a - b);
    const p = this.parents.get(ino);
    return p === undefined ? [] : [p];
  }

  /** Records that directory `dir` gained a name for `ino`. */
  private addName(ino: number, dir: number): void {
    if (this.storage.dirsOf) return; // the storage knows (see entryChanged)
    const home = this.parents.get(ino);
    if (home === undefined) {
      this.parents.set(ino, dir);
      return;
    }
    let dirs = this.linkDirs.get(ino);
    if (!dirs) this.linkDirs.set(ino, (dirs = new Map([[home, 1]])));
    dirs.set(dir, (dirs.get(dir) ?? 0) + 1);
  }

  /** Records that directory `dir` lost a name for `ino` (its last one: the inode is gone). */
  private dropName(ino: number, dir: number): void {
    if (this.storage.dirsOf) return;
    const dirs = this.linkDirs.get(ino);
    if (!dirs) {
      this.parents.delete(ino);
      return;
    }
    const n = (dirs.get(dir) ?? 0) - 1;
    if (n > 0) dirs.set(dir, n);
    else dirs.delete(dir);
    let left = 0;
    for (const c of dirs.values()) left += c;
    if (left <= 1) this.linkDirs.delete(ino);
    const first = dirs.keys().next();
    if (first.done) this.parents.delete(ino);
    else if (!dirs.has(this.parents.get(ino) ?? -1)) this.parents.set(ino, first.value);
  }

  /**
   * A deep copy (it must not change when later ops change the live tree), in a canonical order
   * (inodes by number, entries by name), so two trees that hold the same snapshot alike
   * whichever storage they live in.
   */
  snapshot(): TreeSnapshot {
    const byName = ([a]: [string, number], [b]: [string, number]) => (a < b ? -1 : a > b ? 1 : 0);
    const inodes = [...this.inodes.values()]
      .sort((a, b) => a.ino - b.ino)
      .map((i) => {
        const { entries, chunks, xattrs, ...rest } = i;
        const copy: Omit<Inode, 'entries'> & { entries?: Array<[string, number]> } = { ...rest };
        if (chunks) copy.chunks = chunks.map((c) => (c ? ([c[0], c[1]] as const) : null));
        if (xattrs) copy.xattrs = { ...xattrs };
        if (entries) copy.entries = [...entries].sort(byName);
        return copy;
      });
    return { nextIno: this.nextIno, inodes };
  }

  get(ino: number): Inode | undefined {
    return this.inodes.get(ino);
  }

  lookup(parent: number, name: string): Inode | undefined {
    const p = this.inodes.get(parent);
    const ino = p?.entries?.get(name);
    return ino === undefined ? undefined : this.inodes.get(ino);
  }

  allocIno(): number {
    return this.nextIno++;
  }

  private ref(name: string, delta: number): void {
    const n = (this.chunkRefs.get(name) ?? 0) + delta;
    if (n <= 0) {
      this.chunkRefs.delete(name);
      this.onUnreferenced?.(name);
    } else this.chunkRefs.set(name, n);
  }

  private setChunk(inode: Inode, idx: number, ref: ChunkRef | null): void {
    this.counted(inode, -1);
    const chunks = (inode.chunks ??= []);
    const old = chunks[idx];
    if (old) this.ref(old[0], -1);
    while (chunks.length < idx) chunks.push(null);
    chunks[idx] = ref;
    if (ref) this.ref(ref[0], 1);
    while (chunks.length > 0 && chunks[chunks.length - 1] === null) chunks.pop();
    this.counted(inode, 1);
    this.storage.touched(inode);
  }

  private truncateChunks(inode: Inode, size: number): void {
    const chunks = inode.chunks;
    if (!chunks) return;
    const cs = this.chunkSize;
    const keep = Math.ceil(size / cs);
    for (let i = chunks.length - 1; i >= keep; i--) this.setChunk(inode, i, null);
    const last = keep - 1;
    const ref = last >= 0 ? chunks[last] : undefined;
    const limit = size - last * cs;
    if (ref && ref[1] > limit) this.setChunk(inode, last, [ref[0], limit]);
  }

  private dropInode(ino: number): void {
    const inode = this.inodes.get(ino);
    if (!inode) return;
    for (const c of inode.chunks ?? []) if (c) this.ref(c[0], -1);
    this.counted(inode, -1);
    // Only a replay of odd ops removes a directory that still names something: its children
    // lose that name as a snapshot taken now would show them.
    if (inode.entries) {
      for (const [name, child] of inode.entries) {
        this.dropName(child, ino);
        this.storage.entryChanged(ino, name, undefined, child);
      }
    }
    this.inodes.delete(ino);
  }

  /** Removes one name's claim on `ino`: the inode goes with its last name. Returns what was released. */
  private unname(ino: number, ms: number): number[] {
    const inode = this.inodes.get(ino);
    if (inode?.nlink !== undefined && inode.nlink > 1) {
      if (inode.nlink === 2) delete inode.nlink;
      else inode.nlink--;
      inode.ctimeMs = ms;
      this.storage.touched(inode);
      return [];
    }
    this.dropInode(ino);
    return [ino];
  }

  /** How many names `inode` has (directories: one). */
  static namesOf(inode: Inode): number {
    return inode.nlink ?? 1;
  }

  /**
   * Adds an inode that no directory names: a file deleted while still open. Only the VFS's
   * local tree of such files uses this (the committed tree never holds a nameless inode);
   * ops then apply to it as to any other inode.
   */
  addNameless(inode: Inode): void {
    if (this.inodes.has(inode.ino)) return;
    const copy: Inode = { ...inode, chunks: inode.chunks?.map((c) => (c ? ([c[0], c[1]] as const) : null)) };
    if (inode.xattrs) copy.xattrs = { ...inode.xattrs };
    if (!copy.chunks) delete copy.chunks;
    this.inodes.set(copy.ino, copy);
    for (const c of copy.chunks ?? []) if (c) this.ref(c[0], 1);
    this.counted(copy, 1);
  }

  /** Removes an inode added with addNameless. */
  removeNameless(ino: number): void {
    this.dropInode(ino);
  }

  /**
   * Applies one op. Returns the inode numbers whose storage was released (for cache cleanup).
   * Throws UnknownOpError for an op of a kind this version does not know.
   */
  apply(op: MetaOp): number[] {
    switch (op.t) {
      case 'mk': {
        const parent = this.inodes.get(op.parent);
        if (!parent?.entries || parent.entries.has(op.name) || this.inodes.has(op.ino)) return [];
        const inode: Inode = {
          ino: op.ino,
          kind: op.kind,
          mode: op.mode,
          uid: op.uid,
          gid: op.gid,
          size: op.kind === 'symlink' ? nameBytes(op.target ?? '') : 0,
          atimeMs: op.ms,
          mtimeMs: op.ms,
          ctimeMs: op.ms,
        };
        if (op.kind === 'dir') {
          inode.entries = new Map();
          this.dirs++;
        }
        if (op.kind === 'symlink') inode.target = op.target ?? '';
        if ((op.kind === 'chardev' || op.kind === 'blockdev') && op.rdev !== undefined) inode.rdev = op.rdev;
        this.inodes.set(op.ino, inode);
        parent.entries.set(op.name, op.ino);
        this.addName(op.ino, op.parent);
        parent.mtimeMs = parent.ctimeMs = op.ms;
        this.storage.entryChanged(parent.ino, op.name, op.ino, undefined);
        this.storage.touched(parent);
        if (op.ino >= this.nextIno) this.nextIno = op.ino + 1;
        return [];
      }
      case 'rm': {
        const parent = this.inodes.get(op.parent);
        const ino = parent?.entries?.get(op.name);
        if (!parent?.entries || ino === undefined) return [];
        parent.entries.delete(op.name);
        this.dropName(ino, op.parent);
        parent.mtimeMs = parent.ctimeMs = op.ms;
        this.storage.entryChanged(parent.ino, op.name, undefined, ino);
        this.storage.touched(parent);
        return this.unname(ino, op.ms);
      }
      case 'ln': {
        const parent = this.inodes.get(op.parent);
        const inode = this.inodes.get(op.ino);
        if (!parent?.entries || parent.entries.has(op.name) || !inode || inode.kind === 'dir') return [];
        parent.entries.set(op.name, op.ino);
        this.addName(op.ino, op.parent);
        parent.mtimeMs = parent.ctimeMs = op.ms;
        inode.nlink = Tree.namesOf(inode) + 1;
        inode.ctimeMs = op.ms;
        this.storage.entryChanged(parent.ino, op.name, op.ino, undefined);
        this.storage.touched(parent);
        this.storage.touched(inode);
        return [];
      }
      case 'mv': {
        const sp = this.inodes.get(op.sp);
        const dp = this.inodes.get(op.dp);
        const ino = sp?.entries?.get(op.sn);
        if (!sp?.entries || !dp?.entries || ino === undefined) return [];
        const existing = dp.entries.get(op.dn);
        // Two names of one inode: rename(2) does nothing.
        if (existing === ino) return [];
        if (existing !== undefined) this.dropName(existing, op.dp);
        const released = existing !== undefined ? this.unname(existing, op.ms) : [];
        sp.entries.delete(op.sn);
        dp.entries.set(op.dn, ino);
        this.dropName(ino, op.sp);
        this.addName(ino, op.dp);
        sp.mtimeMs = sp.ctimeMs = op.ms;
        dp.mtimeMs = dp.ctimeMs = op.ms;
        this.storage.entryChanged(sp.ino, op.sn, undefined, ino);
        this.storage.entryChanged(dp.ino, op.dn, ino, existing);
        this.storage.touched(sp);
        this.storage.touched(dp);
        const moved = this.inodes.get(ino);
        if (moved) {
          moved.ctimeMs = op.ms;
          this.storage.touched(moved);
        }
        return released;
      }
      case 'attr': {
        const inode = this.inodes.get(op.ino);
        if (!inode) return [];
        if (op.mode !== undefined) inode.mode = op.mode & 0o7777;
        if (op.uid !== undefined) inode.uid = op.uid;
        if (op.gid !== undefined) inode.gid = op.gid;
        if (op.atimeMs !== undefined) inode.atimeMs = op.atimeMs;
        if (op.mtimeMs !== undefined) inode.mtimeMs = op.mtimeMs;
        if (op.size !== undefined && inode.kind === 'file') {
          if (op.size < inode.size) this.truncateChunks(inode, op.size);
          inode.size = op.size;
        }
        inode.ctimeMs = op.ms;
        this.storage.touched(inode);
        return [];
      }
      case 'chunk': {
        const inode = this.inodes.get(op.ino);
        if (!inode || inode.kind !== 'file') return [];
        const start = op.idx * this.chunkSize;
        if (op.ref && start >= inode.size) return [];
        let ref = op.ref;
        if (ref && ref[1] > inode.size - start) ref = [ref[0], inode.size - start];
        this.setChunk(inode, op.idx, ref);
        return [];
      }
      case 'xattr': {
        const inode = this.inodes.get(op.ino);
        if (!inode) return [];
        if (op.value === null) {
          if (inode.xattrs) delete inode.xattrs[op.name];
        } else {
          (inode.xattrs ??= {})[op.name] = op.value;
          this.xattrNames?.add(op.name);
        }
        inode.ctimeMs = op.ms;
        this.storage.touched(inode);
        return [];
      }
      default:
        throw new UnknownOpError(String((op as { t?: unknown }).t));
    }
  }
}

/** Paths of every inode in `tree` (first found for hard-linked ones). It reads the whole tree. */
export function pathsOf(tree: Tree): Map<number, string> {
  const out = new Map<number, string>([[ROOT_INO, '/']]);
  const stack: Array<[number, string]> = [[ROOT_INO, '']];
  while (stack.length > 0) {
    const [ino, p] = stack.pop()!;
    const node = tree.get(ino);
    if (!node?.entries) continue;
    for (const [name, child] of node.entries) {
      const cp = `${p}/${name}`;
      if (!out.has(child)) out.set(child, cp);
      if (tree.get(child)?.kind === 'dir') stack.push([child, cp]);
    }
  }
  return out;
}

/**
 * Every path of each inode of `inos` (several for one with hard links, in order; none for one
 * without a name), found upward from it: the folders that name it (`dirsOf`), then each folder's own name
 * in its parent, up to the root. It reads those folders, not the tree, so it costs what the
 * inodes asked about are, not how big the tree is (`pathsOf` walks all of it). A folder's names
 * are read once per call; a chain that never reaches the root (damaged metadata) gives no path.
 */
export function pathsOfInodes(tree: Tree, inos: Iterable<number>): Map<number, string[]> {
  /** Per folder read: its names by the inode they name. */
  const namesIn = new Map<number, Map<number, string[]>>();
  const namesOf = (dir: number, ino: number): readonly string[] => {
    let m = namesIn.get(dir);
    if (!m) {
      m = new Map();
      for (const [name, child] of tree.get(dir)?.entries ?? []) {
        const l = m.get(child);
        if (l) l.push(name);
        else m.set(child, [name]);
      }
      namesIn.set(dir, m);
    }
    return m.get(ino) ?? [];
  };
  /** Folder paths found so far ('' for the root; undefined: it has none). */
  const dirPaths = new Map<number, string | undefined>([[ROOT_INO, '']]);
  const dirPath = (dir: number): string | undefined => {
    // Up to a folder whose path is known, then down again, filling in the ones passed.
    const chain: number[] = [];
    let at = dir;
    while (!dirPaths.has(at)) {
      const parent = tree.parentOf(at);
      if (parent === undefined || chain.includes(at)) {
        for (const c of [...chain, at]) dirPaths.set(c, undefined);
        return undefined;
      }
      chain.push(at);
      at = parent;
    }
    for (let k = chain.length - 1; k >= 0; k--) {
      const base = dirPaths.get(at);
      const name = base === undefined ? undefined : namesOf(at, chain[k]!)[0];
      dirPaths.set(chain[k]!, name === undefined ? undefined : `${base}/${name}`);
      at = chain[k]!;
    }
    return dirPaths.get(dir);
  };
  const out = new Map<number, string[]>();
  for (const ino of inos) {
    if (out.has(ino)) continue;
    if (ino === ROOT_INO) {
      out.set(ino, ['/']);
      continue;
    }
    const paths: string[] = [];
    for (const dir of tree.dirsOf(ino)) {
      const base = dirPath(dir);
      if (base !== undefined) for (const name of namesOf(dir, ino)) paths.push(`${base}/${name}`);
    }
    out.set(ino, paths.sort());
  }
  return out;
}
