// Pins down how the command reads sizes, rates and durations a person typed: binary units, rounding, and error messages that quote the bad input and show the expected form.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseDuration, parseRate, parseSize } from '../../electron/cli/units';

describe('parseSize', () => {
  it('reads plain byte counts and binary units in any case, with optional spaces', () => {
    const cases: Array<[string, number]> = [
      ['0', 0],
      ['1073741824', 1073741824],
      ['512b', 512],
      ['512B', 512],
      ['4k', 4096],
      ['4K', 4096],
      ['4KB', 4096],
      ['4KiB', 4096],
      ['4 kib', 4096],
      ['4MiB', 4 * 1024 ** 2],
      ['20G', 20 * 1024 ** 3],
      ['20GiB', 20 * 1024 ** 3],
      ['20 gb', 20 * 1024 ** 3],
      ['1T', 1024 ** 4],
      [' 2 MiB ', 2 * 1024 ** 2],
      ['1.5k', 1536],
      ['0.5MiB', 512 * 1024],
    ];
    for (const [text, bytes] of cases) assert.equal(parseSize(text), bytes, text);
  });

  it('rounds fractional bytes to a whole number', () => {
    assert.equal(parseSize('1.3'), 1);
    assert.equal(parseSize('0.001k'), 1);
    assert.ok(Number.isInteger(parseSize('1.1GiB')));
  });

  it('rejects what is not a size, quoting it and showing the expected form', () => {
    for (const bad of ['', ' ', 'abc', '-1', '-4MiB', '4 MiBs', '4PiB', '1e9', '0x10', '4 M B', 'MiB', '1,5k', '.5k']) {
      assert.throws(
        () => parseSize(bad),
        (err: Error) => {
          assert.ok(err.message.includes(`"${bad}"`), err.message);
          assert.match(err.message, /not a size.*e\.g\. 512MiB/);
          return true;
        },
        `"${bad}"`,
      );
    }
  });

  it('rejects sizes too large to count exactly', () => {
    assert.throws(() => parseSize('99999999T'), /"99999999T" is too large/);
    assert.equal(parseSize('8191T'), 8191 * 1024 ** 4);
  });
});

describe('parseDuration', () => {
  it('reads ms, s, m, h, with seconds as the default unit', () => {
    const cases: Array<[string, number]> = [
      ['0', 0],
      ['250ms', 250],
      ['2s', 2000],
      ['2', 2000],
      ['1.5s', 1500],
      ['10m', 600_000],
      ['1h', 3_600_000],
      [' 30 s ', 30_000],
      ['0.5h', 1_800_000],
    ];
    for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
  });

  it('rejects what is not a duration, quoting it and showing the expected form', () => {
    for (const bad of ['', 'soon', '-1s', '1d', '10 min', '1S', 'ms', '1h30m']) {
      assert.throws(
        () => parseDuration(bad),
        (err: Error) => {
          assert.ok(err.message.includes(`"${bad}"`), err.message);
          assert.match(err.message, /not a duration.*e\.g\. 30s/);
          return true;
        },
        `"${bad}"`,
      );
    }
  });
});

describe('parseRate', () => {
  it('reads bytes per second with an optional unit and /s, and off', () => {
    const cases: Array<[string, number]> = [
      ['off', 0],
      ['OFF', 0],
      ['none', 0],
      ['0', 0],
      ['512KiB', 512 * 1024],
      ['2MiB/s', 2 * 1024 ** 2],
      ['2 MiB / s', 2 * 1024 ** 2],
      ['100k/sec', 102400],
      ['65536', 65536],
    ];
    for (const [text, bps] of cases) assert.equal(parseRate(text), bps, text);
  });

  it('rejects what is not a rate, quoting it', () => {
    for (const bad of ['', 'fast', '-1', '2MiB/h', '/s', 'off/s']) {
      assert.throws(
        () => parseRate(bad),
        (err: Error) => {
          assert.ok(
            err.message.includes(`"${bad}"`) && /not a rate.*e\.g\. 512KiB, 2MiB\/s, or off/.test(err.message),
            err.message,
          );
          return true;
        },
        `"${bad}"`,
      );
    }
  });
});
