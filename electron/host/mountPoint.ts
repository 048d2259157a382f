/**
 * The folder a filespace mounts in: a directory, and empty (a mount would hide what is in
 * it). `filespace link` and `mount` refuse a missing one (the user creates it); the app creates
 * it itself. Before mounting, a stale mount that a killed engine left there is cleared, and a
 * live one refused. Where a mount point may lie at all (not inside a filespace) is placement.ts.
 *
 * Only asynchronous calls touch the folder: these checks run in processes that serve mounts.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HostError } from './errors';

/**
 * Checks `dir` as a mount point: a full path, a directory, empty. A missing one is refused, or
 * with `missing: 'allow'` accepted (the caller creates it). Resolves to whether it exists.
 */
export async function checkMountPoint(dir: string, missing: 'refuse' | 'allow' = 'refuse'): Promise<boolean> {
  if (!path.isAbsolute(dir)) throw new HostError('the mount point must be a full path', 'NOT_ABSOLUTE');
  const st = await fsp.stat(dir).catch(() => undefined);
  if (!st) {
    if (missing === 'allow') return false;
    throw new HostError(`mount point ${dir} does not exist; create it with "mkdir -p ${dir}"`, 'NO_MOUNT_POINT');
  }
  if (!st.isDirectory()) throw new HostError(`mount point ${dir} is not a directory`, 'NOT_A_DIRECTORY');
  if ((await fsp.readdir(dir)).length > 0)
    throw new HostError(`mount point ${dir} is not empty; pick an empty folder`, 'NOT_EMPTY');
  return true;
}

/** Right before mounting: clears a stale mount left by a killed engine, then checks the folder. */
export async function prepareMountPoint(dir: string): Promise<void> {
  const { isMountPoint, unmountPath } = await import('../../native/fuse/adapter');
  if (await isMountPoint(dir)) {
    // A mount whose engine died answers ENOTCONN; anything else is a live mount. (readdir, not
    // stat: the kernel may answer stat from its attribute cache without asking the engine.
    // This process does not serve that mount, so touching it cannot deadlock.)
    const alive = await fsp.readdir(dir).then(
      () => true,
      (e: NodeJS.ErrnoException) => e.code !== 'ENOTCONN' && e.code !== 'ECONNABORTED',
    );
    if (alive) throw new HostError(`${dir} is already a mount point; unmount it first`, 'ALREADY_MOUNTED');
    await unmountPath(dir, true);
  }
  await checkMountPoint(dir);
}
