/**
 * Packs of small chunks (chunk/packs.ts, upload/packer.ts), in process: a tree of small files
 * reaches the bucket in a few PUTs and reads back on a machine linked from the bucket alone; a
 * pack stays while any of its chunks is referenced (live or by a snapshot) and goes once none
 * is; a pack whose PUT landed but whose answer was lost leaves nothing dangling and is
 * collected; a damaged member is refused and `check` names it; a filespace written by the
 * release before packs mounts, and its old and new files read alike.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chunkName } from '../../electron/engine/chunk/crypto';
import { packIdOfKey, packedAt, readPackIndex } from '../../electron/engine/chunk/packs';
import { FORMAT_PACKS, HEADER_KEY, unlockFilespace } from '../../electron/engine/filespace';
import { MemoryStore } from '../../electron/engine/store/memory';
import { PutOptions, StoreError } from '../../electron/engine/store/types';
import {
  CheckedStore,
  deepCheck as deepCheckOf,
  EngineBed,
  expectOnFreshMachine as expectOnFresh,
  Filespace,
  PASSPHRASE,
  chunkObjects,
  expectContent,
  failsWith,
  random,
  writeFile,
} from '../helpers/engineBed';
import { REPO } from '../helpers/bed';

const CS = 64 * 1024;

/** Counts PUTs by the first part of their key. */
class CountingStore extends MemoryStore {
  readonly putsOf = new Map<string, number>();

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const kind = key.slice(0, key.indexOf('/') + 1) || key;
    this.putsOf.set(kind, (this.putsOf.get(kind) ?? 0) + 1);
    return super.put(key, body, options);
  }
}

/** Stores the first `n` packs, then answers their PUT with an error, as a connection lost after the server stored it. */
class LostAnswerStore extends MemoryStore {
  lost = 0;

  constructor(private n: number) {
    super();
  }

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const etag = await super.put(key, body, options);
    if (key.startsWith('packs/') && this.n > 0) {
      this.n--;
      this.lost++;
      throw new StoreError('ServerError', 'injected: the answer to a stored pack was lost');
    }
    return etag;
  }
}

/** Runs `landed` after a pack is stored and before its PUT answers (the references are not committed yet). */
class PackLandedStore extends MemoryStore {
  landed: (() => Promise<void>) | undefined;
  ran = 0;

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const etag = await super.put(key, body, options);
    if (key.startsWith('packs/') && this.landed) {
      this.ran++;
      await this.landed();
    }
    return etag;
  }
}

async function headerFormat(space: Filespace): Promise<number> {
  return (JSON.parse((await space.store.get(HEADER_KEY))!.body.toString('utf8')) as { format: number }).format;
}

describe('packs of small chunks', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  const expectOnFreshMachine = (space: Filespace, files: Map<string, Buffer>) => expectOnFresh(bed, space, files, CS);
  const deepCheck = (space: Filespace, cacheDir: string) => deepCheckOf(bed, space, cacheDir);

  it('sends a tree of small files in a few PUTs, and a machine linked from the bucket alone reads it', async () => {
    const store = new CountingStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const m = await bed.mount(space);
    const files = new Map<string, Buffer>();
    m.fs.mkdir('/t', 0o755);
    for (let i = 0; i < 300; i++) {
      const data = random((i * 37) % 12_000);
      files.set(`/t/f${i}`, data);
      await writeFile(m.fs, `/t/f${i}`, data);
    }
    const big = random(3 * CS + 5_000); // three whole chunks, sent alone, and a small tail, packed
    files.set('/big', big);
    await writeFile(m.fs, '/big', big);
    assert.equal(store.putsOf.get('packs/') ?? 0, 0, 'nothing is sent before sync');
    await m.sync();

    const packs = store.putsOf.get('packs/') ?? 0;
    assert.ok(packs >= 1 && packs <= 3, `the small chunks went in ${packs} pack(s)`);
    assert.equal(store.putsOf.get('chunks/'), 3, "only the large file's whole chunks are objects of their own");
    assert.equal(await headerFormat(space), FORMAT_PACKS, 'the header says packs may be there');
    const stored = await chunkObjects(space.store, space.keys);
    const nonEmpty = [...files.values()].filter((d) => d.length > 0).length;
    assert.equal(stored.filter((k) => k.startsWith('packs/')).length, nonEmpty, "every small chunk is in its pack's index");
    // The references name their place in a pack, and each place holds what the index says.
    const refs = [...m.engine.vfs.referencedChunks().keys()];
    const packed = refs.map(packedAt).filter((a) => a !== undefined);
    assert.equal(packed.length, nonEmpty);
    for (const key of await space.store.list('packs/')) {
      const id = packIdOfKey(key)!;
      const index = (await readPackIndex(space.store, space.keys.chunkKey, id))!;
      for (const e of index) {
        assert.ok(
          packed.some((a) => a.pack === id && a.name === e.name && a.offset === e.offset && a.bytes === e.bytes),
          `the index entry ${e.name} at ${e.offset} is a reference's place`,
        );
      }
    }
    const cacheDir = m.cacheDir;
    await m.close();
    await expectOnFreshMachine(space, files);
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });

  it('stores identical small files once, written together or later', async () => {
    const store = new CountingStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const m = await bed.mount(space);
    const same = random(4_000);
    const other = random(3_000);
    await writeFile(m.fs, '/x', same);
    await writeFile(m.fs, '/y', same);
    await writeFile(m.fs, '/other', other);
    await m.sync();
    assert.equal(store.putsOf.get('packs/'), 1);
    assert.equal((await chunkObjects(space.store, space.keys)).length, 2, 'x and y share one place in the pack');
    await writeFile(m.fs, '/z', same);
    await m.sync();
    assert.equal(store.putsOf.get('packs/'), 1, 'z, written later, is referenced where x lies: no pack is sent');
    assert.equal((await chunkObjects(space.store, space.keys)).length, 2);
    await m.close();
    await expectOnFreshMachine(
      space,
      new Map([
        ['/x', same],
        ['/y', same],
        ['/z', same],
        ['/other', other],
      ]),
    );
  });

  it('stores a small file identical to one committed before a restart once, on this machine and on another', async () => {
    const store = new CountingStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const m = await bed.mount(space);
    const same = random(4_000);
    await writeFile(m.fs, '/x', same);
    await writeFile(m.fs, '/other', random(3_000));
    await m.sync();
    const cacheDir = m.cacheDir;
    await m.close();
    assert.equal(store.putsOf.get('packs/'), 1);

    const again = await bed.mount(space, { cacheDir });
    await writeFile(again.fs, '/y', same);
    await again.sync();
    assert.equal(store.putsOf.get('packs/'), 1, 'y, written after the restart, is referenced where x lies: no pack is sent');
    await again.close();

    // Another machine, linked from the bucket alone, once this one has stopped writing.
    const elsewhere = await bed.mount(space);
    await writeFile(elsewhere.fs, '/z', same);
    await elsewhere.sync();
    assert.equal(store.putsOf.get('packs/'), 1, 'z, written on another machine, is referenced where x lies');
    await elsewhere.close();
    assert.equal((await chunkObjects(space.store, space.keys)).length, 2);
    await expectOnFreshMachine(space, new Map(['/x', '/y', '/z'].map((p) => [p, same])));
  });

  it('keeps a pack while any of its chunks is referenced, live or by a snapshot, and deletes it once none is', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    const a = random(3_000);
    const b = random(5_000);
    const c = random(7_000);
    await writeFile(m.fs, '/a', a);
    await writeFile(m.fs, '/b', b);
    await writeFile(m.fs, '/c', c);
    await m.sync();
    const packs = await space.store.list('packs/');
    assert.equal(packs.length, 1, 'one pack holds the three files');

    await m.fs.unlink('/a');
    const snap = await m.engine.createSnapshot('holds c');
    await m.fs.unlink('/c');
    await m.sync();
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    assert.deepEqual(await space.store.list('packs/'), packs, 'b (live) and c (the snapshot) keep the pack');
    await expectOnFreshMachine(space, new Map([['/b', b]]));

    await m.fs.unlink('/b');
    await m.sync();
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    assert.deepEqual(await space.store.list('packs/'), packs, 'the snapshot alone keeps it');
    const old = await m.engine.snapshotFs(snap.id);
    await expectContent(old, '/c', c, CS, 'in the snapshot');
    m.engine.releaseSnapshotFs(old);

    await m.engine.deleteSnapshot(snap.id);
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    assert.deepEqual(await space.store.list('packs/'), [], 'nothing names a chunk of it: the pack is gone');
    const cacheDir = m.cacheDir;
    await m.close();
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });

  it('sends a pack again when the answer to its PUT was lost; nothing dangles and the first one is collected', async () => {
    const lossy = new LostAnswerStore(1);
    const space = await bed.filespace({ chunkSize: CS, store: lossy });
    const checked = new CheckedStore(lossy, space);
    const m = await bed.mount(space, { store: checked, settings: { gcGraceMs: 0, uploadDelayMs: 0 } });
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 20; i++) {
      const data = random(100 + i * 250);
      files.set(`/f${i}`, data);
      await writeFile(m.fs, `/f${i}`, data);
    }
    await m.sync();
    assert.equal(lossy.lost, 1, 'the lost answer happened');
    const sent = await space.store.list('packs/');
    assert.ok(sent.length >= 2, `the pack was sent again (${sent.length} packs in the bucket)`);
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const left = await space.store.list('packs/');
    assert.ok(left.length < sent.length, 'the pack nothing references is collected');
    const referenced = new Set([...m.engine.vfs.referencedChunks().keys()].map((n) => packedAt(n)?.pack));
    for (const key of left) assert.ok(referenced.has(packIdOfKey(key)), `${key} left is referenced`);
    const cacheDir = m.cacheDir;
    await m.close();
    assert.deepEqual(checked.problems, []);
    await expectOnFreshMachine(space, files);
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });

  it('never collects a pack between its PUT and the commit of the references to it', async () => {
    const landing = new PackLandedStore();
    const space = await bed.filespace({ chunkSize: CS, store: landing });
    const checked = new CheckedStore(landing, space);
    const m = await bed.mount(space, { store: checked, settings: { gcGraceMs: 0 } });
    // Two passes with no grace would delete anything unreferenced that the first one marked.
    landing.landed = async () => {
      await m.engine.collectGarbage();
      await m.engine.collectGarbage();
    };
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 5; i++) {
      const data = random(1_000 + i);
      files.set(`/f${i}`, data);
      await writeFile(m.fs, `/f${i}`, data);
    }
    await m.sync();
    assert.ok(landing.ran >= 1, 'garbage collection ran while a pack was in the bucket and not yet referenced');
    assert.equal((await space.store.list('packs/')).length, landing.ran, 'every pack sent is still there');
    landing.landed = undefined;
    await m.close();
    assert.deepEqual(checked.problems, []);
    await expectOnFreshMachine(space, files);
  });

  it('refuses a damaged member with EIO, reads the others, and check names the damaged chunk', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const good = random(4_000);
    const bad = random(6_000);
    await writeFile(m.fs, '/good', good);
    await writeFile(m.fs, '/bad', bad);
    await m.sync();
    const badName = chunkName(space.keys.nameKey, bad);
    const badRef = [...m.engine.vfs.referencedChunks().keys()].find((n) => packedAt(n)?.name === badName)!;
    const at = packedAt(badRef)!;
    const cacheDir = m.cacheDir;
    await m.close();
    const key = (await space.store.list('packs/'))[0]!;
    const body = Buffer.from((await space.store.get(key))!.body);
    const flip = at.offset + Math.floor(at.bytes / 2);
    body[flip] = body[flip]! ^ 0x40;
    await space.store.put(key, body);

    const other = await bed.mount(space, { mode: 'read' });
    try {
      await expectContent(other.fs, '/good', good, CS, 'a member beside the damaged one');
      assert.equal(
        await failsWith(async () => expectContent(other.fs, '/bad', bad, CS, 'never')),
        'EIO',
        'wrong bytes are never returned',
      );
    } finally {
      await other.close();
    }
    const problems = await deepCheck(space, cacheDir);
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0]!, new RegExp(`chunk ${badRef} is unreadable`));
  });

  it('mounts a filespace written by the release before packs: its chunks read, new small files go to packs', async () => {
    const fixture = JSON.parse(
      await fsp.readFile(path.join(REPO, 'test', 'fixtures', 'before-packs-filespace.json'), 'utf8'),
    ) as {
      objects: Record<string, string>;
    };
    const store = new MemoryStore();
    for (const [key, b64] of Object.entries(fixture.objects)) await store.put(key, Buffer.from(b64, 'base64'));
    const { header, keys } = await unlockFilespace(store, PASSPHRASE);
    const space: Filespace = { store, header, keys, chunkSize: header.chunkSize };
    assert.ok(header.format < FORMAT_PACKS, `the fixture is of format ${header.format}`);
    assert.deepEqual(await store.list('packs/'), []);
    const old = new Map<string, Buffer>();
    for (let i = 0; i < 20; i++) old.set(`/small/f${i}`, Buffer.from(`small file ${i}\n`.repeat(i + 1)));
    const big = Buffer.alloc(150 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 10)) & 255;
    old.set('/big', big);

    const m = await bed.mount(space);
    for (const [p, data] of old) await expectContent(m.fs, p, data, CS, 'written by the release before packs');
    assert.equal(await headerFormat(space), header.format, 'reading does not raise the format');
    const fresh = random(2_000);
    await writeFile(m.fs, '/small/new', fresh);
    await m.sync();
    assert.equal(await headerFormat(space), FORMAT_PACKS, 'the first pack raised the format');
    assert.equal((await store.list('packs/')).length, 1);
    const cacheDir = m.cacheDir;
    await m.close();
    await expectOnFreshMachine(space, new Map([...old, ['/small/new', fresh]]));
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });
});
