/**
 * The chunk object format: `magic "FSC1" | flags(1) | sealed(payload)`, where payload is the
 * chunk's plaintext, deflated when that saves at least 1/8. The flags byte is covered by the
 * authenticated data together with the chunk's name, so neither can be altered unnoticed.
 *
 * Compression runs on libuv's thread pool (zlib async) so the event loop stays free; a 64 KiB
 * sample is tried first so incompressible data (media, archives) skips the full attempt.
 */

import { promisify } from 'node:util';
import { deflateRaw, inflateRaw, constants } from 'node:zlib';
import { AuthError, open, seal } from './crypto';

const deflateAsync = promisify(deflateRaw);
const inflateAsync = promisify(inflateRaw);

const MAGIC = Buffer.from('FSC1', 'ascii');
const FLAG_DEFLATE = 1;
const SAMPLE_BYTES = 64 * 1024;

export function chunkKey(name: string): string {
  return `chunks/${name.slice(0, 2)}/${name}`;
}

async function maybeCompress(plain: Buffer): Promise<Buffer | undefined> {
  if (plain.length < 512) return undefined;
  const opts = { level: 1, strategy: constants.Z_DEFAULT_STRATEGY };
  if (plain.length > SAMPLE_BYTES * 2) {
    const sample = await deflateAsync(plain.subarray(0, SAMPLE_BYTES), opts);
    if (sample.length > SAMPLE_BYTES * 0.875) return undefined;
  }
  const out = await deflateAsync(plain, opts);
  return out.length <= plain.length * 0.875 ? out : undefined;
}

export async function encodeChunk(key: Buffer, name: string, plain: Buffer): Promise<Buffer> {
  const compressed = await maybeCompress(plain);
  const flags = compressed ? FLAG_DEFLATE : 0;
  const sealed = seal(key, compressed ?? plain, `chunk:${name}:${flags}`);
  return Buffer.concat([MAGIC, Buffer.from([flags]), sealed]);
}

export async function decodeChunk(key: Buffer, name: string, obj: Buffer): Promise<Buffer> {
  if (obj.length < 5 || !obj.subarray(0, 4).equals(MAGIC)) throw new AuthError(`chunk ${name}`);
  const flags = obj[4]!;
  const payload = open(key, obj.subarray(5), `chunk:${name}:${flags}`, `chunk ${name}`);
  if (flags & FLAG_DEFLATE) return inflateAsync(payload);
  return payload;
}
