/**
 * The clean chunk cache: decoded chunks already safe in the bucket, kept on local disk as
 * `chunks/<aa>/<name>` and evicted least-recently-used first.
 *
 * Cap accounting covers clean *and* dirty bytes (the dirty store reports its total): the
 * cache starts evicting when the total passes the high watermark and stops at the low one.
 * Only clean chunks are ever evicted; dirty data is the write-back queue's, and when it alone
 * fills the cap the VFS applies backpressure instead (see vfs.ts).
 *
 * A miss is not an error: `read` resolves to `undefined` when the chunk is not here.
 *
 * Sequential readers are served from a small in-memory LRU of whole chunks (`memoryBytes`,
 * 64 MiB by default): one disk read per chunk instead of one per 128 KiB FUSE request. Clean
 * chunks are immutable (named by content), so a copy in memory can never go stale.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HandlePool } from './handles';

export interface CacheLimits {
  capBytes: number;
  /** Fractions of the cap. */
  highWatermark: number;
  lowWatermark: number;
}

export class ChunkCache {
  /** name -> size, in LRU order (least recent first). */
  private readonly index = new Map<string, number>();
  private cleanBytes = 0;
  /** Bytes of chunks being written into the cache right now, counted against the cap. */
  private reservedBytes = 0;
  private evicting: Promise<void> | undefined;
  hits = 0;
  misses = 0;
  /** Whole decoded chunks kept in memory for sequential readers, LRU order. */
  private readonly memory = new Map<string, Buffer>();
  private memoryUsed = 0;
  private readonly memoryBytes: number;
  private readonly owned = new WeakSet<Buffer>();
  private readonly spare: Buffer[] = [];

  constructor(
    private readonly dir: string,
    private limits: CacheLimits,
    private readonly handles: HandlePool,
    private readonly dirtyBytes: () => number,
    memoryBytes = 64 * 1024 * 1024,
  ) {
    this.memoryBytes = memoryBytes;
  }

  /** Keeps a decoded chunk in memory (for sequential readers); oldest copies go first. */
  remember(name: string, data: Buffer): void {
    if (data.length > this.memoryBytes || this.memory.has(name)) return;
    this.memory.set(name, data);
    this.memoryUsed += data.length;
    for (const [old, buf] of this.memory) {
      if (this.memoryUsed <= this.memoryBytes) break;
      this.memory.delete(old);
      this.memoryUsed -= buf.length;
      // Buffers this cache allocated are reused for the next load instead of left to the GC
      // (allocating a few MiB per chunk made collection a bottleneck of sequential reads).
      // Safe because every user copies out of a memory chunk synchronously after looking it up.
      if (this.owned.has(buf) && this.spare.length < 4) this.spare.push(buf);
    }
  }

  /** Reads a cached chunk whole into memory; resolves false on a miss. */
  async loadIntoMemory(name: string): Promise<boolean> {
    if (this.memory.has(name)) return true;
    if (!this.index.has(name)) return false;
    try {
      const data = await this.handles.use(this.pathOf(name), async (fh) => {
        const { size } = await fh.stat();
        let buf = this.spare.pop();
        if (!buf || buf.length < size) {
          buf = Buffer.allocUnsafe(size);
          this.owned.add(buf);
        }
        let done = 0;
        while (done < size) {
          const { bytesRead } = await fh.read(buf, done, size - done, done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        if (done < size) throw new Error(`chunk file ${name} is shorter than it was`);
        return buf.length === size ? buf : buf.subarray(0, size);
      });
      this.remember(name, data);
      this.touch(name);
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.dropIndex(name);
        return false;
      }
      throw err;
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
      this.hits++;
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

  get usedBytes(): number {
    return this.cleanBytes + this.reservedBytes + this.dirtyBytes();
  }

  get cleanUsedBytes(): number {
    return this.cleanBytes;
  }

  get capBytes(): number {
    return this.limits.capBytes;
  }

  setLimits(limits: CacheLimits): void {
    this.limits = limits;
    void this.maybeEvict();
  }

  has(name: string): boolean {
    return this.index.has(name);
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
    if (!this.index.has(name)) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.touch(name);
    try {
      return await this.handles.use(this.pathOf(name), async (fh) => {
        let done = 0;
        while (done < len) {
          const { bytesRead } = await fh.read(buf, bufOff + done, len - done, pos + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done;
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.dropIndex(name);
        return undefined;
      }
      throw err;
    }
  }

  async readAll(name: string): Promise<Buffer | undefined> {
    if (!this.index.has(name)) return undefined;
    this.touch(name);
    try {
      return await this.handles.use(this.pathOf(name), async (fh) => {
        const { size } = await fh.stat();
        const buf = Buffer.allocUnsafe(size);
        let done = 0;
        while (done < size) {
          const { bytesRead } = await fh.read(buf, done, size - done, done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return done === size ? buf : buf.subarray(0, done);
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.dropIndex(name);
        return undefined;
      }
      throw err;
    }
  }

  /** Stores a decoded chunk (write to a temp file, then rename: readers never see half). */
  async put(name: string, data: Buffer): Promise<void> {
    if (this.index.has(name)) return;
    const file = this.pathOf(name);
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const tmp = `${file}.tmp${process.pid}.${Math.random().toString(36).slice(2)}`;
    // Reserve first and evict down to the low watermark, so the cap holds even with many
    // concurrent fetches landing at once.
    this.reservedBytes += data.length;
    try {
      await this.maybeEvict();
      await fsp.writeFile(tmp, data, { mode: 0o600 });
      await fsp.rename(tmp, file);
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    } finally {
      this.reservedBytes -= data.length;
    }
    this.addIndex(name, data.length);
  }

  /** Takes over a file that already holds the chunk's bytes (a dirty chunk just uploaded). */
  async adopt(name: string, src: string, size: number): Promise<void> {
    if (this.index.has(name)) {
      this.reservedBytes += size;
      await fsp.rm(src, { force: true }).finally(() => (this.reservedBytes -= size));
      return;
    }
    // Counted from the first moment (the caller just stopped counting it as dirty): the file
    // is on disk the whole time, so the total must never dip while it moves.
    this.reservedBytes += size;
    const file = this.pathOf(name);
    try {
      await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
      await fsp.rename(src, file);
    } finally {
      this.reservedBytes -= size;
    }
    this.addIndex(name, size);
  }

  private addIndex(name: string, size: number): void {
    // Two stores of one name can overlap (equal content uploaded from two files): count once.
    if (!this.index.has(name)) this.cleanBytes += size;
    this.index.delete(name);
    this.index.set(name, size);
    void this.maybeEvict();
  }

  private dropIndex(name: string): void {
    const size = this.index.get(name);
    if (size === undefined) return;
    this.index.delete(name);
    this.cleanBytes -= size;
  }

  async remove(name: string): Promise<void> {
    this.dropIndex(name);
    this.handles.forget(this.pathOf(name));
    await fsp.rm(this.pathOf(name), { force: true });
  }

  /** Evicts least-recently-used clean chunks until the total is at most `targetBytes`. */
  async evictUntil(targetBytes: number): Promise<void> {
    for (const name of [...this.index.keys()]) {
      if (this.usedBytes <= targetBytes) break;
      await this.remove(name);
    }
  }

  async maybeEvict(): Promise<void> {
    // One eviction pass at a time; chunks indexed while a pass ran are looked at by the next.
    for (;;) {
      while (this.evicting) await this.evicting;
      const { capBytes, highWatermark, lowWatermark } = this.limits;
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
    const { capBytes, highWatermark, lowWatermark } = this.limits;
    if (this.usedBytes + bytes <= capBytes * highWatermark) return;
    this.reservedBytes += bytes;
    try {
      await this.evictUntil(capBytes * lowWatermark);
    } finally {
      this.reservedBytes -= bytes;
    }
  }

  /** True when adding `bytes` would push the total past the cap even after evicting all clean data. */
  wouldExceedCap(extraBytes: number): boolean {
    return this.dirtyBytes() + extraBytes > this.limits.capBytes;
  }

  get hitRatio(): number {
    const total = this.hits + this.misses;
    return total === 0 ? 0 : this.hits / total;
  }
}
