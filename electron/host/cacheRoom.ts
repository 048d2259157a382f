/**
 * Whether a cache size fits the disk under the cache folder, for the warnings of `link` and
 * `set cache-size`. A cap above what the disk can hold is allowed (free space comes and goes,
 * and the engine keeps the cache within the disk whatever the cap, see
 * engine/cache/cacheDisk.ts), but the user is told at once rather than finding out when the
 * disk fills.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { formatBytes } from '../contract/format';

/** Free bytes on the disk that holds `dir` (or its nearest existing parent). */
export async function freeBytesAt(dir: string): Promise<number> {
  let cur = path.resolve(dir);
  for (;;) {
    try {
      const st = await fsp.statfs(cur);
      return st.bavail * st.bsize;
    } catch (err) {
      const parent = path.dirname(cur);
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || parent === cur) throw err;
      cur = parent;
    }
  }
}

/** Bytes of chunks (clean and dirty) in a cache folder of a filespace that is not mounted. */
export async function cachedBytesIn(cacheDir: string): Promise<number> {
  let total = 0;
  const add = async (dir: string, depth: number): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && depth > 0) await add(p, depth - 1);
      else if (e.isFile()) total += (await fsp.stat(p).catch(() => undefined))?.size ?? 0;
    }
  };
  await add(path.join(cacheDir, 'chunks'), 1);
  await add(path.join(cacheDir, 'dirty'), 0);
  return total;
}

/**
 * A one-line warning when a cache of `capBytes` in `cacheDir` cannot fit on its disk (the
 * cache already holds `cachedBytes` there), or undefined when it fits.
 */
export async function cacheRoomWarning(
  name: string,
  cacheDir: string,
  capBytes: number,
  cachedBytes: number,
): Promise<string | undefined> {
  const free = await freeBytesAt(cacheDir).catch(() => undefined);
  if (free === undefined || capBytes <= free + cachedBytes) return undefined;
  return (
    `warning: the cache size ${formatBytes(capBytes)} is more than the disk under ${cacheDir} has room for (${formatBytes(free + cachedBytes)}); ` +
    `the cache will keep within the disk, or set a smaller size with "filespace set ${name} cache-size SIZE"`
  );
}
