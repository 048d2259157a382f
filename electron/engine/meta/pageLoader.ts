/**
 * Directories loaded on demand: a fresh machine's link reads the newest checkpoint's manifest,
 * the root's pages and the link pages (the records of hard-linked and nameless inodes), and
 * records every other directory as not loaded, with its page refs (treeDb.ts `unloaded`). So a
 * link reads what does not grow with the tree. This module loads those directories: one that a
 * request names first (`ensure`, awaited by the mount before the request reaches the tree), and
 * the rest in the background (`startFill`), a batch of directories per durable transaction
 * (treeDb.ts `loadDirectories`), each batch after readers that use the bucket are done (or
 * have had it to themselves for `FILL_YIELD_MAX_MS`: then a small batch), small batches with
 * pauses while readers read only what is here; batches start small and grow while no reader
 * comes, and the engine starts the fill `FILL_START_DELAY_MS` after the mount.
 *
 * Why a directory's page is still right when it is loaded: a page holds the directory's entries
 * and the records of the children whose home it is, as of the checkpoint. Every change since
 * went through the tree here, and every change that names a directory or an inode of it was
 * preceded by loading it:
 *   - requests through the mount: the kernel names a directory or a name in one (loaded first,
 *     with a named child that is itself a directory), or an inode it learnt from a lookup (whose
 *     directory was loaded for the lookup);
 *   - the segments after the checkpoint at link, and the writer's segments a follower applies
 *     (`ensureForOps`): the directories an op names, then the children it names; an op naming
 *     an inode the tree does not hold yet (a file in a directory not loaded) loads every
 *     directory first (`loadAll`), since nothing says which directory holds it.
 * So a directory still waiting is unchanged since the checkpoint its pages come from.
 *
 * A page may be gone (compaction deletes the pages no kept manifest names, after its grace):
 * then the newest manifest's pages of the directory are read instead, if the tree here is at or
 * past that manifest (the directory, unchanged here since the older checkpoint, is the same in
 * it); otherwise the load fails and is tried again once this machine has caught up.
 *
 * What needs the whole tree waits for the fill (`whenFilled`): garbage collection, the
 * writer's checkpoints and compaction, snapshots, pins; an unloaded directory read by mistake
 * throws NotLoadedError (treeDb.ts), never reads as empty.
 */

import { EventEmitter } from 'node:events';
import { DirPage, PageRef, directoryPages } from './pages';
import { Homes, PageGoneError, RemoteMeta } from './remote';
import { MetaOp, Tree } from './tree';
import type { TreeDb } from './treeDb';

/**
 * What readers do now (prefetch/fetcher.ts `readerActivity`): use the bucket, read only what is
 * here, or nothing.
 */
export type ReaderActivity = 'bucket' | 'local' | 'none';

/** Directories a background batch loads at most... */
const FILL_BATCH_DIRS = 64;
/**
 * ...and the first batch, and the first after readers were at work: a batch doubles from this
 * while readers stay away, so a read that comes while one is on its way (the first read after
 * a fresh machine mounts) shares the bucket and the thread with a few pages, not 64 folders'.
 */
export const FILL_FIRST_BATCH_DIRS = 8;
/** Page bytes a background batch reads at most (beyond its first directory). */
const FILL_BATCH_BYTES = 4 << 20;
/** Pause before a background fill tries again after a failure. */
const FILL_RETRY_MS = 5_000;
/** A background batch waits for busy readers at most this long (see `yieldToReaders`), looking again every FILL_YIELD_POLL_MS... */
export const FILL_YIELD_MAX_MS = 10_000;
/** ...and then loads at most this many directories. */
const FILL_BUSY_BATCH_DIRS = FILL_FIRST_BATCH_DIRS;
const FILL_YIELD_POLL_MS = 50;
/**
 * While readers read what is here (the cache, the memory), a batch is small and followed by a
 * pause this many times as long as it took: the fill takes about a fifth of the engine's thread
 * from them, and still ends.
 */
const FILL_LOCAL_PAUSE = 4;
/**
 * The engine starts the fill this long after it starts, so the first requests of a fresh mount
 * (a listing, the first bytes of a file) do not share the bucket with a batch already on its way.
 */
export const FILL_START_DELAY_MS = 2_000;

export class PageLoader {
  /**
   * Loads asked for (`ensure`), by directory. A background batch is not here: a request does
   * not wait for a batch of many folders (or for one slow page of it); it reads its folder's
   * pages itself, and the batch passes over what was loaded meanwhile.
   */
  private readonly inFlight = new Map<number, Promise<void>>();
  private filling: Promise<void> | undefined;
  private stopped = false;
  private readonly events = new EventEmitter();
  /** The last failure of the background fill, if it has not succeeded since. */
  lastError: Error | undefined;

  constructor(
    private readonly db: TreeDb,
    private readonly tree: () => Tree,
    private readonly remote: RemoteMeta,
    /** The bucket segment the tree here is at. */
    private readonly position: () => number,
    /** Called after directories were loaded, with the extended-attribute names they brought. */
    private readonly loaded: (dirs: readonly number[], xattrNames: readonly string[]) => void = () => undefined,
  ) {}

  /** Whether directories are still waiting to be loaded. */
  get pending(): boolean {
    return this.db.unloadedCount > 0;
  }

  get waiting(): number {
    return this.db.unloadedCount;
  }

  /** Whether directory `dir` waits to be loaded. */
  isUnloaded(dir: number): boolean {
    return this.db.isUnloaded(dir);
  }

  /**
   * Loads those of `dirs` that are not loaded; undefined when none needs it (so a request need
   * not wait a turn), else a promise that settles when they are.
   */
  ensure(dirs: Iterable<number>): Promise<void> | undefined {
    if (!this.pending) return undefined;
    let waits: Array<Promise<void>> | undefined;
    const fresh: number[] = [];
    for (const d of dirs) {
      if (!this.db.isUnloaded(d) || fresh.includes(d)) continue;
      const f = this.inFlight.get(d);
      if (f) (waits ??= []).push(f);
      else fresh.push(d);
    }
    if (fresh.length > 0) (waits ??= []).push(this.load(fresh));
    if (!waits) return undefined;
    return waits.length === 1 ? waits[0] : Promise.all(waits).then(() => undefined);
  }

  /**
   * Loads what `ops` (a segment, in order) need before they are applied: the directories they
   * name, then the children they name that are directories, and every directory when one
   * names an inode the tree does not hold (see the module header).
   */
  async ensureForOps(ops: readonly MetaOp[], homes?: Homes): Promise<void> {
    if (!this.pending) return;
    const dirs = new Set<number>();
    const made = new Set<number>();
    const tree = this.tree();
    for (const op of ops) {
      if (op.t === 'mk') {
        dirs.add(op.parent);
        made.add(op.ino);
      } else if (op.t === 'rm' || op.t === 'ln') dirs.add(op.parent);
      else if (op.t === 'mv') {
        dirs.add(op.sp);
        dirs.add(op.dp);
      }
      if (op.t === 'ln' || op.t === 'attr' || op.t === 'chunk' || op.t === 'xattr') {
        dirs.add(op.ino);
        // Not here yet: the folders the writer says named it hold its record.
        const home = homes?.[op.ino];
        if (home && !made.has(op.ino) && !tree.inodes.has(op.ino)) for (const d of home) dirs.add(d);
      }
    }
    await this.ensure(dirs);
    const children = new Set<number>();
    let unknown = false;
    const child = (parent: number, name: string) => {
      if (!this.db.isUnloaded(parent)) {
        const c = tree.lookup(parent, name);
        if (c) children.add(c.ino);
      }
    };
    for (const op of ops) {
      if (op.t === 'rm') child(op.parent, op.name);
      else if (op.t === 'mv') {
        child(op.sp, op.sn);
        child(op.dp, op.dn);
      } else if (op.t !== 'mk' && !made.has(op.ino) && !tree.inodes.has(op.ino)) unknown = true;
    }
    if (unknown) return this.loadAll();
    await this.ensure(children);
  }

  /** Loads every directory still waiting (the background fill, run to its end now). */
  async loadAll(): Promise<void> {
    while (this.pending && !this.stopped) await this.fillBatch(FILL_BATCH_DIRS);
  }

  /**
   * Starts loading every directory still waiting in the background, a batch at a time; a
   * failure is kept in `lastError` and tried again after a pause. Does nothing once filled.
   */
  startFill(
    log: (msg: string) => void = () => undefined,
    readers: () => ReaderActivity = () => 'none',
    o: { maxYieldMs?: number; startDelayMs?: number } = {},
  ): void {
    if (this.filling || !this.pending || this.stopped) return;
    const maxYieldMs = o.maxYieldMs ?? FILL_YIELD_MAX_MS;
    this.filling = (async () => {
      if (o.startDelayMs) await this.pause(o.startDelayMs);
      let batch = FILL_FIRST_BATCH_DIRS;
      while (this.pending && !this.stopped) {
        try {
          const seen = await this.yieldToReaders(readers, maxYieldMs);
          if (seen !== 'away') batch = FILL_FIRST_BATCH_DIRS;
          const started = Date.now();
          await this.fillBatch(seen === 'stayed' || seen === 'local' ? FILL_BUSY_BATCH_DIRS : batch);
          if (seen === 'local') await this.pause(Math.max(FILL_YIELD_POLL_MS, FILL_LOCAL_PAUSE * (Date.now() - started)));
          else if (seen !== 'stayed') batch = Math.min(FILL_BATCH_DIRS, batch * 2);
          this.lastError = undefined;
        } catch (err) {
          if (this.stopped) break;
          const first = this.lastError === undefined;
          this.lastError = err as Error;
          if (first) log(`loading folders from the bucket failed (trying again): ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, FILL_RETRY_MS).unref());
        }
      }
      this.filling = undefined;
      if (!this.pending) this.events.emit('filled');
    })();
  }

  /**
   * Before each background batch: waits while `busy` says readers use the bucket (a cold read
   * of a big file on a fresh machine), at most `maxMs`, so the fill does not take their GETs
   * and the engine's thread, yet still goes on, a small batch (FILL_BUSY_BATCH_DIRS) per that
   * long at worst (what waits for the whole tree, garbage collection and checkpoints, must
   * come). Readers that only read what is here (`local`) are not waited for: the batch is
   * small and followed by a pause `FILL_LOCAL_PAUSE` times as long as it took. Resolves 'away'
   * when no reader was at work, 'left' when readers used the bucket and stopped, 'stayed' when
   * they still do, 'local' when readers read what is here.
   */
  private async yieldToReaders(readers: () => ReaderActivity, maxMs: number): Promise<'away' | 'left' | 'stayed' | 'local'> {
    const first = this.stopped ? 'none' : readers();
    if (first !== 'bucket') return first === 'local' ? 'local' : 'away';
    const until = Date.now() + maxMs;
    let now: ReaderActivity = first;
    while (!this.stopped && (now = readers()) === 'bucket') {
      if (Date.now() >= until) return 'stayed';
      await this.pause(FILL_YIELD_POLL_MS);
    }
    return now === 'local' ? 'local' : 'left';
  }

  /** Waits `ms`, or until the loader is stopped. */
  private pause(ms: number): Promise<void> {
    if (this.stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.events.off('stopped', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.events.once('stopped', done);
    });
  }

  /** Resolves once no directory waits (at once when none does); rejects if the loader is stopped first. */
  whenFilled(): Promise<void> {
    if (!this.pending) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const check = () => {
        if (!this.pending) {
          this.events.off('stopped', stop);
          resolve();
        } else this.events.once('filled', check);
      };
      const stop = () => {
        this.events.off('filled', check);
        reject(new Error('the metadata store was closed before every folder was loaded'));
      };
      this.events.once('stopped', stop);
      check();
    });
  }

  /** Stops loading: nothing is written to the database after this returns. */
  stop(): void {
    this.stopped = true;
    this.events.emit('stopped');
  }

  /** One background batch: the lowest-numbered directories not being loaded, up to the batch bounds. */
  private async fillBatch(maxDirs: number): Promise<void> {
    const batch: number[] = [];
    let bytes = 0;
    for (const dir of this.db.someUnloaded(maxDirs + this.inFlight.size)) {
      if (this.inFlight.has(dir)) continue;
      const refs = this.db.unloadedRefs(dir) ?? [];
      const b = refs.reduce((n, r) => n + r.bytes, 0);
      if (batch.length > 0 && bytes + b > FILL_BATCH_BYTES) break;
      batch.push(dir);
      bytes += b;
      if (batch.length >= maxDirs) break;
    }
    if (batch.length === 0) {
      if (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight.values()]);
      return;
    }
    await this.apply(batch);
  }

  /** Reads the pages of `dirs` and loads them (those still waiting then). */
  private async apply(dirs: number[]): Promise<void> {
    const pages = await this.read(dirs);
    if (this.stopped) throw new Error('the metadata store was closed before the folder was loaded');
    const names = this.db.loadDirectories(pages, this.tree());
    this.loaded(dirs, names);
  }

  /** A load asked for (see `inFlight`). */
  private load(dirs: number[]): Promise<void> {
    const p = this.apply(dirs);
    for (const d of dirs) this.inFlight.set(d, p);
    const done = () => {
      for (const d of dirs) if (this.inFlight.get(d) === p) this.inFlight.delete(d);
    };
    p.then(done, done);
    return p;
  }

  /** The pages of each of `dirs`, in name order, from the manifest that named them or a newer one. */
  private async read(dirs: readonly number[]): Promise<Array<{ dir: number; pages: DirPage[] }>> {
    const refsOf = new Map<number, PageRef[]>();
    for (const d of dirs) refsOf.set(d, this.db.unloadedRefs(d) ?? []);
    let got: Map<string, unknown>;
    try {
      got = await this.remote.readPages([...refsOf.values()].flat());
    } catch (err) {
      if (!(err instanceof PageGoneError)) throw err;
      const newest = await this.remote.newestManifest();
      if (!newest || newest.seq > this.position())
        throw new Error(
          `${err.message}, and this machine is not yet at the newest checkpoint; the folder loads once it has caught up`,
          { cause: err },
        );
      for (const d of dirs) refsOf.set(d, directoryPages(newest, d));
      got = await this.remote.readPages([...refsOf.values()].flat());
    }
    return dirs.map((dir) => ({ dir, pages: refsOf.get(dir)!.map((r) => got.get(r.key) as DirPage) }));
  }
}
