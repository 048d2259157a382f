// Pins down the engine's concurrency primitives: Semaphore bounds in-flight work, KeyedMutex runs one key's work in call order, SingleFlight merges concurrent loads, backoff stays in its bounds.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KeyedMutex, Semaphore, Signal, SingleFlight, backoffMs } from '../../electron/engine/util/concurrency';

/** A promise with its resolve/reject exposed, so tests decide when work finishes. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every queued microtask and promise continuation run. */
async function flush(): Promise<void> {
  for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
}

describe('Semaphore', () => {
  it('never runs more than its limit at once, and runs everything eventually', async () => {
    const sem = new Semaphore(3);
    let active = 0;
    let peak = 0;
    const gates = Array.from({ length: 10 }, () => deferred());
    const runs = gates.map((g, i) =>
      sem.run(async () => {
        active++;
        peak = Math.max(peak, active);
        await g.promise;
        active--;
        return i;
      }),
    );
    await flush();
    assert.equal(active, 3);
    assert.equal(sem.inUse, 3);
    for (const g of gates) {
      g.resolve();
      await flush();
      assert.ok(active <= 3);
    }
    assert.deepEqual(await Promise.all(runs), [...Array(10).keys()]);
    assert.equal(peak, 3);
    assert.equal(sem.inUse, 0);
  });

  it('admits waiters in arrival order', async () => {
    const sem = new Semaphore(1);
    const order: number[] = [];
    const gate = deferred();
    const first = sem.run(async () => {
      await gate.promise;
      order.push(0);
    });
    const rest = [1, 2, 3].map((i) =>
      sem.run(async () => {
        order.push(i);
      }),
    );
    gate.resolve();
    await Promise.all([first, ...rest]);
    assert.deepEqual(order, [0, 1, 2, 3]);
  });

  it('releases its slot when the work throws', async () => {
    const sem = new Semaphore(1);
    await assert.rejects(
      sem.run(async () => {
        throw new Error('boom');
      }),
      /boom/,
    );
    assert.equal(sem.inUse, 0);
    assert.equal(await sem.run(async () => 'next'), 'next');
  });

  it('raising the limit admits waiters at once; lowering it holds new work back', async () => {
    const sem = new Semaphore(1);
    const gates = [deferred(), deferred(), deferred()];
    let started = 0;
    const runs = gates.map((g) =>
      sem.run(async () => {
        started++;
        await g.promise;
      }),
    );
    await flush();
    assert.equal(started, 1);
    sem.setLimit(3);
    await flush();
    assert.equal(started, 3);
    sem.setLimit(1);
    let late = false;
    const lateRun = sem.run(async () => {
      late = true;
    });
    gates[0]!.resolve();
    gates[1]!.resolve();
    await flush();
    assert.equal(late, false, 'two still count against a limit of one');
    gates[2]!.resolve();
    await Promise.all([...runs, lateRun]);
    assert.equal(late, true);
  });
});

describe('KeyedMutex', () => {
  it('runs work on one key one at a time, in call order', async () => {
    const m = new KeyedMutex<string>();
    const log: string[] = [];
    const gates = [deferred(), deferred(), deferred()];
    const runs = gates.map((g, i) =>
      m.run('chunk-1', async () => {
        log.push(`start ${i}`);
        await g.promise;
        log.push(`end ${i}`);
        return i;
      }),
    );
    await flush();
    assert.deepEqual(log, ['start 0']);
    // Finishing later work first must not let it jump the queue.
    gates[2]!.resolve();
    gates[1]!.resolve();
    await flush();
    assert.deepEqual(log, ['start 0']);
    gates[0]!.resolve();
    assert.deepEqual(await Promise.all(runs), [0, 1, 2]);
    assert.deepEqual(log, ['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2']);
  });

  it('lets different keys run at the same time', async () => {
    const m = new KeyedMutex<number>();
    const gate = deferred();
    let bRan = false;
    const a = m.run(1, () => gate.promise);
    await m.run(2, async () => {
      bRan = true;
    });
    assert.equal(bRan, true);
    gate.resolve();
    await a;
  });

  it('a failure releases the key for the next caller', async () => {
    const m = new KeyedMutex<string>();
    const failed = m.run('k', async () => {
      throw new Error('first failed');
    });
    const next = m.run('k', async () => 'second ran');
    await assert.rejects(failed, /first failed/);
    assert.equal(await next, 'second ran');
  });
});

describe('SingleFlight', () => {
  it('merges concurrent calls for one key into one load, and forgets it when done', async () => {
    const sf = new SingleFlight<string, number>();
    let loads = 0;
    const gate = deferred<number>();
    const load = () => {
      loads++;
      return gate.promise;
    };
    const a = sf.run('k', load);
    const b = sf.run('k', load);
    const other = sf.run('other', async () => 7);
    assert.equal(sf.has('k'), true);
    gate.resolve(42);
    assert.deepEqual(await Promise.all([a, b, other]), [42, 42, 7]);
    assert.equal(loads, 1);
    assert.equal(sf.has('k'), false);
    assert.equal(await sf.run('k', async () => 43), 43, 'a later call loads again');
  });

  it('shares a failure with every waiter and then lets the next call retry', async () => {
    const sf = new SingleFlight<string, string>();
    const gate = deferred<string>();
    const a = sf.run('k', () => gate.promise);
    const b = sf.run('k', async () => 'not called');
    gate.reject(new Error('download failed'));
    await assert.rejects(a, /download failed/);
    await assert.rejects(b, /download failed/);
    assert.equal(sf.has('k'), false);
    assert.equal(await sf.run('k', async () => 'retried'), 'retried');
  });
});

describe('Signal', () => {
  it('wakes every waiter on notify', async () => {
    const s = new Signal();
    let woken = 0;
    const waits = [s.wait().then(() => woken++), s.wait(60_000).then(() => woken++)];
    s.notify();
    await Promise.all(waits);
    assert.equal(woken, 2);
  });
});

describe('backoffMs', () => {
  it('stays within [ceiling/2, ceiling], where the ceiling doubles per attempt up to the cap', () => {
    for (let attempt = 0; attempt < 20; attempt++) {
      const ceiling = Math.min(30_000, 200 * 2 ** attempt);
      for (let i = 0; i < 50; i++) {
        const ms = backoffMs(attempt);
        assert.ok(ms >= ceiling / 2 && ms <= ceiling, `attempt ${attempt}: ${ms}`);
      }
    }
    assert.ok(backoffMs(100, 500, 60_000) <= 60_000);
  });
});
