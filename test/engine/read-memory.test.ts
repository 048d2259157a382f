/**
 * What sequential readers keep in memory: a small file read at once from the disk cache is not
 * kept (it would serve no later read and push out chunks that may), a file of several chunks
 * is, and what no reader used for a while is let go.
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

  it('keeps no small file read at once from disk, keeps a file of several chunks, and lets it go when idle', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const small = Array.from({ length: 20 }, (_, i) => random(1000 + i * 500));
    for (let i = 0; i < small.length; i++) await writeFile(m.fs, `/s${i}`, small[i]!);
    const big = random(6 * CS + 77);
    await writeFile(m.fs, '/big.bin', big);
    await m.sync(); // every chunk is now a clean chunk in the cache on disk
    for (let i = 0; i < small.length; i++) assert.deepEqual(await readFile(m.fs, `/s${i}`), small[i]);
    assert.equal(m.engine.stats().readMemoryBytes, 0, 'small files read whole are not kept in memory');
    assert.deepEqual(await readFile(m.fs, '/big.bin'), big);
    assert.ok(m.engine.stats().readMemoryBytes > 0, 'a sequential read of several chunks is served from memory');
    await until('the idle read memory to be let go', () => m.engine.stats().readMemoryBytes === 0, 10 * MEMORY_IDLE_MS);
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
