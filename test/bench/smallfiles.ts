/**
 * Small-file probe: creates `count` files of `fileBytes` each (distinct random content, so
 * content dedup cannot flatter the result) in a new directory, lists it with `ls -l` (one
 * readdir and a stat per entry, in a child process), stats them all, then deletes them all,
 * one operation at a time as `cp`, `git` or a build tool would. Between the phases it waits
 * `settleMs` so the kernel's attribute and entry caches (1 s by default) have expired and
 * every stat really reaches the filesystem.
 * Runs as its own process: it may block on the mount without blocking the benchmark.
 *
 * Creation stops early once CREATE_LIMIT_MS have passed (if given): the benchmark bounds the
 * time a much slower peer may take; `count` then says how many files the phases worked on.
 *
 * Usage (child process): node smallfiles.js DIR COUNT FILE_BYTES SETTLE_MS [CREATE_LIMIT_MS]
 * Prints one JSON line with seconds and p50/p99 latency (µs) per phase (`ls` has seconds only,
 * and its start and end in the monotonic clock's µs, to find it in an engine profile).
 */

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { percentile } from './stats';

interface Phase {
  seconds: number;
  p50Us: number;
  p99Us: number;
}

/** Runs op for 0..count-1, stopping early once `stopAfterMs` have passed; `done` is how many ran. */
function timed(count: number, op: (i: number) => void, stopAfterMs = Infinity): Phase & { done: number } {
  const lat: number[] = [];
  const t0 = process.hrtime.bigint();
  let i = 0;
  for (; i < count; i++) {
    const s = process.hrtime.bigint();
    if (Number(s - t0) / 1e6 > stopAfterMs) break;
    op(i);
    lat.push(Number(process.hrtime.bigint() - s) / 1000);
  }
  return {
    seconds: Number(process.hrtime.bigint() - t0) / 1e9,
    p50Us: percentile(lat, 0.5),
    p99Us: percentile(lat, 0.99),
    done: i,
  };
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function main(): void {
  const [dir, countArg, sizeArg, settleArg, stopArg] = process.argv.slice(2);
  const requested = Number(countArg);
  const stopAfterMs = stopArg ? Number(stopArg) : Infinity;
  const size = Number(sizeArg);
  const settleMs = Number(settleArg ?? 1100);
  if (!dir || !(requested > 0) || !(size >= 0) || !(stopAfterMs > 0))
    throw new Error('usage: smallfiles DIR COUNT FILE_BYTES SETTLE_MS [CREATE_LIMIT_MS]');
  const pool = randomBytes(size + requested); // file i gets bytes [i, i+size): all distinct
  const name = (i: number) => path.join(dir, `f${String(i).padStart(6, '0')}.dat`);
  mkdirSync(dir);
  const create = timed(requested, (i) => writeFileSync(name(i), pool.subarray(i, i + size)), stopAfterMs);
  // A slow filesystem may be stopped after CREATE_LIMIT_MS: the other phases then work on the files it created.
  const count = create.done;
  sleepSync(settleMs);
  const t0 = process.hrtime.bigint();
  const lsFromUs = Number(t0 / 1000n);
  const ls = spawnSync('ls', ['-l', dir], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  const lsToUs = Number(process.hrtime.bigint() / 1000n);
  const lsSeconds = (lsToUs - lsFromUs) / 1e6;
  const listed = String(ls.stdout ?? '')
    .split('\n')
    .filter((l) => l.startsWith('-')).length;
  if (ls.status !== 0 || listed !== count)
    throw new Error(`ls -l listed ${listed} of ${count} files (exit ${ls.status}): ${String(ls.stderr ?? '').slice(0, 300)}`);
  sleepSync(settleMs);
  const stat = timed(count, (i) => {
    if (statSync(name(i)).size !== size) throw new Error(`${name(i)} has the wrong size`);
  });
  sleepSync(settleMs);
  const del = timed(count, (i) => unlinkSync(name(i)));
  rmdirSync(dir);
  process.stdout.write(
    `${JSON.stringify({ count, requested, create, ls: { seconds: lsSeconds, fromUs: lsFromUs, toUs: lsToUs }, stat, delete: del })}\n`,
  );
}

try {
  main();
} catch (err) {
  process.stderr.write(`smallfiles: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
