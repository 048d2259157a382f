import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DecodedBuffers } from '../../electron/engine/prefetch/decodedBuffers';

describe('DecodedBuffers', () => {
  it('gives buffers only for chunks at least half their size', () => {
    const pool = new DecodedBuffers(1000);
    assert.equal(pool.take(499), undefined);
    assert.equal(pool.take(1001), undefined);
    assert.equal(pool.take(500)?.length, 1000);
    assert.equal(pool.take(1000)?.length, 1000);
    assert.equal(pool.allocated, 2);
  });

  it('uses a buffer again only once every holder dropped it, views included', () => {
    const pool = new DecodedBuffers(1000);
    const a = pool.take(900)!;
    const view = a.subarray(0, 900);
    pool.hold(view); // e.g. the memory cache
    pool.hold(view); // e.g. the copy being written
    pool.drop(a);
    pool.drop(view);
    const b = pool.take(900)!;
    assert.notEqual(b.buffer, a.buffer, 'still held once: not given out');
    pool.drop(view);
    const c = pool.take(900)!;
    assert.equal(c.buffer, a.buffer, 'free once the last holder dropped it');
    assert.equal(pool.reused, 1);
    assert.equal(pool.heldCount, 2);
  });

  it('never gives out again a buffer that escaped, and ignores buffers it did not make', () => {
    const pool = new DecodedBuffers(1000);
    const a = pool.take(1000)!;
    pool.escape(a);
    pool.drop(a);
    assert.notEqual(pool.take(1000)!.buffer, a.buffer);
    const foreign = Buffer.alloc(1000);
    pool.hold(foreign);
    pool.escape(foreign);
    pool.drop(foreign);
    pool.drop(foreign);
    assert.notEqual(pool.take(1000)!.buffer, foreign.buffer);
    assert.equal(pool.reused, 0);
  });

  it('keeps at most keepFree buffers for reuse, and none after trim', () => {
    const pool = new DecodedBuffers(1000, 2);
    const taken = [1, 2, 3].map(() => pool.take(1000)!);
    for (const b of taken) pool.drop(b);
    const again = [1, 2, 3].map(() => pool.take(1000)!);
    assert.equal(pool.reused, 2);
    assert.equal(pool.allocated, 4);
    for (const b of again) pool.drop(b);
    pool.trim();
    pool.take(1000);
    assert.equal(pool.reused, 2, 'nothing kept after trim');
  });
});
