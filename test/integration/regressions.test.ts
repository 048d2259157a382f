/**
 * Scenarios that held in a user trial, kept as regression tests through real mounts, the real
 * `filespace` command and the S3 test server (behind the fault proxy where uploads must be
 * in flight). Each compares the whole tree (path, type, mode, size, sha256, link target) with
 * a reference tree built by the same operations in a plain local directory, after a restart
 * of the engine and on a second machine that links the filespace from the bucket alone:
 *   - kill -9 of the engine while `mv` moves directories whose files are not uploaded yet;
 *   - rename over existing files and directories while their uploads are in flight, then
 *     kill -9 with uploads still in flight;
 *   - `rm -r` (and re-creating the same names) while uploads are in flight, then a restart;
 *   - eight concurrent writer processes, each verifying its own files and its own disjoint
 *     ranges of one shared file (ranges that share chunks);
 *   - writes through a shared `mmap`, with and without `msync`.
 * And bucket tampering (a chunk deleted, a byte flipped, the lease deleted, `filespace.json`
 * replaced, also by a header with a changed chunk size, with its seal stripped, or of another
 * filespace): the affected file reads EIO and only it, or mounting/linking is refused with a
 * clear message; never wrong bytes. A header without a seal, as written before headers were
 * sealed, still mounts, and the next read-write mount seals it.
 *
 * Uploads are held in flight by the proxy's latency on chunk PUTs and one upload at a time;
 * every wait is on an event (a PUT seen by the proxy, a line in a log, a status field).
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, RunResult, killHard, randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';
import { s3StoreFor } from '../helpers/moto';
import { readPassphraseFile } from '../../electron/host/config';
import { open } from '../../electron/engine/chunk/crypto';
import { unlockFilespace } from '../../electron/engine/filespace';
import { CKPT_PREFIX, RemoteMeta } from '../../electron/engine/meta/remote';

const KiB = 1024;

/** Prints one line per entry below a root: path, type, mode, and size + sha256 or link target. */
const LIST_TREE = String.raw`
import hashlib, os, stat, sys
root = sys.argv[1]
out = []
for dp, dns, fns in os.walk(root):
    for n in dns + fns:
        p = os.path.join(dp, n)
        rel = os.path.relpath(p, root)
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out.append('%s link -> %s' % (rel, os.readlink(p)))
        elif stat.S_ISDIR(st.st_mode):
            out.append('%s dir %o' % (rel, st.st_mode & 0o7777))
        else:
            h = hashlib.sha256()
            with open(p, 'rb') as f:
                for b in iter(lambda: f.read(1 << 20), b''):
                    h.update(b)
            out.append('%s file %o %d %s' % (rel, st.st_mode & 0o7777, st.st_size, h.hexdigest()))
print('\n'.join(sorted(out)))
`;

describe('regressions from the user trial', () => {
  const env = proxiedBed('regress');
  const bed = env.bed;

  const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

  async function script(name: string, text: string): Promise<string> {
    const file = path.join(env.local, name);
    await fsp.writeFile(file, text);
    return file;
  }

  async function tree(dir: string): Promise<string> {
    return sh(`python3 ${q(await script('list_tree.py', LIST_TREE))} ${q(dir)}`);
  }

  function firstDifference(want: string, got: string): string {
    const a = want.split('\n');
    const b = got.split('\n');
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (a[i] !== b[i]) return `line ${i + 1}:\n  expected ${a[i]}\n  actual   ${b[i]}`;
    }
    return 'no difference';
  }

  /** The tree below `dir` equals the reference tree below `ref`. */
  async function assertSameTree(ref: string, dir: string, when: string): Promise<void> {
    const [want, got] = await Promise.all([tree(ref), tree(dir)]);
    assert.notEqual(want.trim(), '', `the reference tree is not empty (${when})`);
    if (want !== got) assert.fail(`${when}: the tree differs from the reference at ${firstDifference(want, got)}`);
  }

  /** Links the filespace on a fresh machine straight to the S3 server and compares its tree. */
  async function assertSameOnSecondMachine(
    bucket: string,
    ref: string,
    sub = '',
    more?: (mnt: string) => Promise<void>,
  ): Promise<void> {
    const other = await bed.link(await bed.machine('second'), bucket);
    await other.mount({ readOnly: true });
    try {
      await assertSameTree(ref, path.join(other.mnt, sub), 'on a second machine');
      await more?.(other.mnt);
    } finally {
      await other.unmount();
    }
  }

  /** A machine that talks to S3 through the proxy: uploads start at once, one at a time. */
  async function proxiedWriter(): Promise<Linked & { bucket: string }> {
    env.proxy.clear();
    return bed.filespace({
      chunkSize: '64KiB',
      endpoint: env.proxy.endpoint,
      settings: { 'upload-delay': '0s', 'upload-concurrency': '1' },
    });
  }

  const chunkPuts = () => env.proxy.log.filter((r) => r.method === 'PUT' && r.url.includes('/chunks/')).length;

  /** Delays every chunk upload by `ms`, runs `start`, and waits until a chunk upload is in flight. */
  async function holdUploads(start: () => Promise<void>, ms = 2000): Promise<void> {
    env.proxy.set({ latencyMs: ms, match: { method: 'PUT', pathIncludes: '/chunks/' } });
    const seen = chunkPuts();
    await start();
    await until('a chunk upload in flight', () => chunkPuts() > seen, 60_000);
  }

  /** The operations just made ran while uploads were still pending (else the test proves nothing). */
  async function assertStillUploading(fs: Linked, what: string): Promise<void> {
    const st = await fs.status();
    assert.ok(Number(st.dirtyBytes) > 0, `${what} ran while uploads were in flight (dirty bytes left: ${String(st.dirtyBytes)})`);
  }

  /** Writes the same random file into the mount and into the reference tree. */
  async function twin(mnt: string, ref: string, rel: string, bytes: number): Promise<void> {
    await fsp.mkdir(path.dirname(path.join(ref, rel)), { recursive: true });
    await fsp.mkdir(path.dirname(path.join(mnt, rel)), { recursive: true });
    const src = await randomFile(path.dirname(path.join(ref, rel)), path.basename(rel), bytes);
    await fsp.copyFile(src, path.join(mnt, rel));
  }

  /** Renames in the reference tree and in the mount. */
  async function twinRename(mnt: string, ref: string, from: string, to: string): Promise<void> {
    await fsp.rename(path.join(ref, from), path.join(ref, to));
    await fsp.rename(path.join(mnt, from), path.join(mnt, to));
  }

  /** fsync of every file and directory below `dir`, so a kill -9 may lose none of it. */
  async function fsyncAll(dir: string): Promise<void> {
    await sh(`find ${q(dir)} -exec sync {} +`);
  }

  /** After an unmount, `filespace check --deep` finds the bucket and the cache consistent. */
  async function assertCheckClean(fs: Linked): Promise<void> {
    const check = await fs.machine.cli('check', fs.name, '--deep');
    assert.equal(check.code, 0, `filespace check --deep: ${check.stdout}${check.stderr}`);
  }

  it(
    'keeps a consistent tree when the engine is killed (-9) during mv of directories whose files are not uploaded',
    { timeout: 240_000 },
    async () => {
      const fs = await proxiedWriter();
      const pid = await fs.mount();
      const ref = path.join(env.local, 'mv-ref');
      // Six directories, each with files of several chunks and a subdirectory, in a/ (b/ is empty).
      const dirs = 6;
      for (const side of ['a', 'b']) {
        await fsp.mkdir(path.join(fs.mnt, side));
        await fsp.mkdir(path.join(ref, side), { recursive: true });
      }
      await holdUploads(async () => {
        for (let d = 0; d < dirs; d++) {
          for (let f = 0; f < 3; f++) await twin(fs.mnt, ref, `a/d${d}/f${f}.bin`, 90 * KiB + d * 7001 + f * 13);
          await twin(fs.mnt, ref, `a/d${d}/sub/deep.bin`, 150 * KiB + d);
        }
        await fsyncAll(fs.mnt);
      });
      // The real mv moves the directories between a/ and b/ in a loop; a move is logged as done
      // once it is durable (fsync of both parents). The engine is killed in the middle of it.
      const log = path.join(env.local, 'mv.log');
      const mover = spawn(
        'bash',
        [
          '-c',
          `cd ${q(fs.mnt)} && i=0; while :; do d=$((i % ${dirs})); if [ -d a/d$d ]; then s=a t=b; else s=b t=a; fi; ` +
            `echo "BUSY $d $s $t" >> ${q(log)}; mv $s/d$d $t/ || exit 1; sync $s $t || exit 1; echo "DONE $d $s $t" >> ${q(log)}; i=$((i + 1)); done`,
        ],
        { stdio: 'ignore' },
      );
      const moverDone = new Promise((r) => mover.on('exit', r));
      try {
        await until(
          'eight moves done',
          async () => ((await fsp.readFile(log, 'utf8')).match(/^DONE/gm)?.length ?? 0) >= 8,
          120_000,
        );
        await assertStillUploading(fs, 'the moves');
        await killHard(pid);
      } finally {
        mover.kill('SIGKILL');
        await moverDone;
      }
      env.proxy.clear();
      await fs.mount();
      // Replay the finished moves on the reference.
      const lines = (await fsp.readFile(log, 'utf8')).trim().split('\n');
      for (const line of lines) {
        const [kind, d, s, t] = line.split(' ');
        if (kind === 'DONE') await fsp.rename(path.join(ref, s!, `d${d}`), path.join(ref, t!, `d${d}`));
      }
      // The move in progress may have happened or not. Its BUSY line may also have been written
      // after the kill, when the mover's test of a/ failed on the dead mount and named the wrong
      // side: what counts is where the directory is in the reference and on the mount.
      const last = lines[lines.length - 1]!.split(' ');
      if (last[0] === 'BUSY') {
        const [, d] = last;
        const at = async (root: string, side: string) =>
          fsp.stat(path.join(root, side, `d${d}`)).then(
            () => true,
            () => false,
          );
        const [inA, inB] = [await at(fs.mnt, 'a'), await at(fs.mnt, 'b')];
        assert.ok(inA !== inB, `the directory being moved is in exactly one place (in a: ${inA}, in b: ${inB})`);
        const refInA = await at(ref, 'a');
        if (inA !== refInA) {
          const [s, t] = refInA ? ['a', 'b'] : ['b', 'a'];
          assert.deepEqual(last.slice(2), [s, t], `only the move in progress (${last.join(' ')}) differs from the log`);
          await fsp.rename(path.join(ref, s, `d${d}`), path.join(ref, t, `d${d}`));
        }
      }
      await assertSameTree(ref, fs.mnt, 'after kill -9 and restart');
      await fs.sync();
      await fs.unmount();
      await assertCheckClean(fs);
      await assertSameOnSecondMachine(fs.bucket, ref);
    },
  );

  it(
    'keeps renames over files and directories made while their uploads are in flight, through completion and through kill -9',
    { timeout: 240_000 },
    async () => {
      const fs = await proxiedWriter();
      const pid = await fs.mount();
      const m = fs.mnt;
      const ref = path.join(env.local, 'over-ref');
      // Committed first: what gets replaced.
      await twin(m, ref, 'doc.bin', 100 * KiB);
      await twin(m, ref, 'victim.bin', 150 * KiB);
      await twin(m, ref, 'small.txt', 3000);
      await twin(m, ref, 'keep/k.bin', 70 * KiB);
      for (const root of [m, ref]) for (const d of ['olddir', 'empty']) await fsp.mkdir(path.join(root, d));
      await fs.sync();

      // Round 1: renames while uploads are in flight; the engine runs on and completes them.
      await holdUploads(async () => {
        await twin(m, ref, 'tmp/save.tmp', 200 * KiB);
        await twin(m, ref, 'pending.bin', 130 * KiB);
        await twin(m, ref, 'newdir/a.bin', 90 * KiB);
        await twin(m, ref, 'newdir/sub/b.bin', 90 * KiB);
      });
      await twinRename(m, ref, 'tmp/save.tmp', 'doc.bin'); // an editor's save: new content over a committed file
      await twinRename(m, ref, 'small.txt', 'pending.bin'); // a committed file over one still uploading
      await twinRename(m, ref, 'newdir', 'olddir'); // a directory of uploading files over an empty one
      await twinRename(m, ref, 'olddir/a.bin', 'victim.bin'); // an uploading file over a committed one, across directories
      await assertStillUploading(fs, 'the renames of round 1');
      env.proxy.clear();
      await fs.sync();
      await assertSameTree(ref, m, 'after the uploads completed');

      // Round 2: the same while uploads are in flight, then kill -9 before they complete.
      await holdUploads(async () => {
        await twin(m, ref, 'tmp/save2.tmp', 260 * KiB);
        await twin(m, ref, 'late/c.bin', 100 * KiB);
        await twin(m, ref, 'late/d.bin', 100 * KiB);
      });
      await twinRename(m, ref, 'tmp/save2.tmp', 'doc.bin'); // over the file uploaded in round 1
      await twinRename(m, ref, 'keep/k.bin', 'late/c.bin'); // a committed file over an uploading one
      await twinRename(m, ref, 'late', 'empty'); // over an empty directory
      await twinRename(m, ref, 'empty/d.bin', 'olddir/sub/b.bin');
      await fsyncAll(m);
      await assertStillUploading(fs, 'the renames of round 2');
      await killHard(pid);
      env.proxy.clear();
      await fs.mount();
      await assertSameTree(ref, m, 'after kill -9 and restart');
      await fs.sync();
      await fs.unmount();
      await assertCheckClean(fs);
      await assertSameOnSecondMachine(fs.bucket, ref);
    },
  );

  it(
    'forgets files removed with rm -r while their uploads are in flight, also when the same names come back',
    { timeout: 240_000 },
    async () => {
      const fs = await proxiedWriter();
      await fs.mount();
      const m = fs.mnt;
      const ref = path.join(env.local, 'rm-ref');
      await twin(m, ref, 'keep/a.bin', 80 * KiB);
      await twin(m, ref, 'mixed/old.bin', 100 * KiB);
      await twin(m, ref, 'mixed/sub/old2.bin', 50 * KiB);
      await fs.sync();
      await holdUploads(async () => {
        for (let k = 0; k < 4; k++) await twin(m, ref, `build/obj/o${k}.o`, 70 * KiB + k);
        await twin(m, ref, 'build/out.bin', 200 * KiB);
        await twin(m, ref, 'mixed/new.bin', 100 * KiB);
        await twin(m, ref, 'mixed/sub/new2.bin', 90 * KiB);
        await twin(m, ref, 'keep/b.bin', 120 * KiB);
      });
      await sh(`cd ${q(m)} && rm -r build mixed`);
      await sh(`cd ${q(ref)} && rm -r build mixed`);
      // The same names again, with other content, while the old uploads are still queued.
      await twin(m, ref, 'build/out.bin', 100 * KiB);
      await twin(m, ref, 'mixed/new.bin', 50 * KiB);
      await assertStillUploading(fs, 'rm -r');
      await assertSameTree(ref, m, 'right after rm -r');
      // Restart while the uploads are still in flight; they resume by themselves.
      await fs.unmount();
      env.proxy.clear();
      await fs.mount();
      await assertSameTree(ref, m, 'after a restart');
      await fs.sync();
      await assertSameTree(ref, m, 'after the uploads completed');
      await fs.unmount();
      await assertCheckClean(fs);
      await assertSameOnSecondMachine(fs.bucket, ref);
    },
  );

  it(
    'keeps what eight concurrent writers wrote and verified, in their own files and in disjoint ranges of one shared file',
    { timeout: 240_000 },
    async () => {
      const fs = await bed.filespace({ chunkSize: '64KiB', settings: { 'upload-delay': '0s' } });
      await fs.mount();
      const m = fs.mnt;
      const ref = path.join(env.local, 'conc-ref');
      const writers = 8;
      const range = 50_000; // not a multiple of the chunk size: neighbouring writers share chunks
      await twin(m, ref, 'shared.bin', writers * range);
      await fs.sync(); // the shared file is committed: writers rewrite parts of uploaded chunks
      for (let i = 0; i < writers; i++) for (const root of [m, ref]) await fsp.mkdir(path.join(root, `w${i}`));
      const writer = await script(
        'writer.py',
        String.raw`
import os, random, sys
mnt, ref, i, R = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(1000 + i)
problems = []
def readall(p):
    with open(p, 'rb') as f:
        return f.read()
for k in range(3):
    rel = 'w%d/f%d.bin' % (i, k)
    data = bytearray()
    fd = os.open(os.path.join(mnt, rel), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    size = rnd.randint(0, 300000)
    while len(data) < size:
        piece = os.urandom(min(size - len(data), rnd.randint(1, 70000)))
        os.write(fd, piece)
        data += piece
    os.fsync(fd)
    for _ in range(5):  # overwrites, some past the end (a hole)
        off = rnd.randint(0, len(data) + 20000)
        piece = os.urandom(rnd.randint(1, 40000))
        os.pwrite(fd, piece, off)
        if off > len(data):
            data += bytes(off - len(data))
        data[off:off + len(piece)] = piece
    os.fsync(fd)
    os.close(fd)
    if readall(os.path.join(mnt, rel)) != bytes(data):
        problems.append('%s reads back different bytes' % rel)
    fd = os.open(os.path.join(ref, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, bytes(data))
    os.close(fd)
fm = os.open(os.path.join(mnt, 'shared.bin'), os.O_RDWR)
fr = os.open(os.path.join(ref, 'shared.bin'), os.O_RDWR)
lo, hi = i * R, (i + 1) * R
for _ in range(12):
    off = rnd.randint(lo, hi - 1)
    piece = os.urandom(rnd.randint(1, hi - off))
    os.pwrite(fm, piece, off)
    os.pwrite(fr, piece, off)
    if rnd.random() < 0.3:
        os.fsync(fm)
os.fsync(fm)
if os.pread(fm, R, lo) != os.pread(fr, R, lo):
    problems.append('shared.bin range %d-%d reads back different bytes' % (lo, hi))
os.close(fm)
os.close(fr)
print('\n'.join(problems) if problems else 'verified')
sys.exit(1 if problems else 0)
`,
      );
      const results = await Promise.all(
        Array.from({ length: writers }, (_, i) => run('python3', [writer, m, ref, String(i), String(range)])),
      );
      const failed = results.map((r, i) => (r.code === 0 ? '' : `writer ${i}: ${r.stdout}${r.stderr}`)).filter(Boolean);
      if (failed.length > 0) {
        const log = await fsp.readFile(path.join(fs.machine.home, 'run', `${fs.name}.log`), 'utf8').catch(() => '');
        assert.fail(`${failed.join('\n')}\nengine log:\n${log.split('\n').slice(-40).join('\n')}`);
      }
      await assertSameTree(ref, m, 'after the writers finished');
      await fs.unmount();
      await fs.mount();
      await assertSameTree(ref, m, 'after a remount');
      await fs.sync();
      await fs.unmount();
      await assertSameOnSecondMachine(fs.bucket, ref);
    },
  );

  it('keeps writes made through a shared mmap, with and without msync', { timeout: 240_000 }, async () => {
    const fs = await bed.filespace({ chunkSize: '64KiB', settings: { 'upload-delay': '0s' } });
    await fs.mount();
    const m = fs.mnt;
    const ref = path.join(env.local, 'mmap-ref');
    await twin(m, ref, 'existing.bin', 250_000);
    await fs.sync(); // committed: the mapping rewrites parts of uploaded chunks
    const mapper = await script(
      'mapper.py',
      String.raw`
import mmap, os, sys
root, ref = sys.argv[1], sys.argv[2]
SIZE = 300000
PATCHES = [(0, 5000), (65530, 20), (131072, 70000), (299990, 10)]  # across chunk boundaries, up to the end
def mapped(name, flush, unmap=True):
    fd = os.open(os.path.join(root, name), os.O_RDWR | os.O_CREAT, 0o644)
    expected = bytearray()
    if os.path.exists(os.path.join(ref, name)):
        with open(os.path.join(ref, name), 'rb') as f:
            expected = bytearray(f.read())
    if os.fstat(fd).st_size < SIZE:
        os.ftruncate(fd, SIZE)
    expected.extend(bytes(SIZE - len(expected)))
    mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for off, n in PATCHES:
        b = os.urandom(n)
        mm[off:off + n] = b
        expected[off:off + n] = b
    if mm[:] != expected:
        sys.exit('%s: the mapping does not read back what was written into it' % name)
    if flush:
        mm.flush()  # msync(MS_SYNC)
    rf = os.open(os.path.join(ref, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(rf, bytes(expected))
    os.close(rf)
    if unmap:
        mm.close()
        os.close(fd)
    return mm
mapped('msync.bin', True)
mapped('no-msync.bin', False)
mapped('existing.bin', False)
mapped('exit-mapped.bin', False, unmap=False)  # still mapped and open when the process exits
print('mapped')
`,
    );
    const r = await run('python3', [mapper, m, ref]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    await assertSameTree(ref, m, 'after the mapping process exited');
    await fs.unmount();
    await fs.mount();
    await assertSameTree(ref, m, 'after a remount');
    await fs.sync();
    await fs.unmount();
    await assertSameOnSecondMachine(fs.bucket, ref, '', async (mnt) => {
      // Read back through a mapping too, on a cold cache.
      const reader = await script(
        'map-read.py',
        String.raw`
import hashlib, mmap, os, sys
for name in sys.argv[2:]:
    with open(os.path.join(sys.argv[1], name), 'rb') as f:
        mm = mmap.mmap(f.fileno(), 0, mmap.MAP_SHARED, mmap.PROT_READ)
        print(name, hashlib.sha256(mm[:]).hexdigest())
        mm.close()
`,
      );
      const names = ['msync.bin', 'no-msync.bin', 'existing.bin', 'exit-mapped.bin'];
      const want = await sh(`cd ${q(ref)} && sha256sum ${names.join(' ')} | awk '{print $2, $1}'`);
      assert.equal(await sh(`python3 ${q(reader)} ${q(mnt)} ${names.join(' ')}`), want);
    });
  });

  /** Reads `file` one chunk-sized range at a time (no read-ahead): "ok", "WRONG" or the errno of each range. */
  async function readByRange(file: string, original: string, chunkBytes: number): Promise<string[]> {
    const reader = await script(
      'read-ranges.py',
      String.raw`
import errno, os, sys
path, original, cs = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(original, 'rb') as f:
    want = f.read()
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
out = []
for off in range(0, len(want), cs):
    got = b''
    try:
        while len(got) < cs:
            b = os.pread(fd, cs - len(got), off + len(got))
            if not b:
                break
            got += b
        out.append('ok' if got == want[off:off + cs] else 'WRONG')
    except OSError as e:
        out.append(errno.errorcode[e.errno])
print(' '.join(out))
`,
    );
    return (await sh(`python3 ${q(reader)} ${q(file)} ${q(original)} ${chunkBytes}`)).trim().split(' ');
  }

  it(
    'a chunk deleted or with a flipped byte gives EIO for that part of that file only, never wrong bytes',
    { timeout: 240_000 },
    async () => {
      const fs = await bed.filespace({ chunkSize: '64KiB', settings: { 'upload-delay': '0s' } });
      await fs.mount();
      const m = fs.mnt;
      const ref = path.join(env.local, 'tamper-ref');
      const store = s3StoreFor(bed.endpoint, fs.bucket);
      let deleted: string[];
      let flipped: string[];
      try {
        /** The chunk objects a write added to the bucket. */
        const chunksOf = async (write: () => Promise<void>) => {
          const before = new Set(await store.list('chunks/'));
          await write();
          await fs.sync();
          return (await store.list('chunks/')).filter((k) => !before.has(k));
        };
        const size = 4 * 64 * KiB - 100; // four chunks, the last one short
        deleted = await chunksOf(() => twin(m, ref, 'victims/deleted.bin', size));
        flipped = await chunksOf(() => twin(m, ref, 'victims/flipped.bin', size));
        assert.equal(deleted.length, 4);
        assert.equal(flipped.length, 4);
        await twin(m, ref, 'intact/a.bin', 200 * KiB);
        await twin(m, ref, 'intact/b.txt', 3000);
        await twin(m, ref, 'intact/sub/c.bin', 64 * KiB);
        for (const root of [m, ref]) await fsp.symlink('a.bin', path.join(root, 'intact', 'link'));
        await fs.sync();
        await fs.unmount();

        await store.delete(deleted[1]!);
        const victim = (await store.get(flipped[2]!))!.body;
        victim[victim.length >> 1]! ^= 0x01;
        await store.put(flipped[2]!, victim);
      } finally {
        await store.close();
      }

      // A second machine (cold cache): only the damaged range of each victim fails, with EIO.
      await assertSameOnSecondMachine(fs.bucket, path.join(ref, 'intact'), 'intact', async (mnt) => {
        assert.equal(
          await sh(`cd ${q(mnt)} && find . | LC_ALL=C sort`),
          await sh(`cd ${q(ref)} && find . | LC_ALL=C sort`),
          'every name is still there',
        );
        for (const name of ['deleted.bin', 'flipped.bin']) {
          const file = path.join(mnt, 'victims', name);
          assert.equal((await fsp.stat(file)).size, 4 * 64 * KiB - 100, `${name} keeps its size`);
          const ranges = await readByRange(file, path.join(ref, 'victims', name), 64 * KiB);
          assert.equal(ranges.length, 4);
          assert.ok(!ranges.includes('WRONG'), `${name}: a range read wrong bytes (${ranges.join(' ')})`);
          assert.deepEqual(
            ranges.filter((x) => x !== 'ok'),
            ['EIO'],
            `${name}: exactly the damaged chunk fails with EIO (${ranges.join(' ')})`,
          );
          const cat = await run('cat', [file]);
          assert.notEqual(cat.code, 0, `reading all of ${name} fails`);
          assert.match(cat.stderr, /Input\/output error/);
        }
      });
      // The writer's check names both damaged chunks, and changes nothing.
      const check = await fs.machine.cli('check', fs.name, '--deep');
      assert.notEqual(check.code, 0, 'check finds the damage');
      const name = (key: string) => key.slice(key.lastIndexOf('/') + 1);
      assert.match(
        check.stdout,
        new RegExp(`PROBLEM bucket: metadata names chunk ${name(deleted[1]!)}, which is not in the bucket`),
      );
      assert.match(check.stdout, new RegExp(`PROBLEM bucket: chunk ${name(flipped[2]!)} is unreadable`));
      assert.match(
        check.stdout,
        new RegExp(`PROBLEM local: metadata names chunk ${name(deleted[1]!)}, which is not in the bucket`),
      );
      assert.match(check.stderr, /3 problem\(s\) found .*nothing was changed/);
    },
  );

  it(
    'a writer whose lease was deleted from the bucket stops writing and says why; reads stay correct',
    { timeout: 240_000 },
    async () => {
      const fs = await bed.filespace({ chunkSize: '64KiB', settings: { 'upload-delay': '0s', 'lease-ttl': '3s' } });
      await fs.mount();
      const m = fs.mnt;
      const ref = path.join(env.local, 'lease-ref');
      await twin(m, ref, 'a.bin', 150 * KiB);
      await twin(m, ref, 'dir/b.bin', 70 * KiB);
      await twin(m, ref, 'dir/c.txt', 100);
      await fs.sync();
      const store = s3StoreFor(bed.endpoint, fs.bucket);
      await store.delete('lease');
      await store.close();
      const st = await until('the writer to notice the lease is gone', async () => {
        const s = await fs.status();
        return s.readOnlyReason ? s : undefined;
      });
      assert.match(String(st.readOnlyReason), /the write lease was removed from the bucket; this machine stopped writing/);
      const w = await run('touch', [path.join(m, 'after.txt')]);
      assert.notEqual(w.code, 0);
      assert.match(w.stderr, /Read-only file system/);
      await assertSameTree(ref, m, 'on the writer after the lease was deleted');
      await assertSameOnSecondMachine(fs.bucket, ref);
      // At its next mount nobody holds the lease: the machine takes it and writes again.
      await fs.unmount();
      await fs.mount();
      assert.equal(((await fs.status()).lease as Record<string, unknown>).role, 'writer');
      await twin(m, ref, 'after.bin', 1000);
      await assertSameTree(ref, m, 'after the remount');
      await fs.unmount();
    },
  );

  /**
   * Replaces `filespace.json` of a filespace with content by each of `cases` in turn: the
   * machine that linked it must refuse to mount, with one clear line; a new machine must
   * refuse to link with one clear line, or else read no wrong byte. Afterwards the original
   * header goes back, and the filespace mounts and reads as before.
   */
  async function replaceHeader(
    cases: (header: Record<string, unknown>) => Promise<Array<[string, Buffer, RegExp]>>,
  ): Promise<void> {
    const fs = await bed.filespace({ chunkSize: '128KiB', settings: { 'upload-delay': '0s' } });
    await fs.mount();
    const m = fs.mnt;
    const ref = path.join(env.local, `header-ref-${fs.name}`);
    await twin(m, ref, 'a.bin', 3 * 128 * KiB + 5);
    await twin(m, ref, 'b.txt', 100);
    await fs.sync();
    await fs.unmount();
    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const original = (await store.get('filespace.json'))!.body;
    const oneClearLine = (what: string, who: string, r: RunResult, message: RegExp) => {
      assert.notEqual(r.code, 0, `${what}: ${who} must refuse`);
      assert.match(r.stderr, message, `${what}: ${who}`);
      assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: ${who} says one line: ${r.stderr}`);
      assert.doesNotMatch(r.stderr, /unexpected error/, `${what}: ${who} explains the refusal: ${r.stderr}`);
    };
    // Every case runs (and the original header comes back) even when one fails; failures are reported together.
    const failures: string[] = [];
    try {
      for (const [what, body, message] of await cases(JSON.parse(original.toString('utf8')) as Record<string, unknown>)) {
        await store.put('filespace.json', body);
        try {
          const r = await fs.machine.cli('mount', fs.name);
          oneClearLine(what, 'the linked machine', r, message);
          assert.ok(!(await fsp.readFile('/proc/self/mounts', 'utf8')).includes(` ${m} `), `${what}: nothing was mounted`);
        } catch (err) {
          failures.push((err as Error).message);
        }
        const other = await bed.machine('relink');
        const mnt = path.join(other.home, 'mnt');
        await fsp.mkdir(mnt);
        const link = await other.cli(
          'link',
          ...bed.storeArgs(fs.bucket),
          '--mount-point',
          mnt,
          '--name',
          'x',
          '--passphrase-file',
          bed.passFile,
        );
        try {
          if (link.code !== 0) {
            oneClearLine(what, 'a new machine', link, message);
            continue;
          }
          // Linked: then it must never show a wrong byte.
          const mounted = await other.cli('mount', 'x', '--read-only');
          if (mounted.code !== 0) continue;
          try {
            for (const name of ['a.bin', 'b.txt']) {
              const ranges = await readByRange(path.join(mnt, name), path.join(ref, name), 64 * KiB);
              assert.ok(
                !ranges.includes('WRONG'),
                `${what}: ${name} on a new machine reads wrong bytes (per 64 KiB: ${ranges.join(' ')})`,
              );
            }
          } finally {
            await other.cli('unmount', 'x', '--force');
          }
        } catch (err) {
          failures.push((err as Error).message);
        }
      }
    } finally {
      await store.put('filespace.json', original);
      await store.close();
    }
    assert.deepEqual(failures, []);
    await fs.mount();
    await assertSameTree(ref, m, 'with the original header back');
    await fs.unmount();
    await assertCheckClean(fs);
  }

  it(
    'a filespace.json replaced by something that is not a header is refused with a clear message, and changes nothing',
    { timeout: 240_000 },
    async () => {
      await replaceHeader(async () => [
        ['not JSON', Buffer.from('this is not a filespace header\n'), /filespace\.json is not a Filespace header \(not JSON\)/],
        ['JSON of something else', Buffer.from('{"hello": "world"}\n'), /filespace\.json is not a valid Filespace header/],
      ]);
    },
  );

  // A changed chunk size once made a new machine read every block from the wrong chunk; the
  // header's fields are sealed now, and checkpoints name the chunk size they were written with,
  // so a header whose seal was stripped (as one written before the seal existed) is caught too.
  it(
    'a filespace.json replaced by another valid header is refused with a clear message, never with wrong bytes',
    { timeout: 300_000 },
    async () => {
      await replaceHeader(async (header) => {
        const otherBucket = await bed.newBucket();
        const m = await bed.machine('other-filespace');
        await m.ok('init', ...bed.storeArgs(otherBucket), '--chunk-size', '128KiB', '--passphrase-file', bed.passFile);
        const otherStore = s3StoreFor(bed.endpoint, otherBucket);
        const foreign = (await otherStore.get('filespace.json'))!.body;
        await otherStore.close();
        const unsealed = { ...header };
        delete unsealed.seal;
        return [
          [
            'a smaller chunk size',
            Buffer.from(JSON.stringify({ ...header, chunkSize: 64 * KiB })),
            /changed by someone without the passphrase: its chunk size is 64\.0 KiB, sealed as 128 KiB/,
          ],
          [
            'a larger chunk size',
            Buffer.from(JSON.stringify({ ...header, chunkSize: 256 * KiB })),
            /changed by someone without the passphrase: its chunk size is 256 KiB, sealed as 128 KiB/,
          ],
          [
            'no seal and a smaller chunk size',
            Buffer.from(JSON.stringify({ ...unsealed, chunkSize: 64 * KiB })),
            /filespace\.json gives a chunk size of 64\.0 KiB, but .* 128 KiB chunks: the header was changed/,
          ],
          [
            'no seal and a larger chunk size',
            Buffer.from(JSON.stringify({ ...unsealed, chunkSize: 256 * KiB })),
            /filespace\.json gives a chunk size of 256 KiB, but .* 128 KiB chunks: the header was changed/,
          ],
          ['the header of another filespace with the same passphrase', foreign, /different filespace|another filespace/],
        ];
      });
    },
  );

  it(
    'a filespace written before headers were sealed mounts; the next read-write mount seals it, and a changed chunk size is refused from then on',
    { timeout: 300_000 },
    async () => {
      const fs = await bed.filespace({ chunkSize: '128KiB', settings: { 'upload-delay': '0s' } });
      await fs.mount();
      const ref = path.join(env.local, `unsealed-ref-${fs.name}`);
      await twin(fs.mnt, ref, 'a.bin', 2 * 128 * KiB + 7);
      await fs.sync();
      await fs.unmount();
      const store = s3StoreFor(bed.endpoint, fs.bucket);
      const headerNow = async () =>
        JSON.parse((await store.get('filespace.json'))!.body.toString('utf8')) as Record<string, unknown>;
      try {
        // Make it what the code before the seal wrote: a header without a seal, a checkpoint that names nothing.
        const header = await headerNow();
        assert.equal(typeof header.seal, 'string', 'a new filespace has a sealed header');
        const unsealed = { ...header };
        delete unsealed.seal;
        await store.put('filespace.json', Buffer.from(JSON.stringify(unsealed, null, 2)));
        const { keys } = await unlockFilespace(store, await readPassphraseFile(bed.passFile));
        const legacy = new RemoteMeta(store, keys.metaKey);
        const { tree, seq } = await legacy.load(128 * KiB);
        await store.deleteMany(await store.list(CKPT_PREFIX));
        await legacy.writeCheckpoint(seq, tree.snapshot());
        const newestCheckpoint = async () => {
          const key = (await store.list(CKPT_PREFIX)).pop()!;
          return JSON.parse(open(keys.metaKey, (await store.get(key))!.body, `meta:${key}`, key).toString('utf8')) as Record<
            string,
            unknown
          >;
        };
        assert.equal((await newestCheckpoint()).filespace, undefined);

        // A follower reads with it and leaves it as it is.
        await fs.mount({ readOnly: true });
        await assertSameTree(ref, fs.mnt, 'read-only with an unsealed header');
        await fs.unmount();
        assert.equal((await headerNow()).seal, undefined, 'a read-only mount does not seal');

        // The writer seals it (same fields, plus the seal) after the newest checkpoint names the chunk size.
        await fs.mount();
        await assertSameTree(ref, fs.mnt, 'read-write with an unsealed header');
        const resealed = await headerNow();
        assert.equal(typeof resealed.seal, 'string', 'the read-write mount sealed the header');
        assert.deepEqual({ ...resealed, seal: undefined }, { ...unsealed, seal: undefined });
        assert.deepEqual((await newestCheckpoint()).filespace, { id: header.id, chunkSize: 128 * KiB });
        await fs.unmount();

        // From now on a change to it is refused, also with the seal stripped again.
        const refused = async (what: string, body: Record<string, unknown>, message: RegExp) => {
          await store.put('filespace.json', Buffer.from(JSON.stringify(body)));
          const r = await fs.machine.cli('mount', fs.name);
          assert.notEqual(r.code, 0, `${what}: the linked machine refuses`);
          assert.match(r.stderr, message, what);
          assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
          const other = await bed.machine('after-seal');
          const mnt = path.join(other.home, 'mnt');
          await fsp.mkdir(mnt);
          const link = await other.cli(
            'link',
            ...bed.storeArgs(fs.bucket),
            '--mount-point',
            mnt,
            '--name',
            'x',
            '--passphrase-file',
            bed.passFile,
          );
          assert.notEqual(link.code, 0, `${what}: a new machine refuses to link`);
          assert.match(link.stderr, /chunk size/, what);
          assert.equal(link.stderr.trim().split('\n').length, 1, link.stderr);
        };
        await refused(
          'a smaller chunk size',
          { ...resealed, chunkSize: 64 * KiB },
          /changed by someone without the passphrase: its chunk size is 64\.0 KiB, sealed as 128 KiB/,
        );
        const stripped = { ...resealed };
        delete stripped.seal;
        await refused(
          'no seal and a smaller chunk size',
          { ...stripped, chunkSize: 64 * KiB },
          /filespace\.json gives a chunk size of 64\.0 KiB, but .* 128 KiB chunks/,
        );
        await store.put('filespace.json', Buffer.from(JSON.stringify(resealed, null, 2)));
      } finally {
        await store.close();
      }
      await fs.mount();
      await assertSameTree(ref, fs.mnt, 'with the sealed header');
      await fs.unmount();
      await assertCheckClean(fs);
    },
  );
});
