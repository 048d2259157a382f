/**
 * Writing many bytes into a file at once, in write calls of at most WRITE_PIECE_BYTES.
 *
 * Why pieces: on Linux filesystems that cache file data in large folios (ext4 and XFS on recent
 * kernels), one write call of 2 MiB or more into the page cache allocates large folios, and
 * that costs the kernel several times the CPU per byte of smaller calls. Measured on the
 * benchmark machine (kernel 6.18, ext4, 2 cores): 256 MiB written in 4 MiB calls took 0.46 to
 * 0.65 s of system time, in 2 MiB calls 0.65 s, in 1 MiB, 512 KiB, 256 KiB or 128 KiB calls
 * 0.08 to 0.11 s. The engine writes whole chunks (4 MiB by default) into the cache and the dirty
 * store, so this was up to a third of its CPU during a cold sequential read.
 *
 * The calls are made one after the other. A buffer that fits in a piece stays within one call,
 * so a sealed unit (one buffer each) is never split between two calls: a crash between them
 * leaves whole units, as a crash between two of the engine's writes always could, and every
 * reader of these files authenticates each unit it reads. Only a buffer larger than a piece
 * is split. A short write goes on from the first byte not written.
 */

import { FsError } from '../errors';

/** The largest write call (see the header for the measurement behind it). */
export const WRITE_PIECE_BYTES = 1024 * 1024;

/** What writeAllAt needs of an open file (a FileHandle has both). */
export interface PositionalWriter {
  write(buffer: Buffer, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
  writev(buffers: Buffer[], position: number): Promise<{ bytesWritten: number }>;
}

/** Writes `buffers`, one after the other, at `position` of the file; resolves once all are written. */
export async function writeAllAt(
  fh: PositionalWriter,
  buffers: readonly Buffer[],
  position: number,
  piece = WRITE_PIECE_BYTES,
): Promise<void> {
  // The cursor: buffer i, byte off of it, file position pos.
  let i = 0;
  let off = 0;
  let pos = position;
  const skipEmpty = () => {
    while (i < buffers.length && off >= buffers[i]!.length) {
      i++;
      off = 0;
    }
  };
  skipEmpty();
  while (i < buffers.length) {
    const startI = i;
    const startOff = off;
    const batch: Buffer[] = [];
    let n = 0;
    while (i < buffers.length && n < piece) {
      const left = buffers[i]!.length - off;
      // A buffer that fits in a piece of its own is not split across two calls.
      if (n > 0 && left > piece - n && left <= piece) break;
      const take = Math.min(left, piece - n);
      batch.push(buffers[i]!.subarray(off, off + take));
      n += take;
      off += take;
      skipEmpty();
    }
    const { bytesWritten } = batch.length === 1 ? await fh.write(batch[0]!, 0, n, pos) : await fh.writev(batch, pos);
    if (bytesWritten <= 0) throw new FsError('EIO', `a write of ${n} bytes at ${pos} wrote nothing`);
    pos += bytesWritten;
    if (bytesWritten < n) {
      // A short write: go on from the first byte not written.
      i = startI;
      off = startOff;
      let skip = bytesWritten;
      while (skip > 0) {
        const step = Math.min(skip, buffers[i]!.length - off);
        off += step;
        skip -= step;
        skipEmpty();
      }
    }
  }
}
