/**
 * The upload path, in process: written data reaches the bucket as chunks, metadata is
 * committed only after the chunks it names (checked after every single metadata write, so a
 * dangling reference is caught the moment it would be visible to another machine), identical
 * content is stored once, files deleted within the upload delay never reach the bucket, failed
 * PUTs are retried, uploads left over at close resume at the next start, and a machine that
 * links the filespace from the bucket alone reads the same bytes.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { checkFilespace } from '../../electron/engine/check';
import { MemoryStore } from '../../electron/engine/store/memory';
import { PutOptions, StoreError } from '../../electron/engine/store/types';
import { CheckedStore, EngineBed, Filespace, chunkObjects, expectContent, random, until, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

/** Whether a PUT sends chunk data: a chunk's own object, or a pack of small ones (chunk/packs.ts). */
const chunkData = (key: string) => key.startsWith('chunks/') || key.startsWith('packs/');

/** Fails the first `n` chunk and pack PUTs with a retryable server error. */
class FlakyStore extends MemoryStore {
  failed = 0;

  constructor(private failures: number) {
    super();
  }

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    if (chunkData(key) && this.failures > 0) {
      this.failures--;
      this.failed++;
      throw new StoreError('ServerError', 'injected 500 InternalError');
    }
    return super.put(key, body, options);
  }
}

/** Holds every chunk and pack PUT until `release()`; `held` counts the PUTs waiting. */
class GatedStore extends MemoryStore {
  held = 0;
  private open!: () => void;
  private readonly gate = new Promise<void>((r) => (this.open = r));

  release(): void {
    this.open();
  }

  override async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    if (chunkData(key)) {
      this.held++;
      await this.gate;
    }
    return super.put(key, body, options);
  }
}

describe('uploads', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  async function expectOnSecondMachine(space: Filespace, files: Map<string, Buffer>): Promise<void> {
    const other = await bed.mount(space, { mode: 'read' });
    for (const [p, data] of files) await expectContent(other.fs, p, data, CS, 'on a machine linked from the bucket alone');
    await other.close();
  }

  it('puts chunks before the metadata that names them, at every metadata write', async () => {
    const inner = new MemoryStore();
    const space = await bed.filespace({ chunkSize: CS, store: inner });
    const checked = new CheckedStore(inner, space);
    // Uploads run alongside the writes, renames and metadata pushes. (Writes end at chunk
    // boundaries: a write spanning two chunks can lose data when the first uploads meanwhile,
    // see read-write.test.ts.)
    const m = await bed.mount(space, { store: checked, settings: { uploadDelayMs: 0, uploadConcurrency: 4 } });
    const files = new Map<string, Buffer>();
    m.fs.mkdir('/dir', 0o755);
    for (let i = 0; i < 12; i++) {
      const data = random(i * 23_456 + 1);
      files.set(`/dir/f${i}`, data);
      await writeFile(m.fs, `/dir/f${i}`, data, { chunkSize: CS });
      if (i % 4 === 3) {
        await m.fs.rename(`/dir/f${i - 1}`, `/f${i - 1}`);
        files.set(`/f${i - 1}`, files.get(`/dir/f${i - 1}`)!);
        files.delete(`/dir/f${i - 1}`);
      }
    }
    await m.sync();
    assert.equal(m.engine.stats().dirtyBytes, 0);
    assert.equal(m.engine.stats().pendingMetaOps, 0);
    const chunkCount = [...files.values()].reduce((n, d) => n + Math.ceil(d.length / CS), 0);
    assert.equal((await chunkObjects(inner, space.keys)).length, chunkCount, 'every chunk is in the bucket');
    await m.close();
    assert.ok(checked.metaWrites > 1, `metadata was written ${checked.metaWrites} times`);
    assert.deepEqual(checked.problems, [], 'no metadata write named a chunk missing from the bucket');
    const deep = await checkFilespace({ store: inner, keys: space.keys, header: space.header, deep: true });
    assert.deepEqual(deep.problems, []);
    await expectOnSecondMachine(space, files);
  });

  it('answers lookups, listings and new files while uploads are held by the bucket', async () => {
    // Attributes and listings come from the tree in memory: nothing an upload holds (its PUT,
    // the chunk's lock, the metadata commit after it) may stand in their way.
    const gated = new GatedStore();
    const space = await bed.filespace({ chunkSize: CS, store: gated });
    const m = await bed.mount(space, { settings: { uploadDelayMs: 0, uploadConcurrency: 2 } });
    const first = random(4096);
    await writeFile(m.fs, '/held', first, { chunkSize: CS });
    await until('the upload to reach the bucket and be held', () => gated.held > 0, 30_000, 5);
    const st = m.fs.getattr('/held');
    assert.equal(st.size, first.length);
    assert.deepEqual(m.fs.readdir('/'), ['.', '..', 'held']);
    const second = random(4096);
    await writeFile(m.fs, '/next', second, { chunkSize: CS });
    assert.equal(m.fs.getattr('/next').size, second.length);
    await expectContent(m.fs, '/held', first, CS, 'while its upload is held');
    assert.ok(m.engine.stats().dirtyChunks > 0, 'the uploads were still held throughout');
    gated.release();
    await m.sync();
    assert.equal(m.engine.stats().dirtyBytes, 0);
    await m.close();
    await expectOnSecondMachine(
      space,
      new Map([
        ['/held', first],
        ['/next', second],
      ]),
    );
  });

  it('holds a closed file back while the mount keeps receiving requests, and uploads it once they pause', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space, { settings: { uploadDelayMs: 50 } });
    // As the mount adapter does: the count of requests received, reads and stats included. It
    // grows with the clock, one request every 5 ms, as a count kept by libfuse's threads grows
    // whatever this thread is doing (a timer of this thread would stall with it).
    let stoppedAt: number | undefined;
    m.fs.requestsSoFar = () => Math.floor((stoppedAt ?? Date.now()) / 5);
    try {
      await writeFile(m.fs, '/closed', random(4096), { chunkSize: CS });
      // Twenty times the upload delay, well under WRITER_BURST_DELAY_MS.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal(m.engine.stats().dirtyChunks, 1, 'not uploaded while the requests kept coming');
    } finally {
      stoppedAt = Date.now();
    }
    await until('the upload once the requests paused', () => m.engine.stats().dirtyChunks === 0, 30_000, 5);
    await m.close();
  });

  it('stores identical content once', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const data = random(2 * CS);
    await writeFile(m.fs, '/one', data);
    await writeFile(m.fs, '/two', data);
    await writeFile(m.fs, '/twice', Buffer.concat([data.subarray(0, CS), data.subarray(0, CS)]));
    await m.sync();
    assert.equal((await chunkObjects(space.store, space.keys)).length, 2);
    await m.close();
    await expectOnSecondMachine(
      space,
      new Map([
        ['/one', data],
        ['/two', data],
      ]),
    );
  });

  it('never uploads a file deleted or truncated away within the upload delay', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    await writeFile(m.fs, '/scratch.tmp', random(3 * CS));
    m.fs.mkdir('/build', 0o755);
    await writeFile(m.fs, '/build/o.o', random(CS + 1));
    await writeFile(m.fs, '/cut', random(2 * CS));
    await m.fs.unlink('/scratch.tmp');
    await m.fs.unlink('/build/o.o');
    m.fs.rmdir('/build');
    await m.fs.truncate('/cut', 0);
    const kept = Buffer.from('kept\n');
    await writeFile(m.fs, '/kept.txt', kept);
    await m.sync(); // makes every remaining dirty chunk due now
    assert.equal((await chunkObjects(space.store, space.keys)).length, 1, "only kept.txt's chunk is in the bucket");
    await m.close();
    await expectOnSecondMachine(
      space,
      new Map([
        ['/kept.txt', kept],
        ['/cut', Buffer.alloc(0)],
      ]),
    );
  });

  it('retries failed PUTs until they succeed, and nothing dangles meanwhile', async () => {
    const flaky = new FlakyStore(5);
    const space = await bed.filespace({ chunkSize: CS, store: flaky });
    const checked = new CheckedStore(flaky, space);
    const m = await bed.mount(space, { store: checked });
    const data = random(4 * CS + 3);
    await writeFile(m.fs, '/f', data);
    await m.sync();
    assert.equal(flaky.failed, 5, 'the injected failures happened');
    // Reported while failing (logged once per run of failures), and cleared by the success.
    assert.ok(
      m.log.some((l) => /injected 500/.test(l)),
      `the failure was logged:\n${m.log.join('\n')}`,
    );
    assert.equal(m.engine.stats().lastError, undefined, 'no error is left once uploads work again');
    await m.close();
    assert.deepEqual(checked.problems, []);
    await expectOnSecondMachine(space, new Map([['/f', data]]));
  });

  it('resumes uploads left at close when the engine starts again', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const m = await bed.mount(space);
    const data = random(3 * CS);
    await writeFile(m.fs, '/later', data);
    await m.close();
    assert.equal((await chunkObjects(space.store, space.keys)).length, 0, 'nothing was uploaded before close');
    // Started again with no upload delay: the chunks go up by themselves, nobody calls sync.
    const again = await bed.mount(space, { cacheDir: m.cacheDir, settings: { uploadDelayMs: 0 } });
    await until(
      'the pending chunks to be uploaded',
      async () => again.engine.stats().dirtyChunks === 0 && (await chunkObjects(space.store, space.keys)).length === 3,
      60_000,
      20,
    );
    await again.close();
    await expectOnSecondMachine(space, new Map([['/later', data]]));
  });
});
