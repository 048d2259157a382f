/**
 * Dirty chunks: file data written locally and not yet in the bucket, one file per chunk at
 * `dirty/<ino>.<idx>`. This is the crash-safe local store of DESIGN invariant 1: the data
 * lives here (fsynced on fsync()) until its upload succeeded and the chunk was adopted by the
 * clean cache. Nothing here is ever evicted.
 *
 * `len` is the chunk's logical length (bytes past what was written read as zeros); the file
 * is kept at exactly that length. `gen` increments on every change, so the uploader can tell
 * whether what it uploaded is still the current content.
 *
 * Ordering: callers serialise changes to one chunk with the VFS's per-chunk mutex; reads may
 * run concurrently with anything.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HandlePool } from './handles';

export interface DirtyChunk {
  readonly ino: number;
  readonly idx: number;
  len: number;
  gen: number;
  firstDirtyMs: number;
  lastWriteMs: number;
  uploading: boolean;
  attempts: number;
  retryAtMs: number;
}

export class DirtyStore {
  private readonly chunks = new Map<string, DirtyChunk>();
  private readonly byIno = new Map<number, Set<number>>();
  private bytes = 0;

  constructor(private readonly dir: string, private readonly handles: HandlePool) {}

  private static key(ino: number, idx: number): string {
    return `${ino}.${idx}`;
  }

  pathOf(ino: number, idx: number): string {
    return path.join(this.dir, 'dirty', DirtyStore.key(ino, idx));
  }

  /**
   * Loads the dirty chunks left by a previous run. `limitOf(ino, idx)` gives the largest
   * length the chunk may still have (from the file's size), or undefined when its file is gone;
   * leftovers are trimmed or removed accordingly.
   */
  async init(limitOf: (ino: number, idx: number) => number | undefined, nowMs: number): Promise<void> {
    const root = path.join(this.dir, 'dirty');
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    for (const name of await fsp.readdir(root)) {
      const m = /^(\d+)\.(\d+)$/.exec(name);
      const file = path.join(root, name);
      if (!m) {
        await fsp.rm(file, { force: true });
        continue;
      }
      const ino = Number(m[1]);
      const idx = Number(m[2]);
      const limit = limitOf(ino, idx);
      if (limit === undefined || limit <= 0) {
        await fsp.rm(file, { force: true });
        continue;
      }
      let { size } = await fsp.stat(file);
      if (size > limit) {
        await fsp.truncate(file, limit);
        size = limit;
      }
      this.track({ ino, idx, len: size, gen: 1, firstDirtyMs: nowMs, lastWriteMs: 0, uploading: false, attempts: 0, retryAtMs: 0 });
    }
  }

  private track(d: DirtyChunk): void {
    this.chunks.set(DirtyStore.key(d.ino, d.idx), d);
    let set = this.byIno.get(d.ino);
    if (!set) this.byIno.set(d.ino, (set = new Set()));
    set.add(d.idx);
    this.bytes += d.len;
  }

  private untrack(d: DirtyChunk): void {
    this.chunks.delete(DirtyStore.key(d.ino, d.idx));
    const set = this.byIno.get(d.ino);
    set?.delete(d.idx);
    if (set && set.size === 0) this.byIno.delete(d.ino);
    this.bytes -= d.len;
  }

  get totalBytes(): number {
    return this.bytes;
  }

  get count(): number {
    return this.chunks.size;
  }

  get fileCount(): number {
    return this.byIno.size;
  }

  inodes(): number[] {
    return [...this.byIno.keys()];
  }

  all(): IterableIterator<DirtyChunk> {
    return this.chunks.values();
  }

  get(ino: number, idx: number): DirtyChunk | undefined {
    return this.chunks.get(DirtyStore.key(ino, idx));
  }

  indexesOf(ino: number): number[] {
    return [...(this.byIno.get(ino) ?? [])];
  }

  /** Starts a dirty chunk, seeded from `base` (the chunk's current clean bytes) if given. */
  async create(ino: number, idx: number, base: Buffer | undefined, nowMs: number): Promise<DirtyChunk> {
    const file = this.pathOf(ino, idx);
    this.handles.forget(file);
    const fh = await fsp.open(file, 'w', 0o600);
    try {
      if (base && base.length > 0) await fh.writeFile(base);
    } finally {
      await fh.close();
    }
    const d: DirtyChunk = {
      ino, idx, len: base?.length ?? 0, gen: 1, firstDirtyMs: nowMs, lastWriteMs: nowMs,
      uploading: false, attempts: 0, retryAtMs: 0,
    };
    this.track(d);
    return d;
  }

  async write(d: DirtyChunk, data: Buffer, pos: number, nowMs: number): Promise<void> {
    // Counted before the bytes reach the disk, so the cache total never trails the disk.
    const end = pos + data.length;
    const growth = Math.max(0, end - d.len);
    this.bytes += growth;
    d.len += growth;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), async (fh) => {
        let done = 0;
        while (done < data.length) {
          const { bytesWritten } = await fh.write(data, done, data.length - done, pos + done);
          done += bytesWritten;
        }
      });
    } catch (err) {
      if (this.get(d.ino, d.idx) === d) {
        this.bytes -= growth;
        d.len -= growth;
      }
      throw err;
    }
    d.gen++;
    d.lastWriteMs = nowMs;
  }

  async read(d: DirtyChunk, buf: Buffer, bufOff: number, len: number, pos: number): Promise<number> {
    const want = Math.max(0, Math.min(len, d.len - pos));
    if (want === 0) return 0;
    return this.handles.use(this.pathOf(d.ino, d.idx), async (fh) => {
      let done = 0;
      while (done < want) {
        const { bytesRead } = await fh.read(buf, bufOff + done, want - done, pos + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      if (done < want) buf.fill(0, bufOff + done, bufOff + want);
      return want;
    });
  }

  async readAll(d: DirtyChunk): Promise<Buffer> {
    const buf = Buffer.alloc(d.len);
    await this.read(d, buf, 0, d.len, 0);
    return buf;
  }

  async truncate(d: DirtyChunk, len: number, nowMs: number): Promise<void> {
    await this.handles.use(this.pathOf(d.ino, d.idx), (fh) => fh.truncate(len));
    this.bytes += len - d.len;
    d.len = len;
    d.gen++;
    d.lastWriteMs = nowMs;
  }

  /** Makes the dirty data of one file durable. */
  async syncInode(ino: number): Promise<void> {
    for (const idx of this.indexesOf(ino)) {
      await this.handles.use(this.pathOf(ino, idx), (fh) => fh.datasync());
    }
  }

  async syncAll(): Promise<void> {
    for (const ino of this.inodes()) await this.syncInode(ino);
  }

  /** Forgets a dirty chunk and deletes its file (the file was deleted or truncated away). */
  async drop(d: DirtyChunk): Promise<void> {
    if (this.get(d.ino, d.idx) !== d) return;
    this.untrack(d);
    const file = this.pathOf(d.ino, d.idx);
    this.handles.forget(file);
    await fsp.rm(file, { force: true });
  }

  /** Forgets a dirty chunk whose file was handed to the clean cache; returns the file's path. */
  release(d: DirtyChunk): string {
    this.untrack(d);
    const file = this.pathOf(d.ino, d.idx);
    this.handles.forget(file);
    return file;
  }
}
