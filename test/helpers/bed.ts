/**
 * Test bed for tests through real mounts: one moto S3 server per test file (or a server the
 * caller started, as the benchmark does), and helpers to
 * run the real `filespace` command as a user would (a child process per command), create
 * filespaces in fresh buckets/prefixes, mount them (the engine runs in its own daemon
 * process, never in the test process), and run ordinary shell tools against the mount.
 *
 * Every helper is async: the test process never touches a mount synchronously.
 *
 * Commands that only talk to a running mount over its control socket (status, sync, gc and a
 * change of settings) are sent from the test process with the host library's own calls, the
 * ones the command makes (`statusOf`, `syncLinked`, `applySettings`): a command is a Node
 * process that loads the whole program (0.5 to 1.5 s on a busy two-core machine), and tests
 * poll status in loops. Mounting, unmounting, linking and every command a test checks the
 * words of still run as a child process, and where nothing runs the filespace (status or
 * sync of an unmounted one, which open its cache or an engine) the command runs as well, so
 * no engine ever runs in the test process.
 */

import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GcResultDto, SettingsChange, StatusDto } from '../../electron/contract/api';
import type { Homes } from '../../electron/host/config';
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
  /** What `filespace status NAME --json` prints, parsed. */
  status(): Promise<Record<string, unknown>>;
  /** `filespace sync NAME --timeout 5m`: every local change is in the bucket, or it throws. */
  sync(): Promise<void>;
  /** `filespace set NAME KEY VALUE` for each key (live when mounted, else at the next mount). */
  set(settings: Record<string, string>): Promise<void>;
  /** `filespace gc NAME` of a mounted filespace: the numbers it prints. */
  gc(): Promise<GcResultDto>;
  /** Pid of the engine process serving the mount. */
  pid(): Promise<number>;
}

/**
 * The host library's calls that the commands make (see the header), loaded at their first use:
 * most of the program comes with them, which a test file that never asks need not load.
 */
async function hostLibrary() {
  const [config, control, settings, keys] = await Promise.all([
    import('../../electron/host/config'),
    import('../../electron/host/control'),
    import('../../electron/host/settings'),
    import('../../electron/cli/settingKeys'),
  ]);
  const { callControl, notRunning } = control;
  /** A control call to the mount of `name` (as `filespace` makes it), or undefined when nothing runs it. */
  const toMount = <R extends Parameters<typeof callControl>[1]>(
    h: Homes,
    name: string,
    route: R,
    body: Parameters<typeof callControl<R>>[2],
    timeoutMs: number,
  ) =>
    callControl(config.socketPath(h, name), route, body, timeoutMs).catch((err: unknown) => {
      if (notRunning(err)) return undefined;
      throw err;
    });
  return {
    homes: config.homes,
    toMount,
    /** `filespace set NAME KEY VALUE` for every key at once: applySettings of their changes together. */
    set: async (h: Homes, name: string, values: Record<string, string>) => {
      const change = Object.assign({}, ...Object.entries(values).map(([k, v]) => keys.settingFromKey(k, v))) as SettingsChange;
      await settings.applySettings(h, await config.loadConfig(h, name), change);
    },
  };
}

/**
 * With FILESPACE_TEST_KEEP_LOGS=DIR, the daemons' logs of a bed are copied under DIR before the
 * bed's folder goes, to read after a run what a mount did.
 */
async function keepLogs(root: string): Promise<void> {
  const into = process.env.FILESPACE_TEST_KEEP_LOGS;
  if (!into || !root) return;
  const files = await fsp.readdir(root, { recursive: true }).catch(() => [] as string[]);
  for (const f of files.filter((n) => n.endsWith('.log'))) {
    const to = path.join(into, path.basename(root), f);
    await fsp.mkdir(path.dirname(to), { recursive: true });
    await fsp.copyFile(path.join(root, f), to).catch(() => undefined);
  }
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
    await keepLogs(this.root);
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
    if (opts.settings) await linked.set(opts.settings);
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
    // The command's own calls, with this machine's FILESPACE_HOME (see the header).
    const host = async () => {
      const lib = await hostLibrary();
      return { ...lib, h: lib.homes(m.env) };
    };
    const syncTimeoutMs = 5 * 60_000;
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
      status: async () => {
        // statusOf's call (5 s, as the command); printed as JSON and read back, as the command's output would be.
        const { toMount, h } = await host();
        const running: StatusDto | undefined = await toMount(h, name, '/v1/status', {}, 5000);
        const text = running ? JSON.stringify(running) : await m.ok('status', name, '--json');
        return JSON.parse(text) as Record<string, unknown>;
      },
      sync: async () => {
        await withLog(
          (async () => {
            // syncLinked's call to a running mount, and cmdSync's verdict on its answer.
            const { toMount, h } = await host();
            const r = await toMount(h, name, '/v1/sync', { timeoutMs: syncTimeoutMs }, syncTimeoutMs + 30_000);
            if (!r) await m.ok('sync', name, '--timeout', '5m');
            else if (!r.done) {
              throw new Error(
                `filespace sync ${name} failed: ${r.notWriting ? `not synced: ${r.notWriting}` : 'sync timed out'} ` +
                  `(${r.dirtyBytes} bytes and ${r.pendingMetaOps} metadata changes still to upload)`,
              );
            }
          })(),
        );
      },
      set: async (settings) => {
        const { set, h } = await host();
        await set(h, name, settings);
      },
      gc: async () => {
        const { toMount, h } = await host();
        const r: GcResultDto | undefined = await withLog(toMount(h, name, '/v1/gc', {}, 30 * 60_000));
        if (!r) throw new Error(`"${name}" is not mounted; garbage collection runs in the engine that writes it`);
        return r;
      },
      pid: async () => Number((await linked.status()).pid),
    };
    this.cleanups.push(async () => {
      // Most filespaces of a test are unmounted by then: no engine answers and the kernel has
      // no mount there, so `unmount --force` would have nothing to do (it only detaches a
      // mount the kernel still holds).
      const { toMount, h } = await host();
      const running = await toMount(h, name, '/v1/status', {}, 5000).catch(() => 'unanswered');
      if (running === undefined && !(await fsp.readFile('/proc/self/mounts', 'utf8')).includes(` ${mnt} `)) return;
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
