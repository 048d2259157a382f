/**
 * PUT cost: the CPU the engine's thread spends per chunk PUT, through the SDK and through the
 * direct path (store/s3direct.ts), against the benchmark's s3rver (its own process). CPU time
 * of this process is what is compared, so the figure depends little on the machine's load;
 * rounds alternate between the two paths so drift affects both alike.
 *
 *   node dist/test/bench/putcost.js [object-bytes=4096] [puts-per-round=1000] [rounds=3] [concurrency=8]
 *
 * Prints per path and round: µs of CPU (user+system) per PUT and wall time, then the medians.
 * Its scratch folder (the server's objects) is removed at the end.
 */

import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { tmpDir } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';
import { startS3rver } from './server';
import { runProbe } from './proc';

async function main(): Promise<void> {
  const [bytesArg, countArg, roundsArg, concArg] = process.argv.slice(2);
  const bytes = Number(bytesArg ?? 4096);
  const count = Number(countArg ?? 1000);
  const rounds = Number(roundsArg ?? 3);
  const concurrency = Number(concArg ?? 8);
  const work = await tmpDir('putcost');
  const server = await startS3rver(path.join(work, 's3'));
  try {
    const bucket = await server.newBucket('putcost');
    const body = randomBytes(bytes);
    const crc = crc32(body);
    const results: Record<string, number[]> = { sdk: [], direct: [] };
    let seq = 0;
    for (let r = 0; r < rounds + 1; r++) {
      for (const mode of ['sdk', 'direct'] as const) {
        const store = s3StoreFor(server.endpoint, bucket, mode, { directPut: mode === 'direct' });
        // Warm up: sockets, endpoint resolution, lazily loaded SDK modules.
        await store.put(`chunks/warm/${++seq}`, body, { crc32: crc });
        const cpu0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        let next = 0;
        await Promise.all(
          Array.from({ length: concurrency }, async () => {
            while (next < count) {
              next++;
              await store.put(`chunks/${(++seq).toString(16).padStart(2, '0').slice(-2)}/${seq}`, body, { crc32: crc });
            }
          }),
        );
        const cpu = process.cpuUsage(cpu0);
        const wall = Number(process.hrtime.bigint() - t0) / 1e9;
        await store.close();
        const usPerPut = (cpu.user + cpu.system) / count;
        if (r === 0) continue; // the first round only warms up
        results[mode]!.push(usPerPut);
        console.log(
          `${mode.padEnd(6)} round ${r}: ${usPerPut.toFixed(0)} µs CPU per PUT (user ${(cpu.user / count).toFixed(0)}), ${(count / wall).toFixed(0)} PUT/s`,
        );
      }
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
    console.log(
      `median CPU per PUT of ${bytes} B: SDK ${median(results.sdk!).toFixed(0)} µs, direct ${median(results.direct!).toFixed(0)} µs`,
    );
  } finally {
    await server.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

runProbe(main);
