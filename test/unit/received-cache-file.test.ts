// Received cache files (a chunk downloaded from the bucket, kept as received with a code per
// unit): any range reads back the chunk's bytes, the file takes the room a sealed file of the
// same data takes, and any modified, moved, renamed or cut file is refused; through the cache,
// a refused file is dropped and read as a miss (fetched again), and a compressed chunk is sealed.
// Chunks of the first format (FSC1, stored) are kept with codes ("FSR1"); segmented chunks
// (FSC2) as their segments ("FSR2"), checked by the segments' own tags.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReceivedIO } from '../../electron/engine/cache/received';
import { HEADER, UNIT, UNIT_OVERHEAD, physicalSize } from '../../electron/engine/cache/sealed';
import { AuthError, chunkName, seal } from '../../electron/engine/chunk/crypto';
import { decodeChunk, encodeChunk, receivedCiphertext, receivedSegments } from '../../electron/engine/chunk/format';
import { testChunkCache } from '../helpers/chunkCacheFixture';

const cacheKey = randomBytes(32);
const chunkKey = randomBytes(32);
const nameKey = randomBytes(32);
const io = new ReceivedIO(cacheKey, chunkKey);

/** A chunk as buckets hold it in the first format, stored: `FSC1 | 0 | seal(data, "chunk:<name>:0")`. */
async function received(data: Buffer): Promise<{ name: string; obj: Buffer }> {
  const name = chunkName(nameKey, data);
  const obj = Buffer.concat([Buffer.from('FSC1'), Buffer.from([0]), seal(chunkKey, data, `chunk:${name}:0`)]);
  assert.deepEqual(await decodeChunk(chunkKey, name, obj), data);
  return { name, obj };
}

/** A chunk as the encoder writes it now: FSC2 when it does not compress, FSC1 deflated when it does. */
async function encoded(data: Buffer): Promise<{ name: string; obj: Buffer }> {
  const name = chunkName(nameKey, data);
  const obj = await encodeChunk(chunkKey, name, data);
  assert.deepEqual(await decodeChunk(chunkKey, name, obj), data);
  return { name, obj };
}

describe('received cache files', () => {
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'received-'));
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  async function write(file: string, name: string, obj: Buffer): Promise<void> {
    const parts = receivedCiphertext(obj)!;
    const fh = await fsp.open(file, 'w+');
    try {
      await fh.writev(await io.fileFor(name, parts.nonce, parts.ciphertext), 0);
    } finally {
      await fh.close();
    }
  }

  async function withFile<T>(file: string, fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    const fh = await fsp.open(file, 'r+');
    try {
      return await fn(fh);
    } finally {
      await fh.close();
    }
  }

  it('reads back any range, and takes the room of a sealed file of the same data', async () => {
    for (const len of [1, 100, UNIT - 1, UNIT, UNIT + 1, 3 * UNIT + 777]) {
      const data = randomBytes(len);
      const { name, obj } = await received(data);
      const file = path.join(dir, `r${len}`);
      await write(file, name, obj);
      assert.equal((await fsp.stat(file)).size, physicalSize(len));
      await withFile(file, async (fh) => {
        const h = (await io.readHeader(fh))!;
        assert.deepEqual(await io.readAll(fh, h, name, len, 'x'), data);
        for (const [pos, n] of [
          [0, len],
          [len - 1, 1],
          [Math.floor(len / 2), Math.min(len - Math.floor(len / 2), UNIT + 5)],
          [UNIT - 3, 10],
        ] as const) {
          if (pos < 0 || pos >= len) continue;
          const m = Math.min(n, len - pos);
          const buf = Buffer.alloc(m + 4, 0xee);
          await io.read(fh, h, name, len, buf, 2, m, pos, 'x');
          assert.deepEqual(buf.subarray(2, 2 + m), data.subarray(pos, pos + m), `len ${len} pos ${pos}`);
          assert.equal(buf[0], 0xee);
        }
      });
    }
  });

  it('refuses a flipped byte anywhere that matters, a unit moved, another name, and a file cut short', async () => {
    const data = randomBytes(3 * UNIT + 10);
    const { name, obj } = await received(data);
    const dataStart = HEADER + 4 * UNIT_OVERHEAD;
    const spots: Array<[string, number]> = [
      ['fileId', 4],
      ['chunk nonce', 25],
      ['code nonce of unit 1', HEADER + UNIT_OVERHEAD + 3],
      ['code of unit 2', HEADER + 2 * UNIT_OVERHEAD + 20],
      ['ciphertext of unit 0', dataStart + 5],
      ['ciphertext of the last unit', dataStart + 3 * UNIT + 9],
    ];
    for (const [what, at] of spots) {
      const file = path.join(dir, `flip-${at}`);
      await write(file, name, obj);
      await withFile(file, async (fh) => {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, at);
        b[0]! ^= 0x01;
        await fh.write(b, 0, 1, at);
        const h = await io.readHeader(fh);
        await assert.rejects(io.readAll(fh, h!, name, data.length, 'x'), AuthError, what);
      });
    }
    // Units 1 and 2 swapped (ciphertext and table entries alike).
    const swapped = path.join(dir, 'swap');
    await write(swapped, name, obj);
    await withFile(swapped, async (fh) => {
      const whole = await fh.readFile();
      const u = (i: number) => whole.subarray(dataStart + i * UNIT, dataStart + (i + 1) * UNIT);
      const e = (i: number) => whole.subarray(HEADER + i * UNIT_OVERHEAD, HEADER + (i + 1) * UNIT_OVERHEAD);
      const out = Buffer.concat([
        whole.subarray(0, HEADER),
        e(0),
        e(2),
        e(1),
        e(3),
        u(0),
        u(2),
        u(1),
        whole.subarray(dataStart + 3 * UNIT),
      ]);
      await fh.write(out, 0, out.length, 0);
      const h = await io.readHeader(fh);
      const buf = Buffer.alloc(10);
      await assert.rejects(io.read(fh, h!, name, data.length, buf, 0, 10, UNIT + 1, 'x'), AuthError);
      await io.read(fh, h!, name, data.length, buf, 0, 10, 5, 'x'); // unit 0 is where it was
    });
    // Read as another chunk, or with the length of a file cut at a unit boundary.
    const file = path.join(dir, 'other');
    await write(file, name, obj);
    await withFile(file, async (fh) => {
      const h = (await io.readHeader(fh))!;
      const other = chunkName(nameKey, randomBytes(8));
      await assert.rejects(io.readAll(fh, h, other, data.length, 'x'), AuthError);
      await assert.rejects(io.readAll(fh, h, name, 3 * UNIT, 'x'), AuthError);
      await fh.truncate(physicalSize(data.length) - 3);
      await assert.rejects(io.readAll(fh, h, name, data.length, 'x'), AuthError);
    });
    // Without the chunk key nothing reads.
    const wrong = new ReceivedIO(cacheKey, randomBytes(32));
    const f2 = path.join(dir, 'wrongkey');
    await write(f2, name, obj);
    await withFile(f2, async (fh) => {
      const got = await wrong.readAll(fh, (await wrong.readHeader(fh))!, name, data.length, 'x');
      assert.notDeepEqual(got, data);
      await assert.rejects(
        new ReceivedIO(randomBytes(32), chunkKey).readAll(fh, (await io.readHeader(fh))!, name, data.length, 'x'),
        AuthError,
      );
    });
  });

  it('through the cache: kept as received, served, and when damaged dropped and read as a miss; a compressed chunk is sealed', async () => {
    const cdir = await fsp.mkdtemp(path.join(dir, 'cache-'));
    const { cache, handles } = testChunkCache(cdir, cacheKey, io);
    await cache.init();
    const damaged: string[] = [];
    cache.onDamaged = (n) => damaged.push(n);
    try {
      const data = randomBytes(2 * UNIT + 3);
      const { name, obj } = await received(data);
      assert.equal(await cache.putReceived(name, obj, data), true);
      const file = cache.pathOf(name);
      const head = Buffer.alloc(4);
      await withFile(file, (fh) => fh.read(head, 0, 4, 0));
      assert.equal(head.toString('latin1'), 'FSR1');
      assert.equal(cache.usedBytes, physicalSize(data.length));
      assert.deepEqual(await cache.readAll(name), data);
      const buf = Buffer.alloc(100);
      assert.equal(await cache.read(name, buf, 0, 100, UNIT - 50), 100);
      assert.deepEqual(buf, data.subarray(UNIT - 50, UNIT + 50));

      // A compressible chunk arrives deflated: it is kept sealed, and reads back the same.
      const text = Buffer.from('all work and no play '.repeat(5000));
      const c = await encoded(text);
      assert.equal(c.obj[4], 1, 'deflated');
      await cache.putReceived(c.name, c.obj, text);
      await withFile(cache.pathOf(c.name), (fh) => fh.read(head, 0, 4, 0));
      assert.equal(head.toString('latin1'), 'FSL1');
      assert.deepEqual(await cache.readAll(c.name), text);

      // A flipped ciphertext byte: refused, dropped, a miss.
      await handles.closeAll();
      await withFile(file, async (fh) => {
        const b = Buffer.alloc(1);
        const at = HEADER + 3 * UNIT_OVERHEAD + UNIT + 7;
        await fh.read(b, 0, 1, at);
        b[0]! ^= 0x80;
        await fh.write(b, 0, 1, at);
      });
      assert.equal(await cache.read(name, buf, 0, 10, UNIT + 2), undefined);
      assert.deepEqual(damaged, [name]);
      assert.equal(cache.has(name), false);
      await assert.rejects(fsp.stat(file), { code: 'ENOENT' });
      assert.equal(cache.usedBytes, physicalSize(text.length));
    } finally {
      await handles.closeAll();
    }
  });
});

describe('received cache files of segmented chunks (FSR2)', () => {
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'received2-'));
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  async function write(file: string, obj: Buffer): Promise<void> {
    const fh = await fsp.open(file, 'w+');
    try {
      await fh.writev(ReceivedIO.segmentedFileFor(receivedSegments(obj)!), 0);
    } finally {
      await fh.close();
    }
  }

  async function withFile<T>(file: string, fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    const fh = await fsp.open(file, 'r+');
    try {
      return await fn(fh);
    } finally {
      await fh.close();
    }
  }

  it('reads back any range, and takes the room of a sealed file of the same data', async () => {
    for (const len of [1, 100, UNIT - 1, UNIT, UNIT + 1, 3 * UNIT + 777]) {
      const data = randomBytes(len);
      const { name, obj } = await encoded(data);
      assert.equal(obj.subarray(0, 4).toString('latin1'), 'FSC2');
      const file = path.join(dir, `r${len}`);
      await write(file, obj);
      assert.equal((await fsp.stat(file)).size, physicalSize(len));
      await withFile(file, async (fh) => {
        const h = (await io.readHeader(fh))!;
        assert.equal(h.segmented, true);
        assert.deepEqual(await io.readAll(fh, h, name, len, 'x'), data);
        for (const [pos, n] of [
          [0, len],
          [len - 1, 1],
          [Math.floor(len / 2), Math.min(len - Math.floor(len / 2), UNIT + 5)],
          [UNIT - 3, 10],
        ] as const) {
          if (pos < 0 || pos >= len) continue;
          const m = Math.min(n, len - pos);
          const buf = Buffer.alloc(m + 4, 0xee);
          await io.read(fh, h, name, len, buf, 2, m, pos, 'x');
          assert.deepEqual(buf.subarray(2, 2 + m), data.subarray(pos, pos + m), `len ${len} pos ${pos}`);
        }
        // Many small reads at once (each through a scratch buffer of its own, used again after).
        const reads = Array.from({ length: 24 }, (_, k) => {
          const pos = (k * 7919 * 13) % len;
          const m = Math.min(4096 + k, len - pos);
          return { pos, m, buf: Buffer.alloc(m) };
        });
        await Promise.all(reads.map((r) => io.read(fh, h, name, len, r.buf, 0, r.m, r.pos, 'x')));
        for (const r of reads) assert.deepEqual(r.buf, data.subarray(r.pos, r.pos + r.m), `len ${len} at once, pos ${r.pos}`);
      });
    }
  });

  it('refuses a flipped byte, segments swapped, another name and a file cut short', async () => {
    const data = randomBytes(3 * UNIT + 10);
    const { name, obj } = await encoded(data);
    const seg = (i: number) => HEADER + i * (UNIT + UNIT_OVERHEAD);
    for (const at of [seg(0) + 3, seg(1) + 100, seg(2) + UNIT + 20, seg(3) + 12]) {
      const file = path.join(dir, `flip-${at}`);
      await write(file, obj);
      await withFile(file, async (fh) => {
        const b = Buffer.alloc(1);
        await fh.read(b, 0, 1, at);
        b[0]! ^= 0x01;
        await fh.write(b, 0, 1, at);
        const h = (await io.readHeader(fh))!;
        await assert.rejects(io.readAll(fh, h, name, data.length, 'x'), AuthError, `byte ${at}`);
      });
    }
    const swapped = path.join(dir, 'swap');
    await write(swapped, obj);
    await withFile(swapped, async (fh) => {
      const whole = await fh.readFile();
      const s = (i: number) => whole.subarray(seg(i), seg(i + 1));
      const out = Buffer.concat([whole.subarray(0, HEADER), s(0), s(2), s(1), whole.subarray(seg(3))]);
      await fh.write(out, 0, out.length, 0);
      const h = (await io.readHeader(fh))!;
      const buf = Buffer.alloc(10);
      await assert.rejects(io.read(fh, h, name, data.length, buf, 0, 10, UNIT + 1, 'x'), AuthError);
      await io.read(fh, h, name, data.length, buf, 0, 10, 5, 'x'); // segment 0 is where it was
    });
    const file = path.join(dir, 'other');
    await write(file, obj);
    await withFile(file, async (fh) => {
      const h = (await io.readHeader(fh))!;
      await assert.rejects(io.readAll(fh, h, chunkName(nameKey, randomBytes(8)), data.length, 'x'), AuthError);
      // Cut at a segment boundary: the count no longer matches.
      await assert.rejects(io.readAll(fh, h, name, 3 * UNIT, 'x'), AuthError);
      await fh.truncate(physicalSize(data.length) - 3);
      await assert.rejects(io.readAll(fh, h, name, data.length, 'x'), AuthError);
    });
  });

  it('through the cache: kept as its segments, served, and when damaged dropped and read as a miss', async () => {
    const cdir = await fsp.mkdtemp(path.join(dir, 'cache-'));
    const { cache, handles } = testChunkCache(cdir, cacheKey, io);
    await cache.init();
    const damaged: string[] = [];
    cache.onDamaged = (n) => damaged.push(n);
    try {
      const data = randomBytes(2 * UNIT + 3);
      const { name, obj } = await encoded(data);
      assert.equal(await cache.putReceived(name, obj, data), true);
      const file = cache.pathOf(name);
      const head = Buffer.alloc(4);
      await withFile(file, (fh) => fh.read(head, 0, 4, 0));
      assert.equal(head.toString('latin1'), 'FSR2');
      assert.equal(cache.usedBytes, physicalSize(data.length));
      assert.deepEqual(await cache.readAll(name), data);
      const buf = Buffer.alloc(100);
      assert.equal(await cache.read(name, buf, 0, 100, UNIT - 50), 100);
      assert.deepEqual(buf, data.subarray(UNIT - 50, UNIT + 50));

      await handles.closeAll();
      await withFile(file, async (fh) => {
        const b = Buffer.alloc(1);
        const at = HEADER + UNIT + UNIT_OVERHEAD + 40;
        await fh.read(b, 0, 1, at);
        b[0]! ^= 0x80;
        await fh.write(b, 0, 1, at);
      });
      assert.equal(await cache.read(name, buf, 0, 10, UNIT + 2), undefined);
      assert.deepEqual(damaged, [name]);
      assert.equal(cache.has(name), false);
    } finally {
      await handles.closeAll();
    }
  });
});
