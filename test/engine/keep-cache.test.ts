/**
 * When the filesystem lets the kernel keep a file's cached pages at an open (keep_cache, see
 * electron/engine/vfs/pageCache.ts), through the FUSE interface: on the writer only for a file
 * whose content is all uploaded and unchanged since the pages were cached; on a follower, never
 * after the writer changed the file; and never after another machine's metadata changed a file
 * under a handle open on the live tree, even if the content comes back to the same version.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  EngineBed,
  Mounted,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  random,
  readFile,
  until,
  writeAt,
  writeFile,
} from '../helpers/engineBed';

const CS = 64 * 1024;

/** Opens `p`, returns whether the kernel may keep its pages, and keeps the handle open. */
function openKeeping(m: Mounted, p: string, flags = O_RDONLY): { fh: number; keep: boolean } {
  const fh = m.fs.open(p, flags);
  return { fh, keep: m.fs.keepCache?.(fh) ?? false };
}

/** Opens and closes `p`; returns whether that open kept the pages. */
async function keptAtOpen(m: Mounted, p: string): Promise<boolean> {
  const { fh, keep } = openKeeping(m, p);
  await m.fs.release(fh);
  return keep;
}

describe('keeping the kernel page cache across opens', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('on the writer: only for uploaded content unchanged since it was cached', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', random(3 * CS));
    assert.equal(await keptAtOpen(m, '/f'), false, 'not while changes wait for upload');
    await m.sync();
    assert.equal(await keptAtOpen(m, '/f'), false, 'the first open after the upload drops the pages');
    assert.equal(await keptAtOpen(m, '/f'), true);
    const w = openKeeping(m, '/f', O_RDWR);
    assert.equal(w.keep, true);
    await writeAt(m.fs, w.fh, 5, random(10));
    assert.equal(await keptAtOpen(m, '/f'), false, 'not after a write');
    await m.fs.release(w.fh);
    await m.sync();
    assert.equal(await keptAtOpen(m, '/f'), false);
    assert.equal(await keptAtOpen(m, '/f'), true);
    await m.fs.truncate('/f', 100);
    assert.equal(await keptAtOpen(m, '/f'), false, 'not after a truncate');
    await m.close();
  });

  it('on a follower: kept while the writer leaves the file alone, dropped once its change is applied', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const w = await bed.mount(space);
    const v1 = random(2 * CS);
    await writeFile(w.fs, '/doc', v1);
    await w.sync();
    const f = await bed.mount(space, { mode: 'read', settings: { followIntervalMs: 100 } });
    assert.deepEqual(await readFile(f.fs, '/doc'), v1);
    assert.equal(await keptAtOpen(f, '/doc'), true);
    const v2 = Buffer.from(v1);
    v2[CS + 1] = v2[CS + 1]! ^ 0xff;
    await writeFile(w.fs, '/doc', v2);
    await w.sync();
    await until('the follower to apply the change', async () => (await readFile(f.fs, '/doc')).equals(v2) || undefined);
    assert.equal(await keptAtOpen(f, '/doc'), true, 'the new version, once read, is kept in turn');
    await f.close();
    await w.close();
  });

  it("never after another machine's change under a live handle, even when the content comes back", async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', random(1000));
    await m.sync();
    await keptAtOpen(m, '/f');
    const live = openKeeping(m, '/f');
    assert.equal(live.keep, true);
    // Segments another machine wrote, applied under the open handle: the file is cut by one
    // byte (the handle may read that version into the kernel's cache), then restored.
    const meta = m.engine.vfs['meta'];
    const ino = meta.tree.lookup(1, 'f')!.ino;
    const ref = meta.tree.get(ino)!.chunks![0]!;
    meta.applyRemote(meta.remoteSeq + 1, [{ t: 'attr', ino, size: 999, ms: Date.now() }]);
    meta.applyRemote(meta.remoteSeq + 1, [
      { t: 'attr', ino, size: 1000, ms: Date.now() },
      { t: 'chunk', ino, idx: 0, ref },
    ]);
    assert.deepEqual(meta.tree.get(ino)!.chunks, [ref]);
    assert.equal(await keptAtOpen(m, '/f'), false);
    // That open dropped the pages; from then on they hold what the file holds now.
    await m.fs.release(live.fh);
    assert.equal(await keptAtOpen(m, '/f'), true);
    await m.close();
  });

  it('writes a new file created write-only around the page cache, and reads around it while that writer is open', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const direct = (fh: number) => m.fs.directIo?.(fh) ?? false;
    const w = m.fs.create('/new', 0o644, O_WRONLY);
    assert.equal(direct(w), true, 'a new file created write-only');
    const data = random(3 * CS);
    await writeAt(m.fs, w, 0, data);
    const r = m.fs.open('/new', O_RDONLY);
    assert.equal(direct(r), true, 'a reader opened while the writer is open');
    assert.deepEqual(await readFile(m.fs, '/new'), data);
    await m.fs.release(r);
    await m.fs.release(w);
    const again = m.fs.open('/new', O_RDONLY);
    assert.equal(direct(again), false, 'once the writer closed');
    await m.fs.release(again);

    const rw = m.fs.create('/rw', 0o644, O_RDWR);
    assert.equal(direct(rw), false, 'a new file created read-write (it may be read or mapped)');
    const w2 = m.fs.open('/rw', O_WRONLY);
    assert.equal(direct(w2), false, 'an existing file opened write-only');
    await m.fs.release(w2);
    await m.fs.release(rw);
    const held = m.fs.open('/new', O_RDONLY);
    const late = m.fs.create('/new', 0o644, O_WRONLY);
    assert.equal(direct(late), false, 'a create that finds the file (another handle may hold its pages)');
    await m.fs.release(late);
    await m.fs.release(held);
    await m.close();
  });

  it("keeps them after another machine's change under a live handle that left the handle's file alone", async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/f', random(1000));
    await writeFile(m.fs, '/g', random(1000));
    await m.sync();
    await keptAtOpen(m, '/f');
    await keptAtOpen(m, '/g');
    const liveF = openKeeping(m, '/f');
    const liveG = openKeeping(m, '/g');
    assert.equal(liveF.keep && liveG.keep, true);
    // Another machine cuts /g, adds a file and renames it: only /g's bytes moved under a handle.
    const meta = m.engine.vfs['meta'];
    const g = meta.tree.lookup(1, 'g')!.ino;
    const ms = Date.now();
    meta.applyRemote(meta.remoteSeq + 1, [{ t: 'attr', ino: g, size: 10, ms }]);
    meta.applyRemote(meta.remoteSeq + 1, [
      { t: 'mk', parent: 1, name: 'n', ino: meta.tree.nextIno, kind: 'file', mode: 0o644, uid: 0, gid: 0, ms },
      { t: 'mv', sp: 1, sn: 'n', dp: 1, dn: 'n2', ms },
    ]);
    await m.fs.release(liveF.fh);
    await m.fs.release(liveG.fh);
    assert.equal(await keptAtOpen(m, '/f'), true, 'its bytes did not change under the handle');
    assert.equal(await keptAtOpen(m, '/g'), false, 'its bytes changed under the handle');
    assert.equal(await keptAtOpen(m, '/g'), true);
    await m.close();
  });
});
