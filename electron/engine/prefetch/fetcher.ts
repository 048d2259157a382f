/**
 * ChunkFetcher: brings a committed chunk from the bucket into the clean cache (when dirty data
 * leaves no room under the cap, the chunk is served from memory without a copy on disk).
 *
 * Concurrent requests for one chunk are merged (single flight); downloads are bounded by a
 * semaphore, which also bounds memory (each in-flight download holds at most one encoded and
 * one decoded chunk). Retryable store errors are retried with jittered backoff until
 * `readTimeoutMs` has passed, then the read fails with EIO: a read never hangs forever. The
 * request in flight at the deadline is cancelled, not abandoned. When the bucket answers again
 * after an outage, a read waiting out a backoff retries at once.
 *
 * A download that failed because the bucket did not answer is remembered for a few seconds
 * (`FAILED_READ_MEMORY_MS`, and only while the bucket stays offline): `unansweredFailure`
 * lets the VFS fail the kernel's own retry of that read at once (see vfs.ts).
 *
 * A chunk that fails authentication is refetched once (a cut-short body) and then refused
 * with EIO; wrong bytes are never returned.
 */

import { AuthError } from '../chunk/crypto';
import { chunkKey, decodeChunk } from '../chunk/format';
import { ChunkCache } from '../cache/chunkCache';
import { FsError } from '../errors';
import { ALWAYS_ONLINE, Connectivity } from '../store/monitored';
import { ObjectStore, StoreError, isNoAnswer } from '../store/types';
import { Semaphore, SingleFlight, backoffMs } from '../util/concurrency';

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
  lastError: string | undefined;
}

export class ChunkFetcher {
  private readonly flights = new SingleFlight<string, Buffer>();
  readonly sem: Semaphore;
  readonly stats: FetcherStats = { downloadedBytes: 0, lastError: undefined };
  /** Chunks whose download just failed for want of an answer: when, and during which connection. */
  private readonly unanswered = new Map<string, { at: number; reconnects: number; message: string }>();

  constructor(
    private readonly store: ObjectStore,
    private readonly cache: ChunkCache,
    private readonly chunkKeyBytes: Buffer,
    private concurrency: number,
    private readonly readTimeoutMs: () => number,
    private readonly log: (msg: string) => void,
    private readonly connectivity: Connectivity = ALWAYS_ONLINE,
  ) {
    this.sem = new Semaphore(concurrency);
  }

  setConcurrency(n: number): void {
    this.concurrency = n;
    this.sem.setLimit(n);
  }

  /** Returns the decoded chunk, downloading it if it is not cached. */
  fetch(name: string): Promise<Buffer> {
    return this.flights.run(name, async () => {
      const cached = await this.cache.readAll(name);
      if (cached) return cached;
      const data = await this.sem.run(() => this.download(name));
      this.cache.noteDownloaded(name, data.length);
      try {
        await this.cache.put(name, data);
      } catch (err) {
        // A full cache disk must not fail the read: serve it uncached.
        this.log(`could not cache chunk ${name}: ${(err as Error).message}`);
      }
      this.cache.remember(name, data);
      return data;
    });
  }

  /** Starts a background download if there is spare capacity; never throws. */
  prefetch(name: string): void {
    if (this.cache.has(name) || this.flights.has(name)) return;
    if (this.sem.inUse >= this.concurrency - 1) return; // leave room for reads someone waits on
    this.fetch(name).catch(() => undefined);
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

  private async download(name: string): Promise<Buffer> {
    const deadline = Date.now() + this.readTimeoutMs();
    let authFailures = 0;
    for (let attempt = 0; ; attempt++) {
      const reconnects = this.connectivity.reconnects;
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), Math.max(0, deadline - Date.now()));
      try {
        // A stalled request must not outlive the read's deadline: it is cancelled then (and
        // raced, for stores that cannot be cancelled).
        const got = await withDeadline(this.store.get(chunkKey(name), undefined, { signal: ac.signal }), deadline, name);
        if (!got) throw new FsError('EIO', `chunk ${name} is missing from the bucket`);
        this.stats.downloadedBytes += got.body.length;
        this.unanswered.delete(name);
        // The bucket serves chunks again: an earlier download failure is over.
        this.stats.lastError = undefined;
        return await decodeChunk(this.chunkKeyBytes, name, got.body);
      } catch (err) {
        if (err instanceof AuthError) {
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
