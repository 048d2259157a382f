/**
 * Upload probe: the benchmark's two upload-bound phases alone, with what the bucket saw. A
 * filespace on the test S3 server (s3rver), mounted by the real `filespace` command (4 MiB
 * chunks, a 3 GiB cache), as the benchmark mounts it. Per pass:
 * - `dd bs=1M` of FILESPACE_PROBE_MIB MiB (default 1024) of random bytes into a new file, then
 *   `filespace sync`: the rate to close, until durable, and the PUTs (count, in flight on average
 *   and at most) made before the close and after it;
 * - `tar x` of the repository's node_modules (packed once, hard links as plain files, as the
 *   benchmark does) into a new folder, then `filespace sync`: the time to tar's exit and until
 *   durable, the PUTs made during tar and after it, and what was left to upload at tar's exit.
 * FILESPACE_PROBE_PHASES (dd,tar) picks the phases. Every 500 ms it samples the mount's status
 * (dirty bytes and files, pending metadata ops) for a short timeline of the drain. The engine's
 * CPU seconds by thread are printed per phase. Counts and CPU seconds can be read on a busy
 * machine; the times only back to back.
 *
 *   node dist/test/bench/uploadprobe.js [passes]
 */

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomFile } from '../helpers/bed';
import { ddWrite, exec, must, runProbe } from './proc';
import { threadDelta, threadTicks } from './procstat';
import { withProbeBed } from './server';

const MiB = 1024 * 1024;

interface Window {
  inflightAvg: number;
  inflightMax: number;
  requests?: Record<string, number>;
  seconds?: number;
}

function describe(w: Window | undefined): string {
  if (!w) return '?';
  const reqs = Object.entries(w.requests ?? {})
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  return `${reqs || 'no requests'}; in flight ${w.inflightAvg.toFixed(2)} avg, ${w.inflightMax} max`;
}

async function main(): Promise<void> {
  const passes = Number(process.argv[2] ?? 1);
  const mib = Number(process.env.FILESPACE_PROBE_MIB ?? 1024);
  const phases = (process.env.FILESPACE_PROBE_PHASES ?? 'dd,tar').split(',');
  await withProbeBed('uploadprobe', async ({ work, server, bed }) => {
    const input = await randomFile(work, 'source.bin', mib * MiB);
    const tarball = path.join(work, 'nm.tar');
    const modules = await fsp.realpath(path.join(__dirname, '..', '..', '..', 'node_modules'));
    must(
      await exec('tar', ['cf', tarball, '--hard-dereference', '-C', path.dirname(modules), path.basename(modules)], {
        timeoutMs: 300_000,
      }),
      'tar cf',
    );
    must(await exec('bash', ['-c', 'cat "$@" > /dev/null', 'bash', input, tarball], { timeoutMs: 300_000 }), 'warm');
    const bucket = await server.newBucket('uploadprobe');
    const fs = await bed.filespace({ bucket, chunkSize: '4MiB', cacheSize: '3GiB' });
    await fs.mount();
    const pid = await fs.pid();
    const timeline = (t0: number) => {
      const rows: string[] = [];
      let on = true;
      const done = (async () => {
        while (on) {
          const st = await fs.status().catch(() => undefined);
          if (st)
            rows.push(
              `${((performance.now() - t0) / 1000).toFixed(1)}s dirty ${(Number(st.dirtyBytes) / 1e6).toFixed(0)} MB/${Number(st.dirtyFiles)} files, meta ${Number(st.pendingMetaOps)}`,
            );
          await new Promise((r) => setTimeout(r, 500));
        }
      })();
      return async () => {
        on = false;
        await done;
        return rows;
      };
    };
    const run = async (label: string, work: () => Promise<unknown>) => {
      const load = os.loadavg()[0]?.toFixed(2);
      const c0 = await threadTicks(pid);
      await server.beginWindow();
      const start = performance.now();
      const stopTimeline = timeline(start);
      await work();
      const closed = (performance.now() - start) / 1000;
      const w1 = await server.endWindow();
      const st = await fs.status();
      const c1 = await threadTicks(pid);
      await fs.sync();
      const durable = (performance.now() - start) / 1000;
      const w2 = await server.endWindow();
      const c2 = await threadTicks(pid);
      const rows = await stopTimeline();
      console.log(
        `${label} (load ${load}): done ${closed.toFixed(2)} s, durable ${durable.toFixed(2)} s; ` +
          `left at the end: ${(Number(st.dirtyBytes) / 1e6).toFixed(0)} MB in ${Number(st.dirtyFiles)} files, ${Number(st.pendingMetaOps)} meta ops`,
      );
      console.log(`  during: ${describe(w1)}`);
      console.log(`  after:  ${describe(w2)}`);
      console.log(`  engine CPU s during: ${threadDelta(c0, c1)}; after: ${threadDelta(c1, c2)}`);
      if (process.env.FILESPACE_PROBE_TIMELINE) for (const r of rows) console.log(`    ${r}`);
      return { closed, durable };
    };
    for (let pass = 1; pass <= passes; pass++) {
      if (phases.includes('dd')) {
        const r = await run(`pass ${pass} dd ${mib} MiB + sync`, () => ddWrite(input, `${fs.mnt}/seq${pass}.bin`, mib));
        console.log(
          `  to close ${((mib * MiB) / r.closed / 1e6).toFixed(0)} MB/s, until durable ${((mib * MiB) / r.durable / 1e6).toFixed(0)} MB/s`,
        );
      }
      if (phases.includes('tar')) {
        const dir = `${fs.mnt}/tree${pass}`;
        await run(`pass ${pass} tar x node_modules + sync`, async () => {
          must(await exec('mkdir', [dir], { timeoutMs: 30_000 }), 'mkdir');
          const r = await exec('tar', ['xf', tarball, '-C', dir], { timeoutMs: 900_000 });
          if (r.code === null) must(r, 'tar x');
        });
      }
    }
    await fs.unmount();
  });
}

runProbe(main);
