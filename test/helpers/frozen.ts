/**
 * Exact snapshots of what an engine process keeps on disk. Walking a cache directory while
 * the engine runs is not a snapshot: a chunk counted in one folder may be evicted and a new
 * one written into a folder not walked yet, so the walk adds up files that never existed at
 * the same time (and overshoots by a chunk or more on a busy machine). Here the engine
 * process is stopped (SIGSTOP, every thread), the directories are walked, and the process is
 * continued: each sample is what was on disk at one instant.
 *
 * The process is stopped for the length of one walk (milliseconds); requests to its mount
 * wait meanwhile. The walk never enters a mount.
 */

import { readdirSync, statSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';

export interface DiskSample {
  readonly bytes: number;
  /** [path relative to the walked root, size], for explaining a sample. */
  readonly files: ReadonlyArray<readonly [string, number]>;
}

function walk(root: string, dir: string, out: Array<[string, number]>): void {
  let entries: import('node:fs').Dirent[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return; // not there (yet)
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      walk(root, p, out);
    } else {
      try {
        out.push([path.relative(root, p), statSync(p).size]);
      } catch {
        // removed between readdir and stat: only possible if something else changes the folder
      }
    }
  }
}

/** True once every thread of `pid` is stopped (or the process is gone). */
async function allStopped(pid: number): Promise<boolean> {
  const tasks = await fsp.readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  for (const t of tasks) {
    const stat = await fsp.readFile(`/proc/${pid}/task/${t}/stat`, 'utf8').catch(() => '');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state !== '' && state !== 'T' && state !== 't' && state !== 'Z' && state !== 'X') return false;
  }
  return true;
}

/**
 * Bytes of the files under `dirs` (inside `root`) at one instant of process `pid`. Fails if
 * the process does not stop within `timeoutMs` (a thread stuck in the kernel).
 */
export async function frozenDiskUsage(
  pid: number,
  root: string,
  dirs: readonly string[],
  timeoutMs = 30_000,
): Promise<DiskSample> {
  process.kill(pid, 'SIGSTOP');
  try {
    const deadline = Date.now() + timeoutMs;
    while (!(await allStopped(pid))) {
      if (Date.now() > deadline) throw new Error(`process ${pid} did not stop within ${timeoutMs} ms`);
      await new Promise((r) => setImmediate(r));
    }
    const files: Array<[string, number]> = [];
    for (const d of dirs) walk(root, path.join(root, d), files);
    return { bytes: files.reduce((n, [, s]) => n + s, 0), files };
  } finally {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone
    }
  }
}

/**
 * Samples `frozenDiskUsage` back to back (with a short pause so the process makes progress)
 * until `stop()` is called; `stop` resolves to the largest sample seen and how many were taken.
 */
export function sampleFrozenDiskUsage(
  pid: number,
  root: string,
  dirs: readonly string[],
  pauseMs = 10,
): { stop(): Promise<{ peak: DiskSample; samples: number }> } {
  let running = true;
  let peak: DiskSample = { bytes: 0, files: [] };
  let samples = 0;
  const loop = (async () => {
    while (running) {
      let s: DiskSample;
      try {
        s = await frozenDiskUsage(pid, root, dirs);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') break; // the process ended
        throw err;
      }
      samples++;
      if (s.bytes > peak.bytes) peak = s;
      await new Promise((r) => setTimeout(r, pauseMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { peak, samples };
    },
  };
}

/** The files of a sample, largest first, as lines for an assertion message. */
export function describeSample(s: DiskSample, max = 60): string {
  return [...s.files]
    .sort((a, b) => b[1] - a[1])
    .slice(0, max)
    .map(([p, n]) => `  ${p} ${n}`)
    .join('\n');
}
