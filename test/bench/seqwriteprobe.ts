/**
 * Sequential-write probe: the benchmark's first workload alone, with what it costs. A filespace
 * on the test S3 server (s3rver, as the benchmark uses), mounted by the real `filespace`
 * command (4 MiB chunks, a 3 GiB cache); per pass, `dd bs=1M` writes FILESPACE_PROBE_MIB MiB
 * (default 1024) of random bytes into a new file, then the mount is synced. It prints, per pass:
 * the rate to close and the time until durable (dd start to sync done), the machine's load, the
 * FUSE requests of the write by operation (answered in the addon or crossed to the engine's JS
 * thread, from the mount's `/v1/debug/fuse`), and the engine's CPU seconds by thread. The
 * counts and CPU seconds can be read on a busy machine; the rates only back to back.
 *
 *   node dist/test/bench/seqwriteprobe.js [passes]
 *
 * Like the benchmark, it never touches the mount from its own process, and stops what it started.
 */

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Bed, randomFile, tmpDir } from '../helpers/bed';
import { callControl } from '../../electron/host/control';
import type { FuseCountsDto } from '../../electron/contract/api';
import { exec, must, runProbe } from './proc';
import { startS3rver } from './server';

const MiB = 1024 * 1024;

/** CPU seconds (user + system) of each of a process's threads, summed by thread name. */
async function threadSeconds(pid: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const tids = await fsp.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const tid of tids) {
    const stat = await fsp.readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, close).replace(/[0-9]+$/, '#');
    const f = stat.slice(close + 2).split(' ');
    out.set(name, (out.get(name) ?? 0) + (Number(f[11]) + Number(f[12])) / 100);
  }
  return out;
}

function secondsDelta(a: Map<string, number>, b: Map<string, number>): string {
  const rows: string[] = [];
  for (const [name, t] of b) {
    const d = t - (a.get(name) ?? 0);
    if (d >= 0.05) rows.push(`${name} ${d.toFixed(2)}`);
  }
  return rows.join(', ');
}

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
  const work = await tmpDir('seqwriteprobe');
  const server = await startS3rver(path.join(work, 's3'));
  const bed = new Bed();
  await bed.start(server);
  try {
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
      const t0 = await threadSeconds(pid);
      const start = performance.now();
      must(
        await exec('dd', [`if=${input}`, `of=${fs.mnt}/seq${pass}.bin`, 'bs=1M', `count=${mib}`, 'status=none'], {
          timeoutMs: 900_000,
        }),
        'dd',
      );
      const closed = (performance.now() - start) / 1000;
      const c1 = await counts();
      const t1 = await threadSeconds(pid);
      await fs.sync();
      const durable = (performance.now() - start) / 1000;
      const t2 = await threadSeconds(pid);
      console.log(
        `pass ${pass} (load ${load}): to close ${((mib * MiB) / closed / 1e6).toFixed(0)} MB/s (${closed.toFixed(2)} s); ` +
          `until durable ${((mib * MiB) / durable / 1e6).toFixed(0)} MB/s (${durable.toFixed(2)} s)`,
      );
      if (c0 && c1) {
        console.log(`  requests crossed to JS: ${countsDelta(c0.crossed, c1.crossed)}`);
        console.log(`  answered in the addon: ${countsDelta(c0.answered, c1.answered)}`);
      }
      console.log(`  engine CPU s to close by thread: ${secondsDelta(t0, t1)}`);
      console.log(`  engine CPU s close to durable by thread: ${secondsDelta(t1, t2)}`);
    }
    await fs.unmount();
  } finally {
    await bed.stop();
    await server.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

runProbe(main);
