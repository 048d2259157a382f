/**
 * A local folder as either end of a copy. Names are read and written as bytes (util/names.ts),
 * so a name that is not UTF-8 is copied as it is. A source reports special files (FIFOs,
 * sockets, devices) and what it cannot read as skipped; files are read in 1 MiB pieces. As a
 * destination it writes sparse: pieces the copier leaves out are holes (ftruncate sets the
 * size), so a sparse file stays sparse.
 */

import { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import { nameFromBytes, nameToBytes } from '../util/names';
import { DestTree, Entry, FileWriter, Present, Skip, SourceTree, joinPath } from './tree';

const PIECE_BYTES = 1024 * 1024;

function errText(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code === 'EACCES' ? 'permission denied' : (e.code ?? e.message);
}

export class LocalTree implements SourceTree, DestTree {
  readonly description: string;
  readonly sparse = true;
  readonly symlinks = true;
  private readonly rootBytes: Buffer;

  constructor(root: string) {
    this.description = path.resolve(root);
    this.rootBytes = Buffer.from(this.description);
  }

  /** The local path of a relative path, as bytes. */
  private at(rel: string): Buffer {
    return rel === '' ? this.rootBytes : Buffer.concat([this.rootBytes, Buffer.from('/'), nameToBytes(rel)]);
  }

  async *walk(skip: (s: Skip) => void): AsyncIterable<Entry> {
    const stack: string[] = [''];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      let names: Buffer[];
      try {
        names = await fsp.readdir(this.at(dir), { encoding: 'buffer' });
      } catch (err) {
        skip({ path: dir, reason: 'unreadable', detail: `folder: ${errText(err)}` });
        continue;
      }
      names.sort((x, y) => Buffer.compare(x, y));
      const subdirs: string[] = [];
      for (const raw of names) {
        const rel = joinPath(dir, nameFromBytes(raw));
        const st = await fsp.lstat(this.at(rel)).catch(() => undefined);
        if (!st) continue; // gone meanwhile
        const base = { path: rel, size: 0, mtimeMs: st.mtimeMs, mode: st.mode & 0o7777 };
        if (st.isDirectory()) {
          yield { ...base, kind: 'dir' };
          subdirs.push(rel);
        } else if (st.isFile()) {
          yield { ...base, kind: 'file', size: st.size };
        } else if (st.isSymbolicLink()) {
          const target = await fsp.readlink(this.at(rel), { encoding: 'buffer' }).catch((err: unknown) => err);
          if (target instanceof Buffer) yield { ...base, kind: 'symlink', target: nameFromBytes(target) };
          else skip({ path: rel, reason: 'unreadable', detail: `symlink: ${errText(target)}` });
        } else {
          const what = st.isFIFO() ? 'FIFO' : st.isSocket() ? 'socket' : 'device';
          skip({ path: rel, reason: 'special file', detail: what });
        }
      }
      for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]!);
    }
  }

  async *read(rel: string): AsyncIterable<Buffer> {
    const fh = await fsp.open(this.at(rel), fsc.O_RDONLY | fsc.O_NOFOLLOW);
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(PIECE_BYTES);
        const { bytesRead } = await fh.read(buf, 0, PIECE_BYTES, null);
        if (bytesRead === 0) return;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  async stat(rel: string): Promise<Present | undefined> {
    const st = await fsp.lstat(this.at(rel)).catch(() => undefined);
    if (!st) return undefined;
    if (st.isDirectory()) return { kind: 'dir', size: 0, mtimeMs: st.mtimeMs };
    if (st.isSymbolicLink()) {
      const target = nameFromBytes(await fsp.readlink(this.at(rel), { encoding: 'buffer' }));
      return { kind: 'symlink', size: 0, mtimeMs: st.mtimeMs, target };
    }
    // Special files count as in the way: 'file' with an impossible size never matches.
    return { kind: 'file', size: st.isFile() ? st.size : -1, mtimeMs: st.mtimeMs };
  }

  async mkdir(rel: string): Promise<void> {
    await fsp.mkdir(this.at(rel), { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
  }

  async create(rel: string, mode: number | undefined): Promise<FileWriter> {
    const fh = await fsp.open(this.at(rel), fsc.O_WRONLY | fsc.O_CREAT | fsc.O_TRUNC | fsc.O_NOFOLLOW, (mode ?? 0o644) | 0o200);
    return {
      write: async (data, pos) => {
        await fh.write(data, 0, data.length, pos);
      },
      finish: async (size) => {
        await fh.truncate(size);
        await fh.close();
      },
      abort: () => fh.close(),
    };
  }

  async symlink(target: string, rel: string): Promise<void> {
    await fsp.symlink(nameToBytes(target), this.at(rel));
  }

  async remove(rel: string): Promise<void> {
    await fsp.rm(this.at(rel), { force: true });
  }

  async setAttrs(rel: string, mode: number | undefined, mtimeMs: number): Promise<void> {
    const p = this.at(rel);
    const st = await fsp.lstat(p);
    // Times travel as seconds in a double: x.271 s may land as x.270999 s. Half a millisecond
    // on top keeps the millisecond that the next run compares (copy.ts) whatever the rounding.
    const t = (Math.floor(mtimeMs) + 0.5) / 1000;
    if (st.isSymbolicLink()) {
      await fsp.lutimes(p, t, t);
      return;
    }
    if (mode !== undefined) await fsp.chmod(p, mode);
    await fsp.utimes(p, t, t);
  }

  async close(): Promise<void> {}
}
