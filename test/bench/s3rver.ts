/**
 * The benchmark's S3 server process: s3rver (an S3 server in Node that keeps each object in a
 * file and serves a range by reading only that range), bound to a free loopback port, with a
 * count of the requests it serves, so each benchmark phase can say how many requests of each
 * kind a filesystem sent and how many were in flight on average (time-weighted, counted from
 * the arrival of a request to the end of its response).
 *
 * It accepts the test credentials the rest of the bench uses (access key "test"), in addition
 * to s3rver's own. It decodes the copy source of a CopyObject request fully, as S3 does:
 * s3rver 3.7.1 decodes it with decodeURI, which leaves "%40" ("@") and "%2B" ("+") encoded,
 * so copying any key with those characters fails with NoSuchKey (s3fs copies an object onto
 * itself to change its mode or owner: every chmod of a directory of an npm tree failed).
 * s3rver does not verify SigV4 signatures, so rewriting a signed header changes nothing else. s3rver continues long listings with a DES-encrypted token, which Node 17+
 * only has with --openssl-legacy-provider: the parent starts this script with that flag.
 *
 * Usage (child process with an IPC channel): node --openssl-legacy-provider s3rver.js DATA_DIR
 * Sends {ready: {port, version}} once listening; answers {cmd: 'window'} with the counts since
 * the previous window ({inflightAvg, inflightMax, requests: {METHOD: n}, errors5xx, seconds,
 * gcSeconds, majorGcs}). The garbage collections are counted because s3rver's share of a
 * 2-core machine depends on them: every 64 KiB it reads from an object's file is a new Buffer,
 * and a phase that streams a GiB runs dozens of full (mark-compact) collections, each pausing
 * the server for a few milliseconds.
 */

import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { type PerformanceEntry, PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';

interface S3rverInstance {
  run(): Promise<{ port: number }>;
  httpServer: Server;
}

// s3rver has no types of its own; these are the two entry points used here.
/* eslint-disable @typescript-eslint/no-require-imports -- s3rver has no types; each require is typed where it is made */
const S3rver = require('s3rver') as new (opts: Record<string, unknown>) => S3rverInstance;
const accounts = require('s3rver/lib/models/account') as { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };
const version = (require('s3rver/package.json') as { version: string }).version;
/* eslint-enable @typescript-eslint/no-require-imports */

async function main(): Promise<void> {
  const [dir] = process.argv.slice(2);
  if (!dir || !process.send) throw new Error('usage (with an IPC channel): s3rver DATA_DIR');
  accounts.DUMMY_ACCOUNT.createKeyPair('test', 'test');
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir });
  const { port } = await server.run();

  let gcMs = 0;
  let majorGcs = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gcMs += e.duration;
      if ((e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR)
        majorGcs++;
    }
  }).observe({ entryTypes: ['gc'] });
  let inflight = 0;
  let max = 0;
  let area = 0;
  let last = process.hrtime.bigint();
  let windowStart = last;
  let requests: Record<string, number> = {};
  let errors5xx = 0;
  const change = (delta: number) => {
    const now = process.hrtime.bigint();
    area += inflight * Number(now - last);
    last = now;
    inflight += delta;
    if (inflight > max) max = inflight;
  };
  // Runs before s3rver's own handler: rewrite the copy source so that its decodeURI yields the key.
  server.httpServer.prependListener('request', (req: IncomingMessage) => {
    const src = req.headers['x-amz-copy-source'];
    if (typeof src === 'string') {
      try {
        req.headers['x-amz-copy-source'] = encodeURI(decodeURIComponent(src));
      } catch {
        // not valid percent-encoding: leave it for s3rver to reject
      }
    }
  });
  server.httpServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
    change(1);
    const kind =
      req.method === 'GET' && /[?&](list-type|prefix|delimiter|uploads)=/.test(req.url ?? '') ? 'LIST' : (req.method ?? '?');
    requests[kind] = (requests[kind] ?? 0) + 1;
    res.once('close', () => {
      change(-1);
      if (res.statusCode >= 500) errors5xx++;
    });
  });
  process.on('message', (msg: { cmd?: string; id?: number }) => {
    if (msg.cmd !== 'window') return;
    change(0);
    const span = Number(last - windowStart);
    process.send!({
      id: msg.id,
      window: {
        inflightAvg: span > 0 ? area / span : 0,
        inflightMax: max,
        requests,
        errors5xx,
        seconds: span / 1e9,
        gcSeconds: gcMs / 1000,
        majorGcs,
      },
    });
    gcMs = 0;
    majorGcs = 0;
    windowStart = last;
    area = 0;
    max = inflight;
    requests = {};
    errors5xx = 0;
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  process.send({ ready: { port, version } });
}

main().catch((err: unknown) => {
  process.stderr.write(`s3rver: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
