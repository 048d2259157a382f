/**
 * What a person may type into each settings field, checked as they type, in the units they
 * see ("between 1 and 64", "at least 16 KiB/s"), before anything is sent to the host. The
 * ranges are the engine's (engine/config.ts); the engine checks them again where a change is
 * applied. An empty box is never read as 0: a feature is turned off only by saying so (0
 * read-ahead chunks, the "No limit" button), never by clearing a field. Pure functions.
 */

import { formatBytes } from '../../electron/contract/format';

export type Parsed = { readonly ok: true; readonly value: number } | { readonly ok: false; readonly error: string };

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const SIZE_UNITS = { MiB, GiB } as const;
export type SizeUnit = keyof typeof SIZE_UNITS;
export const RATE_UNITS = { 'KiB/s': KiB, 'MiB/s': MiB } as const;
export type RateUnit = keyof typeof RATE_UNITS;

/** Engine limits (engine/config.ts). */
export const LIMITS = {
  cacheCapMinBytes: 16 * MiB,
  uploadLimitMinBytesPerSec: 16 * KiB,
  uploadLimitMaxBytesPerSec: 1024 ** 4,
  uploadConcurrency: { min: 1, max: 64 },
  prefetchMaxChunks: { min: 0, max: 64 },
} as const;

const fail = (error: string): Parsed => ({ ok: false, error });

/** A limit as people write it: "16 KiB", "1 TiB" when exact, else as formatBytes rounds it. */
function exact(bytes: number): string {
  for (const [unit, size] of [
    ['TiB', 1024 * GiB],
    ['GiB', GiB],
    ['MiB', MiB],
    ['KiB', KiB],
  ] as const)
    if (bytes >= size && bytes % size === 0) return `${bytes / size} ${unit}`;
  return formatBytes(bytes);
}

function number(text: string): number | undefined {
  const t = text.trim().replace(',', '.');
  if (!/^\d+(\.\d+)?$/.test(t)) return undefined;
  return Number(t);
}

/** A whole count in [min, max]; `zero` says what 0 means when 0 is allowed ("turns read-ahead off"). */
export function parseCount(text: string, range: { min: number; max: number }, zero?: string): Parsed {
  const want = `a whole number between ${range.min} and ${range.max}${zero ? ` (0 ${zero})` : ''}`;
  if (text.trim() === '') return fail(`Enter ${want}`);
  const v = number(text);
  if (v === undefined || !Number.isInteger(v)) return fail(`Enter ${want}`);
  if (v < range.min || v > range.max) return fail(`Between ${range.min} and ${range.max}`);
  return { ok: true, value: v };
}

/** A size typed in `unit`, within [minBytes, maxBytes]. */
export function parseSize(text: string, unit: SizeUnit, minBytes: number, maxBytes: number): Parsed {
  if (text.trim() === '') return fail(`Enter a size between ${exact(minBytes)} and ${formatBytes(maxBytes)}`);
  const v = number(text);
  if (v === undefined) return fail(`Enter a number, like 20 or 1.5`);
  const bytes = Math.round(v * SIZE_UNITS[unit]);
  if (bytes < minBytes) return fail(`At least ${exact(minBytes)}`);
  if (bytes > maxBytes) return fail(`At most ${formatBytes(maxBytes)} (the room the cache disk has)`);
  return { ok: true, value: bytes };
}

/** An upload limit typed in `unit`; empty is not "no limit" (that is a button of its own). */
export function parseRate(text: string, unit: RateUnit): Parsed {
  const min = `at least ${exact(LIMITS.uploadLimitMinBytesPerSec)}/s`;
  if (text.trim() === '') return fail(`Enter a limit (${min}), or choose "No limit"`);
  const v = number(text);
  if (v === undefined) return fail(`Enter a number, like 512 or 1.5`);
  const bytes = Math.round(v * RATE_UNITS[unit]);
  if (bytes < LIMITS.uploadLimitMinBytesPerSec) return fail(min[0]!.toUpperCase() + min.slice(1));
  if (bytes > LIMITS.uploadLimitMaxBytesPerSec) return fail(`At most ${exact(LIMITS.uploadLimitMaxBytesPerSec)}/s`);
  return { ok: true, value: bytes };
}

/** A folder on this computer: a full path. */
export function parseFolder(text: string): { ok: true; value: string } | { ok: false; error: string } {
  const t = text.trim();
  if (t === '') return { ok: false, error: 'Enter a folder' };
  if (!t.startsWith('/')) return { ok: false, error: 'Enter a full path, starting with /' };
  return { ok: true, value: t };
}

/** A byte count as the number and unit a box shows: the largest unit that gives at least 1. */
export function inUnits<U extends string>(bytes: number, units: Readonly<Record<U, number>>): { text: string; unit: U } {
  const sorted = (Object.entries(units) as Array<[U, number]>).sort((a, b) => a[1] - b[1]);
  let [unit, size] = sorted[0]!;
  for (const [u, s] of sorted) if (bytes >= s) [unit, size] = [u, s];
  const v = bytes / size;
  return { text: String(Number.isInteger(v) ? v : Number(v.toFixed(2))), unit };
}
