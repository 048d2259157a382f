/**
 * What the engine reports about itself (`Engine.stats()`): the shape of the status, and the
 * pieces of it that take more than reading a counter. Hosts stream it to people (sync status,
 * throughput, cache use, lease state, errors).
 *
 * Owns: the throughput samples (bytes up and down over the last 5 s), the list of files
 * waiting to upload (recomputed at most every 2 s, since it walks the tree), and the wording
 * of the "writes waiting" state, with what to do about it.
 */

import { Tree, pathsOfInodes } from './meta/tree';
import { LeaseStatus } from './meta/role';
import { StallCause, WritesWaiting } from './vfs/backpressure';

export interface EngineStats {
  dirtyBytes: number;
  dirtyFiles: number;
  dirtyChunks: number;
  pendingMetaOps: number;
  uploadBytesPerSec: number;
  /** The upload bandwidth limit in force (0: none). */
  uploadLimitBytesPerSec: number;
  downloadBytesPerSec: number;
  uploadedBytes: number;
  downloadedBytes: number;
  cacheUsedBytes: number;
  cacheCapBytes: number;
  /** Bytes served to readers from bucket data, hits and misses (the hit ratio's denominator). */
  cacheReadBytes: number;
  cacheHitRatio: number;
  /** Bytes of whole chunks held in memory for sequential readers (cache/chunkCache.ts). */
  readMemoryBytes: number;
  openFiles: number;
  offline: boolean;
  /** When the bucket stopped answering (while offline). */
  offlineSince: number | undefined;
  uploadsPaused: boolean;
  /** Writers waiting for room in a full cache, or refused it (see vfs/backpressure.ts). */
  writesWaiting: WritesWaitingStatus | undefined;
  readOnlyReason: string | undefined;
  lastError: string | undefined;
  /** Paths of files with data not yet uploaded (at most PENDING_FILES_SHOWN). */
  pendingFiles: string[];
  lease: LeaseStatus;
  /** Sets of changes kept aside because another machine took over (see `filespace aside`). */
  aside: Array<{ id: string; createdAt: number; files: number; reason: string }>;
  /** What is pinned for use offline, with how much of each is here (pins.ts). */
  pins: Array<{ path: string; localBytes: number; totalBytes: number }>;
  /** Why pinned data is not all downloaded, while it is not. */
  pinsProblem: string | undefined;
  /** Folders not loaded from the bucket yet (a fresh machine's first mount, meta/pageLoader.ts). */
  foldersLoading: number;
}

export interface WritesWaitingStatus {
  since: number;
  /** What keeps the cache full: uploads paused, the bucket offline, uploads failing, nothing uploading, or still uploading. */
  cause: StallCause | 'uploading';
  /** True while writes that need room fail at once with ENOSPC. */
  refusing: boolean;
  refused: number;
  /** The state in words, with what to do about it. */
  message: string;
}

export const PENDING_FILES_SHOWN = 50;

/** Bytes uploaded and downloaded, sampled every second; rates over the last 5 s. */
export class Throughput {
  private samples: Array<{ t: number; up: number; down: number }> = [];

  sample(uploadedBytes: number, downloadedBytes: number): void {
    const now = Date.now();
    this.samples.push({ t: now, up: uploadedBytes, down: downloadedBytes });
    while (this.samples.length > 0 && now - this.samples[0]!.t > 5000) this.samples.shift();
  }

  /** Bytes per second. */
  rate(key: 'up' | 'down'): number {
    const s = this.samples;
    if (s.length < 2) return 0;
    const first = s[0]!;
    const last = s[s.length - 1]!;
    const dt = (last.t - first.t) / 1000;
    return dt > 0 ? Math.round((last[key] - first[key]) / dt) : 0;
  }
}

/** Paths of files waiting to upload; recomputed at most every 2 s (it reads their folders). */
export class PendingFiles {
  private cached: { at: number; paths: string[] } | undefined;

  paths(tree: Tree, dirtyInodes: () => number[]): string[] {
    const now = Date.now();
    if (this.cached && now - this.cached.at < 2000) return this.cached.paths;
    const inos = dirtyInodes();
    let paths: string[] = [];
    if (inos.length > 0) {
      const all = pathsOfInodes(tree, inos);
      paths = inos
        .map((ino) => all.get(ino)?.[0])
        .filter((p): p is string => p !== undefined)
        .sort()
        .slice(0, PENDING_FILES_SHOWN);
    }
    this.cached = { at: now, paths };
    return paths;
  }
}

/**
 * The "writes waiting" state in words, with what to do about it. `failure` is the upload
 * error that keeps the cache full, if that is the cause.
 */
export function describeWritesWaiting(
  w: WritesWaiting | undefined,
  failure: string | undefined,
  writeStallTimeoutMs: number,
): WritesWaitingStatus | undefined {
  if (!w) return undefined;
  let message: string;
  if (w.cause === 'uploading') {
    message = 'the cache is full of changes still uploading; writes go on as uploads free room';
  } else {
    const [why, remedy] = {
      paused: ['uploads are paused', 'resume uploads or raise the cache size'],
      offline: ['the bucket does not answer', 'they upload once it answers; or raise the cache size'],
      failing: [`uploads fail: ${failure ?? 'see the log'}`, 'fix the cause or raise the cache size'],
      idle: ['nothing is uploading', 'raise the cache size'],
    }[w.cause];
    const stallS = Math.round(writeStallTimeoutMs / 1000);
    message =
      `the cache is full of changes that cannot upload (${why}); ${remedy}. ` +
      (w.refusing
        ? `Meanwhile writes that need room fail with "No space left on device" (${w.refused} so far).`
        : `Writes fail with "No space left on device" after waiting ${stallS} s.`);
  }
  return { since: w.since, cause: w.cause, refusing: w.refusing, refused: w.refused, message };
}
