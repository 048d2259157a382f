/**
 * Engine: the composition root of one filespace on one machine. It wires the metadata store,
 * the dirty store, the clean cache, the fetcher, the write-back queue and the replicator into
 * a Vfs, owns the upload path (dirty chunk -> encoded object -> bucket -> metadata commit ->
 * clean cache), and reports status. Hosts (CLI daemon, Electron main) mount `engine.vfs`.
 *
 * Order of a chunk upload (DESIGN invariant 2): read the dirty bytes under the chunk lock,
 * encode and PUT without the lock, then under the lock again commit the chunk reference to
 * the metadata and, if nobody wrote meanwhile, hand the file to the clean cache. The metadata
 * naming a chunk therefore always postdates the chunk's successful PUT.
 *
 * Roles (DESIGN invariant 4): a writer holds the write lease (meta/lease.ts), renews it, and
 * pushes metadata only while it is valid; while it cannot renew (offline) it keeps taking
 * writes into the cache, commits nothing, and commits them once a renewal gets through. After
 * taking the lease from another machine it writes a fence segment so the previous holder can
 * never commit again, and it seals a header written before headers were sealed (filespace.ts),
 * once this machine's metadata has agreed with the header's chunk size. A follower mounts read-only, polls the metadata log and applies the
 * writer's segments live; open files keep reading the chunk list they opened (old chunks
 * outlive the GC grace period). Local changes that another machine's segments overtook are
 * set aside (aside.ts), never merged; so are dirty chunks found at start without a file the
 * metadata knows. Damaged local metadata is refused, with nothing changed (repair.ts has the
 * message and the repair).
 *
 * Reachability (store/monitored.ts): every request goes through a MonitoredStore, the one
 * judge of "offline" (with since when). While offline, uploads wait instead of failing one by
 * one; when the bucket answers again every backoff (uploads, metadata pushes, reads) is
 * forgotten and the backlog drains at once.
 *
 * When dirty data fills the cache cap, writers wait (vfs/backpressure.ts); the engine tells
 * them whether uploads can free room (`drainBlocked`): not while uploads are paused, the
 * bucket does not answer, or every upload fails. Status reports waiting writers as a state.
 *
 * The cache disk (cache/cacheDisk.ts): the cache keeps within what the disk has room for as
 * well as within its cap, sampled every second; when the journal finds the disk full, clean
 * chunks are evicted, then the space held back for metadata is given up, so metadata can
 * still be saved (and uploads commit, and so free their dirty copies).
 *
 * Local layout under cacheDir: meta/ (journal), dirty/, chunks/, aside/, machine.json, engine.lock,
 * reserve (space held back for the journal).
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import * as os from 'node:os';
import { HandlePool } from './cache/handles';
import { CacheDisk } from './cache/cacheDisk';
import { ChunkCache } from './cache/chunkCache';
import { DirtyChunk, DirtyStore } from './cache/dirty';
import { SealedIO } from './cache/sealed';
import { chunkName, Keys } from './chunk/crypto';
import { chunkKey, encodeChunk } from './chunk/format';
import { EngineSettings, resolveSettings } from './config';
import { FilespaceHeader, HEADER_KEY, linkedChunkSizeMismatch, sealLegacyHeader } from './filespace';
import { MetaStore } from './meta/metastore';
import { RemoteMeta, SegmentConflictError, SegmentWriter, isOwnPrefix } from './meta/remote';
import { Lease, LeaseHeldError, LeaseLostError, LeaseRecord, Machine, NoConditionalWritesError, describeHolder } from './meta/lease';
import { AsideManifest, AsideWriter, addUnownedChunks, listAside } from './aside';
import { ChunkCollector, GcResult } from './gc';
import { MetaOp, Tree, pathsOf } from './meta/tree';
import { Replicator } from './meta/replicator';
import { ChunkFetcher } from './prefetch/fetcher';
import { CutOffError, MonitoredStore } from './store/monitored';
import { ObjectStore, StoreError, isNoAnswer } from './store/types';
import { RateLimiter } from './upload/ratelimit';
import { WritebackQueue } from './upload/writeback';
import { StallCause } from './vfs/backpressure';
import { Vfs } from './vfs/vfs';
import { UserError } from './errors';
import { settledWithin } from './util/concurrency';
import { fsyncDir } from './util/files';
import { RepairResult, describeLocalDamage, repairLocalMetadata } from './repair';

export interface EngineOptions {
  readonly store: ObjectStore;
  readonly keys: Keys;
  readonly header: FilespaceHeader;
  readonly cacheDir: string;
  readonly settings: EngineSettings;
  readonly log?: (msg: string) => void;
  /** 'write' takes the write lease; 'read' follows the writer read-only. Default 'write'. */
  readonly mode?: 'write' | 'read';
  /** Take the write lease even while another machine's is live (that machine is fenced off). */
  readonly takeover?: boolean;
  /** False when the store was found to ignore conditional writes. Default true. */
  readonly conditionalWrites?: boolean;
  /** The name the user knows this filespace by, for messages that name a command to run. */
  readonly name?: string;
}

export interface LeaseStatus {
  role: 'writer' | 'follower' | 'none';
  holder: string | null;
  holderIsThisMachine: boolean;
  lastRenewedAt: number | null;
  ttlMs: number;
  /** Followers: how far behind the writer's log this mount may be, in ms. */
  followerLagMs: number | null;
  /** Writer: when renewals began to fail (null while they succeed); writes are then kept locally. */
  renewFailingSince: number | null;
  /** Writer: until when it may commit without another renewal (past: it commits nothing). */
  validUntil: number | null;
  /** Why this mount stopped writing for good (the lease was lost, or another machine wrote). */
  lost: string | null;
  conditionalWrites: boolean;
}

export interface EngineStats {
  dirtyBytes: number;
  dirtyFiles: number;
  dirtyChunks: number;
  pendingMetaOps: number;
  uploadBytesPerSec: number;
  /** The upload bandwidth limit in force (0: none). */
  uploadLimitBytesPerSec: number;
  downloadBytesPerSec: number;
  uploadedBytes: number;
  downloadedBytes: number;
  cacheUsedBytes: number;
  cacheCapBytes: number;
  cacheHitRatio: number;
  openFiles: number;
  offline: boolean;
  /** When the bucket stopped answering (while offline). */
  offlineSince: number | undefined;
  uploadsPaused: boolean;
  /** Writers waiting for room in a full cache, or refused it (see vfs/backpressure.ts). */
  writesWaiting: WritesWaitingStatus | undefined;
  readOnlyReason: string | undefined;
  lastError: string | undefined;
  /** Paths of files with data not yet uploaded (at most PENDING_FILES_SHOWN). */
  pendingFiles: string[];
  lease: LeaseStatus;
  /** Sets of changes kept aside because another machine took over (see `filespace aside`). */
  aside: Array<{ id: string; createdAt: number; files: number; reason: string }>;
}

export interface WritesWaitingStatus {
  since: number;
  /** What keeps the cache full: uploads paused, the bucket offline, uploads failing, nothing uploading, or still uploading. */
  cause: StallCause | 'uploading';
  /** True while writes that need room fail at once with ENOSPC. */
  refusing: boolean;
  refused: number;
  /** The state in words, with what to do about it. */
  message: string;
}

/** This cache's machine identity: random, created once, kept with the cache. */
async function machineOf(cacheDir: string): Promise<Machine> {
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

const PENDING_FILES_SHOWN = 50;

/** Takes the per-cache-directory lock so two engines never share one cache. */
/** Also says whether a previous engine left its lock behind (it did not stop cleanly). */
async function lockCacheDir(cacheDir: string): Promise<{ file: string; uncleanStop: boolean }> {
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
        throw new UserError(`this filespace is already in use by process ${pid} on this machine (cache ${cacheDir}); unmount it first`, 'BUSY');
      }
      await fsp.rm(file, { force: true });
      uncleanStop = true;
    }
  }
  throw new UserError(`cannot lock ${cacheDir}`, 'BUSY');
}

/** Notes which inodes an unsent op changed, and which paths it removed. */
function touchedBy(op: MetaOp, tree: Tree, paths: Map<number, string>, touched: Set<number>, removed: string[]): void {
  const at = (dir: number, name: string) => `${(paths.get(dir) ?? '?').replace(/\/$/, '')}/${name}`;
  switch (op.t) {
    case 'mk': case 'attr': case 'chunk': case 'xattr':
      touched.add(op.ino);
      break;
    case 'mv': {
      const moved = tree.lookup(op.dp, op.dn);
      if (moved) touched.add(moved.ino);
      removed.push(`${at(op.sp, op.sn)} (renamed to ${at(op.dp, op.dn)})`);
      break;
    }
    case 'rm':
      removed.push(at(op.parent, op.name));
      break;
  }
}

/** Writers and readers need a few chunks of room at once; a smaller cache could not make progress. */
function checkCapFitsChunks(capBytes: number, chunkSize: number): void {
  if (capBytes < 4 * chunkSize) {
    throw new UserError(`the cache size must be at least 4 chunks (${4 * chunkSize / 1024 / 1024} MiB for this filespace)`, 'CACHE_TOO_SMALL');
  }
}

export class Engine {
  readonly vfs: Vfs;
  private readonly writeback: WritebackQueue;
  private readonly replicator: Replicator;
  private readonly fetcher: ChunkFetcher;
  private settings: EngineSettings;
  private uploadedBytes = 0;
  private lastError: string | undefined;
  /** Uploads failing with an answer from the bucket: since when, and the first error. Cleared by a success. */
  private uploadFailure: { since: number; code: string; message: string } | undefined;
  private uploadsPaused = false;
  private readonly uploadLimit: RateLimiter;
  private rateTimer: NodeJS.Timeout;
  private sizeTimer: NodeJS.Timeout;
  private diskTimer: NodeJS.Timeout;
  private readonly disk: CacheDisk;
  private samples: Array<{ t: number; up: number; down: number }> = [];
  private closed = false;
  private readonly log: (msg: string) => void;
  private readonly remote: RemoteMeta;
  private readonly lease: Lease;
  private readonly gc: ChunkCollector;
  private readonly mode: 'write' | 'read';
  /** Writer: the lease was taken (possibly late, after being offline at mount). */
  private leaseTaken = false;
  private leaseTimer: NodeJS.Timeout | undefined;
  private followTimer: NodeJS.Timeout | undefined;
  private gcTimer: NodeJS.Timeout | undefined;
  private following: Promise<void> | undefined;
  /** Follower: when the log was last read to its end. */
  private caughtUpAt: number | undefined;
  private holderSeen: LeaseRecord | undefined;
  private asideSets: AsideManifest[] = [];
  private pendingFilesCache: { at: number; paths: string[] } | undefined;
  /** Follower with unsent local changes: it does not follow until they are uploaded or set aside. */
  private followBlocked: string | undefined;
  /** Resolves (to false) once this mount stops writing for good; `sync` waits no longer then. */
  private readonly writingStopped: Promise<false>;
  private stopWriting: () => void = () => undefined;

  private constructor(
    private readonly opts: EngineOptions,
    private readonly meta: MetaStore,
    private readonly dirty: DirtyStore,
    private readonly cache: ChunkCache,
    private readonly handles: HandlePool,
    private readonly lockFile: string,
    private readonly machine: Machine,
    /** The same object as opts.store: every request goes through it. */
    private readonly store: MonitoredStore,
  ) {
    this.settings = opts.settings;
    this.uploadLimit = new RateLimiter(opts.settings.uploadLimitBytesPerSec);
    this.log = opts.log ?? (() => undefined);
    this.mode = opts.mode ?? 'write';
    this.remote = new RemoteMeta(opts.store, opts.keys.metaKey, opts.header);
    this.lease = new Lease({
      store: opts.store,
      metaKey: opts.keys.metaKey,
      self: machine,
      ttlMs: () => this.settings.leaseTtlMs,
      conditional: opts.conditionalWrites ?? true,
    });
    // Also what files deleted while open here still read: they may outlive the grace period.
    this.gc = new ChunkCollector(opts.store, opts.keys.metaKey, () => this.vfs.referencedChunks(), () => this.settings.gcGraceMs);
    this.fetcher = new ChunkFetcher(opts.store, cache, opts.keys.chunkKey, this.settings.downloadConcurrency,
      () => this.settings.readTimeoutMs, this.log, store);
    // While the cache disk is full, its state line says why metadata cannot be saved; the
    // replicator's retries would repeat it at every attempt.
    const replicatorLog = (msg: string) => {
      if (!(this.disk.full && /no space left|disk is full/i.test(msg))) this.log(msg);
    };
    this.replicator = new Replicator(meta, this.remote, () => this.settings.metaPushDelayMs, replicatorLog,
      () => this.segmentWriter(),
      async () => {
        if (!this.leaseTaken) throw new StoreError('Unreachable', 'waiting for the write lease');
        await this.lease.ensureValid();
      },
      () => this.publishableOps());
    this.writingStopped = new Promise<false>((resolve) => (this.stopWriting = () => resolve(false)));
    this.replicator.onConflict = () => {
      this.writeback.setPressure(false);
      this.stopWriting();
      this.vfs.drainChanged(); // read-only now: waiting writers fail at once
    };
    this.vfs = new Vfs(meta, dirty, cache, this.fetcher, {
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      prefetchMaxChunks: () => this.settings.prefetchMaxChunks,
      readOnly: () => this.readOnlyReason(),
      snapshotReads: () => this.mode === 'read',
      drainBlocked: () => this.drainBlocked(),
      writeStallTimeoutMs: () => this.settings.writeStallTimeoutMs,
    });
    this.writeback = new WritebackQueue({
      dirty,
      chunkSize: meta.chunkSize,
      policy: () => this.settings,
      isOpenForWrite: (ino) => this.vfs.isOpenForWrite(ino),
      isUnlinked: (ino) => this.vfs.isUnlinked(ino),
      upload: (d) => this.uploadChunk(d),
      // Offline, uploads wait for the bucket instead of failing one by one.
      paused: () => this.uploadsPaused || this.replicator.conflict !== undefined || this.mode === 'read' || store.offline,
      onError: (err, d) => this.noteUploadError(err, d),
      onSuccess: () => {
        if (this.uploadFailure) {
          this.log(`uploads work again (they failed since ${new Date(this.uploadFailure.since).toISOString()})`);
          this.uploadFailure = undefined;
          this.lastError = undefined;
        }
        if (!this.cache.wouldExceedCap(meta.chunkSize)) this.writeback.setPressure(false);
      },
    });
    this.vfs.onPressure = () => this.writeback.setPressure(true);
    store.onChange = (online) => {
      if (online) {
        // The bucket is back: everything waiting on a backoff timer goes now.
        this.writeback.retryNow();
        this.replicator.retryNow();
        this.retryLeaseNow();
      }
      this.vfs.drainChanged();
    };
    this.vfs.onWriterClosed = () => this.writeback.pump();
    meta.onChange = () => this.replicator.schedule();
    this.rateTimer = setInterval(() => this.sampleRates(), 1000);
    this.rateTimer.unref();
    this.sizeTimer = setInterval(() => this.vfs.commitAllSizes(), 1000);
    this.sizeTimer.unref();
    this.disk = new CacheDisk(opts.cacheDir, {
      reserveBytes: JOURNAL_RESERVE_BYTES, headroomBytes: DISK_HEADROOM_BYTES + 2 * meta.chunkSize, log: this.log,
    });
    meta.onDiskFull = (err) => this.freeDiskSpace(err);
    this.diskTimer = setInterval(() => void this.sampleDisk(), 1000);
    this.diskTimer.unref();
  }

  /** Creates this machine's local metadata for a filespace from the bucket alone. */
  static async linkLocal(store: ObjectStore, keys: Keys, header: FilespaceHeader, cacheDir: string): Promise<void> {
    const metaDir = path.join(cacheDir, 'meta');
    const existing = await MetaStore.load(metaDir);
    if (existing) {
      await existing.close();
      throw new UserError(`${cacheDir} already holds a filespace's cache; pick another --cache-dir`, 'EXISTS');
    }
    const { tree, seq } = await new RemoteMeta(store, keys.metaKey, header).load(header.chunkSize);
    const meta = await MetaStore.create(metaDir, tree, seq);
    await meta.close();
  }

  static async open(opts: EngineOptions): Promise<Engine> {
    // Created at link time, never here: a missing cache folder is not made up (it could be a
    // mount point that is not mounted, or on a disk that is not there).
    const st = await fsp.stat(opts.cacheDir).catch(() => undefined);
    if (!st?.isDirectory()) throw new UserError(`the cache folder ${opts.cacheDir} is missing; link the filespace again (or restore the folder)`, 'NOT_LINKED');
    const { file: lockFile, uncleanStop } = await lockCacheDir(opts.cacheDir);
    try {
      // Damaged local metadata is refused with nothing changed (repair.ts has the way out).
      const meta = await MetaStore.load(path.join(opts.cacheDir, 'meta')).catch(async (err: unknown) => {
        throw await describeLocalDamage(err, opts.cacheDir, opts.name);
      });
      if (!meta) throw new UserError(`no local metadata in ${opts.cacheDir}; link the filespace first`, 'NOT_LINKED');
      if (meta.chunkSize !== opts.header.chunkSize) throw linkedChunkSizeMismatch(opts.store, opts.header.chunkSize, meta.chunkSize);
      checkCapFitsChunks(opts.settings.cacheCapBytes, meta.chunkSize);
      const handles = new HandlePool(256);
      const sealed = new SealedIO(opts.keys.cacheKey);
      const dirty = new DirtyStore(opts.cacheDir, handles, sealed, opts.log);
      const cs = meta.chunkSize;
      // Inode numbers are never reused: one below the tree's next number that the tree does not
      // hold was created and then deleted (or the snapshot would name it). Any other chunk
      // without a file is an orphan, set aside at start.
      await dirty.init((ino, idx) => {
        const inode = meta.tree.get(ino);
        if (inode?.kind === 'file') return Math.min(cs, inode.size - idx * cs);
        return !inode && ino < meta.tree.nextIno ? 'deleted' : 'unknown';
      }, Date.now(), { uncleanStop });
      const cache = new ChunkCache(opts.cacheDir, {
        capBytes: opts.settings.cacheCapBytes,
        highWatermark: opts.settings.cacheHighWatermark,
        lowWatermark: opts.settings.cacheLowWatermark,
      }, handles, () => dirty.totalBytes, sealed);
      await cache.init();
      cache.onDamaged = (name, why) => opts.log?.(`cached chunk ${name} was damaged (${why}); fetching it again`);
      const machine = await machineOf(opts.cacheDir);
      let settings = () => opts.settings;
      const store = new MonitoredStore(opts.store, { probeKey: HEADER_KEY, probeTimeoutMs: () => settings().probeTimeoutMs, log: opts.log });
      const engine = new Engine({ ...opts, store }, meta, dirty, cache, handles, lockFile, machine, store);
      settings = () => engine.currentSettings;
      try {
        await engine.start();
      } catch (err) {
        await engine.close().catch(() => undefined);
        throw err;
      }
      return engine;
    } catch (err) {
      await fsp.rm(lockFile, { force: true });
      throw err;
    }
  }

  /**
   * Repairs damaged local metadata while no engine uses the cache (repair.ts). Changes nothing
   * and returns `repaired: false` when there is no damage.
   */
  static async repairLocal(opts: { store: ObjectStore; keys: Keys; header: FilespaceHeader; cacheDir: string; log?: (msg: string) => void }): Promise<RepairResult> {
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

  private segmentWriter(): SegmentWriter | undefined {
    if (this.mode !== 'write' || !this.leaseTaken || !this.lease.current) return undefined;
    return { id: this.machine.id, epoch: this.lease.current.epoch };
  }

  /**
   * How many pending ops may reach the bucket now. A size change is published only once the
   * data it exposes is uploaded: otherwise other machines would read zeros where this one has
   * data. The op is held (with everything after it, to keep the order) while its file has a
   * dirty chunk within the new size that was already dirty when the op was committed.
   */
  private publishableOps(): number {
    const ops = this.meta.pendingRemote;
    const times = this.meta.pendingTimes;
    const cs = this.meta.chunkSize;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      if (op.t !== 'attr' || op.size === undefined) continue;
      // A deleted file's size exposes nothing (its deletion follows); one deleted while still
      // open keeps dirty chunks that never upload, and must not hold everything back.
      if (!this.meta.tree.get(op.ino)) continue;
      const last = Math.ceil(op.size / cs) - 1;
      for (const idx of this.dirty.indexesOf(op.ino)) {
        if (idx > last) continue;
        const d = this.dirty.get(op.ino, idx);
        if (d && d.firstDirtyMs <= (times[i] ?? Infinity)) return i;
      }
    }
    return ops.length;
  }

  private readOnlyReason(): string | undefined {
    if (this.replicator.conflict) return `read-only: ${this.replicator.conflict}`;
    if (this.mode === 'read') {
      const h = this.holderSeen;
      return `read-only: this mount follows ${h && !h.released ? `the writer ${describeHolder(h)}` : 'the filespace'}`;
    }
    return undefined;
  }

  /** Reads the free space of the cache disk; the cache keeps within it (see the header). */
  private async sampleDisk(): Promise<void> {
    await this.disk.sample(() => this.cache.onDiskBytes, this.cache.capBytes);
    this.cache.setDiskLimit(this.disk.limitBytes);
  }

  /**
   * The journal found the cache disk full: gives back clean chunks (they are in the bucket),
   * else the space held back for metadata. Resolves whether anything was freed.
   */
  private async freeDiskSpace(err: Error): Promise<boolean> {
    if ((await this.cache.evictForDisk(DISK_HEADROOM_BYTES)) > 0) return true;
    if (await this.disk.releaseReserve()) return true;
    this.disk.noteFull(err);
    return false;
  }

  private async start(): Promise<void> {
    await this.disk.init();
    await this.sampleDisk();
    this.asideSets = await listAside(this.opts.cacheDir, this.opts.keys.cacheKey).catch(() => []);
    if (this.dirty.orphans.length > 0) await this.setAsideOrphans();
    if (this.mode === 'write') {
      try {
        await this.takeLease();
      } catch (err) {
        if (err instanceof LeaseHeldError) throw new UserError(err.message, 'LEASE_HELD');
        if (err instanceof NoConditionalWritesError) throw new UserError(err.message, 'NO_CONDITIONAL_WRITES');
        if (!(err instanceof StoreError) || !err.retryable) throw err;
        // Offline: work from the cache; the lease is taken (or found lost) once the bucket answers.
        this.log(`could not take the write lease now (${err.message}); writing to the cache and retrying`);
        this.leaseTimer = setTimeout(() => void this.retryLease(), 2000);
        this.leaseTimer.unref();
      }
      if (this.leaseTaken) await this.sealHeader();
    } else {
      this.holderSeen = await this.lease.read().then((v) => v?.record, () => undefined);
      await this.catchUp(true);
      this.scheduleFollow();
    }
    this.writeback.start();
    this.replicator.schedule(0);
    if (this.mode === 'write' && this.settings.gcIntervalMs > 0) {
      this.gcTimer = setInterval(() => {
        if (this.lease.valid() && !this.replicator.conflict) this.collectGarbage().catch((err) => this.log(`garbage collection failed: ${(err as Error).message}`));
      }, this.settings.gcIntervalMs);
      this.gcTimer.unref();
    }
  }

  /** Takes the lease, catches up with the bucket, fences off the previous holder. */
  private async takeLease(): Promise<void> {
    const { previous } = await this.lease.acquire({ takeover: this.opts.takeover ?? false });
    this.leaseTaken = true;
    if (previous && previous.holder.id !== this.machine.id) {
      this.log(`took the write lease from ${describeHolder(previous)}${previous.released ? ' (released)' : ''}`);
    }
    this.scheduleRenewal();
    for (let attempt = 0; ; attempt++) {
      await this.catchUp(true);
      if (previous?.holder.id === this.machine.id || this.replicator.conflict) return;
      try {
        await this.writeFence();
        return;
      } catch (err) {
        if (!(err instanceof SegmentConflictError) || attempt >= 5) throw err;
        // The previous holder wrote one more segment meanwhile: read it and fence after it.
      }
    }
  }

  /**
   * Writes an empty segment of ours right after the end of the log, so a previous holder that
   * is still running collides with it on its next push. Throws SegmentConflictError when
   * another machine wrote that segment first.
   */
  private async writeFence(): Promise<void> {
    const seq = this.meta.remoteSeq + 1;
    await this.meta.sync();
    await this.remote.pushSegment(seq, [], this.segmentWriter()!);
    this.meta.markPushed(seq, 0);
    await this.meta.flush();
  }

  private async retryLease(): Promise<void> {
    this.leaseTimer = undefined;
    if (this.closed) return;
    try {
      const { previous } = await this.lease.acquire({ takeover: this.opts.takeover ?? false });
      this.leaseTaken = true;
      this.scheduleRenewal();
      // Writes may have landed here while another machine was writing: catching up finds out
      // (read-only until the next mount sets them aside), and the fence settles any race.
      await this.catchUp(false);
      if (!this.replicator.conflict && previous && previous.holder.id !== this.machine.id) {
        try {
          await this.writeFence();
        } catch (err) {
          if (err instanceof SegmentConflictError) {
            this.replicator.fenced('another machine wrote to this filespace while this one was offline; changes made here since are kept in the cache and will be set aside at the next mount');
          } else {
            throw err;
          }
        }
      }
      await this.sealHeader();
      this.replicator.schedule(0);
    } catch (err) {
      if (err instanceof LeaseHeldError || err instanceof NoConditionalWritesError) {
        this.replicator.fenced(err.message);
        return;
      }
      this.log(`could not take the write lease: ${(err as Error).message}`);
      this.leaseTimer = setTimeout(() => void this.retryLease(), 5000);
      this.leaseTimer.unref();
    }
  }

  /** The bucket answers again: a lease that could not be renewed or taken is tried now, not at its timer. */
  private retryLeaseNow(): void {
    if (this.closed || this.mode !== 'write' || this.replicator.conflict || !this.leaseTimer) return;
    if (this.leaseTaken && this.lease.valid()) return;
    clearTimeout(this.leaseTimer);
    this.leaseTimer = undefined;
    void (this.leaseTaken ? this.renewLease() : this.retryLease());
  }

  /**
   * A header written before headers were sealed gets its seal from the machine that holds the
   * lease, once its metadata agreed with the header (checked at open) and the newest checkpoint
   * names the chunk size (so stripping the seal again cannot hide a changed chunk size from a
   * machine that links). A failure only delays it to the next read-write mount.
   */
  private async sealHeader(): Promise<void> {
    if (this.opts.header.seal !== undefined || this.replicator.conflict) return;
    try {
      if (!(await this.remote.bindNewestCheckpoint())) {
        this.log('filespace.json has no seal yet; the newest metadata checkpoint could not be made to name the chunk size now, so the next read-write mount seals it');
        return;
      }
      if (await sealLegacyHeader(this.opts.store, this.opts.header, this.opts.keys)) this.log('sealed filespace.json: a change to it is now refused');
    } catch (err) {
      this.log(`could not seal filespace.json now (${(err as Error).message}); the next read-write mount tries again`);
    }
  }

  private scheduleRenewal(): void {
    if (this.closed) return;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = setTimeout(() => void this.renewLease(), Math.max(200, Math.floor(this.settings.leaseTtlMs / 3)));
    this.leaseTimer.unref();
  }

  /**
   * Renews the lease. Renewals that get no answer keep the lease held but not valid: writes
   * keep landing in the cache and nothing is committed; the first renewal that gets through
   * takes the lease back (nobody wrote it meanwhile) and the changes made since are pushed.
   */
  private async renewLease(): Promise<void> {
    this.leaseTimer = undefined;
    if (this.closed || this.replicator.conflict) return;
    const failingSince = this.lease.renewFailingSince;
    try {
      await this.lease.renew();
      this.noteStoreOutcome(undefined);
      if (failingSince !== undefined) {
        this.log(`renewed the write lease again after ${Math.round((Date.now() - failingSince) / 1000)}s of failed renewals; nobody took it meanwhile, committing the changes made here since`);
        void this.replicator.pushNow();
      }
    } catch (err) {
      if (err instanceof LeaseLostError) {
        this.replicator.fenced(`${err.message}; this machine stopped writing, and its changes not yet in the bucket are kept in the cache (set aside at the next mount)`);
        return;
      }
      this.noteStoreOutcome(err);
      this.log(`lease renewal failed: ${(err as Error).message}`);
    }
    this.scheduleRenewal();
  }

  private scheduleFollow(): void {
    if (this.closed) return;
    this.followTimer = setTimeout(() => {
      this.followTimer = undefined;
      this.following = this.follow().finally(() => {
        this.following = undefined;
        this.scheduleFollow();
      });
    }, this.settings.followIntervalMs);
    this.followTimer.unref();
  }

  /** Follower: applies what the writer committed since the last look. */
  private async follow(): Promise<void> {
    try {
      this.holderSeen = (await this.lease.read())?.record;
      await this.catchUp(false);
    } catch (err) {
      this.noteStoreOutcome(err);
      this.log(`could not follow the writer: ${(err as Error).message}`);
    }
  }

  /** Chunks in the bucket that nothing references, deleted after the grace period (writer only). */
  async collectGarbage(): Promise<GcResult> {
    if (this.mode !== 'write' || !this.leaseTaken) throw new UserError('garbage collection runs only on the machine that writes the filespace', 'NOT_WRITER');
    if (this.replicator.conflict) throw new UserError(this.replicator.conflict, 'READ_ONLY');
    await this.lease.ensureValid();
    const res = await this.gc.run();
    this.log(`garbage collection: ${res.scanned} chunks, ${res.deleted} deleted, ${res.marked} waiting out the grace period`);
    return res;
  }

  get chunkSize(): number {
    return this.meta.chunkSize;
  }

  /**
   * Applies what other machines committed to the bucket since this machine last wrote or
   * read it. Local changes that those segments overtook are set aside (at mount,
   * `atMount`), or, on a live mount, make it read-only until the next mount sets them aside:
   * the tree under a live mount is never swapped.
   */
  private async catchUp(atMount: boolean): Promise<void> {
    let applied = 0;
    try {
      for (;;) {
        const seq = this.meta.remoteSeq + 1;
        const seg = await this.remote.readSegment(seq);
        if (!seg) break;
        if (isOwnPrefix(seg, this.meta.pendingRemote, this.machine.id)) {
          // This machine wrote that segment just before it stopped, and had not yet noted so.
          this.meta.markPushed(seq, seg.ops.length);
          continue;
        }
        if (this.meta.pendingRemote.length > 0 || this.dirty.count > 0) {
          const why = 'another machine changed this filespace while this one had changes not yet uploaded';
          if (atMount) {
            await this.setAside(why);
            continue;
          }
          if (this.mode === 'write') {
            this.replicator.fenced(`${why}; they are kept in the cache and will be set aside at the next mount`);
          } else {
            this.followBlocked = `${why}; remount to set them aside and follow the writer`;
          }
          return;
        }
        this.meta.applyRemote(seq, seg.ops);
        applied++;
      }
      this.caughtUpAt = Date.now();
      if (this.mode === 'read' && (this.meta.pendingRemote.length > 0 || this.dirty.count > 0)) {
        this.followBlocked = 'this machine has changes not yet uploaded; mount read-write to upload them (this mount shows them and does not follow the writer meanwhile)';
      } else if (this.mode === 'read') {
        this.followBlocked = undefined;
      }
    } catch (err) {
      if (atMount && !(err instanceof StoreError)) throw err;
      // Offline: work from the local copy; caught up when the bucket answers.
      this.log(`could not check the bucket for newer metadata: ${(err as Error).message}`);
    }
    if (applied > 0) {
      this.log(`applied ${applied} metadata segment(s) written by another machine`);
      await this.meta.flush();
    }
  }

  /**
   * Keeps this machine's unsent changes (files it created or changed, paths it removed) in
   * an encrypted set under aside/, then resets the local metadata to the bucket's and drops
   * the dirty data. Called only before the mount is served.
   */
  private async setAside(reason: string): Promise<void> {
    const tree = this.meta.tree;
    const paths = pathsOf(tree);
    const touched = new Set<number>(this.dirty.inodes());
    const removed: string[] = [];
    for (const op of this.meta.pendingRemote) touchedBy(op, tree, paths, touched, removed);
    const writer = await AsideWriter.create(this.opts.cacheDir, this.opts.keys.cacheKey);
    const cs = this.meta.chunkSize;
    for (const ino of [...touched].sort((a, b) => a - b)) {
      const inode = tree.get(ino);
      const p = paths.get(ino);
      if (!inode || inode.kind !== 'file' || p === undefined) continue;
      const size = this.vfs.sizeOf(inode);
      const count = Math.ceil(size / cs);
      await writer.addFile(p, size, inode.mode, count, async (idx) => {
        const len = Math.min(cs, size - idx * cs);
        const buf = Buffer.alloc(len);
        const d = this.dirty.get(ino, idx);
        if (d) {
          await this.dirty.read(d, buf, 0, len, 0);
          return buf;
        }
        const ref = inode.chunks?.[idx];
        if (!ref) return buf;
        const valid = Math.min(len, ref[1]);
        if ((await this.cache.read(ref[0], buf, 0, valid, 0)) === undefined) {
          const data = await this.fetcher.fetch(ref[0]);
          data.copy(buf, 0, 0, Math.min(valid, data.length));
        }
        return buf;
      });
    }
    const manifest = await writer.finish(reason, removed);
    this.asideSets.push(manifest);
    this.log(`${reason}: set aside ${manifest.files.length} file(s) as ${manifest.id} (see "filespace aside list")`);
    for (const d of [...this.dirty.all()]) await this.dirty.drop(d);
    const fresh = await this.remote.load(this.meta.chunkSize);
    await this.meta.resetTo(fresh.tree, fresh.seq);
  }

  /**
   * Keeps the dirty chunks found at start without a file the metadata knows (data written,
   * never fsynced, before a crash) as a set of `unnamed/inode-<n>` files, then removes them.
   * Called only before the mount is served.
   */
  private async setAsideOrphans(): Promise<void> {
    const orphans = this.dirty.orphans;
    const writer = await AsideWriter.create(this.opts.cacheDir, this.opts.keys.cacheKey);
    const files = await addUnownedChunks(writer, this.meta.chunkSize, orphans.map((o) => ({ ...o, read: () => this.dirty.readOrphan(o) })));
    const manifest = await writer.finish('data found in the cache without a file this machine\'s metadata knows (written but not fsynced before a crash?)', []);
    await this.dirty.removeOrphans();
    this.asideSets.push(manifest);
    const name = this.opts.name ? ` ${this.opts.name}` : '';
    this.log(`${orphans.length} dirty chunk(s) of ${files} file(s) without a known owner were set aside as ${manifest.id} (see "filespace aside${name} list")`);
  }

  get currentSettings(): EngineSettings {
    return this.settings;
  }

  /** Applies new per-machine settings live. */
  updateSettings(partial: Partial<EngineSettings>): EngineSettings {
    const next = resolveSettings({ ...this.settings, ...partial });
    checkCapFitsChunks(next.cacheCapBytes, this.meta.chunkSize);
    this.settings = next;
    this.cache.setLimits({ capBytes: next.cacheCapBytes, highWatermark: next.cacheHighWatermark, lowWatermark: next.cacheLowWatermark });
    this.fetcher.setConcurrency(next.downloadConcurrency);
    this.uploadLimit.setRate(next.uploadLimitBytesPerSec);
    this.writeback.pump();
    return next;
  }

  setUploadsPaused(paused: boolean): void {
    this.uploadsPaused = paused;
    if (!paused) this.writeback.pump();
    this.vfs.drainChanged();
  }

  /** Why uploads cannot free room in the cache now; undefined while they can. */
  private drainBlocked(): StallCause | undefined {
    if (this.uploadsPaused) return 'paused';
    if (this.store.offline) return 'offline';
    if (this.uploadFailure) return 'failing';
    if (this.writeback.uploading === 0) return 'idle';
    return undefined;
  }

  private async uploadChunk(d: DirtyChunk): Promise<void> {
    // Under a bandwidth limit, wait for the budget before reading and sealing the chunk, so the
    // chunks waiting for their turn hold no memory. The reservation is the plaintext size,
    // corrected once the sealed size is known (or returned if nothing is sent).
    let reserved = 0;
    if (this.uploadLimit.limit > 0 && this.meta.tree.get(d.ino)) {
      reserved = d.len;
      await this.uploadLimit.take(reserved);
      if (this.closed) return; // shutting down while waiting for bandwidth: stays dirty
    }
    let sent = 0;
    try {
      await this.uploadReserved(d, (n) => (sent = n));
    } finally {
      if (reserved > 0) this.uploadLimit.adjust(sent - reserved);
    }
  }

  private async uploadReserved(d: DirtyChunk, sending: (bytes: number) => void): Promise<void> {
    const { keys, store } = this.opts;
    const snap = await this.vfs.chunkLock(d.ino, d.idx, async () => {
      if (this.dirty.get(d.ino, d.idx) !== d) return undefined;
      if (this.vfs.isUnlinked(d.ino)) return undefined; // deleted while open: its data stays local until the last close
      if (!this.meta.tree.get(d.ino)) {
        // Its file is gone: drop the data here (after the deletion is durable), or the queue
        // would pick this chunk again and again.
        await this.meta.sync();
        await this.dirty.drop(d);
        return undefined;
      }
      return { content: await this.dirty.readAll(d), gen: d.gen, at: Date.now() };
    });
    if (!snap) return;
    const name = chunkName(keys.nameKey, snap.content);
    // Held from before the PUT until the reference is committed, so GC cannot delete it between.
    await this.gc.acquire(name);
    try {
      if (!this.meta.tree.chunkRefs.has(name)) {
        const obj = await encodeChunk(keys.chunkKey, name, snap.content);
        sending(obj.length);
        await store.put(chunkKey(name), obj);
        this.uploadedBytes += obj.length;
      }
      await this.vfs.chunkLock(d.ino, d.idx, async () => {
        if (this.closed) return; // shutting down: the chunk stays dirty and uploads next time
        if (this.dirty.get(d.ino, d.idx) !== d || !this.meta.tree.get(d.ino)) return; // deleted or truncated away meanwhile
        this.vfs.commitSize(d.ino);
        this.meta.commit({ t: 'chunk', ino: d.ino, idx: d.idx, ref: [name, snap.content.length] });
        if (d.gen !== snap.gen) {
          // Written to during the upload: what is still dirty is only what came after the snapshot.
          d.firstDirtyMs = Math.max(d.firstDirtyMs, snap.at);
        } else {
          // The reference must be durable before the dirty copy stops being the data's home.
          await this.meta.sync();
          if (this.dirty.get(d.ino, d.idx) !== d || d.gen !== snap.gen) return;
          const { file, fileId, size } = this.dirty.release(d);
          await this.cache.adopt(name, file, size, fileId);
        }
      });
    } finally {
      this.gc.release(name);
    }
    this.vfs.noteDirtyFreed();
  }

  /** Reports an outcome to the store monitor (which sees every request itself; see MonitoredStore.note). */
  private noteStoreOutcome(err: unknown | undefined): void {
    this.store.note(err);
  }

  /**
   * Upload failures are one state, not one error per attempt: while the bucket does not
   * answer, status says offline (since when, and what waits); while it answers with errors,
   * `lastError` names the first error of the run and stays the same until an upload succeeds.
   */
  private noteUploadError(err: unknown, d: DirtyChunk): void {
    const msg = err instanceof Error ? err.message : String(err);
    if (err instanceof CutOffError) return; // sent during an outage that is over; retried at once
    if (isNoAnswer(err) && this.store.offline) {
      if (d.attempts === 1) this.log(`upload of ${d.ino}.${d.idx} waits for the bucket: ${msg}`);
      return;
    }
    const code = err instanceof StoreError ? err.code : 'Other';
    if (this.uploadFailure?.code !== code) {
      this.uploadFailure = { since: Date.now(), code, message: msg };
      this.lastError = `uploads fail (since ${new Date(this.uploadFailure.since).toISOString()}, retrying): ${msg}`;
      this.log(`upload of ${d.ino}.${d.idx} failed (attempt ${d.attempts}): ${msg}`);
    }
  }

  /** The "writes waiting" state in words, with what to do about it. */
  private writesWaiting(): WritesWaitingStatus | undefined {
    const w = this.vfs.writesWaiting();
    if (!w) return undefined;
    let message: string;
    if (w.cause === 'uploading') {
      message = 'the cache is full of changes still uploading; writes go on as uploads free room';
    } else {
      const [why, remedy] = {
        paused: ['uploads are paused', 'resume uploads or raise the cache size'],
        offline: ['the bucket does not answer', 'they upload once it answers; or raise the cache size'],
        failing: [`uploads fail: ${this.uploadFailure?.message ?? 'see the log'}`, 'fix the cause or raise the cache size'],
        idle: ['nothing is uploading', 'raise the cache size'],
      }[w.cause];
      const stallS = Math.round(this.settings.writeStallTimeoutMs / 1000);
      message = `the cache is full of changes that cannot upload (${why}); ${remedy}. ` +
        (w.refusing
          ? `Meanwhile writes that need room fail with "No space left on device" (${w.refused} so far).`
          : `Writes fail with "No space left on device" after waiting ${stallS} s.`);
    }
    return { since: w.since, cause: w.cause, refusing: w.refusing, refused: w.refused, message };
  }

  private sampleRates(): void {
    const now = Date.now();
    this.samples.push({ t: now, up: this.uploadedBytes, down: this.fetcher.stats.downloadedBytes });
    while (this.samples.length > 0 && now - this.samples[0]!.t > 5000) this.samples.shift();
  }

  private rate(key: 'up' | 'down'): number {
    const s = this.samples;
    if (s.length < 2) return 0;
    const first = s[0]!;
    const last = s[s.length - 1]!;
    const dt = (last.t - first.t) / 1000;
    return dt > 0 ? Math.round((last[key] - first[key]) / dt) : 0;
  }

  stats(): EngineStats {
    return {
      dirtyBytes: this.dirty.dataBytes,
      dirtyFiles: this.dirty.fileCount,
      dirtyChunks: this.dirty.count,
      pendingMetaOps: this.replicator.pendingOps,
      uploadBytesPerSec: this.rate('up'),
      uploadLimitBytesPerSec: this.uploadLimit.limit,
      downloadBytesPerSec: this.rate('down'),
      uploadedBytes: this.uploadedBytes,
      downloadedBytes: this.fetcher.stats.downloadedBytes,
      cacheUsedBytes: this.cache.usedBytes,
      cacheCapBytes: this.cache.capBytes,
      cacheHitRatio: this.cache.hitRatio,
      openFiles: this.vfs.openFiles,
      offline: this.store.offline,
      offlineSince: this.store.offlineSince,
      uploadsPaused: this.uploadsPaused,
      writesWaiting: this.writesWaiting(),
      readOnlyReason: this.readOnlyReason(),
      lastError: this.replicator.conflict ?? this.followBlocked ?? this.lastError ?? this.replicator.lastError ?? this.fetcher.stats.lastError,
      pendingFiles: this.pendingFiles(),
      lease: this.leaseStatus(),
      aside: this.asideSets.map((m) => ({ id: m.id, createdAt: m.createdAt, files: m.files.length, reason: m.reason })),
    };
  }

  /** Paths of files waiting to upload; recomputed at most every 2 s (it walks the tree). */
  private pendingFiles(): string[] {
    const now = Date.now();
    if (this.pendingFilesCache && now - this.pendingFilesCache.at < 2000) return this.pendingFilesCache.paths;
    const inos = this.dirty.inodes();
    let paths: string[] = [];
    if (inos.length > 0) {
      const all = pathsOf(this.meta.tree);
      paths = inos.map((ino) => all.get(ino)).filter((p): p is string => p !== undefined).sort().slice(0, PENDING_FILES_SHOWN);
    }
    this.pendingFilesCache = { at: now, paths };
    return paths;
  }

  private leaseStatus(): LeaseStatus {
    const conditionalWrites = this.opts.conditionalWrites ?? true;
    if (this.mode === 'write') {
      const cur = this.lease.current;
      const lost = this.lease.lostError?.message ?? null;
      return {
        role: this.leaseTaken && !this.replicator.conflict ? 'writer' : 'none',
        holder: cur ? describeHolder(cur) : null,
        holderIsThisMachine: this.leaseTaken && !lost,
        lastRenewedAt: this.lease.lastRenewedAt ?? null,
        ttlMs: this.settings.leaseTtlMs,
        followerLagMs: null,
        renewFailingSince: this.lease.renewFailingSince ?? null,
        validUntil: this.lease.validUntil ?? null,
        lost: lost ?? this.replicator.conflict ?? null,
        conditionalWrites,
      };
    }
    const h = this.holderSeen;
    return {
      role: 'follower',
      holder: h && !h.released ? describeHolder(h) : null,
      holderIsThisMachine: false,
      lastRenewedAt: h?.renewedAt ?? null,
      ttlMs: h?.ttlMs ?? this.settings.leaseTtlMs,
      followerLagMs: this.caughtUpAt === undefined || this.followBlocked ? null : Date.now() - this.caughtUpAt,
      renewFailingSince: null,
      validUntil: null,
      lost: null,
      conditionalWrites,
    };
  }

  /**
   * Why this mount stopped writing for good, for people: the write lease was lost (and to whom),
   * or another machine wrote the filespace. Undefined while it writes (or on a follower).
   */
  get notWriting(): string | undefined {
    if (this.mode !== 'write' || !this.replicator.conflict) return undefined;
    const lost = this.lease.lostError;
    if (lost?.by) return `this machine lost the write lease to ${describeHolder(lost.by)} at ${new Date(lost.by.acquiredAt).toISOString()}`;
    if (lost) return `this machine lost the write lease: ${lost.message}`;
    return `this machine stopped writing: ${this.replicator.conflict}`;
  }

  /**
   * Uploads every local change (data and metadata) now. Resolves true once the bucket has
   * everything, false if `deadlineMs` passed first or this mount stopped writing for good
   * (see `notWriting`).
   */
  async sync(deadlineMs: number): Promise<boolean> {
    for (;;) {
      if (this.replicator.conflict) return false;
      this.vfs.commitAllSizes();
      const dataDone = await Promise.race([this.writeback.drain(deadlineMs), this.writingStopped]);
      if (!dataDone) return false;
      this.vfs.commitAllSizes();
      await this.replicator.pushNow();
      if (this.replicator.conflict) return false;
      if (this.writeback.pending === 0 && this.replicator.pendingOps === 0) return true;
      if (Date.now() >= deadlineMs) return false;
      await this.replicator.progress.wait(Math.min(500, Math.max(1, deadlineMs - Date.now())));
    }
  }

  /**
   * Stops background work and persists everything locally. Pending uploads resume next open.
   *
   * Bounded whatever the bucket does (about 18 s at most: CLOSE_WAITS_MS, plus the replicator's
   * own 2 s): every wait on the
   * store has its own limit, and what did not finish in time stays queued locally. A step
   * that fails (a full cache disk) is logged and the others still run; the lock file is then
   * left behind, so the next start checks the cache as after a crash.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.rateTimer);
    clearInterval(this.sizeTimer);
    clearInterval(this.diskTimer);
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    if (this.followTimer) clearTimeout(this.followTimer);
    if (this.gcTimer) clearInterval(this.gcTimer);
    const w = CLOSE_WAITS_MS;
    if (this.following) await settledWithin(this.following, w.follow);
    this.writeback.stop();
    this.uploadLimit.close(); // a chunk waiting for bandwidth stays dirty and uploads next time
    await this.writeback.idle(w.uploads);
    this.vfs.commitAllSizes();
    // Give metadata already committed a short chance to reach the bucket; it stays queued otherwise.
    await settledWithin(this.replicator.pushNow(), w.push);
    await this.replicator.stop();
    if (this.replicator.pendingOps === 0 && this.dirty.count === 0) {
      const checkpoint = this.replicator.checkpointNow().catch((err) => this.log(`checkpoint failed: ${(err as Error).message}`));
      if (!(await settledWithin(checkpoint, w.checkpoint))) this.log('the metadata checkpoint did not reach the bucket in time; the next writer replays the log instead');
    }
    let durable = true;
    const local = async (what: string, step: () => Promise<void>) => {
      try {
        await step();
      } catch (err) {
        durable = false;
        this.log(`closing: ${what} failed: ${(err as Error).message}`);
      }
    };
    await local('syncing the dirty store', () => this.dirty.syncAll());
    await local('saving the metadata', () => this.meta.close());
    // Let the next writer in at once; a release that fails just lets the lease expire.
    if (this.leaseTaken && !this.replicator.conflict) await settledWithin(this.lease.release(), w.lease);
    await local('closing cache files', () => this.handles.closeAll());
    await this.opts.store.close().catch(() => undefined);
    if (durable) await fsp.rm(this.lockFile, { force: true });
  }
}

/** Space held back on the cache disk so the metadata journal can be written when the disk is full. */
export const JOURNAL_RESERVE_BYTES = 4 * 1024 * 1024;
/** Kept free on the cache disk beyond what the cache counts (plus two chunks), and evicted at a time when it is full. */
export const DISK_HEADROOM_BYTES = 8 * 1024 * 1024;

/** How long `close` waits for each step that depends on the bucket (ms). */
export const CLOSE_WAITS_MS = { follow: 2000, uploads: 5000, push: 2000, checkpoint: 5000, lease: 2000 } as const;
