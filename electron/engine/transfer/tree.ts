/**
 * The two ends of a copy (import into a filespace, export out of one), seen the same way: a
 * tree of folders, files and symlinks addressed by relative paths ('a/b', '' for the root,
 * names as the engine holds them: see util/names.ts). A local folder (localTree.ts), plain
 * objects under an S3 prefix (s3Tree.ts) and a filespace through its VFS (vfsTree.ts) each
 * implement both sides, so copy.ts has one algorithm for every direction.
 *
 * What an end cannot hold is said, not faked: `capabilities` tells the copier which entries an
 * end keeps (an S3 prefix keeps no symlinks, no modes and no empty folders except as markers),
 * and a source reports what it cannot offer (unreadable, special files, names that are not
 * paths) through `skip` while it walks.
 */

export type EntryKind = 'dir' | 'file' | 'symlink';

export interface Entry {
  /** Relative path, '/'-separated; '' is the root. */
  readonly path: string;
  readonly kind: EntryKind;
  /** Bytes of a file; 0 otherwise. */
  readonly size: number;
  /** Modification time, ms since the epoch. */
  readonly mtimeMs: number;
  /** Permission bits (0o7777); undefined where the end has none (plain objects). */
  readonly mode?: number;
  /** A symlink's target. */
  readonly target?: string;
}

/** What is at a path of a destination, for deciding whether a file is already there. */
export interface Present {
  readonly kind: EntryKind;
  readonly size: number;
  readonly mtimeMs: number;
  readonly target?: string;
}

export type SkipReason =
  'unreadable' | 'special file' | 'name not representable' | 'symlink (plain objects keep none)' | 'in the way';

export interface Skip {
  readonly path: string;
  readonly reason: SkipReason;
  readonly detail: string;
}

export interface SourceTree {
  readonly description: string;
  /**
   * Every entry under the root (the root excluded), a folder before what it holds. Entries the
   * source cannot offer are reported through `skip` and not yielded.
   */
  walk(skip: (s: Skip) => void): AsyncIterable<Entry>;
  /** A file's bytes from the start, in pieces of at most about 1 MiB (bounded memory). */
  read(path: string): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

export interface FileWriter {
  /** Writes `data` at `pos`; a writer of a non-sparse end is only ever given consecutive pieces. */
  write(data: Buffer, pos: number): Promise<void>;
  /** Sets the final size (holes at the end included), makes the data durable as a close does. */
  finish(size: number): Promise<void>;
  /** Gives up a file half written (an error): what was written may stay; its mtime is never set. */
  abort(): Promise<void>;
}

export interface DestTree {
  readonly description: string;
  /** Whether skipped pieces read back as zeros (holes), so all-zero blocks need not be written. */
  readonly sparse: boolean;
  /** Whether the end keeps symlinks, and folders apart from the files in them. */
  readonly symlinks: boolean;
  /** Why `path` cannot be a name at this end (undefined: it can), for ends stricter than a filesystem. */
  nameProblem?(path: string): string | undefined;
  stat(path: string): Promise<Present | undefined>;
  /** Makes a folder (its parent exists); an existing folder is left as it is. */
  mkdir(path: string): Promise<void>;
  /** Opens a file to write from empty, made if missing (its parent exists). */
  create(path: string, mode: number | undefined, size: number, mtimeMs: number): Promise<FileWriter>;
  symlink(target: string, path: string): Promise<void>;
  /** Removes a file or symlink that is to be replaced. */
  remove(path: string): Promise<void>;
  /** Sets the mode and mtime of what is at `path` (a symlink's own time, where the end keeps one). */
  setAttrs(path: string, mode: number | undefined, mtimeMs: number): Promise<void>;
  /** Reads a file back, for verification. */
  read(path: string): AsyncIterable<Buffer>;
  close(): Promise<void>;
}

/** Joins relative paths. */
export function joinPath(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}

export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}
