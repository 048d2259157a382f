/**
 * Pins of a linked filespace, whether or not it is mounted (engine/pins.ts has what a pin is).
 * A running mount is asked over its control socket (or directly, when this process runs it),
 * and its engine checks and keeps the pins; otherwise the pins are checked here against this
 * machine's local copy of the tree (read only, nothing changed) and saved in the link
 * configuration, to be downloaded at the next mount. Status while unmounted reads what is
 * cached from the cache folder.
 *
 * Paths: a path inside the mount point ("/mnt/work/Photos", or relative to a working folder
 * inside it) is taken as the same path inside the filespace; any other absolute path, and a
 * relative one given outside the mount point, is taken as a path inside the filespace
 * ("/Photos", "Photos"). Only strings are compared: the mount is never touched.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { PinResult, PinStatusDto } from '../contract/api';
import { UserError } from '../engine/errors';
import { MetaStore } from '../engine/meta/metastore';
import type { Tree } from '../engine/meta/tree';
import {
  checkCapForPins,
  cacheBytesOf,
  contentUnder,
  currentPins,
  normalFsPath,
  pinnedChunks,
  planPins,
  planUnpins,
} from '../engine/pins';
import { Homes, LinkConfig, saveConfig, settingsOf, socketPath } from './config';
import { callControl, notRunning } from './control';
import { HostError } from './errors';
import type { MountHost } from './mountHost';

/** The filespace path a user means by `given` (see the header), typed from `cwd`. */
export function filespacePathOf(mountPoint: string, given: string, cwd: string): string {
  if (given.trim() === '') throw new HostError('an empty path cannot be pinned', 'BAD_INPUT');
  const mnt = path.resolve(mountPoint);
  const inMount = (p: string) => p === mnt || p.startsWith(mnt + path.sep);
  const abs = path.isAbsolute(given) ? path.resolve(given) : path.resolve(cwd, given);
  if (inMount(abs)) return normalFsPath(abs.slice(mnt.length));
  return normalFsPath(given);
}

/**
 * Runs `fn` on this machine's local copy of the tree, read only: the database on disk with
 * the journal's changes applied in memory, so memory holds a working set, not the tree.
 */
async function withLocalTree<T>(cfg: LinkConfig, fn: (tree: Tree) => T | Promise<T>): Promise<T> {
  const unreadable = () =>
    new HostError(`the local metadata of "${cfg.name}" cannot be read; see "filespace check ${cfg.name}"`, 'SNAPSHOT_DAMAGED');
  let meta: MetaStore | undefined;
  try {
    meta = await MetaStore.load(path.join(cfg.cacheDir, 'meta'), { readOnly: true });
  } catch (err) {
    if (err instanceof UserError) throw unreadable();
    throw err;
  }
  if (!meta) throw unreadable();
  try {
    return await fn(meta.tree);
  } finally {
    await meta.close();
  }
}

/** Names of the chunks in the cache folder. */
async function cachedChunkNames(cacheDir: string): Promise<Set<string>> {
  const out = new Set<string>();
  const root = path.join(cacheDir, 'chunks');
  for (const sub of await fsp.readdir(root).catch(() => [] as string[])) {
    for (const name of await fsp.readdir(path.join(root, sub)).catch(() => [] as string[]))
      if (!name.includes('.tmp')) out.add(name);
  }
  return out;
}

/** Unmounted, a path is looked up in the tree as this machine saw it last: a missing one may be newer. */
function asOfLastMount(err: unknown, cfg: LinkConfig): unknown {
  if (err instanceof UserError && err.code === 'NOT_FOUND')
    return new HostError(
      `${err.message} as this machine last saw it (mount "${cfg.name}" to see the latest, then pin)`,
      'NOT_FOUND',
    );
  return err;
}

/** Pins with their progress, worked out from the cache folder (while unmounted). */
export async function pinsUnmounted(cfg: LinkConfig): Promise<PinStatusDto[]> {
  if ((cfg.pins ?? []).length === 0) return [];
  const cached = await cachedChunkNames(cfg.cacheDir);
  return withLocalTree(cfg, (tree) =>
    currentPins(tree, cfg.pins ?? []).pins.map((p) => {
      const chunks = new Map<string, number>();
      contentUnder(tree, p.ino, chunks);
      let localBytes = 0;
      let totalBytes = 0;
      for (const [name, len] of chunks) {
        totalBytes += len;
        if (cached.has(name)) localBytes += len;
      }
      return { path: p.path, localBytes, totalBytes };
    }),
  );
}

async function overControl(
  h: Homes,
  cfg: LinkConfig,
  route: '/v1/pin' | '/v1/unpin',
  paths: string[],
): Promise<PinResult | undefined> {
  try {
    return await callControl(socketPath(h, cfg.name), route, { paths }, 60_000);
  } catch (err) {
    if (notRunning(err)) return undefined;
    throw err;
  }
}

/**
 * Pins filespace `paths`: in the running mount, or recorded for the next mount. Refused as a
 * whole (nothing changed) when a path is bad or they do not fit under the cache cap.
 */
export async function pinLinked(
  h: Homes,
  cfg: LinkConfig,
  paths: string[],
  mounted?: MountHost,
): Promise<PinResult & { live: boolean }> {
  const live = mounted ? await mounted.pin(paths) : await overControl(h, cfg, '/v1/pin', paths);
  if (live) return { ...live, live: true };
  let planned;
  try {
    planned = await withLocalTree(cfg, (tree) =>
      planPins(tree, currentPins(tree, cfg.pins ?? []).pins, paths, settingsOf(cfg).cacheCapBytes),
    );
  } catch (err) {
    throw asOfLastMount(err, cfg);
  }
  const { pins, added } = planned;
  const next = { ...cfg, pins };
  if (added.length > 0) await saveConfig(h, next);
  return { added: added.map((p) => p.path), pins: await pinsUnmounted(next), live: false };
}

/** Unpins filespace `paths`; refused as a whole when one is not pinned. */
export async function unpinLinked(
  h: Homes,
  cfg: LinkConfig,
  paths: string[],
  mounted?: MountHost,
): Promise<PinResult & { live: boolean }> {
  const live = mounted ? await mounted.unpin(paths) : await overControl(h, cfg, '/v1/unpin', paths);
  if (live) return { ...live, live: true };
  const next = {
    ...cfg,
    pins: await withLocalTree(cfg, (tree) => planUnpins(tree, currentPins(tree, cfg.pins ?? []).pins, paths)),
  };
  await saveConfig(h, next);
  return { added: [], pins: await pinsUnmounted(next), live: false };
}

/** While unmounted: refuses a cache cap that leaves no room for what the pins hold. */
export async function checkCapForPinsUnmounted(cfg: LinkConfig, capBytes: number): Promise<void> {
  if ((cfg.pins ?? []).length === 0) return;
  await withLocalTree(cfg, (tree) =>
    checkCapForPins(capBytes, cacheBytesOf(pinnedChunks(tree, currentPins(tree, cfg.pins ?? []).pins)), tree.chunkSize),
  );
}
