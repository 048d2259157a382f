/**
 * The cache hit ratio counts bytes served to readers: a cold read that had to download every
 * chunk (whether a read waited for it or read-ahead fetched it first) is all misses, and the
 * same bytes read again from the cache are hits.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { EngineBed, random, readFile, readRange, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

describe('cache hit ratio', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('is 0 after a cold sequential read that downloaded everything, 50% after reading it twice', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const writer = await bed.mount(space);
    const data = random(40 * CS + 123);
    await writeFile(writer.fs, '/big.bin', data);
    await writer.sync();
    await writer.close();

    const reader = await bed.mount(space, { mode: 'read' });
    assert.equal(reader.engine.stats().cacheHitRatio, 0, 'nothing read yet');
    assert.deepEqual(await readFile(reader.fs, '/big.bin'), data);
    const cold = reader.engine.stats();
    assert.ok(cold.downloadedBytes >= data.length, 'the cold read downloaded the file');
    assert.equal(cold.cacheHitRatio, 0, `a cold read is all misses (ratio ${cold.cacheHitRatio})`);
    assert.deepEqual(await readFile(reader.fs, '/big.bin'), data);
    assert.equal(reader.engine.stats().cacheHitRatio, 0.5, 'the second read came from the cache');
    await reader.close();
  });

  it('counts random reads of cached chunks as hits', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const writer = await bed.mount(space);
    const data = random(4 * CS);
    await writeFile(writer.fs, '/r.bin', data);
    await writer.sync();
    await writer.close();
    const reader = await bed.mount(space, { mode: 'read' });
    assert.deepEqual(await readRange(reader.fs, '/r.bin', CS + 10, 100), data.subarray(CS + 10, CS + 110));
    assert.equal(reader.engine.stats().cacheHitRatio, 0);
    assert.deepEqual(await readRange(reader.fs, '/r.bin', CS + 500, 100), data.subarray(CS + 500, CS + 600));
    assert.ok(reader.engine.stats().cacheHitRatio > 0, 'a chunk already here serves a hit');
    await reader.close();
  });
});
