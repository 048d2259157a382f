/**
 * MountHost runs one linked filespace on this machine: unlocks it, opens the engine, mounts
 * it with FUSE, serves the control API, and shuts down in order on unmount or SIGTERM
 * (stop accepting, commit sizes, fsync the cache, unmount, close the engine). Used by
 * `filespace mount --foreground` (and so by the daemon and systemd), by `filespace demo` and
 * by the desktop app (several hosts in one process).
 *
 * It also serves snapshots mounted read-only beside its mount (`mountSnapshot`: a second FUSE
 * mount over the engine's snapshot filesystem, reading through the same cache), until they are
 * unmounted or the host stops.
 *
 * State machine: mounting -> mounted -> unmounting -> unmounted, or error. A busy unmount
 * returns to mounted and reports what to do.
 *
 * The host lives as long as its mount: when someone else unmounts it (`fusermount -u`,
 * `umount`), the FUSE session ends and the host stops as for an unmount (flush to the cache,
 * close the engine, which releases the write lease if the bucket answers). A forced unmount
 * detaches even when the cache cannot be flushed (a full disk): what stays unwritten is only
 * what a crash would lose, i.e. nothing an fsync acknowledged.
 */

import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import type { PinRecord } from '../engine/pins';
import {
  GcResultDto,
  MountState,
  PinResult,
  SettingsChange,
  SnapshotListDto,
  SnapshotRecordDto,
  SnapshotScheduleDto,
  StatusDto,
  SyncResult,
  TransferRequest,
} from '../contract/api';
import { Engine } from '../engine/engine';
import { resolveSettings } from '../engine/config';
import { checkLinkedFilespace, unlockFilespace } from '../engine/filespace';
import { ObjectStore } from '../engine/store/types';
import { startControlServer } from './control';
import { HostError } from './errors';
import { Homes, LinkConfig, linkedPlaces, readPassphraseFile, saveConfig, settingsOf, socketPath } from './config';
import { prepareMountPoint } from './mountPoint';
import { jobDto, requestKey, startTransfer, type TransferJob } from './transfer';
import { checkPlacement } from './placement';
import { openStore } from './stores';
import type { FuseMount } from '../../native/fuse/adapter';
import type { LowLevelMount } from '../../native/fuse/lowlevel';

/** Skipped entries a status lists by name (the command's summary lists more, from `/v1/transfer`). */
const STATUS_SKIPS_LISTED = 20;

async function canAllowOther(): Promise<boolean> {
  if (process.getuid?.() === 0) return true;
  const conf = await fsp.readFile('/etc/fuse.conf', 'utf8').catch(() => '');
  return /^\s*user_allow_other\b/m.test(conf);
}

function notifySystemdReady(): void {
  if (!process.env.NOTIFY_SOCKET) return;
  execFile('systemd-notify', ['--ready', `--pid=${process.pid}`], () => undefined);
}

export interface HostOptions {
  readonly log: (msg: string) => void;
  /** Overrides the passphrase file (the demo keeps its own). */
  readonly passphrase?: string;
  readonly store?: ObjectStore;
  /** 'read' mounts read-only and follows the writer; default 'write' (takes the write lease). */
  readonly mode?: 'write' | 'read';
  /** Take the write lease even if another machine holds it. */
  readonly takeover?: boolean;
}

export class MountHost {
  state: MountState = 'unmounted';
  private engine: Engine | undefined;
  private fuse: FuseMount | LowLevelMount | undefined;
  private server: http.Server | undefined;
  /** The last I/O error the kernel got; an event, not a state: status shows it for a minute. */
  private lastError: { at: number; message: string } | undefined;
  private finished!: () => void;
  readonly done = new Promise<void>((r) => (this.finished = r));
  private shuttingDown: Promise<void> | undefined;
  private pinsSaved: Promise<void> = Promise.resolve();
  /** Snapshots mounted read-only beside this mount, served by this process: folder -> mount. */
  private readonly snapshotMounts = new Map<string, FuseMount>();
  /** What to do once a snapshot mount is gone (the engine stops keeping its chunks). */
  private readonly snapshotServed = new Map<FuseMount, () => void>();

  private forgetSnapshotMount(mount: FuseMount): void {
    this.snapshotServed.get(mount)?.();
    this.snapshotServed.delete(mount);
  }
  /** The import or export this mount runs or ran last (one at a time). */
  private transfer: TransferJob | undefined;

  constructor(
    private cfg: LinkConfig,
    private readonly h: Homes,
    private readonly opts: HostOptions,
  ) {}

  async start(): Promise<void> {
    this.state = 'mounting';
    const { checkFuseAvailable, FuseMount } = await import('../../native/fuse/adapter');
    const missing = await checkFuseAvailable();
    if (missing) throw new HostError(missing, 'NO_FUSE');
    await checkPlacement(
      { name: this.cfg.name, mountPoint: this.cfg.mountPoint, cacheDir: this.cfg.cacheDir, mounting: true },
      await linkedPlaces(this.h),
    );
    await prepareMountPoint(this.cfg.mountPoint);
    const passphrase = this.opts.passphrase ?? (await readPassphraseFile(this.cfg.passphraseFile));
    const store = this.opts.store ?? openStore(this.cfg.store);
    const { header, keys } = await unlockFilespace(store, passphrase);
    checkLinkedFilespace(header, this.cfg.filespaceId, this.cfg.name, store);
    this.engine = await Engine.open({
      store,
      keys,
      header,
      cacheDir: this.cfg.cacheDir,
      settings: settingsOf(this.cfg),
      log: this.opts.log,
      mode: this.opts.mode,
      takeover: this.opts.takeover,
      conditionalWrites: this.cfg.conditionalWrites,
      name: this.cfg.name,
      pins: this.cfg.pins ?? [],
      onPinsChanged: (pins) => this.savePins(pins),
    });
    const s = this.engine.currentSettings;
    try {
      this.server = await startControlServer(socketPath(this.h, this.cfg.name), this.handlers(), this.opts.log);
      const { LowLevelMount, fuseBindingChoice } = await import('../../native/fuse/lowlevel');
      const lowLevel = fuseBindingChoice() === 'lowlevel';
      // The high-level adapter names files by path and has no place to wait for a folder to
      // load: it mounts once every folder is (a fresh machine's first mount).
      if (!lowLevel) await this.engine.whenFilled();
      const Mount = lowLevel ? LowLevelMount : FuseMount;
      this.fuse = new Mount(this.cfg.mountPoint, this.engine.vfs, {
        attrTimeoutSec: s.attrTimeoutSec,
        entryTimeoutSec: s.entryTimeoutSec,
        negativeTimeoutSec: s.negativeTimeoutSec,
        xattrs: s.xattrs,
        fsName: `filespace:${this.cfg.name}`,
        allowOther: await canAllowOther(),
        onError: (op, err) => {
          this.lastError = { at: Date.now(), message: `${op}: ${(err as Error).message}` };
          this.opts.log(`I/O error in ${op}: ${(err as Error).message}`);
        },
      });
      await this.fuse.mount();
    } catch (err) {
      await this.teardown();
      throw err;
    }
    this.state = 'mounted';
    this.fuse.watch(
      () => this.stopAfterExternalUnmount(),
      () =>
        this.opts.log(
          `${this.cfg.mountPoint} was detached from outside; serving the processes that still use it until they let go`,
        ),
    );
    this.opts.log(`mounted ${this.cfg.name} at ${this.cfg.mountPoint}`);
    notifySystemdReady();
  }

  status(): StatusDto {
    const st = this.engine?.stats();
    return {
      name: this.cfg.name,
      state: this.state,
      mountPoint: this.cfg.mountPoint,
      pid: process.pid,
      dirtyBytes: st?.dirtyBytes ?? 0,
      dirtyFiles: st?.dirtyFiles ?? 0,
      pendingMetaOps: st?.pendingMetaOps ?? 0,
      uploadBytesPerSec: st?.uploadBytesPerSec ?? 0,
      uploadLimitBytesPerSec: st?.uploadLimitBytesPerSec ?? settingsOf(this.cfg).uploadLimitBytesPerSec,
      downloadBytesPerSec: st?.downloadBytesPerSec ?? 0,
      cacheUsedBytes: st?.cacheUsedBytes ?? 0,
      cacheCapBytes: st?.cacheCapBytes ?? settingsOf(this.cfg).cacheCapBytes,
      cacheHitRatio: st?.cacheHitRatio ?? 0,
      cacheReadBytes: st?.cacheReadBytes ?? 0,
      openFiles: st?.openFiles ?? 0,
      offline: st?.offline ?? false,
      uploadsPaused: st?.uploadsPaused ?? false,
      readOnlyReason: st?.readOnlyReason ?? null,
      lastError: st?.lastError ?? (this.lastError && Date.now() - this.lastError.at < 60_000 ? this.lastError.message : null),
      ...(st
        ? {
            pendingFiles: st.pendingFiles,
            lease: st.lease,
            aside: st.aside,
            offlineSince: st.offlineSince ?? null,
            writesWaiting: st.writesWaiting ?? null,
            pins: st.pins,
            pinsProblem: st.pinsProblem ?? null,
            foldersLoading: st.foldersLoading,
          }
        : {}),
      ...(this.transfer ? { transfer: jobDto(this.transfer, STATUS_SKIPS_LISTED) } : {}),
    };
  }

  private handlers() {
    return {
      '/v1/status': async () => this.status(),
      '/v1/unmount': async (req: { force: boolean }) => {
        await this.unmount(req.force);
        return { ok: true as const };
      },
      '/v1/sync': (req: { timeoutMs: number }) => this.sync(req.timeoutMs),
      '/v1/set': async (change: SettingsChange) => {
        await this.updateSettings(change);
        return { ok: true as const };
      },
      '/v1/pause': async (req: { paused: boolean }) => {
        this.setUploadsPaused(req.paused);
        return { ok: true as const };
      },
      '/v1/gc': () => this.collectGarbage(),
      '/v1/pin': (req: { paths: string[] }) => this.pin(req.paths),
      '/v1/unpin': (req: { paths: string[] }) => this.unpin(req.paths),
      '/v1/snapshot/create': (req: { label: string }) => this.createSnapshot(req.label),
      '/v1/snapshot/list': () => this.listSnapshots(),
      '/v1/snapshot/delete': async (req: { id: string }) => {
        await this.deleteSnapshot(req.id);
        return { ok: true as const };
      },
      '/v1/snapshot/schedule': async (req: SnapshotScheduleDto) => {
        await this.running().setSnapshotSchedule(req);
        return { ok: true as const };
      },
      '/v1/snapshot/mount': async (req: { id: string; dir: string }) => {
        await this.mountSnapshot(req.id, req.dir);
        return { ok: true as const };
      },
      '/v1/snapshot/unmount': async (req: { dir: string }) => {
        await this.unmountSnapshot(req.dir);
        return { ok: true as const };
      },
      '/v1/transfer/start': async (req: TransferRequest) => {
        const { started, job } = await this.startTransfer(req);
        return { started, job: jobDto(job) };
      },
      '/v1/transfer': async () => ({ job: this.transfer ? jobDto(this.transfer) : null }),
      '/v1/transfer/cancel': async () => {
        this.cancelTransfer();
        return { ok: true as const };
      },
      '/v1/debug/fuse': async () => ({ counts: this.fuse?.requestCounts() ?? null }),
    };
  }

  private running(): Engine {
    if (!this.engine) throw new HostError('not mounted', 'NOT_MOUNTED');
    return this.engine;
  }

  /** Waits until everything written is in the bucket, or `timeoutMs` passes. */
  async sync(timeoutMs: number): Promise<SyncResult> {
    const engine = this.running();
    const done = await engine.sync(Date.now() + timeoutMs);
    const st = engine.stats();
    return { done, dirtyBytes: st.dirtyBytes, pendingMetaOps: st.pendingMetaOps, notWriting: engine.notWriting ?? null };
  }

  /**
   * Applies a settings change live and keeps it in the link configuration for the next mount.
   * The engine checks the values, once; before it runs (while mounting) the same check runs here.
   */
  async updateSettings(change: SettingsChange): Promise<void> {
    const settings = { ...this.cfg.settings, ...change };
    if (this.engine) this.engine.updateSettings(change);
    else resolveSettings(settings);
    this.cfg = { ...this.cfg, settings };
    await saveConfig(this.h, this.cfg);
  }

  setUploadsPaused(paused: boolean): void {
    this.engine?.setUploadsPaused(paused);
  }

  /** How this host mounted: 'read' follows the writer, 'write' takes the write lease. */
  get mode(): 'write' | 'read' {
    return this.opts.mode ?? 'write';
  }

  /** Discards a set of changes kept aside, through the running engine (so its status follows). */
  discardAside(id: string): Promise<void> {
    return this.running().discardAside(id);
  }

  /** Pins filespace paths in the running engine (which checks them); the link configuration keeps them. */
  async pin(paths: readonly string[]): Promise<PinResult> {
    const engine = this.running();
    await engine.whenFilled();
    const added = engine.pin(paths).map((p) => p.path);
    await this.pinsSaved;
    return { added, pins: engine.pins() };
  }

  async unpin(paths: readonly string[]): Promise<PinResult> {
    const engine = this.running();
    engine.unpin(paths);
    await this.pinsSaved;
    return { added: [], pins: engine.pins() };
  }

  /** Keeps the engine's pins in the link configuration, one save at a time, in order. */
  private savePins(pins: readonly PinRecord[]): void {
    this.cfg = { ...this.cfg, pins: [...pins] };
    const cfg = this.cfg;
    this.pinsSaved = this.pinsSaved
      .then(() => saveConfig(this.h, cfg))
      .catch((err) => this.opts.log(`saving the pins of ${cfg.name}: ${(err as Error).message}`));
  }

  /**
   * Starts an import or export in this mount's engine (host/transfer.ts), or joins the same one
   * when it is already running; another one running is refused.
   */
  async startTransfer(req: TransferRequest): Promise<{ started: boolean; job: TransferJob }> {
    const engine = this.running();
    const current = this.transfer;
    if (current && ['scanning', 'copying', 'finishing'].includes(current.progress.phase)) {
      if (current.key === requestKey(req)) return { started: false, job: current };
      throw new HostError(
        `an ${current.direction} is running (${current.from} -> ${current.to}); wait for it or cancel it`,
        'BUSY',
      );
    }
    this.transfer = await startTransfer(engine, req, { mountPoint: this.cfg.mountPoint, log: this.opts.log });
    return { started: true, job: this.transfer };
  }

  cancelTransfer(): void {
    this.transfer?.abort.abort();
  }

  collectGarbage(): Promise<GcResultDto> {
    return this.running().collectGarbage();
  }

  /** The snapshots with their size-unique, from this mount's engine (it has them counted and the live tree). */
  listSnapshots(): Promise<SnapshotListDto> {
    return this.running().listSnapshots();
  }

  createSnapshot(label: string): Promise<SnapshotRecordDto> {
    return this.running().createSnapshot(label);
  }

  deleteSnapshot(id: string): Promise<void> {
    return this.running().deleteSnapshot(id);
  }

  /** Whether this host serves a snapshot mounted at `dir`. */
  hasSnapshotMount(dir: string): boolean {
    return this.snapshotMounts.has(dir);
  }

  /**
   * Mounts snapshot `id` read-only at `dir` (an empty folder), reading through this mount's
   * cache; it stays until unmounted (or this mount stops).
   */
  async mountSnapshot(id: string, dir: string): Promise<void> {
    const engine = this.running();
    if (this.snapshotMounts.has(dir)) throw new HostError(`a snapshot is already mounted at ${dir}`, 'ALREADY_MOUNTED');
    await prepareMountPoint(dir);
    const snapshotFs = await engine.snapshotFs(id);
    const { FuseMount } = await import('../../native/fuse/adapter');
    const s = engine.currentSettings;
    const mount = new FuseMount(dir, snapshotFs, {
      attrTimeoutSec: 60,
      entryTimeoutSec: 60,
      negativeTimeoutSec: 60,
      xattrs: s.xattrs,
      fsName: `filespace:${this.cfg.name}@${id}`,
      allowOther: await canAllowOther(),
      onError: (op, err) => this.opts.log(`I/O error in snapshot ${id} ${op}: ${(err as Error).message}`),
    });
    try {
      await mount.mount();
    } catch (err) {
      engine.releaseSnapshotFs(snapshotFs);
      throw err;
    }
    this.snapshotMounts.set(dir, mount);
    this.snapshotServed.set(mount, () => engine.releaseSnapshotFs(snapshotFs));
    mount.watch(() => {
      this.snapshotMounts.delete(dir);
      this.forgetSnapshotMount(mount);
      void mount.unmount(true).catch(() => undefined);
    });
    this.opts.log(`mounted snapshot ${id} of ${this.cfg.name} read-only at ${dir}`);
  }

  async unmountSnapshot(dir: string): Promise<void> {
    const mount = this.snapshotMounts.get(dir);
    if (!mount) throw new HostError(`no snapshot of "${this.cfg.name}" is mounted at ${dir}`, 'NOT_MOUNTED');
    await mount.unmount(false);
    this.snapshotMounts.delete(dir);
    this.forgetSnapshotMount(mount);
    this.opts.log(`unmounted the snapshot at ${dir}`);
  }

  /**
   * Makes everything written so far durable in the cache (no network involved). Forced, a
   * failure (the cache disk is full) is logged and the stop goes on.
   */
  private async flushToCache(force: boolean): Promise<void> {
    const engine = this.engine!;
    try {
      engine.vfs.commitAllSizes();
      await engine.vfs.fsyncAll();
    } catch (err) {
      const msg = `could not flush to the cache in ${this.cfg.cacheDir}: ${(err as Error).message}`;
      if (!force) throw new HostError(`${msg}; free space there and retry`, 'FLUSH_FAILED');
      this.opts.log(`${msg}; detaching anyway (changes written since the last successful fsync may be lost)`);
    }
  }

  /** Unmounts and stops. Throws (and stays mounted) when busy and not forced. */
  unmount(force: boolean): Promise<void> {
    if (this.shuttingDown) return this.shuttingDown;
    if (this.state !== 'mounted') throw new HostError(`cannot unmount while ${this.state}`, 'NOT_MOUNTED');
    const run = async () => {
      this.state = 'unmounting';
      try {
        await this.flushToCache(force);
        await this.fuse!.unmount(force);
      } catch (err) {
        // Busy (a FuseError 'BUSY' naming who holds it), or the cache could not be flushed.
        this.state = 'mounted';
        this.shuttingDown = undefined;
        throw err;
      }
      await this.finish(`unmounted ${this.cfg.name}`);
    };
    this.shuttingDown = run();
    return this.shuttingDown;
  }

  /** The FUSE session ended without us (`fusermount -u`, `umount`): stop as for an unmount. */
  private stopAfterExternalUnmount(): void {
    if (this.shuttingDown || this.state !== 'mounted') return;
    this.opts.log(`${this.cfg.mountPoint} was unmounted from outside; flushing to the cache and stopping`);
    this.state = 'unmounting';
    this.shuttingDown = (async () => {
      await this.flushToCache(true);
      await this.fuse?.unmount(true).catch((err) => this.opts.log(`releasing the FUSE session: ${(err as Error).message}`));
      await this.finish(`stopped: ${this.cfg.name} is no longer mounted`);
    })();
  }

  private async finish(message: string): Promise<void> {
    await this.teardown();
    this.state = 'unmounted';
    this.opts.log(message);
    this.finished();
  }

  private async teardown(): Promise<void> {
    for (const [dir, mount] of this.snapshotMounts) {
      await mount.unmount(true).catch((err) => this.opts.log(`unmounting the snapshot at ${dir}: ${(err as Error).message}`));
      this.forgetSnapshotMount(mount);
    }
    this.snapshotMounts.clear();
    this.transfer?.abort.abort();
    await this.transfer?.done;
    if (this.fuse?.isMounted) await this.fuse.unmount(true).catch(() => undefined);
    if (this.engine) await this.engine.close().catch((err) => this.opts.log(`closing the engine: ${(err as Error).message}`));
    this.engine = undefined;
    await this.pinsSaved;
    if (this.server) {
      // Stop listening now, but let the request that asked for the unmount get its answer.
      const server = this.server;
      this.server = undefined;
      server.close();
      server.closeIdleConnections();
      setTimeout(() => server.closeAllConnections(), 1000).unref();
      await fsp.rm(socketPath(this.h, this.cfg.name), { force: true });
    }
  }

  /** SIGTERM/SIGINT: flush to the cache and unmount, lazily if something holds the mount. */
  async stopOnSignal(): Promise<void> {
    if (this.shuttingDown) return this.shuttingDown;
    if (this.state !== 'mounted') return;
    try {
      await this.unmount(false);
    } catch {
      await this.unmount(true);
    }
  }

  /** Last resort before the process exits without a clean stop: detach the mount lazily. */
  async detachNow(): Promise<void> {
    if (!this.fuse?.isMounted || !(await this.fuse.listed())) return;
    const { unmountPath } = await import('../../native/fuse/adapter');
    await unmountPath(this.cfg.mountPoint, true);
  }
}
