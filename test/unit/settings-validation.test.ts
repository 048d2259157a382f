// Pins down engine settings: defaults are valid, partial settings merge over them, and nonsense is rejected with a message naming the setting.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { settingFromKey } from '../../electron/cli/settingKeys';
import { DEFAULT_SETTINGS, EngineSettings, resolveSettings, settingsForChunkSize } from '../../electron/engine/config';
import { UserError } from '../../electron/engine/errors';
import { chunksInBudget } from '../../electron/engine/util/chunkBudget';

function rejects(partial: Partial<EngineSettings>, pattern: RegExp): void {
  assert.throws(
    () => resolveSettings(partial),
    (err: Error) => {
      assert.match(err.message, pattern);
      assert.match(err.message, /^invalid setting/);
      return true;
    },
    JSON.stringify(partial),
  );
}

describe('resolveSettings', () => {
  it('returns the defaults for an empty object, and the defaults are self-consistent', () => {
    assert.deepEqual(resolveSettings({}), DEFAULT_SETTINGS);
    assert.ok(DEFAULT_SETTINGS.cacheLowWatermark < DEFAULT_SETTINGS.cacheHighWatermark);
  });

  it('merges a partial over the defaults without changing the defaults', () => {
    const s = resolveSettings({ cacheCapBytes: 1024 ** 3, uploadDelayMs: 0, xattrs: false });
    assert.equal(s.cacheCapBytes, 1024 ** 3);
    assert.equal(s.uploadDelayMs, 0);
    assert.equal(s.xattrs, false);
    assert.equal(s.uploadConcurrency, DEFAULT_SETTINGS.uploadConcurrency);
    assert.equal(DEFAULT_SETTINGS.xattrs, true);
  });

  it('accepts the boundaries', () => {
    resolveSettings({ cacheCapBytes: 16 * 1024 * 1024 });
    resolveSettings({ uploadConcurrency: 1, downloadConcurrency: 64, prefetchMaxChunks: 0, readTimeoutMs: 100 });
    resolveSettings({ cacheHighWatermark: 1, cacheLowWatermark: 0.01 });
  });

  it('rejects a cache below 16 MiB, naming the setting', () => {
    rejects({ cacheCapBytes: 16 * 1024 * 1024 - 1 }, /cacheCapBytes: cache size must be at least 16 MiB/);
    rejects({ cacheCapBytes: 0 }, /cacheCapBytes/);
  });

  it('rejects a low watermark at or above the high one', () => {
    rejects({ cacheLowWatermark: 0.9, cacheHighWatermark: 0.9 }, /cacheLowWatermark must be below cacheHighWatermark/);
    rejects({ cacheLowWatermark: 0.95, cacheHighWatermark: 0.5 }, /cacheLowWatermark must be below cacheHighWatermark/);
  });

  it('rejects watermarks outside (0, 1]', () => {
    rejects({ cacheHighWatermark: 1.5 }, /cacheHighWatermark/);
    rejects({ cacheLowWatermark: 0 }, /cacheLowWatermark/);
    rejects({ cacheLowWatermark: -0.1 }, /cacheLowWatermark/);
  });

  it('rejects out-of-range, fractional and non-numeric values, naming each setting', () => {
    const cases: Array<[Partial<EngineSettings>, string]> = [
      [{ uploadConcurrency: 0 }, 'uploadConcurrency'],
      [{ uploadConcurrency: 65 }, 'uploadConcurrency'],
      [{ downloadConcurrency: 2.5 }, 'downloadConcurrency'],
      [{ prefetchMaxChunks: -1 }, 'prefetchMaxChunks'],
      [{ readTimeoutMs: 99 }, 'readTimeoutMs'],
      [{ uploadDelayMs: -1 }, 'uploadDelayMs'],
      [{ uploadDelayMs: 3_600_001 }, 'uploadDelayMs'],
      [{ maxDirtyAgeMs: 86_400_001 }, 'maxDirtyAgeMs'],
      [{ metaPushDelayMs: 600_001 }, 'metaPushDelayMs'],
      [{ attrTimeoutSec: -1 }, 'attrTimeoutSec'],
      [{ negativeTimeoutSec: 3601 }, 'negativeTimeoutSec'],
      [{ cacheCapBytes: Number.NaN }, 'cacheCapBytes'],
      [{ cacheCapBytes: Number.POSITIVE_INFINITY }, 'cacheCapBytes'],
      [{ cacheCapBytes: '20GiB' as unknown as number }, 'cacheCapBytes'],
      [{ xattrs: 'yes' as unknown as boolean }, 'xattrs'],
      [{ writeStallTimeoutMs: -1 }, 'writeStallTimeoutMs'],
      [{ writeStallTimeoutMs: 3_600_001 }, 'writeStallTimeoutMs'],
      [{ probeTimeoutMs: 60_001 }, 'probeTimeoutMs'],
    ];
    for (const [partial, key] of cases) rejects(partial, new RegExp(`invalid setting ${key}:`));
    rejects({ probeTimeoutMs: 199 }, /probeTimeoutMs: the probe timeout must be at least 200ms/);
  });

  it("refuses with a UserError coded BAD_SETTING, so every host reports it as the user's mistake", () => {
    assert.throws(
      () => resolveSettings({ uploadConcurrency: 0 }),
      (err: UserError) => err instanceof UserError && err.code === 'BAD_SETTING',
    );
  });

  it('the command reads what a person typed into typed settings; nothing else reads text', () => {
    assert.deepEqual(settingFromKey('cache-size', '50GiB'), { cacheCapBytes: 50 * 1024 ** 3 });
    assert.deepEqual(settingFromKey('upload-limit', 'off'), { uploadLimitBytesPerSec: 0 });
    assert.deepEqual(settingFromKey('upload-concurrency', '4'), { uploadConcurrency: 4 });
    assert.throws(
      () => settingFromKey('upload-concurrency', '4.5'),
      (err: UserError) => err.code === 'BAD_SETTING' && /"4\.5" is not a whole number/.test(err.message),
    );
    assert.throws(
      () => settingFromKey('colour', 'blue'),
      (err: UserError) => err.code === 'BAD_SETTING' && /unknown setting "colour"; settable: cache-size, /.test(err.message),
    );
    assert.throws(() => settingFromKey('__proto__', '1'), /unknown setting "__proto__"/);
  });

  it('the write-stall and probe timeouts: 30 s and 3 s by default, settable as durations', () => {
    assert.equal(DEFAULT_SETTINGS.writeStallTimeoutMs, 30_000);
    assert.equal(DEFAULT_SETTINGS.probeTimeoutMs, 3_000);
    assert.deepEqual(settingFromKey('write-stall-timeout', '45s'), { writeStallTimeoutMs: 45_000 });
    assert.deepEqual(settingFromKey('write-stall-timeout', '0s'), { writeStallTimeoutMs: 0 });
    assert.deepEqual(settingFromKey('probe-timeout', '1500ms'), { probeTimeoutMs: 1_500 });
    assert.throws(() => settingFromKey('probe-timeout', 'soon'), /"soon" is not a duration/);
    resolveSettings({ writeStallTimeoutMs: 0, probeTimeoutMs: 200 });
  });
});

describe('settings as they apply to a chunk size (counts of chunk-sized buffers are budgets in bytes)', () => {
  const MiB = 1024 * 1024;

  it('keeps every count for the default chunk size and smaller ones', () => {
    for (const cs of [64 * 1024, 1 * MiB, 4 * MiB])
      assert.deepEqual(settingsForChunkSize(DEFAULT_SETTINGS, cs), DEFAULT_SETTINGS, `${cs}`);
  });

  it('scales downloads, uploads and read-ahead down for larger chunks, keeping the bytes and a floor', () => {
    const s16 = settingsForChunkSize(DEFAULT_SETTINGS, 16 * MiB);
    assert.equal(s16.downloadConcurrency, 2, '8 x 4 MiB = 2 x 16 MiB');
    assert.equal(s16.uploadConcurrency, 2);
    assert.equal(s16.prefetchMaxChunks, 2, 'what the 48 MiB kept for readers holds beside the chunk read');
    const s64 = settingsForChunkSize(DEFAULT_SETTINGS, 64 * MiB);
    assert.equal(s64.downloadConcurrency, 2, 'never under 2 requests at once');
    assert.equal(s64.uploadConcurrency, 2);
    assert.equal(s64.prefetchMaxChunks, 1);
    // Nothing else changes, and the settings given are left alone.
    assert.deepEqual({ ...s16, downloadConcurrency: 8, uploadConcurrency: 8, prefetchMaxChunks: 8 }, DEFAULT_SETTINGS);
    assert.equal(DEFAULT_SETTINGS.downloadConcurrency, 8);
  });

  it('never raises a count a machine set lower, and keeps a read-ahead turned off off', () => {
    const s = resolveSettings({ downloadConcurrency: 1, uploadConcurrency: 3, prefetchMaxChunks: 0 });
    const applied = settingsForChunkSize(s, 32 * MiB);
    assert.equal(applied.downloadConcurrency, 1);
    assert.equal(applied.uploadConcurrency, 2);
    assert.equal(applied.prefetchMaxChunks, 0);
    assert.equal(chunksInBudget(3, 8 * MiB), 1);
    assert.equal(chunksInBudget(3, 2 * MiB), 3);
    assert.equal(chunksInBudget(20, 8 * MiB, 2), 10);
  });
});
