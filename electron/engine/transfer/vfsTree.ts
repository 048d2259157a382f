/**
 * A folder of a filespace, through its VFS, as either end of a copy: the same operations the
 * FUSE adapter calls for cp or tar, so what is imported goes the engine's own way (write
 * buffer, dirty store, chunks, dedup, encryption, upload) and what is exported is read as any
 * reader reads it. Sparse: pieces never written read back as zeros, and hold no chunk.
 */

import { FsError } from '../errors';
import { TIME_OMIT, Vfs } from '../vfs/vfs';
import { DestTree, Entry, FileWriter, Present, Skip, SourceTree, joinPath } from './tree';

const PIECE_BYTES = 1024 * 1024;
const O_RDONLY = 0;
const O_RDWR = 2;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

export class VfsTree implements SourceTree, DestTree {
  readonly sparse = true;
  readonly symlinks = true;

  /** `base`: the folder of the filespace this tree is, '/'-rooted ('/' for the whole filespace). */
  constructor(
    private readonly vfs: Vfs,
    private readonly base: string,
    readonly description: string,
  ) {}

  private at(rel: string): string {
    const b = this.base.replace(/\/+$/, '');
    return rel === '' ? b || '/' : `${b}/${rel}`;
  }

  async *walk(skip: (s: Skip) => void): AsyncIterable<Entry> {
    const stack: string[] = [''];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      const names = this.vfs
        .readdir(this.at(dir))
        .filter((n) => n !== '.' && n !== '..')
        .sort();
      const subdirs: string[] = [];
      let seen = 0;
      for (const name of names) {
        const rel = joinPath(dir, name);
        let st;
        try {
          st = this.vfs.getattr(this.at(rel));
        } catch {
          continue; // gone meanwhile
        }
        const base = { path: rel, size: 0, mtimeMs: st.mtime, mode: st.mode & 0o7777 };
        const type = st.mode & S_IFMT;
        if (type === S_IFDIR) {
          yield { ...base, kind: 'dir' };
          subdirs.push(rel);
        } else if (type === S_IFREG) {
          yield { ...base, kind: 'file', size: st.size };
        } else if (type === S_IFLNK) {
          yield { ...base, kind: 'symlink', target: this.vfs.readlink(this.at(rel)) };
        } else {
          skip({ path: rel, reason: 'special file', detail: 'FIFO, socket or device' });
        }
        // A large folder yields the event loop now and then: the engine serves others meanwhile.
        if (++seen % 256 === 0) await new Promise((r) => setImmediate(r));
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  async *read(rel: string): AsyncIterable<Buffer> {
    const fh = this.vfs.open(this.at(rel), O_RDONLY);
    try {
      for (let pos = 0; ;) {
        const buf = Buffer.allocUnsafe(PIECE_BYTES);
        const n = await this.vfs.read(fh, buf, PIECE_BYTES, pos);
        if (n === 0) return;
        pos += n;
        yield buf.subarray(0, n);
      }
    } finally {
      await this.vfs.release(fh);
    }
  }

  async stat(rel: string): Promise<Present | undefined> {
    let st;
    try {
      st = this.vfs.getattr(this.at(rel));
    } catch (err) {
      if (err instanceof FsError && (err.errno === 'ENOENT' || err.errno === 'ENOTDIR')) return undefined;
      throw err;
    }
    const type = st.mode & S_IFMT;
    if (type === S_IFDIR) return { kind: 'dir', size: 0, mtimeMs: st.mtime };
    if (type === S_IFLNK) return { kind: 'symlink', size: 0, mtimeMs: st.mtime, target: this.vfs.readlink(this.at(rel)) };
    return { kind: 'file', size: type === S_IFREG ? st.size : -1, mtimeMs: st.mtime };
  }

  async mkdir(rel: string): Promise<void> {
    try {
      this.vfs.mkdir(this.at(rel), 0o700);
    } catch (err) {
      if (!(err instanceof FsError && err.errno === 'EEXIST')) throw err;
    }
  }

  async create(rel: string, mode: number | undefined): Promise<FileWriter> {
    const fh = this.vfs.create(this.at(rel), (mode ?? 0o644) | 0o200, O_RDWR);
    await this.vfs.ftruncate(fh, 0);
    return {
      write: async (data, pos) => {
        for (let done = 0; done < data.length;) done += await this.vfs.write(fh, data.subarray(done), pos + done);
      },
      finish: async (size) => {
        try {
          await this.vfs.ftruncate(fh, size);
          await this.vfs.flush(fh);
        } finally {
          await this.vfs.release(fh);
        }
      },
      abort: () => this.vfs.release(fh),
    };
  }

  async symlink(target: string, rel: string): Promise<void> {
    this.vfs.symlink(target, this.at(rel));
  }

  async remove(rel: string): Promise<void> {
    await this.vfs.unlink(this.at(rel));
  }

  async setAttrs(rel: string, mode: number | undefined, mtimeMs: number): Promise<void> {
    const p = this.at(rel);
    const st = this.vfs.getattr(p);
    if (mode !== undefined && (st.mode & S_IFMT) !== S_IFLNK) this.vfs.chmod(p, mode);
    this.vfs.utimens(p, TIME_OMIT, mtimeMs);
  }

  async close(): Promise<void> {}
}
