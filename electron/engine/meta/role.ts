/**
 * This machine's role in a filespace (DESIGN invariant 4): the writer, a follower, or fenced (a
 * writer that stopped writing for good).
 *
 * - Writer: holds the write lease (lease.ts), renews it, and lets the replicator push metadata
 *   only while it is valid (`beforePush`); while it cannot renew (offline) it keeps taking
 *   writes into the cache, commits nothing, and commits them once a renewal gets through. A
 *   writer that could not take the lease at mount (offline) writes to the cache and takes it
 *   once the bucket answers. After taking the lease from another machine it writes a fence
 *   segment right after the end of the log, so the previous holder can never commit again, and
 *   it has a header written before headers were sealed sealed (`sealHeader`, once this
 *   machine's metadata has agreed with the header's chunk size).
 * - Follower: mounts read-only, polls the metadata log and applies the writer's segments live
 *   (`catchUp`); open files keep reading the chunk list they opened (the VFS), and old chunks
 *   outlive the GC grace period. Every catch-up (at mount too) reads the compaction mark first
 *   (compaction.ts): a copy below it is reloaded from the newest checkpoint (`compactedPast`),
 *   never replayed across the gap, and never with unsent changes under a live mount.
 * - A segment this machine wrote counts only once `confirmPushed` says the lease covered it.
 * - Fenced: the lease was lost (another machine took it), or another machine's segments
 *   overtook local changes on a live mount. The replicator records it (`conflict`, set through
 *   `fenced()`); the mount turns read-only, and the changes not yet in the bucket stay in the
 *   cache and are set aside at the next mount. Local changes that another machine's segments
 *   overtook at mount are set aside there and then (`setAside`), never merged.
 *
 * - Who follows: a follower announces itself in the bucket and renews that while it follows;
 *   the writer reads the announcements at each lease renewal (followers.ts), for its status.
 *
 * Owns: the write lease and its renewal and retry timer, whether it was taken, and the
 * follower's polling (its timer, the poll in flight, when it last caught up, the lease holder
 * it last saw, and why it does not follow). It reads the log and writes the fence segment; the
 * pushing of this machine's own segments, and the fenced state, are the replicator's
 * (replicator.ts). Reached by the engine, which passes in what lies above this layer: whether
 * dirty data waits, setting changes aside, sealing the header.
 */

import { UserError } from '../errors';
import { MonitoredStore } from '../store/monitored';
import { StoreError } from '../store/types';
import { settledWithin } from '../util/concurrency';
import { ANNOUNCE_EVERY_MS, FollowerView, announceFollower, readFollowers, withdrawFollower } from './followers';
import { Lease, LeaseHeldError, LeaseLostError, LeaseRecord, Machine, NoConditionalWritesError, describeHolder } from './lease';
import { MetaStore } from './metastore';
import { RemoteMeta, SegmentConflictError, SegmentWriter, isOwnPrefix } from './remote';
import { Replicator } from './replicator';
import { UnknownOpError } from './tree';

export type RoleMode = 'write' | 'read';

/**
 * How long a catch-up pass trusts the compaction mark it read: less than the shortest grace
 * (twice the shortest lease TTL, 1 s), so no slot under a newer mark is emptied in between.
 */
const MARK_FRESH_MS = 1000;

export interface LeaseStatus {
  role: 'writer' | 'follower' | 'none';
  holder: string | null;
  holderIsThisMachine: boolean;
  lastRenewedAt: number | null;
  ttlMs: number;
  /** Followers: how far behind the writer's log this mount may be, in ms. */
  followerLagMs: number | null;
  /** Writer: when renewals began to fail (null while they succeed); writes are then kept locally. */
  renewFailingSince: number | null;
  /** Writer: until when it may commit without another renewal (past: it commits nothing). */
  validUntil: number | null;
  /** Why this mount stopped writing for good (the lease was lost, or another machine wrote). */
  lost: string | null;
  conditionalWrites: boolean;
  /** Writer: the followers that announced themselves lately (followers.ts), newest first; empty on a follower. */
  followers: FollowerView[];
  /** Writer: followers beyond those listed. */
  followersMore: number;
}

export interface RoleDeps {
  /** 'write' takes the write lease; 'read' follows the writer read-only. */
  readonly mode: RoleMode;
  /** Take the write lease even while another machine's is live (that machine is fenced off). */
  readonly takeover: boolean;
  /** False when the store was found to ignore conditional writes. */
  readonly conditionalWrites: boolean;
  readonly store: MonitoredStore;
  readonly metaKey: Buffer;
  readonly machine: Machine;
  readonly meta: MetaStore;
  readonly remote: RemoteMeta;
  readonly replicator: Replicator;
  readonly settings: () => { readonly leaseTtlMs: number; readonly followIntervalMs: number };
  /** Whether data written here waits for upload. */
  readonly hasDirtyData: () => boolean;
  /**
   * Keeps this machine's unsent changes aside and drops its dirty data (only before the mount
   * is served); the local metadata is then reset to the bucket's here.
   */
  readonly setAside: (reason: string) => Promise<void>;
  /** Seals a header written before headers were sealed (after the lease is taken; a failure only delays it). */
  readonly sealHeader: () => Promise<void>;
  readonly log: (msg: string) => void;
}

export class MachineRole {
  readonly mode: RoleMode;
  private readonly lease: Lease;
  /** Writer: the lease was taken (possibly late, after being offline at mount). */
  private leaseTaken = false;
  /** Writer: the next renewal or acquisition attempt. */
  private leaseTimer: NodeJS.Timeout | undefined;
  private followTimer: NodeJS.Timeout | undefined;
  private following: Promise<void> | undefined;
  /** Follower: when the log was last read to its end. */
  private caughtUpAt: number | undefined;
  private holderSeen: LeaseRecord | undefined;
  /** Follower with unsent local changes: it does not follow until they are uploaded or set aside. */
  private blocked: string | undefined;
  /** The bucket holds changes a newer version of Filespace wrote: this mount stopped following. */
  private tooNew: string | undefined;
  private stopped = false;
  /** Follower: when it mounted, and when it last announced itself (0: not yet). */
  private readonly since = Date.now();
  private announcedAt = 0;
  private announceFailing = false;
  /** Writer: the followers last read from the bucket. */
  private followersSeen: { followers: FollowerView[]; more: number } = { followers: [], more: 0 };
  private readingFollowers: Promise<void> | undefined;
  /** Writer: the TTL of the lease it took over (0: none). */
  private previousTtlMs = 0;

  constructor(private readonly deps: RoleDeps) {
    this.mode = deps.mode;
    this.lease = new Lease({
      store: deps.store,
      metaKey: deps.metaKey,
      self: deps.machine,
      ttlMs: () => deps.settings().leaseTtlMs,
      conditional: deps.conditionalWrites,
    });
  }

  private get replicator(): Replicator {
    return this.deps.replicator;
  }

  /** Why a follower does not follow the writer now (it has unsent changes of its own). */
  get followBlocked(): string | undefined {
    return this.blocked;
  }

  /** Whether this machine took the write lease (it may since have lost it: see `fenced`). */
  get holdsLease(): boolean {
    return this.mode === 'write' && this.leaseTaken;
  }

  /** Why this mount stopped writing for good; undefined while it writes (or follows). */
  get fenced(): string | undefined {
    return this.replicator.conflict;
  }

  /** Whether this machine may commit right now (the lease is valid and it was not fenced). */
  canCommit(): boolean {
    return this.lease.valid() && !this.replicator.conflict;
  }

  /** Resolves once the lease is valid (renewing if needed); throws LeaseLostError or a store error. */
  ensureValid(): Promise<void> {
    return this.lease.ensureValid();
  }

  /** Who writes this machine's segments; undefined while it may not write (the replicator's `writer`). */
  segmentWriter(): SegmentWriter | undefined {
    if (this.mode !== 'write' || !this.leaseTaken || !this.lease.current) return undefined;
    return { id: this.deps.machine.id, epoch: this.lease.current.epoch };
  }

  /**
   * Resolves when a write to the metadata log that just finished may count (the replicator's
   * `afterPush`): at once while the lease is still valid (the write was applied before it could
   * expire), otherwise only after a renewal shows nobody took the lease meanwhile. Throws
   * LeaseLostError when somebody did, or a store error when that cannot be told now.
   */
  async confirmPushed(): Promise<void> {
    if (this.lease.valid()) return;
    await this.lease.renew();
    if (!this.lease.valid()) throw new StoreError('Timeout', 'the lease could not be renewed in time');
  }

  /** The longest lease TTL of this machine and of the holder it took the lease from (compaction's grace floor). */
  get longestTtlMs(): number {
    return Math.max(this.deps.settings().leaseTtlMs, this.previousTtlMs);
  }

  /** Resolves when this machine may push metadata now (the replicator's `beforePush`). */
  async beforePush(): Promise<void> {
    if (!this.leaseTaken) throw new StoreError('Unreachable', 'waiting for the write lease');
    await this.lease.ensureValid();
  }

  /** Takes the lease (writer) or catches up with the writer (follower); before the mount is served. */
  async start(): Promise<void> {
    if (this.mode === 'write') {
      try {
        await this.takeLease();
      } catch (err) {
        if (err instanceof LeaseHeldError) throw new UserError(err.message, 'LEASE_HELD');
        if (err instanceof NoConditionalWritesError) throw new UserError(err.message, 'NO_CONDITIONAL_WRITES');
        if (!(err instanceof StoreError) || !err.retryable) throw err;
        // Offline: work from the cache; the lease is taken (or found lost) once the bucket answers.
        this.deps.log(`could not take the write lease now (${err.message}); writing to the cache and retrying`);
        this.leaseTimer = setTimeout(() => void this.retryLease(), 2000);
        this.leaseTimer.unref();
      }
      if (this.leaseTaken) await this.sealHeader();
    } else {
      this.holderSeen = await this.lease.read().then(
        (v) => v?.record,
        () => undefined,
      );
      await this.catchUp(true);
      await this.announce();
      this.scheduleFollow();
    }
  }

  /** Stops renewing and following; waits (at most `followWaitMs`) for a poll in flight. */
  async stop(followWaitMs: number): Promise<void> {
    this.stopped = true;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    if (this.followTimer) clearTimeout(this.followTimer);
    if (this.following) await settledWithin(this.following, followWaitMs);
    if (this.mode === 'read' && this.announcedAt > 0) {
      await settledWithin(
        withdrawFollower(this.deps.store, this.deps.machine.id).catch(() => undefined),
        followWaitMs,
      );
    }
  }

  /** Lets the next writer in at once (waits at most `waitMs`); a release that fails just lets the lease expire. */
  async release(waitMs: number): Promise<void> {
    if (this.leaseTaken && !this.replicator.conflict) await settledWithin(this.lease.release(), waitMs);
  }

  private async sealHeader(): Promise<void> {
    if (this.replicator.conflict) return;
    await this.deps.sealHeader();
  }

  /** Takes the lease, catches up with the bucket, fences off the previous holder. */
  private async takeLease(): Promise<void> {
    const { previous } = await this.lease.acquire({ takeover: this.deps.takeover });
    this.leaseTaken = true;
    this.previousTtlMs = Math.max(this.previousTtlMs, previous?.ttlMs ?? 0);
    if (previous && previous.holder.id !== this.deps.machine.id) {
      this.deps.log(`took the write lease from ${describeHolder(previous)}${previous.released ? ' (released)' : ''}`);
    }
    this.scheduleRenewal();
    for (let attempt = 0; ; attempt++) {
      await this.catchUp(true);
      if (previous?.holder.id === this.deps.machine.id || this.replicator.conflict) return;
      try {
        await this.writeFence();
        return;
      } catch (err) {
        if (!(err instanceof SegmentConflictError) || attempt >= 5) throw err;
        // The previous holder wrote one more segment meanwhile: read it and fence after it.
      }
    }
  }

  /**
   * Writes an empty segment of ours right after the end of the log, so a previous holder that
   * is still running collides with it on its next push. Throws SegmentConflictError when
   * another machine wrote that segment first.
   */
  private async writeFence(): Promise<void> {
    const { meta } = this.deps;
    const seq = meta.remoteSeq + 1;
    await meta.sync();
    await this.deps.remote.pushSegment(seq, [], this.segmentWriter()!);
    await this.confirmPushed();
    meta.markPushed(seq, 0);
    await meta.flush();
  }

  private async retryLease(): Promise<void> {
    this.leaseTimer = undefined;
    if (this.stopped) return;
    try {
      const { previous } = await this.lease.acquire({ takeover: this.deps.takeover });
      this.leaseTaken = true;
      this.previousTtlMs = Math.max(this.previousTtlMs, previous?.ttlMs ?? 0);
      this.scheduleRenewal();
      // Writes may have landed here while another machine was writing: catching up finds out
      // (read-only until the next mount sets them aside), and the fence settles any race.
      await this.catchUp(false);
      if (!this.replicator.conflict && previous && previous.holder.id !== this.deps.machine.id) {
        try {
          await this.writeFence();
        } catch (err) {
          if (err instanceof SegmentConflictError) {
            this.replicator.fenced(
              'another machine wrote to this filespace while this one was offline; changes made here since are kept in the cache and will be set aside at the next mount',
            );
          } else {
            throw err;
          }
        }
      }
      await this.sealHeader();
      this.replicator.schedule(0);
    } catch (err) {
      if (err instanceof LeaseHeldError || err instanceof NoConditionalWritesError) {
        this.replicator.fenced(err.message);
        return;
      }
      this.deps.log(`could not take the write lease: ${(err as Error).message}`);
      this.leaseTimer = setTimeout(() => void this.retryLease(), 5000);
      this.leaseTimer.unref();
    }
  }

  /** The bucket answers again: a lease that could not be renewed or taken is tried now, not at its timer. */
  retryNow(): void {
    if (this.stopped || this.mode !== 'write' || this.replicator.conflict || !this.leaseTimer) return;
    if (this.leaseTaken && this.lease.valid()) return;
    clearTimeout(this.leaseTimer);
    this.leaseTimer = undefined;
    void (this.leaseTaken ? this.renewLease() : this.retryLease());
  }

  private scheduleRenewal(): void {
    if (this.stopped) return;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = setTimeout(() => void this.renewLease(), Math.max(200, Math.floor(this.deps.settings().leaseTtlMs / 3)));
    this.leaseTimer.unref();
  }

  /**
   * Renews the lease. Renewals that get no answer keep the lease held but not valid: writes
   * keep landing in the cache and nothing is committed; the first renewal that gets through
   * takes the lease back (nobody wrote it meanwhile) and the changes made since are pushed.
   */
  private async renewLease(): Promise<void> {
    this.leaseTimer = undefined;
    if (this.stopped || this.replicator.conflict) return;
    const failingSince = this.lease.renewFailingSince;
    try {
      await this.lease.renew();
      this.deps.store.note(undefined);
      void this.refreshFollowers();
      if (failingSince !== undefined) {
        this.deps.log(
          `renewed the write lease again after ${Math.round((Date.now() - failingSince) / 1000)}s of failed renewals; nobody took it meanwhile, committing the changes made here since`,
        );
        void this.replicator.pushNow();
      }
    } catch (err) {
      if (err instanceof LeaseLostError) {
        this.replicator.fenced(
          `${err.message}; this machine stopped writing, and its changes not yet in the bucket are kept in the cache (set aside at the next mount)`,
        );
        return;
      }
      this.deps.store.note(err);
      this.deps.log(`lease renewal failed: ${(err as Error).message}`);
    }
    this.scheduleRenewal();
  }

  private scheduleFollow(): void {
    if (this.stopped || this.tooNew) return;
    this.followTimer = setTimeout(() => {
      this.followTimer = undefined;
      this.following = this.follow().finally(() => {
        this.following = undefined;
        this.scheduleFollow();
      });
    }, this.deps.settings().followIntervalMs);
    this.followTimer.unref();
  }

  /** Follower: applies what the writer committed since the last look. */
  private async follow(): Promise<void> {
    try {
      this.holderSeen = (await this.lease.read())?.record;
      await this.catchUp(false);
      if (Date.now() - this.announcedAt >= ANNOUNCE_EVERY_MS) await this.announce();
    } catch (err) {
      this.deps.store.note(err);
      this.deps.log(`could not follow the writer: ${(err as Error).message}`);
    }
  }

  /**
   * Applies what other machines committed to the bucket since this machine last wrote or
   * read it. Local changes that those segments overtook are set aside (at mount,
   * `atMount`), or, on a live mount, make it read-only until the next mount sets them aside:
   * the tree under a live mount is never swapped.
   */
  private async catchUp(atMount: boolean): Promise<void> {
    const { meta, remote, machine } = this.deps;
    let applied = 0;
    try {
      // Below the compaction mark the log has gaps, and a slot there may hold a segment a
      // writer wrote after losing the lease: never read one; reload from the checkpoint.
      if (await this.compactedPast(atMount)) return;
      let markReadAt = performance.now();
      for (;;) {
        // A long pass reads the mark again well within the shortest grace (compaction.ts).
        if (performance.now() - markReadAt > MARK_FRESH_MS) {
          if (await this.compactedPast(atMount)) return;
          markReadAt = performance.now();
        }
        const seq = meta.remoteSeq + 1;
        const seg = await remote.readSegment(seq);
        if (!seg) break;
        if (isOwnPrefix(seg, meta.pendingRemote, machine.id)) {
          // This machine wrote that segment just before it stopped, and had not yet noted so.
          meta.markPushed(seq, seg.ops.length);
          continue;
        }
        if (meta.pendingRemote.length > 0 || this.deps.hasDirtyData()) {
          const why = 'another machine changed this filespace while this one had changes not yet uploaded';
          if (atMount) {
            await this.setAside(why);
            continue;
          }
          if (this.mode === 'write') {
            this.replicator.fenced(`${why}; they are kept in the cache and will be set aside at the next mount`);
          } else {
            this.blocked = `${why}; remount to set them aside and follow the writer`;
          }
          return;
        }
        // A directory the ops name is loaded first (a fresh machine, pageLoader.ts).
        if (meta.unloadedDirs > 0) await meta.pages(remote).ensureForOps(seg.ops, seg.homes);
        meta.applyRemote(seq, seg.ops);
        applied++;
      }
      this.caughtUpAt = Date.now();
      if (this.mode === 'read' && (meta.pendingRemote.length > 0 || this.deps.hasDirtyData())) {
        this.blocked =
          'this machine has changes not yet uploaded; mount read-write to upload them (this mount shows them and does not follow the writer meanwhile)';
      } else if (this.mode === 'read') {
        this.blocked = this.tooNew;
      }
    } catch (err) {
      if (err instanceof UnknownOpError && !atMount) {
        this.tooNew = `stopped following the filespace: ${err.message}`;
        this.blocked = this.tooNew;
        this.deps.log(this.tooNew);
        return;
      }
      if (atMount && !(err instanceof StoreError)) throw err;
      // Offline: work from the local copy; caught up when the bucket answers.
      this.deps.log(`could not check the bucket for newer metadata: ${(err as Error).message}`);
    }
    if (applied > 0) {
      this.deps.log(`applied ${applied} metadata segment(s) written by another machine`);
      await meta.flush();
    }
  }

  /**
   * Reads the compaction mark; when this machine's copy is below it, reloads the tree from the
   * newest checkpoint, after setting unsent changes aside (at mount). A live mount with unsent
   * changes is not swapped: a writer is fenced, a follower stops following (true: stop here).
   */
  private async compactedPast(atMount: boolean): Promise<boolean> {
    const { meta, remote } = this.deps;
    const { mark } = await remote.readCompaction();
    if (meta.remoteSeq >= mark.upTo) return false;
    const why = `the metadata log in the bucket was compacted past this machine's copy (segment ${meta.remoteSeq} < ${mark.upTo})`;
    if (meta.pendingRemote.length > 0 || this.deps.hasDirtyData()) {
      const overtaken = `${why} while this machine had changes not yet uploaded`;
      if (atMount) {
        await this.setAside(overtaken);
        return false;
      }
      if (this.mode === 'write') {
        this.replicator.fenced(`${overtaken}; they are kept in the cache and will be set aside at the next mount`);
      } else {
        this.blocked = `${overtaken}; remount to set them aside and follow the writer`;
      }
      return true;
    }
    const fresh = await remote.load(meta.chunkSize);
    await meta.resetTo(fresh.tree, fresh.seq);
    this.deps.log(`${why}: reloaded it from the newest checkpoint (segment ${fresh.seq})`);
    return false;
  }

  /** Sets this machine's unsent changes aside, then resets the local metadata to the bucket's. */
  private async setAside(reason: string): Promise<void> {
    await this.deps.setAside(reason);
    const fresh = await this.deps.remote.load(this.deps.meta.chunkSize);
    await this.deps.meta.resetTo(fresh.tree, fresh.seq);
  }

  /** The reason writes are refused, if they are: fenced, or following. */
  readOnlyReason(): string | undefined {
    if (this.replicator.conflict) return `read-only: ${this.replicator.conflict}`;
    if (this.mode === 'read') {
      const h = this.holderSeen;
      return `read-only: this mount follows ${h && !h.released ? `the writer ${describeHolder(h)}` : 'the filespace'}`;
    }
    return undefined;
  }

  /**
   * Why this mount stopped writing for good, for people: the write lease was lost (and to whom),
   * or another machine wrote the filespace. Undefined while it writes (or on a follower).
   */
  get notWriting(): string | undefined {
    if (this.mode !== 'write' || !this.replicator.conflict) return undefined;
    const lost = this.lease.lostError;
    if (lost?.by)
      return `this machine lost the write lease to ${describeHolder(lost.by)} at ${new Date(lost.by.acquiredAt).toISOString()}`;
    if (lost) return `this machine lost the write lease: ${lost.message}`;
    return `this machine stopped writing: ${this.replicator.conflict}`;
  }

  /** Follower: tells the writer (through the bucket) that this machine follows; never throws. */
  private async announce(): Promise<void> {
    if (this.stopped) return;
    const now = Date.now();
    try {
      await announceFollower(this.deps.store, this.deps.metaKey, {
        machine: this.deps.machine,
        since: this.since,
        heardAt: now,
        lagMs: this.caughtUpAt === undefined ? null : now - this.caughtUpAt,
      });
      this.announcedAt = now;
      this.announceFailing = false;
    } catch (err) {
      // Advisory only (keys that may not write still follow): said once per run of failures.
      if (!this.announceFailing) this.deps.log(`could not tell the writer this machine follows: ${(err as Error).message}`);
      this.announceFailing = true;
    }
  }

  /** Writer: reads who follows (at most one read at a time; a failure keeps the last answer). */
  refreshFollowers(): Promise<void> {
    if (this.mode !== 'write' || this.stopped) return Promise.resolve();
    this.readingFollowers ??= readFollowers(this.deps.store, this.deps.metaKey, Date.now(), this.deps.machine.id)
      .then((seen) => {
        this.followersSeen = seen;
      })
      .catch(() => undefined)
      .finally(() => {
        this.readingFollowers = undefined;
      });
    return this.readingFollowers;
  }

  status(): LeaseStatus {
    const { conditionalWrites } = this.deps;
    if (this.mode === 'write') {
      const cur = this.lease.current;
      const lost = this.lease.lostError?.message ?? null;
      return {
        role: this.leaseTaken && !this.replicator.conflict ? 'writer' : 'none',
        holder: cur ? describeHolder(cur) : null,
        holderIsThisMachine: this.leaseTaken && !lost,
        lastRenewedAt: this.lease.lastRenewedAt ?? null,
        ttlMs: this.deps.settings().leaseTtlMs,
        followerLagMs: null,
        renewFailingSince: this.lease.renewFailingSince ?? null,
        validUntil: this.lease.validUntil ?? null,
        lost: lost ?? this.replicator.conflict ?? null,
        conditionalWrites,
        followers: this.followersSeen.followers,
        followersMore: this.followersSeen.more,
      };
    }
    const h = this.holderSeen;
    return {
      role: 'follower',
      holder: h && !h.released ? describeHolder(h) : null,
      holderIsThisMachine: false,
      lastRenewedAt: h?.renewedAt ?? null,
      ttlMs: h?.ttlMs ?? this.deps.settings().leaseTtlMs,
      followerLagMs: this.caughtUpAt === undefined || this.blocked ? null : Date.now() - this.caughtUpAt,
      renewFailingSince: null,
      validUntil: null,
      lost: null,
      conditionalWrites,
      followers: [],
      followersMore: 0,
    };
  }
}
