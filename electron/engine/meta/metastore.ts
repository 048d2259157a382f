/**
 * MetaStore owns the authoritative local metadata: the Tree, its journal, and the queue of ops
 * not yet replicated to the bucket (`pendingRemote`).
 *
 * Every change goes through `commit(op)`: apply to the tree, append to the journal, queue for
 * the bucket, in that order and synchronously, so the three never disagree about order. The
 * remote replicator takes ops from the front of the queue and acknowledges them with
 * `markPushed`. Because chunk references enter the tree only after their upload succeeded,
 * any prefix of the queue names only chunks the bucket already has (DESIGN invariant 2).
 *
 * The tree lives in the local metadata database (treeDb.ts): a checkpoint (every few MiB of
 * journal, and at close) writes what changed since the last one there and starts a new journal,
 * so neither a checkpoint nor opening costs the size of the tree. Metadata an older release
 * left (a whole-tree `state.json` and its journal) is read once and upgraded in place: the
 * database is written (with the next generation) before the old snapshot goes, so a crash at
 * any point leaves one of the two whole.
 *
 * Damaged local metadata (see journal.ts, treeDb.ts) is refused by `load`; `inspect` reads
 * around the damage for the checker and the repair, and `replace` starts over from a given tree.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fsyncDir } from '../util/files';
import { Journal, JournalDamage, SnapshotDamagedError } from './journal';
import { MetaOp, Tree, TreeSnapshot, assertKnownOps } from './tree';
import { RemoteMeta } from './remote';
import { databaseSink } from './build';
import { PageLoader } from './pageLoader';
import { DbState, TreeDb, totalsOf } from './treeDb';

interface PersistedState {
  readonly gen: number;
  readonly chunkSize: number;
  readonly tree: TreeSnapshot;
  readonly pendingRemote: MetaOp[];
  readonly remoteSeq: number;
}

type JournalRecord = { op: MetaOp } | { rop: MetaOp } | { pushed: number; count: number };

/** What `MetaStore.inspect` could read of local metadata, around any damage. */
export interface LocalMetaInspection {
  readonly snapshotFile: string;
  readonly snapshotError?: SnapshotDamagedError;
  readonly damage?: JournalDamage;
  readonly tornTailBytes: number;
  /**
   * The snapshot's tree (or the caller's fallback when the snapshot cannot be read) with every
   * readable record applied, damaged ranges skipped. Undefined when there is no metadata, or
   * when the caller did not ask for it (`withTree`).
   */
  readonly tree: Tree | undefined;
  /** Closes the working copy `tree` is over, if it is one (`copyIn`). */
  closeTree(): void;
  /** This machine's changes as far as they can be read, in order (the snapshot's unsent ones first). */
  readonly localOps: MetaOp[];
  /** The ops in the records after the first damaged range: what cutting the journal there would lose. */
  readonly laterOps: MetaOp[];
}

/** Inode numbers that `ops` create or change. */
export function inodesChangedBy(ops: readonly MetaOp[]): Set<number> {
  const out = new Set<number>();
  for (const op of ops) if ('ino' in op) out.add(op.ino);
  return out;
}

function treeOf(file: string, snap: PersistedState): Tree {
  try {
    if (!Number.isSafeInteger(snap.chunkSize) || !snap.tree || !Array.isArray(snap.pendingRemote))
      throw new Error('fields are missing');
    return Tree.fromSnapshot(snap.chunkSize, snap.tree);
  } catch (err) {
    throw new SnapshotDamagedError(file, (err as Error).message);
  }
}

/** Inodes of a whole-tree checkpoint written to a new database per transaction. */

// A checkpoint writes only what changed, so a small journal costs little and bounds the changes held in memory.
const CHECKPOINT_JOURNAL_BYTES = 4 * 1024 * 1024;

/** Most inodes `takeRemoteContentChanges` names before it says 'all' instead (bounds its memory). */
const REMOTE_CONTENT_MAX_INOS = 65_536;

/** What an older release's snapshot and journal hold (read to upgrade, or to inspect). */
interface LegacyLoaded {
  readonly gen: number;
  readonly tree: Tree;
  readonly pendingRemote: MetaOp[];
  readonly remoteSeq: number;
}

/** Reads an older release's state.json and journal; undefined when there is none. */
async function loadLegacy(dir: string): Promise<LegacyLoaded | undefined> {
  const { journal, loaded } = await Journal.open<PersistedState>(dir, true);
  await journal.close();
  const snap = loaded.snapshot;
  if (!snap) return undefined;
  const tree = treeOf(path.join(dir, 'state.json'), snap);
  const pendingRemote = [...snap.pendingRemote];
  let remoteSeq = snap.remoteSeq;
  for (const raw of loaded.records) {
    const rec = raw as JournalRecord;
    if ('op' in rec) {
      tree.apply(rec.op);
      pendingRemote.push(rec.op);
    } else if ('rop' in rec) {
      tree.apply(rec.rop);
    } else {
      pendingRemote.splice(0, rec.count);
      remoteSeq = rec.pushed;
    }
  }
  return { gen: snap.gen, tree, pendingRemote, remoteSeq };
}

/** Whether an older release's snapshot is in `dir`. */
async function hasLegacySnapshot(dir: string): Promise<boolean> {
  return fsp.access(path.join(dir, 'state.json')).then(
    () => true,
    () => false,
  );
}

/** An in-memory copy of a database's tree (the inspection works on a copy it may change). */
function copyOf(tree: Tree): Tree {
  const copy = Tree.fromSnapshot(tree.chunkSize, tree.snapshot());
  copy.nextIno = tree.nextIno;
  return copy;
}

export class MetaStore {
  pendingRemote: MetaOp[] = [];
  /**
   * When each pending op was committed (Date.now()), parallel to pendingRemote; Infinity for
   * ops loaded from the journal (their time is unknown, so they count as newest).
   */
  pendingTimes: number[] = [];
  /** Sequence number of the last log segment this machine wrote to the bucket. */
  remoteSeq = 0;
  /** Position of pendingRemote[0] in the database's numbering of pending changes. */
  private pendingFirst = 0;
  private checkpointing: Promise<void> | undefined;
  /**
   * How many times the tree changed other than through `commit` (another machine's segments
   * applied, or the whole tree reset): readers that cache content watch it.
   */
  remoteChanges = 0;
  /** See `takeRemoteContentChanges`. */
  private remoteContent: Set<number> | 'all' = new Set();
  /** Called with the inode numbers whose storage a commit released. */
  onRelease: (inos: number[]) => void = () => undefined;
  /** Called after every commit that added work for the replicator. */
  onChange: () => void = () => undefined;
  /**
   * Called with the ops just applied to the tree (committed here, or another machine's); 'all'
   * when the tree was replaced. `relinked`: inodes that lost a name to them (a removal, a
   * rename over a name) and still have another, so their link counts changed although no op
   * names them.
   */
  onApplied: (ops: readonly MetaOp[] | 'all', relinked: readonly number[]) => void = () => undefined;
  /** Called after directories were loaded from the bucket's pages, with the extended-attribute names they brought. */
  onLoaded: (dirs: readonly number[], xattrNames: readonly string[]) => void = () => undefined;
  private loader: PageLoader | undefined;

  private constructor(
    private current: Tree,
    private readonly journal: Journal<PersistedState>,
    private readonly db: TreeDb,
  ) {}

  /** The tree; replaced as a whole only by `resetTo`, so read it through this getter. */
  get tree(): Tree {
    return this.current;
  }

  /** The local metadata database (the checker reads all of it). */
  get database(): TreeDb {
    return this.db;
  }

  /**
   * The loader of the directories a fresh machine's link left in the bucket's pages
   * (pageLoader.ts), reading them from `remote`; made at the first call.
   */
  pages(remote: RemoteMeta): PageLoader {
    this.loader ??= new PageLoader(
      this.db,
      () => this.current,
      remote,
      () => this.remoteSeq,
      (dirs, names) => this.onLoaded(dirs, names),
    );
    return this.loader;
  }

  /** How many directories are not loaded from the bucket yet. */
  get unloadedDirs(): number {
    return this.db.unloadedCount;
  }

  /** Resolves once every directory is loaded (at once when none waits; see `pages`). */
  whenFilled(): Promise<void> {
    if (this.db.unloadedCount === 0) return Promise.resolve();
    if (!this.loader) return Promise.reject(new Error('folders are not loaded from the bucket yet, and nothing loads them'));
    return this.loader.whenFilled();
  }

  /**
   * Loads local metadata from `dir`, or returns undefined when there is none yet. An older
   * release's snapshot is upgraded to the database first (unless `readOnly`: then it is read
   * as it is, into a database of its own beside nothing, see `inspect` for the checker).
   */
  static async load(dir: string, opts: { readOnly?: boolean; cacheWeight?: number } = {}): Promise<MetaStore | undefined> {
    const readOnly = opts.readOnly ?? false;
    let opened = TreeDb.open(dir, { readOnly, cacheWeight: opts.cacheWeight });
    if (!opened) {
      const legacy = await loadLegacy(dir);
      if (!legacy) return undefined;
      if (readOnly) {
        throw new SnapshotDamagedError(
          path.join(dir, 'state.json'),
          'it was written by an older release and is upgraded when the filespace is next mounted',
        );
      }
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      const db = TreeDb.create(
        dir,
        legacy.tree,
        { gen: legacy.gen + 1, chunkSize: legacy.tree.chunkSize, nextIno: legacy.tree.nextIno, remoteSeq: legacy.remoteSeq },
        legacy.pendingRemote,
      );
      db.close();
      await fsyncDir(dir);
      opened = TreeDb.open(dir, { cacheWeight: opts.cacheWeight });
      if (!opened) throw new Error(`the metadata database in ${dir} could not be read back after the upgrade`);
    }
    const { db, state } = opened;
    try {
      const tree = db.tree(state);
      const pending = db.pendingOps(state);
      const { journal, loaded } = await Journal.open<PersistedState>(dir, readOnly, state.gen);
      // An older release's snapshot the upgrade left behind is superseded.
      if (!readOnly) await fsp.rm(path.join(dir, 'state.json'), { force: true });
      const store = new MetaStore(tree, journal, db);
      store.pendingRemote = pending;
      store.pendingFirst = state.pendingFirst;
      store.remoteSeq = state.remoteSeq;
      store.pendingTimes = pending.map(() => Infinity);
      for (const raw of loaded.records) {
        const rec = raw as JournalRecord;
        if ('op' in rec) {
          store.tree.apply(rec.op);
          store.pendingRemote.push(rec.op);
          store.pendingTimes.push(Infinity);
        } else if ('rop' in rec) {
          store.tree.apply(rec.rop);
        } else {
          store.pendingRemote.splice(0, rec.count);
          store.pendingTimes.splice(0, rec.count);
          store.pendingFirst += rec.count;
          store.remoteSeq = rec.pushed;
        }
      }
      return store;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /**
   * Reads local metadata without changing anything, around any damage. With `withTree`, the
   * tree is returned too (to name what damage touched): a working copy of the database in the
   * folder `copyIn` (TreeDb `copyTo`: memory does not grow with the tree), or without one a
   * copy in memory (the whole tree: for a small one); `fallback` makes the tree to apply the
   * journal's records to when the snapshot cannot be read (best effort: used to name what the
   * records touched, never committed). Without `withTree` memory does not grow with the tree
   * (see TreeDb `verifyAll`).
   */
  static async inspect(
    dir: string,
    opts: { withTree?: boolean; copyIn?: string; fallback?: () => Tree } = {},
  ): Promise<LocalMetaInspection> {
    const { withTree = false, fallback } = opts;
    let copy: TreeDb | undefined;
    const closeTree = () => {
      copy?.close();
      copy = undefined;
    };
    try {
      let snapshotError: SnapshotDamagedError | undefined;
      let tree: Tree | undefined;
      const localOps: MetaOp[] = [];
      let atGen: number | undefined;
      let snapshotFile = TreeDb.fileIn(dir);
      let opened: ReturnType<typeof TreeDb.open>;
      try {
        opened = TreeDb.open(dir, { readOnly: true });
      } catch (err) {
        if (!(err instanceof SnapshotDamagedError)) throw err;
        snapshotError = err;
      }
      if (opened) {
        const { db, state } = opened;
        atGen = state.gen;
        try {
          db.verifyAll();
          if (withTree && opts.copyIn !== undefined) ({ db: copy, tree } = db.copyTo(opts.copyIn));
          else if (withTree) tree = copyOf(db.tree(state));
          localOps.push(...db.pendingOps(state));
        } catch (err) {
          closeTree();
          if (!(err instanceof SnapshotDamagedError)) throw err;
          snapshotError = err;
          tree = undefined;
          localOps.length = 0;
        } finally {
          db.close();
        }
      }
      let got: Awaited<ReturnType<typeof Journal.inspect<PersistedState>>>;
      if (atGen !== undefined || snapshotError) {
        got = await Journal.inspect<PersistedState>(dir, atGen);
        if (atGen === undefined && got.snapshot) {
          // A damaged database beside an older release's snapshot: nothing reads the latter.
          got = { ...got, snapshot: undefined };
        }
      } else {
        // No database: an older release's snapshot, if any.
        got = await Journal.inspect<PersistedState>(dir);
        snapshotFile = got.snapshotFile;
        snapshotError = got.snapshotError;
        if (got.snapshot) {
          try {
            const legacy = treeOf(got.snapshotFile, got.snapshot);
            if (withTree) tree = legacy;
            localOps.push(...got.snapshot.pendingRemote);
          } catch (err) {
            if (!(err instanceof SnapshotDamagedError)) throw err;
            snapshotError = err;
          }
        }
      }
      if (!tree && snapshotError && withTree) tree = fallback?.();
      const laterOps: MetaOp[] = [];
      const replay = (raw: unknown, later: boolean) => {
        const rec = raw as JournalRecord;
        const op = 'op' in rec ? rec.op : 'rop' in rec ? rec.rop : undefined;
        if (!op) return;
        tree?.apply(op);
        if ('op' in rec) localOps.push(op);
        if (later) laterOps.push(op);
      };
      for (const rec of got.records) replay(rec, false);
      for (const rec of got.damage?.later ?? []) replay(rec, true);
      return {
        snapshotFile,
        snapshotError,
        damage: got.damage,
        tornTailBytes: got.tornTailBytes,
        tree,
        closeTree,
        localOps,
        laterOps,
      };
    } catch (err) {
      closeTree();
      throw err;
    }
  }

  /**
   * Replaces the local metadata in `dir`, readable or not, with `tree` at bucket segment
   * `remoteSeq` and nothing pending (the repair, after it set aside what it could read).
   * Returns the old files kept beside it.
   */
  static async replace(dir: string, tree: Tree, remoteSeq: number): Promise<string[]> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const kept: string[] = [];
    let oldGen = -1;
    try {
      const opened = TreeDb.open(dir, { readOnly: true });
      if (opened) {
        oldGen = opened.state.gen;
        opened.db.close();
      }
    } catch (err) {
      if (!(err instanceof SnapshotDamagedError)) throw err;
      const file = TreeDb.fileIn(dir);
      await fsp.copyFile(file, `${file}.damaged`);
      kept.push(`${file}.damaged`);
    }
    // The older release's files (and every journal) go the way they always went: kept aside.
    kept.push(
      ...(await Journal.replace<PersistedState>(dir, (gen) => ({
        gen: Math.max(gen, oldGen + 1),
        chunkSize: tree.chunkSize,
        tree: { nextIno: tree.nextIno, inodes: [] },
        pendingRemote: [],
        remoteSeq,
      }))),
    );
    // Journal.replace left an empty journal of a new generation and a placeholder snapshot.
    const names = await fsp.readdir(dir);
    const gen = Math.max(...names.map((n) => /^journal\.(\d+)$/.exec(n)).map((m) => (m ? Number(m[1]) : -1)));
    // Read in scan mode: a tree on disk (the repair's copy of the bucket's) is not held in memory.
    const db = tree.scan(() =>
      TreeDb.create(dir, tree, { gen, chunkSize: tree.chunkSize, nextIno: tree.nextIno, remoteSeq }, []),
    );
    db.close();
    await fsp.rm(path.join(dir, 'state.json'), { force: true });
    await fsyncDir(dir);
    return kept;
  }

  /**
   * Creates local metadata in `dir` from the bucket (a fresh machine): the newest checkpoint is
   * written into the database page by page as it is read (each page authenticated, checked,
   * inserted and dropped), so memory holds a few pages, not the tree; then the segments after
   * it are applied, as a load in memory would (remote.ts `loadInto`). Of a paged checkpoint,
   * only the root's pages and the link pages are read: the other folders load on demand
   * (`pages`, pageLoader.ts), so a link costs what does not grow with the tree; `whole` reads
   * every page now (a tree built to be read whole, not mounted). A checkpoint written whole
   * (older formats) is read whole, as it always was. The database counts as created only
   * once all of it is durable (treeDb.ts `complete`): a link that stops half-way (a damaged
   * page, a crash) leaves a database `load` does not take, and the next link starts over.
   */
  static async link(dir: string, remote: RemoteMeta, chunkSize: number, opts: { whole?: boolean } = {}): Promise<MetaStore> {
    if (TreeDb.open(dir, { readOnly: true }) || (await hasLegacySnapshot(dir)))
      throw new Error(`metadata already exists in ${dir}`);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const into = databaseSink(dir, chunkSize, opts.whole ? undefined : { remote });
    try {
      const { tree, seq } = await remote.loadInto(chunkSize, into.sink);
      const db = into.persist(tree, seq);
      db.complete();
      db.close();
    } catch (err) {
      await into.drop();
      throw err;
    }
    await fsyncDir(dir);
    const store = await MetaStore.load(dir);
    if (!store) throw new Error(`the metadata database in ${dir} could not be read back`);
    return store;
  }

  /** Creates local metadata in `dir` from a tree (new filespace, or one read from the bucket). */
  static async create(dir: string, tree: Tree, remoteSeq: number): Promise<MetaStore> {
    if (TreeDb.open(dir, { readOnly: true }) || (await hasLegacySnapshot(dir)))
      throw new Error(`metadata already exists in ${dir}`);
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const db = TreeDb.create(dir, tree, { gen: 1, chunkSize: tree.chunkSize, nextIno: tree.nextIno, remoteSeq }, []);
    db.close();
    await fsyncDir(dir);
    const store = await MetaStore.load(dir);
    if (!store) throw new Error(`the metadata database in ${dir} could not be read back`);
    return store;
  }

  get chunkSize(): number {
    return this.tree.chunkSize;
  }

  /** The inode `op` takes a name from (a removal, a rename over a name), before it is applied. */
  private losesName(op: MetaOp): number | undefined {
    if (op.t === 'rm') return this.tree.lookup(op.parent, op.name)?.ino;
    if (op.t === 'mv') return this.tree.lookup(op.dp, op.dn)?.ino;
    return undefined;
  }

  /** Of the inodes that lost a name, those that still have one. */
  private stillNamed(lost: readonly number[]): number[] {
    return lost.filter((ino) => this.tree.get(ino) !== undefined);
  }

  commit(op: MetaOp): void {
    const lost = this.losesName(op);
    const released = this.tree.apply(op);
    this.journal.append({ op });
    this.pendingRemote.push(op);
    this.pendingTimes.push(Date.now());
    if (released.length > 0) this.onRelease(released);
    this.onChange();
    this.onApplied([op], lost === undefined ? [] : this.stillNamed([lost]));
    this.checkpointIfDue();
  }

  /**
   * Starts a checkpoint when the journal has grown past its bound, or the changes held in
   * memory for the next one weigh more than they may (treeDb.ts `dirtyFull`), unless one is
   * under way. A follower applying the writer's segments checkpoints the same way.
   */
  private checkpointIfDue(): void {
    if (this.checkpointing) return;
    if (this.journal.bytes <= CHECKPOINT_JOURNAL_BYTES && !this.db.dirtyFull) return;
    this.checkpointing = this.checkpoint().finally(() => (this.checkpointing = undefined));
    this.checkpointing.catch(() => undefined);
  }

  markPushed(seq: number, count: number): void {
    this.pendingRemote.splice(0, count);
    this.pendingTimes.splice(0, count);
    this.pendingFirst += count;
    this.remoteSeq = seq;
    this.journal.append({ pushed: seq, count });
  }

  /**
   * Applies a segment another machine wrote to the bucket (catching up). Only valid while this
   * machine has nothing unpushed, so the two histories cannot interleave.
   */
  applyRemote(seq: number, ops: readonly MetaOp[]): void {
    if (this.pendingRemote.length > 0) throw new Error('cannot apply remote changes over unpushed local ones');
    if (seq !== this.remoteSeq + 1) throw new Error(`remote segment ${seq} does not follow ${this.remoteSeq}`);
    assertKnownOps(ops); // before any is applied: a newer writer's segment changes nothing here
    this.remoteChanges++;
    const lost: number[] = [];
    for (const op of ops) {
      const ino = this.losesName(op);
      if (ino !== undefined) lost.push(ino);
      if (op.t === 'chunk' || (op.t === 'attr' && op.size !== undefined)) this.remoteContentChanged(op.ino);
      const released = this.tree.apply(op);
      this.journal.append({ rop: op });
      if (released.length > 0) this.onRelease(released);
    }
    this.remoteSeq = seq;
    this.journal.append({ pushed: seq, count: 0 });
    this.onApplied(ops, this.stillNamed(lost));
    this.checkpointIfDue();
  }

  /**
   * The inodes whose bytes (size or chunk list) another machine changed since the last call, or
   * 'all' when the tree was replaced or too many changed to name them; starts over empty. For the
   * one reader that caches content under a version (the VFS's page-cache book): a change of names
   * alone moves no bytes of an open file.
   */
  takeRemoteContentChanges(): ReadonlySet<number> | 'all' {
    const taken = this.remoteContent;
    this.remoteContent = new Set();
    return taken;
  }

  private remoteContentChanged(ino: number): void {
    if (this.remoteContent === 'all') return;
    this.remoteContent.add(ino);
    if (this.remoteContent.size > REMOTE_CONTENT_MAX_INOS) this.remoteContent = 'all';
  }

  /**
   * Replaces the local metadata with the bucket's (`tree` at `remoteSeq`), dropping ops never
   * pushed. Used after those ops were set aside because another machine took over.
   */
  async resetTo(tree: Tree, remoteSeq: number): Promise<void> {
    if (tree.chunkSize !== this.chunkSize) throw new Error('chunk size mismatch');
    if (this.checkpointing) await this.checkpointing.catch(() => undefined);
    let state: DbState | undefined;
    const switched = this.journal.checkpointWith((gen) => {
      state = {
        gen,
        chunkSize: tree.chunkSize,
        nextIno: tree.nextIno,
        remoteSeq,
        pendingFirst: 0,
        ...totalsOf(tree),
      };
      this.db.replaceAll(tree, state, []);
    });
    this.current = this.db.tree(state!);
    this.remoteChanges++;
    this.remoteContent = 'all';
    this.pendingRemote = [];
    this.pendingTimes = [];
    this.pendingFirst = 0;
    this.remoteSeq = remoteSeq;
    this.onApplied('all', []);
    await switched;
  }

  /** Called when the journal found the disk full; resolves true if space was freed (see journal.ts). */
  set onDiskFull(fn: (err: Error) => Promise<boolean>) {
    this.journal.onDiskFull = fn;
  }

  /** Writes buffered journal records (survives a process crash). */
  flush(): Promise<void> {
    return this.journal.flush();
  }

  /**
   * Makes every committed op durable (survives power loss). Concurrent calls share fdatasyncs
   * (group commit, see journal.ts), so many deletions or uploads cost a few, not one each.
   */
  sync(): Promise<void> {
    return this.journal.sync();
  }

  /**
   * Writes what changed since the last checkpoint to the database and starts a new journal
   * (see journal.ts `checkpointWith`). If it fails (a full disk), nothing is lost: the journal
   * keeps every record and the changes stay held for the next one.
   */
  checkpoint(): Promise<void> {
    try {
      return this.journal.checkpointWith((gen) =>
        this.db.checkpoint(
          {
            gen,
            chunkSize: this.tree.chunkSize,
            nextIno: this.tree.nextIno,
            remoteSeq: this.remoteSeq,
            pendingFirst: this.pendingFirst,
            ...totalsOf(this.tree),
          },
          this.pendingRemote,
        ),
      );
    } catch (err) {
      // A synchronous failure (a full disk) rejects, as a failed write of the journal does.
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * Writes a snapshot and closes the journal. If the snapshot cannot be written (a full disk),
   * the journal still gets every record, so nothing is lost; only a failure of that throws.
   */
  async close(): Promise<void> {
    this.loader?.stop();
    try {
      if (this.journal.readOnly) return await this.journal.close();
      if (this.checkpointing) await this.checkpointing.catch(() => undefined);
      await this.checkpoint().catch(() => undefined);
      await this.journal.close();
    } finally {
      this.db.close();
    }
  }
}
