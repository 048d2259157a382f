// Pins down creating and unlocking a filespace: the right passphrase unlocks the keys, bad input gets a coded UserError and changes nothing in the bucket; the header's fields are sealed, so a change to them is refused naming the field; a header written before the seal existed is accepted (its chunk size still checked against the metadata) and sealed by the next writer; metadata of another filespace is refused as such.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UserError } from '../../electron/engine/errors';
import {
  FilespaceHeader,
  HEADER_KEY,
  FORMAT_NEWEST,
  createFilespace,
  raiseHeaderFormat,
  readHeader,
  sealLegacyHeader,
  unlockFilespace,
  validateChunkSize,
} from '../../electron/engine/filespace';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { ROOT_INO, Tree } from '../../electron/engine/meta/tree';
import { MemoryStore } from '../../electron/engine/store/memory';
import { GetResult } from '../../electron/engine/store/types';

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

  it('rejects chunk sizes that are not a power of two between 64 KiB and 64 MiB, touching nothing', async () => {
    for (const bad of [0, 1000, 32 * 1024, 3 * 1024 * 1024, 128 * 1024 * 1024, -65536, Infinity]) {
      const store = new MemoryStore();
      await expectUserError(createFilespace(store, PASS, bad), 'BAD_CHUNK_SIZE', /chunk size/);
      assert.equal(store.puts + store.gets + store.heads + store.lists, 0, `chunk size ${bad}`);
    }
    for (const good of [64 * 1024, 1024 * 1024, 64 * 1024 * 1024]) assert.doesNotThrow(() => validateChunkSize(good));
  });

  it('rejects fractional and NaN chunk sizes before touching the bucket', async () => {
    for (const bad of [65536.5, 131072.25, NaN]) {
      assert.throws(() => validateChunkSize(bad), UserError, `chunk size ${bad}`);
    }
    const store = new MemoryStore();
    await expectUserError(createFilespace(store, PASS, 65536.5), 'BAD_CHUNK_SIZE', /chunk size/);
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
    wrapped[20]! ^= 1;
    await store.put(HEADER_KEY, Buffer.from(JSON.stringify({ ...header, wrappedKey: wrapped.toString('base64') })));
    await expectUserError(unlockFilespace(store, PASS), 'WRONG_PASSPHRASE');
  });
});

/** The header as it stands in the bucket. */
async function headerIn(store: MemoryStore): Promise<FilespaceHeader> {
  return JSON.parse((await store.get(HEADER_KEY))!.body.toString('utf8')) as FilespaceHeader;
}

async function putHeader(store: MemoryStore, header: unknown): Promise<void> {
  await store.put(HEADER_KEY, Buffer.from(JSON.stringify(header)));
}

/** A filespace as the code before the seal wrote it: a header without a seal, checkpoints that name nothing. */
async function legacyFilespace(chunkSize = CS): Promise<{ store: MemoryStore; header: FilespaceHeader }> {
  const store = new MemoryStore();
  const created = await createFilespace(store, PASS, chunkSize);
  const { keys } = await unlockFilespace(store, PASS);
  const { seal: _seal, ...legacy } = created;
  await putHeader(store, legacy);
  // Checkpoint 0 as it was written before checkpoints named their filespace.
  const ckpt = (await store.list('meta/ckpt/'))[0]!;
  await store.delete(ckpt);
  await new RemoteMeta(store, keys.metaKey).writeCheckpoint(0, Tree.create(chunkSize, 0, 0, 1).snapshot());
  return { store, header: legacy };
}

describe('the header seal', () => {
  it('a new header carries a seal, and any layout of the same fields unlocks', async () => {
    const store = new MemoryStore();
    const header = await createFilespace(store, PASS, CS);
    assert.equal(typeof header.seal, 'string');
    // Key order and whitespace are not what is sealed: the fields are.
    const reordered = Object.fromEntries(Object.entries(header).reverse());
    await store.put(HEADER_KEY, Buffer.from(JSON.stringify(reordered)));
    const { header: h2 } = await unlockFilespace(store, PASS);
    assert.deepEqual(h2, header);
  });

  it('a changed chunk size or creation time is refused with HEADER_TAMPERED naming the field, and nothing changes', async () => {
    for (const [field, value, message] of [
      [
        'chunkSize',
        64 * 1024,
        /filespace\.json was changed by someone without the passphrase: its chunk size is 64\.0 KiB, sealed as 4\.0 MiB/,
      ],
      ['chunkSize', 8 * 1024 * 1024, /its chunk size is 8\.0 MiB, sealed as 4\.0 MiB/],
      ['createdAt', '2001-01-01T00:00:00.000Z', /its creation time is "2001-01-01T00:00:00\.000Z", sealed as "20/],
    ] as const) {
      const store = new MemoryStore();
      const header = await createFilespace(store, PASS, CS);
      await putHeader(store, { ...header, [field]: value });
      const before = await contents(store);
      await expectUserError(unlockFilespace(store, PASS), 'HEADER_TAMPERED', message);
      assert.deepEqual(await contents(store), before, `${field}: nothing in the bucket changed`);
      await assert.rejects(
        unlockFilespace(store, PASS),
        (err: unknown) => !String((err as Error).message).includes('\n'),
        'one line',
      );
    }
  });

  it("a seal that does not open (damaged, or another filespace's) is refused with HEADER_TAMPERED", async () => {
    const store = new MemoryStore();
    const header = await createFilespace(store, PASS, CS);
    const other = await createFilespace(new MemoryStore(), PASS, CS);
    const flipped = Buffer.from(header.seal!, 'base64');
    flipped[flipped.length - 1]! ^= 1;
    for (const seal of [flipped.toString('base64'), other.seal!, '', 'not base64 at all']) {
      await putHeader(store, { ...header, seal });
      await expectUserError(
        unlockFilespace(store, PASS),
        'HEADER_TAMPERED',
        /its seal does not open with the key of this filespace/,
      );
    }
  });

  it('a changed id or KDF parameters read as a wrong passphrase (the wrapped key is bound to them)', async () => {
    const store = new MemoryStore();
    const header = await createFilespace(store, PASS, CS);
    await putHeader(store, { ...header, id: '00000000-0000-4000-8000-000000000000' });
    await expectUserError(unlockFilespace(store, PASS), 'WRONG_PASSPHRASE');
    await putHeader(store, { ...header, kdf: { ...header.kdf, N: header.kdf.N / 2 } });
    await expectUserError(unlockFilespace(store, PASS), 'WRONG_PASSPHRASE');
  });

  it('a header without a seal (written before it existed) unlocks, and sealLegacyHeader seals it so a later change is refused', async () => {
    const { store, header } = await legacyFilespace();
    const { header: unlocked, keys } = await unlockFilespace(store, PASS);
    assert.deepEqual(unlocked, header);
    assert.equal(unlocked.seal, undefined);
    assert.equal(await sealLegacyHeader(store, unlocked, keys), true);
    const sealed = await headerIn(store);
    assert.equal(typeof sealed.seal, 'string');
    assert.deepEqual({ ...sealed, seal: undefined }, { ...header, seal: undefined }, 'only the seal was added');
    assert.deepEqual((await unlockFilespace(store, PASS)).header, sealed);
    assert.equal(await sealLegacyHeader(store, sealed, keys), false, 'a sealed header is left alone');
    await putHeader(store, { ...sealed, chunkSize: 2 * CS });
    await expectUserError(unlockFilespace(store, PASS), 'HEADER_TAMPERED', /chunk size/);
  });

  it('sealLegacyHeader leaves a header alone that changed since it was unlocked, also between its read and its write', async () => {
    const { store } = await legacyFilespace();
    const { header, keys } = await unlockFilespace(store, PASS);
    const changed = { ...header, createdAt: 'later' };
    await putHeader(store, changed);
    assert.equal(await sealLegacyHeader(store, header, keys), false);
    assert.deepEqual(await headerIn(store), changed);

    // Changed by someone else after sealLegacyHeader read it: the conditional write fails.
    await putHeader(store, header);
    const racy = Object.assign(store, {
      async get(this: MemoryStore, key: string): Promise<GetResult | undefined> {
        const got = await MemoryStore.prototype.get.call(this, key);
        if (key === HEADER_KEY) await MemoryStore.prototype.put.call(this, HEADER_KEY, Buffer.from(JSON.stringify(changed)));
        return got;
      },
    });
    assert.equal(await sealLegacyHeader(racy, header, keys), false);
    assert.deepEqual(JSON.parse((await MemoryStore.prototype.get.call(store, HEADER_KEY))!.body.toString('utf8')), changed);
  });

  it('an unsealed header with a changed chunk size is refused when the metadata is loaded, naming the chunk size', async () => {
    // A header sealed at creation, with its seal stripped: the checkpoints name the real chunk size.
    const store = new MemoryStore();
    const created = await createFilespace(store, PASS, CS);
    const { seal: _seal, ...stripped } = created;
    await putHeader(store, { ...stripped, chunkSize: CS / 2 });
    const { header, keys } = await unlockFilespace(store, PASS);
    await expectUserError(
      new RemoteMeta(store, keys.metaKey, header).load(header.chunkSize),
      'HEADER_MISMATCH',
      /filespace\.json gives a chunk size of 2\.0 MiB, but the filespace was written with 4\.0 MiB chunks/,
    );
    // Checkpoints written before they named their filespace cannot tell: accepted (the seal is what protects these).
    const legacy = await legacyFilespace();
    const { keys: lk } = await unlockFilespace(legacy.store, PASS);
    await new RemoteMeta(legacy.store, lk.metaKey, { ...legacy.header, chunkSize: CS / 2 }).load(CS / 2);
  });

  it('before a writer seals an old header, bindNewestCheckpoint makes the newest checkpoint name the chunk size', async () => {
    const { store, header } = await legacyFilespace();
    const { keys } = await unlockFilespace(store, PASS);
    const tampered = { ...header, chunkSize: CS / 2 };
    // Unbound: a changed chunk size in an unsealed header cannot be told at load (the gap the seal closes).
    await new RemoteMeta(store, keys.metaKey, tampered).load(CS / 2);
    const before = await store.list('meta/ckpt/');
    assert.equal(await new RemoteMeta(store, keys.metaKey, header).bindNewestCheckpoint(), true);
    assert.deepEqual(await store.list('meta/ckpt/'), before, 'the same checkpoint, rewritten');
    const { tree, seq } = await new RemoteMeta(store, keys.metaKey, header).load(CS);
    assert.equal(seq, 0);
    assert.equal(tree.get(ROOT_INO)!.kind, 'dir');
    await expectUserError(
      new RemoteMeta(store, keys.metaKey, tampered).load(CS / 2),
      'HEADER_MISMATCH',
      /chunk size of 2\.0 MiB/,
    );
    assert.equal(await new RemoteMeta(store, keys.metaKey, header).bindNewestCheckpoint(), true, 'already bound: nothing to do');
  });

  it('the header of another filespace with the same passphrase unlocks, but its keys open no metadata: METADATA_KEYS_MISMATCH', async () => {
    const store = new MemoryStore();
    await createFilespace(store, PASS, CS);
    const other = new MemoryStore();
    await createFilespace(other, PASS, CS);
    await store.put(HEADER_KEY, (await other.get(HEADER_KEY))!.body);
    const { header, keys } = await unlockFilespace(store, PASS);
    await expectUserError(
      new RemoteMeta(store, keys.metaKey, header).load(header.chunkSize),
      'METADATA_KEYS_MISMATCH',
      /none of the 1 metadata checkpoint\(s\) in .* opens with the keys of its filespace\.json: that header belongs to another filespace/,
    );
  });

  it('the format: created at 1, raised to 2 (resealed, conditional), and a newer one is refused in one line, changing nothing', async () => {
    const store = new MemoryStore();
    const created = await createFilespace(store, PASS, CS);
    assert.equal(created.format, 1, 'a new filespace is readable by versions that know no links');
    const { header, keys } = await unlockFilespace(store, PASS);
    const raised = await raiseHeaderFormat(store, header, keys, 2);
    assert.equal(raised.format, 2);
    assert.deepEqual(await headerIn(store), raised);
    assert.deepEqual({ ...raised, format: 1, seal: undefined }, { ...created, seal: undefined }, 'only the format changed');
    assert.equal((await unlockFilespace(store, PASS)).header.format, 2, 'format 2 unlocks, its format under the seal');
    await putHeader(store, { ...raised, format: 1 });
    await expectUserError(unlockFilespace(store, PASS), 'HEADER_TAMPERED', /format version is 1, sealed as 2/);
    await putHeader(store, raised);
    assert.equal((await raiseHeaderFormat(store, header, keys, 2)).format, 2, 'raising again changes nothing');

    // A version that knows formats up to FORMAT_NEWEST refuses a newer one, naming it.
    const newer = { ...raised, format: FORMAT_NEWEST + 1 };
    await putHeader(store, newer);
    const before = await contents(store);
    await expectUserError(
      unlockFilespace(store, PASS),
      'NEWER_VERSION',
      new RegExp(
        `is of format ${FORMAT_NEWEST + 1}, written by a newer version of Filespace \\(this one reads formats up to ${FORMAT_NEWEST}\\)`,
      ),
    );
    assert.deepEqual(await contents(store), before);
    await putHeader(store, { ...raised, format: 0 });
    await expectUserError(unlockFilespace(store, PASS), 'BAD_HEADER');
  });

  it('raising the format of a header without a seal keeps it without one (the writer seals it later)', async () => {
    const { store, header } = await legacyFilespace();
    const { keys } = await unlockFilespace(store, PASS);
    const raised = await raiseHeaderFormat(store, header, keys, 2);
    assert.equal(raised.seal, undefined);
    assert.deepEqual(raised, { ...header, format: 2 });
    assert.equal(await sealLegacyHeader(store, raised, keys), true);
    assert.equal((await unlockFilespace(store, PASS)).header.format, 2);
  });
});
