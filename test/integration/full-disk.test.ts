/**
 * A full cache disk: the cache lives on a small filesystem that fills up. Writes then fail
 * with ENOSPC, nothing already written is damaged, the mount keeps serving reads, and once
 * space is freed writing and uploading work again.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, randomFile, run, sh, tmpDir } from '../helpers/bed';

describe('a full cache disk', () => {
  const bed = new Bed();
  let local: string;
  let small: string;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'this test mounts a small tmpfs and must run as root (as CI does)');
    await bed.start();
    local = await tmpDir('disk');
    small = await tmpDir('smallfs');
    await sh(`mount -t tmpfs -o size=40m tmpfs ${small}`);
  });

  after(async () => {
    await bed.stop();
    await run('umount', ['-l', small]);
    await fsp.rm(small, { recursive: true, force: true });
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('answers ENOSPC, keeps what was written, keeps reading, and recovers', async () => {
    const m = await bed.machine('disk');
    const bucket = await bed.newBucket();
    await m.ok('init', ...bed.storeArgs(bucket), '--chunk-size', '1MiB', '--passphrase-file', bed.passFile);
    const mnt = path.join(m.home, 'mnt');
    await fsp.mkdir(mnt);
    // A cache cap far above the disk's size: the disk, not the cap, runs out.
    await m.ok('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 'small', '--cache-dir', path.join(small, 'cache'),
      '--cache-size', '1GiB', '--passphrase-file', bed.passFile);
    await m.ok('mount', 'small');
    try {
      const kept = await randomFile(local, 'kept.bin', 5 * 1024 * 1024);
      await sh(`cp ${kept} ${mnt}/kept.bin`);
      await m.ok('sync', 'small');
      await m.ok('set', 'small', 'upload-delay', '1h'); // new data stays dirty, so the disk fills
      const big = await randomFile(local, 'big.bin', 64 * 1024 * 1024);
      const r = await run('dd', [`if=${big}`, `of=${mnt}/big.bin`, 'bs=1M', 'conv=fsync']);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /No space left on device/);
      // What was written before the disk filled reads back intact, and so does older data.
      const size = (await fsp.stat(path.join(mnt, 'big.bin'))).size;
      assert.ok(size > 0 && size < 64 * 1024 * 1024, `partial file of ${size} bytes`);
      await sh(`cmp -n ${size} ${big} ${mnt}/big.bin && cmp ${kept} ${mnt}/kept.bin`);
      const st = JSON.parse(await m.ok('status', 'small', '--json'));
      assert.equal(st.state, 'mounted');
      // Freeing space lets writes and uploads go on.
      await sh(`rm ${mnt}/big.bin && echo after > ${mnt}/after.txt`);
      await m.ok('set', 'small', 'upload-delay', '0s');
      await m.ok('sync', 'small');
      assert.equal(await fsp.readFile(path.join(mnt, 'after.txt'), 'utf8'), 'after\n');
    } finally {
      await m.cli('unmount', 'small', '--force');
    }
    const reader = await bed.link(await bed.machine('disk-reader'), bucket);
    await reader.mount({ readOnly: true });
    await sh(`test -f ${reader.mnt}/kept.bin && test ! -e ${reader.mnt}/big.bin && test "$(cat ${reader.mnt}/after.txt)" = after`);
    await reader.unmount();
  });
});
