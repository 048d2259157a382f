/**
 * Files in use while the engine works on them, through real mounts on a real S3 server:
 * fsync keeps succeeding while the chunks it is making durable upload and leave the local
 * store; a file deleted (or replaced by a rename) while a process holds it open is gone at
 * once, under no hidden name (on this machine, on a follower, and after a kill -9 of the
 * engine), yet stays readable and writable through the open descriptor, does not keep its
 * directory from being removed, and its data goes at the last close.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Bed, Linked, killHard, run, sh, until } from '../helpers/bed';

// Rewrites its own file with random pwrites (1 B to 1 MiB, sizes spread evenly over the
// orders of magnitude), now and then an ftruncate, and an fsync every ~13 operations. An
// fsync that fails is counted (and the run goes on); at the end the file must hold exactly
// what was written. Prints one JSON line.
const REWRITER = String.raw`
import hashlib, json, os, random, sys
path, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20
rnd = random.Random(seed)
size = 40 * MiB
shadow = bytearray(os.urandom(size))
fsyncs, failures, errors = 0, 0, []
def fsync():
    global fsyncs, failures
    fsyncs += 1
    try: os.fsync(fd)
    except OSError as e:
        failures += 1
        errors.append('fsync: %s' % e)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
for off in range(0, size, MiB): os.pwrite(fd, shadow[off:off + MiB], off)
fsync()
for n in range(ops):
    try:
        if rnd.random() < 0.04:
            new = rnd.randint(30 * MiB, 40 * MiB)
            os.ftruncate(fd, new)
            if new < len(shadow): del shadow[new:]
            else: shadow.extend(bytes(new - len(shadow)))
        else:
            length = min(MiB, int(2 ** rnd.uniform(0, 20)))
            off = rnd.randint(0, 40 * MiB - length)
            data = os.urandom(length)
            os.pwrite(fd, data, off)
            if off > len(shadow): shadow.extend(bytes(off - len(shadow)))
            shadow[off:off + length] = data
    except OSError as e:
        errors.append('write: %s' % e)
    if rnd.randint(1, 13) == 1: fsync()
fsync()
os.close(fd)
with open(path, 'rb') as f: got = f.read()
print(json.dumps({'fsyncs': fsyncs, 'failures': failures, 'errors': errors[:5],
                  'intact': hashlib.sha256(got).hexdigest() == hashlib.sha256(bytes(shadow)).hexdigest()}))
`;

// Holds files open and works on them through their descriptors, one JSON line per command:
// "open KEY PATH", "read KEY" (sha256 and length of the whole file, read through the
// descriptor), "write KEY OFFSET HEX", "fsync KEY", "stat KEY" (fstat: size, links),
// "close KEY".
const HOLDER = String.raw`
import hashlib, json, os, sys
fds = {}
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == 'open':
            fds[cmd[1]] = os.open(cmd[2], os.O_RDWR)
            out = {}
        elif cmd[0] == 'read':
            h, n, fd = hashlib.sha256(), 0, fds[cmd[1]]
            while True:
                b = os.pread(fd, 1 << 20, n)
                if not b: break
                h.update(b); n += len(b)
            out = {'sha': h.hexdigest(), 'length': n}
        elif cmd[0] == 'write':
            os.pwrite(fds[cmd[1]], bytes.fromhex(cmd[3]), int(cmd[2]))
            out = {}
        elif cmd[0] == 'fsync':
            os.fsync(fds[cmd[1]])
            out = {}
        elif cmd[0] == 'stat':
            st = os.fstat(fds[cmd[1]])
            out = {'size': st.st_size, 'nlink': st.st_nlink}
        elif cmd[0] == 'close':
            os.close(fds.pop(cmd[1]))
            out = {}
        out['ok'] = True
    except OSError as e:
        out = {'ok': False, 'error': str(e)}
    print(json.dumps(out), flush=True)
`;

class Holder {
  private readonly child: ChildProcess;
  private readonly replies: string[] = [];
  private waiting: ((line: string) => void) | undefined;

  constructor() {
    this.child = spawn('python3', ['-c', HOLDER], { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(line);
      } else {
        this.replies.push(line);
      }
    });
  }

  async cmd(...words: Array<string | number>): Promise<Record<string, unknown>> {
    const reply = new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer to "${words[0]}"`)), 120_000);
      this.waiting = (line) => {
        clearTimeout(timer);
        resolve(line);
      };
    });
    this.child.stdin!.write(`${words.join(' ')}\n`);
    return JSON.parse(await reply) as Record<string, unknown>;
  }

  /** Runs a command that must succeed. */
  async ok(...words: Array<string | number>): Promise<Record<string, unknown>> {
    const r = await this.cmd(...words);
    assert.equal(r.ok, true, `${words.slice(0, 2).join(' ')}: ${String(r.error)}`);
    return r;
  }

  kill(): void {
    this.child.kill('SIGKILL');
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const exists = (p: string) =>
  fsp.stat(p).then(
    () => true,
    () => false,
  );

/** Notes every name a directory listing shows while it runs, until stopped. */
function watchNames(dir: string): { seen: Set<string>; stop(): Promise<void> } {
  const seen = new Set<string>();
  let running = true;
  const loop = (async () => {
    while (running) {
      for (const n of await fsp.readdir(dir).catch(() => [] as string[])) seen.add(n);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    seen,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

const hidden = (names: Iterable<string>) => [...names].filter((n) => n.startsWith('.fuse_hidden'));

interface RewriterResult {
  fsyncs: number;
  failures: number;
  errors: string[];
  intact: boolean;
}

function python(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('python3', ['-c', script, ...args], { timeoutMs: 900_000 });
}

// Both FUSE bindings: the low-level one (the default) keeps a deleted open file by its inode
// number; the high-level one (FILESPACE_FUSE=highlevel) through a private alias for the hidden
// name libfuse2 renames it to (Vfs.unlinkKeepingAlias).
for (const binding of ['lowlevel', 'highlevel'])
  describe(`files in use (${binding} FUSE binding)`, () => {
    const bed = new Bed();

    before(async () => {
      process.env.FILESPACE_FUSE = binding;
      await bed.start();
    });

    after(async () => {
      await bed.stop();
    });

    it('fsync succeeds while the chunks it syncs upload and move to the clean cache', async () => {
      // No upload delay: chunks upload (and leave the dirty store) while the writers fsync.
      const fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '1GiB', settings: { 'upload-delay': '0s' } });
      await fs.mount();
      const ops = Number(process.env.FILESPACE_FSYNC_STRESS_OPS ?? 400);
      const results = await Promise.all(
        [1, 2].map(async (w) => {
          const r = await python(REWRITER, [path.join(fs.mnt, `db${w}.bin`), String(w), String(ops)]);
          assert.equal(r.code, 0, `writer ${w} failed: ${r.stderr}`);
          return JSON.parse(r.stdout) as RewriterResult;
        }),
      );
      // The engine's own account of any I/O error, for the failure message.
      const ioErrors = (await sh(`cat ${fs.machine.home}/run/*.log 2>/dev/null | grep -i 'error' | head -5 || true`)).trim();
      for (const [i, r] of results.entries()) {
        console.log(`writer ${i + 1}: ${r.fsyncs} fsyncs, ${r.failures} failed`);
        assert.ok(r.fsyncs >= ops / 40, `writer ${i + 1} made enough fsyncs to count (${r.fsyncs})`);
        assert.deepEqual(
          { failures: r.failures, errors: r.errors },
          { failures: 0, errors: [] },
          `writer ${i + 1}: no fsync may fail (${r.fsyncs} fsyncs)\n${ioErrors}`,
        );
        assert.ok(r.intact, `writer ${i + 1}: the file holds exactly what was written`);
      }
      await fs.unmount();
    });

    /** A writer with a follower, and `keep/held.bin` (6 MiB) and `keep/other.txt` uploaded and seen by both. */
    async function writerAndFollower(): Promise<{ a: Linked & { bucket: string }; b: Linked; pid: number; content: Buffer }> {
      const settings = { 'lease-ttl': '3s', 'follow-interval': '500ms', 'upload-delay': '0s' };
      const a = await bed.filespace({ chunkSize: '1MiB', settings });
      const b = await bed.link(await bed.machine('follower'), a.bucket);
      await b.set(settings);
      const pid = await a.mount();
      const content = randomBytes(6 * 1024 * 1024 + 4321);
      await fsp.mkdir(path.join(a.mnt, 'keep'));
      await fsp.writeFile(path.join(a.mnt, 'keep', 'held.bin'), content);
      await fsp.writeFile(path.join(a.mnt, 'keep', 'other.txt'), 'stays\n');
      await a.sync();
      await b.mount({ readOnly: true });
      assert.ok(await exists(path.join(b.mnt, 'keep', 'held.bin')));
      return { a, b, pid, content };
    }

    /** Waits until the follower `b` has applied everything the writer `a` committed so far. */
    async function followerCaughtUp(a: Linked, b: Linked): Promise<void> {
      const token = randomBytes(8).toString('hex');
      await fsp.writeFile(path.join(a.mnt, 'marker'), token);
      await a.sync();
      await until(
        'the follower to catch up',
        async () => (await fsp.readFile(path.join(b.mnt, 'marker'), 'utf8').catch(() => '')) === token,
      );
    }

    it('a file deleted while open is gone at once, here and on a follower, yet works through its descriptor until closed', async () => {
      const { a, b, content } = await writerAndFollower();
      const onWriter = watchNames(path.join(a.mnt, 'keep'));
      const onFollower = watchNames(path.join(b.mnt, 'keep'));
      const holder = new Holder();
      try {
        await holder.ok('open', 'f', path.join(a.mnt, 'keep', 'held.bin'));
        await fsp.unlink(path.join(a.mnt, 'keep', 'held.bin'));
        // Gone at once from this machine: no name, not even a hidden one.
        assert.deepEqual(await fsp.readdir(path.join(a.mnt, 'keep')), ['other.txt']);
        assert.equal(await exists(path.join(a.mnt, 'keep', 'held.bin')), false);
        // The open descriptor still reads the data, takes writes (past the old end too) and fsyncs.
        assert.deepEqual(await holder.ok('read', 'f'), { ok: true, sha: sha(content), length: content.length });
        const patch = randomBytes(300_000);
        const expected = Buffer.concat([content, Buffer.alloc(2 * 1024 * 1024)]);
        patch.copy(expected, 1024 * 1024 - 1000);
        patch.copy(expected, expected.length - patch.length);
        await holder.ok('write', 'f', 1024 * 1024 - 1000, patch.toString('hex'));
        await holder.ok('write', 'f', expected.length - patch.length, patch.toString('hex'));
        await holder.ok('fsync', 'f');
        assert.deepEqual(await holder.ok('read', 'f'), { ok: true, sha: sha(expected), length: expected.length });
        assert.deepEqual(await holder.ok('stat', 'f'), { ok: true, size: expected.length, nlink: 0 });
        // Everything else uploads while it is open (its own data does not count, and never uploads).
        await a.machine.ok('sync', a.name, '--timeout', '60s');
        // The follower sees the deletion, and never a hidden name.
        await until('the follower to see the deletion', async () => !(await exists(path.join(b.mnt, 'keep', 'held.bin'))));
        await followerCaughtUp(a, b);
        assert.deepEqual((await fsp.readdir(path.join(b.mnt, 'keep'))).sort(), ['other.txt']);
        await holder.ok('close', 'f');
      } finally {
        holder.kill();
        await onWriter.stop();
        await onFollower.stop();
      }
      assert.deepEqual(hidden(onWriter.seen), [], 'no hidden name on the writer');
      assert.deepEqual(hidden(onFollower.seen), [], 'no hidden name on the follower');
      // The last close freed its data.
      await until("the closed file's data to go", async () => Number((await a.status()).dirtyBytes) === 0);
      await b.unmount();
      await a.unmount();
      assert.deepEqual(await sh(`find ${a.cacheDir}/dirty -type f`), '');
    });

    it('a file deleted while open stays deleted after a kill -9 of the engine, here, on the follower and on a new machine', async () => {
      const { a, b, pid } = await writerAndFollower();
      const holder = new Holder();
      try {
        await holder.ok('open', 'f', path.join(a.mnt, 'keep', 'held.bin'));
        await holder.ok('write', 'f', 100, randomBytes(70_000).toString('hex'));
        await holder.ok('fsync', 'f');
        await fsp.unlink(path.join(a.mnt, 'keep', 'held.bin'));
        await holder.ok('write', 'f', 2 * 1024 * 1024, randomBytes(70_000).toString('hex'));
        // The engine dies right away, the file still open.
        await killHard(pid);
      } finally {
        holder.kill();
      }
      await a.mount();
      assert.deepEqual(await fsp.readdir(path.join(a.mnt, 'keep')), ['other.txt'], 'deleted, and no hidden name');
      assert.equal((await a.status()).dirtyBytes, 0, 'its data, never uploaded, went with it');
      await followerCaughtUp(a, b);
      assert.deepEqual((await fsp.readdir(path.join(b.mnt, 'keep'))).sort(), ['other.txt'], 'the follower agrees');
      const c = await bed.link(await bed.machine('fresh'), a.bucket);
      await c.mount({ readOnly: true });
      assert.deepEqual(
        (await fsp.readdir(path.join(c.mnt, 'keep'))).sort(),
        ['other.txt'],
        'a machine linking from the bucket agrees',
      );
      assert.equal(await fsp.readFile(path.join(c.mnt, 'keep', 'other.txt'), 'utf8'), 'stays\n');
      await c.unmount();
      await b.unmount();
      await a.unmount();
      assert.deepEqual(await sh(`find ${a.cacheDir}/dirty -type f`), '');
    });

    // libfuse2's high-level API names an open file by its path; once its folder is removed it has
    // none, and only the corrected addon (which declares nullpath_ok) passes such requests on, by
    // handle; fstat(2) reaches the filesystem without the handle there, so it fails ENOENT. The
    // low-level binding names the file by inode: fstat works too (fuse-lowlevel.test.ts).
    it('rm of an open file then rmdir of its folder: both succeed at once, and the descriptor still reads and writes', async () => {
      const fs = await bed.filespace({ chunkSize: '1MiB', settings: { 'upload-delay': '0s' } });
      await fs.mount();
      const dir = path.join(fs.mnt, 'tmpdir');
      await fsp.mkdir(dir);
      const content = randomBytes(3 * 1024 * 1024 + 99);
      await fsp.writeFile(path.join(dir, 'open.bin'), content);
      await fs.sync();
      const holder = new Holder();
      try {
        // Opened, never read yet: every read below misses the kernel's page cache.
        await holder.ok('open', 'f', path.join(dir, 'open.bin'));
        await fsp.unlink(path.join(dir, 'open.bin'));
        await fsp.rmdir(dir);
        assert.equal(await exists(dir), false);
        assert.deepEqual(await fsp.readdir(fs.mnt), []);
        assert.deepEqual(await holder.ok('read', 'f'), { ok: true, sha: sha(content), length: content.length });
        const patch = randomBytes(70_000);
        const expected = Buffer.concat([content, Buffer.alloc(1024 * 1024)]);
        patch.copy(expected, expected.length - patch.length);
        await holder.ok('write', 'f', expected.length - patch.length, patch.toString('hex'));
        await holder.ok('fsync', 'f');
        assert.deepEqual(await holder.ok('read', 'f'), { ok: true, sha: sha(expected), length: expected.length });
        await holder.ok('write', 'f', 10, 'ff');
        await holder.ok('fsync', 'f');
        expected[10] = 0xff;
        assert.deepEqual(await holder.ok('read', 'f'), { ok: true, sha: sha(expected), length: expected.length });
        await holder.ok('close', 'f');
      } finally {
        holder.kill();
      }
      await until("the closed file's data to go", async () => Number((await fs.status()).dirtyBytes) === 0);
      await fs.unmount();
      assert.deepEqual(await sh(`find ${fs.cacheDir}/dirty -type f`), '');
    });

    it('a file replaced by a rename while open keeps its data for its descriptor; its directory can be removed; the last close frees it', async () => {
      const fs = await bed.filespace({ chunkSize: '1MiB', settings: { 'upload-delay': '1h' } });
      await fs.mount();
      const dir = path.join(fs.mnt, 'work');
      await fsp.mkdir(dir);
      const old = randomBytes(2 * 1024 * 1024 + 17);
      const fresh = randomBytes(1024 * 1024 + 5);
      const scratch = randomBytes(3 * 1024 * 1024);
      await fsp.writeFile(path.join(dir, 'target.bin'), old);
      await fsp.writeFile(path.join(dir, 'target.bin.new'), fresh);
      await fsp.writeFile(path.join(dir, 'scratch.bin'), scratch);
      const watch = watchNames(dir);
      const holder = new Holder();
      try {
        await holder.ok('open', 'old', path.join(dir, 'target.bin'));
        await holder.ok('open', 'scratch', path.join(dir, 'scratch.bin'));
        // Replaced by a rename (as editors and databases save), and deleted, while open.
        await fsp.rename(path.join(dir, 'target.bin.new'), path.join(dir, 'target.bin'));
        await fsp.unlink(path.join(dir, 'scratch.bin'));
        assert.deepEqual(await fsp.readdir(dir), ['target.bin']);
        assert.equal(sha(await fsp.readFile(path.join(dir, 'target.bin'))), sha(fresh));
        assert.deepEqual(await holder.ok('read', 'old'), { ok: true, sha: sha(old), length: old.length });
        const patch = randomBytes(5000);
        const expected = Buffer.from(old);
        patch.copy(expected, 4096);
        await holder.ok('write', 'old', 4096, patch.toString('hex'));
        await holder.ok('fsync', 'old');
        assert.deepEqual(await holder.ok('read', 'old'), { ok: true, sha: sha(expected), length: expected.length });
        assert.equal(sha(await fsp.readFile(path.join(dir, 'target.bin'))), sha(fresh), 'the new file is untouched');
        // Everything still to upload uploads, while the replaced and deleted files stay open.
        await fs.set({ 'upload-delay': '0s' });
        await fs.machine.ok('sync', fs.name, '--timeout', '60s');
        // The directory of open, deleted files is empty, and can be removed like on a local disk.
        await fsp.unlink(path.join(dir, 'target.bin'));
        await fsp.rmdir(dir);
        assert.equal(await exists(dir), false);
        await holder.ok('close', 'old');
        await holder.ok('close', 'scratch');
      } finally {
        holder.kill();
        await watch.stop();
      }
      assert.deepEqual(hidden(watch.seen), [], 'no hidden name was ever listed');
      // The last close freed the data: nothing is left to upload or in the local store.
      await until("the closed files' data to go", async () => Number((await fs.status()).dirtyBytes) === 0);
      await fs.unmount();
      assert.deepEqual(await sh(`find ${fs.cacheDir}/dirty -type f`), '');
    });
  });
