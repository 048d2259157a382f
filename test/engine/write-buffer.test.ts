/**
 * The write buffer (electron/engine/vfs/writeBuffer.ts), in process: writes are acknowledged
 * from memory and reach the dirty store later, so everything that reads or changes a file must
 * see them there. Reads through any handle see buffered bytes, alone or overlaid on what the
 * dirty store, the clean cache or the bucket hold; truncation cuts them; renames keep them;
 * a file deleted while open keeps them until its last close and then gives back their memory
 * and cache room; the memory budget is never exceeded, whatever the writers do; and a cache
 * full of changes that cannot upload still fails writes with ENOSPC after the stall timeout,
 * with every acknowledged byte kept. The flush timer is off in these tests (an hour), so what
 * a test writes stays buffered until a close, an fsync, a full budget or a batch of whole
 * units sends it on, whatever the machine's speed. A small file's close costs one open and one
 * write of its dirty file (counted by wrapping fs.promises).
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  EngineBed,
  KiB,
  MiB,
  Mounted,
  O_RDONLY,
  O_APPEND,
  O_RDWR,
  errnoName,
  expectContent,
  failsWith,
  random,
  readAt,
  readFile,
  writeAt,
  writeFile,
  writeLikeAdapter,
} from '../helpers/engineBed';

const CS = 256 * KiB;
/** No flush by age: only close, fsync, a full budget or whole units send buffered data on. */
const NO_TIMER = { writeBufferFlushMs: 3_600_000 };

/** A seeded generator, so a failure can be replayed. */
function rng(seed: number): (n: number) => number {
  let x = seed >>> 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}

/** Applies a write to the model of a file (zeros fill any gap past its end). */
function modelWrite(model: Buffer, pos: number, data: Buffer): Buffer {
  const out = model.length >= pos + data.length ? model : Buffer.concat([model, Buffer.alloc(pos + data.length - model.length)]);
  data.copy(out, pos);
  return out;
}

function modelTruncate(model: Buffer, size: number): Buffer {
  return size <= model.length ? Buffer.from(model.subarray(0, size)) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
}

/** Reads the whole file through `fh` (its length is the size the handle sees) and some ranges that straddle units and chunks; all must match. */
async function expectThrough(m: Mounted, fh: number, model: Buffer, what: string, next: (n: number) => number): Promise<void> {
  const all = await readAt(m.fs, fh, 0, model.length + 10);
  const at = all.findIndex((v, i) => v !== model[i]);
  assert.ok(
    all.length === model.length && at < 0,
    `${what}: differs ${at >= 0 ? `first at byte ${at}` : `in length (${all.length})`}`,
  );
  for (let k = 0; k < 20; k++) {
    const pos = next(model.length);
    const len = 1 + next(3 * 64 * KiB);
    const got = await readAt(m.fs, fh, pos, len);
    assert.deepEqual(got, model.subarray(pos, pos + len), `${what}: range [${pos}, ${pos + len})`);
  }
}

describe('the write buffer', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('reads its own buffered writes through every handle, alone and overlaid on stored bytes', async () => {
    const seed = Date.now() % 100_000;
    const next = rng(seed);
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: NO_TIMER });
    // Three starting points: uploaded (clean cache and bucket), dirty (on disk, not uploaded), new.
    let uploaded = random(3 * CS + 1000);
    let dirty = random(2 * CS + 77);
    let fresh: Buffer = Buffer.alloc(0);
    await writeFile(m.fs, '/uploaded', uploaded);
    await m.sync();
    await writeFile(m.fs, '/dirty', dirty);
    await m.fs.release(m.fs.create('/fresh', 0o644));
    const files: Array<[string, () => Buffer, (b: Buffer) => void]> = [
      ['/uploaded', () => uploaded, (b) => (uploaded = b)],
      ['/dirty', () => dirty, (b) => (dirty = b)],
      ['/fresh', () => fresh, (b) => (fresh = b)],
    ];
    for (const [p, get, set] of files) {
      const w = m.fs.open(p, O_RDWR);
      const r = m.fs.open(p, O_RDONLY);
      let model = get();
      // Unaligned writes of every size, some past the end (a gap of zeros), none closed.
      for (let k = 0; k < 60; k++) {
        const pos = next(4 * CS);
        const data = random(1 + next(40 * KiB));
        await writeAt(m.fs, w, pos, data);
        model = modelWrite(model, pos, data);
      }
      set(model);
      assert.ok(m.engine.vfs.writeBuffer.dataBytes > 0, `${p}: writes are still buffered when they are read (seed ${seed})`);
      await expectThrough(m, w, model, `${p} through the writing handle (seed ${seed})`, next);
      await expectThrough(m, r, model, `${p} through another handle (seed ${seed})`, next);
      assert.ok(m.engine.vfs.writeBuffer.dataBytes > 0, `${p}: reads did not need the buffer flushed (seed ${seed})`);
      await m.fs.flush(w);
      await m.fs.release(w);
      assert.equal(m.engine.vfs.writeBuffer.dataBytes, 0, `${p}: close wrote the buffered data to the dirty store`);
      await expectThrough(m, r, model, `${p} after close (seed ${seed})`, next);
      await m.fs.release(r);
    }
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir, settings: NO_TIMER });
    for (const [p, get] of files) await expectContent(again.fs, p, get(), CS, `after a restart (seed ${seed})`);
    await again.sync();
    await again.close();
    const other = await bed.mount(space, { mode: 'read' });
    for (const [p, get] of files) await expectContent(other.fs, p, get(), CS, `on a second machine (seed ${seed})`);
    await other.close();
  });

  it('cuts buffered bytes on truncation and reads zeros where they were cut', async () => {
    const next = rng(7);
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: NO_TIMER });
    const fh = m.fs.create('/t', 0o644);
    let model = random(2 * CS + 500);
    await writeAt(m.fs, fh, 0, model);
    assert.ok(m.engine.vfs.writeBuffer.dataBytes > 0);
    const steps: Array<['trunc', number] | ['write', number, number]> = [
      ['trunc', CS + 100], // inside a buffered unit of the second chunk
      ['trunc', 3 * CS], // up again: zeros, not the bytes that were cut
      ['write', 2 * CS + 7, 3000],
      ['trunc', 2 * CS], // exactly at a chunk boundary
      ['write', 4 * CS + 1, 100], // past the end: a gap of zeros
      ['trunc', 0],
      ['write', 10, 70 * KiB],
      ['trunc', 64 * KiB + 1],
    ];
    for (const step of steps) {
      if (step[0] === 'trunc') {
        await m.fs.ftruncate(fh, step[1]);
        model = modelTruncate(model, step[1]);
      } else {
        const data = random(step[2]);
        await writeAt(m.fs, fh, step[1], data);
        model = modelWrite(model, step[1], data);
      }
      await expectThrough(m, fh, model, `after ${step.join(' ')}`, next);
    }
    // Once written to the dirty store too (fsync), and after another cut of what is stored.
    await m.fs.fsync(fh);
    const mid = random(9000);
    await writeAt(m.fs, fh, 5000, mid);
    model = modelWrite(model, 5000, mid);
    await m.fs.truncate('/t', 6000);
    model = modelTruncate(model, 6000);
    const tail = random(200);
    await writeAt(m.fs, fh, 5000, tail);
    model = modelWrite(model, 5000, tail);
    await expectThrough(m, fh, model, 'after fsync, write, truncate, write', next);
    await m.fs.flush(fh);
    await m.fs.release(fh);
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir, settings: NO_TIMER });
    await expectContent(again.fs, '/t', model, CS, 'after a restart');
    await again.close();
  });

  it('keeps buffered bytes across renames, and drops them with a file deleted while open at its last close', async () => {
    const next = rng(11);
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: NO_TIMER });
    // A file renamed while its writes are buffered keeps them under its new name.
    m.fs.mkdir('/d', 0o755);
    const a = m.fs.create('/a', 0o644);
    let model = random(CS + 3333);
    await writeAt(m.fs, a, 0, model);
    await m.fs.rename('/a', '/d/b');
    const more = random(5000);
    await writeAt(m.fs, a, 100, more);
    model = modelWrite(model, 100, more);
    assert.deepEqual(await readFile(m.fs, '/d/b'), model, 'read by its new name, buffered bytes included');
    await expectThrough(m, a, model, 'through the handle after the rename', next);
    await m.fs.flush(a);
    await m.fs.release(a);

    // A file replaced by a rename while open and buffered lives on through its handle, then goes.
    await writeFile(m.fs, '/src', random(1000));
    const v = m.fs.create('/victim', 0o644);
    let vModel = random(2 * CS + 1);
    await writeAt(m.fs, v, 0, vModel);
    await m.fs.rename('/src', '/victim');
    const late = random(64 * KiB);
    await writeAt(m.fs, v, CS, late);
    vModel = modelWrite(vModel, CS, late);
    await expectThrough(m, v, vModel, 'a replaced file through its handle', next);
    // And one deleted while open, the same way.
    const g = m.fs.create('/gone', 0o644);
    await writeAt(m.fs, g, 0, random(3 * CS));
    await m.fs.unlink('/gone');
    await writeAt(m.fs, g, 7, random(100));
    assert.ok(m.engine.vfs.writeBuffer.dataBytes > 0);
    for (const fh of [v, g]) {
      await m.fs.flush(fh);
      await m.fs.release(fh);
    }
    assert.equal(m.engine.vfs.writeBuffer.dataBytes, 0, 'nothing is buffered once the deleted files closed');
    assert.equal(m.engine.vfs.writeBuffer.roomBytes, 0, 'no cache room is held for them');
    await m.sync();
    assert.equal(m.engine.stats().openFiles, 0);
    assert.equal(m.engine.stats().dirtyBytes, 0, 'the deleted files left no dirty data');
    assert.equal(await failsWith(() => m.fs.getattr('/gone')), 'ENOENT');
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    await expectContent(again.fs, '/d/b', model, CS, 'renamed file after a restart');
    assert.equal((await readFile(again.fs, '/victim')).length, 1000, 'the file renamed over the victim');
    await again.close();
  });

  it('counts a file as waiting for upload from its first buffered write, in the status and its list of files', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: NO_TIMER });
    await writeFile(m.fs, '/closed', random(5000));
    const open = m.fs.create('/open', 0o644);
    await writeAt(m.fs, open, 0, random(4 * KiB));
    assert.ok(m.engine.vfs.bufferedInodes().length > 0, 'the write to /open is still buffered');
    let s = m.engine.stats();
    assert.equal(s.dirtyFiles, 2, 'the closed file and the file being written');
    assert.deepEqual(s.pendingFiles, ['/closed', '/open']);
    // A file with both dirty chunks and buffered writes counts once.
    await writeAt(m.fs, open, CS, random(4 * KiB));
    await m.fs.fsync(open);
    await writeAt(m.fs, open, 10, random(100));
    s = m.engine.stats();
    assert.equal(s.dirtyFiles, 2, 'each file once');
    await m.fs.flush(open);
    await m.fs.release(open);
    await m.sync();
    s = m.engine.stats();
    assert.equal(s.dirtyFiles, 0);
    assert.equal(s.dirtyBytes, 0);
    await m.close();
  });

  it('costs one open (or the rename of a spare file) and no other file operation of the dirty store per small file closed', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: NO_TIMER });
    const dirtyDir = path.join(m.cacheDir, 'dirty') + path.sep;
    const seen: string[] = [];
    const real = { open: fsp.open, rm: fsp.rm, unlink: fsp.unlink, stat: fsp.stat, rename: fsp.rename };
    const wrap = <K extends keyof typeof real>(k: K) => {
      (fsp as Record<K, unknown>)[k] = (file: unknown, ...rest: unknown[]) => {
        // A rename is the dirty store's when it names a file there (a spare put in place).
        const named = k === 'rename' ? rest[0] : file;
        if (String(named).startsWith(dirtyDir)) seen.push(`${k} ${path.basename(String(named))}`);
        return (real[k] as (...a: unknown[]) => unknown)(file, ...rest);
      };
    };
    const files = new Map<string, Buffer>();
    try {
      for (const k of Object.keys(real) as Array<keyof typeof real>) wrap(k);
      for (let i = 0; i < 50; i++) {
        const data = random(1 + ((i * 997) % (8 * KiB)));
        files.set(`/s${i}`, data);
        await writeFile(m.fs, `/s${i}`, data);
      }
    } finally {
      Object.assign(fsp, real);
    }
    const placed = seen.filter((x) => x.startsWith('open ') || x.startsWith('rename ')).length;
    assert.equal(
      placed,
      50,
      `one open or rename per small file (${seen.length} operations: ${seen.slice(0, 6).join(', ')}, ...)`,
    );
    assert.equal(
      seen.length,
      50,
      `nothing else (${seen
        .filter((x) => !x.startsWith('open ') && !x.startsWith('rename '))
        .slice(0, 6)
        .join(', ')})`,
    );
    for (const [p, data] of files) assert.deepEqual(await readFile(m.fs, p), data);
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    for (const [p, data] of files) assert.deepEqual(await readFile(again.fs, p), data, `${p} after a restart`);
    await again.close();
  });

  it('never takes more memory than its budget, whatever the writers do', async () => {
    const budget = 256 * KiB;
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { ...NO_TIMER, writeBufferBytes: budget } });
    let peak = 0;
    const sample = () => {
      const mem = m.engine.vfs.writeBuffer.memoryBytes;
      peak = Math.max(peak, mem);
      assert.ok(mem <= budget, `the write buffer holds ${mem} bytes of memory, over its budget of ${budget}`);
    };
    // Four writers at once: sequential 128 KiB pieces, unaligned random pieces, small appends.
    const writer = async (p: string, seed: number): Promise<Buffer> => {
      const next = rng(seed);
      const fh = m.fs.create(p, 0o644);
      let model: Buffer = Buffer.alloc(0);
      for (let k = 0; k < 120; k++) {
        const kind = (seed + k) % 3;
        const pos = kind === 0 ? model.length : kind === 1 ? next(6 * CS) : model.length;
        const data = random(kind === 0 ? 128 * KiB : kind === 1 ? 1 + next(100 * KiB) : 1 + next(300));
        await writeAt(m.fs, fh, pos, data);
        model = modelWrite(model, pos, data);
        sample();
      }
      assert.deepEqual(await readAt(m.fs, fh, 0, model.length), model, `${p} reads back while its writer is open`);
      await m.fs.flush(fh);
      await m.fs.release(fh);
      return model;
    };
    const models = await Promise.all([1, 2, 3, 4].map((i) => writer(`/w${i}`, i * 101)));
    assert.ok(peak > budget / 2, `the writers filled the buffer (peak ${peak} bytes)`);
    const wb = m.engine.vfs.writeBuffer;
    assert.equal(wb.dataBytes, 0, 'everything was written to the dirty store at close');
    assert.equal(wb.roomBytes, 0, 'no cache room is held once nothing is buffered');
    for (const [i, model] of models.entries()) await expectContent(m.fs, `/w${i + 1}`, model, CS, 'after close');
    await m.close();
  });

  it('allocates each unit buffer of its budget once: writers that keep it busy reuse them', async () => {
    const budget = 256 * KiB;
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { ...NO_TIMER, writeBufferBytes: budget } });
    // Four sequential writers at once, 8 MiB in all: the buffer fills and empties many times over.
    const writer = async (p: string): Promise<Buffer> => {
      const fh = m.fs.create(p, 0o644);
      const data = random(2 * MiB);
      for (let pos = 0; pos < data.length; pos += 128 * KiB) await writeAt(m.fs, fh, pos, data.subarray(pos, pos + 128 * KiB));
      await m.fs.flush(fh);
      await m.fs.release(fh);
      return data;
    };
    const models = await Promise.all([1, 2, 3, 4].map((i) => writer(`/s${i}`)));
    const units = budget / (64 * KiB);
    assert.ok(
      m.engine.vfs.writeBuffer.unitAllocations <= units,
      `${m.engine.vfs.writeBuffer.unitAllocations} unit buffers allocated for a budget of ${units}`,
    );
    for (const [i, model] of models.entries()) await expectContent(m.fs, `/s${i + 1}`, model, CS, 'after close');
    await m.close();
  });

  it('answers a write without a promise only when it takes the bytes at once, and takes nothing otherwise', async () => {
    const budget = 256 * KiB;
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { ...NO_TIMER, writeBufferBytes: budget } });
    const fs = m.fs;
    assert.ok(typeof fs.writeNow === 'function', 'the engine offers the promise-free write');
    const fh = fs.create('/now', 0o644);
    const a = random(128 * KiB);
    const b = random(128 * KiB);
    // Back to back, with nothing run in between: no flush can free memory meanwhile.
    assert.equal(fs.writeNow(fh, a, 0), a.length, 'a piece within a chunk is taken at once');
    assert.equal(fs.writeNow(fh, b, a.length), b.length, 'and the next one while the budget lasts');
    assert.equal(fs.getattr('/now').size, 256 * KiB, 'the size covers what was taken');
    const c = random(64 * KiB);
    assert.equal(fs.writeNow(fh, c, 256 * KiB), undefined, 'with the budget used up, nothing is taken');
    assert.equal(fs.getattr('/now').size, 256 * KiB, 'and the size did not move');
    assert.equal(await fs.write(fh, c, 256 * KiB), c.length, 'the promised write waits for memory and takes it');
    const across = random(8 * KiB);
    assert.equal(fs.writeNow(fh, across, CS - 4 * KiB), undefined, 'a piece across a chunk boundary is left to `write`');
    assert.equal(await fs.write(fh, across, CS - 4 * KiB), across.length);
    const model = modelWrite(Buffer.concat([a, b, c]), CS - 4 * KiB, across);
    const appender = fs.open('/now', O_RDWR | O_APPEND);
    assert.equal(fs.writeNow(appender, random(10), 0), undefined, 'appends are left to `write`, which runs them in turn');
    const reader = fs.open('/now', O_RDONLY);
    assert.equal(await failsWith(() => fs.writeNow!(reader, random(10), 0)), 'EBADF', 'a read-only handle is refused');
    await fs.release(reader);
    await fs.release(appender);
    assert.deepEqual(await readAt(fs, fh, 0, model.length + 10), model, 'what was taken reads back before close');
    await fs.flush(fh);
    await fs.release(fh);
    await expectContent(fs, '/now', model, CS, 'after close');
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    await expectContent(again.fs, '/now', model, CS, 'after a restart');
    await again.close();
  });

  it('reads the newest bytes while flushes run under concurrent writers and readers of one file', async () => {
    // Every 1 ms and whenever a quarter MiB is buffered, something is flushed: the writers'
    // units are snapshotted, sealed and dropped (or kept, when written again meanwhile) while
    // the other tasks write and read the same chunks.
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { writeBufferBytes: 256 * KiB, writeBufferFlushMs: 1 } });
    const fh = m.fs.create('/shared', 0o644);
    const region = 96 * KiB; // not a multiple of a unit: tasks share units at their edges
    const tasks = 6;
    const models = await Promise.all(
      [...Array(tasks).keys()].map(async (t) => {
        const next = rng(1000 + t);
        const base = t * region;
        let model: Buffer = Buffer.alloc(region);
        await writeAt(m.fs, fh, base, model);
        for (let k = 0; k < 150; k++) {
          const at = next(region - 1);
          const data = random(1 + next(Math.min(20 * KiB, region - at)));
          await writeAt(m.fs, fh, base + at, data);
          model = modelWrite(model, at, data);
          if (k % 3 === 0) {
            const from = next(region);
            const len = 1 + next(region - from);
            assert.deepEqual(
              await readAt(m.fs, fh, base + from, len),
              model.subarray(from, from + len),
              `task ${t}, step ${k}: [${from}, ${from + len})`,
            );
          }
        }
        return model;
      }),
    );
    const all = Buffer.concat(models);
    await m.fs.flush(fh);
    await m.fs.release(fh);
    await expectContent(m.fs, '/shared', all, CS, 'after close');
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    await expectContent(again.fs, '/shared', all, CS, 'after a restart');
    await again.close();
  });

  it('fails writes with ENOSPC when the cache is full of changes that cannot upload, keeping what it acknowledged', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { ...NO_TIMER, cacheCapBytes: 16 * MiB, writeStallTimeoutMs: 300 } });
    m.engine.setUploadsPaused(true);
    const fh = m.fs.create('/big', 0o644);
    const chunks: Buffer[] = [];
    let error = '';
    for (let pos = 0; pos < 64 * MiB && !error; pos += 128 * KiB) {
      const data = random(128 * KiB);
      try {
        const n = await writeLikeAdapter(m.fs, fh, data, pos);
        chunks.push(data.subarray(0, n));
        if (n < data.length) error = 'short';
      } catch (err) {
        error = errnoName(err);
      }
    }
    assert.equal(error, 'ENOSPC', 'the writer was refused once the cache was full');
    const acknowledged = Buffer.concat(chunks);
    assert.ok(acknowledged.length >= 8 * MiB, `most of the cap was written first (${acknowledged.length} bytes)`);
    await m.fs.fsync(fh);
    await m.fs.flush(fh);
    await m.fs.release(fh);
    assert.deepEqual(await readFile(m.fs, '/big'), acknowledged, 'every acknowledged byte reads back');
    const stats = m.engine.stats();
    assert.ok(
      stats.cacheUsedBytes <= stats.cacheCapBytes,
      `cache use ${stats.cacheUsedBytes} is within the cap ${stats.cacheCapBytes}`,
    );
    assert.equal(m.engine.vfs.writeBuffer.roomBytes, 0, 'no room is held once nothing is buffered');
    m.engine.setUploadsPaused(false);
    await m.sync();
    await m.close();
    const other = await bed.mount(space, { mode: 'read' });
    assert.deepEqual(await readFile(other.fs, '/big'), acknowledged, 'and reaches the bucket once uploads resume');
    await other.close();
  });
});
