/**
 * How an import or export reads to a user, shared by the command and the app: the one-line
 * progress (files, bytes, rate, ETA) and the summary at the end. Pure functions.
 */

import type { TransferJobDto, TransferProgressDto } from './api';
import { formatBytes, formatRate } from './format';

/** e.g. "42 s", "3 min 5 s", "2 h 10 min". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export function skippedCount(p: TransferProgressDto): number {
  return Object.values(p.skippedByReason).reduce((a, b) => a + (b ?? 0), 0);
}

/** The progress line: "1200 of 5000 files, 1.2 GiB of 3.4 GiB, 45.6 MiB/s, about 52 s left". */
export function transferLine(p: TransferProgressDto, now: number): string {
  if (!p.scanned) return `scanning: ${p.filesTotal} files, ${formatBytes(p.bytesTotal)} so far`;
  if (p.phase === 'finishing') return `setting folder times (${p.folders} folders)`;
  if (p.phase === 'uploading') return `uploading what was imported to the bucket`;
  const elapsed = Math.max(1, now - p.startedAt);
  const rate = (p.bytesDone * 1000) / elapsed;
  const left = p.bytesTotal - p.bytesDone;
  const eta = rate > 0 && left > 0 ? `, about ${formatDuration((left / rate) * 1000)} left` : '';
  return (
    `${p.filesDone} of ${p.filesTotal} files, ${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)}, ` +
    `${formatRate(rate)}${eta}`
  );
}

/** The summary lines once a job is over. */
export function transferSummary(job: TransferJobDto, now: number): string[] {
  const p = job.progress;
  const verb = job.direction === 'import' ? 'imported' : 'exported';
  const out = [
    `${p.phase === 'done' ? verb : `${job.direction} ${p.phase}`} ${job.from} -> ${job.to} in ${formatDuration(now - p.startedAt)}: ` +
      `${p.copied} copied (${formatBytes(p.bytesCopied)}, ${p.verified} verified by SHA-256), ${p.alreadyThere} already there, ` +
      `${p.folders} folders, ${p.symlinks} symlinks, ${skippedCount(p)} skipped, ${p.failed.length} failed`,
  ];
  const reasons = Object.entries(p.skippedByReason).filter(([, n]) => (n ?? 0) > 0);
  if (reasons.length > 0) out.push(`skipped: ${reasons.map(([r, n]) => `${n} ${r}`).join(', ')}`);
  for (const s of p.skipped) out.push(`  skipped ${JSON.stringify(s.path)}: ${s.reason} (${s.detail})`);
  if (p.skipped.length < skippedCount(p)) out.push(`  ... and ${skippedCount(p) - p.skipped.length} more`);
  for (const f of p.failed) out.push(`  FAILED ${JSON.stringify(f.path)}: ${f.error}`);
  if (p.error) out.push(`stopped: ${p.error}`);
  return out;
}
