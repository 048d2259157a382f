/**
 * Where a filespace's mount point and cache folder may be on this machine, checked before
 * anything is created or moved (link, mount, the app's settings).
 *
 * Neither may lie inside a filespace: not inside a mounted one (the kernel's mount table, any
 * process's), nor inside the mount point of a linked one (which becomes a filespace when it
 * mounts, and into which a cache or a folder would otherwise be created while it is not
 * mounted, so that it no longer mounts). Neither may overlap another filespace's cache folder,
 * and a cache folder may not be inside its own filespace's mount point. Otherwise a cache
 * would upload into another filespace, or the host that serves both would deadlock on its
 * own mount: libfuse enters a mount point with synchronous calls on the serving process's
 * JS thread, and the engine's cache I/O would wait on FUSE requests that the same process
 * has to answer.
 *
 * Paths are compared lexically and with symlinks resolved (the real path of the nearest
 * existing ancestor, plus the rest). Only asynchronous calls touch the file system: a path
 * may lie in a mount this very process serves.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HostError } from './errors';
import { FILESPACE_FS_TYPE, isWithin, mountTable } from '../../native/fuse/adapter';

/** Where a linked filespace lives on this machine (from its link configuration). */
export interface LinkedPlace {
  readonly name: string;
  readonly mountPoint: string;
  readonly cacheDir: string;
}

export interface Placement {
  /** The filespace being placed (its own configuration is not compared); none for a bare check. */
  readonly name?: string;
  readonly mountPoint?: string;
  readonly cacheDir?: string;
  /**
   * Checked for mounting it: a filespace mounted exactly at its mount point is left to the
   * mount (a dead mount of its own is cleared there, a live one refused as already mounted).
   */
  readonly mounting?: boolean;
}

interface Region {
  /** Says what the region is, e.g. `the cache folder of "team" (/home/u/.cache/filespace/team)`. */
  readonly label: string;
  /** The region's path, lexically and with symlinks resolved. */
  readonly paths: readonly string[];
  /** A filespace mounted now (not only a linked one's folder). */
  readonly mounted: boolean;
}

/** `p` with symlinks resolved as far as it exists (the nearest existing ancestor's real path plus the rest). */
export async function realPathLoose(p: string): Promise<string> {
  const abs = path.resolve(p);
  const rest: string[] = [];
  let cur = abs;
  for (;;) {
    try {
      return path.join(await fsp.realpath(cur), ...rest);
    } catch {
      // Missing, or not answering (a dead mount): resolve what lies above it.
      const parent = path.dirname(cur);
      if (parent === cur) return abs;
      rest.unshift(path.basename(cur));
      cur = parent;
    }
  }
}

async function forms(p: string): Promise<string[]> {
  const lexical = path.resolve(p);
  const real = await realPathLoose(lexical);
  return real === lexical ? [lexical] : [lexical, real];
}

async function regionsAround(linked: readonly LinkedPlace[], self: string | undefined): Promise<Region[]> {
  const regions: Region[] = [];
  for (const m of await mountTable()) {
    if (m.fsType === FILESPACE_FS_TYPE)
      regions.push({ label: `the mounted filespace at ${m.mountPoint} (${m.source})`, paths: [m.mountPoint], mounted: true });
  }
  for (const l of linked) {
    if (l.name === self) continue;
    regions.push({ label: `the mount point of "${l.name}" (${l.mountPoint})`, paths: await forms(l.mountPoint), mounted: false });
    regions.push({ label: `the cache folder of "${l.name}" (${l.cacheDir})`, paths: await forms(l.cacheDir), mounted: false });
  }
  return regions;
}

/** How `p` relates to `region`, or undefined when they do not overlap. */
function relation(p: readonly string[], region: readonly string[]): 'is' | 'is inside' | 'contains' | undefined {
  for (const a of p) {
    for (const b of region) {
      if (a === b) return 'is';
      if (isWithin(a, b)) return 'is inside';
      if (isWithin(b, a)) return 'contains';
    }
  }
  return undefined;
}

/**
 * Throws a one-line HostError (BAD_MOUNT_POINT or BAD_CACHE_DIR) when the mount point or the
 * cache folder lies where it must not (see the module header), given every filespace linked on
 * this machine (`linked`, its own entry included or not). Changes nothing.
 */
export async function checkPlacement(p: Placement, linked: readonly LinkedPlace[]): Promise<void> {
  const regions = await regionsAround(linked, p.name);
  const mp = p.mountPoint === undefined ? undefined : { given: path.resolve(p.mountPoint), paths: await forms(p.mountPoint) };
  const cache = p.cacheDir === undefined ? undefined : { given: path.resolve(p.cacheDir), paths: await forms(p.cacheDir) };
  if (mp) {
    for (const r of regions) {
      const rel = relation(mp.paths, r.paths);
      if (!rel || (rel === 'is' && r.mounted && p.mounting)) continue;
      throw new HostError(
        `mount point ${mp.given} ${rel} ${r.label}; pick a folder outside every filespace and its cache`,
        'BAD_MOUNT_POINT',
      );
    }
  }
  if (cache) {
    for (const r of regions) {
      const rel = relation(cache.paths, r.paths);
      if (!rel) continue;
      throw new HostError(
        `cache folder ${cache.given} ${rel} ${r.label}; pick a folder on a local disk, outside every filespace and other caches`,
        'BAD_CACHE_DIR',
      );
    }
  }
  if (mp && cache) {
    const rel = relation(cache.paths, mp.paths);
    if (rel)
      throw new HostError(
        `cache folder ${cache.given} ${rel} this filespace's own mount point ${mp.given}; pick a folder outside it`,
        'BAD_CACHE_DIR',
      );
  }
}
