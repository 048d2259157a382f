// Pins down the upload encoders: on the engine thread and in a worker thread they name and
// encode a chunk identically (a decodable FSC1 object with the CRC32 of its bytes), refuse a
// tampered or torn dirty unit with AuthError, work in place on shared buffers only (other
// buffers are done in-thread), and keep working once their threads are closed.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { after, describe, it } from 'node:test';
import { SealedIO, UNIT, sealedBodySize } from '../../electron/engine/cache/sealed';
import { AuthError, chunkName } from '../../electron/engine/chunk/crypto';
import { uploadJobsOffThread } from '../../electron/engine/chunk/cipherAddon';
import { OFF_THREAD_BYTES, decodeChunk, maxEncodedBytes } from '../../electron/engine/chunk/format';
import { ChunkEncoder, InThreadEncoder, WorkerEncoder } from '../../electron/engine/upload/encoder';

const keys = { cacheKey: randomBytes(32), nameKey: randomBytes(32), chunkKey: randomBytes(32) };
const io = new SealedIO(keys.cacheKey);
const fileId = randomBytes(16);

/** The sealed units of `plain` as a dirty file holds them (what DirtyStore.readSealedInto reads). */
function sealedUnits(plain: Buffer): Buffer {
  const units: Buffer[] = [];
  for (let i = 0; i * UNIT < plain.length; i++) {
    units.push(
      (io as unknown as { seal(f: Buffer, i: number, p: Buffer): Buffer }).seal(
        fileId,
        i,
        plain.subarray(i * UNIT, (i + 1) * UNIT),
      ),
    );
  }
  return Buffer.concat(units);
}

function text(bytes: number): Buffer {
  const line = Buffer.from('2024-01-01T00:00:00Z INFO request served in 12ms path=/api/v1/items\n');
  const out = Buffer.alloc(bytes);
  for (let i = 0; i < bytes; i += line.length) line.copy(out, i);
  return out;
}

const shared = (n: number) => Buffer.from(new SharedArrayBuffer(n));

describe('upload encoders', () => {
  const worker = new WorkerEncoder(keys, 1);
  const inThread = new InThreadEncoder(keys);
  after(() => worker.close());

  for (const [label, enc] of [
    ['engine thread', inThread],
    ['worker thread', worker],
  ] as Array<[string, ChunkEncoder]>) {
    it(`names and encodes chunks in place (${label})`, async () => {
      for (const plain of [
        Buffer.alloc(0),
        randomBytes(1),
        randomBytes(UNIT),
        randomBytes(3 * UNIT + 5),
        text(4 << 20),
        randomBytes(4 << 20),
      ]) {
        const buf = shared(sealedBodySize(plain.length));
        sealedUnits(plain).copy(buf);
        const name = await enc.openAndName(buf, fileId, plain.length, 'dirty chunk 1.0');
        assert.equal(name, chunkName(keys.nameKey, plain));
        assert.ok(buf.subarray(0, plain.length).equals(plain), 'the plaintext is where the units were');
        const out = shared(maxEncodedBytes(plain.length));
        const obj = await enc.encode(buf, plain.length, name, out);
        const bytes = out.subarray(0, obj.length);
        assert.equal(obj.crc32, crc32(bytes));
        // Text deflates (FSC1); random bytes do not and are sealed in segments (FSC2).
        assert.equal(obj.deflated, plain.length >= 512 && plain.equals(text(plain.length)), `${plain.length} bytes: deflated`);
        assert.ok((await decodeChunk(keys.chunkKey, name, bytes)).equals(plain));
      }
    });

    it(`refuses a tampered or torn dirty unit with AuthError (${label})`, async () => {
      const plain = randomBytes(2 * UNIT + 100);
      const sealed = sealedUnits(plain);
      for (const at of [3, UNIT + 40, sealed.length - 1]) {
        const buf = shared(sealedBodySize(plain.length));
        sealed.copy(buf);
        buf[at]! ^= 1;
        await assert.rejects(enc.openAndName(buf, fileId, plain.length, 'dirty chunk 1.0'), AuthError, `byte ${at}`);
      }
      const buf = shared(sealedBodySize(plain.length));
      sealed.copy(buf);
      await assert.rejects(
        enc.openAndName(buf, randomBytes(16), plain.length, 'dirty chunk 1.0'),
        AuthError,
        'units of another file',
      );
    });
  }

  it('works off the engine thread only on shared buffers', async () => {
    assert.equal(worker.offThread(shared(16)), true);
    assert.equal(worker.offThread(Buffer.alloc(16)), false);
    // On the engine thread: a small chunk's work stays there; a large one's goes to the pool
    // where the cipher addon offers it (chunk/format.ts OFF_THREAD_BYTES).
    assert.equal(inThread.offThread(Buffer.alloc(OFF_THREAD_BYTES - 1)), false);
    assert.equal(inThread.offThread(Buffer.alloc(OFF_THREAD_BYTES)), uploadJobsOffThread);
    // A buffer of its own (not shared) is done in-thread, with the same result.
    const plain = randomBytes(5000);
    const buf = Buffer.alloc(sealedBodySize(plain.length));
    sealedUnits(plain).copy(buf);
    assert.equal(await worker.openAndName(buf, fileId, plain.length, 'x'), chunkName(keys.nameKey, plain));
  });

  it('keeps working after its threads are closed (in-thread)', async () => {
    const w = new WorkerEncoder(keys, 2);
    const plain = randomBytes(UNIT * 2);
    const buf = shared(sealedBodySize(plain.length));
    sealedUnits(plain).copy(buf);
    await w.close();
    assert.equal(w.offThread(buf), false);
    assert.equal(await w.openAndName(buf, fileId, plain.length, 'x'), chunkName(keys.nameKey, plain));
  });
});
