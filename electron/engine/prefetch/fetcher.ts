/**
 * ChunkFetcher: brings a committed chunk from the bucket into memory and the clean cache (when
 * dirty data leaves no room under the cap, the chunk is served from memory without a copy on
 * disk).
 *
 * Concurrent requests for one chunk are merged (single flight). Downloads take one of
 * `concurrency` slots; a read someone waits on (`fetch`) goes before read-ahead (`prefetch`),
 * and a read-ahead download still waiting for a slot moves up when a reader comes to need it,
 * so read-ahead may fill every slot (a sequential reader keeps `concurrency` GETs in flight)
 * without holding up other reads by more than the downloads already running. Read-ahead waits
 * in a queue of at most `concurrency` chunks; more is dropped (the reader asks again).
 *
 * Pinned data (pins.ts) downloads in the background, behind both: it takes a slot only when no
 * read or read-ahead waits, and leaves one slot free for them; it is not kept in memory. So do
 * the chunks of a file brought whole for a random reader (vfs.ts), which go into the cache
 * unopened unless a reader waits on them when they arrive (`background`).
 *
 * A download answers its readers as soon as it is decoded: the copy into the clean cache is
 * prepared and written behind it, from the next turn of the event loop (`cacheWritesDone` waits
 * for those), and until it is in, the decoded bytes are served from here. Its slot goes to the
 * next download at once, so a cache disk slower than the bucket leaves fewer slots idle. Memory is bounded by bytes instead: every download
 * receives the object into a buffer of a pool (`bodies`, one object of the chunk size each) and
 * holds it until its copy is written, and the pool has `concurrency + 3` buffers (`heldObjects`:
 * a copy being written holds its object for a 4 MiB direct write, and two or so are being
 * written at once while GETs keep every slot busy); a download waits for one. So GETs in flight
 * and copies being written hold at most that many objects, each with its decoded chunk (none
 * for one kept unopened), and the buffers are reused rather than allocated per chunk (see
 * util/bufferPool.ts for what a fresh chunk-sized buffer costs).
 *
 * Retryable store errors are retried with jittered backoff until `readTimeoutMs` has passed,
 * then the read fails with EIO: a read never hangs forever. The request in flight at the
 * deadline is cancelled, not abandoned. When the bucket answers again after an outage, a read
 * waiting out a backoff retries at once.
 *
 * A download that failed because the bucket did not answer is remembered for a few seconds
 * (`FAILED_READ_MEMORY_MS`, and only while the bucket stays offline): `unansweredFailure`
 * lets the VFS fail the kernel's own retry of that read at once (see vfs.ts).
 *
 * A chunk that fails authentication is refetched once (a cut-short body) and then refused
 * with EIO; wrong bytes are never returned.
 *
 * A read that is not part of a sequential stream may ask for just the segments of a chunk that
 * cover it (`fetchSegments`: one ranged GET, chunk/format.ts FSC2), when they are well under
 * the whole chunk and no download of the chunk is under way. What it brings answers that read
 * only: it is not kept (the clean cache holds whole chunks, so its cap and checks stay as they
 * are), and it takes no download slot (it is a few segments, and a reader waits on it). When
 * the segments do not open (an FSC1 object, a reference shorter than its chunk, a damaged
 * range) or the GET fails, the reader falls back to the whole chunk, which is checked as a
 * whole, retried and refused as above; such a chunk is remembered as read whole. A chunk whose
 * ranged reads have brought a quarter of its size is read whole from then on (and so cached):
 * random reads that keep coming back to one chunk pay at most a quarter more than fetching it
 * at once, and those that do not never fetch what they do not read.
 */

import type { ReaderActivity } from '../meta/pageLoader';
import { AuthError, SEAL_OVERHEAD } from '../chunk/crypto';
import { chunkObject } from '../chunk/packs';
import { SEGMENT_BYTES, decodeChunk, maxEncodedBytes, openSegments, segmentRange, warmSegments } from '../chunk/format';
import { ChunkCache } from '../cache/chunkCache';
import { sealedBodySize } from '../cache/sealed';
import { RECEIVE_SLACK, receivePlace } from '../cache/received';
import { FsError } from '../errors';
import { ALWAYS_ONLINE, Connectivity } from '../store/monitored';
import { ObjectStore, StoreError, isNoAnswer } from '../store/types';
import { BufferPool } from '../util/bufferPool';
import { chunksInBudget } from '../util/chunkBudget';
import { SpareBuffers } from '../util/spareBuffers';
import { DecodedBuffers } from './decodedBuffers';
import { SingleFlight, backoffMs } from '../util/concurrency';

/** Readers count as using the bucket for this long after their last request (see `readersBusy`). */
export const READERS_QUIET_MS = 250;

/** How long a download that failed for want of an answer lets the same handle's retry fail at once. */
export const FAILED_READ_MEMORY_MS = 5_000;

function withDeadline<T>(p: Promise<T>, deadline: number, name: string): Promise<T> {
  p.catch(() => undefined); // the request may fail after the deadline: never unhandled
  const left = deadline - Date.now();
  if (left <= 0) return Promise.reject(new StoreError('Timeout', `reading chunk ${name} timed out`));
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StoreError('Timeout', `reading chunk ${name} timed out`)), left);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export interface FetcherStats {
  downloadedBytes: number;
  /** Ranged GETs of a chunk's segments, and those whose segments failed to open (then read whole). */
  segmentReads: number;
  segmentFallbacks: number;
  lastError: string | undefined;
}

/**
 * The plaintext of some segments of a chunk, starting at byte `from` of the chunk. `data` may
 * be a pooled buffer: the reader copies what it needs, then calls `release` (once; after that
 * the bytes may change). A reader that never releases only costs the pool that buffer.
 */
export interface SegmentSpan {
  readonly from: number;
  readonly data: Buffer;
  release(): void;
}

/**
 * A ranged read of up to this many segments is received into, and opened into, a pooled buffer
 * (`SegmentBuffers`); a larger one gets buffers of its own.
 */
const POOLED_SEGMENTS = 2;
/** Bytes of a ranged GET of POOLED_SEGMENTS segments as stored: each sealed (SEAL_OVERHEAD bytes more). */
const POOLED_BODY = POOLED_SEGMENTS * (SEGMENT_BYTES + SEAL_OVERHEAD);

/** How many chunks are remembered as not readable by segments, or by the bytes their segments brought. */
const SEGMENT_MEMORY = 4096;

/**
 * What a download brings: the object as the bucket sent it, and its decoded bytes (none for a
 * download kept unopened, see `ChunkFetcher.background`).
 */
interface Downloaded {
  readonly obj: Buffer;
  /** `obj` lies where it was asked to (the pool buffer's `receivePlace`, cache/received.ts), so the cache may write it in place. */
  readonly inPlace: boolean;
  readonly data: Buffer | undefined;
  /** Whether the pool buffer it was asked to fill may still be written by a request given up on. */
  readonly tainted: boolean;
}

/** What `load` resolves to for a download kept in the cache unopened: the bytes are read from there. */
const UNOPENED = Buffer.alloc(0);

/**
 * Objects held by downloads and the copies written behind them, for `concurrency` GETs in flight.
 * Measured (coldprobe rand, a random reader's whole-file download, alternating runs): with one
 * object above the slots, downloads waited for a buffer about one slot's worth of the time
 * while copies were written, and 615-687 random reads a second; with three, 697-710, and the
 * engine's peak RSS a few MB higher (sequential reads unchanged, 388-397 MB/s either way).
 */
export function heldObjects(concurrency: number, chunkSize = 4 * 1024 * 1024): number {
  // Three 4 MiB objects' worth above the slots (one with chunks of 12 MiB or more).
  return concurrency + chunksInBudget(3, chunkSize);
}

/** How much a download is waited for: a reader now, read-ahead, or background (pinned data). */
export type DownloadPriority = 'urgent' | 'ahead' | 'background';

/**
 * `limit` download slots, granted to urgent requests first, then to read-ahead, then to
 * background downloads (which leave one slot free when there are two or more), each in order
 * of arrival; a waiting request can be made urgent.
 */
class DownloadSlots {
  private active = 0;
  private activeBackground = 0;
  /** Waiters, told whether their slot counts as a background one. */
  private readonly urgent = new Map<string, (background: boolean) => void>();
  private readonly ahead = new Map<string, (background: boolean) => void>();
  private readonly background = new Map<string, (background: boolean) => void>();

  constructor(private limit: number) {}

  get inUse(): number {
    return this.active;
  }

  /** Slots held by downloads someone waits on or reads ahead for (not background ones). */
  get inUseForReaders(): number {
    return this.active - this.activeBackground;
  }

  /** Read-ahead requests waiting for a slot. */
  get waitingAhead(): number {
    return this.ahead.size;
  }

  setLimit(limit: number): void {
    this.limit = limit;
    this.grant();
  }

  /** Background downloads may hold this many slots at once. */
  private get backgroundLimit(): number {
    return this.limit > 1 ? this.limit - 1 : 1;
  }

  async run<T>(name: string, priority: DownloadPriority, fn: () => Promise<T>): Promise<T> {
    const background = priority === 'background';
    const wait =
      this.active >= this.limit ||
      this.urgent.size > 0 ||
      (priority !== 'urgent' && this.ahead.size > 0) ||
      (background && (this.background.size > 0 || this.activeBackground >= this.backgroundLimit));
    // A background download promoted while it waited is granted an ordinary slot (see grant).
    let countedBackground = background;
    if (wait) countedBackground = await new Promise<boolean>((resolve) => this.queueOf(priority).set(name, resolve));
    else {
      this.active++;
      if (background) this.activeBackground++;
    }
    try {
      return await fn();
    } finally {
      this.active--;
      if (countedBackground) this.activeBackground--;
      this.grant();
    }
  }

  private queueOf(priority: DownloadPriority): Map<string, (background: boolean) => void> {
    return priority === 'urgent' ? this.urgent : priority === 'ahead' ? this.ahead : this.background;
  }

  /** A read-ahead or background request for `name` still waiting becomes urgent. */
  promote(name: string): void {
    for (const queue of [this.ahead, this.background]) {
      const w = queue.get(name);
      if (!w) continue;
      queue.delete(name);
      this.urgent.set(name, w);
      this.grant();
      return;
    }
  }

  private grant(): void {
    while (this.active < this.limit) {
      let queue = this.urgent.size > 0 ? this.urgent : this.ahead;
      const background = queue.size === 0;
      if (background) {
        if (this.activeBackground >= this.backgroundLimit) return;
        queue = this.background;
      }
      const first = queue.entries().next();
      if (first.done) return;
      queue.delete(first.value[0]);
      this.active++;
      if (background) this.activeBackground++;
      first.value[1](background);
    }
  }
}

export class ChunkFetcher {
  private readonly flights = new SingleFlight<string, Buffer>();
  /** Ranged reads on their way, and when a reader last asked for anything (see `readersBusy`). */
  private rangedInFlight = 0;
  /** Background downloads of a file a reader reads at random (`background(name, true)`), until each is written. */
  private readerDownloads = 0;
  private readersAt = 0;
  private localReadAt = 0;
  private readonly slots: DownloadSlots;
  /** Buffers the objects are received into, held until their copy into the cache is written (see the header). */
  private readonly bodies: BufferPool;
  /** Buffers whole chunks are decoded into, used again once nothing holds them (decodedBuffers.ts). */
  readonly decoded: DecodedBuffers;
  /** Chunks downloaded whose copy into the clean cache is still being written: name -> decoded bytes. */
  private readonly storing = new Map<string, Buffer>();
  private readonly stores = new Set<Promise<void>>();
  /** The copy into the clean cache being written, by chunk name. */
  private readonly writes = new Map<string, Promise<void>>();
  /** Chunks a reader waits on now. */
  private readonly demanded = new Set<string>();
  readonly stats: FetcherStats = { downloadedBytes: 0, segmentReads: 0, segmentFallbacks: 0, lastError: undefined };
  /** Chunks whose segments did not open (FSC1 objects, references shorter than their chunk): read whole. */
  private readonly unsegmented = new Set<string>();
  /** Bytes ranged reads brought of each chunk (see the header): at a quarter of the chunk, it is read whole. */
  private readonly segmentBytes = new Map<string, number>();
  /** Chunks whose download just failed for want of an answer: when, and during which connection. */
  private readonly unanswered = new Map<string, { at: number; reconnects: number; message: string }>();
  /**
   * Buffers for ranged reads, each the body of a GET of up to POOLED_SEGMENTS segments and their
   * plaintext (util/spareBuffers.ts). A buffer a request may still write into (it failed, timed
   * out, was given up on) is never given back.
   */
  private readonly segmentBuffers = new SpareBuffers(POOLED_BODY + POOLED_SEGMENTS * SEGMENT_BYTES);

  constructor(
    private readonly store: ObjectStore,
    private readonly cache: ChunkCache,
    private readonly chunkKeyBytes: Buffer,
    private concurrency: number,
    private readonly readTimeoutMs: () => number,
    private readonly log: (msg: string) => void,
    private readonly connectivity: Connectivity = ALWAYS_ONLINE,
    /** The filespace's chunk size: the pool's buffers hold the largest object of one chunk. */
    chunkSize = 4 * 1024 * 1024,
  ) {
    this.slots = new DownloadSlots(concurrency);
    this.bodies = new BufferPool(maxEncodedBytes(chunkSize) + RECEIVE_SLACK, () => heldObjects(this.concurrency, chunkSize), {
      keepFree: heldObjects(concurrency, chunkSize),
    });
    // Room for a whole chunk decoded, or read as sealed units from the cache and opened where
    // they lie (ChunkCache.loadIntoMemory).
    this.decoded = new DecodedBuffers(sealedBodySize(chunkSize), chunksInBudget(4, chunkSize));
    cache.useDecodedBuffers(this.decoded);
  }

  /** Runs a ranged read's opening once ahead of the first read (format.ts `warmSegments`); never throws. */
  warm(): void {
    try {
      warmSegments(this.chunkKeyBytes);
    } catch (err) {
      this.log(`could not warm the chunk reads: ${(err as Error).message}`);
    }
  }

  /** Bytes of the buffers objects are received into, now and at most (status, tests). */
  get heldBodyBytes(): { readonly now: number; readonly peak: number; readonly bound: number } {
    return { now: this.bodies.heldBytes, peak: this.bodies.peakBytes, bound: this.bodies.boundBytes };
  }

  setConcurrency(n: number): void {
    this.concurrency = n;
    this.slots.setLimit(n);
  }

  /** Downloads running now. */
  get downloadsInFlight(): number {
    return this.slots.inUse;
  }

  /**
   * Whether readers use the bucket now, or did within `READERS_QUIET_MS`: downloads waited on
   * or read ahead, ranged reads, and the background downloads of a file read at random (the
   * reader's next reads find them in the cache). Background work that can wait
   * (meta/pageLoader.ts's fill of a fresh machine's folders) holds back meanwhile, so it does
   * not share the bucket and the engine's thread with a cold read.
   */
  get readersBusy(): boolean {
    return (
      this.slots.inUseForReaders > 0 ||
      this.rangedInFlight > 0 ||
      this.readerDownloads > 0 ||
      Date.now() - this.readersAt < READERS_QUIET_MS
    );
  }

  /**
   * What readers do now: use the bucket (`readersBusy`), or only read what is here (a read
   * within `READERS_QUIET_MS`, noted by `noteRead`: the cache, the memory), or nothing.
   * Background work that can wait holds back for the first and takes a small share of the
   * engine's thread for the second (meta/pageLoader.ts).
   */
  get readerActivity(): ReaderActivity {
    if (this.readersBusy) return 'bucket';
    return Date.now() - this.localReadAt < READERS_QUIET_MS ? 'local' : 'none';
  }

  /** A read through the mount (called for each; one clock reading). */
  noteRead(): void {
    this.localReadAt = Date.now();
  }

  private noteReaders(): void {
    this.readersAt = Date.now();
  }

  isInFlight(name: string): boolean {
    return this.flights.has(name);
  }

  /**
   * Returns the decoded chunk (for a reader waiting on it), downloading it if it is not cached.
   * The caller may keep it: its buffer is never decoded into again (DecodedBuffers.escape).
   */
  async fetch(name: string): Promise<Buffer> {
    const data = await this.demand(name);
    this.decoded.escape(data);
    return data;
  }

  /**
   * Brings a chunk a reader waits on into memory (it is remembered, cache/chunkCache.ts), or
   * finds it cached, as `fetch` does but handing nothing out: its buffer stays in the decoded
   * pool's reuse. A sequential reader that waits on each chunk of a cold stream reads it from
   * the memory cache; with `fetch`, every such chunk's buffer escaped and the next was freshly
   * allocated (page faults on first touch, external memory for V8 to collect).
   */
  async fetchIntoMemory(name: string): Promise<void> {
    await this.demand(name);
  }

  private async demand(name: string): Promise<Buffer> {
    this.noteReaders();
    this.slots.promote(name);
    this.demanded.add(name);
    try {
      const data = await this.load(name, 'urgent');
      // A background download it joined was kept unopened: read from the cache now.
      return data === UNOPENED ? await this.load(name, 'urgent') : data;
    } finally {
      this.demanded.delete(name);
    }
  }

  /**
   * The segments of chunk `name` (`chunkBytes` long, as its reference says) that cover bytes
   * [pos, pos+n), by one ranged GET, authenticated; undefined when the reader should take the
   * whole chunk instead (`fetch`): the chunk is coming whole already, the segments would be
   * half the chunk or more, or they did not open. Fails with EIO only when the request ran out
   * the read's deadline (the whole chunk would fare no better).
   */
  async fetchSegments(name: string, chunkBytes: number, pos: number, n: number): Promise<SegmentSpan | undefined> {
    if (this.unsegmented.has(name) || this.flights.has(name) || this.writes.has(name)) return undefined;
    const r = segmentRange(chunkBytes, pos, n);
    const span = (r.last - r.first + 1) * SEGMENT_BYTES;
    const brought = this.segmentBytes.get(name) ?? 0;
    if (span * 2 > chunkBytes || (brought + span) * 4 > chunkBytes) return undefined;
    const deadline = Date.now() + this.readTimeoutMs();
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.readTimeoutMs());
    this.stats.segmentReads++;
    this.noteReaders();
    this.rangedInFlight++;
    // Only a request that answered in full gives its buffer back: one given up on may still write.
    const pooled = r.end - r.start + 1 <= POOLED_BODY ? this.segmentBuffers.take() : undefined;
    try {
      const where = chunkObject(name, { start: r.start, end: r.end });
      const got = await withDeadline(
        this.store.get(where.key, where.range, { signal: ac.signal, into: pooled?.subarray(0, POOLED_BODY) }),
        deadline,
        name,
      );
      if (!got) return undefined; // the whole read reports a missing chunk
      this.stats.downloadedBytes += got.body.length;
      this.segmentBytes.delete(name);
      this.segmentBytes.set(name, brought + span);
      if (this.segmentBytes.size > SEGMENT_MEMORY) this.segmentBytes.delete(this.segmentBytes.keys().next().value!);
      const data = openSegments(this.chunkKeyBytes, name, r.count, r.first, got.body, pooled?.subarray(POOLED_BODY));
      let released = !pooled;
      return {
        from: r.first * SEGMENT_BYTES,
        data,
        release: () => {
          if (released) return;
          released = true;
          this.segmentBuffers.give(pooled!);
        },
      };
    } catch (err) {
      if (err instanceof AuthError) {
        this.stats.segmentFallbacks++;
        this.unsegmented.add(name);
        if (this.unsegmented.size > SEGMENT_MEMORY) this.unsegmented.delete(this.unsegmented.values().next().value!);
        return undefined;
      }
      if (err instanceof StoreError && err.code === 'Timeout') {
        const msg = err.message;
        this.unanswered.set(name, { at: Date.now(), reconnects: this.connectivity.reconnects, message: msg });
        if (!this.connectivity.offline) this.stats.lastError = `download of chunk ${name} failed: ${msg}`;
        throw new FsError('EIO', msg);
      }
      return undefined; // the whole read retries, or says why not
    } finally {
      clearTimeout(timer);
      this.rangedInFlight--;
      this.noteReaders();
    }
  }

  /** Starts a read-ahead download unless the chunk is here or coming, or read-ahead is queued full; never throws. */
  prefetch(name: string): void {
    this.noteReaders();
    if (this.cache.has(name) || this.flights.has(name) || this.writes.has(name) || this.cache.inMemoryPeek(name)) return;
    if (this.slots.inUse >= this.concurrency && this.slots.waitingAhead >= this.concurrency) return;
    this.load(name, 'ahead').catch(() => undefined);
  }

  /**
   * Downloads a chunk into the clean cache behind reads and read-ahead (pinned data, a file
   * read at random). Resolves once its copy is written: true if it is in the cache, false if the
   * cache had no room. `forReader`: a reader is at work on its file, so until it is written the
   * readers count as busy (`readersBusy`). Such a chunk is kept unopened when nobody waits on
   * it by the time it arrives (`ChunkCache.putUnopened`): its reader reads a few segments of it,
   * each opened then, so opening all of it here (a cipher pass over the whole file into a
   * buffer of its own) would only take CPU and memory from the downloads on a small machine.
   */
  async background(name: string, forReader = false): Promise<boolean> {
    if (this.cache.has(name)) return true;
    if (forReader) this.readerDownloads++;
    try {
      await this.load(name, 'background', forReader);
      await this.writes.get(name);
      return this.cache.has(name);
    } finally {
      if (forReader) {
        this.readerDownloads--;
        this.noteReaders();
      }
    }
  }

  /** Resolves once every copy into the clean cache started so far is written (or failed). */
  async cacheWritesDone(): Promise<void> {
    while (this.stores.size > 0) await Promise.all([...this.stores]);
  }

  /**
   * `unopened`: the object may be kept unopened if nobody waits on it when it arrives; the load
   * then resolves to UNOPENED once it is on its way into the cache.
   */
  private load(name: string, priority: DownloadPriority, unopened = false): Promise<Buffer> {
    return this.flights.run(name, async () => {
      const storing = this.storing.get(name);
      if (storing) {
        this.cache.remember(name, storing);
        return storing;
      }
      // A copy kept unopened is read from the cache once it is written.
      await this.writes.get(name);
      const cached = await this.cache.readAll(name);
      if (cached) return cached;
      // A reader may have come to need it while it looked in the cache.
      const got = await this.slots.run(name, this.demanded.has(name) ? 'urgent' : priority, async () => {
        // Waits while GETs in flight and copies still being written hold every buffer.
        const body = await this.bodies.acquire(this.bodies.bufferBytes);
        try {
          const r = await this.download(name, receivePlace(body), unopened ? (obj) => this.keepsUnopened(name, obj) : undefined);
          return { ...r, body };
        } catch (err) {
          this.bodies.discard(body); // a request given up on may still write into it
          throw err;
        }
      });
      if (!got.data) {
        void this.storeUnopened(name, got.obj, got.inPlace).finally(() =>
          got.tainted ? this.bodies.discard(got.body) : this.bodies.release(got.body),
        );
        return UNOPENED;
      }
      const data = got.data;
      const wanted = priority === 'urgent' || this.demanded.has(name);
      if (wanted || priority === 'ahead') {
        this.cache.noteDownloaded(name, data.length);
        // Read-ahead is kept in memory as not yet read, so chunks already read go first.
        this.cache.remember(name, data, !wanted);
      }
      // The reply goes now; the copy into the cache is written behind it, outside the slot,
      // holding the object's buffer until it is written (the buffer is the memory bound).
      void this.storeBehind(name, got.obj, data, got.inPlace).finally(() =>
        got.tainted ? this.bodies.discard(got.body) : this.bodies.release(got.body),
      );
      // The memory cache and the copy being written hold the decoded buffer now (the copy
      // until a later turn of the event loop): the download lets go of it. Those it is handed
      // to from here are `fetch` callers, which mark it escaped before that turn.
      this.decoded.drop(data);
      return data;
    });
  }

  /** Whether a download may go into the cache unopened (see `background`): nobody waits on it, and its format allows it. */
  private keepsUnopened(name: string, obj: Buffer): boolean {
    return !this.demanded.has(name) && this.cache.storableUnopened(obj) !== undefined;
  }

  /** Writes a chunk kept unopened into the clean cache (`ChunkCache.putUnopened`), known as `storeBehind`'s copies are. */
  private storeUnopened(name: string, obj: Buffer, inPlace: boolean): Promise<void> {
    return this.trackWrite(name, this.cache.putUnopened(name, obj, inPlace));
  }

  /**
   * Writes the chunk into the clean cache behind the reply; a failure only costs the copy. The
   * copy is known (`storing`, `writes`, `cacheWritesDone`) at once, but its work starts on the
   * next turn of the event loop: preparing a cache file is a pass over the chunk on this thread
   * (a code per unit, cache/received.ts, or sealing a compressed chunk), and the readers waiting
   * for this download get their bytes first (their continuations run before that turn).
   */
  private storeBehind(name: string, obj: Buffer, data: Buffer, inPlace: boolean): Promise<void> {
    this.storing.set(name, data);
    this.decoded.hold(data);
    const write = new Promise<void>((resolve) => setImmediate(resolve)).then(() =>
      this.cache.putReceived(name, obj, data, inPlace),
    );
    return this.trackWrite(name, write, () => {
      this.storing.delete(name);
      this.decoded.drop(data);
    });
  }

  /**
   * Keeps `write`, a copy into the clean cache, known (`writes`, `cacheWritesDone`) until it
   * settles, then calls `done`. A failure only costs the copy (a full cache disk must not fail
   * the read: the chunk is served uncached).
   */
  private trackWrite(name: string, write: Promise<unknown>, done?: () => void): Promise<void> {
    const p: Promise<void> = write
      .then(
        () => undefined,
        (err: unknown) => this.log(`could not cache chunk ${name}: ${(err as Error).message}`),
      )
      .finally(() => {
        done?.();
        this.stores.delete(p);
        this.writes.delete(name);
      });
    this.stores.add(p);
    this.writes.set(name, p);
    return p;
  }

  /**
   * Why the last download of `name` failed, if it failed moments ago because the bucket did not
   * answer and the bucket has not answered since.
   */
  unansweredFailure(name: string): string | undefined {
    const f = this.unanswered.get(name);
    if (!f) return undefined;
    const c = this.connectivity;
    if (c.offline && f.reconnects === c.reconnects && Date.now() - f.at < FAILED_READ_MEMORY_MS) return f.message;
    this.unanswered.delete(name);
    return undefined;
  }

  /** Decodes a downloaded object, into a buffer of `decoded` when it is a large one, held once by the caller. */
  private async decode(name: string, obj: Buffer): Promise<Buffer> {
    let taken: Buffer | undefined;
    try {
      const data = await decodeChunk(this.chunkKeyBytes, name, obj, (n) => (taken = this.decoded.take(n)));
      if (taken && data.buffer !== taken.buffer) this.decoded.drop(taken);
      return data;
    } catch (err) {
      if (taken) this.decoded.drop(taken);
      throw err;
    }
  }

  /**
   * Downloads and authenticates chunk `name`, receiving its object into `into` when it fits.
   * Only the first attempt uses `into`: after an attempt that was given up on (timed out), its
   * request may still write into whatever it was given, so such a buffer is never reused.
   */
  private async download(name: string, into: Buffer, unopened?: (obj: Buffer) => boolean): Promise<Downloaded> {
    const deadline = Date.now() + this.readTimeoutMs();
    let authFailures = 0;
    let tainted = false;
    for (let attempt = 0; ; attempt++) {
      const reconnects = this.connectivity.reconnects;
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
      try {
        // A stalled request must not outlive the read's deadline: it is cancelled then (and
        // raced, for stores that cannot be cancelled).
        const call = { signal: ac.signal, into: attempt === 0 ? into : undefined };
        if (attempt === 0) tainted = true; // until this attempt has answered
        const where = chunkObject(name);
        const got = await withDeadline(this.store.get(where.key, where.range, call), deadline, name);
        if (attempt === 0) tainted = false;
        if (!got) throw new FsError('EIO', `chunk ${name} is missing from the bucket`);
        // Received where it was asked to: only the first attempt's `into`, and only if it fit there.
        const inPlace = attempt === 0 && got.body.buffer === into.buffer && got.body.byteOffset === into.byteOffset;
        this.stats.downloadedBytes += got.body.length;
        this.unanswered.delete(name);
        // The bucket serves chunks again: an earlier download failure is over.
        this.stats.lastError = undefined;
        if (unopened?.(got.body)) return { obj: got.body, inPlace, data: undefined, tainted };
        return { obj: got.body, inPlace, data: await this.decode(name, got.body), tainted };
      } catch (err) {
        if (err instanceof AuthError) {
          if (attempt === 0) tainted = false; // answered in full: its request is over
          authFailures++;
          if (authFailures >= 2) {
            this.stats.lastError = err.message;
            this.log(`refusing chunk ${name}: ${err.message}`);
            throw new FsError('EIO', err.message);
          }
          continue;
        }
        const retryable = err instanceof StoreError && err.retryable;
        if (!retryable || Date.now() >= deadline) {
          const msg = err instanceof Error ? err.message : String(err);
          if (isNoAnswer(err)) {
            this.unanswered.set(name, { at: Date.now(), reconnects: this.connectivity.reconnects, message: msg });
            if (this.unanswered.size > 1024) this.unanswered.delete(this.unanswered.keys().next().value!);
          }
          // Offline, the engine's offline state says why reads fail; one error per read would bury it.
          if (!(isNoAnswer(err) && this.connectivity.offline)) this.stats.lastError = `download of chunk ${name} failed: ${msg}`;
          throw err instanceof FsError ? err : new FsError('EIO', msg);
        }
        // An attempt cut off because the bucket answered again retries at once; otherwise wait
        // out the backoff, or until the bucket answers again.
        if (reconnects === this.connectivity.reconnects) {
          await this.connectivity.changed.wait(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())));
        }
      } finally {
        clearTimeout(timer);
      }
    }
  }
}
