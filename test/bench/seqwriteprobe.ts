/**
 * Sequential-write probe: the benchmark's first workload alone, with what it costs. A filespace
 * on the test S3 server (s3rver, as the benchmark uses), mounted by the real `filespace`
 * command (4 MiB chunks, a 3 GiB cache); per pass, `dd bs=1M` writes FILESPACE_PROBE_MIB MiB
 * (default 1024) of random bytes into a new file, then the mount is synced. It prints, per pass:
 * the rate to close and the time until durable (dd start to sync done), the machine's load, the
 * FUSE requests of the write by operation (answered in the addon or crossed to the engine's JS
 * thread, from the mount's `/v1/debug/fuse`), and the engine's CPU seconds by thread. The
 * counts and CPU seconds can be read on a busy machine; the rates only back to back.
 * FILESPACE_PROBE_PERF=DIR records `perf record -g` of the engine during each pass's write
 * (to close) into DIR.
 *
 *   node dist/test/bench/seqwriteprobe.js [passes]
 *
 * Like the benchmark, it never touches the mount from its own process, and stops what it started.
 */

import * as os from 'node:os';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { randomFile } from '../helpers/bed';
import { callControl } from '../../electron/host/control';
import type { FuseCountsDto } from '../../electron/contract/api';
import { ddWrite, exec, must, runProbe } from './proc';
import { threadDelta, threadTicks } from './procstat';
import { withProbeBed } from './server';

const MiB = 1024 * 1024;

function countsDelta(a: Record<string, number>, b: Record<string, number>): string {
  const rows: [string, number][] = [];
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d) rows.push([k, d]);
  }
  return (
    rows
      .sort((x, y) => y[1] - x[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none'
  );
}

async function main(): Promise<void> {
  const passes = Number(process.argv[2] ?? 1);
  const mib = Number(process.env.FILESPACE_PROBE_MIB ?? 1024);
  await withProbeBed('seqwriteprobe', async ({ work, server, bed }) => {
    const input = await randomFile(work, 'source.bin', mib * MiB);
    // Read once so that dd reads it from the page cache in every pass.
    must(await exec('bash', ['-c', 'cat "$1" > /dev/null', 'bash', input], { timeoutMs: 300_000 }), 'warm');
    const bucket = await server.newBucket('seqwrite');
    const fs = await bed.filespace({ bucket, chunkSize: '4MiB', cacheSize: '3GiB' });
    await fs.mount();
    const pid = await fs.pid();
    const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    const counts = async (): Promise<FuseCountsDto | undefined> =>
      (await callControl(sock, '/v1/debug/fuse', {})).counts ?? undefined;
    for (let pass = 1; pass <= passes; pass++) {
      const load = os.loadavg()[0]?.toFixed(2);
      const c0 = await counts();
      const t0 = await threadTicks(pid);
      const perf = process.env.FILESPACE_PROBE_PERF
        ? spawn('perf', ['record', '-g', '-q', '-o', `${process.env.FILESPACE_PROBE_PERF}/w${pass}.data`, '-p', String(pid)], {
            stdio: 'ignore',
          })
        : undefined;
      const start = performance.now();
      await ddWrite(input, `${fs.mnt}/seq${pass}.bin`, mib);
      const closed = (performance.now() - start) / 1000;
      if (perf) {
        const done = new Promise((resolve) => perf.once('exit', resolve));
        perf.kill('SIGINT');
        await done;
      }
      const c1 = await counts();
      const t1 = await threadTicks(pid);
      await fs.sync();
      const durable = (performance.now() - start) / 1000;
      const t2 = await threadTicks(pid);
      console.log(
        `pass ${pass} (load ${load}): to close ${((mib * MiB) / closed / 1e6).toFixed(0)} MB/s (${closed.toFixed(2)} s); ` +
          `until durable ${((mib * MiB) / durable / 1e6).toFixed(0)} MB/s (${durable.toFixed(2)} s)`,
      );
      if (c0 && c1) {
        console.log(`  requests crossed to JS: ${countsDelta(c0.crossed, c1.crossed)}`);
        console.log(`  answered in the addon: ${countsDelta(c0.answered, c1.answered)}`);
      }
      console.log(`  engine CPU s to close by thread: ${threadDelta(t0, t1)}`);
      console.log(`  engine CPU s close to durable by thread: ${threadDelta(t1, t2)}`);
    }
    await fs.unmount();
  });
}

runProbe(main);
