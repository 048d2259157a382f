/**
 * The filesystem's own POSIX rules, in process (no kernel in between, so nothing here is the
 * kernel's `default_permissions` doing): new entries belong to the caller the mount adapter
 * names and take a setgid directory's group; chmod and chown are allowed as ext4 allows them
 * and clear setuid/setgid as it does; directories count their subdirectories; POSIX ACL names
 * are refused; st_blocks counts what a sparse file holds; O_APPEND writes that arrive together
 * never take the same offset; and a deleted file's chunks leave the clean cache.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FuseCaller } from '../../native/fuse/adapter';
import { EngineBed, KiB, O_APPEND, O_RDWR, O_WRONLY, failsWith, random, writeFile } from '../helpers/engineBed';

const S_ISGID = 0o2000;

function caller(uid: number, gid: number, groups: number[] = []): FuseCaller {
  return { uid, gid, pid: 0, inGroup: (g) => g === gid || groups.includes(g) };
}

const ROOT = caller(0, 0);
const ALICE = caller(1001, 100, [500]);
const BOB = caller(1002, 100);

describe('POSIX rules of the filesystem', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('gives new entries to their creator, and a setgid directory’s group to entries made in it', async () => {
    const m = await bed.mount(await bed.filespace());
    const fs = m.fs;
    fs.mkdir('/pub', 0o777, ROOT);
    await fs.release(fs.create('/pub/f', 0o644, undefined, ALICE));
    fs.mkdir('/pub/d', 0o755, ALICE);
    fs.symlink('f', '/pub/l', ALICE);
    for (const p of ['/pub/f', '/pub/d', '/pub/l']) {
      const st = fs.getattr(p);
      assert.deepEqual([st.uid, st.gid], [1001, 100], p);
    }
    fs.mkdir('/team', 0o777, ROOT);
    fs.chown('/team', 0, 500, ROOT);
    fs.chmod('/team', 0o2777, ROOT);
    await fs.release(fs.create('/team/f', 0o2755, undefined, BOB)); // BOB is not in group 500
    fs.mkdir('/team/sub', 0o755, BOB);
    const f = fs.getattr('/team/f');
    const sub = fs.getattr('/team/sub');
    assert.equal(f.gid, 500);
    assert.equal(f.mode & S_ISGID, 0, 'a file keeps setgid only if its creator is in its group');
    assert.equal(sub.gid, 500);
    assert.equal(sub.mode & 0o7777, 0o2755, 'a subdirectory inherits setgid');
    await m.close();
  });

  it('keeps every directory link count right through mkdir, rmdir, renames and file changes', async () => {
    const m = await bed.mount(await bed.filespace());
    const fs = m.fs;
    // A model of the tree: directory path -> names of its subdirectories and its files.
    const dirs = new Map<string, { subdirs: Set<string>; files: Set<string> }>([['/', { subdirs: new Set(), files: new Set() }]]);
    const join = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);
    const under = (dir: string, root: string) => dir === root || dir.startsWith(`${root}/`);
    let seed = 7;
    const pick = <T>(xs: T[]): T => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return xs[(seed >>> 12) % xs.length]!;
    };
    const done = new Map<string, number>();
    for (let step = 0; step < 400; step++) {
      const dir = pick([...dirs.keys()]);
      const d = dirs.get(dir)!;
      const name = `n${step}`;
      const action = pick(['mkdir', 'mkdir', 'create', 'create', 'rmdir', 'unlink', 'mvdir', 'mvfile']);
      if (action === 'mkdir') {
        fs.mkdir(join(dir, name), 0o755);
        d.subdirs.add(name);
        dirs.set(join(dir, name), { subdirs: new Set(), files: new Set() });
      } else if (action === 'create') {
        await fs.release(fs.create(join(dir, name), 0o644));
        d.files.add(name);
      } else if (action === 'rmdir') {
        const empty = [...d.subdirs].filter(
          (n) => dirs.get(join(dir, n))!.subdirs.size + dirs.get(join(dir, n))!.files.size === 0,
        );
        if (empty.length === 0) continue;
        const gone = pick(empty);
        fs.rmdir(join(dir, gone));
        d.subdirs.delete(gone);
        dirs.delete(join(dir, gone));
      } else if (action === 'unlink') {
        if (d.files.size === 0) continue;
        const gone = pick([...d.files]);
        await fs.unlink(join(dir, gone));
        d.files.delete(gone);
      } else if (action === 'mvdir') {
        if (d.subdirs.size === 0) continue;
        const moving = pick([...d.subdirs]);
        const from = join(dir, moving);
        const to = pick([...dirs.keys()].filter((x) => !under(x, from)));
        await fs.rename(from, join(to, name));
        d.subdirs.delete(moving);
        dirs.get(to)!.subdirs.add(name);
        for (const [p, v] of [...dirs]) {
          if (!under(p, from)) continue;
          dirs.delete(p);
          dirs.set(join(to, name) + p.slice(from.length), v);
        }
      } else {
        if (d.files.size === 0) continue;
        const moving = pick([...d.files]);
        const to = pick([...dirs.keys()]);
        await fs.rename(join(dir, moving), join(to, name));
        d.files.delete(moving);
        dirs.get(to)!.files.add(name);
      }
      done.set(action, (done.get(action) ?? 0) + 1);
      for (const [p, v] of dirs) assert.equal(fs.getattr(p).nlink, 2 + v.subdirs.size, `${p} after step ${step} (${action})`);
    }
    for (const action of ['mkdir', 'create', 'rmdir', 'unlink', 'mvdir', 'mvfile'])
      assert.ok((done.get(action) ?? 0) >= 10, `${action} ran ${done.get(action) ?? 0} times`);
    await m.close();
  });

  it('allows chmod and chown as ext4 does, clearing setuid/setgid as it does', async () => {
    const m = await bed.mount(await bed.filespace());
    const fs = m.fs;
    fs.mkdir('/pub', 0o777, ROOT);
    await fs.release(fs.create('/pub/f', 0o644, undefined, ALICE));
    assert.equal(await failsWith(() => fs.chmod('/pub/f', 0o666, BOB)), 'EPERM');
    fs.chmod('/pub/f', 0o640, ALICE);
    assert.equal(await failsWith(() => fs.chown('/pub/f', 1002, 0xffffffff, ALICE)), 'EPERM');
    assert.equal(await failsWith(() => fs.chown('/pub/f', 0xffffffff, 0, ALICE)), 'EPERM');
    assert.equal(await failsWith(() => fs.chown('/pub/f', 0xffffffff, 500, BOB)), 'EPERM');
    fs.chown('/pub/f', 0xffffffff, 500, ALICE); // one of Alice's groups
    assert.equal(fs.getattr('/pub/f').gid, 500);
    // Someone else writing a setuid file: the kernel drops the bits with a chmod as the writer.
    fs.chmod('/pub/f', 0o6775, ALICE);
    assert.equal(await failsWith(() => fs.chmod('/pub/f', 0o6777, BOB)), 'EPERM');
    fs.chmod('/pub/f', 0o0775, BOB);
    assert.equal(fs.getattr('/pub/f').mode & 0o7777, 0o775);
    // An owner outside the file's group cannot give it setgid.
    await fs.release(fs.create('/pub/g', 0o644, undefined, BOB));
    fs.chown('/pub/g', 0xffffffff, 500, ROOT);
    fs.chmod('/pub/g', 0o2755, BOB);
    assert.equal(fs.getattr('/pub/g').mode & 0o7777, 0o755);
    // chown clears setuid, and setgid when group-executable; a directory keeps both.
    fs.chmod('/pub/f', 0o6755, ROOT);
    fs.chown('/pub/f', 1002, 0xffffffff, ROOT);
    assert.equal(fs.getattr('/pub/f').mode & 0o7777, 0o755);
    fs.chmod('/pub', 0o3777, ROOT);
    fs.chown('/pub', 1001, 0xffffffff, ROOT);
    assert.equal(fs.getattr('/pub').mode & 0o7777, 0o3777);
    await m.close();
  });

  it('counts directory links as 2 + subdirectories, refuses POSIX ACL and SELinux label names, and counts sparse files’ blocks', async () => {
    const m = await bed.mount(await bed.filespace({ chunkSize: 64 * KiB }));
    const fs = m.fs;
    fs.mkdir('/a', 0o755);
    fs.mkdir('/a/b', 0o755);
    fs.mkdir('/a/c', 0o755);
    await writeFile(fs, '/a/f', random(100));
    assert.equal(fs.getattr('/a').nlink, 4);
    assert.equal(fs.getattr('/a/b').nlink, 2);
    assert.equal(fs.getattr('/').nlink, 3);
    assert.equal(await failsWith(() => fs.setxattr('/a/f', 'system.posix_acl_access', Buffer.alloc(4), 0)), 'ENOTSUP');
    assert.equal(await failsWith(() => fs.getxattr('/a/f', 'system.posix_acl_default')), 'ENOTSUP');
    // SELinux labels are not kept either (vfs.ts UNKEPT_XATTR); other security.* names are.
    assert.equal(await failsWith(() => fs.setxattr('/a/f', 'security.selinux', Buffer.from('u:r:t:s0'), 0)), 'ENOTSUP');
    assert.equal(await failsWith(() => fs.getxattr('/a/f', 'security.selinux')), 'ENOTSUP');
    assert.equal(await failsWith(() => fs.removexattr('/a/f', 'security.selinux')), 'ENOTSUP');
    fs.setxattr('/a/f', 'security.NTACL', Buffer.from('acl'), 0);
    assert.equal(fs.getxattr('/a/f', 'security.NTACL').toString(), 'acl');
    assert.deepEqual(fs.listxattr('/a/f'), ['security.NTACL']);
    const fh = fs.open('/a/f', O_RDWR);
    await fs.ftruncate(fh, 10 * 64 * KiB);
    assert.equal(fs.getattr('/a/f').blocks, 8, 'a hole holds nothing: one 4 KiB block for the 100 bytes');
    assert.equal(await fs.write(fh, random(64 * KiB), 5 * 64 * KiB), 64 * KiB);
    await fs.release(fh);
    assert.equal(fs.getattr('/a/f').blocks, 8 + 128);
    await m.sync();
    assert.equal(fs.getattr('/a/f').blocks, 8 + 128, 'the same once uploaded');
    const st = fs.statfs();
    assert.ok(st.blocks! > 0 && st.bavail! > 0 && st.bavail! === st.bfree! && st.bsize === st.frsize);
    await m.close();
  });

  it('puts O_APPEND writes that arrive together one after the other', async () => {
    const m = await bed.mount(await bed.filespace({ chunkSize: 64 * KiB }));
    const fs = m.fs;
    await fs.release(fs.create('/log', 0o644));
    const a = fs.open('/log', O_WRONLY | O_APPEND);
    const b = fs.open('/log', O_WRONLY | O_APPEND);
    const record = 100 * KiB;
    const writes: Array<Promise<number>> = [];
    for (let i = 0; i < 20; i++) {
      writes.push(fs.write(a, Buffer.alloc(record, 'a'), 0));
      writes.push(fs.write(b, Buffer.alloc(record, 'b'), 0));
    }
    assert.deepEqual(
      await Promise.all(writes),
      writes.map(() => record),
    );
    await fs.release(a);
    await fs.release(b);
    const size = fs.getattr('/log').size;
    assert.equal(size, 40 * record, 'no append wrote over another');
    await m.close();
  });

  it('lets go of a deleted file’s chunks in the clean cache, keeping the live ones', async () => {
    const m = await bed.mount(await bed.filespace({ chunkSize: 64 * KiB }));
    const fs = m.fs;
    await writeFile(fs, '/gone', random(20 * 64 * KiB));
    await writeFile(fs, '/kept', random(3 * 64 * KiB));
    await m.sync();
    const cached = m.engine.stats().cacheUsedBytes;
    assert.ok(cached >= 23 * 64 * KiB, `cached ${cached}`);
    await fs.unlink('/gone');
    await m.engine.vfs.freeUnreferencedCache(); // (the engine also runs it every second)
    const left = m.engine.stats().cacheUsedBytes;
    assert.ok(left >= 3 * 64 * KiB && left < 4 * 64 * KiB + 16 * KiB, `left ${left}`);
    await m.close();
  });
});
