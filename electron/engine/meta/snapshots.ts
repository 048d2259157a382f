/**
 * Snapshots: point-in-time, read-only views of the whole filespace, kept in the bucket. Cheap,
 * because chunks are immutable: a snapshot is a copy of the tree, and the chunks it names stay.
 *
 * Layout under the filespace root (everything sealed with the metadata key and the object's
 * key as associated data, as remote.ts does):
 *   meta/snapshots/<id>          the record: id, created time, label, kind (manual, hourly,
 *                                daily), the metadata sequence number it shows, files, bytes
 *   meta/snaptree/<id>           the tree as of that sequence number (a checkpoint of its own,
 *                                which pruneCheckpoints never sees: it lists meta/ckpt/ only)
 *   meta/snapshot-schedule       how many automatic snapshots of each kind are kept (0: none taken)
 * Ids are `YYYYMMDD-HHMMSS-xxxx` (UTC time of creation, 4 random hex digits), so listings sort
 * by age. Reading a snapshot's tree goes through `loadTree` alone.
 *
 * Who writes: only the lease holder creates and deletes snapshots and applies the schedule
 * (the engine refuses otherwise). It creates the tree first and the record after it (both with
 * If-None-Match), and deletes the record first and the tree after it: a record always has its
 * tree, and a tree without a record is never listed.
 *
 * Garbage collection (gc.ts) runs in the lease holder too, and counts every chunk a live
 * snapshot names as referenced, through `SnapshotRefs`: the chunk names of every snapshot,
 * read from the bucket before the first pass or creation, then kept up to date by this
 * machine's own creations and deletions (nobody else may make any while it holds the lease).
 * Why no chunk a live snapshot names is ever deleted:
 *  - At creation, the tree is copied from the live tree and its chunk names are added to
 *    `SnapshotRefs` in the same synchronous step: each of those chunks is named by the live
 *    tree at that instant, so there is no instant at which it is named by neither. The record
 *    is written to the bucket afterwards; if that fails the names stay counted (a PUT without
 *    an answer may have written it), until the engine restarts and counts what the bucket holds.
 *  - A GC pass deletes a chunk only when it was unreferenced at the previous pass, is still
 *    unreferenced at this one (read at its start and again right before deleting, both
 *    through `has` of the live tree and of `SnapshotRefs`), and the grace period has passed.
 *    A chunk named by a live snapshot is referenced at both reads.
 *  - When the snapshots cannot all be read (a damaged record or tree), which chunks they name
 *    is unknown: GC refuses to run (`SnapshotRefs.ready` throws, naming the snapshot).
 *  - Deleting removes the record, then the names: from then on those chunks are garbage unless
 *    the live tree or another snapshot names them, marked at the next pass and deleted after
 *    the grace period, as any chunk the live tree dropped (a machine still browsing the deleted
 *    snapshot reads them for the grace period, like a follower reading old chunks).
 */

import { randomBytes } from 'node:crypto';
import { AuthError, open, seal } from '../chunk/crypto';
import { UserError } from '../errors';
import { ObjectStore, StoreError } from '../store/types';
import { DamagedMetadataError, FilespaceIdentity } from './remote';
import { Tree, TreeSnapshot } from './tree';

export const SNAPSHOT_PREFIX = 'meta/snapshots/';
export const SNAPSHOT_TREE_PREFIX = 'meta/snaptree/';
export const SNAPSHOT_SCHEDULE_KEY = 'meta/snapshot-schedule';

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

interface StoredTree {
  readonly id: string;
  readonly seq: number;
  readonly tree: TreeSnapshot;
  readonly filespace?: FilespaceIdentity;
}

const ID_RE = /^\d{8}-\d{6}-[0-9a-f]{4}$/;

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

/** Regular files of a tree, and the sum of their sizes. */
export function filesOf(tree: Tree): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  for (const inode of tree.inodes.values()) {
    if (inode.kind !== 'file') continue;
    files++;
    bytes += inode.size;
  }
  return { files, bytes };
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

/**
 * Size-unique of each snapshot: bytes of the chunks it names that neither the live tree nor
 * any other snapshot names.
 */
export function uniqueBytes(
  trees: ReadonlyMap<string, Map<string, number>>,
  live: { has(name: string): boolean },
): Map<string, number> {
  const count = new Map<string, number>();
  for (const chunks of trees.values()) for (const name of chunks.keys()) count.set(name, (count.get(name) ?? 0) + 1);
  const out = new Map<string, number>();
  for (const [id, chunks] of trees) {
    let bytes = 0;
    for (const [name, len] of chunks) if (count.get(name) === 1 && !live.has(name)) bytes += len;
    out.set(id, bytes);
  }
  return out;
}

/** Reads and writes snapshots in the bucket (see the header for the layout). */
export class SnapshotStore {
  constructor(
    private readonly store: ObjectStore,
    private readonly metaKey: Buffer,
    private readonly chunkSize: number,
    private readonly identity?: FilespaceIdentity,
  ) {}

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

  /** The tree of snapshot `id`, as of its sequence number: the one way a snapshot's tree is read. */
  async loadTree(id: string): Promise<Tree> {
    checkSnapshotId(id);
    const key = `${SNAPSHOT_TREE_PREFIX}${id}`;
    const what = `the tree of snapshot ${id}`;
    const t = await this.getJson<StoredTree>(key, what);
    if (!t) throw new DamagedMetadataError(key, `${what} (${key}) is missing from the bucket`, 'SNAPSHOT_DAMAGED');
    if (t.id !== id) throw new DamagedMetadataError(key, `${what} (${key}) names another snapshot`, 'SNAPSHOT_DAMAGED');
    if (
      this.identity &&
      t.filespace &&
      (t.filespace.id !== this.identity.id || t.filespace.chunkSize !== this.identity.chunkSize)
    )
      throw new DamagedMetadataError(key, `${what} (${key}) was written for another filespace`, 'SNAPSHOT_DAMAGED');
    try {
      return Tree.fromSnapshot(this.chunkSize, t.tree);
    } catch (err) {
      throw new DamagedMetadataError(key, `${what} (${key}) is malformed: ${(err as Error).message}`, 'SNAPSHOT_DAMAGED');
    }
  }

  /** Writes a new snapshot: its tree, then its record. */
  async create(record: SnapshotRecord, tree: TreeSnapshot): Promise<void> {
    const treeKey = `${SNAPSHOT_TREE_PREFIX}${record.id}`;
    const stored: StoredTree = {
      id: record.id,
      seq: record.seq,
      tree,
      ...(this.identity ? { filespace: { id: this.identity.id, chunkSize: this.identity.chunkSize } } : {}),
    };
    await this.store.put(treeKey, this.sealJson(treeKey, stored), { ifNoneMatch: '*' });
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

  async readSchedule(): Promise<SnapshotSchedule> {
    const s = await this.getJson<SnapshotSchedule>(SNAPSHOT_SCHEDULE_KEY, 'the snapshot schedule');
    return s ? checkSchedule(s) : NO_SCHEDULE;
  }

  async writeSchedule(s: SnapshotSchedule): Promise<void> {
    await this.store.put(SNAPSHOT_SCHEDULE_KEY, this.sealJson(SNAPSHOT_SCHEDULE_KEY, checkSchedule(s)));
  }
}

/**
 * The chunk names of every live snapshot, for garbage collection in the lease holder (see the
 * header for why a chunk a live snapshot names is never deleted).
 */
export class SnapshotRefs {
  private readonly byId = new Map<string, Set<string>>();
  private readonly counts = new Map<string, number>();
  private loaded: Promise<void> | undefined;

  constructor(private readonly snapshots: SnapshotStore) {}

  has(name: string): boolean {
    return this.counts.has(name);
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
    const { records, damaged } = await this.snapshots.list();
    if (damaged.length > 0)
      throw new UserError(
        `the record of snapshot ${damaged[0]} in the bucket is damaged, so which chunks it keeps is unknown; ` +
          `garbage collection does not run until it is deleted ("filespace snapshot NAME delete ${damaged[0]}")`,
        'SNAPSHOT_DAMAGED',
      );
    for (const r of records) {
      if (this.byId.has(r.id)) continue;
      let tree: Tree;
      try {
        tree = await this.snapshots.loadTree(r.id);
      } catch (err) {
        if (!(err instanceof DamagedMetadataError)) throw err;
        throw new UserError(
          `${err.message}, so which chunks snapshot ${r.id} keeps is unknown; garbage collection does not run until it is deleted`,
          'SNAPSHOT_DAMAGED',
        );
      }
      // Deleted by this machine while the tree was read: it stays out.
      if (!this.deleted.has(r.id)) this.add(r.id, chunksOf(tree).keys());
    }
  }

  private readonly deleted = new Set<string>();

  /** Counts the chunk names of snapshot `id` (synchronously: see the header). */
  add(id: string, chunkNames: Iterable<string>): void {
    if (this.byId.has(id)) return;
    const names = new Set(chunkNames);
    this.byId.set(id, names);
    for (const n of names) this.counts.set(n, (this.counts.get(n) ?? 0) + 1);
  }

  remove(id: string): void {
    this.deleted.add(id);
    const names = this.byId.get(id);
    if (!names) return;
    this.byId.delete(id);
    for (const n of names) {
      const c = (this.counts.get(n) ?? 1) - 1;
      if (c <= 0) this.counts.delete(n);
      else this.counts.set(n, c);
    }
  }
}

/** Whether `err` says the object already exists (a create that raced, or an id reused). */
export function alreadyExists(err: unknown): boolean {
  return err instanceof StoreError && err.code === 'PreconditionFailed';
}
