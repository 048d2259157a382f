/**
 * The chunk object format: `magic "FSC1" | flags(1) | sealed(payload)`, where payload is the
 * chunk's plaintext, deflated when that saves at least 1/8. The flags byte is covered by the
 * authenticated data together with the chunk's name, so neither can be altered unnoticed.
 * Objects of this one format are in existing buckets: a change to it needs a new magic, and
 * decoding keeps reading FSC1 (test/unit/chunk-format.test.ts pins its bytes).
 *
 * Compression runs on libuv's thread pool (zlib async) so the event loop stays free, or, in a
 * worker thread, synchronously (encodeChunkIntoSync); a 64 KiB sample is tried first so
 * incompressible data (media, archives) skips the full attempt.
 *
 * `encodeChunkInto` writes the object into a buffer the caller owns (the uploader's pool), with
 * no buffer of the chunk's size allocated on the way and no concatenation, and computes the
 * object's CRC32 as its bytes are written (the bucket verifies it; see store/s3.ts), so the
 * object is read once by the cipher and never again before it is sent.
 */

import { promisify } from 'node:util';
import { crc32 as zlibCrc32, deflateRaw, deflateRawSync, inflateRaw, constants } from 'node:zlib';
import { AuthError, SEAL_OVERHEAD, openAsync, sealInto } from './crypto';

const deflateAsync = promisify(deflateRaw);
const inflateAsync = promisify(inflateRaw);

const MAGIC = Buffer.from('FSC1', 'ascii');
const FLAG_DEFLATE = 1;
const SAMPLE_BYTES = 64 * 1024;
/** magic and flags, before the sealed payload. */
const HEAD_BYTES = MAGIC.length + 1;

/** CRC32 (zlib's, native) where this Node has it (20.15 and later); else none is computed. */
const crc32: ((data: Buffer, value?: number) => number) | undefined = typeof zlibCrc32 === 'function' ? zlibCrc32 : undefined;

export function chunkKey(name: string): string {
  return `chunks/${name.slice(0, 2)}/${name}`;
}

/** The largest object a chunk of `plainBytes` bytes encodes to (stored as is, not deflated). */
export function maxEncodedBytes(plainBytes: number): number {
  return HEAD_BYTES + plainBytes + SEAL_OVERHEAD;
}

/** An object written by `encodeChunkInto`. */
export interface EncodedChunk {
  /** Bytes of the object, from the start of the output buffer. */
  readonly length: number;
  /** CRC32 of those bytes; undefined where this Node has no native CRC32. */
  readonly crc32: number | undefined;
  readonly deflated: boolean;
}

const DEFLATE_OPTIONS = { level: 1, strategy: constants.Z_DEFAULT_STRATEGY };

/** Whether deflating is worth trying at all: not for tiny chunks, nor when a sample does not shrink. */
function worthDeflating(plain: Buffer, deflateSample: (sample: Buffer) => Buffer): boolean {
  if (plain.length < 512) return false;
  if (plain.length <= SAMPLE_BYTES * 2) return true;
  return deflateSample(plain.subarray(0, SAMPLE_BYTES)).length <= SAMPLE_BYTES * 0.875;
}

function pays(deflated: Buffer, plain: Buffer): boolean {
  return deflated.length <= plain.length * 0.875;
}

async function maybeCompress(plain: Buffer): Promise<Buffer | undefined> {
  if (plain.length < 512) return undefined;
  if (plain.length > SAMPLE_BYTES * 2) {
    const sample = await deflateAsync(plain.subarray(0, SAMPLE_BYTES), DEFLATE_OPTIONS);
    if (sample.length > SAMPLE_BYTES * 0.875) return undefined;
  }
  const out = await deflateAsync(plain, DEFLATE_OPTIONS);
  return pays(out, plain) ? out : undefined;
}

/** `maybeCompress` on the calling thread (for a worker thread, whose blocking harms nobody). */
function maybeCompressSync(plain: Buffer): Buffer | undefined {
  if (!worthDeflating(plain, (sample) => deflateRawSync(sample, DEFLATE_OPTIONS))) return undefined;
  const out = deflateRawSync(plain, DEFLATE_OPTIONS);
  return pays(out, plain) ? out : undefined;
}

function writeObject(key: Buffer, name: string, payload: Buffer, flags: number, out: Buffer): EncodedChunk {
  MAGIC.copy(out, 0);
  out[MAGIC.length] = flags;
  let crc = crc32?.(out.subarray(0, HEAD_BYTES));
  const sealed = sealInto(
    key,
    payload,
    `chunk:${name}:${flags}`,
    out,
    HEAD_BYTES,
    crc === undefined
      ? undefined
      : (piece) => {
          crc = crc32!(piece, crc);
        },
  );
  return { length: HEAD_BYTES + sealed, crc32: crc, deflated: flags !== 0 };
}

/**
 * Encodes the chunk `plain` named `name` into `out`, which must hold at least
 * `maxEncodedBytes(plain.length)` bytes; the object is `out.subarray(0, length)`. `plain` is
 * only read, and may be reused once this resolves.
 */
export async function encodeChunkInto(key: Buffer, name: string, plain: Buffer, out: Buffer): Promise<EncodedChunk> {
  if (out.length < maxEncodedBytes(plain.length))
    throw new RangeError('encodeChunkInto: the output buffer is too small for this chunk');
  const compressed = await maybeCompress(plain);
  return writeObject(key, name, compressed ?? plain, compressed ? FLAG_DEFLATE : 0, out);
}

/** `encodeChunkInto` on the calling thread, compression included: for worker threads (upload/encoder.ts). */
export function encodeChunkIntoSync(key: Buffer, name: string, plain: Buffer, out: Buffer): EncodedChunk {
  if (out.length < maxEncodedBytes(plain.length))
    throw new RangeError('encodeChunkInto: the output buffer is too small for this chunk');
  const compressed = maybeCompressSync(plain);
  return writeObject(key, name, compressed ?? plain, compressed ? FLAG_DEFLATE : 0, out);
}

export async function encodeChunk(key: Buffer, name: string, plain: Buffer): Promise<Buffer> {
  const compressed = await maybeCompress(plain);
  const payload = compressed ?? plain;
  const out = Buffer.allocUnsafe(maxEncodedBytes(payload.length));
  const { length } = writeObject(key, name, payload, compressed ? FLAG_DEFLATE : 0, out);
  return out.subarray(0, length);
}

/**
 * The nonce and ciphertext of an uncompressed chunk object, for keeping it as received and
 * reading ranges of it later (`decryptSealedPart`); undefined for a compressed chunk (its
 * ranges cannot be read alone) or an object not in this format. Checks nothing: the object
 * must have been authenticated (`decodeChunk`) first.
 */
export function receivedCiphertext(obj: Buffer): { readonly nonce: Buffer; readonly ciphertext: Buffer } | undefined {
  if (obj.length < 5 + 28 || !obj.subarray(0, 4).equals(MAGIC) || obj[4] !== 0) return undefined;
  return { nonce: obj.subarray(5, 17), ciphertext: obj.subarray(17, obj.length - 16) };
}

export async function decodeChunk(key: Buffer, name: string, obj: Buffer): Promise<Buffer> {
  if (obj.length < HEAD_BYTES || !obj.subarray(0, 4).equals(MAGIC)) throw new AuthError(`chunk ${name}`);
  const flags = obj[4]!;
  // Off the JS thread: a whole chunk is the largest thing the engine decrypts.
  const payload = await openAsync(key, obj.subarray(HEAD_BYTES), `chunk:${name}:${flags}`, `chunk ${name}`);
  if (flags & FLAG_DEFLATE) return inflateAsync(payload);
  return payload;
}
