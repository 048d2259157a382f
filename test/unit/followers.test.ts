// Who follows a filespace: the followers' sealed announcements in the bucket, read by the
// writer (stale and unreadable ones name nobody), and the words the app and the CLI show.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import type { StatusDto } from '../../electron/contract/api';
import { leaseLine } from '../../electron/contract/format';
import { followersWords } from '../../electron/contract/headline';
import { HEARD_WITHIN_MS, announceFollower, readFollowers, withdrawFollower } from '../../electron/engine/meta/followers';
import { MemoryStore } from '../../electron/engine/store/memory';

const machine = (name: string) => ({ id: randomBytes(8).toString('hex'), name, pid: 1 });

describe('follower announcements', () => {
  it('the writer lists those heard from lately, newest first; stale, foreign and damaged records name nobody', async () => {
    const store = new MemoryStore();
    const key = randomBytes(32);
    const now = 1_000_000_000;
    const laptop = machine('laptop');
    const desk = machine('desk');
    const gone = machine('gone');
    await announceFollower(store, key, { machine: laptop, since: now - 60_000, heardAt: now - 5_000, lagMs: 800 });
    await announceFollower(store, key, { machine: desk, since: now - 10_000, heardAt: now - 1_000, lagMs: null });
    await announceFollower(store, key, { machine: gone, since: now - 900_000, heardAt: now - HEARD_WITHIN_MS - 1, lagMs: 0 });
    await announceFollower(store, randomBytes(32), { machine: machine('other key'), since: now, heardAt: now, lagMs: 0 });
    await store.put('followers/damaged', Buffer.from('not sealed'));
    const { followers, more } = await readFollowers(store, key, now);
    assert.deepEqual(
      followers.map((f) => [f.name, f.lagMs]),
      [
        ['desk', null],
        ['laptop', 800],
      ],
    );
    assert.equal(more, 0);
    // The writer leaves itself out; a withdrawn follower is gone.
    assert.deepEqual(
      (await readFollowers(store, key, now, desk.id)).followers.map((f) => f.name),
      ['laptop'],
    );
    await withdrawFollower(store, laptop.id);
    assert.deepEqual(
      (await readFollowers(store, key, now)).followers.map((f) => f.name),
      ['desk'],
    );
  });
});

describe('who follows, in words', () => {
  const lease = (over: Partial<NonNullable<StatusDto['lease']>>): NonNullable<StatusDto['lease']> => ({
    role: 'writer',
    holder: 'this',
    holderIsThisMachine: true,
    lastRenewedAt: 0,
    ttlMs: 60_000,
    followerLagMs: null,
    lost: null,
    conditionalWrites: true,
    ...over,
  });

  it('names each follower with when it was heard from and how far behind it was', () => {
    const now = 100_000;
    assert.equal(followersWords(lease({ followers: [] }), now), 'No other computer has it open read-only');
    assert.equal(
      followersWords(
        lease({
          followers: [
            { name: 'laptop', since: 0, heardAt: 95_000, lagMs: 2_500 },
            { name: 'desk', since: 0, heardAt: 90_000, lagMs: null },
          ],
          followersMore: 3,
        }),
        now,
      ),
      'Open read-only on laptop (heard 5 s ago, at most 3 s behind), desk (heard 10 s ago) and 3 more',
    );
    assert.equal(followersWords(lease({ role: 'follower' }), now), undefined);
    assert.match(
      leaseLine(lease({ lastRenewedAt: 99_000, followers: [{ name: 'laptop', since: 0, heardAt: 98_000, lagMs: 0 }] }), now),
      /; followed read-only by laptop \(heard 2s ago\)$/,
    );
  });
});
