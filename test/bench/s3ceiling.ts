/**
 * The S3 ceiling: `count` objects of `objectBytes` each with `concurrency` requests in flight,
 * through the product's own S3Store (same SDK, HTTP agent, timeouts and body handling the
 * engine uses; chunk-like PUTs with their CRC32 and GETs into buffers of their own, so both go
 * by the path the engine's chunk transfers take), against
 * the same server the contenders use. Object size and concurrency
 * match the filespace's chunk size and the engine's upload/download concurrency, so
 * "engine throughput / this" is the share of the raw store the engine delivers.
 * One mode per run, so the benchmark can time (and profile) PUT and each GET pass apart:
 * `put` stores the objects, `get` reads them all back, `delete` removes them.
 *
 * Usage (child process): node s3ceiling.js ENDPOINT BUCKET OBJECT_BYTES COUNT CONCURRENCY put|get|delete
 * Prints one JSON line: {seconds, bytes}.
 */

import { randomBytes } from 'node:crypto';
import * as zlib from 'node:zlib';
import { s3StoreFor } from '../helpers/moto';

async function pool(count: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

async function main(): Promise<void> {
  const [endpoint, bucket, objectBytesArg, countArg, concurrencyArg, mode] = process.argv.slice(2);
  const objectBytes = Number(objectBytesArg);
  const count = Number(countArg);
  const concurrency = Number(concurrencyArg);
  if (
    !endpoint ||
    !bucket ||
    !(objectBytes > 0) ||
    !(count > 0) ||
    !(concurrency > 0) ||
    !['put', 'get', 'delete'].includes(mode ?? '')
  ) {
    throw new Error('usage: s3ceiling ENDPOINT BUCKET OBJECT_BYTES COUNT CONCURRENCY put|get|delete');
  }
  const store = s3StoreFor(endpoint, bucket, 'ceiling');
  const key = (i: number) => `obj/${String(i).padStart(6, '0')}`;
  try {
    let bytes = 0;
    const t0 = process.hrtime.bigint();
    if (mode === 'put') {
      // A few distinct random bodies (incompressible, like encrypted chunks); reusing them costs nothing.
      const bodies = Array.from({ length: 8 }, () => randomBytes(objectBytes));
      // With the body's CRC32, as the engine's chunk PUTs go (it computes one as it seals): S3Store
      // sends those by its direct path (s3direct.ts); where this Node has no zlib crc32, by the SDK.
      const crcs = bodies.map((b) => (typeof zlib.crc32 === 'function' ? zlib.crc32(b) : undefined));
      await pool(count, concurrency, async (i) => {
        await store.put(key(i), bodies[i % bodies.length]!, { crc32: crcs[i % bodies.length] });
        bytes += objectBytes;
      });
    } else if (mode === 'get') {
      // As the engine reads chunks (prefetch/fetcher.ts): into buffers of its own, reused, which
      // S3Store sends by its direct GET path (s3direct.ts), not the SDK's.
      const spare = Array.from({ length: concurrency }, () => Buffer.allocUnsafeSlow(objectBytes));
      await pool(count, concurrency, async (i) => {
        const into = spare.pop()!;
        const r = await store.get(key(i), undefined, { into });
        if (!r || r.body.length !== objectBytes) throw new Error(`GET ${key(i)} returned ${r?.body.length ?? 'nothing'}`);
        bytes += r.body.length;
        spare.push(into);
      });
    } else {
      await store.deleteMany(Array.from({ length: count }, (_, i) => key(i)));
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    process.stdout.write(`${JSON.stringify({ seconds, bytes })}\n`);
  } finally {
    await store.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`s3ceiling: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
