/**
 * Engine: the composition root of one filespace on one machine. It opens this machine's local
 * stores, wires the parts together, and serves its hosts (the CLI daemon, Electron main), which
 * mount `engine.vfs`. It holds no part's state: only the wiring, the user's toggles (settings,
 * paused uploads), the timers that drive the parts, and the lifetime (start, sync, close).
 *
 * Where each capability lives (each module's header says what it owns):
 *   vfs/vfs.ts           filesystem operations, open files, live sizes, files deleted while open
 *   vfs/backpressure.ts  how a writer waits while dirty data fills the cache (DESIGN invariant 3)
 *   cache/dirty.ts       dirty chunks (invariant 1), the per-chunk lock, and the lock order
 *   cache/chunkCache.ts  clean chunks and the cache cap; cache/cacheDisk.ts the disk under them
 *   upload/writeback.ts  when each dirty chunk uploads; upload/uploader.ts the upload itself,
 *                        from a dirty chunk to a committed chunk (invariant 2), its buffers;
 *                        upload/encoder.ts its per-byte work (in-thread, or worker threads)
 *   meta/metastore.ts    the tree and its journal; meta/replicator.ts pushes it to the bucket;
 *                        meta/pageLoader.ts loads a fresh machine's folders as they are used
 *   meta/role.ts         writer, follower or fenced: the lease, following, fencing (invariant 4)
 *   prefetch/fetcher.ts  downloads, merged and read ahead
 *   store/monitored.ts   every request, and the one judge of "offline" (with since when)
 *   pins.ts              what is pinned for use offline, kept cached and downloaded behind reads
 *   gc.ts, aside.ts, repair.ts, status.ts: garbage collection, changes set aside, repair of
 *                        damaged local metadata (refused at open, nothing changed), status
 *   meta/snapshots.ts    snapshots in the bucket, their schedule, and the chunks they keep
 *                        from garbage collection; vfs/snapshotFs.ts serves one read-only
 *
 * Wiring that spans parts, and why it is here:
 *  - Reachability: while the bucket does not answer, uploads wait instead of failing one by
 *    one; when it answers again every backoff (uploads, metadata pushes, the lease) is
 *    forgotten and the backlog drains at once.
 *  - A full cache: writers wait (vfs/backpressure.ts), and the engine tells them whether uploads
 *    can free room (`drainBlocked`): not while uploads are paused, the bucket does not answer,
 *    or every upload fails. Waiting writers put the write-back queue under pressure.
 *  - Fenced: the mount turns read-only, waiting writers fail at once, `sync` stops waiting.
 *  - The cache disk: the cache keeps within what the disk has room for as well as within its
 *    cap, sampled every second; when the journal finds the disk full, clean chunks are evicted,
 *    then the space held back for metadata is given up, so metadata can still be saved (and
 *    uploads commit, and so free their dirty copies).
 *
 * The cache folder (its lock, this machine's identity, its layout): cacheFolder.ts.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HandlePool } from './cache/handles';
import { CacheDisk } from './cache/cacheDisk';
import { ChunkCache } from './cache/chunkCache';
import { DirtyStore } from './cache/dirty';
import { Keys } from './chunk/crypto';
import { EngineSettings, resolveSettings, settingsForChunkSize } from './config';
import {
  FORMAT_COMPACTED,
  FORMAT_LINKS,
  FORMAT_PACKS,
  FORMAT_PAGES,
  FORMAT_SEGMENTS,
  FORMAT_SNAPSHOT_PAGES,
  FilespaceHeader,
  HEADER_KEY,
  raiseHeaderFormat,
  sealHeaderWhenBound,
} from './filespace';
import { MetaStore } from './meta/metastore';
import { FILL_START_DELAY_MS } from './meta/pageLoader';
import type { Tree, TreeSnapshot } from './meta/tree';
import { RemoteMeta } from './meta/remote';
import { Machine } from './meta/lease';
import { MachineRole } from './meta/role';
import { AsideSets } from './aside';
import { ChunkCollector, GcResult } from './gc';
import { Repacker } from './upload/repack';
import { packOf } from './chunk/packs';
import { PACK_AHEAD } from './upload/packer';
import {
  AutoKind,
  SnapshotKind,
  SnapshotRecord,
  BROWSE_DIR,
  LISTING_LEFT_MS,
  LISTING_PREFIX,
  ListedSnapshot,
  SNAPSHOT_REFS_FILE,
  SnapshotRefs,
  SnapshotSchedule,
  SnapshotStore,
  checkLabel,
  listSnapshotsWith,
  newSnapshotId,
  schedulePlan,
} from './meta/snapshots';
import { SnapshotFs } from './vfs/snapshotFs';
import { Replicator } from './meta/replicator';
import { Manifest, PageWriter, pageHashKey } from './meta/pages';
import { Compactor } from './meta/compaction';
import { ChunkFetcher } from './prefetch/fetcher';
import { MonitoredStore } from './store/monitored';
import { ObjectStore } from './store/types';
import { DEFAULT_ENCODE_WORKERS } from './upload/encoder';
import { Uploader, publishableOps } from './upload/uploader';
import { WritebackQueue } from './upload/writeback';
import { StallCause } from './vfs/backpressure';
import { Vfs } from './vfs/vfs';
import { UserError } from './errors';
import { checkCapFitsChunks, lockCacheDir, machineOf, openLocalStores } from './cacheFolder';
import { settledWithin } from './util/concurrency';
import { EngineStats, PendingFiles, Throughput, describeWritesWaiting } from './status';
import { PinKeeper, PinProgress, PinRecord, pinnedChunks } from './pins';

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
  /** Threads that do the per-byte work of uploads (upload/encoder.ts); default none (the engine thread). */
  readonly encodeWorkers?: number;
  /** What this machine keeps cached for use offline (pins.ts); kept by the host. */
  readonly pins?: readonly PinRecord[];
  /** The pins changed (added, removed, renamed, or dropped with what they named): the host keeps them. */
  readonly onPinsChanged?: (pins: readonly PinRecord[]) => void;
  /** How long a browsed snapshot's tree is kept after its last browser left; default BROWSE_KEEP_MS. */
  readonly browseKeepMs?: number;
}

/**
 * A snapshot's tree written into a database for browsing (SnapshotStore.openTree), shared by
 * every browser of that snapshot, and kept a while after the last one left: a snapshot never
 * changes, and writing a big tree out takes seconds.
 */
interface BrowseTree {
  readonly opened: Promise<{ readonly tree: Tree; readonly close: () => Promise<void> }>;
  users: number;
  idle?: NodeJS.Timeout;
}

export type { LeaseStatus } from './meta/role';
export type { EngineStats, WritesWaitingStatus } from './status';

export class Engine {
  readonly vfs: Vfs;
  private readonly writeback: WritebackQueue;
  private readonly uploader: Uploader;
  private readonly replicator: Replicator;
  private readonly compactor: Compactor;
  private readonly role: MachineRole;
  private readonly fetcher: ChunkFetcher;
  private readonly remote: RemoteMeta;
  private readonly gc: ChunkCollector;
  private readonly repacker: Repacker;
  private readonly snapshots: SnapshotStore;
  private readonly snapshotRefs: SnapshotRefs;
  /**
   * Snapshot mounts served beside this mount (their open files' chunks stay in the cache), each
   * with the id of its snapshot; their trees are in `browseTrees`.
   */
  private readonly browsing = new Map<SnapshotFs, string>();
  private readonly browseTrees = new Map<string, BrowseTree>();
  /** Applying the snapshot schedule, while under way (one at a time). */
  private applyingSchedule: Promise<void> | undefined;
  /** When snapshot trees without a record were last looked for (ORPHAN_SWEEP_MS). */
  private orphansSweptMs = -Infinity;
  private readonly disk: CacheDisk;
  private readonly log: (msg: string) => void;
  private settings: EngineSettings;
  /** `settings` as they apply to this filespace's chunk size (config.ts `settingsForChunkSize`): what the data path uses. */
  private applied: EngineSettings;
  private uploadsPaused = false;
  private readonly aside: AsideSets;
  private readonly pinKeeper: PinKeeper;
  private readonly throughput = new Throughput();
  private readonly pending = new PendingFiles();
  private readonly timers: NodeJS.Timeout[] = [];
  private closed = false;
  /** Resolves (to false) once this mount stops writing for good; `sync` waits no longer then. */
  private readonly writingStopped: Promise<false>;
  private stopWriting: () => void = () => undefined;
  /** The bucket's header as this machine last read or wrote it (its format rises with the first link). */
  private header: FilespaceHeader;
  /** Raising the header's format for the first link, while under way (one at a time). */
  private raisingFormat: Promise<void> | undefined;

  private constructor(
    private readonly opts: EngineOptions,
    private readonly meta: MetaStore,
    private readonly dirty: DirtyStore,
    private readonly cache: ChunkCache,
    private readonly handles: HandlePool,
    private readonly lockFile: string,
    machine: Machine,
    /** The same object as opts.store: every request goes through it. */
    private readonly store: MonitoredStore,
  ) {
    this.settings = opts.settings;
    this.applied = settingsForChunkSize(opts.settings, meta.chunkSize);
    this.header = opts.header;
    this.log = opts.log ?? (() => undefined);
    this.aside = new AsideSets(opts.cacheDir, opts.keys.cacheKey, this.log);
    this.remote = new RemoteMeta(store, opts.keys.metaKey, opts.header);
    this.snapshots = new SnapshotStore(store, opts.keys.metaKey, meta.chunkSize, opts.header);
    this.snapshotRefs = new SnapshotRefs(this.snapshots, path.join(opts.cacheDir, SNAPSHOT_REFS_FILE));
    // Also what files deleted while open here still read (they may outlive the grace period),
    // and every chunk a live snapshot names (meta/snapshots.ts says why none is ever deleted).
    this.gc = new ChunkCollector(
      store,
      opts.keys.metaKey,
      () => {
        const live = this.vfs.referencedChunks();
        return { has: (name: string) => live.has(name) || this.snapshotRefs.has(name) };
      },
      () => this.settings.gcGraceMs,
      Date.now,
      () => this.referencedPacks(),
    );
    this.fetcher = new ChunkFetcher(
      store,
      cache,
      opts.keys.chunkKey,
      this.applied.downloadConcurrency,
      () => this.settings.readTimeoutMs,
      this.log,
      store,
      meta.chunkSize,
    );
    this.disk = new CacheDisk(opts.cacheDir, {
      reserveBytes: JOURNAL_RESERVE_BYTES,
      headroomBytes: DISK_HEADROOM_BYTES + 2 * meta.chunkSize,
      log: this.log,
    });
    // While the cache disk is full, its state line says why metadata cannot be saved; the
    // replicator's retries would repeat it at every attempt.
    const replicatorLog = (msg: string) => {
      if (!(this.disk.full && /no space left|disk is full/i.test(msg))) this.log(msg);
    };
    this.replicator = new Replicator(
      meta,
      this.remote,
      () => this.settings.metaPushDelayMs,
      replicatorLog,
      () => this.role.segmentWriter(),
      () => this.role.beforePush(),
      () => publishableOps(meta, this.vfs.unsent),
      () => this.role.confirmPushed(),
      {
        writer: new PageWriter(pageHashKey(opts.keys.metaKey)),
        identity: { id: opts.header.id, chunkSize: opts.header.chunkSize },
        before: () => this.raiseFormat(FORMAT_PAGES, 'its metadata checkpoints are now paged'),
      },
    );
    this.role = new MachineRole({
      mode: opts.mode ?? 'write',
      takeover: opts.takeover ?? false,
      conditionalWrites: opts.conditionalWrites ?? true,
      store,
      metaKey: opts.keys.metaKey,
      machine,
      meta,
      remote: this.remote,
      replicator: this.replicator,
      settings: () => this.settings,
      hasDirtyData: () => dirty.count > 0 || this.vfs.hasBufferedData,
      setAside: async (reason) => {
        // Writes acknowledged from memory are set aside too: into the dirty store first.
        await this.vfs.flushAll();
        await this.aside.keepUnsent(
          {
            tree: meta.tree,
            pending: meta.pendingRemote,
            chunkSize: meta.chunkSize,
            dirty,
            cache,
            fetcher: this.fetcher,
            sizeOf: (inode) => this.vfs.sizeOf(inode),
          },
          reason,
        );
      },
      sealHeader: () => sealHeaderWhenBound(opts.store, this.header, opts.keys, this.remote, this.log),
      log: this.log,
    });
    this.compactor = new Compactor({
      store,
      remote: this.remote,
      writer: () => (this.role.canCommit() ? this.role.segmentWriter() : undefined),
      beforeWrite: () => this.role.beforePush(),
      confirm: () => this.role.confirmPushed(),
      checkpointIfBehind: async () => {
        if (this.replicator.behindCheckpoint) await this.replicator.checkpointNow();
      },
      flushLocal: () => meta.flush(),
      snapshotPages: () => this.snapshots.namedPages(),
      beforeFirstMark: () => this.raiseFormat(FORMAT_COMPACTED, 'its metadata log may now be compacted'),
      // At least twice the longest lease TTL in play: compaction.ts says why.
      graceMs: () => Math.max(this.settings.metaCompactGraceMs, 2 * this.role.longestTtlMs),
      log: this.log,
    });
    this.vfs = new Vfs(meta, dirty, cache, this.fetcher, {
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      prefetchMaxChunks: () => this.applied.prefetchMaxChunks,
      readOnly: () => this.role.readOnlyReason(),
      snapshotReads: () => this.role.mode === 'read',
      drainBlocked: () => this.drainBlocked(),
      writeStallTimeoutMs: () => this.settings.writeStallTimeoutMs,
      writeBufferBytes: this.settings.writeBufferBytes,
      writeBufferFlushMs: this.settings.writeBufferFlushMs,
      log: this.log,
      beforeFirstLink: () => this.allowLinks(),
    });
    this.uploader = new Uploader({
      dirty,
      meta,
      cache,
      store,
      keys: opts.keys,
      names: this.gc,
      files: this.vfs,
      freed: () => this.vfs.noteDirtyFreed(),
      limitBytesPerSec: opts.settings.uploadLimitBytesPerSec,
      uploadConcurrency: () => this.applied.uploadConcurrency,
      encodeWorkers: opts.encodeWorkers ?? DEFAULT_ENCODE_WORKERS,
      beforeSegmentedPut: () => this.raiseFormat(FORMAT_SEGMENTS, 'its chunks may now be sealed in segments'),
      beforePackPut: () => this.raiseFormat(FORMAT_PACKS, 'its small chunks may now be stored in packs'),
      // A chunk waiting in a pack for the pack's PUT leaves its place to the next upload.
      packed: () => setImmediate(() => this.writeback.pump()),
      log: this.log,
    });
    this.repacker = new Repacker({
      store,
      tree: () => this.meta.tree,
      otherRefs: () => this.vfs.unlinkedChunks(),
      snapshotPacks: () => this.snapshotRefs.packsNamed(),
      knownSize: (pack) => this.uploader.packSize(pack),
      enter: (name, obj) => this.uploader.enterPack(name, obj),
      commit: (op) => this.meta.commit(op),
      sync: () => this.meta.sync(),
      rekey: (from, to) => this.cache.rekey(from, to),
      stopping: () => this.closed,
      log: this.log,
    });
    this.writeback = new WritebackQueue({
      dirty,
      chunkSize: meta.chunkSize,
      policy: () => this.applied,
      isOpenForWrite: (ino) => this.vfs.isOpenForWrite(ino),
      isUnlinked: (ino) => this.vfs.isUnlinked(ino),
      upload: (d) => this.uploader.upload(d),
      // As many again as PUTs: the uploader holds their PUTs back (one body buffer each) and no
      // memory for one waiting, so they seal the next chunks and commit the last ones meanwhile.
      // Those waiting in a pack for its PUT hold no place either (up to PACK_AHEAD of them), so
      // a tree of small files fills packs instead of sending one per place.
      uploadsAhead: () => this.applied.uploadConcurrency + Math.min(this.uploader.packWaiting, PACK_AHEAD),
      // Offline, uploads wait for the bucket instead of failing one by one.
      paused: () => this.uploadsPaused || this.replicator.conflict !== undefined || this.role.mode === 'read' || store.offline,
      onError: (err, d, attempts) => this.uploader.failed(err, d, attempts),
      onSuccess: () => {
        this.uploader.succeeded();
        if (!cache.wouldExceedCap(meta.chunkSize)) this.writeback.setPressure(false);
      },
      lastWriteMs: () => this.vfs.lastWriteMs,
      lastRequestMs: () => this.vfs.lastRequestMs(),
      dirtyShare: () => (cache.usedBytes - cache.cleanUsedBytes) / Math.max(1, cache.effectiveCapBytes),
    });
    this.pinKeeper = new PinKeeper({
      tree: () => meta.tree,
      cache,
      fetcher: this.fetcher,
      concurrency: () => this.applied.downloadConcurrency,
      offline: () => store.offline,
      pins: opts.pins ?? [],
      onPinsChanged: (pins) => opts.onPinsChanged?.(pins),
      log: this.log,
    });
    meta.onApplied = (ops, relinked) => {
      this.vfs.treeChanged(ops, relinked);
      this.pinKeeper.noteOps(ops);
    };
    meta.onLoaded = (_dirs, names) => {
      if (names.length > 0) this.vfs.xattrNamesAdded(names);
    };
    this.writingStopped = new Promise<false>((resolve) => (this.stopWriting = () => resolve(false)));
    this.replicator.onConflict = () => {
      this.writeback.setPressure(false);
      this.stopWriting();
      this.vfs.drainChanged(); // read-only now: waiting writers fail at once
    };
    this.vfs.onPressure = () => this.writeback.setPressure(true);
    this.vfs.alsoReading = (name) => [...this.browsing.keys()].some((s) => s.reading(name));
    this.vfs.onWriterClosed = (ino) => this.writeback.pumpFor(ino);
    store.onChange = (online) => {
      if (online) {
        // The bucket is back: everything waiting on a backoff timer goes now.
        this.writeback.retryNow();
        this.replicator.retryNow();
        this.role.retryNow();
        this.pinKeeper.retryNow();
      }
      this.vfs.drainChanged();
    };
    meta.onChange = () => this.replicator.schedule();
    meta.onDiskFull = (err) => this.freeDiskSpace(err);
    this.every(1000, () => this.throughput.sample(this.uploader.uploadedBytes, this.fetcher.stats.downloadedBytes));
    this.every(1000, () => this.vfs.commitAllSizes());
    this.every(1000, () => void this.sampleDisk());
    this.every(
      1000,
      () => void this.vfs.freeUnreferencedCache().catch((err) => this.log(`freeing cache space: ${(err as Error).message}`)),
    );
  }

  /**
   * Before a link is committed: the bucket's header must say the metadata may hold links
   * (filespace.ts), so a version that knows none refuses the filespace instead of misreading it.
   */
  private allowLinks(): Promise<void> {
    return this.raiseFormat(FORMAT_LINKS, 'this filespace now holds hard links');
  }

  /**
   * The packs some reference names a member of: the live tree's (and files deleted while open),
   * and every live snapshot's (all of them, while those are not counted). The tree's names are
   * walked a batch at a time, yielding between batches so requests are answered meanwhile.
   */
  private async referencedPacks(): Promise<{ has(pack: string): boolean }> {
    const kept = this.snapshotRefs.packsNamed();
    if (!kept) return { has: () => true };
    const live = new Set<string>();
    let n = 0;
    for (const name of this.vfs.referencedChunks().keys()) {
      const pack = packOf(name);
      if (pack) live.add(pack);
      if (++n % 20_000 === 0) await new Promise((r) => setImmediate(r));
    }
    return { has: (pack: string) => live.has(pack) || kept.has(pack) };
  }

  /** Raises the bucket's header to at least `format` (filespace.ts), once; `why` goes to the log. */
  private async raiseFormat(format: number, why: string): Promise<void> {
    while (this.header.format < format) {
      this.raisingFormat ??= (async () => {
        try {
          this.header = await raiseHeaderFormat(this.store, this.header, this.opts.keys, format);
          this.log(`filespace.json raised to format ${this.header.format}: ${why}`);
        } finally {
          this.raisingFormat = undefined;
        }
      })();
      await this.raisingFormat;
    }
  }

  private every(ms: number, fn: () => void): void {
    const t = setInterval(fn, ms);
    t.unref();
    this.timers.push(t);
  }

  static async open(opts: EngineOptions): Promise<Engine> {
    // Created at link time, never here: a missing cache folder is not made up (it could be a
    // mount point that is not mounted, or on a disk that is not there).
    const st = await fsp.stat(opts.cacheDir).catch(() => undefined);
    if (!st?.isDirectory())
      throw new UserError(
        `the cache folder ${opts.cacheDir} is missing; link the filespace again (or restore the folder)`,
        'NOT_LINKED',
      );
    const { file: lockFile, uncleanStop } = await lockCacheDir(opts.cacheDir);
    try {
      // Trees of snapshots an earlier run browsed (they are written anew for each browse), and
      // what a listing that was stopped left (one under way is younger).
      await fsp.rm(path.join(opts.cacheDir, BROWSE_DIR), { recursive: true, force: true });
      for (const name of await fsp.readdir(opts.cacheDir)) {
        if (!name.startsWith(LISTING_PREFIX)) continue;
        const at = path.join(opts.cacheDir, name);
        const st = await fsp.stat(at).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > LISTING_LEFT_MS) await fsp.rm(at, { recursive: true, force: true });
      }
      const pins = opts.pins ?? [];
      const { meta, dirty, cache, handles } = await openLocalStores(
        { ...opts, pinned: (tree) => new Set(pinnedChunks(tree, pins).keys()) },
        uncleanStop,
      );
      const machine = await machineOf(opts.cacheDir);
      let settings = () => opts.settings;
      const store = new MonitoredStore(opts.store, {
        probeKey: HEADER_KEY,
        probeTimeoutMs: () => settings().probeTimeoutMs,
        log: opts.log,
      });
      store.warm(); // the first read of the mount finds a connection open
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

  private async start(): Promise<void> {
    await this.disk.init();
    await this.sampleDisk();
    await this.aside.load();
    if (this.dirty.orphans.length > 0) await this.aside.keepOrphans(this.meta.chunkSize, this.dirty, this.opts.name);
    await this.role.start();
    this.writeback.start();
    this.replicator.schedule(0);
    // With the store's warm-up (Engine.open): a mount's first read runs warm code.
    this.fetcher.warm();
    if (this.meta.unloadedDirs > 0) {
      // A fresh machine (meta/pageLoader.ts): folders load as requests name them, the rest in
      // the background; what needs the whole tree waits for them (`whenFilled`).
      const pages = this.meta.pages(this.remote);
      this.vfs.pages = pages;
      this.log(`${pages.waiting} folder(s) load from the bucket as they are used, and meanwhile in the background`);
      pages.startFill(this.log, () => this.fetcher.readerActivity, { startDelayMs: FILL_START_DELAY_MS });
      void pages.whenFilled().then(
        () => {
          this.log('every folder is loaded from the bucket');
          if (!this.closed) this.pinKeeper.start();
        },
        () => undefined,
      );
    } else this.pinKeeper.start();
    this.vfs.warm(); // and its first lookup
    if (this.role.mode === 'write' && this.settings.gcIntervalMs > 0) {
      this.every(this.settings.gcIntervalMs, () => {
        if (this.role.canCommit())
          this.collectGarbage().catch((err) => this.log(`garbage collection failed: ${(err as Error).message}`));
      });
    }
    if (this.role.mode === 'write' && this.settings.metaCompactIntervalMs > 0) {
      this.every(this.settings.metaCompactIntervalMs, () => {
        // Not while folders load: the checkpoint they come from must stay (and none is written meanwhile).
        if (this.role.canCommit() && this.meta.unloadedDirs === 0)
          this.compactor.tick().catch((err) => this.log(`metadata log compaction failed: ${(err as Error).message}`));
      });
    }
    if (this.role.mode === 'write' && SCHEDULE_TICK_MS > 0) {
      this.every(SCHEDULE_TICK_MS, () => {
        if (this.role.canCommit())
          void this.applySnapshotSchedule().catch((err) => this.log(`snapshot schedule: ${(err as Error).message}`));
      });
    }
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

  /** Chunks in the bucket that nothing references, deleted after the grace period (writer only). */
  async collectGarbage(): Promise<GcResult> {
    if (!this.role.holdsLease)
      throw new UserError('garbage collection runs only on the machine that writes the filespace', 'NOT_WRITER');
    if (this.replicator.conflict) throw new UserError(this.replicator.conflict, 'READ_ONLY');
    await this.role.ensureValid();
    await this.snapshotRefs.ready();
    // Chunks named only by folders not loaded yet are referenced all the same.
    await this.whenFilled();
    const res = await this.gc.run();
    this.log(
      `garbage collection: ${res.scanned} chunk objects and packs, ${res.deleted} deleted, ${res.marked} waiting out the grace period`,
    );
    // Then the packs that are mostly garbage: their live members move, and they go at a later pass.
    // A failure there is not the pass's: what it moved stays moved, the rest waits for the next.
    const re = await this.repacker.run().catch((err: unknown) => {
      this.log(`repacking failed: ${(err as Error).message}`);
      return undefined;
    });
    if (re && re.packs > 0)
      this.log(
        `repacked ${re.packs} packs mostly of deleted files: ${re.moved} references moved (${re.bytesMoved} bytes), ` +
          `${re.bytesFreed} bytes to be given back once the grace period is over`,
      );
    return { ...res, repacked: re?.packs ?? 0 };
  }

  /** Refuses a change to snapshots unless this machine writes the filespace now. */
  private async assertWriter(what: string): Promise<void> {
    if (!this.role.holdsLease) {
      const why = this.role.readOnlyReason() ?? 'this machine does not hold the write lease';
      throw new UserError(`${what} is done by the machine that writes the filespace (${why}); run it there`, 'NOT_WRITER');
    }
    if (this.replicator.conflict) throw new UserError(this.replicator.conflict, 'READ_ONLY');
    await this.role.ensureValid();
  }

  /**
   * Takes a snapshot of the committed tree: uploads everything first, then keeps the tree at
   * the sequence number the bucket has, once nothing is left to push (writes that keep arriving
   * meanwhile make it sync again, until `deadlineMs`). The tree kept is a paged checkpoint of
   * that segment (written now unless the bucket has one): its manifest is copied, its pages are
   * shared, so a snapshot costs what a checkpoint costs, not the tree. Where checkpoints are not
   * paged, the whole tree is written, as before format 6.
   */
  async createSnapshot(
    label: string,
    kind: SnapshotKind = 'manual',
    deadlineMs = Date.now() + 10 * 60_000,
    at?: number,
  ): Promise<SnapshotRecord> {
    const clean = checkLabel(label);
    await this.assertWriter('taking a snapshot');
    await this.whenFilled();
    await this.snapshotRefs.ready().catch(() => undefined); // GC refuses until it is; a snapshot need not wait
    // From before the tree is fixed until its chunk names are counted, GC deletes nothing
    // (SnapshotRefs.has answers yes): each chunk the snapshot names is named by the live tree
    // at its segment, so there is no instant at which it is named by neither.
    const release = this.snapshotRefs.hold();
    try {
      let kept: { readonly manifest: Manifest } | { readonly tree: TreeSnapshot } | undefined;
      let seq = 0;
      while (!kept) {
        if (Date.now() > deadlineMs || !(await this.sync(deadlineMs))) {
          throw new UserError(
            this.notWriting ?? 'the snapshot was not taken: local changes did not all reach the bucket in time; try again',
            this.notWriting ? 'READ_ONLY' : 'BUSY',
          );
        }
        if (this.replicator.pendingOps > 0 || this.meta.pendingRemote.length > 0) continue;
        const manifest = await this.replicator.manifestNow();
        if (manifest === 'moved') continue;
        if (manifest) {
          seq = manifest.seq;
          kept = { manifest };
        } else if (this.replicator.pendingOps === 0 && this.meta.pendingRemote.length === 0) {
          // No paged checkpoint here: a copy of the tree, of one instant (nothing awaits).
          seq = this.meta.remoteSeq;
          kept = { tree: this.meta.tree.snapshot() };
        }
      }
      if ('manifest' in kept) await this.raiseFormat(FORMAT_SNAPSHOT_PAGES, 'its snapshots now share the pages of checkpoints');
      const now = at ?? Date.now();
      const id = newSnapshotId(now);
      await this.snapshots.writeTree(id, seq, kept);
      kept = undefined;
      // Counted before the record is written and kept if that fails: a PUT that got no answer
      // may have written the record all the same, and GC must never free what a snapshot in the
      // bucket names. A snapshot that really was not written keeps its chunks only until the
      // engine restarts (SnapshotRefs then counts what the bucket holds).
      const totals = await this.snapshotRefs.add(id);
      const record: SnapshotRecord = { id, createdAt: now, label: clean, kind, seq, ...totals };
      await this.snapshots.writeRecord(record);
      this.log(`took snapshot ${record.id} (${kind}${clean ? `, "${clean}"` : ''}) at metadata segment ${record.seq}`);
      return record;
    } finally {
      release();
    }
  }

  /** Deletes a snapshot; the chunks only it kept are garbage from now on (freed after the grace period). */
  async deleteSnapshot(id: string): Promise<void> {
    await this.assertWriter('deleting a snapshot');
    await this.snapshots.delete(id);
    if (this.browseTrees.get(id)?.users === 0) await this.dropBrowseTree(id);
    await this.snapshotRefs.remove(id);
    this.log(`deleted snapshot ${id}`);
  }

  /**
   * Every snapshot with its size-unique (against the live tree as this machine has it), the
   * damaged ones by id, and the schedule; on any machine that mounts the filespace.
   */
  async listSnapshots(): Promise<{ snapshots: ListedSnapshot[]; damaged: string[]; schedule: SnapshotSchedule }> {
    const listed = await listSnapshotsWith(this.snapshots, this.snapshotRefs, this.vfs.referencedChunks());
    return { ...listed, schedule: await this.snapshots.readSchedule() };
  }

  async setSnapshotSchedule(s: SnapshotSchedule): Promise<void> {
    await this.assertWriter('setting the snapshot schedule');
    await this.snapshots.writeSchedule(s);
    this.log(`snapshot schedule: hourly kept ${s.hourly}, daily kept ${s.daily}`);
  }

  /**
   * Takes the automatic snapshots that are due and deletes those past what the schedule keeps
   * (never a manual one). `now` is for tests.
   */
  applySnapshotSchedule(now = Date.now()): Promise<void> {
    this.applyingSchedule ??= (async () => {
      try {
        // A failed sweep is tried again at the next tick; it holds up no scheduled snapshot.
        await this.dropOrphanSnapshotTrees(now).catch((err: unknown) =>
          this.log(`looking for snapshot trees without a record: ${(err as Error).message}`),
        );
        const schedule = await this.snapshots.readSchedule();
        if (schedule.hourly === 0 && schedule.daily === 0) return;
        const { records } = await this.snapshots.list();
        const plan = schedulePlan(records, schedule, now, SCHEDULE_TICK_MS);
        for (const kind of plan.due) await this.createSnapshot(AUTO_LABEL[kind], kind, Date.now() + 10 * 60_000, now);
        for (const r of plan.expired) await this.deleteSnapshot(r.id);
      } finally {
        this.applyingSchedule = undefined;
      }
    })();
    return this.applyingSchedule;
  }

  /**
   * Deletes the snapshot trees that have no record and are past their grace (meta/snapshots.ts),
   * at most once per ORPHAN_SWEEP_MS: their pages are then left to compaction.
   */
  private async dropOrphanSnapshotTrees(now: number): Promise<void> {
    if (now - this.orphansSweptMs < ORPHAN_SWEEP_MS) return;
    await this.assertWriter('deleting a snapshot tree');
    for (const id of await this.snapshots.orphanTrees(now)) {
      await this.snapshots.deleteTree(id);
      this.log(`deleted the tree of snapshot ${id}, which has no record (a creation or deletion that stopped half-way)`);
    }
    this.orphansSweptMs = now;
  }

  /**
   * A read-only filesystem over snapshot `id`, reading through this machine's cache and
   * downloads; `releaseSnapshotFs` once it is no longer served. The snapshot's tree is written
   * out once and shared (BrowseTree); one kept from an earlier browse is used only while the
   * snapshot's record is still in the bucket (another machine may have deleted it).
   */
  async snapshotFs(id: string): Promise<SnapshotFs> {
    let bt = this.browseTrees.get(id);
    if (bt && bt.users === 0) {
      // Throws (one line, naming the id) when the snapshot is gone.
      await this.snapshots.get(id).catch((err: unknown) => {
        void this.dropBrowseTree(id);
        throw err;
      });
      bt = this.browseTrees.get(id);
    }
    if (!bt) {
      const dir = path.join(this.opts.cacheDir, BROWSE_DIR, `${id}-${randomBytes(4).toString('hex')}`);
      const made: BrowseTree = { opened: this.snapshots.openTree(id, dir), users: 0 };
      made.opened.catch(() => {
        if (this.browseTrees.get(id) === made) this.browseTrees.delete(id);
      });
      this.browseTrees.set(id, (bt = made));
    }
    clearTimeout(bt.idle);
    bt.idle = undefined;
    bt.users++;
    try {
      const { tree } = await bt.opened;
      const fs = new SnapshotFs(tree, this.cache, this.fetcher);
      this.browsing.set(fs, id);
      return fs;
    } catch (err) {
      bt.users--;
      throw err;
    }
  }

  /**
   * Stops serving `fs`. When it was the last browser of its snapshot, the tree is kept for
   * `browseKeepMs`, and the tree of any other snapshot nobody browses goes at once: at most one
   * tree is kept idle. A tree's database goes in the background (a failure only leaves files the
   * next start removes).
   */
  releaseSnapshotFs(fs: SnapshotFs): void {
    const id = this.browsing.get(fs);
    this.browsing.delete(fs);
    const bt = id === undefined ? undefined : this.browseTrees.get(id);
    if (!bt || --bt.users > 0) return;
    for (const [other, o] of this.browseTrees) if (other !== id && o.users === 0) void this.dropBrowseTree(other);
    bt.idle = setTimeout(() => void this.dropBrowseTree(id!), this.opts.browseKeepMs ?? BROWSE_KEEP_MS);
    bt.idle.unref();
  }

  /** Closes and removes the browsed tree of snapshot `id` (nobody browses it); never rejects. */
  private dropBrowseTree(id: string): Promise<void> {
    const bt = this.browseTrees.get(id);
    if (!bt) return Promise.resolve();
    this.browseTrees.delete(id);
    clearTimeout(bt.idle);
    return bt.opened
      .then((o) => o.close())
      .catch((err: unknown) => this.log(`closing a snapshot's tree: ${(err as Error).message}`));
  }

  get chunkSize(): number {
    return this.meta.chunkSize;
  }

  get currentSettings(): EngineSettings {
    return this.settings;
  }

  /** The settings as the data path applies them to this filespace's chunk size (config.ts `settingsForChunkSize`). */
  get appliedSettings(): EngineSettings {
    return this.applied;
  }

  /** Applies new per-machine settings live. */
  updateSettings(partial: Partial<EngineSettings>): EngineSettings {
    const next = resolveSettings({ ...this.settings, ...partial });
    checkCapFitsChunks(next.cacheCapBytes, this.meta.chunkSize);
    this.pinKeeper.checkCap(next.cacheCapBytes);
    this.settings = next;
    this.applied = settingsForChunkSize(next, this.meta.chunkSize);
    this.cache.setLimits({
      capBytes: next.cacheCapBytes,
      highWatermark: next.cacheHighWatermark,
      lowWatermark: next.cacheLowWatermark,
    });
    this.fetcher.setConcurrency(this.applied.downloadConcurrency);
    this.uploader.setLimit(next.uploadLimitBytesPerSec);
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
    if (this.uploader.failure) return 'failing';
    if (this.writeback.uploading === 0) return 'idle';
    return undefined;
  }

  /**
   * Files with data waiting for upload: dirty chunks, or writes still in the write buffer (a
   * file being written is waiting from its first acknowledged write, not from the buffer's flush).
   */
  private waitingInodes(): number[] {
    return [...this.dirty.inodes(), ...this.bufferedOnlyInodes()];
  }

  private waitingFileCount(): number {
    let n = this.dirty.fileCount;
    for (const _ of this.bufferedOnlyInodes()) n++;
    return n;
  }

  /** Files whose waiting data is all still in the write buffer. */
  private *bufferedOnlyInodes(): Iterable<number> {
    for (const ino of this.vfs.bufferedInodes()) if (!this.dirty.hasFile(ino)) yield ino;
  }

  stats(): EngineStats {
    return {
      dirtyBytes: this.dirty.dataBytes + this.vfs.bufferedBytes,
      dirtyFiles: this.waitingFileCount(),
      dirtyChunks: this.dirty.count,
      pendingMetaOps: this.replicator.pendingOps,
      uploadBytesPerSec: this.throughput.rate('up'),
      uploadLimitBytesPerSec: this.uploader.limitBytesPerSec,
      downloadBytesPerSec: this.throughput.rate('down'),
      uploadedBytes: this.uploader.uploadedBytes,
      downloadedBytes: this.fetcher.stats.downloadedBytes,
      cacheUsedBytes: this.cache.usedBytes,
      cacheCapBytes: this.cache.capBytes,
      cacheHitRatio: this.cache.hitRatio,
      readMemoryBytes: this.cache.memoryHeldBytes,
      cacheReadBytes: this.cache.servedBytes,
      openFiles: this.vfs.openFiles,
      offline: this.store.offline,
      offlineSince: this.store.offlineSince,
      uploadsPaused: this.uploadsPaused,
      writesWaiting: describeWritesWaiting(
        this.vfs.writesWaiting(),
        this.uploader.failure?.message,
        this.settings.writeStallTimeoutMs,
      ),
      readOnlyReason: this.role.readOnlyReason(),
      lastError:
        this.replicator.conflict ??
        this.role.followBlocked ??
        this.uploader.lastError ??
        this.replicator.lastError ??
        this.fetcher.stats.lastError ??
        (this.vfs.pages?.lastError ? `loading folders from the bucket: ${this.vfs.pages.lastError.message}` : undefined),
      pendingFiles: this.pending.paths(this.meta.tree, () => this.waitingInodes()),
      lease: this.role.status(),
      aside: this.aside.summary(),
      pins: this.pinKeeper.progress(),
      pinsProblem: this.pinKeeper.problem,
      foldersLoading: this.meta.unloadedDirs,
    };
  }

  /**
   * Pins filespace paths for use offline (pins.ts): refused as a whole, nothing changed, when a
   * path is bad or they do not fit in the cache cap. Resolves the pins added.
   */
  pin(paths: readonly string[]): PinRecord[] {
    return this.pinKeeper.add(paths, this.settings.cacheCapBytes);
  }

  /** Unpins filespace paths; refused as a whole when one is not pinned. */
  unpin(paths: readonly string[]): void {
    this.pinKeeper.remove(paths);
  }

  /** Each pin with how much of it is in the cache. */
  pins(): PinProgress[] {
    return this.pinKeeper.progress();
  }

  /**
   * Resolves once every folder is loaded from the bucket (at once but on a fresh machine's
   * first mount, see meta/pageLoader.ts): what walks the whole tree or resolves paths outside
   * the mount (pins, imports) waits for it.
   */
  whenFilled(): Promise<void> {
    return this.meta.whenFilled();
  }

  /** How many folders are still to load from the bucket (a fresh machine's first mount). */
  get foldersLoading(): number {
    return this.meta.unloadedDirs;
  }

  /** Discards one set of changes kept aside (see aside.ts); status stops listing it at once. */
  discardAside(id: string): Promise<void> {
    return this.aside.discard(id);
  }

  /**
   * Why this mount stopped writing for good, for people: the write lease was lost (and to whom),
   * or another machine wrote the filespace. Undefined while it writes (or on a follower).
   */
  get notWriting(): string | undefined {
    return this.role.notWriting;
  }

  /**
   * Uploads every local change (data and metadata) now. Resolves true once the bucket has
   * everything, false if `deadlineMs` passed first or this mount stopped writing for good
   * (see `notWriting`).
   */
  async sync(deadlineMs: number): Promise<boolean> {
    for (;;) {
      if (this.replicator.conflict) return false;
      // A failure (a full cache disk) leaves the data buffered: this round then ends unfinished.
      await this.vfs.flushAll().catch(() => undefined);
      this.vfs.commitAllSizes();
      const dataDone = await Promise.race([this.writeback.drain(deadlineMs), this.writingStopped]);
      if (!dataDone) return false;
      this.vfs.commitAllSizes();
      await this.replicator.pushNow();
      if (this.replicator.conflict) return false;
      if (this.writeback.pending === 0 && this.replicator.pendingOps === 0 && !this.vfs.hasBufferedData) return true;
      if (Date.now() >= deadlineMs) return false;
      await this.replicator.progress.wait(Math.min(500, Math.max(1, deadlineMs - Date.now())));
    }
  }

  /**
   * Writes a metadata checkpoint now, as unmount does, but without unmount's time bound (the
   * scale benchmark measures what one costs). Writes none when metadata is still to push or
   * this machine is not the writer.
   */
  checkpointNow(): Promise<void> {
    return this.replicator.checkpointNow();
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
    // Writes acknowledged from memory go to the dirty store before anything stops.
    this.vfs.stop();
    this.pinKeeper.stop();
    await this.vfs.flushAll().catch((err) => this.log(`closing: writing buffered data failed: ${(err as Error).message}`));
    // In-flight uploads commit nothing more; their chunks stay dirty and upload next time.
    this.uploader.stop();
    for (const t of this.timers) clearInterval(t);
    const w = CLOSE_WAITS_MS;
    await this.role.stop(w.follow);
    this.writeback.stop();
    await this.writeback.idle(w.uploads);
    await this.uploader.close();
    this.vfs.commitAllSizes();
    // Give metadata already committed a short chance to reach the bucket; it stays queued otherwise.
    await settledWithin(this.replicator.pushNow(), w.push);
    await this.replicator.stop();
    if (this.replicator.pendingOps === 0 && this.dirty.count === 0) {
      const checkpoint = this.replicator.checkpointNow().catch((err) => this.log(`checkpoint failed: ${(err as Error).message}`));
      if (!(await settledWithin(checkpoint, w.checkpoint)))
        this.log('the metadata checkpoint did not reach the bucket in time; the next writer replays the log instead');
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
    await local('writing buffered data', () => this.vfs.flushAll());
    await local('syncing the dirty store', () => this.dirty.syncAll());
    await local('saving the metadata', () => this.meta.close());
    // Let the next writer in at once; a release that fails just lets the lease expire.
    await this.role.release(w.lease);
    await local('writing downloaded chunks into the cache', () => this.fetcher.cacheWritesDone());
    await this.dirty.closeSpares();
    await local('closing cache files', () => this.handles.closeAll());
    this.snapshotRefs.close();
    this.browsing.clear();
    // A tree left behind is removed at the next start.
    await Promise.all([...this.browseTrees.keys()].map((id) => this.dropBrowseTree(id)));
    await this.opts.store.close().catch(() => undefined);
    if (durable) await fsp.rm(this.lockFile, { force: true });
  }
}

/** How often the writer looks whether an automatic snapshot is due (ms). */
export const SCHEDULE_TICK_MS = 60_000;
/** How long a browsed snapshot's tree is kept after its last browser left (EngineOptions.browseKeepMs). */
export const BROWSE_KEEP_MS = 10 * 60_000;
/** How often the lease holder looks for snapshot trees without a record. */
export const ORPHAN_SWEEP_MS = 3600_000;
const AUTO_LABEL: Record<AutoKind, string> = { hourly: 'hourly', daily: 'daily' };

/** Space held back on the cache disk so the metadata journal can be written when the disk is full. */
export const JOURNAL_RESERVE_BYTES = 4 * 1024 * 1024;
/** Kept free on the cache disk beyond what the cache counts (plus two chunks), and evicted at a time when it is full. */
export const DISK_HEADROOM_BYTES = 8 * 1024 * 1024;

/** How long `close` waits for each step that depends on the bucket (ms). */
export const CLOSE_WAITS_MS = { follow: 2000, uploads: 5000, push: 2000, checkpoint: 5000, lease: 2000 } as const;
