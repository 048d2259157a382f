/**
 * The write-back queue: decides when each dirty chunk uploads, runs uploads with bounded
 * concurrency, and retries failures with exponential backoff and jitter.
 *
 * A chunk is due when it has not been written for `uploadDelayMs` (files created and deleted
 * within the delay never reach the bucket) and either it is full, or its file is no longer
 * open for writing, or it has been dirty for `maxDirtyAgeMs` (so an append-only log keeps its
 * tail chunk local until it fills or closes, but not forever). Under cache pressure or a
 * `drain()` every dirty chunk is due at once. Due chunks go oldest first. The chunks of a file
 * deleted while still open never upload: they go when it is closed.
 *
 * The writer first: while the mount keeps receiving writes (the last one less than
 * `WRITER_QUIET_MS` ago), no chunk of a file still open for writing starts uploading, so a
 * streaming writer has the machine's cores to itself (an upload seals, names and sends its
 * chunk on the engine's thread, the one that answers FUSE) and the uploads then run at full
 * speed once it pauses or closes. Files already closed (a burst of creates: tar, a build)
 * wait while the mount keeps receiving requests of any kind (writes, and the lookups, stats and
 * listings that follow a burst: `ls -l`, a build's checks), but only until their last write is
 * `WRITER_BURST_DELAY_MS` old: a burst of a few seconds (an unpack, a checkout, a build step)
 * runs with the engine's thread to itself (an upload of a small file costs that thread more than
 * its create, and on a machine with few cores the server or the network stack takes the rest),
 * and a longer one has its files upload behind it that much later, at most `WRITER_BURST_SHARE`
 * of the concurrency at once, so the bucket has most of them by the time the burst ends instead
 * of all of them still to come, while the requests keep most of the engine's thread. That is
 * on a machine with `WRITER_BURST_CORES` cores or more, where uploads behind a burst run on cores
 * the burst leaves idle. With fewer, they would take the burst's own cores (the engine's thread,
 * the kernel's side of its requests, the network stack): measured on 2 cores, a tar x of 16,000
 * files (engineprofile tar, node_modules) took 64 to 69 s with its files uploading behind it
 * and 28 s without, and its data was in the bucket sooner without (72 to 74 s from the start,
 * against 76 to 80). So there a burst's closed files wait for its end, as long as the
 * bounds below allow, unless the burst leaves the machine idle after all: a writer that paces
 * itself (a build, a log collector, a sync tool with its own limit) leaves at least
 * `WRITER_BURST_IDLE_CORES` of the machine idle and the engine's thread free at least
 * `1 - WRITER_BURST_LOOP_BUSY` of the time (util/spareCapacity.ts, over the last quarter of a
 * second), and then its files upload `WRITER_BURST_DELAY_MS` behind it as on a bigger machine,
 * instead of piling up for `maxDirtyAgeMs` (and the memory each waiting file's record takes).
 * Uploads that start take that idle time: when they leave too little, the next ones wait
 * again, so a full-speed burst keeps the machine to itself. The thread's share is what tells
 * the two apart: a tar x through the mount, latency-bound, leaves most of a core idle too but
 * keeps the engine's thread about two thirds busy (`npm run bench`), while creates at 300 files
 * a second take under a fifth of it. Measured on 2 cores (bench:scale's paced creates), uploads
 * then keep up with a writer of up to about 500 small files a second. A change made alone (a save) still waits only `uploadDelayMs`. Uploads in flight go on. The wait is bounded: a chunk dirty for `maxDirtyAgeMs` is due whatever the
 * writers do (a writer that never pauses still gets its data uploaded), so is everything once
 * the data waiting for upload fills `WRITER_FIRST_MAX_SHARE` of the cache cap (long before
 * writers would wait for room), and pressure or a `drain()` (sync, unmount) never wait. An
 * `uploadDelayMs` of zero (data in the bucket as soon as it is written) turns the wait off.
 *
 * Backoff is per chunk, but an outage is not: when the bucket answers again, `retryNow()`
 * makes every chunk waiting on its backoff due at once (and an upload that was on its way
 * during the outage and fails afterwards retries at once too), so the backlog drains at full
 * speed instead of each chunk sitting out the longest timer it reached while offline.
 *
 * Owns: each dirty chunk's upload schedule (in flight, failed attempts, when to retry), kept
 * beside the dirty store's record rather than in it (the record is the dirty store's), and
 * forgotten with the record: a chunk written again after a drop starts afresh.
 *
 * The queue does not know how to upload: it receives an `upload` function (upload/uploader.ts),
 * so it can be tested alone and the upload path can change without touching the policy. It may
 * start `uploadsAhead()` uploads past `uploadConcurrency`: the upload function then bounds its
 * PUTs itself (the uploader lets `uploadConcurrency` run at once, and an upload waiting for its
 * turn holds no memory), and the extra ones read and seal the next chunks, or make a finished
 * PUT's reference durable, while `uploadConcurrency` PUTs are on the wire.
 */

import * as os from 'node:os';
import { DirtyChunk, DirtyStore } from '../cache/dirty';
import { Signal, backoffMs } from '../util/concurrency';
import { SpareCapacitySampler, type SpareCapacity } from '../util/spareCapacity';

/** Writes this close together are a stream that new uploads wait for (see the header). */
export const WRITER_QUIET_MS = 100;
/** The share of the cache cap that data waiting for upload may fill while uploads wait for a writer. */
export const WRITER_FIRST_MAX_SHARE = 0.5;
/** The share of `uploadConcurrency` that uploads of closed files may take while the writers stream. */
export const WRITER_BURST_SHARE = 0.5;
/** While the writers stream, a closed file's chunk waits until its last write is this old (or `uploadDelayMs`, if longer). */
export const WRITER_BURST_DELAY_MS = 5_000;
/** With fewer cores, a closed file's chunk waits for the end of a burst instead (see the header)... */
export const WRITER_BURST_CORES = 4;
/** ...unless the burst leaves this many of the machine's cores idle... */
export const WRITER_BURST_IDLE_CORES = 0.75;
/** ...and the engine's thread busy at most this share of the time. */
export const WRITER_BURST_LOOP_BUSY = 0.5;
/**
 * How many due chunks past the free slots one pass over the backlog keeps for the next pumps,
 * and for how long. As many as the uploads that may wait in packs (packer.ts PACK_AHEAD): a
 * backlog of small files is pumped after every upload and every chunk that enters a pack, and
 * with 64 kept, draining 50,000 small files passed over the backlog about 970 times (0.6 s of
 * the engine's thread); with 512, 370 to 820 times, the drain 3-6% shorter.
 */
export const DUE_AHEAD = 512;
export const DUE_AHEAD_MS = 200;

export interface WritebackPolicy {
  uploadDelayMs: number;
  maxDirtyAgeMs: number;
  uploadConcurrency: number;
}

/** One chunk's upload schedule. */
export interface UploadSchedule {
  /** An upload of it is in flight. */
  uploading: boolean;
  /** Failed attempts since the last success (or since the bucket answered again). */
  attempts: number;
  /** Not due before this time (ms; 0: no backoff). */
  retryAtMs: number;
}

export interface WritebackDeps {
  readonly dirty: DirtyStore;
  readonly chunkSize: number;
  readonly policy: () => WritebackPolicy;
  readonly isOpenForWrite: (ino: number) => boolean;
  /** Whether `ino` is a file deleted while still open (its chunks never upload). */
  readonly isUnlinked?: (ino: number) => boolean;
  readonly upload: (d: DirtyChunk) => Promise<void>;
  /** Uploads started past `uploadConcurrency`, whose PUTs `upload` holds back itself (see the header; default 0). */
  readonly uploadsAhead?: () => number;
  readonly paused: () => boolean;
  /** An upload failed; `attempts` counts the failures of this chunk in a row. */
  readonly onError: (err: unknown, d: DirtyChunk, attempts: number) => void;
  readonly onSuccess: () => void;
  /** When the mount last accepted a write (ms on `now`'s clock; 0: none yet). */
  readonly lastWriteMs?: () => number;
  /** When the mount last received a request of any kind, reads and listings too (ms; 0: none yet). */
  readonly lastRequestMs?: () => number;
  /** Dirty data, with what is held for data on its way to the dirty store, as a share of the cache cap. */
  readonly dirtyShare?: () => number;
  /** The machine's cores (default: os.availableParallelism()). */
  readonly cores?: number;
  /** The machine's and the engine thread's spare capacity lately (default: measured, util/spareCapacity.ts). */
  readonly spare?: () => SpareCapacity;
  readonly now?: () => number;
}

export class WritebackQueue {
  private inflight = 0;
  private timer: NodeJS.Timeout | undefined;
  /** A pump at the end of the writers' current burst, for uploads that waited for it. */
  private quietTimer: NodeJS.Timeout | undefined;
  /** Set by `isDue` when a chunk was due but waits for the writers (see the header). */
  private waitedForWriter = false;
  /** mountBusy's answer for the pump that is weighing its backlog (undefined outside one). */
  private pumpBusy: boolean | undefined;
  private pressure = false;
  private draining = 0;
  private stopped = true;
  /** Incremented by `retryNow()`: an upload started before it failed because of the outage. */
  private retryEpoch = 0;
  private readonly schedules = new WeakMap<DirtyChunk, UploadSchedule>();
  /** Due chunks the last pass over the backlog found past the free slots, oldest first (see `dueOldest`). */
  private dueNext: DirtyChunk[] = [];
  private dueNextFrom = 0;
  private dueNextAt = -Infinity;
  private passes = 0;
  /** Notified after each finished upload attempt. */
  readonly progress = new Signal();
  private readonly now: () => number;

  /** Whether the machine has the cores to upload behind a burst whatever it leaves idle (see the header). */
  private readonly manyCores: boolean;
  private readonly spare: () => SpareCapacity;

  constructor(private readonly deps: WritebackDeps) {
    this.now = deps.now ?? Date.now;
    this.manyCores = (deps.cores ?? os.availableParallelism()) >= WRITER_BURST_CORES;
    if (deps.spare) this.spare = deps.spare;
    else if (this.manyCores)
      this.spare = () => ({ idleCores: os.availableParallelism(), loopBusy: 0 }); // not asked (burstDelayMs)
    else {
      const sampler = new SpareCapacitySampler();
      this.spare = () => sampler.read();
    }
  }

  /** How old a closed file's last write must be for it to upload during a burst (see the header). */
  private burstDelayMs(): number {
    if (this.manyCores) return WRITER_BURST_DELAY_MS;
    const { idleCores, loopBusy } = this.spare();
    return idleCores >= WRITER_BURST_IDLE_CORES && loopBusy <= WRITER_BURST_LOOP_BUSY ? WRITER_BURST_DELAY_MS : Infinity;
  }

  start(): void {
    this.stopped = false;
    // Pumps from timers run after the loop's I/O (setImmediate): after a stall of the thread,
    // writes that arrived meanwhile are taken first, so they count as the writer's (see the header).
    this.timer = setInterval(() => setImmediate(() => this.pump()), 200);
    this.timer.unref();
    this.pump();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.quietTimer) clearTimeout(this.quietTimer);
    this.quietTimer = undefined;
  }

  get uploading(): number {
    return this.inflight;
  }

  /** The upload schedule of a dirty chunk (read-only). */
  scheduleOf(d: DirtyChunk): Readonly<UploadSchedule> {
    return this.schedule(d);
  }

  private schedule(d: DirtyChunk): UploadSchedule {
    let s = this.schedules.get(d);
    if (!s) this.schedules.set(d, (s = { uploading: false, attempts: 0, retryAtMs: 0 }));
    return s;
  }

  /** Makes every dirty chunk due until the cache is below the cap again. */
  setPressure(on: boolean): void {
    this.pressure = on;
    if (on) this.pump();
  }

  /** Dirty chunks that are still to upload. */
  get pending(): number {
    let n = 0;
    for (const d of this.deps.dirty.all()) if (!this.deps.isUnlinked?.(d.ino)) n++;
    return n;
  }

  isDue(d: DirtyChunk, now: number): boolean {
    const s = this.schedules.get(d);
    if (s && (s.uploading || s.retryAtMs > now)) return false;
    if (this.deps.isUnlinked?.(d.ino)) return false;
    if (this.pressure || this.draining > 0) return true;
    const p = this.deps.policy();
    if (now - d.lastWriteMs < p.uploadDelayMs) return false;
    if (now - d.firstDirtyMs >= p.maxDirtyAgeMs) return true;
    // An upload delay of zero asks for data in the bucket as soon as it is written: no wait.
    if (!this.deps.isOpenForWrite(d.ino)) {
      if (p.uploadDelayMs > 0 && this.mountBusy(now) && now - d.lastWriteMs < this.burstDelayMs()) {
        this.waitedForWriter = true;
        return false;
      }
      return true;
    }
    if (d.len < this.deps.chunkSize) return false;
    if (p.uploadDelayMs > 0 && this.writerStreaming(now)) {
      this.waitedForWriter = true;
      return false;
    }
    return true;
  }

  /** Whether new uploads wait for the writers now (see the header). */
  writerStreaming(now: number): boolean {
    const last = this.deps.lastWriteMs?.() ?? 0;
    if (last === 0 || now - last >= WRITER_QUIET_MS) return false;
    return (this.deps.dirtyShare?.() ?? 0) < WRITER_FIRST_MAX_SHARE;
  }

  /**
   * Whether uploads of closed files wait for the mount's users now (see the header). A pump
   * asks it for every recently written closed chunk of its backlog, at one `now`, and reading
   * the mount's request count costs a call into the addon: so within a pump it is worked out once.
   */
  mountBusy(now: number): boolean {
    if (this.pumpBusy !== undefined) return this.pumpBusy;
    const last = Math.max(this.deps.lastWriteMs?.() ?? 0, this.deps.lastRequestMs?.() ?? 0);
    if (last === 0 || now - last >= WRITER_QUIET_MS) return false;
    return (this.deps.dirtyShare?.() ?? 0) < WRITER_FIRST_MAX_SHARE;
  }

  /** Pumps again when the writers' burst is over, if a due chunk waited for it. */
  private pumpWhenQuiet(now: number): void {
    if (!this.waitedForWriter) return;
    this.waitedForWriter = false;
    if (this.quietTimer || this.stopped) return;
    const last = Math.max(this.deps.lastWriteMs?.() ?? 0, this.deps.lastRequestMs?.() ?? 0);
    this.quietTimer = setTimeout(
      () => {
        this.quietTimer = undefined;
        setImmediate(() => this.pump());
      },
      Math.max(1, last + WRITER_QUIET_MS - now),
    );
    this.quietTimer.unref();
  }

  /** Uploads in flight at most now: fewer while the writers stream (see the header). */
  private limit(now: number): number {
    const p = this.deps.policy();
    const all = p.uploadConcurrency + (this.deps.uploadsAhead?.() ?? 0);
    if (this.pressure || this.draining > 0 || p.uploadDelayMs === 0 || !this.mountBusy(now)) return all;
    if (!this.manyCores && this.burstDelayMs() !== Infinity) return all;
    return Math.max(1, Math.floor(p.uploadConcurrency * WRITER_BURST_SHARE));
  }

  pump(): void {
    if (this.stopped || this.deps.paused()) return;
    const now = this.now();
    this.pumpBusy = this.mountBusy(now);
    let oldest: DirtyChunk[];
    try {
      oldest = this.dueOldest(now);
    } finally {
      this.pumpBusy = undefined;
    }
    for (const d of oldest) this.startUpload(d);
    this.pumpWhenQuiet(now);
  }

  /**
   * The oldest due chunks, as many as there are free slots. The queue is pumped at every close
   * and every finished upload, so it must not weigh the whole backlog each time: one pass keeps
   * the next `DUE_AHEAD` oldest due chunks too (`dueNext`), and the pumps of the next
   * `DUE_AHEAD_MS` take from those, each checked again (still in the store, still due). A chunk
   * that became due meanwhile waits for the next pass, at most that long.
   */
  private dueOldest(now: number): DirtyChunk[] {
    const limit = this.limit(now);
    const oldest: DirtyChunk[] = [];
    if (this.inflight >= limit) {
      this.waitedForWriter ||= this.mountBusy(now);
      return oldest;
    }
    const free = limit - this.inflight;
    if (now - this.dueNextAt < DUE_AHEAD_MS) {
      while (oldest.length < free && this.dueNextFrom < this.dueNext.length) {
        const d = this.dueNext[this.dueNextFrom++]!;
        if (this.deps.dirty.get(d.ino, d.idx) === d && this.isDue(d, now)) oldest.push(d);
      }
      if (oldest.length === free) return oldest;
      oldest.length = 0;
    }
    this.passes++;
    const want = free + DUE_AHEAD;
    for (const d of this.deps.dirty.all()) {
      if (oldest.length === want && d.firstDirtyMs >= oldest[want - 1]!.firstDirtyMs) continue;
      if (!this.isDue(d, now)) continue;
      let at = oldest.length;
      while (at > 0 && oldest[at - 1]!.firstDirtyMs > d.firstDirtyMs) at--;
      oldest.splice(at, 0, d);
      if (oldest.length > want) oldest.pop();
    }
    this.dueNext = oldest.slice(free);
    this.dueNextFrom = 0;
    this.dueNextAt = now;
    return oldest.slice(0, free);
  }

  /** Full passes over the backlog so far (see `dueOldest`). */
  get backlogPasses(): number {
    return this.passes;
  }

  /**
   * A file was closed by its last writer: its chunks may be due now (with no upload delay, or
   * once it has passed). Pumps only if one of them is; otherwise the periodic pump finds them
   * when their delay is over. A burst of creates closes a file every fraction of a millisecond
   * while nothing is due yet, and a full pump would weigh the whole backlog at each close
   * (quadratic in the number of files written).
   */
  pumpFor(ino: number): void {
    if (this.stopped || this.deps.paused()) return;
    if (this.pressure || this.draining > 0) return this.pump();
    const now = this.now();
    if (this.inflight >= this.limit(now)) {
      this.waitedForWriter ||= this.mountBusy(now);
      this.pumpWhenQuiet(now);
      return;
    }
    for (const idx of this.deps.dirty.indexesOf(ino)) {
      const d = this.deps.dirty.get(ino, idx);
      if (d && this.isDue(d, now)) return this.pump();
    }
    this.pumpWhenQuiet(now);
  }

  /** Forgets every chunk's backoff (the bucket answers again) and starts what is due. */
  retryNow(): void {
    this.retryEpoch++;
    for (const d of this.deps.dirty.all()) {
      const s = this.schedules.get(d);
      if (!s) continue;
      s.attempts = 0;
      s.retryAtMs = 0;
    }
    this.pump();
  }

  private startUpload(d: DirtyChunk): void {
    const s = this.schedule(d);
    s.uploading = true;
    this.inflight++;
    const epoch = this.retryEpoch;
    this.deps
      .upload(d)
      .then(
        () => {
          s.attempts = 0;
          s.retryAtMs = 0;
          this.deps.onSuccess();
        },
        (err) => {
          s.attempts++;
          s.retryAtMs = epoch === this.retryEpoch ? this.now() + backoffMs(s.attempts - 1, 500, 60_000) : 0;
          this.deps.onError(err, d, s.attempts);
        },
      )
      .finally(() => {
        s.uploading = false;
        this.inflight--;
        this.progress.notify();
        setImmediate(() => this.pump()); // never re-enter the queue without yielding
      });
  }

  /** Waits (at most `timeoutMs`) for uploads in flight to finish. */
  async idle(timeoutMs: number): Promise<void> {
    const deadline = this.now() + timeoutMs;
    while (this.inflight > 0 && this.now() < deadline) {
      await this.progress.wait(Math.max(1, deadline - this.now()));
    }
  }

  /**
   * Uploads everything now, ignoring delays, until no dirty chunk is left or `deadlineMs`
   * passes. Resolves true when everything is uploaded.
   */
  async drain(deadlineMs: number): Promise<boolean> {
    this.draining++;
    // Someone is waiting: retry failed chunks now rather than at their backoff time.
    for (const d of this.deps.dirty.all()) {
      const s = this.schedules.get(d);
      if (s) s.retryAtMs = 0;
    }
    try {
      for (;;) {
        // Counting what is left walks every dirty chunk: done only when no upload is in flight
        // (one in flight is still dirty, or its file was deleted meanwhile and it ends soon),
        // not after each of thousands of small files' uploads.
        if (this.inflight === 0 && this.pending === 0) return true;
        if (this.now() >= deadlineMs) return false;
        this.pump();
        await this.progress.wait(Math.min(500, Math.max(1, deadlineMs - this.now())));
      }
    } finally {
      this.draining--;
    }
  }
}
