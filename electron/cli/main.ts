/**
 * The `filespace` command: argument parsing and printing over the host library
 * (electron/host/), which does the work. Each subcommand parses its flags, validates
 * everything before it changes anything, and on a user error prints one line naming the
 * problem and the fix, then exits 1 (2 for bad usage). Commands that act on a running mount
 * reach it over its control socket (host/control.ts), whichever process runs it. Sizes, rates
 * and durations typed here are read in units.ts, setting keys in settingKeys.ts; everything
 * past this folder carries numbers.
 */

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { openSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseArgs, ParseArgsConfig } from 'node:util';
import { StatusDto } from '../contract/api';
import { clockTime, formatBytes, formatRate, leaseLine } from '../contract/format';
import { formatRecoveryKey, newRecoveryKey, parseRecoveryKey, RECOVERY_KEY_HINT } from '../contract/recoveryKey';
import { settledWithin, sleep } from '../engine/util/concurrency';
import {
  Homes,
  LinkConfig,
  StoreSpec,
  configPath,
  deleteConfig,
  homes,
  listConfigs,
  loadConfig,
  logPath,
  readPassphraseFile,
  settingsOf,
  socketPath,
} from '../host/config';
import { callControl, notRunning } from '../host/control';
import { HostError, isUserFacing } from '../host/errors';
import type { MountHost } from '../host/mountHost';
import { unmountLinked } from '../host/unmount';
import { settingFromKey } from './settingKeys';
import { engineProcessEnv } from './engineProcess';
import { tuneHeapForEngines } from '../host/engineHeap';
import { parseDuration, parseSize } from './units';
import { log } from '../host/log';

// This pinned SDK supports Node 20 (the servers' runtime); its notice about future releases is
// for whoever upgrades the SDK, not for users of the command.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const USAGE = `usage:
  filespace init    --bucket B [--prefix P] [--endpoint URL] [--region R] [--path-style]
                    [--chunk-size 4MiB] --passphrase-file F [--recovery-key]
                    (--recovery-key prints a recovery key once: it can set a new
                     passphrase if this one is lost; without either the data is gone)
  filespace passphrase --bucket B [--prefix P] [--endpoint URL] [--region R] [--path-style]
                    --recovery-key-file K --passphrase-file NEW
                    (sets a new passphrase with the recovery key; machines linked with
                     the old one link again with the new one)
  filespace link    --bucket B [--prefix P] [--endpoint URL] [--region R] [--path-style]
                    --mount-point DIR [--cache-dir DIR] [--cache-size 20GiB] [--name NAME]
                    --passphrase-file F
  filespace mount   [NAME] [--foreground] [--read-only | --takeover]
                    (--read-only follows the machine that writes; --takeover takes the
                     write lease from another machine, which then stops writing)
  filespace unmount [NAME] [--force]
  filespace status  [NAME] [--json]
  filespace sync    [NAME] [--timeout 10m]
  filespace set     NAME KEY VALUE       (keys: cache-size, upload-delay, upload-concurrency,
                                          upload-limit (e.g. 2MiB per second, or off),
                                          download-concurrency, prefetch-chunks, read-timeout,
                                          write-stall-timeout, probe-timeout,
                                          lease-ttl, follow-interval, gc-grace, gc-interval,
                                          compact-interval, compact-grace)
  filespace check   [NAME] [--deep]        (verifies metadata against chunks; fixes nothing)
  filespace repair  [NAME]                 (damaged local metadata: keeps the changes it can read
                                            as set-aside files, then starts over from the bucket)
  filespace gc      [NAME]                 (deletes unreferenced chunks after the grace period)
  filespace aside   [NAME] list | export ID DIR | discard ID
                                           (changes kept aside after another machine took over)
  filespace pin     NAME PATH… | NAME --list (keeps files and folders in this machine's cache
                                           for use offline; PATH in the mount point or the filespace)
  filespace unpin   NAME PATH…
  filespace snapshot NAME create [LABEL] | list [--json] | delete ID | mount ID DIR | unmount DIR
                    | schedule hourly=N daily=N | schedule off
                                           (read-only point-in-time copies kept in the bucket)
  filespace import  NAME SOURCE [DEST]   (SOURCE: a folder, or s3://BUCKET/PREFIX of plain objects;
                                          DEST: a folder in the filespace, default "/";
                                          resumable: a re-run skips files already in)
  filespace export  NAME PATH DEST       (PATH: a folder in the filespace; DEST: a folder or s3://BUCKET/PREFIX)
                    [--endpoint URL] [--region R] [--path-style]   (for an S3-compatible store)
  filespace unlink  NAME [--force]
  filespace list
  filespace demo`;

class UsageError extends Error {}

const storeFlags = {
  bucket: { type: 'string' },
  prefix: { type: 'string' },
  endpoint: { type: 'string' },
  region: { type: 'string' },
  'path-style': { type: 'boolean' },
  'passphrase-file': { type: 'string' },
} as const;

/** Looks like a negative number ("-1", "-5MiB"): a value, never an option (no option is a digit). */
const NEGATIVE_RE = /^-[\d.]/;

function parse<T extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: T, maxPositionals: number) {
  // A negative value is passed on as a value, so its own check names it in one line: after an
  // option that takes one it is that option's value; anywhere else it is a positional.
  const negatives: string[] = [];
  const shaped: string[] = [];
  for (const arg of args) {
    const prev = shaped[shaped.length - 1];
    const flag = prev?.startsWith('--') && !prev.includes('=') ? options[prev.slice(2)] : undefined;
    if (NEGATIVE_RE.test(arg) && flag?.type === 'string') shaped[shaped.length - 1] = `${prev}=${arg}`;
    else if (NEGATIVE_RE.test(arg)) shaped.push(`\u0000${negatives.push(arg) - 1}`);
    else shaped.push(arg);
  }
  let parsed;
  try {
    parsed = parseArgs({ args: shaped, options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  parsed.positionals = parsed.positionals.map((p) => (p.startsWith('\u0000') ? negatives[Number(p.slice(1))]! : p));
  if (parsed.positionals.length > maxPositionals)
    throw new UsageError(`unexpected argument "${parsed.positionals[maxPositionals]}"`);
  return parsed;
}

function required(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new UsageError(`--${flag} is required`);
  return v;
}

function storeSpecFrom(values: Record<string, string | boolean | undefined>): StoreSpec {
  const bucket = required(values.bucket as string | undefined, 'bucket');
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new HostError(`"${bucket}" is not a valid S3 bucket name (3-63 lowercase letters, digits, "." and "-")`, 'BAD_BUCKET');
  }
  const endpoint = values.endpoint as string | undefined;
  if (endpoint !== undefined) {
    try {
      const u = new URL(endpoint);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
    } catch {
      throw new HostError(`--endpoint "${endpoint}" is not an http(s) URL`, 'BAD_ENDPOINT');
    }
  }
  const prefix = ((values.prefix as string | undefined) ?? '').replace(/^\/+|\/+$/g, '');
  return {
    kind: 's3',
    bucket,
    prefix,
    endpoint,
    region:
      (values.region as string | undefined) ??
      process.env.AWS_REGION ??
      process.env.AWS_DEFAULT_REGION ??
      (endpoint ? 'us-east-1' : undefined),
    pathStyle: Boolean(values['path-style']),
  };
}

function sizeFlag(v: string | undefined, flag: string, dflt: number): number {
  if (v === undefined) return dflt;
  try {
    return parseSize(v);
  } catch (err) {
    throw new HostError(`--${flag}: ${(err as Error).message}`, 'BAD_SIZE');
  }
}

async function cmdInit(args: string[]): Promise<void> {
  const { createFilespace, explainStoreError, validateChunkSize } = await import('../engine/filespace');
  const { probeConditionalWrites } = await import('../engine/meta/lease');
  const { NO_CONDITIONAL_NOTE } = await import('../host/link');
  const { openStore } = await import('../host/stores');
  const { values } = parse(args, { ...storeFlags, 'chunk-size': { type: 'string' }, 'recovery-key': { type: 'boolean' } }, 0);
  const spec = storeSpecFrom(values);
  const chunkSize = sizeFlag(values['chunk-size'], 'chunk-size', 4 * 1024 * 1024);
  validateChunkSize(chunkSize);
  const passphrase = await readPassphraseFile(required(values['passphrase-file'], 'passphrase-file'));
  const recoveryKey = values['recovery-key'] ? newRecoveryKey() : undefined;
  const store = openStore(spec);
  try {
    const conditional = await probeConditionalWrites(store, randomBytes(8).toString('hex')).catch((err) => {
      throw explainStoreError(err, store);
    });
    const header = await createFilespace(store, passphrase, chunkSize, { recoveryKey });
    console.log(`created filespace ${header.id} at ${store.description} (chunk size ${formatBytes(chunkSize)})`);
    if (recoveryKey !== undefined) {
      console.log(`recovery key: ${formatRecoveryKey(recoveryKey)}`);
      console.log(
        'write it down or print it and keep it offline: it is shown only now and stored nowhere; ' +
          'with it, "filespace passphrase" sets a new passphrase. Without the passphrase or this key the data is gone.',
      );
    }
    if (!conditional) console.log(NO_CONDITIONAL_NOTE);
    console.log('next: filespace link --bucket ... --mount-point DIR --passphrase-file F');
  } finally {
    await store.close();
  }
}

/** Reads a recovery key the user put in a file (owner-only, like a passphrase file). */
async function readRecoveryKeyFile(file: string): Promise<string> {
  const st = await fsp.stat(file).catch(() => undefined);
  if (!st?.isFile()) throw new HostError(`recovery key file ${file} does not exist or is not a file`, 'BAD_INPUT');
  if ((st.mode & 0o077) !== 0)
    throw new HostError(`recovery key file ${file} is readable by other users; run "chmod 600 ${file}"`, 'PASSPHRASE_PERMS');
  const key = parseRecoveryKey(await fsp.readFile(file, 'utf8'));
  if (key === undefined) throw new HostError(`${file} holds no recovery key: ${RECOVERY_KEY_HINT}`, 'BAD_RECOVERY_KEY');
  return key;
}

async function cmdPassphrase(args: string[]): Promise<void> {
  const { resetPassphrase } = await import('../engine/filespace');
  const { openStore } = await import('../host/stores');
  const { values } = parse(args, { ...storeFlags, 'recovery-key-file': { type: 'string' } }, 0);
  const spec = storeSpecFrom(values);
  const recoveryKey = await readRecoveryKeyFile(required(values['recovery-key-file'], 'recovery-key-file'));
  const passphrase = await readPassphraseFile(required(values['passphrase-file'], 'passphrase-file'));
  const store = openStore(spec);
  try {
    const header = await resetPassphrase(store, recoveryKey, passphrase);
    console.log(`set a new passphrase for filespace ${header.id} at ${store.description}; the recovery key still works`);
    console.log('machines linked with the old passphrase: unlink and link again with the new one');
  } finally {
    await store.close();
  }
}

async function cmdLink(args: string[]): Promise<void> {
  const { resolveSettings } = await import('../engine/config');
  const { cachedBytesIn, cacheRoomWarning } = await import('../host/cacheRoom');
  const { linkFilespace, NO_CONDITIONAL_NOTE } = await import('../host/link');
  const { values } = parse(
    args,
    {
      ...storeFlags,
      'mount-point': { type: 'string' },
      'cache-dir': { type: 'string' },
      'cache-size': { type: 'string' },
      name: { type: 'string' },
    },
    0,
  );
  const spec = storeSpecFrom(values);
  const mountPoint = required(values['mount-point'], 'mount-point');
  const cacheCap = values['cache-size'] === undefined ? undefined : sizeFlag(values['cache-size'], 'cache-size', 0);
  if (cacheCap !== undefined) {
    try {
      resolveSettings({ cacheCapBytes: cacheCap });
    } catch (err) {
      throw new HostError(`--cache-size: ${(err as Error).message}`, 'BAD_SIZE');
    }
  }
  const passphraseFile = required(values['passphrase-file'], 'passphrase-file');
  const name = values.name ?? (spec.kind === 's3' ? spec.prefix.split('/').pop() || spec.bucket : 'filespace');
  const h = homes();
  const cfg = await linkFilespace(h, name, spec, mountPoint, values['cache-dir'], cacheCap, passphraseFile);
  if (!cfg.conditionalWrites) console.error(NO_CONDITIONAL_NOTE);
  console.log(`linked "${cfg.name}": mount it with "filespace mount ${cfg.name}" (mount point ${cfg.mountPoint})`);
  const warning = await cacheRoomWarning(
    cfg.name,
    cfg.cacheDir,
    settingsOf(cfg).cacheCapBytes,
    await cachedBytesIn(cfg.cacheDir),
  );
  if (warning) console.error(warning);
}

interface ForegroundOptions {
  passphrase?: string;
  onMounted?: (host: MountHost) => void;
  mode?: 'write' | 'read';
  takeover?: boolean;
}

/**
 * How long a mount process may take to stop after SIGTERM/SIGINT before it exits regardless.
 * Everything written is made durable in the cache first (no network needed); what waits for
 * the bucket (uploads, the lease release) is bounded well below this by the engine itself.
 */
export const STOP_DEADLINE_MS = 30_000;

async function runForeground(h: Homes, cfg: LinkConfig, extra: ForegroundOptions = {}): Promise<void> {
  const { MountHost } = await import('../host/mountHost');
  // A stray rejected promise must not take the mount down with it (users would see
  // "Transport endpoint is not connected"): report it and keep serving.
  process.on('unhandledRejection', (err) =>
    log(`internal error (kept running): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`),
  );
  tuneHeapForEngines();
  const host = new MountHost(cfg, h, { log, passphrase: extra.passphrase, mode: extra.mode, takeover: extra.takeover });
  let signalled = 0;
  let deadline: NodeJS.Timeout | undefined;
  const stop = () => host.stopOnSignal().catch((err) => log(`unmount failed: ${(err as Error).message}`));
  const onSignal = () => {
    signalled++;
    deadline ??= setTimeout(() => {
      log(
        `stopping took longer than ${STOP_DEADLINE_MS / 1000} s; exiting now (changes not yet uploaded stay in ${cfg.cacheDir} and upload at the next mount)`,
      );
      // Leave no dead mount behind if the stop never got as far as unmounting.
      void settledWithin(host.detachNow(), 5000).finally(() => process.exit(1));
    }, STOP_DEADLINE_MS).unref();
    if (signalled > 1)
      log(`still stopping; this process exits within ${STOP_DEADLINE_MS / 1000} s of the first signal in any case`);
    // While mounting, the stop follows once the mount is up (or the start fails).
    if (host.state === 'mounted') void stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await host.start();
  } catch (err) {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    throw err;
  }
  if (signalled > 0) void stop();
  else extra.onMounted?.(host);
  await host.done;
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);
}

/** Waits for a mount process that is stopping (e.g. just unmounted from outside) to be gone. */
async function waitForStoppingEngine(h: Homes, cfg: LinkConfig): Promise<void> {
  const { statusOf } = await import('../host/status');
  const deadline = Date.now() + STOP_DEADLINE_MS + 5000;
  for (;;) {
    const st = await statusOf(h, cfg).catch(() => undefined);
    if (st?.state !== 'unmounting' || Date.now() > deadline) return;
    await sleep(200);
  }
}

async function cmdMount(args: string[]): Promise<void> {
  const { statusOf } = await import('../host/status');
  const { values, positionals } = parse(
    args,
    { foreground: { type: 'boolean' }, 'read-only': { type: 'boolean' }, takeover: { type: 'boolean' } },
    1,
  );
  if (values['read-only'] && values.takeover) throw new UsageError('--read-only and --takeover exclude each other');
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  const mode = values['read-only'] ? ('read' as const) : ('write' as const);
  await waitForStoppingEngine(h, cfg);
  if (values.foreground) {
    await runForeground(h, cfg, { mode, takeover: Boolean(values.takeover) });
    return;
  }
  const current = await statusOf(h, cfg);
  if (current.state !== 'unmounted')
    throw new HostError(`"${cfg.name}" is already ${current.state} at ${cfg.mountPoint}`, 'ALREADY_MOUNTED');
  await fsp.mkdir(h.runDir, { recursive: true, mode: 0o700 });
  const logFile = logPath(h, cfg.name);
  const out = openSync(logFile, 'a', 0o600);
  const flags = [...(values['read-only'] ? ['--read-only'] : []), ...(values.takeover ? ['--takeover'] : [])];
  const child = spawn(process.execPath, [__filename, 'mount', cfg.name, '--foreground', ...flags], {
    env: engineProcessEnv(process.env),
    detached: true,
    stdio: ['ignore', out, out],
  });
  let exited: number | null | undefined;
  child.on('exit', (code) => (exited = code));
  child.unref();
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    await sleep(200);
    if (exited !== undefined) {
      const text = await fsp.readFile(logFile, 'utf8').catch(() => '');
      const last = text.trim().split('\n').pop() ?? '';
      throw new HostError(
        last.replace(/^\S+ /, '').replace(/^filespace: /, '') || `the mount process exited with code ${exited}`,
        'MOUNT_FAILED',
      );
    }
    const st = await statusOf(h, cfg).catch(() => undefined);
    if (st?.state === 'mounted') {
      console.log(`mounted "${cfg.name}" at ${cfg.mountPoint} (pid ${st.pid}, log ${logFile})`);
      return;
    }
  }
  throw new HostError(`mounting "${cfg.name}" did not finish within 120 s; see ${logFile}`, 'MOUNT_TIMEOUT');
}

/** What to do about a refused unmount, in the command's words (the app offers a button instead). */
function withUnmountAdvice(err: unknown): unknown {
  if (!(err instanceof HostError)) return err;
  if (err.code === 'BUSY') return new HostError(`${err.message}; close them, or unmount with --force to detach lazily`, err.code);
  if (err.code === 'FLUSH_FAILED') return new HostError(`${err.message}, or unmount with --force to detach anyway`, err.code);
  return err;
}

async function cmdUnmount(args: string[]): Promise<void> {
  const { values, positionals } = parse(args, { force: { type: 'boolean' } }, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  const outcome = await unmountLinked(h, cfg, Boolean(values.force)).catch((err: unknown) => {
    throw withUnmountAdvice(err);
  });
  switch (outcome.kind) {
    case 'detached-stale':
      console.log(`detached the stale mount at ${cfg.mountPoint}`);
      return;
    case 'detached':
      console.error(`warning: the engine could not unmount "${cfg.name}" (${outcome.reason}); detached ${cfg.mountPoint} lazily`);
      break;
    case 'unmounted':
      break;
  }
  console.log(`unmounted "${cfg.name}"`);
}

function humanStatus(s: StatusDto): string {
  const offline = s.offline
    ? ` (offline${s.offlineSince ? ` since ${clockTime(s.offlineSince)}` : ''}: the bucket does not answer)`
    : '';
  const lines = [`${s.name}: ${s.state}${s.state === 'unmounted' ? '' : ` at ${s.mountPoint}`}${offline}`];
  if (s.writesWaiting && s.state === 'mounted') {
    const w = s.writesWaiting;
    lines.push(`  writes ${w.refusing ? 'refused' : 'waiting'} since ${clockTime(w.since)}: ${w.message}`);
  }
  lines.push(
    s.dirtyBytes > 0 || s.dirtyFiles > 0
      ? `  to upload: ${s.dirtyFiles} file${s.dirtyFiles === 1 ? '' : 's'}, ${formatBytes(s.dirtyBytes)}${s.pendingMetaOps ? ` (+${s.pendingMetaOps} metadata changes)` : ''}${s.uploadsPaused ? ' — uploads paused' : ''}`
      : s.pendingMetaOps > 0
        ? `  to upload: ${s.pendingMetaOps} metadata changes`
        : '  everything is in the bucket',
  );
  if (s.state === 'mounted') {
    lines.push(
      `  cache: ${formatBytes(s.cacheUsedBytes)} of ${formatBytes(s.cacheCapBytes)} used, hit ratio ${(s.cacheHitRatio * 100).toFixed(0)}%`,
    );
    const limit = s.uploadLimitBytesPerSec ? ` (limit ${formatRate(s.uploadLimitBytesPerSec)})` : '';
    lines.push(`  throughput: up ${formatRate(s.uploadBytesPerSec)}${limit}, down ${formatRate(s.downloadBytesPerSec)}`);
  }
  if (s.foldersLoading && s.state === 'mounted')
    lines.push(`  loading folders from the bucket: ${s.foldersLoading} left (each loads at once when it is used)`);
  if (s.lease && s.state === 'mounted') lines.push(`  ${leaseLine(s.lease)}`);
  if (s.readOnlyReason) lines.push(`  ${s.readOnlyReason}`);
  for (const a of s.aside ?? []) {
    lines.push(
      `  set aside ${a.id}: ${a.files} file${a.files === 1 ? '' : 's'} (${a.reason}); see "filespace aside ${s.name} list"`,
    );
  }
  if (s.lastError) lines.push(`  last error: ${s.lastError}`);
  return lines.join('\n');
}

async function cmdStatus(args: string[]): Promise<void> {
  const { statusOf } = await import('../host/status');
  const { values, positionals } = parse(args, { json: { type: 'boolean' } }, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  const s = await statusOf(h, cfg);
  console.log(values.json ? JSON.stringify(s, null, 2) : humanStatus(s));
}

async function cmdSync(args: string[]): Promise<void> {
  const { syncLinked } = await import('../host/sync');
  const { values, positionals } = parse(args, { timeout: { type: 'string' } }, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(values.timeout ?? '10m');
  } catch (err) {
    throw new HostError(`--timeout: ${(err as Error).message}`, 'BAD_DURATION');
  }
  const result = await syncLinked(h, cfg, timeoutMs, log);
  if (!result.done && result.notWriting) {
    const kept =
      result.dirtyBytes > 0 || result.pendingMetaOps > 0
        ? `its changes not in the bucket (${formatBytes(result.dirtyBytes)} of data, ${result.pendingMetaOps} metadata changes) are kept in this computer's cache and set aside at the next mount (then see "filespace aside ${cfg.name} list")`
        : 'nothing of its own was waiting to upload, so nothing is set aside';
    throw new HostError(`not synced: ${result.notWriting}, so it is read-only until mounted again; ${kept}`, 'NOT_WRITING');
  }
  if (!result.done) {
    throw new HostError(
      `sync timed out: ${formatBytes(result.dirtyBytes)} and ${result.pendingMetaOps} metadata changes still to upload`,
      'SYNC_TIMEOUT',
    );
  }
  console.log(`"${cfg.name}": every local change is in the bucket`);
}

async function cmdSet(args: string[]): Promise<void> {
  const { cachedBytesIn, cacheRoomWarning } = await import('../host/cacheRoom');
  const { applySettings } = await import('../host/settings');
  const { statusOf } = await import('../host/status');
  const { positionals } = parse(args, {}, 3);
  if (positionals.length !== 3) throw new UsageError('set takes NAME KEY VALUE');
  const [name, key, value] = positionals as [string, string, string];
  const h = homes();
  const cfg = await loadConfig(h, name);
  const applied = await applySettings(h, cfg, settingFromKey(key, value));
  console.log(`${cfg.name}: ${key} = ${value} (${applied === 'live' ? 'applied live' : 'takes effect at the next mount'})`);
  if (key === 'cache-size') {
    const cached = applied === 'live' ? (await statusOf(h, cfg)).cacheUsedBytes : await cachedBytesIn(cfg.cacheDir);
    const warning = await cacheRoomWarning(
      cfg.name,
      cfg.cacheDir,
      settingsOf(await loadConfig(h, cfg.name)).cacheCapBytes,
      cached,
    );
    if (warning) console.error(warning);
  }
}

async function cmdUnlink(args: string[]): Promise<void> {
  const { statusOf } = await import('../host/status');
  const { values, positionals } = parse(args, { force: { type: 'boolean' } }, 1);
  if (positionals.length !== 1) throw new UsageError('unlink takes NAME');
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  const s = await statusOf(h, cfg);
  if (s.state !== 'unmounted') throw new HostError(`"${cfg.name}" is mounted; unmount it first`, 'MOUNTED');
  if ((s.dirtyBytes > 0 || s.dirtyFiles > 0) && !values.force) {
    throw new HostError(
      `"${cfg.name}" has ${formatBytes(s.dirtyBytes)} not yet uploaded; run "filespace sync ${cfg.name}" first, or unlink --force to discard it`,
      'DIRTY',
    );
  }
  await deleteConfig(h, cfg.name);
  await fsp.rm(cfg.cacheDir, { recursive: true, force: true });
  console.log(`unlinked "${cfg.name}" (the filespace itself stays in the bucket)`);
}

async function cmdCheck(args: string[]): Promise<void> {
  const { checkFilespace } = await import('../engine/check');
  const { explainStoreError, unlockFilespace } = await import('../engine/filespace');
  const { statusOf } = await import('../host/status');
  const { openStore } = await import('../host/stores');
  const { values, positionals } = parse(args, { deep: { type: 'boolean' } }, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  const mounted = (await statusOf(h, cfg)).state !== 'unmounted';
  const store = openStore(cfg.store);
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    const report = await checkFilespace({
      store,
      keys,
      header,
      deep: Boolean(values.deep),
      cacheDir: mounted ? undefined : cfg.cacheDir,
      // Its scratch databases on the cache folder's disk, not in memory (a temporary folder may be).
      workDir: cfg.cacheDir,
      progress: (m) => process.stderr.write(`${m}\n`),
    });
    for (const n of report.notes) console.log(n);
    if (mounted) console.log('local: not checked while mounted (unmount to check the local cache too)');
    if (report.problems.length > 0) {
      for (const p of report.problems) console.log(`PROBLEM ${p}`);
      const fix = report.localDamage
        ? `; "filespace repair ${cfg.name}" keeps the local changes it can read as set-aside files`
        : '';
      throw new HostError(
        `${report.problems.length} problem(s) found in "${cfg.name}"; nothing was changed${fix}`,
        'CHECK_FAILED',
      );
    }
    console.log(`"${cfg.name}": no problems found`);
  } catch (err) {
    throw explainStoreError(err, store);
  } finally {
    await store.close();
  }
}

async function cmdRepair(args: string[]): Promise<void> {
  const { repairCacheFolder } = await import('../engine/cacheFolder');
  const { checkLinkedFilespace, explainStoreError, unlockFilespace } = await import('../engine/filespace');
  const { statusOf } = await import('../host/status');
  const { openStore } = await import('../host/stores');
  const { positionals } = parse(args, {}, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  if ((await statusOf(h, cfg)).state !== 'unmounted')
    throw new HostError(`"${cfg.name}" is mounted; unmount it first`, 'MOUNTED');
  const store = openStore(cfg.store);
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    checkLinkedFilespace(header, cfg.filespaceId, cfg.name, store);
    const r = await repairCacheFolder({
      store,
      keys,
      header,
      cacheDir: cfg.cacheDir,
      log: (m) => process.stderr.write(`${m}\n`),
    });
    if (!r.repaired) {
      console.log(`"${cfg.name}": the local metadata is not damaged; nothing was changed`);
      return;
    }
    for (const f of r.kept) console.log(`kept the damaged file as ${f}`);
    if (r.aside) {
      const unnamed = r.unnamed > 0 ? ` (${r.unnamed} of them could not be named: unnamed/inode-N)` : '';
      console.log(
        `set aside ${r.aside.files.length} file(s)${unnamed} with changes not yet in the bucket as ${r.aside.id}: ` +
          `"filespace aside ${cfg.name} export ${r.aside.id} DIR" writes them out, to compare and copy back into the mount`,
      );
    }
    console.log(`repaired "${cfg.name}": its local metadata now is the bucket's; mount it again`);
  } catch (err) {
    throw explainStoreError(err, store);
  } finally {
    await store.close();
  }
}

async function cmdGc(args: string[]): Promise<void> {
  const { positionals } = parse(args, {}, 1);
  const h = homes();
  const cfg = await loadConfig(h, positionals[0]);
  let r;
  try {
    r = await callControl(socketPath(h, cfg.name), '/v1/gc', {}, 30 * 60_000);
  } catch (err) {
    if (notRunning(err)) {
      throw new HostError(
        `"${cfg.name}" is not mounted; garbage collection runs in the engine that writes it (mount it first)`,
        'NOT_MOUNTED',
      );
    }
    throw err;
  }
  console.log(
    `${cfg.name}: ${r.scanned} chunk objects and packs in the bucket, ${r.deleted} deleted, ${r.marked} unreferenced and waiting out the grace period` +
      (r.repacked ? `; ${r.repacked} packs mostly of deleted files repacked (they go once the grace period is over)` : ''),
  );
}

async function cmdAside(args: string[]): Promise<void> {
  const { explainStoreError, unlockFilespace } = await import('../engine/filespace');
  const { discardAside, exportAside, listAside } = await import('../engine/aside');
  const { openStore } = await import('../host/stores');
  const { positionals } = parse(args, {}, 4);
  const h = homes();
  const names = await listConfigs(h);
  // NAME is optional when only one filespace is linked.
  const named =
    positionals[0] !== undefined && names.includes(positionals[0]) && !['list', 'export', 'discard'].includes(positionals[0]);
  const cfg = await loadConfig(h, named ? positionals[0] : undefined);
  const [verb = 'list', id, dir] = named ? positionals.slice(1) : positionals;
  const store = openStore(cfg.store);
  try {
    const { keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    switch (verb) {
      case 'list': {
        const sets = await listAside(cfg.cacheDir, keys.cacheKey);
        if (sets.length === 0) console.log(`${cfg.name}: no changes set aside`);
        for (const m of sets) {
          console.log(`${m.id}  ${new Date(m.createdAt).toISOString()}  ${m.reason}`);
          for (const f of m.files) {
            console.log(`  ${f.path}  ${formatBytes(f.size)}${f.missing ? `  (incomplete: ${f.missing})` : ''}`);
            for (const l of f.links ?? []) console.log(`    also named ${l}`);
          }
          for (const r of m.removed) console.log(`  removed: ${r}`);
        }
        break;
      }
      case 'export': {
        if (!id || !dir) throw new UsageError('aside export takes ID DIR');
        const n = await exportAside(cfg.cacheDir, keys.cacheKey, id, dir);
        console.log(`exported ${n} file(s) of ${id} into ${path.resolve(dir)}`);
        break;
      }
      case 'discard': {
        if (!id) throw new UsageError('aside discard takes ID');
        await discardAside(cfg.cacheDir, keys.cacheKey, id);
        console.log(`discarded ${id}`);
        break;
      }
      default:
        throw new UsageError(`aside: unknown action "${verb}" (list, export, discard)`);
    }
  } catch (err) {
    throw explainStoreError(err, store);
  } finally {
    await store.close();
  }
}

async function cmdList(): Promise<void> {
  const { statusOf } = await import('../host/status');
  const h = homes();
  const damaged: Error[] = [];
  for (const name of await listConfigs(h)) {
    let cfg: LinkConfig;
    try {
      cfg = await loadConfig(h, name);
    } catch (err) {
      if (!isUserFacing(err)) throw err;
      damaged.push(err);
      console.log(`${name}\tdamaged\t${configPath(h, name)}`);
      continue;
    }
    const s = await statusOf(h, cfg);
    console.log(`${name}\t${s.state}\t${cfg.mountPoint}`);
  }
  // The others are listed; the first damaged one is named (exit 1).
  if (damaged.length > 0)
    throw damaged.length === 1
      ? damaged[0]!
      : new HostError(`${damaged[0]!.message} (and ${damaged.length - 1} more damaged configuration file(s))`, 'BAD_CONFIG');
}

async function cmdDemo(args: string[]): Promise<void> {
  const { createFilespace } = await import('../engine/filespace');
  const { LocalDiskStore } = await import('../engine/store/local');
  const { linkFilespace, NO_CONDITIONAL_NOTE } = await import('../host/link');
  parse(args, {}, 0);
  const base = process.env.FILESPACE_HOME
    ? path.resolve(process.env.FILESPACE_HOME)
    : path.resolve(__dirname, '..', '..', '..', '.demo');
  process.env.FILESPACE_HOME = base;
  const h = homes();
  const storeRoot = path.join(base, 'store');
  const passFile = path.join(base, 'demo-passphrase');
  await fsp.mkdir(base, { recursive: true, mode: 0o700 });
  if (
    !(await fsp.access(passFile).then(
      () => true,
      () => false,
    ))
  ) {
    await fsp.writeFile(passFile, randomBytes(18).toString('base64url'), { mode: 0o600 });
  }
  const passphrase = await readPassphraseFile(passFile);
  let cfg: LinkConfig;
  if ((await listConfigs(h)).includes('demo')) {
    cfg = await loadConfig(h, 'demo');
  } else {
    const store = new LocalDiskStore(storeRoot);
    if (!(await store.head('filespace.json'))) await createFilespace(store, passphrase, 4 * 1024 * 1024);
    await store.close();
    const mnt = path.join(base, 'mnt');
    await fsp.mkdir(mnt, { recursive: true });
    cfg = await linkFilespace(h, 'demo', { kind: 'local', root: storeRoot }, mnt, undefined, 1024 ** 3, passFile, passphrase);
    if (!cfg.conditionalWrites) console.error(NO_CONDITIONAL_NOTE);
  }
  console.log(`Filespace demo: an embedded object store in ${storeRoot}`);
  await runForeground(h, cfg, {
    onMounted: (host) => {
      console.log(`mounted at ${cfg.mountPoint}; try: cp -r /usr/share/doc ${cfg.mountPoint}/ && ls ${cfg.mountPoint}`);
      console.log(
        `other shell: FILESPACE_HOME=${base} ${path.resolve(__dirname, '..', '..', '..', 'bin', 'filespace')} status demo`,
      );
      console.log('Ctrl-C unmounts.');
      let last = '';
      const timer = setInterval(() => {
        const s = host.status();
        const line = `[${s.state}] to upload: ${s.dirtyFiles} files, ${formatBytes(s.dirtyBytes)} | cache ${formatBytes(s.cacheUsedBytes)}/${formatBytes(s.cacheCapBytes)} | up ${formatRate(s.uploadBytesPerSec)} down ${formatRate(s.downloadBytesPerSec)}`;
        if (line !== last) console.log(line);
        last = line;
        if (s.state !== 'mounted') clearInterval(timer);
      }, 2000);
      timer.unref();
    },
  });
  console.log('demo unmounted cleanly');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'init':
        await cmdInit(rest);
        break;
      case 'passphrase':
        await cmdPassphrase(rest);
        break;
      case 'link':
        await cmdLink(rest);
        break;
      case 'mount':
        await cmdMount(rest);
        break;
      case 'unmount':
        await cmdUnmount(rest);
        break;
      case 'status':
        await cmdStatus(rest);
        break;
      case 'sync':
        await cmdSync(rest);
        break;
      case 'set':
        await cmdSet(rest);
        break;
      case 'unlink':
        await cmdUnlink(rest);
        break;
      case 'list':
        await cmdList();
        break;
      case 'check':
        await cmdCheck(rest);
        break;
      case 'repair':
        await cmdRepair(rest);
        break;
      case 'gc':
        await cmdGc(rest);
        break;
      case 'aside':
        await cmdAside(rest);
        break;
      case 'pin':
        await (await import('./pin')).cmdPin(rest);
        break;
      case 'unpin':
        await (await import('./pin')).cmdUnpin(rest);
        break;
      case 'snapshot':
        await (await import('./snapshot')).cmdSnapshot(homes(), rest, log);
        break;
      case 'import':
      case 'export':
        await (await import('./transfer')).cmdTransfer(cmd, rest, (m) => new UsageError(m));
        break;
      case 'demo':
        await cmdDemo(rest);
        break;
      case undefined:
      case '-h':
      case '--help':
      case 'help':
        console.log(USAGE);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command "${cmd}"`);
    }
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`filespace: ${err.message}\n${USAGE}\n`);
      return 2;
    }
    if (isUserFacing(err)) {
      process.stderr.write(`filespace: ${err.message}\n`);
      return 1;
    }
    process.stderr.write(`filespace: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    return 70;
  }
}

if (require.main === module) {
  // main() reports every error itself and resolves to the exit code; it does not reject.
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
    // A finished command must not linger on open handles (sockets, timers).
    setTimeout(() => process.exit(code), 50).unref();
  });
}
