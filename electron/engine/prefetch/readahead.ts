/**
 * Sequential-read detection, one cursor per open file handle.
 *
 * A read that starts where the previous one ended is sequential: the read-ahead window
 * doubles (1, 2, 4, ... chunks) up to `maxChunks`. Any other read is a seek and resets the
 * window to zero, so random access never triggers wasted downloads. Pure logic, no I/O.
 */

export class ReadAheadCursor {
  private nextOffset = -1;
  private window = 0;

  constructor(private readonly maxChunks: number) {}

  /** Records a read and returns how many chunks after the current one to prefetch. */
  onRead(offset: number, length: number): number {
    const sequential = offset === this.nextOffset || (offset === 0 && this.nextOffset === -1);
    this.nextOffset = offset + length;
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
