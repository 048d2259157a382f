// Cold random reads through a real mount: a machine that never had a file reads 4 KiB blocks
// at random places in it and gets the right bytes, each from a ranged GET of the segments that
// cover it (chunk/format.ts FSC2), far less than a whole chunk, until its reads have touched a
// quarter of the file's chunks: then the file comes whole in the background, and later reads
// are served from the cache. A sequential reader gets whole chunks.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomFile, sh } from '../helpers/bed';
import { until } from '../helpers/until';
import { proxiedBed } from '../helpers/faultProxy';

const env = proxiedBed('segment-reads');
const CHUNK = 1024 * 1024;

describe('cold random reads through the mount', () => {
  it('return the right bytes and fetch only the segments that cover them, until they touched a quarter of the file: then it comes whole', async () => {
    const { bed, proxy, local } = env;
    const w = await bed.filespace({ chunkSize: '1MiB', settings: { 'upload-delay': '0s' } });
    await w.mount();
    const chunks = 20;
    const src = await randomFile(local, 'big.bin', chunks * CHUNK + 12_345); // 21 chunks
    const streamed = await randomFile(local, 'streamed.bin', 4 * CHUNK);
    await sh(`cp '${src}' '${w.mnt}/big.bin' && cp '${streamed}' '${w.mnt}/streamed.bin'`);
    await w.sync();
    await w.unmount();

    const m = await bed.machine('reader');
    const r = await bed.link(m, w.bucket, w.prefix, '1GiB', proxy.endpoint);
    await r.mount({ readOnly: true });
    const chunkGets = (from: number) => proxy.log.slice(from).filter((e) => e.method === 'GET' && e.url.includes('/chunks/'));
    // The file's short tail chunk is small: it lies in a pack (chunk/packs.ts), read by its range.
    const packGets = (from: number) => proxy.log.slice(from).filter((e) => e.method === 'GET' && e.url.includes('/packs/'));
    const sameBlocks = async (offsets: number[]) =>
      (
        await sh(
          `python3 -c "
import os, sys
m = os.open(sys.argv[1], os.O_RDONLY); s = os.open(sys.argv[2], os.O_RDONLY)
bad = [o for o in map(int, sys.argv[3:]) if os.pread(m, 4096, o) != os.pread(s, 4096, o)]
print('bad', bad) if bad else print('same')
" '${r.mnt}/big.bin' '${src}' ${offsets.join(' ')}`,
        )
      ).trim();
    try {
      // A sequential read of a file: the right bytes, whole chunks.
      const seqFrom = proxy.log.length;
      await sh(`cmp '${streamed}' '${r.mnt}/streamed.bin'`);
      const whole = chunkGets(seqFrom).filter((e) => !e.range);
      assert.ok(whole.length >= 4, `whole-chunk GETs for the stream: ${whole.length}`);

      // One block in each of 5 chunks, none at the file's start (that would begin a stream):
      // under a quarter of its 21 chunks, so each is a ranged GET of the segments covering it.
      const from = proxy.log.length;
      const offsets = [300_000, CHUNK + 65_000, 3 * CHUNK + 3 * 65_536, 7 * CHUNK + 500_000, 11 * CHUNK + 1_000];
      assert.equal(await sameBlocks(offsets), 'same');
      const gets = chunkGets(from);
      assert.ok(gets.length >= offsets.length, `a GET per block read: ${gets.length}`);
      for (const g of gets) {
        assert.match(g.range ?? '', /^bytes=\d+-\d+$/, `a ranged GET: ${g.url}`);
        assert.ok((g.answerBytes ?? CHUNK) < CHUNK / 4, `${g.answerBytes} bytes for one 4 KiB read`);
      }
      const total = gets.reduce((n, g) => n + (g.answerBytes ?? 0), 0);
      assert.ok(total < CHUNK, `${total} bytes fetched for ${offsets.length} blocks in ${offsets.length} chunks`);

      // A sixth chunk touched makes a quarter: the whole file comes in the background, and
      // reads that come back to it are served here, with no GET.
      const more = proxy.log.length;
      assert.equal(await sameBlocks([15 * CHUNK + 70_000]), 'same');
      await until(
        'the whole file downloaded',
        () => chunkGets(more).filter((e) => !e.range).length >= chunks && packGets(more).length >= 1,
      );
      const after = proxy.log.length;
      assert.equal(await sameBlocks([2 * CHUNK + 4096, 9 * CHUNK + 123_456, 19 * CHUNK, 20 * CHUNK + 8_192]), 'same');
      await sh(`cmp '${src}' '${r.mnt}/big.bin'`);
      assert.deepEqual([...chunkGets(after), ...packGets(after)], [], 'served from the cache');

      // The writer rewrites six of its chunks. The reader's ranged reads of them count afresh
      // (the file came whole once, but these chunks are new): at the sixth, they come whole.
      const rewritten = [12, 13, 14, 16, 17, 18];
      await w.mount();
      for (const k of rewritten) {
        const patch = await randomFile(local, `patch-${k}`, CHUNK);
        await sh(
          `for f in '${src}' '${w.mnt}/big.bin'; do dd if='${patch}' of="$f" bs=1M seek=${k} count=1 conv=notrunc status=none; done`,
        );
      }
      await sh(`touch '${w.mnt}/rewritten'`);
      await w.sync();
      await until('the reader to see the rewrite', async () => (await sh(`ls '${r.mnt}'`)).includes('rewritten'));
      const again = proxy.log.length;
      assert.equal(await sameBlocks(rewritten.slice(0, 5).map((k) => k * CHUNK + 200_000)), 'same');
      assert.ok(
        chunkGets(again).every((e) => e.range),
        'five new chunks read: ranged GETs only',
      );
      assert.equal(await sameBlocks([rewritten[5]! * CHUNK + 200_000]), 'same');
      await until('the new chunks downloaded whole', () => chunkGets(again).filter((e) => !e.range).length >= rewritten.length);
      await sh(`cmp '${src}' '${r.mnt}/big.bin'`);
      await w.unmount();
    } finally {
      await r.unmount();
    }
  });
});
