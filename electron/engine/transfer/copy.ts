/**
 * Copies a tree from one end to another (tree.ts): the one algorithm behind import and export.
 *
 * - Two passes over the source: a scan that counts files and bytes (for the progress's ETA),
 *   then the copy. Folders are made as the walk reaches them, before what they hold; their
 *   modes and times are set at the end, deepest first (adding entries changes a folder's time).
 * - A few files at once (`concurrency`), each read in pieces of about 1 MiB: memory is bounded
 *   by concurrency x piece, whatever the sizes.
 * - Resumable: a file whose destination has the same size and mtime (to the millisecond) is
 *   already there. A file's mtime is set only after its data is complete and verified, so a
 *   file cut off halfway (kill -9) has a fresh mtime and is copied again by the next run.
 * - Sparse: into an end that keeps holes, all-zero 64 KiB blocks are not written (as
 *   `cp --sparse=always`), so they read back as zeros and take no room.
 * - Verified: the SHA-256 of the bytes read from the source is compared with that of the file
 *   read back from the destination; a mismatch fails the file (named in `failed`), whose mtime
 *   then stays unset, so a re-run copies it again.
 * - What cannot be copied is skipped with its reason (the source's skips, plus entries in the
 *   way: a folder where a file is to go, or the reverse); existing destination files that
 *   differ are replaced, nothing else is removed.
 */

import { createHash } from 'node:crypto';
import { DestTree, Entry, Skip, SkipReason, SourceTree, parentOf } from './tree';

const SPARSE_BLOCK = 64 * 1024;
const ZEROS = Buffer.alloc(SPARSE_BLOCK);
/** Skips kept with their paths; beyond it only counted. */
const SKIPS_LISTED = 1000;
/** Files failed before the copy gives up (the destination is probably unusable). */
const MAX_FAILED = 50;

export interface TransferProgress {
  phase: 'scanning' | 'copying' | 'finishing' | 'uploading' | 'done' | 'cancelled' | 'failed';
  startedAt: number;
  /** Files and bytes the source holds (known once the scan is done). */
  filesTotal: number;
  bytesTotal: number;
  scanned: boolean;
  /** Files dealt with (copied, already there, skipped, failed) and their bytes. */
  filesDone: number;
  bytesDone: number;
  /** Bytes actually copied by this run. */
  bytesCopied: number;
  copied: number;
  alreadyThere: number;
  verified: number;
  folders: number;
  symlinks: number;
  skippedByReason: Partial<Record<SkipReason, number>>;
  skipped: Skip[];
  /** Files that failed, with why (a verification mismatch names its file). */
  failed: { path: string; error: string }[];
  /** Why the whole copy stopped, when it did. */
  error?: string;
}

export interface CopyOptions {
  readonly concurrency?: number;
  readonly signal?: AbortSignal;
  readonly now?: () => number;
}

export function newProgress(now: number): TransferProgress {
  return {
    phase: 'scanning',
    startedAt: now,
    filesTotal: 0,
    bytesTotal: 0,
    scanned: false,
    filesDone: 0,
    bytesDone: 0,
    bytesCopied: 0,
    copied: 0,
    alreadyThere: 0,
    verified: 0,
    folders: 0,
    symlinks: 0,
    skippedByReason: {},
    skipped: [],
    failed: [],
  };
}

function sameMs(a: number, b: number): boolean {
  return Math.floor(a) === Math.floor(b);
}

/** Copies `src` into `dst`, updating `progress` as it goes; resolves when done (see `phase`). */
export async function copyTree(
  src: SourceTree,
  dst: DestTree,
  progress: TransferProgress,
  opts: CopyOptions = {},
): Promise<TransferProgress> {
  const concurrency = opts.concurrency ?? 4;
  const p = progress;
  const skip = (s: Skip) => {
    p.skippedByReason[s.reason] = (p.skippedByReason[s.reason] ?? 0) + 1;
    if (p.skipped.length < SKIPS_LISTED) p.skipped.push(s);
  };
  const cancelled = () => opts.signal?.aborted === true;
  let fatal: Error | undefined;

  try {
    p.phase = 'scanning';
    for await (const e of src.walk(() => undefined)) {
      if (cancelled()) break;
      if (e.kind === 'file') {
        p.filesTotal++;
        p.bytesTotal += e.size;
      }
    }
    p.scanned = true;
    p.phase = 'copying';

    // Folders that could not be made (something else is in the way): nothing goes under them.
    const blocked = new Set<string>();
    const underBlocked = (path: string) => {
      for (let d = parentOf(path); d !== ''; d = parentOf(d)) if (blocked.has(d)) return true;
      return false;
    };
    const folders: Entry[] = [];
    const running = new Set<Promise<void>>();

    const fail = (path: string, err: unknown) => {
      p.failed.push({ path, error: err instanceof Error ? err.message : String(err) });
      if (p.failed.length >= MAX_FAILED)
        fatal = new Error(`${p.failed.length} files failed; stopping (last: ${path}: ${p.failed.at(-1)!.error})`);
    };

    for await (const e of src.walk(skip)) {
      if (cancelled() || fatal) break;
      if (underBlocked(e.path)) {
        if (e.kind === 'file') {
          p.filesDone++;
          p.bytesDone += e.size;
        }
        continue;
      }
      if (e.kind === 'dir') {
        const there = await dst.stat(e.path);
        if (there && there.kind !== 'dir') {
          blocked.add(e.path);
          skip({ path: e.path, reason: 'in the way', detail: `a ${there.kind} of that name is in the destination` });
          continue;
        }
        if (!there) await dst.mkdir(e.path);
        folders.push(e);
        p.folders++;
        continue;
      }
      if (e.kind === 'symlink') {
        await copySymlink(e).catch((err: unknown) => fail(e.path, err));
        continue;
      }
      while (running.size >= concurrency) await Promise.race(running);
      const job = copyFile(e)
        .catch((err: unknown) => fail(e.path, err))
        .finally(() => running.delete(job));
      running.add(job);
    }
    await Promise.all(running);
    if (fatal) throw fatal;
    if (cancelled()) {
      p.phase = 'cancelled';
      return p;
    }

    p.phase = 'finishing';
    for (let i = folders.length - 1; i >= 0; i--) {
      const f = folders[i]!;
      await dst.setAttrs(f.path, f.mode, f.mtimeMs).catch((err: unknown) => fail(f.path, err));
    }
    p.phase = 'done';
    return p;
  } catch (err) {
    p.phase = 'failed';
    p.error = err instanceof Error ? err.message : String(err);
    return p;
  }

  async function copySymlink(e: Entry): Promise<void> {
    if (!dst.symlinks) {
      skip({ path: e.path, reason: 'symlink (plain objects keep none)', detail: `-> ${e.target}` });
      return;
    }
    const there = await dst.stat(e.path);
    if (there?.kind === 'symlink' && there.target === e.target) {
      p.symlinks++;
      return;
    }
    if (there?.kind === 'dir') {
      skip({ path: e.path, reason: 'in the way', detail: 'a folder of that name is in the destination' });
      return;
    }
    if (there) await dst.remove(e.path);
    await dst.symlink(e.target!, e.path);
    await dst.setAttrs(e.path, undefined, e.mtimeMs);
    p.symlinks++;
  }

  async function copyFile(e: Entry): Promise<void> {
    let counted = 0;
    const account = (n: number) => {
      counted += n;
      p.bytesDone += n;
    };
    try {
      const problem = dst.nameProblem?.(e.path);
      if (problem) {
        skip({ path: e.path, reason: 'name not representable', detail: problem });
        account(e.size);
        return;
      }
      const there = await dst.stat(e.path);
      if (there?.kind === 'file' && there.size === e.size && sameMs(there.mtimeMs, e.mtimeMs)) {
        p.alreadyThere++;
        account(e.size);
        return;
      }
      if (there?.kind === 'dir') {
        skip({ path: e.path, reason: 'in the way', detail: 'a folder of that name is in the destination' });
        account(e.size);
        return;
      }
      if (there) await dst.remove(e.path);

      const sourceHash = createHash('sha256');
      let pos = 0;
      const reading = src.read(e.path)[Symbol.asyncIterator]();
      let first: IteratorResult<Buffer>;
      try {
        // The first piece proves the file readable before anything is made for it.
        first = await reading.next();
      } catch (err) {
        skip({ path: e.path, reason: 'unreadable', detail: (err as NodeJS.ErrnoException).code ?? (err as Error).message });
        account(e.size);
        return;
      }
      const w = await dst.create(e.path, e.mode, e.size, e.mtimeMs);
      try {
        for (let r = first; !r.done; r = await reading.next()) {
          if (cancelled() || fatal) {
            await reading.return?.();
            await w.abort();
            return;
          }
          const piece = r.value;
          sourceHash.update(piece);
          await writePiece(w, piece, pos);
          pos += piece.length;
          p.bytesCopied += piece.length;
          account(Math.max(0, Math.min(piece.length, e.size - counted)));
        }
        await w.finish(pos);
      } catch (err) {
        await w.abort().catch(() => undefined);
        throw err;
      }
      const want = sourceHash.digest('hex');
      const back = createHash('sha256');
      for await (const piece of dst.read(e.path)) back.update(piece);
      const got = back.digest('hex');
      if (got !== want) {
        // Never left to pass for a good copy (an object store's file has its mtime already).
        await dst.remove(e.path).catch(() => undefined);
        throw new Error(`verification failed: ${e.path} reads back with SHA-256 ${got}, the source had ${want}`);
      }
      p.verified++;
      await dst.setAttrs(e.path, e.mode, e.mtimeMs);
      p.copied++;
    } finally {
      p.filesDone++;
      if (counted < e.size) p.bytesDone += e.size - counted;
    }
  }

  /** Writes a piece; into a sparse end, all-zero blocks (aligned to the file) are left as holes. */
  async function writePiece(w: { write(d: Buffer, at: number): Promise<void> }, piece: Buffer, pos: number): Promise<void> {
    if (!dst.sparse) return w.write(piece, pos);
    let runStart = -1;
    let off = 0;
    while (off < piece.length) {
      const blockEnd = Math.min(piece.length, (Math.floor((pos + off) / SPARSE_BLOCK) + 1) * SPARSE_BLOCK - pos);
      const len = blockEnd - off;
      const zero = piece.compare(ZEROS, 0, len, off, blockEnd) === 0;
      if (zero && runStart >= 0) {
        await w.write(piece.subarray(runStart, off), pos + runStart);
        runStart = -1;
      } else if (!zero && runStart < 0) runStart = off;
      off = blockEnd;
    }
    if (runStart >= 0) await w.write(piece.subarray(runStart), pos + runStart);
  }
}
