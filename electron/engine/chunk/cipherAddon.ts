/**
 * AES-256-GCM into buffers the caller owns, through the cipher addon (native/cipher/cipher.c,
 * built by native/cipher/build-cipher.js) when it loads, else through node:crypto.
 *
 * Why an addon: node:crypto hands back a fresh buffer from every update, memory outside the JS
 * heap that only a full collection returns; sealing and opening a 64 KiB unit or a 4 MiB chunk
 * that way made most of the engine's full collections. The addon writes into the caller's
 * buffer (in place when `src` and `dst` are the same bytes) and allocates nothing the JS heap
 * sees; its async forms run on libuv's thread pool, so a whole chunk is opened off the JS
 * thread. The fallback (node:crypto, same results, on the calling thread) is used when the addon
 * is missing or finds no OpenSSL 3, and when FILESPACE_CIPHER=node (to compare or to test it).
 *
 * Contracts of both: `dst` is `src` itself or does not overlap it, and as long as it. An open
 * that fails authentication returns false with `dst` wiped (zeros): unauthenticated plaintext
 * never reaches a caller. While an async call runs, its buffers must not be touched.
 */

import { createCipheriv, createDecipheriv } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

interface Addon {
  gcmSeal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, src: Uint8Array, dst: Uint8Array, tag: Uint8Array): boolean;
  gcmOpen(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, src: Uint8Array, dst: Uint8Array, tag: Uint8Array): boolean;
  gmac(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, aad2: Uint8Array, tag: Uint8Array): boolean;
  ctr(key: Uint8Array, counter: Uint8Array, src: Uint8Array, dst: Uint8Array): boolean;
  /** Absent from an addon built before it (then units are sealed on this thread). */
  sealUnitsAsync?(
    key: Uint8Array,
    aad: Uint8Array,
    spec: Uint8Array,
    srcs: Uint8Array[],
    dsts: Uint8Array[],
    cb: (err: Error | null, ok: boolean) => void,
  ): void;
  gcmOpenAsync(
    key: Uint8Array,
    iv: Uint8Array,
    aad: Uint8Array,
    src: Uint8Array,
    dst: Uint8Array,
    tag: Uint8Array,
    cb: (err: Error | null, ok: boolean) => void,
  ): void;
  gmacUnitsAsync(key: Uint8Array, prefix: Uint8Array, src: Uint8Array, table: Uint8Array, cb: (err: Error | null) => void): void;
  /** Absent from an addon built before it (then segments open one call each). */
  openSegments?(key: Uint8Array, prefix: Uint8Array, first: number, count: number, src: Uint8Array, dst: Uint8Array): boolean;
  openSegmentsAsync?(
    key: Uint8Array,
    prefix: Uint8Array,
    first: number,
    count: number,
    src: Uint8Array,
    dst: Uint8Array,
    cb: (err: Error | null, ok: boolean) => void,
  ): void;
  /** Absent from an addon built before it, or where HMAC-SHA256 was not found. */
  openUnitsNameAsync?(
    key: Uint8Array,
    aad: Uint8Array,
    nameKey: Uint8Array,
    buf: Uint8Array,
    first: number,
    name: Uint8Array,
    cb: (err: Error | null, ok: boolean) => void,
  ): void;
  /** Absent from an addon built before it, or where no zlib crc32 was found. */
  sealSegmentsAsync?(
    key: Uint8Array,
    prefix: Uint8Array,
    spec: Uint8Array,
    src: Uint8Array,
    dst: Uint8Array,
    sample: number,
    cb: (err: Error | null, ok: boolean) => void,
  ): void;
  /** Absent from an addon built before it. */
  writeDirectAsync?(
    fd: number,
    buffers: Uint8Array[],
    cb: (err: (Error & { code?: string }) | null, total: number) => void,
  ): void;
  /** Absent from an addon built before it. */
  pageOffset?(buf: Uint8Array): number;
  /** Absent from an addon built before it. */
  directCopied?(): number;
  readonly openssl: string;
}

export const CIPHER_ADDON = path.resolve(__dirname, '..', '..', '..', '..', 'native', 'cipher', 'addon', 'cipher.node');

function load(): { addon: Addon | undefined; why: string } {
  if (process.env.FILESPACE_CIPHER === 'node') return { addon: undefined, why: 'FILESPACE_CIPHER=node' };
  if (!fs.existsSync(CIPHER_ADDON)) return { addon: undefined, why: `no addon at ${CIPHER_ADDON}` };
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { addon: require(CIPHER_ADDON) as Addon, why: '' };
  } catch (err) {
    return { addon: undefined, why: err instanceof Error ? err.message : String(err) };
  }
}

const loaded = load();
const addon = loaded.addon;

/** Which implementation runs: `addon (<where OpenSSL was found>)` or `node:crypto (<why>)`. */
export const cipherBackend = addon ? `addon (${addon.openssl})` : `node:crypto (${loaded.why})`;

/** Output of node:crypto's update is taken in slices of this size (bounded garbage per call). */
const SLICE = 64 * 1024;

function view(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}

function checkDst(src: Uint8Array, dst: Uint8Array): void {
  if (src.byteLength !== dst.byteLength) throw new RangeError('dst: must be as long as src');
  if (src.buffer === dst.buffer && src.byteOffset !== dst.byteOffset) {
    const a = src.byteOffset;
    const b = dst.byteOffset;
    if (a < b + dst.byteLength && b < a + src.byteLength) throw new RangeError('dst: must be src itself or not overlap it');
  }
}

/** node:crypto's update of `src` into `dst`, slice by slice (in place is fine: slice i is read before it is written). */
function updateInto(c: { update(b: Buffer): Buffer }, src: Buffer, dst: Buffer): void {
  let at = 0;
  for (let i = 0; i < src.length; i += SLICE) at += c.update(src.subarray(i, i + SLICE)).copy(dst, at);
  if (at !== src.length) throw new Error('cipher: short output');
}

/** Encrypts `src` into `dst` with AES-256-GCM under `key` and the 12-byte `iv`; the tag goes to `tag` (16 bytes). */
export function gcmSealInto(
  key: Buffer,
  iv: Uint8Array,
  aad: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  tag: Uint8Array,
): void {
  if (addon) {
    addon.gcmSeal(key, iv, aad, src, dst, tag);
    return;
  }
  checkDst(src, dst);
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(aad);
  updateInto(c, view(src), view(dst));
  c.final();
  c.getAuthTag().copy(view(tag));
}

/**
 * Seals units of a sealed cache file in one job on libuv's thread pool (with an addon that has
 * it; else on this thread): unit k's plaintext `srcs[k]` into the start of `dsts[k]` as
 * `nonce | ciphertext | tag`, the nonce from `spec[16k+4 .. 16k+16]`, the associated data
 * `aad` (20 bytes) with its last 4 bytes replaced by `spec[16k .. 16k+4]` (the unit's index).
 * The buffers are held until it settles; `dsts` must not be touched meanwhile.
 */
export function sealUnitsAsync(key: Buffer, aad: Buffer, spec: Buffer, srcs: Buffer[], dsts: Buffer[]): Promise<void> {
  if (aad.length !== 20) throw new RangeError('aad: 20 bytes expected');
  if (spec.length !== srcs.length * 16 || dsts.length !== srcs.length)
    throw new RangeError('spec, dsts: one entry per unit expected');
  const batch = addon?.sealUnitsAsync?.bind(addon);
  if (!batch) {
    const unitAad = Buffer.from(aad);
    srcs.forEach((src, k) => {
      const dst = dsts[k]!;
      if (dst.length < src.length + 28) throw new RangeError('dsts: room for the sealed unit expected');
      spec.copy(unitAad, 16, 16 * k, 16 * k + 4);
      spec.copy(dst, 0, 16 * k + 4, 16 * k + 16);
      gcmSealInto(
        key,
        dst.subarray(0, 12),
        unitAad,
        src,
        dst.subarray(12, 12 + src.length),
        dst.subarray(12 + src.length, 28 + src.length),
      );
    });
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => batch(key, aad, spec, srcs, dsts, (err) => (err ? reject(err) : resolve())));
}

function openFallback(key: Buffer, iv: Uint8Array, aad: Uint8Array, src: Uint8Array, dst: Uint8Array, tag: Uint8Array): boolean {
  checkDst(src, dst);
  const out = view(dst);
  try {
    const d = createDecipheriv('aes-256-gcm', key, iv);
    d.setAAD(aad);
    d.setAuthTag(tag);
    updateInto(d, view(src), out);
    d.final();
    return true;
  } catch {
    out.fill(0);
    return false;
  }
}

/** Decrypts `src` into `dst` and checks `tag`; false (with `dst` wiped) when it fails authentication. */
export function gcmOpenInto(
  key: Buffer,
  iv: Uint8Array,
  aad: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  tag: Uint8Array,
): boolean {
  if (addon) return addon.gcmOpen(key, iv, aad, src, dst, tag);
  return openFallback(key, iv, aad, src, dst, tag);
}

/**
 * `gcmOpenInto` on libuv's thread pool (with the addon; else on this thread). The buffers are
 * held until it settles and must not be touched meanwhile.
 */
export function gcmOpenIntoAsync(
  key: Buffer,
  iv: Uint8Array,
  aad: Uint8Array,
  src: Uint8Array,
  dst: Uint8Array,
  tag: Uint8Array,
): Promise<boolean> {
  if (!addon) return Promise.resolve(openFallback(key, iv, aad, src, dst, tag));
  return new Promise((resolve, reject) =>
    addon.gcmOpenAsync(key, iv, aad, src, dst, tag, (err, ok) => (err ? reject(err) : resolve(ok))),
  );
}

/** The GCM tag of no plaintext with associated data `aad | aad2` (GMAC), into `tag`. */
export function gmacInto(key: Buffer, iv: Uint8Array, aad: Uint8Array, aad2: Uint8Array, tag: Uint8Array): void {
  if (addon) {
    addon.gmac(key, iv, aad, aad2, tag);
    return;
  }
  const g = createCipheriv('aes-256-gcm', key, iv);
  g.setAAD(aad);
  g.setAAD(aad2);
  g.final();
  g.getAuthTag().copy(view(tag));
}

/** AES-256-CTR of `src` into `dst` from the 16-byte initial `counter` (no authentication). */
export function ctrInto(key: Buffer, counter: Uint8Array, src: Uint8Array, dst: Uint8Array): void {
  if (addon) {
    addon.ctr(key, counter, src, dst);
    return;
  }
  checkDst(src, dst);
  updateInto(createDecipheriv('aes-256-ctr', key, counter), view(src), view(dst));
}

/** Bytes per unit of `gmacUnits` and per entry of its table: nonce (12) | code (16). */
export const GMAC_UNIT = 64 * 1024;
export const GMAC_ENTRY = 28;

function gmacUnitsFallback(key: Buffer, prefix: Uint8Array, src: Uint8Array, table: Uint8Array): void {
  const p = Buffer.from(prefix);
  const s = view(src);
  const t = view(table);
  const units = Math.ceil(s.length / GMAC_UNIT);
  if (t.length !== units * GMAC_ENTRY) throw new RangeError('table: 28 bytes per 64 KiB unit expected');
  for (let u = 0; u < units; u++) {
    p.writeUInt32BE(u, 16);
    const at = u * GMAC_ENTRY;
    gmacInto(
      key,
      t.subarray(at, at + 12),
      p,
      s.subarray(u * GMAC_UNIT, (u + 1) * GMAC_UNIT),
      t.subarray(at + 12, at + GMAC_ENTRY),
    );
  }
}

/**
 * The codes of every 64 KiB unit u of `src` (the last may be shorter): the GMAC under `key`,
 * with the nonce already at `table[u * 28]`, of `prefix` (u written big-endian at its bytes
 * 16..19; `prefix` itself is not changed) then the unit, into `table[u * 28 + 12]` (16 bytes).
 * On libuv's thread pool with the addon; `src` and `table` must not be touched until it settles.
 */
export function gmacUnitsAsync(key: Buffer, prefix: Uint8Array, src: Uint8Array, table: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!addon) {
      gmacUnitsFallback(key, prefix, src, table); // a throw here rejects
      resolve();
      return;
    }
    addon.gmacUnitsAsync(key, prefix, src, table, (err) => (err ? reject(err) : resolve()));
  });
}

/** Bytes of an FSC2 segment's plaintext (all but the last) and as stored: nonce (12) | ciphertext | tag (16). */
export const SEGMENT_PLAIN = 64 * 1024;
export const SEGMENT_SEALED = SEGMENT_PLAIN + 28;

/** Segments in `src` (back to back, all but the last SEGMENT_SEALED bytes); throws RangeError when they do not fit `first`, `count` and `dst`. */
function checkSegments(prefix: Uint8Array, first: number, count: number, src: Uint8Array, dst: Uint8Array): number {
  const n = Math.ceil(src.byteLength / SEGMENT_SEALED);
  if (prefix.byteLength > 256) throw new RangeError('prefix: at most 256 bytes expected');
  for (const [v, what] of [
    [first, 'first'],
    [count, 'count'],
  ] as const)
    if (!Number.isInteger(v) || v < 0 || v >= 2 ** 32) throw new RangeError(`${what}: a whole number expected`);
  if (n === 0 || src.byteLength - (n - 1) * SEGMENT_SEALED < 28) throw new RangeError('src: whole segments expected');
  if (first + n > count) throw new RangeError('src: more segments than first and count leave');
  if (dst.byteLength !== src.byteLength - n * 28) throw new RangeError('dst: must be as long as the plaintext');
  if (src.buffer === dst.buffer) {
    const a = src.byteOffset;
    const b = dst.byteOffset;
    if (dst.byteLength > 0 && a < b + dst.byteLength && b < a + src.byteLength) throw new RangeError('dst: must not overlap src');
  }
  return n;
}

/** The arguments of `openSegmentsInto` and `openSegmentsIntoAsync`, in their order. */
type SegmentsArgs = [key: Buffer, prefix: Uint8Array, first: number, count: number, src: Uint8Array, dst: Uint8Array];

/** Segments one GCM open each: the addon's when it is older than `openSegments`, else node:crypto's. */
function openSegmentsFallback(...[key, prefix, first, count, src, dst]: SegmentsArgs): boolean {
  const n = checkSegments(prefix, first, count, src, dst);
  const openOne = addon ? addon.gcmOpen.bind(addon) : openFallback;
  const s = view(src);
  const d = view(dst);
  for (let k = 0; k < n; k++) {
    const seg = s.subarray(k * SEGMENT_SEALED, (k + 1) * SEGMENT_SEALED);
    const aad = Buffer.concat([prefix, Buffer.from(`${first + k}:${count}`, 'latin1')]);
    const out = d.subarray(k * SEGMENT_PLAIN, k * SEGMENT_PLAIN + seg.length - 28);
    if (!openOne(key, seg.subarray(0, 12), aad, seg.subarray(12, seg.length - 16), out, seg.subarray(seg.length - 16))) {
      d.fill(0);
      return false;
    }
  }
  return true;
}

/**
 * Opens FSC2 segments `first`, `first+1`, ... of a chunk of `count` segments, stored back to
 * back in `src` (nonce | ciphertext | tag each; every one but the last SEGMENT_SEALED bytes),
 * segment i with the associated data `prefix` then `<i>:<count>` (decimal), into `dst` at
 * SEGMENT_PLAIN bytes per segment. False, with all of `dst` wiped, when any segment fails
 * authentication. `dst` must not overlap `src`.
 */
export function openSegmentsInto(...args: SegmentsArgs): boolean {
  if (addon?.openSegments) return addon.openSegments(...args);
  return openSegmentsFallback(...args);
}

/**
 * `openSegmentsInto` as one job on libuv's thread pool (with the addon; else on this thread):
 * the JS thread pays one callback per call, not one per segment. The buffers are held until it
 * settles and must not be touched meanwhile.
 */
export function openSegmentsIntoAsync(...args: SegmentsArgs): Promise<boolean> {
  const native = addon?.openSegmentsAsync?.bind(addon);
  if (!native) return new Promise((resolve) => resolve(openSegmentsFallback(...args)));
  return new Promise((resolve, reject) => native(...args, (err, ok) => (err ? reject(err) : resolve(ok))));
}

/**
 * Whether `openUnitsAndNameAsync` and `sealSegmentsAsync` run on libuv's thread pool. Without
 * them (an addon without HMAC or zlib's crc32, or node:crypto) callers do that work on their
 * own thread, as they did before.
 */
export const uploadJobsOffThread = addon?.openUnitsNameAsync !== undefined && addon.sealSegmentsAsync !== undefined;

/**
 * On libuv's thread pool: opens the sealed units `first`, `first+1`, ... of a sealed cache file
 * (cache/sealed.ts), as read from it into `buf`, in place (unit i's data moved down to
 * (i - first) * 64 KiB), under `key` and the file's 20-byte unit prefix `aad`; then names the
 * data with HMAC-SHA256 under `nameKey` into `name` (32 bytes). False, with all of `buf` wiped,
 * when a unit fails authentication or is torn. Only where `uploadJobsOffThread`; the buffers are
 * held until it settles and must not be touched meanwhile.
 */
export function openUnitsAndNameAsync(
  key: Buffer,
  aad: Buffer,
  nameKey: Buffer,
  buf: Buffer,
  first: number,
  name: Buffer,
): Promise<boolean> {
  const native = addon?.openUnitsNameAsync?.bind(addon);
  if (!native) return Promise.reject(new Error('cipher addon: openUnitsNameAsync is not available'));
  return new Promise((resolve, reject) =>
    native(key, aad, nameKey, buf, first, name, (err, ok) => (err ? reject(err) : resolve(ok))),
  );
}

/**
 * On libuv's thread pool: seals the plaintext `src` as FSC2 segments (chunk/format.ts) into
 * the end of `dst` (its first `dst.length - src.length - 28 * count` bytes, the header, are the
 * caller's and kept), segment k with the nonce `spec[12k .. 12k+12]` and the associated data
 * `prefix` then `<k>:<count>`; then writes the CRC32 of all of `dst` big-endian into the last 4
 * bytes of `spec` (12 bytes per segment, then 4), and resolves true. With `sample` > 0 it first
 * deflates the first `sample` bytes of `src` (zlib, level 1): if they shrink to 7/8 or less it
 * seals nothing and resolves false (the chunk is worth deflating). Only where
 * `uploadJobsOffThread`; the buffers are held until it settles and must not be touched meanwhile.
 */
export function sealSegmentsAsync(
  key: Buffer,
  prefix: Buffer,
  spec: Buffer,
  src: Buffer,
  dst: Buffer,
  sample = 0,
): Promise<boolean> {
  const native = addon?.sealSegmentsAsync?.bind(addon);
  if (!native) return Promise.reject(new Error('cipher addon: sealSegmentsAsync is not available'));
  return new Promise((resolve, reject) =>
    native(key, prefix, spec, src, dst, sample, (err, ok) => (err ? reject(err) : resolve(ok))),
  );
}

/** The alignment `writeDirect` writes in place from (see `directPlace`). */
export const DIRECT_ALIGN = 4096;

/**
 * Writes `buffers` back to back from the start of `fd`, a file opened with O_DIRECT, and cuts
 * the file to their total length, on libuv's thread pool. O_DIRECT wants memory, offsets and
 * lengths aligned: a buffer whose bytes at an aligned file offset lie at an aligned address is
 * written from where it lies (`directPlace` arranges that), the rest through an aligned buffer
 * of the addon's own, the last block padded and cut back. Undefined when the addon
 * that can do it is not loaded: the caller writes the file through the page cache instead.
 * The buffers must not change until the promise settles.
 */
export function writeDirect(fd: number, buffers: Uint8Array[]): Promise<number> | undefined {
  const write = addon?.writeDirectAsync?.bind(addon);
  if (!write) return undefined;
  return new Promise((resolve, reject) => write(fd, buffers, (err, total) => (err ? reject(err) : resolve(total))));
}

/**
 * The offset in `buf` from which `skew + k * DIRECT_ALIGN` bytes in, the bytes lie at an aligned
 * address: bytes placed at `buf[directPlace(buf, skew)]` that will be written by `writeDirect` at
 * file offset `skew` go to the disk from where they lie. 0 when the addon cannot tell (the write
 * is then only copied once more, never wrong).
 */
export function directPlace(buf: Uint8Array, skew: number): number {
  const at = addon?.pageOffset?.(buf);
  if (at === undefined) return 0;
  return (((skew - at) % DIRECT_ALIGN) + DIRECT_ALIGN) % DIRECT_ALIGN;
}

/** Bytes `writeDirect` has copied through the addon's aligned buffers so far (undefined without the addon). */
export function directCopiedBytes(): number | undefined {
  return addon?.directCopied?.();
}

/** Whether `writeDirect` can run here. */
export const canWriteDirect = addon?.writeDirectAsync !== undefined;
