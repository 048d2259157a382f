// Sealed cache files behave like plain files for any sequence of writes, truncations and
// reads, keep data unreadable without the key, and refuse any modified byte.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  HEADER,
  SealedIO,
  UNIT,
  budgetUnits,
  logicalSize,
  physicalSize,
  sealedBodySize,
} from '../../electron/engine/cache/sealed';
import { AuthError } from '../../electron/engine/chunk/crypto';

describe('sealed cache files', () => {
  let dir: string;
  const io = new SealedIO(randomBytes(32));
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'sealed-'));
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  async function fresh(name: string) {
    const file = path.join(dir, name);
    const fh = await fsp.open(file, 'w+');
    const { header, fileId } = io.newHeader();
    await fh.write(header, 0, header.length, 0);
    return { fh, fileId, file };
  }

  it('maps logical and physical sizes both ways', () => {
    for (const len of [0, 1, 100, UNIT - 1, UNIT, UNIT + 1, 3 * UNIT, 4 * 1024 * 1024, 4 * 1024 * 1024 - 7]) {
      assert.equal(logicalSize(physicalSize(len)), len, `len ${len}`);
    }
    assert.equal(physicalSize(0), HEADER);
    assert.equal(logicalSize(HEADER + 5), undefined);
  });

  it('agrees with a plain buffer over random writes, truncations and reads', async () => {
    let seed = 7;
    const rnd = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    for (let round = 0; round < 6; round++) {
      const { fh, fileId } = await fresh(`r${round}`);
      let model = Buffer.alloc(0);
      let len = 0;
      for (let op = 0; op < 120; op++) {
        const kind = rnd(10);
        if (kind < 6) {
          const pos = rnd(5 * UNIT);
          const data = randomBytes(rnd(3) === 0 ? rnd(3 * UNIT) : rnd(300));
          len = await io.write(fh, fileId, len, data, pos, 't');
          const next = Buffer.alloc(Math.max(model.length, pos + data.length));
          model.copy(next);
          data.copy(next, pos);
          model = next;
        } else if (kind < 8) {
          const newLen = rnd(5 * UNIT);
          await io.truncate(fh, fileId, len, newLen, 't');
          const next = Buffer.alloc(newLen);
          model.copy(next, 0, 0, Math.min(newLen, model.length));
          model = next;
          len = newLen;
        } else {
          const pos = rnd(len + 1);
          const n = Math.min(rnd(2 * UNIT), len - pos);
          const buf = Buffer.alloc(n);
          await io.read(fh, fileId, len, buf, 0, n, pos, 't');
          assert.ok(buf.equals(model.subarray(pos, pos + n)), `read ${pos}+${n} in round ${round} op ${op}`);
        }
        assert.equal(len, model.length);
        assert.equal((await fh.stat()).size, physicalSize(len));
      }
      assert.ok((await io.readAll(fh, fileId, len, 't')).equals(model));
      await fh.close();
    }
  });

  it('stores no plaintext and refuses any flipped byte', async () => {
    const { fh, fileId, file } = await fresh('tamper');
    const secret = Buffer.from('the quick brown fox '.repeat(5000));
    const len = await io.write(fh, fileId, 0, secret, 0, 't');
    await io.writeNameTag(fh, fileId, 'a'.repeat(40), len);
    await fh.close();
    const raw = await fsp.readFile(file);
    assert.equal(raw.indexOf(Buffer.from('quick brown fox')), -1);
    for (const at of [HEADER + 3, HEADER + 20, HEADER + UNIT + 40, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[at]! ^= 1;
      await fsp.writeFile(file, bad);
      const h = await fsp.open(file, 'r');
      await assert.rejects(io.readAll(h, fileId, len, 't'), AuthError);
      await h.close();
    }
    // Swapped name: the header names another chunk.
    await fsp.writeFile(file, raw);
    const h = await fsp.open(file, 'r');
    assert.ok((await io.readHeader(h, 't', 'a'.repeat(40))).equals(fileId));
    await assert.rejects(io.readHeader(h, 't', 'b'.repeat(40)), AuthError);
    await h.close();
  });

  it('reads ranges right whether they go through its scratch buffers or not, many at once, and refuses a flipped byte', async () => {
    const len = 9 * UNIT + 321;
    const data = randomBytes(len);
    const { fh, fileId, file } = await fresh('ranges');
    await io.write(fh, fileId, 0, data, 0, 't');
    const ranges: Array<[number, number]> = [];
    for (const start of [0, 1, UNIT - 5, UNIT, 2 * UNIT + 7, 8 * UNIT + 1]) {
      for (const n of [1, 4096, UNIT, 128 * 1024, 3 * UNIT, 4 * UNIT + 9]) ranges.push([start, Math.min(n, len - start)]);
    }
    // All at once: concurrent reads each get a scratch buffer of their own.
    const got = await Promise.all(
      ranges.map(async ([pos, n]) => {
        const buf = Buffer.alloc(n + 2, 0xee);
        await io.read(fh, fileId, len, buf, 1, n, pos, 't');
        return buf;
      }),
    );
    ranges.forEach(([pos, n], i) => {
      const buf = got[i]!;
      assert.ok(buf.subarray(1, 1 + n).equals(data.subarray(pos, pos + n)), `read ${pos}+${n}`);
      assert.equal(buf[0], 0xee, `read ${pos}+${n} writes nothing before its place`);
      assert.equal(buf[n + 1], 0xee, `read ${pos}+${n} writes nothing after its place`);
    });
    await fh.close();
    // A flipped byte in the second unit: a read that takes it is refused, one that does not is served.
    const raw = await fsp.readFile(file);
    raw[physicalSize(UNIT) + 40]! ^= 1;
    await fsp.writeFile(file, raw);
    const h = await fsp.open(file, 'r');
    const buf = Buffer.alloc(4096);
    await assert.rejects(io.read(h, fileId, len, buf, 0, 4096, UNIT + 100, 't'), AuthError);
    await io.read(h, fileId, len, buf, 0, 4096, 2 * UNIT + 100, 't');
    assert.ok(
      buf.equals(data.subarray(2 * UNIT + 100, 2 * UNIT + 100 + 4096)),
      'the scratch a refused read used serves the next',
    );
    await h.close();
  });

  it("reads a whole file into a caller's buffer, opening the units where they were read", async () => {
    for (const len of [1, 100, UNIT - 1, UNIT, UNIT + 1, 3 * UNIT + 17, 64 * UNIT]) {
      const { fh, fileId } = await fresh(`into-${len}`);
      const data = randomBytes(len);
      await io.write(fh, fileId, 0, data, 0, 't');
      const buf = Buffer.alloc(sealedBodySize(len));
      await io.readAllInto(fh, fileId, len, buf, 't');
      assert.ok(buf.subarray(0, len).equals(data), `len ${len}`);
      assert.ok((await io.readAll(fh, fileId, len, 't')).equals(data));
      await assert.rejects(io.readAllInto(fh, fileId, len, Buffer.alloc(sealedBodySize(len) - 1), 't'), RangeError);
      await fh.close();
    }
  });

  it('seals units for a write on the thread pool as it does at once: each reads back, each with its own nonce', async () => {
    const len = 5 * UNIT + 123;
    const data = randomBytes(len);
    const units = [0, 1, 2, 3, 4, 5];
    const plains = units.map((u) => data.subarray(u * UNIT, Math.min(len, (u + 1) * UNIT)));
    for (const how of ['at once', 'pool'] as const) {
      const { fh, fileId } = await fresh(`units-${how}`);
      const sealed =
        how === 'pool' ? await io.sealUnitsForWriteAsync(fileId, units, plains) : io.sealUnitsForWrite(fileId, units, plains);
      assert.deepEqual(
        sealed.map((b) => b.length),
        plains.map((p) => p.length + physicalSize(1) - HEADER - 1),
      );
      assert.equal(new Set(sealed.map((b) => b.subarray(0, 12).toString('hex'))).size, units.length, 'a fresh nonce per unit');
      await io.writeSealedRun(fh, 0, sealed);
      io.releaseSealed(sealed);
      assert.ok((await io.readAll(fh, fileId, len, 't')).equals(data), how);
      await fh.close();
    }
    // A unit sealed for one file or place does not open as another.
    const { fh, fileId } = await fresh('units-misplaced');
    const sealed = await io.sealUnitsForWriteAsync(fileId, [1], [data.subarray(0, UNIT)]);
    await io.writeSealedRun(fh, 0, sealed);
    await assert.rejects(io.readAll(fh, fileId, UNIT, 't'), AuthError);
    await fh.close();
  });

  it('seals a steady stream of unit batches into the same buffers, up to 8 MiB of them in flight', async () => {
    const fresh = new SealedIO(randomBytes(32));
    const fileId = randomBytes(16);
    const units = Array.from({ length: 128 }, (_, i) => i);
    const plains = units.map(() => randomBytes(UNIT));
    // Eight batches of a megabyte in flight at once (what a write buffer of 8 MiB can have), given back, then again.
    for (let round = 0; round < 3; round++) {
      const batches = await Promise.all(
        [0, 1, 2, 3, 4, 5, 6, 7].map((b) =>
          fresh.sealUnitsForWriteAsync(fileId, units.slice(16 * b, 16 * b + 16), plains.slice(16 * b, 16 * b + 16)),
        ),
      );
      for (const sealed of batches) fresh.releaseSealed(sealed);
    }
    assert.equal(fresh.unitBuffersAllocated, 128, 'each sealed-unit buffer is allocated once and then reused');
    const more = fresh.sealUnitsForWrite(fileId, [0, 1], plains.slice(0, 2));
    assert.equal(fresh.unitBuffersAllocated, 128, 'the synchronous path takes the same spares');
    fresh.releaseSealed(more);
  });

  it("keeps as many spare sealed units as the write buffer's budget holds", async () => {
    assert.equal(budgetUnits(8 * 1024 * 1024), 128);
    assert.equal(budgetUnits(32 * 1024 * 1024), 512);
    assert.equal(budgetUnits(100 * 1024), 4, 'at least 4');
    const fileId = randomBytes(16);
    const plains = Array.from({ length: 512 }, () => randomBytes(UNIT));
    /** Units sealed `rounds` times, `inFlight` of them at once, given back after each round; the buffers allocated. */
    const allocated = async (io: SealedIO, inFlight: number, rounds: number) => {
      for (let round = 0; round < rounds; round++) {
        const batches = await Promise.all(
          Array.from({ length: inFlight / 16 }, (_, b) =>
            io.sealUnitsForWriteAsync(
              fileId,
              Array.from({ length: 16 }, (_, i) => 16 * b + i),
              plains.slice(16 * b, 16 * b + 16),
            ),
          ),
        );
        for (const sealed of batches) io.releaseSealed(sealed);
      }
      return io.unitBuffersAllocated;
    };
    // A 32 MiB budget: 512 units in flight, reused every round.
    assert.equal(await allocated(new SealedIO(randomBytes(32), budgetUnits(32 * 1024 * 1024)), 512, 3), 512);
    // A 2 MiB budget keeps 32: the 512 of a larger burst are mostly let go each round.
    assert.equal(await allocated(new SealedIO(randomBytes(32), budgetUnits(2 * 1024 * 1024)), 512, 2), 512 + 480);
  });

  it("refuses a flipped byte in any unit when reading into a caller's buffer", async () => {
    const { fh, fileId, file } = await fresh('into-tamper');
    const len = 3 * UNIT + 5;
    await io.write(fh, fileId, 0, randomBytes(len), 0, 't');
    await fh.close();
    const raw = await fsp.readFile(file);
    for (const at of [HEADER + 1, HEADER + UNIT + 100, raw.length - 1]) {
      const bad = Buffer.from(raw);
      bad[at]! ^= 1;
      await fsp.writeFile(file, bad);
      const h = await fsp.open(file, 'r');
      await assert.rejects(io.readAllInto(h, fileId, len, Buffer.alloc(sealedBodySize(len)), 't'), AuthError, `byte ${at}`);
      await h.close();
    }
  });
});
