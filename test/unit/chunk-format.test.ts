// Pins down the chunk object format: round trip, compression only when it pays, and refusal of any tampered, renamed or truncated object.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { describe, it } from 'node:test';
import { AuthError, seal } from '../../electron/engine/chunk/crypto';
import {
  SEGMENT_BYTES,
  chunkKey,
  decodeChunk,
  encodeChunk,
  encodeChunkInto,
  maxEncodedBytes,
  openSegments,
  segmentCount,
  segmentRange,
} from '../../electron/engine/chunk/format';

const key = randomBytes(32);
const HEADER = 5; // "FSC1" or "FSC2" | flags
const SEAL_OVERHEAD = 12 + 16;
const SEGMENT_STORED = SEGMENT_BYTES + SEAL_OVERHEAD;

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
      assert.deepEqual(obj.subarray(0, 4), Buffer.from(obj[4] === 1 ? 'FSC1' : 'FSC2'));
      assert.deepEqual(await decodeChunk(key, 'name', obj), plain);
    }
  });

  it('compresses compressible data and stores it deflated', async () => {
    const plain = text(256 * 1024);
    const obj = await encodeChunk(key, 'n', plain);
    assert.equal(obj[4], 1, 'deflate flag');
    assert.ok(obj.length < plain.length / 4, `${obj.length} bytes for ${plain.length} of text`);
  });

  it('stores random data as is in 64 KiB segments, at its own size plus an overhead per segment', async () => {
    for (const size of [1000, 100_000, SEGMENT_BYTES, 1 << 20]) {
      const plain = randomBytes(size);
      const obj = await encodeChunk(key, 'n', plain);
      assert.deepEqual(obj.subarray(0, 4), Buffer.from('FSC2'));
      assert.equal(obj[4], 0, 'no compression flag');
      assert.equal(obj.length, size + HEADER + Math.ceil(size / SEGMENT_BYTES) * SEAL_OVERHEAD);
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
      assert.deepEqual(obj.subarray(0, 4), Buffer.from(enc.deflated ? 'FSC1' : 'FSC2'));
      assert.deepEqual(obj.subarray(0, 4), Buffer.from(enc.segmented ? 'FSC2' : 'FSC1'), 'segmented says FSC2');
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

describe('segmented chunk objects (FSC2)', () => {
  const plain = randomBytes(3 * SEGMENT_BYTES + 1000);
  const count = segmentCount(plain.length);
  let obj: Buffer;
  const segAt = (i: number) => HEADER + i * SEGMENT_STORED;

  it('round-trips every length around segment boundaries', async () => {
    obj = await encodeChunk(key, 'seg', plain);
    assert.equal(count, 4);
    assert.deepEqual(await decodeChunk(key, 'seg', obj), plain);
    for (const len of [SEGMENT_BYTES - 1, SEGMENT_BYTES + 1, 2 * SEGMENT_BYTES, 64 * SEGMENT_BYTES]) {
      const p = randomBytes(len);
      assert.deepEqual(await decodeChunk(key, 'x', await encodeChunk(key, 'x', p)), p, `length ${len}`);
    }
  });

  it('computes the byte range of the segments covering a read from the length alone, and opens them alone', () => {
    for (const [pos, n] of [
      [0, 1],
      [5, 4096],
      [SEGMENT_BYTES - 10, 20],
      [2 * SEGMENT_BYTES, SEGMENT_BYTES],
      [plain.length - 1, 1],
      [3 * SEGMENT_BYTES + 10, 990],
      [100, plain.length - 100],
    ] as const) {
      const r = segmentRange(plain.length, pos, n);
      assert.equal(r.count, count);
      assert.equal(r.first, Math.floor(pos / SEGMENT_BYTES));
      assert.equal(r.last, Math.floor((pos + n - 1) / SEGMENT_BYTES));
      assert.equal(r.start, segAt(r.first));
      assert.ok(r.end < obj.length);
      if (r.last === count - 1) assert.equal(r.end, obj.length - 1);
      else assert.equal(r.end, segAt(r.last + 1) - 1);
      const got = openSegments(key, 'seg', r.count, r.first, obj.subarray(r.start, r.end + 1));
      const from = r.first * SEGMENT_BYTES;
      assert.deepEqual(got.subarray(pos - from, pos - from + n), plain.subarray(pos, pos + n), `read ${pos}+${n}`);
    }
  });

  it('refuses any flipped byte, in the whole object and in a range', async () => {
    const spots = [0, 3, 4, 5, 16, 17, segAt(1) - 1, segAt(1), segAt(1) + 12, segAt(2) + 5000, segAt(3) + 11, obj.length - 1];
    for (let i = 0; i < obj.length; i += 7919) spots.push(i);
    for (const at of spots) {
      const bad = Buffer.from(obj);
      bad[at]! ^= 0x10;
      await assert.rejects(decodeChunk(key, 'seg', bad), AuthError, `byte ${at}`);
      if (at >= HEADER) {
        const i = Math.floor((at - HEADER) / SEGMENT_STORED);
        const r = segmentRange(plain.length, i * SEGMENT_BYTES, 1);
        assert.throws(
          () => openSegments(key, 'seg', count, r.first, bad.subarray(r.start, r.end + 1)),
          AuthError,
          `range byte ${at}`,
        );
      }
    }
  });

  it('refuses segments swapped, moved, dropped, duplicated, or taken from another chunk', async () => {
    const seg = (o: Buffer, i: number) => o.subarray(segAt(i), Math.min(o.length, segAt(i + 1)));
    const head = obj.subarray(0, HEADER);
    const swapped = Buffer.concat([head, seg(obj, 1), seg(obj, 0), seg(obj, 2), seg(obj, 3)]);
    await assert.rejects(decodeChunk(key, 'seg', swapped), AuthError, 'swapped');
    const droppedLast = obj.subarray(0, segAt(3));
    await assert.rejects(decodeChunk(key, 'seg', droppedLast), AuthError, 'last segment dropped');
    const droppedMiddle = Buffer.concat([head, seg(obj, 0), seg(obj, 2), seg(obj, 3)]);
    await assert.rejects(decodeChunk(key, 'seg', droppedMiddle), AuthError, 'middle segment dropped');
    const duplicated = Buffer.concat([head, seg(obj, 0), seg(obj, 0), seg(obj, 2), seg(obj, 3)]);
    await assert.rejects(decodeChunk(key, 'seg', duplicated), AuthError, 'segment 0 twice');
    // A range: segment 1 asked for, segment 2 served; or opened as another index.
    assert.throws(() => openSegments(key, 'seg', count, 1, seg(obj, 2)), AuthError);
    assert.throws(() => openSegments(key, 'seg', count, 2, seg(obj, 1)), AuthError);
    // The same segment of another chunk, with the same shape.
    const other = await encodeChunk(key, 'other', randomBytes(plain.length));
    const mixed = Buffer.concat([head, seg(obj, 0), seg(other, 1), seg(obj, 2), seg(obj, 3)]);
    await assert.rejects(decodeChunk(key, 'seg', mixed), AuthError, 'segment of another chunk');
    assert.throws(() => openSegments(key, 'seg', count, 1, seg(other, 1)), AuthError);
    // Another name or key.
    await assert.rejects(decodeChunk(key, 'seh', obj), AuthError);
    await assert.rejects(decodeChunk(randomBytes(32), 'seg', obj), AuthError);
  });

  it('refuses a truncated object and a wrong segment count', async () => {
    for (const len of [HEADER, HEADER + 10, segAt(1), segAt(1) + 30, segAt(2), obj.length - 1]) {
      await assert.rejects(decodeChunk(key, 'seg', obj.subarray(0, len)), AuthError, `truncated to ${len}`);
    }
    // Whole segments: a chunk of two segments is not the first two of four.
    const r = segmentRange(plain.length, 0, 1);
    assert.throws(() => openSegments(key, 'seg', 2, 0, obj.subarray(r.start, r.end + 1)), AuthError, 'count 2');
    assert.throws(() => openSegments(key, 'seg', 5, 0, obj.subarray(r.start, r.end + 1)), AuthError, 'count 5');
    // A range read with the count of a shorter reference (a file truncated inside the chunk).
    const short = segmentRange(2 * SEGMENT_BYTES, SEGMENT_BYTES, 10);
    assert.throws(() => openSegments(key, 'seg', short.count, short.first, obj.subarray(short.start, short.end + 1)), AuthError);
    // An extra segment appended.
    const longer = Buffer.concat([obj, obj.subarray(segAt(3))]);
    await assert.rejects(decodeChunk(key, 'seg', longer), AuthError, 'a segment appended');
  });

  it('refuses an FSC1 object read as segments, and FSC1 bytes relabelled FSC2', async () => {
    const v1 = Buffer.concat([Buffer.from('FSC1'), Buffer.from([0]), seal(key, plain, 'chunk:seg:0')]);
    assert.deepEqual(await decodeChunk(key, 'seg', v1), plain, 'FSC1 stored still decodes');
    const r = segmentRange(plain.length, SEGMENT_BYTES + 5, 100);
    assert.throws(() => openSegments(key, 'seg', r.count, r.first, v1.subarray(r.start, r.end + 1)), AuthError);
    await assert.rejects(decodeChunk(key, 'seg', Buffer.concat([Buffer.from('FSC2'), v1.subarray(4)])), AuthError);
  });
});
