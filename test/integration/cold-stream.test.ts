// A cold sequential reader through a real mount (the kernel's own 128 KiB requests, its
// read-ahead and its concurrent reads, on one handle) keeps download-concurrency chunk GETs in
// flight: the fault proxy holds every chunk GET for a while, so the reader always catches up
// with the downloads and the count does not depend on the machine's speed.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomFile, sh } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

const env = proxiedBed('cold-stream');

describe('cold sequential read through the mount', () => {
  it('keeps download-concurrency chunk GETs in flight', async () => {
    const { bed, proxy, local } = env;
    const w = await bed.filespace({ chunkSize: '4MiB', settings: { 'upload-delay': '0s' } });
    await w.mount();
    const src = await randomFile(local, 'big.bin', 96 * 1024 * 1024);
    await sh(`cp '${src}' '${w.mnt}/big.bin'`);
    await w.sync();

    // A machine that never had the file, reaching the bucket through the proxy.
    const m = await bed.machine('reader');
    const r = await bed.link(m, w.bucket, w.prefix, '1GiB', proxy.endpoint);
    await r.set({ 'download-concurrency': '8', 'prefetch-chunks': '8' });
    await r.mount({ readOnly: true });
    try {
      const from = proxy.log.length;
      proxy.set({ latencyMs: 300, match: { method: 'GET', pathIncludes: '/chunks/' } });
      // As the benchmark reads: the first byte (its own open), then 1 MiB reads.
      await sh(`head -c 1 '${r.mnt}/big.bin' >/dev/null; dd if='${r.mnt}/big.bin' of=/dev/null bs=1M status=none`);
      proxy.clear();
      const max = proxy.maxInFlight('/chunks/', 'GET', from);
      assert.equal(max, 8, 'the most chunk GETs in flight at once while the file was read');
      await sh(`cmp '${src}' '${r.mnt}/big.bin'`);
    } finally {
      proxy.clear();
      await r.unmount();
    }
  });
});
