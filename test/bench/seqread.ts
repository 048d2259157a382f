/**
 * Sequential-read probe: opens a file, reads its first 4 KiB (the time from before open()
 * until those bytes arrive is the time to first byte), then reads on to `bytes` in 1 MiB
 * reads (blocking reads one after the other, as `dd bs=1M` does), and reports both.
 * Runs as its own process: it may block on the mount without blocking the benchmark.
 *
 * Usage (child process): node seqread.js FILE BYTES
 * Prints one JSON line: {bytes, seconds, openUs, ttfbUs}; seconds runs from before open() to
 * the last byte.
 */

import { closeSync, openSync, readSync } from 'node:fs';

const FIRST = 4096;
const BLOCK = 1024 * 1024;

function main(): void {
  const [file, bytesArg] = process.argv.slice(2);
  const want = Number(bytesArg);
  if (!file || !(want > 0)) throw new Error('usage: seqread FILE BYTES');
  const buf = Buffer.allocUnsafe(BLOCK);
  const t0 = process.hrtime.bigint();
  const fd = openSync(file, 'r');
  const opened = process.hrtime.bigint();
  let got = 0;
  let firstAt = 0n;
  try {
    // The first read is small, so its latency is that of the first byte; the second one
    // realigns the stream to whole MiB.
    let len = Math.min(FIRST, want);
    while (got < want) {
      const n = readSync(fd, buf, 0, len, got);
      if (n === 0) throw new Error(`file ended at ${got} bytes, expected ${want}`);
      if (got === 0) firstAt = process.hrtime.bigint();
      got += n;
      len = Math.min(BLOCK - (got % BLOCK), want - got);
    }
  } finally {
    closeSync(fd);
  }
  const end = process.hrtime.bigint();
  process.stdout.write(
    `${JSON.stringify({
      bytes: got,
      seconds: Number(end - t0) / 1e9,
      openUs: Number(opened - t0) / 1000,
      ttfbUs: Number(firstAt - t0) / 1000,
    })}\n`,
  );
}

try {
  main();
} catch (err) {
  process.stderr.write(`seqread: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
