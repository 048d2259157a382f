/**
 * Ordinary file operations through a real FUSE mount on a real S3 server, checked with
 * ordinary tools, and read back byte for byte by a second machine that links the filespace
 * from the bucket alone.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, randomFile, run, sh, tmpDir } from '../helpers/bed';

describe('a mounted filespace', () => {
  const bed = new Bed();
  let fs: Linked & { bucket: string; prefix: string };
  let local: string;

  before(async () => {
    await bed.start();
    local = await tmpDir('local');
    fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '256MiB' });
    await fs.mount();
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('copies a large random file in and reads identical bytes back', async () => {
    const src = await randomFile(local, 'big.bin', 48 * 1024 * 1024 + 12345);
    await sh(`cp ${src} ${fs.mnt}/big.bin && cmp ${src} ${fs.mnt}/big.bin`);
    const st = await fsp.stat(path.join(fs.mnt, 'big.bin'));
    assert.equal(st.size, 48 * 1024 * 1024 + 12345);
  });

  it('applies random writes into the middle of a file like a local file does', async () => {
    const src = await randomFile(local, 'rw.bin', 5 * 1024 * 1024);
    await sh(`cp ${src} ${fs.mnt}/rw.bin`);
    const patches: Array<[number, number]> = [
      [0, 10],
      [1024 * 1024 - 3, 7],
      [3 * 1024 * 1024 + 5, 200_000],
      [5 * 1024 * 1024 - 1, 1],
      [5 * 1024 * 1024 + 100, 50],
    ];
    for (const [off, len] of patches) {
      await sh(
        `head -c ${len} /dev/urandom > ${local}/patch && dd if=${local}/patch of=${src} bs=1 seek=${off} conv=notrunc status=none && dd if=${local}/patch of=${fs.mnt}/rw.bin bs=64k seek=${off} oflag=seek_bytes conv=notrunc status=none`,
      );
    }
    await sh(`cmp ${src} ${fs.mnt}/rw.bin`);
  });

  it('truncates down and up, reading zeros where data was cut off', async () => {
    const src = await randomFile(local, 'tr.bin', 3 * 1024 * 1024);
    await sh(`cp ${src} ${fs.mnt}/tr.bin`);
    await fs.sync(); // the chunks are now clean, committed ones
    for (const size of [2_500_000, 100, 0, 1_000_000, 4 * 1024 * 1024 + 7, 1_048_576]) {
      await sh(`truncate -s ${size} ${src} && truncate -s ${size} ${fs.mnt}/tr.bin && cmp ${src} ${fs.mnt}/tr.bin`);
    }
  });

  it('renames over an existing file and across directories', async () => {
    await sh(
      `cd ${fs.mnt} && mkdir -p d1/sub d2 && echo one > d1/a && echo two > d2/b && mv d1/a d2/b && test ! -e d1/a && test "$(cat d2/b)" = one && mv d1/sub d2/ && test -d d2/sub && mv d2 d3 && test "$(cat d3/b)" = one`,
    );
    const r = await run('mv', [path.join(fs.mnt, 'd3'), path.join(fs.mnt, 'd3', 'sub', 'x')]);
    assert.notEqual(r.code, 0, 'moving a directory into itself must fail');
    await sh(`cd ${fs.mnt} && mkdir -p e1 && touch e1/f && mkdir e2 && ! mv e2 e1/f 2>/dev/null && ! rmdir e1 2>/dev/null`);
  });

  it('makes hard links: two names of one file (hard-links.test.ts goes further)', async () => {
    await sh(`echo x > ${fs.mnt}/hl-src`);
    const r = await run('ln', [path.join(fs.mnt, 'hl-src'), path.join(fs.mnt, 'hl-dst')]);
    assert.equal(r.code, 0, r.stderr);
    await sh(`echo y >> ${fs.mnt}/hl-dst`);
    assert.equal(await fsp.readFile(path.join(fs.mnt, 'hl-src'), 'utf8'), 'x\ny\n');
    const [a, b] = await Promise.all([fsp.stat(path.join(fs.mnt, 'hl-src')), fsp.stat(path.join(fs.mnt, 'hl-dst'))]);
    assert.equal(a.ino, b.ino);
  });

  it('keeps symlinks, including dangling ones', async () => {
    await sh(
      `cd ${fs.mnt} && echo target > t.txt && ln -s t.txt l1 && ln -s /nowhere/at/all l2 && test "$(cat l1)" = target && test "$(readlink l2)" = /nowhere/at/all && test -L l2 && ! test -e l2`,
    );
  });

  it('stores modes, times and extended attributes', async () => {
    await sh(`cd ${fs.mnt} && echo m > modes && chmod 640 modes && test "$(stat -c %a modes)" = 640`);
    // Setting both times (touch -d, cp -p, tar, rsync -t) is exact.
    await sh(
      `cd ${fs.mnt} && touch -d '2020-01-02 03:04:05 UTC' modes && test "$(stat -c %Y modes)" = 1577934245 && test "$(stat -c %X modes)" = 1577934245`,
    );
    await sh(
      `cd ${fs.mnt} && touch -d '2001-02-03 04:05:06 UTC' ${local}/stamp && cp -p ${local}/stamp copied && test "$(stat -c %Y copied)" = "$(stat -c %Y ${local}/stamp)"`,
    );
    // One time at a time (GNU tar sets only the modification time): the other stays.
    await sh(
      `cd ${fs.mnt} && touch -m -d @1000000000 modes && touch -a -d @1200000000 modes && test "$(stat -c '%X %Y' modes)" = '1200000000 1000000000'`,
    );
    await sh(
      `cd ${fs.mnt} && python3 -c 'import os; os.utime("modes", (1400000000, 1500000000))' && test "$(stat -c '%X %Y' modes)" = '1400000000 1500000000'`,
    );
    await sh(
      `cd ${fs.mnt} && setfattr -n user.color -v blue modes && test "$(getfattr --only-values -n user.color modes)" = blue && setfattr -x user.color modes && ! getfattr -n user.color modes 2>/dev/null`,
    );
  });

  it('reports ENOENT, EEXIST, ENOTEMPTY and ENAMETOOLONG as a local disk does', async () => {
    const long = 'x'.repeat(256);
    await sh(
      `cd ${fs.mnt} && ! cat nope 2>/dev/null && mkdir dd && ! mkdir dd 2>/dev/null && touch dd/f && ! rmdir dd 2>/dev/null`,
    );
    const r = await run('touch', [path.join(fs.mnt, long)]);
    assert.match(r.stderr, /File name too long/);
    await sh(`touch ${fs.mnt}/${'y'.repeat(255)}`);
  });

  it('shows everything to a second machine that links from the bucket alone', async () => {
    await fs.sync();
    const st = await fs.status();
    assert.equal(st.dirtyBytes, 0);
    assert.equal(st.pendingMetaOps, 0);
    const other = await bed.link(await bed.machine('second'), fs.bucket, fs.prefix);
    await other.mount({ readOnly: true });
    try {
      await sh(`diff -r --no-dereference ${fs.mnt} ${other.mnt}`);
      await sh(`cmp ${local}/big.bin ${other.mnt}/big.bin && cmp ${local}/rw.bin ${other.mnt}/rw.bin`);
      assert.equal((await fsp.stat(path.join(other.mnt, 'modes'))).mode & 0o777, 0o640);
    } finally {
      await other.unmount();
    }
  });

  it("lets machines that take turns see each other's changes at mount", async () => {
    const a = await bed.filespace();
    const b = await bed.link(await bed.machine('turn-b'), a.bucket);
    await a.mount();
    await sh(`echo from-a > ${a.mnt}/a.txt && mkdir ${a.mnt}/shared`);
    await a.unmount();
    await a.mount();
    await a.sync();
    await a.unmount();
    await b.mount(); // linked before a wrote: catches up from the bucket
    await sh(`test "$(cat ${b.mnt}/a.txt)" = from-a && echo from-b > ${b.mnt}/shared/b.txt && rm ${b.mnt}/a.txt`);
    await b.sync();
    await b.unmount();
    await a.mount();
    await sh(`test "$(cat ${a.mnt}/shared/b.txt)" = from-b && test ! -e ${a.mnt}/a.txt`);
    await a.unmount();
  });

  it('sets unsent changes aside instead of merging when another machine wrote after them', async () => {
    const a = await bed.filespace();
    const b = await bed.link(await bed.machine('diverge-b'), a.bucket);
    await b.set({ 'upload-delay': '1h' });
    await b.mount();
    await sh(`echo unsent > ${b.mnt}/b-local.txt`);
    await b.unmount(); // b-local.txt's data waits in b's cache
    await a.mount();
    await sh(`echo from-a > ${a.mnt}/a.txt`);
    await a.sync();
    await a.unmount();
    await b.mount();
    const st = await b.status();
    const aside = st.aside as Array<{ id: string; files: number; reason: string }>;
    assert.equal(aside.length, 1, JSON.stringify(st));
    assert.match(aside[0]!.reason, /another machine changed this filespace/);
    assert.equal(st.readOnlyReason, null, 'after setting its changes aside, b writes again');
    assert.equal(await fsp.readFile(path.join(b.mnt, 'a.txt'), 'utf8'), 'from-a\n', "a's work stands");
    await sh(`echo after > ${b.mnt}/after.txt`);
    const listed = await b.machine.ok('aside', b.name, 'list');
    assert.match(listed, /\/b-local\.txt/);
    const out = path.join(b.machine.home, 'recovered');
    await b.machine.ok('aside', b.name, 'export', aside[0]!.id, out);
    assert.equal(await fsp.readFile(path.join(out, 'b-local.txt'), 'utf8'), 'unsent\n', 'the unsent data is recoverable');
    const bad = await b.machine.cli('aside', b.name, 'export', '../../etc', out);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /not a set-aside id/);
    await b.unmount();
  });

  it('reports status with every documented field', async () => {
    const st = await fs.status();
    for (const key of [
      'state',
      'mountPoint',
      'dirtyBytes',
      'dirtyFiles',
      'uploadBytesPerSec',
      'downloadBytesPerSec',
      'cacheUsedBytes',
      'cacheCapBytes',
      'cacheHitRatio',
      'lastError',
    ]) {
      assert.ok(key in st, `status lacks ${key}`);
    }
    assert.equal(st.state, 'mounted');
    assert.equal(st.mountPoint, fs.mnt);
    assert.equal(st.cacheCapBytes, 256 * 1024 * 1024);
  });
});
