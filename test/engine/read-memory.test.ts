/**
 * What sequential readers keep in memory: a small file read at once from the disk cache is not
 * kept (it would serve no later read and push out chunks that may), a file of several chunks
 * is while it is open, what its readers kept goes at its last close, and what no reader used
 * for a while is let go.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MEMORY_IDLE_MS } from '../../electron/engine/cache/chunkCache';
import { EngineBed, O_RDONLY, random, readAt, readFile, withFile, writeFile } from '../helpers/engineBed';
import { until } from '../helpers/until';

const CS = 64 * 1024;

describe('read memory', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('keeps no small file read at once from disk, keeps a file of several chunks while open, and lets it go at the last close or when idle', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const small = Array.from({ length: 20 }, (_, i) => random(1000 + i * 500));
    for (let i = 0; i < small.length; i++) await writeFile(m.fs, `/s${i}`, small[i]!);
    const big = random(6 * CS + 77);
    await writeFile(m.fs, '/big.bin', big);
    await m.sync(); // every chunk is now a clean chunk in the cache on disk
    for (let i = 0; i < small.length; i++) assert.deepEqual(await readFile(m.fs, `/s${i}`), small[i]);
    assert.equal(m.engine.stats().readMemoryBytes, 0, 'small files read whole are not kept in memory');
    const memory = () => m.engine.stats().readMemoryBytes;
    // Two handles: what the reads kept stays while either is open, and goes at the last close.
    await withFile(m.fs, '/big.bin', O_RDONLY, async (other) => {
      const got = await withFile(m.fs, '/big.bin', O_RDONLY, async (fh) => {
        const data = await readAt(m.fs, fh, 0, big.length);
        assert.ok(memory() > 0, 'a sequential read of several chunks is served from memory');
        return data;
      });
      assert.deepEqual(got, big);
      assert.ok(memory() > 0, 'kept while another handle of the file is open');
      assert.deepEqual(await readAt(m.fs, other, 0, big.length), big);
    });
    assert.equal(memory(), 0, 'the last close of the file lets go of what its reads kept');
    // Kept open, what was read goes once no reader has used it for a while.
    await withFile(m.fs, '/big.bin', O_RDONLY, async (fh) => {
      assert.deepEqual(await readAt(m.fs, fh, 0, big.length), big);
      assert.ok(memory() > 0);
      await until('the idle read memory to be let go', () => memory() === 0, 10 * MEMORY_IDLE_MS);
    });
    await m.close();
  });

  it('reads a file smaller than half a chunk in small pieces from disk, range by range, without keeping it', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const mid = random(CS / 2 - 1000);
    await writeFile(m.fs, '/mid.bin', mid);
    await m.sync();
    const got = await withFile(m.fs, '/mid.bin', O_RDONLY, async (fh) => {
      const parts: Buffer[] = [];
      for (let pos = 0; pos < mid.length; pos += 4096) parts.push(await readAt(m.fs, fh, pos, Math.min(4096, mid.length - pos)));
      return Buffer.concat(parts);
    });
    assert.deepEqual(got, mid);
    assert.equal(m.engine.stats().readMemoryBytes, 0, 'a chunk too small for the reused buffers is not loaded whole');
    await m.close();
  });
});
