/**
 * The data path, in process: bytes written through the FUSE interface read back the same
 * whichever store serves them (the dirty store before upload, the clean cache after it, the
 * bucket on a machine that linked the filespace from the bucket alone), across chunk
 * boundaries, with holes, overwrites and appends, and across a restart of the engine.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  EngineBed,
  Filespace,
  Mounted,
  O_APPEND,
  O_RDONLY,
  O_WRONLY,
  chunkObjects,
  expectContent,
  failsWith,
  patchFile,
  random,
  readAt,
  readFile,
  readRange,
  until,
  withFile,
  writeAt,
  writeFile,
  writeLikeAdapter,
} from '../helpers/engineBed';

const CS = 64 * 1024;

describe('reads and writes through the FUSE interface', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  /** Checks `files` on this machine, after a restart, after upload, and on a second machine. */
  async function expectEverywhere(space: Filespace, m: Mounted, files: Map<string, Buffer>): Promise<void> {
    for (const [p, data] of files) await expectContent(m.fs, p, data, CS, 'before upload');
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    for (const [p, data] of files) await expectContent(again.fs, p, data, CS, 'after a restart');
    await again.sync();
    assert.equal(again.engine.stats().dirtyBytes, 0);
    for (const [p, data] of files) await expectContent(again.fs, p, data, CS, 'from the clean cache');
    await again.close();
    const other = await bed.mount(space, { mode: 'read' });
    for (const [p, data] of files) await expectContent(other.fs, p, data, CS, 'on a second machine');
    await other.close();
  }

  it('reads back what was written, across chunk boundaries, whatever the piece size', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const big = random(3 * CS + 12_345);
    await writeFile(m.fs, '/big.bin', big);
    // Odd piece sizes, so pieces straddle chunk boundaries at every offset.
    const odd = random(2 * CS + 777);
    await withFile(m.fs, '/odd.bin', O_WRONLY, async (fh) => {
      for (let pos = 0, i = 0; pos < odd.length; i++) {
        const n = Math.min([1, 4095, 65_537, 100, 131_072][i % 5]!, odd.length - pos);
        await writeLikeAdapter(m.fs, fh, odd.subarray(pos, pos + n), pos);
        pos += n;
      }
    });
    const exact = random(CS);
    await writeFile(m.fs, '/exact.bin', exact);
    await writeFile(m.fs, '/empty.bin', Buffer.alloc(0));
    await expectEverywhere(
      space,
      m,
      new Map([
        ['/big.bin', big],
        ['/odd.bin', odd],
        ['/exact.bin', exact],
        ['/empty.bin', Buffer.alloc(0)],
      ]),
    );
  });

  it('reads zeros in holes and stores no chunk for them', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const tail = random(10);
    await patchFile(m.fs, '/sparse.bin', 5 * CS + 7, tail);
    const expected = Buffer.alloc(5 * CS + 17);
    tail.copy(expected, 5 * CS + 7);
    // A hole inside a chunk too: written at both ends of one chunk.
    await patchFile(m.fs, '/inner.bin', 0, Buffer.from('head'));
    await patchFile(m.fs, '/inner.bin', CS - 4, Buffer.from('tail'));
    const inner = Buffer.alloc(CS);
    inner.write('head', 0);
    inner.write('tail', CS - 4);
    assert.deepEqual(await readRange(m.fs, '/sparse.bin', 2 * CS - 3, 6), Buffer.alloc(6));
    await expectEverywhere(
      space,
      m,
      new Map([
        ['/sparse.bin', expected],
        ['/inner.bin', inner],
      ]),
    );
    assert.equal((await chunkObjects(space.store, space.keys)).length, 2, 'one chunk per written chunk; holes are not stored');
  });

  it('overwrites part of an uploaded chunk and keeps the bytes around it', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const data = random(3 * CS);
    await writeFile(m.fs, '/f.bin', data);
    await m.sync();
    const patch = random(300);
    // Straddles the boundary between chunks 0 and 1: both are rebuilt from their uploaded bytes.
    await patchFile(m.fs, '/f.bin', CS - 150, patch);
    patch.copy(data, CS - 150);
    // Past the end: the file grows, the gap reads as zeros.
    const far = random(5);
    await patchFile(m.fs, '/f.bin', 4 * CS + 1, far);
    const grown = Buffer.concat([data, Buffer.alloc(CS + 1), far]);
    await expectEverywhere(space, m, new Map([['/f.bin', grown]]));
  });

  it('appends at the end with O_APPEND, whatever offset the write names', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const first = random(CS - 10);
    await writeFile(m.fs, '/log', first);
    const lines: Buffer[] = [first];
    for (let i = 0; i < 5; i++) {
      const line = random(7 + i * 1000);
      await withFile(m.fs, '/log', O_WRONLY | O_APPEND, (fh) => writeAt(m.fs, fh, 0, line));
      lines.push(line);
    }
    await expectEverywhere(space, m, new Map([['/log', Buffer.concat(lines)]]));
  });

  it('reads short at the end of a file and nothing past it', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const data = random(CS + 100);
    await writeFile(m.fs, '/f', data);
    await withFile(m.fs, '/f', O_RDONLY, async (fh) => {
      assert.deepEqual(await readAt(m.fs, fh, CS + 50, 4096), data.subarray(CS + 50));
      assert.equal((await readAt(m.fs, fh, CS + 100, 10)).length, 0);
      assert.equal((await readAt(m.fs, fh, 10 * CS, 10)).length, 0);
    });
    assert.deepEqual(await readFile(m.fs, '/f'), data);
  });

  // The chunk's upload commits its reference with the file's live size: the size must cover
  // each piece of a write as soon as that piece is in the dirty store, not only once the whole
  // call returns, or the reference is cut and the dirty copy released (data loss). A write that
  // straddles a chunk boundary while the writer waits (backpressure, a slow disk) hits it.
  it('keeps a write that straddles two chunks when the first one uploads before the write returns', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { uploadDelayMs: 0 } });
    const head = random(CS - 100);
    const straddle = random(200);
    let releaseGate: () => void = () => undefined;
    const gate = new Promise<void>((r) => (releaseGate = r));
    let gated = false;
    const realOpen = fsp.open;
    const realRename = fsp.rename;
    const holdSecondChunk = async (file: unknown) => {
      if (!gated && String(file).startsWith(path.join(m.cacheDir, 'dirty') + path.sep) && String(file).endsWith('.1')) {
        gated = true;
        await gate;
      }
    };
    await withFile(m.fs, '/grow', O_WRONLY, async (fh) => {
      await writeAt(m.fs, fh, 0, head);
      // The second piece of the next write starts a new dirty chunk file (when the write
      // buffer sends it on): hold its creation (an open, or the rename of a spare file) until
      // the first chunk (now full, so due at once) was uploaded and left the dirty store.
      (fsp as { open: typeof realOpen }).open = (async (file: string, ...rest: unknown[]) => {
        await holdSecondChunk(file);
        return (realOpen as (...a: unknown[]) => Promise<FileHandle>)(file, ...rest);
      }) as typeof realOpen;
      (fsp as { rename: typeof realRename }).rename = async (from, to) => {
        await holdSecondChunk(to);
        return realRename(from, to);
      };
      try {
        const writing = m.fs.write(fh, straddle, CS - 100);
        await until('the first chunk to be uploaded', () => gated && m.engine.stats().dirtyChunks === 0, 30_000, 10);
        releaseGate();
        await writing;
      } finally {
        (fsp as { open: typeof realOpen }).open = realOpen;
        (fsp as { rename: typeof realRename }).rename = realRename;
        releaseGate();
      }
    });
    await expectEverywhere(space, m, new Map([['/grow', Buffer.concat([head, straddle])]]));
  });

  it('refuses writes through a read-only handle and calls on unknown handles', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', Buffer.from('kept'));
    await withFile(m.fs, '/f', O_RDONLY, async (fh) => {
      assert.equal(await failsWith(() => m.fs.write(fh, Buffer.from('x'), 0)), 'EBADF');
    });
    assert.equal(await failsWith(() => m.fs.read(987_654, Buffer.alloc(1), 1, 0)), 'EBADF');
    assert.equal(await failsWith(() => m.fs.open('/missing', O_RDONLY)), 'ENOENT');
    assert.equal(await failsWith(() => m.fs.open('/', O_WRONLY)), 'EISDIR');
    assert.deepEqual(await readFile(m.fs, '/f'), Buffer.from('kept'));
  });
});
