/**
 * How sizes, rates and sync progress read to a user, shared by the command, the tray and the
 * renderer so all say the same thing. Pure functions.
 *
 * Sizes are in binary units (B, KiB, MiB, GiB, TiB) everywhere, app and command alike: they
 * are the units people type to the command ("--cache-size 20GiB", read as 20 GiB the way du
 * and df read 20G), the units of the app's own inputs (cache cap in MiB, upload limit in
 * KiB/s), of chunk sizes (powers of two) and of the engine's limits ("at least 16MiB"). A
 * 256 MiB cache cap thus reads "256 MiB", not "268 MB".
 */

import type { StatusDto } from './api';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

/** e.g. "0 B", "1023 B", "1.5 KiB", "99.9 MiB", "212 MiB", "20.0 GiB": one decimal below 100. */
export function formatBytes(bytes: number): string {
  let v = Math.max(0, bytes);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

export function formatRate(bytesPerSec: number): string {
  return `${formatBytes(bytesPerSec)}/s`;
}

function files(n: number): string {
  return `${n} file${n === 1 ? '' : 's'}`;
}

/** A time of day, e.g. "14:03:07" (local time). */
export function clockTime(ms: number): string {
  return new Date(ms).toTimeString().slice(0, 8);
}

/**
 * One line of sync progress, e.g. "Uploading 3 files, 212 MiB left", "Offline since 14:03:07:
 * 3 files, 212 MiB waiting", or, when writers wait for room that cannot come, "Writes waiting:
 * the cache is full of changes that cannot upload (uploads are paused); ...".
 */
export function syncLine(
  s: Pick<StatusDto, 'state' | 'dirtyBytes' | 'dirtyFiles' | 'pendingMetaOps' | 'uploadsPaused' | 'offline'> &
    Partial<Pick<StatusDto, 'offlineSince' | 'writesWaiting'>>,
): string {
  const w = s.state === 'mounted' ? s.writesWaiting : undefined;
  if (w && w.cause !== 'uploading') return `${w.refusing ? 'Writes refused' : 'Writes waiting'}: ${w.message}`;
  const pending = s.dirtyBytes > 0 || s.dirtyFiles > 0;
  if (!pending && s.pendingMetaOps === 0) return s.state === 'mounted' ? 'Up to date' : 'Everything is in the bucket';
  const what = pending
    ? `${files(s.dirtyFiles)}, ${formatBytes(s.dirtyBytes)}`
    : `${s.pendingMetaOps} change${s.pendingMetaOps === 1 ? '' : 's'}`;
  if (s.state !== 'mounted') return `${what} waiting to upload at the next mount`;
  if (s.uploadsPaused) return `Uploads paused: ${what} waiting`;
  if (s.offline) return `Offline${s.offlineSince ? ` since ${clockTime(s.offlineSince)}` : ''}: ${what} waiting`;
  return pending ? `Uploading ${files(s.dirtyFiles)}, ${formatBytes(s.dirtyBytes)} left` : `Uploading ${what}`;
}

/** A wall-clock time of day as HH:MM:SS (local time). */
function timeOfDay(t: number): string {
  const d = new Date(t);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

/**
 * The lease in one line, e.g. "writer: holds the write lease (renewed 3s ago, ...)"; while
 * renewals fail, since when and what that means for writes.
 */
export function leaseLine(l: NonNullable<StatusDto['lease']>, now = Date.now()): string {
  const secs = (ms: number) => Math.max(0, Math.round(ms / 1000));
  const ago = (t: number | null) => (t === null ? 'never' : `${secs(now - t)}s ago`);
  if (l.role === 'writer' && l.renewFailingSince != null && l.lastRenewedAt !== null) {
    const since = `could not renew the write lease since ${timeOfDay(l.lastRenewedAt)} (${secs(now - l.lastRenewedAt)}s)`;
    if (l.validUntil != null && l.validUntil > now) {
      return `writer: ${since}; retrying, and still committing for ${secs(l.validUntil - now)}s; after that, writes are kept on this computer until the bucket answers`;
    }
    return (
      `writer, not committing: ${since}; writes are kept on this computer and committed once the bucket answers, ` +
      'unless another machine takes the lease meanwhile (then they are set aside)'
    );
  }
  if (l.role === 'writer') {
    const followers = (l.followers ?? []).map((f) => `${f.name} (heard ${ago(f.heardAt)})`);
    const more = l.followersMore ? ` and ${l.followersMore} more` : '';
    return (
      `writer: holds the write lease (renewed ${ago(l.lastRenewedAt)}, expires after ${l.ttlMs / 1000}s without renewal)` +
      (followers.length > 0 ? `; followed read-only by ${followers.join(', ')}${more}` : '')
    );
  }
  if (l.role === 'follower') {
    const lag = l.followerLagMs === null ? 'not following (see below)' : `at most ${(l.followerLagMs / 1000).toFixed(1)}s behind`;
    return `follower of ${l.holder ?? 'no current writer'} (lease renewed ${ago(l.lastRenewedAt)}); ${lag}`;
  }
  return l.lost ? `not writing: ${l.lost}` : 'waiting for the write lease';
}
