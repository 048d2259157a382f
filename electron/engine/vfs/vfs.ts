/**
 * The filesystem: every operation a mount adapter needs, by path and file handle, returning
 * values or throwing FsError. It knows nothing about FUSE (native/fuse adapts it), so the
 * same logic can serve other hosts and is testable without a kernel.
 *
 * State it owns:
 *  - open file handles (fh -> inode, flags, read-ahead cursor, and the chunk whose download
 *    last failed on it for want of an answer: the kernel retries a failed read-ahead through
 *    the same handle, page by page, and that retry fails at once while the bucket is still
 *    offline, so one read(2) waits one read timeout, not two; a new open tries again);
 *  - what the kernel's page cache can hold for each path opened (pageCache.ts), so an open
 *    lets the kernel keep the pages it cached (keep_cache) only when they are of the version
 *    the new handle reads, and never after another machine's change reached a file under a
 *    handle open on the live tree;
 *  - live sizes: a write that extends a file updates an in-memory size at once and commits it
 *    to the metadata later (at flush/fsync/close, before a chunk commit, or every second), so
 *    a stream of small appends is not a stream of journal records;
 *  - files deleted while open (as a local disk keeps them): unlink, or a rename over the file,
 *    removes the name and commits the deletion at once, so it is what the journal keeps and
 *    what other machines see; the inode itself lives on in a local tree of its own, read,
 *    written and truncated through its open handles, until its last handle closes and its data
 *    is freed. None of it is committed or uploaded, so after a crash nothing brings it back
 *    (its leftover dirty data belongs to no file and goes at the next start). A mount adapter
 *    that keeps naming such a file (libfuse2 renames it to a hidden name and uses that name
 *    until the last close) registers that name as an alias: never listed, never committed.
 *  - hard links (`link`): a file may have several names (the tree counts them); removing one
 *    while others remain changes nothing but the names (the file, its live size, buffered
 *    data and handles carry on), and only the last name makes it a deleted file as above.
 *
 * Who may do what: the kernel checks access to existing files from the modes and owners this
 * reports (the FUSE mount uses `default_permissions`); what it leaves to the filesystem is done
 * here as ext4 does it, from the caller a mount adapter names (`Caller`): the owner and group
 * of new entries (setgid directories included), who may chmod and chown, and the setuid/setgid
 * bits chown clears. POSIX ACL names are refused (see `setxattr`).
 *
 * The clean cache holds live data: a chunk nothing can read any more (deleted, truncated away,
 * replaced by a newer upload, and not read through a snapshot mount: `alsoReading`) is removed
 * from it (`freeUnreferencedCache`).
 *
 * Data path: a write is acknowledged once it is in the write buffer (writeBuffer.ts: memory,
 * counted against the cache cap); the buffer is written to the dirty store (cache/dirty.ts) in
 * batches behind, and always before close (flush) and fsync return, which then do what they
 * did: close leaves the data written in the dirty store (a crash of this process loses none
 * of it), fsync makes it durable. Reads come from the dirty store, else the clean cache, else
 * the bucket through the fetcher, and zeros for holes, with buffered bytes laid over them.
 * Every change to one chunk's dirty data (a flush of its buffered bytes included), its fsync
 * and its drop run under the dirty store's chunk lock (`dirty.withChunk`; the lock order is
 * written in cache/dirty.ts); reads take no lock, except a read of a chunk whose buffered
 * bytes cover the range only in part, which is read under it so that no flush rewrites the
 * chunk's units meanwhile. A write that finds no room while dirty data fills the cache cap
 * waits in `Backpressure` (backpressure.ts), outside any chunk lock; what waits under a chunk
 * lock is bounded (local I/O, or a fetch of the chunk's committed bytes, bounded by the read
 * timeout).
 */

import { nameBytes } from '../util/names';
import { ChunkCache } from '../cache/chunkCache';
import { DirtyChunk, DirtyStore, PRE_IMAGE_UNIT_BYTES, UnitPatch } from '../cache/dirty';
import { UNIT, physicalSize } from '../cache/sealed';
import { FsError } from '../errors';
import { ChunkRef, Inode, InodeKind, MetaOp, ROOT_INO, RefCounts, Tree } from '../meta/tree';
import { MetaStore } from '../meta/metastore';
import type { PageLoader } from '../meta/pageLoader';
import { ChunkFetcher, SegmentSpan } from '../prefetch/fetcher';
import { ReadAheadCursor } from '../prefetch/readahead';
import { SingleFlight } from '../util/concurrency';
import { Backpressure, StallCause, WritesWaiting } from './backpressure';
import { ContentVersion, PageCacheBook } from './pageCache';
import { BufferedChunk, FlushSnapshot, WriteBuffer } from './writeBuffer';

export interface Stat {
  readonly ino: number;
  readonly mode: number;
  /** Device number of a character or block device; 0 for everything else. */
  readonly rdev: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly atime: number;
  readonly mtime: number;
  readonly ctime: number;
  readonly blksize: number;
  readonly blocks: number;
}

/**
 * Who asked for an operation, from the mount's request context (the FUSE adapter passes it
 * when its addon knows it). New entries belong to it, and chmod/chown are allowed as on ext4.
 */
/**
 * What a request names: a path from the root (libfuse2's high-level API), an inode by number
 * (named, or deleted while open), or a name in a folder given by number (the low-level API).
 */
export type Where = string | { readonly ino: number } | { readonly dir: number; readonly name: string };

export interface Caller {
  readonly uid: number;
  readonly gid: number;
  /** Whether the caller is in group `gid` (its own or a supplementary one). */
  inGroup(gid: number): boolean;
}

export interface VfsOptions {
  /** Owner of new entries when the request names no caller. */
  readonly uid: number;
  readonly gid: number;
  readonly prefetchMaxChunks: () => number;
  readonly readOnly: () => string | undefined; // reason when writes are refused
  /** Followers: a file opened for reading keeps reading the chunk list it opened. */
  readonly snapshotReads?: () => boolean;
  /** Why uploads cannot free room now (undefined while they can); default: they always can. */
  readonly drainBlocked?: () => StallCause | undefined;
  /** How long a write waits for room while nothing can drain; default 30 s. */
  readonly writeStallTimeoutMs?: () => number;
  /** Memory for writes acknowledged before they reach the dirty store (vfs/writeBuffer.ts). */
  readonly writeBufferBytes?: number;
  /** How long written data may wait in that memory; default 200 ms. */
  readonly writeBufferFlushMs?: number;
  readonly log?: (msg: string) => void;
  readonly now?: () => number;
  /** Awaited before each link(2): the first one records in the bucket that links are in use. */
  readonly beforeFirstLink?: () => Promise<void>;
}

/** Dirty data as publishing a size must see it (upload/uploader.ts `publishableOps`). */
export interface UnsentChunks {
  indexesOf(ino: number): number[];
  get(ino: number, idx: number): { readonly firstDirtyMs: number } | undefined;
}

export const DEFAULT_WRITE_BUFFER_BYTES = 8 * 1024 * 1024;

/** What a read needs of a file: its inode number and chunk list. */
interface ChunkView {
  readonly ino: number;
  readonly chunks?: ReadonlyArray<ChunkRef | null>;
}

interface Handle {
  readonly ino: number;
  /** The path it was opened by (the kernel's page cache is per path; see pageCache.ts). */
  readonly path: string;
  readonly writable: boolean;
  readonly append: boolean;
  readonly cursor: ReadAheadCursor;
  /** A chunk whose download failed on this handle because the bucket did not answer. */
  unanswered?: string;
  /** The file as opened, when reads must not see later commits (followers). */
  readonly snap?: { readonly chunks: ReadonlyArray<ChunkRef | null>; readonly size: number };
  /** What it reads, when its committed size and chunks describe that (see pageCache.ts). */
  readonly version: ContentVersion | undefined;
  /** Reads go around the kernel's page cache (see `directIo`). */
  readonly direct: boolean;
  /** A new file's writer that writes around the kernel's page cache (see `addHandle`). */
  readonly writesAround: boolean;
  /** The kernel may keep the pages it cached for this file (see `keepCache`). */
  readonly keepCache: boolean;
  /**
   * Chunks this handle read from the memory cache (the latest READ_MEMORY_NAMES), let go of
   * when the file's last handle closes (`release`).
   */
  readFromMemory?: Set<string>;
  /** It has been read as a stream: its reads do not count as random ones (see `noteRangedRead`). */
  streamed?: boolean;
}

/** How many chunk names a handle remembers having read from the memory cache. */
const READ_MEMORY_NAMES = 64;
/** How many files read at random the mount remembers the touched chunks of (see `noteRangedRead`). */
const RANDOM_FILES = 64;

/** Special time values for utimens (the FUSE adapter maps UTIME_NOW / UTIME_OMIT to these). */
export const TIME_OMIT = 2 ** 48 - 1;
export const TIME_NOW = 2 ** 48 - 2;

/** Directories whose link counts are kept (dirLinks); past it they are all forgotten. */
const DIR_LINK_COUNTS_MAX = 4096;
/** Past this many chunk names to weigh, the next sweep weighs the whole cache instead (bounds memory). */
const SWEEP_NAMES_MAX = 65_536;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o010;
const S_IFIFO = 0o010000;
const S_IFSOCK = 0o140000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFMT = 0o170000;
/** The type bits of each kind of inode in st_mode. */
export const TYPE_BITS: Readonly<Record<InodeKind, number>> = {
  file: S_IFREG,
  dir: S_IFDIR,
  symlink: S_IFLNK,
  fifo: S_IFIFO,
  socket: S_IFSOCK,
  chardev: S_IFCHR,
  blockdev: S_IFBLK,
};
const O_ACCMODE = 3;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_APPEND = 0o2000;
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
export const NAME_MAX = 255;
/** What statfs reports (see `statfs`). */
const STATFS_TOTAL_BYTES = 2 ** 50;
const STATFS_BLOCK_BYTES = 256 * 1024;
/**
 * Extended-attribute names the filespace does not keep; they are refused with EOPNOTSUPP, as by a
 * file system without them:
 * - POSIX ACLs travel as `system.posix_acl_*`: refused, tools fall back to the mode bits;
 * - `security.selinux`: SELinux labels a FUSE mount as a whole (by its policy's genfs rule, not per
 *   file; an SELinux kernel answers a read of the label from its own), and one machine's labels
 *   mean nothing to another's policy. Refused, `ls -l` stops asking for it after the first entry of a listing,
 *   where "no such attribute" cost a round trip per entry. Other `security.*` names are kept.
 * Values stored under these names by earlier versions stay in the metadata, unseen.
 */
export const UNKEPT_XATTR = /^(system\.posix_acl_(access|default)|security\.selinux)$/;

/**
 * statfs(2) of a tree holding `usedBytes` of data in `inodes` inodes: a nominal 1 PiB in all,
 * counted in 256 KiB blocks (see `Vfs.statfs`).
 */
export function statfsReply(usedBytes: number, inodes: number, readOnly: boolean): Record<string, number> {
  const block = STATFS_BLOCK_BYTES;
  const blocks = STATFS_TOTAL_BYTES / block - 1; // the largest 32-bit count
  const free = Math.max(0, blocks - Math.ceil(usedBytes / block));
  const files = 2 ** 32 - 1;
  return {
    bsize: block,
    frsize: block,
    blocks,
    bfree: free,
    bavail: free,
    files,
    ffree: files - inodes,
    favail: files - inodes,
    fsid: 0,
    flag: readOnly ? 1 : 0, // ST_RDONLY
    namemax: NAME_MAX,
  };
}
const MAX_FILE_BYTES = 2 ** 50;

export class Vfs {
  private readonly handles = new Map<number, Handle>();
  /** Open handles by the path they were opened by. */
  private readonly openAt = new Map<string, Set<number>>();
  private readonly pageBook = new PageCacheBook();
  /** `meta.remoteChanges` as last seen (see `noteRemoteChanges`). */
  private remoteChangesSeen: number;
  private nextFh = 1;
  private readonly openCount = new Map<number, number>();
  private readonly writersCount = new Map<number, number>();
  /** Handles open per inode that write around the kernel's page cache (`Handle.writesAround`). */
  private readonly writingAround = new Map<number, number>();
  private readonly liveSize = new Map<number, { size: number; mtimeMs: number }>();
  /** Link counts of directories (dirLinks), by inode. */
  private readonly dirLinkCounts = new Map<number, number>();
  /** Files deleted while open here (see the header). */
  private readonly unlinked: Tree;
  /** Names a mount adapter still uses for them: "<directory ino>/<name>" -> ino. */
  private readonly aliases = new Map<string, number>();
  private readonly memLoads = new SingleFlight<string, boolean>();
  /** The first read of a stream from a chunk: its segments, then the whole chunk, until both are here (see firstOfStream). */
  private readonly wholeComing = new Map<string, Promise<void>>();
  /** Files read at random: the chunks ranged reads touched, or 'whole' once it comes whole (see `noteRangedRead`). */
  private readonly randomTouched = new Map<number, Set<number> | 'whole'>();
  private readonly backpressure: Backpressure;
  private readonly buffer: WriteBuffer;
  /** Called when writers are waiting for dirty data to drain (backpressure). */
  onPressure: () => void = () => undefined;
  /** Called when a file handle opened for writing was closed. */
  onWriterClosed: (ino: number) => void = () => undefined;
  /** Clean chunks another reader of this cache (a snapshot mount) is reading: kept like live ones. */
  alsoReading: (name: string) => boolean = () => false;
  /** When the last write was accepted (ms; 0: none yet): uploads give way to a streaming writer. */
  lastWriteMs = 0;
  /** Set by a mount adapter: how many requests the mount has received so far (see `lastRequestMs`). */
  requestsSoFar: () => number | undefined = () => undefined;
  private requestsSeen: number | undefined;
  private requestSeenMs = 0;
  /**
   * Set by a mount adapter that caches attributes; called on every change of the tree (the
   * engine calls `treeChanged`), whoever made it: this machine's requests, the engine's own
   * work, or another machine's changes applied here. With an inode number when the change
   * touched only that inode's attributes (its size, times, mode, owner, chunks or xattrs).
   */
  attributesChanged: (ino?: number) => void = () => undefined;
  /** Set by a mount adapter: called with extended-attribute names some entry newly has (see `xattrNames`). */
  xattrNamesAdded: (names: readonly string[]) => void = () => undefined;
  /**
   * Set by the engine while folders wait to be loaded from the bucket (a fresh machine,
   * meta/pageLoader.ts): a mount awaits `whenLoaded` before a request reaches the tree.
   */
  pages: PageLoader | undefined;
  private readonly now: () => number;
  /**
   * Cached chunk names that may have lost their last reader since the last sweep: a reference
   * the tree or the deleted-while-open files dropped, a chunk that entered the cache, and those
   * a snapshot still read at the last sweep (see `freeUnreferencedCache`).
   */
  private sweepNames = new Set<string>();
  /** The next sweep weighs every cached chunk: at start, after the tree was replaced, or when `sweepNames` overflowed. */
  private sweepAll = true;
  /** The tree whose dropped references feed `sweepNames` (a reset replaces the tree). */
  private watchedTree: Tree | undefined;
  private sweeping = false;
  /** The last O_APPEND write queued per file (see `appendInTurn`). */
  private readonly appends = new Map<number, Promise<void>>();

  constructor(
    private readonly meta: MetaStore,
    private readonly dirty: DirtyStore,
    private readonly cache: ChunkCache,
    private readonly fetcher: ChunkFetcher,
    private readonly opts: VfsOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.remoteChangesSeen = meta.remoteChanges;
    this.backpressure = new Backpressure({
      // Reserved room counts against the cap until the bytes it stood for are counted as dirty.
      reserve: (bytes) => this.cache.reserveForDirty(bytes),
      blocked: () => opts.drainBlocked?.(),
      readOnly: () => opts.readOnly(),
      stallTimeoutMs: () => opts.writeStallTimeoutMs?.() ?? 30_000,
      onPressure: () => this.onPressure(),
      now: this.now,
    });
    this.buffer = new WriteBuffer({
      chunkSize: meta.chunkSize,
      memoryBytes: opts.writeBufferBytes ?? DEFAULT_WRITE_BUFFER_BYTES,
      flushChunk: (c, all) => this.flushBuffered(c, all),
      reserve: (bytes) => this.cache.reserveForDirty(bytes),
      roomReturned: () => this.backpressure.roomReturned(),
      flushAfterMs: opts.writeBufferFlushMs,
      log: opts.log ?? (() => undefined),
      now: this.now,
    });
    this.unlinked = new Tree(meta.chunkSize);
    this.unlinked.onUnreferenced = (name) => this.mayBeUnread(name);
    this.cache.onAdded = (name) => this.mayBeUnread(name);
    this.watchTree();
    meta.onRelease = (inos) => {
      for (const ino of inos) void this.releaseStorage(ino);
    };
  }

  get chunkSize(): number {
    return this.meta.chunkSize;
  }

  private get tree() {
    return this.meta.tree;
  }

  // ---- path resolution -------------------------------------------------------------------

  private split(path: string): string[] {
    return path.split('/').filter((p) => p.length > 0);
  }

  private resolve(path: Where): Inode {
    if (typeof path !== 'string') {
      if ('ino' in path) {
        const inode = this.inodeOf(path.ino);
        if (!inode) throw new FsError('ENOENT');
        return inode;
      }
      const { parent, name } = this.resolveParent(path);
      const found = this.tree.lookup(parent.ino, name) ?? this.aliased(parent.ino, name);
      if (!found) throw new FsError('ENOENT');
      return found;
    }
    let cur = this.tree.get(ROOT_INO)!;
    for (const name of this.split(path)) {
      if (cur.kind !== 'dir') throw new FsError('ENOTDIR');
      if (name.length > NAME_MAX / 4 && nameBytes(name) > NAME_MAX) throw new FsError('ENAMETOOLONG');
      const next = this.tree.lookup(cur.ino, name) ?? this.aliased(cur.ino, name);
      if (!next) throw new FsError('ENOENT');
      cur = next;
    }
    return cur;
  }

  private resolveParent(path: Where): { parent: Inode; name: string } {
    if (typeof path !== 'string') {
      if ('ino' in path) throw new FsError('EINVAL', 'an inode is not a name in a folder');
      if (nameBytes(path.name) > NAME_MAX) throw new FsError('ENAMETOOLONG');
      if (path.name === '' || path.name === '.' || path.name === '..' || path.name.includes('/')) throw new FsError('EINVAL');
      const parent = this.tree.get(path.dir);
      if (!parent) throw new FsError('ENOENT');
      if (parent.kind !== 'dir') throw new FsError('ENOTDIR');
      return { parent, name: path.name };
    }
    const parts = this.split(path);
    const name = parts.pop();
    if (name === undefined) throw new FsError('EBUSY'); // the root itself
    if (nameBytes(name) > NAME_MAX) throw new FsError('ENAMETOOLONG');
    const parent = this.resolve('/' + parts.join('/'));
    if (parent.kind !== 'dir') throw new FsError('ENOTDIR');
    return { parent, name };
  }

  private assertWritable(): void {
    const reason = this.opts.readOnly();
    if (reason !== undefined) throw new FsError('EROFS', reason);
  }

  private commit(op: MetaOp): void {
    this.meta.commit(op);
  }

  /** A change to one inode: committed, or for a file deleted while open, applied here only. */
  private change(op: Extract<MetaOp, { ino: number }>): void {
    if (!this.unlinked.get(op.ino)) return this.commit(op);
    this.unlinked.apply(op);
    // Not a change of the tree, so told here what `treeChanged` tells for one.
    if (op.t === 'xattr' && op.value !== null) this.xattrNamesAdded([op.name]);
    this.attributesChanged(op.ino);
    this.opsApplied([op], []);
  }

  /** An inode by number, named or deleted while open. */
  private inodeOf(ino: number): Inode | undefined {
    return this.tree.get(ino) ?? this.unlinked.get(ino);
  }

  private aliased(dir: number, name: string): Inode | undefined {
    if (this.aliases.size === 0) return undefined;
    const ino = this.aliases.get(`${dir}/${name}`);
    return ino === undefined ? undefined : (this.unlinked.get(ino) ?? this.tree.get(ino));
  }

  /** Whether folders still wait to be loaded from the bucket (see `whenLoaded`). */
  loading(): boolean {
    return this.pages?.pending ?? false;
  }

  /**
   * For a mount: undefined when the folders a request names are loaded (the usual case, at
   * once), else a promise that settles once they are: the folders `dirs` (inode numbers; any
   * that is not a folder waiting is passed over), and each folder `named` names in its folder
   * (after that folder), so a lookup of a folder loads it and the kernel learns only folders
   * whose entries are here.
   */
  whenLoaded(
    dirs: readonly number[],
    named: ReadonlyArray<{ readonly dir: number; readonly name: string }> = [],
  ): Promise<void> | undefined {
    const pages = this.pages;
    if (!pages?.pending) return undefined;
    const children = (): Promise<void> | undefined => {
      const found: number[] = [];
      for (const n of named) {
        if (pages.isUnloaded(n.dir)) continue; // it failed to load: the request meets NotLoadedError
        const c = this.tree.lookup(n.dir, n.name);
        if (c?.kind === 'dir') found.push(c.ino);
      }
      return found.length > 0 ? pages.ensure(found) : undefined;
    };
    const first = pages.ensure(named.length > 0 ? [...dirs, ...named.map((n) => n.dir)] : dirs);
    return first ? first.then(children) : children();
  }

  /** Loads every folder on `path` (and the one it names) that waits to be loaded; see `whenLoaded`. */
  async whenPathLoaded(path: string): Promise<void> {
    if (!this.pages?.pending) return;
    let dir = ROOT_INO;
    for (const part of path.split('/').filter(Boolean)) {
      await this.whenLoaded([dir], [{ dir, name: part }]);
      const c = this.tree.lookup(dir, part);
      if (c?.kind !== 'dir') return;
      dir = c.ino;
    }
    await this.whenLoaded([dir]);
  }

  /** Whether `ino` is a file deleted while still open here (its data stays local). */
  isUnlinked(ino: number): boolean {
    return this.unlinked.get(ino) !== undefined;
  }

  /**
   * Removes from the clean cache the chunks nothing here can read any more: not referenced by
   * the tree, by a file deleted while open, nor by an open handle's snapshot (followers). So the
   * cache holds live data and a deleted file's space comes back at once, not when eviction
   * reaches it. Nothing is lost: a clean chunk is safe in the bucket, where garbage collection
   * keeps it through its grace period (a follower still reading it fetches it again), and where
   * it stays if the deletion is undone by a crash before the journal was written. It costs what
   * changed, not what is cached (the engine calls it every second): it weighs only the chunks
   * that may have lost their last reader since the last sweep, which the trees (this machine's
   * changes and another machine's alike) and the cache name as they happen (`mayBeUnread`);
   * the whole cache only at the first sweep, after the tree was replaced, or when too many
   * names piled up. A chunk still read through a snapshot is weighed again at each sweep until
   * it is not. Says how many chunks it freed and how many it weighed.
   */
  async freeUnreferencedCache(): Promise<{ freed: number; weighed: number }> {
    this.watchTree();
    if (this.sweeping || (!this.sweepAll && this.sweepNames.size === 0)) return { freed: 0, weighed: 0 };
    this.sweeping = true;
    let names: Iterable<string>;
    if (this.sweepAll) {
      this.sweepAll = false;
      this.sweepNames.clear();
      names = this.cache.names();
    } else {
      names = this.sweepNames;
      this.sweepNames = new Set();
    }
    try {
      const snapshots = new Set<string>();
      for (const h of this.handles.values()) for (const r of h.snap?.chunks ?? []) if (r) snapshots.add(r[0]);
      let freed = 0;
      let weighed = 0;
      for (const name of names) {
        weighed++;
        if (!this.cache.has(name)) continue;
        if (this.tree.chunkRefs.has(name) || this.unlinked.chunkRefs.has(name)) continue;
        if (snapshots.has(name) || this.alsoReading(name)) {
          // Still read through a snapshot: weighed again at the next sweep, until it is not.
          this.mayBeUnread(name);
          continue;
        }
        await this.cache.remove(name);
        freed++;
      }
      return { freed, weighed };
    } finally {
      this.sweeping = false;
    }
  }

  /** Notes a cached chunk that may have lost its last reader (see `freeUnreferencedCache`). */
  private mayBeUnread(name: string): void {
    if (this.sweepAll) return;
    this.sweepNames.add(name);
    if (this.sweepNames.size > SWEEP_NAMES_MAX) {
      this.sweepNames.clear();
      this.sweepAll = true;
    }
  }

  /** Watches the current tree's dropped references; a tree not watched before means a full sweep. */
  private watchTree(): void {
    const tree = this.tree;
    if (tree === this.watchedTree) return;
    if (this.watchedTree) this.watchedTree.onUnreferenced = undefined;
    tree.onUnreferenced = (name) => this.mayBeUnread(name);
    this.watchedTree = tree;
    this.sweepNames.clear();
    this.sweepAll = true;
  }

  /** Chunk names the committed tree references, plus those files deleted while open still read. */
  /** The chunk names files deleted while still open reference (they are not in the tree). */
  unlinkedChunks(): IterableIterator<string> {
    return this.unlinked.chunkRefs.keys();
  }

  referencedChunks(): RefCounts {
    const kept = this.unlinked.chunkRefs;
    if (kept.size === 0) return this.tree.chunkRefs;
    const all = new Map(this.tree.chunkRefs);
    for (const [name, n] of kept) all.set(name, (all.get(name) ?? 0) + n);
    return all;
  }

  /**
   * Called before a name of `inode` goes (unlink, rename over it). While another name is left
   * nothing changes: the file, its in-memory size, its buffered data and its handles live on
   * under the other names. With its last name, a file still open lives on without a name until
   * its last close; otherwise its in-memory size goes with it.
   */
  private beforeNameGoes(inode: Inode): void {
    if (Tree.namesOf(inode) > 1) return;
    if (inode.kind === 'file' && (this.openCount.get(inode.ino) ?? 0) > 0) this.unlinked.addNameless(inode);
    else this.liveSize.delete(inode.ino);
  }

  /**
   * Writes the journal (not durably) before a deletion is answered, so a crash of this process
   * cannot bring the file back. A failure leaves the records queued for the next write: the
   * deletion has happened either way.
   */
  private async journalDeletion(): Promise<void> {
    await this.meta.flush().catch(() => undefined);
  }

  // ---- attributes ------------------------------------------------------------------------

  sizeOf(inode: Inode): number {
    return this.liveSize.get(inode.ino)?.size ?? inode.size;
  }

  private statOf(inode: Inode): Stat {
    const live = this.liveSize.get(inode.ino);
    const size = live?.size ?? inode.size;
    return {
      ino: inode.ino,
      mode: TYPE_BITS[inode.kind] | inode.mode,
      rdev: inode.rdev ?? 0,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.kind === 'dir' ? 4096 : size,
      // A file deleted while open has no name left: 0, as on a local disk.
      nlink: this.unlinked.get(inode.ino) ? 0 : inode.kind === 'dir' ? this.dirLinks(inode) : Tree.namesOf(inode),
      atime: inode.atimeMs,
      mtime: live?.mtimeMs ?? inode.mtimeMs,
      ctime: Math.max(inode.ctimeMs, live?.mtimeMs ?? 0),
      blksize: 4096,
      // In 512-byte units, as st_blocks counts; whole 4 KiB blocks as ext4 allocates them.
      blocks: (Math.ceil(this.allocatedBytes(inode) / 4096) * 4096) / 512,
    };
  }

  /**
   * A directory's link count as ext4 gives it: its name, its ".", and each subdirectory's "..".
   * Counting walks the directory, so the count is kept until a change of names could move it
   * (treeChanged): a getattr of a directory of thousands of files, which the kernel asks for
   * after each file created in it, does not walk them all again.
   */
  private dirLinks(dir: Inode): number {
    const known = this.dirLinkCounts.get(dir.ino);
    if (known !== undefined) return known;
    // Only each entry's kind is wanted: a tree on disk counts the directories among the entries
    // it does not hold in one query, and keeps none of them (a listing of a folder of folders
    // asks this of each: at 10,000 folders of 100 files, keeping every grandchild alive until
    // the request returned was about 700 MB).
    const n = 2 + this.tree.scan(() => this.tree.dirsAmong([...(dir.entries?.values() ?? [])]));
    if (this.dirLinkCounts.size >= DIR_LINK_COUNTS_MAX) this.dirLinkCounts.clear();
    this.dirLinkCounts.set(dir.ino, n);
    return n;
  }

  /** Forgets the link counts that `op` (applied) may have changed. */
  private dirLinksChanged(op: MetaOp): void {
    const counts = this.dirLinkCounts;
    if (counts.size === 0) return;
    if (op.t === 'mk') {
      if (op.kind === 'dir') counts.delete(op.parent);
    } else if (op.t === 'rm') {
      // The name removed may have been a subdirectory only if the parent had one.
      if ((counts.get(op.parent) ?? 2) > 2) counts.delete(op.parent);
    } else if (op.t === 'mv') {
      const ino = this.tree.get(op.dp)?.entries?.get(op.dn);
      const moved = ino === undefined ? undefined : this.tree.get(ino);
      // Anything but a directory moved (over a non-directory, or over nothing) changes no count.
      if (moved === undefined || moved.kind === 'dir') {
        counts.delete(op.sp);
        counts.delete(op.dp);
      }
    }
  }

  /**
   * Bytes a file holds (what `du` counts): chunks written or committed, not holes. A chunk is
   * counted at its stored length (a hole inside a written chunk counts); a directory as one
   * 4 KiB block; a symlink as none (its target lives in the metadata, like ext4's short ones).
   */
  private allocatedBytes(inode: Inode): number {
    if (inode.kind === 'dir') return 4096;
    if (inode.kind !== 'file') return 0;
    const size = this.sizeOf(inode);
    const cs = this.chunkSize;
    let bytes = 0;
    const last = Math.ceil(size / cs);
    for (let idx = 0; idx < (inode.chunks?.length ?? 0) && idx < last; idx++) {
      const ref = inode.chunks![idx];
      if (ref && !this.dirty.get(inode.ino, idx) && !this.buffer.get(inode.ino, idx)) bytes += ref[1];
    }
    const pending = this.unsent.indexesOf(inode.ino);
    for (const idx of pending) {
      if (idx >= last) continue;
      const stored = Math.max(this.dirty.get(inode.ino, idx)?.len ?? 0, this.committedRef(inode, idx)?.[1] ?? 0);
      const buffered = this.buffer.get(inode.ino, idx)?.end ?? 0;
      bytes += Math.max(stored, buffered);
    }
    return Math.min(bytes, size);
  }

  getattr(path: Where): Stat {
    return this.statOf(this.resolve(path));
  }

  /**
   * Answers what a mount's first requests ask, once, ahead of them: the root's attributes and a
   * lookup of its first entry, so the first open after a mount does not pay for this code's
   * first run (V8 compiles a function at its first call; about a millisecond a request on a
   * 2-core machine). Changes nothing; never throws.
   */
  warm(): void {
    try {
      this.getattr({ ino: ROOT_INO });
      if (this.pages?.isUnloaded(ROOT_INO)) return;
      const first = this.tree.get(ROOT_INO)?.entries?.keys().next();
      if (first && !first.done) this.getattr({ dir: ROOT_INO, name: first.value });
    } catch {
      // the first request does this work itself
    }
  }

  /** getattr, and whether listxattr would name anything (see `readdirPlus`). */
  getattrPlus(path: Where): { stat: Stat; xattrs: boolean } {
    const inode = this.resolve(path);
    return { stat: this.statOf(inode), xattrs: Vfs.listsXattrs(inode) };
  }

  /** getattrPlus by inode number (named, or deleted while open); undefined when it is gone. */
  attributesOf(ino: number): { stat: Stat; xattrs: boolean } | undefined {
    const inode = this.inodeOf(ino);
    return inode ? { stat: this.statOf(inode), xattrs: Vfs.listsXattrs(inode) } : undefined;
  }

  /** The attributes of an open file by its handle (named or deleted while open). */
  fgetattr(fh: number): Stat {
    const inode = this.inodeOf(this.handle(fh).ino);
    if (!inode) throw new FsError('ENOENT');
    return this.statOf(inode);
  }

  /** Commits a file's in-memory size and mtime to the metadata. */
  commitSize(ino: number): void {
    const live = this.liveSize.get(ino);
    if (!live) return;
    this.liveSize.delete(ino);
    if (!this.inodeOf(ino)) return;
    this.change({ t: 'attr', ino, size: live.size, mtimeMs: live.mtimeMs, ms: live.mtimeMs });
  }

  commitAllSizes(): void {
    for (const ino of [...this.liveSize.keys()]) this.commitSize(ino);
  }

  /**
   * chmod(2) as ext4 allows it: by the owner or root. Another caller may only drop the setuid
   * and setgid bits (the kernel asks for that when someone other than root writes to or
   * truncates such a file). An owner outside the file's group cannot set its setgid bit.
   */
  chmod(path: Where, mode: number, caller?: Caller): void {
    this.assertWritable();
    const inode = this.resolve(path);
    let bits = mode & 0o7777;
    if (caller && caller.uid !== 0) {
      if (caller.uid !== inode.uid) {
        const dropped = inode.mode & ~bits;
        if ((bits & ~inode.mode) !== 0 || (dropped & ~(S_ISUID | S_ISGID)) !== 0) throw new FsError('EPERM');
      } else if (bits & S_ISGID && !caller.inGroup(inode.gid)) {
        bits &= ~S_ISGID;
      }
    }
    this.change({ t: 'attr', ino: inode.ino, mode: bits, ms: this.now() });
  }

  /**
   * chown(2) as ext4 allows it: root changes anything; the owner may only change the group, to
   * one of its own groups. Changing the owner or group of a file that is not a directory clears
   * its setuid bit, and its setgid bit when that means "run as group" (group-executable).
   */
  chown(path: Where, uid: number, gid: number, caller?: Caller): void {
    this.assertWritable();
    const inode = this.resolve(path);
    const op: Extract<MetaOp, { t: 'attr' }> = { t: 'attr', ino: inode.ino, ms: this.now() };
    // (uid_t)-1 means "leave unchanged".
    if (uid !== 0xffffffff && uid !== -1) op.uid = uid;
    if (gid !== 0xffffffff && gid !== -1) op.gid = gid;
    if (caller && caller.uid !== 0 && (op.uid !== undefined || op.gid !== undefined)) {
      if (caller.uid !== inode.uid) throw new FsError('EPERM');
      if (op.uid !== undefined && op.uid !== inode.uid) throw new FsError('EPERM');
      if (op.gid !== undefined && op.gid !== inode.gid && !caller.inGroup(op.gid)) throw new FsError('EPERM');
    }
    if ((op.uid !== undefined || op.gid !== undefined) && inode.kind !== 'dir') {
      let bits = inode.mode & ~S_ISUID;
      if ((bits & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP)) bits &= ~S_ISGID;
      if (bits !== inode.mode) op.mode = bits;
    }
    this.change(op);
  }

  /**
   * Owner, group and mode of a new entry in `parent`, as ext4 gives them: it belongs to the
   * caller (the mounting user when the request names none); in a setgid directory it takes the
   * directory's group, and a new subdirectory inherits the setgid bit. A new file keeps a
   * requested setgid bit only if its creator is in its group (or is root).
   */
  private newOwner(parent: Inode, mode: number, dir: boolean, caller: Caller | undefined) {
    const uid = caller?.uid ?? this.opts.uid;
    const inherit = (parent.mode & S_ISGID) !== 0;
    const gid = inherit ? parent.gid : (caller?.gid ?? this.opts.gid);
    let bits = mode & 0o7777;
    if (dir && inherit) bits |= S_ISGID;
    if (!dir && (bits & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP) && caller && caller.uid !== 0 && !caller.inGroup(gid)) {
      bits &= ~S_ISGID;
    }
    return { uid, gid, mode: bits };
  }

  /**
   * Sets times in ms since the epoch; `TIME_NOW` means the current time and `TIME_OMIT`
   * leaves that time unchanged (utimensat's UTIME_NOW / UTIME_OMIT).
   */
  utimens(path: Where, atimeMs: number, mtimeMs: number): void {
    this.assertWritable();
    const inode = this.resolve(path);
    const now = this.now();
    this.commitSize(inode.ino);
    const op: Extract<MetaOp, { t: 'attr' }> = { t: 'attr', ino: inode.ino, ms: now };
    if (atimeMs !== TIME_OMIT) op.atimeMs = atimeMs === TIME_NOW ? now : atimeMs;
    if (mtimeMs !== TIME_OMIT) op.mtimeMs = mtimeMs === TIME_NOW ? now : mtimeMs;
    this.change(op);
  }

  /**
   * statfs(2): a bucket has no fixed size, so the total is a nominal 1 PiB (as other S3 file
   * systems report); used is the data of the files (what `du` counts, see `allocatedBytes`),
   * and free = available = total - used. Counts are of 256 KiB blocks: the FUSE binding passes
   * 32-bit counts, and 1 PiB in 4 KiB blocks would not fit (it would read as 0). Block size and
   * fundamental block size are equal, so tools that multiply by either agree.
   */
  statfs(): Record<string, number> {
    // The tree's running total of committed data, corrected for the files with data not yet
    // committed (written here, buffered or waiting to upload): a walk of those only.
    let used = this.tree.allocatedBytes + this.tree.dirs * 4096;
    for (const ino of new Set([...this.dirty.inodes(), ...this.buffer.inodes()])) {
      const inode = this.tree.get(ino);
      if (inode?.kind !== 'file') continue;
      used += Math.ceil(this.allocatedBytes(inode) / 4096) * 4096 - Tree.blocksBytes(inode);
    }
    return statfsReply(used, this.tree.inodes.size, false);
  }

  // ---- directories -----------------------------------------------------------------------

  readdir(path: Where): string[] {
    const inode = this.resolve(path);
    if (inode.kind !== 'dir') throw new FsError('ENOTDIR');
    return ['.', '..', ...inode.entries!.keys()];
  }

  /**
   * A folder's names with their inode numbers (`.` and `..` first), from its entry table alone:
   * no entry's inode is read, so listing a folder costs what its names cost, however many
   * times it is listed (the low-level FUSE binding's readdir; the kernel then looks up and
   * caches what it stats).
   */
  listing(path: Where): { names: string[]; inos: number[] } {
    const dir = this.resolve(path);
    if (dir.kind !== 'dir') throw new FsError('ENOTDIR');
    const parent = dir.ino === ROOT_INO ? ROOT_INO : (this.tree.parentOf(dir.ino) ?? dir.ino);
    const names = ['.', '..'];
    const inos = [dir.ino, parent];
    for (const [name, ino] of dir.entries!) {
      names.push(name);
      inos.push(ino);
    }
    return { names, inos };
  }

  /**
   * Runs `fn`, which only reads (the attributes of the names of a listing), as one pass over the
   * tree in scan mode (Tree.scan): one read of the store, and what it reads is not kept in the
   * working set, since the mount keeps its own answers (as `readdirPlus`).
   */
  reading<T>(fn: () => T): T {
    return this.tree.scan(fn);
  }

  /**
   * readdir with each name's attributes and whether it has extended attributes listxattr would
   * show, so a mount can answer the stats that follow a listing (`ls -l`, `find`, `du`) at once.
   */
  readdirPlus(path: Where): { names: string[]; stats: Stat[]; xattrs: boolean[] } {
    const dir = this.resolve(path);
    if (dir.kind !== 'dir') throw new FsError('ENOTDIR');
    const parent = dir.ino === ROOT_INO ? dir : (this.parentOf(dir.ino) ?? dir);
    const names = ['.', '..'];
    const stats = [this.statOf(dir), this.statOf(parent)];
    const xattrs = [Vfs.listsXattrs(dir), Vfs.listsXattrs(parent)];
    // The entries are read in scan mode (Tree.scan): what is not in the working set already is
    // read, answered and let go. The mount answers the lookups and stats that follow a listing
    // from its own copy of these answers, so keeping them here would only cost memory: listing
    // a folder of 10,000 folders kept each of them, with its whole entry table, until the
    // request returned (a million names for folders of 100 files).
    this.tree.scan(() => {
      for (const [name, ino] of dir.entries!) {
        const inode = this.tree.get(ino);
        if (!inode) continue;
        names.push(name);
        stats.push(this.statOf(inode));
        xattrs.push(Vfs.listsXattrs(inode));
      }
    });
    return { names, stats, xattrs };
  }

  /**
   * Every extended-attribute name some entry has, and maybe some no entry has any more (not the
   * POSIX ACL names, never answered): the tree's running set (Tree.xattrNames), so a mount does
   * not read every inode. A tree that does not know it yet (a database written before it was
   * kept) is read once, and the set is kept from then on (the next checkpoint stores it).
   */
  xattrNames(): string[] {
    let names = this.tree.xattrNames;
    if (!names) {
      const found = new Set<string>();
      this.tree.scan(() => {
        for (const inode of this.tree.inodes.values()) for (const n in inode.xattrs) found.add(n);
      });
      this.tree.xattrNames = names = found;
    }
    return [...names].filter((n) => !UNKEPT_XATTR.test(n));
  }

  /** Whether listxattr of `inode` names anything (see `listxattr`). */
  private static listsXattrs(inode: Inode): boolean {
    if (!inode.xattrs) return false;
    for (const n in inode.xattrs) if (!UNKEPT_XATTR.test(n)) return true;
    return false;
  }

  /**
   * Set by a mount adapter that tells the kernel what changed (the low-level binding): called,
   * synchronously, with every change applied to the tree, whoever made it (this mount's
   * requests, the engine itself, another machine), or 'all' when the tree was replaced; and
   * with the inodes whose link count changed although no op names them (MetaStore.onApplied).
   */
  opsApplied: (ops: readonly MetaOp[] | 'all', relinked: readonly number[]) => void = () => undefined;

  /** The tree changed by `ops` (applied), or was replaced ('all'): see `attributesChanged`. */
  treeChanged(ops: readonly MetaOp[] | 'all', relinked: readonly number[] = []): void {
    this.opsApplied(ops, relinked);
    if (ops === 'all') this.dirLinkCounts.clear();
    else for (const op of ops) this.dirLinksChanged(op);
    if (ops === 'all') {
      this.xattrNamesAdded(this.xattrNames());
      return this.attributesChanged();
    }
    for (const op of ops) if (op.t === 'xattr' && op.value !== null) this.xattrNamesAdded([op.name]);
    for (const op of ops) {
      // Removing or moving a name (rm, ln, mv) changes paths and other names' link counts:
      // everything goes. A new name (mk) changes only its folder's attributes, and its inode is new.
      if (op.t === 'rm' || op.t === 'ln' || op.t === 'mv') return this.attributesChanged();
    }
    for (const op of ops) {
      if (op.t === 'mk') {
        this.attributesChanged(op.parent);
        this.attributesChanged(op.ino);
      } else if (op.t === 'attr' || op.t === 'chunk' || op.t === 'xattr') this.attributesChanged(op.ino);
    }
  }

  mkdir(path: Where, mode: number, caller?: Caller): void {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    if (parent.entries!.has(name)) throw new FsError('EEXIST');
    this.commit({
      t: 'mk',
      parent: parent.ino,
      name,
      ino: this.tree.allocIno(),
      kind: 'dir',
      ...this.newOwner(parent, mode, true, caller),
      ms: this.now(),
    });
  }

  rmdir(path: Where): void {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    const inode = this.tree.lookup(parent.ino, name);
    if (!inode) throw new FsError('ENOENT');
    if (inode.kind !== 'dir') throw new FsError('ENOTDIR');
    if (inode.entries!.size > 0) throw new FsError('ENOTEMPTY');
    this.commit({ t: 'rm', parent: parent.ino, name, ms: this.now() });
  }

  symlink(target: string, path: Where, caller?: Caller): void {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    if (parent.entries!.has(name)) throw new FsError('EEXIST');
    if (nameBytes(target) > 4095) throw new FsError('ENAMETOOLONG');
    this.commit({
      t: 'mk',
      parent: parent.ino,
      name,
      ino: this.tree.allocIno(),
      kind: 'symlink',
      ...this.newOwner(parent, 0o777, false, caller),
      target,
      ms: this.now(),
    });
  }

  /**
   * mknod(2): a FIFO, a Unix socket's name, or a device node, stored as metadata only (the
   * kernel serves their I/O; nothing of theirs is stored as data). `mode` carries the type bits;
   * a regular file (type 0 or S_IFREG) is created empty as by creat(2).
   */
  mknod(path: Where, mode: number, rdev: number, caller?: Caller): void {
    this.assertWritable();
    const type = mode & S_IFMT;
    const kind: InodeKind | undefined =
      type === 0 || type === S_IFREG
        ? 'file'
        : type === S_IFIFO
          ? 'fifo'
          : type === S_IFSOCK
            ? 'socket'
            : type === S_IFCHR
              ? 'chardev'
              : type === S_IFBLK
                ? 'blockdev'
                : undefined;
    if (kind === undefined) throw new FsError('EINVAL', 'mknod makes files, FIFOs, sockets and devices only');
    const { parent, name } = this.resolveParent(path);
    if (parent.entries!.has(name)) throw new FsError('EEXIST');
    const op: Extract<MetaOp, { t: 'mk' }> = {
      t: 'mk',
      parent: parent.ino,
      name,
      ino: this.tree.allocIno(),
      kind,
      ...this.newOwner(parent, mode, false, caller),
      ms: this.now(),
    };
    if (kind === 'chardev' || kind === 'blockdev') op.rdev = rdev >>> 0;
    this.commit(op);
  }

  readlink(path: Where): string {
    const inode = this.resolve(path);
    if (inode.kind !== 'symlink') throw new FsError('EINVAL');
    return inode.target ?? '';
  }

  /**
   * link(2): `to` becomes a further name of the non-directory at `from` (the inode, its data
   * and attributes are shared; nlink counts the names). Its in-memory size is committed first,
   * so the name is never added to a size other machines have not seen. Before the first link
   * of a filespace, `opts.beforeFirstLink` makes the bucket's header say that links are in it
   * (a version that knows none refuses it then); if that fails, so does the link.
   */
  async link(from: Where, to: Where): Promise<void> {
    this.assertWritable();
    const inode = this.resolve(from);
    if (inode.kind === 'dir') throw new FsError('EPERM', 'a folder cannot have a second name');
    if (this.unlinked.get(inode.ino)) throw new FsError('ENOENT');
    const { parent, name } = this.resolveParent(to);
    if (parent.entries!.has(name) || this.aliased(parent.ino, name)) throw new FsError('EEXIST');
    if (this.opts.beforeFirstLink) {
      try {
        await this.opts.beforeFirstLink();
      } catch (err) {
        this.opts.log?.(`link ${typeof to === 'string' ? to : `as ${name}`} refused: ${(err as Error).message}`);
        throw new FsError('EIO', (err as Error).message);
      }
    }
    this.assertWritable();
    // The awaits above let other operations run: look again.
    const now = this.resolve(from);
    if (now.ino !== inode.ino) throw new FsError('ENOENT');
    const again = this.resolveParent(to);
    if (again.parent.entries!.has(again.name) || this.aliased(again.parent.ino, again.name)) throw new FsError('EEXIST');
    this.commitSize(inode.ino);
    this.commit({ t: 'ln', ino: inode.ino, parent: again.parent.ino, name: again.name, ms: this.now() });
  }

  async unlink(path: Where): Promise<void> {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    const inode = this.tree.lookup(parent.ino, name);
    if (!inode) {
      // An alias names a file that is deleted already; it goes, the open file stays.
      if (this.aliases.delete(`${parent.ino}/${name}`)) return;
      throw new FsError('ENOENT');
    }
    if (inode.kind === 'dir') throw new FsError('EISDIR');
    this.beforeNameGoes(inode);
    this.commit({ t: 'rm', parent: parent.ino, name, ms: this.now() });
    await this.journalDeletion();
  }

  /**
   * unlink(2) for a mount adapter that keeps naming the file afterwards: the name goes and the
   * deletion is committed as with unlink(), and `alias` (a name in the same directory) reaches
   * the open inode on this machine only, never listed nor committed, until its last handle
   * closes. libfuse2 renames a file deleted while open to a hidden name instead of unlinking
   * it; its adapter calls this for that rename. A file whose last handle closed meanwhile is
   * simply deleted. What cannot be such a rename (a directory, another directory, a name in
   * use) is an ordinary rename.
   */
  async unlinkKeepingAlias(path: string, alias: string): Promise<void> {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    const to = this.resolveParent(alias);
    const inode = this.tree.lookup(parent.ino, name);
    if (!inode || inode.kind === 'dir' || to.parent.ino !== parent.ino || parent.entries!.has(to.name)) {
      return this.rename(path, alias);
    }
    this.beforeNameGoes(inode);
    // Deleted while open, or still named elsewhere: the alias reaches the open inode either way.
    if (this.unlinked.get(inode.ino) || Tree.namesOf(inode) > 1) this.aliases.set(`${parent.ino}/${to.name}`, inode.ino);
    this.commit({ t: 'rm', parent: parent.ino, name, ms: this.now() });
    await this.journalDeletion();
  }

  async rename(from: Where, to: Where): Promise<void> {
    this.assertWritable();
    const src = this.resolveParent(from);
    const dst = this.resolveParent(to);
    const moving = this.tree.lookup(src.parent.ino, src.name);
    if (!moving) throw new FsError('ENOENT');
    const existing = this.tree.lookup(dst.parent.ino, dst.name);
    if (existing) {
      if (existing.ino === moving.ino) return;
      if (moving.kind === 'dir' && existing.kind !== 'dir') throw new FsError('ENOTDIR');
      if (moving.kind !== 'dir' && existing.kind === 'dir') throw new FsError('EISDIR');
      if (existing.kind === 'dir' && existing.entries!.size > 0) throw new FsError('ENOTEMPTY');
    }
    if (moving.kind === 'dir') {
      // A directory cannot move below itself.
      for (let p: Inode | undefined = dst.parent; p; p = this.parentOf(p.ino)) {
        if (p.ino === moving.ino) throw new FsError('EINVAL');
        if (p.ino === ROOT_INO) break;
      }
    }
    if (existing) this.beforeNameGoes(existing);
    this.commit({ t: 'mv', sp: src.parent.ino, sn: src.name, dp: dst.parent.ino, dn: dst.name, ms: this.now() });
    if (existing) await this.journalDeletion();
  }

  private parentOf(ino: number): Inode | undefined {
    const parent = this.tree.parentOf(ino);
    return parent === undefined ? undefined : this.tree.get(parent);
  }

  // ---- extended attributes ---------------------------------------------------------------

  /**
   * POSIX ACLs (`system.posix_acl_access` / `_default`) are not supported: they are refused with
   * EOPNOTSUPP, as by a file system mounted without ACLs, so cp, tar and rsync set the mode
   * with chmod instead (kept as an ordinary xattr, cp's ACL would be the file's only record of
   * its group and other bits, and the kernel would never enforce it). So is `security.selinux`
   * (see UNKEPT_XATTR). Other names are stored.
   */
  setxattr(path: Where, name: string, value: Buffer, flags: number): void {
    this.assertWritable();
    if (UNKEPT_XATTR.test(name)) throw new FsError('ENOTSUP');
    const inode = this.resolve(path);
    const exists = inode.xattrs?.[name] !== undefined;
    if (flags & XATTR_CREATE && exists) throw new FsError('EEXIST');
    if (flags & XATTR_REPLACE && !exists) throw new FsError('ENODATA');
    if (nameBytes(name) > 255) throw new FsError('ERANGE');
    if (value.length > 64 * 1024) throw new FsError('E2BIG');
    this.change({ t: 'xattr', ino: inode.ino, name, value: value.toString('base64'), ms: this.now() });
  }

  getxattr(path: Where, name: string): Buffer {
    if (UNKEPT_XATTR.test(name)) throw new FsError('ENOTSUP');
    const inode = this.resolve(path);
    const v = inode.xattrs?.[name];
    if (v === undefined) throw new FsError('ENODATA');
    return Buffer.from(v, 'base64');
  }

  listxattr(path: Where): string[] {
    // ACLs stored by earlier versions stay in the metadata, unseen.
    return Object.keys(this.resolve(path).xattrs ?? {}).filter((n) => !UNKEPT_XATTR.test(n));
  }

  removexattr(path: Where, name: string): void {
    this.assertWritable();
    if (UNKEPT_XATTR.test(name)) throw new FsError('ENOTSUP');
    const inode = this.resolve(path);
    if (inode.xattrs?.[name] === undefined) throw new FsError('ENODATA');
    this.change({ t: 'xattr', ino: inode.ino, name, value: null, ms: this.now() });
  }

  // ---- open files ------------------------------------------------------------------------

  private handle(fh: number): Handle {
    const h = this.handles.get(fh);
    if (!h) throw new FsError('EBADF');
    return h;
  }

  /**
   * `where` is how the file was named: a path, whose kernel node (libfuse2's high-level API) is
   * per name; or by inode (the low-level API), whose node is the inode itself, shared by all
   * its names. The page-cache book is kept per node.
   */
  private addHandle(ino: number, flags: number, where: Where, newWriteOnly = false): number {
    const byInode = typeof where !== 'string';
    const path = byInode ? `#${ino}` : where;
    const acc = flags & O_ACCMODE;
    const writable = acc === O_WRONLY || acc === O_RDWR;
    const fh = this.nextFh++;
    // Bits 29 and 30 are the FUSE adapter's keep-cache and direct-I/O flags.
    if (this.nextFh >= 0x1ffffff0) this.nextFh = 1;
    const inode = this.inodeOf(ino);
    const snap =
      !writable && inode?.kind === 'file' && this.opts.snapshotReads?.()
        ? { chunks: [...(inode.chunks ?? [])], size: this.sizeOf(inode) }
        : undefined;
    const version = this.versionOf(inode, snap);
    // A file with several names has a page cache per name when the kernel knows each name as its
    // own node (by path): a write through one name would leave the pages another name's open
    // handle reads stale, so its handles read and write around the page cache, and never keep it.
    const linked = !byInode && inode?.kind === 'file' && Tree.namesOf(inode) > 1;
    // A file just created to be written, not read (cp, dd, tar x: O_WRONLY), by the only handle
    // of it: its writes go around the kernel's page cache. The pages the kernel would have kept
    // of them could not be read through this handle, and the next reader's open drops them
    // anyway (the file changed), so the kernel copies each byte once instead of twice and takes
    // no page-cache memory for it. While such a writer is open, any other handle of the file
    // reads around the cache too, so nobody can hold a page its writes would leave stale.
    const writesAround = newWriteOnly && inode?.kind === 'file' && (this.openCount.get(ino) ?? 0) === 0;
    const direct =
      (snap !== undefined && this.snapshotDiffers(ino, snap)) || linked || writesAround || (this.writingAround.get(ino) ?? 0) > 0;
    this.noteRemoteChanges();
    const here = this.openAt.get(path) ?? new Set<number>();
    const others = [...here].map((o) => this.handles.get(o)?.version);
    // A direct handle does not read through the cache; the kernel then drops its pages (safe).
    const keepCache = this.pageBook.open(path, version, others) && !direct;
    here.add(fh);
    this.openAt.set(path, here);
    this.handles.set(fh, {
      ino,
      path,
      writable,
      append: (flags & O_APPEND) !== 0,
      cursor: new ReadAheadCursor(this.opts.prefetchMaxChunks()),
      snap,
      version,
      direct,
      writesAround,
      keepCache,
    });
    if (writesAround) this.writingAround.set(ino, (this.writingAround.get(ino) ?? 0) + 1);
    this.openCount.set(ino, (this.openCount.get(ino) ?? 0) + 1);
    if (writable) this.writersCount.set(ino, (this.writersCount.get(ino) ?? 0) + 1);
    return fh;
  }

  /**
   * What a handle reads, when the committed size and chunk list describe it (its snapshot's, or
   * the live tree's): not for a file with changes here not yet uploaded, a size not yet
   * committed, or one deleted while open (their writes went through the kernel, which updated
   * its cache with them).
   */
  private versionOf(inode: Inode | undefined, snap: Handle['snap']): ContentVersion | undefined {
    if (inode?.kind !== 'file' || this.liveSize.has(inode.ino) || this.unlinked.get(inode.ino)) return undefined;
    if (this.dirty.indexesOf(inode.ino).length > 0 || this.buffer.indexesOf(inode.ino).length > 0) return undefined;
    if (snap) return { ino: inode.ino, size: snap.size, chunks: snap.chunks };
    return { ino: inode.ino, size: inode.size, chunks: [...(inode.chunks ?? [])] };
  }

  /** Whether another open snapshot of `ino` holds other content than `snap`. */
  private snapshotDiffers(ino: number, snap: NonNullable<Handle['snap']>): boolean {
    for (const o of this.handles.values()) {
      if (o.ino !== ino || !o.snap) continue;
      if (
        o.snap.size !== snap.size ||
        o.snap.chunks.length !== snap.chunks.length ||
        o.snap.chunks.some((r, i) => r?.[0] !== snap.chunks[i]?.[0])
      )
        return true;
    }
    return false;
  }

  /**
   * Another machine's metadata was applied (or the tree reset) since last looked: a handle open
   * on the live tree whose file's bytes it changed may have read the new content into the
   * kernel's cache under its old version, so what its path's pages hold can no longer be named.
   * Handles of files it left alone read what they always read (a change of names moves no
   * bytes: a handle reads its inode), so their pages stay named.
   */
  private noteRemoteChanges(): void {
    if (this.meta.remoteChanges === this.remoteChangesSeen) return;
    this.remoteChangesSeen = this.meta.remoteChanges;
    const changed = this.meta.takeRemoteContentChanges();
    const inos = new Set<number>();
    const paths: string[] = [];
    for (const h of this.handles.values()) {
      if (h.snap || (changed !== 'all' && !changed.has(h.ino))) continue;
      inos.add(h.ino);
      paths.push(h.path);
    }
    this.pageBook.contentChangedUnder(inos, paths);
  }

  /**
   * Whether a handle reads and writes around the kernel's page cache. Followers: a handle whose
   * file changed since another open handle of it was opened, so the older handle keeps seeing
   * only its own version. Any handle of a file with several names (see `addHandle`); such a
   * handle cannot be mapped shared and writable (the kernel refuses it), private or read-only
   * maps work. A handle opened before the file got its second name keeps its page cache. The
   * handle that created a file write-only, and any handle of that file opened while it is open
   * (see `addHandle`): the same limit on shared maps applies to those readers meanwhile.
   */
  directIo(fh: number): boolean {
    return this.handles.get(fh)?.direct ?? false;
  }

  /**
   * Whether the kernel may keep the pages it cached for this file at this open: only when they
   * can hold nothing but the content this handle reads (see pageCache.ts).
   */
  keepCache(fh: number): boolean {
    return this.handles.get(fh)?.keepCache ?? false;
  }

  isOpenForWrite(ino: number): boolean {
    return (this.writersCount.get(ino) ?? 0) > 0;
  }

  get openFiles(): number {
    return this.handles.size;
  }

  open(path: Where, flags: number): number {
    const inode = this.resolve(path);
    if (inode.kind === 'dir') {
      if ((flags & O_ACCMODE) !== 0) throw new FsError('EISDIR');
    }
    // The kernel opens special files itself; one reaching here has nothing to read or write.
    if (inode.kind !== 'file' && inode.kind !== 'dir') throw new FsError('ENXIO');
    if ((flags & O_ACCMODE) !== 0) this.assertWritable();
    return this.addHandle(inode.ino, flags, path);
  }

  create(path: Where, mode: number, flags = O_RDWR, caller?: Caller): number {
    this.assertWritable();
    const { parent, name } = this.resolveParent(path);
    const existing = this.tree.lookup(parent.ino, name);
    if (existing) {
      if (existing.kind === 'dir') throw new FsError('EISDIR');
      return this.addHandle(existing.ino, flags | O_RDWR, path);
    }
    const ino = this.tree.allocIno();
    this.commit({
      t: 'mk',
      parent: parent.ino,
      name,
      ino,
      kind: 'file',
      ...this.newOwner(parent, mode, false, caller),
      ms: this.now(),
    });
    // Its first chunk's file is created now, while the kernel sends the writes, not at close.
    this.dirty.openAhead(ino, 0);
    return this.addHandle(ino, (flags & ~O_ACCMODE) | O_RDWR, path, (flags & O_ACCMODE) === O_WRONLY);
  }

  /**
   * close(2) of one descriptor: the file's buffered data goes to the dirty store and its size
   * to the journal (both written, not synced: a crash of this process loses neither, a power
   * cut may, as on a local disk). A write-back error of the file's buffered data fails it.
   */
  async flush(fh: number): Promise<void> {
    const h = this.handle(fh);
    // Data and size are written side by side: close promises both, neither before the other.
    this.commitSize(h.ino);
    await Promise.all([this.buffer.flushFile(h.ino), this.meta.flush()]);
  }

  /** fsync(2): after this resolves, a crash loses nothing written through this file. */
  async fsync(fh: number): Promise<void> {
    const h = this.handle(fh);
    await this.buffer.flushFile(h.ino);
    this.commitSize(h.ino);
    await this.syncData(h.ino);
    await this.meta.sync();
  }

  /** Writes every file's buffered data to the dirty store (sync, unmount, setting changes aside). */
  flushAll(): Promise<void> {
    return this.buffer.flushAll();
  }

  /** Stops the write buffer's timer (the engine is closing; flushAll still works). */
  stop(): void {
    this.buffer.stop();
  }

  /** Bytes written and acknowledged that are not in the dirty store yet. */
  get bufferedBytes(): number {
    return this.buffer.dataBytes;
  }

  /** Inodes with written data in the write buffer (some may also have dirty chunks). */
  bufferedInodes(): number[] {
    return this.buffer.inodes();
  }

  get hasBufferedData(): boolean {
    return this.buffer.hasData;
  }

  /** The write buffer's use: data bytes, memory taken by unit buffers, cache room held, unit buffers ever allocated. */
  get writeBuffer(): {
    readonly dataBytes: number;
    readonly memoryBytes: number;
    readonly roomBytes: number;
    readonly unitAllocations: number;
  } {
    const b = this.buffer;
    return { dataBytes: b.dataBytes, memoryBytes: b.memoryBytes, roomBytes: b.roomBytes, unitAllocations: b.unitAllocations };
  }

  /** Dirty chunks and buffered ones, with since when each holds data the bucket has not got. */
  readonly unsent: UnsentChunks = {
    indexesOf: (ino) => {
      const buffered = this.buffer.indexesOf(ino);
      const dirty = this.dirty.indexesOf(ino);
      return buffered.length === 0 ? dirty : [...new Set([...dirty, ...buffered])];
    },
    get: (ino, idx) => {
      const d = this.dirty.get(ino, idx);
      const b = this.buffer.get(ino, idx);
      if (!b) return d;
      return { firstDirtyMs: Math.min(d?.firstDirtyMs ?? Infinity, b.firstMs) };
    },
  };

  async fsyncAll(): Promise<void> {
    await this.buffer.flushAll();
    this.commitAllSizes();
    for (const ino of this.dirty.inodes()) await this.syncData(ino);
    await this.meta.sync();
  }

  /**
   * Makes a file's dirty chunks durable, each under its chunk lock, so an upload cannot hand
   * the chunk to the clean cache (nor a truncate drop it) while it is being synced. A chunk
   * that left the dirty store before its turn is durable already: the upload committed its
   * reference durably before the hand-over (and the meta.sync that follows covers it too).
   */
  private async syncData(ino: number): Promise<void> {
    for (const idx of this.dirty.indexesOf(ino)) {
      await this.dirty.withChunk(ino, idx, async () => {
        const d = this.dirty.get(ino, idx);
        if (d) await this.dirty.syncChunk(d);
      });
    }
  }

  async release(fh: number): Promise<void> {
    const h = this.handles.get(fh);
    if (!h) return;
    this.noteRemoteChanges();
    this.handles.delete(fh);
    const here = this.openAt.get(h.path);
    here?.delete(fh);
    if (here?.size === 0) this.openAt.delete(h.path);
    this.commitSize(h.ino);
    const open = (this.openCount.get(h.ino) ?? 1) - 1;
    if (open <= 0) {
      this.openCount.delete(h.ino);
      this.dirty.notNeededAhead(h.ino, 0);
    } else this.openCount.set(h.ino, open);
    // What a file's readers brought into memory goes when its last handle closes, not after
    // the memory's idle time: a tree read back (tar, cp -r, rsync) reads each file once, and
    // kept, its chunks filled the memory cache (48 MiB) for nothing. A reader that opens the
    // file again reads them from the disk cache.
    if (open <= 0 && h.readFromMemory) this.cache.letGoOfMemory(h.readFromMemory);
    if (h.writesAround) {
      const w = (this.writingAround.get(h.ino) ?? 1) - 1;
      if (w <= 0) this.writingAround.delete(h.ino);
      else this.writingAround.set(h.ino, w);
    }
    if (h.writable) {
      const w = (this.writersCount.get(h.ino) ?? 1) - 1;
      if (w <= 0) this.writersCount.delete(h.ino);
      else this.writersCount.set(h.ino, w);
      this.onWriterClosed(h.ino);
    }
    if (open <= 0 && this.unlinked.get(h.ino)) {
      // The last handle of a file deleted while open: now its data goes.
      this.unlinked.removeNameless(h.ino);
      for (const [key, ino] of this.aliases) if (ino === h.ino) this.aliases.delete(key);
      await this.releaseStorage(h.ino);
    }
    await this.meta.flush();
  }

  // ---- data ------------------------------------------------------------------------------

  private committedRef(inode: ChunkView, idx: number): ChunkRef | null {
    return inode.chunks?.[idx] ?? null;
  }

  /**
   * Reads [pos, pos+len) of the file into `buf`; with `answer` (see InodeFilesystem.read), a
   * read that one chunk held in memory covers whole is answered from that memory instead, at
   * once, with no copy into `buf`.
   */
  async read(fh: number, buf: Buffer, len: number, pos: number, answer?: (data: Buffer) => void): Promise<number> {
    const h = this.handle(fh);
    this.fetcher.noteRead();
    let inode: ChunkView;
    let size: number;
    if (h.snap) {
      // Followers: the file as it was opened, even if the writer changed or deleted it since.
      inode = { ino: h.ino, chunks: h.snap.chunks };
      size = h.snap.size;
    } else {
      const live = this.inodeOf(h.ino);
      if (!live) throw new FsError('ENOENT');
      if (live.kind !== 'file') throw new FsError('EISDIR');
      inode = live;
      size = this.sizeOf(live);
    }
    if (pos >= size) return 0;
    const total = Math.min(len, size - pos);
    const cs = this.chunkSize;
    const ahead = h.cursor.onRead(pos, total);
    // Two sequential reads in a row make a stream (a random reader's read lands next to its
    // last one now and then, twice in a row almost never).
    if (ahead >= 2) h.streamed = true;
    // Read-ahead starts before this read waits, so the downloads overlap it; but a read that
    // must wait for its own chunk to download starts it once that chunk is here, so the chunk
    // waited for never shares the bandwidth with chunks after it (the first chunk of a stream:
    // time to first byte; the kernel's concurrent reads within it all wait for it alike).
    const deferred = ahead > 0 && !this.atHand(inode, Math.floor(pos / cs));
    if (ahead > 0 && !deferred) this.readAhead(inode, pos, total, size, ahead);
    let done = 0;
    while (done < total) {
      const at = pos + done;
      const idx = Math.floor(at / cs);
      const inChunk = at - idx * cs;
      const n = Math.min(total - done, cs - inChunk);
      // Only a read that one chunk covers whole may be answered from it.
      const direct = done === 0 && n === total ? answer : undefined;
      await this.readChunk(h, inode, idx, buf, done, n, inChunk, ahead > 0, direct);
      done += n;
    }
    if (deferred) {
      // Answered from segments: read-ahead still waits for the whole chunk, as the stream does.
      const ref = this.committedRef(inode, Math.floor(pos / cs));
      const coming = ref ? this.wholeComing.get(ref[0]) : undefined;
      if (coming) void coming.then(() => this.readAhead(inode, pos, total, size, ahead));
      else this.readAhead(inode, pos, total, size, ahead);
    }
    return total;
  }

  /** Whether chunk idx of the file can be read without a download. */
  private atHand(inode: ChunkView, idx: number): boolean {
    const ref = this.committedRef(inode, idx);
    return !ref || this.dirty.get(inode.ino, idx) !== undefined || this.cache.has(ref[0]) || this.cache.inMemoryPeek(ref[0]);
  }

  /** Brings the `ahead` chunks after the read [pos, pos+total) closer: the next one into memory, the rest into the cache. */
  private readAhead(inode: ChunkView, pos: number, total: number, size: number, ahead: number): void {
    const cs = this.chunkSize;
    const last = Math.floor((pos + total - 1) / cs);
    const lastIdx = Math.floor((size - 1) / cs);
    for (let i = last + 1; i <= Math.min(lastIdx, last + ahead); i++) {
      if (this.dirty.get(inode.ino, i)) continue;
      const ref = this.committedRef(inode, i);
      if (!ref) continue;
      if (i === last + 1 && this.cache.has(ref[0]) && !this.cache.inMemoryPeek(ref[0])) {
        this.loadWhole(ref[0], true).catch(() => undefined); // the next chunk, ready in memory
      } else {
        this.fetcher.prefetch(ref[0]);
      }
    }
  }

  /** Fills buf[off, off+n) with bytes [inChunk, inChunk+n) of chunk idx. */
  private async readChunk(
    h: Handle,
    inode: ChunkView,
    idx: number,
    buf: Buffer,
    off: number,
    n: number,
    inChunk: number,
    sequential: boolean,
    answer?: (data: Buffer) => void,
  ): Promise<void> {
    try {
      await this.readChunkBytes(h, inode, idx, buf, off, n, inChunk, sequential, answer);
    } catch (err) {
      const ref = this.committedRef(inode, idx);
      if (ref && this.fetcher.unansweredFailure(ref[0]) !== undefined) h.unanswered = ref[0];
      throw err;
    }
  }

  /**
   * Reads through the write buffer: bytes it holds are served from it; a range it holds only
   * part of is read from below and overlaid, under the chunk lock (so no flush of the chunk
   * rewrites its units meanwhile). Followers' snapshot handles see no buffered writes.
   */
  private async readChunkBytes(
    h: Handle,
    inode: ChunkView,
    idx: number,
    buf: Buffer,
    off: number,
    n: number,
    inChunk: number,
    sequential: boolean,
    answer?: (data: Buffer) => void,
  ): Promise<void> {
    const b = h.snap ? undefined : this.buffer.get(inode.ino, idx);
    if (!b) return this.readStored(h, inode, idx, buf, off, n, inChunk, sequential, answer);
    if (b.covers(inChunk, n)) {
      b.copyOut(buf, off, inChunk, n);
      return;
    }
    await this.dirty.withChunk(inode.ino, idx, async () => {
      await this.readStored(h, inode, idx, buf, off, n, inChunk, sequential);
      this.buffer.get(inode.ino, idx)?.copyOut(buf, off, inChunk, n);
    });
  }

  /**
   * Reads what the dirty store, the clean cache or the bucket hold (zeros for holes). With
   * `answer`, bytes served whole from a chunk in memory are answered from there (`read`).
   */
  private async readStored(
    h: Handle,
    inode: ChunkView,
    idx: number,
    buf: Buffer,
    off: number,
    n: number,
    inChunk: number,
    sequential: boolean,
    answer?: (data: Buffer) => void,
  ): Promise<void> {
    const d = this.dirty.get(inode.ino, idx);
    if (d) {
      const got = await this.dirty.read(d, buf, off, n, inChunk);
      if (got < n) buf.fill(0, off + got, off + n);
      return;
    }
    const ref = this.committedRef(inode, idx);
    const valid = ref ? Math.max(0, Math.min(n, ref[1] - inChunk)) : 0;
    if (ref && h.unanswered === ref[0] && !this.cache.has(ref[0]) && !this.cache.inMemoryPeek(ref[0])) {
      const why = this.fetcher.unansweredFailure(ref[0]);
      if (why !== undefined) throw new FsError('EIO', why);
      h.unanswered = undefined;
    }
    const span = ref && valid > 0 && sequential ? await this.firstOfStream(ref[0], ref[1], inChunk, valid) : undefined;
    if (span) {
      const got = Math.max(0, Math.min(valid, span.data.length - (inChunk - span.from)));
      if (got < valid) throw new FsError('EIO', `chunk ${ref![0]} is shorter than its reference`);
      span.data.copy(buf, off, inChunk - span.from, inChunk - span.from + got);
      span.release();
      this.cache.countFetched(ref![0], ref![1], inChunk, got);
    } else if (
      ref &&
      valid > 0 &&
      sequential &&
      !this.readsFromDisk(ref, inChunk, valid) &&
      (this.cache.inMemoryPeek(ref[0]) || (await this.loadWhole(ref[0])))
    ) {
      // Sequential: served from the whole chunk in memory (one disk read per chunk). Looked up
      // again after the await and copied synchronously: memory buffers are recycled.
      const data = this.cache.inMemory(ref[0])!;
      const got = Math.max(0, Math.min(valid, data.length - inChunk));
      if (got < valid) throw new FsError('EIO', `chunk ${ref[0]} is shorter than its reference`);
      // The answer is taken (copied or written to the kernel) before `answer` returns.
      if (answer && valid === n) answer(data.subarray(inChunk, inChunk + got));
      else data.copy(buf, off, inChunk, inChunk + got);
      this.cache.countServed(ref[0], inChunk, got);
      const seen = (h.readFromMemory ??= new Set());
      if (!seen.has(ref[0])) {
        seen.add(ref[0]);
        if (seen.size > READ_MEMORY_NAMES) seen.delete(seen.values().next().value!);
      }
    } else if (ref && valid > 0) {
      let got = await this.cache.read(ref[0], buf, off, valid, inChunk);
      let ranged = false;
      if (got === undefined) {
        // Not part of a stream: the segments that cover the read may come alone (one ranged
        // GET); else, or when they do not open, the whole chunk.
        const span = this.cache.inMemoryPeek(ref[0])
          ? undefined
          : await this.fetcher.fetchSegments(ref[0], ref[1], inChunk, valid);
        const data = span?.data ?? (await this.fetcher.fetch(ref[0]));
        const from = span?.from ?? 0;
        got = Math.max(0, Math.min(valid, data.length - (inChunk - from)));
        data.copy(buf, off, inChunk - from, inChunk - from + got);
        span?.release();
        ranged = span !== undefined;
      }
      if (got < valid) throw new FsError('EIO', `chunk ${ref[0]} is shorter than its reference`);
      if (ranged) {
        this.cache.countFetched(ref[0], ref[1], inChunk, got);
        if (!h.streamed) this.noteRangedRead(inode, idx);
      } else this.cache.countServed(ref[0], inChunk, got);
    }
    if (valid < n) buf.fill(0, off + valid, off + n);
  }

  /**
   * A file read at random (a database, an archive, a disk image) whose ranged reads have
   * touched a quarter of its chunks comes whole, in the background: behind reads and read-ahead,
   * as pinned data does (prefetch/fetcher.ts `background`), into the clean cache. Readers that
   * come back to it then find it here, and a read of a chunk on its way joins that download.
   * It is the file-wide form of the fetcher's rule for one chunk (whole once its ranged reads
   * brought a quarter of it), and bounded the same way: at most four times the chunks the
   * reader touched, and only for a file that fits in half the cache. A few reads in a
   * big file (a tool looking at a video's headers) stay ranged, and so do the kernel's reads of
   * a stream that arrive too far out of order to count as sequential (`Handle.streamed`).
   */
  private noteRangedRead(inode: ChunkView, idx: number): void {
    const chunks = inode.chunks;
    if (!chunks || chunks.length < 4) return;
    let touched = this.randomTouched.get(inode.ino);
    if (touched === 'whole') {
      // A ranged read that began before the file was asked for whole.
      const ref = chunks[idx];
      if (ref && this.fetcher.isInFlight(ref[0])) return;
      // Else a chunk written since, or one the cache let go: the count starts again.
      this.randomTouched.delete(inode.ino);
      touched = new Set();
    } else if (!touched) {
      touched = new Set();
      if (this.randomTouched.size >= RANDOM_FILES) this.randomTouched.delete(this.randomTouched.keys().next().value!);
    } else this.randomTouched.delete(inode.ino);
    this.randomTouched.set(inode.ino, touched);
    touched.add(idx);
    if (touched.size * 4 < chunks.length) return;
    let bytes = 0;
    for (const ref of chunks) bytes += ref?.[1] ?? 0;
    if (bytes * 2 > this.cache.effectiveCapBytes) return;
    this.randomTouched.set(inode.ino, 'whole');
    for (const ref of chunks) {
      if (ref && !this.cache.has(ref[0])) this.fetcher.background(ref[0], true).catch(() => undefined);
    }
  }

  /**
   * Whether a sequential read of a chunk that is on disk and not in memory reads just its range
   * from disk instead of loading the chunk whole into memory: when it takes all of the chunk (a
   * small file read at once: kept in memory it would serve no later read and only push out
   * chunks that may), or when the chunk is too small for the memory's reused buffers (a file of
   * a few hundred KiB: a copy of its own would be garbage once the memory lets go of it, and a
   * tree of such files read back kept V8 collecting and the RSS high).
   */
  private readsFromDisk(ref: ChunkRef, inChunk: number, valid: number): boolean {
    if (this.cache.inMemoryPeek(ref[0]) || !this.cache.has(ref[0])) return false;
    return (inChunk === 0 && valid >= ref[1]) || !this.cache.loadsPooled(ref[1]);
  }

  /**
   * The first read of a stream from a chunk that is neither here nor coming: the segments
   * covering the read come first, with a ranged GET (time to first byte), and the whole chunk
   * is asked for once they are here, so the small GET does not share the link and the bucket
   * with the large one; the stream's next reads wait for the whole chunk (`wholeComing`). A
   * read of the same chunk meanwhile (the kernel's read-ahead, another reader) does not wait
   * for the segments: it asks for the whole chunk at once. Undefined when the read waits for
   * the whole chunk instead.
   */
  private async firstOfStream(name: string, chunkBytes: number, inChunk: number, n: number): Promise<SegmentSpan | undefined> {
    if (
      this.cache.inMemoryPeek(name) ||
      this.cache.has(name) ||
      this.memLoads.has(name) ||
      this.wholeComing.has(name) ||
      this.fetcher.isInFlight(name)
    )
      return undefined;
    const part = this.fetcher.fetchSegments(name, chunkBytes, inChunk, n).catch(() => undefined);
    // Asked for from the next turn of the event loop: the read is answered first (this callback
    // would run before the reader's continuation, and preparing a download takes a while).
    const coming = part
      .then(async (span) => {
        if (!span) return;
        await new Promise<void>((resolve) => setImmediate(resolve));
        await this.loadWhole(name).catch(() => false);
      })
      .finally(() => this.wholeComing.delete(name));
    this.wholeComing.set(name, coming);
    return part;
  }

  /**
   * Brings a whole clean chunk into memory (from the disk cache, else the bucket), merging
   * concurrent loads; resolves whether it is in memory now.
   */
  private loadWhole(name: string, ahead = false): Promise<boolean> {
    return this.memLoads.run(name, async () => {
      if (await this.cache.loadIntoMemory(name, ahead)) return this.cache.inMemoryPeek(name);
      await this.fetcher.fetchIntoMemory(name); // remembers what it downloads
      return this.cache.inMemoryPeek(name);
    });
  }

  /** Dirty bytes dropped (an upload finished, a file was deleted or truncated): writers may go on. */
  noteDirtyFreed(): void {
    this.backpressure.freed();
  }

  /** Whether uploads can free room may have changed: waiting writers look again. */
  drainChanged(): void {
    this.backpressure.drainChanged();
  }

  /** Writers waiting for room (or refused it), for status; undefined when none. */
  writesWaiting(): WritesWaiting | undefined {
    return this.backpressure.status();
  }

  /**
   * Waits for room as Backpressure's rule says (or fails with ENOSPC / EROFS), then holds room
   * for `bytes` more on disk (clean chunks evicted to make it) until the returned function is
   * called, once those bytes are counted as dirty data.
   */
  private async reserveRoom(bytes: number): Promise<() => void> {
    const release = await this.backpressure.waitForRoom(bytes);
    const giveBack = () => {
      release();
      this.backpressure.roomReturned();
    };
    try {
      await this.cache.makeRoomForDirty(0);
    } catch (err) {
      giveBack();
      throw err;
    }
    return giveBack;
  }

  /**
   * The most one piece of a write (`n` bytes within one chunk) can make the write buffer hold
   * as room (see vfs/writeBuffer.ts): a whole chunk file, and pre-images of the units it touches.
   */
  private pieceBound(n: number): number {
    return physicalSize(this.chunkSize) + (Math.ceil(n / UNIT) + 2) * PRE_IMAGE_UNIT_BYTES;
  }

  /**
   * The length of the content a flush of chunk (ino, idx) starts from: its dirty chunk, else
   * its committed chunk (a new dirty file is seeded from it), else nothing.
   */
  private baseLenOf(inode: Inode, idx: number): number {
    const d = this.dirty.get(inode.ino, idx);
    if (d) return d.len;
    return this.committedRef(inode, idx)?.[1] ?? 0;
  }

  /**
   * Writes are acknowledged once they are in the write buffer (vfs/writeBuffer.ts). A piece
   * that finds no room waits here, outside any lock: first what the buffer holds beyond its data
   * goes back (a flush), then Backpressure's rule applies as for any dirty data. Pieces
   * already taken stay taken: the write returns short, as write(2) does.
   */
  async write(fh: number, data: Buffer, pos: number): Promise<number> {
    const h = this.writableHandle(fh);
    this.lastWriteMs = this.now();
    if (h.append) return this.appendInTurn(h.ino, () => this.writeAt(h, data, undefined));
    return this.writeAt(h, data, pos);
  }

  /**
   * When the mount was last seen receiving a request of any kind (ms; 0: never), or accepting a
   * write, whichever is later: uploads of closed files give way to whoever uses the mount
   * (upload/writeback.ts). The requests are counted by the mount adapter, those it answers
   * without this thread (lookups, stats) included; each call compares the count with the last
   * one seen, so the time is that of the call that saw it change (the write-back queue calls at
   * every decision, and at least five times a second).
   */
  lastRequestMs(): number {
    const n = this.requestsSoFar();
    if (n !== undefined && n !== this.requestsSeen) {
      if (this.requestsSeen !== undefined) this.requestSeenMs = this.now();
      this.requestsSeen = n;
    }
    return Math.max(this.requestSeenMs, this.lastWriteMs);
  }

  /**
   * The write of `write` without a promise, when it needs no wait: a piece within one chunk
   * that the write buffer takes at once (memory and cache room to spare) is buffered here and
   * its length returned, so the adapter answers before any flush this write starts has run (a
   * flush seals and writes on this thread; the reply no longer waits behind it). Undefined
   * when nothing was taken and `write` must do it: an O_APPEND handle (appends run in turn), a
   * piece across a chunk boundary, or a buffer with no memory or room for it now. What it
   * relies on is `write`'s: the reply says the bytes are in the write buffer, which close and
   * fsync flush before they answer (invariant 1), and the room they hold is counted against
   * the cache cap from this moment (invariant 3).
   */
  writeNow(fh: number, data: Buffer, pos: number): number | undefined {
    const h = this.writableHandle(fh);
    if (h.append || data.length === 0) return undefined;
    const inode = this.inodeOf(h.ino);
    if (!inode) throw new FsError('ENOENT');
    const end = pos + data.length;
    if (end > MAX_FILE_BYTES) throw new FsError('EFBIG');
    const idx = Math.floor(pos / this.chunkSize);
    const inChunk = pos - idx * this.chunkSize;
    if (inChunk + data.length > this.chunkSize) return undefined;
    this.lastWriteMs = this.now();
    if (this.buffer.put(inode.ino, idx, inChunk, data, () => this.baseLenOf(inode, idx)) !== 'ok') return undefined;
    this.extendLiveSize(inode, end);
    return data.length;
  }

  /** The handle `fh` names, checked to be open for writing on a filespace this machine may write. */
  private writableHandle(fh: number): Handle {
    this.assertWritable();
    const h = this.handle(fh);
    if (!h.writable) throw new FsError('EBADF');
    return h;
  }

  /**
   * Runs O_APPEND writes to one file one after the other, each at the end the previous one
   * left, so two appenders never write at the same offset (a write waits for room, and the
   * next one would otherwise take the same end). The kernel serialises a file's writes too;
   * this holds whatever the order its requests arrive in.
   */
  private appendInTurn(ino: number, fn: () => Promise<number>): Promise<number> {
    const prev = this.appends.get(ino) ?? Promise.resolve();
    const run = prev.then(fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.appends.set(ino, tail);
    void tail.then(() => {
      if (this.appends.get(ino) === tail) this.appends.delete(ino);
    });
    return run;
  }

  /** A write at `pos`, or at the end of the file when `pos` is undefined (O_APPEND). */
  private async writeAt(h: Handle, data: Buffer, at: number | undefined): Promise<number> {
    const inode = this.inodeOf(h.ino);
    if (!inode) throw new FsError('ENOENT');
    const pos = at ?? this.sizeOf(inode);
    const end = pos + data.length;
    if (end > MAX_FILE_BYTES) throw new FsError('EFBIG');
    const cs = this.chunkSize;
    let done = 0;
    while (done < data.length) {
      const at = pos + done;
      const idx = Math.floor(at / cs);
      const inChunk = at - idx * cs;
      const n = Math.min(data.length - done, cs - inChunk);
      try {
        await this.bufferPiece(inode, idx, inChunk, data.subarray(done, done + n));
      } catch (err) {
        if (done === 0) throw err;
        break;
      }
      done += n;
      this.extendLiveSize(inode, at + n);
    }
    return done;
  }

  private async bufferPiece(inode: Inode, idx: number, inChunk: number, piece: Buffer): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (!this.inodeOf(inode.ino)) throw new FsError('ENOENT');
      const got = this.buffer.put(inode.ino, idx, inChunk, piece, () => this.baseLenOf(inode, idx));
      if (got === 'ok') return;
      if (got === 'memory') {
        await this.buffer.makeMemory();
      } else if (attempt === 0 && this.buffer.hasData) {
        await this.buffer.flushAll();
      } else {
        const bytes = this.pieceBound(piece.length);
        this.buffer.addRoom(bytes, await this.reserveRoom(bytes));
      }
    }
  }

  /**
   * Writes buffered data of one chunk to the dirty store (the write buffer's `flushChunk`),
   * under the chunk lock: the dirty chunk is created if needed (seeded from the committed bytes
   * the snapshot does not cover), room is made among clean chunks for what it adds, and the
   * snapshot's units go in one batch. A full cache disk gives back clean chunks (safe in the
   * bucket) and is tried once more; other failures leave the data buffered.
   */
  private async flushBuffered(c: BufferedChunk, all: boolean): Promise<void> {
    const attempt = () =>
      this.dirty.withChunk(c.ino, c.idx, async () => {
        if (c.discarded) return;
        const inode = this.inodeOf(c.ino);
        if (!inode) {
          this.buffer.discardFile(c.ino); // deleted meanwhile: nothing of it is kept
          return;
        }
        const snap = this.buffer.snapshot(c, all);
        if (snap.patches.length === 0) return;
        // What this flush adds on disk (the chunk's growth, a seed, pre-images) is within the room
        // the buffer holds for the chunk until `flushed`, and counted: clean chunks make room for
        // it before anything is written.
        await this.cache.makeRoomForDirty(0);
        const ref = this.committedRef(inode, c.idx);
        if (!this.dirty.get(c.ino, c.idx) && !(ref && ref[1] > 0 && !coversFromZero(snap.patches, ref[1]))) {
          // A new dirty chunk with nothing to seed it from (a new file, or one it replaces whole).
          // Counted while the new file is being written, so the cache total never trails the disk.
          await this.cache.whileReserved(physicalSize(snap.end), () =>
            this.dirty.createWithUnits(c.ino, c.idx, snap.patches, snap.end, this.now(), snap.sinceMs),
          );
        } else {
          const d = await this.dirtyChunkFor(inode, c.idx, snap);
          await this.dirty.writeUnits(d, snap.patches, snap.end, this.now(), snap.sinceMs);
        }
        this.buffer.flushed(c, snap);
      });
    try {
      await attempt();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC' || this.cache.cleanUsedBytes === 0) throw err;
      await this.cache.evictUntil(this.cache.usedBytes - 8 * this.chunkSize);
      await attempt();
    }
  }

  /**
   * Returns the dirty chunk for (ino, idx), creating it if needed: seeded from the committed
   * bytes unless the snapshot covers all of them. Call under the chunk lock.
   */
  private async dirtyChunkFor(inode: Inode, idx: number, snap: FlushSnapshot): Promise<DirtyChunk> {
    const existing = this.dirty.get(inode.ino, idx);
    if (existing) return existing;
    const ref = this.committedRef(inode, idx);
    let base: Buffer | undefined;
    if (ref && ref[1] > 0 && !coversFromZero(snap.patches, ref[1])) {
      const full = await this.fetcher.fetch(ref[0]);
      base = full.subarray(0, ref[1]);
    }
    // Counted while the new file is being written, so the cache total never trails the disk.
    return this.cache.whileReserved(physicalSize(base?.length ?? 0), () => this.dirty.create(inode.ino, idx, base, this.now()));
  }

  /** Records a write that reached `end`: the live size grows to cover it, and mtime is now. */
  private extendLiveSize(inode: Inode, end: number): void {
    this.liveSize.set(inode.ino, { size: Math.max(this.sizeOf(inode), end), mtimeMs: this.now() });
  }

  async truncate(path: Where, size: number): Promise<void> {
    this.assertWritable();
    const inode = this.resolve(path);
    await this.truncateInode(inode, size);
  }

  async ftruncate(fh: number, size: number): Promise<void> {
    this.assertWritable();
    const inode = this.inodeOf(this.handle(fh).ino);
    if (!inode) throw new FsError('ENOENT');
    await this.truncateInode(inode, size);
  }

  private async truncateInode(inode: Inode, size: number): Promise<void> {
    if (inode.kind === 'dir') throw new FsError('EISDIR');
    if (inode.kind !== 'file') throw new FsError('EINVAL');
    if (size < 0) throw new FsError('EINVAL');
    if (size > MAX_FILE_BYTES) throw new FsError('EFBIG');
    const cs = this.chunkSize;
    const old = this.sizeOf(inode);
    this.liveSize.delete(inode.ino);
    const now = this.now();
    this.change({ t: 'attr', ino: inode.ino, size, mtimeMs: now, ms: now });
    if (size < old) {
      const keep = Math.ceil(size / cs);
      const affected = this.dirty.indexesOf(inode.ino).filter((idx) => idx >= keep - 1);
      const buffered = this.buffer.indexesOf(inode.ino).filter((idx) => idx >= keep - 1);
      // The new size must be durable before local data is cut: otherwise a crash could bring
      // back the old size over data that is gone (zeros where fsynced bytes were). Buffered
      // bytes were never fsynced: cutting them needs nothing durable first.
      let synced = false;
      if (affected.length > 0) {
        await this.meta.sync();
        synced = true;
      }
      // Cutting inside a unit reseals it: room for that unit's pre-image.
      const releaseRoom =
        affected.includes(keep - 1) && size % UNIT !== 0 ? await this.reserveRoom(PRE_IMAGE_UNIT_BYTES) : () => undefined;
      try {
        for (const idx of [...new Set([...affected, ...buffered])].sort((a, b) => a - b)) {
          await this.dirty.withChunk(inode.ino, idx, async () => {
            this.buffer.truncate(inode.ino, idx, idx >= keep ? 0 : size - idx * cs);
            const d = this.dirty.get(inode.ino, idx);
            if (!d) return;
            if (!synced) {
              // A flush made this dirty chunk after the truncation began.
              await this.meta.sync();
              synced = true;
            }
            if (idx >= keep) await this.dirty.drop(d);
            else if (d.len > size - idx * cs) await this.dirty.truncate(d, size - idx * cs, this.now());
          });
        }
      } finally {
        releaseRoom();
      }
      this.noteDirtyFreed();
    }
  }

  /** Drops the local data of a deleted file (at its last close if it was deleted while open). */
  private async releaseStorage(ino: number): Promise<void> {
    if (this.unlinked.get(ino)) return;
    this.liveSize.delete(ino);
    this.buffer.discardFile(ino);
    const idxs = this.dirty.indexesOf(ino);
    if (idxs.length === 0) return;
    // The deletion must be durable before the data goes (see truncateInode).
    await this.meta.sync();
    for (const idx of idxs) {
      await this.dirty.withChunk(ino, idx, async () => {
        const d = this.dirty.get(ino, idx);
        if (d) await this.dirty.drop(d);
      });
    }
    this.noteDirtyFreed();
  }
}

/** Whether the patches (ascending units) cover bytes [0, n) of the chunk without a gap. */
function coversFromZero(patches: readonly UnitPatch[], n: number): boolean {
  let k = 0;
  for (let u = 0; u * UNIT < n; u++, k++) {
    const p = patches[k];
    const need = Math.min(UNIT, n - u * UNIT);
    if (!p || p.index !== u || p.ranges[0] !== 0 || p.ranges[1]! < need) return false;
  }
  return true;
}
