/**
 * Engine profile: one Filespace engine under `node --cpu-prof` (optionally `--heap-prof`)
 * through one workload, with its memory sampled, so a change on the data path can be explained
 * by where the engine thread's time and the process's memory go, not only by a rate.
 *
 *   node dist/test/bench/engineprofile.js <workload> [out-dir]
 *
 * Workloads: `seq` (dd bs=1M of FILESPACE_PROFILE_MIB, default 256, of random data, then
 * `filespace sync`; with FILESPACE_PROFILE_PAUSE=1 uploads are paused during the dd),
 * `limited` (the same from /dev/urandom under `upload-limit 16MiB`), `tar` (tar x of the npm
 * tree node_modules/@aws-sdk, then `filespace sync`), `cold` (the file of `seq` written and synced by one machine, then read with dd bs=1M by the profiled
 * engine of a second machine with an empty cache, mounted read-only), `randcold` (the same
 * file and machines, read by FILESPACE_PROFILE_READS random 4 KiB reads at queue depth 1,
 * default 2000, as the benchmark's cold random reads), `small` (the
 * benchmark's small-files probe: FILESPACE_PROFILE_FILES files of 4 KiB, default 2000, created,
 * listed with `ls -l`, stat'ed and deleted; with FILESPACE_PROFILE_PAUSE=1 uploads are paused
 * first, so the listing can be compared with and without uploads running), `creates`
 * (FILESPACE_PROFILE_FILES files of 4 KiB created and kept; with FILESPACE_PROFILE_PAUSE=1 uploads
 * are paused while they are created and resumed before the sync, so the "sync" window is the
 * upload of small files alone; the same for `tar`). Chunk size 4 MiB and a
 * 3 GiB cache, as in the benchmark; the S3 server is the benchmark's s3rver. Extra engine flags:
 * FILESPACE_PROFILE_NODE_OPTIONS (e.g. `--heap-prof`).
 *
 * It writes the engine's .cpuprofile into out-dir and prints: wall time of the workload and of
 * the sync, the engine's peak RSS (sampled every 50 ms, and VmHWM), its CPU, and a summary of
 * the profile (engineprofile-summary.ts). Like the benchmark, it never touches the mount from
 * its own process and unmounts and stops everything it started on the way out.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { Bed, type Linked, REPO, randomFile, tmpDir, until } from '../helpers/bed';
import { cpuMeter, memoryOf } from './procstat';
import { exec, must, runProbe } from './proc';
import { callControl } from '../../electron/host/control';
import { startS3rver } from './server';
import { type CpuProfile, summarise } from './engineprofile-summary';

const MiB = 1024 * 1024;

async function main(): Promise<void> {
  const workload = process.argv[2] ?? 'seq';
  if (!['seq', 'limited', 'tar', 'small', 'creates', 'cold', 'randcold'].includes(workload))
    throw new Error(`unknown workload "${workload}" (seq, limited, tar, small, creates, cold, randcold)`);
  const cold = workload === 'cold' || workload === 'randcold';
  const outDir = path.resolve(process.argv[3] ?? `engine-profile-${workload}`);
  const mib = Number(process.env.FILESPACE_PROFILE_MIB ?? 256);
  await fsp.mkdir(outDir, { recursive: true });
  const work = await tmpDir('prof');
  const server = await startS3rver(path.join(work, 's3'));
  const bed = new Bed();
  await bed.start(server);
  let pid = 0;
  let unmount: (() => Promise<void>) | undefined;
  let stopEngine: (() => Promise<void>) | undefined;
  try {
    let input = '';
    if (workload === 'seq' || cold) input = await randomFile(work, 'source.bin', mib * MiB);
    if (workload === 'tar') {
      const modules = await fsp.realpath(path.join(REPO, 'node_modules'));
      input = path.join(work, 'npm.tar');
      // FILESPACE_PROFILE_TREE=node_modules: the whole node_modules (as the benchmark's second tree).
      const whole = process.env.FILESPACE_PROFILE_TREE === 'node_modules';
      const from = whole ? path.dirname(modules) : modules;
      must(
        await exec('tar', ['cf', input, '--hard-dereference', '-C', from, whole ? path.basename(modules) : '@aws-sdk'], {
          timeoutMs: 300_000,
        }),
        'tar cf',
      );
    }
    const bucket = await server.newBucket('prof');
    const writer = await bed.filespace({ bucket, chunkSize: '4MiB', cacheSize: '3GiB' });
    let fs: Linked = writer;
    if (cold) {
      // Written by one machine, read by another with an empty cache.
      await writer.mount();
      must(await exec('dd', [`if=${input}`, `of=${writer.mnt}/seq.bin`, 'bs=1M', 'status=none'], { timeoutMs: 900_000 }), 'dd');
      await writer.sync();
      await writer.unmount();
      fs = await bed.link(await bed.machine('cold'), bucket, writer.prefix, '3GiB');
    }
    const flags = [
      '--cpu-prof',
      `--cpu-prof-dir=${outDir}`,
      ...(process.env.FILESPACE_PROFILE_NODE_OPTIONS ?? '').split(' ').filter(Boolean),
    ];
    if (workload === 'limited') await fs.machine.ok('set', fs.name, 'upload-limit', '16MiB');
    // The engine in the foreground, as `filespace mount` would start it, with the profiler's flags.
    const before = new Set(await fsp.readdir(outDir));
    const mountArgs = ['mount', fs.name, '--foreground', ...(cold ? ['--read-only'] : [])];
    const engine = spawn(process.execPath, [...flags, path.join(REPO, 'bin', 'filespace'), ...mountArgs], {
      env: fs.machine.env,
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    let exited = false;
    engine.once('exit', () => (exited = true));
    stopEngine = async () => {
      if (!exited) engine.kill('SIGKILL');
    };
    await until('the engine to mount', async () => {
      if (exited) throw new Error('the engine exited before mounting');
      return (await fs.status().catch(() => undefined))?.state === 'mounted';
    });
    pid = await fs.pid();
    unmount = () => fs.unmount();
    console.log(`engine RSS once mounted ${(((await memoryOf(pid))?.rss ?? 0) / 1e6).toFixed(0)} MB`);
    let peak = 0;
    const sampler = setInterval(() => {
      void memoryOf(pid).then((m) => {
        if (m) peak = Math.max(peak, m.rss);
      });
    }, 50);
    const cpu = await cpuMeter(pid);
    let smallLs: { fromUs: number; toUs: number } | undefined;
    const t0 = Date.now();
    const m0 = Number(process.hrtime.bigint() / 1000n);
    if (workload === 'seq') {
      const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
      const pause = process.env.FILESPACE_PROFILE_PAUSE === '1';
      if (pause) await callControl(sock, '/v1/pause', { paused: true });
      must(await exec('dd', [`if=${input}`, `of=${fs.mnt}/seq.bin`, 'bs=1M', 'status=none'], { timeoutMs: 900_000 }), 'dd');
      if (pause) await callControl(sock, '/v1/pause', { paused: false });
    } else if (workload === 'cold') {
      must(await exec('dd', [`if=${fs.mnt}/seq.bin`, 'of=/dev/null', 'bs=1M', 'status=none'], { timeoutMs: 900_000 }), 'dd');
    } else if (workload === 'randcold') {
      const reads = String(Number(process.env.FILESPACE_PROFILE_READS ?? 2000));
      const out = must(
        await exec(
          process.execPath,
          [path.join(__dirname, 'randread.js'), `${fs.mnt}/seq.bin`, String(mib * MiB), reads, '4096'],
          {
            timeoutMs: 900_000,
          },
        ),
        'random reads',
      );
      console.log(out.stdout.trim());
    } else if (workload === 'limited') {
      must(
        await exec('dd', ['if=/dev/urandom', `of=${fs.mnt}/limited.bin`, 'bs=1M', `count=${mib}`, 'status=none'], {
          timeoutMs: 900_000,
        }),
        'dd',
      );
    } else if (workload === 'creates') {
      const pause = process.env.FILESPACE_PROFILE_PAUSE === '1';
      const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
      if (pause) await callControl(sock, '/v1/pause', { paused: true });
      const files = Number(process.env.FILESPACE_PROFILE_FILES ?? 2000);
      // Another process creates them, one open/write/close each, as a tool would; each has its own
      // content (identical chunks are stored once, and would not show the cost of an upload).
      const script = `const fs=require('fs');const d=process.argv[1];fs.mkdirSync(d);const b=require('crypto').randomBytes(4096);
        for(let i=0;i<${files};i++){b.writeUInt32LE(i,0);fs.writeFileSync(d+'/f'+i,b);}`;
      must(await exec(process.execPath, ['-e', script, `${fs.mnt}/creates`], { timeoutMs: 900_000 }), 'creates');
      if (pause) await callControl(sock, '/v1/pause', { paused: false });
    } else if (workload === 'small') {
      if (process.env.FILESPACE_PROFILE_PAUSE === '1')
        await callControl(path.join(fs.machine.home, 'run', `${fs.name}.sock`), '/v1/pause', { paused: true });
      const files = String(Number(process.env.FILESPACE_PROFILE_FILES ?? 2000));
      const out = must(
        await exec(process.execPath, [path.join(__dirname, 'smallfiles.js'), `${fs.mnt}/small`, files, '4096', '1100'], {
          timeoutMs: 900_000,
        }),
        'small files',
      );
      console.log(out.stdout.trim());
      smallLs = (JSON.parse(out.stdout) as { ls: { fromUs: number; toUs: number } }).ls;
      if (process.env.FILESPACE_PROFILE_PAUSE === '1')
        await callControl(path.join(fs.machine.home, 'run', `${fs.name}.sock`), '/v1/pause', { paused: false });
    } else {
      const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
      const pause = process.env.FILESPACE_PROFILE_PAUSE === '1';
      if (pause) await callControl(sock, '/v1/pause', { paused: true });
      must(await exec('tar', ['xf', input, '-C', fs.mnt], { timeoutMs: 900_000 }), 'tar x');
      if (pause) await callControl(sock, '/v1/pause', { paused: false });
    }
    const t1 = Date.now();
    const m1 = Number(process.hrtime.bigint() / 1000n);
    if (!cold) await fs.sync();
    const t2 = Date.now();
    const m2 = Number(process.hrtime.bigint() / 1000n);
    const use = await cpu();
    clearInterval(sampler);
    const mem = await memoryOf(pid);
    // FILESPACE_PROFILE_IDLE_S: how resident memory settles once the engine is idle again.
    const idleS = Number(process.env.FILESPACE_PROFILE_IDLE_S ?? 0);
    for (let s = 5; s <= idleS; s += 5) {
      await new Promise((res) => setTimeout(res, 5000));
      console.log(`engine RSS after ${s} s idle: ${(((await memoryOf(pid))?.rss ?? 0) / 1e6).toFixed(0)} MB`);
    }
    console.log(
      `workload ${workload}: ${((t1 - t0) / 1000).toFixed(2)} s to close, sync ${((t2 - t1) / 1000).toFixed(2)} s, total ${((t2 - t0) / 1000).toFixed(2)} s`,
    );
    console.log(
      `engine peak RSS sampled ${(peak / 1e6).toFixed(0)} MB, VmHWM ${((mem?.hwm ?? 0) / 1e6).toFixed(0)} MB; CPU ${use?.total.toFixed(2)} cores, main thread ${use?.main.toFixed(2)}`,
    );
    await fs.unmount();
    unmount = undefined;
    // The profile is written as the engine exits.
    let prof: string | undefined;
    for (let i = 0; i < 100 && !prof; i++) {
      prof = (await fsp.readdir(outDir)).find((f) => !before.has(f) && f.endsWith('.cpuprofile') && f.includes(`.${pid}.`));
      if (!prof) await new Promise((res) => setTimeout(res, 200));
    }
    if (!prof) throw new Error('the engine wrote no profile');
    const dest = path.join(outDir, `${workload}.cpuprofile`);
    await fsp.rename(path.join(outDir, prof), dest);
    for (const f of await fsp.readdir(outDir))
      if (!before.has(f) && f.endsWith('.cpuprofile') && f !== `${workload}.cpuprofile`) await fsp.rm(path.join(outDir, f));
    const profile = JSON.parse(await fsp.readFile(dest, 'utf8')) as CpuProfile;
    console.log(summarise(profile));
    // The profile's clock is the monotonic one this process reads with hrtime.
    console.log(
      summarise(profile, {
        label:
          { tar: 'tar x', small: 'small files', creates: 'creates', cold: 'cold read', randcold: 'random reads' }[workload] ??
          'dd',
        fromUs: m0,
        toUs: m1,
      }),
    );
    if (smallLs) console.log(summarise(profile, { label: 'ls -l', ...smallLs }));
    console.log(summarise(profile, { label: 'sync', fromUs: m1, toUs: m2 }));
  } finally {
    if (unmount) await unmount().catch(() => undefined);
    await stopEngine?.();
    await bed.stop();
    await server.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

runProbe(main);
