/**
 * Test bed for tests through real mounts: one moto S3 server per test file (or a server the
 * caller started, as the benchmark does), and helpers to
 * run the real `filespace` command as a user would (a child process per command), create
 * filespaces in fresh buckets/prefixes, mount them (the engine runs in its own daemon
 * process, never in the test process), and run ordinary shell tools against the mount.
 *
 * Every helper is async: the test process never touches a mount synchronously.
 */

import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createBucket, startMoto } from './moto';
import { until } from './until';

export { until };

export const REPO = path.resolve(__dirname, '..', '..', '..');
export const CLI = path.join(REPO, 'bin', 'filespace');

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function run(
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        timeout: opts.timeoutMs ?? 300_000,
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a shell snippet; throws with its output when it fails. */
export async function sh(
  script: string,
  opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<string> {
  const r = await run('bash', ['-euo', 'pipefail', '-c', script], opts);
  if (r.code !== 0) throw new Error(`shell failed (${r.code}): ${script}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

export async function tmpDir(tag: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `fs-${tag}-`));
}

export interface Machine {
  /** FILESPACE_HOME of this simulated machine. */
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  cli(...args: string[]): Promise<RunResult>;
  /** Runs the command and throws unless it exits 0. */
  ok(...args: string[]): Promise<string>;
}

export interface Linked {
  readonly machine: Machine;
  readonly name: string;
  readonly mnt: string;
  readonly cacheDir: string;
  /** Mounts read-write (taking the write lease), or read-only following the writer. */
  mount(opts?: { readOnly?: boolean; takeover?: boolean }): Promise<number>;
  unmount(force?: boolean): Promise<void>;
  status(): Promise<Record<string, unknown>>;
  sync(): Promise<void>;
  /** Pid of the engine process serving the mount. */
  pid(): Promise<number>;
}

export class Bed {
  endpoint = '';
  private stopMoto: (() => Promise<void>) | undefined;
  private readonly cleanups: Array<() => Promise<void>> = [];
  passFile = '';
  root = '';

  /** Starts a moto server for this bed, or uses the S3 endpoint of a server its caller owns (the benchmark's). */
  async start(server?: { readonly endpoint: string }): Promise<void> {
    if (server) {
      this.endpoint = server.endpoint;
    } else {
      const moto = await startMoto();
      this.endpoint = moto.endpoint;
      this.stopMoto = () => moto.stop();
    }
    this.root = await tmpDir('bed');
    this.passFile = path.join(this.root, 'passphrase');
    await fsp.writeFile(this.passFile, 'correct horse battery staple', { mode: 0o600 });
  }

  async stop(): Promise<void> {
    for (const c of this.cleanups.reverse()) await c().catch(() => undefined);
    await this.stopMoto?.();
    await fsp.rm(this.root, { recursive: true, force: true }).catch(() => undefined);
  }

  async newBucket(): Promise<string> {
    const name = `b-${randomBytes(6).toString('hex')}`;
    await createBucket(this.endpoint, name);
    return name;
  }

  async machine(tag = 'm'): Promise<Machine> {
    const home = await fsp.mkdtemp(path.join(this.root, `${tag}-`));
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      FILESPACE_HOME: home,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    };
    const cli = (...args: string[]) => run(process.execPath, [CLI, ...args], { env });
    return {
      home,
      env,
      cli,
      ok: async (...args: string[]) => {
        const r = await cli(...args);
        if (r.code !== 0) throw new Error(`filespace ${args.join(' ')} failed (${r.code}): ${r.stderr}${r.stdout}`);
        return r.stdout;
      },
    };
  }

  storeArgs(bucket: string, prefix = '', endpoint = this.endpoint): string[] {
    return ['--bucket', bucket, ...(prefix ? ['--prefix', prefix] : []), '--endpoint', endpoint, '--path-style'];
  }

  /** Creates a filespace in a fresh bucket (or the given one) and links it on a new machine. */
  async filespace(
    opts: {
      bucket?: string;
      prefix?: string;
      chunkSize?: string;
      cacheSize?: string;
      machine?: Machine;
      create?: boolean;
      settings?: Record<string, string>;
      endpoint?: string;
    } = {},
  ): Promise<Linked & { bucket: string; prefix: string }> {
    const bucket = opts.bucket ?? (await this.newBucket());
    const prefix = opts.prefix ?? '';
    const m = opts.machine ?? (await this.machine());
    if (opts.create !== false) {
      await m.ok(
        'init',
        ...this.storeArgs(bucket, prefix),
        '--chunk-size',
        opts.chunkSize ?? '1MiB',
        '--passphrase-file',
        this.passFile,
      );
    }
    const linked = await this.link(m, bucket, prefix, opts.cacheSize, opts.endpoint);
    for (const [k, v] of Object.entries(opts.settings ?? {})) await m.ok('set', linked.name, k, v);
    return { ...linked, bucket, prefix };
  }

  /** Links on machine `m`; `endpoint` routes this machine through e.g. a fault proxy. */
  async link(m: Machine, bucket: string, prefix = '', cacheSize?: string, endpoint?: string): Promise<Linked> {
    const name = `fs${randomBytes(3).toString('hex')}`;
    const mnt = path.join(m.home, `mnt-${name}`);
    await fsp.mkdir(mnt);
    await m.ok(
      'link',
      ...this.storeArgs(bucket, prefix, endpoint),
      '--mount-point',
      mnt,
      '--name',
      name,
      '--passphrase-file',
      this.passFile,
      ...(cacheSize ? ['--cache-size', cacheSize] : []),
    );
    const cacheDir = path.join(m.home, 'cache', name);
    // A failed command on a mounted filespace says what its daemon logged last (FILESPACE_HOME/run).
    const withLog = async <T>(work: Promise<T>): Promise<T> => {
      try {
        return await work;
      } catch (err) {
        const text = await fsp.readFile(path.join(m.home, 'run', `${name}.log`), 'utf8').catch(() => '');
        const tail = text.trimEnd().split('\n').slice(-30).join('\n');
        if (err instanceof Error && tail) err.message += `\n--- last lines of the daemon's log ---\n${tail}`;
        throw err;
      }
    };
    const linked: Linked = {
      machine: m,
      name,
      mnt,
      cacheDir,
      mount: async (o = {}) => {
        await withLog(m.ok('mount', name, ...(o.readOnly ? ['--read-only'] : []), ...(o.takeover ? ['--takeover'] : [])));
        return linked.pid();
      },
      unmount: async (force = false) => {
        await withLog(m.ok('unmount', name, ...(force ? ['--force'] : [])));
      },
      status: async () => JSON.parse(await m.ok('status', name, '--json')) as Record<string, unknown>,
      sync: async () => {
        await withLog(m.ok('sync', name, '--timeout', '5m'));
      },
      pid: async () => Number((await linked.status()).pid),
    };
    this.cleanups.push(async () => {
      await m.cli('unmount', name, '--force');
      await run('fusermount', ['-uz', mnt]);
    });
    return linked;
  }
}

/** Kills `pid` with SIGKILL and waits until it is gone. */
export async function killHard(pid: number): Promise<void> {
  process.kill(pid, 'SIGKILL');
  await until(`process ${pid} to die`, () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
}

/** Writes `bytes` of random data to a local file and returns its path. */
export async function randomFile(dir: string, name: string, bytes: number): Promise<string> {
  const file = path.join(dir, name);
  const fh = await fsp.open(file, 'w');
  const block = 1024 * 1024;
  for (let done = 0; done < bytes; done += block) await fh.write(randomBytes(Math.min(block, bytes - done)));
  await fh.close();
  return file;
}

export function spawnDetached(cmd: string, args: string[], opts: { cwd?: string } = {}): ChildProcess {
  return spawn(cmd, args, { cwd: opts.cwd, stdio: 'ignore' });
}
