/**
 * A pool of chunk-sized buffers, so work on whole chunks (the uploader reads, encodes and sends
 * chunks of a few MiB) reuses memory instead of allocating and dropping a chunk-sized buffer at
 * every step. A fresh buffer of that size costs a page fault per 4 KiB on first touch, counts as
 * external memory that V8 collects with full GCs of the engine thread, and leaves resident
 * memory behind in the allocator after it is freed; a reused one costs none of this.
 *
 * Slots bound the memory: at most `slots()` buffers are out at once, and `acquire` waits for a
 * slot (FIFO). So what the pool holds never exceeds `slots() * bufferBytes` (`boundBytes`).
 * A request under a quarter of `bufferBytes` (a small file's chunk) gets a buffer of its own
 * size, in a slot too, rather than pinning a whole pooled one. A few free pooled buffers are
 * kept for reuse (`keepFree`: a steady stream of work gives one back just before it takes the
 * next), the others are let go at once, and all once no slot has been in use for `idleMs`: what
 * the pool holds while nothing uploads is memory every other part of the engine could use.
 *
 * With `smallBySize`, a small request takes only its own size out of the slots' bytes rather than
 * a whole slot: many small buffers (the chunks of many small files) are out at once, and the
 * bound in bytes still holds. Without it, every buffer takes a slot, so the slots also bound how
 * many are out (the uploader's bodies: one per PUT in flight).
 *
 * Pooled buffers can be backed by SharedArrayBuffers (`shared`), for work done in place by worker
 * threads (upload/encoder.ts); a small request's own buffer never is.
 *
 * A buffer handed back with `discard` is never reused: that is for a buffer something else may
 * still read, e.g. the body of a request that failed or was cut off and may still be on its way
 * out; reusing it would send other bytes under that request's name.
 */

export interface BufferPoolOptions {
  /** Free buffers are let go once no slot has been in use for this long (ms; default 5 s). */
  readonly idleMs?: number;
  /** Free buffers kept for reuse at most (default 2): enough for a steady stream of work. */
  readonly keepFree?: number;
  /** Pooled buffers are backed by a SharedArrayBuffer (worker threads use them in place). */
  readonly shared?: boolean;
  /** A small request takes its own size out of the slots' bytes, not a whole slot (see the header). */
  readonly smallBySize?: boolean;
}

export class BufferPool {
  private readonly free: Buffer[] = [];
  /** Lent buffers, with the bytes of slots each takes. */
  private readonly lent = new Map<Buffer, number>();
  private readonly waiters: Array<{ readonly cost: number; readonly wake: () => void }> = [];
  /** Bytes of slots taken (`bufferBytes` a slot): by lent buffers, and by waiters woken but not yet run. */
  private taken = 0;
  private held = 0;
  private peak = 0;
  private idleTimer: NodeJS.Timeout | undefined;

  private readonly idleMs: number;
  private readonly keepFree: number;
  private readonly shared: boolean;
  private readonly smallBySize: boolean;

  constructor(
    readonly bufferBytes: number,
    private readonly slots: () => number,
    options: BufferPoolOptions = {},
  ) {
    if (!(bufferBytes > 0)) throw new RangeError(`BufferPool: bufferBytes must be positive, got ${bufferBytes}`);
    this.idleMs = options.idleMs ?? 5_000;
    this.keepFree = options.keepFree ?? 2;
    this.shared = options.shared ?? false;
    this.smallBySize = options.smallBySize ?? false;
  }

  /** Bytes of the buffers this pool holds now (lent and free). */
  get heldBytes(): number {
    return this.held;
  }

  /** The most bytes it held at once. */
  get peakBytes(): number {
    return this.peak;
  }

  /** What it may hold at most with the current number of slots. */
  get boundBytes(): number {
    return this.cap() * this.bufferBytes;
  }

  /** Buffers lent out now. */
  get inUse(): number {
    return this.lent.size;
  }

  /** A buffer of at least `bytes` (at most `bufferBytes`), once a slot is free. */
  async acquire(bytes: number): Promise<Buffer> {
    if (bytes > this.bufferBytes)
      throw new RangeError(`BufferPool: ${bytes} bytes asked of a pool of ${this.bufferBytes}-byte buffers`);
    const small = bytes < this.bufferBytes / 4;
    const cost = small && this.smallBySize ? Math.max(1, bytes) : this.bufferBytes;
    // Waiters go first; a slot given back is handed to the oldest one (taken on its behalf).
    if (this.waiters.length === 0 && this.taken + cost <= this.capBytes()) this.taken += cost;
    else await new Promise<void>((wake) => this.waiters.push({ cost, wake }));
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    let buf: Buffer;
    if (small) {
      buf = Buffer.allocUnsafeSlow(Math.max(1, bytes));
      // Free pooled buffers kept for reuse give way, so what is held stays within the bound.
      while (this.free.length > 0 && this.held + buf.length > this.boundBytes) this.held -= this.free.pop()!.length;
      this.held += buf.length;
    } else {
      const reused = this.free.pop();
      if (reused) {
        buf = reused;
      } else {
        buf = this.shared ? Buffer.from(new SharedArrayBuffer(this.bufferBytes)) : Buffer.allocUnsafeSlow(this.bufferBytes);
        this.held += buf.length;
      }
    }
    this.lent.set(buf, cost);
    this.peak = Math.max(this.peak, this.held);
    return buf;
  }

  private cap(): number {
    return Math.max(1, this.slots());
  }

  private capBytes(): number {
    return this.cap() * this.bufferBytes;
  }

  /** Gives `buf` back for reuse. */
  release(buf: Buffer): void {
    this.giveBack(buf, true);
  }

  /** Gives `buf`'s slot back; the buffer itself is never reused (see the header). */
  discard(buf: Buffer): void {
    this.giveBack(buf, false);
  }

  private giveBack(buf: Buffer, reuse: boolean): void {
    const cost = this.lent.get(buf);
    if (cost === undefined) throw new Error('BufferPool: a buffer given back that was not lent (or was given back twice)');
    this.lent.delete(buf);
    this.taken -= cost;
    if (
      reuse &&
      buf.length === this.bufferBytes &&
      this.free.length < this.keepFree &&
      this.free.length + this.lent.size < this.cap()
    ) {
      this.free.push(buf);
    } else {
      this.held -= buf.length;
    }
    // The number of slots can have changed meanwhile: wake as many waiters as now fit.
    while (this.waiters.length > 0 && this.taken + this.waiters[0]!.cost <= this.capBytes()) {
      const w = this.waiters.shift()!;
      this.taken += w.cost;
      w.wake();
    }
    if (this.taken === 0 && this.free.length > 0 && !this.idleTimer) {
      this.idleTimer = setTimeout(() => this.trim(), this.idleMs);
      this.idleTimer.unref();
    }
  }

  /** Lets go of every free buffer. */
  trim(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    for (const b of this.free) this.held -= b.length;
    this.free.length = 0;
  }
}
