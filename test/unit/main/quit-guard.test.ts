// Quitting with uploads pending: the question, and what each answer does.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusDto } from '../../../electron/contract/api';
import { pendingOf, statusHeadline } from '../../../electron/contract/headline';
import { guardQuit, pendingMessage, QUIT_BUTTONS, type QuitDialog, type QuitHost } from '../../../electron/main/quitGuard';

const MiB = 1024 * 1024;

type Pending = { bytes: number; files: number; metaOps: number };

class FakeHost implements QuitHost {
  calls: string[] = [];
  constructor(
    private pendings: Pending[],
    private syncResults: boolean[] = [],
  ) {}
  async pending() {
    this.calls.push('pending');
    return this.pendings.shift() ?? { bytes: 0, files: 0, metaOps: 0 };
  }
  async syncAll(ms: number) {
    this.calls.push(`sync ${ms}`);
    return this.syncResults.shift() ?? true;
  }
  async shutdown() {
    this.calls.push('shutdown');
  }
}

function dialog(answers: number[]): QuitDialog & { asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    async ask(message, _detail, buttons) {
      assert.deepEqual(buttons, QUIT_BUTTONS);
      asked.push(message);
      const a = answers.shift();
      if (a === undefined) throw new Error(`unexpected question: ${message}`);
      return a;
    },
  };
}

describe('quit guard', () => {
  it('quits without asking when nothing is pending', async () => {
    const host = new FakeHost([{ bytes: 0, files: 0, metaOps: 0 }]);
    const d = dialog([]);
    assert.equal(await guardQuit(host, d), 'quit');
    assert.deepEqual(host.calls, ['pending', 'shutdown']);
    assert.deepEqual(d.asked, []);
  });

  it('says how much is pending; Quit anyway unmounts without waiting', async () => {
    const host = new FakeHost([{ bytes: 212 * MiB, files: 3, metaOps: 1 }]);
    const d = dialog([1]);
    assert.equal(await guardQuit(host, d), 'quit');
    assert.deepEqual(d.asked, ['3 files (212 MiB) are not in the bucket yet.']);
    assert.deepEqual(host.calls, ['pending', 'shutdown']);
  });

  it('Wait syncs, asks again with what is left if the wait ran out, then quits once synced', async () => {
    const host = new FakeHost(
      [
        { bytes: 5 * MiB, files: 2, metaOps: 0 },
        { bytes: 1 * MiB, files: 1, metaOps: 0 },
      ],
      [false, true],
    );
    const d = dialog([0, 0]);
    assert.equal(await guardQuit(host, d, 1000), 'quit');
    assert.deepEqual(d.asked, ['2 files (5.0 MiB) are not in the bucket yet.', '1 file (1.0 MiB) is not in the bucket yet.']);
    assert.deepEqual(host.calls, ['pending', 'sync 1000', 'pending', 'sync 1000', 'shutdown']);
  });

  it('Cancel (or closing the dialog) keeps everything running', async () => {
    for (const answer of [2, -1]) {
      const host = new FakeHost([{ bytes: 1, files: 1, metaOps: 0 }]);
      assert.equal(await guardQuit(host, dialog([answer])), 'cancel');
      assert.deepEqual(host.calls, ['pending'], 'nothing was unmounted');
    }
  });

  it('words metadata-only changes', () => {
    assert.equal(pendingMessage({ bytes: 0, files: 0, metaOps: 1 }), '1 change is not in the bucket yet.');
    assert.equal(pendingMessage({ bytes: 0, files: 0, metaOps: 4 }), '4 changes are not in the bucket yet.');
    assert.equal(pendingMessage({ bytes: 0, files: 0, metaOps: 0 }), undefined);
  });

  it('counts the same pending bytes as the status headline', () => {
    const base: StatusDto = {
      name: 'a',
      state: 'mounted',
      mountPoint: '/m/a',
      dirtyBytes: 0,
      dirtyFiles: 0,
      pendingMetaOps: 0,
      uploadBytesPerSec: 0,
      downloadBytesPerSec: 0,
      cacheUsedBytes: 0,
      cacheCapBytes: 1,
      cacheHitRatio: 0,
      openFiles: 0,
      offline: false,
      uploadsPaused: true,
      readOnlyReason: null,
      lastError: null,
    };
    const one = { ...base, dirtyFiles: 1950, dirtyBytes: 212 * MiB, pendingMetaOps: 4024 };
    assert.equal(statusHeadline(one).text, 'Paused — 212 MiB waiting');
    assert.equal(pendingMessage(pendingOf([one])), '1,950 files (212 MiB) are not in the bucket yet.');
    const two = [one, { ...base, name: 'b', dirtyFiles: 1, dirtyBytes: 12 * MiB }];
    assert.deepEqual(pendingOf(two), { bytes: 224 * MiB, files: 1951, metaOps: 4024 });
    assert.equal(pendingMessage(pendingOf(two)), '1,951 files (224 MiB) are not in the bucket yet.');
    assert.equal(pendingMessage(pendingOf([{ ...base, pendingMetaOps: 3 }])), '3 changes are not in the bucket yet.');
  });
});
