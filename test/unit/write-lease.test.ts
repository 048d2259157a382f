// The write lease on a store: taken once, refused to a second machine while live, taken after
// expiry or release, lost for good when someone else writes it, and self-expiring on the
// holder's side before anyone else could take it. Also the check for stores that ignore
// conditional writes.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  Lease, LeaseHeldError, LeaseLostError, Machine, NoConditionalWritesError, probeConditionalWrites,
} from '../../electron/engine/meta/lease';
import { MemoryStore } from '../../electron/engine/store/memory';
import { GetResult, HeadResult, ObjectStore, PutOptions } from '../../electron/engine/store/types';

/** A store that drops If-None-Match / If-Match, like some S3-compatible servers do. */
class IgnoresConditions implements ObjectStore {
  readonly description = 'no-conditions:';
  constructor(private readonly inner: ObjectStore) {}
  get(key: string, range?: { start: number; end: number }): Promise<GetResult | undefined> { return this.inner.get(key, range); }
  head(key: string): Promise<HeadResult | undefined> { return this.inner.head(key); }
  put(key: string, body: Buffer, _o?: PutOptions): Promise<string> { return this.inner.put(key, body); }
  delete(key: string): Promise<void> { return this.inner.delete(key); }
  deleteMany(keys: readonly string[]): Promise<void> { return this.inner.deleteMany(keys); }
  list(prefix: string): Promise<string[]> { return this.inner.list(prefix); }
  close(): Promise<void> { return this.inner.close(); }
}

const A: Machine = { id: 'aaaaaaaa-0000-4000-8000-000000000001', name: 'laptop', pid: 101 };
const B: Machine = { id: 'bbbbbbbb-0000-4000-8000-000000000002', name: 'desktop', pid: 202 };

function clock(start = 1_000_000) {
  const c = { wall: start, mono: 0, advance(ms: number) { c.wall += ms; c.mono += ms; } };
  return c;
}

function lease(store: ObjectStore, key: Buffer, self: Machine, c: ReturnType<typeof clock>, conditional = true, ttlMs = 10_000): Lease {
  return new Lease({ store, metaKey: key, self, ttlMs: () => ttlMs, conditional, now: () => c.wall, monotonic: () => c.mono });
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
    await assert.rejects(b.acquire({ takeover: false }), (err: unknown) => err instanceof NoConditionalWritesError && /ignores conditional writes/.test(err.message) && /laptop/.test(err.message));
    await b.acquire({ takeover: true });
    await assert.rejects(lease(store, key, A, c, false).acquire({ takeover: false }), NoConditionalWritesError);
  });
});
