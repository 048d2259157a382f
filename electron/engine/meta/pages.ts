/**
 * Paged checkpoints: the tree split into pages by directory, so a checkpoint rewrites only the
 * pages whose content changed since the previous one (remote.ts writes and reads them).
 *
 * A paged checkpoint is a manifest (`meta/ckpt/<seq>`) naming immutable page objects
 * (`meta/page/<seq>-<run>-<n>`: the sequence number of the checkpoint that first wrote the
 * page, a random tag of the writing run, so two runs writing a checkpoint of the same sequence
 * number never write one key twice, and a counter). Two kinds of page:
 *  - a directory part: part of a directory's entry table (name -> ino) and the full records of
 *    the children named there whose home it is (tree.ts `parentOf`). A directory's own record
 *    sits in its home directory's page (the root's in the manifest). A directory's entries are
 *    split by sorted name into parts of at most `PART_MAX` entries; the manifest keeps each
 *    part's lower bound (`first`), and the next checkpoint assigns names to the same bounds, so
 *    a change in a 100,000-entry directory rewrites the one part holding the name. A directory
 *    without entries has no page.
 *  - a link page: the records of the inodes with more than one name (hard links), and of any
 *    inode no directory names, for an inode-number range of `LINK_SPAN`.
 * Every page ref in the manifest carries its byte size and a keyed hash of its content
 * (HMAC with a key derived from the metadata key, so the bucket learns nothing from it).
 *
 * What is rewritten (`PageWriter`): the writer notes the ops it pushed since the checkpoint it
 * last wrote, and recomputes only the pages they can change: the directories an op names
 * (mk/rm/ln/mv), the home page of each inode an op names (attr/chunk/xattr, and a link's
 * former home), and, after an rm or mv, the link pages (a name removed from a linked inode is
 * not named by the op). A recomputed page whose content hash equals the previous one keeps its
 * key. When the writer does not know what changed (its first checkpoint after it started, or
 * after the tree was reloaded or changed by anyone but its own pushes), it takes up from the
 * bucket (`resume`): the newest manifest, its link pages and the segments pushed since, which
 * name what changed, so a restart costs what changed, not the tree. Only when those segments
 * cannot be read does it recompute every page against the newest manifest, still reusing
 * every page whose hash matches: then a restart costs CPU, not uploads. The hash
 * comparison alone decides what is written; the dirty set only bounds what is recomputed.
 * Only the writer (the lease holder) writes paged checkpoints (replicator.ts).
 *
 * Reading (`assemble`): the manifest and every page it names give the same tree (the same
 * inodes and name tables; a directory's entries come back in name order).
 * `directoryPages` names the pages of one directory, so one directory can be fetched alone.
 */

import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { FilespaceIdentity, seqKey } from './remote';
import { Inode, MetaOp, ROOT_INO, Tree, TreeSnapshot } from './tree';

export const PAGE_PREFIX = 'meta/page/';
/** Most entries a directory part holds before it is split. */
export const PART_MAX = 4096;
/** Entries per part when a part is split. */
const PART_SPLIT = 2048;
/** Inode numbers per link page. */
export const LINK_SPAN = 4096;

export type InodeRecord = Omit<Inode, 'entries'>;

/** Where a page sits: a directory part (dir, first: the part's lower bound) or a link range [lo, hi]. */
export type PageCover = { readonly dir: number; readonly first: string } | { readonly lo: number; readonly hi: number };

export type PageRef = PageCover & {
  readonly key: string;
  readonly bytes: number;
  readonly hash: string;
};

export interface DirPage {
  readonly dir: number;
  readonly first: string;
  readonly entries: Array<[string, number]>;
  readonly inodes: InodeRecord[];
}

export interface LinkPage {
  readonly lo: number;
  readonly hi: number;
  readonly inodes: InodeRecord[];
}

export type Page = DirPage | LinkPage;

export interface Manifest {
  readonly seq: number;
  readonly filespace?: FilespaceIdentity;
  readonly nextIno: number;
  readonly root: InodeRecord;
  readonly pages: PageRef[];
}

/** Whether a checkpoint object is a manifest (a whole-tree checkpoint has `tree`). */
export function isManifest(ck: object): ck is Manifest {
  return Array.isArray((ck as { pages?: unknown }).pages);
}

export type DirCover = Extract<PageCover, { readonly dir: number }>;

export function isDirCover(c: PageCover): c is DirCover {
  return (c as { dir?: unknown }).dir !== undefined;
}

export function sameCover(a: PageCover, b: PageCover): boolean {
  if (isDirCover(a)) return isDirCover(b) && a.dir === b.dir && a.first === b.first;
  return !isDirCover(b) && a.lo === b.lo && a.hi === b.hi;
}

/** The sequence number a page key starts with. */
export function pageSeqOf(key: string): number {
  const tail = key.slice(key.lastIndexOf('/') + 1);
  return Number(tail.slice(0, tail.indexOf('-')));
}

/** The fields of a record in the order pages hold them, so equal records serialize equal. */
const RECORD_FIELDS = [
  'ino',
  'kind',
  'mode',
  'uid',
  'gid',
  'size',
  'atimeMs',
  'mtimeMs',
  'ctimeMs',
  'target',
  'rdev',
  'chunks',
  'xattrs',
  'nlink',
] as const;

/**
 * `inode` without its entries, its fields in a fixed order (and xattrs by name): a page's
 * content hash must not depend on the order in which an inode's fields happened to be set.
 */
export function recordOf(inode: Inode): InodeRecord {
  const out: Record<string, unknown> = {};
  for (const f of RECORD_FIELDS) if (inode[f] !== undefined) out[f] = inode[f];
  if (inode.xattrs) {
    const x: Record<string, string> = {};
    for (const n of Object.keys(inode.xattrs).sort()) x[n] = inode.xattrs[n]!;
    out.xattrs = x;
  }
  for (const f of Object.keys(inode).sort())
    if (!(f in out) && f !== 'entries') out[f] = (inode as unknown as Record<string, unknown>)[f];
  return out as unknown as InodeRecord;
}

/** Key for content hashes, derived from the metadata key. */
export function pageHashKey(metaKey: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', metaKey, Buffer.alloc(0), 'filespace meta page hash', 32));
}

export function pageHash(hashKey: Buffer, body: Buffer): string {
  return createHmac('sha256', hashKey).update(body).digest('hex').slice(0, 32);
}

/** Whether `ino` lives in its home directory's page (one name) rather than in a link page. */
function homeOf(tree: Tree, inode: InodeRecord): number | undefined {
  if (inode.ino === ROOT_INO || inode.nlink !== undefined) return undefined;
  const dirs = tree.dirsOf(inode.ino);
  return dirs.length === 1 ? dirs[0] : undefined;
}

function linkLo(ino: number): number {
  return Math.floor(ino / LINK_SPAN) * LINK_SPAN;
}

function byName(a: [string, number], b: [string, number]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** The parts of directory `dir` (none without entries), on the lower bounds `bounds` where given. */
export function dirParts(tree: Tree, dir: number, bounds: readonly string[] = []): DirPage[] {
  const entries = tree.get(dir)?.entries;
  if (!entries || entries.size === 0) return [];
  const sorted = [...entries].sort(byName);
  const lows = bounds.length > 0 ? [...bounds].sort() : [''];
  const groups: Array<Array<[string, number]>> = lows.map(() => []);
  let part = 0;
  for (const e of sorted) {
    while (part + 1 < lows.length && lows[part + 1]! <= e[0]) part++;
    groups[part]!.push(e);
  }
  const out: DirPage[] = [];
  groups.forEach((group, i) => {
    if (group.length === 0) return;
    const pieces = group.length > PART_MAX ? Math.ceil(group.length / PART_SPLIT) : 1;
    const size = Math.ceil(group.length / pieces);
    for (let p = 0; p < pieces; p++) {
      const slice = group.slice(p * size, (p + 1) * size);
      const inodes: InodeRecord[] = [];
      const seen = new Set<number>();
      for (const [, ino] of slice) {
        // The record alone: a subfolder's entries are its own pages'.
        const inode = tree.record(ino);
        if (!inode || seen.has(ino) || homeOf(tree, inode) !== dir) continue;
        seen.add(ino);
        inodes.push(recordOf(inode));
      }
      // The first part covers every name below the second one's bound.
      const first = out.length === 0 ? '' : p === 0 ? lows[i]! : slice[0]![0];
      out.push({ dir, first, entries: slice, inodes });
    }
  });
  return out;
}

/** The link page for the range starting at `lo` (undefined when no inode of it lives there). */
export function linkPage(tree: Tree, lo: number): LinkPage | undefined {
  const inodes: InodeRecord[] = [];
  const hi = lo + LINK_SPAN - 1;
  // A tree on disk names the few candidates (one query) instead of a lookup of every number.
  const candidates = tree.unhomedIn(lo, hi);
  const consider = (ino: number) => {
    const inode = tree.record(ino);
    if (inode && inode.ino !== ROOT_INO && homeOf(tree, inode) === undefined) inodes.push(recordOf(inode));
  };
  if (candidates) for (const ino of candidates) consider(ino);
  else for (let ino = lo; ino <= hi; ino++) consider(ino);
  return inodes.length > 0 ? { lo, hi, inodes } : undefined;
}

/** Every link range that holds an inode (a scan of the tree). */
function allLinkRanges(tree: Tree): Set<number> {
  const out = new Set<number>();
  for (const inode of tree.inodes.values()) {
    if (inode.ino !== ROOT_INO && homeOf(tree, inode) === undefined) out.add(linkLo(inode.ino));
  }
  return out;
}

/** The pages a manifest names for directory `dir`, in name order (to fetch one directory alone). */
export function directoryPages(manifest: Manifest, dir: number): PageRef[] {
  return manifest.pages.filter((p) => isDirCover(p) && p.dir === dir);
}

/**
 * A page to upload, and the ref the manifest will hold for it. Its body is held deflated
 * until it is sealed (`body` inflates it): a checkpoint of a tree that changed everywhere holds
 * every page at once, about 165 bytes per file as JSON, a fifth of that deflated.
 */
export interface NewPage {
  readonly ref: PageRef;
  readonly body: Buffer;
}

function newPage(ref: PageRef, body: Buffer): NewPage {
  // A copy: zlib's result is a view of its 16 KiB output buffer, whatever its length.
  const packed = Buffer.from(deflateRawSync(body, { level: 1 }));
  return {
    ref,
    get body() {
      return inflateRawSync(packed);
    },
  };
}

export interface CheckpointPlan {
  readonly manifest: Manifest;
  readonly write: NewPage[];
  /** Pages recomputed (for tests and logs). */
  readonly recomputed: number;
}

/**
 * Decides what each paged checkpoint writes (see the module header). Owns the refs of the
 * checkpoint it last planned and the ops pushed since, for one tree object.
 */
export class PageWriter {
  private readonly run = randomBytes(4).toString('hex');
  private counter = 0;
  /** Pages of the last manifest planned or read, by directory and by link range. */
  private byDir = new Map<number, PageRef[]>();
  private byLink = new Map<number, PageRef>();
  /** Inodes in each link page of that manifest (to find those that left for a home directory). */
  private linkInos = new Map<number, number[]>();
  /** The last segment whose ops are in the base or the dirty sets (undefined: unknown). */
  private noted: { tree: Tree; seq: number } | undefined;
  /** Whether the last plan's manifest is in the bucket (the dirty sets are relative to it). */
  private based = false;
  private dirtyDirs = new Set<number>();
  private dirtyLinks = new Set<number>();
  private linksTouched = false;

  constructor(private readonly hashKey: Buffer) {}

  /** Forgets what changed: the next plan recomputes every page (reusing those with equal hashes). */
  reset(): void {
    this.noted = undefined;
    this.based = false;
    this.pending = undefined;
    this.dirtyDirs = new Set();
    this.dirtyLinks = new Set();
    this.linksTouched = false;
  }

  /**
   * Forgets what changed and the manifest it compares with: the next plan needs `adopt` (after
   * a checkpoint that failed or found another one of its sequence number in the bucket).
   */
  forget(): void {
    this.reset();
    this.baseline = false;
  }

  /** Whether the refs of the newest manifest in the bucket are known (`adopt`, or the last plan written). */
  get hasBaseline(): boolean {
    return this.baseline;
  }

  private baseline = false;

  /** Uses `manifest` (the newest in the bucket) as what the next full plan compares with. */
  adopt(manifest: Manifest | undefined): void {
    this.baseline = true;
    this.byDir = new Map();
    this.byLink = new Map();
    this.linkInos = new Map();
    for (const ref of manifest?.pages ?? []) this.keep(ref);
  }

  /**
   * Takes up after a restart, a reload or a takeover, as if this writer had written `manifest`
   * (the newest checkpoint in the bucket) and noted every segment pushed since: `links` holds
   * the inodes of each of its link pages, `segments` the ops of every segment after it, in
   * order, up to the tree's current one. The next plan then recomputes what those segments
   * can have changed instead of every page. The ops are noted against `tree` as it is now,
   * which `noteSegment` allows (it is called after later ops were applied in any case): an op
   * names the directories it changes itself, and an inode's home is looked up in the tree as
   * it is now, where a later move or removal names the old home too. False (the next plan is a
   * full one) when the segments do not follow on from the manifest.
   */
  resume(
    tree: Tree,
    manifest: Manifest,
    links: ReadonlyMap<number, number[]>,
    segments: ReadonlyArray<{ readonly seq: number; readonly ops: readonly MetaOp[] }>,
  ): boolean {
    this.reset();
    this.adopt(manifest);
    this.linkInos = new Map(links);
    this.noted = { tree, seq: manifest.seq };
    this.based = true;
    return tree.scan(() => {
      for (const s of segments) {
        this.noteSegment(tree, s.seq, s.ops);
        if (!this.noted) return false;
      }
      return true;
    });
  }

  private keep(ref: PageRef): void {
    if (isDirCover(ref)) {
      const list = this.byDir.get(ref.dir) ?? [];
      list.push(ref);
      this.byDir.set(ref.dir, list);
    } else this.byLink.set(ref.lo, ref);
  }

  /** Whether the writer knows what changed in `tree` up to `seq` since its last checkpoint (else the next plan is full). */
  tracks(tree: Tree, seq: number): boolean {
    return this.based && this.noted !== undefined && this.noted.tree === tree && this.noted.seq === seq;
  }

  /**
   * Notes the ops of segment `seq`, already applied to `tree`. Segments must come in order
   * right after the last one noted or planned; anything else makes the next plan a full one.
   */
  noteSegment(tree: Tree, seq: number, ops: readonly MetaOp[]): void {
    if (!this.noted || this.noted.tree !== tree || this.noted.seq !== seq - 1) {
      this.reset();
      return;
    }
    this.noted = { tree, seq };
    const homeUnit = (ino: number) => {
      if (ino === ROOT_INO) return; // in the manifest, rewritten every time
      const inode = tree.get(ino);
      if (!inode) return; // gone: the op that removed it named its directory
      for (const d of tree.dirsOf(ino)) this.dirtyDirs.add(d);
      this.dirtyLinks.add(linkLo(ino));
    };
    const container = (dir: number) => {
      this.dirtyDirs.add(dir);
      homeUnit(dir);
    };
    for (const op of ops) {
      switch (op.t) {
        case 'mk':
        case 'ln':
          container(op.parent);
          homeUnit(op.ino);
          break;
        case 'rm':
          container(op.parent);
          this.linksTouched = true;
          break;
        case 'mv': {
          container(op.sp);
          container(op.dp);
          const moved = tree.get(op.dp)?.entries?.get(op.dn);
          if (moved !== undefined) homeUnit(moved);
          this.linksTouched = true;
          break;
        }
        case 'attr':
        case 'chunk':
        case 'xattr':
          homeUnit(op.ino);
      }
    }
  }

  private newKey(seq: number): string {
    return `${PAGE_PREFIX}${seqKey('', seq)}-${this.run}-${this.counter++}`;
  }

  /**
   * The checkpoint of `tree` at `seq`: the manifest and the pages to upload first. The plan
   * becomes the base of the next one once `planned` is called (after the manifest is written).
   */
  plan(tree: Tree, seq: number, identity: FilespaceIdentity | undefined): CheckpointPlan {
    // One synchronous pass that may read every inode: in the tree's scan mode, so what it
    // reads is not all held until it returns (Tree.scan).
    return tree.scan(() => this.planScanning(tree, seq, identity));
  }

  private planScanning(tree: Tree, seq: number, identity: FilespaceIdentity | undefined): CheckpointPlan {
    const full = !this.tracks(tree, seq);
    const dirtyDirs = this.dirtyDirs;
    const dirtyLinks = this.dirtyLinks;
    const linksTouched = this.linksTouched;
    // Segments noted from now on are what the next plan rewrites.
    this.dirtyDirs = new Set();
    this.dirtyLinks = new Set();
    this.linksTouched = false;
    this.noted = { tree, seq };
    this.based = false;
    const byDir = new Map(this.byDir);
    const byLink = new Map(this.byLink);
    const linkInos = new Map(this.linkInos);
    const write: NewPage[] = [];
    let recomputed = 0;

    const emit = (cover: PageCover, page: Page, prev: readonly PageRef[]): PageRef => {
      recomputed++;
      const body = Buffer.from(JSON.stringify(page), 'utf8');
      const hash = pageHash(this.hashKey, body);
      const same = prev.find((r) => r.hash === hash && sameCover(r, cover));
      if (same) return same;
      const ref: PageRef = { ...cover, key: this.newKey(seq), bytes: body.length, hash };
      write.push(newPage(ref, body));
      return ref;
    };

    const dirs = new Set<number>();
    const links = new Set<number>();
    if (full) {
      for (const inode of tree.inodes.values()) if (inode.entries && inode.entries.size > 0) dirs.add(inode.ino);
      for (const d of byDir.keys()) dirs.add(d);
      for (const lo of allLinkRanges(tree)) links.add(lo);
      for (const lo of byLink.keys()) links.add(lo);
    } else {
      for (const d of dirtyDirs) dirs.add(d);
      for (const lo of dirtyLinks) links.add(lo);
      if (linksTouched) for (const lo of byLink.keys()) links.add(lo);
      // Directories removed since (their rm named only their parent) lose their pages. Only
      // whether each still exists is asked (inode numbers are never reused): reading each one
      // would read every directory's entry table, the whole tree, at every checkpoint.
      for (const d of byDir.keys()) if (!tree.inodes.has(d)) dirs.add(d);
    }

    for (const lo of links) {
      const prev = byLink.get(lo);
      // An inode that left a link page (down to one name) now lives in its home directory's page.
      for (const ino of linkInos.get(lo) ?? []) {
        const inode = tree.get(ino);
        const home = inode ? homeOf(tree, inode) : undefined;
        if (home !== undefined) dirs.add(home);
      }
      const page = linkPage(tree, lo);
      if (!page) {
        byLink.delete(lo);
        linkInos.delete(lo);
        continue;
      }
      byLink.set(lo, emit({ lo, hi: page.hi }, page, prev ? [prev] : []));
      linkInos.set(
        lo,
        page.inodes.map((i) => i.ino),
      );
    }
    for (const dir of dirs) {
      const prev = byDir.get(dir) ?? [];
      const parts = dirParts(
        tree,
        dir,
        prev.map((r) => (isDirCover(r) ? r.first : '')),
      );
      if (parts.length === 0) byDir.delete(dir);
      else
        byDir.set(
          dir,
          parts.map((p) => emit({ dir, first: p.first }, p, prev)),
        );
    }

    const pages: PageRef[] = [];
    for (const d of [...byDir.keys()].sort((a, b) => a - b)) pages.push(...byDir.get(d)!);
    for (const lo of [...byLink.keys()].sort((a, b) => a - b)) pages.push(byLink.get(lo)!);
    const root = tree.get(ROOT_INO);
    if (!root) throw new Error('the tree has no root directory');
    const manifest: Manifest = {
      seq,
      ...(identity ? { filespace: { id: identity.id, chunkSize: identity.chunkSize } } : {}),
      nextIno: tree.nextIno,
      root: recordOf(root),
      pages,
    };
    this.pending = { byDir, byLink, linkInos };
    return { manifest, write, recomputed };
  }

  private pending: { byDir: Map<number, PageRef[]>; byLink: Map<number, PageRef>; linkInos: Map<number, number[]> } | undefined;

  /**
   * The manifest of the last plan is in the bucket: it is the base of the next plan. (When it
   * could not be written, or another one of its sequence number was there, call `reset`.)
   */
  planned(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = undefined;
    this.byDir = p.byDir;
    this.byLink = p.byLink;
    this.linkInos = p.linkInos;
    this.based = this.noted !== undefined;
    this.baseline = true;
  }
}

/** The tree a manifest and its pages describe. Throws on a page that contradicts its ref. */
export function assemble(chunkSize: number, manifest: Manifest, pages: ReadonlyMap<string, Page>): Tree {
  const records = new Map<number, InodeRecord>();
  const entries = new Map<number, Array<[string, number]>>();
  records.set(ROOT_INO, manifest.root);
  for (const ref of manifest.pages) {
    const page = pages.get(ref.key);
    if (!page) throw new Error(`metadata page ${ref.key} was not read`);
    if (isDirCover(ref)) {
      const list = entries.get(ref.dir) ?? [];
      for (const e of (page as DirPage).entries) list.push(e);
      entries.set(ref.dir, list);
    }
    for (const r of page.inodes) records.set(r.ino, r);
  }
  const inodes: TreeSnapshot['inodes'][number][] = [];
  for (const r of records.values()) {
    if (r.kind === 'dir') inodes.push({ ...r, entries: entries.get(r.ino) ?? [] });
    else inodes.push(r);
  }
  return Tree.fromSnapshot(chunkSize, { nextIno: manifest.nextIno, inodes });
}

/** Checks that `page` is what `ref` says it covers (a swapped or mislabelled page). */
export function pageMatches(ref: PageRef, page: Page): boolean {
  if (isDirCover(ref)) {
    const p = page as Partial<DirPage>;
    return p.dir === ref.dir && p.first === ref.first && Array.isArray(p.entries) && Array.isArray(p.inodes);
  }
  const p = page as Partial<LinkPage>;
  return p.lo === ref.lo && p.hi === ref.hi && Array.isArray(p.inodes);
}
