// What the lease line says (CLI `status`, the app's status card): a healthy writer, a writer
// whose renewals fail but that may still commit for a while, one that commits nothing until
// the bucket answers, and one that stopped writing for good.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { LeaseStatusDto } from '../../electron/contract/api';
import { leaseLine } from '../../electron/contract/format';

const now = new Date(2026, 11, 2, 14, 5, 18).getTime();
const writer: LeaseStatusDto = {
  role: 'writer',
  holder: 'laptop (process 101, machine aaaaaaaa)',
  holderIsThisMachine: true,
  lastRenewedAt: now - 3000,
  ttlMs: 30_000,
  followerLagMs: null,
  renewFailingSince: null,
  validUntil: now + 19_500,
  lost: null,
  conditionalWrites: true,
};

describe('lease line', () => {
  it('a writer that renews says when it last did', () => {
    assert.equal(leaseLine(writer, now), 'writer: holds the write lease (renewed 3s ago, expires after 30s without renewal)');
  });

  it('a writer whose renewals fail says since when, and how long it still commits', () => {
    const line = leaseLine(
      { ...writer, lastRenewedAt: now - 12_000, renewFailingSince: now - 2000, validUntil: now + 10_500 },
      now,
    );
    assert.equal(
      line,
      'writer: could not renew the write lease since 14:05:06 (12s); retrying, and still committing for 11s; ' +
        'after that, writes are kept on this computer until the bucket answers',
    );
  });

  it('a writer offline past its lease says writes are kept and committed later, not that it holds a lease that expired', () => {
    const line = leaseLine(
      { ...writer, lastRenewedAt: now - 187_000, renewFailingSince: now - 177_000, validUntil: now - 164_500 },
      now,
    );
    assert.equal(
      line,
      'writer, not committing: could not renew the write lease since 14:02:11 (187s); writes are kept on this computer ' +
        'and committed once the bucket answers, unless another machine takes the lease meanwhile (then they are set aside)',
    );
    assert.doesNotMatch(line, /holds the write lease|expires after/);
  });

  it('a mount that stopped writing says why', () => {
    const line = leaseLine(
      {
        ...writer,
        role: 'none',
        lost: 'the write lease was taken over by desktop (process 202, machine bbbbbbbb) at 2026-12-02T13:04:00.000Z',
      },
      now,
    );
    assert.equal(
      line,
      'not writing: the write lease was taken over by desktop (process 202, machine bbbbbbbb) at 2026-12-02T13:04:00.000Z',
    );
  });

  it('a status from an engine that does not report renewal failures reads as before', () => {
    const { renewFailingSince: _a, validUntil: _b, ...old } = writer;
    assert.equal(leaseLine(old, now), 'writer: holds the write lease (renewed 3s ago, expires after 30s without renewal)');
  });
});
