/**
 * Changes set aside: local data that cannot go into the filespace as it is, kept here,
 * encrypted with the cache key like the rest of the cache, until the user exports or discards
 * them (`filespace aside`). Three things are set aside: what a machine had not yet uploaded
 * when it found that another machine had taken over the filespace (never merged); dirty
 * chunks found at start whose file the metadata has no record of (`unnamed/inode-<n>`); and,
 * by the repair, the unsent changes that could be read from damaged local metadata.
 *
 * The engine sets changes aside only at start, before the mount is served, through `AsideSets`
 * (which owns the list of this machine's sets, for status): `keepUnsent` (changes another
 * machine's overtook) and `keepOrphans` (dirty chunks without a known file).
 *
 * Layout: <cacheDir>/aside/<id>/manifest (sealed JSON) and one sealed piece per chunk of each
 * kept file, <n>.<idx>. The id sorts by time. Pieces and the manifest are made durable before
 * `finish` returns, so the caller may then delete the data's other copy.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ChunkCache } from './cache/chunkCache';
import { DirtyStore } from './cache/dirty';
import { open, seal } from './chunk/crypto';
import { UserError } from './errors';
import { fsyncDir, writeFileAtomic } from './util/files';
import { nameToBytes } from './util/names';
import { Inode, MetaOp, Tree, pathsOfInodes } from './meta/tree';
import { ChunkFetcher } from './prefetch/fetcher';

export interface AsideFile {
  readonly path: string;
  /** The file's other paths (hard links to it); export makes them links to `path`'s file. */
  readonly links?: readonly string[];
  readonly size: number;
  readonly mode: number;
  /** Pieces stored (one per chunk); fewer than needed when some data could not be read. */
  readonly pieces: number;
  readonly missing?: string;
}

export interface AsideManifest {
  readonly id: string;
  readonly createdAt: number;
  readonly reason: string;
  readonly files: AsideFile[];
  /** Paths this machine had deleted or renamed away, with changes not yet in the bucket. */
  readonly removed: string[];
}

const ID_RE = /^\d{8}T\d{6}Z(-\d+)?$/;

export function asideRoot(cacheDir: string): string {
  return path.join(cacheDir, 'aside');
}

function aad(id: string, what: string): string {
  return `aside:${id}:${what}`;
}

/** Writes one set: call `addFile` per file, then `finish`. A set without a manifest is ignored. */
export class AsideWriter {
  private readonly files: AsideFile[] = [];
  private constructor(
    readonly id: string,
    private readonly dir: string,
    private readonly key: Buffer,
  ) {}

  static async create(cacheDir: string, key: Buffer, now = new Date()): Promise<AsideWriter> {
    const base = now
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d+Z$/, 'Z');
    await fsp.mkdir(asideRoot(cacheDir), { recursive: true, mode: 0o700 });
    for (let n = 0; ; n++) {
      const id = n === 0 ? base : `${base}-${n}`;
      const dir = path.join(asideRoot(cacheDir), id);
      try {
        await fsp.mkdir(dir, { mode: 0o700 });
        return new AsideWriter(id, dir, key);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
  }

  /**
   * Stores a file from its chunks, read one at a time by `readChunk` (undefined: unreadable);
   * `links`: its other paths, if it has several names.
   */
  async addFile(
    p: string,
    size: number,
    mode: number,
    chunkCount: number,
    readChunk: (idx: number) => Promise<Buffer>,
    links: readonly string[] = [],
  ): Promise<void> {
    const n = this.files.length;
    let pieces = 0;
    let missing: string | undefined;
    for (let idx = 0; idx < chunkCount; idx++) {
      let data: Buffer;
      try {
        data = await readChunk(idx);
      } catch (err) {
        missing = `bytes from chunk ${idx} on could not be read: ${(err as Error).message}`;
        break;
      }
      const fh = await fsp.open(path.join(this.dir, `${n}.${idx}`), 'w', 0o600);
      try {
        await fh.writeFile(seal(this.key, data, aad(this.id, `${n}.${idx}`)));
        await fh.datasync();
      } finally {
        await fh.close();
      }
      pieces++;
    }
    this.files.push({ path: p, size, mode, pieces, ...(links.length > 0 ? { links } : {}), ...(missing ? { missing } : {}) });
  }

  async finish(reason: string, removed: string[]): Promise<AsideManifest> {
    const manifest: AsideManifest = { id: this.id, createdAt: Date.now(), reason, files: this.files, removed };
    await writeFileAtomic(
      path.join(this.dir, 'manifest'),
      seal(this.key, Buffer.from(JSON.stringify(manifest)), aad(this.id, 'manifest')),
    );
    await fsyncDir(path.dirname(this.dir));
    return manifest;
  }

  /** Removes a set that turned out to have nothing in it (before `finish`). */
  async abandon(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  get fileCount(): number {
    return this.files.length;
  }
}

/** A dirty chunk whose file is unknown, and how to read its data. */
export interface UnownedChunk {
  readonly ino: number;
  readonly idx: number;
  readonly len: number;
  read(): Promise<Buffer>;
}

/**
 * Adds dirty chunks whose file is unknown, one file per inode number, `unnamed/inode-<n>`:
 * each chunk at its place, zeros between them. Returns how many files it added.
 */
export async function addUnownedChunks(writer: AsideWriter, chunkSize: number, chunks: readonly UnownedChunk[]): Promise<number> {
  const byIno = new Map<number, Map<number, UnownedChunk>>();
  for (const c of chunks) {
    let m = byIno.get(c.ino);
    if (!m) byIno.set(c.ino, (m = new Map<number, UnownedChunk>()));
    m.set(c.idx, c);
  }
  for (const [ino, m] of [...byIno].sort((a, b) => a[0] - b[0])) {
    const last = Math.max(...m.keys());
    const size = last * chunkSize + m.get(last)!.len;
    await writer.addFile(`unnamed/inode-${ino}`, size, 0o600, last + 1, async (idx) => {
      const out = Buffer.alloc(Math.min(chunkSize, size - idx * chunkSize));
      const c = m.get(idx);
      if (c) (await c.read()).copy(out, 0, 0, out.length);
      return out;
    });
  }
  return byIno.size;
}

/** Notes which inodes an unsent op changed, and the folders whose paths its removals name. */
function touchedBy(op: MetaOp, tree: Tree, touched: Set<number>, folders: number[]): void {
  switch (op.t) {
    case 'mk':
    case 'ln':
    case 'attr':
    case 'chunk':
    case 'xattr':
      touched.add(op.ino);
      break;
    case 'mv': {
      const moved = tree.lookup(op.dp, op.dn);
      if (moved) touched.add(moved.ino);
      folders.push(op.sp, op.dp);
      break;
    }
    case 'rm':
      folders.push(op.parent);
      break;
  }
}

/** The path an unsent op removed (deleted or renamed away), if it removed one. */
function removedBy(op: MetaOp, paths: Map<number, string[]>): string | undefined {
  const at = (dir: number, name: string) => `${(paths.get(dir)?.[0] ?? '?').replace(/\/$/, '')}/${name}`;
  if (op.t === 'mv') return `${at(op.sp, op.sn)} (renamed to ${at(op.dp, op.dn)})`;
  if (op.t === 'rm') return at(op.parent, op.name);
  return undefined;
}

/** What setting aside this machine's unsent changes reads. */
export interface UnsentChanges {
  readonly cacheDir: string;
  readonly cacheKey: Buffer;
  readonly tree: Tree;
  /** Metadata ops committed here and not yet in the bucket. */
  readonly pending: readonly MetaOp[];
  readonly chunkSize: number;
  readonly dirty: DirtyStore;
  readonly cache: ChunkCache;
  readonly fetcher: ChunkFetcher;
  /** A file's size as written here (the VFS holds sizes not yet committed). */
  readonly sizeOf: (inode: Inode) => number;
}

/**
 * Keeps this machine's unsent changes (files it created or changed, with their data as this
 * machine has it, and paths it removed) as one set.
 */
async function setAsideUnsent(c: UnsentChanges, reason: string): Promise<AsideManifest> {
  const { tree, dirty, chunkSize: cs } = c;
  const touched = new Set<number>(dirty.inodes());
  const folders: number[] = [];
  for (const op of c.pending) touchedBy(op, tree, touched, folders);
  // The paths of what changed, found upward from it (not a walk of the whole tree).
  const paths = pathsOfInodes(tree, [...touched, ...folders]);
  const removed = c.pending.map((op) => removedBy(op, paths)).filter((r): r is string => r !== undefined);
  const writer = await AsideWriter.create(c.cacheDir, c.cacheKey);
  for (const ino of [...touched].sort((a, b) => a - b)) {
    const inode = tree.get(ino);
    // A file with several names is kept once, with all of them (export links them again).
    const [p, ...links] = paths.get(ino) ?? [];
    if (!inode || inode.kind !== 'file' || p === undefined) continue;
    const size = c.sizeOf(inode);
    const count = Math.ceil(size / cs);
    const readChunk = async (idx: number): Promise<Buffer> => {
      const len = Math.min(cs, size - idx * cs);
      const buf = Buffer.alloc(len);
      const d = dirty.get(ino, idx);
      if (d) {
        await dirty.read(d, buf, 0, len, 0);
        return buf;
      }
      const ref = inode.chunks?.[idx];
      if (!ref) return buf;
      const valid = Math.min(len, ref[1]);
      if ((await c.cache.read(ref[0], buf, 0, valid, 0)) === undefined) {
        const data = await c.fetcher.fetch(ref[0]);
        data.copy(buf, 0, 0, Math.min(valid, data.length));
      }
      return buf;
    };
    await writer.addFile(p, size, inode.mode, count, readChunk, links);
  }
  return writer.finish(reason, removed);
}

/** This machine's sets of changes kept aside: listed at start, added to by the engine. */
export class AsideSets {
  private sets: AsideManifest[] = [];

  constructor(
    private readonly cacheDir: string,
    private readonly cacheKey: Buffer,
    private readonly log: (msg: string) => void,
  ) {}

  async load(): Promise<void> {
    this.sets = await listAside(this.cacheDir, this.cacheKey).catch(() => []);
  }

  /** Discards one set (its data is gone for good) and drops it from the list. */
  async discard(id: string): Promise<void> {
    await discardAside(this.cacheDir, this.cacheKey, id);
    this.sets = this.sets.filter((m) => m.id !== id);
  }

  /** The sets, for status. */
  summary(): Array<{ id: string; createdAt: number; files: number; reason: string }> {
    return this.sets.map((m) => ({ id: m.id, createdAt: m.createdAt, files: m.files.length, reason: m.reason }));
  }

  /**
   * Keeps this machine's unsent changes as a set, then drops its dirty data (the set is
   * durable by then). The caller resets the local metadata to the bucket's.
   */
  async keepUnsent(c: Omit<UnsentChanges, 'cacheDir' | 'cacheKey'>, reason: string): Promise<void> {
    const manifest = await setAsideUnsent({ ...c, cacheDir: this.cacheDir, cacheKey: this.cacheKey }, reason);
    this.sets.push(manifest);
    this.log(`${reason}: set aside ${manifest.files.length} file(s) as ${manifest.id} (see "filespace aside list")`);
    for (const d of [...c.dirty.all()]) await c.dirty.drop(d);
  }

  /**
   * Keeps the dirty chunks found at start without a file the metadata knows (data written,
   * never fsynced, before a crash) as a set of `unnamed/inode-<n>` files, then removes them
   * from the dirty store. `name` is the filespace's, for the command the log line names.
   */
  async keepOrphans(chunkSize: number, dirty: DirtyStore, name: string | undefined): Promise<void> {
    const orphans = dirty.orphans;
    const writer = await AsideWriter.create(this.cacheDir, this.cacheKey);
    const files = await addUnownedChunks(
      writer,
      chunkSize,
      orphans.map((o) => ({ ...o, read: () => dirty.readOrphan(o) })),
    );
    const manifest = await writer.finish(
      "data found in the cache without a file this machine's metadata knows (written but not fsynced before a crash?)",
      [],
    );
    await dirty.removeOrphans();
    this.sets.push(manifest);
    const named = name ? ` ${name}` : '';
    this.log(
      `${orphans.length} dirty chunk(s) of ${files} file(s) without a known owner were set aside as ${manifest.id} (see "filespace aside${named} list")`,
    );
  }
}

export async function listAside(cacheDir: string, key: Buffer): Promise<AsideManifest[]> {
  const ids = (await fsp.readdir(asideRoot(cacheDir)).catch(() => [] as string[])).filter((n) => ID_RE.test(n)).sort();
  const out: AsideManifest[] = [];
  for (const id of ids) {
    const raw = await fsp.readFile(path.join(asideRoot(cacheDir), id, 'manifest')).catch(() => undefined);
    if (!raw) continue; // interrupted while being written; its pieces are still there
    out.push(JSON.parse(open(key, raw, aad(id, 'manifest'), `set-aside changes ${id}`).toString('utf8')) as AsideManifest);
  }
  return out;
}

async function findSet(cacheDir: string, key: Buffer, id: string): Promise<AsideManifest> {
  if (!ID_RE.test(id)) throw new UserError(`"${id}" is not a set-aside id (see "filespace aside list")`, 'BAD_INPUT');
  const set = (await listAside(cacheDir, key)).find((m) => m.id === id);
  if (!set) throw new UserError(`no set-aside changes with id ${id} (see "filespace aside list")`, 'NOT_FOUND');
  return set;
}

/**
 * Writes a set's files under `targetDir` (which must be empty or not exist), with their paths;
 * a file kept with several names is written once and linked under the others (hard links, as
 * it was in the filespace). Returns how many files it wrote.
 */
export async function exportAside(cacheDir: string, key: Buffer, id: string, targetDir: string): Promise<number> {
  const set = await findSet(cacheDir, key, id);
  const existing = await fsp.readdir(targetDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (existing.length > 0) throw new UserError(`${targetDir} is not empty; export into an empty or new folder`, 'NOT_EMPTY');
  await fsp.mkdir(targetDir, { recursive: true, mode: 0o700 });
  const root = path.resolve(targetDir);
  /** Where path `p` of the set goes under the target (undefined: outside it, never written). */
  const destOf = (p: string) => {
    const dest = path.resolve(root, '.' + path.posix.normalize('/' + p));
    return dest.startsWith(root + path.sep) ? dest : undefined;
  };
  // Names that are not UTF-8 are written with their original bytes.
  const mkdirFor = (dest: string) => fsp.mkdir(nameToBytes(path.dirname(dest)), { recursive: true, mode: 0o700 });
  let n = 0;
  for (const [i, f] of set.files.entries()) {
    const dest = destOf(f.path);
    if (!dest) continue;
    await mkdirFor(dest);
    const fh = await fsp.open(nameToBytes(dest), 'wx', f.mode & 0o777);
    try {
      for (let idx = 0; idx < f.pieces; idx++) {
        const raw = await fsp.readFile(path.join(asideRoot(cacheDir), id, `${i}.${idx}`));
        await fh.write(open(key, raw, aad(id, `${i}.${idx}`), `set-aside piece ${i}.${idx}`));
      }
    } finally {
      await fh.close();
    }
    for (const other of f.links ?? []) {
      const at = destOf(other);
      if (!at) continue;
      await mkdirFor(at);
      await fsp.link(nameToBytes(dest), nameToBytes(at));
    }
    n++;
  }
  return n;
}

export async function discardAside(cacheDir: string, key: Buffer, id: string): Promise<void> {
  await findSet(cacheDir, key, id);
  await fsp.rm(path.join(asideRoot(cacheDir), id), { recursive: true, force: true });
}
