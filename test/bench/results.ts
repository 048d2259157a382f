/**
 * What one benchmark run measured: per-contender results of every workload, the ceilings,
 * the product's own extra figures, and the CPU/memory/server profile of every phase. Filled
 * by bench.ts, rendered by report.ts.
 */

import type { ContenderKey } from './contenders';
import type { CpuUse } from './procstat';
import type { ServerWindow } from './server';

export type TreeKey = 'npm' | 'node_modules';

export interface TreeFacts {
  readonly key: TreeKey;
  /** What was packed, e.g. "node_modules/@aws-sdk". */
  readonly label: string;
  readonly source: string;
  readonly tarball: string;
  readonly files: number;
  readonly dirs: number;
  readonly symlinks: number;
  readonly bytes: number;
  readonly tarBytes: number;
}

export const entriesOf = (t: TreeFacts) => t.files + t.dirs + t.symlinks;

export interface RandResult {
  ops: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  maxUs: number;
}

export interface SmallPhase {
  seconds: number;
  p50Us?: number;
  p99Us?: number;
}

export interface SmallResult {
  /** Files the phases worked on: fewer than `requested` when creation was stopped at its time limit. */
  count: number;
  requested?: number;
  create: SmallPhase;
  ls: SmallPhase;
  stat: SmallPhase;
  delete: SmallPhase;
}

export interface SeqRead {
  bytes: number;
  /** From before open() to the last byte. */
  seconds: number;
  openUs: number;
  ttfbUs: number;
}

export interface TarRun {
  /** Until tar exited, or until it was stopped. */
  readonly seconds: number;
  /** False when tar was stopped at its time limit. */
  readonly complete: boolean;
  /** Entries present when it exited or was stopped. */
  readonly entries: number;
  /** Errors tar reported (it carries on after most), and the first of them. */
  readonly errors?: number;
  readonly firstError?: string;
  /** Seconds after tar exited until the contender called everything durable. */
  durableSeconds?: number;
}

/** One contender's turn. */
export interface Suite {
  readonly key: ContenderKey;
  readonly label: string;
  readonly setup: string;
  /** Why the contender did not run, when it did not. */
  skipped?: string;
  seqWrite?: number;
  /** Seconds after close until durable. */
  seqDurable?: number;
  warm: number[];
  warmBest?: SeqRead;
  randWarm?: RandResult;
  /** The small-files pass that created fastest, its phase's name, and every pass's create rate (files/s). */
  small?: SmallResult;
  smallPhase?: string;
  smallCreates?: number[];
  tars: Partial<Record<TreeKey, TarRun>>;
  coldMethod?: string;
  /** The fastest cold pass, with its phase's name and server window; false when any pass read wrong bytes. */
  cold?: SeqRead;
  coldPhase?: string;
  coldVerified?: boolean;
  coldWindow?: ServerWindow;
  randCold?: RandResult;
  randColdPhase?: string;
  /** Peak resident memory of the contender's processes over the whole turn (bytes). */
  rssPeak?: number;
}

export interface Ceilings {
  nullOptions?: string;
  nullWrite?: number;
  nullRead?: number;
  nullRandIdle?: RandResult;
  nullRandAwake?: RandResult;
  nullSmall?: SmallResult;
  nullTar: Partial<Record<TreeKey, number>>;
  s3Put?: number;
  s3Get?: number;
  s3GetWindow?: ServerWindow;
}

/** Figures only the product has (kept from the product-only benchmark). */
export interface ProductExtras {
  dirtyAtClose?: number;
  dirtyAfterTar?: { tree: TreeKey; bytes: number; files: number };
  tarVerify?: { tree: TreeKey; seconds: number; differences: Record<string, number>; sample: string };
  /** Seconds from the start of a write to the end of its upload under the upload limit. */
  limitedUpload?: number;
  serverRss?: number;
}

export interface Profile {
  readonly phase: string;
  readonly contender?: ContenderKey | 'ceiling';
  readonly seconds: number;
  /** CPU of the process serving the mount (Filespace engine, rclone, s3fs, the ceiling fs). */
  readonly fs?: CpuUse;
  readonly server?: CpuUse;
  /** Cores busy on the whole machine (everything: filesystem, server, tools, other load). */
  readonly machine?: number;
  /** Cores used by the commands this phase ran (dd, tar, the probes, the CLIs) and by the bench itself. */
  readonly tools: number;
  /** Cores used by processes that are not part of this benchmark. */
  readonly outside?: number;
  /** Peak resident memory of the filesystem process during the phase, bytes. */
  readonly fsRss?: number;
  readonly window?: ServerWindow;
}
