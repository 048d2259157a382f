// Pins down the journal's group commit: a flush (what close(2) waits for) never waits for an
// fdatasync in flight; syncs that arrive while one runs share the next one; and a sync still
// resolves only after an fdatasync that started once its records were written. The fdatasync
// of the journal's file handle is replaced by one the test lets finish, so nothing here
// depends on the speed of the disk.

import assert from 'node:assert/strict';
import { mkdtemp, open as openFile, readFile, rm } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Journal, decodeRecords } from '../../electron/engine/meta/journal';

interface Snap {
  gen: number;
}

/** Controls every FileHandle.datasync: each call waits until the test finishes it. */
class HeldDatasyncs {
  readonly calls: Array<{ finish: () => void; done: boolean }> = [];
  private readonly callWaiters: Array<{ n: number; resolve: () => void }> = [];
  private original: FileHandle['datasync'] | undefined;
  private proto: { datasync: FileHandle['datasync'] } | undefined;

  async install(): Promise<void> {
    const probe = await openFile(path.join(os.tmpdir(), `filespace-probe-${process.pid}`), 'w');
    this.proto = Object.getPrototypeOf(probe) as { datasync: FileHandle['datasync'] };
    await probe.close();
    await rm(path.join(os.tmpdir(), `filespace-probe-${process.pid}`), { force: true });
    this.original = this.proto.datasync;
    const original = this.original;
    const calls = this.calls;
    const waiters = this.callWaiters;
    this.proto.datasync = function (this: FileHandle): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        const call = {
          done: false,
          finish: () => {
            call.done = true;
            original.call(this).then(resolve, reject);
          },
        };
        calls.push(call);
        for (const w of waiters.filter((x) => calls.length >= x.n)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      });
    };
  }

  uninstall(): void {
    if (this.proto && this.original) this.proto.datasync = this.original;
  }

  /** Resolves once `n` datasyncs have been called. */
  called(n: number): Promise<void> {
    if (this.calls.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.callWaiters.push({ n, resolve }));
  }
}

/** Tracks whether a promise has settled, without waiting for it. */
function track<T>(p: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let settled = false;
  const promise = p.finally(() => (settled = true));
  return { settled: () => settled, promise };
}

let dir: string;
let held: HeldDatasyncs;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-groupcommit-'));
  held = new HeldDatasyncs();
  await held.install();
});

afterEach(async () => {
  held.uninstall();
  await rm(dir, { recursive: true, force: true });
});

describe('journal group commit', () => {
  it('writes a flush while an fdatasync is still running', { timeout: 30_000 }, async () => {
    const { journal } = await Journal.open<Snap>(dir);
    journal.append({ n: 1 });
    const first = track(journal.sync());
    await held.called(1);
    journal.append({ n: 2 });
    // Before the change, this flush waited for the fdatasync above, which the test holds:
    // it would never resolve and the test would time out.
    await journal.flush();
    assert.equal(first.settled(), false, 'the first sync is still waiting for its fdatasync');
    const onDisk = decodeRecords(await readFile(path.join(dir, 'journal.0'))).records;
    assert.deepEqual(onDisk, [{ n: 1 }, { n: 2 }], 'the flushed record is in the file');
    held.calls[0]!.finish();
    await first.promise;
    const closing = journal.close();
    await held.called(2);
    held.calls[1]!.finish();
    await closing;
  });

  it('lets syncs that arrive during an fdatasync share the next one', { timeout: 30_000 }, async () => {
    const { journal } = await Journal.open<Snap>(dir);
    journal.append({ n: 0 });
    const first = journal.sync();
    await held.called(1);
    const later: Array<Promise<void>> = [];
    for (let i = 1; i <= 10; i++) {
      journal.append({ n: i });
      later.push(journal.sync());
    }
    await journal.flush(); // every sync above has written its records and asked for an fdatasync
    held.calls[0]!.finish();
    await first;
    await held.called(2);
    held.calls[1]!.finish();
    await Promise.all(later);
    assert.equal(held.calls.length, 2, `11 syncs cost ${held.calls.length} fdatasyncs`);
    const closing = journal.close();
    await held.called(3);
    held.calls[2]!.finish();
    await closing;
  });

  it('resolves a sync only after an fdatasync that started once its records were written', { timeout: 30_000 }, async () => {
    const { journal } = await Journal.open<Snap>(dir);
    journal.append({ n: 1 });
    const first = journal.sync();
    await held.called(1);
    journal.append({ n: 2 });
    const second = track(journal.sync());
    await journal.flush(); // record 2 is written while the first fdatasync still runs
    held.calls[0]!.finish();
    await first;
    // The fdatasync that was running when record 2 was written does not cover it.
    await held.called(2);
    assert.equal(second.settled(), false, 'the second sync waits for the next fdatasync');
    held.calls[1]!.finish();
    await second.promise;
    const closing = journal.close();
    await held.called(3);
    held.calls[2]!.finish();
    await closing;
  });
});

describe('journal flushes in a burst', () => {
  /** Counts FileHandle.writev calls (the journal's writes) while installed. */
  async function countWrites(): Promise<{ count: () => number; uninstall: () => void }> {
    const probe = await openFile(path.join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { writev: FileHandle['writev'] };
    await probe.close();
    const original = proto.writev;
    let n = 0;
    proto.writev = function (this: FileHandle, ...args: Parameters<FileHandle['writev']>) {
      n++;
      return original.apply(this, args);
    } as FileHandle['writev'];
    return { count: () => n, uninstall: () => void (proto.writev = original) };
  }

  it('share one write while it has not started, and keep the records in order', { timeout: 30_000 }, async () => {
    const { journal } = await Journal.open<Snap>(dir);
    const writes = await countWrites();
    try {
      const flushes: Array<Promise<void>> = [];
      for (let i = 1; i <= 5; i++) {
        journal.append({ n: i });
        flushes.push(journal.flush());
      }
      await Promise.all(flushes);
      assert.equal(writes.count(), 1, `5 flushes in one turn cost ${writes.count()} writes`);
      journal.append({ n: 6 });
      await journal.flush();
      assert.equal(writes.count(), 2, 'a flush after the write started writes again');
    } finally {
      writes.uninstall();
    }
    const onDisk = decodeRecords(await readFile(path.join(dir, 'journal.0'))).records;
    assert.deepEqual(
      onDisk,
      [1, 2, 3, 4, 5, 6].map((n) => ({ n })),
    );
    const closing = journal.close();
    await held.called(1);
    held.calls[0]!.finish();
    await closing;
  });

  it('never carries a record appended after a checkpoint into the journal before it', { timeout: 30_000 }, async () => {
    // The folder's fsync and the close's fdatasync are let through as they come.
    const letThrough = setInterval(() => {
      for (const c of held.calls) if (!c.done) c.finish();
    }, 5);
    try {
      const { journal } = await Journal.open<Snap>(dir);
      journal.append({ n: 1 });
      const before = journal.flush(); // queued, not started
      const switched = journal.checkpointWith(() => undefined); // covers record 1
      journal.append({ n: 2 });
      const after = journal.flush(); // must go to the new journal, not join the write above
      await Promise.all([before, switched, after]);
      assert.deepEqual(decodeRecords(await readFile(path.join(dir, 'journal.1'))).records, [{ n: 2 }]);
      await journal.close();
    } finally {
      clearInterval(letThrough);
    }
  });
});
