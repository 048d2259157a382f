/**
 * Changes set aside: local data that cannot go into the filespace as it is, kept here,
 * encrypted with the cache key like the rest of the cache, until the user exports or discards
 * them (`filespace aside`). Three things are set aside: what a machine had not yet uploaded
 * when it found that another machine had taken over the filespace (never merged); dirty
 * chunks found at start whose file the metadata has no record of (`unnamed/inode-<n>`); and,
 * by the repair, the unsent changes that could be read from damaged local metadata.
 *
 * Layout: <cacheDir>/aside/<id>/manifest (sealed JSON) and one sealed piece per chunk of each
 * kept file, <n>.<idx>. The id sorts by time. Pieces and the manifest are made durable before
 * `finish` returns, so the caller may then delete the data's other copy.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { open, seal } from './chunk/crypto';
import { UserError } from './errors';
import { fsyncDir } from './util/files';
import { nameToBytes } from './util/names';

export interface AsideFile {
  readonly path: string;
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
  private constructor(readonly id: string, private readonly dir: string, private readonly key: Buffer) {}

  static async create(cacheDir: string, key: Buffer, now = new Date()): Promise<AsideWriter> {
    const base = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
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

  /** Stores a file from its chunks, read one at a time by `readChunk` (undefined: unreadable). */
  async addFile(p: string, size: number, mode: number, chunkCount: number, readChunk: (idx: number) => Promise<Buffer>): Promise<void> {
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
    this.files.push({ path: p, size, mode, pieces, ...(missing ? { missing } : {}) });
  }

  async finish(reason: string, removed: string[]): Promise<AsideManifest> {
    const manifest: AsideManifest = { id: this.id, createdAt: Date.now(), reason, files: this.files, removed };
    const tmp = path.join(this.dir, 'manifest.tmp');
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(seal(this.key, Buffer.from(JSON.stringify(manifest)), aad(this.id, 'manifest')));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, path.join(this.dir, 'manifest'));
    await fsyncDir(this.dir);
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
    if (!m) byIno.set(c.ino, (m = new Map()));
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

/** Writes a set's files under `targetDir` (which must be empty or not exist), with their paths. */
export async function exportAside(cacheDir: string, key: Buffer, id: string, targetDir: string): Promise<number> {
  const set = await findSet(cacheDir, key, id);
  const existing = await fsp.readdir(targetDir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
  if (existing.length > 0) throw new UserError(`${targetDir} is not empty; export into an empty or new folder`, 'NOT_EMPTY');
  await fsp.mkdir(targetDir, { recursive: true, mode: 0o700 });
  const root = path.resolve(targetDir);
  let n = 0;
  for (const [i, f] of set.files.entries()) {
    const dest = path.resolve(root, '.' + path.posix.normalize('/' + f.path));
    if (!dest.startsWith(root + path.sep)) continue; // never write outside the target
    // Names that are not UTF-8 are written with their original bytes.
    await fsp.mkdir(nameToBytes(path.dirname(dest)), { recursive: true, mode: 0o700 });
    const fh = await fsp.open(nameToBytes(dest), 'wx', f.mode & 0o777);
    try {
      for (let idx = 0; idx < f.pieces; idx++) {
        const raw = await fsp.readFile(path.join(asideRoot(cacheDir), id, `${i}.${idx}`));
        await fh.write(open(key, raw, aad(id, `${i}.${idx}`), `set-aside piece ${i}.${idx}`));
      }
    } finally {
      await fh.close();
    }
    n++;
  }
  return n;
}

export async function discardAside(cacheDir: string, key: Buffer, id: string): Promise<void> {
  await findSet(cacheDir, key, id);
  await fsp.rm(path.join(asideRoot(cacheDir), id), { recursive: true, force: true });
}
