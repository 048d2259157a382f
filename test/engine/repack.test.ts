/**
 * Repacking (upload/repack.ts), in process: the live members of a pack mostly of deleted files
 * move into a new pack and the old pack is collected, with nothing dangling at any metadata
 * write; the moved files read on this machine from its cache alone and on a machine linked from
 * the bucket alone; a pack a snapshot names stays as it is; a file rewritten while its pack is
 * repacked keeps its new data; a repack whose PUT fails leaves the old places, and the next
 * pass finishes it.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { packIdOfKey, packedAt } from '../../electron/engine/chunk/packs';
import { MemoryStore } from '../../electron/engine/store/memory';
import { GetResult, PutOptions, StoreError } from '../../electron/engine/store/types';
import { REPACK_DEAD_MIN, REPACK_DEAD_SHARE } from '../../electron/engine/upload/repack';
import {
  CheckedStore,
  deepCheck as deepCheckOf,
  EngineBed,
  expectOnFreshMachine as expectOnFresh,
  Filespace,
  Mounted,
  expectContent,
  random,
  writeFile,
} from '../helpers/engineBed';

const CS = 256 * 1024;
/** Small files, incompressible, a pack's member each (at most a quarter of the chunk size). */
const FILE = 40_000;
const FILES = 180;
const KEPT = 30;

/** A bucket whose GETs can be refused, whose pack PUTs can fail once, and which runs a hook on a pack's GET. */
class GatedStore extends MemoryStore {
  refuseGets = false;
  failPackPuts = 0;
  onPackGet: (() => Promise<void>) | undefined;

  override async get(key: string, range?: { readonly start: number; readonly end: number }): Promise<GetResult | undefined> {
    if (this.refuseGets && !key.startsWith('meta/') && key !== 'filespace.json')
      throw new StoreError('Unreachable', `injected: ${key} is not to be read`);
    if (key.startsWith('packs/') && !range && this.onPackGet) {
      const hook = this.onPackGet;
      this.onPackGet = undefined;
      await hook();
    }
    return super.get(key, range);
  }

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    if (key.startsWith('packs/') && this.failPackPuts > 0) {
      this.failPackPuts--;
      throw new StoreError('ServerError', 'injected: the pack was not stored');
    }
    return super.put(key, body, options);
  }
}

describe('repacking packs mostly of deleted files', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  /** FILES small files in /t, synced into (about) one pack; then all but KEPT deleted and synced. */
  async function mostlyDeleted(m: Mounted): Promise<Map<string, Buffer>> {
    const kept = new Map<string, Buffer>();
    m.fs.mkdir('/t', 0o755);
    for (let i = 0; i < FILES; i++) {
      const data = random(FILE - i);
      await writeFile(m.fs, `/t/f${i}`, data);
      if (i % (FILES / KEPT) === 0) kept.set(`/t/f${i}`, data);
    }
    await m.sync();
    for (let i = 0; i < FILES; i++) if (!kept.has(`/t/f${i}`)) await m.fs.unlink(`/t/f${i}`);
    await m.sync();
    return kept;
  }

  /** Bytes of live members per pack, from the references. */
  function liveBytes(m: Mounted): Map<string, number> {
    const live = new Map<string, number>();
    for (const n of m.engine.vfs.referencedChunks().keys()) {
      const at = packedAt(n);
      if (at) live.set(at.pack, (live.get(at.pack) ?? 0) + at.bytes);
    }
    return live;
  }

  /**
   * The referenced packs at least half garbage and by at least REPACK_DEAD_MIN: those a pass
   * repacks when no snapshot names them (how the files fell into packs depends on timing).
   */
  async function mostlyGarbage(m: Mounted, space: Filespace): Promise<Set<string>> {
    const live = liveBytes(m);
    const out = new Set<string>();
    for (const key of await space.store.list('packs/')) {
      const id = packIdOfKey(key)!;
      const size = (await space.store.head(key))!.size;
      const dead = size - (live.get(id) ?? 0);
      if (live.has(id) && dead >= REPACK_DEAD_MIN && dead >= size * REPACK_DEAD_SHARE) out.add(id);
    }
    assert.ok(out.size >= 1, 'at least one pack is mostly garbage');
    return out;
  }

  function packsReferenced(m: Mounted): Set<string> {
    return new Set([...m.engine.vfs.referencedChunks().keys()].map((n) => packedAt(n)?.pack).filter((p) => p !== undefined));
  }

  const expectOnFreshMachine = (space: Filespace, files: Map<string, Buffer>) => expectOnFresh(bed, space, files, CS);
  const deepCheck = (space: Filespace, cacheDir: string) => deepCheckOf(bed, space, cacheDir);

  it('moves the live members into a new pack, the old one goes, and nothing dangles meanwhile', async () => {
    const gated = new GatedStore();
    const space = await bed.filespace({ chunkSize: CS, store: gated });
    const checked = new CheckedStore(gated, space);
    const m = await bed.mount(space, { store: checked, settings: { gcGraceMs: 0 } });
    const kept = await mostlyDeleted(m);
    const before = packsReferenced(m);
    const doomed = await mostlyGarbage(m, space);

    const res = await m.engine.collectGarbage();
    assert.equal(res.repacked, doomed.size, 'every pack mostly of deleted files is repacked');
    const now = packsReferenced(m);
    for (const id of doomed) assert.ok(!now.has(id), `no reference names pack ${id} any more`);
    for (const id of before) if (!doomed.has(id)) assert.ok(now.has(id), `pack ${id}, mostly live, stays as it is`);
    const made = [...now].filter((id) => !before.has(id));
    assert.ok(made.length >= 1 && made.length <= doomed.size, `the live members went into ${made.length} new pack(s)`);

    // This machine still has them in its cache, under their new places.
    gated.refuseGets = true;
    for (const [p, data] of kept) await expectContent(m.fs, p, data, CS, 'from the cache, the bucket refusing reads');
    gated.refuseGets = false;

    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const after = await space.store.list('packs/');
    assert.deepEqual(
      after.map((k) => packIdOfKey(k)).sort(),
      [...now].sort(),
      'the packs repacked are collected; the new ones and the others stay',
    );
    const cacheDir = m.cacheDir;
    await m.close();
    assert.ok(checked.metaWrites > 0);
    assert.deepEqual(checked.problems, [], 'no metadata written meanwhile names anything missing');
    await expectOnFreshMachine(space, kept);
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });

  it('leaves a pack a snapshot names as it is', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { gcGraceMs: 0 } });
    m.fs.mkdir('/t', 0o755);
    const all = new Map<string, Buffer>();
    for (let i = 0; i < FILES; i++) {
      const data = random(FILE - i);
      all.set(`/t/f${i}`, data);
      await writeFile(m.fs, `/t/f${i}`, data);
    }
    await m.sync();
    const snap = await m.engine.createSnapshot('all of them');
    for (let i = 0; i < FILES; i++) if (i % (FILES / KEPT) !== 0) await m.fs.unlink(`/t/f${i}`);
    await m.sync();
    const before = packsReferenced(m);
    const doomed = await mostlyGarbage(m, space);
    const res = await m.engine.collectGarbage();
    assert.equal(res.repacked, 0, 'moving the live members would free nothing: the snapshot keeps the pack');
    assert.deepEqual(packsReferenced(m), before);
    const old = await m.engine.snapshotFs(snap.id);
    for (const [p, data] of all) await expectContent(old, p, data, CS, 'in the snapshot');
    m.engine.releaseSnapshotFs(old);

    // Once the snapshot is gone, the pack is repacked.
    await m.engine.deleteSnapshot(snap.id);
    assert.equal((await m.engine.collectGarbage()).repacked, doomed.size);
    await m.close();
  });

  it('keeps the new data of a file rewritten while its pack is repacked', async () => {
    const gated = new GatedStore();
    const space = await bed.filespace({ chunkSize: CS, store: gated });
    const checked = new CheckedStore(gated, space);
    const m = await bed.mount(space, { store: checked, settings: { gcGraceMs: 0, uploadDelayMs: 0 } });
    const kept = await mostlyDeleted(m);
    await mostlyGarbage(m, space);
    const [first] = kept.keys();
    const fresh = random(FILE + 7);
    // When the repacker reads the old pack, after it chose what to move: the file is rewritten
    // and its new data committed.
    gated.onPackGet = async () => {
      await writeFile(m.fs, first!, fresh);
      await m.sync();
    };
    const res = await m.engine.collectGarbage();
    assert.ok(gated.onPackGet === undefined, 'the rewrite ran during the repack');
    assert.ok((res.repacked ?? 0) >= 1);
    kept.set(first!, fresh);
    for (const [p, data] of kept) await expectContent(m.fs, p, data, CS, 'after the repack');
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    await m.close();
    assert.deepEqual(checked.problems, []);
    await expectOnFreshMachine(space, kept);
  });

  it('leaves the old places when the new pack is not stored, and the next pass repacks', async () => {
    const gated = new GatedStore();
    const space = await bed.filespace({ chunkSize: CS, store: gated });
    const checked = new CheckedStore(gated, space);
    const m = await bed.mount(space, { store: checked, settings: { gcGraceMs: 0 } });
    const kept = await mostlyDeleted(m);
    const before = packsReferenced(m);
    const doomed = await mostlyGarbage(m, space);
    gated.failPackPuts = 1;
    const failed = await m.engine.collectGarbage();
    assert.equal(gated.failPackPuts, 0, 'the PUT of the new pack was refused');
    assert.equal(failed.repacked ?? 0, 0);
    assert.deepEqual(packsReferenced(m), before, 'every reference still names its old place');
    for (const [p, data] of kept) await expectContent(m.fs, p, data, CS, 'after the failed repack');

    assert.equal((await m.engine.collectGarbage()).repacked, doomed.size, 'the next pass repacks');
    await m.engine.collectGarbage();
    await m.engine.collectGarbage();
    const cacheDir = m.cacheDir;
    await m.close();
    assert.deepEqual(checked.problems, []);
    await expectOnFreshMachine(space, kept);
    assert.deepEqual(await deepCheck(space, cacheDir), []);
  });
});
