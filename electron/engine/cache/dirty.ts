/**
 * Dirty chunks: file data written locally and not yet in the bucket, one sealed file per
 * chunk at `dirty/<ino>.<idx>` (encrypted at rest, see sealed.ts). This is the crash-safe local
 * store of DESIGN invariant 1: the data lives here (fsynced on fsync()) until its upload
 * succeeded and the chunk was adopted by the clean cache. Nothing here is ever evicted.
 *
 * `len` is the chunk's logical length (bytes past what was written read as zeros). `gen`
 * increments on every change, so the uploader can tell whether what it uploaded is still the
 * current content. `totalBytes` counts bytes on disk (sealing adds a little per 64 KiB).
 *
 * Ordering: callers serialise changes to one chunk with the VFS's per-chunk mutex; reads may
 * run concurrently with anything.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { AuthError } from '../chunk/crypto';
import { HandlePool } from './handles';
import { SealedIO, UNIT, UNIT_OVERHEAD, HEADER, logicalSize, physicalSize } from './sealed';

export interface DirtyChunk {
  readonly ino: number;
  readonly idx: number;
  readonly fileId: Buffer;
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

  constructor(
    private readonly dir: string,
    private readonly handles: HandlePool,
    private readonly io: SealedIO,
    private readonly log: (msg: string) => void = () => undefined,
  ) {}

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
      const limit = m ? limitOf(Number(m[1]), Number(m[2])) : undefined;
      if (!m || limit === undefined || limit <= 0) {
        await fsp.rm(file, { force: true });
        continue;
      }
      const ino = Number(m[1]);
      const idx = Number(m[2]);
      const fh = await fsp.open(file, 'r+');
      try {
        let fileId: Buffer;
        try {
          fileId = await this.io.readHeader(fh, `dirty chunk ${name}`);
        } catch (err) {
          if (!(err instanceof AuthError)) throw err;
          this.log(`dirty chunk ${name} has a damaged header and cannot be read; removed`);
          await fh.close();
          await fsp.rm(file, { force: true });
          continue;
        }
        const size = (await fh.stat()).size;
        let len = logicalSize(size);
        if (len === undefined) {
          // A last unit cut short (only possible after a power loss): keep the whole units.
          len = Math.floor((size - HEADER) / (UNIT + UNIT_OVERHEAD)) * UNIT;
          await fh.truncate(physicalSize(len));
        }
        if (len > limit) {
          await this.io.truncate(fh, fileId, len, limit, `dirty chunk ${name}`);
          len = limit;
        }
        this.track({ ino, idx, fileId, len, gen: 1, firstDirtyMs: nowMs, lastWriteMs: 0, uploading: false, attempts: 0, retryAtMs: 0 });
      } finally {
        await fh.close().catch(() => undefined);
      }
    }
  }

  private track(d: DirtyChunk): void {
    this.chunks.set(DirtyStore.key(d.ino, d.idx), d);
    let set = this.byIno.get(d.ino);
    if (!set) this.byIno.set(d.ino, (set = new Set()));
    set.add(d.idx);
    this.bytes += physicalSize(d.len);
  }

  private untrack(d: DirtyChunk): void {
    this.chunks.delete(DirtyStore.key(d.ino, d.idx));
    const set = this.byIno.get(d.ino);
    set?.delete(d.idx);
    if (set && set.size === 0) this.byIno.delete(d.ino);
    this.bytes -= physicalSize(d.len);
  }

  /** Bytes on disk. */
  get totalBytes(): number {
    return this.bytes;
  }

  /** Bytes of data (what is left to upload). */
  get dataBytes(): number {
    let n = 0;
    for (const d of this.chunks.values()) n += d.len;
    return n;
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
    const { header, fileId } = this.io.newHeader();
    const fh = await fsp.open(file, 'w+', 0o600);
    let len = 0;
    try {
      await fh.write(header, 0, header.length, 0);
      if (base && base.length > 0) len = await this.io.write(fh, fileId, 0, base, 0, `dirty chunk ${ino}.${idx}`);
    } finally {
      await fh.close();
    }
    const d: DirtyChunk = {
      ino, idx, fileId, len, gen: 1, firstDirtyMs: nowMs, lastWriteMs: nowMs,
      uploading: false, attempts: 0, retryAtMs: 0,
    };
    this.track(d);
    return d;
  }

  async write(d: DirtyChunk, data: Buffer, pos: number, nowMs: number): Promise<void> {
    // Counted before the bytes reach the disk, so the cache total never trails the disk.
    const oldLen = d.len;
    const newLen = Math.max(oldLen, pos + data.length);
    const growth = physicalSize(newLen) - physicalSize(oldLen);
    this.bytes += growth;
    d.len = newLen;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), (fh) => this.io.write(fh, d.fileId, oldLen, data, pos, `dirty chunk ${d.ino}.${d.idx}`));
    } catch (err) {
      if (this.get(d.ino, d.idx) === d) {
        this.bytes -= growth;
        d.len = oldLen;
      }
      throw err;
    }
    d.gen++;
    d.lastWriteMs = nowMs;
  }

  async read(d: DirtyChunk, buf: Buffer, bufOff: number, len: number, pos: number): Promise<number> {
    const want = Math.max(0, Math.min(len, d.len - pos));
    if (want === 0) return 0;
    const dataLen = d.len;
    await this.handles.use(this.pathOf(d.ino, d.idx), (fh) => this.io.read(fh, d.fileId, dataLen, buf, bufOff, want, pos, `dirty chunk ${d.ino}.${d.idx}`));
    return want;
  }

  async readAll(d: DirtyChunk): Promise<Buffer> {
    const dataLen = d.len;
    return this.handles.use(this.pathOf(d.ino, d.idx), (fh) => this.io.readAll(fh, d.fileId, dataLen, `dirty chunk ${d.ino}.${d.idx}`));
  }

  async truncate(d: DirtyChunk, len: number, nowMs: number): Promise<void> {
    const oldLen = d.len;
    // Growth is counted before it reaches the disk; a cut is counted once it is done.
    const growth = Math.max(0, physicalSize(len) - physicalSize(oldLen));
    this.bytes += growth;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), (fh) => this.io.truncate(fh, d.fileId, oldLen, len, `dirty chunk ${d.ino}.${d.idx}`));
    } catch (err) {
      this.bytes -= growth;
      throw err;
    }
    this.bytes += physicalSize(len) - physicalSize(oldLen) - growth;
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

  /**
   * Forgets a dirty chunk whose file is handed to the clean cache; returns the file's path,
   * its sealing id and its size on disk.
   */
  release(d: DirtyChunk): { file: string; fileId: Buffer; size: number } {
    this.untrack(d);
    const file = this.pathOf(d.ino, d.idx);
    this.handles.forget(file);
    return { file, fileId: d.fileId, size: physicalSize(d.len) };
  }
}
