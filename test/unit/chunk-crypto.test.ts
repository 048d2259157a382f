// Pins down sealing and key handling: seal/open round trip, any tampering or wrong key/name refused, sub-keys independent, chunk names keyed.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  AuthError,
  DEFAULT_KDF,
  chunkName,
  deriveKek,
  deriveKeys,
  newDataKey,
  newKdfParams,
  open,
  seal,
} from '../../electron/engine/chunk/crypto';

const key = randomBytes(32);

describe('seal/open', () => {
  it('round-trips empty, small and large plaintexts', () => {
    for (const size of [0, 1, 15, 16, 17, 4096, 1024 * 1024 + 3]) {
      const plain = randomBytes(size);
      const sealed = seal(key, plain, 'aad');
      assert.equal(sealed.length, 12 + size + 16, 'nonce | ciphertext | tag');
      assert.deepEqual(open(key, sealed, 'aad', 'blob'), plain);
    }
  });

  it('uses a fresh nonce each time, so equal plaintexts seal differently', () => {
    const plain = Buffer.from('same content');
    const a = seal(key, plain, 'x');
    const b = seal(key, plain, 'x');
    assert.notDeepEqual(a.subarray(0, 12), b.subarray(0, 12));
    assert.notDeepEqual(a, b);
  });

  it('refuses every single flipped byte', () => {
    const sealed = seal(key, randomBytes(64), 'aad');
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i]! ^= 0x80;
      assert.throws(() => open(key, bad, 'aad', 'blob'), AuthError, `byte ${i}`);
    }
  });

  it('refuses a wrong key, wrong associated data, truncation and extension', () => {
    const sealed = seal(key, Buffer.from('hello world'), 'meta:a');
    assert.throws(() => open(randomBytes(32), sealed, 'meta:a', 'blob'), AuthError);
    assert.throws(() => open(key, sealed, 'meta:b', 'blob'), AuthError);
    assert.throws(() => open(key, sealed, '', 'blob'), AuthError);
    for (const len of [0, 11, 27, sealed.length - 1]) {
      assert.throws(() => open(key, sealed.subarray(0, len), 'meta:a', 'blob'), AuthError, `truncated to ${len}`);
    }
    assert.throws(() => open(key, Buffer.concat([sealed, Buffer.from([0])]), 'meta:a', 'blob'), AuthError);
  });

  it('names what failed in the error message', () => {
    const sealed = seal(key, Buffer.from('x'), 'a');
    assert.throws(
      () => open(key, sealed, 'b', 'metadata object meta/log/1'),
      /metadata object meta\/log\/1 failed authentication/,
    );
  });
});

describe('keys', () => {
  it('derives five different sub-keys, deterministically from the data key', () => {
    const dataKey = newDataKey();
    assert.equal(dataKey.length, 32);
    const k = deriveKeys(dataKey);
    const again = deriveKeys(Buffer.from(dataKey));
    assert.deepEqual(again, k);
    const subs = [k.chunkKey, k.metaKey, k.nameKey, k.cacheKey, k.headerKey];
    assert.equal(new Set(subs.map((b) => b.toString('hex'))).size, 5);
    for (const sub of subs) {
      assert.equal(sub.length, 32);
      assert.notDeepEqual(sub, dataKey);
    }
    assert.notDeepEqual(deriveKeys(newDataKey()).chunkKey, k.chunkKey);
  });

  it('derives the passphrase key from passphrase and salt only, with Unicode normalisation', async () => {
    const kdf = { ...newKdfParams(), N: 1024 }; // small N keeps the test fast
    assert.equal(kdf.alg, DEFAULT_KDF.alg);
    assert.equal(Buffer.from(kdf.salt, 'base64').length, 16);
    const a = await deriveKek('correct horse', kdf);
    assert.deepEqual(await deriveKek('correct horse', kdf), a);
    assert.notDeepEqual(await deriveKek('correct horsf', kdf), a);
    assert.notDeepEqual(await deriveKek('correct horse', { ...kdf, salt: randomBytes(16).toString('base64') }), a);
    // "é" precomposed and decomposed are the same passphrase.
    assert.deepEqual(await deriveKek('caf\u00e9 passphrase', kdf), await deriveKek('cafe\u0301 passphrase', kdf));
  });
});

describe('chunkName', () => {
  it('is the same for the same key and content, and differs by key or content', () => {
    const k1 = randomBytes(32);
    const k2 = randomBytes(32);
    const content = Buffer.from('some chunk content');
    const name = chunkName(k1, content);
    assert.match(name, /^[0-9a-f]{40}$/);
    assert.equal(chunkName(k1, Buffer.from(content)), name);
    assert.notEqual(chunkName(k2, content), name, 'another filespace names the same content differently');
    assert.notEqual(chunkName(k1, Buffer.from('some chunk contenT')), name);
  });

  it('does not reveal the plain content hash', async () => {
    const { createHash } = await import('node:crypto');
    const content = Buffer.alloc(4096);
    const plainHash = createHash('sha256').update(content).digest('hex');
    assert.ok(!plainHash.startsWith(chunkName(randomBytes(32), content)));
  });
});
