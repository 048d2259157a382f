// The keychain adapter against a real Secret Service (gnome-keyring on a private D-Bus session).

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { KeychainError, OsKeychain } from '../../native/keychain';
import { Keyring, startKeyring } from '../helpers/keyring';

describe('OS keychain (gnome-keyring)', () => {
  let keyring: Keyring;
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;

  before(async () => {
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
  });

  after(async () => {
    await keyring.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
  });

  it('stores, reads back, lists and deletes a secret per account', async () => {
    const kc = new OsKeychain(`filespace-test-${process.pid}`);
    assert.equal(await kc.get('aws'), undefined, 'a missing entry reads as undefined');
    await kc.set('aws', 'secret-one');
    await kc.set('passphrase:abc', 'secret-two');
    assert.equal(await kc.get('aws'), 'secret-one');
    assert.deepEqual(await kc.accounts(), ['aws', 'passphrase:abc']);
    await kc.set('aws', 'secret-three');
    assert.equal(await kc.get('aws'), 'secret-three', 'set replaces');
    assert.equal(await kc.delete('aws'), true);
    assert.equal(await kc.delete('aws'), false, 'deleting twice reports nothing was there');
    assert.equal(await kc.get('aws'), undefined);
    assert.deepEqual(await kc.accounts(), ['passphrase:abc']);
  });

  it('keeps services apart', async () => {
    const a = new OsKeychain(`filespace-a-${process.pid}`);
    const b = new OsKeychain(`filespace-b-${process.pid}`);
    await a.set('x', '1');
    assert.equal(await b.get('x'), undefined);
    await a.delete('x');
  });

  it('refuses an empty service name', () => {
    assert.throws(() => new OsKeychain(''), KeychainError);
  });
});
