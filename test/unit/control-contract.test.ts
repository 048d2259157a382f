// Pins down the control API contract: every request schema accepts valid messages and rejects wrong types, unknown keys and oversized values; responses validate status DTOs.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  MAX_BODY_BYTES,
  MOUNT_STATES,
  pauseRequestSchema,
  routes,
  setRequestSchema,
  statusSchema,
  syncRequestSchema,
  syncResultSchema,
  unmountRequestSchema,
  StatusDto,
} from '../../electron/contract/api';
import { ERROR_CODES, ERRORS, errorSchema } from '../../electron/contract/errors';
import { ENGINE_ERROR_CODES } from '../../electron/engine/errors';

function accepts(schema: { safeParse(v: unknown): { success: boolean } }, value: unknown): void {
  assert.equal(schema.safeParse(value).success, true, `should accept ${JSON.stringify(value)}`);
}

function refuses(schema: { safeParse(v: unknown): { success: boolean } }, value: unknown): void {
  assert.equal(schema.safeParse(value).success, false, `should refuse ${JSON.stringify(value)}`);
}

const status: StatusDto = {
  name: 'work',
  state: 'mounted',
  mountPoint: '/home/me/Work',
  pid: 1234,
  dirtyBytes: 212 * 1024 ** 2,
  dirtyFiles: 3,
  pendingMetaOps: 0,
  uploadBytesPerSec: 1e6,
  downloadBytesPerSec: 0,
  cacheUsedBytes: 1e9,
  cacheCapBytes: 2e10,
  cacheHitRatio: 0.9,
  openFiles: 2,
  offline: false,
  uploadsPaused: false,
  readOnlyReason: null,
  lastError: null,
};

describe('control API requests', () => {
  it('unmount: force is an optional boolean defaulting to false; nothing else is allowed', () => {
    assert.deepEqual(unmountRequestSchema.parse({}), { force: false });
    assert.deepEqual(unmountRequestSchema.parse({ force: true }), { force: true });
    refuses(unmountRequestSchema, { force: 'yes' });
    refuses(unmountRequestSchema, { force: 1 });
    refuses(unmountRequestSchema, { force: true, now: true });
    refuses(unmountRequestSchema, null);
    refuses(unmountRequestSchema, []);
  });

  it('sync: timeoutMs is a whole number of milliseconds up to a week', () => {
    accepts(syncRequestSchema, { timeoutMs: 0 });
    accepts(syncRequestSchema, { timeoutMs: 7 * 24 * 3600 * 1000 });
    refuses(syncRequestSchema, {});
    refuses(syncRequestSchema, { timeoutMs: -1 });
    refuses(syncRequestSchema, { timeoutMs: 1.5 });
    refuses(syncRequestSchema, { timeoutMs: '1000' });
    refuses(syncRequestSchema, { timeoutMs: 7 * 24 * 3600 * 1000 + 1 });
    refuses(syncRequestSchema, { timeoutMs: Number.POSITIVE_INFINITY });
    refuses(syncRequestSchema, { timeoutMs: 10, extra: 1 });
  });

  it('set: typed values of known settings, at least one; never text', () => {
    accepts(setRequestSchema, { cacheCapBytes: 50 * 1024 ** 3 });
    accepts(setRequestSchema, { uploadLimitBytesPerSec: 0, uploadDelayMs: 2000, gcIntervalMs: 0 });
    refuses(setRequestSchema, {});
    refuses(setRequestSchema, { cacheCapBytes: '50GiB' });
    refuses(setRequestSchema, { cacheCapBytes: null });
    refuses(setRequestSchema, { key: 'cache-size', value: '50GiB' });
    refuses(setRequestSchema, { cacheHighWatermark: 0.9 });
    refuses(setRequestSchema, JSON.parse('{"__proto__": 1}'));
    refuses(setRequestSchema, { cacheCapBytes: 1, force: true });
  });

  it('pause: a boolean, required', () => {
    accepts(pauseRequestSchema, { paused: true });
    accepts(pauseRequestSchema, { paused: false });
    refuses(pauseRequestSchema, {});
    refuses(pauseRequestSchema, { paused: 'false' });
    refuses(pauseRequestSchema, { paused: false, until: 5 });
  });

  it('every route has a method and strict request schema that refuses unknown keys', () => {
    assert.deepEqual(Object.keys(routes).sort(), [
      '/v1/debug/fuse',
      '/v1/gc',
      '/v1/pause',
      '/v1/pin',
      '/v1/set',
      '/v1/snapshot/create',
      '/v1/snapshot/delete',
      '/v1/snapshot/list',
      '/v1/snapshot/mount',
      '/v1/snapshot/schedule',
      '/v1/snapshot/unmount',
      '/v1/status',
      '/v1/sync',
      '/v1/transfer',
      '/v1/transfer/cancel',
      '/v1/transfer/start',
      '/v1/unmount',
      '/v1/unpin',
    ]);
    for (const [route, spec] of Object.entries(routes)) {
      assert.ok(spec.method === 'GET' || spec.method === 'POST', route);
      refuses(spec.request, { definitelyNotAKey: true });
      refuses(spec.request, 'a string');
    }
    accepts(routes['/v1/status'].request, {});
  });

  it('the body limit leaves room for the largest valid request', () => {
    const largest = JSON.stringify(
      Object.fromEntries(Object.keys(setRequestSchema.shape).map((k) => [k, Number.MAX_SAFE_INTEGER])),
    );
    assert.ok(Buffer.byteLength(largest) < MAX_BODY_BYTES);
  });
});

describe('control API responses', () => {
  it('a full status DTO validates; optional pid may be left out', () => {
    accepts(statusSchema, status);
    const { pid: _pid, ...noPid } = status;
    accepts(statusSchema, noPid);
    accepts(statusSchema, { ...status, readOnlyReason: 'another machine holds the write lease', lastError: 'upload failed' });
    for (const state of MOUNT_STATES) accepts(statusSchema, { ...status, state });
  });

  it('offline since when, and writers waiting for room, are optional (older hosts send neither)', () => {
    const waiting = {
      since: 1_700_000_000_000,
      cause: 'offline',
      refusing: true,
      refused: 2,
      message: 'the cache is full of changes that cannot upload',
    };
    accepts(statusSchema, { ...status, offline: true, offlineSince: 1_700_000_000_000, writesWaiting: waiting });
    accepts(statusSchema, { ...status, offlineSince: null, writesWaiting: null });
    refuses(statusSchema, { ...status, writesWaiting: { ...waiting, cause: 'tired' } });
    refuses(statusSchema, { ...status, offlineSince: 'yesterday' });
  });

  it('a status with a wrong type, a missing field or an unknown state is refused', () => {
    refuses(statusSchema, { ...status, state: 'frozen' });
    refuses(statusSchema, { ...status, dirtyBytes: '212MB' });
    refuses(statusSchema, { ...status, offline: 'no' });
    refuses(statusSchema, { ...status, pid: 1.5 });
    refuses(statusSchema, { ...status, lastError: undefined });
    const { cacheCapBytes: _cap, ...missing } = status;
    refuses(statusSchema, missing);
  });

  it('sync results, acknowledgements and errors', () => {
    accepts(syncResultSchema, { done: true, dirtyBytes: 0, pendingMetaOps: 0 });
    refuses(syncResultSchema, { done: 'yes', dirtyBytes: 0, pendingMetaOps: 0 });
    accepts(routes['/v1/unmount'].response, { ok: true });
    refuses(routes['/v1/unmount'].response, { ok: false });
    accepts(errorSchema, { code: 'WRONG_PASSPHRASE', message: 'wrong passphrase for this filespace' });
    refuses(errorSchema, { code: 5, message: 'x' });
    refuses(errorSchema, { message: 'no code' });
    refuses(errorSchema, { code: 'NOPE', message: 'a code outside the vocabulary does not cross' });
  });
});

describe('the error vocabulary', () => {
  it('has a status and a one-line human message for every code', () => {
    for (const code of ERROR_CODES) {
      const { status, message } = ERRORS[code];
      assert.ok(Number.isInteger(status) && status >= 400 && status < 600, code);
      assert.ok(message.length > 0 && !message.includes('\n') && message === message.trim(), code);
    }
  });

  it('holds every code the engine throws', () => {
    for (const code of ENGINE_ERROR_CODES) assert.ok((ERROR_CODES as readonly string[]).includes(code), code);
  });
});
