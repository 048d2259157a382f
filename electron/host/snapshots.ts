/**
 * Snapshots of a linked filespace (engine/meta/snapshots.ts), for the command and the app.
 *
 * Changes (create, delete, the schedule) are made by the machine that writes the filespace:
 * by its running mount, whichever process runs it (over its control socket), or, when nothing
 * runs it here, by an engine opened without a mount just for that (taking the write lease,
 * uploading what waits, then closing). When another machine holds the lease that engine cannot
 * start, and the change is refused with a message naming that machine. A read-only mount here
 * refuses too (it does not write).
 *
 * Listing reads the bucket directly (any machine can), and so does size-unique: the live tree
 * it compares with is the bucket's newest committed one. Browsing mounts a snapshot read-only
 * beside this machine's running mount (read-write or read-only), which serves it through its
 * cache; with nothing mounted here it is refused, naming the command that mounts.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { SnapshotListDto, SnapshotRecordDto, SnapshotScheduleDto } from '../contract/api';
import { Engine } from '../engine/engine';
import type { Keys } from '../engine/chunk/crypto';
import { FilespaceHeader, checkLinkedFilespace, explainStoreError, unlockFilespace } from '../engine/filespace';
import type { ObjectStore } from '../engine/store/types';
import { RemoteMeta } from '../engine/meta/remote';
import {
  SnapshotRefs,
  SnapshotStore,
  checkLabel,
  checkSchedule,
  checkSnapshotId,
  LISTING_PREFIX,
  listSnapshotsWith,
} from '../engine/meta/snapshots';
import { MetaStore } from '../engine/meta/metastore';
import { UserError } from '../engine/errors';
import { Homes, LinkConfig, readPassphraseFile, settingsOf, socketPath } from './config';
import { callControl, notRunning } from './control';
import { HostError } from './errors';
import { openStore } from './stores';

/** How long taking a snapshot may wait for local changes to upload first. */
const SNAPSHOT_SYNC_MS = 10 * 60_000;

/** Runs `work` in an engine opened without a mount, as the writer; closes it after. */
async function asShortLivedWriter<T>(
  cfg: LinkConfig,
  what: string,
  log: (m: string) => void,
  work: (e: Engine) => Promise<T>,
): Promise<T> {
  const store = openStore(cfg.store);
  let engine: Engine;
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    checkLinkedFilespace(header, cfg.filespaceId, cfg.name, store);
    engine = await Engine.open({
      store,
      keys,
      header,
      cacheDir: cfg.cacheDir,
      settings: settingsOf(cfg),
      log,
      name: cfg.name,
      conditionalWrites: cfg.conditionalWrites,
    });
  } catch (err) {
    await store.close().catch(() => undefined);
    if (err instanceof UserError && err.code === 'LEASE_HELD') {
      // The engine's message ends in hints about mounting; here what matters is who writes.
      const who = err.message.split(';')[0]!.replace(/^this filespace is being written by /, '');
      throw new HostError(
        `${what} is done by the machine that writes "${cfg.name}", and ${who} holds its write lease; run it there`,
        'LEASE_HELD',
      );
    }
    throw explainStoreError(err, store);
  }
  try {
    if (engine.notWriting) throw new HostError(`${what}: ${engine.notWriting}`, 'NOT_WRITER');
    return await work(engine);
  } finally {
    await engine.close();
  }
}

/** Runs a change through the running mount, or a short-lived writer when nothing runs it. */
async function change<T>(
  h: Homes,
  cfg: LinkConfig,
  what: string,
  viaMount: () => Promise<T>,
  log: (m: string) => void,
  work: (e: Engine) => Promise<T>,
): Promise<T> {
  try {
    return await viaMount();
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
  return asShortLivedWriter(cfg, what, log, work);
}

export function createSnapshot(h: Homes, cfg: LinkConfig, label: string, log: (m: string) => void): Promise<SnapshotRecordDto> {
  const clean = checkLabel(label);
  return change(
    h,
    cfg,
    'taking a snapshot',
    () => callControl(socketPath(h, cfg.name), '/v1/snapshot/create', { label: clean }, SNAPSHOT_SYNC_MS + 60_000),
    log,
    (e) => e.createSnapshot(clean),
  );
}

export async function deleteSnapshot(h: Homes, cfg: LinkConfig, id: string, log: (m: string) => void): Promise<void> {
  checkSnapshotId(id);
  await change(
    h,
    cfg,
    'deleting a snapshot',
    () => callControl(socketPath(h, cfg.name), '/v1/snapshot/delete', { id }, 120_000),
    log,
    async (e) => {
      await e.deleteSnapshot(id);
      return { ok: true as const };
    },
  );
}

export async function setSnapshotSchedule(
  h: Homes,
  cfg: LinkConfig,
  s: SnapshotScheduleDto,
  log: (m: string) => void,
): Promise<void> {
  checkSchedule(s);
  await change(
    h,
    cfg,
    'setting the snapshot schedule',
    () => callControl(socketPath(h, cfg.name), '/v1/snapshot/schedule', s, 120_000),
    log,
    async (e) => {
      await e.setSnapshotSchedule(s);
      return { ok: true as const };
    },
  );
}

/**
 * Every snapshot in the bucket with its size-unique, the damaged ones by id, and the schedule:
 * from the running mount when there is one (it has the snapshots counted and the live tree),
 * else from the bucket alone (`snapshotsIn`).
 */
export async function listSnapshots(h: Homes, cfg: LinkConfig): Promise<SnapshotListDto> {
  try {
    return await callControl(socketPath(h, cfg.name), '/v1/snapshot/list', {}, 600_000);
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
  const store = openStore(cfg.store);
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    checkLinkedFilespace(header, cfg.filespaceId, cfg.name, store);
    return await snapshotsIn(store, header, keys, cfg.cacheDir);
  } catch (err) {
    throw explainStoreError(err, store);
  } finally {
    await store.close();
  }
}

/**
 * `listSnapshots` from the bucket alone, on a store already unlocked. The snapshots' chunks are
 * counted page by page in a scratch database (SnapshotRefs), and the live tree is built as a
 * fresh machine's link builds it (into a database, with the log after its checkpoint applied):
 * memory holds a few pages and a working set, not the trees. Both go in a folder made in
 * `scratchIn` (the cache folder) and removed after.
 */
export async function snapshotsIn(
  store: ObjectStore,
  header: FilespaceHeader,
  keys: Keys,
  scratchIn: string,
): Promise<SnapshotListDto> {
  const snaps = new SnapshotStore(store, keys.metaKey, header.chunkSize, header);
  const schedule = await snaps.readSchedule();
  const first = await snaps.list();
  if (first.records.length === 0) return { snapshots: [], damaged: first.damaged.sort(), schedule };
  // Under the cache folder, with this machine's own metadata: the live tree built here names files.
  const dir = await fsp.mkdtemp(path.join(scratchIn, LISTING_PREFIX));
  const refs = new SnapshotRefs(snaps, path.join(dir, 'refs.db'));
  let live: MetaStore | undefined;
  try {
    live = await MetaStore.link(path.join(dir, 'live'), new RemoteMeta(store, keys.metaKey, header), header.chunkSize, {
      whole: true,
    });
    return { ...(await listSnapshotsWith(snaps, refs, live.tree.chunkRefs)), schedule };
  } finally {
    refs.close();
    await live?.close().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Mounts snapshot `id` read-only at `dir`, beside this machine's running mount of the filespace. */
export async function mountSnapshot(h: Homes, cfg: LinkConfig, id: string, dir: string): Promise<string> {
  checkSnapshotId(id);
  const full = path.resolve(dir);
  const st = await fsp.stat(full).catch(() => undefined);
  if (!st?.isDirectory())
    throw new HostError(`${full} is not a folder; create an empty one to mount the snapshot in`, 'NO_MOUNT_POINT');
  try {
    await callControl(socketPath(h, cfg.name), '/v1/snapshot/mount', { id, dir: full }, 120_000);
  } catch (err) {
    if (!notRunning(err)) throw err;
    throw new HostError(
      `"${cfg.name}" is not mounted here; a snapshot is served beside its mount: run "filespace mount ${cfg.name}" ` +
        '(--read-only is enough) first',
      'NOT_MOUNTED',
    );
  }
  return full;
}

export async function unmountSnapshot(h: Homes, cfg: LinkConfig, dir: string): Promise<string> {
  const full = path.resolve(dir);
  try {
    await callControl(socketPath(h, cfg.name), '/v1/snapshot/unmount', { dir: full }, 120_000);
  } catch (err) {
    if (!notRunning(err)) throw err;
    throw new HostError(`"${cfg.name}" is not mounted here, so no snapshot of it is mounted at ${full}`, 'NOT_MOUNTED');
  }
  return full;
}
