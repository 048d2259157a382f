/**
 * Filespace benchmark: `npm run bench` (set FILESPACE_BENCH_GIB=0.25 for a quick run).
 *
 * What it measures, in one run against one local S3 server (moto, started here on a free
 * port), through real FUSE mounts served by the real `filespace` daemon:
 *   1. sequential write of a 1 GiB random file with dd bs=1M (time to close = "write to
 *      cache"), then `filespace sync` until everything is in the bucket ("write + upload");
 *   2. warm sequential read of that file (its chunks are in the local cache; best of 3);
 *   3. cold sequential read on a freshly linked machine with an empty cache, verified with cmp;
 *   4. random 4 KiB reads at queue depth 1 (IOPS, p50/p99 latency), warm; best of 3;
 *   5. 5,000 small files: create, stat, delete (ops/s each);
 *   6. `tar x` of a real tree (this repository's node_modules), its upload, and a read-back
 *      comparison with `tar d`;
 *   7. the ceilings those figures are judged against, measured in the same run on the same
 *      machine: a do-nothing FUSE filesystem on fuse-native mounted with the product's
 *      options (nullfs.ts), and raw S3 PUT/GET through the product's S3Store with the
 *      engine's object size and concurrency (s3ceiling.ts);
 *   8. peak resident memory of the engine daemon (polled every 200 ms, plus VmHWM, also per
 *      phase), and of the S3 server for context. Per phase it also records the CPU of the
 *      engine and of its JS thread, of the server, of the tools it ran and of the whole
 *      machine (so load from outside the benchmark shows), and the S3 requests in flight, to
 *      tell an engine bottleneck (JS thread pegged, or waiting with few requests out) from a
 *      server or machine limit. When a phase fails, it says what the engine was doing.
 *
 * Why: throughput claims mean little in isolation. Each figure is shown next to the best
 * this machine can do for the same operation (FUSE alone, S3 alone), with the targets the
 * design sets (warm read >= 0.7 of the FUSE read ceiling, write to cache >= 0.6 of the FUSE
 * write ceiling, cold read >= 0.6 of raw S3 GET, engine peak RSS < 300 MB).
 * Results go to BENCHMARKS.md at the repository root and to stdout.
 *
 * Safety: the benchmark never touches a mount from its own process (every access is a child
 * process: dd, tar, cmp, the probes), bounds every wait, and on exit, error, signal or its
 * overall time limit unmounts everything it mounted (aborting a hung FUSE connection if
 * need be), stops the processes it started, and removes its scratch files.
 * Units: MB = 10^6 bytes, MiB = 2^20 bytes.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_SETTINGS } from '../../electron/engine/config';
import { Bed, CLI, Machine, REPO, randomFile, tmpDir } from '../helpers/bed';
import { productMountOptions } from './mountopts';
import { connectionSampler, cpuMeter, CpuUse, findProcess, machineMeter, RssSampler } from './procstat';

// ---- settings -------------------------------------------------------------------------------

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const MB = 1e6;

// The pinned AWS SDK's notice about future Node versions is noise here (the bench creates buckets).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

function benchScale(): number {
  const raw = process.env.FILESPACE_BENCH_GIB;
  if (raw === undefined || raw.trim() === '') return 1;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0 || v > 8) throw new Error(`FILESPACE_BENCH_GIB must be a number of GiB in (0, 8], got "${raw}"`);
  return v;
}

const SCALE = benchScale();
const DATA_BYTES = Math.max(16, Math.round(SCALE * 1024)) * MiB;
const CHUNK_SIZE = '4MiB';
const CHUNK_BYTES = 4 * MiB;
const CONCURRENCY = DEFAULT_SETTINGS.uploadConcurrency;
/** The upload limit phase: this much data at this limit (one chunk of burst rides on top). */
const LIMIT_MIB = 16;
const LIMITED_MIB = Math.min(256, DATA_BYTES / MiB);
const CACHE_SIZE = `${Math.max(3, Math.ceil((3 * DATA_BYTES) / GiB))}GiB`;
const RANDOM_READS = 2000;
const RANDOM_BLOCK = 4096;
const SMALL_FILES = 5000;
const SMALL_FILE_BYTES = 1024;
/** Longer than the attr/entry timeouts, so stats after creation reach the filesystem. */
const SETTLE_MS = 1100;
const TREE_PARENT = REPO;
const TREE_NAME = 'node_modules';
const RUN_LIMIT_MS = 15 * 60_000;
/** Bound for one pass over the data set: slower than ~8 MB/s is treated as a hang. */
const DATA_TIMEOUT_MS = Math.round(30_000 + (DATA_BYTES / (8 * MB)) * 1000);
/** Repetitions of the short streaming passes whose best run is reported (see the report's Settings). */
const REPEATS = 3;
const TARGETS = { warmRead: 0.7, seqWrite: 0.6, coldRead: 0.6, rssBytes: 300 * MB };

// ---- logging --------------------------------------------------------------------------------

const started = Date.now();
function log(msg: string): void {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
}

function errMsg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

// ---- child processes with bounded waits -----------------------------------------------------

interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
  readonly timedOut: boolean;
}

const children = new Set<ChildProcess>();
const childEnv: NodeJS.ProcessEnv = { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };

/** CPU seconds used by every command exec() ran to completion (the tools under test, the CLI). */
let toolCpuSeconds = 0;

function killGroup(child: ChildProcess): void {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    child.kill('SIGKILL');
  }
}

/**
 * Runs a command in its own process group, through bash so that its CPU time (bash `times`,
 * reported on fd 3) can be charged to the phase; on timeout kills the group and stops waiting
 * (a process stuck in a hung mount cannot die until the mount is aborted).
 */
function exec(cmd: string, args: string[], opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string }): Promise<ExecResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('bash', ['-c', '"$@"; rc=$?; times >&3; exit $rc', 'bash', cmd, ...args], {
      env: opts.env ?? childEnv, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe', 'pipe'], detached: true,
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    let times = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout = (stdout + d).slice(-2_000_000)));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-20_000)));
    (child.stdio[3] as NodeJS.ReadableStream).setEncoding('utf8').on('data', (d: string) => (times += d));
    let timedOut = false;
    let done = false;
    let grace: NodeJS.Timeout | undefined;
    const finish = (code: number | null) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (grace) clearTimeout(grace);
      children.delete(child);
      // `times` prints the shell's user/system times, then its children's: "0m0.520s 0m0.110s".
      const childLine = times.trim().split('\n')[1] ?? '';
      for (const m of childLine.matchAll(/(\d+)m([\d.]+)s/g)) toolCpuSeconds += Number(m[1]) * 60 + Number(m[2]);
      resolve({ code, stdout, stderr, seconds: Number(process.hrtime.bigint() - t0) / 1e9, timedOut });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child);
      grace = setTimeout(() => finish(null), 3000);
    }, opts.timeoutMs);
    child.on('error', (err) => {
      stderr += String(err);
      finish(null);
    });
    child.on('close', (code) => finish(code));
  });
}

function must(r: ExecResult, what: string): ExecResult {
  if (r.timedOut) throw new Error(`${what} did not finish within its time limit (${r.seconds.toFixed(0)} s): ${r.stderr.trim().slice(-500)}`);
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-800)}`);
  return r;
}

/** The last line of a probe's stdout, parsed as JSON. */
function jsonOf<T>(r: ExecResult): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as T;
}

function probe(script: string): string {
  return path.join(__dirname, `${script}.js`);
}

// ---- mounts ---------------------------------------------------------------------------------

/** "major:minor" of the filesystem mounted at dir, or undefined when nothing is (per mountinfo). */
async function mountDevice(dir: string): Promise<string | undefined> {
  const abs = path.resolve(dir);
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    if (decode(f[4] ?? '') === abs) return f[2];
  }
  return undefined;
}

/** Last resort for a hung mount: abort its FUSE connection, then detach it. */
async function abortMount(dir: string): Promise<void> {
  const dev = await mountDevice(dir);
  if (!dev) return;
  const minor = dev.split(':')[1];
  await fsp.writeFile(`/sys/fs/fuse/connections/${minor}/abort`, '1').catch(() => undefined);
  await exec('fusermount', ['-uz', dir], { timeoutMs: 10_000 });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  return !alive(pid);
}

/** The do-nothing filesystem (nullfs.ts) in a child process. */
class NullFs {
  /** The libfuse option string the ceiling filesystem was mounted with. */
  options = '';

  private constructor(readonly mnt: string, readonly child: ChildProcess) {}

  get pid(): number {
    return this.child.pid!;
  }

  static async start(mnt: string, zeroBytes: number): Promise<NullFs> {
    checkAbort();
    await fsp.mkdir(mnt, { recursive: true });
    const child = spawn(process.execPath, [probe('nullfs'), mnt, String(zeroBytes)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const fs = new NullFs(mnt, child);
    state.nullfs = fs;
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the ceiling filesystem did not mount within 20 s')), 20_000);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        const m = /ready (\S*)/.exec(d);
        if (m) {
          fs.options = m[1] ?? '';
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the ceiling filesystem exited (${code}): ${err.trim()}`));
      });
    });
    return fs;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGTERM');
      if (!(await waitGone(this.pid, 8000))) {
        await abortMount(this.mnt);
        this.child.kill('SIGKILL');
        await waitGone(this.pid, 3000);
      }
    }
    if (await mountDevice(this.mnt)) await exec('fusermount', ['-uz', this.mnt], { timeoutMs: 10_000 });
    if (state.nullfs === this) state.nullfs = undefined;
  }
}

/** One linked filespace on one simulated machine, driven through the `filespace` command. */
class Space {
  pid: number | undefined;
  mounted = false;

  constructor(readonly machine: Machine, readonly name: string, readonly mnt: string) {
    state.spaces.push(this);
  }

  cli(args: string[], timeoutMs: number): Promise<ExecResult> {
    return exec(process.execPath, [CLI, ...args], { env: this.machine.env, timeoutMs });
  }

  async mount(): Promise<number> {
    checkAbort();
    must(await this.cli(['mount', this.name], 150_000), 'filespace mount');
    this.mounted = true;
    this.pid = Number((await this.status()).pid);
    if (!(this.pid > 0)) throw new Error('filespace status reported no engine pid');
    return this.pid;
  }

  async status(): Promise<Record<string, unknown>> {
    return JSON.parse(must(await this.cli(['status', this.name, '--json'], 20_000), 'filespace status').stdout) as Record<string, unknown>;
  }

  /** `filespace sync` until everything is uploaded; resolves to its duration. */
  async sync(timeoutMs: number): Promise<number> {
    const secs = Math.ceil(timeoutMs / 1000);
    return must(await this.cli(['sync', this.name, '--timeout', `${secs}s`], timeoutMs + 30_000), 'filespace sync').seconds;
  }

  async unmount(): Promise<number> {
    const r = must(await this.cli(['unmount', this.name], 150_000), 'filespace unmount');
    this.mounted = false;
    return r.seconds;
  }

  get logFile(): string {
    return path.join(this.machine.home, 'run', `${this.name}.log`);
  }

  /** Unmounts by any means (used on the way out). */
  async forceDown(hard: boolean): Promise<void> {
    if (this.mounted && !hard) await this.cli(['unmount', this.name, '--force'], 60_000);
    if (await mountDevice(this.mnt)) await abortMount(this.mnt);
    if (this.pid && alive(this.pid)) {
      process.kill(this.pid, 'SIGTERM');
      if (!(await waitGone(this.pid, 10_000)) && alive(this.pid)) process.kill(this.pid, 'SIGKILL');
    }
    this.mounted = false;
  }
}

// ---- global state and cleanup ---------------------------------------------------------------

const state = {
  bed: undefined as Bed | undefined,
  nullfs: undefined as NullFs | undefined,
  spaces: [] as Space[],
  work: '',
};
let cleaning: Promise<void> | undefined;
/** Set once cleanup starts: nothing new is mounted or started after that. */
let aborting = false;

function checkAbort(): void {
  if (aborting) throw new Error('the run is being aborted');
}

function cleanup(hard: boolean): Promise<void> {
  aborting = true;
  cleaning ??= (async () => {
    const bounded = (p: Promise<unknown>, ms: number) => Promise.race([p.catch(() => undefined), new Promise((r) => setTimeout(r, ms))]);
    if (state.nullfs) await bounded(state.nullfs.stop(), 20_000);
    for (const s of [...state.spaces].reverse()) await bounded(s.forceDown(hard), 80_000);
    for (const c of children) killGroup(c);
    if (state.bed) await bounded(state.bed.stop(), 60_000);
    if (state.work) await fsp.rm(state.work, { recursive: true, force: true }).catch(() => undefined);
  })();
  return cleaning;
}

// ---- measurement ----------------------------------------------------------------------------

interface Profile {
  readonly phase: string;
  readonly seconds: number;
  readonly engine?: CpuUse;
  readonly nullfs?: CpuUse;
  readonly moto?: CpuUse;
  /** Cores busy on the whole machine (everything: engine, server, the tool under test, other load). */
  readonly machine?: number;
  /** Cores used by the commands this phase ran (dd, tar, the probes, the filespace CLI) and by the bench itself. */
  readonly tools: number;
  /** Cores used by processes that are not part of this benchmark. */
  readonly outside?: number;
  /** Peak resident memory of the engine during the phase, bytes. */
  readonly engineRss?: number;
  /** Open client connections to the S3 server, sampled every 100 ms (moto closes each after its response). */
  readonly s3Conns?: { avg: number; max: number };
}

interface RandResult {
  ops: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

interface SmallPhase {
  seconds: number;
  p50Us: number;
  p99Us: number;
}

interface SmallResult {
  count: number;
  create: SmallPhase;
  stat: SmallPhase;
  delete: SmallPhase;
}

const profiles: Profile[] = [];
const errors: string[] = [];
const notes: string[] = [];
let motoPid: number | undefined;
let motoPort: number | undefined;
/** As reported by the ceiling filesystem, which takes them from the product's FuseMount. */
let mountOptions = productMountOptions('...').join(',');
const rss = new RssSampler(200);

/** Runs one phase, recording its wall time and the CPU use of the processes involved. */
async function phase<T>(name: string, watch: { engine?: number; nullfs?: number }, fn: () => Promise<T>): Promise<T | undefined> {
  checkAbort(); // outside the try: an abort ends the run instead of being recorded as a failed phase
  log(`${name} ...`);
  const meters = {
    engine: watch.engine ? await cpuMeter(watch.engine) : undefined,
    nullfs: watch.nullfs ? await cpuMeter(watch.nullfs) : undefined,
    moto: motoPid ? await cpuMeter(motoPid) : undefined,
    machine: await machineMeter(),
  };
  if (watch.engine) await rss.beginWindow(watch.engine);
  const conns = motoPort ? connectionSampler(motoPort) : undefined;
  const tool0 = toolCpuSeconds;
  const self0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  try {
    const v = await fn();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const self = process.cpuUsage(self0);
    const tools = (toolCpuSeconds - tool0 + (self.user + self.system) / 1e6) / seconds;
    const engine = await meters.engine?.();
    const nullfs = await meters.nullfs?.();
    const moto = await meters.moto?.();
    const machine = await meters.machine();
    const outside = machine === undefined ? undefined
      : Math.max(0, machine - tools - (engine?.total ?? 0) - (nullfs?.total ?? 0) - (moto?.total ?? 0));
    const engineRss = watch.engine ? await rss.endWindow(watch.engine) : undefined;
    const s3Conns = conns?.();
    profiles.push({ phase: name, seconds, engine, nullfs, moto, machine, tools, outside, engineRss, s3Conns });
    log(`${name}: ${seconds.toFixed(2)} s`);
    return v;
  } catch (err) {
    conns?.();
    if (watch.engine) errors.push(`${name}: ${errMsg(err)} [engine then: ${await engineDiagnosis(watch.engine)}]`);
    else errors.push(`${name}: ${errMsg(err)}`);
    log(`${name}: FAILED: ${errMsg(err)}`);
    return undefined;
  }
}

/** What the engine process is doing right now: state, main thread's wait channel, CPU over 1 s. */
async function engineDiagnosis(pid: number): Promise<string> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 'process gone';
  const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  const wchan = (await fsp.readFile(`/proc/${pid}/task/${pid}/wchan`, 'utf8').catch(() => '?')) || '0';
  const meter = await cpuMeter(pid);
  await new Promise((r) => setTimeout(r, 1000));
  const c = await meter();
  const busy = c && c.main >= 0.8 ? '; its JS thread is busy without answering FUSE: a loop that never yields to the event loop' : '';
  return `state ${state}, main thread wchan ${wchan}, CPU over 1 s: ${c ? `${c.total.toFixed(2)} cores, JS thread ${c.main.toFixed(2)}` : '?'}${busy}`;
}

/**
 * Runs a streaming pass REPEATS times as separate phases; resolves to the shortest duration
 * (undefined if any run failed). `all` receives every duration in order.
 */
async function best(name: string, watch: { engine?: number; nullfs?: number }, run: (i: number) => Promise<ExecResult>, all: number[] = []): Promise<number | undefined> {
  for (let i = 1; i <= REPEATS; i++) {
    const secs = await phase(`${name} ${i}/${REPEATS}`, watch, async () => must(await run(i), name).seconds);
    if (secs === undefined) return undefined;
    all.push(secs);
  }
  return Math.min(...all);
}

/** Runs fn while a child process keeps one core busy (so the other vCPU is never woken from idle). */
async function withSpinner<T>(fn: () => Promise<T>): Promise<T> {
  const spinner = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  children.add(spinner);
  try {
    await new Promise((r) => setTimeout(r, 300));
    return await fn();
  } finally {
    // Charge the spinner's CPU to the bench's own tools, not to "outside load".
    const stat = await fsp.readFile(`/proc/${spinner.pid}/stat`, 'utf8').catch(() => '');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (stat) toolCpuSeconds += (Number(fields[11]) + Number(fields[12])) / 100;
    spinner.kill('SIGKILL');
    children.delete(spinner);
  }
}

/** Random-read runs, REPEATS times; resolves to the run with the most IOPS. */
async function bestRand(name: string, watch: { engine?: number; nullfs?: number }, run: () => Promise<ExecResult>): Promise<RandResult | undefined> {
  let top: RandResult | undefined;
  for (let i = 1; i <= REPEATS; i++) {
    const r = await phase(`${name} ${i}/${REPEATS}`, watch, async () => jsonOf<RandResult>(must(await run(), name)));
    if (!r) return undefined;
    if (!top || r.ops / r.seconds > top.ops / top.seconds) top = r;
  }
  return top;
}

/** A figure: a result, optionally a ceiling and a target on the ratio. */
interface Row {
  readonly figure: string;
  readonly value: string;
  readonly ceiling?: string;
  readonly ratio?: number;
  /** Minimum ratio (or, for memory, the maximum bytes) and whether it was met. */
  readonly target?: string;
  readonly met?: boolean;
}

const rate = (bytes: number, seconds: number | undefined) => (seconds ? bytes / seconds / MB : undefined);
const fmt = (v: number | undefined, digits = 0, unit = '') => (v === undefined || !Number.isFinite(v) ? 'n/a' : `${v.toFixed(digits)}${unit}`);
const mbps = (v: number | undefined) => fmt(v, 0, ' MB/s');
const ratioOf = (v: number | undefined, c: number | undefined) => (v !== undefined && c ? v / c : undefined);

// ---- facts ----------------------------------------------------------------------------------

/** sha256 over the product's sources (electron/, native/; *.ts, *.js, *.c), to tie figures to a code state. */
async function sourceFingerprint(): Promise<string> {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== 'node_modules' && e.name !== 'build') await walk(p);
      else if (e.isFile() && /\.(ts|js|c)$/.test(e.name)) files.push(p);
    }
  };
  await walk(path.join(REPO, 'electron'));
  await walk(path.join(REPO, 'native'));
  const h = createHash('sha256');
  for (const f of files.sort()) h.update(path.relative(REPO, f)).update('\0').update(await fsp.readFile(f));
  return `${h.digest('hex').slice(0, 16)} (${files.length} files)`;
}

function fuseNativeVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  return (require('fuse-native/package.json') as { version: string }).version;
}

async function machineFacts(work: string): Promise<Record<string, string>> {
  const cpuinfo = await fsp.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const meminfo = await fsp.readFile('/proc/meminfo', 'utf8').catch(() => '');
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  const moto = await exec('python3', ['-c', 'import moto; print(moto.__version__)'], { timeoutMs: 30_000 });
  const libfuse = await exec('dpkg-query', ['-W', '-f', '${Version}', 'libfuse2'], { timeoutMs: 10_000 });
  const fsType = await exec('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', work], { timeoutMs: 10_000 });
  const fuseNative = fuseNativeVersion();
  return {
    CPU: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    Cores: `${(cpuinfo.match(/^processor\s*:/gm) ?? []).length} (os.availableParallelism ${os.availableParallelism()})`,
    RAM: `${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    Kernel: os.release(),
    Node: process.version,
    'S3 server': `moto ${moto.stdout.trim() || '?'} (Python, in-memory, on loopback)`,
    FUSE: `libfuse2 ${libfuse.stdout.trim() || '?'}, fuse-native ${fuseNative}`,
    'Cache disk': `${fsType.stdout.trim().replace(/\s+/g, ' ') || '?'} (${work})`,
    'Product sources': `sha256 ${await sourceFingerprint()} of electron/ and native/`,
  };
}

interface TreeFacts {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  tarBytes: number;
}

/** Counts what a tarball holds, from its own listing. */
async function tarFacts(tarball: string): Promise<TreeFacts> {
  const r = must(await exec('tar', ['tvf', tarball], { timeoutMs: 60_000 }), 'tar tvf');
  const facts: TreeFacts = { files: 0, dirs: 0, symlinks: 0, bytes: 0, tarBytes: (await fsp.stat(tarball)).size };
  for (const line of r.stdout.split('\n')) {
    if (!line) continue;
    const [perm, , size] = line.split(/\s+/);
    if (perm?.startsWith('-')) {
      facts.files++;
      facts.bytes += Number(size);
    } else if (perm?.startsWith('d')) facts.dirs++;
    else if (perm?.startsWith('l')) facts.symlinks++;
  }
  return facts;
}

// ---- the run --------------------------------------------------------------------------------

interface Figures {
  diskWrite?: number;
  diskFirstWrite?: number;
  nullWrite?: number;
  nullRead?: number;
  nullRand?: RandResult;
  nullRandIdle?: RandResult;
  nullRandAwake?: RandResult;
  nullSmall?: SmallResult;
  nullTar?: number;
  s3Put?: number;
  s3Get?: number;
  seqWrite?: number;
  dirtyAtClose?: number;
  syncAfterWrite?: number;
  warmRead?: number;
  warmFirstRead?: number;
  rand?: RandResult;
  small?: SmallResult;
  tarX?: number;
  tarSync?: number;
  tarVerify?: { seconds: number; differences: Record<string, number>; sample: string };
  dirtyAfterTar?: { bytes: number; files: number };
  /** Seconds from the start of a write to the end of its upload under the upload limit. */
  limitedUpload?: number;
  linkMount?: number;
  coldRead?: number;
  coldVerified?: boolean;
  writerRss?: number;
  coldRss?: number;
  motoRss?: number;
}

async function benchmark(f: Figures, facts: { tree?: TreeFacts }): Promise<void> {
  const work = (state.work = await tmpDir('bench'));
  log(`writing a ${DATA_BYTES / MiB} MiB random source file`);
  const src = await randomFile(work, 'source.bin', DATA_BYTES);
  const tarball = path.join(work, 'tree.tar');
  log(`packing ${path.join(TREE_PARENT, TREE_NAME)} into a tarball`);
  // Hard links are stored as plain files: Filespace refuses hard links (EPERM).
  must(await exec('tar', ['cf', tarball, '--hard-dereference', '-C', TREE_PARENT, TREE_NAME], { timeoutMs: 120_000 }), 'tar cf');
  facts.tree = await tarFacts(tarball);

  const bed = (state.bed = new Bed());
  await bed.start();
  const port = new URL(bed.endpoint).port;
  motoPort = Number(port);
  motoPid = await findProcess(['moto.server', '-p', port]);
  if (motoPid) rss.watch(motoPid);
  else notes.push('could not find the moto process; its CPU and memory are not reported');

  const mib = String(DATA_BYTES / MiB);
  // Timed writes start with no dirty pages on the cache's filesystem (the source file was just written).
  const flushed = async () => must(await exec('sync', ['-f', work], { timeoutMs: 120_000 }), 'sync -f');
  const ddWrite = (dst: string) => exec('dd', [`if=${src}`, `of=${dst}`, 'bs=1M', 'status=none'], { timeoutMs: DATA_TIMEOUT_MS });
  const ddRead = (file: string) => exec('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', `count=${mib}`, 'status=none'], { timeoutMs: DATA_TIMEOUT_MS });
  const randRead = (file: string) =>
    exec(process.execPath, [probe('randread'), file, String(DATA_BYTES), String(RANDOM_READS), String(RANDOM_BLOCK)], { timeoutMs: 180_000 });
  const smallFiles = (dir: string) =>
    exec(process.execPath, [probe('smallfiles'), dir, String(SMALL_FILES), String(SMALL_FILE_BYTES), String(SETTLE_MS)], { timeoutMs: 180_000 });
  const tarX = async (dir: string) => {
    must(await exec('mkdir', ['-p', dir], { timeoutMs: 30_000 }), 'mkdir');
    return must(await exec('tar', ['xf', tarball, '-C', dir], { timeoutMs: 180_000 }), 'tar xf').seconds;
  };

  // -- ceiling: FUSE alone
  const nullMnt = path.join(work, 'nullmnt');
  const nullfs = await phase('ceiling: mount do-nothing FUSE filesystem', {}, () => NullFs.start(nullMnt, DATA_BYTES));
  if (nullfs) {
    mountOptions = nullfs.options.replace(/^-o/, '');
    const w = { nullfs: nullfs.pid };
    f.nullWrite = rate(DATA_BYTES, await best('ceiling: FUSE sequential write', w, async (i) => {
      await flushed();
      return ddWrite(path.join(nullMnt, `w${i}.bin`));
    }));
    f.nullRead = rate(DATA_BYTES, await best('ceiling: FUSE sequential read', w, () => ddRead(path.join(nullMnt, 'zero.bin'))));
    f.nullRandIdle = await bestRand('ceiling: FUSE random 4 KiB reads', w, () => randRead(path.join(nullMnt, 'zero.bin')));
    // On a VM, waking an idle vCPU adds tens of µs to every QD1 request; busy vCPUs answer faster.
    f.nullRandAwake = await phase('ceiling: FUSE random 4 KiB reads, one core kept busy', w,
      () => withSpinner(async () => jsonOf<RandResult>(must(await randRead(path.join(nullMnt, 'zero.bin')), 'randread'))));
    f.nullRand = [f.nullRandIdle, f.nullRandAwake].reduce<RandResult | undefined>(
      (a, b) => (!b ? a : !a || b.ops / b.seconds > a.ops / a.seconds ? b : a), undefined);
    f.nullSmall = await phase('ceiling: FUSE small files', w, async () => jsonOf<SmallResult>(must(await smallFiles(path.join(nullMnt, 'small')), 'smallfiles')));
    f.nullTar = await phase('ceiling: FUSE tar x', w, () => tarX(path.join(nullMnt, 'tree')));
    await phase('ceiling: unmount do-nothing FUSE filesystem', {}, () => nullfs.stop());
  }

  // -- ceiling: S3 alone
  const count = Math.round(DATA_BYTES / CHUNK_BYTES);
  const s3 = await phase(`ceiling: raw S3 PUT+GET (${count} x ${CHUNK_SIZE}, ${CONCURRENCY} in flight)`, {}, async () => {
    const bucket = await bed.newBucket();
    return jsonOf<{ putSeconds: number; getSeconds: number[]; bytes: number }>(must(
      await exec(process.execPath, [probe('s3ceiling'), bed.endpoint, bucket, String(CHUNK_BYTES), String(count), String(CONCURRENCY), '2'], { timeoutMs: 4 * DATA_TIMEOUT_MS }),
      's3ceiling'));
  });
  if (s3) {
    f.s3Put = rate(DATA_BYTES, s3.putSeconds);
    f.s3Get = rate(DATA_BYTES, Math.min(...s3.getSeconds));
  }

  // -- the product: the writing machine
  checkAbort();
  const created = await bed.filespace({ chunkSize: CHUNK_SIZE, cacheSize: CACHE_SIZE });
  const space = new Space(created.machine, created.name, created.mnt);
  const pid = await space.mount();
  rss.watch(pid);
  const e = { engine: pid };
  const seq = path.join(space.mnt, 'seq.bin');
  // What the cache's filesystem itself takes: the same write to a plain local file (page cache, no fsync).
  const diskFile = path.join(work, 'disk-ceiling.bin');
  const diskPasses: number[] = [];
  f.diskWrite = rate(DATA_BYTES, await best('ceiling: local cache-disk write', {}, async () => {
    await fsp.rm(diskFile, { force: true });
    await flushed();
    return ddWrite(diskFile);
  }, diskPasses));
  f.diskFirstWrite = rate(DATA_BYTES, diskPasses[0]);
  await fsp.rm(diskFile, { force: true });
  f.seqWrite = await phase('sequential write (dd bs=1M, to close)', e, async () => {
    await flushed();
    return must(await ddWrite(seq), 'dd write').seconds;
  });
  if (f.seqWrite !== undefined) {
    const st = await space.status().catch(() => undefined);
    if (st) f.dirtyAtClose = Number(st.dirtyBytes);
    f.syncAfterWrite = await phase('upload after the write (filespace sync)', e, () => space.sync(3 * DATA_TIMEOUT_MS));
    const warm: number[] = [];
    f.warmRead = await best('warm sequential read (dd bs=1M)', e, () => ddRead(seq), warm);
    f.warmFirstRead = warm[0];
    f.rand = await bestRand('random 4 KiB reads, warm', e, () => randRead(seq));
  }
  f.small = await phase('small files', e, async () => jsonOf<SmallResult>(must(await smallFiles(path.join(space.mnt, 'small')), 'smallfiles')));
  const treeDir = path.join(space.mnt, 'tree');
  f.tarX = await phase('tar x', e, () => tarX(treeDir));
  if (f.tarX !== undefined) {
    const ts = await space.status().catch(() => undefined);
    if (ts) f.dirtyAfterTar = { bytes: Number(ts.dirtyBytes), files: Number(ts.dirtyFiles) };
    f.tarSync = await phase('upload after tar x (filespace sync)', e, () => space.sync(300_000));
    f.tarVerify = await phase('tree read-back (tar d)', e, async () => {
      const r = await exec('tar', ['df', tarball, '-C', treeDir], { timeoutMs: 180_000 });
      if (r.timedOut) throw new Error('tar d did not finish');
      // Lines look like "path: Mod time differs"; count them by kind of difference.
      const differences: Record<string, number> = {};
      const lines = (r.stdout + r.stderr).trim().split('\n').filter(Boolean);
      for (const line of lines) {
        const kind = /: ([^:]+)$/.exec(line)?.[1] ?? line;
        differences[kind] = (differences[kind] ?? 0) + 1;
      }
      return { seconds: r.seconds, differences, sample: lines.slice(0, 3).join('; ') };
    });
  }
  // Upload bandwidth limit: a write uploaded under `upload-limit`, from dd start to sync done.
  f.limitedUpload = await phase(`upload under upload-limit ${LIMIT_MIB} MiB/s (${LIMITED_MIB} MiB)`, e, async () => {
    must(await space.cli(['set', space.name, 'upload-limit', `${LIMIT_MIB}MiB`], 20_000), 'filespace set upload-limit');
    try {
      await flushed();
      const t0 = Date.now();
      // Fresh random bytes: a copy of data already in the bucket would be deduplicated, not uploaded.
      must(await exec('dd', ['if=/dev/urandom', `of=${path.join(space.mnt, 'limited.bin')}`, 'bs=1M', `count=${LIMITED_MIB}`, 'status=none'], { timeoutMs: DATA_TIMEOUT_MS }), 'dd write');
      await space.sync(600_000);
      return (Date.now() - t0) / 1000;
    } finally {
      must(await space.cli(['set', space.name, 'upload-limit', 'off'], 20_000), 'filespace set upload-limit off');
    }
  });
  const st = await space.status().catch(() => undefined);
  if (st?.lastError) notes.push(`writing machine reported lastError: ${String(st.lastError)}`);
  f.writerRss = await rss.peak(pid);
  const unmounted = await phase('unmount (writing machine)', {}, () => space.unmount());
  if (unmounted === undefined) {
    // A stuck engine would keep burning CPU through the fresh machine's phases: take it down now.
    notes.push('the writing machine did not unmount cleanly; the benchmark detached its mount and stopped its engine before the fresh-machine phases');
    await Promise.race([space.forceDown(false), new Promise((r) => setTimeout(r, 90_000))]);
  }

  // -- the product: a fresh machine with an empty cache
  const coldMachine = await bed.machine('cold');
  let cold: Space | undefined;
  f.linkMount = await phase('link + mount on a fresh machine', {}, async () => {
    const t0 = Date.now();
    checkAbort();
    const linked = await bed.link(coldMachine, created.bucket, created.prefix, CACHE_SIZE);
    cold = new Space(coldMachine, linked.name, linked.mnt);
    await cold.mount();
    return (Date.now() - t0) / 1000;
  });
  if (cold?.pid) {
    const c = cold;
    const coldPid = c.pid!;
    rss.watch(coldPid);
    const coldSeq = path.join(c.mnt, 'seq.bin');
    f.coldRead = await phase('cold sequential read (dd bs=1M, empty cache)', { engine: coldPid }, async () => must(await ddRead(coldSeq), 'dd read').seconds);
    if (f.coldRead !== undefined) {
      f.coldVerified = await phase('verify cold read (cmp with the source)', { engine: coldPid }, async () => {
        const r = await exec('cmp', [src, coldSeq], { timeoutMs: DATA_TIMEOUT_MS });
        if (r.timedOut) throw new Error('cmp did not finish');
        if (r.code !== 0) notes.push(`cold read returned different bytes: ${(r.stdout + r.stderr).trim()}`);
        return r.code === 0;
      });
    }
    const cst = await c.status().catch(() => undefined);
    if (cst?.lastError) notes.push(`fresh machine reported lastError: ${String(cst.lastError)}`);
    f.coldRss = await rss.peak(coldPid);
    await phase('unmount (fresh machine)', {}, () => c.unmount());
  }
  if (motoPid) f.motoRss = await rss.peak(motoPid);
  rss.stop();
}

// ---- report ---------------------------------------------------------------------------------

function rows(f: Figures, tree: TreeFacts | undefined): { main: Row[]; ceilings: Row[] } {
  const size = `${DATA_BYTES / GiB >= 1 ? `${DATA_BYTES / GiB} GiB` : `${DATA_BYTES / MiB} MiB`}`;
  const writeMBs = rate(DATA_BYTES, f.seqWrite);
  const writeUpMBs = f.seqWrite !== undefined && f.syncAfterWrite !== undefined ? rate(DATA_BYTES, f.seqWrite + f.syncAfterWrite) : undefined;
  const warm = rate(DATA_BYTES, f.warmRead);
  const coldMBs = rate(DATA_BYTES, f.coldRead);
  const iops = (r: RandResult | undefined) => (r ? r.ops / r.seconds : undefined);
  const ops = (p: SmallPhase | undefined, n: number | undefined) => (p && n ? n / p.seconds : undefined);
  const tarFiles = (s: number | undefined) => (tree && s ? (tree.files + tree.dirs + tree.symlinks) / s : undefined);
  const peakRss = Math.max(f.writerRss ?? 0, f.coldRss ?? 0) || undefined;
  const met = (r: number | undefined, min: number) => (r === undefined ? undefined : r >= min);

  const main: Row[] = [
    {
      figure: `Sequential write ${size}, dd bs=1M, to close ("write to cache")`, value: mbps(writeMBs),
      ceiling: `FUSE write ${mbps(f.nullWrite)} (local disk ${mbps(f.diskWrite)})`, ratio: ratioOf(writeMBs, f.nullWrite), target: `>= ${TARGETS.seqWrite}`, met: met(ratioOf(writeMBs, f.nullWrite), TARGETS.seqWrite),
    },
    {
      figure: 'Upload left after close (filespace sync)',
      value: f.syncAfterWrite === undefined ? 'n/a' : `${f.syncAfterWrite.toFixed(1)} s for ${fmt((f.dirtyAtClose ?? 0) / MB, 0, ' MB')} still dirty at close`,
    },
    {
      figure: `Sequential write + upload ${size} (dd start to sync done)`, value: mbps(writeUpMBs),
      ceiling: `S3 PUT ${mbps(f.s3Put)}`, ratio: ratioOf(writeUpMBs, f.s3Put),
    },
    {
      figure: `Warm sequential read, dd bs=1M (chunks in local cache; best of ${REPEATS})`, value: `${mbps(warm)} (first read ${mbps(rate(DATA_BYTES, f.warmFirstRead))})`,
      ceiling: `FUSE read ${mbps(f.nullRead)}`, ratio: ratioOf(warm, f.nullRead), target: `>= ${TARGETS.warmRead}`, met: met(ratioOf(warm, f.nullRead), TARGETS.warmRead),
    },
    {
      figure: 'Cold sequential read, dd bs=1M (fresh machine, empty cache)', value: `${mbps(coldMBs)}${f.coldVerified === true ? ', cmp ok' : f.coldVerified === false ? ', CMP MISMATCH' : ''}`,
      ceiling: `S3 GET ${mbps(f.s3Get)}`, ratio: ratioOf(coldMBs, f.s3Get), target: `>= ${TARGETS.coldRead}`, met: met(ratioOf(coldMBs, f.s3Get), TARGETS.coldRead),
    },
    {
      figure: `Random ${RANDOM_BLOCK / 1024} KiB reads, QD1, warm (${RANDOM_READS} preads; best of ${REPEATS})`,
      value: f.rand ? `${fmt(iops(f.rand))} IOPS, p50 ${fmt(f.rand.p50Us)} µs, p99 ${fmt(f.rand.p99Us)} µs` : 'n/a',
      ceiling: f.nullRand ? `FUSE ${fmt(iops(f.nullRand))} IOPS, p50 ${fmt(f.nullRand.p50Us)} µs` : 'n/a', ratio: ratioOf(iops(f.rand), iops(f.nullRand)),
    },
    ...(['create', 'stat', 'delete'] as const).map((k): Row => ({
      figure: `Small files (${SMALL_FILES} x ${SMALL_FILE_BYTES / 1024} KiB): ${k}`,
      value: f.small ? `${fmt(ops(f.small[k], f.small.count))} ops/s, p50 ${fmt(f.small[k].p50Us)} µs, p99 ${fmt(f.small[k].p99Us)} µs` : 'n/a',
      ceiling: f.nullSmall ? `FUSE ${fmt(ops(f.nullSmall[k], f.nullSmall.count))} ops/s` : 'n/a',
      ratio: ratioOf(ops(f.small?.[k], f.small?.count), ops(f.nullSmall?.[k], f.nullSmall?.count)),
    })),
    {
      figure: `tar x of ${TREE_NAME} (${tree ? `${tree.files} files, ${tree.dirs} dirs, ${tree.symlinks} symlinks, ${fmt(tree.bytes / MB, 1, ' MB')}` : '?'})`,
      value: f.tarX !== undefined && tree ? `${fmt(tarFiles(f.tarX))} entries/s, ${mbps(rate(tree.bytes, f.tarX))} (${f.tarX.toFixed(1)} s)` : 'n/a',
      ceiling: f.nullTar !== undefined ? `FUSE ${fmt(tarFiles(f.nullTar))} entries/s` : 'n/a', ratio: ratioOf(tarFiles(f.tarX), tarFiles(f.nullTar)),
    },
    {
      figure: 'Upload left after tar x (filespace sync; uploads also ran during the extraction)',
      value: f.tarSync !== undefined
        ? `${f.tarSync.toFixed(1)} s for ${f.dirtyAfterTar ? `${f.dirtyAfterTar.files} files, ${fmt(f.dirtyAfterTar.bytes / MB, 1, ' MB')}` : '?'} still dirty when tar exited`
        : 'n/a',
    },
    {
      figure: 'Tree read-back and compare, warm (tar d)',
      value: f.tarVerify && tree
        ? `${fmt(tree.files / f.tarVerify.seconds)} files/s, ${mbps(rate(tree.bytes, f.tarVerify.seconds))}; ${Object.keys(f.tarVerify.differences).length === 0 ? 'identical'
          : `differences: ${Object.entries(f.tarVerify.differences).map(([k, n]) => `${n} x "${k}"`).join(', ')}`}`
        : 'n/a',
    },
    {
      figure: 'Peak engine RSS (max over both machines; VmHWM and 200 ms polls)',
      value: peakRss ? `${fmt(peakRss / MB, 0, ' MB')} (writer ${fmt((f.writerRss ?? 0) / MB, 0)} MB, fresh ${fmt((f.coldRss ?? 0) / MB, 0)} MB)` : 'n/a',
      target: `< ${TARGETS.rssBytes / MB} MB`, met: peakRss === undefined ? undefined : peakRss < TARGETS.rssBytes,
    },
    {
      figure: `Upload under upload-limit ${LIMIT_MIB} MiB/s, ${LIMITED_MIB} MiB written then synced (dd start to sync done)`,
      value: f.limitedUpload !== undefined ? `${fmt(LIMITED_MIB / f.limitedUpload, 1, ' MiB/s')} (${f.limitedUpload.toFixed(1)} s)` : 'n/a',
      ceiling: `limit ${LIMIT_MIB} MiB/s`, ratio: f.limitedUpload !== undefined ? LIMITED_MIB / f.limitedUpload / LIMIT_MIB : undefined,
    },
    { figure: 'Peak moto RSS (context: it keeps every object in memory)', value: f.motoRss ? fmt(f.motoRss / MB, 0, ' MB') : 'n/a' },
  ];
  const ceilings: Row[] = [
    { figure: `FUSE sequential write ${size}, dd bs=1M (do-nothing fs; best of ${REPEATS})`, value: mbps(f.nullWrite) },
    { figure: `FUSE sequential read ${size}, dd bs=1M (do-nothing fs; best of ${REPEATS})`, value: mbps(f.nullRead) },
    { figure: `Local cache-disk write ${size}, dd bs=1M to a plain file on the cache's filesystem (page cache; best of ${REPEATS})`, value: `${mbps(f.diskWrite)} (first pass ${mbps(f.diskFirstWrite)})` },
    { figure: `FUSE random 4 KiB reads, QD1, machine otherwise idle (best of ${REPEATS})`, value: f.nullRandIdle ? `${fmt(iops(f.nullRandIdle))} IOPS, p50 ${fmt(f.nullRandIdle.p50Us)} µs, p99 ${fmt(f.nullRandIdle.p99Us)} µs` : 'n/a' },
    { figure: 'FUSE random 4 KiB reads, QD1, one core kept busy (no wake-ups from idle)', value: f.nullRandAwake ? `${fmt(iops(f.nullRandAwake))} IOPS, p50 ${fmt(f.nullRandAwake.p50Us)} µs, p99 ${fmt(f.nullRandAwake.p99Us)} µs` : 'n/a' },
    ...(['create', 'stat', 'delete'] as const).map((k): Row => ({ figure: `FUSE small files: ${k}`, value: f.nullSmall ? `${fmt(ops(f.nullSmall[k], f.nullSmall.count))} ops/s` : 'n/a' })),
    { figure: 'FUSE tar x', value: f.nullTar !== undefined ? `${fmt(tarFiles(f.nullTar))} entries/s (${f.nullTar.toFixed(1)} s)` : 'n/a' },
    { figure: `S3 PUT, ${CHUNK_SIZE} objects, ${CONCURRENCY} in flight (S3Store)`, value: mbps(f.s3Put) },
    { figure: `S3 GET, ${CHUNK_SIZE} objects, ${CONCURRENCY} in flight (S3Store; best of 2 passes)`, value: mbps(f.s3Get) },
  ];
  return { main, ceilings };
}

function table(rs: Row[], withRatios: boolean): string {
  const metText = (m: boolean | undefined) => (m === undefined ? '' : m ? 'met' : '**NOT met**');
  const lines = withRatios
    ? ['| Figure | Result | Ceiling | Ratio | Target | Met |', '|---|---|---|---|---|---|']
    : ['| Ceiling | Result |', '|---|---|'];
  for (const r of rs) {
    lines.push(withRatios
      ? `| ${r.figure} | ${r.value} | ${r.ceiling ?? ''} | ${r.ratio === undefined ? '' : r.ratio.toFixed(2)} | ${r.target ?? ''} | ${metText(r.met)} |`
      : `| ${r.figure} | ${r.value} |`);
  }
  return lines.join('\n');
}

function cores(c: CpuUse | undefined): string {
  return c ? c.total.toFixed(2) : '';
}

/** Plain reading of the CPU figures of one phase. */
function hint(p: Profile, ncpu: number): string {
  const out: string[] = [];
  if (p.engine && p.engine.main >= 0.85) out.push('engine JS thread saturated');
  if (p.nullfs && p.nullfs.main >= 0.85) out.push('ceiling fs JS thread saturated');
  if (p.moto && p.moto.total >= 0.85) out.push('moto saturated (one Python process)');
  if (p.machine !== undefined && p.machine >= 0.9 * ncpu) out.push('all cores busy');
  if (p.outside !== undefined && p.outside >= 0.3) out.push(`outside load ${p.outside.toFixed(1)} cores: figure likely depressed`);
  if (p.engine && p.engine.main < 0.5 && p.engine.total < 0.9 && (p.machine ?? 0) < 0.7 * ncpu) out.push('engine waiting (latency-bound), not CPU-bound');
  return out.join('; ');
}

function profileTable(ncpu: number): string {
  const lines = [
    '| Phase | Wall s | Engine CPU | Engine JS thread | Engine peak RSS MB | Ceiling fs CPU (JS thread) | moto CPU | S3 conns avg/max | Tools + bench | Outside load | Whole machine | Reading |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const p of profiles) {
    if (p.seconds < 0.05) continue;
    lines.push(`| ${p.phase} | ${p.seconds.toFixed(2)} | ${cores(p.engine)} | ${p.engine ? p.engine.main.toFixed(2) : ''} | ${p.engineRss ? (p.engineRss / MB).toFixed(0) : ''} | ${p.nullfs ? `${p.nullfs.total.toFixed(2)} (${p.nullfs.main.toFixed(2)})` : ''} | ${cores(p.moto)} | ${p.s3Conns && p.s3Conns.max > 0 ? `${p.s3Conns.avg.toFixed(1)}/${p.s3Conns.max}` : ''} | ${p.tools.toFixed(2)} | ${p.outside === undefined ? '' : p.outside.toFixed(2)} | ${p.machine === undefined ? '' : p.machine.toFixed(2)} | ${hint(p, ncpu)} |`);
  }
  return lines.join('\n');
}

/** Measured facts behind the main figures, worded from this run's numbers only. */
function observations(f: Figures): string[] {
  const find = (prefix: string) => profiles.filter((p) => p.phase.startsWith(prefix));
  const one = (prefix: string) => find(prefix)[0];
  const out: string[] = [];
  const cpu = (p: Profile | undefined) => p?.engine
    ? `engine ${p.engine.total.toFixed(2)} cores (JS thread ${p.engine.main.toFixed(2)}), moto ${p.moto?.total.toFixed(2) ?? '?'}, whole machine ${p.machine?.toFixed(2) ?? '?'} of ${os.cpus().length}, outside load ${p.outside?.toFixed(2) ?? '?'}`
    : 'n/a';
  const raw = one('ceiling: raw S3');
  const rawConns = raw?.s3Conns ? `${raw.s3Conns.avg.toFixed(1)}` : '?';
  const w = one('sequential write');
  if (w) out.push(`Write to cache: ${cpu(w)}.`);
  const up = one('upload after the write');
  if (up && f.dirtyAtClose) {
    out.push(`Upload after the write: ${fmt(f.dirtyAtClose / MB / up.seconds, 0, ' MB/s')} for the ${fmt(f.dirtyAtClose / MB, 0, ' MB')} left; S3 connections averaged ${up.s3Conns?.avg.toFixed(1) ?? '?'} (raw ceiling ${rawConns} with ${CONCURRENCY} in flight); ${cpu(up)}.`);
  }
  const warm = find('warm sequential read');
  if (warm.length) out.push(`Warm read passes: ${warm.map((p) => `${(rate(DATA_BYTES, p.seconds) ?? 0).toFixed(0)} MB/s with engine JS thread ${p.engine?.main.toFixed(2) ?? '?'}`).join('; ')}.`);
  const cold = one('cold sequential read');
  if (cold) out.push(`Cold read: S3 connections averaged ${cold.s3Conns?.avg.toFixed(1) ?? '?'} (max ${cold.s3Conns?.max ?? '?'}) against ${rawConns} for the raw GET ceiling; ${cpu(cold)}.`);
  const small = one('small files');
  if (small) out.push(`Small files: uploads of the new files ran alongside (S3 connections averaged ${small.s3Conns?.avg.toFixed(1) ?? '?'}); ${cpu(small)}.`);
  const tar = one('tar x');
  if (tar) out.push(`tar x: ${cpu(tar)}.`);
  const withRss = profiles.filter((p) => p.engineRss);
  if (withRss.length) {
    const top = withRss.reduce((a, b) => ((b.engineRss ?? 0) > (a.engineRss ?? 0) ? b : a));
    const peakOf = (prefix: string) => Math.max(0, ...find(prefix).map((p) => p.engineRss ?? 0));
    const parts = ([['write', 'sequential write'], ['upload', 'upload after the write'], ['warm read', 'warm sequential read'],
      ['random reads', 'random 4 KiB reads, warm'], ['small files', 'small files'], ['tar x', 'tar x'], ['upload after tar', 'upload after tar x'],
      ['cold read', 'cold sequential read']] as const)
      .filter(([, prefix]) => peakOf(prefix) > 0).map(([label, prefix]) => `${label} ${fmt(peakOf(prefix) / MB, 0)}`);
    out.push(`Engine RSS peaked at ${fmt((top.engineRss ?? 0) / MB, 0, ' MB')} during "${top.phase}"; peak per phase (MB): ${parts.join(', ')}.`);
  }
  return out;
}

async function report(f: Figures, facts: Record<string, string>, tree: TreeFacts | undefined): Promise<string> {
  const { main, ceilings } = rows(f, tree);
  const ncpu = os.cpus().length;
  const s = DEFAULT_SETTINGS;
  const md = [
    '# Filespace benchmarks',
    '',
    `Generated by \`npm run bench\` (test/bench/bench.ts) on ${new Date().toISOString()}, total run time ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    'Every figure below comes from that one run, against one local S3 server, through real FUSE mounts served by the `filespace` daemon.',
    'MB = 10^6 bytes; MiB/GiB = 2^20/2^30 bytes. A ratio is result / ceiling, both measured in this run on this machine.',
    '',
    '## Machine',
    '',
    ...Object.entries(facts).map(([k, v]) => `- ${k}: ${v}`),
    '',
    '## Settings',
    '',
    `- Data set: ${DATA_BYTES / MiB} MiB of random (incompressible) bytes${SCALE !== 1 ? ` (FILESPACE_BENCH_GIB=${SCALE})` : ''}; chunk size ${CHUNK_SIZE}; cache cap ${CACHE_SIZE}.`,
    `- Engine defaults: upload and download concurrency ${s.uploadConcurrency}/${s.downloadConcurrency}, read-ahead up to ${s.prefetchMaxChunks} chunks, upload delay ${s.uploadDelayMs / 1000} s, encryption AES-256-GCM, deflate when it saves >= 1/8.`,
    `- Mount options (product and ceiling alike, from the product's FuseMount): \`${mountOptions}\`.`,
    `- Raw S3 ceiling: ${Math.round(DATA_BYTES / CHUNK_BYTES)} objects of ${CHUNK_SIZE}, ${CONCURRENCY} requests in flight, through the product's S3Store.`,
    `- Warm read: the file written in step 1, read ${REPEATS} times in a row; the first read is the first since it was written. Its chunks sit in the local cache (and most likely in the host page cache); FUSE without \`kernel_cache\` drops the kernel's cached pages of the file on open, so every byte of every read crosses FUSE and the engine.`,
    `- Page cache: timed writes start after \`sync -f\` of the cache's filesystem. On this VM, writing into memory the guest has not used lately is much slower than reusing freed page-cache memory; the local cache-disk ceiling (best of ${REPEATS}, deleted after each pass) runs right before the product's write, so both start from the same state.`,
    `- Repetitions: the FUSE sequential and random-read ceilings, the warm read and the random reads are the best of ${REPEATS} passes, the S3 GET ceiling the best of 2, because other load on a shared machine can only slow a pass down; a ceiling that is too low would flatter the product. The sequential write, cold read and the other figures are single passes (a repeat would not start from the same state).`,
    `- Random reads: ${RANDOM_READS} distinct block-aligned offsets, one pread at a time, from a separate process. At queue depth 1 on this VM, waking an idle vCPU costs tens of µs per request, so latency is lower when the machine is busy; the ceiling is the better of an idle pass and a pass with one core kept busy, and the product's figure may still beat it when outside load kept the vCPUs awake.`,
    `- Small files: distinct random contents; ${SETTLE_MS} ms pause between phases so the kernel's attr/entry caches have expired.`,
    `- tar: GNU tar (as ${process.getuid?.() === 0 ? 'root: restores owners, modes, mtimes' : 'a user'}) of ${path.join(TREE_PARENT, TREE_NAME)}${tree ? `: ${tree.files} files, ${tree.dirs} directories, ${tree.symlinks} symlinks, ${(tree.bytes / MB).toFixed(1)} MB of file data (tarball ${(tree.tarBytes / MB).toFixed(1)} MB)` : ''}; entries/s counts files + directories + symlinks.`,
    '',
    '## Results',
    '',
    table(main, true),
    '',
    '## Ceilings (same run)',
    '',
    table(ceilings, false),
    '',
    '## Where the time goes (CPU per phase)',
    '',
    `CPU is in cores (1.00 = one core busy for the whole phase), from /proc. The engine's "JS thread" is its main thread, where every FUSE callback and all engine logic run; its other threads are libfuse's loop threads, libuv's pool (file I/O, zlib) and V8's. "S3 conns" counts open client connections to the S3 server every 100 ms; moto closes each connection after its response, so it approximates requests in flight. "Tools + bench" is the commands the phase ran (dd, tar, cmp, the probes, the filespace CLI) plus the bench process; "Outside load" is whatever else kept the ${ncpu} cores busy (other users of the machine): figures from phases with outside load are likely low.`,
    '',
    profileTable(ncpu),
    '',
  ];
  const obs = observations(f);
  if (obs.length > 0) md.push('## Observations (measured in this run)', '', ...obs.map((o) => `- ${o}`), '');
  if (errors.length > 0) md.push('## Errors', '', ...errors.map((e) => `- ${e}`), '');
  if (notes.length > 0) md.push('## Notes', '', ...notes.map((n) => `- ${n}`), '');
  const text = md.join('\n');
  await fsp.writeFile(path.join(REPO, 'BENCHMARKS.md'), text);
  return [table(main, true), '', table(ceilings, false), '', profileTable(ncpu), '', ...obs.map((o) => `- ${o}`)].join('\n');
}

// ---- main -----------------------------------------------------------------------------------

/** Cores busy on the machine over `ms` while this benchmark runs nothing. */
async function idleLoad(ms: number): Promise<number | undefined> {
  const m = await machineMeter();
  await new Promise((r) => setTimeout(r, ms));
  return m();
}

/** Waits (at most `limitMs`) for other load on the machine to calm down; returns the last reading. */
async function waitForQuiet(limitMs: number): Promise<number | undefined> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const busy = await idleLoad(2000);
    if (busy === undefined || busy < 0.3 || Date.now() >= deadline) return busy;
    log(`other processes keep ${busy.toFixed(2)} cores busy; waiting for the machine to quiet down`);
  }
}

async function main(): Promise<number> {
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    void cleanup(true).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    log(`the run exceeded ${RUN_LIMIT_MS / 60_000} minutes: aborting`);
    void cleanup(true).finally(() => process.exit(2));
  }, RUN_LIMIT_MS);
  watchdog.unref();

  log(`data set ${DATA_BYTES / MiB} MiB, chunk ${CHUNK_SIZE}, cache ${CACHE_SIZE}`);
  const f: Figures = {};
  const treeBox: { tree?: TreeFacts } = {};
  let facts: Record<string, string> = {};
  const before = await waitForQuiet(60_000);
  try {
    facts = await machineFacts(os.tmpdir());
    await benchmark(f, treeBox);
  } catch (err) {
    errors.push(`run aborted: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
    log(`run aborted: ${errMsg(err)}`);
  }
  // The engine logs say why, when something failed.
  if (errors.length > 0) {
    for (const s of state.spaces) {
      const tail = (await fsp.readFile(s.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-8).join('\n');
      if (tail) notes.push(`engine log of ${s.name} (last lines):\n\n\`\`\`\n${tail}\n\`\`\``);
    }
  }
  await cleanup(false);
  const after = await idleLoad(2000);
  facts['Other load'] = `${fmt(before, 2)} cores busy just before the run, ${fmt(after, 2)} just after (processes outside this benchmark; 0 on a quiet machine)`;
  if (f.tarVerify && Object.keys(f.tarVerify.differences).length > 0) {
    notes.push(`tar d found differences (first: ${f.tarVerify.sample}). "Mod time differs" alone means contents, sizes, modes and owners matched; fuse-native ${fuseNativeVersion()} hands the access time to the utimens callback in place of the modification time (fuse-native.c passes l->atime twice; see sagemathinc/fuse-native#3), so every mtime set with utimensat and an omitted or different atime (tar x, cp -p, rsync -t, touch -m) is lost.`);
  }
  const out = await report(f, facts, treeBox.tree);
  process.stdout.write(`\n${out}\n`);
  if (errors.length > 0) process.stdout.write(`\nERRORS:\n${errors.map((e) => `- ${e}`).join('\n')}\n`);
  if (notes.length > 0) process.stdout.write(`\nNOTES:\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
  log(`wrote ${path.join(REPO, 'BENCHMARKS.md')}`);
  clearTimeout(watchdog);
  return errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 100).unref();
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    void cleanup(true).finally(() => process.exit(1));
  },
);
