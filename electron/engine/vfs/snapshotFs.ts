/**
 * A read-only filesystem over one snapshot's tree (meta/snapshots.ts), for a mount adapter to
 * serve beside the live mount: every lookup, listing, attribute, link target and extended
 * attribute comes from the snapshot's tree, and file data from the chunks it names, through
 * this machine's clean cache and downloads (the same cache and fetcher as the live mount).
 * Every change is refused with EROFS. Restoring is copying out of it.
 *
 * It owns its open handles (handle -> inode) and the chunk names of the files they read, which
 * the live mount keeps in the clean cache while they are open (`reading`): otherwise its sweep
 * of chunks the live tree no longer names would drop them between two reads of one chunk.
 * The tree never changes.
 */

import { ChunkCache } from '../cache/chunkCache';
import { FsError } from '../errors';
import { Inode, ROOT_INO, Tree } from '../meta/tree';
import { ChunkFetcher } from '../prefetch/fetcher';
import { nameBytes } from '../util/names';
import { NAME_MAX, UNKEPT_XATTR, type Stat, TYPE_BITS, statfsReply } from './vfs';

const O_ACCMODE = 3;

function refused(): FsError {
  return new FsError('EROFS', 'a snapshot is read-only; copy files out of it to restore them');
}

function readOnly(): never {
  throw refused();
}

export class SnapshotFs {
  private readonly handles = new Map<number, number>();
  /** Chunk names of the files open here, counted per open handle. */
  private readonly openChunks = new Map<string, number>();
  private nextFh = 1;

  constructor(
    private readonly tree: Tree,
    private readonly cache: ChunkCache,
    private readonly fetcher: ChunkFetcher,
  ) {}

  private resolve(path: string): Inode {
    let cur = this.tree.get(ROOT_INO)!;
    for (const name of path.split('/')) {
      if (name === '') continue;
      if (cur.kind !== 'dir') throw new FsError('ENOTDIR');
      if (nameBytes(name) > NAME_MAX) throw new FsError('ENAMETOOLONG');
      const next = this.tree.lookup(cur.ino, name);
      if (!next) throw new FsError('ENOENT');
      cur = next;
    }
    return cur;
  }

  private statOf(inode: Inode): Stat {
    let links: number;
    if (inode.kind === 'dir') {
      links = 2;
      for (const ino of inode.entries?.values() ?? []) if (this.tree.record(ino)?.kind === 'dir') links++;
    } else {
      links = Tree.namesOf(inode);
    }
    let stored = 0;
    for (const c of inode.chunks ?? []) if (c) stored += c[1];
    return {
      ino: inode.ino,
      mode: TYPE_BITS[inode.kind] | inode.mode,
      rdev: inode.rdev ?? 0,
      uid: inode.uid,
      gid: inode.gid,
      size: inode.kind === 'dir' ? 4096 : inode.size,
      nlink: links,
      atime: inode.atimeMs,
      mtime: inode.mtimeMs,
      ctime: inode.ctimeMs,
      blksize: 4096,
      blocks: inode.kind === 'dir' ? 8 : (Math.ceil(Math.min(stored, inode.size) / 4096) * 4096) / 512,
    };
  }

  getattr(path: string): Stat {
    return this.statOf(this.resolve(path));
  }

  fgetattr(fh: number): Stat {
    const inode = this.tree.get(this.handle(fh));
    if (!inode) throw new FsError('EBADF');
    return this.statOf(inode);
  }

  readdir(path: string): string[] {
    const inode = this.resolve(path);
    if (inode.kind !== 'dir') throw new FsError('ENOTDIR');
    return ['.', '..', ...inode.entries!.keys()];
  }

  readlink(path: string): string {
    const inode = this.resolve(path);
    if (inode.kind !== 'symlink') throw new FsError('EINVAL');
    return inode.target ?? '';
  }

  open(path: string, flags: number): number {
    const inode = this.resolve(path);
    if ((flags & O_ACCMODE) !== 0) readOnly();
    if (inode.kind !== 'file' && inode.kind !== 'dir') throw new FsError('ENXIO');
    const fh = this.nextFh++;
    this.handles.set(fh, inode.ino);
    for (const c of inode.chunks ?? []) if (c) this.openChunks.set(c[0], (this.openChunks.get(c[0]) ?? 0) + 1);
    return fh;
  }

  /** Whether a file open here names chunk `name`. */
  reading(name: string): boolean {
    return this.openChunks.has(name);
  }

  /** The snapshot never changes: the kernel may keep what it cached of it. */
  keepCache(): boolean {
    return true;
  }

  private handle(fh: number): number {
    const ino = this.handles.get(fh);
    if (ino === undefined) throw new FsError('EBADF');
    return ino;
  }

  async read(fh: number, buf: Buffer, len: number, pos: number): Promise<number> {
    const inode = this.tree.get(this.handle(fh));
    if (!inode || inode.kind !== 'file') throw new FsError('EISDIR');
    const end = Math.min(inode.size, pos + len);
    const cs = this.tree.chunkSize;
    let done = 0;
    for (let at = pos; at < end;) {
      const idx = Math.floor(at / cs);
      const inChunk = at - idx * cs;
      const n = Math.min(end - at, cs - inChunk);
      const ref = inode.chunks?.[idx] ?? null;
      const valid = ref ? Math.max(0, Math.min(n, ref[1] - inChunk)) : 0;
      if (ref && valid > 0) {
        // Read ahead the next chunk of this file while this one is served.
        const next = inode.chunks?.[idx + 1];
        if (next) this.fetcher.prefetch(next[0]);
        let got = await this.cache.read(ref[0], buf, done, valid, inChunk);
        if (got === undefined) {
          const data = await this.fetcher.fetch(ref[0]);
          got = Math.max(0, Math.min(valid, data.length - inChunk));
          data.copy(buf, done, inChunk, inChunk + got);
        }
        if (got < valid) throw new FsError('EIO', `chunk ${ref[0]} is shorter than its reference`);
      }
      if (valid < n) buf.fill(0, done + valid, done + n);
      done += n;
      at += n;
    }
    return done;
  }

  release(fh: number): Promise<void> {
    const inode = this.tree.get(this.handles.get(fh) ?? 0);
    this.handles.delete(fh);
    for (const c of inode?.chunks ?? []) {
      if (!c) continue;
      const n = (this.openChunks.get(c[0]) ?? 1) - 1;
      if (n <= 0) this.openChunks.delete(c[0]);
      else this.openChunks.set(c[0], n);
    }
    return Promise.resolve();
  }

  flush(): Promise<void> {
    return Promise.resolve();
  }

  fsync(): Promise<void> {
    return Promise.resolve();
  }

  fsyncAll(): Promise<void> {
    return Promise.resolve();
  }

  statfs(): Record<string, number> {
    let used = 0;
    for (const inode of this.tree.inodes.values()) for (const c of inode.chunks ?? []) if (c) used += c[1];
    return statfsReply(used, this.tree.inodes.size, true);
  }

  getxattr(path: string, name: string): Buffer {
    if (UNKEPT_XATTR.test(name)) throw new FsError('ENOTSUP');
    const v = this.resolve(path).xattrs?.[name];
    if (v === undefined) throw new FsError('ENODATA');
    return Buffer.from(v, 'base64');
  }

  listxattr(path: string): string[] {
    return Object.keys(this.resolve(path).xattrs ?? {}).filter((n) => !UNKEPT_XATTR.test(n));
  }

  create(): number {
    return readOnly();
  }
  write(): Promise<number> {
    return Promise.reject(refused());
  }
  truncate(): Promise<void> {
    return Promise.reject(refused());
  }
  ftruncate(): Promise<void> {
    return Promise.reject(refused());
  }
  unlink(): Promise<void> {
    return Promise.reject(refused());
  }
  mkdir(): void {
    readOnly();
  }
  mknod(): void {
    readOnly();
  }
  rmdir(): void {
    readOnly();
  }
  rename(): Promise<void> {
    return Promise.reject(refused());
  }
  symlink(): void {
    readOnly();
  }
  link(): Promise<void> {
    return Promise.reject(refused());
  }
  chmod(): void {
    readOnly();
  }
  chown(): void {
    readOnly();
  }
  utimens(): void {
    readOnly();
  }
  setxattr(): void {
    readOnly();
  }
  removexattr(): void {
    readOnly();
  }
}
