// The write lease on a store: taken once, refused to a second machine while live, taken after
// expiry or release, lost for good when someone else writes it, and self-expiring on the
// holder's side before anyone else could take it. A conditional write that S3 applied but whose
// answer was lost is recognised as this mount's own by the record's content; a holder offline
// for long takes its lease back unless another machine took it. Also the check for stores that
// ignore conditional writes.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  Lease,
  LeaseHeldError,
  LeaseLostError,
  Machine,
  NoConditionalWritesError,
  probeConditionalWrites,
} from '../../electron/engine/meta/lease';
import { seal } from '../../electron/engine/chunk/crypto';
import { MemoryStore } from '../../electron/engine/store/memory';
import { GetResult, HeadResult, ObjectStore, PutOptions, StoreError } from '../../electron/engine/store/types';

/** A store that drops If-None-Match / If-Match, like some S3-compatible servers do. */
class IgnoresConditions implements ObjectStore {
  readonly description = 'no-conditions:';
  constructor(private readonly inner: ObjectStore) {}
  get(key: string, range?: { start: number; end: number }): Promise<GetResult | undefined> {
    return this.inner.get(key, range);
  }
  head(key: string): Promise<HeadResult | undefined> {
    return this.inner.head(key);
  }
  put(key: string, body: Buffer, _o?: PutOptions): Promise<string> {
    return this.inner.put(key, body);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  deleteMany(keys: readonly string[]): Promise<void> {
    return this.inner.deleteMany(keys);
  }
  list(prefix: string): Promise<string[]> {
    return this.inner.list(prefix);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

const A: Machine = { id: 'aaaaaaaa-0000-4000-8000-000000000001', name: 'laptop', pid: 101 };
const B: Machine = { id: 'bbbbbbbb-0000-4000-8000-000000000002', name: 'desktop', pid: 202 };

function clock(start = 1_000_000) {
  const c = {
    wall: start,
    mono: 0,
    advance(ms: number) {
      c.wall += ms;
      c.mono += ms;
    },
  };
  return c;
}

function lease(
  store: ObjectStore,
  key: Buffer,
  self: Machine,
  c: ReturnType<typeof clock>,
  conditional = true,
  ttlMs = 10_000,
): Lease {
  return new Lease({ store, metaKey: key, self, ttlMs: () => ttlMs, conditional, now: () => c.wall, monotonic: () => c.mono });
}

/**
 * One machine's view of the bucket, with the faults a stalled S3 causes on writes of the lease:
 * - `lostAnswer`: the next lease write is applied, but its answer is lost (Timeout);
 * - `lostAnswerRetried`: the same, and the client sends the request again, as the S3 client
 *   does after a timeout; the retry is refused (412) because the first attempt changed the ETag;
 * - `offline`: nothing gets through (Unreachable);
 * - `holding`: lease writes wait until `let()` sends them on (to order races between machines).
 */
class StalledS3 implements ObjectStore {
  readonly description = 'stalled:';
  lostAnswer = false;
  lostAnswerRetried = false;
  offline = false;
  holding = false;
  private readonly held: Array<() => void> = [];
  constructor(private readonly inner: ObjectStore) {}
  private check(): void {
    if (this.offline) throw new StoreError('Unreachable', 'connect ECONNREFUSED');
  }
  async get(key: string, range?: { start: number; end: number }): Promise<GetResult | undefined> {
    this.check();
    return this.inner.get(key, range);
  }
  async head(key: string): Promise<HeadResult | undefined> {
    this.check();
    return this.inner.head(key);
  }
  async put(key: string, body: Buffer, o?: PutOptions): Promise<string> {
    this.check();
    if (key === 'lease' && this.holding) await new Promise<void>((resolve) => this.held.push(resolve));
    if (key === 'lease' && this.lostAnswerRetried) {
      this.lostAnswerRetried = false;
      await this.inner.put(key, body, o);
      return this.inner.put(key, body, o);
    }
    if (key === 'lease' && this.lostAnswer) {
      this.lostAnswer = false;
      await this.inner.put(key, body, o);
      throw new StoreError('Timeout', 'request timed out');
    }
    return this.inner.put(key, body, o);
  }
  get waiting(): number {
    return this.held.length;
  }
  /** Sends the first held lease write on. */
  let(): void {
    this.held.shift()?.();
  }
  async delete(key: string): Promise<void> {
    this.check();
    return this.inner.delete(key);
  }
  async deleteMany(keys: readonly string[]): Promise<void> {
    this.check();
    return this.inner.deleteMany(keys);
  }
  async list(prefix: string): Promise<string[]> {
    this.check();
    return this.inner.list(prefix);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** Resolves once `cond` holds, checking after each turn of the event loop (bounded). */
async function settle(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  throw new Error(`never happened: ${what}`);
}

describe('write lease', () => {
  it('a second machine is refused while the lease is live, with the holder and its last renewal named', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const c = clock();
    const a = lease(store, key, A, c);
    await a.acquire({ takeover: false });
    assert.ok(a.valid());
    c.advance(3000);
    const b = lease(store, key, B, c);
    await assert.rejects(b.acquire({ takeover: false }), (err: unknown) => {
      assert.ok(err instanceof LeaseHeldError);
      assert.match(err.message, /laptop \(process 101, machine aaaaaaaa\)/);
      assert.match(err.message, /renewed 3s ago/);
      assert.match(err.message, /--read-only/);
      return true;
    });
    assert.equal((await b.read())?.record.holder.id, A.id, 'the refused attempt changed nothing');
  });

  it('the lease is taken once it expired; the old holder then finds it lost for good', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const c = clock();
    const a = lease(store, key, A, c);
    await a.acquire({ takeover: false });
    c.advance(10_001);
    assert.equal(a.valid(), false, 'the holder stops trusting its lease before it expires');
    const b = lease(store, key, B, c);
    const { previous } = await b.acquire({ takeover: false });
    assert.equal(previous?.holder.id, A.id);
    assert.equal((await b.read())?.record.epoch, 2);
    await assert.rejects(a.renew(), (err: unknown) => err instanceof LeaseLostError && /desktop/.test(err.message));
    await assert.rejects(a.ensureValid(), LeaseLostError);
    assert.equal(a.valid(), false);
  });

  it('the holder stops trusting the lease after ttl minus a margin, on either clock', async () => {
    const store = new MemoryStore();
    const c = clock();
    const a = lease(store, randomBytes(32), A, c);
    await a.acquire({ takeover: false });
    c.wall += 7_600; // wall clock jumped (suspend), monotonic did not
    assert.equal(a.valid(), false);
    await a.renew();
    assert.ok(a.valid());
    c.mono += 7_600; // monotonic advanced (SIGSTOP), wall clock did not
    assert.equal(a.valid(), false);
    await a.ensureValid();
    assert.ok(a.valid(), 'renewing restores it while nobody else took the lease');
  });

  it('renewal keeps the lease live for others to see; release lets another machine in at once', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const c = clock();
    const a = lease(store, key, A, c);
    await a.acquire({ takeover: false });
    for (let i = 0; i < 5; i++) {
      c.advance(4000);
      await a.renew();
    }
    const b = lease(store, key, B, c);
    await assert.rejects(b.acquire({ takeover: false }), LeaseHeldError);
    await a.release();
    await b.acquire({ takeover: false });
    assert.equal((await b.read())?.record.holder.id, B.id);
  });

  it('the same machine retakes its own lease at once after a crash', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const c = clock();
    await lease(store, key, A, c).acquire({ takeover: false });
    const again = lease(store, key, { ...A, pid: 999 }, c);
    await again.acquire({ takeover: false });
    assert.equal((await again.read())?.record.holder.pid, 999);
  });

  it('takeover takes a live lease and fences the holder', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const c = clock();
    const a = lease(store, key, A, c);
    await a.acquire({ takeover: false });
    const b = lease(store, key, B, c);
    await b.acquire({ takeover: true });
    await assert.rejects(a.renew(), LeaseLostError);
    await assert.doesNotReject(b.renew());
  });

  it('the lease object is sealed: a wrong key cannot read or forge it', async () => {
    const store = new MemoryStore();
    const c = clock();
    await lease(store, randomBytes(32), A, c).acquire({ takeover: false });
    await assert.rejects(lease(store, randomBytes(32), B, c).acquire({ takeover: false }));
  });
});

describe('write lease while S3 stalls or is out of reach', () => {
  it("a renewal applied by S3 whose retry was refused is this mount's own: the lease stays held and valid", async () => {
    const bucket = new MemoryStore();
    const s3 = new StalledS3(bucket);
    const key = randomBytes(32);
    const c = clock();
    const a = lease(s3, key, A, c);
    await a.acquire({ takeover: false });
    c.advance(4000);
    s3.lostAnswerRetried = true;
    await a.renew();
    assert.ok(a.held && a.valid(), 'not lost: the refused retry followed our own write');
    assert.equal(a.lostError, undefined);
    assert.equal(a.lastRenewedAt, c.wall, 'validity runs from the start of that renewal');
    c.advance(4000);
    await a.renew(); // the adopted ETag is the bucket's: renewing goes on normally
    assert.ok(a.valid());
    assert.equal((await a.read())?.record.renewedAt, c.wall);
    assert.equal(a.renewFailingSince, undefined);
  });

  it('a renewal that timed out but was applied: the next one finds our record, adopts it and renews', async () => {
    const s3 = new StalledS3(new MemoryStore());
    const c = clock();
    const a = lease(s3, randomBytes(32), A, c);
    await a.acquire({ takeover: false });
    c.advance(4000);
    const failedAt = c.wall;
    s3.lostAnswer = true;
    await assert.rejects(a.renew(), (err: unknown) => err instanceof StoreError && err.code === 'Timeout');
    assert.equal(a.renewFailingSince, failedAt);
    c.advance(4000);
    assert.equal(a.valid(), false, 'a write whose answer never came does not extend validity');
    await a.renew();
    assert.ok(a.held && a.valid());
    assert.equal(a.lastRenewedAt, c.wall);
    assert.equal(a.renewFailingSince, undefined);
  });

  it('an acquisition applied by S3 whose retry was refused is taken as ours, without a second epoch', async () => {
    const s3 = new StalledS3(new MemoryStore());
    const c = clock();
    const a = lease(s3, randomBytes(32), A, c);
    s3.lostAnswerRetried = true;
    await a.acquire({ takeover: false });
    assert.equal(a.current?.epoch, 1);
    assert.equal((await a.read())?.record.epoch, 1);
    c.advance(4000);
    await a.renew();
    assert.ok(a.valid());
  });

  it("a refused renewal is loss when the record is another machine's, another mount's of this machine, or has no nonce", async () => {
    const key = randomBytes(32);
    const cases: Array<[string, (bucket: MemoryStore, c: ReturnType<typeof clock>) => Promise<void>, RegExp]> = [
      [
        'another machine took over',
        async (bucket, c) => void (await lease(bucket, key, B, c).acquire({ takeover: true })),
        /taken over by desktop \(process 202, machine bbbbbbbb\)/,
      ],
      [
        'a later mount of this machine',
        async (bucket, c) => void (await lease(bucket, key, { ...A, pid: 999 }, c).acquire({ takeover: false })),
        /taken over by laptop \(process 999/,
      ],
      [
        'a record without a nonce, same holder and epoch',
        async (bucket) => {
          const cur = (await new Lease({ store: bucket, metaKey: key, self: A, ttlMs: () => 10_000, conditional: true }).read())!;
          const { nonce: _drop, ...old } = cur.record;
          await bucket.put('lease', seal(key, Buffer.from(JSON.stringify(old), 'utf8'), 'meta:lease'));
        },
        /taken over by laptop \(process 101/,
      ],
    ];
    for (const [label, overwrite, named] of cases) {
      const bucket = new MemoryStore();
      const c = clock();
      const a = lease(new StalledS3(bucket), key, A, c);
      await a.acquire({ takeover: false });
      await overwrite(bucket, c);
      await assert.rejects(a.renew(), (err: unknown) => err instanceof LeaseLostError && named.test(err.message), label);
      assert.equal(a.held, false, label);
      assert.equal(a.valid(), false, label);
    }
  });

  it('a refused renewal whose read-back gets no answer is undecided, not loss', async () => {
    const bucket = new MemoryStore();
    const s3 = new StalledS3(bucket);
    const c = clock();
    const a = lease(s3, randomBytes(32), A, c);
    await a.acquire({ takeover: false });
    const realGet = s3.get.bind(s3);
    s3.lostAnswerRetried = true;
    s3.get = async () => {
      throw new StoreError('Timeout', 'request timed out');
    };
    await assert.rejects(a.renew(), (err: unknown) => err instanceof StoreError && err.code === 'Timeout');
    assert.ok(a.held, 'not lost while it cannot tell');
    s3.get = realGet;
    await a.renew();
    assert.ok(a.valid());
  });

  it('offline for far longer than the lease: held but not valid, and taken back at reconnect when nobody took it', async () => {
    const s3 = new StalledS3(new MemoryStore());
    const c = clock();
    const a = lease(s3, randomBytes(32), A, c);
    await a.acquire({ takeover: false });
    const lastOk = c.wall;
    s3.offline = true;
    for (let i = 0; i < 60; i++) {
      c.advance(60_000);
      await assert.rejects(a.renew(), (err: unknown) => err instanceof StoreError && err.code === 'Unreachable');
    }
    assert.ok(a.held, 'an hour offline is not losing the lease');
    assert.equal(a.valid(), false, 'but nothing may be committed');
    assert.equal(a.lastRenewedAt, lastOk);
    assert.equal(a.renewFailingSince, lastOk + 60_000);
    assert.ok(a.validUntil! < c.wall);
    s3.offline = false;
    await a.ensureValid();
    assert.ok(a.valid());
    assert.equal((await a.read())?.record.epoch, 1, 'the same lease, taken back with If-Match');
    assert.equal(a.renewFailingSince, undefined);
  });

  it('offline while another machine takes the expired lease and releases it: the holder finds it lost at reconnect', async () => {
    const bucket = new MemoryStore();
    const s3 = new StalledS3(bucket);
    const key = randomBytes(32);
    const c = clock();
    const a = lease(s3, key, A, c);
    await a.acquire({ takeover: false });
    s3.offline = true;
    c.advance(20_000);
    const b = lease(bucket, key, B, c);
    await b.acquire({ takeover: false });
    await b.release();
    s3.offline = false;
    await assert.rejects(a.ensureValid(), (err: unknown) => err instanceof LeaseLostError && /desktop/.test(err.message));
    assert.equal(a.held, false);
  });

  for (const first of ['the returning holder', 'the other machine'] as const) {
    it(`at reconnect, racing another machine for the expired lease, If-Match decides: ${first} wins`, async () => {
      const bucket = new MemoryStore();
      const key = randomBytes(32);
      const c = clock();
      const sA = new StalledS3(bucket);
      const sB = new StalledS3(bucket);
      const a = lease(sA, key, A, c);
      await a.acquire({ takeover: false });
      c.advance(20_000); // a was offline: its lease has expired
      sA.holding = true;
      sB.holding = true;
      const renewing = a.renew().then(
        () => 'renewed',
        (err: unknown) => err,
      );
      const taking = lease(sB, key, B, c)
        .acquire({ takeover: false })
        .then(
          () => 'taken',
          (err: unknown) => err,
        );
      await settle('both lease writes to be on their way', () => sA.waiting === 1 && sB.waiting === 1);
      sB.holding = false; // B's later attempts go straight through
      if (first === 'the returning holder') {
        sA.let();
        assert.equal(await renewing, 'renewed');
        sB.let();
        const err = await taking;
        assert.ok(err instanceof LeaseHeldError, String(err));
        assert.ok(a.valid());
      } else {
        sB.let();
        assert.equal(await taking, 'taken');
        sA.let();
        const err = await renewing;
        assert.ok(err instanceof LeaseLostError && /desktop/.test(err.message), String(err));
        assert.equal(a.held, false);
      }
      const holders = (await a.read())!.record.holder.id;
      assert.equal(holders, first === 'the returning holder' ? A.id : B.id, 'exactly one of them holds the lease');
    });
  }
});

describe('stores that ignore conditional writes', () => {
  it('the probe tells them apart', async () => {
    assert.equal(await probeConditionalWrites(new MemoryStore(), 't1'), true);
    const plain = new MemoryStore();
    assert.equal(await probeConditionalWrites(new IgnoresConditions(plain), 't2'), false);
    assert.deepEqual(await plain.list('probe/'), [], 'the probe cleans up');
  });

  it('only the designated machine may write; another is refused even after release, unless it takes over', async () => {
    const store = new IgnoresConditions(new MemoryStore());
    const key = randomBytes(32);
    const c = clock();
    const a = lease(store, key, A, c, false);
    await a.acquire({ takeover: false });
    await a.release();
    c.advance(60_000);
    const b = lease(store, key, B, c, false);
    await assert.rejects(
      b.acquire({ takeover: false }),
      (err: unknown) =>
        err instanceof NoConditionalWritesError && /ignores conditional writes/.test(err.message) && /laptop/.test(err.message),
    );
    await b.acquire({ takeover: true });
    await assert.rejects(lease(store, key, A, c, false).acquire({ takeover: false }), NoConditionalWritesError);
  });
});
