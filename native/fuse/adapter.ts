/**
 * The FUSE adapter: links a path-based filesystem to the kernel through fuse-native (N-API,
 * libfuse2). This is the only module that loads the fuse addon.
 *
 * It depends on nothing of ours: it takes any object implementing `FuseFilesystem` (the
 * engine's Vfs does) and translates errors exactly once, from an `errno` name on the thrown
 * value to the negative number libfuse wants; anything unrecognised is EIO.
 *
 * Mount options: libfuse2 would send 4 KiB writes and no attribute caching by default, so the
 * adapter passes big_writes, max_write, use_ino and the attr/entry/negative timeouts through
 * fuse-native's overridable option string. Operations never time out inside fuse-native
 * (`timeout: false`): the filesystem bounds its own waits (reads fail with EIO after the read
 * timeout; writes under backpressure wait, by design, and fail with ENOSPC after the write-stall
 * timeout when nothing can drain; see the engine's vfs/backpressure.ts).
 *
 * The kernel's page cache: by default every open drops the pages the kernel cached for the
 * file, so each read crosses FUSE. Open answers with keep_cache when the filesystem says the
 * cached pages can only hold what the new handle reads (`keepCache`), or with direct I/O when
 * the handle must read around them (`directIo`); the corrected addon carries both as bits of
 * the returned handle (build-addon.js), and keep_cache only if the loaded addon says it knows it.
 *
 * Attributes without a round trip: every lookup and getattr would cross from libfuse's thread
 * to this JS thread and back, two per entry for `ls -l` (the kernel's lookup, then coreutils'
 * getxattr of security.selinux). For a filesystem that reports its changes
 * (`attributesChanged`), the corrected addon keeps the attributes that readdir (`readdirPlus`)
 * and getattr (`getattrPlus`) answered, with whether the entry has extended attributes, and
 * answers lookups, getattrs and xattr queries that can only find nothing from them on its own
 * thread; with `xattrNames` it also knows every extended-attribute name in use, so a getxattr
 * of any other name (the kernel asks for security.capability before every write) is answered
 * there too. Requests of this mount that may change anything empty what they may change in the
 * addon (an inode, or everything), and a create's answer refills the new file and its folder; the
 * filesystem reports every other change; an entry lives at most ATTR_CACHE_TTL_MS. The
 * kernel's own attribute and entry timeouts stay short: libfuse2's high-level API cannot tell
 * the kernel about changes made other than through it (a follower's, the engine's own).
 *
 * Who asks: the corrected addon tells which uid, gid and pid made the request whose handler
 * runs (build-addon.js, correction 5); create, mkdir, symlink, chmod and chown read it at once
 * (`callerNow`) and pass it to the filesystem, so new entries belong to their creator and
 * ownership changes are allowed as on ext4. The kernel checks access to existing files itself
 * (`default_permissions`, always on); `allow_other` lets users other than the one who mounted
 * in at all (the host asks for it when it runs as root or /etc/fuse.conf allows it).
 *
 * Files deleted while open: libfuse2's high-level API (all fuse-native offers) renames such a
 * file to `.fuse_hidden<node><counter>` in its directory and unlinks that name at the last
 * close. Passed through as a rename, the hidden name would be committed, listed, replicated to
 * other machines, and left behind for good by a crash. So the adapter hands that rename to the
 * filesystem as "unlink, keeping this name as a private alias" (`unlinkKeepingAlias`): the
 * deletion is what gets committed, and libfuse keeps reaching the open file through the alias.
 * The `hard_remove` mount option (no renaming) cannot be used instead: libfuse2 then has no
 * path for the unlinked file and fails every read, write, fsync and fstat on it with ENOENT
 * (fstat reaches libfuse without the handle, so it would fail even with `nullpath_ok`). Once
 * the file's directory itself is removed, libfuse can no longer name the alias either: an addon
 * that declares `nullpath_ok` then passes requests that carry a handle (read, write, flush,
 * fsync, ftruncate, fgetattr, release) with an empty path, and the adapter answers them by the
 * handle (fuse-native's own fgetattr would ask `getattr` by that empty path, so `withFgetattr`
 * routes it to the handle); without it, or for fstat(2), libfuse answers ENOENT.
 *
 * Unmounting: `fusermount -u` first, which fails with EBUSY while files are open; with
 * `force`, `fusermount -uz` detaches lazily. Never touch the mount synchronously from this
 * process: the callbacks run on this process's JS thread, so a sync fs call would deadlock.
 * fuse-native's own mount call is synchronous (libfuse stats the mount point and calls
 * mount(2) on the JS thread), so a mount point inside a mount this process serves is refused.
 *
 * The end of a session: fuse-native runs libfuse's loop on its own thread and never tells JS
 * when it returns (someone ran `fusermount -u` or `umount`). `FuseMount.watch` finds out by
 * polling, asynchronously: the mount's entry leaves /proc/self/mountinfo, and once processes
 * that still use a lazily detached mount let go, libfuse closes this mount's /dev/fuse
 * descriptor. Mounts in one process are made one at a time so each knows its descriptor.
 */

import { execFile } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { existsSync, readFileSync, promises as fsp } from 'node:fs';

interface FuseNativeModule {
  readonly Fuse: FuseNativeCtor;
  readonly binding: {
    fuse_native_unmount(mnt: string, thread: Buffer): void;
    /** The handle bit that asks for keep_cache (corrected addons that understand it). */
    readonly open_keep_cache?: number;
    /** [uid, gid, pid] of the request whose handler runs now (corrected addons). */
    readonly fuse_native_caller?: () => [number, number, number] | undefined;
    /** Turns a mount's attribute cache on for `ttlMs` per entry (corrected addons; 0 turns it off). */
    readonly fuse_native_attr_cache?: (thread: Buffer, ttlMs: number) => void;
    /**
     * Empties a mount's attribute cache: of inode `ino` only, or all of it for 0; with `stat`
     * (the inode's attributes now), entries that hold exactly those stay (corrected addons).
     */
    readonly fuse_native_attr_forget?: (thread: Buffer, ino: number, stat?: Uint32Array) => void;
    /** Extended-attribute names some entry has: all of them (`all`), or new ones (corrected addons). */
    readonly fuse_native_xattr_names?: (thread: Buffer, names: string[], all: boolean) => void;
    /** A mount's request counters (corrected addons; see `FuseMount.requestCounts`). */
    readonly fuse_native_counts?: (thread: Buffer) => number[];
  } & Readonly<Record<`op_${string}`, number | undefined>>;
}

let loaded: FuseNativeModule | undefined;
/** False when the stock fuse-native is in use, which cannot set a modification time alone. */
export let modificationTimesExact = false;
/** The corrected addon passes names as bytes (latin1 strings); the stock one as UTF-8. */
let namesAsBytes = false;
/** The bit of an open handle that keeps the kernel's cached pages, when the addon has one. */
let keepCacheBit = 0;
/** Who made the request being handled, when the addon can tell (see `callerNow`). */
let requestCaller: (() => [number, number, number] | undefined) | undefined;
/** The addon's request counters, when the loaded addon keeps them (see `FuseMount.requestCounts`). */
let requestCounters: { read(thread: Buffer): number[]; ops: string[] } | undefined;
/** The addon's attribute cache, when the loaded addon has one (see `FuseMount.cacheAttributes`). */
let attrCache:
  | {
      enable(thread: Buffer, ttlMs: number): void;
      forget(thread: Buffer, ino: number, stat?: Uint32Array): void;
      names(thread: Buffer, names: string[], all: boolean): void;
    }
  | undefined;

/**
 * Loads fuse-native on first use (so commands that never mount never need it), naming the
 * missing system library when libfuse2 is absent.
 */
function fuseNative(): FuseNativeModule {
  if (loaded) return loaded;
  try {
    // Prefer the addon built by build-addon.js (fuse-native with the utimens correction);
    // fall back to the stock prebuild. fuse-native has no type declarations; its surface is
    // described by the local types below.
    const corrected = path.resolve(__dirname, '..', '..', '..', 'native', 'fuse', 'addon');
    const dir = existsSync(path.join(corrected, 'build', 'Release', 'fuse.node'))
      ? corrected
      : path.dirname(require.resolve('fuse-native/package.json'));
    // Loaded on first use from a folder chosen at run time, so a missing libfuse is one clear error.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a computed path: no static import can name it
    const Fuse = require(dir) as FuseNativeCtor;
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- node-gyp-build ships no types; typed here
    const loadBinding = require('node-gyp-build') as (dir: string) => FuseNativeModule['binding'];
    const binding = loadBinding(dir);
    modificationTimesExact = dir === corrected;
    namesAsBytes = dir === corrected;
    keepCacheBit = dir === corrected && binding.open_keep_cache === KEEP_CACHE_BIT ? KEEP_CACHE_BIT : 0;
    requestCaller = dir === corrected ? binding.fuse_native_caller : undefined;
    const enable = binding.fuse_native_attr_cache;
    const forget = binding.fuse_native_attr_forget;
    const names = binding.fuse_native_xattr_names;
    attrCache = dir === corrected && enable && forget && names ? { enable, forget, names } : undefined;
    const counts = binding.fuse_native_counts;
    const ops: string[] = [];
    for (const [key, v] of Object.entries(binding)) if (key.startsWith('op_') && typeof v === 'number') ops[v] = key.slice(3);
    requestCounters = dir === corrected && counts ? { read: counts, ops } : undefined;
    loaded = { Fuse, binding };
    return loaded;
  } catch (err) {
    const msg = (err as Error).message;
    if (/libfuse\.so/.test(msg)) throw new FuseError('libfuse2 is not installed: sudo apt-get install fuse libfuse2', 'FAILED');
    throw new FuseError(`the FUSE module could not be loaded: ${msg}`, 'FAILED');
  }
}

type Cb = (code: number, ...rest: unknown[]) => void;

const ASCII = /^\p{ASCII}*$/u;

/**
 * A name or path from the kernel (bytes, one char per byte) as the filesystem's string: UTF-8
 * decoded, each byte of an invalid sequence kept as U+DC80+byte, so names that are not UTF-8
 * stay distinct and come back byte for byte (see electron/engine/util/names.ts).
 */
export function wireToName(wire: string): string {
  if (ASCII.test(wire)) return wire;
  const b = Buffer.from(wire, 'latin1');
  let out = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    const n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    let cp = n === 1 ? c & 0x1f : n === 2 ? c & 0x0f : c & 0x07;
    let ok = n > 0 && i + n < b.length;
    for (let k = 1; ok && k <= n; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3f);
    }
    const min = n === 1 ? 0x80 : n === 2 ? 0x800 : 0x10000;
    if (ok && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
      out += String.fromCodePoint(cp);
      i += n + 1;
    } else {
      out += String.fromCharCode(0xdc00 + c);
      i++;
    }
  }
  return out;
}

/** The inverse of wireToName. */
export function nameToWire(name: string): string {
  if (ASCII.test(name)) return name;
  let out = '';
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    out += cp >= 0xdc80 && cp <= 0xdcff ? String.fromCharCode(cp - 0xdc00) : Buffer.from(ch, 'utf8').toString('latin1');
  }
  return out;
}

/** st_dev of an entry readdir lists: it has no extended attributes (ATTR_NO_XATTRS in the addon). */
const NO_XATTRS_MARK = 1;

/**
 * How long the addon may answer from an attribute it cached (when the filesystem reports its
 * changes, see `FuseFilesystem.attributesChanged`): every change empties the cache, so this
 * only bounds how long a change nobody reported could stay unseen.
 */
export const ATTR_CACHE_TTL_MS = 30_000;

/** Set in a handle returned from open to ask the corrected addon for direct I/O. */
const DIRECT_IO_BIT = 0x40000000;
/** Set in a handle returned from open to ask the corrected addon for keep_cache. */
const KEEP_CACHE_BIT = 0x20000000;

interface FuseNativeInstance {
  mnt: string;
  _thread: Buffer | null;
  mount(cb: (err: Error | null) => void): void;
  _fuseOptions(): string;
}

function failNoPath(): never {
  throw Object.assign(new Error('libfuse passed no path'), { errno: 'ENOENT' });
}

/** fuse-native's stat reply: 18 uint32s (its index.js `getStatArray`), times in ms. */
function statArray(st: FuseStat): Uint32Array {
  const ints = new Uint32Array(18);
  const put64 = (i: number, v: number) => {
    ints[i] = v % 2 ** 32;
    ints[i + 1] = Math.floor(v / 2 ** 32);
  };
  ints[0] = st.mode;
  ints[1] = st.uid;
  ints[2] = st.gid;
  put64(3, st.size);
  ints[6] = st.nlink;
  ints[7] = st.ino;
  ints[8] = st.rdev ?? 0;
  ints[9] = st.blksize;
  put64(10, st.blocks);
  put64(12, st.atime);
  put64(14, st.mtime);
  put64(16, st.ctime);
  return ints;
}

/**
 * The attributes as the addon's cache holds them from a getattr answer: fuse-native's
 * `getStatArray` (which turns a link count of 0 into 1), st_dev marking an entry without
 * extended attributes (NO_XATTRS_MARK).
 */
function cachedStatArray(st: FuseStat, xattrs: boolean): Uint32Array {
  const ints = statArray({ ...st, nlink: st.nlink || 1 });
  ints[5] = xattrs ? 0 : NO_XATTRS_MARK;
  return ints;
}

/**
 * fuse-native answers fgetattr with the `getattr` op by path, dropping the handle; this routes
 * it to the `fgetattr` op with the handle, so a file libfuse can no longer name (no path) is
 * answered by its handle, never as the root directory.
 */
function withFgetattr(fuse: FuseNativeInstance): void {
  const self = fuse as unknown as {
    ops: { fgetattr?: (p: string, fd: number, cb: (code: number, st?: FuseStat) => void) => void };
    _op_fgetattr?: unknown;
  };
  const fgetattr = self.ops.fgetattr;
  if (!fgetattr) return;
  self._op_fgetattr = (signal: (code: number, arr?: Uint32Array) => void, p: string, fd: number) =>
    fgetattr(p, fd, (code, st) => (code !== 0 || !st ? signal(code) : signal(0, statArray(st))));
}

/**
 * fuse-native's create passes on the handle alone; this passes the attributes the adapter adds
 * after it (the new file's and its folder's, as getattr answers them), which the corrected addon
 * stores in its attribute cache once the create is answered: the kernel's fgetattr of the new
 * file and its getattr of the folder before the next create are then answered there.
 */
function withCreateAttributes(fuse: FuseNativeInstance): void {
  type CreateCb = (code: number, fd?: number, ...stats: Uint32Array[]) => void;
  const self = fuse as unknown as {
    ops: { create?: (p: string, mode: number, cb: CreateCb) => void };
    _op_create?: unknown;
  };
  const create = self.ops.create;
  if (!create) return;
  self._op_create = (signal: (code: number, ...args: unknown[]) => void, p: string, mode: number) =>
    create(p, mode, (code, fd, ...stats) => signal(code, fd, ...stats));
}

type FuseNativeCtor = new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>) => FuseNativeInstance;

export interface FuseStat {
  readonly ino: number;
  readonly mode: number;
  /** Device number of a device node. */
  readonly rdev?: number;
  readonly uid: number;
  readonly gid: number;
  readonly size: number;
  readonly nlink: number;
  readonly atime: number;
  readonly mtime: number;
  readonly ctime: number;
  readonly blksize: number;
  readonly blocks: number;
}

/**
 * Who made a request (the FUSE request context). `inGroup` answers for the caller's primary
 * group at once and reads its supplementary groups from the `Groups:` line of
 * /proc/<pid>/status on first need: a small file the kernel writes, never on the mount, read
 * only when a caller other than root names a group other than its own (chgrp, setgid bits).
 */
export interface FuseCaller {
  readonly uid: number;
  readonly gid: number;
  readonly pid: number;
  inGroup(gid: number): boolean;
}

/** The supplementary groups of process (or thread) `pid`; empty if it is gone. */
export function groupsOf(pid: number): ReadonlySet<number> {
  let status: string;
  try {
    // Synchronous on purpose: procfs, not the mount, and only on the rare paths named above.
    status = readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return new Set();
  }
  const line = /^Groups:(.*)$/m.exec(status)?.[1] ?? '';
  return new Set(
    line
      .split(/\s+/)
      .filter((g) => /^\d+$/.test(g))
      .map(Number),
  );
}

/**
 * The caller of the request whose handler runs now; call it synchronously at the start of a
 * handler (the addon knows the request only while its handler runs). Undefined with the stock
 * addon, which does not pass the request context.
 */
export function callerNow(): FuseCaller | undefined {
  const c = requestCaller?.();
  if (!c) return undefined;
  const [uid, gid, pid] = c;
  let groups: ReadonlySet<number> | undefined;
  return {
    uid,
    gid,
    pid,
    inGroup: (g) => g === gid || (groups ??= groupsOf(pid)).has(g),
  };
}

/** See `FuseMount.requestCounts`. */
export interface RequestCounts {
  answered: Record<string, number>;
  crossed: Record<string, number>;
  emptied: { byRequest: number; byFilesystem: number; inodes: number; evicted: number };
  /** Low-level binding: answers written to the kernel by the addon's send thread (lowlevel.ts `sendThreadBytes`). */
  sentByThread?: number;
}

/** What the adapter needs from a filesystem. Throw a value with `errno: 'ENOENT'` etc. for errors. */
export interface FuseFilesystem {
  /** Also answers the kernel's fgetattr (by the path of the open file). */
  getattr(path: string): FuseStat;
  /** getattr, and whether the entry has extended attributes listxattr would show; see `attributesChanged`. */
  getattrPlus?(path: string): { stat: FuseStat; xattrs: boolean };
  /** fgetattr by handle alone, for an open file libfuse can no longer name. */
  fgetattr?(fh: number): FuseStat;
  readdir(path: string): string[];
  /**
   * readdir with the attributes of each name (`.` and `..` included) and whether it has
   * extended attributes that listxattr would show; see `attributesChanged`.
   */
  readdirPlus?(path: string): { names: string[]; stats: FuseStat[]; xattrs: boolean[] };
  /**
   * Set by the adapter when the addon caches attributes (those of getattr and of readdirPlus,
   * so the kernel's lookups and getattrs after a listing, and extended-attribute queries that
   * can only find nothing, are answered without a round trip to this thread). The filesystem
   * calls it synchronously on every change to what getattr, readdir, getxattr or listxattr
   * would answer, at least those that did not come from a request of this mount (another
   * machine's changes applied, the tree replaced, the engine's own changes): with the inode
   * number when only that inode's attributes changed (the cache then forgets that inode, or,
   * with `attributesOf`, keeps the entries of it that hold its attributes as they are now),
   * else without (it forgets everything). A request of this mount that may change anything
   * empties what it may change by itself when it arrives and when it is answered (its path's
   * inode for a write, flush, chmod and the like; the folder's for a create or mkdir; else
   * everything). getattr, getattrPlus, readdir and readdirPlus must answer synchronously (the cache relies on no change falling between
   * an answer and its storing). A filesystem without this hook gets no such cache.
   */
  attributesChanged?: (ino?: number) => void;
  /**
   * getattrPlus by inode number (named, or deleted while open), undefined for an inode that is
   * gone: what `attributesChanged(ino)` passes to the cache as the inode's attributes now.
   */
  attributesOf?(ino: number): { stat: FuseStat; xattrs: boolean } | undefined;
  /**
   * Every extended-attribute name some entry has (POSIX ACL names may be left out): with
   * `xattrNamesAdded`, lets the addon answer a getxattr of any other name (the kernel asks for
   * security.capability before every write) without a round trip. Only with `attributesChanged`.
   */
  xattrNames?(): string[];
  /** Set by the adapter: the filesystem calls it, synchronously, with each name some entry newly has. */
  xattrNamesAdded?: (names: readonly string[]) => void;
  /**
   * Set by the adapter when the addon counts requests: how many this mount has received so far,
   * those answered on libfuse's thread included (undefined when not mounted). A cheap call: the
   * filesystem may sample it to tell whether someone is using the mount.
   */
  requestsSoFar?: () => number | undefined;
  open(path: string, flags: number): number;
  /** True when this handle must bypass the kernel's page cache (honoured by the corrected addon). */
  directIo?(fh: number): boolean;
  /**
   * True when the kernel may keep the pages it cached for this file at this open (honoured by a
   * corrected addon that exports `open_keep_cache`; otherwise every open drops them).
   */
  keepCache?(fh: number): boolean;
  /** `caller`: who asked (new entries belong to it), when the addon can tell. */
  create(path: string, mode: number, flags?: number, caller?: FuseCaller): number;
  /** `answer`: see InodeFilesystem.read (lowlevel.ts); this adapter does not pass it. */
  read(fh: number, buf: Buffer, len: number, pos: number, answer?: (data: Buffer) => void): Promise<number>;
  write(fh: number, data: Buffer, pos: number): Promise<number>;
  /**
   * A write answered without a promise when it needs no wait: the bytes written, or undefined
   * when nothing was taken and `write` must do it. Its reply then goes out before the work the
   * write starts (promise continuations) runs on this thread.
   */
  writeNow?(fh: number, data: Buffer, pos: number): number | undefined;
  truncate(path: string, size: number): Promise<void>;
  ftruncate(fh: number, size: number): Promise<void>;
  flush(fh: number): Promise<void>;
  fsync(fh: number): Promise<void>;
  fsyncAll(): Promise<void>;
  release(fh: number): Promise<void>;
  unlink(path: string): Promise<void>;
  /** unlink() for a file libfuse keeps open under the hidden name `alias` (see the header). */
  unlinkKeepingAlias?(path: string, alias: string): Promise<void>;
  mkdir(path: string, mode: number, caller?: FuseCaller): void;
  /** FIFOs, sockets and device nodes (`mode` carries the S_IF* type bits). */
  mknod?(path: string, mode: number, rdev: number, caller?: FuseCaller): void;
  rmdir(path: string): void;
  rename(from: string, to: string): Promise<void>;
  symlink(target: string, path: string, caller?: FuseCaller): void;
  readlink(path: string): string;
  link(from: string, to: string): Promise<void>;
  chmod(path: string, mode: number, caller?: FuseCaller): void;
  chown(path: string, uid: number, gid: number, caller?: FuseCaller): void;
  /** Times in ms; SPECIAL_TIMES.omit / .now stand for UTIME_OMIT / UTIME_NOW. */
  utimens(path: string, atimeMs: number, mtimeMs: number): void;
  statfs(): Record<string, number>;
  setxattr(path: string, name: string, value: Buffer, flags: number): void;
  getxattr(path: string, name: string): Buffer;
  listxattr(path: string): string[];
  removexattr(path: string, name: string): void;
}

/** How the corrected addon passes utimensat's UTIME_OMIT and UTIME_NOW (ms values). */
export const SPECIAL_TIMES = { omit: 2 ** 48 - 1, now: 2 ** 48 - 2 } as const;

export interface MountOptions {
  readonly attrTimeoutSec: number;
  readonly entryTimeoutSec: number;
  readonly negativeTimeoutSec: number;
  readonly xattrs: boolean;
  readonly fsName: string;
  /** Let other users (and root-run tools that switch uid) see the mount. */
  readonly allowOther: boolean;
  readonly debug?: boolean;
  readonly onError?: (op: string, err: unknown) => void;
}

export class FuseError extends Error {
  constructor(
    message: string,
    readonly code: 'BUSY' | 'NOT_MOUNTED' | 'FAILED',
  ) {
    super(message);
    this.name = 'FuseError';
  }
}

/** The name libfuse2 gives a file deleted while open (`hidden_name()` in fuse.c). */
const LIBFUSE_HIDDEN = /^\.fuse_hidden[0-9a-f]{16}$/;

/** Whether a rename is libfuse2 hiding an open file that is being deleted or replaced. */
export function isHidingRename(from: string, to: string): boolean {
  const slash = to.lastIndexOf('/');
  return (
    LIBFUSE_HIDDEN.test(to.slice(slash + 1)) && from.lastIndexOf('/') === slash && from.slice(0, slash) === to.slice(0, slash)
  );
}

export function errnoNumber(err: unknown): number {
  // Filesystem errors carry an errno name; Node's own I/O errors carry it as `code`.
  const e = err as { errno?: unknown; code?: unknown } | null;
  const name = typeof e?.errno === 'string' ? e.errno : typeof e?.code === 'string' ? e.code : undefined;
  const n = name !== undefined ? (osConstants.errno as Record<string, number>)[name] : undefined;
  if (name === 'ENOSPC' || name === 'EDQUOT' || name === 'EROFS' || (n && typeof e?.errno === 'string'))
    return -(n ?? osConstants.errno.ENOSPC);
  return -osConstants.errno.EIO;
}

function run(file: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { timeout: 30_000 }, (err, _stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stderr: String(stderr) });
    });
  });
}

/** One mount, as /proc/self/mountinfo lists it. */
export interface MountEntry {
  /** Unique per mount (reused only after that mount is gone). */
  readonly id: number;
  readonly mountPoint: string;
  /** e.g. "fuse.filespace" for this product's mounts (libfuse's subtype). */
  readonly fsType: string;
  /** e.g. "filespace:NAME" for this product's mounts. */
  readonly source: string;
}

/** The file system type of this product's mounts in the mount table. */
export const FILESPACE_FS_TYPE = 'fuse.filespace';

/** Every mount this process can see, from /proc/self/mountinfo (read asynchronously). */
export async function mountTable(): Promise<MountEntry[]> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (f.length < 5 || dash < 0) continue;
    out.push({
      id: Number(f[0]),
      mountPoint: decode(f[4]!),
      fsType: decode(f[dash + 1] ?? ''),
      source: decode(f[dash + 2] ?? ''),
    });
  }
  return out;
}

/** Whether `dir` is a mount point right now (per /proc/self/mountinfo). */
export async function isMountPoint(dir: string): Promise<boolean> {
  const abs = path.resolve(dir);
  return (await mountTable()).some((m) => m.mountPoint === abs);
}

/** Whether `p` is `dir` or lies below it (both absolute and normalised). */
export function isWithin(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

/** This process's descriptors open on /dev/fuse (one per live session it serves). */
export async function fuseDescriptors(): Promise<Set<number>> {
  const out = new Set<number>();
  for (const fd of await fsp.readdir('/proc/self/fd').catch(() => [] as string[])) {
    if ((await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '')) === '/dev/fuse') out.add(Number(fd));
  }
  return out;
}

/** A mount this process serves, through either binding (this one or lowlevel.ts). */
export interface ServedMount {
  readonly mountPoint: string;
  /** The mount point with symlinks resolved, once known. */
  readonly servedAt: string | undefined;
}

/** Mounts this process serves; mounting inside one of them would deadlock (see the header). */
export const served = new Set<ServedMount>();
/** Mounts are made one at a time, so each can tell which /dev/fuse descriptor is its own. */
let mountQueue: Promise<unknown> = Promise.resolve();

/** Runs `mount` after every mount this process started before it. */
export function oneMountAtATime<T>(mount: () => Promise<T>): Promise<T> {
  const run = mountQueue.then(mount);
  mountQueue = run.catch(() => undefined);
  return run;
}

/**
 * Refuses a mount point inside a mount this process serves (checked lexically, then for real);
 * returns the mount point with symlinks resolved.
 */
export async function refuseNested(mountPoint: string): Promise<string> {
  const check = (p: string) => {
    for (const m of served) {
      const outer = m.servedAt ?? path.resolve(m.mountPoint);
      if (isWithin(p, outer)) {
        throw new FuseError(
          `cannot mount at ${mountPoint}: it lies inside ${outer}, which this process serves; pick a folder outside every filespace`,
          'FAILED',
        );
      }
    }
  };
  check(path.resolve(mountPoint));
  const real = await fsp.realpath(mountPoint).catch(() => path.resolve(mountPoint));
  check(real);
  return real;
}

/** This process's descriptors open on /dev/fuse that are not in `before`: the one a mount just opened. */
export async function newFuseDescriptor(before: ReadonlySet<number>): Promise<number | undefined> {
  const fresh = [...(await fuseDescriptors())].filter((fd) => !before.has(fd));
  return fresh.length === 1 ? fresh[0] : undefined;
}

/** Names what is missing for FUSE on this machine, or returns undefined when all is there. */
export async function checkFuseAvailable(): Promise<string | undefined> {
  try {
    await fsp.access('/dev/fuse');
  } catch {
    return '/dev/fuse is missing: install the "fuse" package (sudo apt-get install fuse libfuse2) or load the fuse kernel module';
  }
  // libfuse2 mounts with fusermount (Debian's `fuse`), libfuse3 with fusermount3 (`fuse3`, which
  // replaces `fuse`); the low-level addon takes whichever works here (lowlevel.ts, lowLevelAddon).
  const which = await run('/bin/sh', ['-c', 'command -v fusermount || command -v fusermount3']);
  if (which.code !== 0) return 'fusermount is not installed: sudo apt-get install fuse libfuse2';
  try {
    fuseNative();
  } catch (err) {
    return (err as Error).message;
  }
  return undefined;
}

/**
 * Names the processes that hold something inside `mountPoint` (working directory, root or an
 * open file), from /proc. Reading /proc links never enters the mount itself.
 */
export async function holdersOf(mountPoint: string): Promise<string[]> {
  const root = path.resolve(mountPoint);
  const inside = (p: string) => p === root || p.startsWith(root + '/');
  const out: string[] = [];
  for (const pid of await fsp.readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const links: string[] = [];
    for (const l of ['cwd', 'root']) links.push(await fsp.readlink(`/proc/${pid}/${l}`).catch(() => ''));
    for (const fd of await fsp.readdir(`/proc/${pid}/fd`).catch(() => [] as string[])) {
      links.push(await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => ''));
    }
    if (links.some(inside)) {
      const comm = (await fsp.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
      out.push(`${comm} (pid ${pid})`);
    }
  }
  return out;
}

export async function unmountPath(mountPoint: string, force: boolean): Promise<void> {
  const res = await run('fusermount', force ? ['-uz', mountPoint] : ['-u', mountPoint]);
  if (res.code === 0) return;
  if (/busy/i.test(res.stderr)) {
    const holders = await holdersOf(mountPoint);
    const who =
      holders.length > 0
        ? `in use by ${holders.slice(0, 5).join(', ')}${holders.length > 5 ? ` and ${holders.length - 5} more` : ''}`
        : 'busy (a process has a file or its working directory there)';
    throw new FuseError(`${mountPoint} is ${who}`, 'BUSY');
  }
  if (/not found|not mounted|Invalid argument/i.test(res.stderr)) {
    throw new FuseError(`${mountPoint} is not mounted`, 'NOT_MOUNTED');
  }
  throw new FuseError(`fusermount failed: ${res.stderr.trim()}`, 'FAILED');
}

export class FuseMount implements ServedMount {
  private fuse: FuseNativeInstance | undefined;
  private mounted = false;
  /** The mount point with symlinks resolved, as the mount table names it. */
  private realMountPoint: string | undefined;
  /** This mount's id in the mount table and its /dev/fuse descriptor, once mounted. */
  private mountId: number | undefined;
  private fuseFd: number | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  /** Whether the addon caches this mount's attributes (readdir then passes them along). */
  private attributesCached = false;

  constructor(
    readonly mountPoint: string,
    private readonly fs: FuseFilesystem,
    private readonly opts: MountOptions,
  ) {}

  get isMounted(): boolean {
    return this.mounted;
  }

  /** Whether the kernel still lists this mount (false once unmounted or detached by anyone). */
  async listed(): Promise<boolean> {
    if (this.mountId === undefined) return this.mounted && (await isMountPoint(this.realMountPoint ?? this.mountPoint));
    return (await mountTable()).some((m) => m.id === this.mountId);
  }

  /**
   * Whether the FUSE session has ended: the mount is gone from the mount table and, if it was
   * detached lazily, no process uses it any more (libfuse closed its /dev/fuse descriptor).
   */
  async sessionEnded(): Promise<boolean> {
    if (!this.mounted) return true;
    if (await this.listed()) return false;
    if (this.fuseFd === undefined) return true;
    return (await fsp.readlink(`/proc/self/fd/${this.fuseFd}`).catch(() => '')) !== '/dev/fuse';
  }

  /**
   * Polls (every `intervalMs`, asynchronously) for the end of the session while mounted, and
   * calls `onEnded` once when someone else unmounted it. `onDetached` is called once if it was
   * detached lazily and processes still use it (the session goes on until they let go).
   */
  watch(onEnded: () => void, onDetached: () => void = () => undefined, intervalMs = 1000): void {
    this.stopWatching();
    let busy = false;
    let detachedSaid = false;
    this.watchTimer = setInterval(() => {
      if (busy || !this.mounted) return;
      busy = true;
      void (async () => {
        try {
          if (await this.listed()) return;
          if (await this.sessionEnded()) {
            if (!this.watchTimer || !this.mounted) return;
            this.stopWatching();
            onEnded();
          } else if (!detachedSaid) {
            detachedSaid = true;
            onDetached();
          }
        } finally {
          busy = false;
        }
      })();
    }, intervalMs);
    this.watchTimer.unref();
  }

  private stopWatching(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = undefined;
  }

  private ops(): Record<string, unknown> {
    const fs = this.fs;
    const report = this.opts.onError ?? (() => undefined);
    const fail = (op: string, cb: Cb, err: unknown, ...rest: unknown[]) => {
      const code = errnoNumber(err);
      if (code === -osConstants.errno.EIO) report(op, err);
      cb(code, ...rest);
    };
    const sync = (op: string, fn: () => unknown, cb: Cb, okCode?: (v: unknown) => number) => {
      try {
        const v = fn();
        if (okCode) cb(okCode(v));
        else cb(0, v);
      } catch (err) {
        fail(op, cb, err);
      }
    };
    const async = (op: string, fn: () => Promise<unknown>, cb: Cb, okCode?: (v: unknown) => number) => {
      fn().then(
        (v) => (okCode ? cb(okCode(v)) : cb(0, v)),
        (err) => fail(op, cb, err),
      );
    };
    const n = namesAsBytes ? wireToName : (x: string) => x;
    const w = namesAsBytes ? nameToWire : (x: string) => x;
    const ops: Record<string, unknown> = {
      init: (cb: Cb) => cb(0),
      // Never the root for a request that named nothing (a wrong type would poison the kernel's inode).
      getattr: (p: string, cb: Cb) => {
        if (!this.attributesCached || !fs.getattrPlus || p === '')
          return sync('getattr', () => (p === '' ? failNoPath() : fs.getattr(n(p))), cb);
        let got: ReturnType<NonNullable<FuseFilesystem['getattrPlus']>>;
        try {
          got = fs.getattrPlus(n(p));
        } catch (err) {
          return fail('getattr', cb, err);
        }
        cb(0, got.xattrs ? got.stat : { ...got.stat, dev: NO_XATTRS_MARK });
      },
      // An empty path: libfuse could not name the open file (its directory was removed, and an
      // addon that declares nullpath_ok passes no path); the handle still can. See `withFgetattr`.
      fgetattr: (p: string, fd: number, cb: Cb) =>
        sync(
          'getattr',
          () => {
            if (p !== '') return fs.getattr(n(p));
            if (!fs.fgetattr) throw Object.assign(new Error('no path'), { errno: 'ENOENT' });
            return fs.fgetattr(fd);
          },
          cb,
        ),
      readdir: (p: string, cb: Cb) => {
        if (!this.attributesCached || !fs.readdirPlus) return sync('readdir', () => fs.readdir(n(p)).map(w), cb);
        let got: ReturnType<NonNullable<FuseFilesystem['readdirPlus']>>;
        try {
          got = fs.readdirPlus(n(p));
        } catch (err) {
          return fail('readdir', cb, err);
        }
        const { names, stats, xattrs } = got;
        // st_dev, which libfuse never passes on, tells the addon that an entry has no extended attributes.
        cb(
          0,
          names.map(w),
          stats.map((st, i) => (xattrs[i] ? st : { ...st, dev: NO_XATTRS_MARK })),
        );
      },
      open: (p: string, flags: number, cb: Cb) =>
        sync(
          'open',
          () => {
            const fh = fs.open(n(p), flags);
            if (modificationTimesExact && fs.directIo?.(fh)) return fh | DIRECT_IO_BIT;
            return keepCacheBit && fs.keepCache?.(fh) ? fh | keepCacheBit : fh;
          },
          cb,
        ),
      create: (p: string, mode: number, cb: Cb) => {
        let fd: number;
        try {
          fd = fs.create(n(p), mode, undefined, callerNow());
        } catch (err) {
          return fail('create', cb, err);
        }
        if (!this.attributesCached || !fs.getattrPlus) return cb(0, fd);
        // For the addon's cache (withCreateAttributes): computed now, after the create. The
        // file is made either way: without them the cache just learns nothing.
        let stats: Uint32Array[];
        try {
          const file = fs.getattrPlus(n(p));
          const dir = fs.getattrPlus(n(p.slice(0, p.lastIndexOf('/')) || '/'));
          stats = [cachedStatArray(file.stat, file.xattrs), cachedStatArray(dir.stat, dir.xattrs)];
        } catch {
          stats = [];
        }
        cb(0, fd, ...stats);
      },
      // The buffer is the addon's (a pooled one may be longer than the request): valid until cb.
      read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
        async(
          'read',
          () => fs.read(fd, buf.length === len ? buf : buf.subarray(0, len), len, pos),
          cb,
          (n) => n as number,
        ),
      write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => {
        // The buffer is the addon's, only valid until cb, so the write path copies what it keeps.
        const data = buf.subarray(0, len);
        if (fs.writeNow) {
          let n: number | undefined;
          try {
            n = fs.writeNow(fd, data, pos);
          } catch (err) {
            return fail('write', cb, err);
          }
          if (n !== undefined) return cb(n);
        }
        async(
          'write',
          () => fs.write(fd, data, pos),
          cb,
          (n) => n as number,
        );
      },
      truncate: (p: string, size: number, cb: Cb) =>
        async(
          'truncate',
          () => fs.truncate(n(p), size),
          cb,
          () => 0,
        ),
      ftruncate: (_p: string, fd: number, size: number, cb: Cb) =>
        async(
          'ftruncate',
          () => fs.ftruncate(fd, size),
          cb,
          () => 0,
        ),
      flush: (_p: string, fd: number, cb: Cb) =>
        async(
          'flush',
          () => fs.flush(fd),
          cb,
          () => 0,
        ),
      fsync: (_p: string, _datasync: number, fd: number, cb: Cb) =>
        async(
          'fsync',
          () => fs.fsync(fd),
          cb,
          () => 0,
        ),
      fsyncdir: (_p: string, _datasync: number, _fd: number, cb: Cb) =>
        async(
          'fsyncdir',
          () => fs.fsyncAll(),
          cb,
          () => 0,
        ),
      release: (_p: string, fd: number, cb: Cb) =>
        async(
          'release',
          () => fs.release(fd),
          cb,
          () => 0,
        ),
      unlink: (p: string, cb: Cb) =>
        async(
          'unlink',
          () => fs.unlink(n(p)),
          cb,
          () => 0,
        ),
      mkdir: (p: string, mode: number, cb: Cb) =>
        sync(
          'mkdir',
          () => fs.mkdir(n(p), mode, callerNow()),
          cb,
          () => 0,
        ),
      rmdir: (p: string, cb: Cb) =>
        sync(
          'rmdir',
          () => fs.rmdir(n(p)),
          cb,
          () => 0,
        ),
      rename: (from: string, to: string, cb: Cb) =>
        async(
          'rename',
          () =>
            fs.unlinkKeepingAlias && isHidingRename(from, to) ? fs.unlinkKeepingAlias(n(from), n(to)) : fs.rename(n(from), n(to)),
          cb,
          () => 0,
        ),
      symlink: (target: string, p: string, cb: Cb) =>
        sync(
          'symlink',
          () => fs.symlink(n(target), n(p), callerNow()),
          cb,
          () => 0,
        ),
      readlink: (p: string, cb: Cb) => sync('readlink', () => w(fs.readlink(n(p))), cb),
      link: (from: string, to: string, cb: Cb) =>
        async(
          'link',
          () => fs.link(n(from), n(to)),
          cb,
          () => 0,
        ),
      chmod: (p: string, mode: number, cb: Cb) =>
        sync(
          'chmod',
          () => fs.chmod(n(p), mode, callerNow()),
          cb,
          () => 0,
        ),
      chown: (p: string, uid: number, gid: number, cb: Cb) =>
        sync(
          'chown',
          () => fs.chown(n(p), uid, gid, callerNow()),
          cb,
          () => 0,
        ),
      utimens: (p: string, atime: number, mtime: number, cb: Cb) =>
        sync(
          'utimens',
          () => fs.utimens(n(p), atime, mtime),
          cb,
          () => 0,
        ),
      statfs: (_p: string, cb: Cb) => sync('statfs', () => fs.statfs(), cb),
    };
    if (fs.mknod) {
      const mknod = fs.mknod.bind(fs);
      ops.mknod = (p: string, mode: number, dev: number, cb: Cb) =>
        sync(
          'mknod',
          () => mknod(n(p), mode, dev, callerNow()),
          cb,
          () => 0,
        );
    }
    if (this.opts.xattrs) {
      Object.assign(ops, {
        setxattr: (p: string, name: string, value: Buffer, _pos: number, flags: number, cb: Cb) =>
          sync(
            'setxattr',
            () => fs.setxattr(n(p), n(name), Buffer.from(value), flags),
            cb,
            () => 0,
          ),
        getxattr: (p: string, name: string, _pos: number, cb: Cb) => sync('getxattr', () => fs.getxattr(n(p), n(name)), cb),
        listxattr: (p: string, cb: Cb) => sync('listxattr', () => fs.listxattr(n(p)), cb),
        removexattr: (p: string, name: string, cb: Cb) =>
          sync(
            'removexattr',
            () => fs.removexattr(n(p), n(name)),
            cb,
            () => 0,
          ),
      });
    }
    return ops;
  }

  private optionString(): string {
    const o = this.opts;
    const list = [
      `fsname=${o.fsName.replace(/[,\s\\]/g, '_')}`,
      'subtype=filespace',
      'big_writes',
      'max_write=131072',
      'max_read=131072',
      'use_ino',
      `attr_timeout=${o.attrTimeoutSec}`,
      `entry_timeout=${o.entryTimeoutSec}`,
      `negative_timeout=${o.negativeTimeoutSec}`,
      'default_permissions',
    ];
    if (o.allowOther) list.push('allow_other');
    if (o.debug) list.push('debug');
    return `-o${list.join(',')}`;
  }

  get servedAt(): string | undefined {
    return this.realMountPoint;
  }

  async mount(): Promise<void> {
    return oneMountAtATime(() => this.mountNow());
  }

  private async mountNow(): Promise<void> {
    this.realMountPoint = await refuseNested(this.mountPoint);
    const fdsBefore = await fuseDescriptors();
    const fuse = new (fuseNative().Fuse)(this.mountPoint, this.ops(), { timeout: false });
    const optionString = this.optionString();
    fuse._fuseOptions = () => optionString;
    withFgetattr(fuse);
    withCreateAttributes(fuse);
    this.fuse = fuse;
    await new Promise<void>((resolve, reject) => {
      fuse.mount((err) => {
        if (err) reject(new FuseError(`mounting ${this.mountPoint} failed: ${err.message}`, 'FAILED'));
        else resolve();
      });
    });
    this.mounted = true;
    this.cacheAttributes(fuse);
    this.countRequests(fuse);
    served.add(this);
    this.fuseFd = await newFuseDescriptor(fdsBefore);
    const entries = (await mountTable()).filter((m) => m.mountPoint === this.realMountPoint && m.fsType.startsWith('fuse'));
    this.mountId = entries[entries.length - 1]?.id;
  }

  /** Gives the filesystem the addon's count of requests (`FuseFilesystem.requestsSoFar`). */
  private countRequests(fuse: FuseNativeInstance): void {
    const counters = requestCounters;
    const thread = fuse._thread;
    if (!counters || !thread || !('requestsSoFar' in this.fs)) return;
    this.fs.requestsSoFar = () => {
      if (!this.mounted) return undefined;
      const raw = counters.read(thread);
      let n = 0;
      // Answered on libfuse's thread, then crossed to this one, per operation (see requestCounts).
      for (let i = 0; i < 70; i++) n += raw[i] ?? 0;
      return n;
    };
  }

  /**
   * Turns on the addon's attribute cache when the filesystem reports its changes. The hook is
   * set before the cache is on, so no change can fall between the two.
   */
  private cacheAttributes(fuse: FuseNativeInstance): void {
    const cache = attrCache;
    const thread = fuse._thread;
    if (!cache || !thread || !('attributesChanged' in this.fs)) return;
    const attributesOf = this.fs.attributesOf?.bind(this.fs);
    this.fs.attributesChanged = (ino) => {
      if (!ino || !attributesOf) return cache.forget(thread, ino ?? 0);
      const now = attributesOf(ino);
      cache.forget(thread, ino, now ? cachedStatArray(now.stat, now.xattrs) : undefined);
    };
    const wire = namesAsBytes ? nameToWire : (x: string) => x;
    const xattrNames = this.fs.xattrNames?.bind(this.fs);
    if (xattrNames) this.fs.xattrNamesAdded = (names) => cache.names(thread, names.map(wire), false);
    cache.enable(thread, ATTR_CACHE_TTL_MS);
    if (xattrNames) cache.names(thread, xattrNames().map(wire), true);
    this.attributesCached = true;
  }

  /**
   * How this mount's requests were answered so far, per operation: on libfuse's thread from
   * the attribute cache (`answered`) or by a round trip to this thread (`crossed`); and how
   * often the cache was emptied: by a request of this mount that may change something, by the
   * filesystem (everything, or one inode), and how often a valid entry gave way to another.
   * Undefined when not mounted or the addon keeps no counters. For probes and tests: the
   * counts tell which requests still cost a round trip.
   */
  requestCounts(): RequestCounts | undefined {
    const thread = this.fuse?._thread;
    if (!this.mounted || !thread || !requestCounters) return undefined;
    const raw = requestCounters.read(thread);
    const { ops } = requestCounters;
    const answered: Record<string, number> = {};
    const crossed: Record<string, number> = {};
    ops.forEach((name, i) => {
      if (!name) return;
      if (raw[i]) answered[name] = raw[i]!;
      if (raw[35 + i]) crossed[name] = raw[35 + i]!;
    });
    const [byRequest = 0, byFilesystem = 0, inodes = 0, evicted = 0] = raw.slice(70);
    return { answered, crossed, emptied: { byRequest, byFilesystem, inodes, evicted } };
  }

  /** Unmounts; throws FuseError('BUSY') if files are in use and `force` is false. */
  async unmount(force = false): Promise<void> {
    if (!this.mounted || !this.fuse) return;
    // Already unmounted or detached by someone else: nothing to ask the kernel (and another
    // mount may sit at that path by now).
    if (await this.listed()) {
      try {
        await unmountPath(this.mountPoint, force);
      } catch (err) {
        if (!(err instanceof FuseError && err.code === 'NOT_MOUNTED')) throw err;
      }
    }
    this.stopWatching();
    this.mounted = false;
    if (this.fs.requestsSoFar) this.fs.requestsSoFar = () => undefined;
    if (this.attributesCached) {
      this.fs.attributesChanged = () => undefined;
      if (this.fs.xattrNamesAdded) this.fs.xattrNamesAdded = () => undefined;
    }
    this.attributesCached = false;
    served.delete(this);
    if (this.fuse._thread) fuseNative().binding.fuse_native_unmount(this.fuse.mnt, this.fuse._thread);
    this.fuse = undefined;
  }
}
