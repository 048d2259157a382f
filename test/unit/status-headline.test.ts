// The status headline, the upload batch, the time left and the lease in words: what the card,
// the tray and the quit guard say about a filespace.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusDto } from '../../electron/contract/api';
import {
  durationWords,
  etaWords,
  leaseWords,
  nextBatch,
  recentRate,
  statusHeadline,
  type Batch,
} from '../../electron/contract/headline';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

function st(over: Partial<StatusDto> = {}): StatusDto {
  return {
    name: 'team',
    state: 'mounted',
    mountPoint: '/m/team',
    dirtyBytes: 0,
    dirtyFiles: 0,
    pendingMetaOps: 0,
    uploadBytesPerSec: 0,
    downloadBytesPerSec: 0,
    cacheUsedBytes: 0,
    cacheCapBytes: GiB,
    cacheHitRatio: 0,
    openFiles: 0,
    offline: false,
    uploadsPaused: false,
    readOnlyReason: null,
    lastError: null,
    ...over,
  };
}

const lease = {
  holder: 'laptop',
  holderIsThisMachine: false,
  lastRenewedAt: 1_000_000,
  ttlMs: 30_000,
  followerLagMs: null,
  lost: null,
  conditionalWrites: true,
};

describe('status headline', () => {
  it('names each state in one line', () => {
    const text = (over: Partial<StatusDto>, ctx = {}) => statusHeadline(st(over), ctx).text;
    assert.equal(text({}), 'Up to date');
    assert.equal(
      text({ dirtyFiles: 3, dirtyBytes: 212 * MiB }, { rateBytesPerSec: 5.3 * MiB }),
      'Uploading 3 files — 212 MiB left, about 40 s',
    );
    assert.equal(text({ dirtyFiles: 3, dirtyBytes: 212 * MiB }), 'Uploading 3 files — 212 MiB left', 'no rate, no guess');
    assert.equal(text({ dirtyFiles: 1, dirtyBytes: 212 * MiB }, { writing: true }), 'Uploading 1 file — writing…');
    assert.equal(text({ pendingMetaOps: 12 }), 'Uploading 12 changes');
    assert.equal(text({ dirtyFiles: 9, dirtyBytes: 1.2 * GiB, uploadsPaused: true }), 'Paused — 1.2 GiB waiting');
    assert.equal(text({ uploadsPaused: true }), 'Up to date (uploads paused)');
    assert.equal(
      text({ offline: true, dirtyFiles: 2, dirtyBytes: 21 * MiB }),
      'Offline — 21.0 MiB waiting, reading from the cache',
    );
    const waiting = { since: 1, cause: 'offline' as const, refusing: false, refused: 0, message: '…' };
    assert.equal(
      text({ writesWaiting: waiting, offline: true }),
      'Writes waiting — the cache is full of changes not uploaded yet',
    );
    assert.equal(
      text({ writesWaiting: { ...waiting, cause: 'uploading' }, dirtyFiles: 1, dirtyBytes: MiB }),
      'Uploading 1 file — 1.0 MiB left',
      'ordinary backpressure while uploading is not a problem',
    );
    assert.equal(
      text({ readOnlyReason: 'following laptop', lease: { ...lease, role: 'follower', followerLagMs: 800 } }),
      'Read-only (following laptop)',
    );
    assert.equal(
      text({ state: 'unmounted', dirtyFiles: 1, dirtyBytes: 19 }),
      'Not mounted — 19 B waits to upload at the next mount',
    );
    assert.equal(text({ state: 'unmounted' }), 'Not mounted — everything is in the bucket');
    assert.equal(statusHeadline(st({ dirtyFiles: 1, dirtyBytes: 1 })).tone, 'busy');
    assert.equal(statusHeadline(st({ writesWaiting: waiting })).tone, 'error');
  });

  it('says how long in rounded words', () => {
    assert.equal(durationWords(3), 'a few seconds');
    assert.equal(durationWords(41), 'about 40 s');
    assert.equal(durationWords(185), 'about 3 min');
    assert.equal(durationWords(2 * 3600 + 600), 'about 2 h 10 min');
    assert.equal(etaWords(212 * MiB, 0), undefined);
    assert.equal(etaWords(0, MiB), undefined);
    assert.equal(
      recentRate(
        [
          { t: 0, up: 100 },
          { t: 19_000, up: 300 },
          { t: 20_000, up: 500 },
        ],
        30_000,
        15_000,
      ),
      400,
    );
  });

  it('the batch counts the whole write once: left never jumps up while done goes on', () => {
    let b: Batch | undefined;
    const seen: Array<[number, number]> = [];
    // Pending bytes grow while a file is written, then fall as uploads catch up.
    const dirty = [2, 3, 4, 5, 6, 5, 4, 3, 2, 1, 0].map((m) => m * MiB);
    let t = 0;
    for (const d of dirty) {
      b = nextBatch(b, d, (t += 1000));
      if (b) seen.push([b.doneBytes, b.totalBytes]);
    }
    assert.equal(b, undefined, 'the batch ends when nothing is left');
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i]![0] >= seen[i - 1]![0], 'done never goes back');
      assert.ok(seen[i]![1] >= seen[i - 1]![1], 'the total never shrinks');
    }
    assert.deepEqual(seen.at(-1), [5 * MiB, 6 * MiB], '1 MiB left of the 6 MiB written into the batch');
    const writing = nextBatch(nextBatch(undefined, MiB, 0), 2 * MiB, 5000)!;
    assert.ok(writing.writingUntil > 5000, 'growth marks the batch as being written');
  });

  it('words the lease for a person, and the seconds move with the clock', () => {
    const writer = { ...lease, role: 'writer' as const, holder: 'this', holderIsThisMachine: true };
    assert.equal(
      leaseWords(writer, 1_003_000),
      'This computer is writing; others can open it read-only (claim confirmed 3 s ago)',
    );
    assert.match(leaseWords(writer, 1_070_000), /confirmed 70 s ago/);
    assert.match(leaseWords({ ...writer, renewFailingSince: 1_000_500 }, 1_010_000), /cannot reach the bucket/);
    assert.equal(
      leaseWords({ ...lease, role: 'follower', followerLagMs: 1200 }),
      'laptop is writing; this computer reads it, at most 2 s behind',
    );
    assert.equal(leaseWords({ ...lease, role: 'none', holder: null }), 'Waiting to become the computer that writes');
  });
});
