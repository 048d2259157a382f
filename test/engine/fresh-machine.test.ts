/**
 * A fresh machine serves before its folders are loaded (meta/pageLoader.ts), in process: the
 * link reads no folder's page; a path's folders load when it is used, while the rest load in
 * the background; files read, written, renamed and hard-linked meanwhile are right; a folder
 * whose page is slow holds up nothing else; garbage collection and snapshots wait for every
 * folder (a chunk named only in a folder not loaded yet is referenced all the same); a restart
 * before the folders are all loaded keeps the changes and goes on loading; and a third machine
 * sees the tree the second one left.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as path from 'node:path';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { PAGE_PREFIX, isDirCover } from '../../electron/engine/meta/pages';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { MemoryStore } from '../../electron/engine/store/memory';
import { EngineBed, Mounted, chunkObjects, expectContent, random, readFile, until, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

/** A bucket whose GETs of the pages in `held` wait until `release`; it notes every page read. */
class HeldPages extends MemoryStore {
  readonly held = new Set<string>();
  readonly pagesRead: string[] = [];
  private opened: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;
  hold(keys: readonly string[]): void {
    for (const k of keys) this.held.add(k);
    this.opened = new Promise((resolve) => (this.open = resolve));
  }
  release(): void {
    this.held.clear();
    this.open();
  }
  override async get(...args: Parameters<MemoryStore['get']>): ReturnType<MemoryStore['get']> {
    if (args[0].startsWith(PAGE_PREFIX)) {
      this.pagesRead.push(args[0]);
      if (this.held.has(args[0])) await this.opened;
    }
    return super.get(...args);
  }
}

describe('a fresh machine serves while its folders load', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('loads what a path names on demand, the rest behind it, and waits for all of it where the whole tree counts', async () => {
    const store = new HeldPages();
    const space = await bed.filespace({ chunkSize: CS, store });
    const a = await bed.mount(space);
    const files = new Map<string, Buffer>();
    for (let d = 0; d < 10; d++) {
      a.fs.mkdir(`/d${d}`, 0o755);
      for (let f = 0; f < 5; f++) {
        const data = random(1000 + 997 * f + d);
        files.set(`/d${d}/f${f}`, data);
        await writeFile(a.fs, `/d${d}/f${f}`, data);
      }
    }
    a.fs.mkdir('/d0/sub', 0o755);
    a.fs.mkdir('/d0/sub/deep', 0o700);
    const deep = random(2 * CS + 5);
    files.set('/d0/sub/deep/file', deep);
    await writeFile(a.fs, '/d0/sub/deep/file', deep);
    await a.fs.link('/d1/f0', '/d5/link');
    a.fs.setxattr('/d2/f1', 'user.colour', Buffer.from('blue'), 0);
    const d7 = a.fs.getattr('/d7').ino;
    await a.sync();
    await a.close();

    const manifest = (await new RemoteMeta(store, space.keys.metaKey, space.header).newestManifest())!;
    const folderPages = manifest.pages.filter((r) => isDirCover(r) && r.dir !== 1).map((r) => r.key);
    assert.ok(folderPages.length >= 12, `a page per folder with entries (${folderPages.length})`);
    store.hold(manifest.pages.filter((r) => isDirCover(r) && r.dir === d7).map((r) => r.key));
    store.pagesRead.length = 0;
    const cacheDir = await bed.link(space, 'fresh');
    assert.deepEqual(
      store.pagesRead.filter((k) => folderPages.includes(k)),
      [],
      'the link read no folder page',
    );

    let b: Mounted = await bed.mount(space, { cacheDir, lazy: true });
    const vfs = () => b.engine.vfs;
    assert.ok(b.engine.foldersLoading >= 1);
    assert.equal(b.engine.stats().foldersLoading, b.engine.foldersLoading, 'status says how many folders wait');
    assert.ok(b.log.some((l) => /folder\(s\) load from the bucket as they are used/.test(l)));
    // Paths load as they are used; d7's page is held, and nothing else waits for it.
    for (const p of ['/d3/f2', '/d0/sub/deep/file', '/d5/link', '/d1/f0']) await vfs().whenPathLoaded(p);
    await expectContent(b.fs, '/d3/f2', files.get('/d3/f2')!, CS, 'fresh machine');
    await expectContent(b.fs, '/d0/sub/deep/file', deep, CS, 'fresh machine');
    assert.deepEqual(b.fs.readdir('/d3').sort(), ['.', '..', 'f0', 'f1', 'f2', 'f3', 'f4']);
    assert.equal(b.fs.getattr('/d5/link').ino, b.fs.getattr('/d1/f0').ino);
    assert.equal(b.fs.getattr('/d5/link').nlink, 2);
    assert.deepEqual(await readFile(b.fs, '/d5/link'), files.get('/d1/f0'));
    await vfs().whenPathLoaded('/d2/f1');
    assert.equal(b.fs.getxattr('/d2/f1', 'user.colour').toString(), 'blue');
    assert.equal(b.fs.getattr('/d0/sub/deep').mode & 0o777, 0o700);

    // Changes meanwhile.
    const fresh = random(CS + 3);
    await vfs().whenPathLoaded('/d3/new');
    await writeFile(b.fs, '/d3/new', fresh);
    await vfs().whenPathLoaded('/d4');
    await b.fs.rename('/d3/new', '/d4/moved');
    await b.fs.unlink('/d3/f0');
    files.delete('/d3/f0');
    files.set('/d4/moved', fresh);
    await b.sync();
    assert.ok(b.engine.vfs.pages?.isUnloaded(d7), 'the held folder still waits');

    // Garbage collection waits for every folder: d7's files' chunks are named only there.
    let collected = false;
    const gc = b.engine.collectGarbage().then(
      () => (collected = true),
      (err: Error) => err,
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(collected, false, 'garbage collection waits while a folder is not loaded');

    // A restart before every folder is loaded: the changes stay, the loading goes on.
    await b.close();
    assert.match(String(await gc), /closed before every folder was loaded/, 'closing ends the wait');
    b = await bed.mount(space, { cacheDir, lazy: true });
    assert.ok(b.engine.vfs.pages?.isUnloaded(d7));
    await vfs().whenPathLoaded('/d4/moved');
    await expectContent(b.fs, '/d4/moved', fresh, CS, 'after a restart');

    const chunksBefore = new Set(await chunkObjects(store, space.keys));
    store.release();
    await b.engine.whenFilled();
    assert.equal(b.engine.foldersLoading, 0);
    assert.equal(b.engine.stats().foldersLoading, 0);
    await b.engine.collectGarbage();
    await b.engine.collectGarbage();
    for (const [p, data] of files) await expectContent(b.fs, p, data, CS, 'once every folder is loaded');
    const chunksAfter = new Set(await chunkObjects(store, space.keys));
    for (const k of chunksAfter) assert.ok(chunksBefore.has(k));
    assert.deepEqual(b.fs.readdir('/d3').sort(), ['.', '..', 'f1', 'f2', 'f3', 'f4']);
    const snap = await b.engine.createSnapshot('after-load');
    assert.equal(snap.files, files.size, 'every file (the one with two names once)');
    await b.close();

    // A third machine sees the tree the second one left.
    const c = await bed.mount(space);
    for (const [p, data] of files) await expectContent(c.fs, p, data, CS, 'third machine');
    assert.equal(c.fs.getattr('/d5/link').nlink, 2);
    assert.deepEqual(c.fs.readdir('/d4').sort(), ['.', '..', 'f0', 'f1', 'f2', 'f3', 'f4', 'moved']);
    await c.close();
  });
  it('a fresh machine joining a busy writer loads only the folders the log after the checkpoint names, and follows it', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const a = await bed.mount(space);
    for (let d = 0; d < 6; d++) {
      a.fs.mkdir(`/d${d}`, 0o755);
      for (let f = 0; f < 3; f++) await writeFile(a.fs, `/d${d}/f${f}`, random(500 + f));
    }
    await a.sync();
    await a.engine.checkpointNow();
    // After the checkpoint: ops that name existing files by number only (their segments say where they live).
    const changed = random(CS + 11);
    await writeFile(a.fs, '/d3/f1', changed);
    a.fs.chmod('/d4/f2', 0o600);
    await a.sync();

    const cacheDir = await bed.link(space, 'joining');
    const linked = (await MetaStore.load(path.join(cacheDir, 'meta')))!;
    assert.equal(linked.unloadedDirs, 4, 'd3 and d4 loaded for the log after the checkpoint, no other');
    await linked.close();
    const c = await bed.mount(space, { cacheDir, mode: 'read', lazy: true, settings: { followIntervalMs: 100 } });
    await c.engine.vfs.whenPathLoaded('/d3/f1');
    await expectContent(c.fs, '/d3/f1', changed, CS, 'joining machine');
    assert.equal(c.fs.getattr('/d4/f2').mode & 0o777, 0o600);
    // It follows the writer's later changes, loading what they name.
    const later = random(300);
    await writeFile(a.fs, '/d1/f0', later);
    await a.sync();
    await c.engine.whenFilled();
    await until("the follower to read the writer's change", async () => (await readFile(c.fs, '/d1/f0')).equals(later));
    await c.close();
    await a.close();
  });
});
