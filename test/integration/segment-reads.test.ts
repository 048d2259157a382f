// Cold random reads through a real mount: a machine that never had a file reads 4 KiB blocks
// at random places in it and gets the right bytes, each from a ranged GET of the segments that
// cover it (chunk/format.ts FSC2), far less than a whole chunk; a sequential reader still gets
// whole chunks. A file read at random all over comes whole into the cache behind the reads
// (prefetch/randomfill.ts), each chunk once, within the cache cap; a file larger than the share
// of the cap a fill may take is never filled.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomFile, sh } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';
import { until } from '../helpers/until';

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

  it('fill a file read at random into the cache, each chunk once and within the cap, but not a file too big for it', async () => {
    const { bed, proxy, local } = env;
    const MiB = 1024 * 1024;
    const w = await bed.filespace({ chunkSize: '1MiB', settings: { 'upload-delay': '0s' } });
    await w.mount();
    // With a 64 MiB cache a fill may take 32 MiB: `small` (25 chunks) fits, `big` (48) does not.
    const small = await randomFile(local, 'small.bin', 24 * MiB + 12_345);
    const big = await randomFile(local, 'big48.bin', 48 * MiB);
    await sh(`cp '${small}' '${w.mnt}/small.bin' && cp '${big}' '${w.mnt}/big48.bin'`);
    await w.sync();
    await w.unmount();

    const r = await bed.link(await bed.machine('filler'), w.bucket, w.prefix, '64MiB', proxy.endpoint);
    await r.mount({ readOnly: true });
    const chunkGets = (from: number) => proxy.log.slice(from).filter((e) => e.method === 'GET' && e.url.includes('/chunks/'));
    const wholeGets = (from: number) => chunkGets(from).filter((e) => !e.range);
    // Reads `count` distinct 4 KiB blocks (every `stride`-th block, modulo the file's blocks) of
    // `name` on one open handle and compares them with the source; keeps the file open until
    // `release` exists, so a fill is not stopped by the close.
    const readAtRandom = (name: string, src: string, count: number, stride: number, release: string) =>
      new Promise<string>((resolve, reject) => {
        const py = `
import os, sys, time
m = os.open(sys.argv[1], os.O_RDONLY); s = os.open(sys.argv[2], os.O_RDONLY)
blocks = os.fstat(s).st_size // 4096
offs = [((i * int(sys.argv[4])) % blocks) * 4096 for i in range(1, int(sys.argv[3]) + 1)]
bad = [o for o in offs if os.pread(m, 4096, o) != os.pread(s, 4096, o)]
print(('bad %s' % bad) if bad else 'same', flush=True)
while not os.path.exists(sys.argv[5]): time.sleep(0.05)
`;
        const child = spawn('python3', ['-c', py, path.join(r.mnt, name), src, String(count), String(stride), release]);
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out.trim());
        });
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('error', reject);
        child.on('exit', (code) => (code === 0 ? resolve(out.trim()) : reject(new Error(`reader exited ${code}: ${out}`))));
      });
    try {
      // 48 reads, one in each chunk of `big`: every one a miss (none comes back to a chunk, so
      // none is read whole), more than a fill needs to start, and the file is too big for one.
      const bigFrom = proxy.log.length;
      const bigDone = path.join(local, 'big-done');
      assert.equal(await readAtRandom('big48.bin', big, 48, 256 + 1, bigDone), 'same');
      assert.equal(wholeGets(bigFrom).length, 0, 'a file larger than its share of the cap is not filled');
      await fsp.writeFile(bigDone, '');

      // 100 reads all over `small`: the right bytes, then its 25 chunks come whole into the cache.
      const from = proxy.log.length;
      const smallDone = path.join(local, 'small-done');
      assert.equal(await readAtRandom('small.bin', small, 100, 1531, smallDone), 'same');
      const cached = async () => (await sh(`find '${r.cacheDir}/chunks' -type f ! -name '*.tmp*' | wc -l`)).trim();
      await until('the file read at random to be in the cache', async () => Number(await cached()) >= 25);
      await fsp.writeFile(smallDone, '');
      const whole = wholeGets(from).map((e) => e.url);
      assert.equal(whole.length, 25, `each chunk fetched whole once: ${whole.length} whole GETs`);
      assert.equal(new Set(whole).size, whole.length, 'no chunk fetched whole twice');
      const st = await r.status();
      assert.ok(Number(st.cacheUsedBytes) <= 64 * MiB, `cache used ${Number(st.cacheUsedBytes)} within the 64 MiB cap`);

      // All of it is read from the cache now.
      const seqFrom = proxy.log.length;
      await sh(`cmp '${small}' '${r.mnt}/small.bin'`);
      assert.equal(chunkGets(seqFrom).length, 0, 'the whole file came from the cache');
    } finally {
      await fsp.writeFile(path.join(local, 'big-done'), '').catch(() => undefined);
      await fsp.writeFile(path.join(local, 'small-done'), '').catch(() => undefined);
      await r.unmount();
    }
  });
});
