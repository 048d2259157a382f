/**
 * The status of a linked filespace, whether or not it is mounted: a running mount answers
 * over its control socket (it may be another process, e.g. the daemon); otherwise the cache
 * folder says what waits to upload and how much room the cache takes, and damaged local metadata is named as the last error.
 * A mount this process runs itself reports through MountHost.status() instead.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { StatusDto } from '../contract/api';
import { Homes, LinkConfig, settingsOf, socketPath } from './config';
import { callControl, notRunning } from './control';

/** Bytes the cache folder's chunks and dirty data take on disk, remembered for 5 s (it walks the folder). */
const onDisk = new Map<string, { at: number; bytes: Promise<number> }>();

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (!e.isFile()) continue;
    const st = await fsp.stat(path.join(e.parentPath, e.name)).catch(() => undefined);
    total += st?.size ?? 0;
  }
  return total;
}

export function cacheBytesOnDisk(cacheDir: string, now = Date.now()): Promise<number> {
  const known = onDisk.get(cacheDir);
  if (known && now - known.at < 5000) return known.bytes;
  const bytes = Promise.all([folderBytes(path.join(cacheDir, 'chunks')), folderBytes(path.join(cacheDir, 'dirty'))]).then(
    ([a, b]) => a + b,
  );
  onDisk.set(cacheDir, { at: now, bytes });
  return bytes;
}

export async function statusOf(h: Homes, cfg: LinkConfig): Promise<StatusDto> {
  try {
    return await callControl(socketPath(h, cfg.name), '/v1/status', {}, 5000);
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
  // Not running: report what waits in the cache from its files. What that takes is loaded only
  // now (the engine's metadata store and settings pull in most of the program, the AWS SDK
  // included), so `filespace status` of a running mount starts in about half the time.
  const [{ logicalSize }, { MetaStore }, { damageSummary }, { pinsUnmounted }] = await Promise.all([
    import('../engine/cache/sealed'),
    import('../engine/meta/metastore'),
    import('../engine/repair'),
    import('./pins'),
  ]);
  let dirtyBytes = 0;
  const files = new Set<string>();
  for (const f of await fsp.readdir(path.join(cfg.cacheDir, 'dirty')).catch(() => [] as string[])) {
    // Chunks are `<ino>.<idx>`, sealed (see engine/cache/dirty.ts); pre-images and temp files are not data.
    if (!/^\d+\.\d+$/.test(f)) continue;
    const st = await fsp.stat(path.join(cfg.cacheDir, 'dirty', f)).catch(() => undefined);
    if (st) {
      // The data bytes, as a running mount counts them, not the sealed size on disk.
      dirtyBytes += logicalSize(st.size) ?? st.size;
      files.add(f.split('.')[0]!);
    }
  }
  // Damaged local metadata is why it cannot be mounted: say so here too.
  const damage = await MetaStore.inspect(path.join(cfg.cacheDir, 'meta')).then(damageSummary, () => undefined);
  return {
    name: cfg.name,
    state: 'unmounted',
    mountPoint: cfg.mountPoint,
    dirtyBytes,
    dirtyFiles: files.size,
    pendingMetaOps: 0,
    uploadBytesPerSec: 0,
    downloadBytesPerSec: 0,
    cacheUsedBytes: await cacheBytesOnDisk(cfg.cacheDir),
    cacheCapBytes: settingsOf(cfg).cacheCapBytes,
    cacheHitRatio: 0,
    openFiles: 0,
    offline: false,
    uploadsPaused: false,
    readOnlyReason: null,
    lastError: damage ? `${damage}; see "filespace check ${cfg.name}"` : null,
    pins: await pinsUnmounted(cfg).catch(() => []),
  };
}
