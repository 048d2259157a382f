/**
 * Sizes, rates and durations as a person types them to the command ("4MiB", "20GiB", "512k",
 * "2MiB/s", "off", "30s", "10m"), read into numbers. Binary units throughout: 20G means 20
 * GiB, as du and df read it, and as every size is printed (contract/format.ts). This is the
 * only place such text is read: the host library, the engine and the app carry numbers.
 */

const UNITS: Readonly<Record<string, number>> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
  tib: 1024 ** 4,
};

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new Error(`"${text}" is not a size; write a number with an optional unit, e.g. 512MiB, 20GiB`);
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is too large`);
  return bytes;
}

/** A rate in bytes per second: "2MiB", "512KiB/s", "0" or "off" (no limit). */
export function parseRate(text: string): number {
  if (/^\s*(off|none|unlimited)\s*$/i.test(text)) return 0;
  const m = /^(.*?)(?:\/\s*s(?:ec)?)?\s*$/i.exec(text)!;
  try {
    return parseSize(m[1]!);
  } catch {
    throw new Error(`"${text}" is not a rate; write bytes per second with an optional unit, e.g. 512KiB, 2MiB/s, or off`);
  }
}

export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new Error(`"${text}" is not a duration; write e.g. 30s, 10m, 1h`);
  const mult = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(m[1]) * mult);
}
