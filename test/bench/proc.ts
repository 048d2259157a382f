/**
 * Child processes and mounts for the benchmark, with every wait bounded.
 *
 * The benchmark never touches a mount from its own process: every access is a child process
 * (dd, tar, ls, the probes), run here in its own process group so a timeout can kill it
 * whole. Everything the run starts or mounts registers a teardown step here, so that one
 * cleanup (on success, error, signal or the overall time limit) unmounts and stops all of it,
 * newest first, aborting a hung FUSE connection if need be.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

const started = Date.now();

export function log(msg: string): void {
  process.stderr.write(`[bench ${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}\n`);
}

export function runSeconds(): number {
  return (Date.now() - started) / 1000;
}

export function errMsg(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A monotonic clock in seconds. */
export const nowSeconds = () => Number(process.hrtime.bigint()) / 1e9;

// ---- aborting -------------------------------------------------------------------------------

let aborting = false;

/** Set once cleanup starts: nothing new is mounted or started after that. */
export function checkAbort(): void {
  if (aborting) throw new Error('the run is being aborted');
}

const teardowns: Array<{ what: string; fn: (hard: boolean) => Promise<void> }> = [];

/** Registers a teardown step (run newest first by cleanup); returns a function that drops it. */
export function onTeardown(what: string, fn: (hard: boolean) => Promise<void>): () => void {
  const entry = { what, fn };
  teardowns.push(entry);
  return () => {
    const i = teardowns.indexOf(entry);
    if (i >= 0) teardowns.splice(i, 1);
  };
}

let cleaning: Promise<void> | undefined;

/** Runs every registered teardown (each bounded), then kills whatever child is left. */
export function cleanup(hard: boolean): Promise<void> {
  aborting = true;
  cleaning ??= (async () => {
    while (teardowns.length > 0) {
      const t = teardowns.pop()!;
      const ok = await Promise.race([
        t.fn(hard).then(
          () => true,
          () => true,
        ),
        sleep(90_000).then(() => false),
      ]);
      if (!ok) log(`cleanup: ${t.what} did not finish within 90 s; moving on`);
    }
    for (const c of children) killGroup(c);
  })();
  return cleaning;
}

// ---- commands -------------------------------------------------------------------------------

export interface ExecResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly seconds: number;
  readonly timedOut: boolean;
}

export const children = new Set<ChildProcess>();

/** CPU seconds used by every command exec() ran to completion (the tools under test, the CLI). */
export const tally = { toolCpuSeconds: 0 };

export function killGroup(child: ChildProcess): void {
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
export function exec(
  cmd: string,
  args: string[],
  opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string },
): Promise<ExecResult> {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const child = spawn('bash', ['-c', '"$@"; rc=$?; times >&3; exit $rc', 'bash', cmd, ...args], {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      detached: true,
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
      for (const m of childLine.matchAll(/(\d+)m([\d.]+)s/g)) tally.toolCpuSeconds += Number(m[1]) * 60 + Number(m[2]);
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

export function must(r: ExecResult, what: string): ExecResult {
  if (r.timedOut)
    throw new Error(`${what} did not finish within its time limit (${r.seconds.toFixed(0)} s): ${r.stderr.trim().slice(-500)}`);
  if (r.code !== 0) throw new Error(`${what} failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(-800)}`);
  return r;
}

/** `dd bs=1M` of the first `mib` MiB of `input` into `out`, as the benchmark's sequential write; throws unless it succeeds. */
export async function ddWrite(input: string, out: string, mib: number): Promise<ExecResult> {
  return must(
    await exec('dd', [`if=${input}`, `of=${out}`, 'bs=1M', `count=${mib}`, 'status=none'], { timeoutMs: 900_000 }),
    'dd',
  );
}

/** The last line of a probe's stdout, parsed as JSON. */
export function jsonOf<T>(r: ExecResult): T {
  const line = r.stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(line) as T;
}

/** Path of a compiled probe script beside this module. */
export function probe(script: string): string {
  return path.join(__dirname, `${script}.js`);
}

/** Whether a command is on PATH. */
export async function hasCommand(cmd: string): Promise<boolean> {
  return (await exec('sh', ['-c', `command -v ${cmd}`], { timeoutMs: 10_000 })).code === 0;
}

/**
 * A long-running child (a FUSE daemon, the S3 server) in its own process group, with its
 * stderr tail kept for error messages. Not counted as a tool: its CPU is measured by pid.
 */
export function startDaemon(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; ipc?: boolean; execArgv?: string[] } = {},
): { child: ChildProcess; tail: () => string } {
  const child = opts.ipc
    ? spawn(process.execPath, [...(opts.execArgv ?? []), cmd, ...args], {
        env: opts.env ?? process.env,
        stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
        detached: true,
      })
    : spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let tail = '';
  const keep = (d: string) => (tail = (tail + d).slice(-4000));
  child.stdout!.setEncoding('utf8').on('data', keep);
  child.stderr!.setEncoding('utf8').on('data', keep);
  return { child, tail: () => tail.trim() };
}

// ---- processes ------------------------------------------------------------------------------

/**
 * Waits up to `ms` for a child of ours to exit, by its exit event (once it has been reaped
 * its pid may belong to someone else); resolves to whether it has.
 */
export async function childExited(child: ChildProcess, ms: number): Promise<boolean> {
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  if (gone()) return true;
  await Promise.race([new Promise((r) => child.once('exit', r)), sleep(ms)]);
  return gone();
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitGone(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  return !alive(pid);
}

/** SIGTERM, then (after `graceMs`) SIGKILL; resolves once the process is gone or given up on. */
export async function stopProcess(pid: number, graceMs: number): Promise<void> {
  if (!alive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitGone(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitGone(pid, 5000);
}

// ---- mounts ---------------------------------------------------------------------------------

/** "major:minor" of the filesystem mounted at dir, or undefined when nothing is (per mountinfo). */
export async function mountDevice(dir: string): Promise<string | undefined> {
  const abs = path.resolve(dir);
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const decode = (s: string) => s.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of info.split('\n')) {
    const f = line.split(' ');
    if (decode(f[4] ?? '') === abs) return f[2];
  }
  return undefined;
}

/** Waits until something is mounted at dir; fails early if `failed()` says the mounting process gave up. */
export async function waitMounted(dir: string, ms: number, failed: () => string | undefined): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await mountDevice(dir)) return;
    const why = failed();
    if (why !== undefined) throw new Error(why);
    if (Date.now() > deadline) throw new Error(`nothing was mounted at ${dir} within ${ms / 1000} s`);
    await sleep(100);
  }
}

/** Last resort for a hung mount: abort its FUSE connection, then detach it. */
export async function abortMount(dir: string): Promise<void> {
  const dev = await mountDevice(dir);
  if (!dev) return;
  const minor = dev.split(':')[1];
  await fsp.writeFile(`/sys/fs/fuse/connections/${minor}/abort`, '1').catch(() => undefined);
  await exec('fusermount', ['-uz', dir], { timeoutMs: 10_000 });
}

/** Unmounts dir if something is still mounted there: politely first, then by force. */
export async function ensureUnmounted(dir: string): Promise<void> {
  if (!(await mountDevice(dir))) return;
  await exec('fusermount', ['-u', dir], { timeoutMs: 20_000 });
  if (await mountDevice(dir)) await abortMount(dir);
}

/** Runs a probe's `main`: exits 0 once it resolves, or prints its error and exits 1. */
export function runProbe(main: () => Promise<void>): void {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
