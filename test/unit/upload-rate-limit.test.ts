// The upload bandwidth budget on a fake clock: burst after idle, debt after a large request,
// the long-run rate, live changes releasing waiters, and close.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RateLimiter } from '../../electron/engine/upload/ratelimit';

describe('RateLimiter', () => {
  it('lets the first request through at once and makes the next wait for the debt', () => {
    let now = 10_000;
    const rl = new RateLimiter(1000, () => now, 1000);
    assert.equal(rl.reserve(4000), 0, 'after idle the first request goes, whatever its size');
    // 4000 bytes at 1000 B/s from a start one second in the past: free again 3 s from now.
    assert.equal(rl.reserve(10), 3000);
    now += 1000;
    assert.equal(rl.reserve(10), 2010, 'each reservation queues after the previous');
  });

  it('adjust returns an over-estimate to the budget and charges an under-estimate', () => {
    let now = 10_000;
    const rl = new RateLimiter(1000, () => now, 1000);
    rl.reserve(4000); // free again at 13 000
    rl.adjust(-2000); // only 2000 were sent: free at 11 000
    assert.equal(rl.reserve(10), 1000);
    now = 20_000;
    const off = new RateLimiter(0, () => now);
    off.adjust(5000);
    assert.equal(off.reserve(10), 0, 'no limit: adjustments change nothing');
  });

  it('keeps any stretch within rate * (time + burst) + one request', () => {
    let now = 0;
    const rate = 64 * 1024;
    const rl = new RateLimiter(rate, () => now, 1000);
    const sends: Array<{ at: number; bytes: number }> = [];
    let seed = 7;
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const bytes = 1 + (seed % (256 * 1024));
      now += seed % 3 === 0 ? seed % 5000 : 0; // sometimes idle for a while
      const wait = rl.reserve(bytes);
      sends.push({ at: now + wait, bytes });
    }
    for (let i = 0; i < sends.length; i++) {
      let sum = 0;
      for (let j = i; j < sends.length; j++) {
        sum += sends[j]!.bytes;
        const span = sends[j]!.at - sends[i]!.at;
        const allowed = (rate * (span + 1000)) / 1000 + sends[j]!.bytes;
        assert.ok(sum <= allowed + 1e-6, `sends ${i}..${j}: ${sum} bytes in ${span} ms, allowed ${allowed}`);
      }
    }
  });

  it('sustains the configured rate when saturated', () => {
    const t0 = 100_000;
    let now = t0;
    const rl = new RateLimiter(1024 * 1024, () => now, 1000);
    let total = 0;
    for (let i = 0; i < 100; i++) {
      now += rl.reserve(256 * 1024); // the caller sends as soon as allowed
      total += 256 * 1024;
    }
    // 100 sends of 256 KiB at 1 MiB/s, the first one second early (burst): the last one starts
    // when the 99 before it have been paid for, 99 * 0.25 s - 1 s after the first.
    assert.equal(total, 25 * 1024 * 1024);
    assert.ok(Math.abs(now - t0 - (99 * 250 - 1000)) <= 1, `last send at ${now - t0} ms`);
  });

  it('no limit, and a limit lifted or changed, lets waiters go', async () => {
    const off = new RateLimiter(0);
    assert.equal(off.reserve(1e12), 0);
    const rl = new RateLimiter(16 * 1024); // real clock
    await rl.take(16 * 1024 * 60); // the first goes
    const waiting = rl.take(1024); // would wait a minute
    let done = false;
    void waiting.then(() => (done = true));
    // Whatever was due already has run by the next turn of the event loop; a waiter that should
    // not have waited would be done by now.
    await new Promise((r) => setImmediate(r));
    assert.equal(done, false, 'a request past the budget waits');
    rl.setRate(0);
    await waiting;
    assert.equal(rl.limit, 0);
  });

  it('close releases waiters and lets later requests pass', async () => {
    const rl = new RateLimiter(16 * 1024);
    await rl.take(16 * 1024 * 60);
    const waiting = rl.take(1024);
    rl.close();
    await waiting;
    await rl.take(1e9);
  });
});
