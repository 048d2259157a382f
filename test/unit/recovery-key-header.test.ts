// Pins down the recovery key in the filespace header: it unwraps the same data key as the
// passphrase; it replaces a lost passphrase without touching anything else (the header is
// rewritten only if the bucket still holds the one read, else BUSY and nothing changes); a
// wrong or malformed key, or a header without one, is refused with its code.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { newRecoveryKey } from '../../electron/contract/recoveryKey';
import { UserError } from '../../electron/engine/errors';
import {
  HEADER_KEY,
  createFilespace,
  resetPassphrase,
  unlockFilespace,
  unlockWithRecoveryKey,
} from '../../electron/engine/filespace';
import { MemoryStore } from '../../electron/engine/store/memory';
import type { PutOptions } from '../../electron/engine/store/types';

const PASS = 'correct horse battery';
const NEW = 'quarry violet mango ladder';
const CS = 1024 * 1024;

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

describe('recovery key in the header', () => {
  it('unwraps the same keys as the passphrase and replaces a lost passphrase', async () => {
    const store = new MemoryStore();
    const key = newRecoveryKey();
    await createFilespace(store, PASS, CS, { recoveryKey: key });
    const byPass = await unlockFilespace(store, PASS);
    const byKey = await unlockWithRecoveryKey(store, key);
    assert.deepEqual(byKey.keys, byPass.keys);
    const keysBefore = (await store.list('')).filter((k) => k !== HEADER_KEY);
    await resetPassphrase(store, key, NEW);
    await expectCode(unlockFilespace(store, PASS), 'WRONG_PASSPHRASE');
    assert.deepEqual((await unlockFilespace(store, NEW)).keys, byPass.keys, 'the data key is the same');
    assert.deepEqual((await unlockWithRecoveryKey(store, key)).keys, byPass.keys, 'the recovery key still works');
    assert.deepEqual(
      (await store.list('')).filter((k) => k !== HEADER_KEY),
      keysBefore,
      'nothing but the header changed',
    );
  });

  it('refuses a wrong or malformed key, a weak new passphrase, and a header without a key, changing nothing', async () => {
    const store = new MemoryStore();
    const key = newRecoveryKey();
    await createFilespace(store, PASS, CS, { recoveryKey: key });
    const header = (await store.get(HEADER_KEY))!.body;
    await expectCode(resetPassphrase(store, newRecoveryKey(), NEW), 'WRONG_RECOVERY_KEY');
    await expectCode(resetPassphrase(store, key.toLowerCase(), NEW), 'BAD_RECOVERY_KEY');
    await expectCode(resetPassphrase(store, key, 'short'), 'WEAK_PASSPHRASE');
    await expectCode(createFilespace(new MemoryStore(), PASS, CS, { recoveryKey: 'ABCD' }), 'BAD_RECOVERY_KEY');
    assert.deepEqual((await store.get(HEADER_KEY))!.body, header);
    const plain = new MemoryStore();
    await createFilespace(plain, PASS, CS);
    await expectCode(unlockWithRecoveryKey(plain, key), 'NO_RECOVERY_KEY');
  });

  it('does not overwrite a header that changed since it was read', async () => {
    const store = new MemoryStore();
    const key = newRecoveryKey();
    await createFilespace(store, PASS, CS, { recoveryKey: key });
    // Another computer sets a passphrase between this one's read and its write.
    const put = store.put.bind(store);
    let raced = false;
    store.put = async (k: string, body: Buffer, opts?: PutOptions) => {
      if (k === HEADER_KEY && !raced) {
        raced = true;
        await resetPassphrase(store, key, 'orchid lamp tundra velvet');
      }
      return put(k, body, opts);
    };
    await expectCode(resetPassphrase(store, key, NEW), 'BUSY');
    store.put = put;
    await unlockFilespace(store, 'orchid lamp tundra velvet');
    await expectCode(unlockFilespace(store, NEW), 'WRONG_PASSPHRASE');
  });
});
