/**
 * What tools read from st_ino and ask of rename, on real mounts against a real S3 server:
 * inode numbers are the filespace's own (the tree's), so they stay the same across a remount
 * and are equal on the writer, a follower and a machine linking from the bucket (`find -inum`,
 * rsync and git's index rely on that); renameat2's RENAME_NOREPLACE and RENAME_EXCHANGE, which
 * libfuse2 cannot pass on, are refused with EINVAL and change nothing (never a plain rename); RENAME_NOREPLACE over an
 * existing name gets EEXIST from the kernel itself, as on a local disk.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, run, sh, until } from '../helpers/bed';

/** Inode number, type and name of everything under a folder, sorted by name. */
async function inodes(dir: string): Promise<string> {
  return sh(`cd '${dir}' && find . -mindepth 1 -printf '%P %i %y\\n' | sort`);
}

/** renameat2(argv[1], argv[2], flags argv[3]); prints "ok" or the errno's name. */
const RENAME2 = String.raw`
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
r = libc.renameat2(AT_FDCWD, sys.argv[1].encode(), AT_FDCWD, sys.argv[2].encode(), int(sys.argv[3]))
print('ok' if r == 0 else errno.errorcode[ctypes.get_errno()])
`;

const RENAME_NOREPLACE = 1;
const RENAME_EXCHANGE = 2;

describe('inode numbers and rename flags', () => {
  const bed = new Bed();

  before(async () => {
    await bed.start();
  });

  after(async () => {
    await bed.stop();
  });

  it('inode numbers are the same after a remount, on a follower and on a machine linking from the bucket', async () => {
    const settings = { 'lease-ttl': '3s', 'follow-interval': '500ms', 'upload-delay': '0s' };
    const a = await bed.filespace({ chunkSize: '1MiB', settings });
    const b = await bed.link(await bed.machine('follower'), a.bucket);
    await b.set(settings);
    await a.mount();
    await sh(
      `cd '${a.mnt}' && mkdir -p d/e && echo one > d/one && echo two > d/e/two && ln -s one d/link && mkfifo d/pipe && mv d/one d/e/moved`,
    );
    const here = await inodes(a.mnt);
    assert.match(here, /^d \d+ d$/m);
    const numbers = here
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split(' ')[1]);
    assert.equal(new Set(numbers).size, numbers.length, 'every entry has its own number');
    await a.sync();
    await b.mount({ readOnly: true });
    await until('the follower to show the same inode numbers', async () => (await inodes(b.mnt)) === here);
    await b.unmount();
    await a.unmount();
    await a.mount();
    assert.equal(await inodes(a.mnt), here, 'a remount keeps them');
    await a.unmount();
    const c = await bed.link(await bed.machine('fresh'), a.bucket);
    await c.mount({ readOnly: true });
    assert.equal(await inodes(c.mnt), here, 'a machine linking from the bucket shows the same');
    await c.unmount();
  });

  it('renameat2 with RENAME_NOREPLACE or RENAME_EXCHANGE never renames: EEXIST over a name, else EINVAL', async () => {
    const fs = await bed.filespace({ chunkSize: '1MiB' });
    await fs.mount();
    const x = path.join(fs.mnt, 'x');
    const y = path.join(fs.mnt, 'y');
    await fsp.writeFile(x, 'x\n');
    await fsp.writeFile(y, 'y\n');
    const rename2 = async (from: string, to: string, flags: number) => {
      const r = await run('python3', ['-c', RENAME2, from, to, String(flags)]);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.trim();
    };
    const unchanged = async () => {
      assert.deepEqual((await fsp.readdir(fs.mnt)).sort(), ['x', 'y']);
      assert.equal(await fsp.readFile(x, 'utf8'), 'x\n');
      assert.equal(await fsp.readFile(y, 'utf8'), 'y\n');
    };
    // Over an existing name the kernel answers RENAME_NOREPLACE itself, as on a local disk.
    assert.equal(await rename2(x, y, RENAME_NOREPLACE), 'EEXIST');
    await unchanged();
    // What would need the filesystem is refused, never done as a plain rename.
    assert.equal(await rename2(x, path.join(fs.mnt, 'z'), RENAME_NOREPLACE), 'EINVAL');
    await unchanged();
    assert.equal(await rename2(x, y, RENAME_EXCHANGE), 'EINVAL');
    await unchanged();
    // Without flags it is an ordinary rename.
    const r = await run('python3', ['-c', RENAME2, x, y, '0']);
    assert.equal(r.stdout.trim(), 'ok');
    assert.deepEqual(await fsp.readdir(fs.mnt), ['y']);
    assert.equal(await fsp.readFile(y, 'utf8'), 'x\n');
    await fs.unmount();
  });
});
