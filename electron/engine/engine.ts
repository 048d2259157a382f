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
 * Local layout under cacheDir: meta/ (journal), dirty/, chunks/, engine.lock.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { HandlePool } from './cache/handles';
import { ChunkCache } from './cache/chunkCache';
import { DirtyChunk, DirtyStore } from './cache/dirty';
import { SealedIO } from './cache/sealed';
import { chunkName, Keys } from './chunk/crypto';
import { chunkKey, encodeChunk } from './chunk/format';
import { EngineSettings, resolveSettings } from './config';
import { FilespaceHeader } from './filespace';
import { MetaStore } from './meta/metastore';
import { RemoteMeta } from './meta/remote';
import { Replicator } from './meta/replicator';
import { ChunkFetcher } from './prefetch/fetcher';
import { ObjectStore, StoreError } from './store/types';
import { WritebackQueue } from './upload/writeback';
import { Vfs } from './vfs/vfs';
import { UserError } from './errors';

export interface EngineOptions {
  readonly store: ObjectStore;
  readonly keys: Keys;
  readonly header: FilespaceHeader;
  readonly cacheDir: string;
  readonly settings: EngineSettings;
  readonly log?: (msg: string) => void;
}

export interface EngineStats {
  dirtyBytes: number;
  dirtyFiles: number;
  dirtyChunks: number;
  pendingMetaOps: number;
  uploadBytesPerSec: number;
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
}

/** Takes the per-cache-directory lock so two engines never share one cache. */
async function lockCacheDir(cacheDir: string): Promise<string> {
  const file = path.join(cacheDir, 'engine.lock');
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await fsp.open(file, 'wx', 0o600);
      await fh.writeFile(String(process.pid));
      await fh.close();
      return file;
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
    }
  }
  throw new UserError(`cannot lock ${cacheDir}`, 'BUSY');
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
  private rateTimer: NodeJS.Timeout;
  private sizeTimer: NodeJS.Timeout;
  private samples: Array<{ t: number; up: number; down: number }> = [];
  private closed = false;
  private readonly log: (msg: string) => void;

  private constructor(
    private readonly opts: EngineOptions,
    private readonly meta: MetaStore,
    private readonly dirty: DirtyStore,
    private readonly cache: ChunkCache,
    private readonly handles: HandlePool,
    private readonly lockFile: string,
  ) {
    this.settings = opts.settings;
    this.log = opts.log ?? (() => undefined);
    const remote = new RemoteMeta(opts.store, opts.keys.metaKey);
    this.fetcher = new ChunkFetcher(opts.store, cache, opts.keys.chunkKey, this.settings.downloadConcurrency,
      () => this.settings.readTimeoutMs, this.log);
    this.replicator = new Replicator(meta, remote, () => this.settings.metaPushDelayMs, this.log);
    this.vfs = new Vfs(meta, dirty, cache, this.fetcher, {
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      prefetchMaxChunks: () => this.settings.prefetchMaxChunks,
      readOnly: () => (this.replicator.conflict ? `read-only: ${this.replicator.conflict}` : undefined),
    });
    this.writeback = new WritebackQueue({
      dirty,
      chunkSize: meta.chunkSize,
      policy: () => this.settings,
      isOpenForWrite: (ino) => this.vfs.isOpenForWrite(ino),
      upload: (d) => this.uploadChunk(d),
      paused: () => this.uploadsPaused,
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
    await fsp.mkdir(opts.cacheDir, { recursive: true, mode: 0o700 });
    const lockFile = await lockCacheDir(opts.cacheDir);
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
      }, Date.now());
      const cache = new ChunkCache(opts.cacheDir, {
        capBytes: opts.settings.cacheCapBytes,
        highWatermark: opts.settings.cacheHighWatermark,
        lowWatermark: opts.settings.cacheLowWatermark,
      }, handles, () => dirty.totalBytes, sealed);
      await cache.init();
      cache.onDamaged = (name, why) => opts.log?.(`cached chunk ${name} was damaged (${why}); fetching it again`);
      const engine = new Engine(opts, meta, dirty, cache, handles, lockFile);
      await engine.catchUp();
      engine.writeback.start();
      engine.replicator.schedule(0);
      return engine;
    } catch (err) {
      await fsp.rm(lockFile, { force: true });
      throw err;
    }
  }

  get chunkSize(): number {
    return this.meta.chunkSize;
  }

  /**
   * Applies what other machines committed to the bucket since this machine last wrote or
   * read it. With local changes not yet in the bucket the histories would interleave, so the
   * engine then refuses writes (read-only, with the reason in status) instead of merging.
   */
  private async catchUp(): Promise<void> {
    const remote = new RemoteMeta(this.opts.store, this.opts.keys.metaKey);
    let applied = 0;
    try {
      for (;;) {
        const seq = this.meta.remoteSeq + 1;
        const ops = await remote.readSegment(seq);
        if (!ops) break;
        const pending = this.meta.pendingRemote;
        if (ops.length <= pending.length && ops.every((op, i) => isDeepStrictEqual(op, pending[i]))) {
          // This machine wrote that segment just before it stopped, and had not yet noted so.
          this.meta.markPushed(seq, ops.length);
          continue;
        }
        if (pending.length > 0 || this.dirty.count > 0) {
          this.replicator.conflict = 'another machine changed this filespace while this one had changes not yet uploaded; they are kept in the cache, and this mount is read-only';
          this.log(this.replicator.conflict);
          return;
        }
        this.meta.applyRemote(seq, ops);
        applied++;
      }
    } catch (err) {
      // Offline: work from the local copy; it is caught up at the next mount.
      this.log(`could not check the bucket for newer metadata: ${(err as Error).message}`);
    }
    if (applied > 0) {
      this.log(`applied ${applied} metadata segment(s) written by another machine`);
      await this.meta.flush();
    }
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
    this.writeback.pump();
    return next;
  }

  setUploadsPaused(paused: boolean): void {
    this.uploadsPaused = paused;
    if (!paused) this.writeback.pump();
  }

  private async uploadChunk(d: DirtyChunk): Promise<void> {
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
      return { content: await this.dirty.readAll(d), gen: d.gen };
    });
    if (!snap) return;
    const name = chunkName(keys.nameKey, snap.content);
    if (!this.meta.tree.chunkRefs.has(name)) {
      const obj = await encodeChunk(keys.chunkKey, name, snap.content);
      await store.put(chunkKey(name), obj);
      this.uploadedBytes += obj.length;
    }
    await this.vfs.chunkLock(d.ino, d.idx, async () => {
      if (this.closed) return; // shutting down: the chunk stays dirty and uploads next time
      if (this.dirty.get(d.ino, d.idx) !== d || !this.meta.tree.get(d.ino)) return; // deleted or truncated away meanwhile
      this.vfs.commitSize(d.ino);
      this.meta.commit({ t: 'chunk', ino: d.ino, idx: d.idx, ref: [name, snap.content.length] });
      if (d.gen === snap.gen) {
        // The reference must be durable before the dirty copy stops being the data's home.
        await this.meta.sync();
        if (this.dirty.get(d.ino, d.idx) !== d || d.gen !== snap.gen) return;
        const { file, fileId, size } = this.dirty.release(d);
        await this.cache.adopt(name, file, size, fileId);
      }
    });
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
      downloadBytesPerSec: this.rate('down'),
      uploadedBytes: this.uploadedBytes,
      downloadedBytes: this.fetcher.stats.downloadedBytes,
      cacheUsedBytes: this.cache.usedBytes,
      cacheCapBytes: this.cache.capBytes,
      cacheHitRatio: this.cache.hitRatio,
      openFiles: this.vfs.openFiles,
      offline: this.offlineSince !== undefined,
      uploadsPaused: this.uploadsPaused,
      readOnlyReason: this.replicator.conflict,
      lastError: this.replicator.conflict ?? this.lastError ?? this.replicator.lastError ?? this.fetcher.stats.lastError,
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

  /** Stops background work and persists everything locally. Pending uploads resume next open. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.rateTimer);
    clearInterval(this.sizeTimer);
    this.writeback.stop();
    await this.writeback.idle(5000);
    this.vfs.commitAllSizes();
    // Give metadata already committed a short chance to reach the bucket; it stays queued otherwise.
    await Promise.race([this.replicator.pushNow(), new Promise((r) => setTimeout(r, 2000).unref())]);
    await this.replicator.stop();
    if (this.replicator.pendingOps === 0 && this.dirty.count === 0) {
      await this.replicator.checkpointNow().catch((err) => this.log(`checkpoint failed: ${(err as Error).message}`));
    }
    await this.dirty.syncAll();
    await this.meta.close();
    await this.handles.closeAll();
    await this.opts.store.close();
    await fsp.rm(this.lockFile, { force: true });
  }
}
