// Pins down creating and unlocking a filespace: the right passphrase unlocks the keys, bad input gets a coded UserError and changes nothing in the bucket.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UserError } from '../../electron/engine/errors';
import { HEADER_KEY, createFilespace, readHeader, unlockFilespace, validateChunkSize } from '../../electron/engine/filespace';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { ROOT_INO } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';

const PASS = 'correct horse battery';
const CS = 4 * 1024 * 1024;

async function expectUserError(p: Promise<unknown>, code: string, message?: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof UserError, `expected UserError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

/** Every key and body in the store, to show a failed call changed nothing. */
async function contents(store: MemoryStore): Promise<Array<[string, string]>> {
  const out: Array<[string, string]> = [];
  for (const k of await store.list('')) out.push([k, (await store.get(k))!.body.toString('base64')]);
  return out;
}

describe('createFilespace / unlockFilespace', () => {
  it('creates a header and an empty tree; the passphrase unlocks keys that read the tree', async () => {
    const store = new MemoryStore();
    const header = await createFilespace(store, PASS, CS);
    assert.equal(header.chunkSize, CS);
    assert.deepEqual(await readHeader(store), header);
    const headerText = (await store.get(HEADER_KEY))!.body.toString('utf8');
    assert.ok(!headerText.includes(PASS), 'the passphrase is not in the header');

    const { header: h2, keys } = await unlockFilespace(store, PASS);
    assert.deepEqual(h2, header);
    const { tree, seq } = await new RemoteMeta(store, keys.metaKey).load(CS);
    assert.equal(seq, 0);
    assert.equal(tree.get(ROOT_INO)!.kind, 'dir');
    assert.equal(tree.get(ROOT_INO)!.entries!.size, 0);
  });

  it('refuses a wrong passphrase with WRONG_PASSPHRASE', async () => {
    const store = new MemoryStore();
    await createFilespace(store, PASS, CS);
    await expectUserError(unlockFilespace(store, 'correct horse battery!'), 'WRONG_PASSPHRASE', /wrong passphrase/);
    await expectUserError(unlockFilespace(store, ''), 'WRONG_PASSPHRASE');
  });

  it('refuses to create a filespace where one exists, with EXISTS, and changes nothing', async () => {
    const store = new MemoryStore();
    await createFilespace(store, PASS, CS);
    const before = await contents(store);
    await expectUserError(createFilespace(store, 'another passphrase', CS), 'EXISTS', /already exists/);
    assert.deepEqual(await contents(store), before);
    await unlockFilespace(store, PASS);
  });

  it('refuses to create over leftover metadata of another filespace', async () => {
    const store = new MemoryStore();
    await store.put('meta/log/000000000001', Buffer.from('leftover'));
    await expectUserError(createFilespace(store, PASS, CS), 'EXISTS');
    assert.equal(await store.head(HEADER_KEY), undefined);
  });

  it('rejects chunk sizes that are not a power of two between 64KiB and 64MiB, touching nothing', async () => {
    for (const bad of [0, 1000, 32 * 1024, 3 * 1024 * 1024, 128 * 1024 * 1024, -65536, Infinity]) {
      const store = new MemoryStore();
      await expectUserError(createFilespace(store, PASS, bad), 'USER_ERROR', /chunk size/);
      assert.equal(store.puts + store.gets + store.heads + store.lists, 0, `chunk size ${bad}`);
    }
    for (const good of [64 * 1024, 1024 * 1024, 64 * 1024 * 1024]) assert.doesNotThrow(() => validateChunkSize(good));
  });

  it('rejects fractional and NaN chunk sizes before touching the bucket', async () => {
    for (const bad of [65536.5, 131072.25, NaN]) {
      assert.throws(() => validateChunkSize(bad), UserError, `chunk size ${bad}`);
    }
    const store = new MemoryStore();
    await expectUserError(createFilespace(store, PASS, 65536.5), 'USER_ERROR', /chunk size/);
    assert.equal(store.size, 0);
  });

  it('rejects a short passphrase with WEAK_PASSPHRASE', async () => {
    const store = new MemoryStore();
    await expectUserError(createFilespace(store, 'short', CS), 'WEAK_PASSPHRASE');
    assert.equal(store.size, 0);
  });

  it('unlocking where there is no filespace says so with NO_FILESPACE', async () => {
    await expectUserError(unlockFilespace(new MemoryStore(), PASS), 'NO_FILESPACE');
  });

  it('an object at the header key that is not a header is BAD_HEADER', async () => {
    const notJson = new MemoryStore();
    await notJson.put(HEADER_KEY, Buffer.from('<html>'));
    await expectUserError(unlockFilespace(notJson, PASS), 'BAD_HEADER');

    const wrongShape = new MemoryStore();
    await wrongShape.put(HEADER_KEY, Buffer.from(JSON.stringify({ format: 2, chunkSize: CS })));
    await expectUserError(unlockFilespace(wrongShape, PASS), 'BAD_HEADER');
  });

  it('a header whose wrapped key was tampered with reads as a wrong passphrase, never as other keys', async () => {
    const store = new MemoryStore();
    const header = await createFilespace(store, PASS, CS);
    const wrapped = Buffer.from(header.wrappedKey, 'base64');
    wrapped[20] ^= 1;
    await store.put(HEADER_KEY, Buffer.from(JSON.stringify({ ...header, wrappedKey: wrapped.toString('base64') })));
    await expectUserError(unlockFilespace(store, PASS), 'WRONG_PASSPHRASE');
  });
});
