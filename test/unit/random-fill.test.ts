// Pins down when a file read at random is filled into the cache and in what order: only after
// enough misses close together, only a file within the budget, each chunk once, nearest to the
// latest miss first, and never again after it is stopped (closed, read as a stream).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RandomFill, RandomFillLimits } from '../../electron/engine/prefetch/randomfill';

const MiB = 1024 * 1024;
const CHUNK = 4 * MiB;
const LIMITS: RandomFillLimits = { minMisses: 3, forgetAfterMs: 1000, budgetBytes: 64 * CHUNK };

/** Every chunk the fill of `ino` asks for, in order, until it is over. */
function drain(f: RandomFill, ino: number): number[] {
  const out: number[] = [];
  for (let i = f.next(ino); i !== undefined; i = f.next(ino)) out.push(i);
  return out;
}

describe('RandomFill', () => {
  it('starts after minMisses misses and not before', () => {
    const f = new RandomFill(() => LIMITS);
    assert.equal(f.noteMiss(1, 5, 10, CHUNK, 0), 'none');
    assert.equal(f.next(1), undefined);
    assert.equal(f.noteMiss(1, 2, 10, CHUNK, 10), 'none');
    assert.equal(f.filling(1), false);
    assert.equal(f.noteMiss(1, 8, 10, CHUNK, 20), 'started');
    assert.equal(f.filling(1), true);
    assert.equal(f.noteMiss(1, 7, 10, CHUNK, 30), 'filling');
  });

  it('counts misses per file', () => {
    const f = new RandomFill(() => LIMITS);
    f.noteMiss(1, 0, 10, CHUNK, 0);
    f.noteMiss(2, 0, 10, CHUNK, 0);
    f.noteMiss(1, 1, 10, CHUNK, 0);
    assert.equal(f.noteMiss(2, 1, 10, CHUNK, 0), 'none');
    assert.equal(f.noteMiss(1, 2, 10, CHUNK, 0), 'started');
  });

  it('starts counting again after a pause longer than forgetAfterMs', () => {
    const f = new RandomFill(() => LIMITS);
    f.noteMiss(1, 0, 10, CHUNK, 0);
    f.noteMiss(1, 1, 10, CHUNK, 500);
    assert.equal(f.noteMiss(1, 2, 10, CHUNK, 1600), 'none');
    assert.equal(f.noteMiss(1, 3, 10, CHUNK, 1700), 'none');
    assert.equal(f.noteMiss(1, 4, 10, CHUNK, 1800), 'started');
  });

  it('never fills a file larger than the budget, nor a file of one chunk', () => {
    const f = new RandomFill(() => LIMITS);
    for (let i = 0; i < 10; i++) assert.equal(f.noteMiss(1, i, 65, CHUNK, i), 'none');
    assert.equal(f.next(1), undefined);
    for (let i = 0; i < 10; i++) assert.equal(f.noteMiss(2, 0, 1, CHUNK, i), 'none');
    // Exactly the budget is allowed.
    for (let i = 0; i < 2; i++) f.noteMiss(3, i, 64, CHUNK, i);
    assert.equal(f.noteMiss(3, 9, 64, CHUNK, 3), 'started');
  });

  it('reads the budget anew each time (a cap changed meanwhile)', () => {
    let budget = 4 * CHUNK;
    const f = new RandomFill(() => ({ ...LIMITS, budgetBytes: budget }));
    for (let i = 0; i < 3; i++) assert.equal(f.noteMiss(1, i, 8, CHUNK, i), 'none');
    budget = 8 * CHUNK;
    assert.equal(f.noteMiss(1, 3, 8, CHUNK, 4), 'started');
  });

  it('asks for every chunk once, nearest to the latest miss first', () => {
    const f = new RandomFill(() => LIMITS);
    f.noteMiss(1, 1, 8, CHUNK, 0);
    f.noteMiss(1, 7, 8, CHUNK, 0);
    f.noteMiss(1, 5, 8, CHUNK, 0);
    assert.deepEqual(drain(f, 1), [5, 6, 4, 7, 3, 2, 1, 0]);
    assert.equal(f.asked(1), 8);
    assert.equal(f.next(1), undefined);
  });

  it('moves to a new miss and skips what was asked for already', () => {
    const f = new RandomFill(() => LIMITS);
    for (let i = 0; i < 3; i++) f.noteMiss(1, 2, 10, CHUNK, i);
    assert.deepEqual([f.next(1), f.next(1), f.next(1)], [2, 3, 1]);
    assert.equal(f.noteMiss(1, 9, 10, CHUNK, 5), 'filling');
    assert.deepEqual(drain(f, 1), [9, 8, 7, 6, 5, 4, 0]);
    assert.equal(f.asked(1), 10);
  });

  it('asks for nothing more once stopped, and starts from zero after', () => {
    const f = new RandomFill(() => LIMITS);
    for (let i = 0; i < 3; i++) f.noteMiss(1, i, 10, CHUNK, i);
    assert.equal(f.next(1), 2);
    f.stop(1);
    assert.equal(f.filling(1), false);
    assert.equal(f.next(1), undefined);
    assert.equal(f.noteMiss(1, 4, 10, CHUNK, 10), 'none');
    assert.equal(f.size, 1);
  });

  it('remembers a bounded number of files', () => {
    const f = new RandomFill(() => LIMITS);
    for (let ino = 0; ino < 5000; ino++) f.noteMiss(ino, 0, 10, CHUNK, 0);
    assert.ok(f.size <= 1024, `${f.size} files remembered`);
  });
});
