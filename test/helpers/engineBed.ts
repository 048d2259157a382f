/**
 * Test bed for the in-process engine suite (test/engine): real `Engine`s on an in-memory or
 * local-disk object store, driven through the interface the FUSE adapter uses
 * (`FuseFilesystem` of native/fuse/adapter.ts), with no kernel mount. What the kernel would do
 * around those calls (open with O_TRUNC is a truncate then an open, writes arrive in pieces of
 * at most 128 KiB, close is flush then release) is done here, in the helpers below.
 *
 * Only stable public surfaces are used: `createLocalMetadata`, `Engine.open`, `engine.vfs` as a
 * `FuseFilesystem`, `engine.sync`, `engine.stats`, `engine.close`, the filespace header
 * functions, `checkFilespace`, and the `ObjectStore` interface. A "machine" is a cache
 * directory; a second machine links the filespace from the bucket alone.
 *
 * Every helper is async and bounded: waits poll a condition with a deadline (`until`).
 */

import assert from 'node:assert/strict';
import { ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Engine, EngineOptions } from '../../electron/engine/engine';
import { createLocalMetadata } from '../../electron/engine/cacheFolder';
import { checkFilespace } from '../../electron/engine/check';
import { EngineSettings, resolveSettings } from '../../electron/engine/config';
import { createFilespace, FilespaceHeader, unlockFilespace } from '../../electron/engine/filespace';
import { Keys } from '../../electron/engine/chunk/crypto';
import { packIdOfKey, readPackIndex } from '../../electron/engine/chunk/packs';
import { MemoryStore } from '../../electron/engine/store/memory';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { ObjectStore, PutOptions } from '../../electron/engine/store/types';
import { errnoNumber, FuseFilesystem } from '../../native/fuse/adapter';
import { until } from './until';

export { until };

export const PASSPHRASE = 'correct horse battery staple';
/** The largest write or read the kernel sends with the adapter's mount options. */
export const FUSE_IO_BYTES = 128 * 1024;
export const KiB = 1024;
export const MiB = 1024 * 1024;

export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_APPEND = 0o2000;

/** A filespace in a bucket: the store plus what unlocking it with the passphrase gives. */
export interface Filespace {
  readonly store: ObjectStore;
  readonly header: FilespaceHeader;
  readonly keys: Keys;
  readonly chunkSize: number;
}

/** An upload delay longer than any test: chunks upload only when a test calls sync (or at pressure). */
export const UPLOAD_AT_SYNC_MS = 3_600_000;

/**
 * Settings for tests: no timer-driven GC, quick metadata pushes, and uploads only at `sync`,
 * so what a test reads or writes never meets an upload in flight unless the test asks for
 * that (uploadDelayMs: 0); the rest as shipped.
 */
export function testSettings(partial: Partial<EngineSettings> = {}): EngineSettings {
  return resolveSettings({
    cacheCapBytes: 64 * MiB,
    gcIntervalMs: 0,
    metaPushDelayMs: 50,
    uploadDelayMs: UPLOAD_AT_SYNC_MS,
    ...partial,
  });
}

/** One engine on one machine (cache directory), with the filesystem the FUSE adapter would mount. */
export interface Mounted {
  readonly engine: Engine;
  readonly fs: FuseFilesystem;
  readonly cacheDir: string;
  readonly space: Filespace;
  /** What the engine logged, oldest first. */
  readonly log: string[];
  /** Uploads everything (data and metadata); fails the test if that does not happen by the deadline. */
  sync(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export class EngineBed {
  private root = '';
  private readonly open = new Set<Mounted>();
  private readonly children = new Set<ChildProcess>();

  async start(): Promise<void> {
    this.root = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-engine-'));
  }

  /** Closes every engine still open, kills child engines, removes every temp directory. */
  async stop(): Promise<void> {
    for (const c of this.children) c.kill('SIGKILL');
    for (const m of [...this.open]) await m.close().catch(() => undefined);
    if (this.root) await fsp.rm(this.root, { recursive: true, force: true });
  }

  async dir(tag: string): Promise<string> {
    return fsp.mkdtemp(path.join(this.root, `${tag}-`));
  }

  /** Creates a filespace in a fresh in-memory bucket, or in `store` (e.g. a LocalDiskStore). */
  async filespace(opts: { chunkSize?: number; store?: ObjectStore } = {}): Promise<Filespace> {
    const store = opts.store ?? new MemoryStore();
    await createFilespace(store, PASSPHRASE, opts.chunkSize ?? 64 * KiB);
    const { header, keys } = await unlockFilespace(store, PASSPHRASE);
    return { store, header, keys, chunkSize: header.chunkSize };
  }

  /** A filespace in a local-disk bucket under this bed (shared with child processes by its path). */
  async diskFilespace(opts: { chunkSize?: number } = {}): Promise<Filespace & { storeDir: string }> {
    const storeDir = await this.dir('bucket');
    const space = await this.filespace({ ...opts, store: new LocalDiskStore(storeDir) });
    return { ...space, storeDir };
  }

  /** Links the filespace on a new machine (a fresh cache directory, from the bucket alone). */
  async link(space: Filespace, tag = 'machine'): Promise<string> {
    const cacheDir = await this.dir(tag);
    await createLocalMetadata(space.store, space.keys, space.header, cacheDir);
    return cacheDir;
  }

  /** Opens an engine on `cacheDir` (linked first if not given). */
  async mount(
    space: Filespace,
    opts: {
      cacheDir?: string;
      settings?: Partial<EngineSettings>;
      mode?: EngineOptions['mode'];
      store?: ObjectStore;
      browseKeepMs?: number;
      /**
       * Serve before every folder of a fresh machine is loaded from the bucket (callers load
       * the folders a path names with `vfs.whenPathLoaded`, as the low-level mount does per
       * request). Otherwise the mount waits for them, as the path-based adapter does.
       */
      lazy?: boolean;
    } = {},
  ): Promise<Mounted> {
    const cacheDir = opts.cacheDir ?? (await this.link(space));
    const log: string[] = [];
    const engine = await Engine.open({
      store: opts.store ?? space.store,
      keys: space.keys,
      header: space.header,
      cacheDir,
      settings: testSettings(opts.settings),
      mode: opts.mode,
      log: (m) => log.push(m),
      browseKeepMs: opts.browseKeepMs,
    });
    if (!opts.lazy) {
      try {
        await engine.whenFilled();
      } catch (err) {
        await engine.close();
        throw err;
      }
    }
    let closed: Promise<void> | undefined;
    const m: Mounted = {
      engine,
      cacheDir,
      space,
      log,
      // Typed as what the adapter mounts, so these tests only use what the kernel can reach.
      fs: engine.vfs satisfies FuseFilesystem,
      sync: async (timeoutMs = 60_000) => {
        const done = await engine.sync(Date.now() + timeoutMs);
        assert.equal(
          done,
          true,
          `sync did not finish within ${timeoutMs} ms: ${JSON.stringify(engine.stats())}\nlog:\n${log.slice(-10).join('\n')}`,
        );
      },
      close: () =>
        (closed ??= (async () => {
          this.open.delete(m);
          await engine.close();
        })()),
    };
    this.open.add(m);
    return m;
  }

  /** Starts a child process (test/helpers/engineChild.ts) that hosts an engine; killed at `stop`. */
  child(args: ChildArgs): ChildEngine {
    const proc = fork(path.join(__dirname, 'engineChild.js'), [JSON.stringify(args)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.children.add(proc);
    const exited = new Promise<void>((resolve) =>
      proc.once('exit', () => {
        this.children.delete(proc);
        resolve();
      }),
    );
    // Every message the child wrote before it died has been delivered once its channel closed.
    const disconnected = new Promise<void>((resolve) => proc.once('disconnect', resolve));
    const messages: ChildMessage[] = [];
    const waiters: Array<() => void> = [];
    proc.on('message', (msg) => {
      messages.push(msg as ChildMessage);
      for (const w of waiters.splice(0)) w();
    });
    return {
      pid: proc.pid!,
      messages,
      next: async (type, timeoutMs = 60_000) => {
        const deadline = Date.now() + timeoutMs;
        for (let seen = 0; ;) {
          const found = messages.slice(seen).find((m) => m.type === type || m.type === 'error');
          if (found?.type === 'error') throw new Error(`the child engine failed: ${found.message}`);
          if (found) return found;
          seen = messages.length;
          if (Date.now() > deadline || proc.exitCode !== null || proc.signalCode !== null) {
            throw new Error(`the child engine sent no "${type}" (exit ${proc.exitCode ?? proc.signalCode})`);
          }
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, Math.max(1, deadline - Date.now()));
            waiters.push(() => {
              clearTimeout(t);
              resolve();
            });
          });
        }
      },
      kill: async () => {
        proc.kill('SIGKILL');
        await Promise.all([exited, disconnected]);
      },
    };
  }
}

/** Workloads that push the cache against its cap; see engineChild.ts. */
export type CapWorkload = 'cap-stream' | 'cap-rewrite' | 'cap-read-while-dirty' | 'cap-parallel';

/** What a child engine runs; see engineChild.ts. */
export interface ChildArgs {
  readonly storeDir: string;
  readonly cacheDir: string;
  readonly settings: Partial<EngineSettings>;
  readonly script: 'fsync-then-scribble' | 'promise-stream' | CapWorkload;
  readonly seed: number;
}

export type ChildMessage =
  | { type: 'ready' }
  | { type: 'busy'; paths: string[] }
  | { type: 'uploading' }
  | { type: 'promised'; path: string; sha256: string | null; n: number }
  | { type: 'synced'; files: Record<string, string> }
  | { type: 'done'; usedBytes: number; capBytes: number }
  | { type: 'error'; message: string };

export interface ChildEngine {
  readonly pid: number;
  readonly messages: ChildMessage[];
  /** The first message of this type (an 'error' message fails instead). */
  next<T extends ChildMessage['type']>(type: T, timeoutMs?: number): Promise<ChildMessage>;
  /** SIGKILL, as a crash would stop it; resolves once the process is gone and all it sent has arrived. */
  kill(): Promise<void>;
}

// ---- what the kernel does around the filesystem calls --------------------------------------

/** The errno name the kernel would return for what `fn` threw (via the adapter's translation). */
export function errnoName(err: unknown): string {
  const n = -errnoNumber(err);
  const name = Object.entries(os.constants.errno).find(([, v]) => v === n)?.[0];
  return name ?? `errno ${n}`;
}

/** Runs `fn` and returns the errno name it failed with; fails the test if it succeeded. */
export async function failsWith(fn: () => unknown): Promise<string> {
  try {
    await fn();
  } catch (err) {
    return errnoName(err);
  }
  assert.fail('the operation succeeded, an error was expected');
}

/**
 * Writes in pieces of at most 128 KiB, as the kernel sends them; with `chunkSize`, pieces also
 * end at chunk boundaries (so no single call spans two chunks).
 */
export async function writeAt(fs: FuseFilesystem, fh: number, pos: number, data: Buffer, chunkSize?: number): Promise<void> {
  for (let done = 0; done < data.length;) {
    const at = pos + done;
    const toBoundary = chunkSize ? chunkSize - (at % chunkSize) : Infinity;
    const n = Math.min(FUSE_IO_BYTES, data.length - done, toBoundary);
    const wrote = await writeLikeAdapter(fs, fh, data.subarray(done, done + n), pos + done);
    assert.equal(wrote, n, 'a write is never short');
    done += n;
  }
}

/** One write request as the FUSE adapter sends it: `writeNow` when it takes the bytes at once, else `write`. */
export function writeLikeAdapter(fs: FuseFilesystem, fh: number, data: Buffer, pos: number): Promise<number> {
  const n = fs.writeNow?.(fh, data, pos);
  return n === undefined ? fs.write(fh, data, pos) : Promise.resolve(n);
}

export async function readAt(fs: FuseFilesystem, fh: number, pos: number, len: number): Promise<Buffer> {
  const out = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = Math.min(FUSE_IO_BYTES, len - got);
    const piece = Buffer.alloc(n);
    const r = await fs.read(fh, piece, n, pos + got);
    piece.copy(out, got, 0, r);
    got += r;
    if (r < n) break; // end of file
  }
  return out.subarray(0, got);
}

/** Opens (creating if missing, like open(O_CREAT)), runs `fn` with the handle, then closes. */
export async function withFile<T>(
  fs: FuseFilesystem,
  p: string,
  flags: number,
  fn: (fh: number) => Promise<T>,
  mode = 0o644,
): Promise<T> {
  let fh: number;
  try {
    fh = fs.open(p, flags);
  } catch (err) {
    if (errnoName(err) !== 'ENOENT' || (flags & 3) === O_RDONLY) throw err;
    fh = fs.create(p, mode);
  }
  try {
    return await fn(fh);
  } finally {
    await fs.flush(fh);
    await fs.release(fh);
  }
}

/** open(O_WRONLY|O_CREAT|O_TRUNC), write everything, optionally fsync, close. */
export async function writeFile(
  fs: FuseFilesystem,
  p: string,
  data: Buffer,
  opts: { fsync?: boolean; chunkSize?: number } = {},
): Promise<void> {
  let exists = true;
  try {
    fs.getattr(p);
  } catch {
    exists = false;
  }
  if (exists) await fs.truncate(p, 0);
  await withFile(fs, p, O_WRONLY, async (fh) => {
    await writeAt(fs, fh, 0, data, opts.chunkSize);
    if (opts.fsync) await fs.fsync(fh);
  });
}

/** Writes `data` at `pos` into an existing or new file (no truncation). */
export async function patchFile(
  fs: FuseFilesystem,
  p: string,
  pos: number,
  data: Buffer,
  opts: { fsync?: boolean; chunkSize?: number } = {},
): Promise<void> {
  await withFile(fs, p, O_WRONLY, async (fh) => {
    await writeAt(fs, fh, pos, data, opts.chunkSize);
    if (opts.fsync) await fs.fsync(fh);
  });
}

export async function readFile(fs: FuseFilesystem, p: string): Promise<Buffer> {
  return withFile(fs, p, O_RDONLY, async (fh) => readAt(fs, fh, 0, fs.getattr(p).size));
}

export async function readRange(fs: FuseFilesystem, p: string, pos: number, len: number): Promise<Buffer> {
  return withFile(fs, p, O_RDONLY, (fh) => readAt(fs, fh, pos, len));
}

/** Asserts that `p` holds exactly `expected`, whole and in ranges that straddle every chunk boundary. */
export async function expectContent(
  fs: FuseFilesystem,
  p: string,
  expected: Buffer,
  chunkSize: number,
  what: string,
): Promise<void> {
  assert.equal(fs.getattr(p).size, expected.length, `${what}: size of ${p}`);
  const got = await readFile(fs, p);
  const at = got.findIndex((v, i) => v !== expected[i]);
  assert.ok(
    got.length === expected.length && at < 0,
    `${what}: ${p} differs${at >= 0 ? ` first at byte ${at}` : ` in length (${got.length})`}`,
  );
  for (let b = chunkSize; b < expected.length; b += chunkSize) {
    const from = Math.max(0, b - 1000);
    const slice = await readRange(fs, p, from, 2000);
    assert.deepEqual(slice, expected.subarray(from, from + 2000), `${what}: ${p} around the chunk boundary at ${b}`);
  }
}

export function random(n: number): Buffer {
  return randomBytes(n);
}

// ---- the bucket ----------------------------------------------------------------------------

/** Objects under chunks/ in the bucket. */
/**
 * The chunks the bucket holds: the keys of chunk objects of their own (`chunks/…`) and, for each
 * member of a pack (chunk/packs.ts, read from the pack's index), `packs/…/<id>#<chunk name>`.
 */
export async function chunkObjects(store: ObjectStore, keys: Keys): Promise<string[]> {
  const out = await store.list('chunks/');
  for (const key of await store.list('packs/')) {
    const id = packIdOfKey(key);
    if (!id) continue;
    for (const e of (await readPackIndex(store, keys.chunkKey, id)) ?? []) out.push(`${key}#${e.name}`);
  }
  return out;
}

/**
 * An ObjectStore that runs the consistency checker on the bucket right after every metadata
 * write succeeds, so a metadata commit that names a chunk not yet in the bucket (a dangling
 * reference, DESIGN invariant 2) is caught at the moment it becomes visible.
 */
/** Reads `files` on a machine linked from the bucket alone (mounted read-only), then unmounts it. */
export async function expectOnFreshMachine(
  bed: EngineBed,
  space: Filespace,
  files: ReadonlyMap<string, Buffer>,
  chunkSize: number,
): Promise<void> {
  const other = await bed.mount(space, { mode: 'read' });
  try {
    for (const [p, data] of files) await expectContent(other.fs, p, data, chunkSize, 'on a machine linked from the bucket alone');
  } finally {
    await other.close();
  }
}

/** The problems `filespace check --deep` finds in `space`, with the local metadata and cache in `cacheDir`. */
export async function deepCheck(bed: EngineBed, space: Filespace, cacheDir: string): Promise<string[]> {
  const report = await checkFilespace({
    store: space.store,
    keys: space.keys,
    header: (await unlockFilespace(space.store, PASSPHRASE)).header,
    cacheDir,
    workDir: await bed.dir('check'),
    deep: true,
  });
  return report.problems;
}

export class CheckedStore implements ObjectStore {
  readonly description: string;
  readonly problems: string[] = [];
  metaWrites = 0;

  constructor(
    private readonly inner: ObjectStore,
    private readonly space: Filespace,
  ) {
    this.description = inner.description;
  }

  get(key: string, range?: { readonly start: number; readonly end: number }) {
    return this.inner.get(key, range);
  }

  head(key: string) {
    return this.inner.head(key);
  }

  async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const etag = await this.inner.put(key, body, options);
    if (key.startsWith('meta/')) {
      this.metaWrites++;
      const { header, keys } = this.space;
      const report = await checkFilespace({ store: this.inner, keys, header });
      for (const p of report.problems) this.problems.push(`after writing ${key}: ${p}`);
    }
    return etag;
  }

  delete(key: string) {
    return this.inner.delete(key);
  }

  deleteMany(keys: readonly string[]) {
    return this.inner.deleteMany(keys);
  }

  list(prefix: string) {
    return this.inner.list(prefix);
  }

  async close(): Promise<void> {}
}
