/**
 * Memory stays bounded however much data streams through: FILESPACE_SOAK_GIB (1 in CI; the
 * full soak is 20) of random data is written and read back through a mount whose cache is
 * only 64 MiB, so everything passes through backpressure, uploads, eviction and downloads.
 * The engine's peak RSS (VmHWM) must stay under the documented 300 MB bound.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { Bed, sh } from '../helpers/bed';

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

  it('keeps the engine under 300 MB while streaming many times the cache size', async () => {
    const gib = Number(process.env.FILESPACE_SOAK_GIB ?? 1);
    const mib = Math.round(gib * 1024);
    const fs = await bed.filespace({ chunkSize: '4MiB', cacheSize: '64MiB', settings: { 'upload-delay': '0s' } });
    const pid = await fs.mount();
    await sh(`head -c ${mib}M /dev/urandom | tee >(sha256sum > ${fs.machine.home}/written.sum) | dd of=${fs.mnt}/stream.bin bs=1M iflag=fullblock status=none`, { timeoutMs: 3_600_000 });
    await fs.sync();
    const readSum = await sh(`sha256sum < ${fs.mnt}/stream.bin`, { timeoutMs: 3_600_000 });
    // `tee >(...)` finishes asynchronously: wait for its output.
    let written = '';
    for (let i = 0; i < 100 && !written.trim(); i++) {
      written = await fsp.readFile(`${fs.machine.home}/written.sum`, 'utf8').catch(() => '');
      if (!written.trim()) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(readSum.split(' ')[0], written.split(' ')[0], 'the data read back is the data written');
    const peak = await peakRssBytes(pid);
    const st = await fs.status();
    assert.ok(Number(st.cacheUsedBytes) <= 64 * 1024 * 1024);
    assert.ok(peak < 300 * 1000 * 1000, `engine peak RSS ${Math.round(peak / 1e6)} MB exceeds 300 MB`);
    console.log(`streamed ${mib} MiB each way; engine peak RSS ${Math.round(peak / 1e6)} MB`);
    await fs.unmount();
  });
});
