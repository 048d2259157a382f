/**
 * Test fixture: a real S3-compatible server (moto) on loopback, plus helpers to create a
 * bucket and an S3Store pointed at it.
 *
 * moto is the local server that implements conditional writes (412 on If-None-Match /
 * If-Match), so integration tests of the store and of the write lease run against it. Each
 * test file starts its own server on a free port and stops it when done.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as net from 'node:net';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3Store, type S3StoreOptions } from '../../electron/engine/store/s3';
import { python3WithoutShim } from './python';

export const TEST_CREDENTIALS = { accessKeyId: 'test', secretAccessKey: 'test' } as const;
export const TEST_REGION = 'us-east-1';

export interface MotoServer {
  readonly endpoint: string;
  readonly port: number;
  stop(): Promise<void>;
}

/** A TCP port that was free a moment ago (bind to 0, read the port, close). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('could not find a free port'))));
    });
  });
}

/** `env` adds server settings, e.g. INITIAL_NO_AUTH_ACTION_COUNT to turn on IAM checks. */
export async function startMoto(options: { env?: NodeJS.ProcessEnv } = {}): Promise<MotoServer> {
  // For the server and for every script the test file runs after it.
  await python3WithoutShim();
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    try {
      return await launch(port, options.env ?? {});
    } catch (err) {
      lastError = err;
    }
  }
  throw new Error(`moto server did not start: ${(lastError as Error)?.message ?? lastError}`);
}

async function launch(port: number, extraEnv: NodeJS.ProcessEnv): Promise<MotoServer> {
  const child = spawn('python3', ['-m', 'moto.server', '-H', '127.0.0.1', '-p', String(port)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PYTHONUNBUFFERED: '1', ...extraEnv },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    stderr = (stderr + d).slice(-4000);
  });
  // If the test process dies without calling stop(), do not leave the server behind.
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      process.removeListener('exit', reap);
      resolve(code);
    }),
  );
  let hasExited = false;
  void exited.then(() => (hasExited = true));

  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (hasExited) throw new Error(`moto exited early: ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    if (await answers(`${endpoint}/moto-api/`)) break;
    if (Date.now() > deadline) {
      await kill(child, exited);
      throw new Error('moto did not answer within 20 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let stopping: Promise<void> | undefined;
  return {
    endpoint,
    port,
    stop: () => (stopping ??= kill(child, exited)),
  };
}

function answers(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 1000, agent: false }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) > 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

async function kill(child: ChildProcess, exited: Promise<number | null>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

export async function createBucket(endpoint: string, name: string): Promise<void> {
  const client = new S3Client({
    endpoint,
    region: TEST_REGION,
    forcePathStyle: true,
    credentials: TEST_CREDENTIALS,
  });
  try {
    await client.send(new CreateBucketCommand({ Bucket: name }));
  } finally {
    client.destroy();
  }
}

export function s3StoreFor(endpoint: string, bucket: string, prefix?: string, overrides: Partial<S3StoreOptions> = {}): S3Store {
  return new S3Store({
    bucket,
    prefix,
    endpoint,
    region: TEST_REGION,
    pathStyle: true,
    credentials: TEST_CREDENTIALS,
    ...overrides,
  });
}
