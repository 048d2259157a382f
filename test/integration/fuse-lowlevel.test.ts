/**
 * The low-level FUSE binding (native/fuse/lowlevel.ts), on real mounts against the S3 test
 * server, for what it does that libfuse2's high-level API could not:
 *   - an open file keeps working through its descriptor after its name and its folder are gone,
 *     fstat(2) included (it reports nlink 0, as ext4 does);
 *   - the names of one file are one kernel inode: nlink is the same through every name at once,
 *     and bytes written through one name are seen through a shared mapping of another;
 *   - the kernel caches entries, attributes and folder listings for minutes (KERNEL_CACHE_SEC),
 *     and is told to forget what a change makes stale, whoever made it: a follower sees the
 *     writer's changes, and a mount sees its engine's own (an import), within the test's wait,
 *     well under the kernel's timeout, although it had looked the names up (or missed them)
 *     before, and a mount's own changes to a folder show in its next listing at once;
 *   - getxattr of a name no file has is answered in the addon, never by the engine;
 *   - many writers at once: more writes wait for the engine than the addon's first pool of
 *     write buffers holds, so the pool grows while requests queue, and every byte lands;
 *   - read answers go to the kernel by the addon's send thread or by the engine's thread, as
 *     FILESPACE_FUSE_SEND_THREAD says (the default depends on the machine's cores), and read the
 *     same either way.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { KERNEL_CACHE_SEC } from '../../native/fuse/lowlevel';
import { callControl } from '../../electron/host/control';
import { Bed, run, sh, tmpDir, until } from '../helpers/bed';

process.env.FILESPACE_FUSE = 'lowlevel';

/** A change must show well before the kernel's own timeout would let it. */
const SEEN_WITHIN_MS = 60_000;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function python(script: string, ...args: string[]): Promise<Record<string, unknown>> {
  const r = await run('python3', ['-c', script, ...args], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

async function statOf(format: string, ...paths: string[]): Promise<string[]> {
  const r = await run('stat', ['-c', format, ...paths]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trimEnd().split('\n');
}

async function requestCounts(home: string, name: string) {
  const c = (await callControl(path.join(home, 'run', `${name}.sock`), '/v1/debug/fuse', {})).counts;
  assert.ok(c, 'the mount counts its requests');
  return c;
}

// Opens a file, removes it and its folder, then works through the descriptor.
const ORPHAN = String.raw`
import hashlib, json, os, sys
d, f = sys.argv[1], sys.argv[2]
fd = os.open(os.path.join(d, f), os.O_RDWR)
os.unlink(os.path.join(d, f))
os.rmdir(d)
st = os.fstat(fd)
out = {'gone': not os.path.exists(d), 'nlink': st.st_nlink, 'size': st.st_size}
data = b''
while True:
    b = os.pread(fd, 1 << 20, len(data))
    if not b: break
    data += b
out['sha'] = hashlib.sha256(data).hexdigest()
os.pwrite(fd, b'tail', st.st_size)
os.fsync(fd)
out['after'] = os.fstat(fd).st_size
os.lseek(fd, st.st_size, 0)
out['tail'] = os.read(fd, 16).decode()
os.close(fd)
print(json.dumps(out))
`;

// Maps name b shared and writable, writes through the mapping, and reads name a.
const SHARED_MAP = String.raw`
import json, mmap, os, sys
a, b = sys.argv[1], sys.argv[2]
ra = os.open(a, os.O_RDONLY)
before = os.pread(ra, 5, 0).decode()
fd = os.open(b, os.O_RDWR)
m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
m[0:5] = b'MAPPD'
m.flush()
seen_open = os.pread(ra, 5, 0).decode()
with open(a, 'rb') as f: seen_new = f.read(5).decode()
m.close(); os.close(fd); os.close(ra)
print(json.dumps({'before': before, 'open': seen_open, 'fresh': seen_new}))
`;

// WRITERS processes, started together, each write 4 MiB in 128 KiB writes to a file of their own.
const MANY_WRITERS = String.raw`
import hashlib, json, multiprocessing, os, sys
d, n = sys.argv[1], int(sys.argv[2])
def write(i, gate):
    data = hashlib.sha256(b'seed%d' % i).digest() * (4 * 1024 * 1024 // 32)
    gate.wait()
    fd = os.open(os.path.join(d, 'w%d' % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for off in range(0, len(data), 128 * 1024):
        os.pwrite(fd, data[off:off + 128 * 1024], off)
    os.close(fd)
gate = multiprocessing.Barrier(n)
procs = [multiprocessing.Process(target=write, args=(i, gate)) for i in range(n)]
for p in procs: p.start()
for p in procs: p.join()
print(json.dumps({'exit': [p.exitcode for p in procs]}))
`;
const WRITERS = 24;

// Per file: write 1000 bytes, set times, owner and mode through the handle, set the set-ID bits
// and chown (which clears them), write 2000 more, chown again; the modes and sizes seen.
const SETATTRS = String.raw`
import json, os, sys
d, n = sys.argv[1], int(sys.argv[2])
uid, gid = os.getuid(), os.getgid()
t = 981173106  # 2001-02-03T04:05:06Z
modes, sizes = [], []
for i in range(n):
    fd = os.open(os.path.join(d, 'f%d' % i), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b'a' * 1000)
    os.utime(fd, (t, t))
    os.fchown(fd, uid, gid)
    os.fchmod(fd, 0o644)
    os.fchmod(fd, 0o6755)
    os.fchown(fd, uid, gid)
    modes.append(os.fstat(fd).st_mode)
    s = [os.fstat(fd).st_size]
    os.write(fd, b'b' * 2000)
    s.append(os.fstat(fd).st_size)
    os.fchown(fd, uid, gid)
    os.utime(fd, (t, t))
    s.append(os.fstat(fd).st_size)
    sizes.append(s)
    os.close(fd)
print(json.dumps({'modes': modes, 'sizes': sizes}))
`;

describe('the low-level FUSE binding', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('lowlevel');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('an open file works through its descriptor after its folder is removed, fstat included', async () => {
    const fs = await bed.filespace({ chunkSize: '1MiB' });
    await fs.mount();
    const dir = path.join(fs.mnt, 'gone');
    await fsp.mkdir(dir);
    const content = randomBytes(2 * 1024 * 1024 + 77);
    await fsp.writeFile(path.join(dir, 'f.bin'), content);
    const r = await python(ORPHAN, dir, 'f.bin');
    assert.deepEqual(r, {
      gone: true,
      nlink: 0,
      size: content.length,
      sha: sha(content),
      after: content.length + 4,
      tail: 'tail',
    });
    assert.deepEqual(await fsp.readdir(fs.mnt), [], 'no hidden name is left behind');
    await until('the deleted file to leave the cache', async () => Number((await fs.status()).dirtyBytes) === 0);
    await fs.unmount();
  });

  it('the names of one file share one inode: nlink, and a shared mapping through either name', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const a = path.join(fs.mnt, 'a');
    const b = path.join(fs.mnt, 'sub', 'b');
    await fsp.mkdir(path.join(fs.mnt, 'sub'));
    await fsp.writeFile(a, 'hello world\n');
    assert.deepEqual(await statOf('%h', a), ['1']);
    await fsp.link(a, b);
    // At once, through both names (the kernel knows one inode, so no cached attribute is stale).
    assert.deepEqual(await statOf('%i %h', a, b), Array(2).fill((await statOf('%i 2', a))[0]));
    await fsp.link(a, path.join(fs.mnt, 'c'));
    assert.deepEqual(await statOf('%h', a, b), ['3', '3']);
    await fsp.unlink(path.join(fs.mnt, 'c'));
    assert.deepEqual(await statOf('%h', a, b), ['2', '2']);
    assert.deepEqual(await python(SHARED_MAP, a, b), { before: 'hello', open: 'MAPPD', fresh: 'MAPPD' });
    await fs.sync();
    assert.equal(await fsp.readFile(a, 'utf8'), 'MAPPD world\n');
    await fs.unmount();
    await fs.mount();
    assert.equal(await fsp.readFile(b, 'utf8'), 'MAPPD world\n', 'what the mapping wrote was kept');
    await fs.unmount();
  });

  it("a follower sees the writer's changes long before the kernel's own timeout", async () => {
    assert.ok(SEEN_WITHIN_MS < (KERNEL_CACHE_SEC * 1000) / 2, 'the wait proves the kernel was told');
    const settings = { 'lease-ttl': '3s', 'follow-interval': '300ms', 'upload-delay': '0s' };
    const a = await bed.filespace({ settings });
    const b = await bed.link(await bed.machine('follower'), a.bucket);
    await b.set(settings);
    await a.mount();
    await sh(
      `cd '${a.mnt}' && mkdir d && printf one > d/f && printf two > d/g && printf three > d/k && chmod 644 d/f && printf l > d/l && ln d/l d/l2`,
    );
    await a.sync();
    await b.mount({ readOnly: true });
    const on = (p: string) => path.join(b.mnt, p);
    // The follower's kernel now holds these: entries, attributes, and a name that is missing.
    assert.deepEqual(await statOf('%a %s', on('d/f'), on('d/g'), on('d/k')), ['644 3', '644 3', '644 5']);
    assert.deepEqual(await statOf('%h', on('d/l')), ['2']);
    assert.equal((await run('stat', [on('x')])).code, 1);
    assert.deepEqual((await fsp.readdir(on('d'))).sort(), ['f', 'g', 'k', 'l', 'l2']);
    // Cached for real: looking again costs the engine nothing.
    const before = await requestCounts(b.machine.home, b.name);
    for (let i = 0; i < 20; i++) await statOf('%s', on('d/f'), on('d/g'));
    const afterLooks = await requestCounts(b.machine.home, b.name);
    const looks = (c: typeof before) => (c.crossed.lookup ?? 0) + (c.crossed.getattr ?? 0);
    assert.ok(
      looks(afterLooks) - looks(before) <= 2,
      `stats of cached names reached the engine ${looks(afterLooks) - looks(before)} times`,
    );
    // And the folder's listing: read again, it comes from the kernel's page cache.
    assert.deepEqual((await fsp.readdir(on('d'))).sort(), ['f', 'g', 'k', 'l', 'l2']);
    const lists = (c: typeof before) => c.crossed.readdir ?? 0;
    assert.equal(lists(await requestCounts(b.machine.home, b.name)) - lists(afterLooks), 0, 'listed from the cache');

    await sh(`cd '${a.mnt}' && printf new > x && chmod 600 d/f && printf more >> d/f && mv d/g d/h && rm d/k d/l2`);
    await a.sync();
    await until(
      'the follower to see every change',
      async () => {
        const x = await fsp.readFile(on('x'), 'utf8').catch(() => '');
        const names = (await fsp.readdir(on('d')).catch(() => [] as string[])).sort().join(',');
        const f = (await run('stat', ['-c', '%a %s', on('d/f')])).stdout.trim();
        const g = (await run('stat', [on('d/g')])).code;
        // d/l lost its other name: its link count, which no change to d/l itself tells.
        const l = (await run('stat', ['-c', '%h', on('d/l')])).stdout.trim();
        return x === 'new' && names === 'f,h,l' && f === '600 7' && g === 1 && l === '1';
      },
      SEEN_WITHIN_MS,
    );
    assert.equal(await fsp.readFile(on('d/f'), 'utf8'), 'onemore');
    await b.unmount();
    await a.unmount();
  });

  it("a mount sees its engine's own changes (an import) at once, names it had looked up included", async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const d = path.join(fs.mnt, 'in');
    await fsp.mkdir(d);
    await fsp.writeFile(path.join(d, 'x.txt'), 'short\n');
    assert.deepEqual(await statOf('%s', path.join(d, 'x.txt')), ['6']);
    // The kernel keeps the folder's listing; a change through the mount itself shows at once.
    assert.deepEqual(await fsp.readdir(d), ['x.txt']);
    const counted = await requestCounts(fs.machine.home, fs.name);
    assert.deepEqual(await fsp.readdir(d), ['x.txt']);
    assert.equal(
      (await requestCounts(fs.machine.home, fs.name)).crossed.readdir,
      counted.crossed.readdir,
      'listed from the cache',
    );
    await fsp.writeFile(path.join(d, 'local.txt'), 'l\n');
    assert.deepEqual((await fsp.readdir(d)).sort(), ['local.txt', 'x.txt']);
    await fsp.unlink(path.join(d, 'local.txt'));
    assert.deepEqual(await fsp.readdir(d), ['x.txt']);
    assert.equal((await run('stat', [path.join(d, 'new.txt')])).code, 1);
    const src = path.join(local, 'import-src');
    await fsp.mkdir(src, { recursive: true });
    await fsp.writeFile(path.join(src, 'x.txt'), 'content that is longer\n');
    await fsp.writeFile(path.join(src, 'new.txt'), 'n\n');
    const r = await fs.machine.cli('import', fs.name, src, 'in');
    assert.equal(r.code, 0, r.stderr + r.stdout);
    // The notices go out from the addon's own thread just after the change: seen within moments.
    await until(
      'the import to show',
      async () =>
        (await run('stat', ['-c', '%s', path.join(d, 'x.txt')])).stdout.trim() === '23' &&
        (await run('stat', [path.join(d, 'new.txt')])).code === 0 &&
        (await fsp.readdir(d)).length === 2,
      SEEN_WITHIN_MS,
    );
    assert.equal(await fsp.readFile(path.join(d, 'x.txt'), 'utf8'), 'content that is longer\n');
    assert.deepEqual((await fsp.readdir(d)).sort(), ['new.txt', 'x.txt']);
    await fs.unmount();
  });

  it('uploads, which change nothing stat shows, leave what the kernel cached in place', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    await fs.mount();
    await sh(`cd '${fs.mnt}' && mkdir d && for i in $(seq 1 20); do head -c 5000 /dev/urandom > d/f$i; done`);
    const names = Array.from({ length: 20 }, (_, i) => path.join(fs.mnt, 'd', `f${i + 1}`));
    const first = await statOf('%i %s %Y %b', ...names);
    await fs.sync();
    assert.equal(Number((await fs.status()).dirtyBytes), 0, 'uploaded');
    const before = await requestCounts(fs.machine.home, fs.name);
    assert.deepEqual(await statOf('%i %s %Y %b', ...names), first);
    const after = await requestCounts(fs.machine.home, fs.name);
    const looks = (c: typeof before) => (c.crossed.lookup ?? 0) + (c.crossed.getattr ?? 0);
    assert.equal(looks(after) - looks(before), 0, 'no stat reached the engine');
    await fs.unmount();
  });

  it("a folder's attributes after a change in it are answered in the addon, and are the engine's own", async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    await fs.mount();
    const d = path.join(fs.mnt, 'd');
    const FORMAT = '%a %h %u %g %s %Y %Z';
    await sh(`mkdir '${d}'`);
    const before = await requestCounts(fs.machine.home, fs.name);
    // Each create makes the kernel ask for the folder's attributes before the next lookup in it.
    await sh(`cd '${d}' && for i in $(seq 1 50); do echo $i > f$i; done`);
    const after = await requestCounts(fs.machine.home, fs.name);
    const answered = (after.answered.getattr ?? 0) - (before.answered.getattr ?? 0);
    const crossed = (after.crossed.getattr ?? 0) - (before.crossed.getattr ?? 0);
    assert.ok(answered >= 40, `getattr of the folder answered in the addon (${answered}; ${crossed} crossed)`);
    assert.ok(crossed <= 5, `${crossed} crossed`);
    // Every kind of change shows at once: a subfolder (link count), a mode, times, a removal.
    await sh(`mkdir '${d}/sub'`);
    assert.equal((await statOf('%h', d))[0], '3');
    await sh(`chmod 750 '${d}' && touch -m -d '2001-02-03 04:05:06' '${d}'`);
    assert.deepEqual(await statOf('%a %Y', d), [`750 ${Date.parse('2001-02-03T04:05:06') / 1000}`]);
    await sh(`rmdir '${d}/sub' && rm '${d}/f1' && mv '${d}/f2' '${d}/g2'`);
    const shown = (await statOf(FORMAT, d))[0]!;
    assert.equal(shown.split(' ')[1], '2', 'link count after the rmdir');
    assert.notEqual(shown.split(' ')[5], String(Date.parse('2001-02-03T04:05:06') / 1000), 'mtime moved on');
    // What the addon answered is what the engine answers: a new mount asks the engine.
    await fs.unmount();
    await fs.mount();
    assert.deepEqual(await statOf(FORMAT, d), [shown]);
    await fs.unmount();
  });

  it("a file's attributes after a setattr are answered in the addon until a write; chown clears set-ID bits", async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    await fs.mount();
    const d = path.join(fs.mnt, 'set');
    await sh(`mkdir '${d}'`);
    const before = await requestCounts(fs.machine.home, fs.name);
    // As tar and cp -p do, through the open handle: write, times, owner, mode; then a chmod
    // that sets the set-user-ID and set-group-ID bits and a chown, which must clear them: the
    // kernel decides from the attributes the addon answers, so a stale mode there would keep them.
    const out = await python(SETATTRS, d, '30');
    const after = await requestCounts(fs.machine.home, fs.name);
    assert.deepEqual(
      out.modes,
      Array.from({ length: 30 }, () => 0o100755),
      'set-ID bits cleared by each chown',
    );
    assert.deepEqual(
      out.sizes,
      Array.from({ length: 30 }, () => [1000, 3000, 3000]),
      'sizes seen by fstat after each write, and after the chown that followed it',
    );
    const answered = (after.answered.getattr ?? 0) - (before.answered.getattr ?? 0);
    const crossed = (after.crossed.getattr ?? 0) - (before.crossed.getattr ?? 0);
    // Each file's chowns make the kernel ask for its attributes: those after a setattr are
    // answered in the addon (3 of the 4 chowns of a file), the one after a write crosses.
    assert.ok(answered >= 60, `getattr after a setattr answered in the addon (${answered}; ${crossed} crossed)`);
    // What the addon answered is what the engine answers: a new mount asks the engine.
    const shown = await statOf('%f %s %Y', ...Array.from({ length: 30 }, (_, i) => path.join(d, `f${i}`)));
    await fs.unmount();
    await fs.mount();
    assert.deepEqual(await statOf('%f %s %Y', ...Array.from({ length: 30 }, (_, i) => path.join(d, `f${i}`))), shown);
    assert.ok(
      shown.every((l) => l === `81ed 3000 ${Date.parse('2001-02-03T04:05:06Z') / 1000}`),
      shown[0],
    );
    await fs.unmount();
  });

  it('a lookup of a missing name in a folder this mount made is answered in the addon; every name made there is found', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    await fs.mount();
    const d = path.join(fs.mnt, 'made');
    await sh(`mkdir '${d}'`);
    const before = await requestCounts(fs.machine.home, fs.name);
    await sh(`cd '${d}' && for i in $(seq 1 50); do echo $i > f$i; done`);
    const after = await requestCounts(fs.machine.home, fs.name);
    const answered = (after.answered.lookup ?? 0) - (before.answered.lookup ?? 0);
    const crossed = (after.crossed.lookup ?? 0) - (before.crossed.lookup ?? 0);
    assert.ok(answered >= 50, `lookups of the new names answered in the addon (${answered}; ${crossed} crossed)`);
    // Names made every other way, and one removed.
    await sh(
      `cd '${d}' && ln f1 h1 && mv f2 g2 && mkdir sub && ln -s f3 s3 && mkfifo p4 && echo x > sub/inner && ` +
        `rm f4 && mv sub/inner moved && mv g2 f5 && echo u > 'ü-名 6'`,
    );
    // A name that is not ASCII: the addon keeps the bytes the kernel sends (UTF-8), as given.
    const names = ['f1', 'h1', 'f3', 's3', 'p4', 'sub', 'moved', 'f5', 'ü-名 6'];
    // The kernel's own cache of names goes (it asks again for each), so the answers come from
    // the addon or the engine, not from what the kernel kept since it made the names.
    await fsp.writeFile('/proc/sys/vm/drop_caches', '2');
    for (const n of names) assert.equal((await run('stat', [path.join(d, n)])).code, 0, `${n} is found`);
    for (const n of ['f2', 'f4', 'g2', 'nothing', 'u-名 6'])
      assert.notEqual((await run('stat', [path.join(d, n)])).code, 0, `${n} is missing`);
    assert.equal(await fsp.readFile(path.join(d, 'f5'), 'utf8'), '2\n');
    assert.equal(await fsp.readFile(path.join(d, 'moved'), 'utf8'), 'x\n');
    // A name missing a moment ago can be made again.
    await sh(`cd '${d}' && echo again > f4`);
    assert.equal(await fsp.readFile(path.join(d, 'f4'), 'utf8'), 'again\n');
    await fs.unmount();
  });

  it('many writers at once: every byte lands while the pool of write buffers grows', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const r = await python(MANY_WRITERS, fs.mnt, String(WRITERS));
    assert.deepEqual(r, { exit: Array(WRITERS).fill(0) });
    const expected = (i: number) => sha(Buffer.concat(Array(131072).fill(createHash('sha256').update(`seed${i}`).digest())));
    for (let i = 0; i < WRITERS; i++) {
      assert.equal(sha(await fsp.readFile(path.join(fs.mnt, `w${i}`))), expected(i), `w${i}`);
    }
    await fs.sync();
    await fs.unmount();
    await fs.mount();
    assert.equal(sha(await fsp.readFile(path.join(fs.mnt, `w${WRITERS - 1}`))), expected(WRITERS - 1), 'kept');
    await fs.unmount();
  });

  it('libfuse3 carries 1 MiB writes in one request each, across chunk boundaries; libfuse2 in 128 KiB', async () => {
    // Chunks of 1 MiB: a 1 MiB write at an offset of 512 KiB covers two of them.
    const fs = await bed.filespace({ chunkSize: '1MiB' });
    const data = randomBytes(8 << 20);
    const src = path.join(local, 'eight');
    await fsp.writeFile(src, data);
    // The write requests a dd from the random file into `name` made.
    const writesOf = async (name: string, dd: string) => {
      const before = await requestCounts(fs.machine.home, fs.name);
      await sh(`dd if='${src}' of='${path.join(fs.mnt, name)}' ${dd} status=none`);
      return ((await requestCounts(fs.machine.home, fs.name)).crossed.write ?? 0) - (before.crossed.write ?? 0);
    };
    await fs.mount();
    assert.equal(await writesOf('three', 'bs=1M'), 8, 'one request per 1 MiB write (is libfuse3-dev installed?)');
    // Unaligned: a 512 KiB head, then 1 MiB writes that each straddle a chunk boundary.
    assert.equal(await writesOf('three-odd', 'bs=512K count=1'), 1);
    const straddling = 'bs=1M skip=512K seek=512K count=7 iflag=skip_bytes oflag=seek_bytes conv=notrunc';
    assert.equal(await writesOf('three-odd', straddling), 7);
    assert.equal(sha(await fsp.readFile(path.join(fs.mnt, 'three'))), sha(data));
    const odd = data.subarray(0, (512 << 10) + (7 << 20));
    assert.equal(sha(await fsp.readFile(path.join(fs.mnt, 'three-odd'))), sha(odd));
    await fs.sync();
    await fs.unmount();

    fs.machine.env.FILESPACE_LIBFUSE = '2';
    try {
      await fs.mount();
      assert.equal(await writesOf('two', 'bs=1M'), 64, '128 KiB requests under libfuse2');
      for (const name of ['two', 'three']) assert.equal(sha(await fsp.readFile(path.join(fs.mnt, name))), sha(data), name);
      assert.equal(sha(await fsp.readFile(path.join(fs.mnt, 'three-odd'))), sha(odd));
      await fs.unmount();
    } finally {
      delete fs.machine.env.FILESPACE_LIBFUSE;
    }
  });

  it('read answers go by the send thread or by the engine, as set, and every byte reads back', async () => {
    const fs = await bed.filespace();
    const data = randomBytes((5 << 20) + 12_345);
    await fs.mount();
    await fsp.writeFile(path.join(fs.mnt, 'big'), data);
    await fs.sync();
    await fs.unmount();
    const sent: Record<string, number> = {};
    try {
      for (const how of ['on', 'off']) {
        fs.machine.env.FILESPACE_FUSE_SEND_THREAD = how;
        // A fresh mount: the kernel kept none of the file's pages, every read crosses.
        await fs.mount();
        const before = await requestCounts(fs.machine.home, fs.name);
        assert.equal(sha(await fsp.readFile(path.join(fs.mnt, 'big'))), sha(data), how);
        const after = await requestCounts(fs.machine.home, fs.name);
        assert.ok((after.crossed.read ?? 0) - (before.crossed.read ?? 0) >= 40, `${how}: reads crossed to the engine`);
        sent[how] = (after.sentByThread ?? NaN) - (before.sentByThread ?? NaN);
        await fs.unmount();
      }
    } finally {
      delete fs.machine.env.FILESPACE_FUSE_SEND_THREAD;
    }
    assert.ok(sent.on! >= 40, `answers of 128 KiB went by the send thread: ${sent.on}`);
    assert.equal(sent.off, 0, 'none went by the send thread');
  });

  it('ls -l of files just written takes its attributes from the listing (readdirplus), right ones', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const dir = path.join(fs.mnt, 'plus');
    // Files of 0..199 bytes, written through the mount (each write leaves the kernel's
    // attributes of the file stale), a folder, a symlink and a second name of one file.
    await sh(
      `mkdir '${dir}' && cd '${dir}' && for i in $(seq 0 199); do head -c $i /dev/zero > f$i; done && ` +
        `mkdir sub && ln -s f7 link && ln f9 f9b && chmod 600 f3`,
    );
    const before = await requestCounts(fs.machine.home, fs.name);
    const r = await run('ls', ['-ln', '--time-style=+%s', dir]);
    assert.equal(r.code, 0, r.stderr);
    const after = await requestCounts(fs.machine.home, fs.name);
    const delta = (op: string) => (after.crossed[op] ?? 0) - (before.crossed[op] ?? 0);
    assert.ok(delta('readdirplus') > 0, 'the listing carried attributes');
    assert.equal(delta('getattr') + delta('lookup'), 0, 'no entry was asked for on its own');
    // ls asks for each entry's SELinux label (and ACL) until the filesystem says it keeps none:
    // once for the first entry, not 203 times.
    const labels = delta('getxattr') + (after.answered.getxattr ?? 0) - (before.answered.getxattr ?? 0);
    assert.ok(labels <= 2, `getxattr for 203 entries: ${labels} requests, at most one per name`);
    // What ls printed is what stat says of each name.
    const lines = r.stdout.trimEnd().split('\n').slice(1);
    assert.equal(lines.length, 203);
    // mode, links, uid, gid, size, mtime, name (no name here has a space).
    const shown = new Map(lines.map((l) => l.split(/\s+/)).map((f) => [f[6]!, f]));
    const stats = await statOf('%n %A %h %u %g %s %Y', ...[...shown.keys()].map((n) => path.join(dir, n)));
    for (const line of stats) {
      const [name, mode, nlink, uid, gid, size, mtime] = line.split(' ');
      const l = shown.get(path.basename(name!))!;
      assert.deepEqual(l.slice(0, 6), [mode, nlink, uid, gid, size, mtime], name);
    }
    assert.deepEqual(shown.get('f150')!.slice(0, 5), ['-rw-r--r--', '1', '0', '0', '150']);
    assert.equal(shown.get('f3')![0], '-rw-------');
    assert.equal(shown.get('f9')![1], '2');
    assert.equal(shown.get('sub')![0]![0], 'd');
    assert.equal(shown.get('link')![0]![0], 'l');
    await fs.unmount();
  });

  it('getxattr of a name no file has is answered in the addon; names in use read right', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    await sh(`cd '${fs.mnt}' && for i in $(seq 1 30); do printf x > f$i; done && setfattr -n user.kept -v yes f1`);
    const before = await requestCounts(fs.machine.home, fs.name);
    const misses = await run('bash', ['-c', `cd '${fs.mnt}' && for i in $(seq 1 30); do getfattr -n user.nothing f$i; done`]);
    assert.equal((misses.stderr.match(/No such attribute/g) ?? []).length, 30, misses.stderr);
    const after1 = await requestCounts(fs.machine.home, fs.name);
    assert.ok((after1.answered.getxattr ?? 0) - (before.answered.getxattr ?? 0) >= 30, 'answered in the addon');
    assert.equal((after1.crossed.getxattr ?? 0) - (before.crossed.getxattr ?? 0), 0, 'none reached the engine');
    assert.equal((await run('getfattr', ['--only-values', '-n', 'user.kept', path.join(fs.mnt, 'f1')])).stdout, 'yes');
    // A name new to the filespace is learned as it is set.
    await sh(`setfattr -n user.fresh -v v2 '${path.join(fs.mnt, 'f2')}'`);
    assert.equal((await run('getfattr', ['--only-values', '-n', 'user.fresh', path.join(fs.mnt, 'f2')])).stdout, 'v2');
    // POSIX ACL names are refused, as by a file system without ACLs, so tools fall back to chmod.
    const acl = await run('getfattr', ['-n', 'system.posix_acl_access', path.join(fs.mnt, 'f3')]);
    assert.match(acl.stderr, /Operation not supported/);
    // So are SELinux labels; other security.* names are kept.
    const label = await run('setfattr', ['-n', 'security.selinux', '-v', 'system_u:object_r:tmp_t:s0', path.join(fs.mnt, 'f3')]);
    assert.match(label.stderr, /Operation not supported/);
    assert.match((await run('getfattr', ['-n', 'security.selinux', path.join(fs.mnt, 'f3')])).stderr, /Operation not supported/);
    await sh(`setfattr -n security.NTACL -v acl '${path.join(fs.mnt, 'f3')}'`);
    assert.equal((await run('getfattr', ['--only-values', '-n', 'security.NTACL', path.join(fs.mnt, 'f3')])).stdout, 'acl');
    await fs.unmount();
  });
});
