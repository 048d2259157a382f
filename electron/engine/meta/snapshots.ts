/**
 * Snapshots: point-in-time, read-only views of the whole filespace, kept in the bucket. Cheap,
 * because chunks and metadata pages are immutable: a snapshot keeps the pages of a paged
 * checkpoint (pages.ts) of the segment it shows, and the chunks they name stay.
 *
 * Layout under the filespace root (everything sealed with the metadata key and the object's
 * key as associated data, as remote.ts does):
 *   meta/snapshots/<id>          the record: id, created time, label, kind (manual, hourly,
 *                                daily), the metadata sequence number it shows, files, bytes
 *   meta/snaptree/<id>           the tree as of that sequence number: the manifest of a paged
 *                                checkpoint of that segment (format 6), whose pages (meta/page/)
 *                                it shares with the checkpoints and other snapshots; written
 *                                before format 6, the whole tree. pruneCheckpoints never sees it
 *                                (it lists meta/ckpt/ only), and compaction keeps every page a
 *                                tree here names (compaction.ts)
 *   meta/snapshot-schedule       how many automatic snapshots of each kind are kept (0: none taken)
 * Ids are `YYYYMMDD-HHMMSS-xxxx` (UTC time of creation, 4 random hex digits), so listings sort
 * by age. A snapshot's tree is read whole through `loadTree` (browsing, listing, checking), and
 * page by page through `recordsOf` (counting its chunks: memory holds a few pages).
 *
 * Who writes: only the lease holder creates and deletes snapshots and applies the schedule
 * (the engine refuses otherwise). It creates the tree first and the record after it (both with
 * If-None-Match), and deletes the record first and the tree after it: a record always has its
 * tree, and a tree without a record is never listed. Such a tree is what a creation or a
 * deletion stopped between its two writes left; its pages are kept while it is there (a leak
 * of metadata, never a loss), so the lease holder deletes it once its id is ORPHAN_TREE_GRACE_MS
 * old (`orphanTrees`): a creation writes the record moments after the tree, and a day leaves a
 * creating writer that stalled far behind the lease it would have lost meanwhile.
 *
 * Garbage collection (gc.ts) runs in the lease holder too, and counts every chunk a live
 * snapshot names as referenced, through `SnapshotRefs`: the chunk names of every snapshot,
 * read from the bucket before the first pass or creation (or kept from the engine's last clean
 * stop and brought up to the bucket's list of snapshots), then kept up to date by this
 * machine's own creations and deletions (nobody else may make any while it holds the lease).
 * Why no chunk a live snapshot names is ever deleted:
 *  - At creation, `SnapshotRefs` answers that every chunk is referenced (`hold`) from before
 *    the snapshot's segment is fixed until its chunk names are counted from its pages; each of
 *    those chunks is named by the live tree at that segment, so there is no instant at which
 *    it is named by neither. The record is written to the bucket afterwards; if that fails the
 *    names stay counted (a PUT without an answer may have written it), until the engine
 *    restarts and counts what the bucket holds.
 *  - A GC pass deletes a chunk only when it was unreferenced at the previous pass, is still
 *    unreferenced at this one (read at its start and again right before deleting, both
 *    through `has` of the live tree and of `SnapshotRefs`), and the grace period has passed.
 *    A chunk named by a live snapshot is referenced at both reads.
 *  - Until every snapshot is counted, and after a count that failed, `has` answers yes for
 *    every chunk. When the snapshots cannot all be read (a damaged record, tree or page), which
 *    chunks they name is unknown: GC refuses to run (`SnapshotRefs.ready` throws, naming the
 *    snapshot).
 *  - Deleting removes the record, then the names: from then on those chunks are garbage unless
 *    the live tree or another snapshot names them, marked at the next pass and deleted after
 *    the grace period, as any chunk the live tree dropped (a machine still browsing the deleted
 *    snapshot reads them for the grace period, like a follower reading old chunks).
 */

import { randomBytes } from 'node:crypto';
import { promises as fsp, rmSync } from 'node:fs';
import { AuthError, open, seal } from '../chunk/crypto';
import { packOf } from '../chunk/packs';
import { UserError } from '../errors';
import { ObjectStore, StoreError } from '../store/types';
import { Database, Statement, openDatabase } from './db';
import { TreeDbBuild, TreeDbBuilder, addPage } from './build';
import { InodeRecord, Manifest, isManifest } from './pages';
import { DamagedMetadataError, FilespaceIdentity, PageGoneError, RemoteMeta } from './remote';
import { Tree, TreeSnapshot } from './tree';
import type { TreeDb } from './treeDb';

export const SNAPSHOT_PREFIX = 'meta/snapshots/';
export const SNAPSHOT_TREE_PREFIX = 'meta/snaptree/';
export const SNAPSHOT_SCHEDULE_KEY = 'meta/snapshot-schedule';
/** The engine's database of the chunk names snapshots hold (SnapshotRefs), in its cache folder. */
export const SNAPSHOT_REFS_FILE = 'snapshot-refs.db';
/** The folder of the cache folder where the trees of snapshots being browsed are written (emptied at each start). */
export const BROWSE_DIR = 'browse';
/** Folders of the cache folder where a listing counts without a running engine (host/snapshots.ts). */
export const LISTING_PREFIX = 'listing-';
/** A listing folder older than this is what a stopped listing left (an engine start removes it). */
export const LISTING_LEFT_MS = 3600_000;

export const SNAPSHOT_KINDS = ['manual', 'hourly', 'daily'] as const;
export type SnapshotKind = (typeof SNAPSHOT_KINDS)[number];
/** The kinds taken on a schedule, and how often. */
export const AUTO_PERIOD_MS = { hourly: 3600_000, daily: 24 * 3600_000 } as const;
export type AutoKind = keyof typeof AUTO_PERIOD_MS;

export const LABEL_MAX = 100;
/** Most automatic snapshots of one kind a schedule may keep. */
export const KEEP_MAX = 1000;

export interface SnapshotRecord {
  readonly id: string;
  readonly createdAt: number;
  readonly label: string;
  readonly kind: SnapshotKind;
  /** The metadata sequence number whose tree it shows. */
  readonly seq: number;
  /** Regular files in it, and the sum of their sizes. */
  readonly files: number;
  readonly bytes: number;
}

/** How many automatic snapshots of each kind are kept; 0 takes none of that kind. */
export interface SnapshotSchedule {
  readonly hourly: number;
  readonly daily: number;
}

export const NO_SCHEDULE: SnapshotSchedule = { hourly: 0, daily: 0 };

/** A snapshot's tree as stored: the whole tree (written before format 6), or a paged checkpoint's manifest. */
type StoredTree = {
  readonly id: string;
  readonly seq: number;
  readonly filespace?: FilespaceIdentity;
} & ({ readonly tree: TreeSnapshot } | { readonly manifest: Manifest });

/** Files and bytes of a snapshot, as its record gives them. */
export interface SnapshotTotals {
  readonly files: number;
  readonly bytes: number;
}

const ID_RE = /^\d{8}-\d{6}-[0-9a-f]{4}$/;

/** A snapshot tree without a record is deleted once its id is this old (see the header). */
export const ORPHAN_TREE_GRACE_MS = 24 * 3600_000;

/** When snapshot `id` was made (its id's UTC time), in ms since the epoch. */
export function snapshotIdTime(id: string): number {
  const d = id.slice(0, 8);
  const t = id.slice(9, 15);
  return Date.UTC(+d.slice(0, 4), +d.slice(4, 6) - 1, +d.slice(6, 8), +t.slice(0, 2), +t.slice(2, 4), +t.slice(4, 6));
}

export function newSnapshotId(now: number): string {
  const iso = new Date(now).toISOString(); // 2026-12-02T13:05:01.123Z
  return `${iso.slice(0, 10).replace(/-/g, '')}-${iso.slice(11, 19).replace(/:/g, '')}-${randomBytes(2).toString('hex')}`;
}

/** Throws a one-line error unless `id` has the form of a snapshot id. */
export function checkSnapshotId(id: string): void {
  if (!ID_RE.test(id))
    throw new UserError(
      `"${id.slice(0, 60)}" is not a snapshot id (ids look like 20261202-130501-a1b2; "filespace snapshot NAME list" shows them)`,
      'BAD_INPUT',
    );
}

/** The label as stored (trimmed); throws a one-line error for one that cannot be shown on one line. */
export function checkLabel(label: string): string {
  const l = label.trim();
  // eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(l))
    throw new UserError('a snapshot label cannot hold control characters or line breaks', 'BAD_INPUT');
  if ([...l].length > LABEL_MAX)
    throw new UserError(`a snapshot label is at most ${LABEL_MAX} characters (this one has ${[...l].length})`, 'BAD_INPUT');
  return l;
}

/** Throws a one-line error for a schedule that cannot be kept. */
export function checkSchedule(s: SnapshotSchedule): SnapshotSchedule {
  for (const k of ['hourly', 'daily'] as const) {
    const n = s[k];
    if (!Number.isInteger(n) || n < 0 || n > KEEP_MAX)
      throw new UserError(`${k} must keep a whole number of snapshots from 0 to ${KEEP_MAX} (got ${String(n)})`, 'BAD_INPUT');
  }
  return { hourly: s.hourly, daily: s.daily };
}

/** The chunk names a tree holds, with their lengths. */
export function chunksOf(tree: Tree): Map<string, number> {
  const out = new Map<string, number>();
  for (const inode of tree.inodes.values()) for (const c of inode.chunks ?? []) if (c) out.set(c[0], c[1]);
  return out;
}

/**
 * What the schedule asks for at `now`: the kinds due (none of that kind is younger than its
 * period, less `slackMs` so a timer that ticks every `slackMs` does not drift a tick a day),
 * and the automatic snapshots past what is kept (the oldest of each kind). Manual snapshots
 * are never expired; a kind the schedule keeps none of takes none and expires none.
 */
export function schedulePlan(
  records: readonly SnapshotRecord[],
  schedule: SnapshotSchedule,
  now: number,
  slackMs = 0,
): { due: AutoKind[]; expired: SnapshotRecord[] } {
  const due: AutoKind[] = [];
  const expired: SnapshotRecord[] = [];
  for (const kind of ['hourly', 'daily'] as const) {
    const keep = schedule[kind];
    if (keep <= 0) continue;
    const mine = records.filter((r) => r.kind === kind).sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
    const newest = mine[0];
    const isDue = !newest || now - newest.createdAt >= AUTO_PERIOD_MS[kind] - slackMs;
    if (isDue) due.push(kind);
    // The one about to be taken counts against what is kept.
    expired.push(...mine.slice(isDue ? keep - 1 : keep));
  }
  return { due, expired };
}

/** Reads and writes snapshots in the bucket (see the header for the layout). */
export class SnapshotStore {
  private readonly remote: RemoteMeta;

  constructor(
    private readonly store: ObjectStore,
    private readonly metaKey: Buffer,
    private readonly chunkSize: number,
    private readonly identity?: FilespaceIdentity,
  ) {
    this.remote = new RemoteMeta(store, metaKey, identity);
  }

  private sealJson(key: string, value: unknown): Buffer {
    return seal(this.metaKey, Buffer.from(JSON.stringify(value), 'utf8'), `meta:${key}`);
  }

  private async getJson<T>(key: string, what: string): Promise<T | undefined> {
    const got = await this.store.get(key);
    if (!got) return undefined;
    try {
      return JSON.parse(open(this.metaKey, got.body, `meta:${key}`, what).toString('utf8')) as T;
    } catch (err) {
      if (!(err instanceof AuthError || err instanceof SyntaxError)) throw err;
      throw new DamagedMetadataError(key, `${what} (${key}) is damaged: it fails authentication`, 'SNAPSHOT_DAMAGED');
    }
  }

  /** Every snapshot record, oldest first, and the ids whose record is damaged. */
  async list(): Promise<{ records: SnapshotRecord[]; damaged: string[] }> {
    const records: SnapshotRecord[] = [];
    const damaged: string[] = [];
    for (const key of await this.store.list(SNAPSHOT_PREFIX)) {
      const id = key.slice(SNAPSHOT_PREFIX.length);
      try {
        const r = await this.getJson<SnapshotRecord>(key, `the record of snapshot ${id}`);
        if (!r) continue; // deleted meanwhile
        if (r.id !== id || !ID_RE.test(r.id)) throw new DamagedMetadataError(key, '', 'SNAPSHOT_DAMAGED');
        records.push(r);
      } catch (err) {
        if (!(err instanceof DamagedMetadataError)) throw err;
        damaged.push(id);
      }
    }
    return { records, damaged };
  }

  /** The record of snapshot `id`; a missing one is a one-line error naming the id. */
  async get(id: string): Promise<SnapshotRecord> {
    checkSnapshotId(id);
    const r = await this.getJson<SnapshotRecord>(`${SNAPSHOT_PREFIX}${id}`, `the record of snapshot ${id}`);
    if (!r) throw new UserError(`there is no snapshot ${id} ("filespace snapshot NAME list" shows them)`, 'NOT_FOUND');
    return r;
  }

  /** Snapshot `id`'s tree object as stored, checked to be that snapshot's and this filespace's. */
  private async readStored(id: string): Promise<StoredTree> {
    checkSnapshotId(id);
    const key = `${SNAPSHOT_TREE_PREFIX}${id}`;
    const what = `the tree of snapshot ${id}`;
    const t = await this.getJson<StoredTree>(key, what);
    if (!t) throw new DamagedMetadataError(key, `${what} (${key}) is missing from the bucket`, 'SNAPSHOT_DAMAGED');
    if (t.id !== id) throw new DamagedMetadataError(key, `${what} (${key}) names another snapshot`, 'SNAPSHOT_DAMAGED');
    const idOf = (f: FilespaceIdentity | undefined) => f && `${f.id}/${f.chunkSize}`;
    const want = idOf(this.identity);
    const manifest = 'manifest' in t ? t.manifest : undefined;
    for (const f of [t.filespace, manifest?.filespace])
      if (want && f && idOf(f) !== want)
        throw new DamagedMetadataError(key, `${what} (${key}) was written for another filespace`, 'SNAPSHOT_DAMAGED');
    if (manifest !== undefined && (!isManifest(manifest) || manifest.seq !== t.seq))
      throw new DamagedMetadataError(
        key,
        `${what} (${key}) is malformed: its manifest is not one of segment ${t.seq}`,
        'SNAPSHOT_DAMAGED',
      );
    return t;
  }

  /**
   * A page of a snapshot's manifest that cannot be read makes the snapshot damaged (one line
   * naming the page); anything else (no answer from the bucket) passes through.
   */
  private pageDamage(id: string, err: unknown): unknown {
    const key = `${SNAPSHOT_TREE_PREFIX}${id}`;
    if (err instanceof PageGoneError)
      return new DamagedMetadataError(
        key,
        `the tree of snapshot ${id} names a page that is not in the bucket (${err.message})`,
        'SNAPSHOT_DAMAGED',
      );
    if (err instanceof DamagedMetadataError && err.code !== 'SNAPSHOT_DAMAGED')
      return new DamagedMetadataError(key, `the tree of snapshot ${id} has a damaged page: ${err.message}`, 'SNAPSHOT_DAMAGED');
    if (err instanceof UserError || err instanceof StoreError || !(err instanceof Error)) return err;
    // Pages that open but do not make a tree.
    return new DamagedMetadataError(key, `the tree of snapshot ${id} (${key}) is malformed: ${err.message}`, 'SNAPSHOT_DAMAGED');
  }

  /** The tree of snapshot `id`, as of its sequence number: the one way a whole snapshot tree is read. */
  async loadTree(id: string): Promise<Tree> {
    const t = await this.readStored(id);
    const key = `${SNAPSHOT_TREE_PREFIX}${id}`;
    if ('manifest' in t) {
      try {
        return await this.remote.treeOfManifest(this.chunkSize, t.manifest);
      } catch (err) {
        throw this.pageDamage(id, err);
      }
    }
    try {
      return Tree.fromSnapshot(this.chunkSize, t.tree);
    } catch (err) {
      throw new DamagedMetadataError(
        key,
        `the tree of snapshot ${id} (${key}) is malformed: ${(err as Error).message}`,
        'SNAPSHOT_DAMAGED',
      );
    }
  }

  /**
   * The tree of snapshot `id` for browsing. One kept in pages is written page by page into a
   * database in `dir` (as a fresh machine's link writes its own, meta/build.ts), so memory
   * holds a working set of it, not the tree; one kept whole (before format 6) is read into
   * memory. `close` drops the database and `dir`.
   */
  async openTree(id: string, dir: string): Promise<{ readonly tree: Tree; readonly close: () => Promise<void> }> {
    const t = await this.readStored(id);
    if (!('manifest' in t)) return { tree: await this.loadTree(id), close: () => Promise.resolve() };
    const m = t.manifest;
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    let build: TreeDbBuild | undefined;
    let db: TreeDb | undefined;
    try {
      const b = (build = await TreeDbBuilder.start(dir, this.chunkSize, { offThread: true }));
      await b.add([m.root]);
      await this.remote.streamPages(m.pages, (ref, page) => addPage(b, ref, page));
      const built = await b.finish({ gen: 1, nextIno: m.nextIno, remoteSeq: m.seq });
      const opened = (db = built.db);
      return {
        tree: opened.tree(built.state),
        close: async () => {
          opened.close();
          await fsp.rm(dir, { recursive: true, force: true });
        },
      };
    } catch (err) {
      if (db) db.close();
      else await build?.abort().catch(() => undefined);
      await fsp.rm(dir, { recursive: true, force: true });
      throw this.pageDamage(id, err);
    }
  }

  /**
   * The inode records of snapshot `id`, a page at a time (memory holds a few pages, not the
   * tree): `each` gets the page's key and its records, in the manifest's order. A snapshot
   * whose whole tree is one object comes as one page, keyed `snaptree:<id>`. The root, whose
   * record is in the manifest, holds no chunks and is not a file, so it is not passed. Pages
   * `skip` says yes to are not read: `each` gets their key alone, before the others.
   */
  async recordsOf(
    id: string,
    each: (page: string, records: readonly InodeRecord[] | undefined) => void | Promise<void>,
    skip: (page: string) => boolean = () => false,
  ): Promise<void> {
    const t = await this.readStored(id);
    if (!('manifest' in t)) {
      const page = `snaptree:${id}`;
      if (skip(page)) return each(page, undefined);
      const tree = await this.loadTree(id);
      return each(page, [...tree.inodes.values()]);
    }
    const read = [];
    for (const ref of t.manifest.pages) {
      if (skip(ref.key)) await each(ref.key, undefined);
      else read.push(ref);
    }
    try {
      await this.remote.streamPages(read, (ref, page) => each(ref.key, page.inodes));
    } catch (err) {
      throw this.pageDamage(id, err);
    }
  }

  /** The page keys the manifest of snapshot `id` names (none for a whole tree). */
  async pagesOf(id: string): Promise<string[]> {
    const t = await this.readStored(id);
    return 'manifest' in t ? t.manifest.pages.map((p) => p.key) : [];
  }

  private namedCache: { readonly listing: string; readonly pages: ReadonlySet<string> } | undefined;

  /**
   * Every metadata page a snapshot tree in the bucket names, whether its record exists or not
   * (compaction keeps them); undefined when one of them cannot be read (then which pages it
   * names is unknown). Tree objects never change once written, so an unchanged listing reuses
   * the last answer.
   */
  async namedPages(): Promise<ReadonlySet<string> | undefined> {
    const keys = await this.store.list(SNAPSHOT_TREE_PREFIX);
    const listing = keys.join('\n');
    if (this.namedCache?.listing === listing) return this.namedCache.pages;
    const pages = new Set<string>();
    for (const key of keys) {
      const id = key.slice(SNAPSHOT_TREE_PREFIX.length);
      try {
        if (!ID_RE.test(id)) return undefined;
        for (const p of await this.pagesOf(id)) pages.add(p);
      } catch (err) {
        if (err instanceof DamagedMetadataError) return undefined;
        throw err;
      }
    }
    this.namedCache = { listing, pages };
    return pages;
  }

  /**
   * Writes the tree of a new snapshot: the manifest of a paged checkpoint of its segment (its
   * pages are shared with the checkpoints and kept by compaction while a snapshot names them),
   * or, where checkpoints are not paged, the whole tree.
   */
  async writeTree(
    id: string,
    seq: number,
    tree: { readonly manifest: Manifest } | { readonly tree: TreeSnapshot },
  ): Promise<void> {
    const treeKey = `${SNAPSHOT_TREE_PREFIX}${id}`;
    const stored: StoredTree = {
      id,
      seq,
      ...tree,
      ...(this.identity ? { filespace: { id: this.identity.id, chunkSize: this.identity.chunkSize } } : {}),
    };
    await this.store.put(treeKey, this.sealJson(treeKey, stored), { ifNoneMatch: '*' });
  }

  /** Writes a new snapshot's record (after its tree: a record always has its tree). */
  async writeRecord(record: SnapshotRecord): Promise<void> {
    const key = `${SNAPSHOT_PREFIX}${record.id}`;
    await this.store.put(key, this.sealJson(key, record), { ifNoneMatch: '*' });
  }

  /** Deletes snapshot `id`: its record, then its tree (a damaged record may be deleted too). */
  async delete(id: string): Promise<void> {
    checkSnapshotId(id);
    const key = `${SNAPSHOT_PREFIX}${id}`;
    if (!(await this.store.head(key)))
      throw new UserError(`there is no snapshot ${id} ("filespace snapshot NAME list" shows them)`, 'NOT_FOUND');
    await this.store.delete(key);
    await this.store.delete(`${SNAPSHOT_TREE_PREFIX}${id}`);
  }

  /**
   * The ids of the snapshot trees without a record whose ids are `graceMs` old at `now` (see the
   * header). Records are listed first: a snapshot made between the two listings is younger
   * than the grace.
   */
  async orphanTrees(now: number, graceMs = ORPHAN_TREE_GRACE_MS): Promise<string[]> {
    const records = new Set((await this.store.list(SNAPSHOT_PREFIX)).map((k) => k.slice(SNAPSHOT_PREFIX.length)));
    const out: string[] = [];
    for (const key of await this.store.list(SNAPSHOT_TREE_PREFIX)) {
      const id = key.slice(SNAPSHOT_TREE_PREFIX.length);
      if (ID_RE.test(id) && !records.has(id) && now - snapshotIdTime(id) >= graceMs) out.push(id);
    }
    return out;
  }

  /** Deletes the tree of snapshot `id` (one without a record: `orphanTrees`). */
  async deleteTree(id: string): Promise<void> {
    checkSnapshotId(id);
    await this.store.delete(`${SNAPSHOT_TREE_PREFIX}${id}`);
  }

  async readSchedule(): Promise<SnapshotSchedule> {
    const s = await this.getJson<SnapshotSchedule>(SNAPSHOT_SCHEDULE_KEY, 'the snapshot schedule');
    return s ? checkSchedule(s) : NO_SCHEDULE;
  }

  async writeSchedule(s: SnapshotSchedule): Promise<void> {
    await this.store.put(SNAPSHOT_SCHEDULE_KEY, this.sealJson(SNAPSHOT_SCHEDULE_KEY, checkSchedule(s)));
  }
}

/** Where SnapshotRefs reads snapshots: the bucket's (SnapshotStore), or one that adds others (host/snapshots.ts). */
export type SnapshotSource = Pick<SnapshotStore, 'list' | 'recordsOf'>;

/** A long count or removal lets the engine's requests in every this many ms. */
const YIELD_EVERY_MS = 20;

/** A function that, awaited in a long loop, yields to the event loop once YIELD_EVERY_MS have passed. */
function yielder(): () => Promise<void> {
  let last = Date.now();
  return async () => {
    if (Date.now() - last <= YIELD_EVERY_MS) return;
    await new Promise((r) => setImmediate(r));
    last = Date.now();
  };
}

/** Rows written to the snapshot-refs database per transaction while counting. */
const COMMIT_ROWS = 100_000;
/** Page cache of the snapshot-refs database (KiB). */
const REFS_CACHE_KIB = 16 * 1024;

/** A chunk name as the refs database keys it: its 32 bytes (names are 64 hex digits), else its text. */
function nameKey(name: string): Buffer | string {
  return name.length === 64 && /^[0-9a-f]+$/.test(name) ? Buffer.from(name, 'hex') : name;
}

/** The layout of the snapshot-refs database; one of another layout is made anew. */
const REFS_VERSION = 1;

const REFS_SCHEMA = `
  CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
  INSERT INTO state (key, value) VALUES ('version', ${REFS_VERSION}), ('clean', 0), ('closes', 0);
  CREATE TABLE snap (id TEXT PRIMARY KEY) WITHOUT ROWID;
  CREATE TABLE snappage (id TEXT NOT NULL, page TEXT NOT NULL, PRIMARY KEY (id, page)) WITHOUT ROWID;
  CREATE TABLE page (page TEXT PRIMARY KEY, snaps INTEGER NOT NULL, files INTEGER NOT NULL, bytes INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE pagename (page TEXT NOT NULL, name BLOB NOT NULL, PRIMARY KEY (page, name)) WITHOUT ROWID;
  CREATE TABLE name (name BLOB PRIMARY KEY, pages INTEGER NOT NULL, len INTEGER NOT NULL) WITHOUT ROWID;
`;

/**
 * The chunk names of every live snapshot, for garbage collection in the lease holder (see the
 * header for why a chunk a live snapshot names is never deleted).
 *
 * Kept in a SQLite database of its own (`file`; in memory when none is given), so memory does
 * not grow with the snapshots' size: a snapshot of a million files names about a million
 * chunks. The file is written without a rollback journal or fsyncs (a count is cheaper so),
 * and is kept across a clean stop only: `close` makes what was counted durable, then marks the
 * file clean; the next open marks it not clean (durably) before it changes anything, and a file
 * not marked clean (a crash, a kill, a stop in the middle of a count, damage, another layout)
 * is made anew and counted from the bucket. A kept file counted whole snapshots only, and
 * snapshots never change, so `ready` brings it up to the bucket by counting the snapshots it
 * lacks and taking away those the bucket no longer has (another machine may have made and
 * deleted some while this one was stopped). Counted by page: a page named by
 * several snapshots (most of them: a checkpoint rewrites only what changed) is read and its
 * chunk names counted once; a name is referenced while a counted page names it. Each page's
 * files and bytes are kept too, so a new snapshot's record gets its totals from the count.
 *
 * While a snapshot is being taken (`hold`), while the snapshots are being read (`ready`), and
 * after a count that failed, every name counts as referenced: GC deletes nothing a snapshot
 * might name before that snapshot's names are all in.
 */
export class SnapshotRefs {
  private db: Database | undefined;
  private st:
    | {
        readonly has: Statement;
        readonly snap: Statement;
        readonly addSnap: Statement;
        readonly delSnap: Statement;
        readonly addSnapPage: Statement;
        readonly pagesOfSnap: Statement;
        readonly delSnapPages: Statement;
        readonly page: Statement;
        readonly addPage: Statement;
        readonly bumpPage: Statement;
        readonly delPage: Statement;
        readonly addPageName: Statement;
        readonly namesOfPage: Statement;
        readonly delPageNames: Statement;
        readonly addName: Statement;
        readonly dropName: Statement;
        readonly delName: Statement;
        readonly unique: Statement;
        readonly totals: Statement;
      }
    | undefined;
  private holds = 0;
  /** Moves at every `reset`: a load that saw it move counted into a database that is gone. */
  private generation = 0;
  /** Every snapshot in the bucket is counted and nothing failed since. */
  private complete = false;
  private loaded: Promise<void> | undefined;
  /** Counts and removals, one at a time. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly deleted = new Set<string>();
  /** Snapshots a kept file had counted when opened, not yet checked against the bucket's list. */
  private kept: Set<string> | undefined;
  /** A count or a removal is under way (the file then holds part of one: not kept at close). */
  private busy = false;

  constructor(
    private readonly snapshots: SnapshotSource,
    private readonly file?: string,
  ) {}

  /** Settings of the database, kept or new: no rollback journal, no fsync (see the class). */
  private static tune(db: Database): void {
    db.pragma('journal_mode = OFF');
    db.pragma('synchronous = OFF');
    // Names arrive in no order: a larger page cache keeps the name index's inner pages in.
    db.pragma(`cache_size = -${REFS_CACHE_KIB}`);
    // Sorting a big snapshot's names (uniqueBytes) spills to disk, not to memory.
    db.pragma('temp_store = FILE');
  }

  /**
   * The file as the last clean stop left it, marked not clean (durably) before anything else
   * writes it; undefined where it is missing, not marked clean, of another layout or unreadable.
   */
  private reopen(file: string): Database | undefined {
    let db: Database | undefined;
    try {
      db = openDatabase(file, { readOnly: false, mustExist: true });
      SnapshotRefs.tune(db);
      const value = (key: string) =>
        (db!.prepare('SELECT value FROM state WHERE key = ?').get(key) as { value: number } | undefined)?.value;
      if (value('version') !== REFS_VERSION || value('clean') !== 1) throw new Error('not kept');
      db.pragma('synchronous = FULL');
      db.exec("UPDATE state SET value = 0 WHERE key = 'clean'");
      db.pragma('synchronous = OFF');
      this.kept = new Set((db.prepare('SELECT id FROM snap').all() as Array<{ id: string }>).map((r) => r.id));
      return db;
    } catch {
      try {
        db?.close();
      } catch {
        // Made anew either way.
      }
      return undefined;
    }
  }

  /** The database: kept from the last clean stop, else made anew (see the class). */
  private open(): NonNullable<SnapshotRefs['st']> {
    if (this.st) return this.st;
    let db = this.file ? this.reopen(this.file) : undefined;
    if (!db) {
      this.kept = undefined;
      if (this.file) {
        for (const f of [this.file, `${this.file}-journal`, `${this.file}-wal`, `${this.file}-shm`]) {
          try {
            rmSync(f, { force: true });
          } catch {
            // Not removable: opening says why.
          }
        }
      }
      db = openDatabase(this.file ?? ':memory:', { readOnly: false, mustExist: false });
      SnapshotRefs.tune(db);
      db.exec(REFS_SCHEMA);
    }
    this.db = db;
    this.st = {
      has: db.prepare('SELECT 1 FROM name WHERE name = ?'),
      snap: db.prepare('SELECT 1 FROM snap WHERE id = ?'),
      addSnap: db.prepare('INSERT INTO snap (id) VALUES (?)'),
      delSnap: db.prepare('DELETE FROM snap WHERE id = ?'),
      addSnapPage: db.prepare('INSERT OR IGNORE INTO snappage (id, page) VALUES (?, ?)'),
      pagesOfSnap: db.prepare('SELECT page FROM snappage WHERE id = ?'),
      delSnapPages: db.prepare('DELETE FROM snappage WHERE id = ?'),
      page: db.prepare('SELECT snaps, files, bytes FROM page WHERE page = ?'),
      addPage: db.prepare('INSERT INTO page (page, snaps, files, bytes) VALUES (?, 1, ?, ?)'),
      bumpPage: db.prepare('UPDATE page SET snaps = snaps + ? WHERE page = ?'),
      delPage: db.prepare('DELETE FROM page WHERE page = ?'),
      addPageName: db.prepare('INSERT OR IGNORE INTO pagename (page, name) VALUES (?, ?)'),
      namesOfPage: db.prepare('SELECT name FROM pagename WHERE page = ?'),
      delPageNames: db.prepare('DELETE FROM pagename WHERE page = ?'),
      addName: db.prepare(
        'INSERT INTO name (name, pages, len) VALUES (?, 1, ?) ON CONFLICT (name) DO UPDATE SET pages = pages + 1',
      ),
      dropName: db.prepare('UPDATE name SET pages = pages - 1 WHERE name = ?'),
      delName: db.prepare('DELETE FROM name WHERE name = ? AND pages <= 0'),
      unique: db.prepare(
        `SELECT n.name AS name, n.len AS len FROM (
           SELECT pn.name AS name, COUNT(*) AS c FROM snappage sp
             JOIN page p ON p.page = sp.page AND p.snaps = 1
             JOIN pagename pn ON pn.page = sp.page
           WHERE sp.id = ? GROUP BY pn.name
         ) x JOIN name n ON n.name = x.name AND n.pages = x.c`,
      ),
      totals: db.prepare(
        'SELECT COALESCE(SUM(p.files), 0) AS files, COALESCE(SUM(p.bytes), 0) AS bytes FROM snappage s JOIN page p ON p.page = s.page WHERE s.id = ?',
      ),
    };
    return this.st;
  }

  has(name: string): boolean {
    if (this.holds > 0 || !this.complete) return true;
    return this.open().has.get(nameKey(name)) !== undefined;
  }

  /**
   * The packs whose members some live snapshot names (chunk/packs.ts); undefined while every
   * name counts as referenced (a snapshot being taken, or the snapshots not counted yet).
   */
  packsNamed(): Set<string> | undefined {
    if (this.holds > 0 || !this.complete) return undefined;
    this.open();
    const out = new Set<string>();
    // A packed name is never 64 hex digits, so the database keeps it as text (nameKey).
    const rows = this.db!.prepare("SELECT name FROM name WHERE typeof(name) = 'text' AND instr(name, '~') > 0");
    for (const row of rows.iterate() as IterableIterator<{ name: string }>) {
      const pack = packOf(row.name);
      if (pack) out.add(pack);
    }
    return out;
  }

  /** Until the returned function is called, every name counts as referenced (a snapshot is being taken). */
  hold(): () => void {
    this.holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.holds--;
    };
  }

  /**
   * Resolves once every snapshot in the bucket is counted; throws (and tries again at the next
   * call) when one cannot be read, naming it: until then nobody knows what it names.
   */
  ready(): Promise<void> {
    this.loaded ??= this.load().catch((err: unknown) => {
      this.loaded = undefined;
      throw err;
    });
    return this.loaded;
  }

  private async load(): Promise<void> {
    const generation = this.generation;
    this.open();
    const { records, damaged } = await this.snapshots.list();
    if (damaged.length > 0)
      throw new UserError(
        `the record of snapshot ${damaged[0]} in the bucket is damaged, so which chunks it keeps is unknown; ` +
          `garbage collection does not run until it is deleted ("filespace snapshot NAME delete ${damaged[0]}")`,
        'SNAPSHOT_DAMAGED',
      );
    // A kept file may count snapshots deleted since (by this machine before a crash that the
    // file survived unchanged, or by another while this one was stopped): taken away.
    const listed = new Set(records.map((r) => r.id));
    for (const id of this.kept ?? []) if (!listed.has(id)) await this.serial(() => this.uncount(id));
    this.kept = undefined;
    for (const r of records) {
      // Deleted by this machine meanwhile: it stays out.
      if (this.deleted.has(r.id)) continue;
      try {
        await this.add(r.id);
      } catch (err) {
        if (!(err instanceof DamagedMetadataError)) throw err;
        throw new UserError(
          `${err.message}, so which chunks snapshot ${r.id} keeps is unknown; garbage collection does not run until it is deleted`,
          'SNAPSHOT_DAMAGED',
        );
      }
    }
    if (this.generation !== generation)
      throw new Error(
        "the snapshots' chunk names were dropped while they were counted (a count failed); they are counted again at the next try",
      );
    this.complete = true;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /**
   * Counts the chunk names of snapshot `id`, read from the bucket a page at a time (a page
   * another counted snapshot names is not read again), and resolves to its files and bytes.
   * A count that fails leaves every name referenced until a `ready` succeeds.
   */
  add(id: string): Promise<SnapshotTotals> {
    return this.serial(async () => {
      const st = this.open();
      if (this.deleted.has(id)) return { files: 0, bytes: 0 };
      if (st.snap.get(id) === undefined) {
        await this.count(id);
      }
      return st.totals.get(id) as SnapshotTotals;
    });
  }

  private async count(id: string): Promise<void> {
    const st = this.open();
    this.busy = true;
    const db = this.db!;
    const counted = (page: string) => st.page.get(page) !== undefined;
    const seen = new Set<string>();
    // One transaction for many pages (a commit writes every index page it touched), kept open
    // across the yields to the engine's requests (nothing else writes this database meanwhile).
    let inTransaction = false;
    let rows = 0;
    const commit = () => {
      if (inTransaction) db.exec('COMMIT');
      inTransaction = false;
      rows = 0;
    };
    const pause = yielder();
    try {
      await this.snapshots.recordsOf(
        id,
        async (page, records) => {
          if (seen.has(page)) return;
          seen.add(page);
          if (!inTransaction) db.exec('BEGIN');
          inTransaction = true;
          st.addSnapPage.run(id, page);
          if (!records || counted(page)) {
            // Counted already (another snapshot names it): one more snapshot does.
            st.bumpPage.run(1, page);
            rows++;
          } else {
            let files = 0;
            let bytes = 0;
            const names = new Map<string, number>();
            for (const r of records) {
              if (r.kind === 'file') {
                files++;
                bytes += r.size;
              }
              for (const c of r.chunks ?? []) if (c) names.set(c[0], c[1]);
            }
            st.addPage.run(page, files, bytes);
            for (const [n, len] of names) {
              const k = nameKey(n);
              st.addPageName.run(page, k);
              st.addName.run(k, len);
            }
            rows += names.size + 1;
          }
          if (rows >= COMMIT_ROWS) commit();
          // A long count lets the engine's requests in between pages.
          await pause();
        },
        counted,
      );
      st.addSnap.run(id);
      commit();
    } catch (err) {
      this.reset();
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /** Forgets snapshot `id` (deleted): the names only its pages held are no longer referenced. */
  remove(id: string): Promise<void> {
    this.deleted.add(id);
    return this.serial(() => this.uncount(id));
  }

  /** Takes what was counted of snapshot `id` away. */
  private async uncount(id: string): Promise<void> {
    const st = this.open();
    const db = this.db!;
    const pages = (st.pagesOfSnap.all(id) as Array<{ page: string }>).map((r) => r.page);
    let rows = 0;
    const pause = yielder();
    this.busy = true;
    db.exec('BEGIN');
    try {
      for (const page of pages) {
        st.bumpPage.run(-1, page);
        rows++;
        const left = st.page.get(page) as { snaps: number } | undefined;
        if (!left || left.snaps <= 0) {
          for (const { name } of st.namesOfPage.all(page) as Array<{ name: Buffer | string }>) {
            st.dropName.run(name);
            st.delName.run(name);
            rows++;
          }
          st.delPageNames.run(page);
          st.delPage.run(page);
        }
        if (rows >= COMMIT_ROWS) {
          db.exec('COMMIT');
          db.exec('BEGIN');
          rows = 0;
        }
        await pause();
      }
      st.delSnapPages.run(id);
      st.delSnap.run(id);
      db.exec('COMMIT');
    } catch (err) {
      this.reset();
      throw err;
    } finally {
      this.busy = false;
    }
  }

  /**
   * Size-unique of snapshot `id` (counted): bytes of the chunks it names that no other counted
   * snapshot names and `live` (the live tree) does not reference. Reads the names of the pages
   * only it names, a row at a time.
   */
  uniqueBytes(id: string, live: { has(name: string): boolean }): number {
    let bytes = 0;
    for (const row of this.open().unique.iterate(id) as Iterable<{ name: Buffer | string; len: number }>) {
      const name = typeof row.name === 'string' ? row.name : row.name.toString('hex');
      if (!live.has(name)) bytes += row.len;
    }
    return bytes;
  }

  /**
   * After a count or a removal failed part way (the database has no rollback journal): drops
   * everything counted. Every name counts as referenced until a `ready` has counted the
   * snapshots in the bucket again, into a database made anew.
   */
  private reset(): void {
    this.generation++;
    this.complete = false;
    this.loaded = undefined;
    this.kept = undefined;
    try {
      this.db?.close();
    } catch {
      // Closing a database that failed: it is made anew either way.
    }
    this.db = undefined;
    this.st = undefined;
  }

  /**
   * Closes the database. Its file is kept for the next start when no count or removal is under
   * way: what was written is made durable first (a write with fsync makes the file's earlier
   * writes durable too), then the file is marked clean, so a stop cut short by a power loss
   * leaves it not marked clean or whole.
   */
  close(): void {
    const db = this.db;
    if (db && this.file && !this.busy && !db.inTransaction) {
      try {
        db.pragma('synchronous = FULL');
        db.exec("UPDATE state SET value = value + 1 WHERE key = 'closes'");
        db.exec("UPDATE state SET value = 1 WHERE key = 'clean'");
      } catch {
        // Not marked clean: made anew at the next start.
      }
    }
    db?.close();
    this.db = undefined;
    this.st = undefined;
  }
}

/** A snapshot's record with its size-unique. */
export type ListedSnapshot = SnapshotRecord & { readonly uniqueBytes: number };

/**
 * Every snapshot in the bucket with its size-unique (what deleting it frees), counted in
 * `refs` page by page (memory holds a few pages), against `live`, the chunks the live tree
 * references; and the ids of those that cannot be read (their record, tree or a page).
 */
export async function listSnapshotsWith(
  snaps: SnapshotStore,
  refs: SnapshotRefs,
  live: { has(name: string): boolean },
): Promise<{ snapshots: ListedSnapshot[]; damaged: string[] }> {
  const { records, damaged } = await snaps.list();
  let listed = records;
  // One that does not read is listed as damaged, and the others are counted again (a count
  // that fails drops what was counted).
  for (;;) {
    let bad: string | undefined;
    for (const r of listed) {
      try {
        await refs.add(r.id);
      } catch (err) {
        if (!(err instanceof UserError)) throw err;
        bad = r.id;
        break;
      }
    }
    if (bad === undefined) break;
    damaged.push(bad);
    listed = listed.filter((r) => r.id !== bad);
  }
  return {
    snapshots: listed.map((r) => ({ ...r, uniqueBytes: refs.uniqueBytes(r.id, live) })),
    damaged: damaged.sort(),
  };
}

/** Whether `err` says the object already exists (a create that raced, or an id reused). */
export function alreadyExists(err: unknown): boolean {
  return err instanceof StoreError && err.code === 'PreconditionFailed';
}
