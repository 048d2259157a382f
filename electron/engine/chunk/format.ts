/**
 * The chunk object formats. Two are written, and both are read:
 *
 * - FSC1, `magic "FSC1" | flags(1) | sealed(payload)`: the chunk's plaintext deflated (flags 1)
 *   as one sealed unit. Written for compressible chunks. The flags byte is covered by the
 *   authenticated data together with the chunk's name. Objects of this format are in existing
 *   buckets, stored (flags 0) as well as deflated: decoding keeps reading them
 *   (test/unit/chunk-format.test.ts pins its bytes).
 * - FSC2, `magic "FSC2" | flags(1) = 0 | segment 0 | segment 1 | ...`: written for chunks that
 *   do not compress. The plaintext is cut into SEGMENT_BYTES segments, each sealed on its own
 *   (`nonce | ciphertext | tag`) with authenticated data `chunkseg:<name>:<index>:<count>`, so
 *   a segment cannot be moved, swapped with one of another chunk, dropped, nor the chunk cut
 *   short or lengthened, unnoticed. Every segment but the last holds exactly SEGMENT_BYTES, so
 *   segment i starts at a fixed offset: a reader that knows the chunk's length (its reference
 *   in the authenticated metadata) computes the byte range of the segments that cover a read
 *   and GETs only those (`segmentRange`, `openSegments`). Nothing a reader uses to compute a
 *   range is taken from the unauthenticated bytes: the offsets follow from the index, and the
 *   count the segments are opened with comes from the reference; if the reference is shorter
 *   than the chunk (a file truncated inside it), or the object is FSC1, the segments fail to
 *   open and the reader falls back to the whole object, which is checked as a whole.
 *
 * Why compressible chunks keep whole-chunk deflate instead of per-segment deflate with an
 * offset table: a table in the object's head costs a ranged reader a second round trip (head,
 * then segments) or a change to the metadata's chunk references, and deflate over 64 KiB
 * windows loses ratio; a compressed chunk is also smaller, so a whole GET of it costs less.
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
import { AuthError, SEAL_OVERHEAD, open, openAsync, randomInto, sealInto } from './crypto';
import { openSegmentsInto, openSegmentsIntoAsync, sealSegmentsAsync, uploadJobsOffThread } from './cipherAddon';
import { contentName } from './packs';

/** Where objects lie in the bucket: one place for it, packs.ts. */
export { CHUNK_LIST_PARTS, chunkKey } from './packs';

const deflateAsync = promisify(deflateRaw);
const inflateAsync = promisify(inflateRaw);

const MAGIC = Buffer.from('FSC1', 'ascii');
const MAGIC2 = Buffer.from('FSC2', 'ascii');
const FLAG_DEFLATE = 1;
/** Plaintext bytes of every FSC2 segment but the last. */
export const SEGMENT_BYTES = 64 * 1024;
/** Bytes of a full FSC2 segment as stored. */
const SEGMENT_STORED = SEGMENT_BYTES + SEAL_OVERHEAD;
const SAMPLE_BYTES = 64 * 1024;
/** magic and flags, before the sealed payload (an FSC2 object's segments start this far in). */
export const HEAD_BYTES = MAGIC.length + 1;

/** CRC32 (zlib's, native) where this Node has it (20.15 and later); else none is computed. */
const crc32: ((data: Buffer, value?: number) => number) | undefined = typeof zlibCrc32 === 'function' ? zlibCrc32 : undefined;

/** FSC2 segments of a chunk of `plainBytes` bytes (an empty chunk has one, empty). */
export function segmentCount(plainBytes: number): number {
  return Math.max(1, Math.ceil(plainBytes / SEGMENT_BYTES));
}

/** The largest object a chunk of `plainBytes` bytes encodes to (stored as is, not deflated: FSC2). */
export function maxEncodedBytes(plainBytes: number): number {
  return HEAD_BYTES + plainBytes + segmentCount(plainBytes) * SEAL_OVERHEAD;
}

function segmentAad(name: string, index: number, count: number): string {
  return `${segmentAadPrefixText(name)}${index}:${count}`;
}

function segmentAadPrefixText(name: string): string {
  return `chunkseg:${name}:`;
}

/** What every segment's associated data starts with; `<index>:<count>` follows (chunk/cipherAddon.ts openSegmentsInto). */
function segmentAadPrefix(name: string): Buffer {
  return Buffer.from(segmentAadPrefixText(name), 'utf8');
}

/** An object written by `encodeChunkInto`. */
export interface EncodedChunk {
  /** Bytes of the object, from the start of the output buffer. */
  readonly length: number;
  /** CRC32 of those bytes; undefined where this Node has no native CRC32. */
  readonly crc32: number | undefined;
  readonly deflated: boolean;
  /**
   * The object is FSC2 (sealed in segments): the bucket's header must allow that (filespace.ts,
   * format 5) before it is PUT. FSC1 (deflated) otherwise.
   */
  readonly segmented: boolean;
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

/**
 * Up to this size a chunk is deflated on the calling thread. Node's async zlib
 * builds a stream per call: on a 4 KiB chunk (a small file) that costs the JS thread about
 * 200 µs where the deflate itself takes 30-40 µs; the synchronous call blocks for at most
 * about 250 µs (16 KiB of random bytes at level 1) on this size. (Inflating stays async: a
 * small deflated payload may stand for a whole chunk of zeros.)
 */
const SYNC_ZLIB_BYTES = 16 * 1024;

async function maybeCompress(plain: Buffer): Promise<Buffer | undefined> {
  if (plain.length <= SYNC_ZLIB_BYTES) return maybeCompressSync(plain);
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
  return { length: HEAD_BYTES + sealed, crc32: crc, deflated: flags !== 0, segmented: false };
}

/**
 * From this size a chunk's upload work (opening its dirty units and naming it, sealing its
 * segments and their CRC32) runs on libuv's thread pool, where the cipher addon offers it
 * (`uploadJobsOffThread`). On a 4 MiB chunk that is about 10 ms of the engine thread at a
 * stretch (HMAC 3, CRC32 1.4, sealing 1.5, opening 1.4 ms: a profile of a 512 MiB upload), long
 * enough to hold up the FUSE requests queued behind it; a smaller chunk (a small file) stays
 * on the engine thread, where its work costs less than the round trip to the pool.
 */
export const OFF_THREAD_BYTES = 128 * 1024;

/**
 * `writeSegmented` as one job on libuv's thread pool: same object, same CRC32. With `sample`,
 * the job first tries deflating that many bytes as `maybeCompress` samples a chunk, and returns
 * undefined (having sealed nothing) when they shrink enough for the chunk to be deflated.
 */
async function writeSegmentedOffThread(
  key: Buffer,
  name: string,
  plain: Buffer,
  out: Buffer,
  sample = 0,
): Promise<EncodedChunk | undefined> {
  const count = segmentCount(plain.length);
  const length = HEAD_BYTES + plain.length + count * SEAL_OVERHEAD;
  MAGIC2.copy(out, 0);
  out[MAGIC2.length] = 0;
  // Nonces (12 random bytes per segment), then 4 bytes the CRC32 comes back in.
  const spec = Buffer.allocUnsafeSlow(count * 12 + 4);
  randomInto(spec.subarray(0, count * 12));
  if (!(await sealSegmentsAsync(key, segmentAadPrefix(name), spec, plain, out.subarray(0, length), sample))) return undefined;
  return { length, crc32: spec.readUInt32BE(count * 12), deflated: false, segmented: true };
}

/**
 * `encodeChunkInto` for a chunk large enough to be sampled, on the thread pool: the sample is
 * deflated in the sealing job (Node's async zlib cost the engine thread about 1.5 ms of stream
 * callbacks per 4 MiB chunk for a sample that did not shrink); a chunk whose sample shrinks is
 * deflated whole as before, and sealed in segments if that did not pay after all.
 */
async function encodeSampledOffThread(key: Buffer, name: string, plain: Buffer, out: Buffer): Promise<EncodedChunk> {
  const sealed = await writeSegmentedOffThread(key, name, plain, out, SAMPLE_BYTES);
  if (sealed) return sealed;
  const deflated = await deflateAsync(plain, DEFLATE_OPTIONS);
  if (pays(deflated, plain)) return writeObject(key, name, deflated, FLAG_DEFLATE, out);
  return (await writeSegmentedOffThread(key, name, plain, out))!;
}

/** Writes `plain` as an FSC2 object (segments sealed one by one) into `out`. */
function writeSegmented(key: Buffer, name: string, plain: Buffer, out: Buffer): EncodedChunk {
  MAGIC2.copy(out, 0);
  out[MAGIC2.length] = 0;
  let crc = crc32?.(out.subarray(0, HEAD_BYTES));
  const onOutput =
    crc === undefined
      ? undefined
      : (piece: Buffer) => {
          crc = crc32!(piece, crc);
        };
  const count = segmentCount(plain.length);
  let at = HEAD_BYTES;
  for (let i = 0; i < count; i++) {
    const seg = plain.subarray(i * SEGMENT_BYTES, (i + 1) * SEGMENT_BYTES);
    at += sealInto(key, seg, segmentAad(name, i, count), out, at, onOutput);
  }
  return { length: at, crc32: crc, deflated: false, segmented: true };
}

/**
 * Encodes the chunk `plain` named `name` into `out`, which must hold at least
 * `maxEncodedBytes(plain.length)` bytes; the object is `out.subarray(0, length)`. `plain` is
 * only read, and may be reused once this resolves.
 */
export async function encodeChunkInto(key: Buffer, name: string, plain: Buffer, out: Buffer): Promise<EncodedChunk> {
  if (out.length < maxEncodedBytes(plain.length))
    throw new RangeError('encodeChunkInto: the output buffer is too small for this chunk');
  if (uploadJobsOffThread && plain.length > SAMPLE_BYTES * 2) return encodeSampledOffThread(key, name, plain, out);
  const compressed = await maybeCompress(plain);
  if (compressed) return writeObject(key, name, compressed, FLAG_DEFLATE, out);
  if (uploadJobsOffThread && plain.length >= OFF_THREAD_BYTES) return (await writeSegmentedOffThread(key, name, plain, out))!;
  return writeSegmented(key, name, plain, out);
}

/** `encodeChunkInto` on the calling thread, compression included: for worker threads (upload/encoder.ts). */
export function encodeChunkIntoSync(key: Buffer, name: string, plain: Buffer, out: Buffer): EncodedChunk {
  if (out.length < maxEncodedBytes(plain.length))
    throw new RangeError('encodeChunkInto: the output buffer is too small for this chunk');
  const compressed = maybeCompressSync(plain);
  return compressed ? writeObject(key, name, compressed, FLAG_DEFLATE, out) : writeSegmented(key, name, plain, out);
}

export async function encodeChunk(key: Buffer, name: string, plain: Buffer): Promise<Buffer> {
  const compressed = await maybeCompress(plain);
  const out = Buffer.allocUnsafe(maxEncodedBytes(plain.length));
  const { length } = compressed ? writeObject(key, name, compressed, FLAG_DEFLATE, out) : writeSegmented(key, name, plain, out);
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

/**
 * The segments of an FSC2 object (`obj` without its head: the same layout as a sealed cache
 * file's units, see cache/received.ts), for keeping it as received; undefined for any other
 * object. Checks nothing: the object must have been authenticated (`decodeChunk`) first.
 */
export function receivedSegments(obj: Buffer): Buffer | undefined {
  if (obj.length < HEAD_BYTES + SEAL_OVERHEAD || !obj.subarray(0, 4).equals(MAGIC2) || obj[4] !== 0) return undefined;
  return obj.subarray(HEAD_BYTES);
}

/** Plaintext bytes of an FSC2 object's `segments` (its bytes after the head), or undefined when no valid layout has that size. */
export function segmentedPlainBytes(segments: number): number | undefined {
  const full = Math.floor(segments / SEGMENT_STORED);
  const rem = segments - full * SEGMENT_STORED;
  if (rem === 0) return full > 0 ? full * SEGMENT_BYTES : undefined;
  if (rem < SEAL_OVERHEAD || (rem === SEAL_OVERHEAD && full > 0)) return undefined;
  return full * SEGMENT_BYTES + rem - SEAL_OVERHEAD;
}

/** The object bytes [start, end] (inclusive) of segments [first, last] of an FSC2 chunk of `plainBytes` bytes. */
export interface SegmentRange {
  readonly first: number;
  readonly last: number;
  readonly count: number;
  readonly start: number;
  readonly end: number;
}

/**
 * The segments of an FSC2 chunk of `plainBytes` bytes that cover plaintext [pos, pos+n), and
 * where they are in the object; `plainBytes` comes from the chunk's reference (authenticated
 * metadata), never from the object.
 */
export function segmentRange(plainBytes: number, pos: number, n: number): SegmentRange {
  const count = segmentCount(plainBytes);
  const first = Math.min(count - 1, Math.floor(pos / SEGMENT_BYTES));
  const last = Math.max(first, Math.min(count - 1, Math.floor((pos + Math.max(1, n) - 1) / SEGMENT_BYTES)));
  const lastPlain = Math.min(SEGMENT_BYTES, plainBytes - last * SEGMENT_BYTES);
  return {
    first,
    last,
    count,
    start: HEAD_BYTES + first * SEGMENT_STORED,
    end: HEAD_BYTES + last * SEGMENT_STORED + lastPlain + SEAL_OVERHEAD - 1,
  };
}

/**
 * Opens segments `first`, `first+1`, ... of the FSC2 chunk `name` of `count` segments, stored
 * back to back in `bytes` (as a ranged GET of `segmentRange` returns them, or as a cache file
 * holds them); returns their plaintext, which starts at plaintext offset first * SEGMENT_BYTES.
 * Throws AuthError unless every segment opens with its index and the count: a segment moved,
 * swapped, from another chunk, cut short or opened with the wrong count. With `into` (long
 * enough), the plaintext is opened there.
 */
export function openSegments(key: Buffer, ref: string, count: number, first: number, bytes: Buffer, into?: Buffer): Buffer {
  const what = `chunk ${ref}`;
  const name = contentName(ref);
  const n = Math.ceil(bytes.length / SEGMENT_STORED);
  if (n === 0 || first + n > count || bytes.length - (n - 1) * SEGMENT_STORED < SEAL_OVERHEAD) throw new AuthError(what);
  const plain = bytes.length - n * SEAL_OVERHEAD;
  // The plaintext goes into `into` when it has room (a pooled buffer), else a new one.
  const target = into && into.length >= plain ? into.subarray(0, plain) : undefined;
  if (n === 1) return open(key, bytes, segmentAad(name, first, count), what, target);
  const out = target ?? Buffer.allocUnsafe(plain);
  if (!openSegmentsInto(key, segmentAadPrefix(name), first, count, bytes, out)) throw new AuthError(what);
  return out;
}

/**
 * Seals a chunk of two segments of random bytes and opens its first segment, as a ranged read
 * does, so the first read of a mount does not pay for this code's first run (V8 compiles a
 * function at its first call; the cipher addon loads). Throws if the round trip fails.
 */
export function warmSegments(key: Buffer): void {
  const plain = randomInto(Buffer.allocUnsafe(SEGMENT_BYTES + 512));
  const out = Buffer.allocUnsafe(maxEncodedBytes(plain.length));
  const obj = out.subarray(0, writeSegmented(key, 'warm', plain, out).length);
  const r = segmentRange(plain.length, 100, 4096);
  const got = openSegments(key, 'warm', r.count, r.first, obj.subarray(r.start, r.end + 1));
  if (!got.equals(plain.subarray(0, SEGMENT_BYTES))) throw new Error('a sealed segment did not open to its bytes');
}

/**
 * `openSegments` of a whole FSC2 chunk off the JS thread: all its segments open in one job on
 * libuv's thread pool (with the cipher addon; on this thread without it), each straight into
 * its place in the plaintext. One job per chunk, not one per segment: the JS thread pays one
 * callback per chunk (64 promises and callbacks per 4 MiB chunk cost it about three times the
 * CPU), and chunks downloaded at once still open in parallel. Throws AuthError as
 * `openSegments` does; the plaintext is then never returned.
 */
async function openAllSegments(
  key: Buffer,
  name: string,
  count: number,
  bytes: Buffer,
  outFor?: (bytes: number) => Buffer | undefined,
): Promise<Buffer> {
  const what = `chunk ${name}`;
  if (
    Math.ceil(bytes.length / SEGMENT_STORED) !== count ||
    count === 0 ||
    bytes.length - (count - 1) * SEGMENT_STORED < SEAL_OVERHEAD
  )
    throw new AuthError(what);
  const n = bytes.length - count * SEAL_OVERHEAD;
  const given = outFor?.(n);
  const out = given && given.length >= n ? given.subarray(0, n) : Buffer.allocUnsafe(n);
  if (!(await openSegmentsIntoAsync(key, segmentAadPrefix(name), 0, count, bytes, out))) throw new AuthError(what);
  return out;
}

/**
 * The plaintext of chunk object `obj`, authenticated. `outFor`, asked with the plaintext's size
 * of a chunk sealed in segments, may give the buffer to decode it into (the result is then a
 * view of it; on an AuthError its content is wiped); other chunks get a buffer of their own.
 */
export async function decodeChunk(
  key: Buffer,
  ref: string,
  obj: Buffer,
  outFor?: (bytes: number) => Buffer | undefined,
): Promise<Buffer> {
  // A pack member's object is sealed under its chunk name, as one stored alone (packs.ts).
  const name = contentName(ref);
  if (obj.length >= HEAD_BYTES && obj.subarray(0, 4).equals(MAGIC2)) {
    const plain = obj[4] === 0 ? segmentedPlainBytes(obj.length - HEAD_BYTES) : undefined;
    if (plain === undefined) throw new AuthError(`chunk ${name}`);
    return openAllSegments(key, name, segmentCount(plain), obj.subarray(HEAD_BYTES), outFor);
  }
  if (obj.length < HEAD_BYTES || !obj.subarray(0, 4).equals(MAGIC)) throw new AuthError(`chunk ${name}`);
  const flags = obj[4]!;
  // Off the JS thread: a whole chunk is the largest thing the engine decrypts.
  const payload = await openAsync(key, obj.subarray(HEAD_BYTES), `chunk:${name}:${flags}`, `chunk ${name}`);
  if (flags & FLAG_DEFLATE) return inflateAsync(payload);
  return payload;
}
