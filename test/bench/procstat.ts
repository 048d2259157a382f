/**
 * Process observation for the benchmark, read from /proc without touching any mount:
 * resident memory (VmRSS polled, VmHWM at the end), CPU time of a process and of its main
 * thread, so each phase can say whether the engine's JS thread (the one that runs every FUSE
 * callback) was busy, CPU time by thread name (the probes' breakdown), and the whole
 * machine's CPU use, so other load on the machine shows.
 */

import { promises as fsp } from 'node:fs';

const TICKS_PER_SEC = 100; // USER_HZ on Linux

/** VmRSS and VmHWM of a process in bytes, or undefined once it is gone. */
export async function memoryOf(pid: number): Promise<{ rss: number; hwm: number } | undefined> {
  const text = await fsp.readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/**
 * The fields of a /proc `stat` file after the command name: [0] is field 3 (state), [1] the
 * parent's pid, [11] and [12] user and system ticks, [13] and [14] those of waited-for children.
 * Undefined once the process is gone.
 */
async function statFields(file: string): Promise<string[] | undefined> {
  const stat = await fsp.readFile(file, 'utf8').catch(() => '');
  return stat ? stat.slice(stat.lastIndexOf(')') + 2).split(' ') : undefined;
}

/** User + system ticks of `fields` (statFields). */
const ticksOf = (fields: string[]) => Number(fields[11]) + Number(fields[12]);

/** CPU ticks (user + system) of a whole process, exited threads included, and of its main thread. */
async function processTicks(pid: number): Promise<{ total: number; main: number } | undefined> {
  const total = await statFields(`/proc/${pid}/stat`);
  const main = await statFields(`/proc/${pid}/task/${pid}/stat`);
  return total === undefined || main === undefined ? undefined : { total: ticksOf(total), main: ticksOf(main) };
}

/**
 * CPU ticks (user, system) of each of a process's threads, summed by thread name: "main" for
 * the main thread, the others by their name with any trailing number written "#".
 */
export type ThreadTicks = Map<string, { user: number; sys: number }>;

/** Reads ThreadTicks of a process (empty once it is gone). */
export async function threadTicks(pid: number): Promise<ThreadTicks> {
  const out: ThreadTicks = new Map();
  const tids = await fsp.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const tid of tids) {
    const stat = await fsp.readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => '');
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, close).replace(/[0-9]+$/, '#');
    const f = stat.slice(close + 2).split(' ');
    const t = out.get(name) ?? { user: 0, sys: 0 };
    t.user += Number(f[11]);
    t.sys += Number(f[12]);
    out.set(name, t);
  }
  return out;
}

/**
 * CPU seconds each thread name used between two readings, the names that used 0.05 s or more:
 * "name 1.23, ..." or, with `userSys`, user and system seconds apart: "name 1.00u+0.23s, ...".
 */
export function threadDelta(a: ThreadTicks, b: ThreadTicks, opts: { userSys?: boolean } = {}): string {
  const rows: string[] = [];
  for (const [name, t] of b) {
    const s = a.get(name) ?? { user: 0, sys: 0 };
    const user = t.user - s.user;
    const sys = t.sys - s.sys;
    if ((user + sys) / TICKS_PER_SEC < 0.05) continue;
    const secs = (ticks: number) => (ticks / TICKS_PER_SEC).toFixed(2);
    rows.push(opts.userSys ? `${name} ${secs(user)}u+${secs(sys)}s` : `${name} ${secs(user + sys)}`);
  }
  return rows.join(', ');
}

export interface CpuUse {
  /** CPU seconds per wall second of the whole process (1.0 = one core busy). */
  readonly total: number;
  /** Same, for the main thread only (Node's JS thread: every FUSE callback runs there). */
  readonly main: number;
}

/** Snapshot now; call the returned function at the end of the phase to get the CPU use in between. */
export async function cpuMeter(pid: number): Promise<() => Promise<CpuUse | undefined>> {
  const t0 = process.hrtime.bigint();
  const before = await processTicks(pid);
  return async () => {
    const after = await processTicks(pid);
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!before || !after || wall <= 0) return undefined;
    return {
      total: (after.total - before.total) / TICKS_PER_SEC / wall,
      main: (after.main - before.main) / TICKS_PER_SEC / wall,
    };
  };
}

/**
 * The CPU a process used since it started, in cores over `seconds`: for a process started
 * within a phase (a mount's filesystem process), all of whose CPU belongs to that phase.
 */
export async function cpuSinceStart(pid: number, seconds: number): Promise<CpuUse | undefined> {
  const t = await processTicks(pid);
  if (!t || seconds <= 0) return undefined;
  return { total: t.total / TICKS_PER_SEC / seconds, main: t.main / TICKS_PER_SEC / seconds };
}

/**
 * CPU seconds of this process's children that have ended and been waited for (cutime + cstime
 * of /proc/self/stat): every command the bench ran, through its own exec or a test helper's.
 */
export async function endedChildrenCpu(): Promise<number> {
  const f = await statFields('/proc/self/stat');
  return f ? (Number(f[13]) + Number(f[14])) / TICKS_PER_SEC : 0;
}

/** CPU seconds a child process of this one has used so far (0 for any other process, or one gone). */
export async function childCpuSoFar(pid: number): Promise<number> {
  const f = await statFields(`/proc/${pid}/stat`);
  return f && Number(f[1]) === process.pid ? ticksOf(f) / TICKS_PER_SEC : 0;
}

/**
 * The CPU of a process that is not this one's child and exits (an unmounted daemon), from now
 * until `stop`: its ticks are read every `everyMs` while it lives, since they are gone with it.
 * Misses at most the last `everyMs` of its life. Undefined for a child (its CPU reaches this
 * process's ended children when it is reaped) or a process already gone.
 */
export async function exitingMeter(
  pid: number,
  everyMs = 50,
): Promise<((seconds: number) => Promise<CpuUse | undefined>) | undefined> {
  const f = await statFields(`/proc/${pid}/stat`);
  if (!f || Number(f[1]) === process.pid) return undefined;
  const first = await processTicks(pid);
  if (!first) return undefined;
  let last = first;
  let reading = false;
  const timer = setInterval(() => {
    if (reading) return;
    reading = true;
    void processTicks(pid)
      .then((t) => {
        if (t) last = t;
      })
      .finally(() => (reading = false));
  }, everyMs);
  timer.unref();
  return async (seconds) => {
    clearInterval(timer);
    const t = await processTicks(pid);
    if (t) last = t;
    if (seconds <= 0) return undefined;
    return {
      total: (last.total - first.total) / TICKS_PER_SEC / seconds,
      main: (last.main - first.main) / TICKS_PER_SEC / seconds,
    };
  };
}

/** Busy and total jiffies of the whole machine (first line of /proc/stat). */
async function machineTicks(): Promise<{ busy: number; total: number } | undefined> {
  const line = (await fsp.readFile('/proc/stat', 'utf8').catch(() => '')).split('\n')[0] ?? '';
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  if (v.length < 4) return undefined;
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0); // idle + iowait
  return { busy: total - idle, total };
}

/** Cores busy on the whole machine between now and the call of the returned function. */
export async function machineMeter(): Promise<() => Promise<number | undefined>> {
  const before = await machineTicks();
  const t0 = process.hrtime.bigint();
  return async () => {
    const after = await machineTicks();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    if (!before || !after || wall <= 0) return undefined;
    return (after.busy - before.busy) / TICKS_PER_SEC / wall;
  };
}

/**
 * Polls VmRSS of a changing set of processes and remembers each one's peak, overall and within
 * a window (a benchmark phase). A window starts by resetting the kernel's own peak (VmHWM, via
 * clear_refs) after folding it into the overall peak, so short spikes between polls still count.
 */
export class RssSampler {
  private readonly peaks = new Map<number, number>();
  private readonly windows = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly intervalMs = 200) {}

  watch(pid: number): void {
    if (!this.peaks.has(pid)) this.peaks.set(pid, 0);
    if (!this.timer) {
      this.timer = setInterval(() => void this.sample(), this.intervalMs);
      this.timer.unref();
    }
  }

  private async sample(): Promise<void> {
    await Promise.all(
      [...this.peaks.keys()].map(async (pid) => {
        const m = await memoryOf(pid);
        if (!m) return;
        const now = Math.max(m.rss, m.hwm);
        this.peaks.set(pid, Math.max(this.peaks.get(pid) ?? 0, now));
        if (this.windows.has(pid)) this.windows.set(pid, Math.max(this.windows.get(pid) ?? 0, now));
      }),
    );
  }

  async beginWindow(pid: number): Promise<void> {
    this.watch(pid);
    await this.sample();
    await fsp.writeFile(`/proc/${pid}/clear_refs`, '5').catch(() => undefined);
    this.windows.set(pid, 0);
    await this.sample();
  }

  /** Peak within the window begun last for pid. */
  async endWindow(pid: number): Promise<number> {
    await this.sample();
    const v = this.windows.get(pid) ?? 0;
    this.windows.delete(pid);
    return v;
  }

  /** Peak seen for pid so far, including its VmHWM if it is still alive. */
  async peak(pid: number): Promise<number> {
    await this.sample();
    return this.peaks.get(pid) ?? 0;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/** Pid of the process whose command line contains every one of `parts` (first match). */
export async function findProcess(parts: string[]): Promise<number | undefined> {
  for (const entry of await fsp.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmd = await fsp.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    const args = cmd.split('\0');
    if (parts.every((p) => args.includes(p))) return Number(entry);
  }
  return undefined;
}

/** Established TCP connections from clients to a local port (IPv4 and IPv6), from /proc/net. */
export async function connectionsTo(port: number): Promise<number> {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  let n = 0;
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    const text = await fsp.readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      // f[1] local address:port, f[2] remote address:port, f[3] state (01 = ESTABLISHED)
      if (f[3] === '01' && f[2]?.endsWith(`:${hexPort}`)) n++;
    }
  }
  return n;
}

/** Samples connectionsTo(port) every intervalMs until the returned function is called. */
export function connectionSampler(port: number, intervalMs = 100): () => { avg: number; max: number } | undefined {
  const samples: number[] = [];
  const timer = setInterval(() => void connectionsTo(port).then((n) => samples.push(n)), intervalMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    if (samples.length === 0) return undefined;
    return { avg: samples.reduce((a, b) => a + b, 0) / samples.length, max: Math.max(...samples) };
  };
}
