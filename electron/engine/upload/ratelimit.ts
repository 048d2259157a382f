/**
 * The upload bandwidth limit: a byte budget that refills at `bytesPerSec` and may hold up to
 * `burstMs` worth of unused budget. A caller reserves the whole size of a request before
 * sending it and waits until the budget covers it; a request larger than the budget goes
 * first and the ones after it wait for the debt to clear, so over any stretch of time the
 * bytes sent stay within rate * (time + burst) + one request.
 *
 * Callers may reserve an estimate and `adjust` once the real size is known.
 *
 * The limit is averaged over requests, not paced inside one (a chunk's PUT leaves at the link's
 * speed); with chunks of a few MiB and a limit of a few hundred KiB/s and up, the average is what
 * a shared uplink feels. Changing the rate applies at once to callers already waiting.
 */

import { Signal } from '../util/concurrency';

export class RateLimiter {
  /** Time (ms) from which the budget is free again; before it, the budget is in debt. */
  private freeAt = 0;
  private generation = 0;
  private closed = false;
  private readonly changed = new Signal();

  constructor(
    private bytesPerSec: number,
    private readonly now: () => number = Date.now,
    private readonly burstMs = 1000,
  ) {}

  get limit(): number {
    return this.bytesPerSec;
  }

  /** 0 lifts the limit. Callers already waiting re-reserve at the new rate. */
  setRate(bytesPerSec: number): void {
    if (bytesPerSec === this.bytesPerSec) return;
    this.bytesPerSec = bytesPerSec;
    this.freeAt = Math.min(this.freeAt, this.now());
    this.generation++;
    this.changed.notify();
  }

  /** Wakes every waiter; later `take`s pass at once (the engine is shutting down). */
  close(): void {
    this.closed = true;
    this.changed.notify();
  }

  /**
   * Reserves `bytes` and returns how long (ms) the caller must wait before sending them.
   * Exposed for tests of the arithmetic; callers use `take`.
   */
  reserve(bytes: number): number {
    if (this.bytesPerSec <= 0 || this.closed) return 0;
    const now = this.now();
    const start = Math.max(this.freeAt, now - this.burstMs);
    this.freeAt = start + (bytes * 1000) / this.bytesPerSec;
    return Math.max(0, start - now);
  }

  /** Corrects an earlier reservation by `bytes` (negative: fewer were sent than reserved). */
  adjust(bytes: number): void {
    if (this.bytesPerSec <= 0 || bytes === 0) return;
    this.freeAt += (bytes * 1000) / this.bytesPerSec;
  }

  /** Resolves once `bytes` may be sent. */
  async take(bytes: number): Promise<void> {
    for (;;) {
      const gen = this.generation;
      const wait = this.reserve(bytes);
      if (wait <= 0) return;
      await this.changed.wait(wait);
      if (this.closed || gen === this.generation) return;
    }
  }
}
