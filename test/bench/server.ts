/**
 * The one S3 server every contender of a benchmark run talks to, on loopback.
 *
 * s3rver (default) keeps each object in a file and reads only the requested bytes of a range,
 * so filesystems that store a file as one big object and read it by ranges (rclone, s3fs) are
 * not penalised; it runs in a child process (s3rver.ts) that counts requests by kind and in
 * flight. moto (FILESPACE_BENCH_SERVER=moto, or when s3rver is not installed) is the server of
 * the integration tests: it answers conditional writes, but reads a whole object to serve any
 * range; requests in flight are then approximated by its open connections (it closes each
 * after its response) and requests are not counted by kind.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, tmpDir } from '../helpers/bed';
import { createBucket, startMoto } from '../helpers/moto';
import { connectionSampler, findProcess } from './procstat';
import { childExited, exec, probe, sleep, startDaemon } from './proc';

export interface ServerWindow {
  /** Requests in flight, time-weighted average and maximum over the window. */
  readonly inflightAvg: number;
  readonly inflightMax: number;
  /** Requests by kind (GET, PUT, HEAD, LIST, DELETE, POST), when the server counts them. */
  readonly requests?: Record<string, number>;
  readonly errors5xx?: number;
  /** Time the server's JS thread was paused by garbage collection, and its full collections (s3rver). */
  readonly gcSeconds?: number;
  readonly majorGcs?: number;
}

export interface BenchServer {
  readonly kind: 's3rver' | 'moto';
  /** Name, version and nature, for the report. */
  readonly description: string;
  readonly endpoint: string;
  readonly pid: number | undefined;
  newBucket(tag: string): Promise<string>;
  /** Where a bucket's objects are files (s3rver), else undefined. */
  bucketDir(bucket: string): string | undefined;
  /** Frees a bucket's space once no contender needs it any more. */
  dropBucket(bucket: string): Promise<void>;
  beginWindow(): Promise<void>;
  endWindow(): Promise<ServerWindow | undefined>;
  stop(): Promise<void>;
}

/**
 * Runs a probe's body against a test bed on s3rver, both kept in a new scratch folder `work`;
 * then, however the body ends, stops the bed and the server and removes the folder.
 */
export async function withProbeBed(
  tag: string,
  body: (ctx: { work: string; server: BenchServer; bed: Bed }) => Promise<void>,
): Promise<void> {
  const work = await tmpDir(tag);
  const server = await startS3rver(path.join(work, 's3'));
  const bed = new Bed();
  await bed.start(server);
  try {
    await body({ work, server, bed });
  } finally {
    await bed.stop();
    await server.stop();
    await fsp.rm(work, { recursive: true, force: true });
  }
}

/** Whether s3rver can be loaded (it is a pinned devDependency). */
export function s3rverInstalled(): boolean {
  try {
    require.resolve('s3rver');
    return true;
  } catch {
    return false;
  }
}

let bucketSeq = 0;
const bucketName = (tag: string) =>
  `bench-${tag}-${process.pid}-${++bucketSeq}`
    .toLowerCase()
    .replace(/[^a-z0-9-]/g, '-')
    .slice(0, 63);

export async function startS3rver(dataDir: string): Promise<BenchServer> {
  await fsp.mkdir(dataDir, { recursive: true });
  const { child, tail } = startDaemon(probe('s3rver'), [dataDir], { ipc: true, execArgv: ['--openssl-legacy-provider'] });
  const ready = await new Promise<{ port: number; version: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 20 s: ${tail()}`)), 20_000);
    child.on('message', (m: { ready?: { port: number; version: string } }) => {
      if (m.ready) {
        clearTimeout(timer);
        resolve(m.ready);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited (${code}): ${tail()}`));
    });
  });
  const endpoint = `http://127.0.0.1:${ready.port}`;
  let nextId = 0;
  const ask = () =>
    new Promise<ServerWindow | undefined>((resolve) => {
      if (!child.connected) return resolve(undefined);
      const id = ++nextId;
      const timer = setTimeout(() => {
        child.off('message', onMsg);
        resolve(undefined);
      }, 10_000);
      const onMsg = (m: { id?: number; window?: ServerWindow }) => {
        if (m.id !== id) return;
        clearTimeout(timer);
        child.off('message', onMsg);
        resolve(m.window);
      };
      child.on('message', onMsg);
      child.send({ cmd: 'window', id });
    });
  return {
    kind: 's3rver',
    description: `s3rver ${ready.version} (Node, one process, objects stored as files under the bench's scratch folder; ranges read from the file)`,
    endpoint,
    pid: child.pid,
    newBucket: async (tag) => {
      const name = bucketName(tag);
      await createBucket(endpoint, name);
      return name;
    },
    bucketDir: (bucket) => path.join(dataDir, bucket),
    dropBucket: async (bucket) => {
      await fsp.rm(path.join(dataDir, bucket), { recursive: true, force: true });
    },
    beginWindow: async () => {
      await ask();
    },
    endWindow: ask,
    stop: async () => {
      if (await childExited(child, 0)) return;
      child.kill('SIGTERM');
      if (!(await childExited(child, 5000))) {
        child.kill('SIGKILL');
        await childExited(child, 5000);
      }
    },
  };
}

export async function startMotoServer(): Promise<BenchServer> {
  const moto = await startMoto();
  const pid = await findProcess(['moto.server', '-p', String(moto.port)]);
  const v = await exec('python3', ['-c', 'import moto; print(moto.__version__)'], { timeoutMs: 30_000 });
  let sampler: (() => { avg: number; max: number } | undefined) | undefined;
  return {
    kind: 'moto',
    description: `moto ${v.stdout.trim() || '?'} (Python, one process, objects in memory or spooled temp files; reads a whole object to serve a range)`,
    endpoint: moto.endpoint,
    pid,
    newBucket: async (tag) => {
      const name = bucketName(tag);
      await createBucket(moto.endpoint, name);
      return name;
    },
    bucketDir: () => undefined,
    dropBucket: async () => undefined,
    beginWindow: async () => {
      sampler = connectionSampler(moto.port);
    },
    endWindow: async () => {
      const s = sampler?.();
      sampler = undefined;
      return s ? { inflightAvg: s.avg, inflightMax: s.max } : undefined;
    },
    stop: async () => {
      await moto.stop();
      await sleep(100);
    },
  };
}
