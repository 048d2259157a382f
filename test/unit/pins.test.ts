// Pins down the parts of pinning that need no mount: background downloads of pinned chunks wait
// behind reads and read-ahead and leave a slot for them; the clean cache never evicts a pinned
// chunk; paths resolve to inodes, a rename keeps a pin and a deletion drops it; pins that do not
// fit are refused as a whole; the cap check and the room left for pins agree.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO } from '../../electron/engine/cache/sealed';
import { chunkName } from '../../electron/engine/chunk/crypto';
import { chunkKey, encodeChunk } from '../../electron/engine/chunk/format';
import { Tree, ROOT_INO } from '../../electron/engine/meta/tree';
import {
  capNeededForPins,
  checkCapForPins,
  currentPins,
  normalFsPath,
  pinRoomBytes,
  planPins,
  planUnpins,
} from '../../electron/engine/pins';
import { ChunkFetcher } from '../../electron/engine/prefetch/fetcher';
import { MemoryStore } from '../../electron/engine/store/memory';
import { CallOptions, GetResult } from '../../electron/engine/store/types';
import { until } from '../helpers/until';

const MiB = 1024 * 1024;

class GatedStore extends MemoryStore {
  inFlight = 0;
  readonly started: string[] = [];
  private readonly gates: Array<() => void> = [];
  override async get(
    key: string,
    range?: { readonly start: number; readonly end: number },
    _c?: CallOptions,
  ): Promise<GetResult | undefined> {
    this.started.push(key);
    this.inFlight++;
    try {
      await new Promise<void>((resolve) => this.gates.push(resolve));
      return await super.get(key, range);
    } finally {
      this.inFlight--;
    }
  }
  releaseAll(): void {
    for (const g of this.gates.splice(0)) g();
  }
}

let dir: string;
let handles: HandlePool;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-pins-'));
  handles = new HandlePool(8);
});
afterEach(async () => {
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

function newCache(capBytes: number): ChunkCache {
  return new ChunkCache(
    dir,
    { capBytes, highWatermark: 0.9, lowWatermark: 0.5 },
    handles,
    () => 0,
    new SealedIO(randomBytes(32)),
  );
}

describe('background downloads of pinned chunks', () => {
  it('take a slot only when no read or read-ahead waits, and leave one slot free', async () => {
    const key = randomBytes(32);
    const store = new GatedStore();
    const names: string[] = [];
    for (let i = 0; i < 6; i++) {
      const data = randomBytes(10_000 + i);
      const name = chunkName(randomBytes(32), data);
      await store.put(chunkKey(name), await encodeChunk(key, name, data));
      names.push(name);
    }
    const cache = newCache(64 * MiB);
    await cache.init();
    const fetcher = new ChunkFetcher(
      store,
      cache,
      key,
      3,
      () => 60_000,
      () => undefined,
    );
    const bg = names.slice(0, 4).map((n) => fetcher.background(n));
    await until('two background GETs', () => store.inFlight === 2);
    assert.equal(store.started.length, 2, 'background leaves one of three slots free');
    const read = fetcher.fetch(names[4]!);
    await until('the read to take the free slot', () => store.inFlight === 3);
    assert.equal(store.started[2], chunkKey(names[4]!));
    fetcher.prefetch(names[5]!);
    store.releaseAll();
    await read;
    await until('read-ahead before the queued background downloads', () => store.started.length >= 4);
    assert.equal(store.started[3], chunkKey(names[5]!));
    await until('everything answered', () => (store.releaseAll(), store.started.length === 6 && store.inFlight === 0));
    assert.deepEqual(
      await Promise.all(bg),
      [true, true, true, true],
      'each background download is in the cache when it resolves',
    );
    for (const n of names.slice(0, 4)) assert.equal(cache.has(n), true);
    await fetcher.cacheWritesDone();
  });
});

describe('the clean cache and pinned chunks', () => {
  it('evicts unpinned chunks only, even past the cap', async () => {
    const cache = newCache(16 * MiB);
    await cache.init();
    const pinned = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const name = `p${i}`.padEnd(8, 'x');
      await cache.put(name, randomBytes(2 * MiB));
      pinned.add(name);
    }
    cache.setPinned(pinned);
    for (let i = 0; i < 8; i++) await cache.put(`o${i}`.padEnd(8, 'x'), randomBytes(2 * MiB));
    await cache.maybeEvict();
    for (const n of pinned) assert.equal(cache.has(n), true, `pinned ${n} kept`);
    assert.ok(cache.usedBytes <= 16 * MiB, 'the cap holds');
  });
});

/** /Photos/a (2 chunks), /Photos/sub/b (1), /Docs/c (1), /link (symlink). */
function sampleTree(): Tree {
  const t = Tree.create(MiB, 0, 0, 0);
  const mk = (parent: number, name: string, kind: 'dir' | 'file' | 'symlink') => {
    const ino = t.allocIno();
    t.apply({
      t: 'mk',
      parent,
      name,
      ino,
      kind,
      mode: 0o755,
      uid: 0,
      gid: 0,
      ms: 0,
      ...(kind === 'symlink' ? { target: 'x' } : {}),
    });
    return ino;
  };
  const photos = mk(ROOT_INO, 'Photos', 'dir');
  const a = mk(photos, 'a', 'file');
  t.apply({ t: 'attr', ino: a, size: 2 * MiB, ms: 0 });
  t.apply({ t: 'chunk', ino: a, idx: 0, ref: ['ca0', MiB] });
  t.apply({ t: 'chunk', ino: a, idx: 1, ref: ['ca1', MiB] });
  const sub = mk(photos, 'sub', 'dir');
  const b = mk(sub, 'b', 'file');
  t.apply({ t: 'attr', ino: b, size: MiB, ms: 0 });
  t.apply({ t: 'chunk', ino: b, idx: 0, ref: ['ca0', MiB] }); // the same content as a's first chunk
  const docs = mk(ROOT_INO, 'Docs', 'dir');
  const c = mk(docs, 'c', 'file');
  t.apply({ t: 'attr', ino: c, size: 3 * MiB, ms: 0 });
  t.apply({ t: 'chunk', ino: c, idx: 0, ref: ['cc0', 3 * MiB] });
  mk(ROOT_INO, 'link', 'symlink');
  return t;
}

describe('pins in the tree', () => {
  it('spells paths one way', () => {
    assert.equal(normalFsPath(''), '/');
    assert.equal(normalFsPath('Photos/'), '/Photos');
    assert.equal(normalFsPath('//a/./b/../c'), '/a/c');
  });

  it('refuses a bad path or pins that do not fit as a whole, and counts shared chunks once', () => {
    const t = sampleTree();
    assert.throws(() => planPins(t, [], ['/Photos', '/Nope/x'], 64 * MiB), /^UserError: \/Nope does not exist in the filespace$/);
    assert.throws(() => planPins(t, [], ['/Photos/a/x'], 64 * MiB), /\/Photos\/a is not a folder/);
    assert.throws(() => planPins(t, [], ['/link'], 64 * MiB), /\/link is a symbolic link; pin a file or folder/);
    // Pins take at most the cap less max(20%, 4 chunks): a 7 MiB cap leaves 3 MiB.
    assert.equal(pinRoomBytes(7 * MiB, MiB), 3 * MiB);
    assert.throws(
      () => planPins(t, [], ['/Photos', '/Docs'], 7 * MiB),
      /^UserError: pinning 2 paths needs 2\.0 MiB more than the cache cap of 7\.0 MiB leaves room for; raise the cap or pin less$/,
    );
    const { pins, added } = planPins(t, [], ['Photos/'], 7 * MiB);
    assert.deepEqual(
      added.map((p) => p.path),
      ['/Photos'],
    );
    assert.deepEqual(planPins(t, pins, ['/Photos'], 7 * MiB).added, [], 'already pinned');
    assert.throws(() => planUnpins(t, pins, ['/Docs']), /\/Docs is not pinned \(pinned: \/Photos\)/);
    assert.deepEqual(planUnpins(t, pins, ['/Photos/']), []);
  });

  it('keeps a renamed pin under its new path and drops a deleted one', () => {
    const t = sampleTree();
    const { pins } = planPins(t, [], ['/Photos', '/Docs'], 64 * MiB);
    t.apply({ t: 'mv', sp: ROOT_INO, sn: 'Photos', dp: ROOT_INO, dn: 'Pictures', ms: 1 });
    const docs = t.lookup(ROOT_INO, 'Docs')!.ino;
    const c = t.lookup(docs, 'c')!;
    t.apply({ t: 'rm', parent: docs, name: 'c', ms: 1 });
    assert.equal(t.get(c.ino), undefined);
    t.apply({ t: 'rm', parent: ROOT_INO, name: 'Docs', ms: 1 });
    const now = currentPins(t, pins);
    assert.deepEqual(
      now.pins.map((p) => p.path),
      ['/Pictures'],
    );
    assert.deepEqual(
      now.dropped.map((p) => p.path),
      ['/Docs'],
    );
  });

  it('refuses a cap below what pins need, and accepts exactly that cap', () => {
    for (const pinned of [1, 3 * MiB, 100 * MiB + 7]) {
      const need = capNeededForPins(pinned, MiB);
      checkCapForPins(need, pinned, MiB);
      assert.throws(
        () => checkCapForPins(need - 1, pinned, MiB),
        /the cache cap cannot be .*: pinned files take .* unpin some first/,
      );
    }
  });
});
