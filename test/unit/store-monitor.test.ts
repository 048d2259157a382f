// Pins down how the engine decides that the bucket is offline and back (store/monitored.ts):
// no answer (refused, reset, or a request and a probe both unanswered) is offline; any answer,
// even an error, is online; while offline it probes; when the bucket answers again, requests
// sent meanwhile are cut off with a retryable error and listeners hear about it once.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MonitoredStore } from '../../electron/engine/store/monitored';
import { CallOptions, GetResult, HeadResult, ObjectStore, PutOptions, StoreError } from '../../electron/engine/store/types';

type Mode = 'answer' | 'refuse' | 'hang' | 'error' | 'hold';

/** A bucket whose behaviour the test switches: answers, refuses connections, hangs, or answers with an error. */
class Bucket implements ObjectStore {
  readonly description = 'test:';
  mode: Mode = 'answer';
  /** GETs alone may hang while everything else answers (a slow transfer). */
  getMode: Mode | undefined;
  heads = 0;
  gets = 0;
  /** The key and range of the latest GET. */
  lastGet: { key: string; range: unknown } | undefined;
  /** Requests made in 'hold' mode, answered when the test says. */
  readonly held: Array<() => void> = [];

  private respond<T>(mode: Mode, value: T, signal?: AbortSignal): Promise<T> {
    switch (mode) {
      case 'answer':
        return Promise.resolve(value);
      case 'refuse':
        return Promise.reject(new StoreError('Unreachable', 'cannot reach the S3 endpoint (ECONNREFUSED)'));
      case 'error':
        return Promise.reject(new StoreError('AccessDenied', 'access denied'));
      case 'hold':
        return new Promise<T>((resolve) => this.held.push(() => resolve(value)));
      case 'hang':
        return new Promise<T>((_, reject) => {
          signal?.addEventListener('abort', () => reject(new StoreError('Timeout', 'the S3 request was abandoned')));
        });
    }
  }

  get(key: string, range?: unknown, call?: CallOptions): Promise<GetResult | undefined> {
    this.gets++;
    this.lastGet = { key, range };
    return this.respond(this.getMode ?? this.mode, { body: Buffer.from('x'), etag: 'e' }, call?.signal);
  }

  head(_key: string, call?: CallOptions): Promise<HeadResult | undefined> {
    this.heads++;
    return this.respond(this.mode, { size: 1, etag: 'e' }, call?.signal);
  }

  put(_key: string, _body: Buffer, options?: PutOptions): Promise<string> {
    return this.respond(this.mode, 'e', options?.signal);
  }

  async delete(): Promise<void> {}
  async deleteMany(): Promise<void> {}
  async list(): Promise<string[]> {
    return [];
  }
  async close(): Promise<void> {}
}

const PROBE_MS = 150;

function monitored(bucket: Bucket): { store: MonitoredStore; changes: boolean[] } {
  const store = new MonitoredStore(bucket, { probeKey: 'filespace.json', probeTimeoutMs: () => PROBE_MS, probeIntervalMs: 100 });
  const changes: boolean[] = [];
  store.onChange = (online) => changes.push(online);
  return { store, changes };
}

/** Waits (at most `ms`) until `cond` holds, waking at every online/offline change. */
async function until(store: MonitoredStore, cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    assert.ok(Date.now() < deadline, 'condition not reached in time');
    await store.changed.wait(Math.min(100, deadline - Date.now()));
  }
}

describe('MonitoredStore: is the bucket answering?', () => {
  it('a refused connection is offline at once, and the first answer to a probe brings it back', async () => {
    const bucket = new Bucket();
    const { store, changes } = monitored(bucket);
    bucket.mode = 'refuse';
    await assert.rejects(store.get('k'), (err) => err instanceof StoreError && err.code === 'Unreachable');
    assert.equal(store.offline, true);
    assert.ok(store.offlineSince !== undefined && store.offlineSince <= Date.now());
    assert.equal(store.reconnects, 0);
    bucket.mode = 'answer';
    await until(store, () => !store.offline); // nothing else asks: the probe finds out
    assert.ok(bucket.heads >= 1, 'probed while offline');
    assert.equal(store.offlineSince, undefined);
    assert.equal(store.reconnects, 1);
    assert.deepEqual(changes, [false, true]);
    await store.close();
  });

  it('a server that accepts requests but never answers is offline once a probe goes unanswered too', async () => {
    const bucket = new Bucket();
    const { store, changes } = monitored(bucket);
    bucket.mode = 'hang';
    const hung = store.put('chunks/a', Buffer.from('data'));
    hung.catch(() => undefined);
    await until(store, () => store.offline);
    assert.ok(bucket.heads >= 1, 'a probe decided it');
    // The server answers again: the request sent meanwhile is cut off (it sits on a dead
    // connection) with a retryable error, and that does not make it offline again.
    bucket.mode = 'answer';
    await until(store, () => !store.offline);
    await assert.rejects(hung, (err) => err instanceof StoreError && err.retryable && /cut off/.test(err.message));
    assert.equal(store.offline, false);
    assert.deepEqual(changes, [false, true]);
    assert.equal(await store.put('chunks/a', Buffer.from('data')), 'e', 'new requests go through');
    await store.close();
  });

  it('a slow request is not offline while the probe is answered', async () => {
    const bucket = new Bucket();
    const { store, changes } = monitored(bucket);
    bucket.getMode = 'hang';
    const ac = new AbortController();
    const slow = store.get('chunks/big', undefined, { signal: ac.signal });
    slow.catch(() => undefined);
    // Three probe timeouts with only the probe answering.
    const probesBefore = bucket.heads;
    while (bucket.heads < probesBefore + 3) await new Promise((r) => setTimeout(r, PROBE_MS));
    assert.equal(store.offline, false);
    ac.abort(); // the caller gives up: no verdict either way
    await assert.rejects(slow);
    assert.equal(store.offline, false);
    assert.deepEqual(changes, []);
    await store.close();
  });

  it('an answer that is an error still means the bucket answers', async () => {
    const bucket = new Bucket();
    const { store } = monitored(bucket);
    bucket.mode = 'refuse';
    await assert.rejects(store.head('k'));
    assert.equal(store.offline, true);
    bucket.mode = 'error';
    await assert.rejects(store.head('k'), (err) => err instanceof StoreError && err.code === 'AccessDenied');
    assert.equal(store.offline, false);
    await store.close();
  });
});

describe('MonitoredStore: false alarms', () => {
  it('a slow probe is no verdict when something else answered meanwhile', async () => {
    const bucket = new Bucket();
    const { store, changes } = monitored(bucket);
    // A download and the probe hang; another request is answered while the probe waits.
    bucket.getMode = 'hang';
    bucket.mode = 'hang';
    const slow = store.get('chunks/big', undefined, {});
    slow.catch(() => undefined);
    while (bucket.heads === 0) await new Promise((r) => setTimeout(r, 20));
    bucket.mode = 'answer';
    await store.put('meta/log/1', Buffer.from('x'));
    await new Promise((r) => setTimeout(r, PROBE_MS * 2)); // the probe's deadline passes
    assert.equal(store.offline, false);
    assert.deepEqual(changes, []);
    await store.close();
  });

  it('when a request older than the outage is answered, its connections are alive: nothing is cut off', async () => {
    const bucket = new Bucket();
    // No probes in this test: only requests decide.
    const store = new MonitoredStore(bucket, {
      probeKey: 'filespace.json',
      probeTimeoutMs: () => 60_000,
      probeIntervalMs: 60_000,
    });
    bucket.mode = 'hang';
    const alsoOlder = store.put('chunks/b', Buffer.from('x'));
    alsoOlder.catch(() => undefined);
    await new Promise((r) => setTimeout(r, 5)); // sent strictly before the next one
    bucket.mode = 'hold';
    const older = store.put('chunks/a', Buffer.from('x'));
    bucket.mode = 'refuse';
    await assert.rejects(store.head('k'));
    assert.equal(store.offline, true);
    bucket.held.shift()!(); // the request sent before the outage is answered after all
    assert.equal(await older, 'e');
    assert.equal(store.offline, false);
    assert.ok(await pending(alsoOlder), 'the other request sent before the outage is not cut off');
    await store.close();
  });
});

describe('MonitoredStore: warming up', () => {
  it("warm() reads the probe key's first byte the way ranged reads go, and an unanswered warm-up only says offline", async () => {
    const bucket = new Bucket();
    const { store, changes } = monitored(bucket);
    store.warm();
    await until(store, () => bucket.gets === 1);
    assert.deepEqual(bucket.lastGet, { key: 'filespace.json', range: { start: 0, end: 0 } });
    assert.equal(store.offline, false);

    bucket.mode = 'refuse';
    store.warm(); // never throws, and its failure is never an unhandled rejection
    await until(store, () => store.offline);
    assert.deepEqual(changes, [false]);
    await store.close();
    store.warm();
    assert.equal(bucket.gets, 2, 'a closed store sends nothing');
  });
});

/** True if `p` is still pending after the event loop turned a few times. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return !settled;
}
