/**
 * Hard links on a real mount, against a real S3 server, compared with a local directory: `ln`
 * and `cp -al` give names that share one inode (same number, nlink counted, data written through
 * one name read through another, also through a handle opened before the write); removing a
 * name keeps the others, and the last one frees the data (garbage collection then leaves no
 * chunk of it in the bucket). A filespace created at format 1 with files in it takes its first
 * link after a remount; its header then says a format that allows links (4: the first paged
 * checkpoint, at the unmount before, raised it from 1). A follower, a remount and a machine
 * linking from the bucket see the same names, numbers and content, and `filespace check`
 * finds nothing wrong.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, randomFile, run, sh, tmpDir, until } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';

/** Links as tools make them: ln, ln into a subfolder, an append through a second name, cp -al, rm. */
const MAKE = `set -e
mkdir t t/sub
printf hello > t/a
ln t/a t/b
ln t/a t/sub/c
printf ' world' >> t/b
printf solo > t/single
cp -al t backup
rm t/a
mv t/sub/c t/sub/d
`;

/**
 * Every entry but folders under `dir` (folders count their links another way here): name, type,
 * size, nlink, and which earlier entry shares its inode (inode numbers differ between disks,
 * the grouping does not).
 */
async function listing(dir: string): Promise<string> {
  const out = await sh(`cd '${dir}' && find . -mindepth 1 ! -type d | sort | xargs stat -c '%i %n %F %s %h'`);
  const first = new Map<string, string>();
  return out
    .trim()
    .split('\n')
    .map((line) => {
      const [ino, ...rest] = line.split(' ');
      const name = rest[0]!;
      const same = first.get(ino!);
      if (same === undefined) first.set(ino!, name);
      return `${rest.join(' ')}${same ? ` = ${same}` : ''}`;
    })
    .join('\n');
}

/** Reads argv[2] through a handle opened before argv[1] (another name of it) is rewritten. */
const STALE_READ = String.raw`
import os, sys
a, b = sys.argv[1], sys.argv[2]
fb = os.open(b, os.O_RDONLY)
before = os.pread(fb, 100, 0)
with open(a, 'r+b') as fa:
    fa.write(b'HELLO')
after = os.pread(fb, 100, 0)
os.close(fb)
print(before.decode() + '|' + after.decode())
`;

/**
 * Waits until `dir` lists as `want`. The kernel keeps each name's attributes for the attribute
 * timeout (1 s), and knows the names of one file apart: a link or unlink through one name shows
 * in the nlink of the others once their cached attributes expire.
 */
async function sameListing(dir: string, want: string, what: string): Promise<void> {
  let last = '';
  try {
    await until(what, async () => (last = await listing(dir)) === want, 30_000);
  } catch (err) {
    assert.equal(last, want, `${what}: ${(err as Error).message}`);
  }
}

/** Removes argv[1] while a handle of it is open, writes and reads through that handle, then argv[2]. */
const UNLINK_OPEN = String.raw`
import os, sys
a, b = sys.argv[1], sys.argv[2]
fd = os.open(a, os.O_RDWR)
os.unlink(a)
os.pwrite(fd, b'OPEN', 0)
got = os.pread(fd, 100, 0)
os.close(fd)
print(got.decode() + '|' + open(b).read() + '|' + ','.join(sorted(os.listdir(os.path.dirname(a)))))
`;

async function chunkObjects(bed: Bed, bucket: string): Promise<number> {
  return (await s3StoreFor(bed.endpoint, bucket).list('chunks/')).length;
}

async function headerFormat(bed: Bed, bucket: string): Promise<number> {
  const got = await s3StoreFor(bed.endpoint, bucket).get('filespace.json');
  return (JSON.parse(got!.body.toString('utf8')) as { format: number }).format;
}

async function statOf(file: string): Promise<string> {
  const s = await fsp.stat(file);
  return `${s.ino} ${s.nlink} ${s.size}`;
}

describe('hard links', () => {
  const bed = new Bed();

  before(async () => {
    await bed.start();
  });

  after(async () => {
    await bed.stop();
  });

  it('ln and cp -al share inodes as on a local disk, here, on a follower, after a remount and on a new machine; the header allows them', async () => {
    const settings = { 'lease-ttl': '3s', 'follow-interval': '500ms', 'upload-delay': '0s' };
    const a = await bed.filespace({ chunkSize: '1MiB', settings });
    // A filespace as the release before links wrote it: format 1, with a file in it.
    assert.equal(await headerFormat(bed, a.bucket), 1);
    await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'old'), 'written before links');
    await a.sync();
    await a.unmount();
    await a.mount();
    assert.equal(await fsp.readFile(path.join(a.mnt, 'old'), 'utf8'), 'written before links');
    // The first chunk (a small file's, so sent in a pack) raised the format to 7, which allows
    // segments, paged checkpoints and links too; a version that does not know packs refuses it.
    assert.equal(await headerFormat(bed, a.bucket), 7, 'the first chunk upload raised the format');

    const b = await bed.link(await bed.machine('follower'), a.bucket);
    await b.set(settings);
    await b.mount({ readOnly: true });

    const local = await tmpDir('links-ref');
    try {
      await fsp.writeFile(path.join(local, 'old'), 'written before links');
      for (const dir of [local, a.mnt]) {
        const r = await run('sh', ['-c', MAKE], { cwd: dir });
        assert.equal(r.code, 0, `making links in ${dir} failed: ${r.stderr}`);
      }
      assert.ok((await headerFormat(bed, a.bucket)) >= 2, 'the header allows links');
      const reference = await listing(local);
      assert.match(reference, /\.\/t\/b regular file 11 5 = \.\/backup\/a/);
      await sameListing(a.mnt, reference, 'the mount names and counts what a local disk does');
      for (const name of ['t/b', 't/sub/d', 'backup/a', 'backup/b', 'backup/sub/c']) {
        assert.equal(await fsp.readFile(path.join(a.mnt, name), 'utf8'), 'hello world', `${name} reads the shared data`);
      }

      // A write through one name is read through another's handle opened before it.
      for (const dir of [local, a.mnt]) {
        const r = await run('python3', ['-c', STALE_READ, path.join(dir, 't/b'), path.join(dir, 'backup/sub/c')]);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), 'hello world|HELLO world', `in ${dir}`);
      }
      assert.equal(await fsp.readFile(path.join(a.mnt, 'backup/a'), 'utf8'), 'HELLO world');
      await sameListing(a.mnt, await listing(local), 'after the write');

      // A follower sees the same names, numbers and content.
      await a.sync();
      const here = await statOf(path.join(a.mnt, 't/b'));
      await until('the follower to see the links', async () => (await listing(b.mnt).catch(() => '')) === reference);
      await until(
        'the follower to read the write',
        async () => (await fsp.readFile(path.join(b.mnt, 't/sub/d'), 'utf8')) === 'HELLO world',
      );
      assert.equal(await statOf(path.join(b.mnt, 'backup/sub/c')), here);
      assert.equal(await fsp.readFile(path.join(b.mnt, 'backup/a'), 'utf8'), 'HELLO world');

      // A remount, a link made after it, and a machine linking from the bucket.
      await b.unmount();
      await a.unmount();
      const check = await a.machine.cli('check', a.name);
      assert.equal(check.code, 0, `check found problems: ${check.stdout}${check.stderr}`);
      await a.mount();
      assert.equal(await listing(a.mnt), reference, 'a remount lists the same');
      await fsp.link(path.join(a.mnt, 'old'), path.join(a.mnt, 't/old2'));
      await fsp.link(path.join(local, 'old'), path.join(local, 't/old2'));
      const after = await listing(local);
      await sameListing(a.mnt, after, 'a link after a remount');
      await a.sync();
      await a.unmount();
      const check2 = await a.machine.cli('check', a.name);
      assert.equal(check2.code, 0, `check found problems: ${check2.stdout}${check2.stderr}`);
      const c = await bed.link(await bed.machine('fresh'), a.bucket);
      await c.mount({ readOnly: true });
      assert.equal(await listing(c.mnt), after, 'a machine linking from the bucket lists the same');
      assert.equal(await statOf(path.join(c.mnt, 'backup/sub/c')), here, 'same inode, nlink and size');
      assert.equal(await fsp.readFile(path.join(c.mnt, 'backup/b'), 'utf8'), 'HELLO world');
      await c.unmount();
      const checkC = await c.machine.cli('check', c.name);
      assert.equal(checkC.code, 0, `check on the new machine found problems: ${checkC.stdout}${checkC.stderr}`);
    } finally {
      await fsp.rm(local, { recursive: true, force: true });
    }
  });

  it('removing a name keeps the others; the last name frees the data, and garbage collection leaves none of it in the bucket', async () => {
    const fs: Linked & { bucket: string } = await bed.filespace({
      chunkSize: '256KiB',
      settings: { 'gc-grace': '1s', 'gc-interval': '0s', 'upload-delay': '0s' },
    });
    await fs.mount();
    const local = await tmpDir('links-gc');
    try {
      const src = await randomFile(local, 'big', 1_500_000);
      const want = await fsp.readFile(src);
      await sh(`cp '${src}' '${fs.mnt}/one' && ln '${fs.mnt}/one' '${fs.mnt}/two' && ln '${fs.mnt}/two' '${fs.mnt}/three'`);
      await fs.sync();
      const chunks = await chunkObjects(bed, fs.bucket);
      assert.ok(chunks >= 6, `the file's chunks are in the bucket (${chunks})`);
      const collect = async () => {
        const out = await fs.machine.ok('gc', fs.name);
        return Number(/(\d+) unreferenced and waiting/.exec(out)?.[1] ?? NaN);
      };

      // A name removed while open: the handle keeps working on the file its other names reach.
      // (With the high-level FUSE binding its fstat reports nlink 0, 1 on a local disk: the kernel
      // knows that name as its own file. The low-level binding reports 1, as ext4 does.)
      await fsp.writeFile(path.join(fs.mnt, 'p'), 'plain text');
      await fsp.link(path.join(fs.mnt, 'p'), path.join(fs.mnt, 'q'));
      for (const dir of [local, fs.mnt]) {
        if (dir === local) {
          await fsp.writeFile(path.join(local, 'p'), 'plain text');
          await fsp.link(path.join(local, 'p'), path.join(local, 'q'));
        }
        const r = await run('python3', ['-c', UNLINK_OPEN, path.join(dir, 'p'), path.join(dir, 'q')]);
        assert.equal(r.code, 0, r.stderr);
        const names = dir === local ? 'big,q' : 'one,q,three,two';
        assert.equal(r.stdout.trim(), `OPENn text|OPENn text|${names}`, `in ${dir}`);
      }
      await until('no hidden name left', async () => (await fsp.readdir(fs.mnt)).sort().join(',') === 'one,q,three,two');
      await fsp.rm(path.join(fs.mnt, 'q'));

      await fsp.rm(path.join(fs.mnt, 'one'));
      await fsp.rename(path.join(fs.mnt, 'two'), path.join(fs.mnt, 'three')); // two names of one file: nothing happens
      assert.equal((await fsp.stat(path.join(fs.mnt, 'three'))).nlink, 2);
      await fsp.writeFile(path.join(fs.mnt, 'other'), 'x');
      await fsp.rename(path.join(fs.mnt, 'other'), path.join(fs.mnt, 'two')); // over a name: the other stays
      await until('the other name to count one name', async () => (await fsp.stat(path.join(fs.mnt, 'three'))).nlink === 1);
      assert.ok((await fsp.readFile(path.join(fs.mnt, 'three'))).equals(want), 'the last name reads the data');
      await fs.sync();
      await until('garbage collection to settle', async () => (await collect()) === 0, 120_000);
      await fs.unmount();
      const kept = await fs.machine.cli('check', fs.name, '--deep');
      assert.equal(kept.code, 0, `no chunk of a file with a name left is collected: ${kept.stdout}${kept.stderr}`);
      await fs.mount();
      assert.ok((await fsp.readFile(path.join(fs.mnt, 'three'))).equals(want), 'and it reads after a remount');

      await fsp.rm(path.join(fs.mnt, 'three'));
      await fsp.rm(path.join(fs.mnt, 'two'));
      await fs.sync();
      await until('garbage collection to delete the chunks', async () => (await collect()) === 0, 120_000);
      assert.equal(await chunkObjects(bed, fs.bucket), 0, 'no chunk of the file is left in the bucket');
      await fs.unmount();
      const check = await fs.machine.cli('check', fs.name, '--deep');
      assert.equal(check.code, 0, `check found problems: ${check.stdout}${check.stderr}`);
    } finally {
      await fsp.rm(local, { recursive: true, force: true });
    }
  });
});
