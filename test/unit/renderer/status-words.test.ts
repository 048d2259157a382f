// Recent problems in plain words and de-duplicated, settings fields checked in the user's
// units before anything is sent, and the chart's scale following the window it shows.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chartWindow, niceCeil } from '../../../renderer/src/Chart';
import { inUnits, parseCount, parseFolder, parseRate, parseSize, SIZE_UNITS } from '../../../renderer/src/fieldRules';
import { followStatus, plainWords, recordProblem } from '../../../renderer/src/problems';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

describe('problems', () => {
  it('headlines carry no chunk ids, object keys, errno or schema text', () => {
    const chunk = 'download of chunk 3f9a1c0d2e4b5a6978a1b2c3d4e5f60718293a4b failed: socket hang up';
    assert.equal(plainWords(chunk), 'Could not download file data from the bucket');
    assert.equal(
      plainWords("ENOENT: no such file or directory, mkdir '/proc/nope'"),
      'The folder "/proc/nope" does not exist and cannot be made there',
    );
    assert.equal(
      plainWords('invalid setting uploadConcurrency: Too small: expected number to be >=1', 'BAD_SETTING'),
      'That value is not allowed here',
    );
    assert.equal(plainWords('read: EIO'), 'A file could not be read or written (input/output error)');
    assert.equal(plainWords('put team/chunks/ab/abcdef0123456789abcdef refused'), 'Put … refused');
    for (const h of [chunk, "EACCES: permission denied, open '/x/y'"].map((m) => plainWords(m)))
      assert.doesNotMatch(h, /[0-9a-f]{16}|E[A-Z]{3,}:|chunks\//);
  });

  it('one line per problem with a count and the last time; a status problem clears when gone', () => {
    let list = recordProblem([], { message: 'read: EIO', at: 1, source: 'status', filespace: 'team' });
    list = recordProblem(list, { message: 'mkdir: EIO', at: 2, source: 'status', filespace: 'team' });
    list = recordProblem(list, { message: 'read: EIO', at: 3, source: 'status', filespace: 'other' });
    assert.deepEqual(
      list.map((p) => [p.filespace, p.count, p.first, p.at, p.detail]),
      [
        ['team', 2, 1, 2, 'mkdir: EIO'],
        ['other', 1, 3, 3, 'read: EIO'],
      ],
    );
    // Status events: the same error over many events is recorded once.
    let prev = new Map<string, string | null>();
    let l2 = followStatus([], [{ filespace: 'team', lastError: 'upload of chunk ab failed: 503' }], prev, 10);
    prev = new Map([['team', 'upload of chunk ab failed: 503']]);
    l2 = followStatus(l2, [{ filespace: 'team', lastError: 'upload of chunk ab failed: 503' }], prev, 11);
    assert.deepEqual(
      l2.map((p) => [p.headline, p.count]),
      [['Could not upload changes to the bucket', 1]],
    );
    const action = recordProblem(l2, { message: 'cannot reach s3://b', at: 12, source: 'action', filespace: 'team' });
    const healthy = followStatus(action, [{ filespace: 'team', lastError: null }], prev, 13);
    assert.deepEqual(
      healthy.map((p) => p.source),
      ['action'],
      'the engine problem is gone; a failed action stays until retried or dismissed',
    );
  });
});

describe('settings fields', () => {
  it('counts: in range, whole, never empty', () => {
    assert.deepEqual(parseCount('8', { min: 1, max: 64 }), { ok: true, value: 8 });
    assert.deepEqual(parseCount('0', { min: 1, max: 64 }), { ok: false, error: 'Between 1 and 64' });
    assert.deepEqual(parseCount('65', { min: 1, max: 64 }), { ok: false, error: 'Between 1 and 64' });
    assert.deepEqual(parseCount('', { min: 0, max: 64 }, 'turns read-ahead off'), {
      ok: false,
      error: 'Enter a whole number between 0 and 64 (0 turns read-ahead off)',
    });
    assert.equal(parseCount('2.5', { min: 1, max: 64 }).ok, false);
    assert.deepEqual(parseCount('0', { min: 0, max: 64 }, 'turns read-ahead off'), { ok: true, value: 0 });
  });

  it('sizes and rates in the units shown', () => {
    assert.deepEqual(parseSize('50', 'GiB', 16 * MiB, 100 * GiB), { ok: true, value: 50 * GiB });
    assert.deepEqual(parseSize('1.5', 'GiB', 16 * MiB, 100 * GiB), { ok: true, value: 1.5 * GiB });
    assert.deepEqual(parseSize('8', 'MiB', 16 * MiB, 100 * GiB), { ok: false, error: 'At least 16 MiB' });
    assert.match((parseSize('200', 'GiB', 16 * MiB, 100 * GiB) as { error: string }).error, /^At most 100 GiB/);
    assert.deepEqual(parseRate('256', 'KiB/s'), { ok: true, value: 256 * KiB });
    assert.deepEqual(parseRate('1.5', 'MiB/s'), { ok: true, value: 1.5 * MiB });
    assert.deepEqual(parseRate('4', 'KiB/s'), { ok: false, error: 'At least 16 KiB/s' });
    assert.match((parseRate('', 'KiB/s') as { error: string }).error, /No limit/, 'empty is not silently "no limit"');
    assert.equal(parseRate('abc', 'KiB/s').ok, false);
    assert.deepEqual(parseFolder('cache'), { ok: false, error: 'Enter a full path, starting with /' });
    assert.deepEqual(inUnits(256 * MiB, SIZE_UNITS), { text: '256', unit: 'MiB' });
    assert.deepEqual(inUnits(50 * GiB, SIZE_UNITS), { text: '50', unit: 'GiB' });
  });
});

describe('throughput chart', () => {
  it('scales to the window shown, not to an old peak', () => {
    const now = 20 * 60_000;
    const samples = [
      { t: now - 10 * 60_000, up: 80 * MiB, down: 0 },
      { t: now - 60_000, up: 300 * KiB, down: 20 * KiB },
      { t: now - 1000, up: 280 * KiB, down: 0 },
    ];
    const w = chartWindow(samples, now);
    assert.equal(w.shown.length, 2);
    assert.equal(w.top, 500 * KiB);
    assert.equal(niceCeil(0), KiB);
    assert.equal(niceCeil(1.5 * MiB), 2 * MiB);
    assert.equal(niceCeil(999 * KiB), 1000 * KiB);
  });
});
