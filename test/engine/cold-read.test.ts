/**
 * Cold sequential reads through the FUSE interface, on a machine that never had the file: the
 * chunk a read waits for downloads alone (time to first byte), also when the kernel sends
 * several reads inside it at once, and read-ahead follows as soon as it is here, filling the
 * download slots. In a chunk large enough for ranged reads, a stream's first read is answered
 * from its segments alone, and the whole chunk is asked for once they are here and the read is
 * answered, unless another read of the chunk comes first. A stream's read that one chunk in
 * memory covers whole is answered from that memory (no copy into the read's buffer); a read
 * across two chunks is read into its buffer.
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
  maxInFlight = 0;
  started = 0;
  /** Each chunk GET started, in order: whole, or the bytes of a ranged one. */
  readonly asked: string[] = [];
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
    this.asked.push(range ? `${range.start}-${range.end}` : 'whole');
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
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

  /** Lets the oldest GET held go. */
  releaseOldest(): void {
    this.gates.shift()?.();
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

  /** /big of `chunks` chunks of `cs` bytes, written and uploaded, then mounted on a machine that never had it, its chunk GETs held. */
  async function coldBig(cs: number, chunks: number): Promise<{ r: Mounted; gated: GatedChunks; data: Buffer }> {
    const space = await bed.filespace({ chunkSize: cs });
    const w = await bed.mount(space);
    const data = random(chunks * cs);
    await writeFile(w.fs, '/big', data);
    await w.sync();
    await w.close();
    const gated = new GatedChunks(space.store);
    const r = await bed.mount(space, { mode: 'read', store: gated, settings: { downloadConcurrency: 4, prefetchMaxChunks: 8 } });
    return { r, gated, data };
  }

  it('with 16 MiB chunks, downloads and reads ahead the bytes 4 MiB chunks would: 2 chunks, not 8', async () => {
    const MiB = 1024 * 1024;
    const cs = 16 * MiB;
    const space = await bed.filespace({ chunkSize: cs });
    const w = await bed.mount(space);
    const data = random(4 * cs);
    await writeFile(w.fs, '/big', data);
    await w.sync();
    await w.close();
    const gated = new GatedChunks(space.store);
    // The default counts (8 downloads, a window of 8 chunks) as the machine's settings.
    const r = await bed.mount(space, { mode: 'read', store: gated, settings: { downloadConcurrency: 8, prefetchMaxChunks: 8 } });
    try {
      const fh = r.fs.open('/big', O_RDONLY);
      const got = Buffer.alloc(data.length);
      /** Reads [off, off+n), letting GETs go oldest first only while the read waits. */
      const readLetting = async (off: number, n: number) => {
        const read = r.fs.read(fh, got.subarray(off, off + n), n, off);
        await until(`the read at ${off}`, async () => {
          if (await Promise.race([read.then(() => true), settle().then(() => false)])) return true;
          gated.releaseOldest();
          return false;
        });
      };
      // A stream through the first chunk: its window grows past 3 chunks, all the file has after it.
      await readLetting(0, 4096);
      for (let off = MiB; off < 8 * MiB; off += MiB) await readLetting(off, MiB);
      for (let i = 0; i < 20; i++) await settle();
      assert.equal(gated.inFlight, 2, 'read-ahead holds two 16 MiB chunks coming (32 MiB, as eight of 4 MiB), not all three');
      assert.equal(r.engine.appliedSettings.downloadConcurrency, 2);
      assert.equal(r.engine.appliedSettings.prefetchMaxChunks, 2);
      assert.equal(r.engine.currentSettings.downloadConcurrency, 8, "the machine's setting itself is kept");
      // The rest reads back right.
      const rest = r.fs.read(fh, got.subarray(8 * MiB), data.length - 8 * MiB, 8 * MiB);
      await until('the rest of the file', async () => {
        gated.releaseAll();
        return Promise.race([rest.then(() => true), settle().then(() => false)]);
      });
      await readLetting(0, 8 * MiB);
      assert.deepEqual(got, data);
      assert.ok(gated.maxInFlight <= 2, `at most 2 GETs at once (${gated.maxInFlight})`);
      await r.fs.release(fh);
    } finally {
      gated.open();
      await r.close();
    }
  });

  it('downloads the chunk a stream waits for alone, then reads ahead into every slot', async () => {
    const { r, gated, data } = await coldBig(CS, 12);
    try {
      await readsCold(r, gated, data);
    } finally {
      gated.open();
      await r.close();
    }
  });

  it("answers a stream's first read from its segments alone, then asks for the whole chunk", async () => {
    const cs = 1024 * 1024;
    const { r, gated, data } = await coldBig(cs, 2);
    try {
      const fh = r.fs.open('/big', O_RDONLY);
      const first = Buffer.alloc(4096);
      const reading = r.fs.read(fh, first, first.length, 0);
      await until('the first GET', () => gated.started >= 1);
      await settle();
      assert.deepEqual(gated.asked, [gated.asked[0]], 'one GET while the first read waits');
      assert.notEqual(gated.asked[0], 'whole', 'the first read asks for its segments only');
      gated.releaseAll();
      await reading;
      assert.deepEqual(first, data.subarray(0, 4096));
      // The read is answered before the whole chunk is prepared and asked for.
      assert.deepEqual(gated.asked, [gated.asked[0]], 'no whole-chunk GET before the answer');
      await until('the whole chunk asked for once the segments are here', () => gated.asked.includes('whole'));
      assert.equal(gated.asked[1], 'whole');

      // A read of a chunk whose segments are on their way asks for the whole chunk at once.
      gated.releaseAll();
      const [a, b] = [Buffer.alloc(4096), Buffer.alloc(4096)];
      const seen = gated.asked.length;
      const reads = [r.fs.read(fh, a, a.length, cs + 8192), r.fs.read(fh, b, b.length, cs + 4 * 4096)];
      await until('two GETs of the second chunk', () => gated.asked.length >= seen + 2);
      await until('every read answered', async () => {
        gated.releaseAll();
        return Promise.race([Promise.all(reads).then(() => true), settle().then(() => false)]);
      });
      assert.deepEqual(a, data.subarray(cs + 8192, cs + 8192 + 4096));
      assert.deepEqual(b, data.subarray(cs + 4 * 4096, cs + 5 * 4096));
      await r.fs.release(fh);
    } finally {
      gated.open();
      await r.close();
    }
  });

  it('answers a read one chunk in memory covers from that memory, and a read across chunks into its buffer', async () => {
    const { r, gated, data } = await coldBig(CS, 4);
    gated.open();
    try {
      const fh = r.fs.open('/big', O_RDONLY);
      const READ = 16 * 1024;
      let inPlace = 0;
      for (let pos = 0; pos < 2 * CS; pos += READ) {
        const buf = Buffer.alloc(READ);
        let answered: Buffer | undefined;
        const n = await r.fs.read(fh, buf, READ, pos, (bytes) => {
          assert.equal(answered, undefined, 'answered once');
          answered = Buffer.from(bytes);
        });
        assert.equal(n, READ);
        const want = data.subarray(pos, pos + READ);
        if (answered) {
          inPlace++;
          assert.deepEqual(answered, want, `read at ${pos}`);
          assert.ok(
            buf.every((b) => b === 0),
            'nothing copied into the buffer',
          );
        } else {
          assert.deepEqual(buf, want, `read at ${pos}`);
        }
      }
      // All but the stream's first reads (which wait for the chunk) come from memory.
      assert.ok(inPlace >= 2 * (CS / READ) - 2, `${inPlace} reads answered from memory`);
      // Across the boundary of chunks 2 and 3: into the buffer.
      const across = Buffer.alloc(READ);
      let called = false;
      await r.fs.read(fh, across, READ, 3 * CS - READ / 2, () => (called = true));
      assert.equal(called, false);
      assert.deepEqual(across, data.subarray(3 * CS - READ / 2, 3 * CS + READ / 2));
      await r.fs.release(fh);
    } finally {
      await r.close();
    }
  });
});
