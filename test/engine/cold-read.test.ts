/**
 * Cold sequential reads through the FUSE interface, on a machine that never had the file: the
 * chunk a read waits for downloads alone (time to first byte), also when the kernel sends
 * several reads inside it at once, and read-ahead follows as soon as it is here, filling the
 * download slots.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { CallOptions, GetResult, ObjectStore } from '../../electron/engine/store/types';
import { EngineBed, Mounted, O_RDONLY, random, until, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

/** Passes everything to `inner`, but holds chunk GETs until the test lets them go. */
class GatedChunks implements ObjectStore {
  readonly description = 'gated';
  inFlight = 0;
  started = 0;
  private gating = true;
  private readonly gates: Array<() => void> = [];

  constructor(private readonly inner: ObjectStore) {}

  async get(
    key: string,
    range?: { readonly start: number; readonly end: number },
    call?: CallOptions,
  ): Promise<GetResult | undefined> {
    if (!this.gating || !key.startsWith('chunks/')) return this.inner.get(key, range, call);
    this.started++;
    this.inFlight++;
    try {
      await new Promise<void>((resolve) => this.gates.push(resolve));
      return await this.inner.get(key, range, call);
    } finally {
      this.inFlight--;
    }
  }

  releaseAll(): void {
    for (const g of this.gates.splice(0)) g();
  }

  /** Stops holding GETs (so a failed test can still close its engine). */
  open(): void {
    this.gating = false;
    this.releaseAll();
  }

  head: ObjectStore['head'] = (key, call) => this.inner.head(key, call);
  put: ObjectStore['put'] = (key, body, options) => this.inner.put(key, body, options);
  delete: ObjectStore['delete'] = (key, call) => this.inner.delete(key, call);
  deleteMany: ObjectStore['deleteMany'] = (keys, call) => this.inner.deleteMany(keys, call);
  list: ObjectStore['list'] = (prefix, call) => this.inner.list(prefix, call);
  close: ObjectStore['close'] = () => this.inner.close();
}

/** Lets every pending promise callback run (no I/O is pending in between). */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Reads /big on the cold machine `r` while `gated` holds its chunk GETs; checks the bytes and the GETs. */
async function readsCold(r: Mounted, gated: GatedChunks, data: Buffer): Promise<void> {
  const fh = r.fs.open('/big', O_RDONLY);
  // The kernel's first read and its read-ahead inside the same chunk, sent together.
  const bufs = [0, 1, 2].map(() => Buffer.alloc(4096));
  const reads = bufs.map((b, i) => r.fs.read(fh, b, b.length, i * 4096));
  await until("the first chunk's GET", () => gated.inFlight >= 1);
  await settle();
  assert.equal(gated.started, 1, 'nothing else downloads while the first chunk is awaited');
  gated.releaseAll();
  await Promise.all(reads);
  for (const [i, b] of bufs.entries()) assert.deepEqual(b, data.subarray(i * 4096, (i + 1) * 4096));
  await until('read-ahead in every slot', () => gated.inFlight === 4);
  gated.releaseAll();
  // The rest of the file reads back right, whatever the order the GETs are let go in.
  const rest = Buffer.alloc(data.length - 3 * 4096);
  const done = r.fs.read(fh, rest, rest.length, 3 * 4096);
  await until('the rest of the file', async () => {
    gated.releaseAll();
    return Promise.race([done.then(() => true), settle().then(() => false)]);
  });
  assert.deepEqual(rest, data.subarray(3 * 4096));
  await r.fs.release(fh);
}

describe('cold sequential reads', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('downloads the chunk a stream waits for alone, then reads ahead into every slot', async () => {
    const space = await bed.filespace({ chunkSize: CS });
    const w = await bed.mount(space);
    const data = random(12 * CS);
    await writeFile(w.fs, '/big', data);
    await w.sync();
    await w.close();

    const gated = new GatedChunks(space.store);
    const r = await bed.mount(space, { mode: 'read', store: gated, settings: { downloadConcurrency: 4, prefetchMaxChunks: 8 } });
    try {
      await readsCold(r, gated, data);
    } finally {
      gated.open();
      await r.close();
    }
  });
});
