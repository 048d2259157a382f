/**
 * Write-path probe: the engine thread's cost of a sequential writer's requests, without the
 * kernel. One in-process engine (4 MiB chunks, a 3 GiB cache, a local-disk bucket, uploads only
 * at the end) takes
 * FILESPACE_PROBE_MIB (default 1024) of 128 KiB requests, one at a time as libfuse2 sends a
 * sequential writer's, each answered as the FUSE adapter answers it (a reply on the next tick),
 * the next one arriving in the next turn of the event loop. Then the writer closes and the
 * engine uploads everything (`sync`).
 *
 *   node dist/test/bench/writepath.js [adapter|promise] [rounds]
 *
 * `adapter` sends each request the way native/fuse/adapter.ts does (`writeNow`, else `write`);
 * `promise` always through `write`, for comparison. It prints, per round: the time to close,
 * the mean and 99th-percentile time from a request to its reply, the requests answered
 * without a promise, the engine thread's CPU (this process), and the time of the sync.
 */

import { randomBytes } from 'node:crypto';
import { EngineBed, FUSE_IO_BYTES, MiB } from '../helpers/engineBed';
import type { FuseFilesystem } from '../../native/fuse/adapter';
import { runProbe } from './proc';

async function oneRound(bed: EngineBed, mode: string, mib: number, source: Buffer): Promise<string> {
  const space = await bed.diskFilespace({ chunkSize: 4 * MiB });
  const m = await bed.mount(space, { settings: { cacheCapBytes: 3 * 1024 * MiB } });
  const fs: FuseFilesystem = m.fs;
  const fh = fs.create('/seq.bin', 0o644);
  const requests = (mib * MiB) / FUSE_IO_BYTES;
  const latencies = new Float64Array(requests);
  let immediate = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let i = 0;
    const next = (): void => {
      if (i === requests) return resolve();
      const pos = i * FUSE_IO_BYTES;
      const data = source.subarray(pos % source.length, (pos % source.length) + FUSE_IO_BYTES);
      const start = performance.now();
      const k = i++;
      const reply = (): void => {
        latencies[k] = performance.now() - start;
        setImmediate(next);
      };
      const n = mode === 'adapter' ? fs.writeNow?.(fh, data, pos) : undefined;
      if (n !== undefined) {
        immediate++;
        process.nextTick(reply);
        return;
      }
      fs.write(fh, data, pos).then(() => process.nextTick(reply), reject);
    };
    next();
  });
  await fs.flush(fh);
  await fs.release(fh);
  const t1 = performance.now();
  const cpu = process.cpuUsage(cpu0);
  await m.sync(600_000);
  const t2 = performance.now();
  await m.close();
  const sorted = Array.from(latencies).sort((a, b) => a - b);
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  const p99 = sorted[Math.floor(sorted.length * 0.99)]!;
  return (
    `${mode}: close ${((t1 - t0) / 1000).toFixed(2)} s (${((mib * MiB) / 1e6 / ((t1 - t0) / 1000)).toFixed(0)} MB/s), ` +
    `reply mean ${(mean * 1000).toFixed(0)} us p99 ${(p99 * 1000).toFixed(0)} us, ` +
    `${immediate}/${requests} without a promise, CPU to close ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s, ` +
    `sync ${((t2 - t1) / 1000).toFixed(2)} s`
  );
}

async function main(): Promise<void> {
  const modes = process.argv[2] ? [process.argv[2]] : ['promise', 'adapter'];
  const rounds = Number(process.argv[3] ?? 2);
  const mib = Number(process.env.FILESPACE_PROBE_MIB ?? 1024);
  const source = randomBytes(64 * MiB);
  const bed = new EngineBed();
  await bed.start();
  try {
    for (let r = 0; r < rounds; r++) for (const mode of modes) console.log(await oneRound(bed, mode, mib, source));
  } finally {
    await bed.stop();
  }
}

runProbe(main);
