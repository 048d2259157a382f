// The pool of open file handles shared by the chunk cache and the dirty store: a handle follows
// its file across a rename (a dirty chunk moved into the clean cache keeps the descriptor it
// was written through), and a path renamed over lets go of the handle it had.

import assert from 'node:assert/strict';
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { HandlePool } from '../../electron/engine/cache/handles';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-handles-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('HandlePool', () => {
  it('keeps the handle of a renamed file under its new path', { timeout: 30_000 }, async () => {
    const pool = new HandlePool(4);
    const from = path.join(dir, 'dirty');
    const to = path.join(dir, 'clean');
    await writeFile(from, 'chunk bytes');
    const fd = await pool.use(from, async (fh) => fh.fd);
    await rename(from, to);
    pool.rename(from, to);
    assert.equal(await pool.use(to, async (fh) => fh.fd), fd, 'the same descriptor, not a new open');
    const read = await pool.use(to, async (fh) => (await fh.read(Buffer.alloc(11), 0, 11, 0)).buffer.toString());
    assert.equal(read, 'chunk bytes');
    await assert.rejects(
      pool.use(from, async () => undefined),
      { code: 'ENOENT' },
      'the old path has no handle left',
    );
    await pool.closeAll();
  });

  it('lets go of the handle a path had when another file is renamed onto it', { timeout: 30_000 }, async () => {
    const pool = new HandlePool(4);
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    await writeFile(a, 'new');
    await writeFile(b, 'old');
    const oldFd = await pool.use(b, async (fh) => fh.fd);
    await pool.use(a, async () => undefined);
    await rename(a, b);
    pool.rename(a, b);
    const got = await pool.use(b, async (fh) => (await fh.read(Buffer.alloc(3), 0, 3, 0)).buffer.toString());
    assert.equal(got, 'new', "b's handle is the renamed file's, not the one b had before");
    assert.notEqual(await pool.use(b, async (fh) => fh.fd), oldFd);
    await pool.closeAll();
  });
});
