/**
 * Memory stays bounded however much data streams through: FILESPACE_SOAK_GIB (1 in CI; the
 * full soak is 20) of random data is written and read back through a mount whose cache is
 * only 64 MiB, so everything passes through backpressure, uploads, eviction and downloads.
 * The engine's peak RSS (VmHWM) must stay under the documented 300 MB bound, with the memory
 * settings `filespace mount` starts it with (cli/engineProcess.ts).
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { Bed, sh, until } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';
import { ENGINE_MALLOC_ENV } from '../../electron/cli/engineProcess';

async function peakRssBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const m = /VmHWM:\s+(\d+) kB/.exec(status);
  assert.ok(m, 'VmHWM is reported');
  return Number(m[1]) * 1024;
}

describe('memory soak', () => {
  const bed = new Bed();
  before(() => bed.start());
  after(() => bed.stop());

  // About 2 minutes per GiB in a CI run; four times that per GiB, at least 15 minutes.
  const soakGib = Number(process.env.FILESPACE_SOAK_GIB ?? 1);
  it(
    'keeps the engine under 300 MB while streaming many times the cache size',
    { timeout: Math.max(15, 8 * soakGib) * 60_000 },
    async () => {
      // In rounds of at most 1 GiB: each file is written, read back, deleted and garbage
      // collected, so the test server (which keeps objects in memory) holds one round at a time.
      const gib = soakGib;
      const rounds = Math.max(1, Math.ceil(gib));
      const mibPerRound = Math.round((gib * 1024) / rounds);
      const fs = await bed.filespace({
        chunkSize: '4MiB',
        cacheSize: '64MiB',
        settings: { 'upload-delay': '0s', 'gc-grace': '0s', 'gc-interval': '0s' },
      });
      const pid = await fs.mount();
      // The bound rests on the memory settings `filespace mount` gives its engine process.
      const environ = (await fsp.readFile(`/proc/${pid}/environ`, 'utf8')).split('\0');
      for (const [k, v] of Object.entries(ENGINE_MALLOC_ENV))
        assert.ok(environ.includes(`${k}=${v}`), `the engine runs with ${k}=${v}`);
      for (let round = 0; round < rounds; round++) {
        const file = `${fs.mnt}/stream-${round}.bin`;
        const sumFile = `${fs.machine.home}/written-${round}.sum`;
        await sh(
          `head -c ${mibPerRound}M /dev/urandom | tee >(sha256sum > ${sumFile}) | dd of=${file} bs=1M iflag=fullblock status=none`,
          { timeoutMs: 3_600_000 },
        );
        await fs.sync();
        const readSum = await sh(`sha256sum < ${file}`, { timeoutMs: 3_600_000 });
        // `tee >(...)` finishes asynchronously: wait for its output.
        const written = await until(
          'the written checksum',
          async () => (await fsp.readFile(sumFile, 'utf8')).trim() || undefined,
        );
        assert.equal(readSum.split(' ')[0], written.split(' ')[0], `round ${round}: the data read back is the data written`);
        await fsp.rm(file);
        await fs.sync();
        await fs.machine.ok('gc', fs.name); // marks the deleted file's chunks
        await fs.machine.ok('gc', fs.name); // deletes them (grace 0)
        const now = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
        console.log(
          `round ${round + 1}/${rounds}: engine RSS ${/VmRSS:\s+(\d+)/.exec(now)?.[1]} kB, peak ${/VmHWM:\s+(\d+)/.exec(now)?.[1]} kB`,
        );
      }
      const store = s3StoreFor(bed.endpoint, fs.bucket);
      assert.deepEqual(await store.list('chunks/'), [], 'every round was collected from the bucket');
      await store.close();
      const peak = await peakRssBytes(pid);
      const st = await fs.status();
      assert.ok(Number(st.cacheUsedBytes) <= 64 * 1024 * 1024);
      assert.ok(peak < 300 * 1000 * 1000, `engine peak RSS ${Math.round(peak / 1e6)} MB exceeds 300 MB`);
      console.log(
        `streamed ${mibPerRound * rounds} MiB each way in ${rounds} round(s); engine peak RSS ${Math.round(peak / 1e6)} MB`,
      );
      await fs.unmount();
    },
  );
});
