/**
 * The consistency checker (engine/check.ts) on the engine suite's in-memory bucket: what it
 * counts and finds with the trees read into its scratch databases, and the scratch folder's
 * life (made per check, removed at the end, one a killed check left removed by the next).
 */

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { checkFilespace } from '../../electron/engine/check';
import { chunkKey } from '../../electron/engine/chunk/format';
import { EngineBed, chunkObjects, random, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

describe('filespace check (in process)', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('counts the live tree and a snapshot against the bucket in a scratch folder it removes, and removes one a killed check left', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/a.bin', random(3 * CS + 100)); // 4 chunks
    await writeFile(m.fs, '/b.bin', random(CS / 2)); // 1 chunk
    await m.sync();
    const old = new Set(await chunkObjects(space.store, space.keys));
    const snap = await m.engine.createSnapshot('before');
    await writeFile(m.fs, '/a.bin', random(CS)); // 1 new chunk, the old ones only the snapshot names
    await m.fs.unlink('/b.bin');
    await m.sync();
    const cacheDir = m.cacheDir;
    await m.close();
    const live = (await chunkObjects(space.store, space.keys)).filter((k) => !old.has(k));
    assert.equal(live.length, 1);
    assert.equal(old.size, 5);
    await space.store.put(chunkKey('ff'.repeat(32)), Buffer.from('nothing names this'));

    const workDir = await bed.dir('work');
    const dead = spawnSync('true').pid;
    await fsp.mkdir(path.join(workDir, `filespace-check-${dead}-left`));
    await fsp.writeFile(path.join(workDir, `filespace-check-${dead}-left`, 'chunk-names.db'), 'left by a killed check');
    const busy = `filespace-check-${process.pid}-busy`; // a check still running keeps its folder
    await fsp.mkdir(path.join(workDir, busy));
    let during: string[] = [];
    let scratch: string[] = [];
    const report = await checkFilespace({
      store: space.store,
      keys: space.keys,
      header: space.header,
      cacheDir,
      workDir,
      progress: (msg) => {
        if (msg !== 'reading the snapshots in the bucket') return;
        during = readdirSync(workDir).sort();
        const own = during.find((f) => f !== busy);
        scratch = own ? readdirSync(path.join(workDir, own)).sort() : [];
      },
    });
    assert.deepEqual(report.problems, []);
    assert.equal(during.length, 2, `the stale folder is gone, one of this check's is there: ${during.join(' ')}`);
    assert.ok(during.includes(busy));
    assert.deepEqual(scratch, ['bucket', 'chunk-names.db']);
    assert.deepEqual(await fsp.readdir(workDir), [busy], 'the scratch folder is removed at the end');
    const notes = report.notes.join('\n');
    assert.match(notes, /bucket: \d+ inodes at metadata segment \d+, 1 chunks referenced, 7 stored, 1 unreferenced/);
    assert.match(notes, /bucket: 1 snapshot\(s\), naming 5 chunk\(s\) the live tree does not/);
    assert.match(notes, /local: 2 inodes, 0 changes and 0 dirty chunks not yet in the bucket/);

    // A chunk the live tree names and one only the snapshot names, gone from the bucket.
    const gone: [string, string] = [live[0]!, [...old][0]!];
    await space.store.deleteMany(gone);
    const name = (k: string) => k.slice(k.lastIndexOf('/') + 1);
    const damaged = await checkFilespace({ store: space.store, keys: space.keys, header: space.header, cacheDir, workDir });
    assert.deepEqual(damaged.problems.sort(), [
      `bucket: metadata names chunk ${name(gone[0])}, which is not in the bucket`,
      `local: metadata names chunk ${name(gone[0])}, which is not in the bucket`,
      `snapshot ${snap.id}: names chunk ${name(gone[1])}, which is not in the bucket`,
    ]);
    assert.deepEqual(await fsp.readdir(workDir), [busy]);
  });
});
