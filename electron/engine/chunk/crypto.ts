/**
 * Keys and authenticated encryption.
 *
 * A filespace has one random 256-bit data key. It is stored in the bucket only wrapped
 * (AES-256-GCM) by a key-encryption key derived from the passphrase with scrypt. From the data
 * key, HKDF derives independent sub-keys: one to encrypt chunks, one to encrypt metadata, one
 * to name chunks (HMAC), so the bucket owner sees neither content nor content hashes, one to
 * encrypt this machine's cache files, and one to seal the filespace header's fields.
 *
 * Every sealed blob is `nonce(12) | ciphertext | tag(16)` with associated data that binds it to
 * the name it is stored under, so a blob copied to another key fails authentication.
 * `sealInto` writes that blob into a buffer the caller owns (a pooled one for whole chunks),
 * so sealing allocates nothing of the blob's size and copies nothing twice. The cipher runs
 * through chunk/cipherAddon.ts: into the caller's buffers, with nothing allocated per call
 * (the addon), and for a whole chunk on libuv's thread pool (`openAsync`).
 */

import { createHmac, hkdfSync, randomBytes, randomFillSync, scrypt } from 'node:crypto';
import { ctrInto, gcmOpenInto, gcmOpenIntoAsync, gcmSealInto } from './cipherAddon';

export interface KdfParams {
  readonly alg: 'scrypt';
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: string; // base64
}

export interface Keys {
  readonly chunkKey: Buffer;
  readonly metaKey: Buffer;
  readonly nameKey: Buffer;
  /** Encrypts this machine's cache files at rest. */
  readonly cacheKey: Buffer;
  /** Seals the fields of the plaintext header (`filespace.json`), so a change to them is detected. */
  readonly headerKey: Buffer;
}

export const DEFAULT_KDF: Omit<KdfParams, 'salt'> = { alg: 'scrypt', N: 2 ** 15, r: 8, p: 1 };

export class AuthError extends Error {
  constructor(what: string) {
    super(`${what} failed authentication (tampered, truncated or encrypted with another key)`);
    this.name = 'AuthError';
  }
}

export function newKdfParams(): KdfParams {
  return { ...DEFAULT_KDF, salt: randomBytes(16).toString('base64') };
}

export function deriveKek(passphrase: string, kdf: KdfParams): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(
      passphrase.normalize('NFC'),
      Buffer.from(kdf.salt, 'base64'),
      32,
      { N: kdf.N, r: kdf.r, p: kdf.p, maxmem: 256 * kdf.N * kdf.r * 2 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** Bytes `seal` adds to a plaintext: the nonce before it and the tag after it. */
export const SEAL_OVERHEAD = 12 + 16;

export function seal(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const out = Buffer.allocUnsafe(plaintext.length + SEAL_OVERHEAD);
  sealInto(key, plaintext, aad, out, 0);
  return out;
}

/** Random bytes drawn per call into the random generator (see `freshRandom`). */
const RANDOM_DRAW = 3_072;
let randomDraw = Buffer.alloc(0);
let randomAt = 0;

/**
 * `n` fresh random bytes, handed out from a draw of `RANDOM_DRAW`: the random generator is
 * called once per 256 nonces, not once per nonce (a call costs microseconds, about as much as
 * sealing a few KiB). Every byte is still its output, handed out once. A draw is never refilled,
 * only replaced, since bytes handed out may still be on their way to disk (writev) when the
 * next are drawn.
 */
export function freshRandom(n: number): Buffer {
  if (n > RANDOM_DRAW) return randomFillSync(Buffer.allocUnsafeSlow(n));
  if (randomAt + n > randomDraw.length) {
    randomDraw = randomFillSync(Buffer.allocUnsafeSlow(RANDOM_DRAW));
    randomAt = 0;
  }
  const got = randomDraw.subarray(randomAt, randomAt + n);
  randomAt += n;
  return got;
}

/** A fresh random nonce of 12 bytes (see `freshRandom`). */
export function freshNonce(): Buffer {
  return freshRandom(12);
}

/** Fills `out` with fresh random bytes (see `freshRandom`); returns it. */
export function randomInto(out: Buffer): Buffer {
  for (let at = 0; at < out.length;) at += freshRandom(Math.min(out.length - at, RANDOM_DRAW)).copy(out, at);
  return out;
}

/**
 * `seal` into `out` at `offset` (room for `plaintext.length + SEAL_OVERHEAD` bytes, not
 * overlapping `plaintext`); returns the bytes written. The result is the same
 * `nonce | ciphertext | tag` as `seal`'s. With `onOutput`, every piece written is handed over
 * as soon as it is in `out` (a checksum over the sealed bytes then needs no second read of
 * them by the caller).
 */
export function sealInto(
  key: Buffer,
  plaintext: Buffer,
  aad: string,
  out: Buffer,
  offset: number,
  onOutput?: (written: Buffer) => void,
): number {
  if (out.length - offset < plaintext.length + SEAL_OVERHEAD)
    throw new RangeError('sealInto: the output has no room for the sealed bytes');
  const body = offset + 12;
  const end = body + plaintext.length;
  const nonce = randomInto(out.subarray(offset, body));
  onOutput?.(nonce);
  gcmSealInto(key, nonce, Buffer.from(aad, 'utf8'), plaintext, out.subarray(body, end), out.subarray(end, end + 16));
  onOutput?.(out.subarray(body, end));
  onOutput?.(out.subarray(end, end + 16));
  return end + 16 - offset;
}

/**
 * Opens a `seal`ed blob: its plaintext, in `into` when given (exactly as long as the plaintext;
 * it holds nothing readable if authentication fails), else in a new buffer.
 */
export function open(key: Buffer, sealed: Buffer, aad: string, what: string, into?: Buffer): Buffer {
  if (sealed.length < SEAL_OVERHEAD) throw new AuthError(what);
  if (into && into.length !== sealed.length - SEAL_OVERHEAD)
    throw new RangeError('open: the output is not as long as the plaintext');
  const body = into ?? Buffer.allocUnsafe(sealed.length - SEAL_OVERHEAD);
  const ok = gcmOpenInto(
    key,
    sealed.subarray(0, 12),
    Buffer.from(aad, 'utf8'),
    sealed.subarray(12, sealed.length - 16),
    body,
    sealed.subarray(sealed.length - 16),
  );
  if (!ok) throw new AuthError(what);
  return body;
}

/**
 * `open` off the JS thread (libuv's thread pool, where the cipher addon is loaded): for whole
 * chunks, so the engine thread neither decrypts nor allocates per slice. `sealed` must not
 * change until it settles.
 */
export async function openAsync(key: Buffer, sealed: Buffer, aad: string, what: string, into?: Buffer): Promise<Buffer> {
  if (sealed.length < SEAL_OVERHEAD) throw new AuthError(what);
  if (into && into.length !== sealed.length - SEAL_OVERHEAD)
    throw new RangeError('openAsync: the output is not as long as the plaintext');
  const body = into ?? Buffer.allocUnsafe(sealed.length - SEAL_OVERHEAD);
  const ok = await gcmOpenIntoAsync(
    key,
    sealed.subarray(0, 12),
    Buffer.from(aad, 'utf8'),
    sealed.subarray(12, sealed.length - 16),
    body,
    sealed.subarray(sealed.length - 16),
  );
  if (!ok) throw new AuthError(what);
  return body;
}

/**
 * Decrypts `part`: the bytes of a `seal`ed blob's ciphertext that start `offset` bytes into it
 * (a multiple of 16), given the blob's nonce. AES-GCM encrypts with AES-CTR from counter 2, so
 * any range decrypts alone. Nothing is authenticated: only for bytes whose integrity was
 * checked otherwise (a whole blob authenticated once, then kept under codes of its own). The
 * result goes to `into` when given (as long as `part`; `part` itself decrypts in place), else
 * to a new buffer.
 */
export function decryptSealedPart(key: Buffer, nonce: Buffer, part: Buffer, offset: number, into?: Buffer): Buffer {
  if (nonce.length !== 12 || offset % 16 !== 0 || offset < 0) throw new Error('decryptSealedPart: bad nonce or offset');
  const counter = Buffer.alloc(16);
  nonce.copy(counter, 0);
  counter.writeUInt32BE((2 + offset / 16) >>> 0, 12);
  const out = into ?? Buffer.allocUnsafe(part.length);
  ctrInto(key, counter, part, out);
  return out;
}

export function newDataKey(): Buffer {
  return randomBytes(32);
}

export function deriveKeys(dataKey: Buffer): Keys {
  const sub = (info: string) => Buffer.from(hkdfSync('sha256', dataKey, Buffer.alloc(0), info, 32));
  return {
    chunkKey: sub('filespace chunk v1'),
    metaKey: sub('filespace meta v1'),
    nameKey: sub('filespace name v1'),
    cacheKey: sub('filespace cache v1'),
    headerKey: sub('filespace header v1'),
  };
}

/** Keyed content name: equal plaintext gives equal names inside one filespace only. */
export function chunkName(nameKey: Buffer, plaintext: Buffer): string {
  return createHmac('sha256', nameKey).update(plaintext).digest('hex').slice(0, 40);
}
