/**
 * The local metadata database: the tree on disk, with a bounded working set in memory.
 *
 * One SQLite database (`tree.db` in the metadata folder, through better-sqlite3, see db.ts)
 * holds the tree as of the last checkpoint: inodes, directory entries, chunk reference counts,
 * this machine's changes not yet in the bucket, and a state row (generation, next inode number,
 * bucket segment, counts). The journal (journal.ts) holds the changes after it, as before; the
 * database takes the place of the snapshot file, so a checkpoint writes what changed since the
 * last one (not the whole tree) and opening reads no more than the state row.
 *
 * `storage` is what a `Tree` runs on (tree.ts, `TreeStorage`):
 *   - inodes changed since the checkpoint (`touched`, new, deleted) are held in `dirty` until the
 *     next checkpoint writes them; directory entries and chunk reference counts likewise as
 *     deltas. The journal bounds them (a checkpoint follows every few MiB of journal).
 *   - other inodes are read on demand and kept in a cache bounded by weight (an inode, plus one
 *     per directory entry it holds), in two generations: what is read or used goes to the
 *     young one; when it holds half the weight it becomes the old one and the old one is let
 *     go (a used inode of the old one moves to the young). That approximates least recently
 *     used without moving every hit to the end of one big map (which costs V8 a rehash of the
 *     map when it is full). A directory is read whole (its entry table) when first looked up.
 *   - an inode object stays the one object for its number while anything holds it: evicted
 *     objects are remembered weakly, and a lookup returns the same object while it lives, so a
 *     caller holding an inode across an await never sees a stale copy beside a newer one.
 * Every row carries a CRC-32 of its content, checked as it is read: a damaged row fails with
 * SnapshotDamagedError naming the database (as a damaged snapshot file did), never as silently
 * wrong metadata. The checker reads every row (`verifyAll`).
 *
 * Writes happen only in `checkpoint` and `replaceAll`, each one transaction (synchronous=FULL:
 * durable when it returns), so the database is always the tree at some checkpoint, whole; and,
 * on a fresh machine, in `markUnloaded` and `loadDirectories`: a directory whose entries are
 * still only in the bucket's pages is a row of `unloaded` (its own record is here; its entries
 * and its children's records are not), and loading it adds what its pages hold to the
 * checkpoint's tree, in one transaction, so the database is still that tree, with more of it
 * here (pageLoader.ts). Reading such a directory's entries throws NotLoadedError.
 */

import * as fs from 'node:fs';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { PACKED_SEP } from '../chunk/packs';
import { openDatabase, type Database, type Statement } from './db';
import { SnapshotDamagedError } from './journal';
import type { DirPage, PageRef } from './pages';
import { Inode, InodeTable, MetaOp, RefTable, Tree, TreeStorage, ROOT_INO } from './tree';

export const TREE_DB = 'tree.db';
/**
 * The layout of the database this version writes (`PRAGMA user_version`). 2 added the table of
 * directories not loaded yet (`unloaded`): a release that knows only 1 would take such a
 * directory for an empty one, so it refuses a database of layout 2 (`open` below).
 */
const LAYOUT = 2;

/** What the state row holds. */
export interface DbState {
  readonly gen: number;
  readonly chunkSize: number;
  readonly nextIno: number;
  readonly remoteSeq: number;
  /** Position of the first change not yet in the bucket (rows of `pending` below it are gone). */
  readonly pendingFirst: number;
  /** The tree's running totals for statfs (see Tree). */
  readonly allocatedBytes: number;
  readonly dirs: number;
  /** The extended-attribute names in use (Tree.xattrNames); absent when not known. */
  readonly xattrNames?: readonly string[];
}

/** The running totals of `tree` a database keeps in its state row. */
export function totalsOf(tree: Tree): Pick<DbState, 'allocatedBytes' | 'dirs' | 'xattrNames'> {
  return {
    allocatedBytes: tree.allocatedBytes,
    dirs: tree.dirs,
    ...(tree.xattrNames ? { xattrNames: [...tree.xattrNames] } : {}),
  };
}

interface StateRow extends DbState {
  readonly inodes: number;
  readonly refs: number;
  readonly pendingEnd: number;
}

type InodeRow = { ino: number; rec: string; crc: number };
type EntryRow = { name: Buffer; ino: number; crc: number };
type RefRow = { name: string; n: number; crc: number };

/** Default working-set weight: inodes plus directory entries kept in memory beyond the dirty ones. */
const DEFAULT_CACHE_WEIGHT = 100_000;
const BATCH = 2_000;
/** The character after PACKED_SEP: a chunk's name and all its packed places sort below `<name>` + this. */
const PAST_PACKED = String.fromCharCode(PACKED_SEP.charCodeAt(0) + 1);
/** At most this many chunk counts are remembered from the table (see `refRows`). */
const REF_ROWS_HELD = 1_024;

const SCHEMA = `
  CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE inodes (ino INTEGER PRIMARY KEY, rec TEXT NOT NULL, crc INTEGER NOT NULL);
  CREATE TABLE entries (parent INTEGER NOT NULL, name BLOB NOT NULL, ino INTEGER NOT NULL, crc INTEGER NOT NULL,
    PRIMARY KEY (parent, name)) WITHOUT ROWID;
  CREATE TABLE chunks (name TEXT PRIMARY KEY, n INTEGER NOT NULL, crc INTEGER NOT NULL) WITHOUT ROWID;
  CREATE TABLE pending (n INTEGER PRIMARY KEY, op TEXT NOT NULL, crc INTEGER NOT NULL);
  CREATE TABLE unloaded (dir INTEGER PRIMARY KEY, refs TEXT NOT NULL, crc INTEGER NOT NULL);
`;
/** For a database of layout 1, made when it is first opened for writing. */
const UNLOADED_TABLE = 'CREATE TABLE IF NOT EXISTS unloaded (dir INTEGER PRIMARY KEY, refs TEXT NOT NULL, crc INTEGER NOT NULL);';

/**
 * A directory whose entries are not loaded yet (a fresh machine's link loads directories from
 * the bucket's pages on demand, see pageLoader.ts): whatever reads its entries before it is
 * loaded fails with this rather than taking it for an empty directory. The mount loads a
 * directory before any request that names it reaches the tree, so a user never meets it.
 */
export class NotLoadedError extends Error {
  readonly errno = 'EIO';
  constructor(readonly dir: number) {
    super(`directory ${dir} is not loaded from the bucket yet`);
    this.name = 'NotLoadedError';
  }
}

/** The entry table of a directory not loaded yet: any use of it throws NotLoadedError. */
class UnloadedEntries extends Map<string, number> {
  constructor(readonly dir: number) {
    super();
  }
  private no(): never {
    throw new NotLoadedError(this.dir);
  }
  override get size(): number {
    return this.no();
  }
  override get(): number | undefined {
    return this.no();
  }
  override has(): boolean {
    return this.no();
  }
  override set(): this {
    return this.no();
  }
  override delete(): boolean {
    return this.no();
  }
  override clear(): void {
    this.no();
  }
  override forEach(): void {
    this.no();
  }
  override keys(): MapIterator<string> {
    return this.no();
  }
  override values(): MapIterator<number> {
    return this.no();
  }
  override entries(): MapIterator<[string, number]> {
    return this.no();
  }
  override [Symbol.iterator](): MapIterator<[string, number]> {
    return this.no();
  }
}

/** Whether `inode` is a directory whose entries are not loaded yet (reading them throws NotLoadedError). */
export function entriesWaiting(inode: Pick<Inode, 'entries'>): boolean {
  return inode.entries instanceof UnloadedEntries;
}

/** A directory's pages in the bucket, for a directory not loaded yet. */
export interface UnloadedDir {
  readonly dir: number;
  readonly refs: readonly PageRef[];
}
/** Made after the rows when a database is built (one sort instead of an insert per row). */
const INDEXES = 'CREATE INDEX entries_by_ino ON entries (ino);';
/**
 * The changes held for the next checkpoint may weigh this many times the working set
 * (`dirtyFull`). Measured with 1,000,000 files made in turn across 10,000 folders (bench:scale's
 * make phase, one run each): with no bound, 1,889 files/s, peak RSS 312 MB, 3.3 GB written;
 * four working sets, 1,531 files/s, 234 MB, 5.6 GB; one, 1,483 files/s, 205 MB, 6.2 GB. Most
 * of the cost is reading back folders that left memory, which any bound costs; a lower one
 * adds checkpoints (each rewrites the database pages of the folders it holds) and saves little.
 */
const DIRTY_WEIGHT_FACTOR = 4;
/** Rows a build writes per transaction. */
const BUILD_ROWS = 50_000;
/** Rows a build writes per INSERT statement (SQLite binds at most 32,766 values in one). */
const ROWS_PER_STATEMENT = 64;

/**
 * Rows for a database being built (`TreeDb.writer`), encoded and checksummed by the caller
 * (build.ts): inode numbers with their records (`encodeInode`), the chunk references those
 * records add, and directory entries (parent, name, inode) as parallel lists.
 */
export interface BuildRows {
  readonly inos: readonly number[];
  readonly recs: readonly string[];
  /** The CRC-32 of each record. */
  readonly crcs: readonly number[];
  readonly refs: ReadonlyArray<readonly [string, number]>;
  readonly parents: readonly number[];
  readonly names: readonly string[];
  readonly targets: readonly number[];
  /** Each entry's checksum (`entryChecksum`). */
  readonly entryCrcs: readonly number[];
}

/** The SQLite side of a build (`TreeDb.writer`); it runs in whichever thread made it. */
export interface BuildWriter {
  /** Writes rows. A record for an inode written before replaces it (what it counted is taken back). */
  write(rows: BuildRows): void;
  /**
   * Ends the build: the state row (`state`'s counts as the caller counted them, corrected for
   * replaced records), the database made durable and closed. It is not yet whole: `TreeDb.open`
   * takes it only with `unfinished`, and `complete` marks it whole.
   */
  finish(state: Omit<DbState, 'chunkSize'>): DbState;
  /** Closes the database if it is open (a build that stops: build.ts removes its files). */
  close(): void;
}

function nameKey(name: string): Buffer {
  return Buffer.from(name, 'utf16le');
}

function entryCrc(parent: number, name: Buffer, ino: number): number {
  return crc32(name, crc32(`${parent}:${ino}:`));
}

/** The columns of an entry row (parent, name key, ino, checksum; the checksum given if known). */
function entryRow(parent: number, name: string, ino: number, crc?: number): [number, Buffer, number, number] {
  const key = nameKey(name);
  return [parent, key, ino, crc ?? entryCrc(parent, key, ino)];
}

/** The checksum of an entry row (parent, name, ino), as `entryRow` computes it. */
export function entryChecksum(parent: number, name: string, ino: number): number {
  return entryCrc(parent, nameKey(name), ino);
}

function refCrc(name: string, n: number): number {
  return crc32(`${name}:${n}`);
}

/** The record of an inode without its number and entry table (those are columns and rows). */
export function encodeInode(inode: Inode): string {
  const { ino: _ino, entries: _entries, ...rest } = inode;
  return JSON.stringify(rest);
}

export class TreeDb {
  private readonly dirty = new Map<number, Inode | null>();
  private readonly entryDeltas = new Map<number, Map<string, number | null>>();
  private readonly refDeltas = new Map<string, number>();
  /**
   * The counts last read from the chunks table (0: no row), for the names just looked up: an
   * upload asks whether its chunk is referenced, then its commit reads and sets the count, and
   * each would otherwise be a query. Only the table's own values, so every write to the table
   * (a checkpoint, a replacement, folders loaded) clears it; `refDeltas` is consulted first.
   */
  private readonly refRows = new Map<string, number>();
  /**
   * For a chunk name looked up in the table lately: the first row naming it in a pack
   * (`<name>~<pack>~…`, chunk/packs.ts), or '' when none; cleared with `refRows`.
   */
  private readonly packedRows = new Map<string, string>();
  /** Names gained (+) and lost (-) per inode and directory since the checkpoint (for `dirsOf`). */
  private readonly nameDeltas = new Map<number, Map<number, number>>();
  /**
   * What the changes held for the next checkpoint weigh, counted as the working set counts
   * (an inode, plus one per entry of a directory; one per entry or reference count changed),
   * an upper bound (an inode changed twice counts twice). See `dirtyFull`.
   */
  private dirtyWeight = 0;
  private young = new Map<number, Inode>();
  private youngWeight = 0;
  private old = new Map<number, Inode>();
  private oldWeight = 0;
  private readonly weak = new Map<number, WeakRef<Inode>>();
  private readonly registry = new FinalizationRegistry<number>((ino) => {
    const r = this.weak.get(ino);
    if (r && r.deref() === undefined) this.weak.delete(ino);
  });
  private inodeCount = 0;
  private refCount = 0;
  /** Directories whose entries are still only in the bucket's pages (the `unloaded` table). */
  private readonly unloaded = new Set<number>();
  /** Inode numbers above this are in no row (a new inode needs no lookup). */
  private maxStoredIno = 0;
  private pendingEnd = 0;
  private readonly st: {
    inode: Statement;
    inodeExists: Statement;
    dirsAmong: Statement;
    inodesAfter: Statement;
    entriesOf: Statement;
    dirsOf: Statement;
    inosBetween: Statement;
    namesBetween: Statement;
    ref: Statement;
    refFrom: Statement;
    refsAfter: Statement;
    putInode: Statement;
    delInode: Statement;
    putEntry: Statement;
    delEntry: Statement;
    delEntriesOf: Statement;
    putRef: Statement;
    delRef: Statement;
    putPending: Statement;
    delPendingBelow: Statement;
    pendingFrom: Statement;
    putState: Statement;
    state: Statement;
  };
  readonly storage: TreeStorage;

  private constructor(
    private readonly db: Database,
    readonly file: string,
    readonly readOnly: boolean,
    private readonly maxWeight: number,
  ) {
    this.st = {
      inode: db.prepare('SELECT ino, rec, crc FROM inodes WHERE ino = ?'),
      inodeExists: db.prepare('SELECT 1 AS x FROM inodes WHERE ino = ?'),
      dirsAmong: db.prepare(
        "SELECT count(*) AS n FROM json_each(?) AS j JOIN inodes AS i ON i.ino = j.value WHERE json_extract(i.rec, '$.kind') = 'dir'",
      ),
      inodesAfter: db.prepare('SELECT ino, rec, crc FROM inodes WHERE ino > ? ORDER BY ino LIMIT ?'),
      entriesOf: db.prepare('SELECT name, ino, crc FROM entries WHERE parent = ?'),
      dirsOf: db.prepare('SELECT parent, count(*) AS n FROM entries WHERE ino = ? GROUP BY parent'),
      inosBetween: db.prepare('SELECT ino FROM inodes WHERE ino BETWEEN ? AND ?'),
      namesBetween: db.prepare('SELECT ino, count(*) AS n FROM entries WHERE ino BETWEEN ? AND ? GROUP BY ino'),
      ref: db.prepare('SELECT name, n, crc FROM chunks WHERE name = ?'),
      refFrom: db.prepare('SELECT name, n, crc FROM chunks WHERE name >= ? AND name < ? ORDER BY name LIMIT 1'),
      refsAfter: db.prepare('SELECT name, n, crc FROM chunks WHERE name > ? ORDER BY name LIMIT ?'),
      putInode: db.prepare('INSERT OR REPLACE INTO inodes (ino, rec, crc) VALUES (?, ?, ?)'),
      delInode: db.prepare('DELETE FROM inodes WHERE ino = ?'),
      putEntry: db.prepare('INSERT OR REPLACE INTO entries (parent, name, ino, crc) VALUES (?, ?, ?, ?)'),
      delEntry: db.prepare('DELETE FROM entries WHERE parent = ? AND name = ?'),
      delEntriesOf: db.prepare('DELETE FROM entries WHERE parent = ?'),
      putRef: db.prepare('INSERT OR REPLACE INTO chunks (name, n, crc) VALUES (?, ?, ?)'),
      delRef: db.prepare('DELETE FROM chunks WHERE name = ?'),
      putPending: db.prepare('INSERT OR REPLACE INTO pending (n, op, crc) VALUES (?, ?, ?)'),
      delPendingBelow: db.prepare('DELETE FROM pending WHERE n < ?'),
      pendingFrom: db.prepare('SELECT n, op, crc FROM pending WHERE n >= ? ORDER BY n'),
      putState: db.prepare("INSERT OR REPLACE INTO meta (k, v, crc) VALUES ('state', ?, ?)"),
      state: db.prepare("SELECT v, crc FROM meta WHERE k = 'state'"),
    };
    this.storage = this.makeStorage();
  }

  /** The database file in metadata folder `dir`. */
  static fileIn(dir: string): string {
    return path.join(dir, TREE_DB);
  }

  /**
   * Opens the database in `dir`: undefined when there is none or it never got a state (a
   * creation that did not finish). Damage is SnapshotDamagedError. `unfinished`: a database a
   * build finished and nothing yet marked whole (`complete`) is taken too (build.ts).
   */
  static open(
    dir: string,
    opts: { readOnly?: boolean; cacheWeight?: number; unfinished?: boolean } = {},
  ): { db: TreeDb; state: DbState } | undefined {
    const file = TreeDb.fileIn(dir);
    let db: Database;
    try {
      db = openDatabase(file, { readOnly: opts.readOnly ?? false, mustExist: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw damaged(file, err);
    }
    try {
      const layout = db.pragma('user_version', { simple: true }) as number;
      if (layout === 0 && !opts.unfinished) {
        db.close();
        return undefined;
      }
      if (layout > LAYOUT)
        throw new SnapshotDamagedError(file, `its layout ${layout} was written by a newer version of Filespace`);
      const t = new TreeDb(db, file, opts.readOnly ?? false, opts.cacheWeight ?? DEFAULT_CACHE_WEIGHT);
      const state = t.readStateRow();
      if (!state) {
        db.close();
        return undefined;
      }
      t.inodeCount = state.inodes;
      t.refCount = state.refs;
      t.pendingEnd = state.pendingEnd;
      t.maxStoredIno = Math.max(0, state.nextIno - 1);
      if (layout !== 0 && layout < LAYOUT && !t.readOnly) {
        db.exec(UNLOADED_TABLE);
        db.pragma(`user_version = ${LAYOUT}`);
      }
      const hasTable = db.prepare("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'unloaded'").get();
      if (hasTable) for (const raw of db.prepare('SELECT dir FROM unloaded').all()) t.unloaded.add((raw as { dir: number }).dir);
      return { db: t, state };
    } catch (err) {
      db.close();
      throw damaged(file, err);
    }
  }

  /**
   * Creates the database in `dir` holding `tree` (any tree: in memory or another database's) at
   * `state`, with `pending` as the changes not yet in the bucket. A database left there by a
   * creation that did not finish is replaced.
   */
  static create(
    dir: string,
    tree: Tree,
    state: Omit<DbState, 'pendingFirst' | 'allocatedBytes' | 'dirs'>,
    pending: readonly MetaOp[],
  ): TreeDb {
    const file = TreeDb.fileIn(dir);
    TreeDb.remove(dir);
    const db = openDatabase(file, { readOnly: false, mustExist: false });
    try {
      db.exec(SCHEMA + INDEXES);
      const t = new TreeDb(db, file, false, DEFAULT_CACHE_WEIGHT);
      t.replaceAll(tree, { ...state, pendingFirst: 0, ...totalsOf(tree) }, pending);
      // The layout marks a finished creation: a database without it is one that never was.
      db.pragma(`user_version = ${LAYOUT}`);
      return t;
    } catch (err) {
      db.close();
      throw err;
    }
  }

  /**
   * The SQLite side of building the database in `dir` from rows streamed in (a fresh machine's
   * link, see build.ts, which encodes the rows and may run this in a worker thread): a database
   * left there before is replaced. While it is built the database is written without journal
   * or fsync (a build that stops half-way is started over, never used: see `complete`);
   * `finish` writes the state row and makes it durable, and closes it.
   */
  static writer(dir: string, chunkSize: number): BuildWriter {
    const file = TreeDb.fileIn(dir);
    TreeDb.remove(dir);
    const db = openDatabase(file, { readOnly: false, mustExist: false, bulk: true });
    try {
      db.exec(SCHEMA);
      // A bigger page cache while the rows go in (16 MiB; at 1,000,000 files 32 or 96 MiB
      // linked no faster, and memory grew with it).
      db.pragma('cache_size = -16384');
      // The sort that builds the entries' index at the end spills past the page cache into
      // temporary files, kept in memory (openDatabase). On disk instead (temp_store = FILE),
      // bench:scale at 1,000,000 files measured about 40 MB less peak RSS for the link, a
      // snapshot's browse open and the check, but 15-20% more time for each (the link 9.98 ->
      // 11.74 s): the link's time is the tighter of its two bounds.
    } catch (err) {
      db.close();
      throw err;
    }
    const t = new TreeDb(db, file, false, DEFAULT_CACHE_WEIGHT);
    const st = {
      addInode: db.prepare('INSERT INTO inodes (ino, rec, crc) VALUES (?, ?, ?) ON CONFLICT (ino) DO NOTHING'),
      addRef: db.prepare(
        'INSERT INTO chunks (name, n, crc) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET n = n + excluded.n, crc = -1',
      ),
      unchecked: db.prepare('SELECT name, n FROM chunks WHERE crc = -1'),
      setRefCrc: db.prepare('UPDATE chunks SET crc = ? WHERE name = ?'),
    };
    // Corrections to the caller's counts, for records that replaced one added before.
    let dirs = 0;
    let allocatedBytes = 0;
    // Rows go in by many per statement (`many`): a statement call costs more than the B-tree
    // insert of a row, so a fresh machine's link spends its time in SQLite, not in the calls.
    const many = (sql: (n: number) => string) => {
      const made = new Map<number, Statement>();
      return (n: number) => {
        let s = made.get(n);
        if (!s) made.set(n, (s = db.prepare(sql(n))));
        return s;
      };
    };
    const values = (cols: number, n: number) => Array.from({ length: n }, () => `(${'?, '.repeat(cols - 1)}?)`).join(', ');
    const addInodes = many((n) => `INSERT INTO inodes (ino, rec, crc) VALUES ${values(3, n)}`);
    const addEntries = many((n) => `INSERT OR REPLACE INTO entries (parent, name, ino, crc) VALUES ${values(4, n)}`);
    /** One record; one given before is replaced, and what it counted is taken back (`refs`: this batch's chunk counts). */
    const addOne = (ino: number, rec: string, crc: number, refs: Map<string, number>) => {
      if (st.addInode.run(ino, rec, crc).changes === 0) {
        const old = t.decodeRecord(t.st.inode.get(ino) as InodeRow);
        const c = Tree.countOf(old);
        dirs -= c.dirs;
        allocatedBytes -= c.allocatedBytes;
        for (const c of old.chunks ?? []) if (c) refs.set(c[0], (refs.get(c[0]) ?? 0) - 1);
        t.st.putInode.run(ino, rec, crc);
      } else t.inodeCount++;
    };
    // One transaction per BUILD_ROWS rows, open across calls (nothing else uses the database).
    let rowsInTransaction = 0;
    let done = false;
    const close = () => {
      done = true;
      if (db.open) db.close();
    };
    return {
      write(rows) {
        if (done) throw new Error('the metadata database is already built');
        if (rowsInTransaction === 0) db.exec('BEGIN');
        const refs = new Map<string, number>();
        for (const [name, n] of rows.refs) refs.set(name, (refs.get(name) ?? 0) + n);
        const { inos, recs, crcs } = rows;
        for (let i = 0; i < inos.length; i += ROWS_PER_STATEMENT) {
          const n = Math.min(ROWS_PER_STATEMENT, inos.length - i);
          const args: unknown[] = [];
          for (let k = i; k < i + n; k++) args.push(inos[k], recs[k], crcs[k]);
          try {
            addInodes(n).run(...args);
            t.inodeCount += n;
          } catch (err) {
            // A record for an inode already added (SQLite undid this statement's rows): one by one.
            if (!String((err as { code?: unknown }).code).startsWith('SQLITE_CONSTRAINT')) throw err;
            for (let k = i; k < i + n; k++) addOne(inos[k]!, recs[k]!, crcs[k]!, refs);
          }
        }
        for (const [name, n] of refs) if (n !== 0) st.addRef.run(name, n, refCrc(name, n));
        const { parents, names, targets, entryCrcs } = rows;
        for (let i = 0; i < parents.length; i += ROWS_PER_STATEMENT) {
          const n = Math.min(ROWS_PER_STATEMENT, parents.length - i);
          const args: unknown[] = [];
          for (let k = i; k < i + n; k++) args.push(...entryRow(parents[k]!, names[k]!, targets[k]!, entryCrcs[k]));
          addEntries(n).run(...args);
        }
        rowsInTransaction += inos.length + parents.length + 1;
        if (rowsInTransaction >= BUILD_ROWS) {
          db.exec('COMMIT');
          rowsInTransaction = 0;
        }
      },
      finish(state) {
        if (done) throw new Error('the metadata database is already built');
        const full: DbState = {
          ...state,
          chunkSize,
          dirs: state.dirs + dirs,
          allocatedBytes: state.allocatedBytes + allocatedBytes,
        };
        try {
          if (rowsInTransaction > 0) db.exec('COMMIT');
          rowsInTransaction = 0;
          db.transaction(() => {
            db.exec('DELETE FROM chunks WHERE n <= 0');
            for (const raw of st.unchecked.all()) {
              const r = raw as { name: string; n: number };
              st.setRefCrc.run(refCrc(r.name, r.n), r.name);
            }
            t.refCount = (db.prepare('SELECT count(*) AS n FROM chunks').get() as { n: number }).n;
            t.pendingEnd = 0;
            t.writeStateRow(full);
            db.exec(INDEXES);
          })();
        } finally {
          close();
        }
        const fd = fs.openSync(file, 'r');
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        return full;
      },
      close,
    };
  }

  /**
   * Marks a database a build made (build.ts) whole (after `finish`, and after the changes applied to
   * its tree were written with `checkpoint`): until then `open` takes it for one that never was
   * (unless asked for an `unfinished` one).
   */
  complete(): void {
    this.db.pragma(`user_version = ${LAYOUT}`);
  }

  /**
   * A working copy of this database in `dir` (made if missing; it holds none), as its last checkpoint left it:
   * SQLite's VACUUM INTO, a consistent copy even of a database open read-only, written without
   * reading the tree into memory. Its tree takes changes, held in memory and never written (the
   * checker and the repair apply a journal's records to it to name what they touched). Changes
   * held here since the last checkpoint are not in the copy. Close it with `db.close()`.
   */
  copyTo(dir: string): { db: TreeDb; tree: Tree } {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.db.prepare('VACUUM INTO ?').run(TreeDb.fileIn(dir));
    const opened = TreeDb.open(dir, { unfinished: true });
    if (!opened) throw new Error(`the copy of the metadata database in ${dir} could not be read back`);
    return { db: opened.db, tree: opened.db.tree(opened.state) };
  }

  /** Removes the database files in `dir` (the database, its WAL and shared memory). */
  static remove(dir: string): void {
    const file = TreeDb.fileIn(dir);
    for (const f of [file, `${file}-wal`, `${file}-shm`]) fs.rmSync(f, { force: true });
  }

  /**
   * Closes the database. A writer leaves it in rollback-journal mode, so that a reader that
   * opens it later (status or check of an unmounted filespace, read-only) creates no WAL or
   * shared-memory file beside it; the next writer switches it back to WAL. The switch needs the
   * database to itself: with a reader still on it, the database stays in WAL mode (and the next
   * writer's close tries again).
   */
  close(): void {
    if (!this.db.open) return;
    if (!this.readOnly) {
      try {
        this.db.pragma('busy_timeout = 0');
        this.db.pragma('journal_mode = DELETE');
      } catch {
        // Another connection has it open; see above.
      }
    }
    this.db.close();
  }

  /** The changes not yet in the bucket as of the last checkpoint, in order. */
  pendingOps(state: DbState): MetaOp[] {
    const out: MetaOp[] = [];
    let expect = state.pendingFirst;
    for (const raw of this.st.pendingFrom.iterate(state.pendingFirst)) {
      const row = raw as { n: number; op: string; crc: number };
      if (row.n !== expect || crc32(row.op) !== row.crc)
        throw new SnapshotDamagedError(this.file, `a change not yet in the bucket (${row.n}) fails its checksum or is missing`);
      out.push(JSON.parse(row.op) as MetaOp);
      expect++;
    }
    if (expect !== this.pendingEnd)
      throw new SnapshotDamagedError(this.file, `changes not yet in the bucket are missing (${expect} of ${this.pendingEnd})`);
    return out;
  }

  private readStateRow(): StateRow | undefined {
    const row = this.st.state.get() as { v: string; crc: number } | undefined;
    if (!row) return undefined;
    if (crc32(row.v) !== row.crc) throw new SnapshotDamagedError(this.file, 'its state fails its checksum');
    const s = JSON.parse(row.v) as StateRow;
    for (const k of [
      'gen',
      'chunkSize',
      'nextIno',
      'remoteSeq',
      'pendingFirst',
      'allocatedBytes',
      'dirs',
      'inodes',
      'refs',
      'pendingEnd',
    ] as const)
      if (!Number.isSafeInteger(s[k]) || s[k] < 0) throw new SnapshotDamagedError(this.file, `its state has no valid ${k}`);
    if (s.xattrNames !== undefined && (!Array.isArray(s.xattrNames) || s.xattrNames.some((n) => typeof n !== 'string')))
      throw new SnapshotDamagedError(this.file, 'its state has no valid xattrNames');
    return s;
  }

  // ---- reading -------------------------------------------------------------------------------

  /** A row's inode record, checked, without its entries. */
  private decodeRecord(row: InodeRow): Inode {
    if (crc32(row.rec) !== row.crc) throw new SnapshotDamagedError(this.file, `inode ${row.ino} fails its checksum`);
    const inode = JSON.parse(row.rec) as Inode;
    inode.ino = row.ino;
    return inode;
  }

  private decode(row: InodeRow): Inode {
    const inode = this.decodeRecord(row);
    if (inode.kind === 'dir' && this.unloaded.has(row.ino)) inode.entries = new UnloadedEntries(row.ino);
    else if (inode.kind === 'dir') {
      const entries = new Map<string, number>();
      for (const raw of this.st.entriesOf.all(row.ino)) {
        const e = raw as EntryRow;
        if (entryCrc(row.ino, e.name, e.ino) !== e.crc)
          throw new SnapshotDamagedError(this.file, `an entry of directory ${row.ino} fails its checksum`);
        entries.set(e.name.toString('utf16le'), e.ino);
      }
      inode.entries = entries;
    }
    return inode;
  }

  private weightOf(inode: Inode): number {
    return inode.entries instanceof UnloadedEntries ? 1 : 1 + (inode.entries?.size ?? 0);
  }

  /** Keeps `inode` (clean) in the working set, as used now. */
  private remember(inode: Inode): void {
    this.forget(inode.ino);
    this.young.set(inode.ino, inode);
    this.youngWeight += this.weightOf(inode);
    if (this.weak.get(inode.ino)?.deref() !== inode) {
      this.weak.set(inode.ino, new WeakRef(inode));
      this.registry.register(inode, inode.ino);
    }
    if (this.youngWeight > this.maxWeight / 2) {
      // The old generation goes (its inodes stay reachable through `weak` while held).
      this.old = this.young;
      this.oldWeight = this.youngWeight;
      this.young = new Map();
      this.youngWeight = 0;
    }
  }

  private forget(ino: number): void {
    const y = this.young.get(ino);
    if (y) {
      this.young.delete(ino);
      this.youngWeight -= this.weightOf(y);
    }
    const o = this.old.get(ino);
    if (o) {
      this.old.delete(ino);
      this.oldWeight -= this.weightOf(o);
    }
  }

  /**
   * The live object for `ino` if one is held (dirty, null when deleted; in the working set; or
   * still referenced, looked up through `weak` outside a scan); undefined when only its row can
   * tell.
   */
  private live(ino: number): Inode | null | undefined {
    const d = this.dirty.get(ino);
    if (d !== undefined) return d;
    return this.young.get(ino) ?? this.old.get(ino) ?? (this.scanning === 0 ? this.weak.get(ino)?.deref() : undefined);
  }

  /** The row of inode `ino` as of the last checkpoint, if it has one. */
  private row(ino: number): InodeRow | undefined {
    if (ino > this.maxStoredIno) return undefined;
    return this.st.inode.get(ino) as InodeRow | undefined;
  }

  /** Holds `inode` (null: deleted) for the next checkpoint, counting what it weighs. */
  private makeDirty(ino: number, inode: Inode | null): void {
    this.forget(ino);
    this.dirty.set(ino, inode);
    this.dirtyWeight += inode ? this.weightOf(inode) : 1;
  }

  /** Holds chunk `name`'s new count (0: gone) for the next checkpoint. */
  private refChanged(name: string, n: number): void {
    this.refDeltas.set(name, n);
    this.dirtyWeight++;
  }

  /**
   * Runs `fn`, a synchronous reader of many inodes (a checkpoint's pages), in scan mode: an
   * inode that is not dirty and not in the working set is read from its row and handed out
   * without joining the working set, and none is looked up through `weak`. A WeakRef made or
   * dereferenced keeps its target alive until the current job ends (ECMAScript's
   * KeepDuringJob), so a synchronous pass over a big tree through `remember` held every inode
   * it read until it returned: about 1 KB of heap per file. What scan mode hands out must
   * only be read, within `fn`: a clean inode equals its row (changes make it dirty), so a copy
   * read from the row says what the live object says.
   */
  scan<T>(fn: () => T): T {
    this.scanning++;
    try {
      return this.reading(fn);
    } finally {
      this.scanning--;
    }
  }

  /**
   * Runs `fn`, a synchronous reader of several inodes, in one read transaction: outside one,
   * SQLite in WAL mode begins and ends a transaction for every statement, which was most of what
   * reading a row cost (7.5 us a row against 1.0 us, measured on a 100,000-file tree). A reader
   * takes no lock a writer would wait for, and this connection writes only in `checkpoint`,
   * `replaceAll` and the loads of directories, never within `fn` (which reads only).
   */
  reading<T>(fn: () => T): T {
    const own = this.db.open && !this.db.inTransaction;
    if (own) this.db.exec('BEGIN');
    try {
      return fn();
    } finally {
      if (own && this.db.inTransaction) this.db.exec('COMMIT');
    }
  }

  private scanning = 0;

  private getInode(ino: number): Inode | undefined {
    const d = this.dirty.get(ino);
    if (d !== undefined) return d ?? undefined;
    const y = this.young.get(ino);
    if (y) return y;
    // A scan reads rows and lets them go: no WeakRef is made or dereferenced (see scan).
    const keep = this.scanning === 0;
    const o = this.old.get(ino) ?? (keep ? this.weak.get(ino)?.deref() : undefined);
    if (o) {
      if (keep) this.remember(o);
      return o;
    }
    const row = this.row(ino);
    if (!row) return undefined;
    const inode = this.decode(row);
    if (keep) this.remember(inode);
    return inode;
  }

  /**
   * Tree.record: the held object if there is one (as `getInode` finds it), else the row's record
   * without a directory's entry table, not remembered.
   */
  private record(ino: number): Omit<Inode, 'entries'> | undefined {
    const held = this.live(ino);
    if (held !== undefined) return held ?? undefined;
    const row = this.row(ino);
    return row ? this.decodeRecord(row) : undefined;
  }

  /**
   * Tree.dirsAmong: held objects answer for themselves (a change since the checkpoint is held);
   * the others are counted by SQLite from their rows' kind, in one query, without handing each
   * row to JavaScript to decode. An inode's kind never changes, so a row's says what the inode is.
   */
  private dirsAmong(inos: readonly number[]): number {
    let n = 0;
    const rest: number[] = [];
    for (const ino of inos) {
      const held = this.live(ino);
      if (held === undefined) {
        if (ino <= this.maxStoredIno) rest.push(ino);
      } else if (held?.kind === 'dir') n++;
    }
    if (rest.length > 0) n += (this.st.dirsAmong.get(JSON.stringify(rest)) as { n: number }).n;
    return n;
  }

  /**
   * Whether inode `ino` exists, without reading its record (a directory's record comes with its
   * whole entry table): what is held answers, else the row's presence (the rows are the tree at
   * the checkpoint, and every change since is held).
   */
  private exists(ino: number): boolean {
    const held = this.live(ino);
    if (held !== undefined) return held !== null;
    return ino <= this.maxStoredIno && this.st.inodeExists.get(ino) !== undefined;
  }

  /** Whether inode `ino` exists (see `exists`). */
  has(ino: number): boolean {
    return this.exists(ino);
  }

  private *allInodes(): IterableIterator<Inode> {
    for (const d of [...this.dirty.values()]) if (d) yield d;
    let after = 0;
    for (;;) {
      const rows = this.st.inodesAfter.all(after, BATCH) as InodeRow[];
      if (rows.length === 0) return;
      for (const row of rows) {
        after = row.ino;
        if (this.dirty.has(row.ino)) continue;
        yield this.live(row.ino) ?? this.decode(row);
      }
    }
  }

  private getRef(name: string): number | undefined {
    const d = this.refDeltas.get(name);
    if (d !== undefined) return d === 0 ? undefined : d;
    const known = this.refRows.get(name);
    if (known !== undefined) return known === 0 ? undefined : known;
    let row: RefRow | undefined;
    if (name.includes(PACKED_SEP)) row = this.st.ref.get(name) as RefRow | undefined;
    else {
      // The name and its places in packs sort together: one lookup answers both (`packedOf`).
      row = this.st.refFrom.get(name, name + PAST_PACKED) as RefRow | undefined;
      if (this.packedRows.size >= REF_ROWS_HELD) this.packedRows.clear();
      if (row && row.name !== name) {
        this.packedRows.set(name, row.name.startsWith(name + PACKED_SEP) ? row.name : '');
        row = undefined;
      } else if (!row) this.packedRows.set(name, '');
    }
    if (row && refCrc(row.name, row.n) !== row.crc)
      throw new SnapshotDamagedError(this.file, `the reference count of chunk ${name} fails its checksum`);
    if (this.refRows.size >= REF_ROWS_HELD) this.refRows.clear();
    this.refRows.set(name, row?.n ?? 0);
    return row?.n;
  }

  /**
   * A reference to chunk `name` in a pack that is referenced now, as the table held it at the
   * last checkpoint (the changes since are not searched: the uploader remembers its own), or
   * undefined.
   */
  private packedOf(name: string): string | undefined {
    let ref = this.packedRows.get(name);
    if (ref === undefined) {
      const row = this.st.refFrom.get(name + PACKED_SEP, name + PAST_PACKED) as RefRow | undefined;
      ref = row?.name ?? '';
      if (this.packedRows.size >= REF_ROWS_HELD) this.packedRows.clear();
      this.packedRows.set(name, ref);
    }
    return ref !== '' && this.getRef(ref) !== undefined ? ref : undefined;
  }

  private *allRefs(): IterableIterator<[string, number]> {
    for (const [name, n] of [...this.refDeltas]) if (n > 0) yield [name, n];
    let after = '';
    for (;;) {
      const rows = this.st.refsAfter.all(after, BATCH) as RefRow[];
      if (rows.length === 0) return;
      for (const row of rows) {
        after = row.name;
        if (this.refDeltas.has(row.name)) continue;
        if (refCrc(row.name, row.n) !== row.crc)
          throw new SnapshotDamagedError(this.file, `the reference count of chunk ${row.name} fails its checksum`);
        yield [row.name, row.n];
      }
    }
  }

  /**
   * Reads every row and checks it (the checker): SQLite's own check of its pages and indexes,
   * every row's checksum, every entry naming an inode that exists, and the counts and chunk
   * reference counts the state row and the chunks table keep against the inodes themselves.
   * Throws SnapshotDamagedError at the first problem. Only for a database nothing changed since
   * it was opened (the checker opens it read-only).
   *
   * Memory does not grow with the tree: the chunk names the inodes hold are counted in a
   * temporary table on disk (SQLite's temporary folder), compared with the chunks table a batch
   * at a time, and whether every entry names a stored inode is one query.
   */
  verifyAll(): void {
    const ok = this.db.pragma('quick_check', { simple: true });
    if (ok !== 'ok') throw new SnapshotDamagedError(this.file, `SQLite finds it damaged (${String(ok)})`);
    this.db.pragma('temp_store = FILE');
    try {
      this.db.exec('CREATE TEMP TABLE named_chunks (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID');
      const bump = this.db.prepare(
        'INSERT INTO temp.named_chunks (name, n) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1',
      );
      const countOf = this.db.prepare('SELECT n FROM temp.named_chunks WHERE name = ?');
      let inodes = 0;
      let batch: Inode[] = [];
      const flush = this.db.transaction((list: Inode[]) => {
        for (const inode of list) for (const c of inode.chunks ?? []) if (c) bump.run(c[0]);
      });
      for (const inode of this.allInodes()) {
        inodes++;
        batch.push(inode);
        if (batch.length >= BATCH) {
          flush(batch);
          batch = [];
        }
      }
      flush(batch);
      const unnamed = this.db
        .prepare('SELECT e.ino AS ino FROM entries e WHERE NOT EXISTS (SELECT 1 FROM inodes i WHERE i.ino = e.ino) LIMIT 1')
        .get() as { ino: number } | undefined;
      if (unnamed)
        throw new SnapshotDamagedError(this.file, `a directory entry names inode ${unnamed.ino}, which it does not hold`);
      if (inodes !== this.inodeCount)
        throw new SnapshotDamagedError(this.file, `it holds ${inodes} inodes where its state counts ${this.inodeCount}`);
      let stored = 0;
      for (const [name, n] of this.allRefs()) {
        stored++;
        const named = (countOf.get(name) as { n: number } | undefined)?.n;
        if (named !== n)
          throw new SnapshotDamagedError(this.file, `chunk ${name} is counted ${n} times but named ${named ?? 0} times`);
      }
      const namedCount = (this.db.prepare('SELECT count(*) AS n FROM temp.named_chunks').get() as { n: number }).n;
      if (stored !== namedCount || stored !== this.refCount)
        throw new SnapshotDamagedError(this.file, `it counts ${stored} chunks where its inodes name ${namedCount}`);
    } finally {
      this.db.exec('DROP TABLE IF EXISTS temp.named_chunks');
      this.db.pragma('temp_store = MEMORY');
    }
  }

  private makeStorage(): TreeStorage {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const inodes: InodeTable = {
      get: (ino) => self.getInode(ino),
      has: (ino) => self.exists(ino),
      set(ino, inode) {
        if (self.getInode(ino) === undefined) self.inodeCount++;
        self.makeDirty(ino, inode);
        return inodes;
      },
      delete(ino) {
        if (self.getInode(ino) === undefined) return false;
        self.inodeCount--;
        self.makeDirty(ino, null);
        self.weak.delete(ino);
        return true;
      },
      get size() {
        return self.inodeCount;
      },
      values: () => self.allInodes(),
      *keys() {
        for (const i of self.allInodes()) yield i.ino;
      },
    };
    const chunkRefs: RefTable = {
      get: (name) => self.getRef(name),
      has: (name) => self.getRef(name) !== undefined,
      packedOf: (name) => self.packedOf(name),
      set(name, n) {
        if (self.getRef(name) === undefined) self.refCount++;
        self.refChanged(name, n);
        return chunkRefs;
      },
      delete(name) {
        if (self.getRef(name) === undefined) return false;
        self.refCount--;
        self.refChanged(name, 0);
        return true;
      },
      get size() {
        return self.refCount;
      },
      entries: () => self.allRefs(),
      *keys() {
        for (const [name] of self.allRefs()) yield name;
      },
      [Symbol.iterator]: () => self.allRefs(),
    };
    return {
      inodes,
      chunkRefs,
      touched(inode) {
        if (self.dirty.get(inode.ino) !== inode) self.makeDirty(inode.ino, inode);
      },
      entryChanged(parent, name, ino, previous) {
        let m = self.entryDeltas.get(parent);
        if (!m) self.entryDeltas.set(parent, (m = new Map<string, number | null>()));
        m.set(name, ino ?? null);
        // The delta, and the entry it adds to the directory (dirty, so held) if it is new.
        self.dirtyWeight += 2;
        if (previous !== undefined) self.nameDelta(previous, parent, -1);
        if (ino !== undefined) self.nameDelta(ino, parent, 1);
      },
      dirsOf: (ino) => self.dirsOf(ino),
      scan: (fn) => self.scan(fn),
      reading: (fn) => self.reading(fn),
      dirsAmong: (inos) => self.dirsAmong(inos),
      unhomedIn: (lo, hi) => self.unhomedIn(lo, hi),
      record: (ino) => self.record(ino),
    };
  }

  /**
   * Tree.unhomedIn: the inodes of `lo`..`hi` whose names do not count exactly one, from two
   * range queries (the inodes table, and the entries by inode through their index) with the
   * changes since the checkpoint applied (new and deleted inodes, names gained and lost).
   */
  private unhomedIn(lo: number, hi: number): number[] {
    const existing = new Set<number>();
    const names = new Map<number, number>();
    if (lo <= this.maxStoredIno) {
      for (const raw of this.st.inosBetween.all(lo, hi)) existing.add((raw as { ino: number }).ino);
      for (const raw of this.st.namesBetween.all(lo, hi)) {
        const r = raw as { ino: number; n: number };
        names.set(r.ino, r.n);
      }
    }
    for (const [ino, inode] of this.dirty) {
      if (ino < lo || ino > hi) continue;
      if (inode) existing.add(ino);
      else existing.delete(ino);
    }
    for (const [ino, byDir] of this.nameDeltas) {
      if (ino < lo || ino > hi) continue;
      let n = names.get(ino) ?? 0;
      for (const by of byDir.values()) n += by;
      names.set(ino, n);
    }
    return [...existing].filter((ino) => ino !== ROOT_INO && (names.get(ino) ?? 0) !== 1).sort((a, b) => a - b);
  }

  private nameDelta(ino: number, dir: number, by: number): void {
    let m = this.nameDeltas.get(ino);
    if (!m) this.nameDeltas.set(ino, (m = new Map<number, number>()));
    m.set(dir, (m.get(dir) ?? 0) + by);
  }

  /** Every directory naming `ino`: the database's entries, with the changes since the checkpoint. */
  private dirsOf(ino: number): number[] {
    const counts = new Map<number, number>();
    if (ino <= this.maxStoredIno) {
      for (const raw of this.st.dirsOf.all(ino)) {
        const r = raw as { parent: number; n: number };
        counts.set(r.parent, r.n);
      }
    }
    for (const [dir, by] of this.nameDeltas.get(ino) ?? []) counts.set(dir, (counts.get(dir) ?? 0) + by);
    return [...counts]
      .filter(([, n]) => n > 0)
      .map(([dir]) => dir)
      .sort((a, b) => a - b);
  }

  /** A tree over this database (the working set is this object's). */
  tree(state: DbState): Tree {
    const t = new Tree(state.chunkSize, this.storage);
    t.nextIno = state.nextIno;
    t.allocatedBytes = state.allocatedBytes;
    t.dirs = state.dirs;
    t.xattrNames = state.xattrNames ? new Set(state.xattrNames) : undefined;
    if (!t.get(ROOT_INO)) throw new SnapshotDamagedError(this.file, 'it has no root directory');
    return t;
  }

  /** Inodes, entry changes and reference counts waiting for the next checkpoint (for tests and the status). */
  get dirtyCount(): number {
    let n = this.dirty.size + this.refDeltas.size;
    for (const m of this.entryDeltas.values()) n += m.size;
    return n;
  }

  /**
   * Whether the changes held for the next checkpoint weigh more than they may (a few working
   * sets, DIRTY_WEIGHT_FACTOR): the owner should checkpoint (metastore.ts). A directory
   * changed stays dirty, with its whole entry table, until the checkpoint; files made in turn
   * across many directories would otherwise hold every entry table of the tree between two
   * checkpoints.
   */
  get dirtyFull(): boolean {
    return this.dirtyWeight > this.maxWeight * DIRTY_WEIGHT_FACTOR;
  }

  /** Inodes held in memory: the dirty ones and the working set. */
  get heldInodes(): number {
    return this.dirty.size + this.young.size + this.old.size;
  }

  /** Inodes remembered weakly (evicted from the working set, or read there). */
  get weaklyHeld(): number {
    return this.weak.size;
  }

  // ---- writing -------------------------------------------------------------------------------

  private writeStateRow(state: DbState): void {
    const row: StateRow = { ...state, inodes: this.inodeCount, refs: this.refCount, pendingEnd: this.pendingEnd };
    const v = JSON.stringify(row);
    this.st.putState.run(v, crc32(v));
  }

  private writeInode(inode: Inode): void {
    const rec = encodeInode(inode);
    this.st.putInode.run(inode.ino, rec, crc32(rec));
  }

  private writeEntry(parent: number, name: string, ino: number): void {
    this.st.putEntry.run(...entryRow(parent, name, ino));
  }

  private writePending(state: DbState, pending: readonly MetaOp[]): void {
    this.st.delPendingBelow.run(state.pendingFirst);
    const end = state.pendingFirst + pending.length;
    for (let n = Math.max(this.pendingEnd, state.pendingFirst); n < end; n++) {
      const op = JSON.stringify(pending[n - state.pendingFirst]);
      this.st.putPending.run(n, op, crc32(op));
    }
    this.pendingEnd = end;
  }

  /**
   * Writes what changed since the last checkpoint, the state and the changes not yet in the
   * bucket (`pending`, the first of which is at position `state.pendingFirst`), in one durable
   * transaction. On failure (a full disk) nothing is written and the changes stay held.
   */
  checkpoint(state: DbState, pending: readonly MetaOp[]): void {
    if (this.readOnly) throw new Error('the metadata database is open read-only');
    const pendingEnd = this.pendingEnd;
    try {
      this.db.transaction(() => {
        for (const [ino, inode] of this.dirty) {
          if (inode) this.writeInode(inode);
          else {
            this.st.delInode.run(ino);
            this.st.delEntriesOf.run(ino);
          }
        }
        for (const [parent, m] of this.entryDeltas) {
          for (const [name, ino] of m) {
            if (ino === null) this.st.delEntry.run(parent, nameKey(name));
            else this.writeEntry(parent, name, ino);
          }
        }
        for (const [name, n] of this.refDeltas) {
          if (n === 0) this.st.delRef.run(name);
          else this.st.putRef.run(name, n, refCrc(name, n));
        }
        this.writePending(state, pending);
        this.writeStateRow(state);
      })();
    } catch (err) {
      this.pendingEnd = pendingEnd;
      throw err;
    }
    this.maxStoredIno = Math.max(this.maxStoredIno, state.nextIno - 1);
    const clean = [...this.dirty.values()];
    this.dirty.clear();
    this.dirtyWeight = 0;
    this.entryDeltas.clear();
    this.refDeltas.clear();
    this.refRows.clear();
    this.packedRows.clear();
    this.nameDeltas.clear();
    for (const inode of clean) if (inode) this.remember(inode);
  }

  /**
   * Replaces the whole tree with `tree` (a tree read from the bucket, or an older release's
   * snapshot), in one durable transaction; whatever was held is dropped.
   */
  replaceAll(tree: Tree, state: DbState, pending: readonly MetaOp[]): void {
    if (this.readOnly) throw new Error('the metadata database is open read-only');
    let inodes = 0;
    let refs = 0;
    this.db.transaction(() => {
      this.db.exec('DELETE FROM inodes; DELETE FROM entries; DELETE FROM chunks; DELETE FROM pending; DELETE FROM unloaded;');
      for (const inode of tree.inodes.values()) {
        this.writeInode(inode);
        inodes++;
        if (inode.entries) for (const [name, ino] of inode.entries) this.writeEntry(inode.ino, name, ino);
      }
      for (const [name, n] of tree.chunkRefs) {
        this.st.putRef.run(name, n, refCrc(name, n));
        refs++;
      }
      this.inodeCount = inodes;
      this.refCount = refs;
      this.pendingEnd = state.pendingFirst;
      this.writePending(state, pending);
      this.writeStateRow(state);
    })();
    this.dirty.clear();
    this.dirtyWeight = 0;
    this.entryDeltas.clear();
    this.refDeltas.clear();
    this.refRows.clear();
    this.packedRows.clear();
    this.nameDeltas.clear();
    this.young = new Map();
    this.old = new Map();
    this.youngWeight = this.oldWeight = 0;
    this.weak.clear();
    this.unloaded.clear();
    this.maxStoredIno = Math.max(0, state.nextIno - 1);
  }

  // ---- directories loaded on demand (pageLoader.ts) -------------------------------------------

  /** How many directories are not loaded yet. */
  get unloadedCount(): number {
    return this.unloaded.size;
  }

  /** Whether directory `dir` is not loaded yet. */
  isUnloaded(dir: number): boolean {
    return this.unloaded.has(dir);
  }

  /** Up to `limit` directories not loaded yet, lowest number first (a background fill's order). */
  someUnloaded(limit: number): number[] {
    const rows = this.unloadedSt().some.all(limit) as Array<{ dir: number }>;
    return rows.map((r) => r.dir);
  }

  private unloadedStatements: { some: Statement; refs: Statement; del: Statement; put: Statement } | undefined;

  /** The statements on `unloaded` (made when first used: a database of layout 1 opened read-only has no such table). */
  private unloadedSt(): NonNullable<TreeDb['unloadedStatements']> {
    return (this.unloadedStatements ??= {
      some: this.db.prepare('SELECT dir FROM unloaded ORDER BY dir LIMIT ?'),
      refs: this.db.prepare('SELECT refs, crc FROM unloaded WHERE dir = ?'),
      del: this.db.prepare('DELETE FROM unloaded WHERE dir = ?'),
      put: this.db.prepare('INSERT OR REPLACE INTO unloaded (dir, refs, crc) VALUES (?, ?, ?)'),
    });
  }

  /**
   * Records directories whose entries stay in the bucket's pages (`refs`) until loaded: a fresh
   * machine's link, before the segments after the checkpoint are applied. One durable transaction.
   */
  markUnloaded(dirs: readonly UnloadedDir[]): void {
    if (this.readOnly) throw new Error('the metadata database is open read-only');
    const put = this.unloadedSt().put;
    this.db.transaction(() => {
      for (const d of dirs) {
        const refs = JSON.stringify(d.refs);
        put.run(d.dir, refs, crc32(`${d.dir}:${refs}`));
      }
    })();
    for (const d of dirs) {
      this.unloaded.add(d.dir);
      // A copy read before (its entries looked empty) must not be handed out again.
      this.forget(d.dir);
      this.weak.delete(d.dir);
    }
  }

  /** The pages of directory `dir`, not loaded yet (undefined once it is). */
  unloadedRefs(dir: number): PageRef[] | undefined {
    if (!this.unloaded.has(dir)) return undefined;
    const row = this.unloadedSt().refs.get(dir) as { refs: string; crc: number } | undefined;
    if (!row) return undefined;
    if (crc32(`${dir}:${row.refs}`) !== row.crc)
      throw new SnapshotDamagedError(this.file, `the page list of directory ${dir} fails its checksum`);
    return JSON.parse(row.refs) as PageRef[];
  }

  /**
   * Loads directories from their pages, in one durable transaction: each one's entries, the
   * records of the children whose home it is (a record already here wins: it may have changed
   * since), the chunk references those records add, and the state row's counts, so the
   * database is the tree at its checkpoint with these directories in it, and the journal's
   * changes (made after the loads they needed) apply to it after a crash as they did before.
   * The counts held in memory (this object's and `tree`'s running totals) take the same
   * additions. A directory no longer waiting (loaded meanwhile, or the tree replaced) is skipped.
   * Returns the extended-attribute names the loaded records brought that `tree` did not know.
   */
  loadDirectories(dirs: ReadonlyArray<{ readonly dir: number; readonly pages: readonly DirPage[] }>, tree: Tree): string[] {
    if (this.readOnly) throw new Error('the metadata database is open read-only');
    const todo = dirs.filter((d) => this.unloaded.has(d.dir));
    if (todo.length === 0) return [];
    const state = this.readStateRow();
    if (!state) throw new SnapshotDamagedError(this.file, 'it has no state');
    const refs = new Map<string, number>();
    const hadRow = new Set<string>();
    const names = new Set<string>();
    const tables = new Map<number, Map<string, number>>();
    let inodes = 0;
    let dirCount = 0;
    let allocatedBytes = 0;
    let rowRefs = 0;
    let maxIno = 0;
    const delUnloaded = this.unloadedSt().del;
    this.db.transaction(() => {
      for (const { dir, pages } of todo) {
        const table = new Map<string, number>();
        for (const page of pages) {
          for (const [name, ino] of page.entries) {
            table.set(name, ino);
            this.writeEntry(dir, name, ino);
          }
          for (const rec of page.inodes) {
            if (this.dirty.has(rec.ino) || this.st.inodeExists.get(rec.ino) !== undefined) continue;
            this.writeInode(rec);
            inodes++;
            maxIno = Math.max(maxIno, rec.ino);
            const c = Tree.countOf(rec);
            dirCount += c.dirs;
            allocatedBytes += c.allocatedBytes;
            for (const n in rec.xattrs ?? {}) names.add(n);
            for (const c of rec.chunks ?? []) if (c) refs.set(c[0], (refs.get(c[0]) ?? 0) + 1);
          }
        }
        tables.set(dir, table);
        delUnloaded.run(dir);
      }
      this.refRows.clear();
      this.packedRows.clear();
      this.packedRows.clear();
      for (const [name, k] of refs) {
        const row = this.st.ref.get(name) as RefRow | undefined;
        if (row && refCrc(row.name, row.n) !== row.crc)
          throw new SnapshotDamagedError(this.file, `the reference count of chunk ${name} fails its checksum`);
        if (row) hadRow.add(name);
        else rowRefs++;
        const n = (row?.n ?? 0) + k;
        this.st.putRef.run(name, n, refCrc(name, n));
      }
      const known = state.xattrNames;
      const row: StateRow = {
        ...state,
        inodes: state.inodes + inodes,
        refs: state.refs + rowRefs,
        dirs: state.dirs + dirCount,
        allocatedBytes: state.allocatedBytes + allocatedBytes,
        ...(known ? { xattrNames: [...new Set([...known, ...names])] } : {}),
      };
      const v = JSON.stringify(row);
      this.st.putState.run(v, crc32(v));
    })();
    // The same additions to what memory holds.
    this.inodeCount += inodes;
    this.maxStoredIno = Math.max(this.maxStoredIno, maxIno);
    for (const [name, k] of refs) {
      const d = this.refDeltas.get(name);
      if (d !== undefined) {
        if (d === 0) this.refCount++;
        this.refDeltas.set(name, d + k);
      } else if (!hadRow.has(name)) this.refCount++;
    }
    tree.dirs += dirCount;
    tree.allocatedBytes += allocatedBytes;
    const added = tree.xattrNames ? [...names].filter((n) => !tree.xattrNames!.has(n)) : [];
    for (const n of added) tree.xattrNames!.add(n);
    for (const [dir, table] of tables) {
      this.unloaded.delete(dir);
      // A copy of the directory handed out before (its entries not loaded) gets them, so the
      // object stays the one object for its number.
      const held = this.dirty.get(dir) ?? this.young.get(dir) ?? this.old.get(dir) ?? this.weak.get(dir)?.deref();
      if (held && held.entries instanceof UnloadedEntries) {
        const inWorkingSet = this.young.has(dir) || this.old.has(dir);
        if (inWorkingSet) this.forget(dir);
        held.entries = table;
        if (inWorkingSet) this.remember(held);
      }
    }
    return added;
  }
}

function damaged(file: string, err: unknown): Error {
  if (err instanceof SnapshotDamagedError) return err;
  return new SnapshotDamagedError(file, (err as Error).message);
}
