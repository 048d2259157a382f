/**
 * The write lease: one object (`lease`) in the bucket that says which machine may commit
 * metadata. DESIGN invariant 4.
 *
 * - Taken with `If-None-Match: *` (no lease yet) or `If-Match: <etag>` (replacing an expired
 *   or released one, or a forced takeover); renewed with `If-Match` on the ETag of our own last
 *   write; released with `If-Match` too.
 * - A conditional write that fails does not by itself mean someone else wrote the lease: when
 *   S3 applies a write but its answer is lost (a stalled server, a timeout), the client's retry
 *   of the same request finds the ETag changed by the first attempt. So after a refused write
 *   the lease is read back, and it is this mount's own when it carries this machine's id, this
 *   lease's epoch and this mount's `nonce` (random per Lease, i.e. per engine start); the ETag
 *   alone proves nothing. Only a record written by anyone else means the lease is lost, at
 *   once and for good. A record without a nonce was written by an older version, never by
 *   this mount (which always writes one), so it counts as someone else's.
 * - Being offline is not losing the lease: renewals that fail for want of an answer leave it
 *   held but not valid (nothing may be committed), and the next renewal that gets through
 *   takes it back with `If-Match` however long ago it expired, as long as nobody wrote the
 *   object meanwhile. Another machine may take an expired lease; then that renewal is refused
 *   and the lease is lost.
 * - Expiry is judged on the holder's clock (`renewedAt + ttlMs`), so the holder must stop
 *   committing before that: `valid()` is false once `ttlMs - margin` has passed since the
 *   start of the last successful renewal, on the monotonic clock and the wall clock both (a
 *   suspended laptop's monotonic clock may not advance; a SIGSTOPped process's does).
 * - The lease alone does not fence a writer that was suspended between checking `valid()` and
 *   writing. The metadata log does: segments are created with If-None-Match on their sequence
 *   number and name their writer, and a new holder writes a fence segment after catching up,
 *   so an old holder's next segment collides with it and is refused (see role.ts). Once the
 *   log is compacted a slot can be empty again, so a segment whose PUT was answered after
 *   `valid()` ended counts only after a renewal succeeds (meta/compaction.ts).
 *
 * The object is sealed with the metadata key (it names machines); the ETag is what the
 * conditional writes compare.
 *
 * On a store that ignores conditional writes the same object is written unconditionally; it
 * then only designates the one machine allowed to write (see `conditional`), and the engine
 * refuses read-write mounting from any other machine unless the user takes over explicitly.
 */

import { randomBytes } from 'node:crypto';
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
  /** Random per mount: tells this mount's own writes apart (absent in records of older versions). */
  readonly nonce?: string;
}

export interface LeaseView {
  readonly record: LeaseRecord;
  readonly etag: string;
}

/** Someone else holds a live lease. */
export class LeaseHeldError extends Error {
  constructor(
    readonly record: LeaseRecord,
    now = Date.now(),
  ) {
    const h = record.holder;
    const ago = Math.max(0, Math.round((now - record.renewedAt) / 1000));
    super(
      `this filespace is being written by ${h.name} (process ${h.pid}, machine ${h.id.slice(0, 8)}), ` +
        `lease last renewed ${ago}s ago at ${new Date(record.renewedAt).toISOString()}; ` +
        'mount it read-only here (--read-only), or take over with --takeover if that machine is gone',
    );
    this.name = 'LeaseHeldError';
  }
}

/** This machine held the lease and no longer does. */
export class LeaseLostError extends Error {
  constructor(
    readonly by: LeaseRecord | undefined,
    unreadable = false,
  ) {
    super(
      by
        ? `the write lease was taken over by ${by.holder.name} (process ${by.holder.pid}, machine ${by.holder.id.slice(0, 8)}) at ${new Date(by.acquiredAt).toISOString()}`
        : unreadable
          ? 'the write lease in the bucket was replaced by an object this machine cannot read'
          : 'the write lease was removed from the bucket',
    );
    this.name = 'LeaseLostError';
  }
}

/** Reads the lease object (who writes the filespace), or undefined when there is none. */
export async function readLease(store: ObjectStore, metaKey: Buffer): Promise<LeaseView | undefined> {
  const got = await store.get(LEASE_KEY);
  if (!got) return undefined;
  const record = JSON.parse(open(metaKey, got.body, `meta:${LEASE_KEY}`, 'the write lease').toString('utf8')) as LeaseRecord;
  return { record, etag: got.etag };
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
  /** This mount's nonce; random by default. */
  readonly nonce?: string;
}

/** Attempts of one renewal when the bucket holds an earlier write of ours whose answer was lost. */
const RENEW_ATTEMPTS = 3;

export class Lease {
  private etag: string | undefined;
  private record: LeaseRecord | undefined;
  private lastRenewWall = 0;
  private lastRenewMono = 0;
  private lost: LeaseLostError | undefined;
  /** Wall time of the first failed renewal since the last successful one. */
  private failingSince: number | undefined;
  private readonly now: () => number;
  private readonly mono: () => number;
  private readonly nonce: string;
  private renewing: Promise<void> | undefined;

  constructor(private readonly o: LeaseOptions) {
    this.now = o.now ?? Date.now;
    this.mono = o.monotonic ?? (() => performance.now());
    this.nonce = o.nonce ?? randomBytes(12).toString('hex');
  }

  /** True when `r` is the very record `mine` that this mount wrote (not merely by this machine). */
  private isOwnWrite(r: LeaseRecord, mine: LeaseRecord): boolean {
    return r.holder.id === this.o.self.id && r.nonce === this.nonce && r.epoch === mine.epoch;
  }

  private encode(r: LeaseRecord): Buffer {
    return seal(this.o.metaKey, Buffer.from(JSON.stringify(r), 'utf8'), `meta:${LEASE_KEY}`);
  }

  /** Reads the lease object, or undefined when there is none. */
  read(): Promise<LeaseView | undefined> {
    return readLease(this.o.store, this.o.metaKey);
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
        nonce: this.nonce,
      };
      let etag: string;
      try {
        etag = await this.o.store.put(LEASE_KEY, this.encode(rec), this.conditionFor(cur?.etag));
      } catch (err) {
        if (!(err instanceof StoreError && err.code === 'PreconditionFailed')) throw err;
        // Our own write whose answer was lost (the retry was refused), or someone else's.
        const found = await this.read();
        if (found && this.isOwnWrite(found.record, rec) && found.record.acquiredAt === rec.acquiredAt) {
          etag = found.etag;
        } else if (attempt < 3) {
          continue; // someone wrote the lease between our read and write: look again
        } else {
          throw err;
        }
      }
      this.etag = etag;
      this.record = rec;
      this.lost = undefined;
      this.failingSince = undefined;
      this.lastRenewWall = startWall;
      this.lastRenewMono = startMono;
      return { previous: prev };
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

  /** Wall time until which this machine may commit without another renewal (held leases only). */
  get validUntil(): number | undefined {
    return this.held ? this.lastRenewWall + this.record!.ttlMs - this.marginMs() : undefined;
  }

  /** Wall time of the first renewal that failed since the last one that succeeded (undefined: none failed). */
  get renewFailingSince(): number | undefined {
    return this.held ? this.failingSince : undefined;
  }

  /**
   * Renews the lease (If-Match on our ETag), also long after it expired while this machine was
   * offline. Throws LeaseLostError, for good, when someone else wrote the lease; other errors
   * (network) leave the lease as it was, to retry. Concurrent calls share one request.
   */
  renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async renewOnce(): Promise<void> {
    if (this.lost) throw this.lost;
    if (!this.record) throw new Error('the lease is not held');
    try {
      for (let attempt = 1; ; attempt++) {
        if (await this.renewAttempt()) break;
        // The bucket holds an earlier renewal of ours whose answer was lost: its ETag is adopted;
        // renew again so that validity runs from a write whose start is known.
        if (attempt >= RENEW_ATTEMPTS)
          throw new StoreError('Timeout', 'the write lease could not be renewed: the bucket keeps answering late');
      }
      this.failingSince = undefined;
    } catch (err) {
      if (!(err instanceof LeaseLostError)) this.failingSince ??= this.now();
      throw err;
    }
  }

  /**
   * One conditional write of the lease. True when renewed (validity from the start of this
   * attempt); false when the write was refused but the lease object is still this mount's
   * own from an earlier attempt (its ETag is adopted, not yet its validity).
   */
  private async renewAttempt(): Promise<boolean> {
    const mine = this.record!;
    const startWall = this.now();
    const startMono = this.mono();
    const rec: LeaseRecord = { ...mine, holder: this.o.self, renewedAt: startWall, ttlMs: this.o.ttlMs(), nonce: this.nonce };
    try {
      if (!this.o.conditional) {
        // Without conditional writes, look first: an explicit takeover elsewhere must still win.
        const cur = await this.read();
        if (!cur || cur.record.holder.id !== this.o.self.id || cur.record.epoch !== mine.epoch) {
          throw new StoreError('PreconditionFailed', 'the lease changed');
        }
      }
      this.etag = await this.o.store.put(LEASE_KEY, this.encode(rec), this.o.conditional ? { ifMatch: this.etag! } : {});
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'PreconditionFailed')) throw err;
      // Refused: whose record is there now? A read that gets no answer leaves it undecided
      // (the next renewal asks again); one that cannot be opened was not written by us.
      let cur: LeaseView | undefined;
      try {
        cur = await this.read();
      } catch (readErr) {
        if (readErr instanceof StoreError) throw readErr;
        this.lost = new LeaseLostError(undefined, true);
        throw this.lost;
      }
      if (!cur || !this.isOwnWrite(cur.record, mine)) {
        this.lost = new LeaseLostError(cur?.record);
        throw this.lost;
      }
      this.etag = cur.etag;
      if (cur.record.renewedAt !== rec.renewedAt || cur.record.ttlMs !== rec.ttlMs) {
        this.record = cur.record;
        return false;
      }
      // The very record this attempt wrote, applied by an earlier send of this same request.
    }
    this.record = rec;
    this.lastRenewWall = startWall;
    this.lastRenewMono = startMono;
    return true;
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
    super(
      `this store ignores conditional writes (If-None-Match / If-Match), so Filespace cannot keep two machines from writing at once; ` +
        `only ${describeHolder(record)}, the machine that writes this filespace, may mount it read-write. ` +
        'Mount it read-only here (--read-only), or, once that machine will never write again, move the write role here with --takeover',
    );
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
    const refused = async (p: Promise<unknown>) =>
      p.then(
        () => false,
        (err) => {
          if (err instanceof StoreError && err.code === 'PreconditionFailed') return true;
          throw err;
        },
      );
    const noneMatchHonoured = await refused(store.put(key, Buffer.from('2'), { ifNoneMatch: '*' }));
    const wrongEtag = etag.startsWith('"') ? '"00000000000000000000000000000000"' : '00000000000000000000000000000000';
    const matchHonoured = await refused(store.put(key, Buffer.from('3'), { ifMatch: wrongEtag }));
    return noneMatchHonoured && matchHonoured;
  } finally {
    await store.delete(key).catch(() => undefined);
  }
}
