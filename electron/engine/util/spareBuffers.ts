/**
 * SpareBuffers: buffers of one size used again instead of allocated per use. A fresh buffer
 * outside the JS heap counts against V8's collection limit, so a steady stream of short uses
 * (each random read's GET body and plaintext) kept full collections going; a taken buffer goes
 * back with `give` once nothing reads or writes it any more, and at most `keep` wait for reuse.
 * A buffer something may still write into (a request given up on) must never be given back.
 */
export class SpareBuffers {
  private readonly free: Buffer[] = [];

  constructor(
    readonly bufferBytes: number,
    private readonly keep = 4,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferBytes);
  }

  give(buf: Buffer): void {
    if (this.free.length < this.keep) this.free.push(buf);
  }
}
