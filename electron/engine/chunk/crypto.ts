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

export function seal(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const nonce = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', key, nonce);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = c.update(plaintext);
  const fin = c.final();
  return Buffer.concat([nonce, body, fin, c.getAuthTag()]);
}

export function open(key: Buffer, sealed: Buffer, aad: string, what: string): Buffer {
  if (sealed.length < 28) throw new AuthError(what);
  const nonce = sealed.subarray(0, 12);
  const tag = sealed.subarray(sealed.length - 16);
  const d = createDecipheriv('aes-256-gcm', key, nonce);
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(tag);
  try {
    return Buffer.concat([d.update(sealed.subarray(12, sealed.length - 16)), d.final()]);
  } catch {
    throw new AuthError(what);
  }
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
