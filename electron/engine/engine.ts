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
 * pushes metadata only while it is valid; after taking it from another machine it writes a
 * fence segment so the previous holder can never commit again. A follower mounts read-only,
 * polls the metadata log and applies the writer's segments live; open files keep reading the
 * chunk list they opened (old chunks outlive the GC grace period). Local changes that another
 * machine's segments overtook are set aside (aside.ts), never merged.
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
import { FilespaceHeader } from './filespace';
import { MetaStore } from './meta/metastore';
import { RemoteMeta, SegmentConflictError, SegmentWriter, isOwnPrefix } from './meta/remote';
import { Lease, LeaseHeldError, LeaseLostError, LeaseRecord, Machine, NoConditionalWritesError, describeHolder } from './meta/lease';
import { AsideManifest, AsideWriter, listAside } from './aside';
import { ChunkCollector, GcResult } from './gc';
import { MetaOp, ROOT_INO, Tree } from './meta/tree';
import { Replicator } from './meta/replicator';
import { ChunkFetcher } from './prefetch/fetcher';
import { ObjectStore, StoreError } from './store/types';
import { RateLimiter } from './upload/ratelimit';
import { WritebackQueue } from './upload/writeback';
import { Vfs } from './vfs/vfs';
import { UserError } from './errors';
import { settledWithin } from './util/concurrency';

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
}

export interface LeaseStatus {
  role: 'writer' | 'follower' | 'none';
  holder: string | null;
  holderIsThisMachine: boolean;
  lastRenewedAt: number | null;
  ttlMs: number;
  /** Followers: how far behind the writer's log this mount may be, in ms. */
  followerLagMs: number | null;
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
  uploadsPaused: boolean;
  readOnlyReason: string | undefined;
  lastError: string | undefined;
  /** Paths of files with data not yet uploaded (at most PENDING_FILES_SHOWN). */
  pendingFiles: string[];
  lease: LeaseStatus;
  /** Sets of changes kept aside because another machine took over (see `filespace aside`). */
  aside: Array<{ id: string; createdAt: number; files: number; reason: string }>;
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

/** Paths of every inode in `tree` (first found for hard-linked ones). */
function pathsOf(tree: Tree): Map<number, string> {
  const out = new Map<number, string>([[ROOT_INO, '/']]);
  const stack: Array<[number, string]> = [[ROOT_INO, '']];
  while (stack.length > 0) {
    const [ino, p] = stack.pop()!;
    const node = tree.get(ino);
    if (!node?.entries) continue;
    for (const [name, child] of node.entries) {
      const cp = `${p}/${name}`;
      if (!out.has(child)) out.set(child, cp);
      if (tree.get(child)?.kind === 'dir') stack.push([child, cp]);
    }
  }
  return out;
}

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
      const dh = await fsp.open(cacheDir, 'r');
      await dh.sync().finally(() => dh.close());
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
  private offlineSince: number | undefined;
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

  private constructor(
    private readonly opts: EngineOptions,
    private readonly meta: MetaStore,
    private readonly dirty: DirtyStore,
    private readonly cache: ChunkCache,
    private readonly handles: HandlePool,
    private readonly lockFile: string,
    private readonly machine: Machine,
  ) {
    this.settings = opts.settings;
    this.uploadLimit = new RateLimiter(opts.settings.uploadLimitBytesPerSec);
    this.log = opts.log ?? (() => undefined);
    this.mode = opts.mode ?? 'write';
    this.remote = new RemoteMeta(opts.store, opts.keys.metaKey);
    this.lease = new Lease({
      store: opts.store,
      metaKey: opts.keys.metaKey,
      self: machine,
      ttlMs: () => this.settings.leaseTtlMs,
      conditional: opts.conditionalWrites ?? true,
    });
    this.gc = new ChunkCollector(opts.store, opts.keys.metaKey, () => this.meta.tree.chunkRefs, () => this.settings.gcGraceMs);
    this.fetcher = new ChunkFetcher(opts.store, cache, opts.keys.chunkKey, this.settings.downloadConcurrency,
      () => this.settings.readTimeoutMs, this.log);
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
    this.replicator.onConflict = () => this.writeback.setPressure(false);
    this.vfs = new Vfs(meta, dirty, cache, this.fetcher, {
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      prefetchMaxChunks: () => this.settings.prefetchMaxChunks,
      readOnly: () => this.readOnlyReason(),
      snapshotReads: () => this.mode === 'read',
    });
    this.writeback = new WritebackQueue({
      dirty,
      chunkSize: meta.chunkSize,
      policy: () => this.settings,
      isOpenForWrite: (ino) => this.vfs.isOpenForWrite(ino),
      upload: (d) => this.uploadChunk(d),
      paused: () => this.uploadsPaused || this.replicator.conflict !== undefined || this.mode === 'read',
      onError: (err, d) => this.noteUploadError(err, d),
      onSuccess: () => {
        this.offlineSince = undefined;
        if (!this.cache.wouldExceedCap(meta.chunkSize)) this.writeback.setPressure(false);
      },
    });
    this.vfs.onPressure = () => this.writeback.setPressure(true);
    this.fetcher.onOutcome = (err) => this.noteStoreOutcome(err);
    this.replicator.onOutcome = (err) => this.noteStoreOutcome(err);
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
    const { tree, seq } = await new RemoteMeta(store, keys.metaKey).load(header.chunkSize);
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
      const meta = await MetaStore.load(path.join(opts.cacheDir, 'meta'));
      if (!meta) throw new UserError(`no local metadata in ${opts.cacheDir}; link the filespace first`, 'NOT_LINKED');
      if (meta.chunkSize !== opts.header.chunkSize) throw new UserError('local cache belongs to another filespace', 'MISMATCH');
      checkCapFitsChunks(opts.settings.cacheCapBytes, meta.chunkSize);
      const handles = new HandlePool(256);
      const sealed = new SealedIO(opts.keys.cacheKey);
      const dirty = new DirtyStore(opts.cacheDir, handles, sealed, opts.log);
      const cs = meta.chunkSize;
      await dirty.init((ino, idx) => {
        const inode = meta.tree.get(ino);
        if (!inode || inode.kind !== 'file') return undefined;
        return Math.min(cs, inode.size - idx * cs);
      }, Date.now(), { uncleanStop });
      const cache = new ChunkCache(opts.cacheDir, {
        capBytes: opts.settings.cacheCapBytes,
        highWatermark: opts.settings.cacheHighWatermark,
        lowWatermark: opts.settings.cacheLowWatermark,
      }, handles, () => dirty.totalBytes, sealed);
      await cache.init();
      cache.onDamaged = (name, why) => opts.log?.(`cached chunk ${name} was damaged (${why}); fetching it again`);
      const machine = await machineOf(opts.cacheDir);
      const engine = new Engine(opts, meta, dirty, cache, handles, lockFile, machine);
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

  private scheduleRenewal(): void {
    if (this.closed) return;
    if (this.leaseTimer) clearTimeout(this.leaseTimer);
    this.leaseTimer = setTimeout(() => void this.renewLease(), Math.max(200, Math.floor(this.settings.leaseTtlMs / 3)));
    this.leaseTimer.unref();
  }

  private async renewLease(): Promise<void> {
    this.leaseTimer = undefined;
    if (this.closed || this.replicator.conflict) return;
    try {
      await this.lease.renew();
      this.noteStoreOutcome(undefined);
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
    this.vfs.dirtyFreed.notify();
  }

  /** Tracks whether the bucket answers: offline after a network failure, online after any success. */
  private noteStoreOutcome(err: unknown | undefined): void {
    if (err === undefined) {
      this.offlineSince = undefined;
    } else if (err instanceof StoreError && (err.code === 'Unreachable' || err.code === 'Timeout')) {
      this.offlineSince ??= Date.now();
    }
  }

  private noteUploadError(err: unknown, d: DirtyChunk): void {
    const msg = err instanceof Error ? err.message : String(err);
    this.noteStoreOutcome(err);
    this.lastError = `upload of ${d.ino}.${d.idx} failed (attempt ${d.attempts}): ${msg}`;
    this.log(this.lastError);
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
      offline: this.offlineSince !== undefined,
      uploadsPaused: this.uploadsPaused,
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
        lost,
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
      lost: null,
      conditionalWrites,
    };
  }

  /**
   * Uploads every local change (data and metadata) now. Resolves true once the bucket has
   * everything, false if `deadlineMs` passed first.
   */
  async sync(deadlineMs: number): Promise<boolean> {
    for (;;) {
      this.vfs.commitAllSizes();
      const dataDone = await this.writeback.drain(deadlineMs);
      if (!dataDone) return false;
      this.vfs.commitAllSizes();
      await this.replicator.pushNow();
      if (this.replicator.conflict) return false;
      if (this.dirty.count === 0 && this.replicator.pendingOps === 0) return true;
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
