/**
 * The FUSE adapter on libfuse's low-level API (lowlevel.c): the kernel names every file by its
 * inode number, which here is the filesystem's own, and each request is answered whenever the
 * filesystem is ready, with no libfuse thread parked per request.
 *
 * What it changes against the high-level adapter (adapter.ts):
 *   - Memory does not grow with what the kernel has looked up: libfuse2's high-level API keeps
 *     a node (with its name) per entry until the kernel forgets it, and the kernel forgets only
 *     under memory pressure. Here FORGET is answered in C and nothing is kept per inode.
 *   - A file has one kernel inode, whatever its names: its page cache, its size and nlink are
 *     the same through every name, so a file with several names needs no direct I/O, and a
 *     shared writable mapping through one name is seen through the others.
 *   - A file deleted while open keeps working through its descriptors wherever its folder went
 *     (fstat, read, write): the kernel asks by inode number, and the filesystem keeps a file
 *     deleted while open until its last handle closes. No `.fuse_hidden` names.
 *   - Requests are answered asynchronously: the addon queues them to this thread and returns.
 *
 * It takes the same filesystem as adapter.ts (`InodeFilesystem`: the Vfs), addressed by
 * `{ ino }` for an inode and `{ dir, name }` for a name in a folder, and the same mount options.
 * Names cross as bytes (latin1 strings), decoded as adapter.ts does (`wireToName`).
 *
 * The kernel's caches: with a filesystem that reports every change applied to its tree
 * (`opsApplied`), the kernel keeps entries, attributes and missing names for KERNEL_CACHE_SEC,
 * and folder listings in its page cache (FOPEN_CACHE_DIR) while it holds the folder, and is
 * told to forget what each change makes stale (a name, an inode's attributes, a folder's
 * listing), whoever made it: another machine, the engine itself (an import, a takeover),
 * unless the kernel made it through this mount, in which case it updated its caches itself
 * (its own changes to a folder drop the folder's cached listing). So a warm pass over a tree
 * (`ls -lR`, `find`, a build's stats) costs the engine an opendir and a releasedir per folder. getxattr of a name
 * no inode has (the kernel asks for security.capability before every write, `ls -l` for
 * security.selinux of every entry) is answered in the addon, and so is the getattr of a
 * folder the kernel asks for after each entry it made there (before its next lookup in it, a
 * permission check): after a request changed a folder its attributes are left in the addon,
 * which answers with them until a change that names the folder (or any removal or rename, or
 * a new tree) makes it forget them. So is the getattr of an inode after a setattr (a chown
 * makes the kernel ask for a file's attributes past its cache first), until a request that
 * may change them (a write, an open, another setattr) or a change to the tree. Without `opsApplied`, the mount's own timeouts apply, as
 * with the high-level adapter.
 */

import { availableParallelism, constants as osConstants } from 'node:os';
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import {
  type FuseCaller,
  type FuseStat,
  type MountOptions,
  type RequestCounts,
  type ServedMount,
  FuseError,
  SPECIAL_TIMES,
  errnoNumber,
  groupsOf,
  mountTable,
  nameToWire,
  oneMountAtATime,
  refuseNested,
  served,
  unmountPath,
  wireToName,
} from './adapter';

/**
 * A change applied to the filesystem's tree, as the kernel's caches care about it (the engine's
 * metadata ops are of this shape): a name made, removed, added to an inode or moved, or an
 * inode's attributes, data or extended attributes changed.
 */
export type TreeChange =
  | { readonly t: 'mk'; readonly parent: number; readonly name: string; readonly ino: number }
  | { readonly t: 'rm'; readonly parent: number; readonly name: string }
  | { readonly t: 'ln'; readonly ino: number; readonly parent: number; readonly name: string }
  | { readonly t: 'mv'; readonly sp: number; readonly sn: string; readonly dp: number; readonly dn: string }
  | { readonly t: 'attr' | 'chunk' | 'xattr'; readonly ino: number };

/** What a request names: an inode by number, or a name in a folder given by number. */
export type InodeWhere = { readonly ino: number } | { readonly dir: number; readonly name: string };

/** What the low-level adapter needs from a filesystem (the Vfs). Errors carry an errno name. */
export interface InodeFilesystem {
  getattr(w: InodeWhere): FuseStat;
  fgetattr?(fh: number): FuseStat;
  /** A folder's names and their inode numbers, `.` and `..` first. */
  listing(w: InodeWhere): { names: string[]; inos: number[] };
  /**
   * Runs `fn`, which only reads (getattr of the names of a listing), as one read of the metadata
   * store; what it reads need not be kept (the kernel holds the answers for a while).
   */
  reading?<T>(fn: () => T): T;
  /**
   * Undefined when the folders a request names are ready (at once), else a promise that settles
   * once they are (folders a fresh machine loads from the bucket on demand): `dirs` by number,
   * and the entries `named` (the folder named, if it is one). A request waits for it before
   * it is handled.
   */
  /** Whether folders are still loading (`whenLoaded` may then have to wait); false almost always. */
  loading?(): boolean;
  whenLoaded?(
    dirs: readonly number[],
    named?: ReadonlyArray<{ readonly dir: number; readonly name: string }>,
  ): Promise<void> | undefined;
  open(w: InodeWhere, flags: number): number;
  directIo?(fh: number): boolean;
  keepCache?(fh: number): boolean;
  create(w: InodeWhere, mode: number, flags?: number, caller?: FuseCaller): number;
  /**
   * Reads into `buf`. With `answer`, the filesystem may instead answer the read from bytes of
   * its own (memory it may reuse later): it calls `answer` with exactly the bytes read, at most
   * once, synchronously where it has them (the addon copies them, or writes them to the kernel,
   * before `answer` returns), and resolves with their count.
   */
  read(fh: number, buf: Buffer, len: number, pos: number, answer?: (data: Buffer) => void): Promise<number>;
  write(fh: number, data: Buffer, pos: number): Promise<number>;
  writeNow?(fh: number, data: Buffer, pos: number): number | undefined;
  truncate(w: InodeWhere, size: number): Promise<void>;
  ftruncate(fh: number, size: number): Promise<void>;
  flush(fh: number): Promise<void>;
  fsync(fh: number): Promise<void>;
  fsyncAll(): Promise<void>;
  release(fh: number): Promise<void>;
  unlink(w: InodeWhere): Promise<void>;
  mkdir(w: InodeWhere, mode: number, caller?: FuseCaller): void;
  mknod?(w: InodeWhere, mode: number, rdev: number, caller?: FuseCaller): void;
  rmdir(w: InodeWhere): void;
  rename(from: InodeWhere, to: InodeWhere): Promise<void>;
  symlink(target: string, w: InodeWhere, caller?: FuseCaller): void;
  readlink(w: InodeWhere): string;
  link(from: InodeWhere, to: InodeWhere): Promise<void>;
  chmod(w: InodeWhere, mode: number, caller?: FuseCaller): void;
  chown(w: InodeWhere, uid: number, gid: number, caller?: FuseCaller): void;
  utimens(w: InodeWhere, atimeMs: number, mtimeMs: number): void;
  statfs(): Record<string, number>;
  setxattr(w: InodeWhere, name: string, value: Buffer, flags: number): void;
  getxattr(w: InodeWhere, name: string): Buffer;
  listxattr(w: InodeWhere): string[];
  removexattr(w: InodeWhere, name: string): void;
  /** Set by the adapter: how many requests reached the filesystem so far (undefined when not mounted). */
  requestsSoFar?: () => number | undefined;
  /**
   * Every extended-attribute name some inode has, or more (never fewer): with `xattrNamesAdded`,
   * lets the addon answer a getxattr of any other name without a round trip to this thread.
   */
  xattrNames?(): string[];
  /** Set by the adapter: the filesystem calls it, synchronously, with each name some inode newly has. */
  xattrNamesAdded?: (names: readonly string[]) => void;
  /**
   * Set by the adapter: the filesystem calls it, synchronously, with every change applied to
   * its tree (whoever made it), or 'all' when the tree was replaced, and the inodes that lost a
   * name to those changes and kept another (their link count changed). With it, the kernel may
   * cache entries and attributes for long (`KERNEL_CACHE_SEC`): the adapter tells the kernel to
   * forget what each change makes stale, except what the kernel itself did through this mount.
   */
  opsApplied?(ops: readonly TreeChange[] | 'all', relinked: readonly number[]): void;
}

type Handler = (
  op: number,
  id: number,
  ino: number,
  fh: number,
  off: number,
  size: number,
  flags: number,
  mode: number,
  uid: number,
  gid: number,
  pid: number,
  ino2: number,
  name: string | undefined,
  name2: string | undefined,
  data: Buffer | undefined,
  attrs: number[] | undefined,
) => void;

type MountRef = object;

/** A request's arguments after its op and id. */
type HandlerRest = Handler extends (op: number, id: number, ...rest: infer R) => void ? R : never;

interface LowLevelAddon {
  /** The libfuse the addon was built against: 3 takes writes of up to `maxWrite` (1 MiB), 2 of 128 KiB. */
  readonly libfuse: 2 | 3;
  readonly maxWrite: number;
  mount(mountPoint: string, options: string, handler: Handler): MountRef;
  close(m: MountRef): void;
  unref(m: MountRef): void;
  counts(m: MountRef): number[];
  /** Absent from an addon built before it (which always sends answers of 32 KiB or more by its thread). */
  send_by_thread?(m: MountRef, bytes: number): void;
  forget_entry(m: MountRef, parent: number, name: string): void;
  forget_inode(m: MountRef, ino: number, off: number, len: number): void;
  /** getattr of `ino` is answered in the addon with `stat` until `attr_forget` names it (or 0). */
  /** With `epoch` (a setattr's): kept only if no request that may change the inode's attributes came after it. */
  attr_keep?(m: MountRef, ino: number, stat: Float64Array, attrTimeoutSec: number, epoch?: number): void;
  attr_forget?(m: MountRef, ino: number): void;
  /**
   * Folder `dir` (just made, empty) has only the names `names_add` gives it: a lookup of any
   * other is answered in the addon as missing (kept by the kernel `negativeTimeoutSec`).
   */
  names_complete?(m: MountRef, dir: number, negativeTimeoutSec: number): void;
  names_add?(m: MountRef, dir: number, name: string): void;
  /** Lookups in `dir` (0: every folder) go to the filesystem again. */
  names_forget?(m: MountRef, dir: number): void;
  xattr_names(m: MountRef, names: string[], all: boolean): void;
  reply_err(m: MountRef, id: number, errno: number): void;
  reply_entry(m: MountRef, id: number, stat: Float64Array, entryTimeoutSec: number, attrTimeoutSec: number): void;
  reply_attr(m: MountRef, id: number, stat: Float64Array, attrTimeoutSec: number): void;
  reply_open(m: MountRef, id: number, fh: number, flags: number): void;
  /** libfuse3 only: a readdirplus answer (lowlevel.c). */
  reply_direntplus?(
    m: MountRef,
    id: number,
    size: number,
    names: string[],
    stats: Float64Array,
    offsets: Float64Array,
    entryTimeoutSec: number,
    attrTimeoutSec: number,
  ): void;
  reply_create(
    m: MountRef,
    id: number,
    stat: Float64Array,
    entryTimeoutSec: number,
    attrTimeoutSec: number,
    fh: number,
    flags: number,
  ): void;
  reply_buf(m: MountRef, id: number, buf: Buffer, len: number): void;
  reply_readlink(m: MountRef, id: number, target: string): void;
  reply_write(m: MountRef, id: number, count: number): void;
  reply_xattr(m: MountRef, id: number, size: number): void;
  reply_statfs(m: MountRef, id: number, values: number[]): void;
  readonly ops: Readonly<Record<string, number>>;
}

/**
 * Which FUSE binding filespace mounts use: FILESPACE_FUSE=lowlevel or highlevel, or, when it
 * is not set, the low-level one whenever its addon is built (the high-level one otherwise).
 * Throws FuseError for another value, or for lowlevel when its addon is missing.
 */
export function fuseBindingChoice(env: NodeJS.ProcessEnv = process.env): 'lowlevel' | 'highlevel' {
  const want = env.FILESPACE_FUSE?.trim() ?? '';
  if (want === 'highlevel') return 'highlevel';
  if (want !== '' && want !== 'lowlevel') throw new FuseError(`FILESPACE_FUSE is "${want}": use lowlevel or highlevel`, 'FAILED');
  if (lowLevelAddon()) return 'lowlevel';
  if (want === 'lowlevel') throw new FuseError('FILESPACE_FUSE=lowlevel, but the low-level FUSE addon is not built', 'FAILED');
  return 'highlevel';
}

/** Answers of at least this many bytes (read data) go by the addon's send thread where it pays (`sendThreadBytes`). */
const SEND_THREAD_BYTES = 32 * 1024;
/** The send thread pays from this many cores up. */
const SEND_THREAD_CORES = 4;

/**
 * From how many bytes an answer is written to the kernel by the addon's send thread rather than
 * by this thread as it answers (0: never). The thread takes the kernel's copy into the reader's
 * pages off this thread, at the price of a copy of the answer and a hand-over per answer.
 * Measured on a 2-core machine (a cold sequential read of 1 GiB, coldprobe): without it the
 * engine used about a fifth less CPU (perf samples 9,892 against 12,134) and read about a tenth
 * faster, the cores it freed going to everything else on the machine; with cores to spare, this
 * thread's time is what bounds a reader, so from SEND_THREAD_CORES cores up the thread is used.
 * FILESPACE_FUSE_SEND_THREAD=on|off overrides (tests run both ways).
 */
export function sendThreadBytes(env: NodeJS.ProcessEnv = process.env, cores = availableParallelism()): number {
  const want = env.FILESPACE_FUSE_SEND_THREAD?.trim() ?? '';
  if (want === 'on') return SEND_THREAD_BYTES;
  if (want === 'off') return 0;
  if (want !== '') throw new FuseError(`FILESPACE_FUSE_SEND_THREAD is "${want}": use on or off`, 'FAILED');
  return cores >= SEND_THREAD_CORES ? SEND_THREAD_BYTES : 0;
}

let addon: LowLevelAddon | undefined | null;

/** The low-level addon, or undefined when it was not built (build-lowlevel.js) or cannot load. */
export function lowLevelAddon(): LowLevelAddon | undefined {
  if (addon !== undefined) return addon ?? undefined;
  const dir = path.resolve(__dirname, '..', '..', '..', 'native', 'fuse', 'lowlevel-addon');
  addon = null;
  for (const file of addonFiles()) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon at a computed path
      if (existsSync(path.join(dir, file))) addon = require(path.join(dir, file)) as LowLevelAddon;
    } catch {
      // libfuse.so.3 is not installed: the next one.
    }
    if (addon) break;
  }
  return addon ?? undefined;
}

/**
 * The addon's binaries to try, best first. The one built against libfuse3 (lowlevel3.node:
 * requests of up to 1 MiB) where a mount can work with it: run as root (libfuse mounts itself),
 * or with libfuse3's fusermount3 installed (the `fuse3` package; libfuse2 needs `fusermount`,
 * which Debian's `fuse` package has instead). Else libfuse2's. FILESPACE_LIBFUSE=2 picks libfuse2's.
 */
function addonFiles(): string[] {
  const two = 'lowlevel.node';
  if (process.env.FILESPACE_LIBFUSE === '2') return [two];
  const onPath = (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(path.join(d, 'fusermount3')));
  return process.geteuid?.() === 0 || onPath ? ['lowlevel3.node', two] : [two];
}

/** FUSE_SET_ATTR_* of fuse_lowlevel.h. */
const SET_MODE = 1 << 0;
const SET_UID = 1 << 1;
const SET_GID = 1 << 2;
const SET_SIZE = 1 << 3;
const SET_ATIME = 1 << 4;
const SET_MTIME = 1 << 5;
const SET_ATIME_NOW = 1 << 7;
const SET_MTIME_NOW = 1 << 8;

/**
 * How long the kernel may keep entries and attributes when the filesystem reports its changes
 * (`InodeFilesystem.opsApplied`): each change makes the kernel forget what it makes stale, so
 * this only bounds a change nobody reported. Long enough for a warm pass over a large tree
 * (`ls -lR`, `find`, a build's stat storm) to find everything still cached.
 */
export const KERNEL_CACHE_SEC = 300;

/**
 * A notice sent for a change is sent once more this much later: a lookup answered just before
 * the change may put the old entry in the kernel's cache only after the first notice passed.
 */
const NOTICE_AGAIN_MS = 200;

/** The size of most read requests (max_read), and how many such buffers are kept for reuse. */
const READ_BUFFER_BYTES = 128 * 1024;
const READ_BUFFERS_KEPT = 16;

/** reply_open's flags. */
const OPEN_DIRECT_IO = 1;
const OPEN_KEEP_CACHE = 2;
/** A folder: the kernel keeps its listing in its page cache (FOPEN_CACHE_DIR with keep_cache). */
const OPEN_CACHE_DIR = 4;
/** Folders counted as possibly listed in the kernel before all their listings are dropped. */
const LISTED_DIRS_MAX = 100_000;

const ROOT_INO = 1;

/** A stat as the addon reads it (lowlevel.c, stat_from). */
function statValues(st: FuseStat): Float64Array {
  return Float64Array.of(
    st.ino,
    st.mode,
    st.nlink,
    st.uid,
    st.gid,
    st.rdev ?? 0,
    st.size,
    st.blocks,
    st.atime,
    st.mtime,
    st.ctime,
    st.blksize,
  );
}

/** A negative entry: the kernel remembers for the timeout that the name does not exist. */
const NO_ENTRY = new Float64Array(12);

/** A folder's names and inode numbers, `.` and `..` first, as `listing` gives them. */
interface Listing {
  names: string[];
  inos: number[];
}

/** One open folder: listed at its first read, and again at a read from the start (rewinddir). */
interface DirHandle {
  readonly ino: number;
  listed?: Listing;
  /** A read has been answered from `listed`. */
  read?: boolean;
}

/** d_type of `.` and `..`; other entries are DT_UNKNOWN (a listing reads no entry's inode). */
const DT_DIR = 4;
const DT_UNKNOWN = 0;

/**
 * The least a readdirplus entry takes (the kernel's fuse_entry_out, 128 bytes, then a dirent
 * with a name of up to 8 bytes): no more entries are stat'ed for an answer than can fit.
 */
const DIRENTPLUS_MIN = 160;

/** S_IFDIR: the type the dots are listed with. */
const MODE_DIR = 0o040000;

/**
 * The entries of a folder from index `from`, as the kernel reads them (struct fuse_dirent:
 * ino, offset of the next entry, name length, type, the name padded to 8 bytes), as many as
 * fit in `size` bytes. The type is unknown but for `.` and `..`: tools that need it stat the
 * entry, which the kernel answers from its cache once it has looked the name up.
 */
export function direntBuffer(dir: Listing, from: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  let at = 0;
  for (let i = from; i < dir.names.length; i++) {
    const name = Buffer.from(nameToWire(dir.names[i]!), 'latin1');
    const len = (24 + name.length + 7) & ~7;
    if (at + len > size) break;
    out.writeBigUInt64LE(BigInt(dir.inos[i]!), at);
    out.writeBigUInt64LE(BigInt(i + 1), at + 8);
    out.writeUInt32LE(name.length, at + 16);
    out.writeUInt32LE(i < 2 ? DT_DIR : DT_UNKNOWN, at + 20);
    name.copy(out, at + 24);
    at += len;
  }
  return out.subarray(0, at);
}

function callerOf(uid: number, gid: number, pid: number): FuseCaller {
  let groups: ReadonlySet<number> | undefined;
  return { uid, gid, pid, inGroup: (g) => g === gid || (groups ??= groupsOf(pid)).has(g) };
}

/** A getxattr or listxattr answer: the size asked for with size 0, ERANGE if it does not fit. */
function xattrReply(a: LowLevelAddon, m: MountRef, id: number, value: Buffer, size: number): void {
  if (size === 0) a.reply_xattr(m, id, value.length);
  else if (value.length > size) a.reply_err(m, id, osConstants.errno.ERANGE);
  else a.reply_buf(m, id, value, value.length);
}

export class LowLevelMount implements ServedMount {
  private ref: MountRef | undefined;
  private mounted = false;
  private ended = false;
  private realMountPoint: string | undefined;
  private mountId: number | undefined;
  private watchTimer: NodeJS.Timeout | undefined;
  private onEnded: (() => void) | undefined;
  private endedWaiters: Array<() => void> = [];
  private readonly dirs = new Map<number, DirHandle>();
  /**
   * Folders opened with the kernel told to keep their listing (OPEN_CACHE_DIR): a change to one
   * that the kernel did not make itself drops its cached pages, not only its attributes. Kept
   * until a full reset (or LISTED_DIRS_MAX of them) drops every one: the kernel keeps a listing
   * only while it holds the inode, and this side is not told when it lets it go.
   */
  private readonly listedDirs = new Set<number>();
  private listedDirsFull: (() => void) | undefined;
  private nextDir = 1;
  /** While a request's handler runs: the changes it applies are the kernel's own. */
  private inRequest = false;
  /**
   * Inodes with a request of this mount on their data or attributes under way (write, flush,
   * release, fsync, setattr), by count: an attribute change applied meanwhile (a size or time
   * committed at close, a truncate) follows from what the kernel itself asked.
   */
  private readonly busyInodes = new Map<number, number>();
  /**
   * Whether the addon answers getattr of a folder this mount just changed (`keepFolderAttr`)
   * and of an inode just set (`keepSetAttr`): only with a filesystem that reports its changes,
   * so every change can make it forget.
   */
  private keepsAttrs = false;
  /**
   * Whether the addon answers lookups of missing names in folders this mount made
   * (`names_complete`): only with a filesystem that reports its changes, each of which adds
   * the names it gives a folder.
   */
  private knowsNames = false;
  /** Kernel cache timeouts (seconds), set at mount. */
  private entrySec = 0;
  private attrSec = 0;
  private negativeSec = 0;
  /** Notices waiting to be sent (by key, so each is sent once per turn), and to be sent again. */
  private notices = new Map<string, () => void>();
  private noticesAgain = new Map<string, () => void>();
  private noticeTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly mountPoint: string,
    private readonly fs: InodeFilesystem,
    private readonly opts: MountOptions,
  ) {}

  get isMounted(): boolean {
    return this.mounted;
  }

  get servedAt(): string | undefined {
    return this.realMountPoint;
  }

  /** Whether the kernel still lists this mount. */
  async listed(): Promise<boolean> {
    if (!this.mounted) return false;
    return (await mountTable()).some((m) => m.id === this.mountId);
  }

  /** Whether the FUSE session has ended (the addon says so as it happens). */
  async sessionEnded(): Promise<boolean> {
    return Promise.resolve(!this.mounted || this.ended);
  }

  /**
   * Calls `onEnded` once when the session ends other than through `unmount` (someone ran
   * fusermount -u or umount), and `onDetached` once when the mount leaves the mount table while
   * processes still use it (polled every `intervalMs`).
   */
  watch(onEnded: () => void, onDetached: () => void = () => undefined, intervalMs = 1000): void {
    this.stopWatching();
    this.onEnded = onEnded;
    let said = false;
    let busy = false;
    this.watchTimer = setInterval(() => {
      if (busy || said || !this.mounted || this.ended) return;
      busy = true;
      void this.listed()
        .then((listed) => {
          if (!listed && !this.ended && this.mounted && !said) {
            said = true;
            onDetached();
          }
        })
        .finally(() => (busy = false));
    }, intervalMs);
    this.watchTimer.unref();
  }

  private stopWatching(): void {
    if (this.watchTimer) clearInterval(this.watchTimer);
    this.watchTimer = undefined;
    this.onEnded = undefined;
  }

  private optionString(a: LowLevelAddon): string {
    const o = this.opts;
    const list = [`fsname=${o.fsName.replace(/[,\s\\]/g, '_')}`, 'subtype=filespace', 'max_read=131072', 'default_permissions'];
    // libfuse2 asks for big writes with options; libfuse3 always does, up to what lowlevel.c says.
    if (a.libfuse === 2) list.push('big_writes', 'max_write=131072');
    if (o.allowOther) list.push('allow_other');
    if (o.debug) list.push('debug');
    return list.join(',');
  }

  async mount(): Promise<void> {
    return oneMountAtATime(() => this.mountNow());
  }

  private async mountNow(): Promise<void> {
    const a = lowLevelAddon();
    if (!a) throw new FuseError('the low-level FUSE addon is not built (node native/fuse/build-lowlevel.js)', 'FAILED');
    const sendBytes = sendThreadBytes();
    this.realMountPoint = await refuseNested(this.mountPoint);
    try {
      this.ref = a.mount(this.realMountPoint, this.optionString(a), this.handler(a));
    } catch (err) {
      throw new FuseError(`mounting ${this.mountPoint} failed: ${(err as Error).message}`, 'FAILED');
    }
    a.send_by_thread?.(this.ref, sendBytes);
    this.mounted = true;
    this.ended = false;
    served.add(this);
    const entries = (await mountTable()).filter((m) => m.mountPoint === this.realMountPoint && m.fsType.startsWith('fuse'));
    this.mountId = entries[entries.length - 1]?.id;
    const ops = Object.keys(a.ops).length;
    if ('requestsSoFar' in this.fs) {
      this.fs.requestsSoFar = () => {
        if (!this.ref || this.ended) return undefined;
        const raw = a.counts(this.ref);
        let n = 0;
        for (let i = 1; i < 2 * ops; i++) if (i !== ops) n += raw[i] ?? 0;
        return n;
      };
    }
    this.knowXattrNames(a, this.ref);
    this.forgetChanges(a, this.ref);
  }

  /**
   * With a filesystem that reports its changes, the kernel caches entries and attributes for
   * KERNEL_CACHE_SEC (a timeout of 0 in the options stays 0), and each change reported makes it
   * forget what the change makes stale: the name (a cached entry, or a cached "no such name"),
   * and the attributes of the inodes and folders involved. Changes applied while one of this
   * mount's requests is being handled are the kernel's own doing: it updates its caches itself.
   * Notices go out from the addon's notice thread, never from this one.
   */
  private forgetChanges(a: LowLevelAddon, ref: MountRef): void {
    const o = this.opts;
    const reports = 'opsApplied' in this.fs;
    const long = (sec: number) => (sec === 0 || !reports ? sec : Math.max(sec, KERNEL_CACHE_SEC));
    this.entrySec = long(o.entryTimeoutSec);
    this.attrSec = long(o.attrTimeoutSec);
    this.negativeSec = long(o.negativeTimeoutSec);
    if (!reports) return;
    this.keepsAttrs = a.attr_keep !== undefined && a.attr_forget !== undefined && this.attrSec > 0;
    const forgetAttr = (m: MountRef, ino: number) => a.attr_forget!(m, ino);
    // What the addon answers for getattr goes with any change that names the inode, the
    // kernel's own included; a removal or a rename (whose inode the op does not name) and a
    // new tree make it forget everything (it is kept again at the next change of a folder).
    const forgetAttrs = (ops: readonly TreeChange[] | 'all', relinked: readonly number[]) => {
      if (ops === 'all') return forgetAttr(ref, 0);
      for (const op of ops) {
        if (op.t === 'rm' || op.t === 'mv') return forgetAttr(ref, 0);
        if (op.t === 'mk' || op.t === 'ln') forgetAttr(ref, op.parent);
        forgetAttr(ref, op.ino);
      }
      for (const ino of relinked) forgetAttr(ref, ino);
    };
    const entry = (parent: number, name: string) => {
      const wire = nameToWire(name);
      this.notices.set(`e${parent}/${wire}`, () => a.forget_entry(ref, parent, wire));
    };
    // A folder whose listing the kernel may keep loses it too (pages from 0 to the end).
    const inode = (ino: number) => {
      const pages = this.listedDirs.has(ino) ? 0 : -1;
      this.notices.set(`i${ino}`, () => a.forget_inode(ref, ino, pages, 0));
    };
    // Every listing the kernel may keep; then only those of folders open now stay listed (a
    // listing is filled only through an open folder, which is counted again at its next open).
    const forgetListings = () => {
      for (const ino of this.listedDirs) inode(ino);
      this.listedDirs.clear();
      for (const d of this.dirs.values()) this.listedDirs.add(d.ino);
    };
    this.listedDirsFull = forgetListings;
    const ownAttr = (op: TreeChange) => op.t === 'attr' && this.busyInodes.has(op.ino);
    // Every name a change gives a folder, whoever made it, before that change's request (if
    // any) is answered; a new tree makes the addon forget every folder's names.
    this.knowsNames =
      a.names_complete !== undefined && a.names_add !== undefined && a.names_forget !== undefined && this.negativeSec > 0;
    const addNames = (ops: readonly TreeChange[] | 'all') => {
      if (ops === 'all') return a.names_forget!(ref, 0);
      for (const op of ops) {
        if (op.t === 'mk' || op.t === 'ln') a.names_add!(ref, op.parent, nameToWire(op.name));
        else if (op.t === 'mv') a.names_add!(ref, op.dp, nameToWire(op.dn));
      }
    };
    this.fs.opsApplied = (ops, relinked) => {
      if (this.ref !== ref || this.ended) return;
      if (this.knowsNames) addNames(ops);
      if (this.keepsAttrs) forgetAttrs(ops, relinked);
      if (this.inRequest) return;
      if (ops === 'all') {
        // Forgetting the root's names drops everything the kernel holds below them.
        for (const name of this.fs.listing({ ino: ROOT_INO }).names) if (name !== '.' && name !== '..') entry(ROOT_INO, name);
        inode(ROOT_INO);
        forgetListings();
      } else {
        for (const op of ops) {
          if (op.t === 'mk' || op.t === 'rm') {
            entry(op.parent, op.name);
            inode(op.parent);
          } else if (op.t === 'ln') {
            entry(op.parent, op.name);
            inode(op.parent);
            inode(op.ino);
          } else if (op.t === 'mv') {
            entry(op.sp, op.sn);
            entry(op.dp, op.dn);
            inode(op.sp);
            inode(op.dp);
          } else if (op.t !== 'chunk' && !ownAttr(op)) {
            // A chunk's new name changes no attribute the kernel shows (a new version's size and
            // times come as an attr change); the pages it caches are renewed at open when the
            // data changed (the filesystem's keepCache).
            inode(op.ino);
          }
        }
        // A file that lost one of its names keeps the others, with one link fewer.
        for (const ino of relinked) inode(ino);
      }
      this.sendNotices();
    };
  }

  private sendNotices(): void {
    if (this.noticeTimer) return;
    this.noticeTimer = setTimeout(() => {
      this.noticeTimer = undefined;
      if (!this.ref || this.ended) return;
      const now = this.notices;
      this.notices = new Map();
      for (const send of now.values()) send();
      for (const [key, send] of now) this.noticesAgain.set(key, send);
      setTimeout(() => {
        if (!this.ref || this.ended) return;
        const again = this.noticesAgain;
        this.noticesAgain = new Map();
        for (const send of again.values()) send();
      }, NOTICE_AGAIN_MS).unref();
    }, 0);
    this.noticeTimer.unref();
  }

  /**
   * Tells the addon every extended-attribute name in use, and each new one as it comes (the
   * hook is set first, so no name falls between the two).
   */
  private knowXattrNames(a: LowLevelAddon, ref: MountRef): void {
    const all = this.fs.xattrNames?.bind(this.fs);
    if (!this.opts.xattrs || !all || !('xattrNamesAdded' in this.fs)) return;
    this.fs.xattrNamesAdded = (names) => {
      if (this.ref === ref && !this.ended) a.xattr_names(ref, names.map(nameToWire), false);
    };
    a.xattr_names(ref, all().map(nameToWire), true);
  }

  /** The requests that reached the filesystem so far, per operation (all of them cross here). */
  requestCounts(): RequestCounts | undefined {
    const a = lowLevelAddon();
    if (!a || !this.ref || this.ended) return undefined;
    const raw = a.counts(this.ref);
    const ops = Object.keys(a.ops).length;
    const crossed: Record<string, number> = {};
    const answered: Record<string, number> = {};
    for (const [name, i] of Object.entries(a.ops)) {
      if (i > 0 && raw[i]) crossed[name] = raw[i]!;
      if (i > 0 && raw[ops + i]) answered[name] = raw[ops + i]!;
    }
    const sentByThread = raw[2 * ops + 3];
    return {
      answered,
      crossed,
      emptied: { byRequest: 0, byFilesystem: 0, inodes: 0, evicted: 0 },
      ...(sentByThread === undefined ? {} : { sentByThread }),
    };
  }

  /** Unmounts; throws FuseError('BUSY') if files are in use and `force` is false. */
  async unmount(force = false): Promise<void> {
    if (!this.mounted || !this.ref) return;
    if (!this.ended && (await this.listed())) {
      try {
        await unmountPath(this.mountPoint, force);
      } catch (err) {
        if (!(err instanceof FuseError && err.code === 'NOT_MOUNTED')) throw err;
      }
    }
    this.stopWatching();
    this.mounted = false;
    served.delete(this);
    if (this.fs.requestsSoFar) this.fs.requestsSoFar = () => undefined;
    if (this.fs.xattrNamesAdded) this.fs.xattrNamesAdded = () => undefined;
    if (this.fs.opsApplied) this.fs.opsApplied = () => undefined;
    // A lazily detached mount goes on serving the processes that still use it; this process may
    // exit meanwhile (the kernel then ends the session).
    if (!this.ended) {
      const ended = new Promise<void>((resolve) => this.endedWaiters.push(resolve));
      const waited = await Promise.race([ended.then(() => true), delay(2000).then(() => false)]);
      if (!waited && this.ref && !this.ended) lowLevelAddon()?.unref(this.ref);
    }
  }

  private sessionGone(a: LowLevelAddon): void {
    this.ended = true;
    const ref = this.ref;
    if (ref) a.close(ref);
    this.ref = undefined;
    this.dirs.clear();
    const wasMounted = this.mounted;
    this.mounted = false;
    served.delete(this);
    const onEnded = this.onEnded;
    this.stopWatching();
    for (const w of this.endedWaiters.splice(0)) w();
    if (wasMounted) onEnded?.();
  }

  private handler(a: LowLevelAddon): Handler {
    const fs = this.fs;
    const o = this.opts;
    const report = o.onError ?? (() => undefined);
    const ops = a.ops;
    const m = () => this.ref!;
    const live = () => this.ref !== undefined && !this.ended;
    const fail = (op: string, id: number, err: unknown) => {
      const code = errnoNumber(err);
      if (code === -osConstants.errno.EIO) report(op, err);
      if (live()) a.reply_err(m(), id, -code);
    };
    const ok = (id: number) => {
      if (live()) a.reply_err(m(), id, 0);
    };
    const later = (op: string, id: number, work: () => Promise<unknown>, answer: (v: unknown) => void, ino?: number) => {
      if (ino !== undefined) this.busyInodes.set(ino, (this.busyInodes.get(ino) ?? 0) + 1);
      const done = () => {
        if (ino === undefined) return;
        const n = (this.busyInodes.get(ino) ?? 1) - 1;
        if (n > 0) this.busyInodes.set(ino, n);
        else this.busyInodes.delete(ino);
      };
      work().then(
        (v) => {
          done();
          try {
            if (live()) answer(v);
          } catch (err) {
            // An answer the addon refused (a bug): said, never a crash of the engine.
            report(op, err);
          }
        },
        (err) => {
          done();
          try {
            fail(op, id, err);
          } catch (e) {
            report(op, e);
          }
        },
      );
    };
    const entry = (id: number, st: FuseStat) => a.reply_entry(m(), id, statValues(st), this.entrySec, this.attrSec);
    const attr = (id: number, st: FuseStat) => a.reply_attr(m(), id, statValues(st), this.attrSec);
    // After a request changed folder `dir` (the kernel then asks for its attributes again before
    // the next lookup in it), the addon answers that getattr with what it is now (see
    // keepsAttrs); called before the request's answer, so the kernel's question finds it.
    const keepFolderAttr = (dir: number) => {
      if (!this.keepsAttrs || !live()) return;
      try {
        a.attr_keep!(m(), dir, statValues(fs.getattr({ ino: dir })), this.attrSec);
      } catch {
        // not kept: the kernel's getattr comes here
      }
    };
    // After a setattr (tar, cp -p and rsync set times, owner and mode of each file they
    // write, through its open handle), the addon answers the inode's getattr with what the
    // setattr answered: a chown of a regular file makes the kernel ask for its attributes
    // again, past its own cache, before it sends the setattr (to clear the set-user-ID bit
    // itself), a round trip per file otherwise. Not kept while another request that may change
    // them is under way here (a write), or if one was queued after this setattr (`epoch`, see
    // lowlevel.c); any such request arriving later makes the addon forget them, and so does a
    // change applied to the tree (forgetAttrs).
    const keepSetAttr = (ino: number, st: FuseStat, epoch: number | undefined) => {
      if (!this.keepsAttrs || !live() || epoch === undefined || this.busyInodes.has(ino)) return;
      a.attr_keep!(m(), ino, statValues(st), this.attrSec, epoch);
    };
    // Direct I/O, or else the pages cached from an earlier open kept when the data is unchanged.
    const openFlags = (fh: number) => (fs.directIo?.(fh) ? OPEN_DIRECT_IO : fs.keepCache?.(fh) ? OPEN_KEEP_CACHE : 0);

    // The listing of open folder `fh` for a read from `off`: listed at the first read, and again
    // at a read from the start (rewinddir).
    const listed = (fh: number, ino: number, off: number): Listing => {
      const dir = this.dirs.get(fh);
      if (!dir) throw Object.assign(new Error('a read of a folder not open'), { errno: 'EBADF' });
      if (!dir.listed || (off === 0 && dir.read)) dir.listed = fs.listing({ ino });
      dir.read = true;
      return dir.listed;
    };
    // Buffers of finished reads (the kernel's usual read size), reused: a sequential read makes
    // one request per 128 KiB.
    const readBuffers: Buffer[] = [];
    const table: Record<number, Handler> = {
      [ops.ended!]: () => this.sessionGone(a),
      [ops.lookup!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, _i2, name) => {
        let st: FuseStat;
        try {
          st = fs.getattr({ dir: ino, name: wireToName(name!) });
        } catch (err) {
          if (errnoNumber(err) === -osConstants.errno.ENOENT && this.negativeSec > 0) {
            return a.reply_entry(m(), id, NO_ENTRY, this.negativeSec, 0);
          }
          return fail('lookup', id, err);
        }
        entry(id, st);
      },
      [ops.getattr!]: (_op, id, ino, fh) => {
        try {
          attr(id, fh >= 0 && fs.fgetattr ? fs.fgetattr(fh) : fs.getattr({ ino }));
        } catch (err) {
          // A handle the filesystem does not know (opened before a remount): by inode.
          if (fh >= 0) {
            try {
              return attr(id, fs.getattr({ ino }));
            } catch {
              // the first error is the one to tell
            }
          }
          fail('getattr', id, err);
        }
      },
      [ops.setattr!]: (_op, id, ino, fh, _off, _size, _flags, _mode, uid, gid, pid, _i2, _n, _n2, _d, attrs) => {
        const [set = 0, mode = 0, auid = 0, agid = 0, size = 0, atime = 0, mtime = 0, epoch] = attrs ?? [];
        const w = { ino };
        const caller = callerOf(uid, gid, pid);
        later(
          'setattr',
          id,
          async () => {
            if (set & SET_MODE) fs.chmod(w, mode, caller);
            if (set & (SET_UID | SET_GID)) fs.chown(w, set & SET_UID ? auid : -1, set & SET_GID ? agid : -1, caller);
            if (set & SET_SIZE) {
              if (fh >= 0) await fs.ftruncate(fh, size);
              else await fs.truncate(w, size);
            }
            if (set & (SET_ATIME | SET_MTIME)) {
              const at = set & SET_ATIME_NOW ? SPECIAL_TIMES.now : set & SET_ATIME ? atime : SPECIAL_TIMES.omit;
              const mt = set & SET_MTIME_NOW ? SPECIAL_TIMES.now : set & SET_MTIME ? mtime : SPECIAL_TIMES.omit;
              fs.utimens(w, at, mt);
            }
            return fh >= 0 && fs.fgetattr ? fs.fgetattr(fh) : fs.getattr(w);
          },
          (st) => {
            keepSetAttr(ino, st as FuseStat, epoch);
            attr(id, st as FuseStat);
          },
          ino,
        );
      },
      [ops.readlink!]: (_op, id, ino) => {
        try {
          a.reply_readlink(m(), id, nameToWire(fs.readlink({ ino })));
        } catch (err) {
          fail('readlink', id, err);
        }
      },
      // The device number comes as `size`.
      [ops.mknod!]: (_op, id, ino, _fh, _off, rdev, _flags, mode, uid, gid, pid, _i2, name) => {
        const w = { dir: ino, name: wireToName(name!) };
        try {
          if (!fs.mknod) throw Object.assign(new Error('mknod'), { errno: 'ENOSYS' });
          fs.mknod(w, mode, rdev, callerOf(uid, gid, pid));
          keepFolderAttr(ino);
          entry(id, fs.getattr(w));
        } catch (err) {
          fail('mknod', id, err);
        }
      },
      [ops.mkdir!]: (_op, id, ino, _fh, _off, _size, _flags, mode, uid, gid, pid, _i2, name) => {
        const w = { dir: ino, name: wireToName(name!) };
        try {
          fs.mkdir(w, mode, callerOf(uid, gid, pid));
          keepFolderAttr(ino);
          const st = fs.getattr(w);
          // A new folder is empty: the names it gets from now on come through opsApplied.
          if (this.knowsNames) a.names_complete!(m(), st.ino, this.negativeSec);
          entry(id, st);
        } catch (err) {
          fail('mkdir', id, err);
        }
      },
      [ops.unlink!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, _i2, name) =>
        later(
          'unlink',
          id,
          () => fs.unlink({ dir: ino, name: wireToName(name!) }),
          () => {
            keepFolderAttr(ino);
            ok(id);
          },
        ),
      [ops.rmdir!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, _i2, name) => {
        try {
          fs.rmdir({ dir: ino, name: wireToName(name!) });
          keepFolderAttr(ino);
          ok(id);
        } catch (err) {
          fail('rmdir', id, err);
        }
      },
      [ops.symlink!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, uid, gid, pid, _i2, name, target) => {
        const w = { dir: ino, name: wireToName(name!) };
        try {
          fs.symlink(wireToName(target!), w, callerOf(uid, gid, pid));
          keepFolderAttr(ino);
          entry(id, fs.getattr(w));
        } catch (err) {
          fail('symlink', id, err);
        }
      },
      [ops.rename!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, ino2, name, name2) =>
        later(
          'rename',
          id,
          () => fs.rename({ dir: ino, name: wireToName(name!) }, { dir: ino2, name: wireToName(name2!) }),
          () => {
            keepFolderAttr(ino);
            if (ino2 !== ino) keepFolderAttr(ino2);
            ok(id);
          },
        ),
      [ops.link!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, ino2, name) => {
        const to = { dir: ino2, name: wireToName(name!) };
        later(
          'link',
          id,
          async () => {
            await fs.link({ ino }, to);
            return fs.getattr(to);
          },
          (st) => {
            keepFolderAttr(ino2);
            entry(id, st as FuseStat);
          },
        );
      },
      [ops.open!]: (_op, id, ino, _fh, _off, _size, flags) => {
        try {
          const fh = fs.open({ ino }, flags);
          a.reply_open(m(), id, fh, openFlags(fh));
        } catch (err) {
          fail('open', id, err);
        }
      },
      [ops.read!]: (_op, id, _ino, fh, off, size) => {
        const buf = size === READ_BUFFER_BYTES ? (readBuffers.pop() ?? Buffer.allocUnsafe(size)) : Buffer.allocUnsafe(size);
        const keep = () => {
          if (buf.length === READ_BUFFER_BYTES && readBuffers.length < READ_BUFFERS_KEPT) readBuffers.push(buf);
        };
        // The filesystem may answer from its own memory (a chunk it holds), with no copy into buf.
        let answered = false;
        const answer = (data: Buffer) => {
          if (answered) throw new Error('a read answered twice');
          answered = true;
          if (live()) a.reply_buf(m(), id, data, data.length);
        };
        later(
          'read',
          id,
          () =>
            fs.read(fh, buf, size, off, answer).catch((err: unknown) => {
              if (!answered) throw err;
              report('read', err); // answered already: the failure after it is only said
              return 0;
            }),
          (n) => {
            // The addon copies the answer (or writes it) before it returns: the buffer is free.
            if (!answered) a.reply_buf(m(), id, buf, n as number);
            keep();
          },
        );
      },
      [ops.write!]: (_op, id, ino, fh, off, size, _flags, _mode, _u, _g, _p, _i2, _n, _n2, pooled) => {
        // The addon's pool buffer, given back when this write is answered: the write path
        // copies what it keeps.
        const data = pooled!.length === size ? pooled! : pooled!.subarray(0, size);
        if (fs.writeNow) {
          let n: number | undefined;
          try {
            n = fs.writeNow(fh, data, off);
          } catch (err) {
            return fail('write', id, err);
          }
          if (n !== undefined) return a.reply_write(m(), id, n);
        }
        later(
          'write',
          id,
          () => fs.write(fh, data, off),
          (n) => a.reply_write(m(), id, n as number),
          ino,
        );
      },
      [ops.flush!]: (_op, id, ino, fh) =>
        later(
          'flush',
          id,
          () => fs.flush(fh),
          () => ok(id),
          ino,
        ),
      [ops.release!]: (_op, id, ino, fh) =>
        later(
          'release',
          id,
          () => fs.release(fh),
          () => ok(id),
          ino,
        ),
      [ops.fsync!]: (_op, id, ino, fh) =>
        later(
          'fsync',
          id,
          () => fs.fsync(fh),
          () => ok(id),
          ino,
        ),
      [ops.opendir!]: (_op, id, ino) => {
        try {
          fs.getattr({ ino });
          const fh = this.nextDir++;
          this.dirs.set(fh, { ino });
          // The kernel keeps the listing when it is told of every change to it (forgetChanges);
          // its own changes through this mount drop it by themselves.
          const keep = this.entrySec >= KERNEL_CACHE_SEC;
          if (keep) {
            this.listedDirs.add(ino);
            if (this.listedDirs.size > LISTED_DIRS_MAX) {
              this.listedDirsFull?.();
              this.sendNotices();
            }
          }
          a.reply_open(m(), id, fh, keep ? OPEN_CACHE_DIR : 0);
        } catch (err) {
          fail('opendir', id, err);
        }
      },
      [ops.readdir!]: (_op, id, ino, fh, off, size) => {
        try {
          const buf = direntBuffer(listed(fh, ino, off), off, size);
          a.reply_buf(m(), id, buf, buf.length);
        } catch (err) {
          fail('readdir', id, err);
        }
      },
      // libfuse3 only (lowlevel.c asks for it), at the kernel's choice: a listing with each
      // entry's attributes, as a lookup of each would answer, so `ls -l` of a folder whose
      // attributes the kernel does not hold costs a few requests instead of one per entry.
      [ops.readdirplus!]: (_op, id, ino, fh, off, size) => {
        try {
          const { names, inos } = listed(fh, ino, off);
          const count = Math.max(0, Math.min(names.length - off, Math.floor(size / DIRENTPLUS_MIN) + 1));
          const wire: string[] = [];
          const stats = new Float64Array(12 * count);
          const offsets = new Float64Array(count);
          const each = () => {
            for (let k = 0; k < count; k++) {
              const i = off + k;
              wire.push(nameToWire(names[i]!));
              offsets[k] = i + 1;
              if (i < 2) {
                stats[12 * k] = inos[i]!;
                stats[12 * k + 1] = MODE_DIR;
                continue;
              }
              try {
                stats.set(statValues(fs.getattr({ dir: ino, name: names[i]! })), 12 * k);
              } catch {
                // Gone since the listing, or not readable now: listed without attributes (mode 0).
                stats[12 * k] = inos[i]!;
              }
            }
          };
          // The attributes of a first listing come from the metadata store, as one read.
          if (fs.reading) fs.reading(each);
          else each();
          a.reply_direntplus!(m(), id, size, wire, stats, offsets, this.entrySec, this.attrSec);
        } catch (err) {
          fail('readdirplus', id, err);
        }
      },
      [ops.releasedir!]: (_op, id, _ino, fh) => {
        this.dirs.delete(fh);
        ok(id);
      },
      [ops.fsyncdir!]: (_op, id) =>
        later(
          'fsyncdir',
          id,
          () => fs.fsyncAll(),
          () => ok(id),
        ),
      [ops.statfs!]: (_op, id) => {
        try {
          const s = fs.statfs();
          a.reply_statfs(
            m(),
            id,
            [s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.namemax].map((v) => v ?? 0),
          );
        } catch (err) {
          fail('statfs', id, err);
        }
      },
      [ops.setxattr!]: (_op, id, ino, _fh, _off, _size, flags, _mode, _u, _g, _p, _i2, name, _n2, data) => {
        try {
          if (!o.xattrs) throw Object.assign(new Error('xattrs off'), { errno: 'ENOSYS' });
          fs.setxattr({ ino }, wireToName(name!), data ?? Buffer.alloc(0), flags);
          ok(id);
        } catch (err) {
          fail('setxattr', id, err);
        }
      },
      [ops.getxattr!]: (_op, id, ino, _fh, _off, size, _flags, _mode, _u, _g, _p, _i2, name) => {
        try {
          if (!o.xattrs) throw Object.assign(new Error('xattrs off'), { errno: 'ENOSYS' });
          xattrReply(a, m(), id, fs.getxattr({ ino }, wireToName(name!)), size);
        } catch (err) {
          fail('getxattr', id, err);
        }
      },
      [ops.listxattr!]: (_op, id, ino, _fh, _off, size) => {
        try {
          if (!o.xattrs) throw Object.assign(new Error('xattrs off'), { errno: 'ENOSYS' });
          const names = fs.listxattr({ ino });
          const list = Buffer.from(names.map((n) => `${nameToWire(n)}\0`).join(''), 'latin1');
          xattrReply(a, m(), id, list, size);
        } catch (err) {
          fail('listxattr', id, err);
        }
      },
      [ops.removexattr!]: (_op, id, ino, _fh, _off, _size, _flags, _mode, _u, _g, _p, _i2, name) => {
        try {
          if (!o.xattrs) throw Object.assign(new Error('xattrs off'), { errno: 'ENOSYS' });
          fs.removexattr({ ino }, wireToName(name!));
          ok(id);
        } catch (err) {
          fail('removexattr', id, err);
        }
      },
      [ops.create!]: (_op, id, ino, _fh, _off, _size, flags, mode, uid, gid, pid, _i2, name) => {
        const w = { dir: ino, name: wireToName(name!) };
        try {
          const fh = fs.create(w, mode, flags, callerOf(uid, gid, pid));
          keepFolderAttr(ino);
          const st = fs.getattr(w);
          a.reply_create(m(), id, statValues(st), this.entrySec, this.attrSec, fh, openFlags(fh));
        } catch (err) {
          fail('create', id, err);
        }
      },
    };
    // Requests that name an entry (a name in folder `ino`; a rename's second in `ino2`, a link's in `ino2`).
    const named = new Set([ops.lookup, ops.mknod, ops.mkdir, ops.unlink, ops.rmdir, ops.symlink, ops.create]);
    // What a request needs loaded first (see InodeFilesystem.whenLoaded): undefined for none.
    const needs = (op: number, ino: number, ino2: number, name: string | undefined, name2: string | undefined) => {
      // Nothing is loading (the usual case): no names decoded, nothing allocated per request.
      if (!fs.whenLoaded || !fs.loading?.() || ino === undefined) return undefined;
      if (named.has(op) && name !== undefined) return fs.whenLoaded([], [{ dir: ino, name: wireToName(name) }]);
      if (op === ops.rename && name !== undefined && name2 !== undefined)
        return fs.whenLoaded(
          [],
          [
            { dir: ino, name: wireToName(name) },
            { dir: ino2, name: wireToName(name2) },
          ],
        );
      if (op === ops.link && name !== undefined) return fs.whenLoaded([ino], [{ dir: ino2, name: wireToName(name) }]);
      return fs.whenLoaded([ino]);
    };
    return (op, id, ...rest) => {
      const run = table[op];
      if (!run) {
        if (live()) a.reply_err(m(), id, osConstants.errno.ENOSYS);
        return;
      }
      let wait: Promise<void> | undefined;
      try {
        wait = needs(op, rest[0], rest[9], rest[10], rest[11]);
      } catch (err) {
        return fail('fuse', id, err);
      }
      if (wait) {
        wait.then(
          () => this.dispatch(run, report, live, m, a, op, id, rest),
          (err) => fail('load', id, err),
        );
        return;
      }
      this.dispatch(run, report, live, m, a, op, id, rest);
    };
  }

  /** Runs handler `run` for one request; a handler that throws still answers it. */
  private dispatch(
    run: Handler,
    report: (op: string, err: unknown) => void,
    live: () => boolean,
    m: () => MountRef,
    a: LowLevelAddon,
    op: number,
    id: number,
    rest: HandlerRest,
  ): void {
    this.inRequest = true;
    try {
      run(op, id, ...rest);
    } catch (err) {
      // A handler that threw before answering (a bug): the request still gets an answer.
      report('fuse', err);
      try {
        if (live()) a.reply_err(m(), id, osConstants.errno.EIO);
      } catch {
        // it had answered already
      }
    } finally {
      this.inRequest = false;
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
