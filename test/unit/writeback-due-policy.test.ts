// Pins down when a dirty chunk is due for upload: the delay after the last write, full chunks, closed files, the maximum dirty age for an open tail chunk, pressure, drain and retry times, and uploads giving way to a streaming writer.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { DirtyChunk, DirtyStore } from '../../electron/engine/cache/dirty';
import { HandlePool } from '../../electron/engine/cache/handles';
import { SealedIO } from '../../electron/engine/cache/sealed';
import {
  DUE_AHEAD,
  DUE_AHEAD_MS,
  WRITER_BURST_CORES,
  WRITER_BURST_DELAY_MS,
  WRITER_BURST_IDLE_CORES,
  WRITER_BURST_LOOP_BUSY,
  WRITER_BURST_SHARE,
  WRITER_FIRST_MAX_SHARE,
  WRITER_QUIET_MS,
  WritebackDeps,
  WritebackPolicy,
  WritebackQueue,
} from '../../electron/engine/upload/writeback';

const CS = 64 * 1024;
const policy: WritebackPolicy = { uploadDelayMs: 2_000, maxDirtyAgeMs: 30_000, uploadConcurrency: 2 };

let dir: string;
let handles: HandlePool;
let dirty: DirtyStore;
let clock: number;
let openForWrite: Set<number>;
let uploads: DirtyChunk[];
let queue: WritebackQueue;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-writeback-'));
  handles = new HandlePool();
  dirty = new DirtyStore(dir, handles, new SealedIO(randomBytes(32)));
  await dirty.init(() => 'deleted', 0);
  clock = 1_000_000;
  openForWrite = new Set();
  uploads = [];
  queue = new WritebackQueue({
    dirty,
    chunkSize: CS,
    policy: () => policy,
    isOpenForWrite: (ino) => openForWrite.has(ino),
    upload: async (d) => {
      uploads.push(d);
    },
    paused: () => false,
    onError: () => undefined,
    onSuccess: () => undefined,
    now: () => clock,
  });
});

afterEach(async () => {
  queue.stop();
  await handles.closeAll();
  await rm(dir, { recursive: true, force: true });
});

/** A queue over `dirty` on the fake clock, of closed files, under `policy`; `deps` replaces any of its parts. */
function queueWith(deps: Partial<WritebackDeps>): WritebackQueue {
  return new WritebackQueue({
    dirty,
    chunkSize: CS,
    policy: () => policy,
    isOpenForWrite: () => false,
    upload: async () => undefined,
    paused: () => false,
    onError: () => undefined,
    onSuccess: () => undefined,
    now: () => clock,
    ...deps,
  });
}

/** A queue whose every upload fails. */
function failingQueue(): WritebackQueue {
  return queueWith({
    upload: async () => {
      throw new Error('bucket unreachable');
    },
  });
}

/** A dirty chunk of `len` bytes written at the current fake time. */
async function written(ino: number, idx: number, len: number): Promise<DirtyChunk> {
  const d = await dirty.create(ino, idx, undefined, clock);
  if (len > 0) await dirty.write(d, Buffer.alloc(len, 1), 0, clock);
  return d;
}

describe('WritebackQueue.isDue', () => {
  it('is never due before uploadDelayMs has passed since the last write', async () => {
    const full = await written(1, 0, CS);
    const closedPartial = await written(2, 0, 10);
    assert.equal(queue.isDue(full, clock), false);
    assert.equal(queue.isDue(closedPartial, clock + policy.uploadDelayMs - 1), false);
    assert.equal(queue.isDue(full, clock + policy.uploadDelayMs - 1), false);
  });

  it('a write restarts the delay', async () => {
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs - 1;
    await dirty.write(d, Buffer.from('x'), 5, clock);
    assert.equal(queue.isDue(d, clock + policy.uploadDelayMs - 1), false);
    assert.equal(queue.isDue(d, clock + policy.uploadDelayMs), true);
  });

  it('after the delay, a full chunk is due even while its file is open for writing', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, CS);
    assert.equal(d.len, CS);
    assert.equal(queue.isDue(d, clock + policy.uploadDelayMs), true);
  });

  it('after the delay, a partial chunk of a file no longer open for writing is due', async () => {
    const d = await written(1, 3, 100);
    assert.equal(queue.isDue(d, clock + policy.uploadDelayMs), true);
  });

  it('a partial tail chunk of a file still open for writing waits until maxDirtyAgeMs', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, 100);
    // An append-only log: keeps appending a little, more slowly than the upload delay.
    for (let t = 0; t < 11; t++) {
      clock += policy.uploadDelayMs + 500;
      assert.equal(queue.isDue(d, clock), false, `not due ${clock - d.firstDirtyMs}ms after it became dirty`);
      await dirty.write(d, Buffer.from('line\n'), d.len, clock);
    }
    const first = d.firstDirtyMs;
    assert.equal(queue.isDue(d, first + policy.maxDirtyAgeMs - 1), false);
    assert.equal(queue.isDue(d, first + policy.maxDirtyAgeMs), true);

    openForWrite.delete(1);
    assert.equal(queue.isDue(d, d.lastWriteMs + policy.uploadDelayMs), true, 'closing the file makes it due');
  });

  it('pressure makes every chunk due at once, regardless of delay and open files', async () => {
    openForWrite.add(1);
    const fresh = await written(1, 0, 10);
    queue.setPressure(true);
    assert.equal(queue.isDue(fresh, clock), true);
    queue.setPressure(false);
    assert.equal(queue.isDue(fresh, clock), false);
  });

  it('drain makes every chunk due while it runs', async () => {
    openForWrite.add(1);
    const fresh = await written(1, 0, 10);
    const draining = queue.drain(clock + 60_000);
    assert.equal(queue.isDue(fresh, clock), true);
    clock += 60_000; // past the drain deadline
    queue.progress.notify();
    assert.equal(await draining, false, 'the chunk is still dirty (the queue was not started)');
    assert.equal(queue.isDue(fresh, clock - 60_000), false, 'normal policy again once drain returned');
  });

  it('drain resolves true at once when nothing is dirty', async () => {
    assert.equal(await queue.drain(clock + 1), true);
  });

  it('a chunk waiting for a retry is not due before retryAtMs, even under pressure', async () => {
    const q = failingQueue();
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    q.start();
    q.stop();
    await q.idle(10_000);
    const { attempts, retryAtMs } = q.scheduleOf(d);
    assert.equal(attempts, 1);
    assert.ok(retryAtMs > clock);
    q.setPressure(true);
    assert.equal(q.isDue(d, retryAtMs - 1), false);
    assert.equal(q.isDue(d, retryAtMs), true);
    q.setPressure(false);
    assert.equal(q.isDue(d, retryAtMs), true);
  });

  it('a chunk being uploaded is not due again', async () => {
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      upload: () => new Promise<void>(() => undefined), // never finishes
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    q.start();
    q.stop();
    assert.equal(q.scheduleOf(d).uploading, true);
    q.setPressure(true);
    assert.equal(q.isDue(d, clock + 100_000), false);
  });

  it('a chunk of a file deleted while still open is never due, and drain does not wait for it', async () => {
    const unlinked = new Set<number>([7]);
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      isUnlinked: (ino) => unlinked.has(ino),
      upload: async () => undefined,
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    const kept = await written(7, 0, CS);
    q.setPressure(true);
    assert.equal(q.isDue(kept, clock + 100_000), false);
    assert.equal(q.pending, 0);
    assert.equal(await q.drain(clock + 1), true, 'nothing left to upload');
    unlinked.delete(7); // (a file that was not deleted after all)
    assert.equal(q.isDue(kept, clock + 100_000), true);
    assert.equal(q.pending, 1);
  });

  it('reads the policy live, so a settings change applies at once', async () => {
    let delay = 2_000;
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => ({ ...policy, uploadDelayMs: delay }),
      isOpenForWrite: () => false,
      upload: async () => undefined,
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    const d = await written(1, 0, 10);
    assert.equal(q.isDue(d, clock + 500), false);
    delay = 0;
    assert.equal(q.isDue(d, clock), true);
  });
});

describe('WritebackQueue.pump', () => {
  it('starts due chunks oldest first, up to the concurrency limit, and skips chunks not yet due', async () => {
    const newer = await written(1, 0, CS);
    clock -= 5_000;
    const oldest = await written(2, 0, CS);
    clock += 1_000;
    const middle = await written(3, 0, CS);
    clock += 10_000;
    openForWrite.add(4);
    await written(4, 0, 10); // fresh: not due
    queue.start();
    queue.stop();
    assert.deepEqual(
      uploads.map((d) => d.ino),
      [oldest.ino, middle.ino],
      'two at a time, oldest first',
    );
    assert.ok(newer.firstDirtyMs > middle.firstDirtyMs);
    assert.equal(queue.uploading, 2);
    await queue.idle(10_000);
    assert.equal(queue.uploading, 0);
  });

  it('a pump over a large backlog looks only at the chunks it can start, oldest first', async () => {
    // The queue is pumped at every close and every finished upload: each pump must not weigh
    // (or sort) the whole backlog, or creating many small files costs quadratic time.
    let asked = 0;
    const started: DirtyChunk[] = [];
    const q = queueWith({
      policy: () => ({ ...policy, uploadConcurrency: 3 }),
      isOpenForWrite: () => {
        asked++;
        return false;
      },
      upload: (d) => {
        started.push(d);
        return new Promise<void>(() => undefined); // held: the slots stay taken
      },
    });
    const backlog: DirtyChunk[] = [];
    const n = 4 * DUE_AHEAD;
    for (let ino = 1; ino <= n; ino++) {
      backlog.push(await written(ino, 0, 10));
      clock += 1;
    }
    // One chunk older than all the others, recorded last.
    clock -= 2 * n;
    const oldest = await written(n + 1, 0, 10);
    clock += 10_000 + 2 * n;
    q.start(); // pumps once
    assert.deepEqual(
      started.map((d) => d.ino),
      [oldest.ino, backlog[0]!.ino, backlog[1]!.ino],
    );
    // It weighs the chunks it starts and the next DUE_AHEAD it keeps for the pumps that follow.
    assert.ok(asked <= 3 + DUE_AHEAD + 1, `a pump with 3 free slots weighed ${asked} of ${n + 1} chunks`);
    asked = 0;
    q.pump(); // every slot taken
    assert.equal(asked, 0);
    assert.equal(started.length, 3);
    q.stop();
  });

  it('the pumps after finished uploads take from what the last pass found, oldest first, and pass over the backlog again only when that runs out or gets old', async () => {
    // An upload that finishes has its chunk leave the dirty store, as the uploader's does.
    const finish: Array<() => Promise<void>> = [];
    const started: DirtyChunk[] = [];
    const q = queueWith({
      policy: () => ({ ...policy, uploadConcurrency: 2 }),
      upload: (d) => {
        started.push(d);
        return new Promise<void>((resolve) =>
          finish.push(async () => {
            await dirty.drop(d);
            resolve();
          }),
        );
      },
    });
    const backlog: DirtyChunk[] = [];
    const n = 2 * DUE_AHEAD + 100;
    for (let ino = 1; ino <= n; ino++) {
      backlog.push(await written(ino, 0, 10));
      clock += 1;
    }
    clock += 10_000 + n;
    // Gone from the store before its turn (its file deleted): never started.
    await dirty.drop(backlog[5]!);
    const settle = () => new Promise<void>((resolve) => setImmediate(resolve));
    q.start();
    assert.equal(q.backlogPasses, 1);
    for (let i = 0; i < 40; i++) {
      await finish.shift()!();
      await settle();
    }
    assert.equal(q.backlogPasses, 1, `40 finished uploads, one pass over the backlog of ${n}`);
    const expected = backlog.filter((_, i) => i !== 5).slice(0, started.length);
    assert.deepEqual(
      started.map((d) => d.ino),
      expected.map((d) => d.ino),
      'oldest first, the deleted chunk left out',
    );
    clock += DUE_AHEAD_MS;
    await finish.shift()!();
    await settle();
    assert.equal(q.backlogPasses, 2, 'what the last pass found is not used once it is DUE_AHEAD_MS old');
    for (let i = 0; i < DUE_AHEAD + 2; i++) {
      await finish.shift()!();
      await settle();
    }
    assert.equal(q.backlogPasses, 3, 'nor once it has run out');
    assert.deepEqual(
      started.map((d) => d.ino),
      backlog
        .filter((_, i) => i !== 5)
        .slice(0, started.length)
        .map((d) => d.ino),
    );
    q.stop();
  });

  it('a close weighs only the closed file while nothing is due, and starts it once it is', async () => {
    // A burst of creates closes a file every fraction of a millisecond while the upload delay
    // keeps everything back: each close must not weigh the whole backlog.
    let asked = 0;
    const started: DirtyChunk[] = [];
    let delay = policy.uploadDelayMs;
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => ({ ...policy, uploadDelayMs: delay }),
      isOpenForWrite: () => false,
      isUnlinked: () => {
        asked++;
        return false;
      },
      upload: (d) => {
        started.push(d);
        return new Promise<void>(() => undefined);
      },
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    for (let ino = 1; ino <= 300; ino++) await written(ino, 0, 10);
    q.start();
    assert.equal(started.length, 0, 'nothing due within the upload delay');
    asked = 0;
    for (let ino = 1; ino <= 300; ino++) q.pumpFor(ino);
    assert.ok(asked <= 300, `300 closes weighed ${asked} chunks`);
    assert.equal(started.length, 0);
    delay = 0; // due at close now: the close starts the oldest due chunks
    q.pumpFor(300);
    assert.equal(started.length, 2);
    assert.deepEqual(
      started.map((d) => d.ino),
      [1, 2],
      'oldest first, as a full pump',
    );
    q.stop();
  });

  it('a failed upload schedules a retry with backoff and reports the error', async () => {
    const errors: unknown[] = [];
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      upload: async () => {
        throw new Error('bucket unreachable');
      },
      paused: () => false,
      onError: (err) => errors.push(err),
      onSuccess: () => undefined,
      now: () => clock,
    });
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    q.start();
    q.stop();
    await q.idle(10_000);
    assert.equal(errors.length, 1);
    const s = q.scheduleOf(d);
    assert.equal(s.attempts, 1);
    assert.equal(s.uploading, false);
    assert.ok(s.retryAtMs > clock, 'a retry is scheduled in the future');
    assert.equal(q.isDue(d, clock), false);
    assert.equal(q.isDue(d, s.retryAtMs), true);
  });

  it('does nothing while paused', async () => {
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      upload: async (d) => {
        uploads.push(d);
      },
      paused: () => true,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    await written(1, 0, CS);
    clock += 100_000;
    q.start();
    q.stop();
    assert.equal(uploads.length, 0);
  });
});

describe('WritebackQueue.retryNow (the bucket answers again)', () => {
  it('makes every chunk waiting on its backoff due at once and starts them', async () => {
    let failing = true;
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      upload: async (d) => {
        if (failing) throw new Error('bucket unreachable');
        uploads.push(d);
      },
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      now: () => clock,
    });
    const a = await written(1, 0, CS);
    const b = await written(2, 0, CS);
    clock += policy.uploadDelayMs;
    // Failures while offline: each chunk waits out its backoff.
    for (let attempt = 1; attempt <= 8; attempt++) {
      if (attempt > 1) clock = Math.max(q.scheduleOf(a).retryAtMs, q.scheduleOf(b).retryAtMs);
      q.start();
      q.stop();
      await q.idle(10_000);
    }
    assert.deepEqual([q.scheduleOf(a).attempts, q.scheduleOf(b).attempts], [8, 8]);
    assert.ok(q.scheduleOf(a).retryAtMs >= clock + 30_000, 'a long backoff, reached while offline');
    failing = false;
    q.start();
    assert.equal(uploads.length, 0, 'nothing is due while the backoffs run');
    q.retryNow();
    q.stop();
    assert.deepEqual(uploads.map((d) => d.ino).sort(), [1, 2], 'both start at once');
    assert.equal(q.scheduleOf(a).attempts, 0);
    await q.idle(10_000);
  });

  it('an upload sent during the outage that fails after the bucket came back retries at once', async () => {
    let fail!: (err: Error) => void;
    const errors: unknown[] = [];
    const q = new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => policy,
      isOpenForWrite: () => false,
      upload: () => new Promise<void>((_, reject) => (fail = reject)),
      paused: () => false,
      onError: (err) => errors.push(err),
      onSuccess: () => undefined,
      now: () => clock,
    });
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    q.start();
    q.stop();
    assert.equal(q.scheduleOf(d).uploading, true);
    q.retryNow();
    fail(new Error('cut off: sent while the bucket did not answer'));
    await q.idle(10_000);
    assert.equal(errors.length, 1, 'the failure is still reported');
    assert.equal(q.scheduleOf(d).retryAtMs, 0, 'no backoff for a failure that belongs to the outage');
    assert.equal(q.isDue(d, clock), true);
  });
});

describe('WritebackQueue: uploads give way to a streaming writer', () => {
  let lastWriteMs: number;
  let share: number;
  let q: WritebackQueue;
  let started: DirtyChunk[];
  let onUpload: () => void;
  let activePolicy: WritebackPolicy;

  /**
   * A queue that sees the writer (lastWriteMs, dirtyShare), under activePolicy, on a machine of
   * 8 cores, and records each upload it starts in `started`; `deps` replaces any of its parts.
   */
  const writerQueue = (deps: Partial<WritebackDeps> = {}) =>
    new WritebackQueue({
      dirty,
      chunkSize: CS,
      policy: () => activePolicy,
      isOpenForWrite: (ino) => openForWrite.has(ino),
      upload: async (d) => {
        started.push(d);
        onUpload();
      },
      paused: () => false,
      onError: () => undefined,
      onSuccess: () => undefined,
      lastWriteMs: () => lastWriteMs,
      dirtyShare: () => share,
      now: () => clock,
      cores: 8,
      ...deps,
    });

  beforeEach(() => {
    activePolicy = policy;
    lastWriteMs = 0;
    share = 0;
    started = [];
    onUpload = () => undefined;
    q = writerQueue();
  });

  afterEach(() => q.stop());

  it('a due chunk of a file open for writing waits while writes keep arriving, and is due once they pause for WRITER_QUIET_MS', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    assert.equal(q.isDue(d, clock), true, 'due with no writer');
    lastWriteMs = clock - 1;
    assert.equal(q.isDue(d, clock), false, 'a write 1 ms ago: the writer goes first');
    lastWriteMs = clock - WRITER_QUIET_MS + 1;
    assert.equal(q.isDue(d, clock), false);
    lastWriteMs = clock - WRITER_QUIET_MS;
    assert.equal(q.isDue(d, clock), true, 'the writes paused');
  });

  it('an upload delay of zero does not wait for the writer', async () => {
    activePolicy = { ...policy, uploadDelayMs: 0 };
    openForWrite.add(1);
    const d = await written(1, 0, CS);
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), true, 'data in the bucket as soon as it is written');
    activePolicy = policy;
    clock += policy.uploadDelayMs;
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), false, 'with a delay, the writer goes first');
  });

  it('never starves: a chunk dirty for maxDirtyAgeMs is due while writes keep arriving', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, CS);
    clock = d.firstDirtyMs + policy.maxDirtyAgeMs - 1;
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), false);
    clock += 1;
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), true);
  });

  it('data waiting for upload past WRITER_FIRST_MAX_SHARE of the cap is due while writes keep arriving', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, CS);
    clock += policy.uploadDelayMs;
    lastWriteMs = clock;
    share = WRITER_FIRST_MAX_SHARE - 0.01;
    assert.equal(q.isDue(d, clock), false);
    share = WRITER_FIRST_MAX_SHARE;
    assert.equal(q.isDue(d, clock), true);
  });

  it('pressure and drain (sync, unmount) do not wait for the writer', async () => {
    openForWrite.add(1);
    const d = await written(1, 0, 10);
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), false);
    q.setPressure(true);
    assert.equal(q.isDue(d, clock), true, 'pressure');
    q.setPressure(false);
    const draining = q.drain(clock + 60_000);
    assert.equal(q.isDue(d, clock), true, 'drain');
    clock += 60_000;
    q.progress.notify();
    await draining;
  });

  it('a chunk of a file already closed waits out WRITER_BURST_DELAY_MS while writes keep arriving (a burst of creates)', async () => {
    const d = await written(1, 0, 10);
    clock += policy.uploadDelayMs;
    assert.equal(q.isDue(d, clock), true, 'alone: due after the upload delay');
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), false, 'during a burst: the creates go first');
    clock = d.lastWriteMs + WRITER_BURST_DELAY_MS - 1;
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), false);
    clock += 1;
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), true, 'a longer burst: its files upload that much behind it');
    openForWrite.add(1);
    assert.equal(q.isDue(d, clock), false, 'a tail chunk of a file still open waits as ever');
  });

  it(`with fewer than WRITER_BURST_CORES cores, a closed file waits for the end of a burst, up to maxDirtyAgeMs`, async () => {
    const small = writerQueue({ cores: WRITER_BURST_CORES - 1, spare: () => ({ idleCores: 0, loopBusy: 1 }) });
    const d = await written(1, 0, 10);
    clock += policy.uploadDelayMs;
    assert.equal(small.isDue(d, clock), true, 'alone: due after the upload delay');
    clock = d.lastWriteMs + WRITER_BURST_DELAY_MS * 4;
    lastWriteMs = clock;
    assert.equal(small.isDue(d, clock), false, 'a burst that goes on holds it back past WRITER_BURST_DELAY_MS');
    assert.equal(q.isDue(d, clock), true, 'where 8 cores would upload it behind the burst');
    clock += WRITER_QUIET_MS;
    assert.equal(small.isDue(d, clock), true, 'once the burst pauses');
    lastWriteMs = clock = d.firstDirtyMs + policy.maxDirtyAgeMs - 1;
    assert.equal(small.isDue(d, clock), false);
    lastWriteMs = clock = d.firstDirtyMs + policy.maxDirtyAgeMs;
    assert.equal(small.isDue(d, clock), true, 'a burst that never pauses holds it back no longer than maxDirtyAgeMs');
    lastWriteMs = clock = d.lastWriteMs + policy.uploadDelayMs;
    assert.equal(small.isDue(d, clock), false);
    share = WRITER_FIRST_MAX_SHARE;
    assert.equal(small.isDue(d, clock), true, 'nor once the data waiting fills WRITER_FIRST_MAX_SHARE of the cap');
    small.stop();
  });

  it('with fewer than WRITER_BURST_CORES cores, a burst that leaves the machine and the engine thread spare time has its closed files upload behind it, with the whole concurrency', async () => {
    let spare = { idleCores: WRITER_BURST_IDLE_CORES, loopBusy: WRITER_BURST_LOOP_BUSY };
    const held: Array<() => void> = [];
    const paced = writerQueue({
      cores: WRITER_BURST_CORES - 1,
      spare: () => spare,
      policy: () => ({ ...policy, uploadConcurrency: 4 }),
      upload: (d) => {
        started.push(d);
        return new Promise<void>((resolve) => held.push(resolve));
      },
    });
    const d = await written(1, 0, 10);
    clock = d.lastWriteMs + WRITER_BURST_DELAY_MS - 1;
    lastWriteMs = clock;
    assert.equal(paced.isDue(d, clock), false, 'not before its last write is WRITER_BURST_DELAY_MS old');
    clock += 1;
    lastWriteMs = clock;
    assert.equal(paced.isDue(d, clock), true, 'then behind the burst, as on a bigger machine');
    spare = { idleCores: WRITER_BURST_IDLE_CORES - 0.01, loopBusy: 0 };
    assert.equal(paced.isDue(d, clock), false, 'the machine has too few idle cores: it waits for the end of the burst');
    spare = { idleCores: 2, loopBusy: WRITER_BURST_LOOP_BUSY + 0.01 };
    assert.equal(paced.isDue(d, clock), false, "the engine's thread is too busy: it waits");
    spare = { idleCores: 2, loopBusy: 0.2 };
    for (let ino = 2; ino <= 8; ino++) await written(ino, 0, 10);
    clock += WRITER_BURST_DELAY_MS;
    lastWriteMs = clock;
    paced.start();
    assert.equal(started.length, 4, 'uploads start with the whole concurrency, not WRITER_BURST_SHARE of it');
    spare = { idleCores: 0.1, loopBusy: 1 };
    for (const release of held.splice(0)) release();
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    paced.pump();
    assert.equal(started.length, 4, 'once the uploads took the spare time, the next wait');
    paced.stop();
  });

  it('a pump reads the request count of the mount once to weigh its backlog (and once more to plan its next try), not once for each of the many closed files waiting behind a burst', async () => {
    let reads = 0;
    const counted = writerQueue({
      lastRequestMs: () => {
        reads++;
        return clock;
      },
    });
    for (let ino = 1; ino <= 200; ino++) await written(ino, 0, 10);
    clock += policy.uploadDelayMs;
    reads = 0;
    counted.start(); // pumps once
    assert.deepEqual(started, [], 'the burst goes first');
    assert.ok(reads >= 1 && reads <= 2, `the request count was read ${reads} times for 200 waiting files, not once a file`);
    clock += WRITER_BURST_DELAY_MS;
    reads = 0;
    counted.pump();
    assert.ok(started.length >= 1, 'due once their last write is WRITER_BURST_DELAY_MS old');
    assert.ok(reads >= 1 && reads <= 2, `read ${reads} times`);
    counted.stop();
  });

  it('requests of any kind (stats, listings) hold a closed file back as writes do, and an open tail chunk not at all', async () => {
    let lastRequestMs = 0;
    const reads = writerQueue({ lastRequestMs: () => lastRequestMs });
    const d = await written(1, 0, 10);
    clock += policy.uploadDelayMs;
    lastRequestMs = clock;
    assert.equal(reads.isDue(d, clock), false, 'someone is using the mount');
    clock += WRITER_QUIET_MS;
    assert.equal(reads.isDue(d, clock), true, 'once the requests pause');
    clock = d.lastWriteMs + WRITER_BURST_DELAY_MS;
    lastRequestMs = clock;
    assert.equal(reads.isDue(d, clock), true, 'requests that never pause hold it back no longer than WRITER_BURST_DELAY_MS');
    openForWrite.add(2);
    const full = await written(2, 0, CS);
    clock += policy.uploadDelayMs;
    lastRequestMs = clock;
    assert.equal(reads.isDue(full, clock), true, 'a full chunk of a file open for writing waits for writes only');
  });

  it('with an upload delay of zero, a closed file is due during a burst at once', async () => {
    activePolicy = { ...policy, uploadDelayMs: 0 };
    const d = await written(1, 0, 10);
    lastWriteMs = clock;
    assert.equal(q.isDue(d, clock), true);
  });

  for (const [what, open, bytes] of [
    ['a chunk that waited for the writer', true, CS],
    ['a closed file that waited for a burst', false, 10],
  ] as const)
    it(`${what} starts uploading once the writes pause`, async () => {
      if (open) openForWrite.add(1);
      const d = await written(1, 0, bytes);
      clock += policy.uploadDelayMs;
      lastWriteMs = clock;
      const uploaded = new Promise<void>((resolve) => (onUpload = resolve));
      q.start();
      q.pumpFor(1);
      assert.equal(started.length, 0, 'the writer goes first');
      // The writes pause: the queue's own timers start the upload.
      clock += WRITER_QUIET_MS;
      // A referenced timer keeps the test alive (the queue's timers do not hold the process).
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        uploaded,
        new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('the upload did not start')), 30_000))),
      ]).finally(() => clearTimeout(timer));
      assert.deepEqual(started, [d]);
    });

  it('while writes keep arriving, at most WRITER_BURST_SHARE of the concurrency uploads at once, and all once they pause', async () => {
    const concurrency = 4;
    const held: Array<() => void> = [];
    const burst = writerQueue({
      policy: () => ({ ...policy, uploadConcurrency: concurrency }),
      isOpenForWrite: () => false,
      upload: (d) => {
        started.push(d);
        return new Promise<void>((resolve) => held.push(resolve));
      },
      uploadsAhead: () => concurrency,
    });
    for (let ino = 1; ino <= 12; ino++) await written(ino, 0, 10);
    clock += WRITER_BURST_DELAY_MS;
    lastWriteMs = clock;
    burst.start();
    assert.equal(started.length, concurrency * WRITER_BURST_SHARE, 'during the burst');
    burst.pump();
    assert.equal(started.length, concurrency * WRITER_BURST_SHARE, 'no more while those run');
    clock += WRITER_QUIET_MS;
    burst.pump();
    assert.equal(started.length, concurrency * 2, 'once the writes pause: uploadConcurrency and uploadsAhead more');
    burst.stop();
    for (const release of held) release();
  });
});
