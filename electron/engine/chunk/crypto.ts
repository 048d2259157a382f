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
 * so sealing allocates nothing of the blob's size and copies nothing twice.
 */

import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, scrypt } from 'node:crypto';

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

/**
 * The cipher's output is taken in slices of this size and copied to where it belongs, so a
 * whole chunk never needs a buffer of its size from the cipher (nor a concatenation after it).
 */
const CIPHER_SLICE = 64 * 1024;

export function seal(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const out = Buffer.allocUnsafe(plaintext.length + SEAL_OVERHEAD);
  sealInto(key, plaintext, aad, out, 0);
  return out;
}

/**
 * `seal` into `out` at `offset` (room for `plaintext.length + SEAL_OVERHEAD` bytes); returns
 * the bytes written. The result is the same `nonce | ciphertext | tag` as `seal`'s. With
 * `onOutput`, every piece written is handed over as soon as it is in `out` (a checksum over
 * the sealed bytes then needs no second pass over them).
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
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(aad, 'utf8'));
  let at = offset + nonce.copy(out, offset);
  onOutput?.(out.subarray(offset, at));
  for (let i = 0; i < plaintext.length; i += CIPHER_SLICE) {
    const from = at;
    at += c.update(plaintext.subarray(i, i + CIPHER_SLICE)).copy(out, at);
    onOutput?.(out.subarray(from, at));
  }
  const from = at;
  at += c.final().copy(out, at); // empty for GCM
  at += c.getAuthTag().copy(out, at);
  onOutput?.(out.subarray(from, at));
  return at - offset;
}

export function open(key: Buffer, sealed: Buffer, aad: string, what: string): Buffer {
  if (sealed.length < SEAL_OVERHEAD) throw new AuthError(what);
  const nonce = sealed.subarray(0, 12);
  const tag = sealed.subarray(sealed.length - 16);
  const d = createDecipheriv('aes-256-gcm', key, nonce);
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  try {
    const body = d.update(sealed.subarray(12, sealed.length - 16));
    const fin = d.final(); // empty for GCM: the plaintext is the update's output, no copy
    return fin.length === 0 ? body : Buffer.concat([body, fin]);
  } catch {
    throw new AuthError(what);
  }
}

/**
 * Decrypts `part`: the bytes of a `seal`ed blob's ciphertext that start `offset` bytes into it
 * (a multiple of 16), given the blob's nonce. AES-GCM encrypts with AES-CTR from counter 2, so
 * any range decrypts alone. Nothing is authenticated: only for bytes whose integrity was
 * checked otherwise (a whole blob authenticated once, then kept under codes of its own).
 */
export function decryptSealedPart(key: Buffer, nonce: Buffer, part: Buffer, offset: number): Buffer {
  if (nonce.length !== 12 || offset % 16 !== 0 || offset < 0) throw new Error('decryptSealedPart: bad nonce or offset');
  const counter = Buffer.alloc(16);
  nonce.copy(counter, 0);
  counter.writeUInt32BE((2 + offset / 16) >>> 0, 12);
  return createDecipheriv('aes-256-ctr', key, counter).update(part);
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
