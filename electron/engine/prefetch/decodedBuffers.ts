/**
 * DecodedBuffers: the buffers downloads decode whole chunks into, and the memory cache reads
 * whole chunks from the disk cache into, used again once nothing holds them.
 *
 * Why: V8 counts every buffer's memory allocated since its last full collection against the
 * heap's growth limit, which for the engine's small JavaScript heap (20 to 80 MB) leaves room
 * for only a few chunks. A fresh 4 MiB buffer per decoded chunk kept V8 in full collections
 * during a cold sequential read (51 of them in 512 MiB, a quarter of the engine's CPU on its
 * marking threads, measured with --trace-gc and perf). A buffer taken from here was allocated
 * once.
 *
 * Who holds a buffer, each counted (`hold` / `drop`): the download while it hands the chunk
 * out, the load from the disk cache while it reads, the memory cache (cache/chunkCache.ts)
 * while the chunk is in it, and the copy into the clean cache while it is written. A buffer
 * goes back for reuse only when the count falls to zero and it never `escaped`: handed to code
 * that may keep it across awaits (the fetcher's `fetch` callers). An escaped buffer is left to
 * the garbage collector like any other. Readers of the memory cache copy out synchronously,
 * while the cache holds the buffer, so reuse can never change bytes under them.
 *
 * Buffers not taken from here are not counted (`hold` and `drop` ignore them). At most
 * `keepFree` wait for reuse, and `trim` lets them go (an idle engine holds none).
 */

interface Held {
  refs: number;
  escaped: boolean;
}

export class DecodedBuffers {
  private readonly free: Buffer[] = [];
  private readonly held = new Map<ArrayBufferLike, Held>();
  /** Buffers allocated, and takes served by a buffer used before (tests, stats). */
  allocated = 0;
  reused = 0;

  constructor(
    /** Bytes of each buffer: a chunk's sealed units in the cache (a little more than the chunk size). */
    readonly bufferBytes: number,
    private readonly keepFree = 4,
  ) {}

  /** Whether `take` gives a buffer for `bytes`: not more than a buffer holds, and at least half of it. */
  takes(bytes: number): boolean {
    return bytes <= this.bufferBytes && bytes * 2 >= this.bufferBytes;
  }

  /**
   * A buffer for a chunk whose decoded size is `bytes`, held once by the caller; undefined
   * when a pooled buffer would be mostly empty (under half full), so a small chunk keeps a
   * buffer of its own size.
   */
  take(bytes: number): Buffer | undefined {
    if (!this.takes(bytes)) return undefined;
    let buf = this.free.pop();
    if (buf) this.reused++;
    else {
      buf = Buffer.allocUnsafeSlow(this.bufferBytes);
      this.allocated++;
    }
    this.held.set(buf.buffer, { refs: 1, escaped: false });
    return buf;
  }

  /** One more holder of `buf` (any view of a buffer taken from here; others are ignored). */
  hold(buf: Buffer): void {
    const h = this.held.get(buf.buffer);
    if (h) h.refs++;
  }

  /** One holder fewer; the last one lets the buffer be used again, unless it escaped. */
  drop(buf: Buffer): void {
    const h = this.held.get(buf.buffer);
    if (!h) return;
    if (--h.refs > 0) return;
    this.held.delete(buf.buffer);
    if (h.escaped || this.free.length >= this.keepFree) return;
    this.free.push(Buffer.from(buf.buffer, 0, this.bufferBytes));
  }

  /** `buf` is handed to code that may keep it: it is never used again. */
  escape(buf: Buffer): void {
    const h = this.held.get(buf.buffer);
    if (h) h.escaped = true;
  }

  /** Lets go of the buffers waiting for reuse. */
  trim(): void {
    this.free.length = 0;
  }

  /** Buffers held now (tests). */
  get heldCount(): number {
    return this.held.size;
  }
}
