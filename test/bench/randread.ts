/**
 * Random-read probe: `count` preads of `blockBytes` at distinct random block-aligned offsets
 * of one file, one at a time (queue depth 1, like a database page lookup), timing each.
 * Runs as its own process: it may block on the mount without blocking the benchmark.
 *
 * Usage (child process): node randread.js FILE FILE_BYTES COUNT BLOCK_BYTES
 * Prints one JSON line: {ops, seconds, p50Us, p99Us, maxUs}.
 */

import { closeSync, openSync, readSync } from 'node:fs';
import { percentile } from './stats';

function main(): void {
  const [file, sizeArg, countArg, blockArg] = process.argv.slice(2);
  const size = Number(sizeArg);
  const block = Number(blockArg);
  const blocks = Math.floor(size / block);
  const count = Math.min(Number(countArg), blocks);
  if (!file || !(size > 0) || !(count > 0) || !(block > 0)) throw new Error('usage: randread FILE FILE_BYTES COUNT BLOCK_BYTES');

  // Distinct offsets: a repeated one could be served from the kernel's page cache.
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(Math.random() * blocks));
  const offsets = [...picked].map((b) => b * block);

  const buf = Buffer.alloc(block);
  const lat: number[] = [];
  const fd = openSync(file, 'r');
  const t0 = process.hrtime.bigint();
  try {
    for (const off of offsets) {
      const s = process.hrtime.bigint();
      const n = readSync(fd, buf, 0, block, off);
      lat.push(Number(process.hrtime.bigint() - s) / 1000);
      if (n !== block) throw new Error(`short read at ${off}: ${n} bytes`);
    }
  } finally {
    closeSync(fd);
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(
    `${JSON.stringify({
      ops: count,
      seconds,
      p50Us: percentile(lat, 0.5),
      p99Us: percentile(lat, 0.99),
      maxUs: Math.max(...lat),
    })}\n`,
  );
}

try {
  main();
} catch (err) {
  process.stderr.write(`randread: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
