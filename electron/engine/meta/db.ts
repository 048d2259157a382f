/**
 * SQLite for the local metadata (treeDb.ts), through better-sqlite3: a maintained N-API
 * binding (one binary for Node and Electron) with a synchronous API, so a lookup that misses
 * the working set reads its row without leaving the call that asked.
 *
 * The addon is the one native/sqlite/build-sqlite.js builds (better-sqlite3 corrected to load on
 * Node-API 9, i.e. Node 20 as well as Node 22 and Electron); without it, better-sqlite3's own
 * binary is used where the runtime can load it (Node-API 10 and later).
 *
 * Settings: WAL journal with synchronous=FULL (a transaction is durable when it returns; the
 * engine writes only at checkpoints, so the fsync is rare), a page cache of a few MiB (the
 * engine keeps its own working set of decoded inodes; SQLite's pages are read with pread, so
 * the kernel's page cache, not the engine's memory, holds the rest), and no memory mapping
 * (mapped pages would count against the engine's resident memory).
 */

import * as fs from 'node:fs';
import * as path from 'node:path';

/** The parts of better-sqlite3's API the engine uses. */
export interface Statement {
  run(...params: unknown[]): { changes: number };
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  iterate(...params: unknown[]): IterableIterator<unknown>;
}

export interface Database {
  readonly open: boolean;
  /** A transaction is open (BEGIN without its COMMIT or ROLLBACK yet). */
  readonly inTransaction: boolean;
  prepare(sql: string): Statement;
  exec(sql: string): void;
  pragma(sql: string, opts?: { simple?: boolean }): unknown;
  transaction<T extends (...args: never[]) => unknown>(fn: T): T;
  close(): void;
}

type DatabaseConstructor = new (
  file: string,
  opts: { readonly?: boolean; fileMustExist?: boolean; timeout?: number; nativeBinding?: string },
) => Database;

const ADDON = path.resolve(__dirname, '..', '..', '..', '..', 'native', 'sqlite', 'addon', 'better_sqlite3.node');

let ctor: DatabaseConstructor | undefined;

function sqlite(): DatabaseConstructor {
  // Loaded on first use: processes that never open local metadata (the UI) do not load it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  ctor ??= require('better-sqlite3') as DatabaseConstructor;
  return ctor;
}

function nativeBinding(): string | undefined {
  if (fs.existsSync(ADDON)) return ADDON;
  if (Number(process.versions.napi) >= 10) return undefined;
  throw new Error(
    `the SQLite addon is missing (${ADDON}): this Node (Node-API ${process.versions.napi}) needs the one ` +
      'native/sqlite/build-sqlite.js builds; run npm install',
  );
}

/**
 * Opens (or creates) the database `file`. `mustExist`: a missing file is ENOENT (an Error with
 * that code), not a new database. `bulk`: no journal and no fsync, for a database that is built
 * and made durable before anything uses it.
 */
export function openDatabase(file: string, opts: { readOnly: boolean; mustExist: boolean; bulk?: boolean }): Database {
  if ((opts.mustExist || opts.readOnly) && !fs.existsSync(file))
    throw Object.assign(new Error(`${file} does not exist`), { code: 'ENOENT' });
  const binding = nativeBinding();
  const Sqlite = sqlite();
  const db = new Sqlite(file, {
    readonly: opts.readOnly,
    fileMustExist: opts.mustExist,
    timeout: 5_000,
    ...(binding ? { nativeBinding: binding } : {}),
  });
  try {
    if (opts.bulk) {
      // A database being built, used only once built and made durable (treeDb.ts `writer`, build.ts).
      db.pragma('journal_mode = OFF');
      db.pragma('synchronous = OFF');
    } else if (!opts.readOnly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = FULL');
    }
    db.pragma('cache_size = -4096');
    db.pragma('mmap_size = 0');
    db.pragma('temp_store = MEMORY');
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}
