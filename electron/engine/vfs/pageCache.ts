/**
 * PageCacheBook: decides, per open, whether the kernel may keep the pages it has cached for a
 * file (FUSE's keep_cache), so a file read again is served from memory without crossing FUSE,
 * and never from pages of another version.
 *
 * The kernel caches pages per FUSE node, and libfuse2's high-level API names nodes by path: the
 * node for a path stays the same while the path is looked up (a follower applying the writer's
 * rename does not move it; only a rename made through this mount does). So the book is kept by
 * path: `path -> the one version its node's pages can hold`. Pages enter a node's cache only
 * through reads (or private mappings) of handles open at that node; they change only through
 * writes made through this mount, which the kernel applies to its cache as well; and an open
 * without keep_cache drops them all (`invalidate_inode_pages2` in the kernel's open).
 *
 * A version is what a handle reads: the inode, its size and its chunk references, which name
 * the content itself (chunk names are keyed content hashes). A handle whose content is not
 * described by those alone (a file with changes not yet uploaded, or with a size not yet
 * committed) has no version and never keeps the cache; its writes reach the kernel's cache
 * through the kernel anyway.
 *
 * The rule at each open of `path` for a handle reading version `v`:
 *   keep the cache iff the book holds exactly `v` for `path` and every other handle open at
 *   `path` reads `v` too;
 *   otherwise the kernel drops the node's pages, and afterwards they can hold only what the
 *   handles open at `path` read: the book holds that version if they all read the same one,
 *   else "mixed" (never kept until an open finds them agreeing again).
 * Handles reading the live tree (not a snapshot) whose content may have changed without the
 * kernel (metadata from another machine applied while they were open) are reported with
 * `contentChangedUnder`: their paths become "mixed".
 *
 * A file with several names (hard links) has a node, hence a page cache, per name, and a write
 * through one name leaves the others' pages as they were: its handles never keep the cache
 * (the VFS opens them with direct I/O, which also keeps a handle already open under one name
 * from reading stale pages after a write through another).
 *
 * Forgetting an entry is always safe (the next open drops the pages), so the book is bounded.
 * Pure bookkeeping, no I/O.
 */

import type { ChunkRef } from '../meta/tree';

/** What a handle reads: fully determines the bytes. */
export interface ContentVersion {
  readonly ino: number;
  readonly size: number;
  readonly chunks: ReadonlyArray<ChunkRef | null>;
}

const MIXED = 'mixed';
type Entry = ContentVersion | typeof MIXED;

/** Most paths remembered; the oldest are forgotten first. */
export const PAGE_BOOK_MAX_PATHS = 16_384;
/** Most chunk references held by remembered versions (bounds memory for huge files). */
export const PAGE_BOOK_MAX_REFS = 262_144;

export function sameVersion(a: ContentVersion, b: ContentVersion): boolean {
  if (a === b) return true;
  if (a.ino !== b.ino || a.size !== b.size || a.chunks.length !== b.chunks.length) return false;
  for (let i = 0; i < a.chunks.length; i++) {
    const x = a.chunks[i];
    const y = b.chunks[i];
    if (x === y) continue;
    if (!x || !y || x[0] !== y[0] || x[1] !== y[1]) return false;
  }
  return true;
}

export class PageCacheBook {
  /** path -> what its node's pages can hold, oldest first. */
  private readonly entries = new Map<string, Entry>();
  private refs = 0;

  constructor(
    private readonly maxPaths = PAGE_BOOK_MAX_PATHS,
    private readonly maxRefs = PAGE_BOOK_MAX_REFS,
  ) {}

  /**
   * Called at each open of `path`. `version` is what the new handle reads (undefined: not
   * describable, never kept); `others` what the other handles open at `path` read. Returns
   * whether the kernel may keep the node's cached pages, and records what they hold after.
   */
  open(path: string, version: ContentVersion | undefined, others: ReadonlyArray<ContentVersion | undefined>): boolean {
    const held = this.entries.get(path);
    const agree = (v: ContentVersion | undefined): v is ContentVersion =>
      v !== undefined && version !== undefined && sameVersion(v, version);
    if (version !== undefined && held !== undefined && held !== MIXED && agree(held) && others.every(agree)) {
      this.touch(path, held);
      return true;
    }
    // The kernel drops the node's pages now; the handles open at it fill them from here on.
    let after: Entry | undefined = version ?? MIXED;
    for (const o of others) {
      if (after === MIXED) break;
      if (o === undefined || !sameVersion(o, after)) after = MIXED;
    }
    this.set(path, after);
    return false;
  }

  /** The node at `path` may hold pages of a version nobody can name now. */
  mixed(path: string): void {
    if (this.entries.has(path)) this.set(path, MIXED);
  }

  /** Handles of these inodes read content that changed without the kernel: their paths are mixed. */
  contentChangedUnder(inos: ReadonlySet<number>, paths: Iterable<string>): void {
    for (const p of paths) this.mixed(p);
    if (inos.size === 0) return;
    for (const [p, e] of this.entries) if (e !== MIXED && inos.has(e.ino)) this.set(p, MIXED);
  }

  /** What the book holds for `path` (tests). */
  held(path: string): ContentVersion | 'mixed' | undefined {
    return this.entries.get(path);
  }

  get size(): number {
    return this.entries.size;
  }

  private touch(path: string, e: Entry): void {
    this.entries.delete(path);
    this.entries.set(path, e);
  }

  private set(path: string, e: Entry): void {
    const old = this.entries.get(path);
    if (old !== undefined && old !== MIXED) this.refs -= old.chunks.length;
    this.entries.delete(path);
    // A version too big to remember is forgotten: the next open drops the pages (safe).
    if (e !== MIXED && e.chunks.length > this.maxRefs) return;
    this.entries.set(path, e);
    if (e !== MIXED) this.refs += e.chunks.length;
    for (const [p, o] of this.entries) {
      if (this.entries.size <= this.maxPaths && this.refs <= this.maxRefs) break;
      this.entries.delete(p);
      if (o !== MIXED) this.refs -= o.chunks.length;
    }
  }
}
