/**
 * Memory probe: where the engine's resident memory goes, phase by phase, in the benchmark's
 * workloads on one writing mount (s3rver on loopback, 4 MiB chunks, 3 GiB cache):
 *   write    dd of FILESPACE_PROBE_MIB MiB (default 1024) of random bytes, then sync
 *   read     a warm read of it (cat)
 *   tar      tar x of FILESPACE_PROBE_TREE (default node_modules/@aws-sdk, a folder of this
 *            repository), then sync
 *   tard     tar d of that tree (the read-back)
 *   limited  256 MiB written under upload-limit 16 MiB/s, then sync
 * The engine runs in the foreground with memlog.ts preloaded, with the memory settings
 * `filespace mount` gives it (cli/engineProcess.ts; FILESPACE_PROBE_PLAIN=1: without them), so each phase's peak RSS is split
 * into the JS heaps (main thread, and upload encoder workers summed), buffers outside the heaps
 * (arrayBuffers) and the rest (native: SQLite, the FUSE addon, malloc arenas, code).
 *
 *   node dist/test/bench/memprobe.js [phases...]     (default: write read tar tard limited)
 *
 * FILESPACE_PROBE_MEMLOG=file keeps the engine's memory log (memlog.ts's rows) there.
 * Like the benchmark, it never touches the mount from its own process, and stops what it started.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Bed, REPO, randomFile, tmpDir, until } from '../helpers/bed';
import { exec, must, runProbe } from './proc';
import { startS3rver } from './server';
import { engineProcessEnv } from '../../electron/cli/engineProcess';

const MiB = 1024 * 1024;
const MB = 1e6;

interface Row {
  t: number;
  thread: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  malloced: number;
  rss?: number;
  arrayBuffers?: number;
}

async function procRss(pid: number): Promise<number> {
  const text = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/VmRSS:\s+(\d+)/.exec(text)?.[1] ?? 0) * 1024;
}

/** CPU seconds (user + system) the process has used. */
async function cpuSeconds(pid: number): Promise<number> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

async function rollup(pid: number): Promise<string> {
  const text = await fsp.readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? 0) / 1024;
  const threads = (await fsp.readdir(`/proc/${pid}/task`).catch(() => [])).length;
  return `anon ${kb('Anonymous').toFixed(0)} MiB, file ${(kb('Rss') - kb('Anonymous')).toFixed(0)} MiB, ${threads} threads`;
}

/** The memlog rows of [t0, t1], as one split of memory at the sample with the highest RSS. */
function split(rows: Row[], t0: number, t1: number): string {
  const inWin = rows.filter((r) => r.t >= t0 && r.t <= t1);
  const mains = inWin.filter((r) => r.rss !== undefined);
  if (mains.length === 0) return 'no samples';
  const top = mains.reduce((a, b) => (b.rss! > a.rss! ? b : a));
  // Worker heaps near that moment: the latest row of each worker thread at or before it.
  const workers = new Map<number, Row>();
  for (const r of inWin) if (r.thread !== top.thread && r.t <= top.t + 150) workers.set(r.thread, r);
  let wHeap = 0;
  let wMalloc = 0;
  for (const r of workers.values()) {
    wHeap += r.heapTotal;
    wMalloc += r.malloced;
  }
  const maxAb = Math.max(...mains.map((r) => r.arrayBuffers ?? 0));
  const maxHeap = Math.max(...mains.map((r) => r.heapTotal));
  const native = top.rss! - top.heapTotal - wHeap - (top.arrayBuffers ?? 0);
  return (
    `memlog peak rss ${(top.rss! / MB).toFixed(0)} MB = main heap ${(top.heapTotal / MB).toFixed(0)} (used ${(top.heapUsed / MB).toFixed(0)})` +
    ` + ${workers.size} worker heaps ${(wHeap / MB).toFixed(0)} + arrayBuffers ${((top.arrayBuffers ?? 0) / MB).toFixed(0)}` +
    ` + rest (native, code, malloc) ${(native / MB).toFixed(0)}; phase max heap ${(maxHeap / MB).toFixed(0)}, max arrayBuffers ${(maxAb / MB).toFixed(0)}, v8 malloced main ${(top.malloced / MB).toFixed(0)} workers ${(wMalloc / MB).toFixed(0)}`
  );
}

async function main(): Promise<void> {
  const phases = process.argv.slice(2).length ? process.argv.slice(2) : ['write', 'read', 'tar', 'tard', 'limited'];
  const mib = Number(process.env.FILESPACE_PROBE_MIB ?? 1024);
  const treeRel = process.env.FILESPACE_PROBE_TREE ?? path.join('node_modules', '@aws-sdk');
  const work = await tmpDir('memprobe');
  const memlog = path.join(work, 'memlog.jsonl');
  const server = await startS3rver(path.join(work, 's3'));
  const bed = new Bed();
  await bed.start(server);
  let stop = async () => {};
  try {
    const bucket = await server.newBucket('mem');
    const fs = await bed.filespace({ bucket, chunkSize: '4MiB', cacheSize: '3GiB' });
    const snapDir = path.join(work, 'snapshots');
    await fsp.mkdir(snapDir);
    const extra = (process.env.FILESPACE_PROBE_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    // The engine as `filespace mount` starts it in the background (cli/engineProcess.ts), or
    // with FILESPACE_PROBE_PLAIN=1 as a bare node process (for a before/after comparison).
    const cli = path.join(REPO, 'bin', 'filespace');
    const plain = Boolean(process.env.FILESPACE_PROBE_PLAIN);
    const env = plain ? fs.machine.env : engineProcessEnv(fs.machine.env);
    const engine = spawn(
      process.execPath,
      ['--require', path.join(__dirname, 'memlog.js'), ...extra, cli, 'mount', fs.name, '--foreground'],
      { cwd: snapDir, env: { ...env, FILESPACE_MEMLOG: memlog }, stdio: ['ignore', 'inherit', 'inherit'] },
    );
    let exited = false;
    engine.once('exit', () => (exited = true));
    stop = async () => {
      if (!exited) await fs.unmount().catch(() => engine.kill('SIGKILL'));
    };
    await until('the engine to mount', async () => {
      if (exited) throw new Error('the engine exited before mounting');
      return (await fs.status().catch(() => undefined))?.state === 'mounted';
    });
    const pid = await fs.pid();
    let peak = 0;
    const sampler = setInterval(() => {
      void procRss(pid).then((r) => (peak = Math.max(peak, r)));
    }, 50);
    const run = async (name: string, fn: () => Promise<void>) => {
      peak = await procRss(pid);
      const cpu0 = await cpuSeconds(pid);
      const t0 = Date.now();
      await fn();
      const t1 = Date.now();
      const cpu = (await cpuSeconds(pid)) - cpu0;
      await new Promise((r) => setTimeout(r, 150));
      const rows = (await fsp.readFile(memlog, 'utf8'))
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Row);
      console.log(
        `${name}: ${((t1 - t0) / 1000).toFixed(1)} s, engine CPU ${cpu.toFixed(1)} s, peak RSS ${(peak / MB).toFixed(0)} MB; after: ${await rollup(pid)}`,
      );
      console.log(`  ${split(rows, t0, t1)}`);
      // FILESPACE_PROBE_NODE_FLAGS=--heapsnapshot-signal=SIGUSR2 with FILESPACE_PROBE_SNAPSHOTS=1:
      // a heap snapshot of the engine after each phase (in the engine's working folder).
      if (process.env.FILESPACE_PROBE_SNAPSHOTS) {
        const before = new Set(await fsp.readdir(snapDir));
        process.kill(pid, 'SIGUSR2');
        await until(
          'the heap snapshot',
          async () => {
            const fresh = (await fsp.readdir(snapDir)).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
            if (fresh.length === 0) return false;
            const a = (await fsp.stat(path.join(snapDir, fresh[0]!))).size;
            await new Promise((r) => setTimeout(r, 1000));
            return a > 0 && (await fsp.stat(path.join(snapDir, fresh[0]!))).size === a;
          },
          300_000,
        );
      }
    };
    console.log(`mounted: RSS ${((await procRss(pid)) / MB).toFixed(0)} MB; ${await rollup(pid)}`);
    const sh = async (cmd: string, args: string[], what: string) => {
      must(await exec(cmd, args, { timeoutMs: 900_000 }), what);
    };
    let tarball = '';
    for (const p of phases) {
      if (p === 'write') {
        const input = await randomFile(work, 'source.bin', mib * MiB);
        await run('write (dd bs=1M)', () => sh('dd', [`if=${input}`, `of=${fs.mnt}/seq.bin`, 'bs=1M', 'status=none'], 'dd'));
        await run('write: until durable', () => fs.sync());
        await fsp.rm(input);
      } else if (p === 'read') {
        await run('warm read (cat)', () => sh('bash', ['-c', 'cat "$1" > /dev/null', 'bash', `${fs.mnt}/seq.bin`], 'cat'));
      } else if (p === 'tar' || p === 'tard') {
        if (!tarball) {
          const source = await fsp.realpath(path.join(REPO, treeRel));
          tarball = path.join(work, 'tree.tar');
          await sh('tar', ['cf', tarball, '--hard-dereference', '-C', path.dirname(source), path.basename(source)], 'tar cf');
        }
        if (p === 'tar') {
          await fsp.mkdir(path.join(fs.mnt, 'tree')).catch(() => undefined);
          await run(`tar x ${treeRel}`, () =>
            exec('tar', ['xf', tarball, '-C', path.join(fs.mnt, 'tree')], { timeoutMs: 900_000 }).then(() => undefined),
          );
          await run('tar x: until durable', () => fs.sync());
        } else {
          await run(`tar d ${treeRel}`, () =>
            exec('tar', ['df', tarball, '-C', path.join(fs.mnt, 'tree')], { timeoutMs: 900_000 }).then(() => undefined),
          );
        }
      } else if (p === 'limited') {
        await fs.machine.ok('set', fs.name, 'upload-limit', '16MiB');
        await run('upload-limit 16 MiB/s, 256 MiB then sync', async () => {
          await sh('dd', ['if=/dev/urandom', `of=${fs.mnt}/limited.bin`, 'bs=1M', 'count=256', 'status=none'], 'dd');
          await fs.sync();
        });
        await fs.machine.ok('set', fs.name, 'upload-limit', 'off');
      } else if (p === 'idle') {
        await run('idle 10 s', () => new Promise((r) => setTimeout(r, 10_000)));
      } else throw new Error(`unknown phase ${p}`);
    }
    clearInterval(sampler);
  } finally {
    await stop().catch(() => undefined);
    await bed.stop();
    await server.stop();
    if (process.env.FILESPACE_PROBE_SNAPSHOTS)
      await fsp
        .cp(path.join(work, 'snapshots'), process.env.FILESPACE_PROBE_SNAPSHOTS, { recursive: true })
        .catch(() => undefined);
    // FILESPACE_PROBE_MEMLOG=file: the engine's memory log is kept there (one JSON row per sample).
    if (process.env.FILESPACE_PROBE_MEMLOG) await fsp.copyFile(memlog, process.env.FILESPACE_PROBE_MEMLOG).catch(() => undefined);
    await fsp.rm(work, { recursive: true, force: true });
  }
}

runProbe(main);
