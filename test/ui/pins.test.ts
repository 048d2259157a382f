/**
 * Pins on the status card, end to end in real Chromium: the app host (the same AppHost
 * Electron runs) over loopback HTTP and a real FUSE mount of the local demo filespace. A path
 * typed into the box is pinned and listed with its progress, a pin that does not fit is
 * refused beside the box in the host's words and changes nothing, the cache cap cannot go
 * below what pins hold, and "Remove" unpins. (The Electron folder dialog is a thin
 * main-process call, not reachable from a browser.)
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import type { AppStatus } from '../../electron/contract/app';
import { callHost, isMounted, launchChromium, RunningHost, startAppHost } from '../helpers/appHost';
import { sh, tmpDir } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';

const WAIT = { timeout: 120_000 };
const SERVICE = `filespace-ui-pins-${process.pid}`;
const MiB = 1024 * 1024;

async function waitText(loc: Locator, re: RegExp): Promise<string> {
  await loc.filter({ hasText: re }).first().waitFor(WAIT);
  return (await loc.filter({ hasText: re }).first().textContent()) ?? '';
}

describe('pins on the status card in Chromium', () => {
  let keyring: Keyring;
  let dir: string;
  let mountRoot: string;
  let host: RunningHost;
  let browser: Browser;
  let page: Page;
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const demo = () => page.getByTestId('filespace-demo');

  async function appStatus(): Promise<AppStatus> {
    const r = await callHost(host, 'app.status', {});
    assert.equal(r.status, 200, r.text);
    return JSON.parse(r.text) as AppStatus;
  }

  before(async () => {
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    dir = await tmpDir('ui-pins');
    mountRoot = path.join(dir, 'mnt');
    host = await startAppHost({
      home: path.join(dir, 'home'),
      userHome: path.join(dir, 'user'),
      mountRoot,
      keychainService: SERVICE,
      env: keyring.env,
    });
    ({ browser, page } = await launchChromium());
    await page.goto(host.open);
  });

  after(async () => {
    if (process.env.FILESPACE_UI_DEBUG) {
      await page?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-pins-last.png') }).catch(() => undefined);
      process.stderr.write(host?.stderr() ?? '');
    }
    await browser?.close();
    await host?.stop();
    const mnt = path.join(mountRoot ?? '/nonexistent', 'demo');
    const stillMounted = mountRoot !== undefined && (await isMounted(mnt));
    if (stillMounted) await sh(`fusermount -uz '${mnt}'`).catch(() => undefined);
    await keyring?.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'the app host left a mount behind when it stopped');
  });

  it('pins a typed path and lists it with its progress; refuses one that does not fit, and a cap below the pins; removes one', async () => {
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.click('text=Try it locally (no AWS)');
    await waitText(demo().getByTestId('state'), /^mounted$/);
    await waitText(demo().getByTestId('pins-none'), /Nothing is pinned/);
    const cap = await callHost(host, 'settings.set', { name: 'demo', change: { cacheCapBytes: 32 * MiB } });
    assert.equal(cap.status, 200, cap.text);
    const mnt = path.join(mountRoot, 'demo');
    await sh(
      `mkdir -p '${mnt}/Photos' '${mnt}/Huge' && head -c ${3 * MiB} /dev/urandom > '${mnt}/Photos/a.jpg' && head -c ${30 * MiB} /dev/urandom > '${mnt}/Huge/h.bin'`,
    );
    // Pinned data is counted once it is in the bucket (until then it is local anyway).
    await waitText(demo().getByTestId('sync-line'), /^Up to date$/);

    await demo().getByTestId('pin-path').fill('Photos');
    await demo().getByTestId('pin-add').click();
    assert.equal(
      await waitText(demo().getByTestId('pin-line'), /^Photos: 3\.0 of 3\.0 MiB local$/),
      'Photos: 3.0 of 3.0 MiB local',
    );
    assert.equal(await demo().getByTestId('pin-path').inputValue(), '', 'the box is cleared after a pin');

    await demo().getByTestId('pin-path').fill(`${mnt}/Huge`);
    await demo().getByTestId('pin-add').click();
    const refused = await waitText(demo().getByTestId('pin-error'), /leaves room for/);
    assert.match(
      refused,
      /^pinning \/Huge needs \d+\.\d MiB more than the cache cap of 32\.0 MiB leaves room for; raise the cap or pin less$/,
    );
    assert.equal(await demo().getByTestId('pin').count(), 1, 'nothing else was pinned');
    assert.deepEqual(
      (await appStatus()).filespaces[0]!.status.pins?.map((p) => p.path),
      ['/Photos'],
    );

    await demo().getByTestId('pin-path').fill('/No/such');
    await demo().getByTestId('pin-add').click();
    await waitText(demo().getByTestId('pin-error'), /^\/No does not exist in the filespace$/);

    // The demo's chunks are 4 MiB: pins leave at least 4 of them (16 MiB) free.
    const low = await callHost(host, 'settings.set', { name: 'demo', change: { cacheCapBytes: 20 * MiB } });
    assert.equal(low.status, 200, `the cap may go down while the pins still fit: ${low.text}`);
    const lower = await callHost(host, 'settings.set', { name: 'demo', change: { cacheCapBytes: 18 * MiB } });
    assert.equal(lower.status, 400, lower.text);
    assert.match(
      lower.text,
      /the cache cap cannot be 18\.0 MiB: pinned files take 3\.0 MiB and need a cap of at least 19\.0 MiB; unpin some first/,
    );

    await demo().getByRole('button', { name: 'Remove Photos' }).click();
    await waitText(demo().getByTestId('pins-none'), /Nothing is pinned/);
    await page.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-pins.png'), fullPage: true });
  });
});
