// Pins down sequential-read detection: the read-ahead window doubles up to its cap on sequential reads (also when the kernel delivers them slightly out of order) and resets on any seek beyond the slack.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReadAheadCursor, SLACK } from '../../electron/engine/prefetch/readahead';

const MiB = 1024 * 1024;

/** Feeds `count` back-to-back reads of `len` bytes starting at `from`; returns the windows. */
function sequential(c: ReadAheadCursor, from: number, len: number, count: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(c.onRead(from + i * len, len));
  return out;
}

describe('ReadAheadCursor', () => {
  it('grows 1, 2, 4, ... and stays at the cap', () => {
    const c = new ReadAheadCursor(8);
    assert.deepEqual(sequential(c, 0, 4096, 7), [1, 2, 4, 8, 8, 8, 8]);
    assert.equal(c.currentWindow, 8);
  });

  it('caps at a maximum that is not a power of two', () => {
    assert.deepEqual(sequential(new ReadAheadCursor(5), 0, 100, 5), [1, 2, 4, 5, 5]);
  });

  it('never prefetches with a cap of zero', () => {
    assert.deepEqual(sequential(new ReadAheadCursor(0), 0, 100, 4), [0, 0, 0, 0]);
  });

  it('a forward seek resets the window, and sequential reads grow it again from there', () => {
    const c = new ReadAheadCursor(16);
    sequential(c, 0, 1000, 4);
    assert.equal(c.currentWindow, 8);
    assert.equal(c.onRead(4000 + SLACK + 1, 1000), 0);
    assert.equal(c.currentWindow, 0);
    assert.deepEqual(sequential(c, 5000 + SLACK + 1, 1000, 3), [1, 2, 4]);
  });

  it('a backward seek past the slack resets the window', () => {
    const c = new ReadAheadCursor(16);
    sequential(c, 0, MiB, 3);
    assert.equal(c.onRead(0, 1000), 0, 'back to the start');
    sequential(c, 1000, MiB, 3);
    assert.equal(c.onRead(1000 + 3 * MiB, MiB), 8);
    assert.equal(c.onRead(1000 + MiB, MiB), 0, 'two reads back');
  });

  it('reads the kernel delivers out of order near the frontier keep the stream sequential', () => {
    const c = new ReadAheadCursor(8);
    const k = 128 * 1024;
    const order = [0, 1, 3, 2, 4, 6, 5, 7, 9, 8];
    assert.deepEqual(
      order.map((i) => c.onRead(i * k, k)),
      [1, 2, 4, 8, 8, 8, 8, 8, 8, 8],
    );
  });

  it('the first read counts as sequential only at offset 0', () => {
    assert.equal(new ReadAheadCursor(8).onRead(0, 10), 1);
    assert.equal(new ReadAheadCursor(8).onRead(4096, 10), 0);
  });

  it('reads of varying sizes stay sequential as long as each starts where the last ended', () => {
    const c = new ReadAheadCursor(64);
    const lens = [1, 4095, 131072, 7, 65536, 3];
    let pos = 0;
    const windows = lens.map((len) => {
      const w = c.onRead(pos, len);
      pos += len;
      return w;
    });
    assert.deepEqual(windows, [1, 2, 4, 8, 16, 32]);
  });
});
