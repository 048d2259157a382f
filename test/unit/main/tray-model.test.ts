// The tray menu and icon as a pure function of the app status.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { StatusDto } from '../../../electron/contract/api';
import type { AppStatus, FilespaceSummary } from '../../../electron/contract/app';
import { trayIconState, trayModel, type TrayItem } from '../../../electron/main/tray';

function status(over: Partial<StatusDto> = {}): StatusDto {
  return {
    name: 'team',
    state: 'mounted',
    mountPoint: '/home/u/Filespace/team',
    dirtyBytes: 0,
    dirtyFiles: 0,
    pendingMetaOps: 0,
    uploadBytesPerSec: 0,
    downloadBytesPerSec: 0,
    cacheUsedBytes: 0,
    cacheCapBytes: 1e9,
    cacheHitRatio: 0,
    openFiles: 0,
    offline: false,
    uploadsPaused: false,
    readOnlyReason: null,
    lastError: null,
    ...over,
  };
}

function fs(name: string, over: Partial<StatusDto> = {}): FilespaceSummary {
  return {
    name,
    location: `s3://b/${name}`,
    kind: 's3',
    mountPoint: `/m/${name}`,
    cacheDir: `/c/${name}`,
    status: status({ name, mountPoint: `/m/${name}`, ...over }),
  };
}

function app(filespaces: FilespaceSummary[], uploadsPaused = false): AppStatus {
  return { filespaces, uploadsPaused, keys: { stored: true, accessKeyIdHint: 'AKIA1234…' } };
}

const labels = (items: readonly TrayItem[]) => items.map((i) => (i.type === 'separator' ? '---' : i.label));

describe('tray model', () => {
  it('lists each filespace with its headline, mount action and folder', () => {
    const m = trayModel(
      app([fs('team', { dirtyFiles: 3, dirtyBytes: 212 * 1024 * 1024 }), fs('archive', { state: 'unmounted' })]),
    );
    assert.deepEqual(labels(m.items), [
      'team',
      '    Uploading 3 files — 212 MiB left',
      'Unmount',
      'Open folder',
      '---',
      'archive',
      '    Not mounted — everything is in the bucket',
      'Mount',
      'Open folder',
      '---',
      'Open Filespace',
      'Pause uploads',
      '---',
      'Quit Filespace',
    ]);
    const byLabel = (l: string, from = 0) =>
      m.items.slice(from).find((i) => i.type === 'item' && i.label === l) as Extract<TrayItem, { type: 'item' }>;
    assert.deepEqual(byLabel('Unmount').action, { kind: 'unmount', name: 'team' });
    assert.deepEqual(byLabel('Mount').action, { kind: 'mount', name: 'archive' });
    assert.equal(byLabel('Open folder').enabled, true);
    assert.deepEqual(byLabel('Open folder').action, { kind: 'open-folder', path: '/m/team' });
    assert.equal(byLabel('Open folder', 6).enabled, false, 'an unmounted folder cannot be opened');
    assert.deepEqual(byLabel('Quit Filespace').action, { kind: 'quit' });
  });

  it('pause is a checkbox whose action flips the current state', () => {
    const off = trayModel(app([fs('team')])).items.find((i) => i.type === 'item' && i.label === 'Pause uploads');
    const on = trayModel(app([fs('team')], true)).items.find((i) => i.type === 'item' && i.label === 'Pause uploads');
    assert.deepEqual(off, {
      type: 'item',
      label: 'Pause uploads',
      enabled: true,
      checked: false,
      action: { kind: 'pause', paused: true },
    });
    assert.deepEqual(on, {
      type: 'item',
      label: 'Pause uploads',
      enabled: true,
      checked: true,
      action: { kind: 'pause', paused: false },
    });
  });

  it('disables Mount while a filespace is mounting or unmounting', () => {
    const m = trayModel(app([fs('team', { state: 'mounting' })]));
    const mount = m.items.find((i) => i.type === 'item' && i.label === 'Mount');
    assert.equal(mount?.type === 'item' && mount.enabled, false);
  });

  it('says so when nothing is linked', () => {
    assert.deepEqual(labels(trayModel(app([])).items), [
      'No filespace linked yet',
      '---',
      'Open Filespace',
      'Pause uploads',
      '---',
      'Quit Filespace',
    ]);
  });

  it('picks the icon: error, writes waiting, offline, paused, syncing, read-only, idle', () => {
    const waiting = {
      since: 1,
      cause: 'paused' as const,
      refusing: false,
      refused: 0,
      message: 'the cache is full of changes that cannot upload',
    };
    const follower = {
      role: 'follower' as const,
      holder: 'laptop',
      holderIsThisMachine: false,
      lastRenewedAt: 1,
      ttlMs: 30_000,
      followerLagMs: 1200,
      lost: null,
      conditionalWrites: true,
    };
    assert.equal(trayIconState(app([fs('a')])), 'idle');
    assert.equal(trayIconState(app([fs('a', { dirtyFiles: 1, dirtyBytes: 10 })])), 'syncing');
    assert.equal(trayIconState(app([fs('a', { pendingMetaOps: 2 })])), 'syncing');
    assert.equal(
      trayIconState(app([fs('a', { state: 'unmounted', dirtyFiles: 1, dirtyBytes: 10 })])),
      'idle',
      'an unmounted filespace is not syncing',
    );
    assert.equal(trayIconState(app([fs('a', { readOnlyReason: 'following laptop', lease: follower })])), 'read-only');
    assert.equal(
      trayIconState(
        app([fs('a', { readOnlyReason: 'following laptop', lease: follower }), fs('b', { dirtyBytes: 5, dirtyFiles: 1 })]),
      ),
      'syncing',
    );
    assert.equal(trayIconState(app([fs('a', { dirtyFiles: 1, dirtyBytes: 10 })], true)), 'paused', 'the app-wide pause');
    assert.equal(trayIconState(app([fs('a', { uploadsPaused: true })])), 'paused');
    assert.equal(trayIconState(app([fs('a', { dirtyFiles: 1, dirtyBytes: 10 }), fs('b', { offline: true })], true)), 'offline');
    assert.equal(
      trayIconState(app([fs('a', { offline: true }), fs('b', { writesWaiting: waiting, uploadsPaused: true })])),
      'waiting',
    );
    assert.equal(trayIconState(app([fs('a', { writesWaiting: waiting }), fs('b', { lastError: 'read: EIO' })])), 'error');
    assert.equal(trayModel(app([fs('a', { state: 'error' })])).icon, 'error');
  });

  it('says in the tooltip and the menu what the card says', () => {
    const paused = trayModel(app([fs('a', { dirtyFiles: 2, dirtyBytes: 1.2 * 1024 ** 3, uploadsPaused: true })], true));
    assert.equal(paused.tooltip, 'Filespace: a — Paused — 1.2 GiB waiting');
    assert.ok(labels(paused.items).includes('    Paused — 1.2 GiB waiting'));
    const offline = trayModel(app([fs('a', { offline: true, dirtyFiles: 1, dirtyBytes: 21 * 1024 * 1024 })]));
    assert.equal(offline.tooltip, 'Filespace: a — Offline — 21.0 MiB waiting, reading from the cache');
    const full = trayModel(
      app([
        fs('a', {
          writesWaiting: { since: 1, cause: 'offline', refusing: false, refused: 0, message: 'x' },
          dirtyFiles: 1,
          dirtyBytes: 10,
        }),
      ]),
    );
    assert.equal(full.tooltip, 'Filespace: a — Writes waiting — the cache is full of changes not uploaded yet');
    assert.match(trayModel(app([fs('a', { lastError: 'upload failed' })])).tooltip, /a reports a problem/);
    assert.equal(trayModel(app([fs('a')])).tooltip, 'Filespace: everything is in the bucket');
  });
});
