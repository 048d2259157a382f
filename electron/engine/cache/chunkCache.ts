/**
 * The clean chunk cache: chunks already safe in the bucket, kept on local disk at
 * `chunks/<aa>/<name>`, and evicted least-recently-used first. A chunk downloaded from the
 * bucket is kept as received (its ciphertext, with a code per unit: received.ts), so caching
 * it costs no cipher pass; a compressed one, and a dirty chunk handed over after its upload,
 * as a sealed file (encrypted at rest and bound to their name: sealed.ts). Both layouts take
 * the same room for the same data. A cache file that fails authentication (modified,
 * truncated, or renamed to another chunk's name) is removed and reported as a miss, so the
 * chunk is fetched again from the bucket: wrong bytes are never served.
 *
 * Cap accounting covers clean *and* dirty bytes (the dirty store reports its total) and bytes
 * reserved for files being written or removed: the cache starts evicting when the total passes
 * the high watermark and stops at the low one. Only clean chunks are ever evicted; dirty data
 * is the write-back queue's, and when it fills the cap the VFS applies backpressure instead
 * (see vfs.ts). The cap in force is the smaller of the configured cap and what the disk has
 * room for (`setDiskLimit`, from cacheDisk.ts), so a cap larger than the disk behaves like a
 * cap the size of the disk.
 *
 * The cap holds on disk at every instant: every byte is counted before it is written and
 * until it is gone, and nothing grows without room. Dirty data grows only within room
 * reserved with `reserveForDirty` (which counts dirty and reserved bytes against the cap and
 * makes clean chunks go first); a fetched chunk is cached only if it fits once clean chunks
 * have made room, else it is served without a copy on disk.
 *
 * Pinned chunks (pins.ts) are never evicted: eviction passes over them, and they count against
 * the cap like the rest (pins.ts keeps them within it). The pinned set is given before `init`,
 * so even the first eviction at start spares them.
 *
 * A miss is not an error: `read` resolves to `undefined` when the chunk is not here.
 *
 * Sequential readers are served from a small in-memory LRU of whole chunks (`memoryBytes`,
 * 48 MiB by default): one disk read per chunk instead of one per 128 KiB FUSE request. Clean
 * chunks are immutable (named by content), so a copy in memory can never go stale. Chunks
 * downloaded ahead of a reader are kept as "not yet read": chunks already read are evicted
 * before them, and when memory holds only unread chunks a new read-ahead chunk is not kept
 * (it is read from the disk copy when its turn comes), so read-ahead never evicts itself.
 * Memory no reader has used for `MEMORY_IDLE_MS` is let go, and a
 * small chunk is kept in a buffer of its own, so what is counted is what is held. The headers
 * of cache files read lately are kept too, a bounded number of them (`FILE_HEADERS_KEPT`).
 */

import { constants as fsConstants, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { canWriteDirect, writeDirect } from '../chunk/cipherAddon';
import { AuthError } from '../chunk/crypto';
import { contentName } from '../chunk/packs';
import { receivedCiphertext, receivedSegments, segmentedPlainBytes } from '../chunk/format';
import { writeAllAt } from '../util/writeAll';
import { HandlePool } from './handles';
import { ReceivedHeader, ReceivedIO } from './received';
import { HEADER, SealedIO, logicalSize, physicalSize, sealedBodySize } from './sealed';

/** How a downloaded chunk's cache file is opened to be written around the page cache (0: not on this OS). */
const DIRECT_FLAGS =
  fsConstants.O_DIRECT === undefined
    ? 0
    : fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_TRUNC | fsConstants.O_DIRECT;

/** An open with O_DIRECT refused because the file system does not take it: undefined (written the usual way). */
function noDirect(err: NodeJS.ErrnoException): undefined {
  if (err.code === 'EINVAL' || err.code === 'EOPNOTSUPP') return undefined;
  throw err;
}

/** `data` in memory of its own (never a slice of Node's shared pool). */
function ownCopy(data: Buffer): Buffer {
  const own = Buffer.allocUnsafeSlow(data.length);
  data.copy(own);
  return own;
}

/** A cache file's checked header: a sealed file's id, or a received file's header. */
type CacheFile = { readonly sealed: Buffer } | { readonly received: ReceivedHeader };

/**
 * Reads a whole cache file of chunk `name` holding `len` data bytes, whichever its layout
 * (throws AuthError when it does not check out). For tools that look at cache files directly.
 */
export async function readCacheFile(
  fh: fsp.FileHandle,
  name: string,
  len: number,
  io: SealedIO,
  received: ReceivedIO,
): Promise<Buffer> {
  const what = `cached chunk ${name}`;
  const r = await received.readHeader(fh);
  if (r) return received.readAll(fh, r, name, len, what);
  return io.readAll(fh, await io.readHeader(fh, what, name, len), len, what);
}

/**
 * Cache file headers kept in memory at most: the files read most recently (a few hundred bytes
 * each), many more than the handles kept open (handles.ts), and not one per chunk of the cache,
 * whose count grows with the number of files.
 */
export const FILE_HEADERS_KEPT = 4096;

/** Chunks kept in memory for sequential readers are let go once none was used for this long (ms). */
export const MEMORY_IDLE_MS = 5_000;

/** The unit in which the hit ratio tracks which downloaded bytes were served already. */
const SERVED_PAGE = 4096;

export interface CacheLimits {
  capBytes: number;
  /** Fractions of the cap. */
  highWatermark: number;
  lowWatermark: number;
}

/** Buffers used again once nothing holds them (prefetch/decodedBuffers.ts); others are ignored. */
export interface HeldBuffers {
  /** Whether `take` gives a buffer for `bytes` of data. */
  takes(bytes: number): boolean;
  /** A buffer for `bytes` of data held once by the caller, or undefined for a size not pooled. */
  take(bytes: number): Buffer | undefined;
  hold(buf: Buffer): void;
  drop(buf: Buffer): void;
  /** Lets go of those waiting for reuse. */
  trim(): void;
}

export class ChunkCache {
  /** name -> size, in LRU order (least recent first). */
  private readonly index = new Map<string, number>();
  /** Names whose file is moving to another name (`rekey`). */
  private readonly moving = new Set<string>();
  private cleanBytes = 0;
  /** Bytes of chunks being written into the cache right now, counted against the cap. */
  private reservedBytes = 0;
  /** What the disk has room for (cacheDisk.ts); the cap in force is the smaller of the two. */
  private diskLimitBytes = Infinity;
  private evicting: Promise<void> | undefined;
  /** Called with a chunk name not cached on disk before, once it is (the VFS's sweep watches these). */
  onAdded: ((name: string) => void) | undefined;
  /** Bytes served to readers from chunks that were here before they were asked for. */
  hitBytes = 0;
  /** Bytes served to readers that had to come from the bucket (on demand or read ahead). */
  missBytes = 0;
  /** Chunks downloaded whose bytes were not all served yet: which pages were (see noteDownloaded). */
  private readonly served = new Map<string, { seen: Uint8Array; unseen: number; ranged?: boolean }>();
  /**
   * Whole decoded chunks kept in memory for sequential readers, LRU order. Those decoded into
   * buffers of the fetcher's pool (prefetch/decodedBuffers.ts) are held while they are here:
   * a reader copies out of one synchronously (`inMemory`), never across an await.
   */
  private readonly memory = new Map<string, Buffer>();
  /** Those of them downloaded ahead and not read since. */
  private readonly unread = new Set<string>();
  private memoryUsed = 0;
  private readonly memoryBytes: number;
  private decoded: HeldBuffers | undefined;
  /** When a chunk in memory was last kept or served; an idle memory lets go of them (MEMORY_IDLE_MS). */
  private memoryUsedAt = 0;
  private memoryIdleTimer: NodeJS.Timeout | undefined;
  /**
   * Headers of cache files already read (and for sealed files checked), by chunk name, least
   * recently used first; at most FILE_HEADERS_KEPT (one forgotten is read again from its file).
   */
  private readonly files = new Map<string, CacheFile>();
  /** Chunks that are never evicted (pinned for use offline). */
  private pinned: ReadonlySet<string> = new Set();
  /**
   * Whether downloaded chunks are written with O_DIRECT (`store`): a cache file need not also
   * sit in the page cache, where the kernel already keeps the pages the reader asked for (in the
   * mount's own cache) and this cache keeps recent chunks in memory; so a cold read allocates
   * page-cache memory once instead of twice, and streaming a file through does not push other
   * files' pages out. Turned off for good when the cache's file system refuses O_DIRECT (tmpfs),
   * or where the cipher addon that writes it is not loaded.
   */
  private directWrites = canWriteDirect && DIRECT_FLAGS !== 0;
  /** Called when a damaged cache file is found (it is removed and refetched). */
  onDamaged: (name: string, why: string) => void = () => undefined;

  constructor(
    private readonly dir: string,
    private limits: CacheLimits,
    private readonly handles: HandlePool,
    private readonly dirtyBytes: () => number,
    private readonly io: SealedIO,
    /** Keeps downloaded chunks as received; without it they are sealed like the rest. */
    private readonly received?: ReceivedIO,
    memoryBytes = 48 * 1024 * 1024,
  ) {
    this.memoryBytes = memoryBytes;
  }

  /** The pool of the fetcher's decoded chunks: what is kept in memory holds its buffer (see `memory`). */
  useDecodedBuffers(pool: HeldBuffers): void {
    this.decoded = pool;
  }

  /**
   * Keeps a decoded chunk in memory (for sequential readers); copies already read go first,
   * oldest first. `unread`: downloaded ahead of its reader (see the header).
   */
  remember(name: string, data: Buffer, unread = false): void {
    if (data.length > this.memoryBytes || this.memory.has(name)) return;
    // A view keeps its whole backing store: a small chunk read from disk is a slice of one of
    // Node's shared 8 KiB pool slabs. Such a chunk is kept as a copy of its own, so the bytes
    // counted against `memoryBytes` are the bytes held.
    if (data.buffer.byteLength > 2 * data.length) data = ownCopy(data);
    this.memory.set(name, data);
    this.decoded?.hold(data);
    this.memoryUsed += data.length;
    this.memoryInUse();
    if (unread) this.unread.add(name);
    for (const [old, buf] of this.memory) {
      if (this.memoryUsed <= this.memoryBytes) break;
      if (old === name || this.unread.has(old)) continue;
      this.forgetInMemory(old, buf);
    }
    if (this.memoryUsed <= this.memoryBytes) return;
    // Only chunks not yet read are left: a new read-ahead chunk waits on disk; a chunk a reader
    // wants now displaces the oldest read-ahead.
    if (unread) {
      this.forgetInMemory(name, data);
      return;
    }
    for (const [old, buf] of this.memory) {
      if (this.memoryUsed <= this.memoryBytes) break;
      if (old !== name) this.forgetInMemory(old, buf);
    }
  }

  /** Notes a use of the chunks in memory; once none has been used for MEMORY_IDLE_MS, they go. */
  private memoryInUse(): void {
    this.memoryUsedAt = Date.now();
    if (this.memoryIdleTimer) return;
    const check = () => {
      const idle = Date.now() - this.memoryUsedAt;
      if (idle < MEMORY_IDLE_MS) {
        this.memoryIdleTimer = setTimeout(check, MEMORY_IDLE_MS - idle);
        this.memoryIdleTimer.unref();
        return;
      }
      this.memoryIdleTimer = undefined;
      this.releaseIdleMemory();
    };
    this.memoryIdleTimer = setTimeout(check, MEMORY_IDLE_MS);
    this.memoryIdleTimer.unref();
  }

  /**
   * Lets go of the chunks in memory: what no reader has used for a while is memory the rest of
   * the engine can use. A reader coming back reads them from disk again; so does one for a
   * chunk read ahead and not read since (its reader stopped or went past it meanwhile).
   */
  releaseIdleMemory(): void {
    for (const buf of this.memory.values()) this.decoded?.drop(buf);
    this.decoded?.trim();
    this.memory.clear();
    this.unread.clear();
    this.memoryUsed = 0;
  }

  /** Lets go of these chunks in memory (those its readers are done with, see Vfs.release). */
  letGoOfMemory(names: Iterable<string>): void {
    for (const name of names) {
      const buf = this.memory.get(name);
      if (buf) this.forgetInMemory(name, buf);
    }
  }

  private forgetInMemory(name: string, buf: Buffer): void {
    this.memory.delete(name);
    this.decoded?.drop(buf);
    this.unread.delete(name);
    this.memoryUsed -= buf.length;
  }

  /** Reads a cached chunk whole into memory (`ahead`: for a reader that has not reached it); resolves false on a miss. */
  async loadIntoMemory(name: string, ahead = false): Promise<boolean> {
    if (this.memory.has(name)) return true;
    const data = await this.readAll(name, true);
    if (!data) return false;
    this.remember(name, data, ahead);
    this.decoded?.drop(data); // the load's own hold: the memory holds it now, or it goes back
    return true;
  }

  /**
   * Whether `loadIntoMemory` keeps a chunk of `len` bytes in a buffer used again (see
   * `readAll`). Others are better read range by range: a whole copy of its own would be
   * garbage once the memory lets go of it.
   */
  loadsPooled(len: number): boolean {
    return this.decoded?.takes(len) ?? false;
  }

  /**
   * Runs `fn` on the open cache file with its header and data length. A damaged file is
   * removed and the result is undefined (a miss); so is a file that vanished.
   */
  private async withFile<T>(
    name: string,
    fn: (fh: fsp.FileHandle, file: CacheFile, len: number) => Promise<T>,
  ): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      const size = this.index.get(name);
      if (size === undefined) return undefined;
      const len = logicalSize(size);
      try {
        if (len === undefined) throw new AuthError(`cached chunk ${name} (impossible size ${size})`);
        return await this.handles.use(this.pathOf(name), async (fh) => {
          let file = this.files.get(name);
          if (file) {
            this.files.delete(name);
            this.files.set(name, file); // most recently used last
          } else {
            const received = await this.received?.readHeader(fh);
            file = received ? { received } : { sealed: await this.io.readHeader(fh, `cached chunk ${name}`, name, len) };
            this.files.set(name, file);
            if (this.files.size > FILE_HEADERS_KEPT) this.files.delete(this.files.keys().next().value!);
          }
          return fn(fh, file, len);
        });
      } catch (err) {
        if (err instanceof AuthError) {
          // Two stores of one chunk can race (equal content uploaded twice): the file may have
          // been replaced by an equally valid one. Look again before calling it damaged.
          this.files.delete(name);
          this.handles.forget(this.pathOf(name));
          if (attempt === 0) continue;
          this.onDamaged(name, err.message);
          await this.remove(name);
          return undefined;
        }
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          this.dropIndex(name);
          return undefined;
        }
        throw err;
      }
    }
  }

  inMemoryPeek(name: string): boolean {
    return this.memory.has(name);
  }

  /** A chunk held in memory, if any (refreshes its LRU position). */
  inMemory(name: string): Buffer | undefined {
    const buf = this.memory.get(name);
    if (buf) {
      this.memory.delete(name);
      this.memory.set(name, buf);
      this.unread.delete(name);
      this.memoryInUse();
      this.touch(name);
    }
    return buf;
  }

  async init(): Promise<void> {
    const root = path.join(this.dir, 'chunks');
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    const found: Array<{ name: string; size: number; atime: number }> = [];
    for (const sub of await fsp.readdir(root)) {
      const subdir = path.join(root, sub);
      for (const name of await fsp.readdir(subdir)) {
        const file = path.join(subdir, name);
        if (name.includes('.tmp')) {
          await fsp.rm(file, { force: true });
          continue;
        }
        const st = await fsp.stat(file);
        found.push({ name, size: st.size, atime: st.atimeMs });
      }
    }
    found.sort((a, b) => a.atime - b.atime);
    for (const f of found) {
      this.index.set(f.name, f.size);
      this.cleanBytes += f.size;
    }
    await this.maybeEvict();
  }

  pathOf(name: string): string {
    return path.join(this.dir, 'chunks', name.slice(0, 2), name);
  }

  /** Cache file headers held in memory (at most FILE_HEADERS_KEPT). */
  get headersKept(): number {
    return this.files.size;
  }

  /** Bytes of whole chunks held in memory for sequential readers (at most `memoryBytes`). */
  get memoryHeldBytes(): number {
    return this.memoryUsed;
  }

  get usedBytes(): number {
    return this.cleanBytes + this.reservedBytes + this.dirtyBytes();
  }

  get cleanUsedBytes(): number {
    return this.cleanBytes;
  }

  /** The configured cap. */
  get capBytes(): number {
    return this.limits.capBytes;
  }

  /** The cap in force: the configured one, or less when the disk has less room. */
  get effectiveCapBytes(): number {
    return Math.min(this.limits.capBytes, this.diskLimitBytes);
  }

  /** Clean and dirty bytes on disk now (without writes still on their way). */
  get onDiskBytes(): number {
    return this.cleanBytes + this.dirtyBytes();
  }

  setLimits(limits: CacheLimits): void {
    this.limits = limits;
    void this.maybeEvict();
  }

  /** What the disk has room for, in cache bytes (see cacheDisk.ts); evicts if that is less now. */
  setDiskLimit(bytes: number): void {
    const lower = bytes < this.diskLimitBytes;
    this.diskLimitBytes = bytes;
    if (lower) void this.maybeEvict();
  }

  has(name: string): boolean {
    return this.index.has(name);
  }

  /** The chunks never to evict from now on (the whole pinned set; replaces the last one). */
  setPinned(names: ReadonlySet<string>): void {
    this.pinned = names;
  }

  /** Names of the chunks cached on disk (a copy: removing while iterating is safe). */
  names(): string[] {
    return [...this.index.keys()];
  }

  private touch(name: string): void {
    const size = this.index.get(name);
    if (size === undefined) return;
    this.index.delete(name);
    this.index.set(name, size);
  }

  /**
   * Copies bytes [pos, pos+len) of a cached chunk into buf at bufOff. Resolves to the number
   * of bytes the chunk had there (short at its end), or undefined on a miss.
   */
  async read(name: string, buf: Buffer, bufOff: number, len: number, pos: number): Promise<number | undefined> {
    if (!this.index.has(name)) return undefined;
    this.touch(name);
    return this.withFile(name, async (fh, file, dataLen) => {
      const n = Math.max(0, Math.min(len, dataLen - pos));
      const what = `cached chunk ${name}`;
      if ('received' in file) await this.received!.read(fh, file.received, name, dataLen, buf, bufOff, n, pos, what);
      else await this.io.read(fh, file.sealed, dataLen, buf, bufOff, n, pos, what);
      return n;
    });
  }

  /**
   * Reads a cached chunk whole; undefined on a miss. `pooled` (for the memory): a sealed file of
   * a size the decoded pool takes is read and opened in one of its buffers, held once for the
   * caller, who gives it back with `decoded.drop` (a stream of chunks read from disk then reuses
   * a few buffers instead of leaving one of garbage per chunk, which kept V8 collecting).
   */
  async readAll(name: string, pooled = false): Promise<Buffer | undefined> {
    if (!this.index.has(name)) return undefined;
    this.touch(name);
    return this.withFile(name, async (fh, file, len) => {
      const what = `cached chunk ${name}`;
      if ('received' in file) return this.received!.readAll(fh, file.received, name, len, what);
      const buf = pooled && len > 0 ? this.decoded?.take(len) : undefined;
      if (!buf || buf.length < sealedBodySize(len)) {
        if (buf) this.decoded!.drop(buf);
        return this.io.readAll(fh, file.sealed, len, what);
      }
      try {
        await this.io.readAllInto(fh, file.sealed, len, buf, what);
      } catch (err) {
        this.decoded!.drop(buf); // the file read into it has finished
        throw err;
      }
      return buf.subarray(0, len);
    });
  }

  /**
   * Stores a chunk downloaded from the bucket: `obj` as the bucket sent it (already
   * authenticated by decoding it into `data`). Resolves as `put` does. `inPlace`: the
   * RECEIVED_HEAD_ROOM bytes before `obj` in its memory are the caller's, and `obj` may be
   * overwritten (received.ts `segmentedFileFor`).
   */
  async putReceived(name: string, obj: Buffer, data: Buffer, inPlace = false): Promise<boolean> {
    if (!this.received) return this.put(name, data);
    const segments = data.length > 0 ? receivedSegments(obj) : undefined;
    const parts = segments ? undefined : receivedCiphertext(obj);
    let buffers: Buffer[];
    if (segments && physicalSize(data.length) === HEADER + segments.length)
      buffers = ReceivedIO.segmentedFileFor(segments, inPlace);
    else if (parts && parts.ciphertext.length === data.length)
      buffers = await this.received.fileFor(name, parts.nonce, parts.ciphertext);
    else return this.put(name, data);
    return this.store(name, data.length, (fh) => writeAllAt(fh, buffers, 0), buffers);
  }

  /**
   * Stores a chunk object in the segmented format (FSC2) as received, without opening it: a
   * download nobody waits on. Nothing is lost by that: a received file's segments are
   * authenticated each time they are read from here (received.ts), so a damaged object is found
   * on its first read, dropped and fetched again, never served. Resolves as `put` does, and
   * false, storing nothing, for an object in any other format (see `storableUnopened`).
   * `inPlace` as for `putReceived`.
   */
  async putUnopened(name: string, obj: Buffer, inPlace = false): Promise<boolean> {
    const len = this.storableUnopened(obj);
    if (len === undefined) return false;
    const buffers = ReceivedIO.segmentedFileFor(receivedSegments(obj)!, inPlace);
    return this.store(name, len, (fh) => writeAllAt(fh, buffers, 0), buffers);
  }

  /** The data length of a chunk object `putUnopened` keeps as received, or undefined when it cannot. */
  storableUnopened(obj: Buffer): number | undefined {
    const segments = this.received ? receivedSegments(obj) : undefined;
    const len = segments && segmentedPlainBytes(segments.length);
    return len && physicalSize(len) === HEADER + segments.length ? len : undefined;
  }

  /**
   * Stores a chunk (sealed into a temp file, then renamed: readers never see half). Resolves
   * false, storing nothing, when it finds no room even after evicting every clean chunk (dirty
   * data fills the cap, or the disk is full).
   */
  async put(name: string, data: Buffer): Promise<boolean> {
    return this.store(name, data.length, async (fh) => {
      const { header, fileId } = this.io.newHeader();
      await fh.write(header, 0, header.length, 0);
      await this.io.writeNameTag(fh, fileId, name, data.length);
      await this.io.write(fh, fileId, 0, data, 0, `cached chunk ${name}`);
    });
  }

  /**
   * Writes a cache file for `len` data bytes with `write` into a temp file, then moves it in (see
   * `put`). A file given whole as `direct` (a downloaded chunk) is written around the page cache
   * instead where the cache's file system takes O_DIRECT (see `directWrites`).
   */
  private async store(
    name: string,
    len: number,
    write: (fh: fsp.FileHandle) => Promise<void>,
    direct?: Buffer[],
  ): Promise<boolean> {
    if (this.index.has(name)) return true;
    const file = this.pathOf(name);
    const tmp = `${file}.tmp${process.pid}.${Math.random().toString(36).slice(2)}`;
    const size = physicalSize(len);
    // Reserve first and evict down to the low watermark, so the cap holds even with many
    // concurrent fetches landing at once.
    this.reservedBytes += size;
    try {
      await this.maybeEvict();
      if (this.usedBytes > this.effectiveCapBytes) return false;
      const open = (flags: string | number) =>
        fsp.open(tmp, flags, 0o600).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
          await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 }); // the first chunk of its folder
          return fsp.open(tmp, flags, 0o600);
        });
      const opened = direct && this.directWrites ? await open(DIRECT_FLAGS).catch(noDirect) : undefined;
      if (direct && !opened) this.directWrites = false;
      const fh = opened ?? (await open('w+'));
      try {
        await ((opened && direct && writeDirect(opened.fd, direct)) || write(fh));
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, file);
      this.files.delete(name); // read back from the file's own header on first use
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      this.reservedBytes -= size;
    }
    this.addIndex(name, size);
    return true;
  }

  /**
   * Takes over a sealed file that already holds the chunk's bytes (a dirty chunk just
   * uploaded): binds it to its name, then moves it in. `size` is its size on disk; `tagged`
   * says its header already holds the name and length (DirtyStore.tagAsClean).
   */
  async adopt(name: string, src: string, size: number, fileId: Buffer, tagged = false): Promise<void> {
    if (this.index.has(name)) {
      this.handles.forget(src);
      this.reservedBytes += size;
      await fsp.rm(src, { force: true }).finally(() => (this.reservedBytes -= size));
      return;
    }
    // Counted from the first moment (the caller just stopped counting it as dirty): the file
    // is on disk the whole time, so the total must never dip while it moves.
    this.reservedBytes += size;
    const file = this.pathOf(name);
    try {
      // Through the handle the dirty store left in the pool (DirtyStore.release), which moves
      // with the file: a small file's upload costs no open and close here.
      if (!tagged) await this.handles.use(src, (fh) => this.io.writeNameTag(fh, fileId, name, logicalSize(size) ?? 0));
      await fsp.rename(src, file).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 }); // the first chunk of its folder
        await fsp.rename(src, file);
      });
      this.handles.rename(src, file);
      this.files.delete(name); // read back from the file's own header on first use
    } catch (err) {
      this.handles.forget(src);
      throw err;
    } finally {
      this.reservedBytes -= size;
    }
    this.addIndex(name, size);
  }

  private addIndex(name: string, size: number): void {
    // Two stores of one name can overlap (equal content uploaded from two files): count once.
    const added = !this.index.has(name);
    if (added) this.cleanBytes += size;
    this.index.delete(name);
    this.index.set(name, size);
    if (added) this.onAdded?.(name);
    void this.maybeEvict();
  }

  private dropIndex(name: string): void {
    const size = this.index.get(name);
    if (size === undefined) return;
    this.index.delete(name);
    this.cleanBytes -= size;
  }

  /**
   * The chunk cached as `from` lies under another name `to` in the bucket now (a repacked pack
   * member, upload/repack.ts: the same content, so the same chunk name first): its file moves to
   * `to`'s place. Nothing happens when `from` is not cached or `to` already is. A `remove` of
   * `from` (a sweep of unreferenced chunks, vfs.ts: the caller moved its references first)
   * leaves the file alone from the call on.
   */
  async rekey(from: string, to: string): Promise<void> {
    const size = this.index.get(from);
    if (size === undefined || this.index.has(to) || this.moving.has(from) || contentName(from) !== contentName(to)) return;
    const src = this.pathOf(from);
    const dst = this.pathOf(to);
    this.moving.add(from);
    this.dropIndex(from);
    this.files.delete(from);
    this.handles.forget(src);
    this.reservedBytes += size; // on disk the whole time
    let moved = false;
    try {
      await fsp.rename(src, dst).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
        await fsp.mkdir(path.dirname(dst), { recursive: true, mode: 0o700 });
        await fsp.rename(src, dst);
      });
      moved = true;
    } catch {
      await fsp.rm(src, { force: true }).catch(() => undefined); // read again from the bucket when needed
    } finally {
      this.reservedBytes -= size;
      this.moving.delete(from);
    }
    if (moved && !this.index.has(to)) this.addIndex(to, size);
  }

  async remove(name: string): Promise<void> {
    if (this.moving.has(name)) return; // its file is becoming another name's (`rekey`)
    const size = this.index.get(name) ?? 0;
    this.dropIndex(name);
    this.files.delete(name);
    this.handles.forget(this.pathOf(name));
    // Still on disk until the unlink completes: keep it counted until then.
    this.reservedBytes += size;
    try {
      await fsp.rm(this.pathOf(name), { force: true });
    } finally {
      this.reservedBytes -= size;
    }
  }

  /** Evicts least-recently-used clean chunks until the total is at most `targetBytes`. */
  async evictUntil(targetBytes: number): Promise<void> {
    for (const name of [...this.index.keys()]) {
      if (this.usedBytes <= targetBytes) break;
      if (this.pinned.has(name)) continue;
      await this.remove(name);
    }
  }

  async maybeEvict(): Promise<void> {
    // One eviction pass at a time; chunks indexed while a pass ran are looked at by the next.
    for (;;) {
      while (this.evicting) await this.evicting;
      const { highWatermark, lowWatermark } = this.limits;
      const capBytes = this.effectiveCapBytes;
      if (this.usedBytes <= capBytes * highWatermark || this.index.size === 0) return;
      const before = this.cleanBytes;
      this.evicting = this.evictUntil(capBytes * lowWatermark).finally(() => (this.evicting = undefined));
      await this.evicting;
      if (this.cleanBytes === before) return; // nothing clean left to evict
    }
  }

  /**
   * Makes room for dirty data about to grow by up to `bytes`: clean chunks are evicted so the
   * total stays under the cap (dirty data itself is limited by backpressure in the VFS).
   */
  async makeRoomForDirty(bytes: number): Promise<void> {
    const { highWatermark, lowWatermark } = this.limits;
    const capBytes = this.effectiveCapBytes;
    if (this.usedBytes + bytes <= capBytes * highWatermark) return;
    this.reservedBytes += bytes;
    try {
      await this.evictUntil(capBytes * lowWatermark);
    } finally {
      this.reservedBytes -= bytes;
    }
  }

  /** Runs `fn` (which writes `bytes` to the cache disk) with those bytes counted, after making room. */
  async whileReserved<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    await this.makeRoomForDirty(bytes);
    this.reservedBytes += bytes;
    try {
      return await fn();
    } finally {
      this.reservedBytes -= bytes;
    }
  }

  /** True when adding `bytes` would push the total past the cap even after evicting all clean data. */
  wouldExceedCap(extraBytes: number): boolean {
    return this.dirtyBytes() + extraBytes > this.effectiveCapBytes;
  }

  /**
   * The disk is full (a write failed for lack of space): evicts least-recently-used clean
   * chunks until at least `bytes` are freed, or none is left. Resolves the bytes freed.
   */
  async evictForDisk(bytes: number): Promise<number> {
    let freed = 0;
    for (const name of [...this.index.keys()]) {
      if (freed >= bytes) break;
      if (this.pinned.has(name)) continue;
      freed += this.index.get(name) ?? 0;
      await this.remove(name);
    }
    return freed;
  }

  /**
   * Reserves room for dirty data about to grow by up to `bytes`, if dirty data, everything
   * reserved and these bytes fit under the cap (clean chunks do not count: they make room, see
   * makeRoomForDirty), or if nothing else is held. Returns the function that gives the room
   * back (once the bytes are counted as dirty), or undefined when there is no room now.
   * Check and reservation are one synchronous step, so concurrent writers cannot both take
   * the last room.
   */
  reserveForDirty(bytes: number): (() => void) | undefined {
    const held = this.dirtyBytes() + this.reservedBytes;
    if (held > 0 && held + bytes > this.effectiveCapBytes) return undefined;
    this.reservedBytes += bytes;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.reservedBytes -= bytes;
    };
  }

  /**
   * A chunk just came from the bucket (a read waited for it, or read-ahead fetched it): its
   * bytes count as misses when first served, so a cold read that downloaded everything shows
   * a hit ratio of 0, not 100%, even though read-ahead put each chunk here before it was read.
   * Served bytes are tracked in 4 KiB pages (a page is a miss once, then a hit).
   */
  noteDownloaded(name: string, bytes: number): void {
    const pages = Math.ceil(bytes / SERVED_PAGE);
    const e = this.served.get(name);
    if (e?.ranged && e.seen.length === pages) {
      // Its first bytes were served from a ranged GET while it came (countFetched): already counted.
      e.ranged = false;
      return;
    }
    this.served.delete(name);
    this.served.set(name, { seen: new Uint8Array(pages), unseen: pages });
    if (this.served.size > 1024) this.served.delete(this.served.keys().next().value!);
  }

  /** Bytes [pos, pos+bytes) of chunk `name` were served to a reader (from disk, memory or a download). */
  countServed(name: string, pos: number, bytes: number): void {
    const e = this.served.get(name);
    let miss = 0;
    if (e) {
      for (let p = Math.floor(pos / SERVED_PAGE); p * SERVED_PAGE < pos + bytes && p < e.seen.length; p++) {
        if (e.seen[p]) continue;
        e.seen[p] = 1;
        e.unseen--;
        miss += Math.min(pos + bytes, (p + 1) * SERVED_PAGE) - Math.max(pos, p * SERVED_PAGE);
      }
      if (e.unseen <= 0) this.served.delete(name);
    }
    this.missBytes += miss;
    this.hitBytes += bytes - miss;
  }

  /**
   * Bytes [pos, pos+bytes) of chunk `name` (`chunkBytes` long) were served straight from a
   * ranged GET of its segments: misses, and pages a later download of the whole chunk does
   * not count again (noteDownloaded).
   */
  countFetched(name: string, chunkBytes: number, pos: number, bytes: number): void {
    if (!this.served.has(name)) {
      const pages = Math.ceil(chunkBytes / SERVED_PAGE);
      this.served.set(name, { seen: new Uint8Array(pages), unseen: pages, ranged: true });
      if (this.served.size > 1024) this.served.delete(this.served.keys().next().value!);
    }
    this.countServed(name, pos, bytes);
  }

  /** Bytes of bucket data served to readers so far (the hit ratio's denominator). */
  get servedBytes(): number {
    return this.hitBytes + this.missBytes;
  }

  /** The share of bytes served that did not have to come from the bucket (0 before any read). */
  get hitRatio(): number {
    const total = this.hitBytes + this.missBytes;
    return total === 0 ? 0 : this.hitBytes / total;
  }
}
