/**
 * The cache cap (DESIGN invariant 3), measured on disk: an engine in a child process runs
 * workloads that push the cache against its cap, and the test takes exact snapshots of its
 * cache folders (chunks/ and dirty/) by stopping the process for each one
 * (test/helpers/frozen.ts). No snapshot may exceed the cap: clean chunks, dirty chunks, the
 * pre-images kept for rewrites of fsynced data, and chunks being written all count. Once the
 * engine has settled, what it counts as cache use is exactly what is on disk.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CapWorkload, ChildMessage, EngineBed, MiB, UPLOAD_AT_SYNC_MS } from '../helpers/engineBed';
import { describeSample, frozenDiskUsage, sampleFrozenDiskUsage } from '../helpers/frozen';

const CS = 256 * 1024;
const CAP = 16 * MiB;
const CACHE_DIRS = ['chunks', 'dirty'];

describe('the cache cap, on disk', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  const workloads: Array<[CapWorkload, string, number]> = [
    ['cap-stream', 'while three times the cap is written, uploaded and read back', 0],
    ['cap-rewrite', 'while fsynced data is rewritten in place (pre-images of the old bytes)', UPLOAD_AT_SYNC_MS],
    ['cap-read-while-dirty', 'while files are read from the bucket with dirty data filling the cache', 0],
    ['cap-parallel', 'while six writers and two readers run at once', 0],
  ];
  for (const [script, what, uploadDelayMs] of workloads) {
    it(`holds ${what}`, async (t) => {
      const space = await bed.diskFilespace({ chunkSize: CS });
      const cacheDir = await bed.link(space);
      const child = bed.child({
        storeDir: space.storeDir,
        cacheDir,
        settings: { cacheCapBytes: CAP, uploadDelayMs },
        script,
        seed: 1,
      });
      await child.next('ready');
      const sampler = sampleFrozenDiskUsage(child.pid, cacheDir, CACHE_DIRS);
      const done = (await child.next('done', 240_000).catch(async (err: unknown) => {
        await sampler.stop();
        throw err;
      })) as Extract<ChildMessage, { type: 'done' }>;
      const { peak, samples } = await sampler.stop();
      const atRest = await frozenDiskUsage(child.pid, cacheDir, CACHE_DIRS);
      await child.kill();
      t.diagnostic(`peak ${peak.bytes} bytes on disk (cap ${CAP}) over ${samples} snapshots; ${atRest.bytes} at rest`);
      assert.ok(
        Math.max(peak.bytes, atRest.bytes) > CAP / 2,
        `the workload filled the cache (peak ${peak.bytes} over ${samples} snapshots)`,
      );
      assert.ok(
        peak.bytes <= CAP,
        `the cache held ${peak.bytes} bytes on disk, over its ${CAP}-byte cap by ${peak.bytes - CAP}:\n${describeSample(peak)}`,
      );
      assert.equal(
        atRest.bytes,
        done.usedBytes,
        `once settled, the engine counts exactly what is on disk:\n${describeSample(atRest)}`,
      );
    });
  }
});
