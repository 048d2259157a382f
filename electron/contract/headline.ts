/**
 * What a filespace is doing, in one line a person reads at a glance ("Up to date", "Uploading
 * 3 files — 212 MiB left, about 40 s", "Paused — 1.2 GiB waiting"), the progress of the current
 * upload batch, the time it should take, and the write lease in plain words. Shared by the
 * window, the tray and the quit guard, so all three name the same state and count the same
 * pending bytes (`pendingOf`). Pure functions of the status and the clock.
 *
 * Batch progress: a batch starts when changes appear and ends when nothing is left; its total
 * grows by every byte written into it, and what is done is the total minus what is left, so the
 * bar never runs backwards while uploads go on. While bytes are still being written (the left
 * figure would rise and fall with every write), the headline says "writing…" instead.
 */

import type { StatusDto } from './api';
import { formatBytes } from './format';

export type HeadlineKind =
  'up-to-date' | 'uploading' | 'paused' | 'offline' | 'writes-waiting' | 'read-only' | 'not-mounted' | 'busy' | 'failed';

/** How the headline is shown: calm, working, needs attention, or broken. */
export type HeadlineTone = 'ok' | 'busy' | 'warn' | 'error';

export interface Headline {
  readonly kind: HeadlineKind;
  readonly tone: HeadlineTone;
  readonly text: string;
}

export type HeadlineStatus = Pick<
  StatusDto,
  'state' | 'dirtyBytes' | 'dirtyFiles' | 'pendingMetaOps' | 'uploadsPaused' | 'offline' | 'readOnlyReason' | 'lastError'
> &
  Partial<Pick<StatusDto, 'writesWaiting' | 'lease' | 'uploadBytesPerSec'>>;

export interface Pending {
  readonly bytes: number;
  readonly files: number;
  readonly metaOps: number;
}

/** What waits to upload: file data, files, and other changes (names, folders, deletions). */
export function pendingOf(statuses: ReadonlyArray<Pick<StatusDto, 'dirtyBytes' | 'dirtyFiles' | 'pendingMetaOps'>>): Pending {
  return statuses.reduce<Pending>(
    (p, s) => ({ bytes: p.bytes + s.dirtyBytes, files: p.files + s.dirtyFiles, metaOps: p.metaOps + s.pendingMetaOps }),
    { bytes: 0, files: 0, metaOps: 0 },
  );
}

/** "1 file", "1,950 files". */
export function countOf(n: number, one: string, many = `${one}s`): string {
  return `${n.toLocaleString('en-US')} ${n === 1 ? one : many}`;
}

/** How long, roughly: "a few seconds", "about 40 s", "about 3 min", "about 2 h 10 min". */
export function durationWords(seconds: number): string {
  if (seconds < 10) return 'a few seconds';
  if (seconds < 60) return `about ${Math.round(seconds / 5) * 5} s`;
  const min = Math.round(seconds / 60);
  if (min < 60) return `about ${min} min`;
  const h = Math.floor(min / 60);
  const m = min % 60;
  return `about ${h} h${m ? ` ${m} min` : ''}`;
}

/** The time left for `bytes` at `bytesPerSec`, in words; undefined when nothing moves. */
export function etaWords(bytes: number, bytesPerSec: number): string | undefined {
  if (bytes <= 0 || !(bytesPerSec > 0)) return undefined;
  return durationWords(bytes / bytesPerSec);
}

/** What waits, in a few words: "1.2 GiB", or "12 other changes" when no file data waits. */
function waiting(s: HeadlineStatus): string {
  if (s.dirtyBytes > 0 || s.dirtyFiles > 0) return formatBytes(s.dirtyBytes);
  return countOf(s.pendingMetaOps, 'change');
}

export interface HeadlineContext {
  /** Upload rate to estimate the time left from (bytes/s; the recent average). */
  readonly rateBytesPerSec?: number;
  /** Bytes are being written right now: the figure left is not stable. */
  readonly writing?: boolean;
}

/** The one line a card, the tray and the window title show for a filespace. */
export function statusHeadline(s: HeadlineStatus, ctx: HeadlineContext = {}): Headline {
  const pending = s.dirtyBytes > 0 || s.dirtyFiles > 0 || s.pendingMetaOps > 0;
  if (s.state === 'error') return { kind: 'failed', tone: 'error', text: 'Not mounted — the last mount failed' };
  if (s.state === 'mounting') return { kind: 'busy', tone: 'busy', text: 'Mounting…' };
  if (s.state === 'unmounting') return { kind: 'busy', tone: 'busy', text: 'Unmounting…' };
  if (s.state === 'unmounted') {
    return pending
      ? { kind: 'not-mounted', tone: 'warn', text: `Not mounted — ${waiting(s)} waits to upload at the next mount` }
      : { kind: 'not-mounted', tone: 'ok', text: 'Not mounted — everything is in the bucket' };
  }
  const w = s.writesWaiting;
  if (w && w.cause !== 'uploading') {
    return {
      kind: 'writes-waiting',
      tone: 'error',
      text: `${w.refusing ? 'Writes refused' : 'Writes waiting'} — the cache is full of changes not uploaded yet`,
    };
  }
  const readOnly = s.readOnlyReason !== null || s.lease?.role === 'follower';
  if (readOnly) {
    const holder = s.lease?.role === 'follower' ? s.lease.holder : null;
    return {
      kind: 'read-only',
      tone: 'ok',
      text: holder ? `Read-only (following ${holder})` : `Read-only${s.readOnlyReason ? ` — ${s.readOnlyReason}` : ''}`,
    };
  }
  if (s.uploadsPaused) {
    return pending
      ? { kind: 'paused', tone: 'warn', text: `Paused — ${waiting(s)} waiting` }
      : { kind: 'up-to-date', tone: 'ok', text: 'Up to date (uploads paused)' };
  }
  if (s.offline) {
    return {
      kind: 'offline',
      tone: 'warn',
      text: pending ? `Offline — ${waiting(s)} waiting, reading from the cache` : 'Offline — reading from the cache',
    };
  }
  if (!pending) return { kind: 'up-to-date', tone: 'ok', text: 'Up to date' };
  if (s.dirtyFiles === 0 && s.dirtyBytes === 0)
    return { kind: 'uploading', tone: 'busy', text: `Uploading ${countOf(s.pendingMetaOps, 'change')}` };
  const what = `Uploading ${countOf(s.dirtyFiles, 'file')}`;
  if (ctx.writing) return { kind: 'uploading', tone: 'busy', text: `${what} — writing…` };
  const eta = etaWords(s.dirtyBytes, ctx.rateBytesPerSec ?? s.uploadBytesPerSec ?? 0);
  return { kind: 'uploading', tone: 'busy', text: `${what} — ${formatBytes(s.dirtyBytes)} left${eta ? `, ${eta}` : ''}` };
}

/** The current upload batch: bytes written into it, bytes of it done (see the module header). */
export interface Batch {
  readonly totalBytes: number;
  readonly doneBytes: number;
  /** Dirty bytes at the last sample. */
  readonly lastDirtyBytes: number;
  /** Until when the batch counts as being written (ms since the epoch). */
  readonly writingUntil: number;
}

/** How long after the last growth of the pending bytes the headline still says "writing…". */
export const WRITING_QUIET_MS = 3000;

/** The batch after a new sample of the dirty bytes; undefined when nothing is left. */
export function nextBatch(prev: Batch | undefined, dirtyBytes: number, now: number): Batch | undefined {
  if (dirtyBytes <= 0) return undefined;
  if (!prev) return { totalBytes: dirtyBytes, doneBytes: 0, lastDirtyBytes: dirtyBytes, writingUntil: 0 };
  const grew = dirtyBytes - prev.lastDirtyBytes;
  const totalBytes = prev.totalBytes + Math.max(0, grew);
  return {
    totalBytes,
    doneBytes: Math.max(prev.doneBytes, totalBytes - dirtyBytes),
    lastDirtyBytes: dirtyBytes,
    writingUntil: grew > 0 ? now + WRITING_QUIET_MS : prev.writingUntil,
  };
}

/** Average upload rate over the samples of the last `windowMs` (bytes/s). */
export function recentRate(samples: ReadonlyArray<{ t: number; up: number }>, now: number, windowMs = 20_000): number {
  const recent = samples.filter((s) => now - s.t <= windowMs);
  if (recent.length === 0) return 0;
  return recent.reduce((a, s) => a + s.up, 0) / recent.length;
}

/** The write lease in words a user understands; `now` makes "checked 3 s ago" tick. */
export function leaseWords(l: NonNullable<StatusDto['lease']>, now = Date.now()): string {
  const ago = (t: number | null) => (t === null ? 'not yet' : `${Math.max(0, Math.round((now - t) / 1000))} s ago`);
  if (l.role === 'writer' && l.renewFailingSince != null) {
    return (
      `This computer is writing, but cannot reach the bucket to keep its claim (last confirmed ${ago(l.lastRenewedAt)}); ` +
      'changes stay on this computer and upload when the bucket answers'
    );
  }
  if (l.role === 'writer')
    return `This computer is writing; others can open it read-only (claim confirmed ${ago(l.lastRenewedAt)})`;
  if (l.role === 'follower') {
    const who = l.holder ? `${l.holder} is writing` : 'Nobody is writing now';
    const lag =
      l.followerLagMs === null ? 'not following changes right now' : `at most ${Math.ceil(l.followerLagMs / 1000)} s behind`;
    return `${who}; this computer reads it, ${lag}`;
  }
  return l.lost ? `This computer stopped writing: ${l.lost}` : 'Waiting to become the computer that writes';
}

/**
 * Writer: the computers that follow it read-only, in words ("laptop, heard 5 s ago, at most
 * 3 s behind"); followers announce themselves in the bucket (the engine's meta/followers.ts).
 * Undefined on a machine that does not write.
 */
export function followersWords(l: NonNullable<StatusDto['lease']>, now = Date.now()): string | undefined {
  if (l.role !== 'writer') return undefined;
  const list = l.followers ?? [];
  if (list.length === 0) return 'No other computer has it open read-only';
  const one = (f: (typeof list)[number]) =>
    `${f.name} (heard ${Math.max(0, Math.round((now - f.heardAt) / 1000))} s ago` +
    (f.lagMs === null ? ')' : `, at most ${Math.ceil(f.lagMs / 1000)} s behind)`);
  const more = l.followersMore ? ` and ${l.followersMore} more` : '';
  return `Open read-only on ${list.map(one).join(', ')}${more}`;
}
