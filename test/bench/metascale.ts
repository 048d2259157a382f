/**
 * Metadata at scale: `npm run bench:scale`. What a big tree costs the engine, measured against
 * the targets of "a million files" (engine memory, a fresh machine's link and mount, a cold stat,
 * a listing of the whole tree, what a checkpoint writes after a few changes, how many metadata
 * objects the bucket holds).
 *
 * The tree is made through the same calls the FUSE handlers make (the engine's `vfs` as the
 * adapter mounts it: mkdir, create, write, flush, release), in process, with no kernel mount, on
 * a bucket on local disk (store/local.ts), so what is measured is the engine's metadata work and
 * not an S3 server's. Every figure that depends on the tree's size is measured in a process of its
 * own (its peak resident memory is that phase's):
 *   1. make: FILESPACE_SCALE_FILES files (default 100,000) in FILESPACE_SCALE_DIRS directories
 *      (default one per 100 files); one file in ten holds 1 KiB, the rest are empty; then sync;
 *   2. remount on the same machine: time to open, a stat of sampled paths, a listing of the
 *      whole tree (readdir and getattr of every entry, as `ls -lR` asks), then 1,000 files
 *      changed, synced, a checkpoint written (as unmount writes one, but waited for: unmount
 *      gives it a few seconds; its share is the new pages and manifest it wrote against the
 *      manifest plus every page it names, the whole tree's metadata; a run where none was
 *      written says so and fails the target), and the engine closed;
 *   3. snapshots on the same machine: one of the whole tree, opened for browsing (its tree
 *      written into a database of its own) and a stat of sampled paths in it, then 1,000 files
 *      changed and a second one, the listing of both with their size-unique (by the engine, as
 *      a mount answers it, and from the bucket alone, as the command does when nothing is
 *      mounted: in a process of its own, with its own peak RSS), garbage collection (which counts what both name), then a restart and garbage
 *      collection again (what both name kept from the clean stop), once more with that count
 *      removed (counted from the bucket, as after a kill), and the first deleted again;
 *   4. `filespace check` of the machine that made the tree, unmounted (the bucket's tree, the
 *      second snapshot's, the local metadata and cache), as the command runs it; then the
 *      snapshot is deleted;
 *   5. a fresh machine: link from the bucket and open, then a cold stat (its folders loaded as
 *      the low-level mount loads them before a request, meta/pageLoader.ts), then the time until
 *      the background has loaded every folder. With FILESPACE_SCALE_GET_MS (default 0), the fresh
 *      machine's bucket answers each GET that many milliseconds late, as a bucket across a
 *      network does (on a real bucket the GETs' round trips count as much as their bytes);
 *   6. sustained creates: FILESPACE_SCALE_CREATES files of 4 KiB (default 50,000) into a
 *      filespace of their own, uploads running behind; the rate, and what was left to upload
 *      when the last file closed (and how long it took to reach the bucket);
 *   7. paced creates: FILESPACE_SCALE_PACE files of 4 KiB a second (default 1,000) for 30 s,
 *      into a filespace of their own, then at half that pace into another: how many of them
 *      uploaded while they were made.
 * Each phase's process runs as `filespace mount` runs an engine (electron/cli/engineProcess.ts:
 * glibc malloc settings; electron/host/engineHeap.ts: V8 heap flags), so its memory is the
 * product's: without them, libfuse's threads' malloc arenas and V8's heap growth added 100-140 MB
 * to the remount's peak.
 * The bucket's metadata objects are counted and sized after each phase.
 *
 * FILESPACE_SCALE_KEEP=1 keeps the folder of the run (bucket and machines) to look at after;
 * FILESPACE_SCALE_TRACE=1 prints the make phase's memory and pending metadata changes as it goes.
 * Results are printed and written to BENCHMARKS.md as the section after the marker
 * `SCALE_MARKER` (the side-by-side benchmark keeps that section when it rewrites the file).
 */

import { execFile, fork } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine } from '../../electron/engine/engine';
import { createLocalMetadata } from '../../electron/engine/cacheFolder';
import { resolveSettings } from '../../electron/engine/config';
import { createFilespace, unlockFilespace } from '../../electron/engine/filespace';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { PAGE_PREFIX, isManifest } from '../../electron/engine/meta/pages';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { FuseMount, type FuseFilesystem } from '../../native/fuse/adapter';
import { LowLevelMount, fuseBindingChoice } from '../../native/fuse/lowlevel';
import { engineProcessEnv } from '../../electron/cli/engineProcess';
import { ENGINE_V8_FLAGS } from '../../electron/host/engineHeap';
import { snapshotsIn } from '../../electron/host/snapshots';
import { SNAPSHOT_REFS_FILE, SnapshotStore } from '../../electron/engine/meta/snapshots';
import { checkFilespace } from '../../electron/engine/check';
import { REPO } from '../helpers/bed';
import { PASSPHRASE, writeFile } from '../helpers/engineBed';
import { SCALE_MARKER } from './report';

const MiB = 1024 * 1024;
const CHANGED_FILES = 1_000;
const STAT_SAMPLES = 200;

interface Layout {
  readonly files: number;
  readonly dirs: number;
}

const fileAt = (l: Layout, i: number) => `/d${i % l.dirs}/f${i}`;

/** Extra time before each GET of the fresh machine's bucket (ms; see the header). */
const GET_MS = Number(process.env.FILESPACE_SCALE_GET_MS ?? 0);

/** The bucket on local disk, answering each GET `GET_MS` late. */
class DistantDiskStore extends LocalDiskStore {
  override async get(...args: Parameters<LocalDiskStore['get']>): ReturnType<LocalDiskStore['get']> {
    await new Promise((resolve) => setTimeout(resolve, GET_MS));
    return super.get(...args);
  }
}

interface BucketMeta {
  readonly objects: number;
  readonly bytes: number;
  readonly checkpoints: number;
  /** The newest checkpoint: the manifest and every page it names (a whole-tree one: itself). */
  readonly newestCheckpointBytes: number;
  /** The keys that make the newest checkpoint (the manifest and its pages). */
  readonly newestCheckpointKeys: ReadonlySet<string>;
  /** The key of the newest checkpoint (its manifest), if any. */
  readonly newestCheckpoint: string | undefined;
  readonly pages: number;
  readonly segments: number;
  /** Size of every metadata object, by key. */
  readonly sizes: ReadonlyMap<string, number>;
}

async function bucketMeta(bucketDir: string): Promise<BucketMeta> {
  const store = new LocalDiskStore(bucketDir);
  const keys = await store.list('meta/');
  let bytes = 0;
  const sizes = new Map<string, number>();
  const ckpts = keys.filter((k) => k.startsWith('meta/ckpt/'));
  for (const k of keys) {
    const got = await store.get(k);
    const n = got?.body.length ?? 0;
    bytes += n;
    sizes.set(k, n);
  }
  const newest = ckpts[ckpts.length - 1];
  const newestCheckpointKeys = new Set<string>(newest ? [newest] : []);
  if (newest) {
    const { header, keys: secrets } = await unlockFilespace(store, PASSPHRASE);
    const ck = await new RemoteMeta(store, secrets.metaKey, header).readCheckpoint(newest);
    if (ck && isManifest(ck)) for (const p of ck.pages) newestCheckpointKeys.add(p.key);
  }
  return {
    objects: keys.length,
    bytes,
    checkpoints: ckpts.length,
    newestCheckpointBytes: [...newestCheckpointKeys].reduce((sum, k) => sum + (sizes.get(k) ?? 0), 0),
    newestCheckpointKeys,
    newestCheckpoint: newest,
    pages: keys.filter((k) => k.startsWith(PAGE_PREFIX)).length,
    segments: keys.filter((k) => k.startsWith('meta/log/')).length,
    sizes,
  };
}

async function duBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await duBytes(p);
    else if (e.isFile()) total += (await fsp.stat(p)).size;
  }
  return total;
}

async function openEngine(root: string, machine: string, distant = false, bucket = 'bucket') {
  const store = new (distant && GET_MS > 0 ? DistantDiskStore : LocalDiskStore)(path.join(root, bucket));
  const { header, keys } = await unlockFilespace(store, PASSPHRASE);
  const cacheDir = path.join(root, machine);
  const started = performance.now();
  let linkMs = 0;
  if (!(await fsp.stat(cacheDir).catch(() => undefined))) {
    await fsp.mkdir(cacheDir);
    await createLocalMetadata(store, keys, header, cacheDir);
    linkMs = performance.now() - started;
  }
  const engine = await Engine.open({
    store,
    keys,
    header,
    cacheDir,
    settings: resolveSettings({ cacheCapBytes: 1024 * MiB, gcIntervalMs: 0 }),
    log: () => undefined,
  });
  return { engine, fs: engine.vfs as FuseFilesystem, linkMs, openMs: performance.now() - started - linkMs };
}

async function syncAll(engine: Engine): Promise<void> {
  if (!(await engine.sync(Date.now() + 30 * 60_000))) throw new Error('sync did not finish within 30 minutes');
}

const peakRssBytes = () => process.resourceUsage().maxRSS * 1024;

/** Stat of `paths`, one at a time: the slowest and the median, in ms. */
function statTimes(fs: { getattr(path: string): unknown }, paths: string[]): { maxMs: number; medianMs: number } {
  const t: number[] = [];
  for (const p of paths) {
    const s = performance.now();
    fs.getattr(p);
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  return { maxMs: t[t.length - 1] ?? 0, medianMs: t[Math.floor(t.length / 2)] ?? 0 };
}

/**
 * readdir and getattr of every entry below `dir`, as `ls -lR` asks: the number of entries.
 * It yields to the event loop every 64 calls, as the requests of a mount arrive one by one: a
 * single synchronous pass would keep every inode it read alive until it returned (the working
 * set's WeakRefs, meta/treeDb.ts), which no request of a mount does.
 */
async function walk(fs: FuseFilesystem, dir: string): Promise<number> {
  let n = 0;
  const subdirs: string[] = [];
  for (const name of fs.readdir(dir)) {
    if (name === '.' || name === '..') continue;
    const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
    const st = fs.getattr(p);
    if (++n % 64 === 0) await new Promise((resolve) => setImmediate(resolve));
    if ((st.mode & 0o170000) === 0o040000) subdirs.push(p);
  }
  await new Promise((resolve) => setImmediate(resolve));
  for (const p of subdirs) n += await walk(fs, p);
  return n;
}

function samplePaths(l: Layout, n: number): string[] {
  const out: string[] = [];
  for (let k = 0; k < n; k++) out.push(fileAt(l, Math.floor(((k + 0.5) * l.files) / n)));
  return out;
}

type PhaseResult = Record<string, number>;

/** Seconds `ls -lR` of the whole tree takes in a child process (never from this one, which serves the mount). */
function lsSeconds(dir: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) =>
    execFile('sh', ['-c', `ls -lR "$1" > /dev/null`, 'ls', dir], { timeout: 30 * 60_000 }, (err) =>
      err ? reject(new Error(`ls -lR failed: ${err.message}`)) : resolve((performance.now() - started) / 1000),
    ),
  );
}

/** `ls -lR` of the whole tree through a real FUSE mount of the engine, twice: cold, then warm (best of 2). */
async function lsThroughMount(root: string, engine: Engine): Promise<{ coldS: number; warmS: number }> {
  const s = engine.currentSettings;
  const mountPoint = path.join(root, 'mnt');
  await fsp.mkdir(mountPoint, { recursive: true });
  // The binding `filespace mount` uses (FILESPACE_FUSE, else the low-level one when built).
  const Mount = fuseBindingChoice() === 'lowlevel' ? LowLevelMount : FuseMount;
  const fuse = new Mount(mountPoint, engine.vfs, {
    attrTimeoutSec: s.attrTimeoutSec,
    entryTimeoutSec: s.entryTimeoutSec,
    negativeTimeoutSec: s.negativeTimeoutSec,
    xattrs: s.xattrs,
    fsName: 'filespace:scale',
    allowOther: false,
  });
  await fuse.mount();
  try {
    const coldS = await lsSeconds(mountPoint);
    const warmS = Math.min(await lsSeconds(mountPoint), await lsSeconds(mountPoint));
    return { coldS, warmS };
  } finally {
    await fuse.unmount(true);
  }
}

async function phaseMake(root: string, l: Layout): Promise<PhaseResult> {
  const store = new LocalDiskStore(path.join(root, 'bucket'));
  await createFilespace(store, PASSPHRASE, 4 * MiB);
  const { engine, fs } = await openEngine(root, 'a');
  const baseRss = process.memoryUsage().rss;
  const started = performance.now();
  for (let d = 0; d < l.dirs; d++) fs.mkdir(`/d${d}`, 0o755);
  const small = Buffer.alloc(1024, 7);
  const empty = Buffer.alloc(0);
  let peakRss = baseRss;
  for (let i = 0; i < l.files; i++) {
    await writeFile(fs, fileAt(l, i), i % 10 === 0 ? small : empty);
    if (i % 5_000 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss);
    if (process.env.FILESPACE_SCALE_TRACE && i % 20_000 === 0) {
      const u = process.memoryUsage();
      const e = engine as unknown as { meta: { pendingRemote: unknown[] } };
      process.stderr.write(
        `[trace] ${i} rss ${(u.rss / 1e6).toFixed(0)} heap ${(u.heapUsed / 1e6).toFixed(0)}/${(u.heapTotal / 1e6).toFixed(0)} ext ${(u.external / 1e6).toFixed(0)} ab ${(u.arrayBuffers / 1e6).toFixed(0)} pending ${e.meta.pendingRemote.length}\n`,
      );
    }
  }
  const makeS = (performance.now() - started) / 1000;
  const syncStarted = performance.now();
  await syncAll(engine);
  const syncS = (performance.now() - syncStarted) / 1000;
  const rssEnd = process.memoryUsage().rss;
  await engine.close();
  return {
    makeFilesPerSec: l.files / makeS,
    syncS,
    rssPerFileBytes: (rssEnd - baseRss) / l.files,
    peakRss: Math.max(peakRss, peakRssBytes()),
    localMetaBytes: await duBytes(path.join(root, 'a', 'meta')),
  };
}

async function phaseRemount(root: string, l: Layout): Promise<PhaseResult> {
  const { engine, fs, openMs } = await openEngine(root, 'a');
  const rssOpen = process.memoryUsage().rss;
  const stat = statTimes(fs, samplePaths(l, STAT_SAMPLES));
  const walkStarted = performance.now();
  const entries = await walk(fs, '/');
  const walkS = (performance.now() - walkStarted) / 1000;
  const ls = await lsThroughMount(root, engine);
  const before = await bucketMeta(path.join(root, 'bucket'));
  const changed = Buffer.alloc(2048, 9);
  for (let k = 0; k < CHANGED_FILES; k++) await writeFile(fs, fileAt(l, Math.floor((k * l.files) / CHANGED_FILES)), changed);
  await syncAll(engine);
  // The checkpoint unmount would write, without unmount's time bound: what it costs is measured.
  const ckptStarted = performance.now();
  await engine.checkpointNow();
  const checkpointMs = performance.now() - ckptStarted;
  await engine.close();
  const after = await bucketMeta(path.join(root, 'bucket'));
  const written = after.newestCheckpoint !== undefined && after.newestCheckpoint !== before.newestCheckpoint;
  return {
    openMs,
    rssAfterOpen: rssOpen,
    statMaxMs: stat.maxMs,
    statMedianMs: stat.medianMs,
    walkEntries: entries,
    walkEntriesPerSec: entries / walkS,
    lsColdS: ls.coldS,
    lsWarmS: ls.warmS,
    lsEntriesPerSecWarm: entries / ls.warmS,
    // What the change of 1,000 files added to the bucket's metadata, and the checkpoint in it.
    changeMetaBytesWritten: [...after.sizes].reduce((sum, [k, n]) => (before.sizes.has(k) ? sum : sum + n), 0),
    checkpointBytesWritten: [...after.newestCheckpointKeys].reduce(
      (sum, k) => (before.sizes.has(k) ? sum : sum + (after.sizes.get(k) ?? 0)),
      0,
    ),
    checkpointBytes: after.newestCheckpointBytes,
    checkpointWritten: written ? 1 : 0,
    checkpointMs,
    peakRss: peakRssBytes(),
  };
}

async function phaseFresh(root: string, l: Layout): Promise<PhaseResult> {
  const started = performance.now();
  const { engine, fs, linkMs, openMs } = await openEngine(root, 'b', true);
  const linkMountMs = performance.now() - started;
  const s = performance.now();
  const p = fileAt(l, l.files - 1);
  await engine.vfs.whenPathLoaded(p);
  fs.getattr(p);
  const coldStatMs = performance.now() - s;
  const rssBeforeFill = peakRssBytes();
  await engine.whenFilled();
  const fillMs = performance.now() - s;
  await engine.close();
  return { linkMs, openMs, linkMountMs, coldStatMs, fillMs, rssBeforeFill, peakRss: peakRssBytes() };
}

async function phaseSnapshot(root: string, l: Layout): Promise<PhaseResult> {
  const { engine, fs } = await openEngine(root, 'a');
  const rssOpen = process.memoryUsage().rss;
  let started = performance.now();
  const first = await engine.createSnapshot('scale');
  const snapshotMs = performance.now() - started;
  started = performance.now();
  const browsed = await engine.snapshotFs(first.id);
  const browseOpenMs = performance.now() - started;
  const browseStat = statTimes(browsed, samplePaths(l, STAT_SAMPLES));
  engine.releaseSnapshotFs(browsed);
  const changed = Buffer.alloc(2048, 7);
  for (let k = 0; k < CHANGED_FILES; k++) await writeFile(fs, fileAt(l, Math.floor((k * l.files) / CHANGED_FILES) + 1), changed);
  await syncAll(engine);
  started = performance.now();
  await engine.createSnapshot('scale, 1,000 files later');
  const secondSnapshotMs = performance.now() - started;
  started = performance.now();
  const listed = await engine.listSnapshots();
  const listMs = performance.now() - started;
  if (listed.snapshots.length !== 2) throw new Error(`the listing shows ${listed.snapshots.length} snapshots, not 2`);
  // In a process of its own, as `filespace snapshot list` and the app list a filespace that is
  // not mounted (with a mount running, they ask it: the figure above).
  const fromBucket = await runPhase('listUnmounted', root, l);
  started = performance.now();
  const gc = await engine.collectGarbage();
  const gcMs = performance.now() - started;
  await engine.close();
  // A restart: the count of what the snapshots name is kept from the clean stop, not read again.
  const again = await openEngine(root, 'a');
  started = performance.now();
  await again.engine.collectGarbage();
  const gcAfterRestartMs = performance.now() - started;
  await again.engine.close();
  // The same after a stop that was not clean (or before the count was kept): counted from the bucket.
  await fsp.rm(path.join(root, 'a', SNAPSHOT_REFS_FILE), { force: true });
  const recount = await openEngine(root, 'a');
  started = performance.now();
  await recount.engine.collectGarbage();
  const gcAfterRecountMs = performance.now() - started;
  await recount.engine.deleteSnapshot(first.id);
  await recount.engine.close();
  if (first.files !== l.files) throw new Error(`the snapshot holds ${first.files} files, not ${l.files}`);
  return {
    rssAfterOpen: rssOpen,
    snapshotMs,
    browseOpenMs,
    browseStatMaxMs: browseStat.maxMs,
    secondSnapshotMs,
    listMs,
    listUnmountedMs: fromBucket.listUnmountedMs ?? 0,
    listUnmountedPeakRss: fromBucket.peakRss ?? 0,
    gcMs,
    gcScanned: gc.scanned,
    gcAfterRestartMs,
    gcAfterRecountMs,
    peakRss: peakRssBytes(),
  };
}

/** The listing of the snapshots from the bucket alone (not mounted), as the command makes it. */
async function listUnmounted(root: string): Promise<PhaseResult> {
  const started = performance.now();
  const bucket = new LocalDiskStore(path.join(root, 'bucket'));
  const { header, keys } = await unlockFilespace(bucket, PASSPHRASE);
  const fromBucket = await snapshotsIn(bucket, header, keys, path.join(root, 'a'));
  const listUnmountedMs = performance.now() - started;
  if (fromBucket.snapshots.length !== 2) throw new Error(`the listing shows ${fromBucket.snapshots.length} snapshots, not 2`);
  return { listUnmountedMs, peakRss: peakRssBytes() };
}

async function phaseCheck(root: string): Promise<PhaseResult> {
  const bucket = new LocalDiskStore(path.join(root, 'bucket'));
  const { header, keys } = await unlockFilespace(bucket, PASSPHRASE);
  const cacheDir = path.join(root, 'a');
  const started = performance.now();
  const report = await checkFilespace({ store: bucket, keys, header, cacheDir, workDir: cacheDir });
  const checkMs = performance.now() - started;
  if (report.problems.length > 0) throw new Error(`the check finds problems: ${report.problems.slice(0, 5).join('; ')}`);
  const snapshots = new SnapshotStore(bucket, keys.metaKey, header.chunkSize, header);
  const { records } = await snapshots.list();
  if (records.length !== 1) throw new Error(`the check ran with ${records.length} snapshots, not 1`);
  for (const r of records) await snapshots.delete(r.id);
  return { checkMs, peakRss: peakRssBytes() };
}

/** Files of 4 KiB the sustained-create phase makes (FILESPACE_SCALE_CREATES). */
const CREATES = Number(process.env.FILESPACE_SCALE_CREATES ?? 50_000);

/**
 * Sustained creates: CREATES files of 4 KiB each (every one different, so none is stored
 * once for several), in folders of 100, through the handlers as the make phase, into a
 * filespace of their own with uploads running behind (the default upload delay and
 * concurrency). Whether the upload keeps up: what was still to upload when the last file
 * closed, and how long after that everything was in the bucket.
 */
/**
 * Creates `count` files of 4 KiB, 100 to a folder, through the engine's handlers into a
 * filespace of its own (bucket `<tag>-bucket`) with the default upload policy: at full speed,
 * or `pace` files a second. Then syncs everything into the bucket. Says how long the creates
 * took, what was still to upload at the last close, the most still to upload at once (sampled
 * each second), how long the sync took, and the peak RSS.
 */
async function createSmallFiles(
  root: string,
  tag: string,
  count: number,
  pace?: number,
): Promise<{
  createS: number;
  backlog: { dirtyFiles: number; dirtyBytes: number };
  maxBacklog: number;
  drainS: number;
  peakRss: number;
}> {
  const bucket = path.join(root, `${tag}-bucket`);
  await fsp.mkdir(bucket, { recursive: true });
  await createFilespace(new LocalDiskStore(bucket), PASSPHRASE, 4 * MiB);
  const { engine, fs } = await openEngine(root, tag, false, `${tag}-bucket`);
  const data = Buffer.alloc(4096, 5);
  let peakRss = 0;
  let maxBacklog = 0;
  let nextSample = 1_000;
  const started = performance.now();
  for (let i = 0; i < count; i++) {
    if (i % 100 === 0) fs.mkdir(`/d${i / 100}`, 0o755);
    data.writeUInt32LE(i, 0);
    await writeFile(fs, `/d${Math.floor(i / 100)}/f${i}`, data);
    if (pace) {
      const late = started + ((i + 1) * 1000) / pace - performance.now();
      if (late > 1) await new Promise((r) => setTimeout(r, late));
    }
    if (performance.now() - started >= nextSample) {
      nextSample += 1_000;
      maxBacklog = Math.max(maxBacklog, engine.stats().dirtyFiles);
      peakRss = Math.max(peakRss, process.memoryUsage().rss);
    }
  }
  const createS = (performance.now() - started) / 1000;
  const { dirtyFiles, dirtyBytes } = engine.stats();
  const syncStarted = performance.now();
  await syncAll(engine);
  const drainS = (performance.now() - syncStarted) / 1000;
  await engine.close();
  return {
    createS,
    backlog: { dirtyFiles, dirtyBytes },
    maxBacklog: Math.max(maxBacklog, dirtyFiles),
    drainS,
    peakRss: Math.max(peakRss, peakRssBytes()),
  };
}

/** Small files created at full speed (see `createSmallFiles`). */
async function phaseCreates(root: string): Promise<PhaseResult> {
  const r = await createSmallFiles(root, 'creates', CREATES);
  return {
    createFilesPerSec: CREATES / r.createS,
    createS: r.createS,
    backlogFiles: r.backlog.dirtyFiles,
    backlogBytes: r.backlog.dirtyBytes,
    drainS: r.drainS,
    peakRss: r.peakRss,
  };
}

/** The pace of the paced-create phase (FILESPACE_SCALE_PACE, files/s) and how long each run lasts. */
const PACE = Number(process.env.FILESPACE_SCALE_PACE ?? 1_000);
const PACED_S = 30;

/**
 * Creates at a pace: `pace` files of 4 KiB a second for PACED_S seconds (a build, a log
 * collector, a sync tool: writers that do not take the machine whole), and how much of them the
 * uploads running behind took while they were made: the files uploaded during the creates (what
 * was made less what was still to upload at the last close), the most still to upload at once,
 * and how long after the last close everything was in the bucket.
 */
async function pacedRun(root: string, pace: number, tag: string): Promise<PhaseResult> {
  const files = Math.round(pace * PACED_S);
  const r = await createSmallFiles(root, tag, files, pace);
  return {
    filesPerSec: files / r.createS,
    uploadedPerSec: (files - r.backlog.dirtyFiles) / r.createS,
    backlogFiles: r.backlog.dirtyFiles,
    maxBacklogFiles: r.maxBacklog,
    drainS: r.drainS,
    peakRss: r.peakRss,
  };
}

/** Paced creates at PACE, then at half of it (see `pacedRun`). */
async function phasePaced(root: string): Promise<PhaseResult> {
  const full = await pacedRun(root, PACE, 'paced');
  const half = await pacedRun(root, PACE / 2, 'paced-half');
  const out: PhaseResult = { peakRss: Math.max(full.peakRss!, half.peakRss!) };
  for (const [k, v] of Object.entries(full)) if (k !== 'peakRss') out[`full_${k}`] = v;
  for (const [k, v] of Object.entries(half)) if (k !== 'peakRss') out[`half_${k}`] = v;
  return out;
}

const PHASES = {
  make: phaseMake,
  remount: phaseRemount,
  snapshot: phaseSnapshot,
  check: phaseCheck,
  fresh: phaseFresh,
  creates: phaseCreates,
  paced: phasePaced,
} as const;
type Phase = keyof typeof PHASES;
/** Steps a phase runs in a process of their own (not phases of the report). */
const STEPS = { listUnmounted } as const;
type Step = keyof typeof STEPS;

/** Runs one phase (or step) in a process of its own; resolves what it measured. */
function runPhase(phase: Phase | Step, root: string, l: Layout): Promise<PhaseResult> {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['--phase', phase, root, String(l.files), String(l.dirs)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      // As `filespace mount` runs its engine: its malloc settings and V8 heap flags, no others.
      env: engineProcessEnv(process.env),
      execArgv: [...ENGINE_V8_FLAGS],
    });
    let result: PhaseResult | undefined;
    child.on('message', (m) => (result = m as PhaseResult));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (result && code === 0) resolve(result);
      else reject(new Error(`phase ${phase} ended with ${signal ?? `exit code ${code}`}`));
    });
  });
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
const num = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits });

/**
 * At a pace, the uploads keep up when what was still to upload at the last close is at most
 * `PACED_BEHIND_S` of the creates: they run the burst delay (upload/writeback.ts
 * WRITER_BURST_DELAY_MS, 5 s) behind the writer, and a backlog that grows for the whole run
 * ends near all of it.
 */
const PACED_BEHIND_S = 10;
function pacedKeptUp(pa: PhaseResult, run: 'full' | 'half'): boolean {
  return (pa[`${run}_backlogFiles`] ?? Infinity) <= PACED_BEHIND_S * (pa[`${run}_filesPerSec`] ?? 0);
}

function pacedFigures(pa: PhaseResult, run: 'full' | 'half'): string {
  const f = (k: string) => pa[`${run}_${k}`] ?? 0;
  return (
    `${num(f('filesPerSec'))} files/s made, ${num(f('uploadedPerSec'))} files/s uploaded meanwhile ` +
    `(${pacedKeptUp(pa, run) ? 'kept up' : 'fell behind'}); at the last close ${num(f('backlogFiles'))} still to upload ` +
    `(at most ${num(f('maxBacklogFiles'))}), all in the bucket ${num(f('drainS'), 1)} s later`
  );
}

function report(
  l: Layout,
  r: Record<Phase, PhaseResult>,
  meta: BucketMeta,
  extra: { date: string; host: string; load: [number, number] },
): string {
  const m = r.make;
  const re = r.remount;
  const f = r.fresh;
  const sn = r.snapshot;
  const cr = r.creates;
  const pa = r.paced;
  const peak = Math.max(m.peakRss ?? 0, re.peakRss ?? 0, sn.peakRss ?? 0, f.peakRss ?? 0, cr.peakRss ?? 0, pa.peakRss ?? 0);
  // The upload keeps up when what is left at the last close is in the bucket soon after (a
  // fifth of the time the creates took, or 10 s).
  const keptUp = (cr.drainS ?? Infinity) <= Math.max(10, 0.2 * (cr.createS ?? 0));
  const ckptShare = (re.checkpointBytesWritten ?? 0) / Math.max(1, re.checkpointBytes ?? 1);
  const met = (ok: boolean) => (ok ? 'met' : '**NOT met**');
  const rows: Array<[string, string, string, string]> = [
    [
      'Engine peak RSS (make / remount / snapshots / fresh machine / sustained creates / paced creates)',
      `${mb(m.peakRss!)} / ${mb(re.peakRss!)} / ${mb(sn.peakRss!)} / ${mb(f.peakRss!)} / ${mb(cr.peakRss!)} / ${mb(pa.peakRss!)}`,
      '< 300 MB',
      met(peak < 300e6),
    ],
    [
      'Fresh machine: unlock, link and open',
      `${num((f.linkMountMs ?? 0) / 1000, 2)} s (link ${num((f.linkMs ?? 0) / 1000, 2)} s)`,
      '< 10 s',
      met((f.linkMountMs ?? 0) < 10_000),
    ],
    ['Fresh machine: stat of one path, cold', `${num(f.coldStatMs ?? 0, 2)} ms`, '< 100 ms', met((f.coldStatMs ?? 0) < 100)],
    [
      '`ls -lR` of the whole tree through the mount, warm (best of 2)',
      `${num(re.lsEntriesPerSecWarm ?? 0)} entries/s (${num(re.walkEntries ?? 0)} entries in ${num(re.lsWarmS ?? 0, 2)} s)`,
      '>= 20,000/s',
      met((re.lsEntriesPerSecWarm ?? 0) >= 20_000),
    ],
    [
      "Checkpoint written after changing 1,000 files, share of the tree's metadata",
      re.checkpointWritten ? `${mb(re.checkpointBytesWritten ?? 0)} = ${num(ckptShare * 100, 1)}%` : 'no checkpoint was written',
      '< 5%',
      met(Boolean(re.checkpointWritten) && ckptShare < 0.05),
    ],
    [
      `Sustained creates: ${num(CREATES)} files of 4 KiB through the handlers, uploads running behind`,
      `${num(cr.createFilesPerSec ?? 0)} files/s; at the last close ${num(cr.backlogFiles ?? 0)} files (${mb(cr.backlogBytes ?? 0)}) still to upload, all in the bucket ${num(cr.drainS ?? 0, 1)} s later`,
      '>= 1,000 files/s, upload keeping up',
      met((cr.createFilesPerSec ?? 0) >= 1_000 && keptUp),
    ],
    [
      `Paced creates: ${num(PACE)} files of 4 KiB a second for ${PACED_S} s, uploads running behind (then at half that pace)`,
      pacedFigures(pa, 'full') + ' (at half the pace: ' + pacedFigures(pa, 'half') + ')',
      '>= 1,000 files/s, upload keeping up',
      met((pa.full_filesPerSec ?? 0) >= 1_000 * 0.98 && pacedKeptUp(pa, 'full')),
    ],
  ];
  const lines = [
    SCALE_MARKER,
    '',
    '## Metadata at scale',
    '',
    `Generated by \`npm run bench:scale\` (test/bench/metascale.ts) on ${extra.date}, on ${extra.host}. ` +
      `${num(l.files)} files in ${num(l.dirs)} directories made through the engine's FUSE handlers in process ` +
      '(one file in ten holds 1 KiB), on a bucket on local disk; each phase in a process of its own. ' +
      (GET_MS > 0 ? `The fresh machine's bucket answers each GET ${GET_MS} ms late (FILESPACE_SCALE_GET_MS). ` : '') +
      'The targets are those of a million files. ' +
      `Load average (1 min) at the start and at the end: ${extra.load[0].toFixed(2)} and ${extra.load[1].toFixed(2)} ` +
      `on ${os.cpus().length} cores (load depresses the rates and times; memory and bytes do not depend on it).`,
    '',
    '| Figure | Result | Target | Met |',
    '|---|---|---|---|',
    ...rows.map((c) => `| ${c.join(' | ')} |`),
    '',
    '| Detail | Result |',
    '|---|---|',
    `| Make: files/s through the handlers | ${num(m.makeFilesPerSec ?? 0)} |`,
    `| Fresh machine: every folder loaded in the background (time after the cold stat) / peak RSS by the cold stat | ${num((f.fillMs ?? 0) / 1000, 1)} s / ${mb(f.rssBeforeFill ?? 0)} |`,
    `| Make: sync of everything after | ${num(m.syncS ?? 0, 1)} s |`,
    `| Engine memory per file while making (RSS growth / files) | ${num(m.rssPerFileBytes ?? 0)} bytes |`,
    `| Local metadata on disk (machine that made the tree) | ${mb(m.localMetaBytes ?? 0)} (${num((m.localMetaBytes ?? 0) / l.files)} bytes per file) |`,
    `| \`ls -lR\` through the mount, first time after the remount | ${num(re.lsColdS ?? 0, 2)} s |`,
    `| Listing in the engine alone (readdir + getattr of every entry, no kernel) | ${num(re.walkEntriesPerSec ?? 0)} entries/s |`,
    `| Remount on the same machine: open | ${num((re.openMs ?? 0) / 1000, 2)} s, RSS after open ${mb(re.rssAfterOpen ?? 0)} |`,
    `| Remount: stat of ${STAT_SAMPLES} paths, median / slowest | ${num(re.statMedianMs ?? 0, 3)} / ${num(re.statMaxMs ?? 0, 2)} ms |`,
    `| Newest checkpoint: its manifest and every page it names (the whole tree's metadata) | ${mb(re.checkpointBytes ?? 0)} |`,
    `| Checkpoint after changing 1,000 files: time to write it | ${num((re.checkpointMs ?? 0) / 1000, 2)} s |`,
    `| All metadata the change of 1,000 files wrote (log segments and checkpoint) | ${mb(re.changeMetaBytesWritten ?? 0)} |`,
    `| Snapshot of the whole tree / of it after changing 1,000 files | ${num((sn.snapshotMs ?? 0) / 1000, 2)} / ${num((sn.secondSnapshotMs ?? 0) / 1000, 2)} s |`,
    `| Browsing the first snapshot: open (its tree into a database) / slowest stat of ${STAT_SAMPLES} paths | ${num((sn.browseOpenMs ?? 0) / 1000, 2)} s / ${num(sn.browseStatMaxMs ?? 0, 2)} ms |`,
    `| Listing both snapshots with their size-unique: by the mount (\`snapshot list\`, the app's card) / from the bucket alone (not mounted: the command's own process, its peak RSS) | ${num((sn.listMs ?? 0) / 1000, 2)} / ${num((sn.listUnmountedMs ?? 0) / 1000, 2)} s, ${mb(sn.listUnmountedPeakRss ?? 0)} |`,
    `| Garbage collection with both snapshots kept | ${num((sn.gcMs ?? 0) / 1000, 2)} s (${num(sn.gcScanned ?? 0)} chunks) |`,
    `| Garbage collection after a restart: what the snapshots name kept from the clean stop / counted from the bucket (a start after a kill) | ${num((sn.gcAfterRestartMs ?? 0) / 1000, 2)} / ${num((sn.gcAfterRecountMs ?? 0) / 1000, 2)} s |`,
    `| \`filespace check\` of the machine that made the tree, unmounted (bucket, one snapshot, local metadata and cache): time, peak RSS | ${num((r.check.checkMs ?? 0) / 1000, 1)} s, ${mb(r.check.peakRss ?? 0)} |`,
    `| Bucket metadata at the end: objects (segments, checkpoints, pages), bytes | ${num(meta.objects)} (${num(meta.segments)}, ${num(meta.checkpoints)}, ${num(meta.pages)}), ${mb(meta.bytes)} |`,
    '',
  ];
  return lines.join('\n');
}

async function writeSection(section: string): Promise<void> {
  const file = path.join(REPO, 'BENCHMARKS.md');
  const old = await fsp.readFile(file, 'utf8').catch(() => '');
  const at = old.indexOf(SCALE_MARKER);
  const head = (at >= 0 ? old.slice(0, at) : old).trimEnd();
  await fsp.writeFile(file, `${head ? `${head}\n\n` : ''}${section}`);
}

async function main(): Promise<void> {
  const files = Number(process.env.FILESPACE_SCALE_FILES ?? 100_000);
  const dirs = Number(process.env.FILESPACE_SCALE_DIRS ?? Math.max(1, Math.round(files / 100)));
  if (!Number.isInteger(files) || files < CHANGED_FILES || !Number.isInteger(dirs) || dirs < 1 || dirs > files) {
    throw new Error(
      `FILESPACE_SCALE_FILES must be an integer of at least ${CHANGED_FILES}, FILESPACE_SCALE_DIRS between 1 and it`,
    );
  }
  const l = { files, dirs };
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-scale-'));
  const loadAtStart = os.loadavg()[0] ?? 0;
  try {
    const results = {} as Record<Phase, PhaseResult>;
    for (const phase of Object.keys(PHASES) as Phase[]) {
      process.stderr.write(`[scale] ${phase}…\n`);
      results[phase] = await runPhase(phase, root, l);
      process.stderr.write(`[scale] ${phase}: ${JSON.stringify(results[phase])}\n`);
    }
    const meta = await bucketMeta(path.join(root, 'bucket'));
    const section = report(l, results, meta, {
      date: new Date().toISOString(),
      host: `${os.hostname()} (${os.cpus().length} cores)`,
      load: [loadAtStart, os.loadavg()[0] ?? 0],
    });
    process.stdout.write(`${section}\n`);
    await writeSection(section);
  } finally {
    if (process.env.FILESPACE_SCALE_KEEP) process.stderr.write(`[scale] kept ${root}\n`);
    else await fsp.rm(root, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--phase') {
  const [, , , phase, root, files, dirs] = process.argv;
  (phase! in STEPS ? STEPS[phase as Step] : PHASES[phase as Phase])(root!, { files: Number(files), dirs: Number(dirs) })
    .then((r) => process.send!(r, undefined, {}, () => process.exit(0)))
    .catch((err: unknown) => {
      process.stderr.write(`[scale] ${phase} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exit(1);
    });
} else if (require.main === module) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
