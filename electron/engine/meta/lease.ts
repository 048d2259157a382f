/**
 * The write lease: one object (`lease`) in the bucket that says which machine may commit
 * metadata. DESIGN invariant 4.
 *
 * - Taken with `If-None-Match: *` (no lease yet) or `If-Match: <etag>` (replacing an expired
 *   or released one, or a forced takeover); renewed with `If-Match` on the ETag of our own last
 *   write; released with `If-Match` too. A conditional write that fails means someone else
 *   wrote the lease: the lease is lost, at once and for good.
 * - Expiry is judged on the holder's clock (`renewedAt + ttlMs`), so the holder must stop
 *   committing before that: `valid()` is false once `ttlMs - margin` has passed since the
 *   start of the last successful renewal, on the monotonic clock and the wall clock both (a
 *   suspended laptop's monotonic clock may not advance; a SIGSTOPped process's does).
 * - The lease alone does not fence a writer that was suspended between checking `valid()` and
 *   writing. The metadata log does: segments are created with If-None-Match on their sequence
 *   number and name their writer, and a new holder writes a fence segment after catching up,
 *   so an old holder's next segment collides with it and is refused (see Engine).
 *
 * The object is sealed with the metadata key (it names machines); the ETag is what the
 * conditional writes compare.
 *
 * On a store that ignores conditional writes the same object is written unconditionally; it
 * then only designates the one machine allowed to write (see `conditional`), and the engine
 * refuses read-write mounting from any other machine unless the user takes over explicitly.
 */

import { open, seal } from '../chunk/crypto';
import { ObjectStore, StoreError } from '../store/types';

export const LEASE_KEY = 'lease';

export interface Machine {
  /** Identifies this machine's cache of the filespace (random, kept in the cache directory). */
  readonly id: string;
  /** Host name, for people. */
  readonly name: string;
  readonly pid: number;
}

export interface LeaseRecord {
  readonly holder: Machine;
  /** Incremented by every acquisition; written into the holder's metadata segments. */
  readonly epoch: number;
  readonly acquiredAt: number;
  readonly renewedAt: number;
  readonly ttlMs: number;
  readonly released: boolean;
}

export interface LeaseView {
  readonly record: LeaseRecord;
  readonly etag: string;
}

/** Someone else holds a live lease. */
export class LeaseHeldError extends Error {
  constructor(readonly record: LeaseRecord, now = Date.now()) {
    const h = record.holder;
    const ago = Math.max(0, Math.round((now - record.renewedAt) / 1000));
    super(`this filespace is being written by ${h.name} (process ${h.pid}, machine ${h.id.slice(0, 8)}), ` +
      `lease last renewed ${ago}s ago at ${new Date(record.renewedAt).toISOString()}; ` +
      'mount it read-only here (--read-only), or take over with --takeover if that machine is gone');
    this.name = 'LeaseHeldError';
  }
}

/** This machine held the lease and no longer does. */
export class LeaseLostError extends Error {
  constructor(readonly by: LeaseRecord | undefined) {
    super(by
      ? `the write lease was taken over by ${by.holder.name} (process ${by.holder.pid}, machine ${by.holder.id.slice(0, 8)}) at ${new Date(by.acquiredAt).toISOString()}`
      : 'the write lease was removed from the bucket');
    this.name = 'LeaseLostError';
  }
}

export function isExpired(r: LeaseRecord, now = Date.now()): boolean {
  return r.released || now > r.renewedAt + r.ttlMs;
}

export function describeHolder(r: LeaseRecord): string {
  return `${r.holder.name} (process ${r.holder.pid}, machine ${r.holder.id.slice(0, 8)})`;
}

export interface LeaseOptions {
  readonly store: ObjectStore;
  readonly metaKey: Buffer;
  readonly self: Machine;
  readonly ttlMs: () => number;
  /** False on stores that ignore If-None-Match / If-Match. */
  readonly conditional: boolean;
  readonly now?: () => number;
  readonly monotonic?: () => number;
}

export class Lease {
  private etag: string | undefined;
  private record: LeaseRecord | undefined;
  private lastRenewWall = 0;
  private lastRenewMono = 0;
  private lost: LeaseLostError | undefined;
  private readonly now: () => number;
  private readonly mono: () => number;
  private renewing: Promise<void> | undefined;

  constructor(private readonly o: LeaseOptions) {
    this.now = o.now ?? Date.now;
    this.mono = o.monotonic ?? (() => performance.now());
  }

  private encode(r: LeaseRecord): Buffer {
    return seal(this.o.metaKey, Buffer.from(JSON.stringify(r), 'utf8'), `meta:${LEASE_KEY}`);
  }

  /** Reads the lease object, or undefined when there is none. */
  async read(): Promise<LeaseView | undefined> {
    const got = await this.o.store.get(LEASE_KEY);
    if (!got) return undefined;
    const record = JSON.parse(open(this.o.metaKey, got.body, `meta:${LEASE_KEY}`, 'the write lease').toString('utf8')) as LeaseRecord;
    return { record, etag: got.etag };
  }

  /** The record this machine last wrote while holding the lease. */
  get current(): LeaseRecord | undefined {
    return this.record;
  }

  get lostError(): LeaseLostError | undefined {
    return this.lost;
  }

  get held(): boolean {
    return this.record !== undefined && this.lost === undefined;
  }

  /**
   * Takes the lease. Without `takeover`, a live lease held by another machine fails with
   * LeaseHeldError; one held by this same machine (a previous run that crashed) is taken at
   * once. With `takeover`, any lease is taken (the previous holder is fenced).
   */
  async acquire(opts: { takeover: boolean }): Promise<{ previous: LeaseRecord | undefined }> {
    for (let attempt = 0; ; attempt++) {
      const cur = await this.read();
      const prev = cur?.record;
      if (prev && !this.o.conditional && prev.holder.id !== this.o.self.id && !opts.takeover) {
        throw new NoConditionalWritesError(prev);
      }
      if (prev && prev.holder.id !== this.o.self.id && !isExpired(prev, this.now()) && !opts.takeover) {
        throw new LeaseHeldError(prev, this.now());
      }
      const startWall = this.now();
      const startMono = this.mono();
      const rec: LeaseRecord = {
        holder: this.o.self,
        epoch: (prev?.epoch ?? 0) + 1,
        acquiredAt: startWall,
        renewedAt: startWall,
        ttlMs: this.o.ttlMs(),
        released: false,
      };
      try {
        const etag = await this.o.store.put(LEASE_KEY, this.encode(rec), this.conditionFor(cur?.etag));
        this.etag = etag;
        this.record = rec;
        this.lost = undefined;
        this.lastRenewWall = startWall;
        this.lastRenewMono = startMono;
        return { previous: prev };
      } catch (err) {
        // Someone wrote the lease between our read and write: look again (a few times).
        if (err instanceof StoreError && err.code === 'PreconditionFailed' && attempt < 3) continue;
        throw err;
      }
    }
  }

  private conditionFor(etag: string | undefined): { ifNoneMatch?: '*'; ifMatch?: string } {
    if (!this.o.conditional) return {};
    return etag === undefined ? { ifNoneMatch: '*' } : { ifMatch: etag };
  }

  /**
   * True while this machine may commit: it holds the lease and less than ttl minus a safety
   * margin has passed since its last successful renewal began.
   */
  valid(): boolean {
    if (!this.held) return false;
    const budget = this.record!.ttlMs - this.marginMs();
    return this.now() - this.lastRenewWall < budget && this.mono() - this.lastRenewMono < budget;
  }

  private marginMs(): number {
    return Math.max(250, Math.floor(this.record!.ttlMs / 4));
  }

  /** Time since the last successful renewal began. */
  get sinceRenewalMs(): number {
    return this.record ? this.now() - this.lastRenewWall : Infinity;
  }

  get lastRenewedAt(): number | undefined {
    return this.record ? this.lastRenewWall : undefined;
  }

  /**
   * Renews the lease (If-Match on our ETag). Throws LeaseLostError, for good, when someone
   * else wrote the lease; other errors (network) leave the lease as it was, to retry.
   * Concurrent calls share one request.
   */
  renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async renewOnce(): Promise<void> {
    if (this.lost) throw this.lost;
    if (!this.record) throw new Error('the lease is not held');
    const startWall = this.now();
    const startMono = this.mono();
    const rec: LeaseRecord = { ...this.record, holder: this.o.self, renewedAt: startWall, ttlMs: this.o.ttlMs() };
    try {
      if (!this.o.conditional) {
        // Without conditional writes, look first: an explicit takeover elsewhere must still win.
        const cur = await this.read();
        if (!cur || cur.record.holder.id !== this.o.self.id || cur.record.epoch !== this.record.epoch) {
          throw new StoreError('PreconditionFailed', 'the lease changed');
        }
      }
      this.etag = await this.o.store.put(LEASE_KEY, this.encode(rec), this.o.conditional ? { ifMatch: this.etag! } : {});
      this.record = rec;
      this.lastRenewWall = startWall;
      this.lastRenewMono = startMono;
    } catch (err) {
      if (err instanceof StoreError && err.code === 'PreconditionFailed') {
        const cur = await this.read().catch(() => undefined);
        this.lost = new LeaseLostError(cur?.record);
        throw this.lost;
      }
      throw err;
    }
  }

  /** Resolves once the lease is valid (renewing if needed); throws LeaseLostError or a store error. */
  async ensureValid(): Promise<void> {
    if (this.lost) throw this.lost;
    if (this.valid()) return;
    await this.renew();
    if (!this.valid()) throw new StoreError('Timeout', 'the lease could not be renewed in time');
  }

  /** Marks the lease released so another machine can take it at once. */
  async release(): Promise<void> {
    if (!this.held) return;
    const rec: LeaseRecord = { ...this.record!, renewedAt: this.now(), released: true };
    try {
      await this.o.store.put(LEASE_KEY, this.encode(rec), this.o.conditional ? { ifMatch: this.etag! } : {});
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'PreconditionFailed')) throw err;
    }
    this.record = undefined;
  }
}

/** A second machine asked for read-write access on a store that ignores conditional writes. */
export class NoConditionalWritesError extends Error {
  constructor(readonly record: LeaseRecord) {
    super(`this store ignores conditional writes (If-None-Match / If-Match), so Filespace cannot keep two machines from writing at once; ` +
      `only ${describeHolder(record)}, the machine that writes this filespace, may mount it read-write. ` +
      'Mount it read-only here (--read-only), or, once that machine will never write again, move the write role here with --takeover');
    this.name = 'NoConditionalWritesError';
  }
}

/**
 * Checks whether the store honours conditional writes: a second create with If-None-Match
 * and a replace with a wrong If-Match must both be refused.
 */
export async function probeConditionalWrites(store: ObjectStore, token: string): Promise<boolean> {
  const key = `probe/conditional-${token}`;
  try {
    const etag = await store.put(key, Buffer.from('1'), { ifNoneMatch: '*' });
    const refused = async (p: Promise<unknown>) => p.then(() => false, (err) => {
      if (err instanceof StoreError && err.code === 'PreconditionFailed') return true;
      throw err;
    });
    const noneMatchHonoured = await refused(store.put(key, Buffer.from('2'), { ifNoneMatch: '*' }));
    const wrongEtag = etag.startsWith('"') ? '"00000000000000000000000000000000"' : '00000000000000000000000000000000';
    const matchHonoured = await refused(store.put(key, Buffer.from('3'), { ifMatch: wrongEtag }));
    return noneMatchHonoured && matchHonoured;
  } finally {
    await store.delete(key).catch(() => undefined);
  }
}
