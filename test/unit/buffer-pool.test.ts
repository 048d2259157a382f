// Pins down the chunk buffer pool: what it holds never exceeds its slots, waiters are served in
// order, buffers come back for reuse, a discarded buffer is never lent again, small requests do
// not pin a whole buffer, only a few free buffers are kept, and idle ones are let go.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../electron/engine/util/bufferPool';

const SIZE = 1024 * 1024;

describe('BufferPool', () => {
  it('lends at most `slots` buffers and serves waiters first come, first served', async () => {
    const pool = new BufferPool(SIZE, () => 2);
    const a = await pool.acquire(SIZE);
    const b = await pool.acquire(SIZE);
    const order: string[] = [];
    const c = pool.acquire(SIZE).then((buf) => (order.push('c'), buf));
    const d = pool.acquire(SIZE).then((buf) => (order.push('d'), buf));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(order, [], 'both wait while two buffers are out');
    pool.release(a);
    const cb = await c;
    assert.equal(cb, a, 'the buffer given back is lent again');
    assert.deepEqual(order, ['c']);
    pool.release(b);
    assert.equal(await d, b);
    assert.deepEqual(order, ['c', 'd']);
    assert.equal(pool.heldBytes, 2 * SIZE);
    assert.equal(pool.peakBytes, 2 * SIZE);
    assert.equal(pool.boundBytes, 2 * SIZE);
  });

  it('never lends a discarded buffer again, and still frees its slot', async () => {
    const pool = new BufferPool(SIZE, () => 1);
    const a = await pool.acquire(SIZE);
    const next = pool.acquire(SIZE);
    pool.discard(a);
    const b = await next;
    assert.notEqual(b, a);
    assert.notEqual(b.buffer, a.buffer);
    assert.equal(pool.heldBytes, SIZE, 'the discarded buffer is no longer counted');
    pool.release(b);
    assert.equal(await pool.acquire(SIZE), b);
  });

  it('with smallBySize, small requests take their own size of the slots, and the bound holds', async () => {
    const pool = new BufferPool(SIZE, () => 2, { smallBySize: true });
    const whole = await pool.acquire(SIZE);
    pool.release(whole); // kept free for reuse
    const smalls: Buffer[] = [];
    for (let i = 0; i < 16; i++) smalls.push(await pool.acquire(SIZE / 8)); // two slots' worth, all at once
    assert.ok(pool.heldBytes <= pool.boundBytes, `held ${pool.heldBytes} of ${pool.boundBytes}: the free buffer gave way`);
    let got = false;
    const waiting = pool.acquire(4096).then((buf) => ((got = true), buf));
    await new Promise((r) => setImmediate(r));
    assert.equal(got, false, 'the slots are full: even a small request waits');
    pool.release(smalls.pop()!);
    assert.equal((await waiting).length, 4096);
    let gotWhole = false;
    const wholeWaits = pool.acquire(SIZE).then((buf) => ((gotWhole = true), buf));
    for (let i = 0; i < 7; i++) pool.release(smalls.pop()!);
    await new Promise((r) => setImmediate(r));
    assert.equal(gotWhole, false, 'a whole buffer waits for a whole slot');
    pool.release(smalls.pop()!);
    assert.equal((await wholeWaits).length, SIZE);
    assert.ok(pool.peakBytes <= pool.boundBytes, `peak ${pool.peakBytes} of ${pool.boundBytes}`);
  });

  it('gives small requests a buffer of their own size, in a slot', async () => {
    const pool = new BufferPool(SIZE, () => 1);
    const small = await pool.acquire(4096);
    assert.equal(small.length, 4096);
    assert.equal(pool.heldBytes, 4096);
    const waiting = pool.acquire(SIZE);
    let got = false;
    void waiting.then(() => (got = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(got, false, 'a small buffer takes a slot too');
    pool.release(small);
    assert.equal((await waiting).length, SIZE);
    assert.equal(pool.peakBytes, SIZE);
  });

  it('holds no more than its bound however requests interleave', async () => {
    let slots = 3;
    const pool = new BufferPool(SIZE, () => slots);
    const live = new Set<Buffer>();
    let seed = 11;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
    const workers = Array.from({ length: 8 }, async () => {
      for (let i = 0; i < 50; i++) {
        const buf = await pool.acquire(rnd(2) ? SIZE : 1 + rnd(SIZE / 8));
        assert.equal(live.has(buf), false, 'a buffer is lent to one holder at a time');
        live.add(buf);
        assert.ok(pool.inUse <= slots, `${pool.inUse} lent with ${slots} slots`);
        await new Promise((r) => setImmediate(r));
        live.delete(buf);
        if (rnd(5) === 0) pool.discard(buf);
        else pool.release(buf);
      }
    });
    await Promise.all(workers);
    assert.ok(pool.peakBytes <= 3 * SIZE, `peak ${pool.peakBytes} over the bound ${3 * SIZE}`);
    slots = 1;
    assert.ok(pool.heldBytes <= 3 * SIZE);
  });

  it('keeps only a few free buffers once work ebbs', async () => {
    const pool = new BufferPool(SIZE, () => 6, { keepFree: 2 });
    const bufs = await Promise.all(Array.from({ length: 6 }, () => pool.acquire(SIZE)));
    assert.equal(pool.heldBytes, 6 * SIZE);
    for (const b of bufs) pool.release(b);
    assert.equal(pool.heldBytes, 2 * SIZE, 'four of the six are let go');
    assert.equal(pool.peakBytes, 6 * SIZE);
    const again = await pool.acquire(SIZE);
    assert.ok(bufs.includes(again), 'a kept one is reused');
  });

  it('lets go of free buffers once idle, and refuses what it did not lend', async () => {
    const pool = new BufferPool(SIZE, () => 2, { idleMs: 10 });
    const a = await pool.acquire(SIZE);
    pool.release(a);
    assert.equal(pool.heldBytes, SIZE);
    const deadline = Date.now() + 10_000;
    while (pool.heldBytes > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.equal(pool.heldBytes, 0);
    assert.throws(() => pool.release(a), /not lent/);
    await assert.rejects(pool.acquire(SIZE + 1), RangeError);
  });
});
