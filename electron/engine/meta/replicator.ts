/**
 * Pushes committed metadata ops to the bucket as log segments, and writes a checkpoint every
 * `CHECKPOINT_EVERY` segments (and on clean shutdown) so a new machine replays little.
 *
 * One push runs at a time. A failed push is retried with backoff; the ops stay queued in the
 * MetaStore (and its journal), so nothing is lost across restarts. A segment-number conflict
 * means another machine wrote to this filespace: the replicator stops for good and reports it,
 * and the engine turns read-only. Before every push the lease must be valid (`beforePush`):
 * a lost lease stops the replicator the same way; an unreachable store retries (that is the
 * offline state, which the store monitor reports: it is not recorded as an error here), and
 * when the store answers again `retryNow()` forgets the backoff.
 *
 * A segment counts as committed (its ops leave the queue) only once `afterPush` resolves: the
 * PUT's answer came while the lease was valid, or a lease renewal after it succeeded. A writer
 * suspended between its lease check and its PUT for longer than the compaction grace could
 * otherwise write into a slot compaction emptied and believe it committed (compaction.ts says
 * why this closes it). A failed confirmation leaves the ops queued: lost lease, fenced as
 * above; no answer, retried (the retry finds its own segment and confirms again).
 *
 * Checkpoints are paged (pages.ts) when the engine gives `paged`: its hook raises the
 * header's format first (once), and the page writer is told of every segment this replicator
 * pushes, so a checkpoint rewrites only the pages those segments changed. Without it (tests,
 * tools) a checkpoint is the whole tree, as in format 3.
 */

import { MetaStore } from './metastore';
import { LeaseLostError } from './lease';
import { Manifest, PageWriter, isManifest } from './pages';
import { MetaOp, Tree } from './tree';
import {
  CKPT_PREFIX,
  DamagedMetadataError,
  FilespaceIdentity,
  Homes,
  RemoteMeta,
  SegmentConflictError,
  SegmentWriter,
  seqKey,
} from './remote';
import { isNoAnswer } from '../store/types';
import { Signal, backoffMs } from '../util/concurrency';

const MAX_OPS_PER_SEGMENT = 20_000;
const CHECKPOINT_EVERY = 64;
/**
 * Most segments a writer that does not track the tree reads to take up from the newest
 * checkpoint (see `resumeWriter`); past that it compares every page instead. Segments after
 * the newest checkpoint are never compacted away, and there are rarely more than
 * `CHECKPOINT_EVERY` of them.
 */
const RESUME_SEGMENTS_MAX = 1024;

export class Replicator {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private failures = 0;
  /** Someone waits for every op to be pushed (pushNow): the loop does not leave any for its next tick. */
  private urgent = false;
  /** The last loop left ops for its next tick. */
  private deferred = false;
  private segmentsSinceCheckpoint = 0;
  private stopped = false;
  conflict: string | undefined;
  lastError: string | undefined;
  readonly progress = new Signal();
  /** Called once when this machine has been fenced off (another writer, or the lease lost). */
  onConflict: (reason: string) => void = () => undefined;

  constructor(
    private readonly meta: MetaStore,
    private readonly remote: RemoteMeta,
    private readonly delayMs: () => number,
    private readonly log: (msg: string) => void,
    /** Who writes the segments; undefined while this machine may not write (follower). */
    private readonly writer: () => SegmentWriter | undefined,
    /** Resolves when this machine may commit now (its lease is valid); throws if it never may again. */
    private readonly beforePush: () => Promise<void>,
    /** How many pending ops, from the front, may be published now (their data is in the bucket). */
    private readonly publishable: () => number = () => this.meta.pendingRemote.length,
    /** Resolves once a segment just written may count as committed (see the header); throws like `beforePush`. */
    private readonly afterPush: () => Promise<void> = () => Promise.resolve(),
    /** Paged checkpoints: the page writer, the identity manifests carry, and what must happen before the first one. */
    private readonly paged?: {
      readonly writer: PageWriter;
      readonly identity?: FilespaceIdentity;
      readonly before: () => Promise<void>;
    },
  ) {}

  /** Whether segments were pushed since the last checkpoint this machine wrote. */
  get behindCheckpoint(): boolean {
    return this.segmentsSinceCheckpoint > 0;
  }

  get pendingOps(): number {
    return this.meta.pendingRemote.length;
  }

  /** Schedules a push soon (debounced). */
  schedule(delayMs = this.delayMs()): void {
    if (this.stopped || this.conflict || this.timer || !this.writer()) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.run();
    }, delayMs);
    this.timer.unref();
  }

  /** Pushes every publishable op now, in as many segments as it takes (sync, unmount, a renewed lease). */
  pushNow(): Promise<void> {
    this.urgent = true;
    if (this.timer) clearTimeout(this.timer); // the tick it waited for is this push
    this.timer = undefined;
    // A push that left ops for its next tick (see pushLoop) is followed by one that does not.
    return this.run().then(() => (this.deferred ? this.pushNow() : undefined));
  }

  private run(): Promise<void> {
    if (!this.running) {
      this.running = this.pushLoop().finally(() => {
        this.running = undefined;
        this.urgent = false;
      });
    }
    return this.running;
  }

  private async pushLoop(): Promise<void> {
    this.deferred = false;
    while (!this.conflict && this.meta.pendingRemote.length > 0) {
      const writer = this.writer();
      if (!writer) return;
      const n = Math.min(this.publishable(), MAX_OPS_PER_SEGMENT);
      if (n === 0) break; // waiting for data uploads; each one schedules a push
      const ops = this.meta.pendingRemote.slice(0, n);
      const seq = this.meta.remoteSeq + 1;
      try {
        // Only ops already durable here may reach the bucket: otherwise a crash could leave
        // the bucket with changes this machine forgot, and the histories would diverge.
        await this.meta.sync();
        await this.beforePush();
        const count = await this.remote.pushSegment(seq, ops, writer, homesOf(this.meta.tree, ops));
        await this.afterPush();
        // After stop() the journal may be closed; the next start sees the segment and resumes.
        if (this.stopped) return;
        this.meta.markPushed(seq, count);
        this.paged?.writer.noteSegment(this.meta.tree, seq, ops.slice(0, count));
        this.failures = 0;
        this.lastError = undefined;
        this.segmentsSinceCheckpoint++;
        if (this.meta.pendingRemote.length === 0 && this.segmentsSinceCheckpoint >= CHECKPOINT_EVERY) {
          await this.checkpointNow();
        }
        // Ops committed while this segment was on its way wait for the next tick unless someone
        // waits for them or they fill a segment: while uploads commit file after file, pushing
        // at once made a segment per few files (227 segments, each a PUT, a journal sync and a
        // lease check, for a tree of 1,300 files).
        if (!this.urgent && this.meta.pendingRemote.length > 0 && this.publishable() < MAX_OPS_PER_SEGMENT) {
          this.deferred = true;
          this.schedule();
          break;
        }
      } catch (err) {
        if (err instanceof SegmentConflictError || err instanceof LeaseLostError) {
          this.fenced(err.message);
          break;
        }
        this.failures++;
        const msg = `metadata upload failed: ${(err as Error).message}`;
        if (!isNoAnswer(err)) this.lastError = msg;
        if (this.failures === 1 || !isNoAnswer(err)) this.log(msg);
        this.progress.notify();
        if (!this.stopped) this.schedule(backoffMs(this.failures - 1, 500, 30_000));
        return;
      } finally {
        this.progress.notify();
      }
    }
    if (!this.stopped) await this.meta.flush();
  }

  /** Forgets the backoff after failed pushes and pushes soon (the store answers again). */
  retryNow(): void {
    if (this.failures === 0 || this.stopped || this.conflict) return;
    this.failures = 0;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.schedule(0);
  }

  /** Stops pushing for good: another machine writes this filespace now. */
  fenced(reason: string): void {
    if (this.conflict) return;
    this.conflict = reason;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.log(reason);
    this.onConflict(reason);
    this.progress.notify();
  }

  /**
   * Writes a checkpoint of the tree if every op is pushed (the tree then equals the bucket's).
   * One at a time: a paged checkpoint builds on the one before it.
   */
  checkpointNow(): Promise<void> {
    const run = this.checkpointing.then(() => this.checkpointOnce());
    this.checkpointing = run.catch(() => undefined);
    return run;
  }

  private checkpointing: Promise<void> = Promise.resolve();

  private async checkpointOnce(): Promise<void> {
    if (this.meta.pendingRemote.length > 0 || this.conflict) return;
    // Directories not loaded yet (a fresh machine, pageLoader.ts) are in the checkpoint read at
    // link: the next one waits until they are all here, and that one stays in the bucket.
    if (this.meta.unloadedDirs > 0) return;
    // A paged checkpoint is the writer's (it raises the header's format and its pages build on
    // its last one); a follower's tree is the writer's, which checkpoints it.
    if (this.paged && !this.writer()) return;
    const seq = this.meta.remoteSeq;
    if (this.paged) {
      if (!(await this.writePaged(seq, this.paged))) return;
    } else await this.remote.writeCheckpoint(seq, this.meta.tree.snapshot());
    this.segmentsSinceCheckpoint = 0;
    // Older snapshots are dead weight (each is the whole tree); failing to delete them costs
    // only storage, and the next checkpoint tries again.
    await this.remote
      .pruneCheckpoints()
      .catch((err) => this.log(`could not delete old metadata checkpoints: ${(err as Error).message}`));
  }

  /**
   * The manifest of a paged checkpoint of the tree as the bucket has it now (segment
   * `remoteSeq`, every op pushed), written now unless the bucket has one of that segment
   * already: what a snapshot keeps (meta/snapshots.ts). 'moved' when ops wait to be pushed or
   * the tree moved on meanwhile (push and ask again); undefined when this machine writes no
   * paged checkpoints (not the writer, or not paged) or the checkpoint of that segment is a
   * whole tree or does not open.
   */
  async manifestNow(): Promise<Manifest | 'moved' | undefined> {
    if (!this.paged || !this.writer() || this.conflict) return undefined;
    if (this.meta.pendingRemote.length > 0) return 'moved';
    const seq = this.meta.remoteSeq;
    const key = seqKey(CKPT_PREFIX, seq);
    const read = () =>
      this.remote.readCheckpoint(key).catch((err: unknown) => {
        if (err instanceof DamagedMetadataError) return null;
        throw err;
      });
    let ck = await read();
    if (ck === undefined) {
      await this.checkpointNow();
      if (this.meta.pendingRemote.length > 0 || this.meta.remoteSeq !== seq) return 'moved';
      ck = await read();
      if (ck === undefined) return 'moved';
    }
    return ck && isManifest(ck) && ck.seq === seq ? ck : undefined;
  }

  /** Writes a paged checkpoint of segment `seq`; false when the tree moved on meanwhile (none written). */
  private async writePaged(seq: number, paged: NonNullable<Replicator['paged']>): Promise<boolean> {
    await paged.before();
    const { writer } = paged;
    const tree = this.meta.tree;
    try {
      // Not knowing what changed since its last checkpoint (after a restart, a reload or a
      // takeover), the writer reads the newest manifest and the segments pushed since it, and
      // recomputes the pages those can have changed; when they cannot be read (too many, or
      // compacted away), it compares every page with the manifest and writes only those that
      // differ.
      if (!writer.tracks(tree, seq)) await this.resumeWriter(writer, tree, seq);
      // Changed while reading: the next checkpoint compares with the manifest just read.
      if (this.meta.pendingRemote.length > 0 || this.meta.tree !== tree || this.meta.remoteSeq !== seq) return false;
      const plan = writer.plan(tree, seq, paged.identity);
      // Already there (an earlier run's): the same tree, but other pages than this plan's.
      if (await this.remote.writePagedCheckpoint(plan)) writer.planned();
      else writer.forget();
      return true;
    } catch (err) {
      writer.forget();
      throw err;
    }
  }

  /** See writePaged: a writer that does not track the tree takes up from the bucket. */
  private async resumeWriter(writer: PageWriter, tree: Tree, seq: number): Promise<void> {
    const manifest = await this.remote.newestManifest();
    if (manifest && manifest.seq <= seq && seq - manifest.seq <= RESUME_SEGMENTS_MAX) {
      const segments = await this.remote.readSegments(manifest.seq + 1, seq);
      if (segments && writer.resume(tree, manifest, await this.remote.linkInodes(manifest), segments)) return;
    }
    if (!writer.hasBaseline) writer.adopt(manifest);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.running) {
      await Promise.race([this.running.catch(() => undefined), new Promise((r) => setTimeout(r, 2000).unref())]);
    }
  }
}

/** Folders a segment's `homes` names per inode at most (a file with more names has its record in a link page). */
const HOMES_PER_INODE = 4;

/**
 * The `homes` of a segment of `ops` (remote.ts `Homes`): for each inode its ops name by number
 * only, and that no op of the segment makes, the folders that name it now (the tree here is at
 * the end of these ops or later). A reader that has not loaded every folder loads these to
 * find the inode's record; where they do not hold it (it moved since), it loads every folder.
 * One read of the database for the whole segment (Tree.reading): outside one, each inode's
 * query is a transaction of its own, 16 us against 7 (1,000 files of a 20,000-file tree); that
 * way it took 2.4% of the engine's thread while 20,000 small files uploaded.
 */
export function homesOf(tree: Tree, ops: readonly MetaOp[]): Homes | undefined {
  const made = new Set<number>();
  const out: Record<string, number[]> = {};
  tree.reading(() => {
    for (const op of ops) {
      if (op.t === 'mk') made.add(op.ino);
      else if ((op.t === 'attr' || op.t === 'chunk' || op.t === 'xattr' || op.t === 'ln') && !made.has(op.ino)) {
        if (out[op.ino] !== undefined) continue;
        const dirs = tree.dirsOf(op.ino);
        out[op.ino] = dirs.length <= HOMES_PER_INODE ? dirs : dirs.slice(0, HOMES_PER_INODE);
      }
    }
  });
  for (const k of Object.keys(out)) if (out[k]!.length === 0) delete out[k];
  return Object.keys(out).length > 0 ? out : undefined;
}
