/**
 * Dirty chunks: file data written locally and not yet in the bucket, one sealed file per
 * chunk at `dirty/<ino>.<idx>` (encrypted at rest, see sealed.ts; a new one is a file created
 * ahead for it when its file was created (`openAhead`), else an empty spare file renamed into
 * place when one is ready, see spareFiles.ts). This is the crash-safe local
 * store of DESIGN invariant 1: the data lives here (fsynced on fsync()) until its upload
 * succeeded and the chunk was adopted by the clean cache. Nothing here is ever evicted.
 *
 * Owns: the dirty chunk records (`DirtyChunk`: read-only outside this module, changed only by
 * this store's methods), their files and pre-image files, the bytes they take on disk, and the
 * per-chunk lock (`withChunk`). The upload schedule of a chunk (in flight, attempts, backoff)
 * is the write-back queue's (upload/writeback.ts), not part of the record.
 *
 * `len` is the chunk's logical length (bytes past what was written read as zeros). `gen`
 * increments on every change, so the uploader can tell whether what it uploaded is still the
 * current content. `totalBytes` counts every byte this store has on disk (sealing adds a little
 * per 64 KiB; pre-images count too), before it is written and until it is removed, so the
 * cache cap (cache/chunkCache.ts) sees all of it.
 *
 * Power loss (DESIGN invariant 1): a unit is sealed as a whole, so a rewrite torn by a power
 * cut would make the whole 64 KiB unit unreadable, including bytes an earlier fsync made
 * durable and that the write did not touch. So before a unit that is durable (synced and not
 * changed since) is rewritten in place, its sealed bytes are appended to `<ino>.<idx>.pre`
 * and made durable; the next sync of the chunk empties that file (durably). After an unclean stop,
 * `init` checks every unit: a torn one is put back from its pre-image (the content of the last
 * sync; unsynced writes are lost, as on any filesystem), or, with none, it only ever held
 * unsynced data and reads as zeros. Pre-images are sealed under the file's id, so a stale one
 * from an earlier file of the same name never applies. Once a chunk is uploaded (released to
 * the clean cache) its pre-images are removed.
 *
 * Owners: at start, a dirty chunk whose file the metadata says was deleted (or truncated
 * away) is removed; one whose file the metadata does not know at all (its creation never
 * became durable, or the metadata lost it) is an orphan: it is not loaded, and stays on disk
 * until the engine has set it aside (`orphans`, `readOrphan`, `removeOrphans`). Data whose
 * owner cannot be told is never deleted here.
 *
 * The chunk lock, and the order of locks around it (the VFS in vfs/vfs.ts and the uploader in
 * upload/uploader.ts are the callers):
 *  - `withChunk(ino, idx, fn)` serialises everything that changes one chunk or takes its file
 *    away: creating it, writes, truncation, its sync, its drop, and both holds of the uploader
 *    (reading the bytes to send; then committing the reference and handing the file to the
 *    clean cache). Reads of dirty data take no lock and may run alongside any of these.
 *  - One chunk lock at a time: a path that touches several chunks (a write across a chunk
 *    boundary, truncate, fsync, deleting a file) takes their locks one after another, never
 *    one inside another.
 *  - Never waited for while holding a chunk lock: room in a full cache (vfs/backpressure.ts;
 *    the uploader needs the chunk lock to free that room), the upload bandwidth limit, a
 *    chunk's PUT, the GC's hold on a chunk name (gc.ts `acquire`, which may wait for a sweep).
 *  - The GC's hold on a chunk name is taken after the uploader's first chunk-lock hold ends and
 *    before its second begins, and let go after the second ends: name hold before chunk lock.
 *  - Waited for inside a chunk lock, never the other way round: the metadata journal's sync
 *    (meta/metastore.ts; the journal, also when it finds the disk full and has clean chunks
 *    evicted, never waits for a chunk lock), the clean cache's eviction to make room and its
 *    adoption of an uploaded chunk (cache/chunkCache.ts). What waits under a chunk lock is
 *    bounded: local disk I/O, and, when a write starts a dirty chunk from its uploaded bytes,
 *    the fetch of those bytes (bounded by the read timeout).
 *  - A deletion or truncation is durable in the journal before the data is dropped or cut, so
 *    a crash cannot bring back a size over lost data: the VFS syncs the journal before it takes
 *    the chunk locks; the uploader, finding a chunk's file gone, syncs it inside the lock.
 */

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { AuthError } from '../chunk/crypto';
import { KeyedMutex } from '../util/concurrency';
import { fsyncDir } from '../util/files';
import { writeAllAt } from '../util/writeAll';
import { HandlePool } from './handles';
import { SealedIO, UNIT, UNIT_OVERHEAD, HEADER, lastUnitOf, logicalSize, physicalSize } from './sealed';
import { SpareFiles } from './spareFiles';

/** A dirty chunk as the other modules see it: only this store changes it (see the header). */
export interface DirtyChunk {
  readonly ino: number;
  readonly idx: number;
  /** Binds the sealed units to this very file (see sealed.ts). */
  readonly fileId: Buffer;
  /** Logical length. */
  readonly len: number;
  /** Incremented by every change. */
  readonly gen: number;
  /** Since when the chunk holds data the bucket has not got (its dirty age). */
  readonly firstDirtyMs: number;
  readonly lastWriteMs: number;
}

/** The record as this store keeps it. */
type ChunkRecord = { -readonly [K in keyof DirtyChunk]: DirtyChunk[K] };

/** Every DirtyChunk is a record this store made: the only place it is changed. */
function rec(d: DirtyChunk): ChunkRecord {
  return d;
}

/** Which units of a chunk may be rewritten without a pre-image (they hold nothing durable). */
interface Durability {
  /** No sync since the chunk was created: nothing in it is durable yet. */
  allUnsynced: boolean;
  /** Units changed since the last sync (none: undefined; a synced chunk's record holds no set). */
  unsynced: Set<number> | undefined;
  /** A pre-image file exists for this chunk (created durably once). */
  pre: boolean;
  /** Bytes of pre-images in it since the last sync. */
  preBytes: number;
}

/** Notes that unit `u` changed since the last sync. */
function unsyncedUnit(st: Durability, u: number): void {
  (st.unsynced ??= new Set()).add(u);
}

const PRE_RECORD = 12; // unit (u32) | data length at the time (u32) | sealed bytes (u32)

/**
 * What the metadata says about a dirty chunk's file at start: the largest length the chunk may
 * still have (from the file's size; 0 or less: truncated away), 'deleted' (the file's removal
 * is recorded), or 'unknown' (no record of the file: the chunk is an orphan).
 */
export type ChunkOwner = number | 'deleted' | 'unknown';

/** A dirty chunk found at start without a known file; its file stays on disk until removed. */
export interface OrphanChunk {
  readonly ino: number;
  readonly idx: number;
  readonly fileId: Buffer;
  readonly len: number;
}
/** The most one unit's pre-image takes on disk. */
export const PRE_IMAGE_UNIT_BYTES = PRE_RECORD + UNIT + UNIT_OVERHEAD;
/** A write of this many bytes of units or more is sealed on the thread pool (see sealForWrite). */
const ASYNC_SEAL_BYTES = 256 * 1024;
/** Chunk files created ahead of their first write at most at a time (see openAhead). */
const OPENED_AHEAD_MAX = 64;

/**
 * New content for one 64 KiB unit of a chunk (`writeUnits`): the bytes of `data` within
 * `ranges`, flat [lo, hi) pairs of offsets within the unit, sorted and disjoint. The unit's
 * other bytes keep what the chunk has there (zeros past its end).
 */
export interface UnitPatch {
  readonly index: number;
  readonly data: Buffer;
  readonly ranges: readonly number[];
}

/** Whether `ranges` (as in UnitPatch) cover [0, n). */
function coversFromZero(ranges: readonly number[], n: number): boolean {
  return n <= 0 || (ranges.length >= 2 && ranges[0] === 0 && ranges[1]! >= n);
}

export class DirtyStore {
  private readonly chunks = new Map<string, ChunkRecord>();
  /** The per-chunk lock (see the header). */
  private readonly locks = new KeyedMutex<string>();
  private readonly durability = new Map<string, Durability>();
  private readonly byIno = new Map<number, Set<number>>();
  private bytes = 0;
  /** Dirty chunks found at start whose file is unknown (see the header). */
  orphans: OrphanChunk[] = [];
  /** Pre-image files of released chunks being removed, by chunk key (still counted meanwhile). */
  private readonly preRemovals = new Map<string, Promise<void>>();
  /**
   * Chunk keys whose pre-image file may outlive its chunk (its removal failed). After `init`
   * no other pre-image file exists without its chunk, so a new chunk removes one only then.
   */
  private readonly stalePre = new Set<string>();

  /** Empty files made ahead, renamed into place for new chunks (spareFiles.ts); none unless asked for. */
  private readonly spares: SpareFiles;
  /** Chunk files being created or created ahead of their first write (`openAhead`), by path. */
  private readonly openedAhead = new Map<string, Promise<FileHandle | undefined>>();
  private readonly droppingAhead = new Set<Promise<void>>();
  private closing = false;

  constructor(
    private readonly dir: string,
    private readonly handles: HandlePool,
    private readonly io: SealedIO,
    private readonly log: (msg: string) => void = () => undefined,
    opts: { spareFiles?: number } = {},
  ) {
    this.spares = new SpareFiles(path.join(dir, 'spare'), opts.spareFiles ?? 0);
  }

  private static key(ino: number, idx: number): string {
    return `${ino}.${idx}`;
  }

  /** Runs `fn` under the chunk lock of (ino, idx); see the header for what it orders. */
  withChunk<T>(ino: number, idx: number, fn: () => Promise<T>): Promise<T> {
    return this.locks.run(DirtyStore.key(ino, idx), fn);
  }

  pathOf(ino: number, idx: number): string {
    return path.join(this.dir, 'dirty', DirtyStore.key(ino, idx));
  }

  private durabilityOf(d: DirtyChunk): Durability {
    const k = DirtyStore.key(d.ino, d.idx);
    let st = this.durability.get(k);
    if (!st) this.durability.set(k, (st = { allUnsynced: false, unsynced: undefined, pre: false, preBytes: 0 }));
    return st;
  }

  /**
   * Saves the pre-images of the durable units among [first, last] that exist on disk, before
   * they are rewritten. Resolves once they are durable.
   */
  private protect(d: DirtyChunk, first: number, last: number): Promise<void> {
    const all: number[] = [];
    for (let u = first; u <= last; u++) all.push(u);
    return this.protectUnits(d, all);
  }

  /** `protect` for a list of units (ascending). */
  private async protectUnits(d: DirtyChunk, touched: readonly number[]): Promise<void> {
    const st = this.durabilityOf(d);
    if (st.allUnsynced) return;
    const oldLen = d.len;
    const units = touched.filter((u) => u <= lastUnitOf(oldLen) && !st.unsynced?.has(u));
    if (units.length === 0) return;
    const file = this.pathOf(d.ino, d.idx);
    const records: Buffer[] = [];
    await this.handles.use(file, async (fh) => {
      for (const u of units) {
        const raw = await this.io.readRawUnit(fh, u, oldLen);
        const head = Buffer.alloc(PRE_RECORD);
        head.writeUInt32BE(u, 0);
        head.writeUInt32BE(oldLen, 4);
        head.writeUInt32BE(raw.length, 8);
        records.push(head, raw);
      }
    });
    const created = !st.pre;
    const body = Buffer.concat(records);
    // Counted before the bytes reach the disk, like the chunk's own bytes.
    st.preBytes += body.length;
    this.bytes += body.length;
    const fh = await fsp.open(`${file}.pre`, 'a', 0o600);
    try {
      await fh.write(body);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    st.pre = true;
    if (created) await this.syncDir();
    for (const u of units) unsyncedUnit(st, u);
  }

  private syncDir(): Promise<void> {
    return fsyncDir(path.join(this.dir, 'dirty'));
  }

  /** Puts back units torn by a power loss (see the header); returns the length to keep. */
  private async repair(fh: FileHandle, name: string, fileId: Buffer, len: number, checkAll: boolean): Promise<number> {
    const preFile = path.join(this.dir, 'dirty', `${name}.pre`);
    const pre = new Map<number, { oldLen: number; raw: Buffer }>();
    const buf = await fsp.readFile(preFile).catch(() => undefined);
    for (let off = 0; buf && off + PRE_RECORD <= buf.length;) {
      const u = buf.readUInt32BE(off);
      const oldLen = buf.readUInt32BE(off + 4);
      const n = buf.readUInt32BE(off + 8);
      const raw = buf.subarray(off + PRE_RECORD, off + PRE_RECORD + n);
      off += PRE_RECORD + n;
      // Only a complete record sealed for this very file counts; the first one per unit is
      // the content of the last sync.
      if (raw.length === n && !pre.has(u) && this.io.unitValid(fileId, u, raw)) pre.set(u, { oldLen, raw });
    }
    if (!checkAll && pre.size === 0) {
      if (buf) await fsp.rm(preFile, { force: true });
      return len;
    }
    let keep = len;
    let changed = false;
    const units = checkAll
      ? [...Array(lastUnitOf(len) + 1).keys()]
      : [...pre.keys()].filter((u) => u <= lastUnitOf(len)).sort((a, b) => a - b);
    for (const u of units) {
      if (u > lastUnitOf(keep)) break;
      const raw = await this.io.readRawUnit(fh, u, keep);
      if (this.io.unitValid(fileId, u, raw)) continue;
      const p = pre.get(u);
      if (p) {
        await this.io.writeRawUnit(fh, u, p.raw);
        if (lastUnitOf(p.oldLen) === u) {
          // It was the last unit at the last sync: what came after was never synced.
          keep = p.oldLen;
          await fh.truncate(physicalSize(keep));
        }
        this.log(`dirty chunk ${name}: unit ${u} was torn (power loss?); restored as of the last fsync`);
      } else {
        const n = Math.min(UNIT, keep - u * UNIT);
        await this.io.writeRawUnit(fh, u, this.io.zeroUnit(fileId, u, n));
        this.log(`dirty chunk ${name}: unit ${u} was torn and held only unsynced data; it reads as zeros`);
      }
      changed = true;
    }
    if (changed) await fh.datasync();
    if (buf) {
      await fsp.rm(preFile, { force: true });
      await this.syncDir();
    }
    return keep;
  }

  /**
   * Loads the dirty chunks left by a previous run. `ownerOf(ino, idx)` says what became of each
   * one's file (see ChunkOwner): leftovers past a file's size are trimmed, chunks of deleted
   * files removed, and chunks of unknown files kept on disk as `orphans`.
   */
  async init(
    ownerOf: (ino: number, idx: number) => ChunkOwner,
    nowMs: number,
    opts: { uncleanStop?: boolean } = {},
  ): Promise<void> {
    const root = path.join(this.dir, 'dirty');
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    await this.spares.init();
    const names = await fsp.readdir(root);
    for (const name of names) {
      // A pre-image whose chunk is gone is stale.
      if (name.endsWith('.pre') && !names.includes(name.slice(0, -4))) await fsp.rm(path.join(root, name), { force: true });
    }
    let deleted = 0;
    for (const name of names) {
      if (name.endsWith('.pre')) continue;
      const m = /^(\d+)\.(\d+)$/.exec(name);
      const file = path.join(root, name);
      const owner = m ? ownerOf(Number(m[1]), Number(m[2])) : 'deleted'; // not a name this store writes
      if (!m || owner === 'deleted' || (typeof owner === 'number' && owner <= 0)) {
        await fsp.rm(file, { force: true });
        await fsp.rm(`${file}.pre`, { force: true });
        if (m) deleted++;
        continue;
      }
      const limit = owner === 'unknown' ? Infinity : owner;
      const ino = Number(m[1]);
      const idx = Number(m[2]);
      const fh = await fsp.open(file, 'r+');
      try {
        if ((await fh.stat()).size === 0) {
          // Named and never written (a crash between a chunk file's creation, ahead or from a
          // spare, and its first write): it holds nothing.
          await fh.close();
          await fsp.rm(file, { force: true });
          await fsp.rm(`${file}.pre`, { force: true });
          continue;
        }
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
        len = await this.repair(fh, name, fileId, len, opts.uncleanStop ?? false);
        if (owner === 'unknown') {
          this.orphans.push({ ino, idx, fileId, len });
          continue;
        }
        if (len > limit) {
          await this.io.truncate(fh, fileId, len, limit, `dirty chunk ${name}`);
          len = limit;
        }
        this.track({ ino, idx, fileId, len, gen: 1, firstDirtyMs: nowMs, lastWriteMs: 0 });
      } finally {
        await fh.close().catch(() => undefined);
      }
    }
    if (deleted > 0) this.log(`removed ${deleted} dirty chunk(s) of files whose deletion or truncation is recorded`);
  }

  /** The data of an orphan chunk (see the header). */
  async readOrphan(o: OrphanChunk): Promise<Buffer> {
    const fh = await fsp.open(this.pathOf(o.ino, o.idx), 'r');
    try {
      return await this.io.readAll(fh, o.fileId, o.len, `dirty chunk ${o.ino}.${o.idx}`);
    } finally {
      await fh.close();
    }
  }

  /** Deletes the files of the orphan chunks, once they are kept elsewhere. */
  async removeOrphans(): Promise<void> {
    for (const o of this.orphans) {
      const file = this.pathOf(o.ino, o.idx);
      await fsp.rm(file, { force: true });
      await fsp.rm(`${file}.pre`, { force: true });
    }
    this.orphans = [];
    await this.syncDir();
  }

  private track(d: ChunkRecord): void {
    this.chunks.set(DirtyStore.key(d.ino, d.idx), d);
    let set = this.byIno.get(d.ino);
    if (!set) this.byIno.set(d.ino, (set = new Set()));
    set.add(d.idx);
    this.bytes += physicalSize(d.len);
  }

  private untrack(d: DirtyChunk): void {
    this.chunks.delete(DirtyStore.key(d.ino, d.idx));
    this.durability.delete(DirtyStore.key(d.ino, d.idx));
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

  /** Whether inode `ino` has a dirty chunk. */
  hasFile(ino: number): boolean {
    return this.byIno.has(ino);
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
    await this.beforeNewFile(ino, idx);
    const file = this.pathOf(ino, idx);
    this.handles.forget(file);
    const { header, fileId } = this.io.newHeader();
    const fh = await this.newFile(file);
    let len = 0;
    try {
      await fh.write(header, 0, header.length, 0);
      if (base && base.length > 0) len = await this.io.write(fh, fileId, 0, base, 0, `dirty chunk ${ino}.${idx}`);
    } finally {
      await fh.close();
    }
    const d: ChunkRecord = { ino, idx, fileId, len, gen: 1, firstDirtyMs: nowMs, lastWriteMs: nowMs };
    this.track(d);
    this.durability.set(DirtyStore.key(ino, idx), { allUnsynced: true, unsynced: undefined, pre: false, preBytes: 0 });
    return d;
  }

  /**
   * Starts a dirty chunk holding just `patches` up to `end` (zeros elsewhere; nothing to seed it
   * from): one open (the rename of a spare, when one is ready) and one writev of the header and
   * every unit, and the file stays open in the handle pool for what comes next (more writes,
   * the upload's read). This is what a small file costs at close. The caller counts the new
   * file's bytes while it is written (as for `create`).
   */
  async createWithUnits(
    ino: number,
    idx: number,
    patches: readonly UnitPatch[],
    end: number,
    nowMs: number,
    dirtySinceMs = nowMs,
  ): Promise<DirtyChunk> {
    await this.beforeNewFile(ino, idx);
    const file = this.pathOf(ino, idx);
    this.handles.forget(file);
    const { header, fileId } = this.io.newHeader();
    try {
      const units: number[] = [];
      for (let u = 0; u <= lastUnitOf(end); u++) units.push(u);
      const plains = await this.unitPlaintexts(undefined, fileId, units, patches, 0, end, `dirty chunk ${ino}.${idx}`);
      const sealed = await this.sealForWrite(fileId, units, plains);
      const out = [header, ...sealed];
      const fh = await this.newFile(file).catch((err: unknown) => {
        this.io.releaseSealed(sealed);
        throw err;
      });
      try {
        await writeAllAt(fh, out, 0);
      } catch (err) {
        await fh.close().catch(() => undefined);
        throw err;
      } finally {
        this.io.releaseSealed(sealed); // written (or failed): nothing reads them any more
      }
      this.handles.adopt(file, fh);
    } catch (err) {
      await fsp.rm(file, { force: true }).catch(() => undefined);
      throw err;
    }
    const d: ChunkRecord = {
      ino,
      idx,
      fileId,
      len: end,
      gen: 1,
      firstDirtyMs: Math.min(nowMs, dirtySinceMs),
      lastWriteMs: nowMs,
    };
    this.track(d);
    this.durability.set(DirtyStore.key(ino, idx), { allUnsynced: true, unsynced: undefined, pre: false, preBytes: 0 });
    return d;
  }

  /**
   * An empty file at `file`, open for reading and writing, replacing any file of that name: a
   * spare renamed into place when one is ready (spareFiles.ts), else a file created there. The
   * caller writes into it only after this resolves, so a spare never holds data under its own
   * name, and the blocks an fdatasync commits come after the rename that named them.
   */
  private async newFile(file: string): Promise<FileHandle> {
    const ahead = this.openedAhead.get(file);
    if (ahead) {
      this.openedAhead.delete(file);
      const fh = await ahead;
      if (fh) return fh;
    }
    const spare = this.spares.take();
    if (!spare) return fsp.open(file, 'w+', 0o600);
    try {
      await fsp.rename(spare.path, file);
    } catch (err) {
      await spare.fh.close().catch(() => undefined);
      await fsp.rm(spare.path, { force: true }).catch(() => undefined);
      throw err;
    }
    return spare.fh;
  }

  /**
   * Creates the file of chunk (ino, idx) ahead of its first write: a file was just created, and
   * its data will come to this store at its close. Creating a file is the costly metadata
   * operation on the cache disk (see spareFiles.ts); started here, it runs while the kernel
   * sends the file's writes, and the close finds it made (`newFile`), with no rename. Like a
   * spare, the file stays empty until `newFile` hands it to the chunk's first write, so a crash
   * leaves at most an empty file under a chunk's name, which `init` removes. Created exclusively
   * (never over an existing file), not waited for, and a failure only means the chunk's file is
   * made when it is written. At most OPENED_AHEAD_MAX at a time; one that no chunk took goes at
   * `notNeededAhead` (the file's last close) or when the store closes.
   */
  openAhead(ino: number, idx: number): void {
    const file = this.pathOf(ino, idx);
    if (this.closing || this.openedAhead.size >= OPENED_AHEAD_MAX || this.openedAhead.has(file) || this.get(ino, idx)) return;
    this.openedAhead.set(
      file,
      fsp.open(file, 'wx+', 0o600).catch(() => undefined),
    );
  }

  /**
   * The file's last handle closed: a file `openAhead` made for chunk (ino, idx) that no chunk
   * took (nothing was written there) is closed and removed. Under the chunk lock, so it cannot
   * cross the chunk's start; not waited for by the caller (`closeSpares` waits for it).
   */
  notNeededAhead(ino: number, idx: number): void {
    const file = this.pathOf(ino, idx);
    if (!this.openedAhead.has(file)) return;
    const done = this.withChunk(ino, idx, () => this.dropAhead(file, ino, idx)).catch(() => undefined);
    this.droppingAhead.add(done);
    void done.finally(() => this.droppingAhead.delete(done));
  }

  private async dropAhead(file: string, ino: number, idx: number): Promise<void> {
    const ahead = this.openedAhead.get(file);
    if (!ahead) return;
    this.openedAhead.delete(file);
    const fh = await ahead;
    if (!fh) return;
    await fh.close().catch(() => undefined);
    // Still in the map, so no chunk took it: nothing but this store writes under the name.
    if (!this.get(ino, idx)) await fsp.rm(file, { force: true }).catch(() => undefined);
  }

  /** Files created ahead that no chunk took yet (tests). */
  get openedAheadCount(): number {
    return this.openedAhead.size;
  }

  /** Resolves once the spare files being made now are made (tests). */
  sparesFilled(): Promise<void> {
    return this.spares.filled();
  }

  /**
   * Closes and removes the spare files not used, and the files created ahead that no chunk
   * took (the engine is closing). Never fails.
   */
  async closeSpares(): Promise<void> {
    this.closing = true;
    await Promise.all([...this.droppingAhead]);
    for (const file of [...this.openedAhead.keys()]) {
      const m = /(\d+)\.(\d+)$/.exec(file)!;
      await this.withChunk(Number(m[1]), Number(m[2]), () => this.dropAhead(file, Number(m[1]), Number(m[2]))).catch(
        () => undefined,
      );
    }
    await this.spares.close();
  }

  /** Before a new file of chunk (ino, idx): its old pre-image file must be gone. */
  private async beforeNewFile(ino: number, idx: number): Promise<void> {
    const key = DirtyStore.key(ino, idx);
    await this.preRemovals.get(key);
    if (this.stalePre.has(key)) {
      await fsp.rm(`${this.pathOf(ino, idx)}.pre`, { force: true });
      this.stalePre.delete(key);
    }
  }

  /**
   * The plaintext of each of `units` (ascending) once `patches` are applied to a file holding
   * `oldLen` bytes that will hold `newLen`: a unit a patch covers whole is the patch's own
   * buffer (no copy); others are staged, with the old bytes they keep read from `fh`.
   */
  /**
   * Units sealed for a write: a batch of ASYNC_SEAL_BYTES or more on the thread pool (the JS
   * thread answers FUSE meanwhile), a smaller one at once (a small file's unit costs less to seal
   * than a trip through the pool's queue). The patches' buffers are the write buffer's units,
   * which it reuses only after the flush that seals them is over (vfs/writeBuffer.ts).
   */
  private sealForWrite(fileId: Buffer, units: readonly number[], plains: readonly Buffer[]): Promise<Buffer[]> | Buffer[] {
    let bytes = 0;
    for (const p of plains) bytes += p.length;
    return bytes >= ASYNC_SEAL_BYTES
      ? this.io.sealUnitsForWriteAsync(fileId, units, plains)
      : this.io.sealUnitsForWrite(fileId, units, plains);
  }

  private async unitPlaintexts(
    fh: FileHandle | undefined,
    fileId: Buffer,
    units: readonly number[],
    patches: readonly UnitPatch[],
    oldLen: number,
    newLen: number,
    what: string,
  ): Promise<Buffer[]> {
    const byIndex = new Map<number, UnitPatch>();
    for (const p of patches) byIndex.set(p.index, p);
    const plains: Buffer[] = [];
    for (const u of units) {
      const unitLen = Math.min(UNIT, newLen - u * UNIT);
      const p = byIndex.get(u);
      if (p && coversFromZero(p.ranges, unitLen)) {
        plains.push(p.data.subarray(0, unitLen)); // the usual sequential case: no staging copy
        continue;
      }
      const plain = Buffer.alloc(unitLen);
      const oldPart = Math.min(unitLen, oldLen - u * UNIT);
      if (oldPart > 0 && !(p && coversFromZero(p.ranges, oldPart))) {
        const old = await this.io.readUnit(fh!, fileId, u, oldLen, what);
        old.copy(plain, 0, 0, oldPart);
      }
      if (p) {
        for (let r = 0; r < p.ranges.length; r += 2) {
          const lo = p.ranges[r]!;
          const hi = Math.min(p.ranges[r + 1]!, unitLen);
          if (hi > lo) p.data.copy(plain, lo, lo, hi);
        }
      }
      plains.push(plain);
    }
    return plains;
  }

  async write(chunk: DirtyChunk, data: Buffer, pos: number, nowMs: number): Promise<void> {
    const d = rec(chunk);
    const from = Math.min(pos, d.len);
    const lastTouched = Math.floor((Math.max(pos + data.length, from + 1) - 1) / UNIT);
    await this.protect(d, Math.floor(from / UNIT), lastTouched);
    // Counted before the bytes reach the disk, so the cache total never trails the disk.
    const oldLen = d.len;
    const newLen = Math.max(oldLen, pos + data.length);
    const growth = physicalSize(newLen) - physicalSize(oldLen);
    this.bytes += growth;
    d.len = newLen;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), (fh) =>
        this.io.write(fh, d.fileId, oldLen, data, pos, `dirty chunk ${d.ino}.${d.idx}`),
      );
    } catch (err) {
      if (this.get(d.ino, d.idx) === d) {
        this.bytes -= growth;
        d.len = oldLen;
      }
      throw err;
    }
    d.gen++;
    d.lastWriteMs = nowMs;
    const st = this.durabilityOf(d);
    for (let u = Math.floor(from / UNIT); u <= lastTouched; u++) unsyncedUnit(st, u);
  }

  /**
   * Writes a batch of unit patches (the VFS's write buffer, see vfs/writeBuffer.ts) that reach
   * `end` at most: every unit they touch, and every unit between the old end and `end` (zeros
   * where nothing was written), is sealed once and written with one writev per run of
   * consecutive units. A unit only partly patched keeps its other bytes (read first). The
   * chunk's dirty age becomes `dirtySinceMs` if that is earlier (when the data was first
   * buffered). Call it under the chunk lock.
   */
  async writeUnits(
    chunk: DirtyChunk,
    patches: readonly UnitPatch[],
    end: number,
    nowMs: number,
    dirtySinceMs = nowMs,
  ): Promise<void> {
    const d = rec(chunk);
    const oldLen = d.len;
    const newLen = Math.max(oldLen, end);
    const touched = new Set<number>(patches.map((p) => p.index));
    if (newLen > oldLen) {
      // The old last unit grows and the units up to the new end must exist (zeros in a gap).
      for (let u = oldLen % UNIT === 0 ? oldLen / UNIT : lastUnitOf(oldLen); u <= lastUnitOf(newLen); u++) touched.add(u);
    }
    const units = [...touched].filter((u) => u <= lastUnitOf(newLen)).sort((a, b) => a - b);
    if (units.length === 0) return;
    await this.protectUnits(d, units);
    // Counted before the bytes reach the disk, so the cache total never trails the disk.
    const growth = physicalSize(newLen) - physicalSize(oldLen);
    this.bytes += growth;
    d.len = newLen;
    const what = `dirty chunk ${d.ino}.${d.idx}`;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), async (fh) => {
        const plains = await this.unitPlaintexts(fh, d.fileId, units, patches, oldLen, newLen, what);
        // Sealed (a large batch on the thread pool), then one writev per run of consecutive units.
        const sealed = await this.sealForWrite(d.fileId, units, plains);
        try {
          for (let k = 0; k < units.length;) {
            let j = k;
            while (j + 1 < units.length && units[j + 1] === units[j]! + 1) j++;
            await this.io.writeSealedRun(fh, units[k]!, sealed.slice(k, j + 1));
            k = j + 1;
          }
        } finally {
          this.io.releaseSealed(sealed); // written (or failed): nothing reads them any more
        }
      });
    } catch (err) {
      if (this.get(d.ino, d.idx) === d) {
        this.bytes -= growth;
        d.len = oldLen;
      }
      throw err;
    }
    d.gen++;
    d.lastWriteMs = nowMs;
    d.firstDirtyMs = Math.min(d.firstDirtyMs, dirtySinceMs);
    const st = this.durabilityOf(d);
    for (const u of units) unsyncedUnit(st, u);
  }

  async read(d: DirtyChunk, buf: Buffer, bufOff: number, len: number, pos: number): Promise<number> {
    const want = Math.max(0, Math.min(len, d.len - pos));
    if (want === 0) return 0;
    const dataLen = d.len;
    await this.handles.use(this.pathOf(d.ino, d.idx), (fh) =>
      this.io.read(fh, d.fileId, dataLen, buf, bufOff, want, pos, `dirty chunk ${d.ino}.${d.idx}`),
    );
    return want;
  }

  async readAll(d: DirtyChunk): Promise<Buffer> {
    const dataLen = d.len;
    return this.handles.use(this.pathOf(d.ino, d.idx), (fh) =>
      this.io.readAll(fh, d.fileId, dataLen, `dirty chunk ${d.ino}.${d.idx}`),
    );
  }

  /**
   * The chunk's sealed units as they are on disk, into `buf` (at least `sealedBodySize(d.len)`
   * bytes, see sealed.ts), for the uploader to open where its work runs (`openSealedUnits` with
   * the cache key and `d.fileId`); resolves to the data's length.
   */
  async readSealedInto(d: DirtyChunk, buf: Buffer): Promise<number> {
    const dataLen = d.len;
    await this.handles.use(this.pathOf(d.ino, d.idx), (fh) =>
      this.io.readSealedInto(fh, dataLen, buf, `dirty chunk ${d.ino}.${d.idx}`),
    );
    return dataLen;
  }

  /**
   * Seals chunk name `name` and the data length `len` into the file's header (sealed.ts
   * `writeNameTag`) ahead of its adoption by the clean cache, through the handle the upload's
   * read left in the pool: a small file waits in a pack long enough for its handle to leave the
   * pool, and the adoption would open the file again only for this. A dirty file's tag is never
   * read (only a clean file's is checked), so one written for data that changes before the
   * adoption is harmless: that adoption does not happen. False when it could not be written.
   */
  async tagAsClean(d: DirtyChunk, name: string, len: number): Promise<boolean> {
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), (fh) => this.io.writeNameTag(fh, d.fileId, name, len));
      return true;
    } catch {
      return false; // deleted meanwhile, or the disk refused: the adoption, if any, writes it
    }
  }

  async truncate(chunk: DirtyChunk, len: number, nowMs: number): Promise<void> {
    const d = rec(chunk);
    const oldLen = d.len;
    // The unit resealed is the new last one (cutting) or the old last one (extending).
    const touched = len < oldLen ? (len % UNIT !== 0 ? lastUnitOf(len) : -1) : oldLen % UNIT !== 0 ? lastUnitOf(oldLen) : -1;
    if (touched >= 0) await this.protect(d, touched, touched);
    // Growth is counted before it reaches the disk; a cut is counted once it is done.
    const growth = Math.max(0, physicalSize(len) - physicalSize(oldLen));
    this.bytes += growth;
    try {
      await this.handles.use(this.pathOf(d.ino, d.idx), (fh) =>
        this.io.truncate(fh, d.fileId, oldLen, len, `dirty chunk ${d.ino}.${d.idx}`),
      );
    } catch (err) {
      this.bytes -= growth;
      throw err;
    }
    this.bytes += physicalSize(len) - physicalSize(oldLen) - growth;
    d.len = len;
    d.gen++;
    d.lastWriteMs = nowMs;
    const st = this.durabilityOf(d);
    for (
      let u = Math.max(0, Math.min(lastUnitOf(oldLen), lastUnitOf(len)));
      u <= Math.max(lastUnitOf(oldLen), lastUnitOf(len));
      u++
    )
      unsyncedUnit(st, u);
  }

  /**
   * Makes one dirty chunk durable. Call it under the chunk lock: that orders it with writes
   * (whose pre-images a sync empties, so a write half done must not be declared synced) and
   * with the hand-over to the clean cache or a drop, either of which takes the chunk's file
   * away. A record that has left the store has nothing left to sync here: an uploaded chunk is
   * in the bucket with its reference durably committed before it is handed over, and a dropped
   * one is no longer part of any file.
   */
  async syncChunk(d: DirtyChunk): Promise<void> {
    if (this.get(d.ino, d.idx) !== d) return;
    const gen = d.gen;
    const file = this.pathOf(d.ino, d.idx);
    // Without the chunk lock (shutdown, tests) the record may still leave while its file is
    // being opened; only then is a missing file expected. A chunk still here is never skipped.
    const left = (err: unknown) => (err as NodeJS.ErrnoException).code === 'ENOENT' && this.get(d.ino, d.idx) !== d;
    try {
      await this.handles.use(file, (fh) => fh.datasync());
    } catch (err) {
      if (left(err)) return;
      throw err;
    }
    // Everything is durable now, unless it changed while syncing (then keep the state).
    if (this.get(d.ino, d.idx) !== d || d.gen !== gen) return;
    const st = this.durabilityOf(d);
    st.allUnsynced = false;
    st.unsynced = undefined;
    // Nothing left to know about it: the record goes (made again, the same, at the next write).
    if (!st.pre && st.preBytes === 0) this.durability.delete(DirtyStore.key(d.ino, d.idx));
    if (st.preBytes > 0) {
      // Emptied durably: a stale pre-image must never apply to a unit rewritten later
      // without one (a unit that only held unsynced data). The file itself stays.
      const pre = st.preBytes;
      let fh: FileHandle;
      try {
        fh = await fsp.open(`${file}.pre`, 'r+');
      } catch (err) {
        if (left(err)) return;
        throw err;
      }
      try {
        await fh.truncate(0);
        await fh.datasync();
      } finally {
        await fh.close();
      }
      // Counted until emptied: the cap covers pre-images on disk. (A chunk that left the store
      // meanwhile had them uncounted by its drop or release.)
      if (this.get(d.ino, d.idx) === d) {
        st.preBytes -= pre;
        this.bytes -= pre;
      }
    }
  }

  /**
   * Makes the dirty data of one file durable, for callers that hold no chunk lock while
   * nothing else changes the store (shutdown, tests); the VFS syncs chunk by chunk under each
   * chunk's lock instead.
   */
  async syncInode(ino: number): Promise<void> {
    for (const idx of this.indexesOf(ino)) {
      const d = this.get(ino, idx);
      if (d) await this.syncChunk(d);
    }
  }

  async syncAll(): Promise<void> {
    for (const ino of this.inodes()) await this.syncInode(ino);
  }

  /** Forgets a dirty chunk and deletes its file (the file was deleted or truncated away). */
  async drop(d: DirtyChunk): Promise<void> {
    if (this.get(d.ino, d.idx) !== d) return;
    const pre = this.durability.get(DirtyStore.key(d.ino, d.idx))?.preBytes ?? 0;
    this.untrack(d);
    const file = this.pathOf(d.ino, d.idx);
    this.handles.forget(file);
    await fsp.rm(file, { force: true });
    await fsp.rm(`${file}.pre`, { force: true }).catch((err: unknown) => {
      this.stalePre.add(DirtyStore.key(d.ino, d.idx));
      throw err;
    });
    this.bytes -= pre;
  }

  /**
   * An upload of the chunk's content as read at `readAtMs` was committed, but the chunk changed
   * after that read: it stays dirty, and only what came after the read is still to upload, so
   * its dirty age counts from then. Call it under the chunk lock.
   */
  uploadedAsOf(d: DirtyChunk, readAtMs: number): void {
    if (this.get(d.ino, d.idx) !== d) return;
    rec(d).firstDirtyMs = Math.max(d.firstDirtyMs, readAtMs);
  }

  /**
   * Forgets a dirty chunk whose file is handed to the clean cache; returns the file's path,
   * its sealing id and its size on disk.
   */
  release(d: DirtyChunk): { file: string; fileId: Buffer; size: number } {
    const key = DirtyStore.key(d.ino, d.idx);
    const st = this.durability.get(key);
    this.untrack(d);
    const file = this.pathOf(d.ino, d.idx);
    // Its handle stays in the pool under `file`: the caller moves the file into the clean cache
    // at once (ChunkCache.adopt), which takes the handle along, so the file is not opened again.
    // The chunk is in the bucket now: its pre-images are of no more use. They stay counted
    // until removed; a new chunk of the same name waits for that (see create).
    if (st?.pre) {
      const pre = st.preBytes;
      const removed: Promise<void> = fsp
        .rm(`${file}.pre`, { force: true })
        .catch(() => void this.stalePre.add(key))
        .then(() => {
          this.bytes -= pre;
          if (this.preRemovals.get(key) === removed) this.preRemovals.delete(key);
        });
      this.preRemovals.set(key, removed);
    }
    return { file, fileId: d.fileId, size: physicalSize(d.len) };
  }
}
