/**
 * Scratch folders: where a command that reads a whole tree (`filespace check`, `filespace
 * repair`) keeps the databases it builds, so its memory does not grow with the tree. One
 * folder per run, `filespace-<kind>-<pid>-<random>` under a parent on a real disk (the cache
 * folder; a temporary folder may be in memory), removed by the run when it ends. A folder left
 * by a run that was killed (its process is gone) is removed by the next run of that kind.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { processAlive } from './process';

/** Makes a scratch folder of `kind` under `parent`, removing those that dead runs of it left. */
export async function scratchFolder(parent: string, kind: 'check' | 'repair'): Promise<string> {
  await fsp.mkdir(parent, { recursive: true, mode: 0o700 });
  const left = new RegExp(`^filespace-${kind}-(\\d+)-`);
  for (const name of await fsp.readdir(parent).catch(() => [] as string[])) {
    const m = left.exec(name);
    if (m && !processAlive(Number(m[1])))
      await fsp.rm(path.join(parent, name), { recursive: true, force: true }).catch(() => undefined);
  }
  return fsp.mkdtemp(path.join(parent, `filespace-${kind}-${process.pid}-`));
}
