// Read and write requests lend their data buffers from a pool in the FUSE addon (see
// native/fuse/build-addon.js, correction 8): the addon copies a write's bytes into a pooled
// buffer before the request reaches JS and a read's answer out of it after JS answered. These
// tests mount a small in-memory filesystem through the product's FuseMount and drive it from
// other processes (dd, sha256sum) with more requests in flight at once than the pool holds, so
// both pooled buffers and the fallback (libfuse's own memory) serve requests; every byte read
// and written is compared, short reads and failed requests included.

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FuseMount, type FuseFilesystem, modificationTimesExact } from '../../native/fuse/adapter';
import { run as exec, tmpDir } from '../helpers/bed';

const KiB = 1024;
/** More than the addon's pool (64 buffers): some requests must take the fallback. */
const PARALLEL = 72;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

function errno(code: string): Error {
  return Object.assign(new Error(code), { errno: code });
}

/**
 * An in-memory filesystem: files opened for direct I/O (each read(2) and write(2) is one request
 * of the calling process, so many can be in flight), reads and writes answered a turn later.
 * `holdUntil(n)` makes reads wait until n of them are in flight (or a deadline passes).
 */
class MemoryFs {
  readonly files = new Map<string, Buffer>();
  private readonly fhs = new Map<number, string>();
  private nextFh = 1;
  private held: (() => void)[] = [];
  private holdFor = 0;
  private holdTimer: NodeJS.Timeout | undefined;
  maxInFlight = 0;
  private inFlight = 0;
  /** ArrayBuffers seen under the request buffers, and how many requests came in one seen before. */
  private readonly seen = new WeakSet<ArrayBufferLike>();
  reusedBuffers = 0;
  /** Reads of this name fail with EIO. */
  failing = '';

  holdUntil(n: number, deadlineMs: number): void {
    this.holdFor = n;
    this.holdTimer = setTimeout(() => this.release(), deadlineMs);
  }

  private release(): void {
    if (this.holdTimer) clearTimeout(this.holdTimer);
    this.holdFor = 0;
    // The last to arrive are answered first: buffers go back to the pool out of order.
    for (const go of this.held.reverse()) setImmediate(go);
    this.held = [];
  }

  private note(buf: Buffer): void {
    if (this.seen.has(buf.buffer)) this.reusedBuffers++;
    else this.seen.add(buf.buffer);
  }

  private async request<T>(fn: () => T): Promise<T> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.holdFor > 0) {
        await new Promise<void>((resolve) => {
          this.held.push(resolve);
          if (this.inFlight >= this.holdFor) this.release();
        });
      } else await new Promise<void>((resolve) => setImmediate(resolve));
      return fn();
    } finally {
      this.inFlight--;
    }
  }

  private stat(p: string) {
    const now = Date.now();
    const dir = p === '/';
    const data = this.files.get(p);
    if (!dir && !data) throw errno('ENOENT');
    const size = data?.length ?? 4096;
    return {
      ino: dir ? 1 : 2 + [...this.files.keys()].indexOf(p),
      mode: dir ? S_IFDIR | 0o755 : S_IFREG | 0o644,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      size,
      nlink: 1,
      atime: now,
      mtime: now,
      ctime: now,
      blksize: 4096,
      blocks: Math.ceil(size / 512),
    };
  }

  asFilesystem(): FuseFilesystem {
    const fs = {
      getattr: (p: string) => this.stat(p),
      readdir: () => ['.', '..', ...[...this.files.keys()].map((k) => k.slice(1))],
      open: (p: string) => {
        if (!this.files.has(p)) throw errno('ENOENT');
        const fh = this.nextFh++;
        this.fhs.set(fh, p);
        return fh;
      },
      create: (p: string) => {
        this.files.set(p, Buffer.alloc(0));
        const fh = this.nextFh++;
        this.fhs.set(fh, p);
        return fh;
      },
      directIo: () => true,
      read: (fh: number, buf: Buffer, len: number, pos: number) => {
        this.note(buf);
        return this.request(() => {
          const name = this.fhs.get(fh)!;
          if (name === this.failing) throw errno('EIO');
          const data = this.files.get(name)!;
          const n = Math.max(0, Math.min(len, data.length - pos));
          data.copy(buf, 0, pos, pos + n);
          return n;
        });
      },
      write: (fh: number, data: Buffer, pos: number) => {
        this.note(data);
        // What the request carries is copied now: the buffer is only lent until the answer.
        const copy = Buffer.from(data);
        return this.request(() => {
          const name = this.fhs.get(fh)!;
          const old = this.files.get(name)!;
          const next = Buffer.alloc(Math.max(old.length, pos + copy.length));
          old.copy(next);
          copy.copy(next, pos);
          this.files.set(name, next);
          return copy.length;
        });
      },
      truncate: async (p: string, size: number) => {
        const old = this.files.get(p) ?? Buffer.alloc(0);
        this.files.set(p, Buffer.concat([old, Buffer.alloc(Math.max(0, size - old.length))]).subarray(0, size));
      },
      ftruncate: async (fh: number, size: number) => fs.truncate(this.fhs.get(fh)!, size),
      flush: async () => undefined,
      fsync: async () => undefined,
      fsyncAll: async () => undefined,
      release: async (fh: number) => {
        this.fhs.delete(fh);
      },
      utimens: () => undefined,
      chmod: () => undefined,
      chown: () => undefined,
      statfs: () => ({
        bsize: 4096,
        frsize: 4096,
        blocks: 1 << 20,
        bfree: 1 << 19,
        bavail: 1 << 19,
        files: 1000,
        ffree: 900,
        favail: 900,
        fsid: 1,
        flag: 0,
        namemax: 255,
      }),
      getxattr: () => {
        throw errno('ENODATA');
      },
      listxattr: () => [],
    };
    return fs as unknown as FuseFilesystem;
  }
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('FUSE request buffers', { timeout: 180_000 }, () => {
  let work: string;
  before(async () => {
    work = await tmpDir('fuse-buffers');
  });
  after(async () => {
    await fsp.rm(work, { recursive: true, force: true });
  });

  async function mounted(mem: MemoryFs, name: string): Promise<{ mnt: string; fuse: FuseMount }> {
    const mnt = path.join(work, name);
    await fsp.mkdir(mnt, { recursive: true });
    const fuse = new FuseMount(mnt, mem.asFilesystem(), {
      attrTimeoutSec: 1,
      entryTimeoutSec: 1,
      negativeTimeoutSec: 0,
      xattrs: false,
      fsName: 'buffers',
      allowOther: false,
    });
    await fuse.mount();
    return { mnt, fuse };
  }

  it('reads and writes every byte through pooled and fallback buffers with many requests in flight', async () => {
    const mem = new MemoryFs();
    // Sizes that end inside a request (short last reads) and files of one request or several.
    const want = new Map<string, Buffer>();
    for (let i = 0; i < PARALLEL; i++) {
      const data = randomBytes(128 * KiB * (1 + (i % 3)) + i * 1000 + 1);
      want.set(`f${i}`, data);
      mem.files.set(`/f${i}`, Buffer.from(data));
    }
    const { mnt, fuse } = await mounted(mem, 'a');
    try {
      mem.holdUntil(PARALLEL, 30_000);
      const names = [...want.keys()];
      const sums = await exec(
        'bash',
        ['-c', 'for f in "$@"; do sha256sum "$f" & done; wait', 'bash', ...names.map((n) => path.join(mnt, n))],
        { timeoutMs: 120_000 },
      );
      assert.equal(sums.code, 0, sums.stderr);
      assert.equal(mem.maxInFlight, PARALLEL, 'every reader had a request in flight at once');
      const got = new Map(
        sums.stdout
          .trim()
          .split('\n')
          .map((l) => [path.basename(l.split(/\s+/)[1]!), l.split(/\s+/)[0]!]),
      );
      for (const [n, data] of want) assert.equal(got.get(n), sha(data), `${n} read back as it is`);
      if (modificationTimesExact) assert.ok(mem.reusedBuffers > 0, 'requests were served from reused (pooled) buffers');

      // Writes: each process writes its own new file in 128 KiB requests, then all are compared.
      const sources: string[] = [];
      for (let i = 0; i < PARALLEL; i++) {
        const src = path.join(work, `src${i}`);
        await fsp.writeFile(src, randomBytes(64 * KiB * (1 + (i % 5)) + 17 * i));
        sources.push(src);
      }
      const dd = await exec(
        'bash',
        [
          '-c',
          'dir=$1; shift; i=0; for s in "$@"; do dd if="$s" of="$dir/w$i" bs=128k status=none & i=$((i+1)); done; wait',
          'bash',
          mnt,
          ...sources,
        ],
        { timeoutMs: 120_000 },
      );
      assert.equal(dd.code, 0, dd.stderr);
      for (let i = 0; i < PARALLEL; i++) {
        assert.equal(sha(mem.files.get(`/w${i}`)!), sha(await fsp.readFile(sources[i]!)), `w${i} holds what was written`);
      }

      // A failed read returns its buffer too: reads after it still get their own bytes.
      mem.failing = '/f0';
      const failed = await exec('cat', [path.join(mnt, 'f0')], { timeoutMs: 30_000 });
      assert.notEqual(failed.code, 0);
      assert.match(failed.stderr, /Input\/output error/);
      mem.failing = '';
      const again = await exec(
        'bash',
        ['-c', 'for f in "$@"; do sha256sum "$f" & done; wait', 'bash', path.join(mnt, 'f1'), path.join(mnt, 'f2')],
        {
          timeoutMs: 30_000,
        },
      );
      assert.equal(again.code, 0, again.stderr);
      assert.ok(again.stdout.includes(sha(want.get('f1')!)) && again.stdout.includes(sha(want.get('f2')!)));
    } finally {
      await fuse.unmount(true);
    }
  });
});
