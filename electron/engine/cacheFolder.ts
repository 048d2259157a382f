/**
 * This machine's folder for one filespace (the cache folder): which engine may use it, which
 * machine it is, and opening the stores it holds.
 *
 * Owns: `engine.lock`, so two engines never share one cache; a lock left behind says the
 * previous engine did not stop cleanly, and the next start then checks the dirty store as after
 * a crash (cache/dirty.ts). `machine.json`, this cache's machine identity: random, created
 * once, kept with the cache; the write lease and the metadata log name machines by it.
 *
 * Opening (`openLocalStores`): damaged local metadata is refused with nothing changed
 * (repair.ts has the message and the repair); metadata for another chunk size than the
 * bucket's header is refused; the dirty store is checked against the metadata (and, after an
 * unclean stop, unit by unit); the clean cache is indexed.
 *
 * Linking (`createLocalMetadata`): this machine's metadata made from the bucket alone. Repair
 * (`repairCacheFolder`): damaged local metadata repaired under the folder's lock (repair.ts).
 *
 * Layout of the folder: meta/ (the journal, meta/metastore.ts), dirty/ (cache/dirty.ts),
 * chunks/ (cache/chunkCache.ts), aside/ (aside.ts), reserve (space held back for the journal,
 * cache/cacheDisk.ts), snapshot-refs.db (the chunk names snapshots hold, kept across clean
 * stops only: meta/snapshots.ts), machine.json, engine.lock; while `filespace check` or
 * `filespace repair` runs, its scratch folder (filespace-check-*, filespace-repair-*: util/scratch.ts).
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import { ChunkCache } from './cache/chunkCache';
import { DirtyStore } from './cache/dirty';
import { HandlePool } from './cache/handles';
import { ReceivedIO } from './cache/received';
import { SealedIO, budgetUnits } from './cache/sealed';
import { Keys } from './chunk/crypto';
import { EngineSettings } from './config';
import { FilespaceHeader, linkedChunkSizeMismatch } from './filespace';
import { Machine } from './meta/lease';
import { MetaStore } from './meta/metastore';
import type { Tree } from './meta/tree';
import { RepairResult, describeLocalDamage, repairLocalMetadata } from './repair';
import { RemoteMeta } from './meta/remote';
import { ObjectStore } from './store/types';
import { UserError } from './errors';
import { fsyncDir } from './util/files';
import { formatSize } from './util/sizes';

/** This cache's machine identity: random, created once, kept with the cache. */
export async function machineOf(cacheDir: string): Promise<Machine> {
  const file = path.join(cacheDir, 'machine.json');
  let id: string | undefined;
  try {
    id = (JSON.parse(await fsp.readFile(file, 'utf8')) as { id?: string }).id;
  } catch {
    id = undefined;
  }
  if (typeof id !== 'string' || !/^[0-9a-f-]{36}$/.test(id)) {
    id = randomUUID();
    const tmp = `${file}.tmp`;
    await fsp.writeFile(tmp, JSON.stringify({ id }), { mode: 0o600 });
    await fsp.rename(tmp, file);
  }
  return { id, name: os.hostname(), pid: process.pid };
}

/** Takes the per-cache-directory lock so two engines never share one cache. */
/** Also says whether a previous engine left its lock behind (it did not stop cleanly). */
export async function lockCacheDir(cacheDir: string): Promise<{ file: string; uncleanStop: boolean }> {
  const file = path.join(cacheDir, 'engine.lock');
  let uncleanStop = false;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fsp.open(file, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.sync();
      await fh.close();
      // Durable, so that after a power loss the next start knows this one did not stop cleanly.
      await fsyncDir(cacheDir);
      return { file, uncleanStop };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await fsp.readFile(file, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === 'EPERM';
        }
        // A killed engine may linger as a zombie until it is reaped: it holds nothing.
        const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
        if (/^\d+ \(.*\) Z /.test(stat)) alive = false;
      }
      if (alive && pid !== process.pid) {
        throw new UserError(
          `this filespace is already in use by process ${pid} on this machine (cache ${cacheDir}); unmount it first`,
          'BUSY',
        );
      }
      await fsp.rm(file, { force: true });
      uncleanStop = true;
    }
  }
  throw new UserError(`cannot lock ${cacheDir}`, 'BUSY');
}

/** Writers and readers need a few chunks of room at once; a smaller cache could not make progress. */
export function checkCapFitsChunks(capBytes: number, chunkSize: number): void {
  if (capBytes < 4 * chunkSize) {
    throw new UserError(
      `the cache size must be at least 4 chunks (${formatSize(4 * chunkSize)} for this filespace)`,
      'CACHE_TOO_SMALL',
    );
  }
}

export interface LocalStores {
  readonly meta: MetaStore;
  readonly dirty: DirtyStore;
  readonly cache: ChunkCache;
  readonly handles: HandlePool;
}

/**
 * Empty files the dirty store keeps ready for new chunks (cache/spareFiles.ts): enough for a
 * burst of small-file closes while the next ones are made.
 */
export const SPARE_DIRTY_FILES = 32;

/**
 * Opens the metadata, the dirty store and the clean cache of a locked cache folder (see the
 * header). `uncleanStop`: the previous engine left its lock behind.
 */
export async function openLocalStores(
  opts: {
    readonly store: ObjectStore;
    readonly keys: Keys;
    readonly header: FilespaceHeader;
    readonly cacheDir: string;
    readonly settings: EngineSettings;
    readonly log?: (msg: string) => void;
    readonly name?: string;
    /** Chunks never to evict (pins.ts), worked out from the tree before the cache first evicts. */
    readonly pinned?: (tree: Tree) => ReadonlySet<string>;
  },
  uncleanStop: boolean,
): Promise<LocalStores> {
  // Damaged local metadata is refused with nothing changed (repair.ts has the way out).
  const meta = await MetaStore.load(path.join(opts.cacheDir, 'meta')).catch(async (err: unknown) => {
    throw await describeLocalDamage(err, opts.cacheDir, opts.name);
  });
  if (!meta) throw new UserError(`no local metadata in ${opts.cacheDir}; link the filespace first`, 'NOT_LINKED');
  if (meta.chunkSize !== opts.header.chunkSize) throw linkedChunkSizeMismatch(opts.store, opts.header.chunkSize, meta.chunkSize);
  checkCapFitsChunks(opts.settings.cacheCapBytes, meta.chunkSize);
  const handles = new HandlePool(256);
  // Spare sealed units for what the write buffer's budget can have in flushes at once.
  const sealed = new SealedIO(opts.keys.cacheKey, budgetUnits(opts.settings.writeBufferBytes));
  const dirty = new DirtyStore(opts.cacheDir, handles, sealed, opts.log, { spareFiles: SPARE_DIRTY_FILES });
  const cs = meta.chunkSize;
  // Inode numbers are never reused: one below the tree's next number that the tree does not
  // hold was created and then deleted (or the snapshot would name it). Any other chunk
  // without a file is an orphan, set aside at start.
  await dirty.init(
    (ino, idx) => {
      const inode = meta.tree.get(ino);
      if (inode?.kind === 'file') return Math.min(cs, inode.size - idx * cs);
      return !inode && ino < meta.tree.nextIno ? 'deleted' : 'unknown';
    },
    Date.now(),
    { uncleanStop },
  );
  const cache = new ChunkCache(
    opts.cacheDir,
    {
      capBytes: opts.settings.cacheCapBytes,
      highWatermark: opts.settings.cacheHighWatermark,
      lowWatermark: opts.settings.cacheLowWatermark,
    },
    handles,
    () => dirty.totalBytes,
    sealed,
    new ReceivedIO(opts.keys.cacheKey, opts.keys.chunkKey),
  );
  if (opts.pinned) cache.setPinned(opts.pinned(meta.tree));
  await cache.init();
  cache.onDamaged = (name, why) => opts.log?.(`cached chunk ${name} was damaged (${why}); fetching it again`);
  return { meta, dirty, cache, handles };
}

/** Creates this machine's local metadata for a filespace from the bucket alone. */
export async function createLocalMetadata(
  store: ObjectStore,
  keys: Keys,
  header: FilespaceHeader,
  cacheDir: string,
): Promise<void> {
  const metaDir = path.join(cacheDir, 'meta');
  const existing = await MetaStore.load(metaDir);
  if (existing) {
    await existing.close();
    throw new UserError(`${cacheDir} already holds a filespace's cache; pick another --cache-dir`, 'EXISTS');
  }
  const meta = await MetaStore.link(metaDir, new RemoteMeta(store, keys.metaKey, header), header.chunkSize);
  await meta.close();
}

/**
 * Repairs damaged local metadata while no engine uses the cache (repair.ts). Changes nothing
 * and returns `repaired: false` when there is no damage.
 */
export async function repairCacheFolder(opts: {
  store: ObjectStore;
  keys: Keys;
  header: FilespaceHeader;
  cacheDir: string;
  log?: (msg: string) => void;
}): Promise<RepairResult> {
  const seen = await MetaStore.inspect(path.join(opts.cacheDir, 'meta'));
  if (!seen.damage && !seen.snapshotError) return { repaired: false, unnamed: 0, kept: [] };
  const { file: lockFile } = await lockCacheDir(opts.cacheDir);
  try {
    // Every unit of every dirty chunk is checked: the lock of a killed engine may be gone.
    return await repairLocalMetadata({ ...opts, uncleanStop: true, log: opts.log ?? (() => undefined) });
  } finally {
    await fsp.rm(lockFile, { force: true });
  }
}
