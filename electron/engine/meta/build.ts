/**
 * Building the local metadata database from records streamed in: a fresh machine's link reads
 * the bucket's checkpoint page by page (metastore.ts `link`) and hands each page's records
 * here; memory holds a few batches, whatever the tree's size.
 *
 * The work is split in two, on two threads when asked (`offThread`, as the link asks):
 *   - this thread encodes: each record as the database stores it (`encodeInode`), the rows'
 *     checksums, the chunk references it adds, and the running totals (folders, allocated
 *     bytes, extended-attribute names);
 *   - the writer (`TreeDb.writer`, in buildWorker.ts's thread) inserts the rows, and at the end
 *     writes the state row and makes the database durable.
 * At 1,000,000 files (bench:scale's fresh phase) a link spent about 11 s of one thread: 1.4 s
 * reading pages, 0.9 s encoding records, 0.5 s checksums, 4.5 s in SQLite. Pages, encoding and
 * the fetches now overlap SQLite's inserts on the second core. At most POSTED_MAX batches wait
 * for the writer (`add` waits for it below that), so a slow disk slows the link and memory
 * stays bounded.
 *
 * The database the writer finishes is opened here as `TreeDb.open(…, { unfinished })`: it is
 * whole only once the caller marks it so (`complete`), after the segments after the checkpoint
 * are applied; a build that stops half-way (a crash, a damaged page) is started over.
 */

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { crc32 } from 'node:zlib';
import { SnapshotDamagedError } from './journal';
import { Inode, MetaOp, ROOT_INO, Tree } from './tree';
import { DirPage, Page, PageRef, isDirCover } from './pages';
import { PageLoader } from './pageLoader';
import type { Homes, RemoteMeta, TreeSink } from './remote';
import { BuildRows, BuildWriter, DbState, TreeDb, encodeInode, entryChecksum, totalsOf } from './treeDb';

/** A directory's entries (or some of them), as a build adds them. */
export interface BuildEntries {
  readonly dir: number;
  readonly list: ReadonlyArray<readonly [string, number]>;
}

/** A database being built from streamed records (`TreeDbBuilder.start`). */
export interface TreeDbBuild {
  /**
   * Adds inode records and directory entries. A record for an inode already added replaces it.
   * Resolves once the writer can take more (it may not have written these yet).
   */
  add(inodes: readonly Omit<Inode, 'entries'>[], entries?: readonly BuildEntries[]): Promise<void>;
  /**
   * Ends the build: counts, the state row, and the database made durable. The tree over it
   * (`db.tree(state)`) takes later changes; `db.complete()` then marks the database whole.
   */
  finish(state: Pick<DbState, 'gen' | 'nextIno' | 'remoteSeq'>): Promise<{ db: TreeDb; state: DbState }>;
  /** Drops the database (a build that cannot finish: the next one starts over). */
  abort(): Promise<void>;
  /** Batches handed to the writer and not yet written (below POSTED_MAX whenever `add` resolved). */
  readonly queued: number;
  /** Whether the writer runs in a thread of its own. */
  readonly offThread: boolean;
}

/** Adds a paged checkpoint's page to `build`: its records, and a directory part's entries. */
export function addPage(build: TreeDbBuild, ref: PageRef, page: Page): Promise<void> {
  return build.add(page.inodes, isDirCover(ref) ? [{ dir: ref.dir, list: (page as DirPage).entries }] : []);
}

/** Rows handed to the writer at a time. */
const POST_ROWS = 4_096;
/** Batches handed to the writer and not yet written, at most. */
export const POSTED_MAX = 4;

/** The writer as this thread sees it. */
interface WriterLink {
  /** Batches handed over and not yet written. */
  readonly queued: number;
  /** Hands rows over; resolves when the writer can take more. */
  write(rows: BuildRows): Promise<void>;
  finish(state: Omit<DbState, 'chunkSize'>): Promise<DbState>;
  /** Stops the writer (finished or not); resolves once it can no longer touch the database's files. */
  stop(): Promise<void>;
}

function inThread(dir: string, chunkSize: number): WriterLink {
  const w: BuildWriter = TreeDb.writer(dir, chunkSize);
  return {
    queued: 0,
    write: async (rows) => w.write(rows),
    finish: async (state) => w.finish(state),
    async stop() {
      w.close();
    },
  };
}

/** A message from buildWorker.ts. */
export type BuildReply =
  | { readonly ready: true }
  | { readonly written: true }
  | { readonly state: DbState }
  | { readonly error: { readonly message: string; readonly code?: string } };

/** A message to buildWorker.ts. */
export type BuildRequest = { readonly rows: BuildRows } | { readonly finish: Omit<DbState, 'chunkSize'> };

class WriterThread implements WriterLink {
  private readonly worker: Worker;
  private posted = 0;
  private failed: Error | undefined;
  private wake: (() => void) | undefined;
  private finishing: { resolve(s: DbState): void; reject(e: Error): void } | undefined;
  private stopped = false;
  private started: { resolve(): void; reject(e: Error): void } | undefined;

  get queued(): number {
    return this.posted;
  }

  /** A writer thread that has opened the database; rejects when it cannot start or open it. */
  static async start(dir: string, chunkSize: number, script: string): Promise<WriterThread> {
    const t = new WriterThread(dir, chunkSize, script);
    try {
      await new Promise<void>((resolve, reject) => {
        t.started = { resolve, reject };
        if (t.failed) reject(t.failed);
      });
    } catch (err) {
      await t.stop();
      throw err;
    }
    return t;
  }

  private constructor(dir: string, chunkSize: number, script: string) {
    this.worker = new Worker(script, {
      workerData: { dir, chunkSize },
      resourceLimits: { maxYoungGenerationSizeMb: 8 },
    });
    this.worker.on('message', (m: BuildReply) => {
      if ('ready' in m) {
        const s = this.started;
        this.started = undefined;
        s?.resolve();
      } else if ('written' in m) {
        this.posted--;
        this.wakeUp();
      } else if ('state' in m) {
        const f = this.finishing;
        this.finishing = undefined;
        f?.resolve(m.state);
      } else this.fail(Object.assign(new Error(m.error.message), m.error.code ? { code: m.error.code } : {}));
    });
    this.worker.on('error', (err) => this.fail(err));
    this.worker.on('exit', (code) => this.fail(new Error(`the metadata build thread stopped (exit code ${code})`)));
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private fail(err: Error): void {
    this.failed ??= this.stopped ? new Error('the metadata build was stopped') : err;
    const s = this.started;
    this.started = undefined;
    s?.reject(this.failed);
    this.wakeUp();
    const f = this.finishing;
    this.finishing = undefined;
    f?.reject(this.failed);
  }

  private post(m: BuildRequest): void {
    this.worker.postMessage(m);
  }

  /** Throws what stopped the writer, if anything did. */
  private check(): void {
    if (this.failed) throw this.failed;
  }

  async write(rows: BuildRows): Promise<void> {
    this.check();
    this.post({ rows });
    this.posted++;
    while (this.posted >= POSTED_MAX && !this.failed) await new Promise<void>((resolve) => (this.wake = resolve));
    this.check();
  }

  finish(state: Omit<DbState, 'chunkSize'>): Promise<DbState> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise<DbState>((resolve, reject) => {
      this.finishing = { resolve, reject };
      this.post({ finish: state });
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.worker.terminate();
  }
}

/** Builds of databases (an object, so tests can stand in for `start`). */
export const TreeDbBuilder = {
  /**
   * Starts building the database in `dir` (one left there before is replaced). `offThread`:
   * the writer runs in a thread of its own (see the header).
   */
  start(dir: string, chunkSize: number, opts: BuildOptions = {}): Promise<TreeDbBuild> {
    return buildTreeDb(dir, chunkSize, opts);
  },
};

export interface BuildOptions {
  /** Writes the rows in a thread of its own (on this one if that thread cannot start). */
  readonly offThread?: boolean;
  /** The writer thread's script (tests). */
  readonly workerScript?: string;
}

/**
 * The writer: in a thread of its own when asked and it starts; else on this thread. A writer
 * thread that cannot start (its script cannot load where the engine runs, or it cannot open
 * the database) costs speed, not the build: this thread then writes, starting over.
 */
async function writerFor(dir: string, chunkSize: number, opts: BuildOptions): Promise<WriterLink> {
  if (opts.offThread) {
    try {
      return await WriterThread.start(dir, chunkSize, opts.workerScript ?? path.join(__dirname, 'buildWorker.js'));
    } catch {
      // On this thread, which opens the database again and reports what stops it, if anything.
    }
  }
  return inThread(dir, chunkSize);
}

async function buildTreeDb(dir: string, chunkSize: number, opts: BuildOptions): Promise<TreeDbBuild> {
  const writer = await writerFor(dir, chunkSize, opts);
  let dirs = 0;
  let allocatedBytes = 0;
  const xattrNames = new Set<string>();
  let ended = false;
  let rows = newRows();
  let count = 0;
  const flush = async () => {
    if (count === 0) return;
    const full = rows;
    rows = newRows();
    count = 0;
    await writer.write(full);
  };
  return {
    async add(inodes, entries = []) {
      if (ended) throw new Error('the metadata database is already built');
      const refs = new Map<string, number>();
      for (const inode of inodes) {
        const rec = encodeInode(inode);
        rows.inos.push(inode.ino);
        rows.recs.push(rec);
        rows.crcs.push(crc32(rec));
        const c = Tree.countOf(inode);
        dirs += c.dirs;
        allocatedBytes += c.allocatedBytes;
        for (const c of inode.chunks ?? []) if (c) refs.set(c[0], (refs.get(c[0]) ?? 0) + 1);
        for (const n in inode.xattrs) xattrNames.add(n);
      }
      // A chunk named by the records of two calls is counted in each (the writer adds them up).
      for (const r of refs) rows.refs.push(r);
      for (const { dir: parent, list } of entries)
        for (const [name, ino] of list) {
          rows.parents.push(parent);
          rows.names.push(name);
          rows.targets.push(ino);
          rows.entryCrcs.push(entryChecksum(parent, name, ino));
        }
      count = rows.inos.length + rows.parents.length;
      if (count >= POST_ROWS) await flush();
    },
    async finish(state) {
      if (ended) throw new Error('the metadata database is already built');
      ended = true;
      await flush();
      await writer.finish({ ...state, pendingFirst: 0, allocatedBytes, dirs, xattrNames: [...xattrNames] });
      await writer.stop();
      const opened = TreeDb.open(dir, { unfinished: true });
      if (!opened) throw new Error(`the metadata database built in ${dir} has no state`);
      if (!opened.db.has(ROOT_INO)) {
        opened.db.close();
        throw new SnapshotDamagedError(TreeDb.fileIn(dir), 'the tree read has no root directory');
      }
      return opened;
    },
    get queued() {
      return writer.queued;
    },
    offThread: writer instanceof WriterThread,
    async abort() {
      ended = true;
      await writer.stop();
      TreeDb.remove(dir);
    },
  };
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] extends ReadonlyArray<infer E> ? E[] : T[K] };

function newRows(): Mutable<BuildRows> {
  return { inos: [], recs: [], crcs: [], refs: [], parents: [], names: [], targets: [], entryCrcs: [] };
}

/** Records a whole-tree checkpoint is added in. */
const WHOLE_BATCH = 2_000;

/**
 * A load's sink (remote.ts `TreeSink`) that writes the checkpoint it reads into a database in
 * `dir` as it comes (built off this thread), so memory holds a few pages, not the tree: a
 * fresh machine's link, and the checker's copy of the bucket's tree. `built` is the database
 * the last attempt finished (its tree took the later segments); `drop` removes what an
 * attempt left (after a failed load).
 *
 * `lazy` (a fresh machine's link): of a paged checkpoint only the root's pages and the link
 * pages are read; every other directory is recorded as not loaded, with its page refs, and
 * loaded from `lazy.remote` when a later segment names it (pageLoader.ts), or later on demand.
 */
export function databaseSink(
  dir: string,
  chunkSize: number,
  lazy?: { readonly remote: RemoteMeta },
): {
  readonly sink: TreeSink;
  built(): { db: TreeDb; state: DbState } | undefined;
  persist(tree: Tree, seq: number): TreeDb;
  drop(): Promise<void>;
} {
  let build: TreeDbBuild | undefined;
  let built: { db: TreeDb; state: DbState } | undefined;
  // A build being dropped (a checkpoint read again): the next one starts once it is gone.
  let dropping: Promise<void> = Promise.resolve();
  let nextIno = 0;
  let seqRead = 0;
  // Lazy: the directories left in the bucket's pages, and the loader the later segments use.
  let waiting = new Map<number, PageRef[]>();
  let loader: PageLoader | undefined;
  const begin = async () => {
    sink.discard();
    await dropping;
    build = await TreeDbBuilder.start(dir, chunkSize, { offThread: true });
    return build;
  };
  const finish = async (seq: number) => {
    built = await build!.finish({ gen: 1, nextIno, remoteSeq: seq });
    if (!lazy || waiting.size === 0) return built.db.tree(built.state);
    const db = built.db;
    db.markUnloaded([...waiting].map(([d, refs]) => ({ dir: d, refs })));
    waiting = new Map();
    const tree = db.tree(built.state);
    loader = new PageLoader(
      db,
      () => tree,
      lazy.remote,
      () => seq,
    );
    return tree;
  };
  const sink: TreeSink = {
    async whole(seq, snap) {
      const b = await begin();
      nextIno = snap.nextIno;
      for (let i = 0; i < snap.inodes.length; i += WHOLE_BATCH) {
        const part = snap.inodes.slice(i, i + WHOLE_BATCH);
        await b.add(
          part,
          part.flatMap((inode) => (inode.entries ? [{ dir: inode.ino, list: inode.entries }] : [])),
        );
      }
      return finish(seq);
    },
    async manifest(m) {
      await (await begin()).add([m.root]);
      nextIno = m.nextIno;
      seqRead = m.seq;
      waiting = new Map();
      if (lazy)
        for (const ref of m.pages) {
          if (!isDirCover(ref) || ref.dir === ROOT_INO) continue;
          const list = waiting.get(ref.dir);
          if (list) list.push(ref);
          else waiting.set(ref.dir, [ref]);
        }
    },
    ...(lazy
      ? {
          wants: (ref: PageRef) => !isDirCover(ref) || ref.dir === ROOT_INO,
          beforeOps: async (ops: readonly MetaOp[], homes?: Homes) => {
            await loader?.ensureForOps(ops, homes);
          },
        }
      : {}),
    page: (ref, page) => addPage(build!, ref, page),
    pagesDone: () => finish(seqRead),
    discard() {
      loader?.stop();
      loader = undefined;
      if (built) built.db.close();
      if (build) {
        const b = build;
        dropping = dropping.then(() => b.abort()).catch(() => undefined);
      }
      built = build = undefined;
    },
  };
  return {
    sink,
    built: () => built,
    // The load's result: its tree (the sink's, with the segments after the checkpoint applied
    // in memory) at segment `seq`, written into the database, which then holds it whole.
    persist(tree, seq) {
      if (!built) throw new Error('no checkpoint was read into the database');
      built.db.checkpoint({ ...built.state, nextIno: tree.nextIno, remoteSeq: seq, ...totalsOf(tree) }, []);
      return built.db;
    },
    async drop() {
      sink.discard();
      await dropping;
    },
  };
}
