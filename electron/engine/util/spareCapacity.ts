/**
 * How much of the machine, and of this thread, went unused lately: the write-back queue's
 * measure of whether uploads behind a burst of writes would take time the burst itself needs
 * (upload/writeback.ts).
 *
 * Owns: the last reading of the machine's CPU times (`os.cpus()`, from /proc/stat) and of this
 * thread's event loop (`performance.eventLoopUtilization()`), and the figures between that
 * reading and the next one, taken at most every `SAMPLE_MS` (a reading costs tens of µs).
 */

import * as os from 'node:os';
import { performance, type EventLoopUtilization } from 'node:perf_hooks';

/** Figures are worked out over at least this long. */
export const SAMPLE_MS = 250;

export interface SpareCapacity {
  /** Cores of the machine that were idle, on average, over the last sample (0 to the core count). */
  readonly idleCores: number;
  /** The share of the time this thread's event loop was busy over the last sample (0 to 1). */
  readonly loopBusy: number;
}

function cpuTimes(): { idle: number; total: number; cores: number } {
  let idle = 0;
  let total = 0;
  const cpus = os.cpus();
  for (const c of cpus) {
    const t = c.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total, cores: cpus.length };
}

/** Reads the machine's and the thread's spare capacity (see the header). */
export class SpareCapacitySampler {
  private cpu = cpuTimes();
  private loop: EventLoopUtilization = performance.eventLoopUtilization();
  private at = Date.now();
  private last: SpareCapacity = { idleCores: os.availableParallelism(), loopBusy: 0 };

  /** The figures over the last complete sample (taken now when the last is `SAMPLE_MS` old). */
  read(): SpareCapacity {
    const now = Date.now();
    if (now - this.at < SAMPLE_MS) return this.last;
    const cpu = cpuTimes();
    const loop = performance.eventLoopUtilization();
    const total = cpu.total - this.cpu.total;
    const idleCores = total > 0 ? ((cpu.idle - this.cpu.idle) / total) * cpu.cores : this.last.idleCores;
    this.last = { idleCores, loopBusy: performance.eventLoopUtilization(loop, this.loop).utilization };
    this.cpu = cpu;
    this.loop = loop;
    this.at = now;
    return this.last;
  }
}
