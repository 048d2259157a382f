/**
 * MountHost runs one linked filespace on this machine: unlocks it, opens the engine, mounts
 * it with FUSE, serves the control API, and shuts down in order on unmount or SIGTERM
 * (stop accepting, commit sizes, fsync the cache, unmount, close the engine). Used by
 * `filespace mount --foreground` (and so by the daemon and systemd), by `filespace demo` and
 * by the desktop app (several hosts in one process).
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
import * as path from 'node:path';
import { MountState, SETTABLE_KEYS, StatusDto } from '../contract/api';
import { Engine } from '../engine/engine';
import { resolveSettings, EngineSettings } from '../engine/config';
import { UserError } from '../engine/errors';
import { checkLinkedFilespace, unlockFilespace } from '../engine/filespace';
import { ObjectStore } from '../engine/store/types';
import { parseDuration, parseRate, parseSize } from '../engine/util/sizes';
import { ApiFailure, startControlServer } from './control';
import { Homes, LinkConfig, linkedPlaces, readPassphraseFile, saveConfig, socketPath } from './config';
import { checkPlacement } from '../host/placement';
import { openStore } from './stores';
import type { FuseMount } from '../../native/fuse/adapter';

export function settingsOf(cfg: LinkConfig): EngineSettings {
  return resolveSettings(cfg.settings);
}

/** Translates `filespace set` keys and human values into engine settings. */
export function settingFromKey(key: string, value: string): Partial<EngineSettings> {
  const int = (v: string) => {
    if (!/^\d+$/.test(v)) throw new UserError(`"${v}" is not a whole number`);
    return Number(v);
  };
  try {
    switch (key) {
      case 'cache-size': return { cacheCapBytes: parseSize(value) };
      case 'upload-delay': return { uploadDelayMs: parseDuration(value) };
      case 'upload-concurrency': return { uploadConcurrency: int(value) };
      case 'upload-limit': return { uploadLimitBytesPerSec: parseRate(value) };
      case 'download-concurrency': return { downloadConcurrency: int(value) };
      case 'prefetch-chunks': return { prefetchMaxChunks: int(value) };
      case 'read-timeout': return { readTimeoutMs: parseDuration(value) };
      case 'write-stall-timeout': return { writeStallTimeoutMs: parseDuration(value) };
      case 'probe-timeout': return { probeTimeoutMs: parseDuration(value) };
      case 'lease-ttl': return { leaseTtlMs: parseDuration(value) };
      case 'follow-interval': return { followIntervalMs: parseDuration(value) };
      case 'gc-grace': return { gcGraceMs: parseDuration(value) };
      case 'gc-interval': return { gcIntervalMs: parseDuration(value) };
      default: throw new UserError(`unknown setting "${key}"; settable: ${SETTABLE_KEYS.join(', ')}`);
    }
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError((err as Error).message);
  }
}

async function canAllowOther(): Promise<boolean> {
  if (process.getuid?.() === 0) return true;
  const conf = await fsp.readFile('/etc/fuse.conf', 'utf8').catch(() => '');
  return /^\s*user_allow_other\b/m.test(conf);
}

/** Checks the mount point and clears a stale mount left by a killed engine. */
export async function prepareMountPoint(dir: string): Promise<void> {
  const { isMountPoint, unmountPath } = await import('../../native/fuse/adapter');
  if (await isMountPoint(dir)) {
    // A mount whose engine died answers ENOTCONN; anything else is a live mount. (readdir, not
    // stat: the kernel may answer stat from its attribute cache without asking the engine.
    // This process does not serve that mount, so touching it cannot deadlock.)
    const alive = await fsp.readdir(dir).then(() => true, (e: NodeJS.ErrnoException) => e.code !== 'ENOTCONN' && e.code !== 'ECONNABORTED');
    if (alive) throw new UserError(`${dir} is already a mount point; unmount it first`, 'ALREADY_MOUNTED');
    await unmountPath(dir, true);
  }
  let st;
  try {
    st = await fsp.stat(dir);
  } catch {
    throw new UserError(`mount point ${dir} does not exist; create it with "mkdir -p ${dir}"`, 'NO_MOUNT_POINT');
  }
  if (!st.isDirectory()) throw new UserError(`mount point ${dir} is not a directory`, 'NOT_A_DIRECTORY');
  if ((await fsp.readdir(dir)).length > 0) throw new UserError(`mount point ${dir} is not empty; pick an empty folder`, 'NOT_EMPTY');
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
  private fuse: FuseMount | undefined;
  private server: http.Server | undefined;
  private lastError: string | undefined;
  private finished!: () => void;
  readonly done = new Promise<void>((r) => (this.finished = r));
  private shuttingDown: Promise<void> | undefined;

  constructor(private cfg: LinkConfig, private readonly h: Homes, private readonly opts: HostOptions) {}

  async start(): Promise<void> {
    this.state = 'mounting';
    const { checkFuseAvailable, FuseMount } = await import('../../native/fuse/adapter');
    const missing = await checkFuseAvailable();
    if (missing) throw new UserError(missing, 'NO_FUSE');
    await checkPlacement({ name: this.cfg.name, mountPoint: this.cfg.mountPoint, cacheDir: this.cfg.cacheDir, mounting: true }, await linkedPlaces(this.h));
    await prepareMountPoint(this.cfg.mountPoint);
    const passphrase = this.opts.passphrase ?? (await readPassphraseFile(this.cfg.passphraseFile));
    const store = this.opts.store ?? openStore(this.cfg.store);
    const { header, keys } = await unlockFilespace(store, passphrase);
    checkLinkedFilespace(header, this.cfg.filespaceId, this.cfg.name, store);
    this.engine = await Engine.open({
      store, keys, header, cacheDir: this.cfg.cacheDir, settings: settingsOf(this.cfg), log: this.opts.log,
      mode: this.opts.mode, takeover: this.opts.takeover, conditionalWrites: this.cfg.conditionalWrites, name: this.cfg.name,
    });
    const s = this.engine.currentSettings;
    try {
      this.server = await startControlServer(socketPath(this.h, this.cfg.name), this.handlers());
      this.fuse = new FuseMount(this.cfg.mountPoint, this.engine.vfs, {
        attrTimeoutSec: s.attrTimeoutSec,
        entryTimeoutSec: s.entryTimeoutSec,
        negativeTimeoutSec: s.negativeTimeoutSec,
        xattrs: s.xattrs,
        fsName: `filespace:${this.cfg.name}`,
        allowOther: await canAllowOther(),
        onError: (op, err) => {
          this.lastError = `${op}: ${(err as Error).message}`;
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
      () => this.opts.log(`${this.cfg.mountPoint} was detached from outside; serving the processes that still use it until they let go`),
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
      openFiles: st?.openFiles ?? 0,
      offline: st?.offline ?? false,
      uploadsPaused: st?.uploadsPaused ?? false,
      readOnlyReason: st?.readOnlyReason ?? null,
      lastError: st?.lastError ?? this.lastError ?? null,
      ...(st ? {
        pendingFiles: st.pendingFiles, lease: st.lease, aside: st.aside,
        offlineSince: st.offlineSince ?? null, writesWaiting: st.writesWaiting ?? null,
      } : {}),
    };
  }

  private handlers() {
    return {
      '/v1/status': async () => this.status(),
      '/v1/unmount': async (req: { force: boolean }) => {
        await this.unmount(req.force);
        return { ok: true as const };
      },
      '/v1/sync': async (req: { timeoutMs: number }) => {
        const engine = this.engine;
        if (!engine) throw new ApiFailure('NOT_MOUNTED', 'not mounted', 409);
        const done = await engine.sync(Date.now() + req.timeoutMs);
        const st = engine.stats();
        return { done, dirtyBytes: st.dirtyBytes, pendingMetaOps: st.pendingMetaOps, notWriting: engine.notWriting ?? null };
      },
      '/v1/set': async (req: { key: string; value: string }) => {
        const change = settingFromKey(req.key, req.value);
        const merged = resolveSettings({ ...(this.cfg.settings as Partial<EngineSettings>), ...change });
        this.engine?.updateSettings(change);
        this.cfg = { ...this.cfg, settings: { ...this.cfg.settings, ...change } };
        void merged;
        await saveConfig(this.h, this.cfg);
        return { ok: true as const };
      },
      '/v1/pause': async (req: { paused: boolean }) => {
        this.engine?.setUploadsPaused(req.paused);
        return { ok: true as const };
      },
      '/v1/gc': async () => {
        const engine = this.engine;
        if (!engine) throw new ApiFailure('NOT_MOUNTED', 'not mounted', 409);
        try {
          return await engine.collectGarbage();
        } catch (err) {
          if (err instanceof UserError) throw new ApiFailure(err.code, err.message, 409);
          throw err;
        }
      },
    };
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
      if (!force) throw new ApiFailure('FLUSH_FAILED', `${msg}; free space there and retry, or unmount with --force to detach anyway`, 409);
      this.opts.log(`${msg}; detaching anyway (changes written since the last successful fsync may be lost)`);
    }
  }

  /** Unmounts and stops. Throws (and stays mounted) when busy and not forced. */
  unmount(force: boolean): Promise<void> {
    if (this.shuttingDown) return this.shuttingDown;
    if (this.state !== 'mounted') throw new ApiFailure('NOT_MOUNTED', `cannot unmount while ${this.state}`, 409);
    const run = async () => {
      this.state = 'unmounting';
      try {
        await this.flushToCache(force);
        await this.fuse!.unmount(force);
      } catch (err) {
        this.state = 'mounted';
        this.shuttingDown = undefined;
        const { FuseError } = await import('../../native/fuse/adapter');
        if (err instanceof FuseError && err.code === 'BUSY') throw new ApiFailure('BUSY', err.message, 409);
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
    if (this.fuse?.isMounted) await this.fuse.unmount(true).catch(() => undefined);
    if (this.engine) await this.engine.close().catch((err) => this.opts.log(`closing the engine: ${(err as Error).message}`));
    this.engine = undefined;
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

export async function ensureDir(dir: string): Promise<void> {
  await fsp.mkdir(path.resolve(dir), { recursive: true, mode: 0o700 });
}
