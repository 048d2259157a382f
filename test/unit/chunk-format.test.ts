// Pins down the chunk object format: round trip, compression only when it pays, and refusal of any tampered, renamed or truncated object.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, it } from 'node:test';
import { AuthError } from '../../electron/engine/chunk/crypto';
import { chunkKey, decodeChunk, encodeChunk, encodeChunkInto, maxEncodedBytes } from '../../electron/engine/chunk/format';

const key = randomBytes(32);
const HEADER = 5; // "FSC1" | flags
const SEAL_OVERHEAD = 12 + 16;

function text(bytes: number): Buffer {
  const line = Buffer.from('2024-01-01T00:00:00Z INFO request served in 12ms path=/api/v1/items\n');
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += line.length) line.copy(out, i);
  return out;
}

describe('chunk objects', () => {
  it('places chunks under a two-character fan-out prefix', () => {
    assert.equal(chunkKey('abcdef0123'), 'chunks/ab/abcdef0123');
  });

  it('round-trips empty, tiny, compressible and random chunks', async () => {
    for (const plain of [Buffer.alloc(0), Buffer.from('x'), text(300_000), randomBytes(300_000), Buffer.alloc(1 << 20)]) {
      const obj = await encodeChunk(key, 'name', plain);
      assert.deepEqual(obj.subarray(0, 4), Buffer.from('FSC1'));
      assert.deepEqual(await decodeChunk(key, 'name', obj), plain);
    }
  });

  it('compresses compressible data and stores it deflated', async () => {
    const plain = text(256 * 1024);
    const obj = await encodeChunk(key, 'n', plain);
    assert.equal(obj[4], 1, 'deflate flag');
    assert.ok(obj.length < plain.length / 4, `${obj.length} bytes for ${plain.length} of text`);
  });

  it('stores random data as is, at its own size plus a fixed overhead', async () => {
    for (const size of [1000, 100_000, 1 << 20]) {
      const plain = randomBytes(size);
      const obj = await encodeChunk(key, 'n', plain);
      assert.equal(obj[4], 0, 'no compression flag');
      assert.equal(obj.length, size + HEADER + SEAL_OVERHEAD);
    }
  });

  it('does not compress tiny chunks', async () => {
    const obj = await encodeChunk(key, 'n', Buffer.alloc(100));
    assert.equal(obj[4], 0);
  });

  it('refuses an object with any single flipped byte', async () => {
    for (const plain of [randomBytes(200), text(4096)]) {
      const obj = await encodeChunk(key, 'n', plain);
      for (let i = 0; i < obj.length; i++) {
        const bad = Buffer.from(obj);
        bad[i]! ^= 0x04;
        await assert.rejects(decodeChunk(key, 'n', bad), AuthError, `byte ${i} of ${obj.length}`);
      }
    }
  });

  it('refuses a changed flags byte, even to a valid flag value', async () => {
    const raw = await encodeChunk(key, 'n', randomBytes(1000));
    const deflated = await encodeChunk(key, 'n', text(4096));
    const setFlag = (obj: Buffer, v: number) => Buffer.concat([obj.subarray(0, 4), Buffer.from([v]), obj.subarray(5)]);
    await assert.rejects(decodeChunk(key, 'n', setFlag(raw, 1)), AuthError);
    await assert.rejects(decodeChunk(key, 'n', setFlag(deflated, 0)), AuthError);
    await assert.rejects(decodeChunk(key, 'n', setFlag(raw, 0x81)), AuthError);
  });

  it('refuses an object under another name or key, truncated, or without the magic', async () => {
    const obj = await encodeChunk(key, 'aaaa', text(4096));
    await assert.rejects(decodeChunk(key, 'aaab', obj), AuthError);
    await assert.rejects(decodeChunk(randomBytes(32), 'aaaa', obj), AuthError);
    for (const len of [0, 3, 4, 5, 20, obj.length - 1]) {
      await assert.rejects(decodeChunk(key, 'aaaa', obj.subarray(0, len)), AuthError, `truncated to ${len}`);
    }
    await assert.rejects(decodeChunk(key, 'aaaa', Buffer.concat([Buffer.from('FSC2'), obj.subarray(4)])), AuthError);
  });

  it('reads objects written by the first version of the format (FSC1, fixed bytes)', async () => {
    // Sealed with key 01..01 and nonce 02..02 by the format's definition, outside this code:
    // `FSC1 | flags | nonce | AES-256-GCM(payload, aad "chunk:<name>:<flags>") | tag`.
    const fixedKey = Buffer.alloc(32, 1);
    const stored = Buffer.from(
      '465343310002020202020202020202020266f6aa213f39aadda0a9dda439c3e2d0db95a5878e91eb18aff494db0e9e060c1e1070170209839b2f4b728ff055311adeb4f1665aaee83adc35a059dd67441915',
      'hex',
    );
    assert.equal((await decodeChunk(fixedKey, 'n1', stored)).toString(), 'a chunk sealed by the first version of the format');
    const deflated = Buffer.from(
      '46534331010202020202020202020202024c828187629a0aabfb82f10415ea93fa08e1f926a3e4c5baf1adceaa50b05955b9b3d164a52020e7a139b7cf095779f5406dd3fc25f3d9260bb195f9bc55c6118af2d410d01b774e',
      'hex',
    );
    assert.equal(
      (await decodeChunk(fixedKey, 'n2', deflated)).toString(),
      'a chunk sealed by the first version of the format\n'.repeat(12),
    );
  });

  it("encodes into a caller's buffer the same object, with the CRC32 of its bytes", async () => {
    for (const plain of [Buffer.alloc(0), Buffer.from('x'), text(300_000), randomBytes(300_000), randomBytes(4 << 20)]) {
      const out = Buffer.alloc(maxEncodedBytes(plain.length) + 100, 0xee);
      const enc = await encodeChunkInto(key, 'name', plain, out);
      const obj = out.subarray(0, enc.length);
      assert.deepEqual(obj.subarray(0, 4), Buffer.from('FSC1'));
      assert.equal(obj[4], enc.deflated ? 1 : 0);
      assert.deepEqual(await decodeChunk(key, 'name', obj), plain);
      assert.equal(enc.crc32, crc32(obj), 'the CRC32 covers exactly the object');
      assert.ok(
        out.subarray(enc.length).every((b) => b === 0xee),
        'nothing written past the object',
      );
      if (!enc.deflated) assert.equal(enc.length, maxEncodedBytes(plain.length));
    }
  });

  it('refuses an output buffer too small for the chunk, before writing anything', async () => {
    const plain = randomBytes(1000);
    const out = Buffer.alloc(maxEncodedBytes(plain.length) - 1);
    await assert.rejects(encodeChunkInto(key, 'n', plain, out), RangeError);
    assert.ok(out.every((b) => b === 0));
  });
});
