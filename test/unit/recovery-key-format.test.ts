/**
 * The recovery key's form (contract/recoveryKey.ts): 160 random bits in 32 Crockford base32
 * characters, shown in groups of four, read back forgiving case, separators and the letters
 * people confuse with digits; anything else is not a key.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatRecoveryKey, newRecoveryKey, parseRecoveryKey } from '../../electron/contract/recoveryKey';
import { RECOVERY_KEY_RE } from '../../electron/engine/filespace';

describe('recovery key form', () => {
  it('is 32 characters of the engine canonical form, and new every time', () => {
    const keys = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const k = newRecoveryKey();
      assert.match(k, RECOVERY_KEY_RE);
      keys.add(k);
    }
    assert.equal(keys.size, 200);
    // Every character position takes many values (a stuck bit would show as a constant column).
    for (let pos = 0; pos < 32; pos++) assert.ok(new Set([...keys].map((k) => k[pos])).size > 16, `position ${pos}`);
  });

  it('is shown in eight groups of four and read back from what people type', () => {
    const k = newRecoveryKey();
    const shown = formatRecoveryKey(k);
    assert.match(shown, /^([0-9A-Z]{4}-){7}[0-9A-Z]{4}$/);
    assert.equal(parseRecoveryKey(shown), k);
    assert.equal(parseRecoveryKey(` ${shown.toLowerCase().replace(/-/g, ' ')}\n`), k);
    assert.equal(parseRecoveryKey('O1IL'.repeat(8)), '0111'.repeat(8));
  });

  it('refuses what is not a key', () => {
    assert.equal(parseRecoveryKey(''), undefined);
    assert.equal(parseRecoveryKey('ABCD-EFGH'), undefined);
    assert.equal(parseRecoveryKey('U'.repeat(32)), undefined, 'U is not in the alphabet');
    assert.equal(parseRecoveryKey('A'.repeat(33)), undefined);
  });
});
