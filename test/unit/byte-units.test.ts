// One byte-unit convention for the command, the app and the engine's own messages: binary
// units (B, KiB, MiB, GiB, TiB), one decimal below 100. The engine may not import the contract,
// so it keeps its own formatter; this test holds the two to the same text.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatRate } from '../../electron/contract/format';
import { formatSize } from '../../electron/engine/util/sizes';
import { parseSize } from '../../electron/cli/units';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;

describe('byte units', () => {
  it('prints bytes below 1 KiB as bytes and larger sizes in binary units, one decimal under 100', () => {
    const cases: Array<[number, string]> = [
      [0, '0 B'],
      [1, '1 B'],
      [1023, '1023 B'],
      [1024, '1.0 KiB'],
      [1536, '1.5 KiB'],
      [4 * MiB, '4.0 MiB'],
      [99.94 * MiB, '99.9 MiB'],
      [100 * MiB, '100 MiB'],
      [212 * MiB, '212 MiB'],
      [256 * MiB, '256 MiB'],
      [20 * GiB, '20.0 GiB'],
      [3 * TiB, '3.0 TiB'],
      [2048 * TiB, '2048 TiB'],
      [-5, '0 B'],
      [10.4, '10 B'],
    ];
    for (const [n, text] of cases) {
      assert.equal(formatBytes(n), text, `formatBytes(${n})`);
      assert.equal(formatSize(n), text, `formatSize(${n})`);
    }
  });

  it('the engine and the hosts write every size the same way', () => {
    const sizes = [0, 1, 999, 1000, 1023, 1024, 1025, 1_000_000, 212_000_000, 1e9, 20e9, 3.5e12, 5e15];
    for (let p = 0; p <= 50; p++)
      sizes.push(2 ** p - 1, 2 ** p, 2 ** p + 1, Math.round(2 ** p * 1.05), Math.round((2 ** p * 99.96) / 100));
    let seed = 7;
    for (let i = 0; i < 2000; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      sizes.push(Math.floor((seed / 2 ** 31) * 2 ** (i % 48)));
    }
    for (const n of sizes) assert.equal(formatSize(n), formatBytes(n), String(n));
  });

  it('rates are sizes per second', () => {
    assert.equal(formatRate(0), '0 B/s');
    assert.equal(formatRate(64 * KiB), '64.0 KiB/s');
    assert.equal(formatRate(2 * MiB), '2.0 MiB/s');
  });

  it('what is printed for a whole unit reads back, typed without the space, as the same number', () => {
    for (const n of [KiB, 4 * MiB, 20 * GiB, 512 * GiB, 3 * TiB]) assert.equal(parseSize(formatBytes(n).replace(' ', '')), n);
  });
});
