/**
 * Crash-safe local persistence of the metadata: a snapshot file plus an append-only journal.
 *
 * Files in the metadata directory:
 *   state.json     the last snapshot, replaced atomically (write temp, fsync, rename, fsync dir)
 *   journal.<gen>  records appended since snapshot generation <gen>
 * Each journal record is `u32 length | u32 crc32 | JSON`. Loading replays records until the
 * first incomplete or corrupt one (a torn tail after a crash), so a record is either applied
 * whole or not at all.
 *
 * Appends are buffered and written by a single writer loop (one write in flight, in order);
 * `sync()` is a group commit: it resolves once everything appended before the call is on disk
 * (fdatasync). Nothing here blocks the event loop.
 *
 * A full disk: a write (or snapshot) that fails for lack of space asks `onDiskFull` to free
 * some (the engine evicts clean chunks, then gives up its reserve) and is tried once more;
 * if it still fails, its records stay queued, in order, for the next write.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';

export interface JournalFiles<TSnapshot> {
  readonly snapshot: TSnapshot | undefined;
  readonly records: unknown[];
}

const HEADER = 8;

function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export async function writeFileAtomic(file: string, data: Buffer | string, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    const fh = await fsp.open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    // A full disk must not keep a half-written copy taking up what room is left.
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(file));
}

function encodeRecord(rec: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(rec), 'utf8');
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out.writeUInt32LE(body.length, 0);
  out.writeUInt32LE(crc32(body), 4);
  body.copy(out, HEADER);
  return out;
}

function decodeRecords(buf: Buffer): { records: unknown[]; validBytes: number } {
  const records: unknown[] = [];
  let pos = 0;
  while (pos + HEADER <= buf.length) {
    const len = buf.readUInt32LE(pos);
    const crc = buf.readUInt32LE(pos + 4);
    if (pos + HEADER + len > buf.length) break;
    const body = buf.subarray(pos + HEADER, pos + HEADER + len);
    if (crc32(body) !== crc) break;
    try {
      records.push(JSON.parse(body.toString('utf8')));
    } catch {
      break;
    }
    pos += HEADER + len;
  }
  return { records, validBytes: pos };
}

export class Journal<TSnapshot extends { gen: number }> {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private chain: Promise<void> = Promise.resolve();
  private retry: Buffer[] = [];
  private retryBytes = 0;
  private fh: fsp.FileHandle | undefined;
  private size = 0;
  private closed = false;
  /** Opened only to read (the checker): nothing is written, truncated or removed. */
  readOnly = false;
  /** Called when a write found the disk full; resolves true if it freed space (the write is tried again). */
  onDiskFull: ((err: Error) => Promise<boolean>) | undefined;

  private constructor(private readonly dir: string, private gen: number) {}

  /** Opens (creating if needed) and returns the last snapshot with the records after it. */
  static async open<T extends { gen: number }>(dir: string, readOnly = false): Promise<{ journal: Journal<T>; loaded: JournalFiles<T> }> {
    if (!readOnly) await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    let snapshot: T | undefined;
    try {
      snapshot = JSON.parse(await fsp.readFile(path.join(dir, 'state.json'), 'utf8')) as T;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`metadata snapshot in ${dir} is unreadable: ${(err as Error).message}`);
    }
    const gen = snapshot?.gen ?? 0;
    const journal = new Journal<T>(dir, gen);
    const file = journal.file();
    let records: unknown[] = [];
    try {
      const buf = await fsp.readFile(file);
      const decoded = decodeRecords(buf);
      records = decoded.records;
      if (decoded.validBytes < buf.length && !readOnly) await fsp.truncate(file, decoded.validBytes);
      journal.size = decoded.validBytes;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    journal.readOnly = readOnly;
    if (readOnly) return { journal, loaded: { snapshot, records } };
    journal.fh = await fsp.open(file, 'a', 0o600);
    // Journals of older generations are superseded by the snapshot.
    for (const name of await fsp.readdir(dir)) {
      const m = /^journal\.(\d+)$/.exec(name);
      if (m && Number(m[1]) !== gen) await fsp.rm(path.join(dir, name), { force: true });
    }
    return { journal, loaded: { snapshot, records } };
  }

  get bytes(): number {
    return this.size + this.pendingBytes + this.retryBytes;
  }

  private file(gen = this.gen): string {
    return path.join(this.dir, `journal.${gen}`);
  }

  append(rec: unknown): void {
    if (this.closed || this.readOnly) throw new Error(this.readOnly ? 'journal is open read-only' : 'journal is closed');
    const b = encodeRecord(rec);
    this.pending.push(b);
    this.pendingBytes += b.length;
  }

  /** Runs tasks strictly one after another, in the order they were queued. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    const p = this.chain.then(task);
    this.chain = p.catch(() => undefined);
    return p;
  }

  private takePending(): { bufs: Buffer[]; bytes: number } {
    const taken = { bufs: this.pending, bytes: this.pendingBytes };
    this.pending = [];
    this.pendingBytes = 0;
    return taken;
  }

  /**
   * Writes everything appended before this call (page cache; survives a process crash).
   * What is pending is taken synchronously, so a record always lands in the journal file that
   * was current when it was appended.
   */
  flush(): Promise<void> {
    const { bufs, bytes } = this.takePending();
    return this.enqueue(() => this.writeRecords(bufs, bytes));
  }

  /** Makes everything appended before this call durable (survives power loss). */
  sync(): Promise<void> {
    const { bufs, bytes } = this.takePending();
    return this.enqueue(async () => {
      await this.writeRecords(bufs, bytes);
      await this.fh!.datasync();
    });
  }

  /**
   * Appends records after any that an earlier write could not store. A failed write (a full
   * disk) is cut back to the last whole record and its records are kept, in order, for the
   * next attempt, so the file never holds a torn record followed by good ones.
   */
  private async writeRecords(bufs: Buffer[], bytes: number): Promise<void> {
    const all = this.retry.length > 0 ? [...this.retry, ...bufs] : bufs;
    const total = this.retryBytes + bytes;
    if (all.length === 0) return;
    for (let attempt = 0; ; attempt++) {
      try {
        const { bytesWritten } = await this.fh!.writev(all, this.size);
        if (bytesWritten !== total) throw Object.assign(new Error('the disk is full: the metadata journal was written short'), { code: 'ENOSPC' });
        this.size += total;
        this.retry = [];
        this.retryBytes = 0;
        return;
      } catch (err) {
        await this.fh!.truncate(this.size).catch(() => undefined);
        if (attempt === 0 && (await this.freedSpace(err))) continue;
        this.retry = all;
        this.retryBytes = total;
        throw err;
      }
    }
  }

  /** On a full disk, asks `onDiskFull` for room; true if the failed write should be tried again. */
  private async freedSpace(err: unknown): Promise<boolean> {
    if (!isDiskFull(err) || !this.onDiskFull) return false;
    return this.onDiskFull(err as Error).catch(() => false);
  }

  /**
   * Replaces the snapshot with `snapshot` (taken synchronously just before this call, with
   * gen = current generation + 1) and starts a new journal. Records appended before the call
   * are covered by the snapshot; records appended after it go to the new journal.
   */
  checkpoint(snapshot: TSnapshot): Promise<void> {
    const { bufs, bytes } = this.takePending();
    return this.enqueue(async () => {
      const oldFh = this.fh!;
      const oldGen = this.gen;
      if (snapshot.gen !== oldGen + 1) throw new Error('snapshot generation out of order');
      // Records not yet in the old journal (taken now, or kept from a failed write) were all
      // appended before the snapshot, which covers them. If the snapshot cannot be written
      // they stay queued for the old journal.
      let newFh: fsp.FileHandle | undefined;
      for (let attempt = 0; ; attempt++) {
        try {
          newFh = await fsp.open(this.file(snapshot.gen), 'w', 0o600);
          await writeFileAtomic(path.join(this.dir, 'state.json'), JSON.stringify(snapshot));
          break;
        } catch (err) {
          await newFh?.close();
          newFh = undefined;
          await fsp.rm(this.file(snapshot.gen), { force: true });
          if (attempt === 0 && (await this.freedSpace(err))) continue;
          this.retry = [...this.retry, ...bufs];
          this.retryBytes += bytes;
          throw err;
        }
      }
      this.gen = snapshot.gen;
      this.fh = newFh;
      this.size = 0;
      this.retry = [];
      this.retryBytes = 0;
      await oldFh.close();
      await fsp.rm(this.file(oldGen), { force: true });
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.readOnly) {
      this.closed = true;
      return;
    }
    try {
      await this.sync();
    } finally {
      this.closed = true;
      await this.fh?.close();
      this.fh = undefined;
    }
  }

  get generation(): number {
    return this.gen;
  }
}
