/**
 * The ObjectStore conformance suite: the semantics every store (S3, local disk, memory) must
 * share, so the engine can be tested on the fast ones and trusted on the real one.
 * Each test gets a fresh, empty store from `make` and releases it with `cleanup`.
 */

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { ObjectStore, StoreError, StoreErrorCode } from '../../electron/engine/store/types';

export interface StoreFixture {
  readonly store: ObjectStore;
  cleanup(): Promise<void>;
}

export interface ConformanceOptions {
  /** How many keys the "list past one page" test writes (S3 pages at 1000). */
  readonly manyKeys?: number;
}

export async function expectStoreError(p: Promise<unknown>, code: StoreErrorCode): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof StoreError, `expected StoreError(${code}), got ${String(err)}`);
    assert.equal(err.code, code, `expected code ${code}, got ${err.code}: ${err.message}`);
    return err;
  }
  assert.fail(`expected StoreError(${code}), but the call succeeded`);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export function runStoreConformance(name: string, make: () => Promise<StoreFixture>, options: ConformanceOptions = {}): void {
  const manyKeys = options.manyKeys ?? 1100;

  const withStore = (fn: (store: ObjectStore) => Promise<void>) => async () => {
    const fx = await make();
    try {
      await fn(fx.store);
    } finally {
      await fx.cleanup();
    }
  };

  describe(`ObjectStore conformance: ${name}`, () => {
    it(
      'round-trips binary content and reports a consistent ETag',
      withStore(async (store) => {
        const body = Buffer.alloc(1024);
        for (let i = 0; i < body.length; i++) body[i] = i % 256;
        const etag = await store.put('data/bin', body);
        assert.equal(typeof etag, 'string');
        assert.ok(etag.length > 0);
        const got = await store.get('data/bin');
        assert.ok(got);
        assert.deepEqual(got.body, body);
        assert.equal(got.etag, etag);
        const head = await store.head('data/bin');
        assert.deepEqual(head, { size: body.length, etag });
      }),
    );

    it(
      "is done with a PUT's body once the PUT resolves: reusing the buffer changes nothing stored",
      withStore(async (store) => {
        const body = randomBytes(256 * 1024);
        const sent = Buffer.from(body);
        await store.put('reused/body', body);
        body.fill(0x5a);
        const got = await store.get('reused/body');
        assert.ok(got?.body.equals(sent));
      }),
    );

    it(
      'stores an empty object',
      withStore(async (store) => {
        const etag = await store.put('empty', Buffer.alloc(0));
        const got = await store.get('empty');
        assert.ok(got);
        assert.equal(got.body.length, 0);
        assert.equal(got.etag, etag);
        assert.deepEqual(await store.head('empty'), { size: 0, etag });
      }),
    );

    it(
      'round-trips a 5 MiB object',
      withStore(async (store) => {
        const body = randomBytes(5 * 1024 * 1024);
        const etag = await store.put('big/object', body);
        const got = await store.get('big/object');
        assert.ok(got);
        assert.equal(got.body.length, body.length);
        assert.ok(got.body.equals(body));
        assert.equal(got.etag, etag);
        assert.equal((await store.head('big/object'))?.size, body.length);
      }),
    );

    it(
      'returns buffers the caller may keep and mutate',
      withStore(async (store) => {
        const body = Buffer.from('original');
        await store.put('k', body);
        body.fill(0);
        const got = await store.get('k');
        assert.equal(got?.body.toString(), 'original');
        got.body.fill(0);
        assert.equal((await store.get('k'))?.body.toString(), 'original');
      }),
    );

    it(
      'resolves a missing key to undefined for get and head',
      withStore(async (store) => {
        assert.equal(await store.get('nope'), undefined);
        assert.equal(await store.get('no/such/key', { start: 0, end: 10 }), undefined);
        assert.equal(await store.head('nope'), undefined);
      }),
    );

    it(
      'gives different content a different ETag and overwrites unconditionally',
      withStore(async (store) => {
        const e1 = await store.put('k', Buffer.from('one'));
        const e2 = await store.put('k', Buffer.from('two'));
        assert.notEqual(e1, e2);
        const got = await store.get('k');
        assert.equal(got?.body.toString(), 'two');
        assert.equal(got?.etag, e2);
      }),
    );

    it(
      'reads byte ranges (end inclusive, clamped to the object)',
      withStore(async (store) => {
        const body = Buffer.from('0123456789abcdef');
        const etag = await store.put('r', body);
        const mid = await store.get('r', { start: 3, end: 7 });
        assert.equal(mid?.body.toString(), '34567');
        assert.equal(mid?.etag, etag);
        assert.equal((await store.get('r', { start: 0, end: 0 }))?.body.toString(), '0');
        assert.equal((await store.get('r', { start: 15, end: 15 }))?.body.toString(), 'f');
        assert.equal((await store.get('r', { start: 10, end: 1000 }))?.body.toString(), 'abcdef');
        const past = await store.get('r', { start: 16, end: 20 });
        assert.ok(past);
        assert.equal(past.body.length, 0);
        assert.equal(past.etag, etag);
      }),
    );

    it(
      'reads a range from the middle of a large object',
      withStore(async (store) => {
        const body = randomBytes(3 * 1024 * 1024 + 17);
        await store.put('big', body);
        const start = 1024 * 1024 + 5;
        const end = 2 * 1024 * 1024 + 100;
        const got = await store.get('big', { start, end });
        assert.ok(got?.body.equals(body.subarray(start, end + 1)));
      }),
    );

    it(
      'ifNoneMatch "*" creates when absent and refuses when present',
      withStore(async (store) => {
        const etag = await store.put('lease', Buffer.from('first'), { ifNoneMatch: '*' });
        await expectStoreError(store.put('lease', Buffer.from('second'), { ifNoneMatch: '*' }), 'PreconditionFailed');
        const got = await store.get('lease');
        assert.equal(got?.body.toString(), 'first');
        assert.equal(got?.etag, etag);
      }),
    );

    it(
      'ifMatch replaces only the expected version',
      withStore(async (store) => {
        const e1 = await store.put('lease', Buffer.from('v1'));
        const e2 = await store.put('lease', Buffer.from('v2'), { ifMatch: e1 });
        assert.notEqual(e2, e1);
        assert.equal((await store.get('lease'))?.body.toString(), 'v2');
        // e1 is stale now.
        await expectStoreError(store.put('lease', Buffer.from('v3'), { ifMatch: e1 }), 'PreconditionFailed');
        const got = await store.get('lease');
        assert.equal(got?.body.toString(), 'v2');
        assert.equal(got?.etag, e2);
        // A made-up ETag fails too.
        await expectStoreError(
          store.put('lease', Buffer.from('v4'), { ifMatch: '0123456789abcdef0123456789abcdef' }),
          'PreconditionFailed',
        );
        assert.equal((await store.get('lease'))?.body.toString(), 'v2');
      }),
    );

    it(
      'ifMatch on a missing key fails and creates nothing',
      withStore(async (store) => {
        await expectStoreError(
          store.put('absent', Buffer.from('x'), { ifMatch: '0123456789abcdef0123456789abcdef' }),
          'PreconditionFailed',
        );
        assert.equal(await store.head('absent'), undefined);
      }),
    );

    it(
      'lets exactly one of 10 concurrent ifNoneMatch creates win',
      withStore(async (store) => {
        const bodies = Array.from({ length: 10 }, (_, i) => Buffer.from(`writer-${i}`));
        const results = await Promise.allSettled(bodies.map((b) => store.put('race/lease', b, { ifNoneMatch: '*' })));
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [{ i, etag: r.value }] : []));
        assert.equal(winners.length, 1, `winners: ${winners.map((w) => w.i).join(',')}`);
        for (const r of results) {
          if (r.status === 'rejected') {
            assert.ok(r.reason instanceof StoreError);
            assert.equal(r.reason.code, 'PreconditionFailed');
          }
        }
        const got = await store.get('race/lease');
        assert.equal(got?.body.toString(), `writer-${winners[0]!.i}`);
        assert.equal(got?.etag, winners[0]!.etag);
      }),
    );

    it(
      'lists keys under a prefix, sorted and relative to the store root',
      withStore(async (store) => {
        const keys = ['meta/log/0003', 'meta/log/0001', 'meta/log/0002', 'meta/logx', 'meta/checkpoint', 'chunks/aa/1', 'top'];
        for (const k of keys) await store.put(k, Buffer.from(k));
        assert.deepEqual(await store.list('meta/log/'), ['meta/log/0001', 'meta/log/0002', 'meta/log/0003']);
        assert.deepEqual(await store.list('meta/lo'), ['meta/log/0001', 'meta/log/0002', 'meta/log/0003', 'meta/logx']);
        assert.deepEqual(await store.list(''), [...keys].sort());
        assert.deepEqual(await store.list('chunks/'), ['chunks/aa/1']);
        assert.deepEqual(await store.list('nothing/'), []);
        assert.deepEqual(await store.list('to'), ['top']);
      }),
    );

    it(
      `lists past one page (${manyKeys} keys) and deletes them in batches`,
      withStore(async (store) => {
        const keys = Array.from({ length: manyKeys }, (_, i) => `many/${String(i).padStart(5, '0')}`);
        await pool(keys, 32, async (k) => {
          await store.put(k, Buffer.from(k));
        });
        await store.put('other/x', Buffer.from('x'));
        const listed = await store.list('many/');
        assert.equal(listed.length, keys.length);
        assert.deepEqual(listed, keys);
        await store.deleteMany(keys);
        assert.deepEqual(await store.list('many/'), []);
        assert.deepEqual(await store.list(''), ['other/x']);
      }),
    );

    it(
      'deletes a key; deleting a missing key is not an error',
      withStore(async (store) => {
        await store.put('dir/a', Buffer.from('a'));
        await store.put('dir/b', Buffer.from('b'));
        await store.delete('dir/a');
        assert.equal(await store.get('dir/a'), undefined);
        assert.equal(await store.head('dir/a'), undefined);
        assert.equal((await store.get('dir/b'))?.body.toString(), 'b');
        await store.delete('dir/a');
        await store.delete('never/existed');
        assert.deepEqual(await store.list(''), ['dir/b']);
      }),
    );

    it(
      'deleteMany removes existing keys, ignores missing ones, leaves the rest',
      withStore(async (store) => {
        for (const k of ['c/1', 'c/2', 'c/3', 'c/sub/4', 'd/5']) await store.put(k, Buffer.from(k));
        await store.deleteMany(['c/1', 'c/2', 'c/missing', 'c/sub/4', 'c/sub/missing', 'c/1']);
        assert.deepEqual(await store.list(''), ['c/3', 'd/5']);
        await store.deleteMany([]);
        await store.deleteMany(['c/3', 'd/5']);
        assert.deepEqual(await store.list(''), []);
      }),
    );

    it(
      'can re-create a key after deleting it',
      withStore(async (store) => {
        await store.put('a/b/c', Buffer.from('1'), { ifNoneMatch: '*' });
        await store.delete('a/b/c');
        await store.put('a/b/c', Buffer.from('2'), { ifNoneMatch: '*' });
        assert.equal((await store.get('a/b/c'))?.body.toString(), '2');
      }),
    );
  });
}
