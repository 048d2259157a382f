/**
 * Log compaction: the writer deletes the metadata segments (and checkpoints) that a kept
 * checkpoint covers, so `meta/` in the bucket stays bounded however long the filespace lives.
 *
 * Each round (`tick`, every compaction interval, in the writer only):
 *  1. If segments were pushed since the last checkpoint and the interval passed, a checkpoint
 *     is written (the replicator's), so compaction does not wait for `CHECKPOINT_EVERY`.
 *  2. With the previous mark's segments deleted, the mark is raised to the older of the two
 *     kept checkpoints (remote.ts `raiseCompaction`, conditional, never lowered): from then on
 *     readers below it reload from the newest checkpoint, and that older checkpoint still
 *     rebuilds the tree if the newest one is damaged. The local metadata is flushed first, so
 *     this machine never restarts at a position below a mark it wrote itself.
 *  3. Only once the grace period has passed since that mark was written (on this machine's
 *     monotonic clock; a mark found at start counts from then) are the segments at or below it
 *     deleted (and any checkpoint older than the mark). The mark is not raised again until they
 *     are, so a steady stream of changes cannot postpone the deletions for ever.
 *
 * Why the grace is at least twice the lease TTL (`graceMs`): a writer that lost the lease may
 * still have a segment PUT in flight (suspended, or held in the network). It counts a segment
 * whose answer came while its lease was valid without asking again (replicator.ts), so such a
 * PUT was applied before its lease expired; a successor took the lease after that, fenced and
 * checkpointed after that, and deletes a slot only a grace period after raising the mark over
 * it. A PUT applied after the deletion (into the empty slot) can therefore only have been
 * answered after the old writer's validity window, and such a segment counts only if a lease
 * renewal then succeeds, which it cannot once another machine took the lease. What it left in
 * the slot lies at or below the mark, where no reader looks, and the next round deletes it.
 *
 * Pages of paged checkpoints (meta/page/, pages.ts) are shared by the manifests that name
 * them, so they go by reference, not by sequence number: each round lists the kept manifests,
 * the snapshot trees and the pages, and deletes a page once it has been named by none of them
 * for the grace period (on this machine's monotonic clock, from the round that first saw it
 * so), since a reader that listed an older manifest may still be reading its pages. A page of a sequence
 * number above the newest manifest's is a checkpoint being written (pages go before their
 * manifest) and is left alone; while any checkpoint does not open, no page is deleted.
 *
 * A snapshot tree (meta/snaptree/, meta/snapshots.ts) is the manifest of a paged checkpoint
 * (or, written before format 6, a whole tree): the pages it names count as named for as long
 * as the tree is in the bucket, and while one does not open no page is deleted. Neither
 * snapshots nor GC's marks (meta/gc-marks) name a segment or a checkpoint, so compaction
 * deletes nothing else either needs. Followers and mounts that find their position below the
 * mark reload from the newest checkpoint (role.ts).
 *
 * Owns: the mark as this writer last read or wrote it, when it was written, and what of it
 * was deleted; since when each unnamed page has been seen unnamed. Reached by the engine's timer; failures are logged and retried next round.
 */

import { CompactionView, CKPT_PREFIX, DamagedMetadataError, RemoteMeta, SegmentWriter, seqOf } from './remote';
import { PAGE_PREFIX, isManifest, pageSeqOf } from './pages';
import { ObjectStore } from '../store/types';

export interface CompactorDeps {
  readonly store: ObjectStore;
  readonly remote: RemoteMeta;
  /** Who writes; undefined while this machine may not write (no compaction then). */
  readonly writer: () => SegmentWriter | undefined;
  /** Resolves when this machine may commit now (the lease is valid); throws if it never may again. */
  readonly beforeWrite: () => Promise<void>;
  /** Resolves after a write the lease may not have covered, once a renewal shows it still holds the lease. */
  readonly confirm: () => Promise<void>;
  /** Writes a checkpoint if segments were pushed since the last one and every op is pushed. */
  readonly checkpointIfBehind: () => Promise<void>;
  /** Makes the local position durable before a mark is raised over it. */
  readonly flushLocal: () => Promise<void>;
  /**
   * The pages snapshot trees name (meta/snapshots.ts), kept like those of kept manifests;
   * undefined when one cannot be read (then no page is deleted).
   */
  readonly snapshotPages?: () => Promise<ReadonlySet<string> | undefined>;
  /** Before the first mark is written: the header must say the log may be compacted. */
  readonly beforeFirstMark: () => Promise<void>;
  readonly graceMs: () => number;
  readonly log: (msg: string) => void;
  readonly monotonic?: () => number;
}

export interface CompactionRound {
  /** The mark raised this round (undefined: not raised). */
  readonly raisedTo?: number;
  /** Segments and checkpoints deleted this round. */
  readonly deletedSegments: number;
  readonly deletedCheckpoints: number;
  /** Pages no kept manifest names, deleted this round (absent: none). */
  readonly deletedPages?: number;
}

export class Compactor {
  /** The mark as last read or written here (undefined: not read yet). */
  private seen: CompactionView | undefined;
  /** When the mark in `seen` was written or first seen (monotonic ms). */
  private markedAt = 0;
  /** The mark up to which this machine deleted (or found nothing left to delete). */
  private deletedUpTo = 0;
  private running: Promise<CompactionRound> | undefined;
  private readonly mono: () => number;
  /** Pages named by no kept manifest, and since when this machine has seen them so. */
  private readonly unnamedSince = new Map<string, number>();

  constructor(private readonly deps: CompactorDeps) {
    this.mono = deps.monotonic ?? (() => performance.now());
  }

  /** One round (see the module header); concurrent calls share it. */
  tick(): Promise<CompactionRound> {
    this.running ??= this.roundWithPages().finally(() => (this.running = undefined));
    return this.running;
  }

  private async roundWithPages(): Promise<CompactionRound> {
    const round = await this.round();
    if (!this.deps.writer()) return round;
    const deletedPages = await this.collectPages();
    return deletedPages > 0 ? { ...round, deletedPages } : round;
  }

  /** Deletes the pages named by no kept manifest for the grace period (module header). */
  private async collectPages(): Promise<number> {
    const { deps } = this;
    const pages = await deps.store.list(PAGE_PREFIX);
    if (pages.length === 0) return 0;
    const ckpts = await deps.store.list(CKPT_PREFIX);
    const newest = ckpts.length > 0 ? seqOf(ckpts[ckpts.length - 1]!) : undefined;
    if (newest === undefined) return 0;
    const named = new Set<string>();
    for (const key of ckpts) {
      let ck;
      try {
        ck = await deps.remote.readCheckpoint(key);
      } catch (err) {
        if (err instanceof DamagedMetadataError) return 0; // it may name pages: delete none
        throw err;
      }
      if (!ck) return 0; // pruned meanwhile: the next round looks again
      if (isManifest(ck)) for (const p of ck.pages) named.add(p.key);
    }
    if (deps.snapshotPages) {
      const kept = await deps.snapshotPages();
      if (!kept) return 0; // a snapshot tree that does not open may name any page: delete none
      for (const key of kept) named.add(key);
    }
    const now = this.mono();
    const due: string[] = [];
    const unnamed = new Set<string>();
    for (const key of pages) {
      if (named.has(key) || pageSeqOf(key) > newest) continue;
      unnamed.add(key);
      const since = this.unnamedSince.get(key) ?? now;
      this.unnamedSince.set(key, since);
      if (now - since >= deps.graceMs()) due.push(key);
    }
    for (const key of this.unnamedSince.keys()) if (!unnamed.has(key)) this.unnamedSince.delete(key);
    if (due.length === 0) return 0;
    await deps.beforeWrite();
    for (const key of due) {
      await deps.store.delete(key);
      this.unnamedSince.delete(key);
    }
    deps.log(`deleted ${due.length} metadata page(s) that no kept checkpoint names`);
    return due.length;
  }

  private async round(): Promise<CompactionRound> {
    const { deps } = this;
    const writer = deps.writer();
    if (!writer) return { deletedSegments: 0, deletedCheckpoints: 0 };
    await deps.checkpointIfBehind();
    if (!this.seen) {
      this.seen = await deps.remote.readCompaction();
      this.markedAt = this.mono();
    }
    const mark = this.seen.mark.upTo;
    if (mark > this.deletedUpTo) {
      if (this.mono() - this.markedAt < deps.graceMs()) return { deletedSegments: 0, deletedCheckpoints: 0 };
      await deps.beforeWrite();
      const deletedSegments = await deps.remote.deleteSegmentsThrough(mark);
      const deletedCheckpoints = await this.deleteCheckpointsBelow(mark);
      this.deletedUpTo = mark;
      if (deletedSegments + deletedCheckpoints > 0)
        deps.log(
          `compacted the metadata log: deleted ${deletedSegments} segment(s) and ${deletedCheckpoints} checkpoint(s) up to ${mark}`,
        );
      return { deletedSegments, deletedCheckpoints };
    }
    const ckpts = await deps.store.list(CKPT_PREFIX);
    const older = ckpts.length >= 2 ? seqOf(ckpts[ckpts.length - 2]!) : 0;
    if (older <= mark) return { deletedSegments: 0, deletedCheckpoints: 0 };
    await deps.flushLocal();
    if (this.seen.etag === undefined) await deps.beforeFirstMark();
    await deps.beforeWrite();
    const raised = await deps.remote.raiseCompaction(older, writer, this.seen);
    this.seen = raised;
    this.markedAt = this.mono();
    // A raise answered after the lease's validity window counts only if the lease is still ours.
    await deps.confirm();
    return { raisedTo: raised.mark.upTo, deletedSegments: 0, deletedCheckpoints: 0 };
  }

  /** Deletes the checkpoints older than `mark`, keeping at least one at or above it. */
  private async deleteCheckpointsBelow(mark: number): Promise<number> {
    const ckpts = await this.deps.store.list(CKPT_PREFIX);
    if (!ckpts.some((k) => seqOf(k) >= mark)) return 0;
    const old = ckpts.filter((k) => seqOf(k) < mark);
    for (const key of old) await this.deps.store.delete(key);
    return old.length;
  }
}
