/**
 * The FUSE ceiling: a filesystem that does (almost) nothing, mounted through fuse-native with
 * the same libfuse2 options and the same set of implemented operations as the product's
 * adapter (native/fuse/adapter.ts), so the kernel sends it the same requests. Reads return
 * zeros, writes are discarded (only the file size is remembered), and names live in a Map so
 * that create/stat/unlink loops and `tar x` can run against it too. Whatever throughput it
 * reaches is what FUSE plus fuse-native's JS dispatch allow on this machine; the product can
 * only be compared against it, not expected to beat it.
 *
 * The option string comes from the product's own FuseMount (its private optionString, built
 * with the engine's default timeouts), so the two cannot drift apart; mountopts.ts is the
 * fallback should that method ever disappear.
 *
 * Usage (child process): node nullfs.js MOUNTPOINT ZERO_FILE_BYTES
 * Prints "ready <option string>" once mounted; unmounts and exits on SIGTERM/SIGINT.
 */

import * as path from 'node:path';
import { constants as osConstants } from 'node:os';
import { DEFAULT_SETTINGS } from '../../electron/engine/config';
import { FuseMount, type FuseFilesystem } from '../../native/fuse/adapter';
import { productMountOptions } from './mountopts';

// eslint-disable-next-line @typescript-eslint/no-require-imports -- fuse-native has no type declarations; typed here
const Fuse = require('fuse-native') as new (
  mnt: string,
  ops: Record<string, unknown>,
  opts: Record<string, unknown>,
) => {
  _fuseOptions(): string;
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
};

type Cb = (code: number, ...rest: unknown[]) => void;

interface Entry {
  readonly ino: number;
  readonly kind: 'file' | 'dir' | 'symlink';
  mode: number;
  size: number;
  uid: number;
  gid: number;
  mtime: number;
  target?: string;
}

const E = osConstants.errno;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

/** The option string the product's FuseMount would pass for a mount with default settings. */
function productOptionString(mnt: string): string {
  const s = DEFAULT_SETTINGS;
  const probe = new FuseMount(mnt, {} as FuseFilesystem, {
    attrTimeoutSec: s.attrTimeoutSec,
    entryTimeoutSec: s.entryTimeoutSec,
    negativeTimeoutSec: s.negativeTimeoutSec,
    xattrs: s.xattrs,
    fsName: 'nullfs',
    allowOther: process.getuid?.() === 0,
  });
  const fromProduct = (probe as unknown as { optionString?: () => unknown }).optionString;
  const v = typeof fromProduct === 'function' ? fromProduct.call(probe) : undefined;
  return typeof v === 'string' && v.startsWith('-o') ? v : `-o${productMountOptions('nullfs').join(',')}`;
}

function main(): void {
  const [mnt, zeroBytes] = process.argv.slice(2);
  if (!mnt || !zeroBytes) {
    process.stderr.write('usage: nullfs MOUNTPOINT ZERO_FILE_BYTES\n');
    process.exit(2);
  }
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  let nextIno = 2;
  const now = Date.now();
  const entries = new Map<string, Entry>([
    ['/', { ino: 1, kind: 'dir', mode: 0o755, size: 4096, uid, gid, mtime: now }],
    ['/zero.bin', { ino: nextIno++, kind: 'file', mode: 0o644, size: Number(zeroBytes), uid, gid, mtime: now }],
  ]);
  const fds = new Map<number, string>();
  let nextFd = 1;

  const stat = (e: Entry) => ({
    ino: e.ino,
    mode: (e.kind === 'dir' ? S_IFDIR : e.kind === 'symlink' ? S_IFLNK : S_IFREG) | e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.size,
    nlink: 1,
    atime: e.mtime,
    mtime: e.mtime,
    ctime: e.mtime,
    blksize: 4096,
    blocks: Math.ceil(e.size / 512),
  });
  const parentOk = (p: string) => entries.get(path.posix.dirname(p))?.kind === 'dir';
  const add = (p: string, kind: Entry['kind'], mode: number, target?: string): number => {
    if (entries.has(p)) return -E.EEXIST;
    if (!parentOk(p)) return -E.ENOENT;
    entries.set(p, {
      ino: nextIno++,
      kind,
      mode: mode & 0o7777,
      size: kind === 'dir' ? 4096 : 0,
      uid,
      gid,
      mtime: Date.now(),
      target,
    });
    return 0;
  };
  const withEntry = (p: string, cb: Cb, fn: (e: Entry) => void) => {
    const e = entries.get(p);
    if (!e) return cb(-E.ENOENT);
    fn(e);
    cb(0);
  };

  const ops: Record<string, unknown> = {
    init: (cb: Cb) => cb(0),
    getattr: (p: string, cb: Cb) => {
      const e = entries.get(p);
      if (!e) return cb(-E.ENOENT);
      cb(0, stat(e));
    },
    fgetattr: (p: string, _fd: number, cb: Cb) => {
      const e = entries.get(p);
      if (!e) return cb(-E.ENOENT);
      cb(0, stat(e));
    },
    readdir: (p: string, cb: Cb) => {
      const prefix = p === '/' ? '/' : `${p}/`;
      const names = ['.', '..'];
      for (const k of entries.keys()) {
        if (k !== '/' && k.startsWith(prefix) && !k.slice(prefix.length).includes('/')) names.push(k.slice(prefix.length));
      }
      cb(0, names);
    },
    open: (p: string, _flags: number, cb: Cb) => {
      if (!entries.has(p)) return cb(-E.ENOENT);
      const fd = nextFd++;
      fds.set(fd, p);
      cb(0, fd);
    },
    create: (p: string, mode: number, cb: Cb) => {
      if (!entries.has(p)) {
        const r = add(p, 'file', mode);
        if (r) return cb(r);
      }
      const fd = nextFd++;
      fds.set(fd, p);
      cb(0, fd);
    },
    read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => {
      const e = entries.get(fds.get(fd) ?? '');
      if (!e) return cb(-E.EBADF);
      const n = Math.max(0, Math.min(len, e.size - pos));
      buf.fill(0, 0, n);
      cb(n);
    },
    write: (_p: string, fd: number, _buf: Buffer, len: number, pos: number, cb: Cb) => {
      const e = entries.get(fds.get(fd) ?? '');
      if (!e) return cb(-E.EBADF);
      e.size = Math.max(e.size, pos + len);
      cb(len);
    },
    truncate: (p: string, size: number, cb: Cb) => withEntry(p, cb, (e) => (e.size = size)),
    ftruncate: (_p: string, fd: number, size: number, cb: Cb) => withEntry(fds.get(fd) ?? '', cb, (e) => (e.size = size)),
    flush: (_p: string, _fd: number, cb: Cb) => cb(0),
    fsync: (_p: string, _ds: number, _fd: number, cb: Cb) => cb(0),
    fsyncdir: (_p: string, _ds: number, _fd: number, cb: Cb) => cb(0),
    release: (_p: string, fd: number, cb: Cb) => {
      fds.delete(fd);
      cb(0);
    },
    unlink: (p: string, cb: Cb) => {
      const e = entries.get(p);
      if (!e) return cb(-E.ENOENT);
      if (e.kind === 'dir') return cb(-E.EISDIR);
      entries.delete(p);
      cb(0);
    },
    mkdir: (p: string, mode: number, cb: Cb) => cb(add(p, 'dir', mode)),
    rmdir: (p: string, cb: Cb) => {
      const e = entries.get(p);
      if (!e) return cb(-E.ENOENT);
      for (const k of entries.keys()) if (k.startsWith(`${p}/`)) return cb(-E.ENOTEMPTY);
      entries.delete(p);
      cb(0);
    },
    rename: (from: string, to: string, cb: Cb) => {
      const e = entries.get(from);
      if (!e) return cb(-E.ENOENT);
      entries.delete(from);
      entries.set(to, e);
      cb(0);
    },
    symlink: (target: string, p: string, cb: Cb) => cb(add(p, 'symlink', 0o777, target)),
    readlink: (p: string, cb: Cb) => {
      const e = entries.get(p);
      if (!e || e.kind !== 'symlink') return cb(-E.EINVAL);
      cb(0, e.target ?? '');
    },
    link: (_from: string, _to: string, cb: Cb) => cb(-E.EPERM),
    chmod: (p: string, mode: number, cb: Cb) => withEntry(p, cb, (e) => (e.mode = mode & 0o7777)),
    chown: (p: string, u: number, g: number, cb: Cb) =>
      withEntry(p, cb, (e) => {
        if (u !== 0xffffffff && u !== -1) e.uid = u;
        if (g !== 0xffffffff && g !== -1) e.gid = g;
      }),
    utimens: (p: string, _atime: number, mtime: number, cb: Cb) => withEntry(p, cb, (e) => (e.mtime = mtime)),
    statfs: (_p: string, cb: Cb) =>
      cb(0, {
        bsize: 4096,
        frsize: 4096,
        blocks: 2 ** 30,
        bfree: 2 ** 30,
        bavail: 2 ** 30,
        files: 2 ** 31,
        ffree: 2 ** 31,
        favail: 2 ** 31,
        fsid: 0,
        flag: 0,
        namemax: 255,
      }),
    // The product implements extended attributes; so does this, so the kernel asks both the same.
    setxattr: (_p: string, _n: string, _v: Buffer, _pos: number, _f: number, cb: Cb) => cb(0),
    getxattr: (_p: string, _n: string, _pos: number, cb: Cb) => cb(-E.ENODATA),
    listxattr: (_p: string, cb: Cb) => cb(0, []),
    removexattr: (_p: string, _n: string, cb: Cb) => cb(-E.ENODATA),
  };

  const fuse = new Fuse(mnt, ops, { timeout: false });
  const options = productOptionString(mnt);
  fuse._fuseOptions = () => options;
  fuse.mount((err) => {
    if (err) {
      process.stderr.write(`mount failed: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`ready ${options}\n`);
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    fuse.unmount(() => process.exit(0));
    setTimeout(() => process.exit(0), 5000).unref();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (require.main === module) main();
