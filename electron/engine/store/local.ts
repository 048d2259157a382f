/**
 * LocalDiskStore: an embedded object store that keeps each object as a file under a root
 * directory. It lets the demo and offline tests run the real engine without S3.
 *
 * Owns: mapping keys to files (`a/b/c` -> `<root>/a/b/c`, with unsafe keys refused), durable
 * atomic writes (temp file in `<root>/.tmp`, fsync, rename, fsync of the directory), ETags
 * (a content hash, cached per file version so HEAD does not re-read large files) and the
 * conditional-write guarantee S3 gives: a per-key lock, held across "check the current ETag,
 * then rename the new file into place", that excludes writers in this process (a keyed mutex)
 * and in other processes (an O_EXCL lock file under `<root>/.locks`, broken when its holder
 * died or after it went stale). All I/O is asynchronous.
 *
 * Limitation compared with S3: a key cannot also be a "folder" of other keys (`a` and `a/b`
 * cannot both exist, since `a` would have to be a file and a directory); such a put fails.
 */

import { createHash, randomUUID } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rmdir, stat, unlink, link, type FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { KeyedMutex } from '../util/concurrency';
import { fsyncDir } from '../util/files';
import { processAlive } from '../util/process';
import { GetResult, HeadResult, ObjectStore, PutOptions, StoreError } from './types';

const TMP_DIR = '.tmp';
const LOCK_DIR = '.locks';
const RESERVED = new Set([TMP_DIR, LOCK_DIR]);
const HASH_CHUNK = 1 << 20;
const ETAG_CACHE_MAX = 4096;
const DIRS_REMEMBERED = 4096;
/** Leftover temp files older than this are from crashed writers and are removed on open. */
const TMP_MAX_AGE_MS = 60 * 60 * 1000;

export interface LocalDiskStoreOptions {
  /** A lock file older than this is considered abandoned and broken. */
  readonly staleLockMs?: number;
  /** Give up waiting for a key's lock after this long. */
  readonly lockTimeoutMs?: number;
}

interface CachedEtag {
  readonly stamp: string;
  readonly etag: string;
}

export class LocalDiskStore implements ObjectStore {
  readonly description: string;
  private readonly root: string;
  private readonly mutex = new KeyedMutex<string>();
  private readonly etags = new Map<string, CachedEtag>();
  /**
   * Directories a put renamed a file into: the next put into one skips its mkdir. One removed
   * since (a delete here prunes empty directories and forgets them; another process's prune
   * does not) fails the rename with ENOENT, which forgets it and makes it again.
   */
  private readonly dirsMade = new Set<string>();
  private readonly staleLockMs: number;
  private readonly lockTimeoutMs: number;
  private ready: Promise<void> | undefined;

  constructor(root: string, options: LocalDiskStoreOptions = {}) {
    this.root = path.resolve(root);
    this.description = `local:${this.root}`;
    this.staleLockMs = options.staleLockMs ?? 30_000;
    this.lockTimeoutMs = options.lockTimeoutMs ?? 60_000;
  }

  async get(key: string, range?: { readonly start: number; readonly end: number }): Promise<GetResult | undefined> {
    const file = this.fileFor(key);
    if (range) checkRange(range);
    const fh = await openForRead(file, key);
    if (!fh) return undefined;
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) return undefined;
      const size = Number(st.size);
      if (!range) {
        const body = await fh.readFile();
        const etag = hashEtag(body);
        this.rememberEtag(file, stampOf(st), etag);
        return { body, etag };
      }
      const etag = await this.etagOf(file, fh, st);
      const start = Math.min(range.start, size);
      const end = Math.min(range.end + 1, size);
      const body = Buffer.alloc(end - start);
      await readFully(fh, body, start);
      return { body, etag };
    } catch (err) {
      throw fsError(err, 'read', key);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async head(key: string): Promise<HeadResult | undefined> {
    const file = this.fileFor(key);
    const fh = await openForRead(file, key);
    if (!fh) return undefined;
    try {
      const st = await fh.stat({ bigint: true });
      if (!st.isFile()) return undefined;
      return { size: Number(st.size), etag: await this.etagOf(file, fh, st) };
    } catch (err) {
      throw fsError(err, 'read', key);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const file = this.fileFor(key);
    await this.init();
    const conditional = options?.ifNoneMatch === '*' || options?.ifMatch !== undefined;
    return this.withKeyLock(key, conditional, async () => {
      if (conditional) {
        const current = await this.head(key);
        if (options.ifNoneMatch === '*' && current) {
          throw new StoreError('PreconditionFailed', `conditional write to ${key} failed: the object already exists`);
        }
        if (options.ifMatch !== undefined && current?.etag !== options.ifMatch) {
          throw new StoreError(
            'PreconditionFailed',
            `conditional write to ${key} failed: ${current ? 'the object changed' : 'the object does not exist'}`,
          );
        }
      }
      const tmp = path.join(this.root, TMP_DIR, `${randomUUID()}.part`);
      try {
        const fh = await open(tmp, 'wx', 0o600);
        try {
          await fh.writeFile(body);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await this.renameIntoPlace(tmp, file, key);
      } catch (err) {
        await unlink(tmp).catch(() => undefined);
        throw fsError(err, 'write', key);
      }
      const etag = hashEtag(body);
      try {
        const st = await stat(file, { bigint: true });
        this.rememberEtag(file, stampOf(st), etag);
      } catch {
        // Only a cache; a concurrent delete from another process is fine.
      }
      return etag;
    });
  }

  async delete(key: string): Promise<void> {
    const file = this.fileFor(key);
    await this.init();
    await this.withKeyLock(key, true, async () => {
      try {
        await unlink(file);
      } catch (err) {
        const code = errCode(err);
        if (code === 'ENOENT' || code === 'ENOTDIR') return;
        if (code === 'EISDIR' || code === 'EPERM') {
          // A directory of other keys, not an object: nothing to delete (S3 semantics).
          const st = await stat(file).catch(() => undefined);
          if (st?.isDirectory()) return;
        }
        throw fsError(err, 'delete', key);
      }
      this.etags.delete(file);
      await fsyncDir(path.dirname(file), { lenient: true });
      await this.pruneEmptyDirs(path.dirname(file));
    });
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) this.fileFor(k); // validate all before deleting any
    const unique = [...new Set(keys)];
    let next = 0;
    const worker = async () => {
      while (next < unique.length) await this.delete(unique[next++]!);
    };
    await Promise.all(Array.from({ length: Math.min(16, unique.length) }, worker));
  }

  async list(prefix: string): Promise<string[]> {
    if (prefix.includes('\0')) throw new StoreError('Other', 'list prefix contains NUL');
    const slash = prefix.lastIndexOf('/');
    const dirPart = slash >= 0 ? prefix.slice(0, slash) : '';
    let startDir = this.root;
    let startRel = '';
    if (dirPart) {
      const segs = dirPart.split('/');
      // No stored key has such a segment, so nothing can match.
      if (segs.some((s) => s === '' || s === '.' || s === '..')) return [];
      if (RESERVED.has(segs[0]!)) return [];
      startDir = path.join(this.root, ...segs);
      startRel = `${dirPart}/`;
    }
    const out: string[] = [];
    await this.walk(startDir, startRel, prefix, out);
    return out.sort();
  }

  async close(): Promise<void> {
    this.etags.clear();
  }

  // -------------------------------------------------------------------------------------------

  /** Validates a key and maps it to its file. Throws StoreError('Other') for unsafe keys. */
  private fileFor(key: string): string {
    if (typeof key !== 'string' || key.length === 0) throw new StoreError('Other', 'object key is empty');
    if (key.includes('\0')) throw new StoreError('Other', 'object key contains NUL');
    const segs = key.split('/');
    for (const s of segs) {
      if (s === '' || s === '.' || s === '..') {
        throw new StoreError('Other', `invalid object key ${JSON.stringify(key)}: empty, '.' or '..' segment`);
      }
    }
    if (RESERVED.has(segs[0]!)) throw new StoreError('Other', `invalid object key ${JSON.stringify(key)}: reserved name`);
    return path.join(this.root, ...segs);
  }

  private init(): Promise<void> {
    this.ready ??= (async () => {
      try {
        await mkdir(path.join(this.root, TMP_DIR), { recursive: true });
        await mkdir(path.join(this.root, LOCK_DIR), { recursive: true });
      } catch (err) {
        this.ready = undefined;
        throw fsError(err, 'open', this.root);
      }
      await this.sweepTmp();
    })();
    return this.ready;
  }

  private async sweepTmp(): Promise<void> {
    const dir = path.join(this.root, TMP_DIR);
    const names = await readdir(dir).catch(() => [] as string[]);
    const now = Date.now();
    for (const n of names) {
      const p = path.join(dir, n);
      const st = await stat(p).catch(() => undefined);
      if (st && now - st.mtimeMs > TMP_MAX_AGE_MS) await unlink(p).catch(() => undefined);
    }
  }

  private async renameIntoPlace(tmp: string, file: string, key: string): Promise<void> {
    const dir = path.dirname(file);
    // A concurrent delete may prune a directory between our mkdir and rename: retry.
    for (let attempt = 0; ; attempt++) {
      const created = this.dirsMade.has(dir)
        ? undefined
        : await mkdir(dir, { recursive: true }).catch((err: unknown) => {
            if (errCode(err) === 'EEXIST' || errCode(err) === 'ENOTDIR') throw conflict(key);
            throw err;
          });
      if (created !== undefined) {
        // Make the new directories themselves durable, from the top one down.
        let d = created;
        const chain = [path.dirname(created)];
        while (d !== dir) {
          chain.push(d);
          d = path.join(d, path.relative(d, dir).split(path.sep)[0]!);
        }
        for (const c of chain) await fsyncDir(c, { lenient: true });
      }
      try {
        await rename(tmp, file);
        this.rememberDir(dir);
        break;
      } catch (err) {
        const code = errCode(err);
        this.dirsMade.delete(dir);
        if (code === 'ENOENT' && attempt < 10) continue;
        if (code === 'EISDIR' || code === 'ENOTDIR' || code === 'ENOTEMPTY' || code === 'EEXIST') throw conflict(key);
        throw err;
      }
    }
    await fsyncDir(dir, { lenient: true });
  }

  /** Notes that `dir` was there at a rename into it (see `dirsMade`). */
  private rememberDir(dir: string): void {
    if (this.dirsMade.size >= DIRS_REMEMBERED) this.dirsMade.clear();
    this.dirsMade.add(dir);
  }

  private async pruneEmptyDirs(dir: string): Promise<void> {
    while (dir !== this.root && dir.startsWith(this.root + path.sep)) {
      this.dirsMade.delete(dir);
      try {
        await rmdir(dir);
      } catch {
        return; // not empty, already gone, or busy: stop
      }
      dir = path.dirname(dir);
    }
  }

  private async walk(dir: string, rel: string, prefix: string, out: string[]): Promise<void> {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      const code = errCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw fsError(err, 'list', rel || '/');
    }
    for (const ent of entries) {
      const name = rel + ent.name;
      if (rel === '' && RESERVED.has(ent.name)) continue;
      if (ent.isDirectory()) {
        const asDir = `${name}/`;
        if (asDir.startsWith(prefix) || prefix.startsWith(asDir)) {
          await this.walk(path.join(dir, ent.name), asDir, prefix, out);
        }
      } else if (ent.isFile() && name.startsWith(prefix)) {
        out.push(name);
      }
    }
  }

  private async etagOf(file: string, fh: FileHandle, st: BigIntStatsLike): Promise<string> {
    const stamp = stampOf(st);
    const cached = this.etags.get(file);
    if (cached && cached.stamp === stamp) return cached.etag;
    const hash = createHash('sha256');
    const buf = Buffer.allocUnsafe(HASH_CHUNK);
    let pos = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      if (bytesRead === 0) break;
      hash.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    const etag = hash.digest('hex').slice(0, 32);
    this.rememberEtag(file, stamp, etag);
    return etag;
  }

  private rememberEtag(file: string, stamp: string, etag: string): void {
    this.etags.delete(file);
    this.etags.set(file, { stamp, etag });
    if (this.etags.size > ETAG_CACHE_MAX) {
      const oldest = this.etags.keys().next().value;
      if (oldest !== undefined) this.etags.delete(oldest);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Locking

  /**
   * Runs `fn` holding `key`'s lock in this process and, when `acrossProcesses`, its lock file.
   * An unconditional put needs only the first: its rename is atomic by itself, and what the
   * lock file would add is an order against another process's conditional write to the same
   * key, between that write's check and its rename. The engine writes each key either always
   * conditionally (the header, the lease, metadata) or never (chunks, which are named by their
   * content), so a chunk's put skips the lock file's five file operations.
   */
  private withKeyLock<T>(key: string, acrossProcesses: boolean, fn: () => Promise<T>): Promise<T> {
    if (!acrossProcesses) return this.mutex.run(key, fn);
    return this.mutex.run(key, async () => {
      const release = await this.acquireFileLock(key);
      try {
        return await fn();
      } finally {
        await release();
      }
    });
  }

  private async acquireFileLock(key: string): Promise<() => Promise<void>> {
    const lockPath = path.join(this.root, LOCK_DIR, `${createHash('sha256').update(key).digest('hex').slice(0, 40)}.lock`);
    const token = `${process.pid} ${os.hostname()} ${randomUUID()}`;
    const deadline = Date.now() + this.lockTimeoutMs;
    for (let attempt = 0; ; attempt++) {
      try {
        const fh = await open(lockPath, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
        try {
          await fh.writeFile(token);
        } finally {
          await fh.close();
        }
        return async () => {
          // Remove only our own lock: if it was broken as stale, someone else may hold it now.
          const content = await readFile(lockPath, 'utf8').catch(() => undefined);
          if (content === token) await unlink(lockPath).catch(() => undefined);
        };
      } catch (err) {
        const code = errCode(err);
        if (code === 'ENOENT') {
          await mkdir(path.dirname(lockPath), { recursive: true }).catch(() => undefined);
          continue;
        }
        if (code !== 'EEXIST') throw fsError(err, 'lock', key);
      }
      if (await this.breakIfAbandoned(lockPath)) continue;
      if (Date.now() > deadline) {
        throw new StoreError('Timeout', `timed out waiting for the lock on ${key} in ${this.root}`);
      }
      const ceiling = Math.min(50, 1 << Math.min(attempt, 6));
      await new Promise((r) => setTimeout(r, 1 + Math.random() * ceiling));
    }
  }

  /**
   * Removes a lock whose holder is dead (same host, process gone) or that is older than the
   * stale limit. The lock is first renamed aside and checked to be the very file judged
   * abandoned, so two processes breaking the same lock cannot remove a fresh one.
   */
  private async breakIfAbandoned(lockPath: string): Promise<boolean> {
    let st;
    let content: string;
    try {
      st = await stat(lockPath);
      content = await readFile(lockPath, 'utf8');
    } catch (err) {
      return errCode(err) === 'ENOENT'; // vanished: retry at once; otherwise wait and retry
    }
    const [pidText, host] = content.split(' ');
    const pid = Number(pidText);
    const holderDead = host === os.hostname() && Number.isInteger(pid) && pid > 0 && !processAlive(pid);
    const stale = Date.now() - st.mtimeMs > this.staleLockMs;
    if (!holderDead && !stale) return false;
    const aside = `${lockPath}.${randomUUID()}.broken`;
    try {
      await rename(lockPath, aside);
    } catch {
      return true; // someone else broke or released it
    }
    const moved = await stat(aside).catch(() => undefined);
    if (moved && moved.ino !== st.ino) {
      // We took a fresh lock another process had just created: put it back if still free.
      await link(aside, lockPath).catch(() => undefined);
    }
    await unlink(aside).catch(() => undefined);
    return true;
  }
}

// ---------------------------------------------------------------------------------------------

type BigIntStatsLike = { dev: bigint; ino: bigint; size: bigint; mtimeNs: bigint; ctimeNs: bigint };

/** Identifies one version of a file: writes always rename a new inode into place. */
function stampOf(st: BigIntStatsLike): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

function hashEtag(body: Buffer): string {
  return createHash('sha256').update(body).digest('hex').slice(0, 32);
}

async function openForRead(file: string, key: string): Promise<FileHandle | undefined> {
  try {
    return await open(file, 'r');
  } catch (err) {
    const code = errCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return undefined;
    throw fsError(err, 'read', key);
  }
}

async function readFully(fh: FileHandle, buf: Buffer, position: number): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, position + off);
    if (bytesRead === 0) throw new StoreError('Corrupt', 'object file ended early');
    off += bytesRead;
  }
}

function checkRange(range: { readonly start: number; readonly end: number }): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new StoreError('Other', `invalid byte range ${start}-${end}`);
  }
}

function conflict(key: string): StoreError {
  return new StoreError('Other', `cannot store ${key}: a key and a key "folder" of the same name cannot coexist`);
}

function errCode(err: unknown): string | undefined {
  const c = (err as { code?: unknown } | null)?.code;
  return typeof c === 'string' ? c : undefined;
}

function fsError(err: unknown, op: string, key: string): StoreError {
  if (err instanceof StoreError) return err;
  const code = errCode(err) ?? 'EIO';
  if (code === 'EACCES' || code === 'EPERM') {
    return new StoreError('AccessDenied', `local store: permission denied to ${op} ${key} (${code})`);
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new StoreError('Other', `local store: disk full while trying to ${op} ${key} (${code})`);
  }
  return new StoreError('Other', `local store: cannot ${op} ${key} (${code})`);
}
