// Cold random reads through a real mount: a machine that never had a file reads 4 KiB blocks
// at random places in it and gets the right bytes, each from a ranged GET of the segments that
// cover it (chunk/format.ts FSC2), far less than a whole chunk; a sequential reader still gets
// whole chunks.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomFile, sh } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

const env = proxiedBed('segment-reads');
const CHUNK = 4 * 1024 * 1024;

describe('cold random reads through the mount', () => {
  it('return the right bytes and fetch only the segments that cover them', async () => {
    const { bed, proxy, local } = env;
    const w = await bed.filespace({ chunkSize: '4MiB', settings: { 'upload-delay': '0s' } });
    await w.mount();
    const src = await randomFile(local, 'big.bin', 4 * CHUNK + 12_345);
    await sh(`cp '${src}' '${w.mnt}/big.bin'`);
    await w.sync();
    await w.unmount();

    const m = await bed.machine('reader');
    const r = await bed.link(m, w.bucket, w.prefix, '1GiB', proxy.endpoint);
    await r.mount({ readOnly: true });
    try {
      const from = proxy.log.length;
      // One block in each full chunk, none at the file's start (that would begin a stream). The
      // file's last chunk is 12 KiB: one segment is the whole of it, fetched whole.
      const offsets = [1_000_000, CHUNK + 65_000, 2 * CHUNK + 3 * 65_536, 3 * CHUNK + 2_000_000];
      const out = await sh(
        `python3 -c "
import os, sys
m = os.open(sys.argv[1], os.O_RDONLY); s = os.open(sys.argv[2], os.O_RDONLY)
bad = [o for o in map(int, sys.argv[3:]) if os.pread(m, 4096, o) != os.pread(s, 4096, o)]
print('bad', bad) if bad else print('same')
" '${r.mnt}/big.bin' '${src}' ${offsets.join(' ')}`,
      );
      assert.equal(out.trim(), 'same');
      const gets = proxy.log.slice(from).filter((e) => e.method === 'GET' && e.url.includes('/chunks/'));
      assert.ok(gets.length >= offsets.length, `a GET per block read: ${gets.length}`);
      for (const g of gets) {
        assert.match(g.range ?? '', /^bytes=\d+-\d+$/, `a ranged GET: ${g.url}`);
        assert.ok((g.answerBytes ?? CHUNK) < CHUNK / 4, `${g.answerBytes} bytes for one 4 KiB read`);
      }
      const total = gets.reduce((n, g) => n + (g.answerBytes ?? 0), 0);
      assert.ok(total < CHUNK, `${total} bytes fetched for ${offsets.length} blocks in ${offsets.length} chunks`);

      // A sequential read of the whole file: the right bytes, whole chunks.
      const seqFrom = proxy.log.length;
      await sh(`cmp '${src}' '${r.mnt}/big.bin'`);
      const whole = proxy.log.slice(seqFrom).filter((e) => e.method === 'GET' && e.url.includes('/chunks/') && !e.range);
      assert.ok(whole.length >= 4, `whole-chunk GETs for the stream: ${whole.length}`);
    } finally {
      await r.unmount();
    }
  });
});
