/**
 * Crashes, in process (well, next door): an engine hosted by a child process
 * (test/helpers/engineChild.ts) on a local-disk bucket is killed with SIGKILL, as a crashed
 * daemon would be, and the test opens its cache again. Everything fsynced before the kill is
 * there byte for byte, the pending uploads resume by themselves, a kill in the middle of
 * uploads leaves no dangling reference in the bucket, and a machine that links the filespace
 * from the bucket alone sees the same files. The kill points are chosen by what the workload
 * promised (so many fsyncs done), never by elapsed time.
 */

import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { checkFilespace } from '../../electron/engine/check';
import { FuseFilesystem } from '../../native/fuse/adapter';
import { ChildMessage, EngineBed, Filespace, Mounted, chunkObjects, errnoName, readFile, until } from '../helpers/engineBed';

const CS = 64 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Every promised file has its promised content; every promised deletion stayed deleted. */
async function expectPromises(fs: FuseFilesystem, expected: Map<string, string | null>, what: string): Promise<void> {
  for (const [p, digest] of expected) {
    if (digest === null) {
      let code = 'exists';
      try {
        fs.getattr(p);
      } catch (err) {
        code = errnoName(err);
      }
      assert.equal(code, 'ENOENT', `${what}: ${p} was deleted (fsynced) and must stay deleted`);
    } else {
      assert.equal(sha(await readFile(fs, p)), digest, `${what}: ${p} lost fsynced data`);
    }
  }
}

describe('crash and restart', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  async function reopen(space: Filespace, cacheDir: string): Promise<Mounted> {
    // The killed process left its lock file behind; the engine sees its holder is gone.
    return bed.mount(space, { cacheDir });
  }

  it('keeps fsynced data through SIGKILL and uploads it after the restart', async () => {
    const space = await bed.diskFilespace({ chunkSize: CS });
    const cacheDir = await bed.link(space);
    const child = bed.child({
      storeDir: space.storeDir,
      cacheDir,
      settings: {},
      script: 'fsync-then-scribble',
      seed: randomInt(2 ** 31),
    });
    const synced = (await child.next('synced')) as Extract<ChildMessage, { type: 'synced' }>;
    await child.kill();
    assert.equal((await chunkObjects(space.store, space.keys)).length, 0, 'nothing was uploaded before the kill');

    const m = await reopen(space, cacheDir);
    const expected = new Map(Object.entries(synced.files));
    await expectPromises(m.fs, expected, 'after the restart');
    assert.ok(m.engine.stats().dirtyBytes > 0, 'the data is pending upload after the restart');
    await m.sync();
    await expectPromises(m.fs, expected, 'after upload');
    await m.close();
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header, cacheDir, deep: true });
    assert.deepEqual(report.problems, []);
    const other = await bed.mount(space, { mode: 'read' });
    await expectPromises(other.fs, expected, 'on a machine linked from the bucket alone');
    await other.close();
  });

  it('leaves no dangling reference when killed during uploads, and resumes them', async () => {
    const space = await bed.diskFilespace({ chunkSize: CS });
    const cacheDir = await bed.link(space);
    const expected = new Map<string, string | null>();
    // Three crashes, each once the workload made a random number of promises (fsyncs that
    // returned) and then started to upload.
    for (let round = 0; round < 3; round++) {
      const child = bed.child({
        storeDir: space.storeDir,
        cacheDir,
        settings: { metaPushDelayMs: 0 },
        script: 'promise-stream',
        seed: 1000 * round + randomInt(1000),
      });
      const killAfter = 5 + randomInt(20);
      const uploadingAfter = (msgs: ChildMessage[]) => {
        let promised = 0;
        for (const x of msgs) {
          if (x.type === 'promised') promised++;
          else if (x.type === 'uploading' && promised >= killAfter) return true;
        }
        return false;
      };
      await until(
        `${killAfter} promises from the workload, then an upload`,
        () => uploadingAfter(child.messages) || child.messages.some((x) => x.type === 'error'),
        120_000,
        5,
      );
      await child.kill();
      const err = child.messages.find((x) => x.type === 'error');
      assert.equal(err, undefined, `the workload failed: ${err?.type === 'error' ? err.message : ''}`);
      // Operations in flight at the kill may have happened or not; everything promised holds.
      for (const msg of child.messages) {
        if (msg.type === 'busy') for (const p of msg.paths) expected.delete(p);
        if (msg.type === 'promised') expected.set(msg.path, msg.sha256);
      }
      const inBucket = await checkFilespace({ store: space.store, keys: space.keys, header: space.header });
      assert.deepEqual(inBucket.problems, [], `round ${round}: the bucket names only chunks it has`);
      const m = await reopen(space, cacheDir);
      await expectPromises(m.fs, expected, `round ${round}, after the restart`);
      await m.close();
    }
    const m = await reopen(space, cacheDir);
    await m.sync(); // what the last kill left pending goes up now
    await m.close();
    const report = await checkFilespace({ store: space.store, keys: space.keys, header: space.header, cacheDir, deep: true });
    assert.deepEqual(report.problems, []);
    const other = await bed.mount(space, { mode: 'read' });
    await expectPromises(other.fs, expected, 'on a machine linked from the bucket alone');
    await other.close();
  });
});
