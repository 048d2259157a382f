/**
 * Sizes in the engine's own messages ("a chunk size of 4.0 MiB"), written exactly as the
 * hosts write sizes (electron/contract/format.ts formatBytes, which the engine may not import;
 * a unit test holds the two to the same text). Binary units throughout. Reading sizes a person
 * typed is the command's job (electron/cli/units.ts).
 */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'] as const;

export function formatSize(bytes: number): string {
  let v = Math.max(0, bytes);
  let i = 0;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[i]}`;
}
