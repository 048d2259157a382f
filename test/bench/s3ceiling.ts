/**
 * The S3 ceiling: PUT and then GET `count` objects of `objectBytes` each with `concurrency`
 * requests in flight, through the product's own S3Store (same SDK, HTTP agent, timeouts and
 * body handling the engine uses), against the same server the filespace uses. Object size and
 * concurrency match the filespace's chunk size and the engine's upload/download concurrency,
 * so "engine throughput / this" is the share of the raw store the engine delivers.
 * The objects are deleted afterwards so the server holds no more than the filespace's data.
 *
 * Usage (child process): node s3ceiling.js ENDPOINT BUCKET OBJECT_BYTES COUNT CONCURRENCY [GET_PASSES]
 * Prints one JSON line: {putSeconds, getSeconds: [one per pass], bytes}.
 */

import { randomBytes } from 'node:crypto';
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
  const [endpoint, bucket, objectBytesArg, countArg, concurrencyArg, passesArg] = process.argv.slice(2);
  const passes = Math.max(1, Number(passesArg ?? 1));
  const objectBytes = Number(objectBytesArg);
  const count = Number(countArg);
  const concurrency = Number(concurrencyArg);
  if (!endpoint || !bucket || !(objectBytes > 0) || !(count > 0) || !(concurrency > 0)) {
    throw new Error('usage: s3ceiling ENDPOINT BUCKET OBJECT_BYTES COUNT CONCURRENCY');
  }
  const store = s3StoreFor(endpoint, bucket, 'ceiling');
  // A few distinct random bodies (incompressible, like encrypted chunks); reusing them costs nothing.
  const bodies = Array.from({ length: 8 }, () => randomBytes(objectBytes));
  const key = (i: number) => `obj/${String(i).padStart(6, '0')}`;
  try {
    let t0 = process.hrtime.bigint();
    await pool(count, concurrency, async (i) => {
      await store.put(key(i), bodies[i % bodies.length]!);
    });
    const putSeconds = Number(process.hrtime.bigint() - t0) / 1e9;

    let got = 0;
    const getSeconds: number[] = [];
    for (let pass = 0; pass < passes; pass++) {
      got = 0;
      t0 = process.hrtime.bigint();
      await pool(count, concurrency, async (i) => {
        const r = await store.get(key(i));
        if (!r || r.body.length !== objectBytes) throw new Error(`GET ${key(i)} returned ${r?.body.length ?? 'nothing'}`);
        got += r.body.length;
      });
      getSeconds.push(Number(process.hrtime.bigint() - t0) / 1e9);
    }

    await store.deleteMany(Array.from({ length: count }, (_, i) => key(i)));
    process.stdout.write(`${JSON.stringify({ putSeconds, getSeconds, bytes: got })}\n`);
  } finally {
    await store.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`s3ceiling: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
