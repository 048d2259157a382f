// Pins down MetaStore persistence: committed ops and the replication queue survive a crash or a clean restart, the journal is checkpointed when it grows, and damaged local metadata is refused but can be inspected and replaced.

import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { JournalDamagedError, SnapshotDamagedError } from '../../electron/engine/meta/journal';
import { openDatabase } from '../../electron/engine/meta/db';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { MetaOp, ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { TreeDb } from '../../electron/engine/meta/treeDb';

const CS = 64 * 1024;

let root: string;
let dir: string;

beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), 'filespace-meta-'));
  dir = path.join(root, 'meta');
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** What a power cut leaves: a copy of the directory as it is on disk now. */
let crashes = 0;
async function crashCopy(): Promise<string> {
  const copy = path.join(root, `crash-${crashes++}`);
  await cp(dir, copy, { recursive: true });
  return copy;
}

function sampleOps(): MetaOp[] {
  return [
    { t: 'mk', parent: ROOT_INO, name: 'docs', ino: 2, kind: 'dir', mode: 0o755, uid: 1, gid: 1, ms: 10 },
    { t: 'mk', parent: 2, name: 'a.txt', ino: 3, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 11 },
    { t: 'attr', ino: 3, size: CS + 5, ms: 12 },
    { t: 'chunk', ino: 3, idx: 0, ref: ['c0', CS] },
    { t: 'chunk', ino: 3, idx: 1, ref: ['c1', 5] },
    { t: 'xattr', ino: 3, name: 'user.k', value: 'dg==', ms: 13 },
    { t: 'mk', parent: ROOT_INO, name: 'ln', ino: 4, kind: 'symlink', mode: 0o777, uid: 1, gid: 1, target: 'docs/a.txt', ms: 14 },
    { t: 'mv', sp: 2, sn: 'a.txt', dp: ROOT_INO, dn: 'b.txt', ms: 15 },
  ];
}

async function createStore(): Promise<MetaStore> {
  return MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
}

function assertSameTree(actual: MetaStore, expected: MetaStore): void {
  assert.deepEqual(actual.tree.snapshot(), expected.tree.snapshot());
  assert.deepEqual([...actual.tree.chunkRefs].sort(), [...expected.tree.chunkRefs].sort());
  assert.equal(actual.chunkSize, expected.chunkSize);
}

describe('MetaStore create and load', () => {
  it('load finds nothing in an empty directory; create refuses a directory that has metadata', async () => {
    assert.equal(await MetaStore.load(dir), undefined);
    const ms = await createStore();
    await ms.close();
    await assert.rejects(createStore(), /already exists/);
  });

  it('commit + sync survives a crash: the journal replays the tree and the replication queue', async () => {
    const ms = await createStore();
    for (const op of sampleOps()) ms.commit(op);
    await ms.sync();
    const copy = await crashCopy();
    const again = (await MetaStore.load(copy))!;
    assertSameTree(again, ms);
    assert.deepEqual(again.pendingRemote, sampleOps());
    assert.equal(again.remoteSeq, 0);
    assert.equal(again.tree.lookup(ROOT_INO, 'b.txt')!.size, CS + 5);
    await again.close();
    await ms.close();
  });

  it('a clean close checkpoints; load then reads the snapshot with an empty journal', async () => {
    const ms = await createStore();
    for (const op of sampleOps()) ms.commit(op);
    await ms.close();
    const files = await readdir(dir);
    const journals = files.filter((n) => n.startsWith('journal.'));
    assert.equal(journals.length, 1);
    assert.equal((await stat(path.join(dir, journals[0]!))).size, 0);
    const again = (await MetaStore.load(dir))!;
    assert.deepEqual(again.pendingRemote, sampleOps());
    assert.equal(again.tree.lookup(ROOT_INO, 'ln')!.target, 'docs/a.txt');
    await again.close();
  });

  it('markPushed drops the pushed ops from the queue, and that survives a crash and a restart', async () => {
    const ms = await createStore();
    const ops = sampleOps();
    for (const op of ops) ms.commit(op);
    ms.markPushed(1, 3);
    assert.deepEqual(ms.pendingRemote, ops.slice(3));
    assert.equal(ms.remoteSeq, 1);
    ms.markPushed(2, 2);
    await ms.sync();

    const crashed = (await MetaStore.load(await crashCopy()))!;
    assert.deepEqual(crashed.pendingRemote, ops.slice(5));
    assert.equal(crashed.remoteSeq, 2);
    assertSameTree(crashed, ms);
    await crashed.close();

    await ms.close();
    const restarted = (await MetaStore.load(dir))!;
    assert.deepEqual(restarted.pendingRemote, ops.slice(5));
    assert.equal(restarted.remoteSeq, 2);
    await restarted.close();
  });

  it('ops committed after a markPushed stay queued behind the remaining ones', async () => {
    const ms = await createStore();
    const ops = sampleOps();
    ms.commit(ops[0]!);
    ms.commit(ops[1]!);
    ms.markPushed(1, 2);
    ms.commit(ops[2]!);
    await ms.sync();
    const crashed = (await MetaStore.load(await crashCopy()))!;
    assert.deepEqual(crashed.pendingRemote, [ops[2]]);
    await crashed.close();
    await ms.close();
  });

  it('reports released inodes and every change', async () => {
    const ms = await createStore();
    const released: number[][] = [];
    let changes = 0;
    ms.onRelease = (inos) => released.push(inos);
    ms.onChange = () => changes++;
    for (const op of sampleOps()) ms.commit(op);
    ms.commit({ t: 'rm', parent: ROOT_INO, name: 'b.txt', ms: 20 });
    assert.deepEqual(released, [[3]]);
    assert.equal(changes, sampleOps().length + 1);
    await ms.close();
  });

  it('keeps the root directory and chunk size of the tree it was created from', async () => {
    const ms = await MetaStore.create(dir, Tree.create(4 * CS, 123, 456, 99), 17);
    await ms.close();
    const again = (await MetaStore.load(dir))!;
    assert.equal(again.chunkSize, 4 * CS);
    assert.equal(again.remoteSeq, 17);
    const r = again.tree.get(ROOT_INO)!;
    assert.deepEqual([r.uid, r.gid, r.mtimeMs], [123, 456, 99]);
    await again.close();
  });
});

describe('MetaStore automatic checkpoint', () => {
  it('checkpoints once the journal passes its size limit; nothing is lost across it', async () => {
    const ms = await createStore();
    ms.commit({ t: 'mk', parent: ROOT_INO, name: 'f', ino: 2, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 1 });
    // Large xattr values grow the journal quickly without many ops.
    const value = 'x'.repeat(64 * 1024);
    const n = 100; // 100 * 64KiB is past the 4 MiB limit, and not twice
    for (let i = 0; i < n; i++) ms.commit({ t: 'xattr', ino: 2, name: `user.v${i % 4}`, value: `${i}:${value}`, ms: 100 + i });
    ms.commit({ t: 'attr', ino: 2, mode: 0o600, ms: 1000 });
    await ms.flush(); // queued behind the checkpoint

    const opened = TreeDb.open(dir, { readOnly: true })!;
    opened.db.close();
    const state = opened.state;
    assert.ok(state.gen >= 2, `expected a checkpoint after create's, found generation ${state.gen}`);
    const journals = (await readdir(dir)).filter((f) => f.startsWith('journal.'));
    assert.deepEqual(journals, [`journal.${state.gen}`], 'the old journal is gone');
    const journalBytes = (await stat(path.join(dir, journals[0]!))).size;
    assert.ok(journalBytes < 4 * 1024 * 1024, `journal holds ${journalBytes} bytes after the checkpoint`);

    await ms.sync();
    const crashed = (await MetaStore.load(await crashCopy()))!;
    assertSameTree(crashed, ms);
    assert.equal(crashed.pendingRemote.length, n + 2);
    assert.deepEqual(crashed.pendingRemote, ms.pendingRemote);
    assert.equal(crashed.tree.get(2)!.mode, 0o600);
    assert.equal(crashed.tree.get(2)!.xattrs!['user.v3'], `${n - 1}:${value}`);
    await crashed.close();
    await ms.close();
  });
});

describe('MetaStore with damaged local metadata', () => {
  /** Flips one bit in the middle of the body of the journal record at `index`. */
  async function damageRecord(index: number): Promise<string> {
    const file = (await readdir(dir)).find((n) => /^journal\.\d+$/.test(n))!;
    const buf = await readFile(path.join(dir, file));
    let pos = 0;
    for (let i = 0; i < index; i++) pos += 8 + buf.readUInt32LE(pos);
    buf[pos + 8 + Math.floor(buf.readUInt32LE(pos) / 2)]! ^= 0x10;
    await writeFile(path.join(dir, file), buf);
    return path.join(dir, file);
  }

  it('load refuses a journal damaged in the middle; inspect applies the records on both sides of the damage', async () => {
    const ms = await createStore();
    const ops = sampleOps();
    for (const op of ops) ms.commit(op);
    await ms.sync();
    const file = await damageRecord(2); // the size of a.txt
    await assert.rejects(MetaStore.load(dir), (err: unknown) => err instanceof JournalDamagedError && err.message.includes(file));
    const bare = await MetaStore.inspect(dir);
    assert.equal(bare.tree, undefined, 'no tree unless asked for');
    assert.deepEqual(bare.laterOps, ops.slice(3));
    const seen = await MetaStore.inspect(dir, { withTree: true });
    assert.equal(seen.damage?.file, file);
    assert.deepEqual(seen.laterOps, ops.slice(3));
    assert.deepEqual(seen.localOps, [...ops.slice(0, 2), ...ops.slice(3)]);
    // The rename and the symlink after the damage are applied; the lost size is not.
    assert.equal(seen.tree!.lookup(ROOT_INO, 'b.txt')?.ino, 3);
    assert.equal(seen.tree!.lookup(ROOT_INO, 'ln')?.kind, 'symlink');
    assert.equal(seen.tree!.get(3)!.size, 0);
    await ms.close().catch(() => undefined);
  });

  it('a database whose tree has no root is refused as damaged, naming the file', async () => {
    const ms = await createStore();
    await ms.close();
    const file = TreeDb.fileIn(dir);
    const db = openDatabase(file, { readOnly: false, mustExist: true });
    db.prepare('DELETE FROM inodes WHERE ino = 1').run();
    db.close();
    await assert.rejects(
      MetaStore.load(dir),
      (err: unknown) => err instanceof SnapshotDamagedError && err.message.includes(file) && /no root/.test(err.message),
    );
    const fallback = Tree.create(CS, 1, 1, 1);
    const seen = await MetaStore.inspect(dir, { withTree: true, fallback: () => fallback });
    assert.ok(seen.snapshotError);
    assert.equal(seen.tree, fallback, "the caller's tree stands in for the unreadable database");
  });

  it('a row changed behind its checksum is refused as damaged, naming the file', async () => {
    const ms = await createStore();
    for (const op of sampleOps()) ms.commit(op);
    await ms.close();
    const file = TreeDb.fileIn(dir);
    const db = openDatabase(file, { readOnly: false, mustExist: true });
    // Still valid JSON and a valid row: only the checksum can tell.
    db.prepare('UPDATE inodes SET rec = replace(rec, \'"mode":420\', \'"mode":511\') WHERE ino = 3').run();
    db.close();
    const again = (await MetaStore.load(dir))!;
    assert.throws(
      () => again.tree.get(3),
      (err: unknown) =>
        err instanceof SnapshotDamagedError && err.message.includes(file) && /inode 3 fails its checksum/.test(err.message),
    );
    await again.close();
    const seen = await MetaStore.inspect(dir);
    assert.ok(seen.snapshotError && /checksum/.test(seen.snapshotError.message));
  });

  it("an older release's snapshot whose tree has no root is refused as damaged, naming the file", async () => {
    await mkdir(dir, { recursive: true });
    const file = path.join(dir, 'state.json');
    await writeFile(
      file,
      JSON.stringify({ gen: 5, chunkSize: CS, tree: { nextIno: 2, inodes: [] }, pendingRemote: [], remoteSeq: 0 }),
    );
    await assert.rejects(
      MetaStore.load(dir),
      (err: unknown) => err instanceof SnapshotDamagedError && err.message.includes(file),
    );
    const fallback = Tree.create(CS, 1, 1, 1);
    const seen = await MetaStore.inspect(dir, { withTree: true, fallback: () => fallback });
    assert.ok(seen.snapshotError);
    assert.equal(seen.tree, fallback, "the caller's tree stands in for the unreadable snapshot");
  });

  it('replace starts over from a given tree, whatever state the old files are in', async () => {
    const ms = await createStore();
    for (const op of sampleOps()) ms.commit(op);
    await ms.sync();
    await damageRecord(4);
    const fresh = Tree.create(CS, 7, 7, 7);
    const kept = await MetaStore.replace(dir, fresh, 42);
    assert.equal(kept.length, 1);
    const again = (await MetaStore.load(dir))!;
    assert.equal(again.remoteSeq, 42);
    assert.deepEqual(again.pendingRemote, []);
    assert.deepEqual(again.tree.snapshot(), fresh.snapshot());
    await again.close();
    await ms.close().catch(() => undefined);
  });
});

describe('MetaStore meeting a newer version', () => {
  it('refuses a remote segment holding an op this version does not know, before applying any of it', async () => {
    const store = await MetaStore.create(dir, Tree.create(CS, 1, 1, 1), 0);
    const future = [
      { t: 'mk', parent: ROOT_INO, name: 'a', ino: 2, kind: 'file', mode: 0o644, uid: 1, gid: 1, ms: 10 },
      { t: 'reflink', ino: 2, parent: ROOT_INO, name: 'b', ms: 11 },
    ] as unknown as MetaOp[];
    assert.throws(
      () => store.applyRemote(1, future),
      (err: Error) => err.name === 'UnknownOpError' && /written by a newer version of Filespace/.test(err.message),
    );
    assert.equal(store.tree.lookup(ROOT_INO, 'a'), undefined, 'nothing of the segment was applied');
    assert.equal(store.remoteSeq, 0);
    assert.throws(() => Tree.create(CS, 1, 1, 1).apply(future[1]!), /newer version of Filespace/);
    await store.close();
  });
});
