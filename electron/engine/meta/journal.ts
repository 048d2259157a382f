/**
 * Crash-safe local persistence of the metadata: a snapshot plus an append-only journal.
 *
 * Files in the metadata directory:
 *   tree.db        the snapshot: the local metadata database (treeDb.ts), which records its
 *                  generation; written by `checkpointWith`
 *   state.json     the snapshot of releases before the database (read to upgrade, see
 *                  metastore.ts), replaced atomically (write temp, fsync, rename, fsync dir);
 *                  JSON whose first member is a crc32 of the rest, so damage is detected
 *   journal.<gen>  records appended since snapshot generation <gen>
 * Each journal record is `u32 length | u32 crc32 | JSON`, so a record is applied whole or not
 * at all. A crash can only tear the end of the journal: bad or incomplete bytes with no valid
 * record after them are a torn tail, dropped (and cut off) at load. A bad record followed by a
 * valid one is damage, not a crash: the records after it were written, and may have been made
 * durable by an fsync, after the damaged one. Loading then refuses (JournalDamagedError) and
 * changes nothing; `inspect` reads around the damage for the checker and the repair.
 *
 * Appends are buffered and written by a single writer loop (one write in flight, in order).
 * `sync()` is a group commit: it resolves once everything appended before the call is on disk
 * (written, then an fdatasync that started after that write). Writes never wait for an
 * fdatasync: at most one runs at a time, beside the writer loop, and every `sync()` that
 * arrives while one runs shares the next one. So `flush()` (what close(2) waits for) costs a
 * write even while uploads keep syncing, and N concurrent syncs cost about two fdatasyncs, not
 * N. Nothing here blocks the event loop.
 *
 * A full disk: a write (or snapshot) that fails for lack of space asks `onDiskFull` to free
 * some (the engine evicts clean chunks, then gives up its reserve) and is tried once more;
 * if it still fails, its records stay queued, in order, for the next write.
 */

import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { promisify } from 'node:util';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { UserError } from '../errors';
import { fsyncDir, writeFileAtomic } from '../util/files';

export interface JournalFiles<TSnapshot> {
  readonly snapshot: TSnapshot | undefined;
  readonly records: unknown[];
}

/** A byte range of a journal that holds no valid record. */
export interface DamagedSpan {
  readonly offset: number;
  readonly length: number;
}

/** Damage in the middle of a journal: bad bytes with valid records after them. */
export interface JournalDamage {
  readonly file: string;
  /** Ranges with no valid record, each followed by at least one valid record, in file order. */
  readonly spans: readonly DamagedSpan[];
  /** The valid records after the first damaged range, in order (later damaged ranges skipped). */
  readonly later: unknown[];
}

/** Records waiting in the task chain to be written (Journal.flush). */
interface QueuedWrite {
  readonly bufs: Buffer[];
  bytes: number;
  done: Promise<void>;
}

/** The journal is damaged in the middle; nothing was read into use, truncated or removed. */
export class JournalDamagedError extends UserError {
  constructor(readonly damage: JournalDamage) {
    super(
      `the metadata journal ${damage.file} is damaged at byte ${damage.spans[0]!.offset}: ` +
        `${damage.later.length} valid record(s) after the damage cannot be applied safely; nothing was changed`,
      'JOURNAL_DAMAGED',
    );
    this.name = 'JournalDamagedError';
  }
}

/** The snapshot cannot be read (or is missing while a journal needs it); nothing was changed. */
export class SnapshotDamagedError extends UserError {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`the metadata snapshot ${file} is damaged (${reason}); nothing was changed`, 'SNAPSHOT_DAMAGED');
    this.name = 'SnapshotDamagedError';
  }
}

/** What `Journal.inspect` could read, around any damage. */
export interface JournalInspection<TSnapshot> {
  readonly snapshotFile: string;
  readonly snapshot: TSnapshot | undefined;
  /** Set when the snapshot exists (or should) but cannot be read. */
  readonly snapshotError?: SnapshotDamagedError;
  /** The journal read: the snapshot's, or with no readable snapshot the newest one present. */
  readonly file: string | undefined;
  /** Valid records before any damage. */
  readonly records: unknown[];
  readonly damage?: JournalDamage;
  /** Bytes of a torn tail (dropped at the next load). */
  readonly tornTailBytes: number;
}

const HEADER = 8;
const SNAPSHOT = 'state.json';
const JOURNAL_RE = /^journal\.(\d+)$/;

function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function encodeRecord(rec: object): Buffer {
  const body = Buffer.from(JSON.stringify(rec), 'utf8');
  const out = Buffer.allocUnsafe(HEADER + body.length);
  out.writeUInt32LE(body.length, 0);
  out.writeUInt32LE(crc32(body), 4);
  body.copy(out, HEADER);
  return out;
}

/** The whole valid record starting at `pos`, if there is one. */
function recordAt(buf: Buffer, pos: number): { rec: unknown; end: number } | undefined {
  if (pos + HEADER > buf.length) return undefined;
  const len = buf.readUInt32LE(pos);
  const end = pos + HEADER + len;
  if (len < 2 || end > buf.length) return undefined;
  // Every record is a JSON object: a cheap test before the checksum, while scanning.
  if (buf[pos + HEADER] !== 0x7b || buf[end - 1] !== 0x7d) return undefined;
  const body = buf.subarray(pos + HEADER, end);
  if (crc32(body) !== buf.readUInt32LE(pos + 4)) return undefined;
  try {
    const rec: unknown = JSON.parse(body.toString('utf8'));
    return rec !== null && typeof rec === 'object' ? { rec, end } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Splits a journal's bytes into the valid records before any bad bytes, the damaged ranges
 * (bad bytes followed by a valid record: a header whose length and checksum validate), the
 * valid records after them, and a torn tail (bad bytes with nothing valid after them).
 * `validBytes` is where the first bad byte is (the file's length when there is none).
 */
export function decodeRecords(buf: Buffer): {
  records: unknown[];
  validBytes: number;
  spans: DamagedSpan[];
  later: unknown[];
  tornTailBytes: number;
} {
  const records: unknown[] = [];
  const later: unknown[] = [];
  const spans: DamagedSpan[] = [];
  let pos = 0;
  let validBytes: number | undefined;
  let tornTailBytes = 0;
  while (pos < buf.length) {
    const got = recordAt(buf, pos);
    if (got) {
      (spans.length === 0 ? records : later).push(got.rec);
      pos = got.end;
      continue;
    }
    validBytes ??= pos;
    let next = pos + 1;
    while (next < buf.length && !recordAt(buf, next)) next++;
    if (next >= buf.length) {
      tornTailBytes = buf.length - pos;
      break;
    }
    spans.push({ offset: pos, length: next - pos });
    pos = next;
  }
  return { records, validBytes: validBytes ?? buf.length, spans, later, tornTailBytes };
}

/**
 * The snapshot format: JSON whose first member is the crc32 of everything after it, so
 * `{"crc32":"xxxxxxxx","gen":...}`. Snapshots from before the checksum (`{"gen":...}`) are
 * still read.
 */
export function encodeSnapshot(snapshot: { gen: number }): Buffer {
  const body = Buffer.from(JSON.stringify(snapshot), 'utf8');
  const rest = body.subarray(1);
  return Buffer.concat([Buffer.from(`{"crc32":"${crc32(rest).toString(16).padStart(8, '0')}",`, 'ascii'), rest]);
}

const SNAPSHOT_CRC_RE = /^\{"crc32":"([0-9a-f]{8})",/;

export function decodeSnapshot<T extends { gen: number }>(file: string, raw: Buffer): T {
  const head = raw.subarray(0, 24).toString('latin1');
  const m = SNAPSHOT_CRC_RE.exec(head);
  if (m) {
    if (crc32(raw.subarray(m[0].length)) !== parseInt(m[1]!, 16))
      throw new SnapshotDamagedError(file, 'its checksum does not match its content');
  } else if (!head.startsWith('{"gen":')) {
    throw new SnapshotDamagedError(file, raw.length === 0 ? 'it is empty' : 'it does not start like a snapshot');
  }
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new SnapshotDamagedError(file, 'it is not valid JSON');
  }
  const gen = (v as { gen?: unknown } | null)?.gen;
  if (typeof gen !== 'number' || !Number.isSafeInteger(gen) || gen < 0)
    throw new SnapshotDamagedError(file, 'it has no valid generation number');
  delete (v as { crc32?: unknown }).crc32;
  return v as T;
}

async function readSnapshot<T extends { gen: number }>(dir: string): Promise<T | undefined> {
  const file = path.join(dir, SNAPSHOT);
  let raw: Buffer;
  try {
    raw = await fsp.readFile(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SnapshotDamagedError(file, (err as Error).message);
  }
  return decodeSnapshot<T>(file, raw);
}

/** Generations of the journal files present, ascending. */
async function journalGens(dir: string): Promise<number[]> {
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  return names
    .map((n) => JOURNAL_RE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** With no snapshot there can be no journal of a later generation: it would need one. */
async function checkNoOrphanJournal(dir: string): Promise<void> {
  const gen = (await journalGens(dir)).filter((g) => g > 0).pop();
  if (gen !== undefined)
    throw new SnapshotDamagedError(path.join(dir, SNAPSHOT), `it is missing, but journal.${gen} holds changes made after it`);
}

/** What the journal needs of an open file (a FileHandle is one; `FdFile` another). */
interface JournalFile {
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
  datasync(): Promise<void>;
  truncate(len: number): Promise<void>;
  close(): Promise<void>;
}

const writevFd = promisify(fs.writev);
const fdatasyncFd = promisify(fs.fdatasync);
const ftruncateFd = promisify(fs.ftruncate);
const closeFd = promisify(fs.close);

/** A file opened synchronously (`checkpointWith` creates the next journal before it returns). */
class FdFile implements JournalFile {
  private closing: Promise<void> | undefined;
  private running = new Set<Promise<unknown>>();
  constructor(private readonly fd: number) {}

  private track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p);
    void p.finally(() => this.running.delete(p)).catch(() => undefined);
    return p;
  }

  async writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }> {
    return { bytesWritten: (await this.track(writevFd(this.fd, buffers, position))).bytesWritten };
  }

  datasync(): Promise<void> {
    return this.track(fdatasyncFd(this.fd));
  }

  truncate(len: number): Promise<void> {
    return this.track(ftruncateFd(this.fd, len));
  }

  /** Closes once what runs on it (an fdatasync) is done, as FileHandle.close does. */
  close(): Promise<void> {
    this.closing ??= Promise.allSettled([...this.running]).then(() => closeFd(this.fd));
    return this.closing;
  }
}

export class Journal<TSnapshot extends { gen: number }> {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private chain: Promise<void> = Promise.resolve();
  /** The last task queued, when it is a write of records that has not started (see flush). */
  private queuedWrite: QueuedWrite | undefined;
  private retry: Buffer[] = [];
  private retryBytes = 0;
  private fh: JournalFile | undefined;
  /** The generation the next checkpoint writes (ahead of `gen` while a switch is queued). */
  private nextGen: number;
  /** The fdatasync running now, and the one every sync() arriving meanwhile shares (see the header). */
  private datasyncRunning: Promise<void> | undefined;
  private datasyncNext: Promise<void> | undefined;
  private size = 0;
  private closed = false;
  /** Opened only to read (the checker): nothing is written, truncated or removed. */
  readOnly = false;
  /** Called when a write found the disk full; resolves true if it freed space (the write is tried again). */
  onDiskFull: ((err: Error) => Promise<boolean>) | undefined;

  private constructor(
    private readonly dir: string,
    private gen: number,
  ) {
    this.nextGen = gen + 1;
  }

  /**
   * Opens (creating if needed) and returns the last snapshot with the records after it. A torn
   * tail is cut off (unless read-only); damage or an unreadable snapshot is refused with
   * JournalDamagedError / SnapshotDamagedError, and then nothing is changed.
   */
  static async open<T extends { gen: number }>(
    dir: string,
    readOnly = false,
    /** The snapshot's generation when the snapshot is the database (state.json is not read). */
    atGen?: number,
  ): Promise<{ journal: Journal<T>; loaded: JournalFiles<T> }> {
    if (!readOnly) await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const snapshot = atGen === undefined ? await readSnapshot<T>(dir) : undefined;
    if (!snapshot && atGen === undefined) await checkNoOrphanJournal(dir);
    const gen = atGen ?? snapshot?.gen ?? 0;
    const journal = new Journal<T>(dir, gen);
    const file = journal.file();
    let records: unknown[] = [];
    try {
      const buf = await fsp.readFile(file);
      const decoded = decodeRecords(buf);
      if (decoded.spans.length > 0) throw new JournalDamagedError({ file, spans: decoded.spans, later: decoded.later });
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
    for (const g of await journalGens(dir)) {
      if (g !== gen) await fsp.rm(path.join(dir, `journal.${g}`), { force: true });
    }
    return { journal, loaded: { snapshot, records } };
  }

  /** Reads whatever can be read, around any damage, changing nothing (the checker, the repair). */
  static async inspect<T extends { gen: number }>(dir: string, atGen?: number): Promise<JournalInspection<T>> {
    const snapshotFile = path.join(dir, SNAPSHOT);
    let snapshot: T | undefined;
    let snapshotError: SnapshotDamagedError | undefined;
    if (atGen === undefined) {
      try {
        snapshot = await readSnapshot<T>(dir);
        if (!snapshot) await checkNoOrphanJournal(dir);
      } catch (err) {
        if (!(err instanceof SnapshotDamagedError)) throw err;
        snapshotError = err;
      }
    }
    const gens = await journalGens(dir);
    const gen = atGen ?? (snapshot ? snapshot.gen : gens[gens.length - 1]);
    const file = gen === undefined ? undefined : path.join(dir, `journal.${gen}`);
    const buf = file ? await fsp.readFile(file).catch(() => Buffer.alloc(0)) : Buffer.alloc(0);
    const d = decodeRecords(buf);
    return {
      snapshotFile,
      snapshot,
      snapshotError,
      file,
      records: d.records,
      tornTailBytes: d.tornTailBytes,
      ...(d.spans.length > 0 && file ? { damage: { file, spans: d.spans, later: d.later } } : {}),
    };
  }

  /**
   * Replaces the metadata in `dir` with a new snapshot, whatever state the old files are in:
   * the next generation gets `snapshot` and an empty journal, and the old journal and an
   * unreadable snapshot are kept beside them as `*.damaged` (for a later look, never read).
   */
  static async replace<T extends { gen: number }>(dir: string, make: (gen: number) => T): Promise<string[]> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    let oldGen = -1;
    let snapshotReadable = false;
    try {
      const old = await readSnapshot<T>(dir);
      if (old) {
        oldGen = old.gen;
        snapshotReadable = true;
      }
    } catch (err) {
      if (!(err instanceof SnapshotDamagedError)) throw err;
    }
    const gens = await journalGens(dir);
    const gen = Math.max(oldGen, ...gens) + 1;
    const kept: string[] = [];
    if (
      !snapshotReadable &&
      (await fsp.access(path.join(dir, SNAPSHOT)).then(
        () => true,
        () => false,
      ))
    ) {
      await fsp.copyFile(path.join(dir, SNAPSHOT), path.join(dir, `${SNAPSHOT}.damaged`));
      kept.push(path.join(dir, `${SNAPSHOT}.damaged`));
    }
    const fh = await fsp.open(path.join(dir, `journal.${gen}`), 'w', 0o600);
    await fh.sync().finally(() => fh.close());
    await writeFileAtomic(path.join(dir, SNAPSHOT), encodeSnapshot(make(gen)));
    for (const g of gens) {
      const target = path.join(dir, `journal.${g}.damaged`);
      await fsp.rename(path.join(dir, `journal.${g}`), target);
      kept.push(target);
    }
    await fsyncDir(dir);
    return kept;
  }

  get bytes(): number {
    return this.size + this.pendingBytes + this.retryBytes;
  }

  private file(gen = this.gen): string {
    return path.join(this.dir, `journal.${gen}`);
  }

  append(rec: object): void {
    if (this.closed || this.readOnly) throw new Error(this.readOnly ? 'journal is open read-only' : 'journal is closed');
    const b = encodeRecord(rec);
    this.pending.push(b);
    this.pendingBytes += b.length;
  }

  /** Runs tasks strictly one after another, in the order they were queued. */
  private enqueue(task: () => Promise<void>): Promise<void> {
    this.queuedWrite = undefined; // a flush after this task must not write before it
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
    // A write queued and not started yet, with nothing queued after it, takes these records
    // too: one write call for the flushes of a burst (creates, closes and upload commits all
    // flush), in the same order as one write each.
    const queued = this.queuedWrite;
    if (queued) {
      for (const b of bufs) queued.bufs.push(b);
      queued.bytes += bytes;
      return queued.done;
    }
    const write: QueuedWrite = { bufs, bytes, done: Promise.resolve() };
    write.done = this.enqueue(() => {
      if (this.queuedWrite === write) this.queuedWrite = undefined;
      return this.writeRecords(write.bufs, write.bytes);
    });
    this.queuedWrite = write;
    return write.done;
  }

  /** Makes everything appended before this call durable (survives power loss). */
  async sync(): Promise<void> {
    await this.flush();
    await this.datasync();
  }

  /**
   * Resolves after an fdatasync of the current journal file that started after this call (so
   * it covers every write finished before it). A checkpoint that replaced the file meanwhile
   * made the records of the old one durable in its snapshot; FileHandle.close waits for an
   * fdatasync still running on the old handle.
   */
  private datasync(): Promise<void> {
    if (this.datasyncNext) return this.datasyncNext;
    const start = (): Promise<void> => {
      const fh = this.fh;
      if (!fh) return Promise.reject(new Error('journal is closed'));
      const running: Promise<void> = fh.datasync().finally(() => {
        if (this.datasyncRunning === running) this.datasyncRunning = undefined;
      });
      this.datasyncRunning = running;
      return running;
    };
    if (!this.datasyncRunning) return start();
    const next = this.datasyncRunning
      .catch(() => undefined)
      .then(() => {
        this.datasyncNext = undefined;
        return start();
      });
    this.datasyncNext = next;
    return next;
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
        if (bytesWritten !== total)
          throw Object.assign(new Error('the disk is full: the metadata journal was written short'), { code: 'ENOSPC' });
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
    this.nextGen = snapshot.gen + 1;
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
          await writeFileAtomic(path.join(this.dir, SNAPSHOT), encodeSnapshot(snapshot));
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

  /**
   * A checkpoint whose snapshot is written synchronously by `write(gen)` (the database, as of
   * this call): creates journal.<gen> first, then calls `write`, and the records appended before
   * the call are covered by it; those appended after it go to the new journal. If creating the
   * file or `write` fails, nothing changed (records stay queued for the current journal) and
   * this throws. The switch to the new file is queued behind writes already queued, and the
   * folder is fsynced before anything is written to the new file, so a record a sync() made
   * durable there is never in a file that a power cut could lose.
   */
  checkpointWith(write: (gen: number) => void): Promise<void> {
    if (this.closed || this.readOnly) throw new Error(this.readOnly ? 'journal is open read-only' : 'journal is closed');
    const gen = this.nextGen;
    const file = this.file(gen);
    const fd = fs.openSync(file, 'w', 0o600);
    try {
      write(gen);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(file, { force: true });
      throw err;
    }
    this.nextGen = gen + 1;
    this.takePending(); // covered by the snapshot just written
    return this.enqueue(async () => {
      const oldFh = this.fh;
      const oldGen = this.gen;
      this.gen = gen;
      this.fh = new FdFile(fd);
      this.size = 0;
      // Records of a write that failed before the checkpoint are in the snapshot too.
      this.retry = [];
      this.retryBytes = 0;
      await fsyncDir(this.dir);
      await oldFh?.close();
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
