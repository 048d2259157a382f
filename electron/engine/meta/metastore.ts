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
 * Damaged local metadata (see journal.ts) is refused by `load`; `inspect` reads around the
 * damage for the checker and the repair, and `replace` starts over from a given tree.
 */

import * as path from 'node:path';
import { Journal, JournalDamage, SnapshotDamagedError } from './journal';
import { MetaOp, Tree, TreeSnapshot, assertKnownOps } from './tree';

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
   * readable record applied, damaged ranges skipped. Undefined when there is no metadata.
   */
  readonly tree: Tree | undefined;
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

const CHECKPOINT_JOURNAL_BYTES = 8 * 1024 * 1024;

export class MetaStore {
  pendingRemote: MetaOp[] = [];
  /**
   * When each pending op was committed (Date.now()), parallel to pendingRemote; Infinity for
   * ops loaded from the journal (their time is unknown, so they count as newest).
   */
  pendingTimes: number[] = [];
  /** Sequence number of the last log segment this machine wrote to the bucket. */
  remoteSeq = 0;
  private checkpointing: Promise<void> | undefined;
  /**
   * How many times the tree changed other than through `commit` (another machine's segments
   * applied, or the whole tree reset): readers that cache content watch it.
   */
  remoteChanges = 0;
  /** Called with the inode numbers whose storage a commit released. */
  onRelease: (inos: number[]) => void = () => undefined;
  /** Called after every commit that added work for the replicator. */
  onChange: () => void = () => undefined;
  /** Called with the ops just applied to the tree (committed here, or another machine's); 'all' when the tree was replaced. */
  onApplied: (ops: readonly MetaOp[] | 'all') => void = () => undefined;

  private constructor(
    private current: Tree,
    private readonly journal: Journal<PersistedState>,
  ) {}

  /** The tree; replaced as a whole only by `resetTo`, so read it through this getter. */
  get tree(): Tree {
    return this.current;
  }

  /** Loads local metadata from `dir`, or returns undefined when there is none yet. */
  static async load(dir: string, opts: { readOnly?: boolean } = {}): Promise<MetaStore | undefined> {
    const { journal, loaded } = await Journal.open<PersistedState>(path.join(dir), opts.readOnly ?? false);
    if (!loaded.snapshot) {
      await journal.close();
      return undefined;
    }
    const snap = loaded.snapshot;
    let tree: Tree;
    try {
      tree = treeOf(path.join(dir, 'state.json'), snap);
    } catch (err) {
      await journal.close();
      throw err;
    }
    const store = new MetaStore(tree, journal);
    store.pendingRemote = [...snap.pendingRemote];
    store.remoteSeq = snap.remoteSeq;
    store.pendingTimes = snap.pendingRemote.map(() => Infinity);
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
        store.remoteSeq = rec.pushed;
      }
    }
    return store;
  }

  /**
   * Reads local metadata without changing anything, around any damage. `fallback` is the tree
   * to apply the journal's records to when the snapshot cannot be read (best effort: used to
   * name what the records touched, never committed).
   */
  static async inspect(dir: string, fallback?: Tree): Promise<LocalMetaInspection> {
    const got = await Journal.inspect<PersistedState>(dir);
    let snapshotError = got.snapshotError;
    let tree: Tree | undefined;
    const localOps: MetaOp[] = [];
    if (got.snapshot) {
      try {
        tree = treeOf(got.snapshotFile, got.snapshot);
        localOps.push(...got.snapshot.pendingRemote);
      } catch (err) {
        if (!(err instanceof SnapshotDamagedError)) throw err;
        snapshotError = err;
      }
    }
    if (!tree && snapshotError) tree = fallback;
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
      snapshotFile: got.snapshotFile,
      snapshotError,
      damage: got.damage,
      tornTailBytes: got.tornTailBytes,
      tree,
      localOps,
      laterOps,
    };
  }

  /**
   * Replaces the local metadata in `dir`, readable or not, with `tree` at bucket segment
   * `remoteSeq` and nothing pending (the repair, after it set aside what it could read).
   * Returns the old files kept beside it.
   */
  static async replace(dir: string, tree: Tree, remoteSeq: number): Promise<string[]> {
    return Journal.replace<PersistedState>(dir, (gen) => ({
      gen,
      chunkSize: tree.chunkSize,
      tree: tree.snapshot(),
      pendingRemote: [],
      remoteSeq,
    }));
  }

  /** Creates local metadata in `dir` from a tree (new filespace, or one read from the bucket). */
  static async create(dir: string, tree: Tree, remoteSeq: number): Promise<MetaStore> {
    const { journal, loaded } = await Journal.open<PersistedState>(dir);
    if (loaded.snapshot) {
      await journal.close();
      throw new Error(`metadata already exists in ${dir}`);
    }
    const store = new MetaStore(tree, journal);
    store.remoteSeq = remoteSeq;
    await store.checkpoint();
    return store;
  }

  get chunkSize(): number {
    return this.tree.chunkSize;
  }

  commit(op: MetaOp): void {
    const released = this.tree.apply(op);
    this.journal.append({ op });
    this.pendingRemote.push(op);
    this.pendingTimes.push(Date.now());
    if (released.length > 0) this.onRelease(released);
    this.onChange();
    this.onApplied([op]);
    if (this.journal.bytes > CHECKPOINT_JOURNAL_BYTES && !this.checkpointing) {
      this.checkpointing = this.checkpoint().finally(() => (this.checkpointing = undefined));
      this.checkpointing.catch(() => undefined);
    }
  }

  markPushed(seq: number, count: number): void {
    this.pendingRemote.splice(0, count);
    this.pendingTimes.splice(0, count);
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
    for (const op of ops) {
      const released = this.tree.apply(op);
      this.journal.append({ rop: op });
      if (released.length > 0) this.onRelease(released);
    }
    this.remoteSeq = seq;
    this.journal.append({ pushed: seq, count: 0 });
    this.onApplied(ops);
  }

  /**
   * Replaces the local metadata with the bucket's (`tree` at `remoteSeq`), dropping ops never
   * pushed. Used after those ops were set aside because another machine took over.
   */
  async resetTo(tree: Tree, remoteSeq: number): Promise<void> {
    if (tree.chunkSize !== this.chunkSize) throw new Error('chunk size mismatch');
    this.current = tree;
    this.remoteChanges++;
    this.pendingRemote = [];
    this.pendingTimes = [];
    this.remoteSeq = remoteSeq;
    this.onApplied('all');
    await this.checkpoint();
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

  checkpoint(): Promise<void> {
    const state: PersistedState = {
      gen: this.journal.generation + 1,
      chunkSize: this.tree.chunkSize,
      tree: this.tree.snapshot(),
      pendingRemote: [...this.pendingRemote],
      remoteSeq: this.remoteSeq,
    };
    return this.journal.checkpoint(state);
  }

  /**
   * Writes a snapshot and closes the journal. If the snapshot cannot be written (a full disk),
   * the journal still gets every record, so nothing is lost; only a failure of that throws.
   */
  async close(): Promise<void> {
    if (this.journal.readOnly) return this.journal.close();
    if (this.checkpointing) await this.checkpointing.catch(() => undefined);
    await this.checkpoint().catch(() => undefined);
    await this.journal.close();
  }
}
