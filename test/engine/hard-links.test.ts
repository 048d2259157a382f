/**
 * Hard links through the FUSE interface, in process: link() gives a non-directory a further
 * name (same inode, nlink counted, data and attributes shared) and refuses what a local disk
 * refuses; a name going while others remain keeps the file's size not yet committed, its
 * buffered data and its open handles; the last name frees the data; handles of a file with
 * several names read around the kernel's page cache; the first link raises the bucket's header
 * to format 2; and all of it survives a restart and reaches a second machine.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { HEADER_KEY } from '../../electron/engine/filespace';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { MetaOp, ROOT_INO } from '../../electron/engine/meta/tree';
import {
  EngineBed,
  O_RDONLY,
  O_RDWR,
  chunkObjects,
  expectContent,
  failsWith,
  random,
  readAt,
  readFile,
  until,
  writeAt,
  writeFile,
} from '../helpers/engineBed';

const CS = 64 * 1024;

describe('hard links through the FUSE interface', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('link shares the inode, refuses folders and names in use, and raises the header to format 2 first', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const format = async () =>
      (JSON.parse((await space.store.get(HEADER_KEY))!.body.toString('utf8')) as { format: number }).format;
    const m = await bed.mount(space);
    const data = random(2 * CS + 7);
    await writeFile(m.fs, '/a', data);
    m.fs.mkdir('/d', 0o755);
    assert.equal(await format(), 1);
    assert.equal(await failsWith(() => m.fs.link('/d', '/d2')), 'EPERM', 'a folder has one name');
    assert.equal(await failsWith(() => m.fs.link('/a', '/d')), 'EEXIST');
    assert.equal(await failsWith(() => m.fs.link('/missing', '/x')), 'ENOENT');
    assert.equal(await format(), 1, 'a refused link leaves the format alone');
    await m.fs.link('/a', '/d/b');
    assert.equal(await format(), 2);
    const sa = m.fs.getattr('/a');
    const sb = m.fs.getattr('/d/b');
    assert.equal(sb.ino, sa.ino);
    assert.equal(sa.nlink, 2);
    assert.equal(sb.nlink, 2);
    m.fs.chmod('/d/b', 0o600);
    assert.equal(m.fs.getattr('/a').mode & 0o7777, 0o600, 'attributes are shared');
    await expectContent(m.fs, '/d/b', data, CS, 'through the new name');

    // Handles of a file with several names read around the page cache and never keep it.
    const fh = m.fs.open('/a', O_RDONLY);
    assert.equal(m.fs.directIo?.(fh), true);
    assert.equal(m.fs.keepCache?.(fh), false);
    await m.fs.release(fh);
    await m.sync();
    await m.close();

    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    assert.equal(again.fs.getattr('/d/b').nlink, 2, 'after a restart');
    await again.close();
    const other = await bed.mount(space, { mode: 'read' });
    assert.equal(other.fs.getattr('/d/b').ino, sa.ino, 'on a second machine');
    assert.equal(other.fs.getattr('/a').nlink, 2);
    await expectContent(other.fs, '/d/b', data, CS, 'on a second machine');
    await other.close();
  });

  it('a name going while another remains keeps the unsaved size, buffered data and open handles; the last name frees the data', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const first = random(CS + 3);
    await writeFile(m.fs, '/a', first);
    await m.fs.link('/a', '/b');
    const fh = m.fs.open('/a', O_RDWR);
    const more = random(CS);
    await writeAt(m.fs, fh, first.length, more); // extends the file: a size not yet committed
    await m.fs.unlink('/a');
    assert.equal(m.fs.getattr('/b').size, first.length + more.length, 'the other name sees the new size');
    assert.equal(m.fs.getattr('/b').nlink, 1);
    assert.deepEqual(await readAt(m.fs, fh, first.length, more.length), more, 'the handle keeps working');
    await writeAt(m.fs, fh, 0, Buffer.from('head'));
    await m.fs.flush(fh);
    await m.fs.release(fh);
    const want = Buffer.concat([Buffer.from('head'), first.subarray(4), more]);
    await expectContent(m.fs, '/b', want, CS, 'through the name left');

    // rename over a name of the file from another file: the file keeps its other name.
    await m.fs.link('/b', '/c');
    await writeFile(m.fs, '/other', Buffer.from('x'));
    await m.fs.rename('/other', '/c');
    assert.equal(m.fs.getattr('/b').nlink, 1);
    await expectContent(m.fs, '/b', want, CS, 'after a rename over its other name');
    await m.sync();
    await m.close();

    const again = await bed.mount(space, { cacheDir: m.cacheDir });
    await expectContent(again.fs, '/b', want, CS, 'after a restart');
    assert.ok((await chunkObjects(space.store, space.keys)).length >= 3, "the file's chunks are in the bucket");
    await again.fs.link('/b', '/e');
    await again.fs.unlink('/c');
    await again.fs.unlink('/b');
    await again.sync();
    assert.ok((await again.engine.collectGarbage()).referenced >= 3, 'a name is left: its chunks are referenced');
    await again.fs.unlink('/e');
    await again.sync();
    assert.equal(await failsWith(() => again.fs.getattr('/e')), 'ENOENT');
    assert.equal((await again.engine.collectGarbage()).referenced, 0, 'the last name went: nothing references its chunks');
    await again.close();
  });

  it('a follower meeting a change of a kind it does not know stops following, saying a newer version wrote it', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const w = await bed.mount(space);
    await writeFile(w.fs, '/f', Buffer.from('before'));
    await w.sync();
    const f = await bed.mount(space, { mode: 'read', settings: { followIntervalMs: 100 } });
    assert.deepEqual(await readFile(f.fs, '/f'), Buffer.from('before'));
    await w.close();

    // A newer version's segment: a known op, then one of a kind this version does not know.
    const remote = new RemoteMeta(space.store, space.keys.metaKey, space.header);
    let seq = 1;
    while (await remote.readSegment(seq)) seq++;
    const ops = [
      { t: 'mk', parent: ROOT_INO, name: 'g', ino: 1000, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 1 },
      { t: 'reflink', ino: 1000, parent: ROOT_INO, name: 'h', ms: 2 },
    ] as unknown as MetaOp[];
    await remote.pushSegment(seq, ops, { id: 'newer-machine', epoch: 1 });
    const why = await until('the follower to stop following', () => {
      const e = f.engine.stats().lastError;
      return e && /newer version of Filespace/.test(e) ? e : undefined;
    });
    assert.match(why, /^stopped following the filespace: .*"reflink".*update Filespace on this machine$/);
    assert.equal(await failsWith(() => f.fs.getattr('/g')), 'ENOENT', 'nothing of that segment was applied');
    assert.deepEqual(await readFile(f.fs, '/f'), Buffer.from('before'), 'what it had keeps reading');
    await f.close();
  });
});
