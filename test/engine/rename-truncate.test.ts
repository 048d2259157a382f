/**
 * Renames and truncation, in process: a rename over an existing file replaces it and drops
 * its data, renames across directories (of files and of whole directories) keep every byte,
 * the kernel-visible errors are the ones a local disk gives, and truncation down then up reads
 * zeros where data was cut, whether the data was still local or already uploaded, across a
 * restart and on a second machine.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  EngineBed,
  Filespace,
  Mounted,
  O_RDWR,
  chunkObjects,
  expectContent,
  failsWith,
  random,
  readFile,
  withFile,
  writeFile,
} from '../helpers/engineBed';

const CS = 64 * 1024;

describe('renames and truncation through the FUSE interface', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  /** Checks the tree after a restart, after upload, and on a second machine. */
  async function expectEverywhere(space: Filespace, m: Mounted, files: Map<string, Buffer>, gone: string[]): Promise<void> {
    const check = async (x: Mounted, what: string) => {
      for (const [p, data] of files) await expectContent(x.fs, p, data, CS, what);
      for (const p of gone) assert.equal(await failsWith(() => x.fs.getattr(p)), 'ENOENT', `${what}: ${p} is gone`);
    };
    await check(m, 'at once');
    await m.close();
    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    await check(again, 'after a restart');
    await again.sync();
    await check(again, 'after upload');
    await again.close();
    const other = await bed.mount(space, { mode: 'read' });
    await check(other, 'on a second machine');
    await other.close();
  }

  for (const uploaded of [false, true]) {
    it(`renames over an existing file, replacing it (data ${uploaded ? 'uploaded' : 'still local'})`, async () => {
      const space = await bed.filespace({ chunkSize: CS });
      const m = await bed.mount(space);
      const a = random(2 * CS + 5);
      const b = random(3 * CS + 9);
      await writeFile(m.fs, '/a', a);
      await writeFile(m.fs, '/b', b);
      if (uploaded) await m.sync();
      await m.fs.rename('/a', '/b');
      assert.deepEqual(m.fs.readdir('/').sort(), ['.', '..', 'b']);
      await expectEverywhere(space, m, new Map([['/b', a]]), ['/a']);
      if (!uploaded)
        assert.equal(
          (await chunkObjects(space.store, space.keys)).length,
          3,
          "the replaced file's data never reached the bucket",
        );
    });
  }

  it('moves files and whole directories across directories', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    m.fs.mkdir('/src', 0o755);
    m.fs.mkdir('/src/sub', 0o750);
    m.fs.mkdir('/dst', 0o755);
    const f1 = random(CS + 1);
    const f2 = random(10);
    await writeFile(m.fs, '/src/f1', f1);
    await writeFile(m.fs, '/src/sub/f2', f2);
    await m.fs.rename('/src/f1', '/dst/moved');
    await m.fs.rename('/src/sub', '/dst/sub');
    await m.fs.rename('/dst', '/src/dst'); // into a directory that now holds only what is left
    assert.equal(m.fs.getattr('/src/dst/sub').mode & 0o7777, 0o750);
    await expectEverywhere(
      space,
      m,
      new Map([
        ['/src/dst/moved', f1],
        ['/src/dst/sub/f2', f2],
      ]),
      ['/src/f1', '/src/sub', '/dst'],
    );
  });

  it('answers rename errors as a local disk does and changes nothing', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    m.fs.mkdir('/d', 0o755);
    m.fs.mkdir('/d/inner', 0o755);
    m.fs.mkdir('/empty', 0o755);
    await writeFile(m.fs, '/d/inner/f', Buffer.from('f'));
    await writeFile(m.fs, '/g', Buffer.from('g'));
    assert.equal(await failsWith(() => m.fs.rename('/missing', '/x')), 'ENOENT');
    assert.equal(await failsWith(() => m.fs.rename('/g', '/nodir/x')), 'ENOENT');
    assert.equal(await failsWith(() => m.fs.rename('/d', '/d/inner/below')), 'EINVAL');
    assert.equal(await failsWith(() => m.fs.rename('/empty', '/d')), 'ENOTEMPTY');
    assert.equal(await failsWith(() => m.fs.rename('/g', '/empty')), 'EISDIR');
    assert.equal(await failsWith(() => m.fs.rename('/empty', '/g')), 'ENOTDIR');
    assert.equal(await failsWith(() => m.fs.rename('/g', '/g/x')), 'ENOTDIR');
    await m.fs.rename('/g', '/g'); // onto itself: nothing happens
    await m.fs.rename('/d/inner', '/empty'); // over an empty directory: replaces it
    assert.deepEqual(m.fs.readdir('/').sort(), ['.', '..', 'd', 'empty', 'g']);
    assert.deepEqual(m.fs.readdir('/empty').sort(), ['.', '..', 'f']);
    assert.deepEqual(await readFile(m.fs, '/empty/f'), Buffer.from('f'));
  });

  for (const uploaded of [false, true]) {
    it(`truncates down and up, reading zeros where data was cut (data ${uploaded ? 'uploaded' : 'still local'})`, async () => {
      const space = await bed.filespace({ chunkSize: CS });
      const m = await bed.mount(space);
      const data = random(4 * CS);
      await writeFile(m.fs, '/t', data);
      await writeFile(m.fs, '/h', data);
      await writeFile(m.fs, '/z', data);
      if (uploaded) await m.sync();
      // By path: cut inside chunk 1, then grow past the old end.
      await m.fs.truncate('/t', CS + 1000);
      await m.fs.truncate('/t', 5 * CS);
      const t = Buffer.concat([data.subarray(0, CS + 1000), Buffer.alloc(4 * CS - 1000)]);
      // Through a handle, at a chunk boundary, then up by a few bytes, then written past a hole.
      await withFile(m.fs, '/h', O_RDWR, async (fh) => {
        await m.fs.ftruncate(fh, 2 * CS);
        await m.fs.ftruncate(fh, 2 * CS + 3);
        await m.fs.write(fh, Buffer.from('end'), 3 * CS);
      });
      const h = Buffer.concat([data.subarray(0, 2 * CS), Buffer.alloc(CS), Buffer.from('end')]);
      // To zero and back up: all zeros.
      await m.fs.truncate('/z', 0);
      await m.fs.truncate('/z', CS + 1);
      assert.equal(await failsWith(() => m.fs.truncate('/', 0)), 'EISDIR');
      assert.equal(await failsWith(() => m.fs.truncate('/missing', 0)), 'ENOENT');
      await expectEverywhere(
        space,
        m,
        new Map([
          ['/t', t],
          ['/h', h],
          ['/z', Buffer.alloc(CS + 1)],
        ]),
        [],
      );
    });
  }
});
