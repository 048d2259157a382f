/**
 * The keys of `filespace set NAME KEY VALUE`: what a person types, read into the typed
 * setting it names ("50GiB" -> cacheCapBytes: 53687091200). This is the only place a
 * setting is read from text; the host library and the engine take numbers.
 */

import type { SettingsChange } from '../contract/api';
import { UserError } from '../engine/errors';
import { parseDuration, parseRate, parseSize } from './units';

function wholeNumber(v: string): number {
  if (!/^\d+$/.test(v)) throw new Error(`"${v}" is not a whole number`);
  return Number(v);
}

/** Each key, the setting it sets, and how its value is read. */
const KEYS: Readonly<Record<string, (value: string) => SettingsChange>> = {
  'cache-size': (v) => ({ cacheCapBytes: parseSize(v) }),
  'upload-delay': (v) => ({ uploadDelayMs: parseDuration(v) }),
  'upload-concurrency': (v) => ({ uploadConcurrency: wholeNumber(v) }),
  'upload-limit': (v) => ({ uploadLimitBytesPerSec: parseRate(v) }),
  'download-concurrency': (v) => ({ downloadConcurrency: wholeNumber(v) }),
  'prefetch-chunks': (v) => ({ prefetchMaxChunks: wholeNumber(v) }),
  'read-timeout': (v) => ({ readTimeoutMs: parseDuration(v) }),
  'write-stall-timeout': (v) => ({ writeStallTimeoutMs: parseDuration(v) }),
  'probe-timeout': (v) => ({ probeTimeoutMs: parseDuration(v) }),
  'lease-ttl': (v) => ({ leaseTtlMs: parseDuration(v) }),
  'follow-interval': (v) => ({ followIntervalMs: parseDuration(v) }),
  'gc-grace': (v) => ({ gcGraceMs: parseDuration(v) }),
  'gc-interval': (v) => ({ gcIntervalMs: parseDuration(v) }),
  'compact-interval': (v) => ({ metaCompactIntervalMs: parseDuration(v) }),
  'compact-grace': (v) => ({ metaCompactGraceMs: parseDuration(v) }),
};

export const SETTABLE_KEYS: readonly string[] = Object.keys(KEYS);

/** Reads `filespace set` KEY VALUE into a typed settings change; a bad key or value is a UserError naming it. */
export function settingFromKey(key: string, value: string): SettingsChange {
  const read = Object.prototype.hasOwnProperty.call(KEYS, key) ? KEYS[key] : undefined;
  if (!read) throw new UserError(`unknown setting "${key}"; settable: ${SETTABLE_KEYS.join(', ')}`, 'BAD_SETTING');
  try {
    return read(value);
  } catch (err) {
    throw new UserError((err as Error).message, 'BAD_SETTING');
  }
}
