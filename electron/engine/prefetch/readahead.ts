/**
 * Sequential-read detection, one cursor per open file handle.
 *
 * A read that starts near the furthest point read so far (within SLACK either side) is
 * sequential: the read-ahead window doubles (1, 2, 4, ... chunks) up to `maxChunks`. The slack
 * is there because the kernel issues its own read-ahead as several concurrent requests, which
 * reach the filesystem out of order (about a fifth of them even on a filesystem that does
 * nothing); a strict "starts where the last ended" rule reset the window on each of those.
 * Any read further away is a seek and resets the window to zero, so random access never
 * triggers wasted downloads. Pure logic, no I/O.
 */

/** How far from the streaming frontier a read may start and still count as sequential. */
export const SLACK = 512 * 1024;

export class ReadAheadCursor {
  private frontier = -1;
  private window = 0;

  constructor(private readonly maxChunks: number) {}

  /** Records a read and returns how many chunks after the current one to prefetch. */
  onRead(offset: number, length: number): number {
    const sequential = this.frontier === -1 ? offset === 0 : offset >= this.frontier - SLACK && offset <= this.frontier + SLACK;
    this.frontier = sequential ? Math.max(this.frontier, offset + length) : offset + length;
    if (!sequential) {
      this.window = 0;
      return 0;
    }
    this.window = Math.min(this.maxChunks, this.window === 0 ? 1 : this.window * 2);
    return this.window;
  }

  get currentWindow(): number {
    return this.window;
  }
}
