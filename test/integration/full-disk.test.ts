/**
 * A full cache disk: the cache lives on a small filesystem that fills up.
 *
 * A cache size above the disk's is accepted with a warning, and the cache keeps within the
 * disk: writers wait for uploads to make room instead of failing. When the disk is full from
 * outside and the cache has nothing left to give back, writes fail with ENOSPC, nothing
 * already written is damaged, the mount keeps serving reads, and once space is freed writing
 * and uploading work again.
 *
 * With the bucket unreachable as well, metadata is still saved while the cache can give back
 * clean chunks or the space it holds back for the journal; after that fsync fails with ENOSPC
 * (said once in the log, not at every retry), a plain unmount refuses with a clear message,
 * and `unmount --force` detaches all the same. Everything fsynced before is there at the next
 * mount and uploads.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Machine, randomFile, run, sh, tmpDir, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

/** A tmpfs of `size` mounted for the test; removed by the returned cleanup. */
async function smallDisk(size: string): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await tmpDir('smallfs');
  await sh(`mount -t tmpfs -o size=${size} tmpfs ${dir}`);
  return {
    dir,
    cleanup: async () => {
      await run('umount', ['-l', dir]);
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

/** Fills the rest of `disk` with a file of its own (as another program would). */
async function fill(disk: string, tag: string): Promise<void> {
  await run('dd', ['if=/dev/zero', `of=${path.join(disk, `filler-${tag}`)}`, 'bs=64k']);
}

async function freeBytes(dir: string): Promise<number> {
  const st = await fsp.statfs(dir);
  return st.bavail * st.bsize;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('a full cache disk', () => {
  const env = proxiedBed('disk');

  it(
    'keeps a cache larger than the disk within the disk: writers wait for uploads, and get ENOSPC only when nothing is left',
    { timeout: 600_000 },
    async () => {
      assert.equal(process.getuid?.(), 0, 'this test mounts a small tmpfs and must run as root (as CI does)');
      const bed = env.bed;
      const small = await smallDisk('40m');
      const m = await bed.machine('disk');
      const mnt = path.join(m.home, 'mnt');
      try {
        const bucket = await bed.newBucket();
        await m.ok('init', ...bed.storeArgs(bucket), '--chunk-size', '1MiB', '--passphrase-file', bed.passFile);
        await fsp.mkdir(mnt);
        // A cache size far above the disk's size: accepted, with a warning.
        const linked = await m.cli(
          'link',
          ...bed.storeArgs(bucket),
          '--mount-point',
          mnt,
          '--name',
          'small',
          '--cache-dir',
          path.join(small.dir, 'cache'),
          '--cache-size',
          '1GiB',
          '--passphrase-file',
          bed.passFile,
        );
        assert.equal(linked.code, 0, linked.stderr);
        assert.match(
          linked.stderr,
          /warning: the cache size 1\.0 GiB is more than the disk under .*cache has room for \([\d.]+ MiB\)/,
        );
        await m.ok('mount', 'small');
        const status = async () =>
          JSON.parse(await m.ok('status', 'small', '--json')) as { state: string; cacheUsedBytes: number };
        try {
          const kept = await randomFile(env.local, 'kept.bin', 5 * 1024 * 1024);
          await sh(`cp ${kept} ${mnt}/kept.bin`);
          await m.ok('sync', 'small');
          await m.ok('set', 'small', 'upload-delay', '1h'); // new data would stay dirty, and fill the disk
          // More than the disk holds: the writer waits while uploads make room, and succeeds.
          const big = await randomFile(env.local, 'big.bin', 64 * 1024 * 1024);
          const r = await run('dd', [`if=${big}`, `of=${mnt}/big.bin`, 'bs=1M', 'conv=fsync']);
          assert.equal(r.code, 0, r.stderr);
          await sh(`cmp ${big} ${mnt}/big.bin && cmp ${kept} ${mnt}/kept.bin`);
          assert.ok((await status()).cacheUsedBytes < 40 * 1024 * 1024, 'the cache kept within the disk');
          const set = await m.cli('set', 'small', 'cache-size', '2GiB');
          assert.equal(set.code, 0, set.stderr);
          assert.match(set.stderr, /warning: the cache size 2\.0 GiB is more than the disk/);

          // Other programs fill the disk: the cache gives back its clean chunks...
          await m.ok('set', 'small', 'upload-delay', '0s');
          await m.ok('sync', 'small');
          for (let i = 0; ; i++) {
            assert.ok(i < 30, 'the cache gave back everything it could');
            await fill(small.dir, String(i));
            if ((await status()).cacheUsedBytes === 0) break;
            await until(
              'the cache to give back clean chunks',
              async () => (await freeBytes(small.dir)) > 256 * 1024 || (await status()).cacheUsedBytes === 0,
              30_000,
            );
          }
          await fill(small.dir, 'last');
          assert.ok((await freeBytes(small.dir)) < 1024 * 1024);
          // ... and once nothing is left, a write fails with ENOSPC, not corruption.
          const late = await run('dd', [`if=${big}`, `of=${mnt}/late.bin`, 'bs=1M', 'count=8', 'conv=fsync']);
          assert.notEqual(late.code, 0);
          assert.match(late.stderr, /No space left on device/);
          // What was written before reads back intact (from the bucket), and the mount serves on.
          await sh(`cmp ${kept} ${mnt}/kept.bin && cmp ${big} ${mnt}/big.bin`);
          assert.equal((await status()).state, 'mounted');
          // Freeing space lets writes and uploads go on.
          await sh(`rm -f ${small.dir}/filler-* ${mnt}/late.bin && echo after > ${mnt}/after.txt`);
          await m.ok('sync', 'small');
          assert.equal(await fsp.readFile(path.join(mnt, 'after.txt'), 'utf8'), 'after\n');
        } finally {
          await m.cli('unmount', 'small', '--force');
        }
        const reader = await bed.link(await bed.machine('disk-reader'), bucket);
        await reader.mount({ readOnly: true });
        await sh(
          `cmp ${env.local}/kept.bin ${reader.mnt}/kept.bin && cmp ${env.local}/big.bin ${reader.mnt}/big.bin && test ! -e ${reader.mnt}/late.bin && test "$(cat ${reader.mnt}/after.txt)" = after`,
        );
        await reader.unmount();
      } finally {
        await run('fusermount', ['-uz', mnt]);
        await small.cleanup();
      }
    },
  );

  it(
    'with the bucket gone too: saves metadata while it can free space, then says so once, and unmount --force detaches',
    { timeout: 600_000 },
    async () => {
      const bed = env.bed;
      env.proxy.clear();
      const small = await smallDisk('48m');
      const m: Machine = await bed.machine('disk-offline');
      const mnt = path.join(m.home, 'mnt');
      try {
        const bucket = await bed.newBucket();
        await m.ok('init', ...bed.storeArgs(bucket), '--chunk-size', '1MiB', '--passphrase-file', bed.passFile);
        await fsp.mkdir(mnt);
        await m.ok(
          'link',
          ...bed.storeArgs(bucket, '', env.proxy.endpoint),
          '--mount-point',
          mnt,
          '--name',
          'off',
          '--cache-dir',
          path.join(small.dir, 'cache'),
          '--cache-size',
          '1GiB',
          '--passphrase-file',
          bed.passFile,
        );
        await m.ok('set', 'off', 'upload-delay', '0s');
        await m.ok('mount', 'off');
        const pid = Number((JSON.parse(await m.ok('status', 'off', '--json')) as { pid: unknown }).pid);
        const clean = await randomFile(env.local, 'clean.bin', 12 * 1024 * 1024);
        await sh(`cp ${clean} ${mnt}/clean.bin`);
        await m.ok('sync', 'off'); // its chunks are now clean copies in the cache
        await m.ok('set', 'off', 'upload-delay', '1h');
        const pending = await randomFile(env.local, 'pending.bin', 3 * 1024 * 1024 + 7);
        await run('dd', [`if=${pending}`, `of=${mnt}/pending.bin`, 'bs=1M', 'conv=fsync']);
        env.proxy.goOffline();

        // Other programs fill the disk, again and again. Each time, metadata is still saved
        // (fsync works) as long as the cache has something to give back.
        let saved = 0;
        let refused: string | undefined;
        for (let i = 0; i < 30 && refused === undefined; i++) {
          await fill(small.dir, String(i));
          // Enough metadata to need new room in the journal each time.
          const r = await run('bash', [
            '-c',
            `mkdir ${mnt}/meta-${i} && touch ${mnt}/meta-${i}/file-{1..40}-with-a-longer-name && sync ${mnt}/meta-${i}/file-1-with-a-longer-name`,
          ]);
          if (r.code === 0) saved++;
          else refused = r.stderr;
        }
        assert.ok(saved >= 1, 'metadata was saved on a full disk');
        assert.ok(refused !== undefined, 'in the end the disk had nothing left');
        assert.match(refused, /No space left on device/);
        const logFile = path.join(m.home, 'run', 'off.log');
        const log = await fsp.readFile(logFile, 'utf8');
        assert.equal(log.match(/is full and the cache has nothing left to give back/g)?.length, 1, 'said once');
        assert.ok((log.match(/no space left|written short/gi) ?? []).length <= 2, `not repeated:\n${log}`);

        // A plain unmount refuses (it would lose what is not saved) and says what to do...
        const plain = await m.cli('unmount', 'off');
        assert.equal(plain.code, 1);
        assert.match(
          plain.stderr,
          /^filespace: could not flush to the cache in .*: .*; free space there and retry, or unmount with --force to detach anyway\n$/,
        );
        // ... and a forced one detaches regardless, and the engine goes away.
        await m.ok('unmount', 'off', '--force');
        await until('the engine to exit', () => !alive(pid), 60_000);
        assert.equal((await fsp.readFile('/proc/self/mountinfo', 'utf8')).includes(` ${mnt} `), false);

        // Room again, the bucket back: everything fsynced is there and uploads.
        await sh(`rm -f ${small.dir}/filler-*`);
        env.proxy.clear();
        await m.ok('mount', 'off');
        await sh(`cmp ${clean} ${mnt}/clean.bin && cmp ${pending} ${mnt}/pending.bin`);
        for (let i = 0; i < saved; i++) await fsp.access(path.join(mnt, `meta-${i}`, 'file-40-with-a-longer-name'));
        await m.ok('set', 'off', 'upload-delay', '0s');
        await m.ok('sync', 'off');
        await m.ok('unmount', 'off');
        const reader = await bed.link(await bed.machine('offline-reader'), bucket);
        await reader.mount({ readOnly: true });
        await sh(
          `cmp ${clean} ${reader.mnt}/clean.bin && cmp ${pending} ${reader.mnt}/pending.bin && test -e ${reader.mnt}/meta-0/file-40-with-a-longer-name`,
        );
        await reader.unmount();
      } finally {
        env.proxy.clear();
        await m.cli('unmount', 'off', '--force');
        await run('fusermount', ['-uz', mnt]);
        await small.cleanup();
      }
    },
  );
});
