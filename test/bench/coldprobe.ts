/**
 * Cold-read probe: one machine writes a file of FILESPACE_PROBE_MIB MiB (default 1024) of
 * random bytes and syncs it; then fresh machines with empty caches, each mounted read-only,
 * read it the benchmark's ways (seqread.js: open + first 4 KiB, then 1 MiB reads; randread.js:
 * FILESPACE_PROBE_READS (default 500) random 4 KiB reads at queue depth 1). For each it prints
 * the rate, time to first byte, the server's GETs and requests in flight on average, and the
 * engine's peak RSS (sampled every 50 ms) and CPU. The engine runs in the foreground as
 * `filespace mount` starts it; FILESPACE_PROBE_PROF=DIR adds `--cpu-prof` into DIR,
 * FILESPACE_PROBE_NODE_FLAGS adds node/V8 flags of its own (e.g. `--trace-gc`, to count the
 * garbage collections of a read; their output goes to the probe's), and
 * FILESPACE_PROBE_PERF=DIR records `perf record -g` of the engine during each read into DIR.
 *
 *   node dist/test/bench/coldprobe.js [seq|rand|both] [passes]
 *
 * Like the benchmark, it never touches the mount from its own process, and stops what it started.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Bed, REPO, randomFile, tmpDir, until } from '../helpers/bed';
import { cpuMeter, memoryOf, threadDelta, threadTicks } from './procstat';
import { exec, must, probe, runProbe } from './proc';
import { startS3rver } from './server';

const MiB = 1024 * 1024;

async function main(): Promise<void> {
  const which = process.argv[2] ?? 'both';
  const passes = Number(process.argv[3] ?? 1);
  const mib = Number(process.env.FILESPACE_PROBE_MIB ?? 1024);
  const reads = Number(process.env.FILESPACE_PROBE_READS ?? 500);
  const profDir = process.env.FILESPACE_PROBE_PROF;
  const perfDir = process.env.FILESPACE_PROBE_PERF;
  const work = await tmpDir('coldprobe');
  const server = await startS3rver(path.join(work, 's3'));
  const bed = new Bed();
  await bed.start(server);
  const stops: (() => Promise<void>)[] = [];
  try {
    const input = await randomFile(work, 'source.bin', mib * MiB);
    const bucket = await server.newBucket('cold');
    const writer = await bed.filespace({ bucket, chunkSize: '4MiB', cacheSize: '3GiB' });
    await writer.mount();
    must(await exec('dd', [`if=${input}`, `of=${writer.mnt}/seq.bin`, 'bs=1M', 'status=none'], { timeoutMs: 900_000 }), 'dd');
    await writer.sync();
    await writer.unmount();
    await fsp.rm(input);
    const kinds = which === 'both' ? ['seq', 'rand'] : [which];
    let n = 0;
    for (let pass = 0; pass < passes; pass++) {
      for (const kind of kinds) {
        const fs = await bed.link(await bed.machine(`cold${++n}`), bucket, writer.prefix, '3GiB');
        const flags = [
          ...(profDir ? ['--cpu-prof', `--cpu-prof-dir=${path.resolve(profDir)}`] : []),
          ...(process.env.FILESPACE_PROBE_NODE_FLAGS?.split(/\s+/).filter(Boolean) ?? []),
        ];
        const engine = spawn(
          process.execPath,
          [...flags, path.join(REPO, 'bin', 'filespace'), 'mount', fs.name, '--foreground', '--read-only'],
          {
            env: fs.machine.env,
            stdio: ['ignore', 'inherit', 'inherit'],
          },
        );
        let exited = false;
        engine.once('exit', () => (exited = true));
        const stop = async () => {
          if (!exited) await fs.unmount().catch(() => engine.kill('SIGKILL'));
        };
        stops.push(stop);
        await until('the engine to mount', async () => {
          if (exited) throw new Error('the engine exited before mounting');
          return (await fs.status().catch(() => undefined))?.state === 'mounted';
        });
        const pid = await fs.pid();
        const dir = server.bucketDir(bucket);
        if (dir)
          must(
            await exec('bash', ['-c', 'find "$1" -type f -size +1024k -exec cat {} + > /dev/null', 'bash', dir], {
              timeoutMs: 300_000,
            }),
            'warm',
          );
        let peak = 0;
        const sampler = setInterval(() => {
          void memoryOf(pid).then((m) => {
            if (m) peak = Math.max(peak, m.rss);
          });
        }, 50);
        const cpu = await cpuMeter(pid);
        const threads0 = await threadTicks(pid);
        await server.beginWindow();
        const perf = perfDir
          ? spawn('perf', ['record', '-g', '-q', '-o', path.join(path.resolve(perfDir), `${kind}${n}.data`), '-p', String(pid)], {
              stdio: 'ignore',
            })
          : undefined;
        const file = `${fs.mnt}/seq.bin`;
        const out =
          kind === 'seq'
            ? must(await exec(process.execPath, [probe('seqread'), file, String(mib * MiB)], { timeoutMs: 900_000 }), 'seqread')
            : must(
                await exec(process.execPath, [probe('randread'), file, String(mib * MiB), String(reads), '4096'], {
                  timeoutMs: 900_000,
                }),
                'randread',
              );
        const win = await server.endWindow();
        if (perf) {
          const done = new Promise((resolve) => perf.once('exit', resolve));
          perf.kill('SIGINT');
          await done;
        }
        const use = await cpu();
        const threads = threadDelta(threads0, await threadTicks(pid), { userSys: true });
        clearInterval(sampler);
        const r = JSON.parse(out.stdout) as {
          bytes?: number;
          ops?: number;
          seconds: number;
          ttfbUs?: number;
          openUs?: number;
          p50Us?: number;
          p99Us?: number;
        };
        const rate =
          kind === 'seq'
            ? `${((r.bytes ?? 0) / r.seconds / 1e6).toFixed(0)} MB/s, TTFB ${((r.ttfbUs ?? 0) / 1000).toFixed(1)} ms (open ${((r.openUs ?? 0) / 1000).toFixed(1)} ms)`
            : `${((r.ops ?? 0) / r.seconds).toFixed(0)} IOPS, p50 ${((r.p50Us ?? 0) / 1000).toFixed(2)} ms, p99 ${((r.p99Us ?? 0) / 1000).toFixed(2)} ms`;
        const used = Number(((await fs.status().catch(() => ({}))) as { cacheUsedBytes?: number }).cacheUsedBytes ?? NaN);
        console.log(
          `${kind}: ${rate}; ${r.seconds.toFixed(2)} s; GET ${win?.requests?.GET ?? '?'}, in flight ${win?.inflightAvg.toFixed(2)}/${win?.inflightMax}; engine peak RSS ${(peak / 1e6).toFixed(0)} MB, CPU ${use?.total.toFixed(2)} cores (main ${use?.main.toFixed(2)}); cache used ${(used / 1e6).toFixed(0)} MB`,
        );
        console.log(`  engine CPU seconds by thread: ${threads}`);
        await stop();
        await fsp.rm(path.join(fs.machine.home, 'cache'), { recursive: true, force: true }).catch(() => undefined);
      }
    }
  } finally {
    for (const s of stops) await s().catch(() => undefined);
    await bed.stop();
    await server.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

runProbe(main);
