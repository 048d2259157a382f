/**
 * Filespace benchmark: `npm run bench`. Filespace side by side with rclone and s3fs, with a
 * plain local directory and the FUSE and S3 ceilings, in one run against one S3 server.
 *
 * Every workload runs the same way, from child processes, on each contender (contenders.ts):
 * Filespace, `rclone mount --vfs-cache-mode full`, s3fs (with its disk cache), a local
 * directory (the physical ceiling); each S3 contender on its own bucket of the same server
 * (server.ts: s3rver by default). The workloads:
 *   1. sequential write of a 1 GiB random file with dd bs=1M: to close, then until durable
 *      (each contender's own meaning of it, contenders.ts);
 *   2. warm sequential read of that file (best of 3), and random 4 KiB reads at queue depth 1
 *      (best of 3);
 *   3. small files: create, `ls -l`, stat, rm (2,000 files of 4 KiB; a peer far slower than
 *      Filespace at creating them is stopped, and the other phases work on what it created);
 *      three passes, each in a new folder, the one that created fastest reported;
 *   4. `tar x` of a 3k-file npm tree (node_modules/@aws-sdk) and of the whole node_modules,
 *      each until tar exits and until durable; a peer that takes far longer than Filespace is
 *      stopped and reported as a bound;
 *   5. on a new mount with an empty cache: time to first byte and cold sequential read
 *      (verified with cmp); on another: random 4 KiB reads, cold; three passes of each, each on
 *      its own new mount, the fastest reported;
 *   6. peak resident memory of each contender's process, per phase and overall.
 * The ceilings, measured in the same run: a do-nothing FUSE filesystem on fuse-native with the
 * product's mount options (nullfs.ts) for the same workloads, and raw S3 PUT/GET through the
 * product's S3Store with the engine's object size and concurrency (s3ceiling.ts).
 * Filespace alone also gets the figures only it has: data left to upload at close, the upload
 * rate under `upload-limit`, and a read-back comparison of the extracted tree (tar d).
 *
 * Per phase it records the CPU of the contender's process (and of the engine's JS thread), of
 * the S3 server, of the tools it ran and of the whole machine, so load from outside the
 * benchmark shows; the server's requests by kind and in flight; and the contender's memory.
 *
 * Settings (environment): FILESPACE_BENCH_GIB (data set, default 1), FILESPACE_BENCH_FILES
 * (small files, default 2000), FILESPACE_BENCH_RANDOM_READS (default 2000),
 * FILESPACE_BENCH_TREES (npm,node_modules | none), FILESPACE_BENCH_CONTENDERS (any of
 * filespace,rclone,s3fs,local), FILESPACE_BENCH_SERVER (s3rver | moto),
 * FILESPACE_BENCH_PEER_TAR_MAX_S (longest a peer's tar x may run, default 300).
 * e.g. a quick run: FILESPACE_BENCH_GIB=0.25 FILESPACE_BENCH_FILES=300 FILESPACE_BENCH_TREES=npm.
 * Results go to BENCHMARKS.md at the repository root and to stdout.
 *
 * Safety: the benchmark never touches a mount from its own process, bounds every wait, and on
 * exit, error, signal or its overall time limit unmounts everything it mounted (aborting a
 * hung FUSE connection if need be), stops every process it started (proc.ts), and removes its
 * scratch files. Units: MB = 10^6 bytes, MiB = 2^20 bytes.
 */

import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { DEFAULT_SETTINGS } from '../../electron/engine/config';
import { lowLevelAddon } from '../../native/fuse/lowlevel';
import { Bed, REPO, randomFile, tmpDir } from '../helpers/bed';
import {
  type Context,
  type Contender,
  type ContenderKey,
  FilespaceContender,
  LocalContender,
  type Mounted,
  NullFs,
  RcloneContender,
  S3fsContender,
} from './contenders';
import {
  checkAbort,
  children,
  cleanup,
  errMsg,
  exec,
  hasCommand,
  jsonOf,
  log,
  must,
  nowSeconds,
  onTeardown,
  probe,
  runSeconds,
  tally,
} from './proc';
import { childCpuSoFar, cpuMeter, cpuSinceStart, endedChildrenCpu, exitingMeter, machineMeter, RssSampler } from './procstat';
import { report, type RunInfo } from './report';
import {
  type Ceilings,
  entriesOf,
  type ProductExtras,
  type Profile,
  type RandResult,
  type SeqRead,
  type SmallResult,
  type Suite,
  type TarRun,
  type TreeFacts,
  type TreeKey,
} from './results';
import { type BenchServer, s3rverInstalled, startMotoServer, startS3rver } from './server';

// ---- settings -------------------------------------------------------------------------------

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;
const MB = 1e6;

// The pinned AWS SDK's notice about future Node versions is noise here (the bench creates buckets).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Bad settings end the run before anything starts, with one line saying which and why. */
function badSetting(msg: string): never {
  process.stderr.write(`bench: ${msg}\n`);
  process.exit(2);
}

function envNumber(name: string, dflt: number, min: number, max: number, integer: boolean): number {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return dflt;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
    badSetting(`${name} must be ${integer ? 'a whole number' : 'a number'} in [${min}, ${max}], got "${raw}"`);
  }
  return v;
}

function envList<T extends string>(name: string, all: readonly T[], dflt: readonly T[]): T[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return [...dflt];
  if (raw.trim() === 'none') return [];
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = items.filter((i) => !(all as readonly string[]).includes(i));
  if (bad.length > 0)
    badSetting(`${name} takes a comma-separated list of ${all.join(', ')} (or none); unknown: ${bad.join(', ')}`);
  return all.filter((a) => items.includes(a));
}

const SCALE = envNumber('FILESPACE_BENCH_GIB', 1, 0.01, 8, false);
const DATA_BYTES = Math.max(16, Math.round(SCALE * 1024)) * MiB;
const SMALL_FILES = envNumber('FILESPACE_BENCH_FILES', 2000, 10, 100_000, true);
const RANDOM_READS = envNumber('FILESPACE_BENCH_RANDOM_READS', 2000, 10, 100_000, true);
const TREES = envList<TreeKey>('FILESPACE_BENCH_TREES', ['npm', 'node_modules'], ['npm', 'node_modules']);
const CONTENDERS = envList<ContenderKey>(
  'FILESPACE_BENCH_CONTENDERS',
  ['local', 'filespace', 'rclone', 's3fs'],
  ['local', 'filespace', 'rclone', 's3fs'],
);
const SERVER_CHOICE = (() => {
  const raw = process.env.FILESPACE_BENCH_SERVER?.trim();
  if (!raw) return undefined;
  if (raw !== 's3rver' && raw !== 'moto') badSetting(`FILESPACE_BENCH_SERVER must be s3rver or moto, got "${raw}"`);
  return raw;
})();

const CHUNK_SIZE = '4MiB';
const CHUNK_BYTES = 4 * MiB;
const CONCURRENCY = DEFAULT_SETTINGS.uploadConcurrency;
/** The upload limit phase: this much data at this limit (one chunk of burst rides on top). */
const LIMIT_MIB = 16;
const LIMITED_MIB = Math.min(256, DATA_BYTES / MiB);
const CACHE_BYTES = Math.max(3, Math.ceil((3 * DATA_BYTES) / GiB)) * GiB;
const CACHE_SIZE = `${CACHE_BYTES / GiB}GiB`;
const RANDOM_BLOCK = 4096;
const SMALL_FILE_BYTES = 4096;
/** Longer than the attr/entry timeouts, so stats after creation reach the filesystem. */
const SETTLE_MS = 1100;
/** The npm tree: a real scope of this repository's dependencies, about 3,000 entries. */
const NPM_TREE = path.join('node_modules', '@aws-sdk');
/** A peer's tar x is stopped at this multiple of Filespace's time until the tree is durable (within the bounds below): the ratio is then a bound. */
const PEER_TAR_FACTOR = 3;
const PEER_TAR_MAX_MS = envNumber('FILESPACE_BENCH_PEER_TAR_MAX_S', 300, 10, 3600, false) * 1000;
const PEER_TAR_MIN_MS = Math.min(60_000, PEER_TAR_MAX_MS);
const TAR_LIMIT_MS = 900_000;
const RUN_LIMIT_MS = 50 * 60_000;
/** Bound for one pass over the data set: slower than ~4 MB/s is treated as a hang. */
const DATA_TIMEOUT_MS = Math.round(60_000 + (DATA_BYTES / (4 * MB)) * 1000);
/** Repetitions of the short streaming passes whose best run is reported. */
const REPEATS = 3;
const RSS_LIMIT = 300 * MB;

// ---- run state ------------------------------------------------------------------------------

const profiles: Profile[] = [];
const errors: string[] = [];
const notes: string[] = [];
const rss = new RssSampler(200);
let server: BenchServer | undefined;

interface Watch {
  /** The process serving the mount. */
  readonly pid?: number;
  /** Whose it is (the engine gets a diagnosis when a phase fails). */
  readonly who?: ContenderKey | 'ceiling';
  /**
   * A process this phase stops (an unmount): if it is the bench's child, its CPU before the
   * phase reaches the bench's ended children when it is reaped, and is not the phase's.
   */
  readonly ends?: number;
}

/** Runs one phase, recording its wall time, the CPU use of the processes involved and the server's requests. */
async function phase<T>(name: string, watch: Watch, fn: () => Promise<T>): Promise<T | undefined> {
  checkAbort(); // outside the try: an abort ends the run instead of being recorded as a failed phase
  log(`${name} ...`);
  const meters = {
    fs: watch.pid ? await cpuMeter(watch.pid) : undefined,
    server: server?.pid ? await cpuMeter(server.pid) : undefined,
    machine: await machineMeter(),
  };
  if (watch.pid) await rss.beginWindow(watch.pid);
  await server?.beginWindow();
  const tool0 = tally.toolCpuSeconds;
  const ended0 = (await endedChildrenCpu()) + (watch.ends ? await childCpuSoFar(watch.ends) : 0);
  // A daemon this phase stops that is not the bench's child (the engine): its CPU until it exits.
  const exiting = watch.ends && !watch.pid ? await exitingMeter(watch.ends) : undefined;
  const self0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  try {
    const v = await fn();
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const self = process.cpuUsage(self0);
    // The commands exec() ran (tally), and any other command that ended: the CLI the test bed
    // runs for a link or a mount. The larger of the two, since each holds most of the other.
    const ended = Math.max(tally.toolCpuSeconds - tool0, (await endedChildrenCpu()) - ended0);
    const tools = (ended + (self.user + self.system) / 1e6) / seconds;
    // A mount starts the process that serves it (a daemon, not one of the tools): its CPU so far
    // is the phase's, not outside load.
    const started = watch.pid ? undefined : startedPid(v);
    const fs =
      (await meters.fs?.()) ?? (started ? await cpuSinceStart(started, seconds) : undefined) ?? (await exiting?.(seconds));
    const srv = await meters.server?.();
    const machine = await meters.machine();
    const outside = machine === undefined ? undefined : Math.max(0, machine - tools - (fs?.total ?? 0) - (srv?.total ?? 0));
    const fsRss = watch.pid ? await rss.endWindow(watch.pid) : undefined;
    const window = await server?.endWindow();
    profiles.push({ phase: name, contender: watch.who, seconds, fs, server: srv, machine, tools, outside, fsRss, window });
    log(`${name}: ${seconds.toFixed(2)} s`);
    return v;
  } catch (err) {
    await exiting?.(0);
    await server?.endWindow();
    const diag = watch.who === 'filespace' && watch.pid ? ` [engine then: ${await engineDiagnosis(watch.pid)}]` : '';
    errors.push(`${name}: ${errMsg(err)}${diag}`);
    log(`${name}: FAILED: ${errMsg(err)}`);
    return undefined;
  }
}

/** The process a phase started to serve a mount (its result is a Mounted), if any. */
function startedPid(v: unknown): number | undefined {
  if (typeof v !== 'object' || v === null || !('pid' in v)) return undefined;
  const pid = (v as { pid?: unknown }).pid;
  return typeof pid === 'number' && pid > 0 ? pid : undefined;
}

/** What the engine process is doing right now: state, main thread's wait channel, CPU over 1 s. */
async function engineDiagnosis(pid: number): Promise<string> {
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 'process gone';
  const st = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
  const wchan = (await fsp.readFile(`/proc/${pid}/task/${pid}/wchan`, 'utf8').catch(() => '?')) || '0';
  const meter = await cpuMeter(pid);
  await new Promise((r) => setTimeout(r, 1000));
  const c = await meter();
  const busy =
    c && c.main >= 0.8 ? '; its JS thread is busy without answering FUSE: a loop that never yields to the event loop' : '';
  return `state ${st}, main thread wchan ${wchan}, CPU over 1 s: ${c ? `${c.total.toFixed(2)} cores, JS thread ${c.main.toFixed(2)}` : '?'}${busy}`;
}

/** Runs a pass REPEATS times as separate phases; resolves to every result (undefined if any run failed). */
async function repeated<T>(name: string, watch: Watch, run: () => Promise<T>): Promise<T[] | undefined> {
  const all: T[] = [];
  for (let i = 1; i <= REPEATS; i++) {
    const v = await phase(`${name} ${i}/${REPEATS}`, watch, run);
    if (v === undefined) return undefined;
    all.push(v);
  }
  return all;
}

/** The pass of the small-files probe that created its files at the highest rate. */
const fastestCreates = (rs: readonly SmallResult[]): SmallResult =>
  rs.reduce((a, b) => (b.count / b.create.seconds > a.count / a.create.seconds ? b : a));

const fastestRand = (rs: Array<RandResult | undefined>) =>
  rs.reduce<RandResult | undefined>((a, b) => (!b ? a : !a || b.ops / b.seconds > a.ops / a.seconds ? b : a), undefined);

/** Runs fn while a child process keeps one core busy (so the other vCPU is never woken from idle). */
async function withSpinner<T>(fn: () => Promise<T>): Promise<T> {
  const spinner = spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' });
  children.add(spinner);
  try {
    await new Promise((r) => setTimeout(r, 300));
    return await fn();
  } finally {
    // Charge the spinner's CPU to the bench's own tools, not to "outside load".
    tally.toolCpuSeconds += spinner.pid ? await childCpuSoFar(spinner.pid) : 0;
    // Reaped within this phase, so its CPU reaches the bench's ended children here, not in the next phase.
    const gone = new Promise((r) => spinner.once('exit', r));
    spinner.kill('SIGKILL');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
    children.delete(spinner);
  }
}

// ---- workloads ------------------------------------------------------------------------------

interface Inputs {
  readonly work: string;
  readonly src: string;
  readonly trees: TreeFacts[];
}

/** The workloads, each a child process against a directory (a mount point or the local directory). */
function workloads(inp: Inputs) {
  const mib = String(DATA_BYTES / MiB);
  return {
    /**
     * Before a timed write: the inputs in the page cache, page-cache memory recently used (on
     * this VM, writing into memory the guest has not touched lately, e.g. after the page cache
     * was dropped, is much slower), and no dirty pages on the scratch filesystem.
     */
    settleInputs: async () => {
      must(
        await exec('bash', ['-c', 'cat "$@" > /dev/null', 'bash', inp.src, ...inp.trees.map((t) => t.tarball)], {
          timeoutMs: 300_000,
        }),
        'reading the inputs',
      );
      const scratch = path.join(inp.work, 'recycle.bin');
      must(
        await exec('dd', ['if=/dev/zero', `of=${scratch}`, 'bs=1M', `count=${mib}`, 'status=none'], {
          timeoutMs: DATA_TIMEOUT_MS,
        }),
        'dd (page-cache warm-up)',
      );
      await fsp.rm(scratch, { force: true });
      must(await exec('sync', ['-f', inp.work], { timeoutMs: 300_000 }), 'sync -f');
    },
    seqWrite: async (file: string) =>
      must(
        await exec('dd', [`if=${inp.src}`, `of=${file}`, 'bs=1M', `count=${mib}`, 'status=none'], { timeoutMs: DATA_TIMEOUT_MS }),
        'dd write',
      ).seconds,
    seqRead: async (file: string) =>
      jsonOf<SeqRead>(
        must(
          await exec(process.execPath, [probe('seqread'), file, String(DATA_BYTES)], { timeoutMs: DATA_TIMEOUT_MS }),
          'sequential read',
        ),
      ),
    randRead: async (file: string) =>
      jsonOf<RandResult>(
        must(
          await exec(
            process.execPath,
            [probe('randread'), file, String(DATA_BYTES), String(RANDOM_READS), String(RANDOM_BLOCK)],
            { timeoutMs: 600_000 },
          ),
          'random reads',
        ),
      ),
    smallFiles: async (dir: string, createLimitMs?: number) =>
      jsonOf<SmallResult>(
        must(
          await exec(
            process.execPath,
            [
              probe('smallfiles'),
              dir,
              String(SMALL_FILES),
              String(SMALL_FILE_BYTES),
              String(SETTLE_MS),
              ...(createLimitMs ? [String(Math.round(createLimitMs))] : []),
            ],
            { timeoutMs: 1_800_000 },
          ),
          'small files',
        ),
      ),
    /** tar x into dir; stopped at limitMs, when it reports how many entries were there by then. */
    tarX: async (dir: string, tree: TreeFacts, limitMs: number): Promise<TarRun> => {
      must(await exec('mkdir', ['-p', dir], { timeoutMs: 30_000 }), 'mkdir');
      const r = await exec('tar', ['xf', tree.tarball, '-C', dir], { timeoutMs: limitMs });
      if (r.timedOut) {
        const n = await exec('bash', ['-c', 'find "$1" -mindepth 1 | wc -l', 'bash', dir], { timeoutMs: 300_000 });
        return { seconds: r.seconds, complete: false, entries: Number(n.stdout.trim()) || 0 };
      }
      if (r.code === null) must(r, 'tar x');
      // tar carries on after most errors (a failed chmod, say) and exits 2: the extraction still ran to its end.
      const errs = r.stderr.split('\n').filter((l) => l.startsWith('tar: ') && !/Exiting with failure status/.test(l));
      if (r.code !== 0 && errs.length === 0) must(r, 'tar x');
      return {
        seconds: r.seconds,
        complete: true,
        entries: entriesOf(tree),
        ...(errs.length ? { errors: errs.length, firstError: errs[0] } : {}),
      };
    },
  };
}

// ---- ceilings -------------------------------------------------------------------------------

async function measureCeilings(inp: Inputs, c: Ceilings): Promise<void> {
  const w = workloads(inp);
  const nullMnt = path.join(inp.work, 'nullmnt');
  const nullfs = await phase('ceiling: mount do-nothing FUSE filesystem', { who: 'ceiling' }, () =>
    NullFs.start(nullMnt, DATA_BYTES),
  );
  if (nullfs) {
    c.nullOptions = nullfs.options.replace(/^-o/, '');
    const watch: Watch = { pid: nullfs.pid, who: 'ceiling' };
    let n = 0;
    const writes = await repeated('ceiling: FUSE sequential write', watch, async () => {
      await w.settleInputs();
      return w.seqWrite(path.join(nullMnt, `w${++n}.bin`));
    });
    if (writes) c.nullWrite = DATA_BYTES / Math.min(...writes) / MB;
    const reads = await repeated('ceiling: FUSE sequential read', watch, () => w.seqRead(path.join(nullMnt, 'zero.bin')));
    if (reads) c.nullRead = DATA_BYTES / Math.min(...reads.map((r) => r.seconds)) / MB;
    c.nullRandIdle = fastestRand(
      (await repeated('ceiling: FUSE random 4 KiB reads', watch, () => w.randRead(path.join(nullMnt, 'zero.bin')))) ?? [],
    );
    // On a VM, waking an idle vCPU adds tens of µs to every QD1 request; busy vCPUs answer faster.
    c.nullRandAwake = await phase('ceiling: FUSE random 4 KiB reads, one core kept busy', watch, () =>
      withSpinner(() => w.randRead(path.join(nullMnt, 'zero.bin'))),
    );
    let smallPass = 0;
    const smalls = await repeated('ceiling: FUSE small files', watch, () =>
      w.smallFiles(path.join(nullMnt, `small-${++smallPass}`)),
    );
    if (smalls) c.nullSmall = fastestCreates(smalls);
    for (const t of inp.trees) {
      const r = await phase(`ceiling: FUSE tar x ${t.label}`, watch, () =>
        w.tarX(path.join(nullMnt, `tree-${t.key}`), t, TAR_LIMIT_MS),
      );
      if (r?.complete) c.nullTar[t.key] = r.seconds;
    }
    await phase('ceiling: unmount do-nothing FUSE filesystem', { ends: nullfs.pid }, () => nullfs.unmount());
  }

  const srv = server!;
  const count = Math.round(DATA_BYTES / CHUNK_BYTES);
  const bucket = await srv.newBucket('ceiling');
  const put = await phase(`ceiling: raw S3 PUT (${count} x ${CHUNK_SIZE}, ${CONCURRENCY} in flight)`, {}, async () =>
    jsonOf<{ seconds: number }>(
      must(
        await exec(
          process.execPath,
          [probe('s3ceiling'), srv.endpoint, bucket, String(CHUNK_BYTES), String(count), String(CONCURRENCY), 'put'],
          { timeoutMs: 4 * DATA_TIMEOUT_MS },
        ),
        's3ceiling put',
      ),
    ),
  );
  if (put) c.s3Put = DATA_BYTES / put.seconds / MB;
  for (let pass = 1; pass <= 2 && put; pass++) {
    const get = await phase(`ceiling: raw S3 GET ${pass}/2`, {}, async () =>
      jsonOf<{ seconds: number }>(
        must(
          await exec(
            process.execPath,
            [probe('s3ceiling'), srv.endpoint, bucket, String(CHUNK_BYTES), String(count), String(CONCURRENCY), 'get'],
            { timeoutMs: 4 * DATA_TIMEOUT_MS },
          ),
          's3ceiling get',
        ),
      ),
    );
    const rate = get ? DATA_BYTES / get.seconds / MB : undefined;
    if (rate !== undefined && (c.s3Get === undefined || rate > c.s3Get)) {
      c.s3Get = rate;
      c.s3GetWindow = profiles[profiles.length - 1]?.window;
    }
  }
  // s3rver fails a batch delete of keys in one folder; its objects are files, removed with the bucket.
  if (!srv.bucketDir(bucket)) {
    await exec(
      process.execPath,
      [probe('s3ceiling'), srv.endpoint, bucket, String(CHUNK_BYTES), String(count), String(CONCURRENCY), 'delete'],
      { timeoutMs: 4 * DATA_TIMEOUT_MS },
    );
  }
  await srv.dropBucket(bucket);
}

// ---- one contender's turn -------------------------------------------------------------------

/** Filespace's times (s) for the workloads where a much slower peer is stopped. */
type ProductTimes = Partial<Record<TreeKey | 'create', number>>;

/** How long a peer may take where Filespace took `fsSeconds`: a multiple of it, within bounds. */
function peerLimitMs(fsSeconds: number | undefined): number {
  return fsSeconds ? Math.min(PEER_TAR_MAX_MS, Math.max(PEER_TAR_MIN_MS, PEER_TAR_FACTOR * fsSeconds * 1000)) : PEER_TAR_MAX_MS;
}

function limitWhy(fsSeconds: number | undefined, what: string): string {
  return fsSeconds
    ? `${PEER_TAR_FACTOR}x Filespace's ${fsSeconds.toFixed(1)} s ${what}, within ${PEER_TAR_MIN_MS / 1000}–${PEER_TAR_MAX_MS / 1000} s`
    : 'the longest a peer may run';
}

async function runSuite(c: Contender, s: Suite, inp: Inputs, fsTimes: ProductTimes, extras: ProductExtras): Promise<void> {
  const w = workloads(inp);
  const L = c.label;
  const pids = new Set<number>();
  const peer = c.key === 'rclone' || c.key === 's3fs';
  const durableMs = 3 * DATA_TIMEOUT_MS;
  const product = c instanceof FilespaceContender ? c : undefined;

  const m = await phase(`${L}: mount`, {}, () => c.mount());
  if (!m) return;
  const watch: Watch = { pid: m.pid, who: c.key };
  if (m.pid) {
    pids.add(m.pid);
    rss.watch(m.pid);
  }
  const seq = path.join(m.dir, 'seq.bin');
  const durable = (what: string) =>
    phase(`${L}: ${what}`, watch, async () => {
      const t0 = nowSeconds();
      const reached = await c.durable(durableMs);
      return Math.max(0, (reached ?? nowSeconds()) - t0);
    });

  // 1. sequential write, to close and until durable
  await w.settleInputs();
  s.seqWrite = await phase(`${L}: sequential write (dd bs=1M, to close)`, watch, () => w.seqWrite(seq));
  if (s.seqWrite !== undefined) {
    if (product?.writer) {
      const st = await product.writer.status().catch(() => undefined);
      if (st) extras.dirtyAtClose = Number(st.dirtyBytes);
    }
    s.seqDurable = await durable('sequential write: until durable');
    if (s.seqDurable !== undefined && c.objectSize) {
      const size = await c.objectSize('seq.bin').catch((err: unknown) => `error: ${errMsg(err)}`);
      if (size !== DATA_BYTES) {
        errors.push(`${L}: called the write durable, but the bucket holds seq.bin with ${String(size)} bytes, not ${DATA_BYTES}`);
        s.seqDurable = undefined;
      }
    }
    // 2. warm reads
    const warm = await repeated(`${L}: warm sequential read`, watch, () => w.seqRead(seq));
    if (warm) {
      s.warm = warm.map((r) => r.seconds);
      s.warmBest = warm.reduce((a, b) => (b.seconds < a.seconds ? b : a));
    }
    s.randWarm = fastestRand((await repeated(`${L}: random 4 KiB reads, warm`, watch, () => w.randRead(seq))) ?? []);
  }

  // 3. small files, REPEATS passes in new folders (a pass removes its files): the one that
  // created fastest is reported. A peer far slower than Filespace at creating files is
  // stopped, like its tar x (see below).
  const createLimit = peer ? peerLimitMs(fsTimes.create) : undefined;
  let pass = 0;
  const smallName = `${L}: small files (create, ls -l, stat, rm)`;
  const smalls = await repeated(smallName, watch, () => w.smallFiles(path.join(m.dir, `small-${++pass}`), createLimit));
  if (smalls) {
    const best = fastestCreates(smalls);
    s.small = best;
    s.smallPhase = `${smallName} ${smalls.indexOf(best) + 1}/${REPEATS}`;
    s.smallCreates = smalls.map((r) => r.count / r.create.seconds);
  }
  if (c.key === 'filespace' && s.small) fsTimes.create = s.small.create.seconds;
  if (s.small && s.small.count < SMALL_FILES) {
    notes.push(
      `${L}: creating small files was stopped after ${(createLimit! / 1000).toFixed(0)} s (${limitWhy(fsTimes.create, 'to create them')}), with ${s.small.count} of ${SMALL_FILES} files; ls -l, stat and rm then worked on those`,
    );
  }
  await durable('small files: until durable');

  // 4. trees
  for (const t of inp.trees) {
    const fsTime = fsTimes[t.key];
    const limit = peer ? peerLimitMs(fsTime) : TAR_LIMIT_MS;
    const dir = path.join(m.dir, `tree-${t.key}`);
    const r = await phase(`${L}: tar x ${t.label}`, watch, () => w.tarX(dir, t, limit));
    if (!r) continue;
    s.tars[t.key] = r;
    // A peer's failures are findings about it; the product's are errors of the run.
    if (r.errors) (peer ? notes : errors).push(`${L}: tar x ${t.label} reported ${r.errors} errors (first: ${r.firstError})`);
    if (!r.complete)
      notes.push(
        `${L}: tar x of ${t.label} was stopped after ${(limit / 1000).toFixed(0)} s (${limitWhy(fsTime, 'until durable')}), with ${r.entries} of ${entriesOf(t)} entries extracted`,
      );
    if (product?.writer && r.complete) {
      const st = await product.writer.status().catch(() => undefined);
      if (st) extras.dirtyAfterTar = { tree: t.key, bytes: Number(st.dirtyBytes), files: Number(st.dirtyFiles) };
    }
    const d = await durable(`tar x ${t.label}: until durable`);
    if (d !== undefined) r.durableSeconds = d;
    // A peer may take a multiple of Filespace's time until its tree is durable, so that a peer
    // that extracts slower but uploads as it goes is still compared on both rows.
    if (c.key === 'filespace' && r.complete) fsTimes[t.key] = r.seconds + (d ?? 0);
  }

  // Filespace alone: read-back of the biggest tree, and the upload limit
  if (product?.writer) await productExtras(product, inp, extras, watch);

  await phase(`${L}: unmount`, { ends: m.pid }, () => m.unmount());

  // 5. cold reads on fresh mounts
  const coldMount = async (tag: string): Promise<Mounted | undefined> => {
    const how = await phase(`${L}: prepare a cold mount`, {}, () => c.prepareCold());
    if (how) s.coldMethod = how;
    const cm = await phase(`${L}: mount with an empty cache (${tag})`, {}, () => c.mountCold(tag));
    if (cm?.pid) {
      pids.add(cm.pid);
      rss.watch(cm.pid);
    }
    return cm;
  };
  // Each pass on a new mount with an empty cache; the fastest is reported, as for warm reads
  // (one pass swings by a third on a shared 2-core machine), and every pass is listed.
  if (s.seqWrite !== undefined) {
    for (let i = 1; i <= REPEATS; i++) {
      const cm = await coldMount(`cold-${i}`);
      if (!cm) break;
      const cw: Watch = { pid: cm.pid, who: c.key };
      const coldFile = path.join(cm.dir, 'seq.bin');
      const name = `${L}: cold sequential read (first byte, then 1 MiB reads) ${i}/${REPEATS}`;
      const r = await phase(name, cw, () => w.seqRead(coldFile));
      if (r && (!s.cold || r.seconds < s.cold.seconds)) {
        s.cold = r;
        s.coldPhase = name;
        s.coldWindow = profiles[profiles.length - 1]?.window;
      }
      // Every pass's bytes are compared: a pass that read wrong bytes fails the row whatever its speed.
      const verified = await phase(`${L}: verify cold read (cmp with the source) ${i}/${REPEATS}`, cw, async () => {
        const v = await exec('cmp', [inp.src, coldFile], { timeoutMs: DATA_TIMEOUT_MS });
        if (v.timedOut) throw new Error('cmp did not finish');
        if (v.code !== 0) errors.push(`${L}: the cold read returned different bytes: ${(v.stdout + v.stderr).trim()}`);
        return v.code === 0;
      });
      s.coldVerified = s.coldVerified === false || verified === undefined ? false : verified;
      await phase(`${L}: unmount (cold-${i})`, { ends: cm.pid }, () => cm.unmount());
    }
    for (let i = 1; i <= REPEATS; i++) {
      const cm = await coldMount(`cold-rand-${i}`);
      if (!cm) break;
      const name = `${L}: random 4 KiB reads, cold ${i}/${REPEATS}`;
      const r = await phase(name, { pid: cm.pid, who: c.key }, () => w.randRead(path.join(cm.dir, 'seq.bin')));
      if (r && fastestRand([s.randCold, r]) === r) {
        s.randCold = r;
        s.randColdPhase = name;
      }
      await phase(`${L}: unmount (cold-rand-${i})`, { ends: cm.pid }, () => cm.unmount());
    }
  }

  let peak = 0;
  for (const pid of pids) peak = Math.max(peak, await rss.peak(pid));
  s.rssPeak = peak || undefined;
}

async function productExtras(c: FilespaceContender, inp: Inputs, extras: ProductExtras, watch: Watch): Promise<void> {
  const space = c.writer!;
  const tree = inp.trees[inp.trees.length - 1];
  if (tree) {
    const dir = path.join(space.mnt, `tree-${tree.key}`);
    extras.tarVerify = await phase(`Filespace: tree read-back (tar d ${tree.label})`, watch, async () => {
      const r = await exec('tar', ['df', tree.tarball, '-C', dir], { timeoutMs: 600_000 });
      if (r.timedOut) throw new Error('tar d did not finish');
      // Lines look like "path: Mod time differs"; count them by kind of difference.
      const differences: Record<string, number> = {};
      const lines = (r.stdout + r.stderr).trim().split('\n').filter(Boolean);
      for (const line of lines) {
        const kind = /: ([^:]+)$/.exec(line)?.[1] ?? line;
        differences[kind] = (differences[kind] ?? 0) + 1;
      }
      return { tree: tree.key, seconds: r.seconds, differences, sample: lines.slice(0, 3).join('; ') };
    });
  }
  // Upload bandwidth limit: a write uploaded under `upload-limit`, from dd start to sync done.
  extras.limitedUpload = await phase(
    `Filespace: upload under upload-limit ${LIMIT_MIB} MiB/s (${LIMITED_MIB} MiB)`,
    watch,
    async () => {
      must(await space.cli(['set', space.name, 'upload-limit', `${LIMIT_MIB}MiB`], 20_000), 'filespace set upload-limit');
      try {
        must(await exec('sync', ['-f', inp.work], { timeoutMs: 300_000 }), 'sync -f');
        const t0 = Date.now();
        // Fresh random bytes: a copy of data already in the bucket would be deduplicated, not uploaded.
        must(
          await exec(
            'dd',
            ['if=/dev/urandom', `of=${path.join(space.mnt, 'limited.bin')}`, 'bs=1M', `count=${LIMITED_MIB}`, 'status=none'],
            { timeoutMs: DATA_TIMEOUT_MS },
          ),
          'dd write',
        );
        await space.sync(600_000);
        return (Date.now() - t0) / 1000;
      } finally {
        must(await space.cli(['set', space.name, 'upload-limit', 'off'], 20_000), 'filespace set upload-limit off');
      }
    },
  );
  const st = await space.status().catch(() => undefined);
  if (typeof st?.lastError === 'string' && st.lastError)
    notes.push(`Filespace (writing machine) reported lastError: ${st.lastError}`);
}

// ---- set-up ---------------------------------------------------------------------------------

/** Installs a peer's Debian package when its command is missing; resolves to why it cannot run, or undefined. */
async function ensurePeer(cmd: string, pkg: string): Promise<string | undefined> {
  if (await hasCommand(cmd)) return undefined;
  if (!(await hasCommand('apt-get'))) return `${cmd} is not installed and apt-get is not available`;
  const sudo = process.getuid?.() === 0 ? [] : ['sudo', '-n'];
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  log(`${cmd} is missing: installing the Debian package ${pkg}`);
  const apt = (args: string[]) =>
    exec(sudo[0] ?? 'apt-get', [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), ...args], { timeoutMs: 600_000, env });
  let r = await apt(['install', '-y', '-q', pkg]);
  if (r.code !== 0) {
    await apt(['update', '-q']);
    r = await apt(['install', '-y', '-q', pkg]);
  }
  if (r.code !== 0)
    return `could not install the Debian package ${pkg} (${(r.stderr || r.stdout).trim().split('\n').pop()?.replace(/\.$/, '') ?? `exit ${r.code}`})`;
  if (!(await hasCommand(cmd))) return `the Debian package ${pkg} is installed, but there is no ${cmd} on PATH`;
  return undefined;
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  const r = await exec(cmd, args, { timeoutMs: 30_000 });
  return (r.stdout || r.stderr).trim().split('\n')[0] ?? '?';
}

/** Counts what a tarball holds, from its own listing. */
async function tarFacts(key: TreeKey, label: string, source: string, tarball: string): Promise<TreeFacts> {
  const r = must(await exec('tar', ['tvf', tarball], { timeoutMs: 120_000 }), 'tar tvf');
  let files = 0;
  let dirs = 0;
  let symlinks = 0;
  let bytes = 0;
  for (const line of r.stdout.split('\n')) {
    if (!line) continue;
    const [perm, , size] = line.split(/\s+/);
    if (perm?.startsWith('-')) {
      files++;
      bytes += Number(size);
    } else if (perm?.startsWith('d')) dirs++;
    else if (perm?.startsWith('l')) symlinks++;
  }
  return { key, label, source, tarball, files, dirs, symlinks, bytes, tarBytes: (await fsp.stat(tarball)).size };
}

async function prepareInputs(work: string): Promise<Inputs> {
  log(`writing a ${DATA_BYTES / MiB} MiB random source file`);
  const src = await randomFile(work, 'source.bin', DATA_BYTES);
  // node_modules may be a link to another checkout's: pack the real directory.
  const modules = await fsp.realpath(path.join(REPO, 'node_modules'));
  const trees: TreeFacts[] = [];
  for (const key of TREES) {
    const source = key === 'npm' ? path.join(path.dirname(modules), NPM_TREE) : modules;
    const label = key === 'npm' ? NPM_TREE : 'node_modules';
    const tarball = path.join(work, `${key}.tar`);
    log(`packing ${source} into a tarball`);
    // Hard links are stored as plain files, so every contender extracts the same (s3fs and rclone have none).
    must(
      await exec('tar', ['cf', tarball, '--hard-dereference', '-C', path.dirname(source), path.basename(source)], {
        timeoutMs: 300_000,
      }),
      'tar cf',
    );
    trees.push(await tarFacts(key, label, source, tarball));
  }
  return { work, src, trees };
}

/** sha256 over the product's sources (electron/, native/; *.ts, *.js, *.c), to tie figures to a code state. */
async function sourceFingerprint(): Promise<string> {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(dir, e.name);
      if (e.isDirectory() && e.name !== 'node_modules' && e.name !== 'build' && e.name !== 'addon') await walk(p);
      else if (e.isFile() && /\.(ts|js|c)$/.test(e.name)) files.push(p);
    }
  };
  await walk(path.join(REPO, 'electron'));
  await walk(path.join(REPO, 'native'));
  const h = createHash('sha256');
  for (const f of files.sort())
    h.update(path.relative(REPO, f))
      .update('\0')
      .update(await fsp.readFile(f));
  return `${h.digest('hex').slice(0, 16)} (${files.length} files)`;
}

function fuseNativeVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- a package's own package.json, read at run time
  return (require('fuse-native/package.json') as { version: string }).version;
}

async function machineFacts(work: string): Promise<Record<string, string>> {
  const cpuinfo = await fsp.readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const meminfo = await fsp.readFile('/proc/meminfo', 'utf8').catch(() => '');
  const memKb = Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  const libfuse = await exec('dpkg-query', ['-W', '-f', '${Version}', 'libfuse2'], { timeoutMs: 10_000 });
  const libfuse3 = await exec('dpkg-query', ['-W', '-f', '${Version}', 'libfuse3-3'], { timeoutMs: 10_000 });
  const addon = lowLevelAddon();
  const binding = addon
    ? `Filespace on its low-level addon built for libfuse${addon.libfuse} (writes of up to ${addon.maxWrite / 1024} KiB)`
    : 'Filespace on fuse-native (the low-level addon is not built)';
  const fsType = await exec('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', work], { timeoutMs: 10_000 });
  return {
    CPU: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown',
    Cores: `${(cpuinfo.match(/^processor\s*:/gm) ?? []).length} (os.availableParallelism ${os.availableParallelism()})`,
    RAM: `${(memKb / 1024 / 1024).toFixed(1)} GiB`,
    Kernel: os.release(),
    Node: process.version,
    FUSE: `libfuse2 ${libfuse.stdout.trim() || '?'}, fuse-native ${fuseNativeVersion()} (the ceiling), libfuse3 ${libfuse3.stdout.trim() || 'not installed'}; ${binding}`,
    'Scratch and cache disk': `${fsType.stdout.trim().replace(/\s+/g, ' ') || '?'} (${work})`,
    'Product sources': `sha256 ${await sourceFingerprint()} of electron/ and native/`,
  };
}

// ---- main -----------------------------------------------------------------------------------

/** Cores busy on the machine over `ms` while this benchmark runs nothing. */
async function idleLoad(ms: number): Promise<number | undefined> {
  const m = await machineMeter();
  await new Promise((r) => setTimeout(r, ms));
  return m();
}

/** Waits (at most `limitMs`) for other load on the machine to calm down; returns the last reading. */
async function waitForQuiet(limitMs: number): Promise<number | undefined> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const busy = await idleLoad(2000);
    if (busy === undefined || busy < 0.3 || Date.now() >= deadline) return busy;
    log(`other processes keep ${busy.toFixed(2)} cores busy; waiting for the machine to quiet down`);
  }
}

function newSuite(c: { key: ContenderKey; label: string; setup: string }): Suite {
  return { key: c.key, label: c.label, setup: c.setup, warm: [], tars: {} };
}

async function main(): Promise<number> {
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    void cleanup(true).finally(() => process.exit(sig === 'SIGINT' ? 130 : 143));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const watchdog = setTimeout(() => {
    log(`the run exceeded ${RUN_LIMIT_MS / 60_000} minutes: aborting`);
    void cleanup(true).finally(() => process.exit(2));
  }, RUN_LIMIT_MS);
  watchdog.unref();

  log(
    `data set ${DATA_BYTES / MiB} MiB, ${SMALL_FILES} small files, trees: ${TREES.join(', ') || 'none'}, contenders: ${CONTENDERS.join(', ')}`,
  );
  const ceilings: Ceilings = { nullTar: {} };
  const extras: ProductExtras = {};
  const suites: Suite[] = [];
  let facts: Record<string, string> = {};
  let inputs: Inputs | undefined;
  let serverWhy = '';
  const before = await waitForQuiet(60_000);
  const t0 = Date.now();
  try {
    const work = await tmpDir('bench');
    onTeardown('scratch folder', () => fsp.rm(work, { recursive: true, force: true }));
    facts = await machineFacts(work);
    inputs = await prepareInputs(work);

    // The S3 server: one for every contender.
    const useS3rver = SERVER_CHOICE === 's3rver' || (SERVER_CHOICE === undefined && s3rverInstalled());
    if (SERVER_CHOICE === 's3rver' && !s3rverInstalled())
      throw new Error('FILESPACE_BENCH_SERVER=s3rver, but s3rver is not installed (npm install)');
    if (useS3rver) {
      server = await startS3rver(path.join(work, 's3rver'));
      serverWhy =
        "the same server for every contender; s3rver serves a range by reading just that range from the object's file and answers requests faster than moto, so rclone and s3fs (which keep a file as one object and read it by ranges) are not penalised. It ignores conditional writes, so Filespace runs in its mode for such stores (one writing machine, readers mount read-only), which changes nothing on the data path.";
    } else {
      server = await startMotoServer();
      serverWhy =
        SERVER_CHOICE === 'moto'
          ? 'chosen with FILESPACE_BENCH_SERVER=moto.'
          : '**s3rver is not installed (`npm install`), so this run fell back to moto**.';
      serverWhy +=
        ' moto reads a whole object to serve any range: rclone and s3fs, which keep a 1 GiB file as one object and read it by ranges, are penalised on every read that reaches the server; treat their read figures with care.';
      notes.push(
        'the peers ran against moto, which reads a whole object for every ranged GET: their cold and random reads are depressed by the server',
      );
    }
    const srv = server;
    onTeardown('the S3 server', () => srv.stop());
    if (srv.pid) rss.watch(srv.pid);
    facts['S3 server'] = `${srv.description} on loopback`;
    const bed = new Bed();
    await bed.start(srv);
    onTeardown('the test bed', () => bed.stop());

    const ctx: Context = {
      work,
      server: srv,
      bed,
      chunkSize: CHUNK_SIZE,
      cacheBytes: CACHE_BYTES,
      cacheSize: CACHE_SIZE,
      uploadDelayMs: DEFAULT_SETTINGS.uploadDelayMs,
    };
    const s = DEFAULT_SETTINGS;
    const engineDefaults = `upload/download concurrency ${s.uploadConcurrency}/${s.downloadConcurrency}, read-ahead up to ${s.prefetchMaxChunks} chunks, upload delay ${s.uploadDelayMs / 1000} s, AES-256-GCM, deflate when it saves >= 1/8`;
    const fsType = facts['Scratch and cache disk'] ?? '';
    const contenders: Contender[] = [];
    for (const key of CONTENDERS) {
      if (key === 'local') contenders.push(new LocalContender(ctx, fsType));
      else if (key === 'filespace') contenders.push(new FilespaceContender(ctx, engineDefaults));
      else {
        const cmd = key;
        const why = await ensurePeer(cmd, cmd);
        if (why) {
          log(`SKIPPING ${key}: ${why}`);
          suites.push({ ...newSuite({ key, label: key, setup: 'not run' }), skipped: why });
          continue;
        }
        const version = await firstLine(cmd, key === 'rclone' ? ['version'] : ['--version']);
        contenders.push(
          key === 'rclone' ? new RcloneContender(ctx, version) : new S3fsContender(ctx, version.replace(/\s*\(commit.*$/, '')),
        );
      }
    }

    await measureCeilings(inputs, ceilings);

    const fsTimes: ProductTimes = {};
    for (const c of contenders) {
      checkAbort();
      const suite = newSuite(c);
      suites.push(suite);
      try {
        await runSuite(c, suite, inputs, fsTimes, extras);
      } catch (err) {
        errors.push(`${c.label}: run aborted: ${errMsg(err)}`);
        log(`${c.label}: run aborted: ${errMsg(err)}`);
      }
      if (errors.some((e) => e.startsWith(`${c.label}:`)) && c instanceof FilespaceContender) {
        for (const sp of c.spaces) {
          const tail = (await fsp.readFile(sp.logFile, 'utf8').catch(() => '')).trim().split('\n').slice(-8).join('\n');
          if (tail) notes.push(`engine log of ${sp.name} (last lines):\n\n\`\`\`\n${tail}\n\`\`\``);
        }
      }
      await phase(`${c.label}: free its disk space`, {}, () => c.dispose());
    }
    if (srv.pid) extras.serverRss = await rss.peak(srv.pid);
    rss.stop();
  } catch (err) {
    errors.push(`run aborted: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    log(`run aborted: ${errMsg(err)}`);
  }
  const runMinutes = (Date.now() - t0) / 60_000;
  await cleanup(false);
  const after = await idleLoad(2000);
  if (extras.tarVerify && Object.keys(extras.tarVerify.differences).length > 0) {
    notes.push(
      `tar d found differences (first: ${extras.tarVerify.sample}). "Mod time differs" alone means contents, sizes, modes and owners matched; fuse-native ${fuseNativeVersion()} hands the access time to the utimens callback in place of the modification time (fuse-native.c passes l->atime twice; see sagemathinc/fuse-native#3), so every mtime set with utimensat and an omitted or different atime (tar x, cp -p, rsync -t, touch -m) is lost.`,
    );
  }
  const info: RunInfo = {
    dataBytes: DATA_BYTES,
    scale: SCALE,
    smallFiles: SMALL_FILES,
    smallFileBytes: SMALL_FILE_BYTES,
    randomReads: RANDOM_READS,
    randomBlock: RANDOM_BLOCK,
    repeats: REPEATS,
    settleMs: SETTLE_MS,
    chunkSize: CHUNK_SIZE,
    concurrency: CONCURRENCY,
    cacheSize: CACHE_SIZE,
    limitMiB: LIMIT_MIB,
    limitedMiB: LIMITED_MIB,
    rssLimit: RSS_LIMIT,
    peerTar: { factor: PEER_TAR_FACTOR, minS: PEER_TAR_MIN_MS / 1000, maxS: PEER_TAR_MAX_MS / 1000 },
    trees: inputs?.trees ?? [],
    serverKind: server?.kind,
    serverWhy,
    facts,
    loadBefore: before,
    loadAfter: after,
    runMinutes,
    totalSeconds: runSeconds(),
    asRoot: process.getuid?.() === 0,
  };
  const out = await report({ info, suites, ceilings, extras, profiles, errors, notes }, path.join(REPO, 'BENCHMARKS.md'));
  process.stdout.write(`\n${out}\n`);
  if (errors.length > 0) process.stdout.write(`\nERRORS:\n${errors.map((e) => `- ${e}`).join('\n')}\n`);
  if (notes.length > 0) process.stdout.write(`\nNOTES:\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
  log(`wrote ${path.join(REPO, 'BENCHMARKS.md')}`);
  clearTimeout(watchdog);
  return errors.length > 0 ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
    setTimeout(() => process.exit(code), 100).unref();
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    void cleanup(true).finally(() => process.exit(1));
  },
);
