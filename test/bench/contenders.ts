/**
 * The filesystems the benchmark puts side by side, behind one interface, so that every
 * workload runs the same way on each: Filespace (the product, through the real `filespace`
 * command and daemon), rclone (`rclone mount --vfs-cache-mode full`), s3fs (with its disk
 * cache, `use_cache`), a plain local directory (the physical ceiling), and the do-nothing
 * fuse-native filesystem (nullfs.ts, the FUSE ceiling, which has no durability or cold state).
 *
 * Each S3 contender mounts its own empty bucket on the run's one S3 server. What "durable"
 * means is each contender's own promise, checked the way its users would:
 *   - Filespace: `filespace sync` returns once every local change is in the bucket;
 *   - rclone: its write-back queue is empty and stays so for a second (remote control
 *     `vfs/stats`: nothing queued, nothing uploading);
 *   - s3fs: uploads a file when it is closed (and sends attribute changes at once), so a
 *     write is durable when close returns;
 *   - local directory: `sync -f` has written the filesystem's dirty pages to the disk.
 * A cold mount is a new mount with an empty cache on the same data: a freshly linked machine
 * for Filespace (read-only), a new process with a new cache directory for rclone and s3fs;
 * for the local directory, the kernel's page cache is dropped.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, CLI, type Machine } from '../helpers/bed';
import { freePort, s3StoreFor } from '../helpers/moto';
import {
  abortMount,
  alive,
  checkAbort,
  childExited,
  ensureUnmounted,
  exec,
  type ExecResult,
  mountDevice,
  must,
  onTeardown,
  probe,
  nowSeconds,
  sleep,
  startDaemon,
  stopProcess,
  waitMounted,
} from './proc';
import type { BenchServer } from './server';

export type ContenderKey = 'filespace' | 'rclone' | 's3fs' | 'local';

export interface Mounted {
  /** Where the workloads run. */
  readonly dir: string;
  /** The process serving the mount, whose CPU and memory are the contender's (none for the local directory). */
  readonly pid: number | undefined;
  unmount(): Promise<void>;
}

export interface Contender {
  readonly key: ContenderKey;
  readonly label: string;
  /** How it was set up, one line for the report. */
  readonly setup: string;
  /** Mounts the contender for writing, on its own empty bucket. */
  mount(): Promise<Mounted>;
  /**
   * Waits until everything written through the writing mount is durable (see the module
   * header); resolves to when it became so (nowSeconds()), if that was before it returned.
   */
  durable(timeoutMs: number): Promise<number | void>;
  /** Size of a file as one object in the bucket (rclone, s3fs), to check durability; undefined where files are not objects. */
  objectSize?(name: string): Promise<number | undefined>;
  /** Readies the next cold mount; says what it did. */
  prepareCold(): Promise<string>;
  /** A new mount with an empty cache on the data written before (the writing mount is down by then). */
  mountCold(tag: string): Promise<Mounted>;
  /** Frees the contender's disk space (caches, its bucket) at the end of its turn. */
  dispose(): Promise<void>;
}

export interface Context {
  readonly work: string;
  readonly server: BenchServer;
  readonly bed: Bed;
  readonly chunkSize: string;
  readonly cacheBytes: number;
  readonly cacheSize: string;
  readonly uploadDelayMs: number;
}

const isRoot = process.getuid?.() === 0;

/** The environment for the peers: AWS_CA_BUNDLE makes rclone fail ("unable to load custom CA bundle") and the server is plain http. */
function peerEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.AWS_CA_BUNDLE;
  return env;
}

/**
 * Reads a bucket's big object files (the big file's, or its chunks) into the page cache, so a
 * cold mount meets the same warm server as the raw GET ceiling did.
 */
async function warmBucket(server: BenchServer, bucket: string): Promise<string> {
  const dir = server.bucketDir(bucket);
  if (!dir) return 'the server keeps objects in its own memory/temp files';
  must(
    await exec('bash', ['-c', 'find "$1" -type f -size +1024k -exec cat {} + > /dev/null', 'bash', dir], { timeoutMs: 300_000 }),
    'reading the bucket into the page cache',
  );
  return "the server's object files of 1 MiB and more were read into the page cache first";
}

// ---- Filespace ------------------------------------------------------------------------------

/** One linked filespace on one simulated machine, driven through the `filespace` command. */
export class Space {
  pid: number | undefined;
  mounted = false;
  private dropTeardown: (() => void) | undefined;

  constructor(
    readonly machine: Machine,
    readonly name: string,
    readonly mnt: string,
  ) {}

  cli(args: string[], timeoutMs: number): Promise<ExecResult> {
    return exec(process.execPath, [CLI, ...args], { env: this.machine.env, timeoutMs });
  }

  async mount(readOnly = false): Promise<number> {
    checkAbort();
    this.dropTeardown = onTeardown(`filespace ${this.name}`, (hard) => this.forceDown(hard));
    must(await this.cli(['mount', this.name, ...(readOnly ? ['--read-only'] : [])], 150_000), 'filespace mount');
    this.mounted = true;
    this.pid = Number((await this.status()).pid);
    if (!(this.pid > 0)) throw new Error('filespace status reported no engine pid');
    return this.pid;
  }

  async status(): Promise<Record<string, unknown>> {
    return JSON.parse(must(await this.cli(['status', this.name, '--json'], 20_000), 'filespace status').stdout) as Record<
      string,
      unknown
    >;
  }

  /** `filespace sync` until everything is uploaded. */
  async sync(timeoutMs: number): Promise<void> {
    const secs = Math.ceil(timeoutMs / 1000);
    must(await this.cli(['sync', this.name, '--timeout', `${secs}s`], timeoutMs + 30_000), 'filespace sync');
  }

  async unmount(): Promise<void> {
    must(await this.cli(['unmount', this.name], 150_000), 'filespace unmount');
    this.mounted = false;
    this.dropTeardown?.();
  }

  /** Whether pid is still this space's engine (not a later process that reused the number). */
  private async ownsEngine(): Promise<boolean> {
    if (!this.pid || !alive(this.pid)) return false;
    const cmd = (await fsp.readFile(`/proc/${this.pid}/cmdline`, 'utf8').catch(() => '')).split('\0');
    return cmd.includes('mount') && cmd.includes(this.name);
  }

  get logFile(): string {
    return path.join(this.machine.home, 'run', `${this.name}.log`);
  }

  /** Unmounts by any means (used on the way out). */
  async forceDown(hard: boolean): Promise<void> {
    if (this.mounted && !hard) await this.cli(['unmount', this.name, '--force'], 60_000);
    if (await mountDevice(this.mnt)) await abortMount(this.mnt);
    if (await this.ownsEngine()) await stopProcess(this.pid!, 10_000);
    this.mounted = false;
  }
}

export class FilespaceContender implements Contender {
  readonly key = 'filespace';
  readonly label = 'Filespace';
  readonly setup: string;
  writer: Space | undefined;
  /** Every machine's space, for log tails when something failed. */
  readonly spaces: Space[] = [];
  private bucket = '';
  private prefix = '';

  constructor(
    private readonly ctx: Context,
    engineDefaults: string,
  ) {
    this.setup = `\`filespace init --chunk-size ${ctx.chunkSize}\`, \`link --cache-size ${ctx.cacheSize}\`, \`mount\`; engine defaults: ${engineDefaults}`;
  }

  async mount(): Promise<Mounted> {
    checkAbort();
    const bucket = await this.ctx.server.newBucket('filespace');
    const created = await this.ctx.bed.filespace({ bucket, chunkSize: this.ctx.chunkSize, cacheSize: this.ctx.cacheSize });
    this.bucket = created.bucket;
    this.prefix = created.prefix;
    const space = new Space(created.machine, created.name, created.mnt);
    this.spaces.push(space);
    await space.mount();
    this.writer = space;
    return { dir: space.mnt, pid: space.pid, unmount: () => space.unmount() };
  }

  async durable(timeoutMs: number): Promise<void> {
    if (!this.writer) throw new Error('Filespace is not mounted');
    await this.writer.sync(timeoutMs);
  }

  async prepareCold(): Promise<string> {
    return `a freshly linked machine with an empty cache, mounted read-only; ${await warmBucket(this.ctx.server, this.bucket)}`;
  }

  async mountCold(tag: string): Promise<Mounted> {
    checkAbort();
    const machine = await this.ctx.bed.machine(tag);
    const linked = await this.ctx.bed.link(machine, this.bucket, this.prefix, this.ctx.cacheSize);
    const space = new Space(machine, linked.name, linked.mnt);
    this.spaces.push(space);
    // A store without conditional writes lets only the first machine write; a reader needs no lease anyway.
    await space.mount(true);
    return { dir: space.mnt, pid: space.pid, unmount: () => space.unmount() };
  }

  async dispose(): Promise<void> {
    for (const s of this.spaces) {
      if (s.mounted) await s.forceDown(false);
      await fsp.rm(path.join(s.machine.home, 'cache'), { recursive: true, force: true }).catch(() => undefined);
    }
    if (this.bucket) await this.ctx.server.dropBucket(this.bucket);
  }
}

// ---- FUSE daemons of the peers --------------------------------------------------------------

/** A peer's FUSE daemon in the foreground, as a child of the bench, registered for cleanup. */
class PeerMount implements Mounted {
  private exited = false;
  private readonly dropTeardown: () => void;

  private constructor(
    readonly dir: string,
    readonly child: ChildProcess,
    private readonly tail: () => string,
    readonly what: string,
  ) {
    child.once('exit', () => (this.exited = true));
    this.dropTeardown = onTeardown(`${what} at ${dir}`, () => this.down());
  }

  private exitWithin(ms: number): Promise<boolean> {
    return childExited(this.child, ms);
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(what: string, dir: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<PeerMount> {
    checkAbort();
    await fsp.mkdir(dir, { recursive: true });
    const { child, tail } = startDaemon(cmd, args, { env });
    const m = new PeerMount(dir, child, tail, what);
    try {
      await waitMounted(dir, 60_000, () => (m.exited ? `${what} exited before mounting: ${tail()}` : undefined));
    } catch (err) {
      await m.down();
      throw err;
    }
    return m;
  }

  /** Its log, for error messages. */
  log(): string {
    return this.tail();
  }

  async unmount(): Promise<void> {
    const r = await exec('fusermount', ['-u', this.dir], { timeoutMs: 60_000 });
    if (r.code !== 0 && (await mountDevice(this.dir))) throw new Error(`fusermount -u ${this.dir} failed: ${r.stderr.trim()}`);
    if (!(await this.exitWithin(60_000))) throw new Error(`${this.what} did not exit within 60 s of its unmount`);
    this.dropTeardown();
  }

  /** Unmounts by any means. */
  async down(): Promise<void> {
    if (await mountDevice(this.dir)) {
      await exec('fusermount', ['-u', this.dir], { timeoutMs: 20_000 });
      if (!(await this.exitWithin(15_000))) await abortMount(this.dir);
    }
    if (!this.exited) {
      this.child.kill('SIGTERM');
      if (!(await this.exitWithin(10_000))) {
        this.child.kill('SIGKILL');
        await this.exitWithin(5000);
      }
    }
    await ensureUnmounted(this.dir);
  }
}

// ---- rclone ---------------------------------------------------------------------------------

interface VfsStats {
  diskCache?: { uploadsInProgress?: number; uploadsQueued?: number; erroredFiles?: number };
}

export class RcloneContender implements Contender {
  readonly key = 'rclone';
  readonly label = 'rclone';
  readonly setup: string;
  private bucket = '';
  private current: { mount: PeerMount; rcPort: number } | undefined;
  private readonly dirs: string[] = [];
  private seq = 0;

  constructor(
    private readonly ctx: Context,
    readonly version: string,
  ) {
    this.setup = `${version}: \`rclone mount --vfs-cache-mode full --vfs-write-back ${ctx.uploadDelayMs / 1000}s --vfs-cache-max-size ${Math.floor(ctx.cacheBytes / 2 ** 20)}M${isRoot ? ' --allow-other' : ''}\` (other settings default: 4 transfers, multipart chunks of 5 MiB, 1 s attribute cache), s3 provider "Other", path-style`;
  }

  private env(): NodeJS.ProcessEnv {
    return peerEnv({
      RCLONE_CONFIG: path.join(this.ctx.work, 'rclone.conf'),
      RCLONE_CONFIG_BENCH_TYPE: 's3',
      RCLONE_CONFIG_BENCH_PROVIDER: 'Other',
      RCLONE_CONFIG_BENCH_ENDPOINT: this.ctx.server.endpoint,
      RCLONE_CONFIG_BENCH_ACCESS_KEY_ID: 'test',
      RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY: 'test',
      RCLONE_CONFIG_BENCH_REGION: 'us-east-1',
      RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE: 'true',
    });
  }

  private async start(tag: string): Promise<Mounted> {
    const n = ++this.seq;
    const mnt = path.join(this.ctx.work, `rclone-mnt-${n}`);
    const cache = path.join(this.ctx.work, `rclone-cache-${n}`);
    this.dirs.push(mnt, cache);
    await fsp.writeFile(path.join(this.ctx.work, 'rclone.conf'), '');
    const rcPort = await freePort();
    const mount = await PeerMount.start(
      `rclone (${tag})`,
      mnt,
      'rclone',
      [
        'mount',
        `bench:${this.bucket}`,
        mnt,
        '--vfs-cache-mode',
        'full',
        '--vfs-write-back',
        `${this.ctx.uploadDelayMs / 1000}s`,
        '--vfs-cache-max-size',
        `${Math.floor(this.ctx.cacheBytes / 2 ** 20)}M`,
        '--cache-dir',
        cache,
        '--rc',
        '--rc-addr',
        `127.0.0.1:${rcPort}`,
        '--rc-no-auth',
        ...(isRoot ? ['--allow-other'] : []),
      ],
      this.env(),
    );
    this.current = { mount, rcPort };
    return mount;
  }

  async mount(): Promise<Mounted> {
    this.bucket = await this.ctx.server.newBucket('rclone');
    return this.start('writer');
  }

  private async stats(): Promise<VfsStats> {
    if (!this.current) throw new Error('rclone is not mounted');
    const res = await fetch(`http://127.0.0.1:${this.current.rcPort}/vfs/stats`, {
      method: 'POST',
      signal: AbortSignal.timeout(10_000),
    });
    if (!res.ok) throw new Error(`rclone rc vfs/stats answered ${res.status}`);
    return (await res.json()) as VfsStats;
  }

  /**
   * The write-back queue empty and staying so for a second: the kernel releases a closed file
   * asynchronously, and rclone queues a file for upload only at that release, so an empty
   * queue right after close may just not have it yet. Durable since the start of that quiet.
   */
  async durable(timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let quietSince: number | undefined;
    for (;;) {
      const at = nowSeconds();
      const dc = (await this.stats()).diskCache ?? {};
      if ((dc.erroredFiles ?? 0) > 0) throw new Error(`rclone reports ${dc.erroredFiles} files that failed to upload`);
      const busy = (dc.uploadsInProgress ?? 0) + (dc.uploadsQueued ?? 0);
      if (busy > 0) quietSince = undefined;
      else quietSince ??= at;
      if (quietSince !== undefined && nowSeconds() - quietSince >= 1) return quietSince;
      if (Date.now() > deadline)
        throw new Error(
          `rclone still had ${dc.uploadsInProgress ?? '?'} uploads running and ${dc.uploadsQueued ?? '?'} queued after ${timeoutMs / 1000} s`,
        );
      await sleep(100);
    }
  }

  async objectSize(name: string): Promise<number | undefined> {
    return objectSize(this.ctx.server, this.bucket, name);
  }

  async prepareCold(): Promise<string> {
    return `a new rclone process with a new, empty cache directory; ${await warmBucket(this.ctx.server, this.bucket)}`;
  }

  mountCold(tag: string): Promise<Mounted> {
    return this.start(tag);
  }

  async dispose(): Promise<void> {
    if (this.current) await this.current.mount.down();
    for (const d of this.dirs) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
    if (this.bucket) await this.ctx.server.dropBucket(this.bucket);
  }
}

// ---- s3fs -----------------------------------------------------------------------------------

export class S3fsContender implements Contender {
  readonly key = 's3fs';
  readonly label = 's3fs';
  readonly setup: string;
  private bucket = '';
  private current: PeerMount | undefined;
  private readonly dirs: string[] = [];
  private seq = 0;

  constructor(
    private readonly ctx: Context,
    readonly version: string,
  ) {
    this.setup = `${version}: \`s3fs -f -o use_cache=DIR,use_path_request_style,url=...${isRoot ? ',allow_other' : ''}\` (other settings default: 5 parallel requests, multipart parts of 10 MB, stat cache)`;
  }

  private async start(tag: string): Promise<Mounted> {
    const n = ++this.seq;
    const mnt = path.join(this.ctx.work, `s3fs-mnt-${n}`);
    const cache = path.join(this.ctx.work, `s3fs-cache-${n}`);
    this.dirs.push(mnt, cache);
    await fsp.mkdir(cache, { recursive: true });
    const passwd = path.join(this.ctx.work, 's3fs.passwd');
    await fsp.writeFile(passwd, 'test:test\n', { mode: 0o600 });
    const opts = [
      `passwd_file=${passwd}`,
      `url=${this.ctx.server.endpoint}`,
      'use_path_request_style',
      `use_cache=${cache}`,
      ...(isRoot ? ['allow_other'] : []),
    ];
    this.current = await PeerMount.start(
      `s3fs (${tag})`,
      mnt,
      's3fs',
      [this.bucket, mnt, '-f', '-o', opts.join(',')],
      peerEnv({}),
    );
    return this.current;
  }

  async mount(): Promise<Mounted> {
    this.bucket = await this.ctx.server.newBucket('s3fs');
    return this.start('writer');
  }

  async durable(): Promise<void> {
    // s3fs uploads on close and sends attribute changes at once: there is nothing left to wait for.
  }

  async objectSize(name: string): Promise<number | undefined> {
    return objectSize(this.ctx.server, this.bucket, name);
  }

  async prepareCold(): Promise<string> {
    return `a new s3fs process with a new, empty cache directory; ${await warmBucket(this.ctx.server, this.bucket)}`;
  }

  mountCold(tag: string): Promise<Mounted> {
    return this.start(tag);
  }

  async dispose(): Promise<void> {
    if (this.current) await this.current.down();
    for (const d of this.dirs) await fsp.rm(d, { recursive: true, force: true }).catch(() => undefined);
    if (this.bucket) await this.ctx.server.dropBucket(this.bucket);
  }
}

async function objectSize(server: BenchServer, bucket: string, key: string): Promise<number | undefined> {
  const store = s3StoreFor(server.endpoint, bucket);
  try {
    return (await store.head(key))?.size;
  } finally {
    await store.close();
  }
}

// ---- the local directory --------------------------------------------------------------------

export class LocalContender implements Contender {
  readonly key = 'local';
  readonly label = 'local dir';
  readonly setup: string;
  private readonly dir: string;

  constructor(ctx: Context, fsDescription: string) {
    this.dir = path.join(ctx.work, 'local');
    this.setup = `a plain directory on the cache disk (${fsDescription}); durable = \`sync -f\`; cold = after dropping the page cache`;
  }

  async mount(): Promise<Mounted> {
    await fsp.mkdir(this.dir, { recursive: true });
    return this.view();
  }

  private view(): Mounted {
    return { dir: this.dir, pid: undefined, unmount: async () => undefined };
  }

  async durable(timeoutMs: number): Promise<void> {
    must(await exec('sync', ['-f', this.dir], { timeoutMs }), 'sync -f');
  }

  async prepareCold(): Promise<string> {
    return dropPageCache(this.dir);
  }

  async mountCold(): Promise<Mounted> {
    return this.view();
  }

  async dispose(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Writes dirty pages of dir's filesystem, then drops the kernel's page cache (root only); says what happened. */
export async function dropPageCache(dir: string): Promise<string> {
  must(await exec('sync', ['-f', dir], { timeoutMs: 300_000 }), 'sync -f');
  try {
    await fsp.writeFile('/proc/sys/vm/drop_caches', '3');
    return 'page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`)';
  } catch (err) {
    return `could not drop the page cache (${(err as NodeJS.ErrnoException).code ?? String(err)}): this "cold" read may come from memory`;
  }
}

// ---- the FUSE ceiling -----------------------------------------------------------------------

/** The do-nothing filesystem (nullfs.ts) in a child process. */
export class NullFs implements Mounted {
  /** The libfuse option string the ceiling filesystem was mounted with. */
  options = '';
  private dropTeardown: (() => void) | undefined;

  private constructor(
    readonly dir: string,
    readonly child: ChildProcess,
  ) {}

  get pid(): number {
    return this.child.pid!;
  }

  static async start(mnt: string, zeroBytes: number): Promise<NullFs> {
    checkAbort();
    await fsp.mkdir(mnt, { recursive: true });
    const child = spawn(process.execPath, [probe('nullfs'), mnt, String(zeroBytes)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const fs = new NullFs(mnt, child);
    fs.dropTeardown = onTeardown('the ceiling filesystem', () => fs.unmount());
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err = (err + d).slice(-4000)));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('the ceiling filesystem did not mount within 20 s')), 20_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        const m = /ready (\S*)/.exec(d);
        if (m) {
          fs.options = m[1] ?? '';
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the ceiling filesystem exited (${code}): ${err.trim()}`));
      });
    });
    return fs;
  }

  async unmount(): Promise<void> {
    if (!(await childExited(this.child, 0))) {
      this.child.kill('SIGTERM');
      if (!(await childExited(this.child, 8000))) {
        await abortMount(this.dir);
        this.child.kill('SIGKILL');
        await childExited(this.child, 3000);
      }
    }
    await ensureUnmounted(this.dir);
    this.dropTeardown?.();
  }
}
