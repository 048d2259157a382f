/**
 * A new file's first chunk file is created in the dirty store when the file is created, so its
 * close only writes into it: the data lands in that file, a file closed without data leaves
 * nothing behind, and neither does an engine closed while such a file is still open.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { EngineBed, readFile, random, until, writeFile } from '../helpers/engineBed';

const dirtyFiles = async (cacheDir: string) => (await fsp.readdir(path.join(cacheDir, 'dirty'))).sort();

describe('chunk files created with their file', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('hold the data written before close, and go when nothing was written', async () => {
    const space = await bed.filespace();
    const m = await bed.mount(space);
    const data = random(10_000);
    await writeFile(m.fs, '/written', data);
    const ino = m.fs.getattr('/written').ino;
    assert.deepEqual(await dirtyFiles(m.cacheDir), [`${ino}.0`]);
    assert.ok((await fsp.stat(path.join(m.cacheDir, 'dirty', `${ino}.0`))).size > data.length);
    assert.deepEqual(await readFile(m.fs, '/written'), data);

    // touch: created and closed with no data.
    const fh = m.fs.create('/touched', 0o644);
    const touched = m.fs.getattr('/touched').ino;
    await until('the chunk file is created ahead', async () => (await dirtyFiles(m.cacheDir)).includes(`${touched}.0`));
    await m.fs.flush(fh);
    await m.fs.release(fh);
    await until('the unused chunk file is removed', async () => !(await dirtyFiles(m.cacheDir)).includes(`${touched}.0`));
    assert.equal(m.fs.getattr('/touched').size, 0);

    // Created and still open when the engine closes: nothing is left for the next start.
    m.fs.create('/open', 0o644);
    const open = m.fs.getattr('/open').ino;
    await until('created ahead', async () => (await dirtyFiles(m.cacheDir)).includes(`${open}.0`));
    await m.sync();
    await m.close();
    assert.deepEqual(await dirtyFiles(m.cacheDir), []);

    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    assert.deepEqual(await readFile(again.fs, '/written'), data);
    assert.equal(again.fs.getattr('/open').size, 0);
    assert.deepEqual(
      again.log.filter((l) => /damaged|orphan/.test(l)),
      [],
    );
  });
});
