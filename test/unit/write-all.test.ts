import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PositionalWriter, WRITE_PIECE_BYTES, writeAllAt } from '../../electron/engine/util/writeAll';
import { FsError } from '../../electron/engine/errors';

/** A real file, with every call recorded; `short` cuts a call's length to what it returns for it. */
async function recordingFile(short: (callNo: number, bytes: number) => number = (_, n) => n) {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'write-all-'));
  const fh = await fsp.open(path.join(dir, 'f'), 'w+');
  const calls: { pos: number; lengths: number[] }[] = [];
  const writer: PositionalWriter = {
    async write(buffer, offset, length, position) {
      const n = short(calls.length, length);
      calls.push({ pos: position, lengths: [length] });
      return fh.write(buffer, offset, n, position);
    },
    async writev(buffers, position) {
      const total = buffers.reduce((s, b) => s + b.length, 0);
      let n = short(calls.length, total);
      calls.push({ pos: position, lengths: buffers.map((b) => b.length) });
      const cut: Buffer[] = [];
      for (const b of buffers) {
        if (n <= 0) break;
        cut.push(b.subarray(0, Math.min(n, b.length)));
        n -= b.length;
      }
      return fh.writev(cut, position);
    },
  };
  const content = async () => fsp.readFile(path.join(dir, 'f'));
  const done = async () => {
    await fh.close();
    await fsp.rm(dir, { recursive: true, force: true });
  };
  return { writer, calls, content, done };
}

describe('writeAllAt (large writes in pieces)', () => {
  it('writes every byte at its place, in calls of at most a piece, without splitting a buffer that fits in one', async () => {
    const f = await recordingFile();
    try {
      const unit = 65_564; // a sealed unit: a little over 64 KiB
      const buffers = [randomBytes(64), ...Array.from({ length: 40 }, () => randomBytes(unit)), randomBytes(100)];
      await writeAllAt(f.writer, buffers, 10);
      const want = Buffer.concat([Buffer.alloc(10), ...buffers]);
      assert.ok((await f.content()).equals(want));
      let sizes = 0;
      for (const c of f.calls) {
        const n = c.lengths.reduce((s, x) => s + x, 0);
        assert.ok(n <= WRITE_PIECE_BYTES, `a call of ${n} bytes`);
        assert.ok(
          c.lengths.slice(1, -1).every((x) => x === unit),
          'whole units inside a call',
        );
        for (const x of c.lengths) assert.ok(x === unit || x === 64 || x === 100, `buffer split into ${x} bytes`);
        assert.equal(c.pos, 10 + sizes, 'calls follow each other');
        sizes += n;
      }
      assert.ok(f.calls.length >= 3, `${f.calls.length} calls`);
    } finally {
      await f.done();
    }
  });

  it('splits one buffer larger than a piece into pieces', async () => {
    const f = await recordingFile();
    try {
      const big = randomBytes(4 * 1024 * 1024 + 5);
      await writeAllAt(f.writer, [big], 0);
      assert.ok((await f.content()).equals(big));
      assert.deepEqual(
        f.calls.map((c) => c.lengths),
        [[1 << 20], [1 << 20], [1 << 20], [1 << 20], [5]],
      );
    } finally {
      await f.done();
    }
  });

  it('goes on after short writes from the first byte not written', async () => {
    // Every call writes at most 100,003 bytes: within buffers, at their edges, across them.
    const f = await recordingFile((_, n) => Math.min(n, 100_003));
    try {
      const buffers = [randomBytes(70_000), Buffer.alloc(0), randomBytes(300_000), randomBytes(1), randomBytes(2_500_000)];
      await writeAllAt(f.writer, buffers, 7, 256 * 1024);
      assert.ok((await f.content()).equals(Buffer.concat([Buffer.alloc(7), ...buffers])));
    } finally {
      await f.done();
    }
  });

  it('fails with EIO when a call writes nothing, instead of trying forever', async () => {
    const f = await recordingFile((k, n) => (k === 1 ? 0 : n));
    try {
      await assert.rejects(
        writeAllAt(f.writer, [randomBytes(3 << 20)], 0),
        (err: unknown) => err instanceof FsError && err.errno === 'EIO',
      );
      assert.equal(f.calls.length, 2);
    } finally {
      await f.done();
    }
  });

  it('writes nothing for no bytes', async () => {
    const f = await recordingFile();
    try {
      await writeAllAt(f.writer, [], 0);
      await writeAllAt(f.writer, [Buffer.alloc(0)], 5);
      assert.equal(f.calls.length, 0);
    } finally {
      await f.done();
    }
  });
});
