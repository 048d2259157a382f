/**
 * AppHost: the desktop app's implementation of the app contract, in plain Node. It hosts
 * engines with the host library the `filespace` command uses too (electron/host/): one
 * MountHost per mounted filespace, called directly (never over a socket into this very
 * process), linked with linkFilespace, reported with statusOf when another process mounts it.
 * On top it adds what the desktop needs: AWS keys and passphrases from the OS keychain
 * (CredentialVault), the permission check, the demo store, a global uploads pause, and a
 * status feed.
 *
 * Several computers, one filespace: `mount` takes a mode ('write' takes the write lease,
 * 'read' follows the writer) and may take the lease over; a lease held elsewhere is reported
 * as LEASE_HELD in words (who writes), and `writer` says who holds the lease, from the bucket.
 * Changes set aside after a takeover are listed, exported and discarded here (`aside.*`);
 * snapshots are listed from the bucket, and taken, deleted and browsed through this computer's
 * mount (`snapshot.*`, host/snapshots.ts). The
 * recovery key arrives only from the wizard at creation (or to set a new passphrase) and is
 * handed to the engine, never stored.
 *
 * Both transports (Electron IPC in main.ts, loopback HTTP in server.ts) call `handlers` through
 * host/dispatch.ts, which validates requests and responses against the contract.
 *
 * Status feed: listeners get an AppEvent when something visible changed. While anyone listens,
 * one timer per host samples the status every `sampleMs` and sends it only if it differs from
 * the last one sent; actions (mount, unmount, settings, pause) send at once. Clients never poll.
 *
 * The engines' FUSE callbacks run on this process's event loop: nothing here touches a mount
 * point synchronously, and mount point checks use async fs calls only on unmounted folders.
 * Mount points and cache folders inside any filespace, or overlapping another filespace's
 * cache, are refused before anything is created or moved (host/placement.ts): the host would
 * otherwise wait on its own mount.
 */

import { pendingOf } from '../contract/headline';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { SnapshotListDto, StatusDto } from '../contract/api';
import {
  appRoutes,
  type AppEvent,
  type AppParsedRequest,
  type AppStatus,
  type Credentials,
  type FilespaceSummary,
  type AsideSetDto,
  type MachineSettings,
  type Target,
  type WriterInfo,
} from '../contract/app';
import { parseRecoveryKey, RECOVERY_KEY_HINT } from '../contract/recoveryKey';
import { MIN_PASSPHRASE_SCORE, passphraseStrength } from '../contract/wizard';
import { discardAside, exportAside, listAside } from '../engine/aside';
import { machineOf } from '../engine/cacheFolder';
import type { Keys } from '../engine/chunk/crypto';
import { UserError } from '../engine/errors';
import { createFilespace, resetPassphrase, unlockFilespace } from '../engine/filespace';
import { isExpired, readLease } from '../engine/meta/lease';
import { checkSnapshotId } from '../engine/meta/snapshots';
import { LocalDiskStore } from '../engine/store/local';
import type { ObjectStore } from '../engine/store/types';
import { freeBytesAt } from '../host/cacheRoom';
import { snapshotsIn } from '../host/snapshots';
import {
  Homes,
  LinkConfig,
  deleteConfig,
  linkedPlaces,
  listConfigs,
  loadConfig,
  readPassphraseFile,
  saveConfig,
  settingsOf,
} from '../host/config';
import type { HandlersFor } from '../host/dispatch';
import { HostError } from '../host/errors';
import { linkFilespace, NO_CONDITIONAL_NOTE } from '../host/link';
import { MountHost } from '../host/mountHost';
import { checkMountPoint } from '../host/mountPoint';
import { checkPlacement } from '../host/placement';
import { applySettings } from '../host/settings';
import { statusOf } from '../host/status';
import { filespacePathOf, pinLinked, unpinLinked } from '../host/pins';
import { openStore } from '../host/stores';
import { AppSettings, AppSettingsFile } from './appSettings';
import { checkBucket, checkKeys, storeFor } from './permissions';
import { CredentialVault } from './vault';

export type AppHandlers = HandlersFor<typeof appRoutes>;

export interface AppHostOptions {
  readonly homes: Homes;
  readonly vault: CredentialVault;
  readonly log: (msg: string) => void;
  /** Where new mount points are suggested (default: ~/Filespace). */
  readonly mountRoot?: string;
  readonly sampleMs?: number;
  readonly chunkSizeBytes?: number;
  /** Told when the app settings change (Electron applies start-at-login here). */
  readonly onAppSettings?: (s: AppSettings) => void;
}

const DEFAULT_CACHE_CAP = 20 * 1024 ** 3;
const DEMO_NAME = 'demo';

export { freeBytesAt };

/**
 * Removes the empty folders `fsp.mkdir(dir, { recursive: true })` created (it returned `first`,
 * the top one), deepest first; a folder that is no longer empty stays.
 */
async function removeCreatedFolders(dir: string, first: string): Promise<void> {
  const top = path.resolve(first);
  for (let cur = path.resolve(dir); ; cur = path.dirname(cur)) {
    if (
      !(await fsp.rmdir(cur).then(
        () => true,
        () => false,
      ))
    )
      return;
    if (cur === top || path.dirname(cur) === cur) return;
  }
}

/**
 * `mkdir -p` one folder at a time, returning the top one it made (as `fsp.mkdir` with
 * `recursive` does). Node's recursive mkdir never returns where a folder cannot be made in an
 * existing parent that answers ENOENT (e.g. under /proc); one mkdir per level fails instead.
 */
async function makeFolders(dir: string): Promise<string | undefined> {
  const missing: string[] = [];
  for (let cur = path.resolve(dir); ; cur = path.dirname(cur)) {
    if (
      await fsp.stat(cur).then(
        () => true,
        () => false,
      )
    )
      break;
    missing.unshift(cur);
    if (path.dirname(cur) === cur) break;
  }
  for (const d of missing) await fsp.mkdir(d);
  return missing[0];
}

export class AppHost {
  private readonly mounts = new Map<string, MountHost>();
  private readonly listeners = new Set<(e: AppEvent) => void>();
  private readonly settingsFile: AppSettingsFile;
  private uploadsPaused = false;
  private timer: NodeJS.Timeout | undefined;
  private lastSent = '';
  private sampling: Promise<void> | undefined;

  constructor(private readonly o: AppHostOptions) {
    this.settingsFile = AppSettingsFile.in(o.homes.configDir);
  }

  /** Reads the per-machine app settings; call once before serving. */
  async init(): Promise<void> {
    const { settings, damaged } = await this.settingsFile.load();
    if (damaged) this.o.log(`the app settings file was damaged; moved it to ${damaged} and started from defaults`);
    this.uploadsPaused = settings.uploadsPaused;
  }

  // ---- status -------------------------------------------------------------------------------

  /** The status of a linked filespace: from this app's own mount directly, else as statusOf finds it. */
  private async statusOfLinked(cfg: LinkConfig): Promise<StatusDto> {
    const host = this.mounts.get(cfg.name);
    return host ? host.status() : statusOf(this.o.homes, cfg);
  }

  private async summaryOf(cfg: LinkConfig): Promise<FilespaceSummary> {
    const status = await this.statusOfLinked(cfg);
    const location =
      cfg.store.kind === 's3'
        ? `s3://${cfg.store.bucket}${cfg.store.prefix ? `/${cfg.store.prefix}` : ''}${cfg.store.endpoint ? ` at ${cfg.store.endpoint}` : ''}`
        : `local store ${cfg.store.root}`;
    return { name: cfg.name, location, kind: cfg.store.kind, mountPoint: cfg.mountPoint, cacheDir: cfg.cacheDir, status };
  }

  async status(): Promise<AppStatus> {
    const filespaces: FilespaceSummary[] = [];
    for (const name of await listConfigs(this.o.homes)) {
      const cfg = await loadConfig(this.o.homes, name).catch(() => undefined);
      if (cfg) filespaces.push(await this.summaryOf(cfg));
    }
    return { filespaces, uploadsPaused: this.uploadsPaused, keys: await this.o.vault.info() };
  }

  /** Subscribes to status events; the first event arrives at once. Returns the unsubscribe. */
  subscribe(listener: (e: AppEvent) => void): () => void {
    this.listeners.add(listener);
    void this.status().then(
      (status) => listener({ type: 'status', status }),
      (err) => this.o.log(`status: ${(err as Error).message}`),
    );
    if (!this.timer) {
      this.timer = setInterval(() => void this.publish(), this.o.sampleMs ?? 1000);
      this.timer.unref();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  /** Sends the current status to every listener if it changed since the last send. */
  publish(force = false): Promise<void> {
    if (this.listeners.size === 0) return Promise.resolve();
    // One sample at a time; callers during a sample share it. (`finally` runs after the
    // assignment even if the sample settles at once, so `sampling` never sticks.)
    this.sampling ??= this.sendIfChanged(force).finally(() => (this.sampling = undefined));
    return this.sampling;
  }

  private async sendIfChanged(force: boolean): Promise<void> {
    try {
      const status = await this.status();
      const text = JSON.stringify(status);
      if (!force && text === this.lastSent) return;
      this.lastSent = text;
      for (const l of this.listeners) l({ type: 'status', status });
    } catch (err) {
      this.o.log(`status: ${(err as Error).message}`);
    }
  }

  // ---- helpers ------------------------------------------------------------------------------

  private async storedKeys(): Promise<Credentials> {
    const keys = await this.o.vault.keys();
    if (!keys) throw new HostError('no AWS keys are stored yet: enter them first', 'NO_KEYS');
    return keys;
  }

  private suggestMountPoint(name: string): string {
    return path.join(this.o.mountRoot ?? path.join(os.homedir(), 'Filespace'), name);
  }

  /** The store and passphrase to run `cfg` with: keychain-held for app links, the CLI's for others. */
  private async secretsFor(cfg: LinkConfig): Promise<{ store?: ObjectStore; passphrase?: string }> {
    if (cfg.secrets !== 'keychain') return {};
    const passphrase = await this.o.vault.passphrase(cfg.filespaceId);
    if (passphrase === undefined)
      throw new HostError(`the passphrase of "${cfg.name}" is not in the keychain; unlink it and link it again`, 'NO_PASSPHRASE');
    if (cfg.store.kind === 'local') return { passphrase, store: openStore(cfg.store) };
    const keys = await this.storedKeys();
    return { passphrase, store: storeFor(keys, { bucket: cfg.store.bucket, prefix: cfg.store.prefix }) };
  }

  /** The keys of a linked filespace (unlocked with its passphrase) and its store, for a moment. */
  private async withKeys<T>(cfg: LinkConfig, fn: (keys: Keys, store: ObjectStore) => Promise<T>): Promise<T> {
    const secrets = await this.secretsFor(cfg);
    const store = secrets.store ?? openStore(cfg.store);
    try {
      const passphrase = secrets.passphrase ?? (await readPassphraseFile(cfg.passphraseFile));
      const { keys } = await unlockFilespace(store, passphrase);
      return await fn(keys, store);
    } finally {
      await store.close();
    }
  }

  /** Who holds the write lease of `name`, as the bucket says. */
  async writer(name: string): Promise<WriterInfo> {
    const cfg = await loadConfig(this.o.homes, name);
    const view = await this.withKeys(cfg, (keys, store) => readLease(store, keys.metaKey));
    if (!view) return { writer: null };
    const r = view.record;
    const self = await machineOf(cfg.cacheDir);
    return {
      writer: {
        computer: r.holder.name,
        since: r.acquiredAt,
        lastHeard: r.renewedAt,
        live: !isExpired(r),
        thisComputer: r.holder.id === self.id,
      },
    };
  }

  /** LEASE_HELD in the app's words: who writes, and the two ways on. */
  private async leaseHeld(name: string, err: unknown): Promise<Error> {
    if (!(err instanceof UserError && err.code === 'LEASE_HELD')) return err as Error;
    const w = await this.writer(name).catch(() => ({ writer: null }));
    const who = w.writer ? w.writer.computer : 'another computer';
    return new HostError(
      `"${name}" is being written by ${who}: open it read-only here, or take over if ${who} is off or gone`,
      'LEASE_HELD',
    );
  }

  async mount(name: string, mode: 'write' | 'read' = 'write', takeover = false): Promise<FilespaceSummary> {
    const cfg = await loadConfig(this.o.homes, name);
    const running = this.mounts.get(name);
    if (running) {
      if (running.mode === mode && !takeover)
        throw new HostError(`"${name}" is already mounted at ${cfg.mountPoint}`, 'ALREADY_MOUNTED');
      // A switch (e.g. a follower starts writing): without takeover, only once nobody else writes,
      // so a refused switch leaves the follower mounted.
      if (mode === 'write' && !takeover) {
        const w = await this.writer(name);
        if (w.writer && w.writer.live && !w.writer.thisComputer)
          throw new HostError(
            `"${name}" is still being written by ${w.writer.computer}: it can write here once that computer unmounts, or take over`,
            'LEASE_HELD',
          );
      }
      await this.unmount(name, false);
    }
    const current = await statusOf(this.o.homes, cfg);
    if (current.state !== 'unmounted')
      throw new HostError(`"${name}" is already mounted at ${cfg.mountPoint} by another process`, 'ALREADY_MOUNTED');
    await checkPlacement(
      { name, mountPoint: cfg.mountPoint, cacheDir: cfg.cacheDir, mounting: true },
      await linkedPlaces(this.o.homes),
    );
    const secrets = await this.secretsFor(cfg);
    const created = await fsp.mkdir(cfg.mountPoint, { recursive: true });
    const host = new MountHost(cfg, this.o.homes, { log: this.o.log, ...secrets, mode, takeover });
    this.mounts.set(name, host);
    try {
      await host.start();
    } catch (err) {
      this.mounts.delete(name);
      await secrets.store?.close().catch(() => undefined);
      // A failed mount leaves no folder behind that it made.
      if (created !== undefined) await removeCreatedFolders(cfg.mountPoint, created);
      throw await this.leaseHeld(name, err);
    }
    void host.done.then(() => {
      this.mounts.delete(name);
      void this.publish();
    });
    if (this.uploadsPaused) host.setUploadsPaused(true);
    void this.publish();
    return this.summaryOf(cfg);
  }

  async unmount(name: string, force: boolean): Promise<void> {
    const host = this.mounts.get(name);
    if (!host) throw new HostError(`"${name}" is not mounted by this app`, 'NOT_MOUNTED');
    await host.unmount(force);
    this.mounts.delete(name);
    void this.publish();
  }

  /** Bytes and files not yet in the bucket, over the filespaces this app has mounted. */
  async pending(): Promise<{ bytes: number; files: number; metaOps: number }> {
    const s = await this.status();
    // Counted as the status headline counts them (contract/headline.ts).
    return pendingOf(s.filespaces.filter((f) => this.mounts.has(f.name)).map((f) => f.status));
  }

  /** Waits until every mounted filespace has uploaded everything (or the deadline passes). */
  async syncAll(timeoutMs: number): Promise<boolean> {
    let done = true;
    for (const host of this.mounts.values()) {
      const r = await host.sync(timeoutMs);
      done &&= r.done;
    }
    return done;
  }

  /** Unmounts everything (forcing when busy); pending data stays in the caches for next time. */
  async shutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    for (const host of [...this.mounts.values()])
      await host.stopOnSignal().catch((err) => this.o.log(`unmount: ${(err as Error).message}`));
    this.mounts.clear();
  }

  /** Mounts the filespaces chosen to mount at start; one that fails is logged and reported, not fatal. */
  async mountAtStart(): Promise<Array<{ name: string; error?: string }>> {
    const { settings } = await this.settingsFile.load();
    const linked = new Set(await listConfigs(this.o.homes));
    const out: Array<{ name: string; error?: string }> = [];
    for (const name of settings.mountAtStart) {
      if (!linked.has(name)) {
        out.push({ name, error: 'no longer linked' });
        continue;
      }
      try {
        await this.mount(name);
        out.push({ name });
      } catch (err) {
        this.o.log(`mount at start of "${name}" failed: ${(err as Error).message}`);
        out.push({ name, error: (err as Error).message });
      }
    }
    return out;
  }

  mountedNames(): string[] {
    return [...this.mounts.keys()];
  }

  private async link(req: AppParsedRequest<'filespace.link'>): Promise<FilespaceSummary> {
    const keys = await this.storedKeys();
    const target: Target = { bucket: req.target.bucket, prefix: req.target.prefix.replace(/^\/+|\/+$/g, '') };
    await checkPlacement(
      { name: req.name, mountPoint: req.mountPoint, cacheDir: path.join(this.o.homes.cacheRoot, req.name) },
      await linkedPlaces(this.o.homes),
    );
    await checkMountPoint(req.mountPoint, 'allow');
    const free = await freeBytesAt(this.o.homes.cacheRoot);
    if (req.cacheCapBytes > free)
      throw new HostError('the cache cap is larger than the free space on the cache disk', 'CACHE_TOO_BIG');
    let recoveryKey: string | undefined;
    if (req.mode === 'create') {
      this.checkNewPassphrase(req.passphrase, [target.bucket, target.prefix, req.name]);
      recoveryKey = req.recoveryKey === undefined ? undefined : parseRecoveryKey(req.recoveryKey);
      if (req.recoveryKey !== undefined && recoveryKey === undefined)
        throw new HostError(`not a recovery key: ${RECOVERY_KEY_HINT}`, 'BAD_RECOVERY_KEY');
    }
    // The folder first: one that cannot be made leaves the bucket as it was.
    const created = await makeFolders(req.mountPoint).catch((e: Error) => {
      throw new HostError(`cannot make the mount point ${req.mountPoint}: ${e.message}`, 'BAD_MOUNT_POINT');
    });
    if (req.mode === 'create') {
      const store = storeFor(keys, target);
      try {
        await createFilespace(store, req.passphrase, this.o.chunkSizeBytes ?? 4 * 1024 * 1024, { recoveryKey });
      } catch (err) {
        if (created !== undefined) await removeCreatedFolders(req.mountPoint, created);
        throw err;
      } finally {
        await store.close();
      }
    }
    const spec = {
      kind: 's3' as const,
      bucket: target.bucket,
      prefix: target.prefix,
      region: keys.region,
      endpoint: keys.endpoint,
      pathStyle: keys.pathStyle,
    };
    let cfg: LinkConfig;
    try {
      cfg = await linkFilespace(this.o.homes, req.name, spec, req.mountPoint, undefined, req.cacheCapBytes, '', req.passphrase, {
        store: storeFor(keys, target),
        secrets: 'keychain',
      });
      if (!cfg.conditionalWrites) this.o.log(NO_CONDITIONAL_NOTE);
    } catch (err) {
      if (created !== undefined) await removeCreatedFolders(req.mountPoint, created);
      throw err;
    }
    await this.o.vault.savePassphrase(cfg.filespaceId, req.passphrase);
    void this.publish();
    return this.summaryOf(cfg);
  }

  /** Refuses a new passphrase the strength estimator rates below "good" (the wizard said so already). */
  private checkNewPassphrase(passphrase: string, userInputs: string[]): void {
    const strength = passphraseStrength(passphrase, userInputs);
    if (strength.score < MIN_PASSPHRASE_SCORE)
      throw new HostError(`the passphrase is ${strength.label}: ${strength.hint}`, 'WEAK_PASSPHRASE');
  }

  /** Lost passphrase: the recovery key proves the right to set a new one in the bucket. */
  private async recover(req: AppParsedRequest<'filespace.recover'>): Promise<void> {
    const recoveryKey = parseRecoveryKey(req.recoveryKey);
    if (recoveryKey === undefined) throw new HostError(`not a recovery key: ${RECOVERY_KEY_HINT}`, 'BAD_RECOVERY_KEY');
    const target: Target = { bucket: req.target.bucket, prefix: req.target.prefix.replace(/^\/+|\/+$/g, '') };
    this.checkNewPassphrase(req.newPassphrase, [target.bucket, target.prefix]);
    const store = storeFor(await this.storedKeys(), target);
    try {
      await resetPassphrase(store, recoveryKey, req.newPassphrase);
    } finally {
      await store.close();
    }
    this.o.log(`set a new passphrase for s3://${target.bucket}/${target.prefix} with its recovery key`);
  }

  private async asideSets(name: string): Promise<AsideSetDto[]> {
    const cfg = await loadConfig(this.o.homes, name);
    const sets = await this.withKeys(cfg, (keys) => listAside(cfg.cacheDir, keys.cacheKey));
    return sets.map((m) => ({
      id: m.id,
      createdAt: m.createdAt,
      reason: m.reason,
      files: m.files.map((f) => ({
        path: f.path,
        ...(f.links && f.links.length > 0 ? { links: [...f.links] } : {}),
        size: f.size,
        incomplete: f.missing !== undefined,
      })),
      removed: m.removed,
    }));
  }

  private async exportAsideSet(name: string, id: string, dir: string): Promise<{ files: number; dir: string }> {
    if (!path.isAbsolute(dir)) throw new HostError('the folder must be a full path', 'NOT_ABSOLUTE');
    const cfg = await loadConfig(this.o.homes, name);
    const files = await this.withKeys(cfg, (keys) => exportAside(cfg.cacheDir, keys.cacheKey, id, dir));
    return { files, dir: path.resolve(dir) };
  }

  private async discardAsideSet(name: string, id: string): Promise<void> {
    const cfg = await loadConfig(this.o.homes, name);
    const host = this.mounts.get(name);
    if (host) await host.discardAside(id);
    else await this.withKeys(cfg, (keys) => discardAside(cfg.cacheDir, keys.cacheKey, id));
    void this.publish();
  }

  /** The running mount of `name` here, for snapshot changes: they are made by the computer that writes. */
  private writingHost(name: string, what: string): MountHost {
    const host = this.mounts.get(name);
    if (!host || host.state !== 'mounted')
      throw new HostError(`${what}: "${name}" is not mounted on this computer; mount it first`, 'NOT_MOUNTED');
    return host;
  }

  private async snapshotList(name: string): Promise<SnapshotListDto> {
    // A mount here has the snapshots counted and the live tree: it answers at once.
    const host = this.mounts.get(name);
    if (host?.state === 'mounted') return host.listSnapshots();
    const cfg = await loadConfig(this.o.homes, name);
    const secrets = await this.secretsFor(cfg);
    const store = secrets.store ?? openStore(cfg.store);
    try {
      const passphrase = secrets.passphrase ?? (await readPassphraseFile(cfg.passphraseFile));
      const { header, keys } = await unlockFilespace(store, passphrase);
      return await snapshotsIn(store, header, keys, cfg.cacheDir);
    } finally {
      await store.close();
    }
  }

  /** Whether one of this app's mounts serves a snapshot mounted at `dir` (the window may open it). */
  servesSnapshotAt(dir: string): boolean {
    return [...this.mounts.values()].some((h) => h.hasSnapshotMount(dir));
  }

  /** Mounts snapshot `id` read-only in `<mount point>-snapshots/<id>` (outside the filespace), once. */
  private async browseSnapshot(name: string, id: string): Promise<{ dir: string }> {
    checkSnapshotId(id);
    const host = this.writingHost(name, 'browsing a snapshot');
    const cfg = await loadConfig(this.o.homes, name);
    const dir = path.join(`${cfg.mountPoint.replace(/\/+$/, '')}-snapshots`, id);
    if (host.hasSnapshotMount(dir)) return { dir };
    await fsp.mkdir(dir, { recursive: true });
    await host.mountSnapshot(id, dir);
    return { dir };
  }

  /** "Try it locally": a filespace on an embedded store in the cache folder, no AWS involved. */
  /** Imports a local folder into the root of a filespace this app mounts, in its MountHost (host/transfer.ts). */
  private async importFolder(name: string, source: string): Promise<void> {
    const host = this.mounts.get(name);
    if (!host) throw new HostError(`"${name}" is not mounted here: mount it to import a folder into it`, 'NOT_MOUNTED');
    if (!path.isAbsolute(source)) throw new HostError(`"${source}" is not a full path (e.g. /home/you/Photos)`, 'NOT_ABSOLUTE');
    const folder = path.resolve(source);
    await host.startTransfer({
      direction: 'import',
      inside: `/${path.basename(folder)}`,
      outside: { kind: 'local', path: folder },
    });
    void this.publish();
  }

  private async demo(): Promise<FilespaceSummary> {
    const h = this.o.homes;
    if (!(await listConfigs(h)).includes(DEMO_NAME)) {
      const root = path.join(h.cacheRoot, 'demo-store');
      const mnt = this.suggestMountPoint(DEMO_NAME);
      await checkPlacement(
        { name: DEMO_NAME, mountPoint: mnt, cacheDir: path.join(h.cacheRoot, DEMO_NAME) },
        await linkedPlaces(h),
      );
      await checkMountPoint(mnt, 'allow');
      const passphrase = randomBytes(18).toString('base64url');
      const store = new LocalDiskStore(root);
      try {
        if (await store.head('filespace.json'))
          throw new HostError(`an old demo store is in ${root}; remove it to start a new demo`, 'EXISTS');
        await createFilespace(store, passphrase, 4 * 1024 * 1024);
      } finally {
        await store.close();
      }
      await fsp.mkdir(mnt, { recursive: true });
      const cap = Math.min(1024 ** 3, Math.floor((await freeBytesAt(h.cacheRoot)) / 2));
      const cfg = await linkFilespace(h, DEMO_NAME, { kind: 'local', root }, mnt, undefined, cap, '', passphrase, {
        secrets: 'keychain',
      });
      await this.o.vault.savePassphrase(cfg.filespaceId, passphrase);
    }
    const cfg = await loadConfig(h, DEMO_NAME);
    return this.mounts.has(DEMO_NAME) ? this.summaryOf(cfg) : this.mount(DEMO_NAME);
  }

  private async machineSettings(name: string): Promise<MachineSettings> {
    const cfg = await loadConfig(this.o.homes, name);
    const s = settingsOf(cfg);
    return {
      name,
      cacheCapBytes: s.cacheCapBytes,
      uploadConcurrency: s.uploadConcurrency,
      downloadConcurrency: s.downloadConcurrency,
      prefetchMaxChunks: s.prefetchMaxChunks,
      uploadDelayMs: s.uploadDelayMs,
      uploadLimitBytesPerSec: s.uploadLimitBytesPerSec,
      cacheDir: cfg.cacheDir,
      cacheDiskFreeBytes: await freeBytesAt(cfg.cacheDir),
    };
  }

  /**
   * Moves the cache of an unmounted filespace, data included (pending uploads too), and points
   * its configuration there. A rename when both are on one disk; otherwise a copy, then the old
   * folder is removed only after the configuration names the new one.
   */
  private async moveCache(name: string, to: string): Promise<MachineSettings> {
    const cfg = await loadConfig(this.o.homes, name);
    const s = await this.statusOfLinked(cfg);
    if (this.mounts.has(name) || s.state !== 'unmounted')
      throw new HostError(`"${name}" is mounted; unmount it before moving its cache`, 'MOUNTED');
    const dest = path.resolve(to);
    if (!path.isAbsolute(to)) throw new HostError('the cache folder must be a full path', 'NOT_ABSOLUTE');
    if (dest === path.resolve(cfg.cacheDir)) return this.machineSettings(name);
    if (dest.startsWith(`${path.resolve(cfg.cacheDir)}${path.sep}`))
      throw new HostError('the new cache folder cannot be inside the current one', 'BAD_CACHE_DIR');
    await checkPlacement({ name, mountPoint: cfg.mountPoint, cacheDir: dest }, await linkedPlaces(this.o.homes));
    const existing = await fsp
      .readdir(dest)
      .catch((err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? undefined : Promise.reject(err)));
    if (existing && existing.length > 0)
      throw new HostError(`${dest} is not empty; pick an empty or new folder`, 'CACHE_NOT_EMPTY');
    if (existing) await fsp.rmdir(dest);
    await fsp.mkdir(path.dirname(dest), { recursive: true, mode: 0o700 });
    let copied = false;
    try {
      await fsp.rename(cfg.cacheDir, dest);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await fsp.cp(cfg.cacheDir, dest, { recursive: true, errorOnExist: true, force: false, preserveTimestamps: true });
      copied = true;
    }
    await saveConfig(this.o.homes, { ...cfg, cacheDir: dest });
    if (copied) await fsp.rm(cfg.cacheDir, { recursive: true, force: true });
    void this.publish();
    return this.machineSettings(name);
  }

  private async unlink(name: string, discardPending: boolean): Promise<void> {
    const cfg = await loadConfig(this.o.homes, name);
    const s = await this.statusOfLinked(cfg);
    if (this.mounts.has(name) || s.state !== 'unmounted')
      throw new HostError(`"${name}" is mounted; unmount it first`, 'MOUNTED');
    if ((s.dirtyBytes > 0 || s.dirtyFiles > 0) && !discardPending) {
      throw new HostError(
        `"${name}" has ${s.dirtyFiles} file(s) not yet uploaded; mount it and let them upload, or confirm to discard them`,
        'DIRTY',
      );
    }
    await deleteConfig(this.o.homes, name);
    await fsp.rm(cfg.cacheDir, { recursive: true, force: true });
    if (cfg.secrets === 'keychain') await this.o.vault.forgetPassphrase(cfg.filespaceId);
    void this.publish();
  }

  readonly handlers: AppHandlers = {
    'app.status': async () => this.status(),
    'keys.check': async (c) => {
      const buckets = await checkKeys(c);
      const keys = await this.o.vault.saveKeys(c);
      void this.publish();
      return { keys, buckets };
    },
    'keys.forget': async () => {
      await this.o.vault.forgetKeys();
      void this.publish();
      return { ok: true as const };
    },
    'bucket.check': async (t) => checkBucket(await this.storedKeys(), t),
    'filespace.probe': async ({ target, passphrase }) => {
      const store = storeFor(await this.storedKeys(), target);
      try {
        await unlockFilespace(store, passphrase);
        return { exists: true };
      } catch (err) {
        if (err instanceof UserError && err.code === 'NO_FILESPACE') return { exists: false };
        throw err;
      } finally {
        await store.close();
      }
    },
    'filespace.suggest': async ({ name }) => {
      const free = await freeBytesAt(this.o.homes.cacheRoot);
      return {
        mountPoint: this.suggestMountPoint(name),
        cacheDir: path.join(this.o.homes.cacheRoot, name),
        cacheDiskFreeBytes: free,
        cacheCapBytes: Math.max(16 * 1024 * 1024, Math.min(DEFAULT_CACHE_CAP, Math.floor(free / 2))),
      };
    },
    'mountpoint.check': async ({ path: dir }) => {
      if (path.isAbsolute(dir)) await checkPlacement({ mountPoint: dir }, await linkedPlaces(this.o.homes));
      await checkMountPoint(dir, 'allow');
      return { ok: true as const };
    },
    'filespace.link': (req) => this.link(req),
    'filespace.demo': () => this.demo(),
    'filespace.mount': ({ name, mode, takeover }) => this.mount(name, mode, takeover),
    'filespace.writer': ({ name }) => this.writer(name),
    'filespace.recover': async (req) => {
      await this.recover(req);
      return { ok: true as const };
    },
    'aside.list': async ({ name }) => ({ sets: await this.asideSets(name) }),
    'aside.export': ({ name, id, dir }) => this.exportAsideSet(name, id, dir),
    'aside.discard': async ({ name, id }) => {
      await this.discardAsideSet(name, id);
      return { ok: true as const };
    },
    'snapshot.list': ({ name }) => this.snapshotList(name),
    'snapshot.create': ({ name, label }) => this.writingHost(name, 'taking a snapshot').createSnapshot(label),
    'snapshot.delete': async ({ name, id }) => {
      await this.writingHost(name, 'deleting a snapshot').deleteSnapshot(id);
      return { ok: true as const };
    },
    'snapshot.browse': ({ name, id }) => this.browseSnapshot(name, id),
    'filespace.unmount': async ({ name, force }) => {
      await this.unmount(name, force);
      return { ok: true as const };
    },
    'filespace.unlink': async ({ name, discardPending }) => {
      await this.unlink(name, discardPending);
      return { ok: true as const };
    },
    'settings.get': ({ name }) => this.machineSettings(name),
    'settings.moveCache': ({ name, cacheDir }) => this.moveCache(name, cacheDir),
    'settings.set': async ({ name, change }) => {
      const applied = await applySettings(this.o.homes, await loadConfig(this.o.homes, name), change, this.mounts.get(name));
      void this.publish();
      return { applied };
    },
    'transfer.import': async ({ name, source }) => {
      await this.importFolder(name, source);
      return { ok: true as const };
    },
    'transfer.cancel': async ({ name }) => {
      this.mounts.get(name)?.cancelTransfer();
      void this.publish();
      return { ok: true as const };
    },
    'app.settings.get': async () => {
      const { settings } = await this.settingsFile.load();
      return { startAtLogin: settings.startAtLogin, mountAtStart: settings.mountAtStart, uploadsPaused: settings.uploadsPaused };
    },
    'app.settings.set': async (change) => {
      const linked = new Set(await listConfigs(this.o.homes));
      const unknown = (change.mountAtStart ?? []).filter((n) => !linked.has(n));
      if (unknown.length > 0) throw new HostError(`not linked on this computer: ${unknown.join(', ')}`, 'UNKNOWN_NAME');
      const next = await this.settingsFile.update({
        ...(change.startAtLogin !== undefined ? { startAtLogin: change.startAtLogin } : {}),
        ...(change.mountAtStart !== undefined ? { mountAtStart: [...new Set(change.mountAtStart)] } : {}),
      });
      this.o.onAppSettings?.(next);
      return { startAtLogin: next.startAtLogin, mountAtStart: next.mountAtStart, uploadsPaused: next.uploadsPaused };
    },
    'pins.add': async ({ name, path: given }) => {
      const cfg = await loadConfig(this.o.homes, name);
      await pinLinked(this.o.homes, cfg, [filespacePathOf(cfg.mountPoint, given, cfg.mountPoint)], this.mounts.get(name));
      void this.publish();
      return { ok: true as const };
    },
    'pins.remove': async ({ name, path: given }) => {
      const cfg = await loadConfig(this.o.homes, name);
      await unpinLinked(this.o.homes, cfg, [filespacePathOf(cfg.mountPoint, given, cfg.mountPoint)], this.mounts.get(name));
      void this.publish();
      return { ok: true as const };
    },
    'uploads.pause': async ({ paused }) => {
      this.uploadsPaused = paused;
      await this.settingsFile.update({ uploadsPaused: paused });
      for (const host of this.mounts.values()) host.setUploadsPaused(paused);
      void this.publish();
      return { ok: true as const };
    },
  };
}
