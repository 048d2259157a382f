/**
 * Import and export jobs: a folder of a filespace on one side, a local folder or plain objects
 * under an S3 prefix on the other, copied by engine/transfer/copy.ts through the engine's VFS.
 *
 * Where the job runs: always beside the engine. A filespace this machine has mounted is
 * imported into (or exported from) by its running mount host, on request over the control
 * socket (MountHost `/v1/transfer/*`), so the one engine that holds the write lease does the
 * writing while the mount keeps serving; the command only polls the job's progress. An
 * unmounted filespace is opened here without FUSE (`runUnmounted`): read-only for an export,
 * as the writer for an import, which then waits until what it wrote is uploaded. A filespace
 * another machine writes cannot be imported into (the engine refuses the write lease).
 *
 * Everything a request names is checked before anything changes (`prepare`): the folder in
 * the filespace (no way out of it; for an import, nothing but folders on the way), the local
 * folder (exists; for an export, empty or absent, or a previous export to resume), the S3
 * location (listed once: bucket, access and credentials are proven).
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TransferJobDto, TransferOutside, TransferRequest } from '../contract/api';
import { resolveSettings } from '../engine/config';
import { Engine } from '../engine/engine';
import { FsError } from '../engine/errors';
import { checkLinkedFilespace, explainStoreError, unlockFilespace } from '../engine/filespace';
import { copyTree, newProgress, TransferProgress } from '../engine/transfer/copy';
import { LocalTree } from '../engine/transfer/localTree';
import { chainCredentials, S3Tree } from '../engine/transfer/s3Tree';
import { DestTree, SourceTree } from '../engine/transfer/tree';
import { VfsTree } from '../engine/transfer/vfsTree';
import { Homes, LinkConfig, readPassphraseFile, socketPath } from './config';
import { callControl, notRunning } from './control';
import { statusOf } from './status';
import { sleep } from '../engine/util/concurrency';
import { HostError } from './errors';
import { openStore } from './stores';

export interface TransferJob {
  readonly direction: 'import' | 'export';
  readonly from: string;
  readonly to: string;
  readonly progress: TransferProgress;
  readonly abort: AbortController;
  /** Settles when the copy is over (see progress.phase). */
  readonly done: Promise<void>;
  /** The request, to tell a re-run of the same job from another one. */
  readonly key: string;
}

/** A job as the contract carries it, with at most `listed` skipped entries named (all are counted). */
export function jobDto(job: TransferJob, listed = Infinity): TransferJobDto {
  const p = job.progress;
  const progress = { ...p, skipped: p.skipped.slice(0, listed), failed: p.failed.slice(0, listed) };
  return { direction: job.direction, from: job.from, to: job.to, progress };
}

/** The key of a request, without its credentials. */
export function requestKey(req: TransferRequest): string {
  const { credentials: _c, ...outside } = req.outside as TransferOutside & { credentials?: unknown };
  void _c;
  return JSON.stringify({ d: req.direction, i: normaliseInside(req.inside), o: outside });
}

/** A path inside the filespace, '/'-rooted, refused when it leads out of it. */
export function normaliseInside(p: string): string {
  const parts: string[] = [];
  for (const c of p.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (parts.length === 0)
        throw new HostError(`"${p}" leads out of the filespace: name a folder inside it, e.g. "/" or "/photos"`, 'BAD_INPUT');
      parts.pop();
    } else parts.push(c);
  }
  return '/' + parts.join('/');
}

function describeOutside(o: TransferOutside): string {
  return o.kind === 'local' ? o.path : `s3://${o.bucket}/${o.prefix}`;
}

/** The local or S3 end, checked: fails with a clear HostError before anything changes. */
async function openOutside(o: TransferOutside, direction: 'import' | 'export'): Promise<LocalTree | S3Tree> {
  if (o.kind === 's3') {
    const tree = new S3Tree(o);
    try {
      await tree.probe();
    } catch (err) {
      await tree.close();
      throw explainStoreError(err, tree);
    }
    return tree;
  }
  if (!path.isAbsolute(o.path)) throw new HostError(`"${o.path}" is not a full path`, 'NOT_ABSOLUTE');
  const st = await fsp.stat(o.path).catch(() => undefined);
  if (direction === 'import') {
    if (!st) throw new HostError(`${o.path} does not exist: name the folder to import`, 'BAD_INPUT');
    if (!st.isDirectory()) throw new HostError(`${o.path} is not a folder: import takes a folder`, 'NOT_A_DIRECTORY');
    await fsp.access(o.path, 4 /* R_OK */).catch(() => {
      throw new HostError(`${o.path} cannot be read (permission denied)`, 'BAD_INPUT');
    });
  } else if (st && !st.isDirectory()) {
    throw new HostError(`${o.path} is a file: export writes into a folder`, 'NOT_A_DIRECTORY');
  } else if (!st) {
    const parent = await fsp.stat(path.dirname(o.path)).catch(() => undefined);
    if (!parent?.isDirectory())
      throw new HostError(`${path.dirname(o.path)} does not exist: export makes only the last folder`, 'BAD_INPUT');
  }
  return new LocalTree(o.path);
}

/**
 * Checks what a request names outside the filespace and opens it (before the engine is opened,
 * for an unmounted filespace): the folder in the filespace as a path, the local folder or S3
 * location as openOutside does, and that a local folder is not inside the mount point.
 */
export async function checkOutside(req: TransferRequest, mountPoint: string): Promise<LocalTree | S3Tree> {
  normaliseInside(req.inside);
  if (req.outside.kind === 'local') {
    const rel = path.relative(mountPoint, path.resolve(req.outside.path));
    if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel)))
      throw new HostError(`${req.outside.path} is inside the filespace's mount point: name a folder outside it`, 'BAD_INPUT');
  }
  return openOutside(req.outside, req.direction);
}

/** Checks the request against the engine and opens both ends; changes nothing but what the copy needs. */
async function prepare(
  engine: Engine,
  req: TransferRequest,
  mountPoint: string,
  opened?: LocalTree | S3Tree,
): Promise<{ src: SourceTree; dst: DestTree; from: string; to: string }> {
  const inside = normaliseInside(req.inside);
  const vfs = engine.vfs;
  // Paths are resolved in the tree, outside the mount: every folder must be loaded.
  await engine.whenFilled();
  const outside = async () => opened ?? (await checkOutside(req, mountPoint));
  if (req.direction === 'import') {
    const reason = engine.stats().readOnlyReason;
    if (reason) throw new HostError(`this machine cannot write to the filespace: ${reason}`, 'READ_ONLY');
    // Every folder on the way must be a folder (or absent: made once the source is proven).
    const parts = inside.split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      let st;
      try {
        st = vfs.getattr(p);
      } catch (err) {
        if (err instanceof FsError && err.errno === 'ENOENT') break;
        throw err;
      }
      if ((st.mode & 0o170000) !== 0o040000) throw new HostError(`${p} in the filespace is not a folder`, 'NOT_A_DIRECTORY');
    }
    const src = await outside();
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      try {
        vfs.mkdir(p, 0o755);
      } catch (err) {
        if (!(err instanceof FsError && err.errno === 'EEXIST')) throw err;
      }
    }
    return { src, dst: new VfsTree(vfs, inside, inside), from: src.description, to: inside };
  }
  let st;
  try {
    st = vfs.getattr(inside);
  } catch {
    throw new HostError(`${inside} does not exist in the filespace`, 'BAD_INPUT');
  }
  if ((st.mode & 0o170000) !== 0o040000) throw new HostError(`${inside} in the filespace is not a folder`, 'NOT_A_DIRECTORY');
  const dst = await outside();
  if (dst instanceof LocalTree) await fsp.mkdir(dst.description, { recursive: false }).catch(() => undefined);
  return { src: new VfsTree(vfs, inside, inside), dst, from: inside, to: describeOutside(req.outside) };
}

/** Starts a job on a running engine; rejects (having changed nothing) when the request is refused. */
export async function startTransfer(
  engine: Engine,
  req: TransferRequest,
  opts: { mountPoint: string; log: (msg: string) => void; outside?: LocalTree | S3Tree },
): Promise<TransferJob> {
  const { src, dst, from, to } = await prepare(engine, req, opts.mountPoint, opts.outside);
  const progress = newProgress(Date.now());
  const abort = new AbortController();
  opts.log(`${req.direction} ${from} -> ${to}: started`);
  const done = copyTree(src, dst, progress, { signal: abort.signal })
    .then(async () => {
      if (req.direction === 'import') {
        engine.vfs.commitAllSizes();
        await engine.vfs.flushAll();
      }
    })
    .catch((err: unknown) => {
      progress.phase = 'failed';
      progress.error = (err as Error).message;
    })
    .finally(async () => {
      await src.close().catch(() => undefined);
      await dst.close().catch(() => undefined);
      opts.log(
        `${req.direction} ${from} -> ${to}: ${progress.phase}, ${progress.copied} copied, ${progress.alreadyThere} already there, ` +
          `${Object.values(progress.skippedByReason).reduce((a, b) => a + b, 0)} skipped, ${progress.failed.length} failed` +
          (progress.error ? ` (${progress.error})` : ''),
      );
    });
  return { direction: req.direction, from, to, progress, abort, done, key: requestKey(req) };
}

/**
 * Runs a job on a filespace that is not mounted: opens its engine here (no FUSE), copies, and
 * for an import waits until everything is uploaded before closing (so the bucket holds it).
 */
export async function runUnmounted(
  cfg: LinkConfig,
  req: TransferRequest,
  hooks: { log: (msg: string) => void; started: (job: TransferJob) => void; signal?: AbortSignal },
): Promise<TransferJob> {
  // What the request names is checked before the engine opens (which takes the write lease).
  const outside = await checkOutside(req, cfg.mountPoint);
  const store = openStore(cfg.store);
  let engine: Engine | undefined;
  let started = false;
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    checkLinkedFilespace(header, cfg.filespaceId, cfg.name, store);
    try {
      engine = await Engine.open({
        store,
        keys,
        header,
        cacheDir: cfg.cacheDir,
        settings: resolveSettings(cfg.settings),
        log: hooks.log,
        mode: req.direction === 'import' ? 'write' : 'read',
        conditionalWrites: cfg.conditionalWrites,
        name: cfg.name,
      });
    } catch (err) {
      if (err instanceof Error && 'code' in err && err.code === 'LEASE_HELD')
        throw new HostError(
          `cannot import into "${cfg.name}": ${err.message.replace(/; mount it read-only.*$/, '')}; ` +
            `import on that machine, or take over with "filespace mount ${cfg.name} --takeover" if it is gone`,
          'LEASE_HELD',
        );
      throw err;
    }
    const job = await startTransfer(engine, req, { log: hooks.log, mountPoint: cfg.mountPoint, outside });
    started = true;
    hooks.signal?.addEventListener('abort', () => job.abort.abort(), { once: true });
    hooks.started(job);
    await job.done;
    if (req.direction === 'import' && job.progress.phase === 'done') {
      const phase = job.progress.phase;
      job.progress.phase = 'uploading';
      engine.vfs.commitAllSizes();
      await engine.vfs.fsyncAll();
      // Ctrl-C stops the wait: what is not uploaded yet is safe in the cache and goes at the next mount.
      const stopped = new Promise<boolean>((resolve) => {
        if (hooks.signal?.aborted) resolve(false);
        hooks.signal?.addEventListener('abort', () => resolve(false), { once: true });
      });
      const uploaded = await Promise.race([engine.sync(Date.now() + 7 * 24 * 3600_000), stopped]);
      job.progress.phase = phase;
      if (!uploaded) hooks.log(`not everything was uploaded; the rest goes at the next mount of "${cfg.name}"`);
    }
    return job;
  } catch (err) {
    throw explainStoreError(err, store);
  } finally {
    if (!started) await outside.close();
    if (engine) {
      engine.vfs.commitAllSizes();
      await engine.vfs.fsyncAll().catch(() => undefined);
      await engine.close().catch((err: unknown) => hooks.log(`closing the engine: ${(err as Error).message}`));
    }
    await store.close();
  }
}

const OVER = ['done', 'cancelled', 'failed'];
const POLL_MS = 500;

/**
 * Runs an import or export where it belongs (see the header): in the running mount over its
 * control socket, or here on the unmounted filespace. `progress` is called about twice a
 * second and once at the end; resolves with the finished job.
 */
export async function runTransfer(
  h: Homes,
  cfg: LinkConfig,
  req: TransferRequest,
  hooks: { progress: (job: TransferJobDto) => void; log: (msg: string) => void; signal?: AbortSignal },
): Promise<TransferJobDto> {
  const state = (await statusOf(h, cfg)).state;
  if (state === 'unmounted') {
    let job: TransferJob | undefined;
    const timer = setInterval(() => job && hooks.progress(jobDto(job)), POLL_MS);
    try {
      job = await runUnmounted(cfg, req, { log: hooks.log, started: (j) => (job = j), signal: hooks.signal });
    } finally {
      clearInterval(timer);
    }
    return jobDto(job);
  }
  if (state !== 'mounted') throw new HostError(`"${cfg.name}" is ${state}; retry once it is mounted or unmounted`, 'BUSY');
  // The mount reads the S3 end with the credentials this command has (its environment and profile).
  let sent = req;
  if (req.outside.kind === 's3' && !req.outside.credentials) {
    const credentials = await chainCredentials(req.outside.region);
    if (credentials) sent = { ...req, outside: { ...req.outside, credentials } };
  }
  const sock = socketPath(h, cfg.name);
  let { job } = await callControl(sock, '/v1/transfer/start', sent);
  const cancel = () => void callControl(sock, '/v1/transfer/cancel', {}).catch(() => undefined);
  hooks.signal?.addEventListener('abort', cancel, { once: true });
  try {
    while (!OVER.includes(job.progress.phase)) {
      hooks.progress(job);
      await sleep(POLL_MS);
      try {
        const now = await callControl(sock, '/v1/transfer', {});
        if (!now.job) throw HostError.of('NOT_RUNNING');
        job = now.job;
      } catch (err) {
        if (notRunning(err))
          throw new HostError(
            `"${cfg.name}" was unmounted during the ${req.direction}; run the same command again to finish it`,
            'NOT_MOUNTED',
          );
        throw err;
      }
    }
  } finally {
    hooks.signal?.removeEventListener('abort', cancel);
  }
  return job;
}
