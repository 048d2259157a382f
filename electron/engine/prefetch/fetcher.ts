/**
 * ChunkFetcher: brings a committed chunk from the bucket into the clean cache (when dirty data
 * leaves no room under the cap, the chunk is served from memory without a copy on disk).
 *
 * Concurrent requests for one chunk are merged (single flight); downloads are bounded by a
 * semaphore, which also bounds memory (each in-flight download holds at most one encoded and
 * one decoded chunk). Retryable store errors are retried with jittered backoff until
 * `readTimeoutMs` has passed, then the read fails with EIO: a read never hangs forever. A chunk
 * that fails authentication is refetched once (a cut-short body) and then refused with EIO;
 * wrong bytes are never returned.
 */

import { AuthError } from '../chunk/crypto';
import { chunkKey, decodeChunk } from '../chunk/format';
import { ChunkCache } from '../cache/chunkCache';
import { FsError } from '../errors';
import { ObjectStore, StoreError } from '../store/types';
import { Semaphore, SingleFlight, backoffMs, sleep } from '../util/concurrency';

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
  /** Called with the outcome of every download attempt (for the engine's offline state). */
  onOutcome: (err: unknown | undefined) => void = () => undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly cache: ChunkCache,
    private readonly chunkKeyBytes: Buffer,
    private concurrency: number,
    private readonly readTimeoutMs: () => number,
    private readonly log: (msg: string) => void,
  ) {
    this.sem = new Semaphore(concurrency);
  }

  setConcurrency(n: number): void {
    this.concurrency = n;
    this.sem.setLimit(n);
  }

  isInFlight(name: string): boolean {
    return this.flights.has(name);
  }

  /** Returns the decoded chunk, downloading it if it is not cached. */
  fetch(name: string): Promise<Buffer> {
    return this.flights.run(name, async () => {
      const cached = await this.cache.readAll(name);
      if (cached) return cached;
      const data = await this.sem.run(() => this.download(name));
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

  private async download(name: string): Promise<Buffer> {
    const deadline = Date.now() + this.readTimeoutMs();
    let authFailures = 0;
    for (let attempt = 0; ; attempt++) {
      try {
        // A stalled request must not outlive the read's deadline: race it (the request itself
        // is abandoned to the store's own timeout).
        const got = await withDeadline(this.store.get(chunkKey(name)), deadline, name);
        if (!got) throw new FsError('EIO', `chunk ${name} is missing from the bucket`);
        this.stats.downloadedBytes += got.body.length;
        this.onOutcome(undefined);
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
        this.onOutcome(err);
        const retryable = err instanceof StoreError && err.retryable;
        if (!retryable || Date.now() >= deadline) {
          const msg = err instanceof Error ? err.message : String(err);
          this.stats.lastError = `download of chunk ${name} failed: ${msg}`;
          throw err instanceof FsError ? err : new FsError('EIO', msg);
        }
        await sleep(Math.min(backoffMs(attempt), Math.max(0, deadline - Date.now())));
      }
    }
  }
}
