// Pins down metadata replication to the bucket: segments and checkpoints round-trip, old checkpoints are pruned, a rerun after a crash is recognised, a foreign writer is detected, and tampered or moved segments are refused with an error naming the object (a tolerant load, for the checker, stops before it).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  CHECKPOINTS_KEPT,
  CKPT_PREFIX,
  DamagedMetadataError,
  HeaderMismatchError,
  LOG_PREFIX,
  RemoteMeta,
  SegmentConflictError,
  seqKey,
} from '../../electron/engine/meta/remote';
import { MetaOp, ROOT_INO, Tree, TreeSnapshot } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { Replicator } from '../../electron/engine/meta/replicator';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const CS = 64 * 1024;
const W = { id: 'machine-a', epoch: 1 };
const OTHER = { id: 'machine-b', epoch: 2 };

function mkFile(name: string, ino: number, ms: number): MetaOp {
  return { t: 'mk', parent: ROOT_INO, name, ino, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms };
}

const seg1: MetaOp[] = [
  mkFile('a', 2, 10),
  { t: 'attr', ino: 2, size: 100, ms: 11 },
  { t: 'chunk', ino: 2, idx: 0, ref: ['n0', 100] },
];
const seg2: MetaOp[] = [mkFile('b', 3, 12), { t: 'mv', sp: ROOT_INO, sn: 'a', dp: ROOT_INO, dn: 'c', ms: 13 }];

async function setup(): Promise<{ store: MemoryStore; remote: RemoteMeta; key: Buffer; base: Tree }> {
  const store = new MemoryStore();
  const key = randomBytes(32);
  const remote = new RemoteMeta(store, key);
  const base = Tree.create(CS, 1, 1, 1);
  await remote.writeCheckpoint(0, base.snapshot());
  return { store, remote, key, base };
}

function replayed(base: Tree, ...segments: MetaOp[][]): Tree {
  const t = Tree.fromSnapshot(CS, JSON.parse(JSON.stringify(base.snapshot())) as TreeSnapshot);
  for (const ops of segments) for (const op of ops) t.apply(op);
  return t;
}

async function flipByte(store: MemoryStore, key: string, at: (len: number) => number): Promise<void> {
  const got = (await store.get(key))!;
  const body = Buffer.from(got.body);
  body[at(body.length)]! ^= 0x01;
  await store.put(key, body);
}

describe('RemoteMeta round trip', () => {
  it('seqKey pads to 12 digits so keys sort numerically', () => {
    assert.equal(seqKey(LOG_PREFIX, 7), 'meta/log/000000000007');
    assert.ok(seqKey(LOG_PREFIX, 10) > seqKey(LOG_PREFIX, 9));
  });

  it('load replays the newest checkpoint and every segment after it', async () => {
    const { remote, base } = await setup();
    assert.equal(await remote.pushSegment(1, seg1, W), seg1.length);
    assert.equal(await remote.pushSegment(2, seg2, W), seg2.length);
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 2);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1, seg2).snapshot());
    assert.equal(tree.lookup(ROOT_INO, 'c')!.chunks![0]![0], 'n0');
  });

  it('load starts from the newest checkpoint, not from segment 1', async () => {
    const { store, remote, base } = await setup();
    await remote.pushSegment(1, seg1, W);
    await remote.writeCheckpoint(1, replayed(base, seg1).snapshot());
    await store.delete(seqKey(LOG_PREFIX, 1)); // covered by checkpoint 1
    await remote.pushSegment(2, seg2, W);
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 2);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1, seg2).snapshot());
  });

  it('stored objects are sealed: no op or name appears in plaintext', async () => {
    const { store, remote } = await setup();
    // A name long enough that random ciphertext cannot hold it by chance (a 2-byte one could).
    const name = 'a-chunk-name-only-the-plaintext-holds';
    await remote.pushSegment(1, [...seg1, { t: 'chunk', ino: 2, idx: 1, ref: [name, 100] }], W);
    const body = (await store.get(seqKey(LOG_PREFIX, 1)))!.body;
    assert.ok(!body.includes(Buffer.from('"mk"')));
    assert.ok(!body.includes(Buffer.from(name)));
  });

  it('load fails clearly when the bucket has no checkpoint', async () => {
    const remote = new RemoteMeta(new MemoryStore(), randomBytes(32));
    await assert.rejects(remote.load(CS), /no metadata checkpoint/);
  });

  it('writing a checkpoint that already exists is accepted (a rerun after a crash)', async () => {
    const { remote, base } = await setup();
    await remote.writeCheckpoint(0, base.snapshot());
  });
});

describe('RemoteMeta.pushSegment after a crash or against another writer', () => {
  it('returns the length of the earlier segment when this machine already wrote a prefix of the ops', async () => {
    const { remote, base } = await setup();
    assert.equal(await remote.pushSegment(1, seg1.slice(0, 2), W), 2);
    // After a restart the queue holds those ops plus more; the bucket keeps its version.
    assert.equal(await remote.pushSegment(1, seg1, W), 2);
    assert.equal(await remote.pushSegment(1, seg1.slice(0, 2), W), 2, 'the exact same segment again');
    assert.equal(await remote.pushSegment(2, seg1.slice(2), W), 1);
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 2);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1).snapshot());
  });

  it('throws SegmentConflictError when the segment holds different ops', async () => {
    const { remote } = await setup();
    await remote.pushSegment(1, seg1, W);
    await assert.rejects(remote.pushSegment(1, seg2, W), SegmentConflictError);
    const changedOne = seg1.map((op, i) => (i === 1 ? ({ ...op, size: 101 } as MetaOp) : op));
    await assert.rejects(remote.pushSegment(1, changedOne, W), SegmentConflictError);
  });

  it('throws SegmentConflictError when the bucket holds more ops than this machine has', async () => {
    const { remote } = await setup();
    await remote.pushSegment(1, seg1, W);
    await assert.rejects(remote.pushSegment(1, seg1.slice(0, 1), W), SegmentConflictError);
  });

  it('the same ops written by another lease holder are not taken for ours', async () => {
    const { remote } = await setup();
    await remote.pushSegment(1, seg1, OTHER);
    await assert.rejects(remote.pushSegment(1, seg1, W), SegmentConflictError);
  });

  it("another holder's empty fence segment stops this writer's next push", async () => {
    const { remote } = await setup();
    await remote.pushSegment(1, [], OTHER);
    await assert.rejects(remote.pushSegment(1, seg1, W), SegmentConflictError);
    assert.equal(await remote.pushSegment(1, [], OTHER), 0, 'the fence writer itself recognises its own fence after a crash');
    assert.deepEqual((await remote.readSegment(1))?.writer, OTHER);
  });

  it('a segment written by a machine with another key is not taken for ours', async () => {
    const { store, remote } = await setup();
    const other = new RemoteMeta(store, randomBytes(32));
    await other.pushSegment(1, seg1, W);
    await assert.rejects(
      remote.pushSegment(1, seg1, W),
      (err: unknown) => err instanceof DamagedMetadataError || err instanceof SegmentConflictError,
    );
  });
});

describe('RemoteMeta refuses tampered metadata', () => {
  for (const [where, at] of [
    ['the nonce', () => 0],
    ['the ciphertext', (len: number) => Math.floor(len / 2)],
    ['the tag', (len: number) => len - 1],
  ] as const) {
    it(`a segment with a flipped byte in ${where} fails to load`, async () => {
      const { store, remote } = await setup();
      await remote.pushSegment(1, seg1, W);
      await flipByte(store, seqKey(LOG_PREFIX, 1), at);
      await assert.rejects(
        remote.load(CS),
        (err: unknown) => err instanceof DamagedMetadataError && err.message.includes(seqKey(LOG_PREFIX, 1)),
      );
    });
  }

  it('a tampered checkpoint fails to load', async () => {
    const { store, remote } = await setup();
    await flipByte(store, seqKey(CKPT_PREFIX, 0), (len) => len - 5);
    await assert.rejects(remote.load(CS), DamagedMetadataError);
  });

  it('a truncated segment fails to load', async () => {
    const { store, remote } = await setup();
    await remote.pushSegment(1, seg1, W);
    const body = (await store.get(seqKey(LOG_PREFIX, 1)))!.body;
    await store.put(seqKey(LOG_PREFIX, 1), body.subarray(0, body.length - 1));
    await assert.rejects(remote.load(CS), DamagedMetadataError);
  });

  it('a segment copied to another sequence number fails authentication', async () => {
    const { store, remote } = await setup();
    await remote.pushSegment(1, seg1, W);
    const body = (await store.get(seqKey(LOG_PREFIX, 1)))!.body;
    await store.put(seqKey(LOG_PREFIX, 2), body);
    await assert.rejects(remote.load(CS), DamagedMetadataError);
  });

  it('a segment copied into the checkpoint namespace is refused; load starts from the checkpoint before it', async () => {
    const { store, remote, base } = await setup();
    await remote.pushSegment(1, seg1, W);
    const body = (await store.get(seqKey(LOG_PREFIX, 1)))!.body;
    await store.put(seqKey(CKPT_PREFIX, 1), body);
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 1);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1).snapshot(), 'the forged checkpoint is not used');
  });

  it('a damaged segment names itself and the segments after it; a tolerant load stops before it and reports it', async () => {
    const { store, remote, base } = await setup();
    await remote.pushSegment(1, seg1, W);
    await remote.pushSegment(2, [mkFile('b', 11, 2)], W);
    await remote.pushSegment(3, [mkFile('c', 12, 3)], W);
    await flipByte(store, seqKey(LOG_PREFIX, 2), (len) => Math.floor(len / 2));
    await assert.rejects(
      remote.load(CS),
      (err: unknown) =>
        err instanceof DamagedMetadataError && /segment 2 .* and in the 1 segment\(s\) after it/.test(err.message),
    );
    await assert.rejects(remote.readSegment(2), DamagedMetadataError);
    const { tree, seq, damage } = await remote.loadTolerant(CS);
    assert.equal(seq, 1);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1).snapshot());
    assert.deepEqual(damage.segment, { key: seqKey(LOG_PREFIX, 2), seq: 2, later: 1 });
  });

  it('metadata sealed with another key fails to load, saying the header may belong to another filespace', async () => {
    const { store } = await setup();
    await assert.rejects(
      new RemoteMeta(store, randomBytes(32)).load(CS),
      (err: unknown) =>
        err instanceof DamagedMetadataError &&
        err.code === 'METADATA_KEYS_MISMATCH' &&
        /opens with the keys of its filespace\.json: that header belongs to another filespace/.test(err.message),
    );
  });

  it('a checkpoint names the filespace and chunk size it was written for; a loader with others refuses it', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const id = '11111111-1111-4111-8111-111111111111';
    await new RemoteMeta(store, key, { id, chunkSize: CS }).writeCheckpoint(0, Tree.create(CS, 1, 1, 1).snapshot());
    assert.equal((await new RemoteMeta(store, key, { id, chunkSize: CS }).load(CS)).seq, 0);
    await assert.rejects(
      new RemoteMeta(store, key, { id, chunkSize: 2 * CS }).load(2 * CS),
      (err: unknown) =>
        err instanceof HeaderMismatchError &&
        /chunk size of 128 KiB, but the filespace was written with 64\.0 KiB chunks/.test(err.message),
    );
    await assert.rejects(
      new RemoteMeta(store, key, { id: '22222222-2222-4222-8222-222222222222', chunkSize: CS }).load(CS),
      (err: unknown) => err instanceof HeaderMismatchError && /belongs to another filespace \(11111111-/.test(err.message),
    );
    // A loader that knows nothing of the header (and a checkpoint that names nothing) is not checked.
    assert.equal((await new RemoteMeta(store, key).load(CS)).seq, 0);
  });
});

describe('checkpoint pruning', () => {
  it('keeps only the newest checkpoints, and the log still loads to the same tree', async () => {
    const { store, remote, base } = await setup();
    await remote.pushSegment(1, seg1, W);
    await remote.writeCheckpoint(1, replayed(base, seg1).snapshot());
    await remote.pushSegment(2, seg2, W);
    await remote.writeCheckpoint(2, replayed(base, seg1, seg2).snapshot());
    assert.equal(await remote.pruneCheckpoints(), 1);
    assert.equal(CHECKPOINTS_KEPT, 2);
    assert.deepEqual(await store.list(CKPT_PREFIX), [seqKey(CKPT_PREFIX, 1), seqKey(CKPT_PREFIX, 2)]);
    assert.equal(await remote.pruneCheckpoints(), 0, 'nothing more to delete');
    assert.deepEqual(await store.list(LOG_PREFIX), [seqKey(LOG_PREFIX, 1), seqKey(LOG_PREFIX, 2)], 'segments stay');
    const { tree, seq } = await remote.load(CS);
    assert.equal(seq, 2);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1, seg2).snapshot());
  });

  it('a checkpoint pruned between listing and reading makes load list again', async () => {
    const { store, key, base } = await setup();
    // A store that, on the first listing of checkpoints, lets a writer add one and prune the rest.
    let raced = false;
    const racy = Object.create(store) as MemoryStore;
    const writer = new RemoteMeta(store, key);
    racy.list = async (prefix: string) => {
      const listed = await store.list(prefix);
      if (prefix === CKPT_PREFIX && !raced) {
        raced = true;
        await writer.pushSegment(1, seg1, W);
        await writer.writeCheckpoint(1, replayed(base, seg1).snapshot());
        await writer.pushSegment(2, seg2, W);
        await writer.writeCheckpoint(2, replayed(base, seg1, seg2).snapshot());
        await writer.pruneCheckpoints(1);
      }
      return listed;
    };
    const { tree, seq } = await new RemoteMeta(racy, key).load(CS);
    assert.ok(raced);
    assert.equal(seq, 2);
    assert.deepEqual(tree.snapshot(), replayed(base, seg1, seg2).snapshot());
  });

  it("the replicator's timer pushes what is committed meanwhile at its next tick; pushNow pushes everything", async () => {
    const { store, key } = await setup();
    // Log segment PUTs wait while `hold` is set, as a PUT on its way does.
    let hold: Promise<void> | undefined;
    let held: () => void = () => undefined;
    let onHold: () => void = () => undefined;
    const slow = Object.create(store) as MemoryStore;
    slow.put = async (key, body, options) => {
      if (key.startsWith(LOG_PREFIX) && hold) {
        onHold();
        await hold;
      }
      return store.put(key, body, options);
    };
    const gate = () => {
      hold = new Promise<void>((r) => (held = r));
      return new Promise<void>((r) => (onHold = r));
    };
    const open = () => {
      hold = undefined;
      held();
    };
    const dir = await mkdtemp(path.join(tmpdir(), 'fs-repl-'));
    const meta = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    const rep = new Replicator(
      meta,
      new RemoteMeta(slow, key),
      () => 3_600_000, // the next tick never comes in this test
      () => undefined,
      () => W,
      async () => undefined,
    );
    const alive = setInterval(() => undefined, 1000); // the replicator's timers do not hold the process
    try {
      meta.commit(mkFile('f1', 11, 1));
      let putting = gate();
      rep.schedule(0);
      await putting;
      meta.commit(mkFile('f2', 12, 2));
      meta.commit(mkFile('f3', 13, 3));
      open();
      while (rep.pendingOps === 3) await new Promise((r) => setTimeout(r, 5));
      for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
      assert.equal((await store.list(LOG_PREFIX)).length, 1, 'the ops committed during the push wait for the next tick');
      assert.equal(rep.pendingOps, 2);
      await rep.pushNow();
      assert.equal((await store.list(LOG_PREFIX)).length, 2);
      assert.equal(rep.pendingOps, 0, 'pushNow leaves nothing for the next tick');

      // pushNow during a push the timer started: everything committed meanwhile is pushed before it resolves.
      meta.commit(mkFile('f4', 14, 4));
      putting = gate();
      rep.schedule(0);
      await putting;
      meta.commit(mkFile('f5', 15, 5));
      const all = rep.pushNow();
      meta.commit(mkFile('f6', 16, 6));
      open();
      await all;
      assert.equal(rep.pendingOps, 0);
      assert.equal((await store.list(LOG_PREFIX)).length, 4);
      const { tree, seq } = await new RemoteMeta(store, key).load(CS);
      assert.equal(seq, 4);
      assert.deepEqual(tree.snapshot(), meta.tree.snapshot());
      await rep.stop();
    } finally {
      clearInterval(alive);
      open();
      await meta.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the replicator prunes after each checkpoint it writes', async () => {
    const { store, remote } = await setup();
    const dir = await mkdtemp(path.join(tmpdir(), 'fs-repl-'));
    const meta = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    try {
      const rep = new Replicator(
        meta,
        remote,
        () => 0,
        () => undefined,
        () => W,
        async () => undefined,
      );
      for (let i = 1; i <= 5; i++) {
        meta.commit(mkFile(`f${i}`, 10 + i, i));
        await rep.pushNow();
        await rep.checkpointNow();
      }
      assert.deepEqual(await store.list(CKPT_PREFIX), [seqKey(CKPT_PREFIX, 4), seqKey(CKPT_PREFIX, 5)]);
      assert.equal((await store.list(LOG_PREFIX)).length, 5);
      const { tree, seq } = await remote.load(CS);
      assert.equal(seq, 5);
      assert.deepEqual(tree.snapshot(), meta.tree.snapshot());
      await rep.stop();
    } finally {
      await meta.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
