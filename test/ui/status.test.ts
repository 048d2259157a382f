/**
 * The status people read at a glance, errors in plain words, and settings checked beside each
 * field, end to end in real Chromium: the app host (the same AppHost Electron runs) over
 * loopback HTTP, real FUSE mounts of the local demo filespace and of one in a real S3 server
 * (moto), keys in a real Secret Service (gnome-keyring on a private D-Bus). Screenshots go to
 * the temp folder, or to docs/screenshots/ with FILESPACE_SCREENSHOTS=1.
 *
 * Steps run in order and build on each other (one host, one browser page).
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import type { AppStatus } from '../../electron/contract/app';
import { OsKeychain } from '../../native/keychain';
import { callHost, isMounted, launchChromium, RunningHost, startAppHost, SHOTS } from '../helpers/appHost';
import { sh, tmpDir } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';
import { createBucket, MotoServer, startMoto } from '../helpers/moto';

const WAIT = { timeout: 120_000 };
const KEY = { id: 'AKIAFILESPACESTATUS1', secret: 'ui-status-secret-key-0123456789abcdef' };
const SERVICE = `filespace-ui-status-${process.pid}`;
const KiB = 1024;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function waitText(loc: Locator, re: RegExp): Promise<string> {
  await loc.filter({ hasText: re }).first().waitFor(WAIT);
  return (await loc.first().textContent()) ?? '';
}

/** Bytes in a formatted size ("212 MiB", "3.5 KiB"). */
function bytesOf(text: string): number {
  const m = /([\d.]+) (B|KiB|MiB|GiB)/.exec(text);
  assert.ok(m, `no size in "${text}"`);
  const unit: Record<string, number> = { B: 1, KiB: KiB, MiB: KiB ** 2, GiB: KiB ** 3 };
  return Number(m[1]) * (unit[m[2]!] ?? NaN);
}

describe('status, errors and settings in Chromium', () => {
  let keyring: Keyring;
  let moto: MotoServer;
  let dir: string;
  let home: string;
  let mountRoot: string;
  let host: RunningHost;
  let browser: Browser;
  let page: Page;
  let keychain: OsKeychain;
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const demo = () => page.getByTestId('filespace-demo');

  async function appStatus(): Promise<AppStatus> {
    const r = await callHost(host, 'app.status', {});
    assert.equal(r.status, 200, r.text);
    return JSON.parse(r.text) as AppStatus;
  }

  async function call(route: string, body: unknown): Promise<void> {
    const r = await callHost(host, route, body);
    assert.equal(r.status, 200, `${route}: ${r.text}`);
  }

  before(async () => {
    await fsp.mkdir(SHOTS, { recursive: true });
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    keychain = new OsKeychain(SERVICE);
    moto = await startMoto();
    await createBucket(moto.endpoint, 'status-bucket');
    dir = await tmpDir('ui-status');
    home = path.join(dir, 'home');
    mountRoot = path.join(dir, 'mnt');
    host = await startAppHost({ home, userHome: path.join(dir, 'user'), mountRoot, keychainService: SERVICE, env: keyring.env });
    ({ browser, page } = await launchChromium());
    await page.setViewportSize({ width: 1400, height: 900 });
    await page.goto(host.open);
  });

  after(async () => {
    if (process.env.FILESPACE_UI_DEBUG) {
      await page?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-status-last.png') }).catch(() => undefined);
      process.stderr.write(host?.stderr() ?? '');
    }
    await browser?.close();
    await host?.stop();
    let stillMounted = false;
    for (const name of ['team', 'demo']) {
      const mnt = path.join(mountRoot ?? '/nonexistent', name);
      if (!mountRoot || !(await isMounted(mnt))) continue;
      stillMounted = true;
      await sh(`fusermount -uz '${mnt}'`).catch(() => undefined);
    }
    await moto?.stop();
    for (const a of (await keychain?.accounts().catch(() => [] as string[])) ?? [])
      await keychain.delete(a).catch(() => undefined);
    await keyring?.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'the app host left a mount behind when it stopped');
  });

  it('offers no "Pause uploads" with nothing linked, then mounts the demo and says "Up to date"', async () => {
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.click('[data-testid=nav-status]');
    await page.getByText('No filespace is linked on this computer yet.').waitFor(WAIT);
    assert.equal(await page.getByTestId('pause').count(), 0);
    await page.click('[data-testid=nav-wizard]');
    await page.click('text=Try it locally (no AWS)');
    await waitText(demo().getByTestId('state'), /^mounted$/);
    await waitText(demo().getByTestId('sync-line'), /^Up to date$/);
    const headline = demo().getByTestId('sync-line');
    assert.equal(await headline.getAttribute('aria-live'), 'polite', 'the headline is a live region');
    assert.match((await demo().getByTestId('hit-ratio').textContent()) ?? '', /nothing read yet/);
  });

  it('pauses with a notice that is information and expires; lists what waits, "…and N more"', async () => {
    const mnt = path.join(mountRoot, 'demo');
    await page.click('[data-testid=pause]');
    const notice = page.getByTestId('notice');
    await waitText(notice, /^Uploads paused/);
    assert.match((await notice.getAttribute('class')) ?? '', /\binfo\b/, '"Uploads paused" is not styled as success');
    await sh(`mkdir -p '${mnt}/many' && for i in $(seq 1 60); do printf "file $i" > '${mnt}/many/f'$i.txt; done`);
    await sh(`head -c 6291456 /dev/urandom > '${mnt}/big.bin'`);
    await waitText(demo().getByTestId('sync-line'), /^Paused — 6\.0 MiB waiting$/);
    await waitText(demo().getByTestId('pending'), /^61 files, 6\.0 MiB/);
    assert.equal(await demo().getByTestId('pending-more').textContent(), '…and 11 more');
    assert.equal(await demo().locator('[data-testid=pending-files] li').count(), 50);
    const changes = await demo().getByTestId('pending-changes').count();
    if (changes > 0)
      assert.match(
        (await demo().getByTestId('pending-changes').textContent()) ?? '',
        /other changes? \(new folders, renames, deletions/,
        'the other changes are explained',
      );
    await shot(page, 'status-paused');
    await notice.waitFor({ state: 'detached', timeout: 60_000 });
  });

  it('uploads with a progress bar and a time left that only goes down, then is up to date with the rate at zero', async () => {
    // A slow upload, so the upload can be watched.
    await call('settings.set', { name: 'demo', change: { uploadLimitBytesPerSec: 256 * KiB } });
    await page.click('[data-testid=pause]');
    const line = demo().getByTestId('sync-line');
    await waitText(line, /^Uploading \d+ files? — [\d.]+ (KiB|MiB) left/);
    await demo().getByTestId('progress').waitFor(WAIT);
    const bar = demo().getByRole('progressbar');
    assert.match((await bar.getAttribute('aria-valuetext')) ?? '', /^[\d.]+ (B|KiB|MiB) of [\d.]+ MiB uploaded$/);
    // While nothing is written, what is left only goes down.
    const lefts: number[] = [];
    while (lefts.length < 4) {
      const text = (await line.textContent()) ?? '';
      if (!text.startsWith('Uploading')) break;
      const m = /— ([\d.]+ \w+) left/.exec(text);
      if (m) lefts.push(bytesOf(m[1]!));
      await page.waitForTimeout(700);
    }
    for (let i = 1; i < lefts.length; i++) assert.ok(lefts[i]! <= lefts[i - 1]!, `left went up: ${lefts.join(', ')}`);
    await waitText(line, /, (about \d+ (s|min)|a few seconds)$/);
    // The chart: axes, units, legend, and a scale that fits a 256 KiB/s upload.
    const chart = demo().getByTestId('chart');
    const top = bytesOf((await chart.getByTestId('chart-top').textContent()) ?? '');
    assert.ok(top >= 200 * KiB && top <= 5 * KiB ** 2, `the scale fits an upload limited to 256 KiB/s (top ${top})`);
    assert.match((await chart.textContent()) ?? '', /now.*up.*down/);
    await shot(page, 'status-uploading');
    await call('settings.set', { name: 'demo', change: { uploadLimitBytesPerSec: 0 } });
    await waitText(line, /^Up to date$/);
    await demo().getByTestId('progress').waitFor({ state: 'detached', timeout: 60_000 });
    await waitText(demo().getByTestId('throughput'), /^up 0 B\/s, down 0 B\/s$/);
    assert.match(
      (await demo().getByTestId('lease').textContent()) ?? '',
      /^This computer is writing; others can open it read-only \(claim confirmed \d+ s ago\)$/,
    );
    await shot(page, 'status-up-to-date');
  });

  it('the "confirmed … ago" of the lease moves on without new events', async () => {
    const lease = demo().getByTestId('lease');
    const first = (await lease.textContent()) ?? '';
    await lease.filter({ hasNotText: first }).waitFor(WAIT);
  });

  it('an unmounted card shows the cache size on disk; a cold read shows 0% from the cache, a second read 50%', async () => {
    await demo().getByText('Unmount', { exact: true }).click();
    await waitText(demo().getByTestId('state'), /^unmounted$/);
    // (The size is measured every few seconds.)
    const cache = await waitText(demo().getByTestId('cache'), /^[1-9][\d.]* MiB on disk/);
    assert.ok(bytesOf(cache) >= 6 * KiB ** 2, `the cache's real size: ${cache}`);
    assert.equal((await demo().getByTestId('throughput').textContent()) ?? '', 'up 0 B/s, down 0 B/s');
    // The chart's history outlives the unmount.
    await demo().getByTestId('chart').waitFor(WAIT);
    // Cold: the clean chunks leave the cache (they are all in the bucket).
    const cfg = (await appStatus()).filespaces.find((f) => f.name === 'demo')!;
    await fsp.rm(path.join(cfg.cacheDir, 'chunks'), { recursive: true, force: true });
    await demo().getByText('Mount', { exact: true }).click();
    await waitText(demo().getByTestId('state'), /^mounted$/);
    const mnt = path.join(mountRoot, 'demo');
    assert.equal(await sh(`cat '${mnt}/big.bin' | wc -c`), '6291456\n');
    await waitText(demo().getByTestId('hit-ratio'), /^ · 0% of 6\.0 MiB read came from the cache$/);
    // A second read would be served by the kernel's page cache (kept across opens of an
    // unchanged file) without reaching the engine: drop the file's pages first.
    await sh(`dd if='${mnt}/big.bin' iflag=nocache count=0 status=none`);
    assert.equal(await sh(`cat '${mnt}/big.bin' | wc -c`), '6291456\n');
    await waitText(demo().getByTestId('hit-ratio'), /^ · 50% of 12\.0 MiB read came from the cache$/);
  });

  it("checks each settings field beside it, in the user's units, before anything is sent", async () => {
    const cfgFile = path.join(home, 'config', 'filespaces', 'demo.json');
    const saved = async () => JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as { settings: Record<string, number> };
    const before = (await saved()).settings;
    await page.click('[data-testid=nav-settings]');
    await page.selectOption('#settingsFor', 'demo');
    await page.getByTestId('machine-settings').waitFor(WAIT);

    await page.fill('#uploadConcurrency', '0');
    await waitText(page.getByTestId('uploadConcurrency-error'), /^Between 1 and 64$/);
    assert.equal(await page.locator('#uploadConcurrency').getAttribute('aria-describedby'), 'uploadConcurrency-msg');
    assert.equal(await page.locator('form:has(#uploadConcurrency) button[type=submit]').isDisabled(), true);
    await page.fill('#prefetch', '');
    await waitText(page.getByTestId('prefetch-error'), /^Enter a whole number between 0 and 64 \(0 turns read-ahead off\)$/);
    assert.equal(await page.locator('form:has(#prefetch) button[type=submit]').isDisabled(), true, 'empty is not 0');
    await page.selectOption('#settingsCacheCapUnit', 'MiB');
    await page.fill('#settingsCacheCap', '8');
    await waitText(page.getByTestId('cacheCap-error'), /^At least 16 MiB$/);
    await shot(page, 'settings-validation');
    assert.deepEqual((await saved()).settings, before, 'nothing was sent');

    await page.fill('#prefetch', '3');
    await page.locator('form:has(#prefetch) button[type=submit]').click();
    await waitText(page.getByTestId('prefetch-note'), /^Read-ahead is now up to 3 chunks$/);
    await page.fill('#settingsCacheCap', '0.5');
    await page.selectOption('#settingsCacheCapUnit', 'GiB');
    assert.equal(await page.locator('#settingsCacheCapSlider').getAttribute('aria-valuetext'), '512 MiB');
    await page.locator('form:has(#settingsCacheCap) button[type=submit]').click();
    await waitText(page.getByTestId('cacheCap-note'), /^Cache limit is now 512 MiB$/);
    assert.equal((await saved()).settings.cacheCapBytes, 512 * KiB ** 2);
    assert.equal((await saved()).settings.prefetchMaxChunks, 3);
  });

  it('says why a cache folder cannot be used in words, without errno text', async () => {
    await page.click('[data-testid=nav-status]');
    await demo().getByText('Unmount', { exact: true }).click();
    await waitText(demo().getByTestId('state'), /^unmounted$/);
    await page.click('[data-testid=nav-settings]');
    await page.selectOption('#settingsFor', 'demo');
    await page.getByTestId('machine-settings').waitFor(WAIT);
    await page.fill('#cacheDir', 'relative/path');
    await waitText(page.getByTestId('cacheDir-error'), /^Enter a full path, starting with \/$/);
    await page.fill('#cacheDir', '/proc/nope');
    await page.click('text=Move cache');
    const note = await waitText(page.getByTestId('cacheDir-note'), /nope/);
    assert.doesNotMatch(note, /ENOENT|EACCES|errno|mkdir/);
    assert.doesNotMatch((await page.locator('body').textContent()) ?? '', /ENOENT|Too small|expected number/);
  });

  it('asks before removing keys, naming the filespaces that use them; then offers "Enter keys"', async () => {
    await call('keys.check', {
      accessKeyId: KEY.id,
      secretAccessKey: KEY.secret,
      region: 'us-east-1',
      endpoint: moto.endpoint,
      pathStyle: true,
    });
    await call('filespace.link', {
      mode: 'create',
      target: { bucket: 'status-bucket', prefix: 'team' },
      passphrase: 'correct horse battery staple',
      name: 'team',
      mountPoint: path.join(mountRoot, 'team'),
      cacheCapBytes: 64 * KiB ** 2,
    });
    await page.click('[data-testid=nav-status]');
    await page.click('[data-testid=nav-settings]');
    await page.click('text=Remove from keychain…');
    const ask = page.getByTestId('confirm-remove-keys');
    await waitText(ask, /team uses these keys: it cannot mount again until you enter keys/);
    await shot(page, 'settings-remove-keys');
    await ask.getByText('Cancel').click();
    assert.ok(await keychain.get('aws-keys'), 'cancel keeps the keys');
    await page.click('text=Remove from keychain…');
    await page.getByTestId('confirm-remove-keys').getByText('Remove keys').click();
    await waitText(page.getByTestId('settings-keys'), /^No keys are stored\.$/);
    assert.equal(await keychain.get('aws-keys'), undefined);
    await page.getByRole('button', { name: 'Enter keys' }).waitFor(WAIT);
  });

  it('shows a failed mount on its card with the action that fixes it, and clears it once fixed', async () => {
    await page.click('[data-testid=nav-status]');
    const team = page.getByTestId('filespace-team');
    await team.getByText('Mount', { exact: true }).click();
    const problem = team.getByTestId('card-problem');
    await waitText(problem, /keys/i);
    assert.doesNotMatch((await problem.textContent()) ?? '', /NO_KEYS/);
    await shot(page, 'status-mount-failed');
    await problem.getByRole('button', { name: 'Enter keys' }).click();
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.fill('#accessKeyId', KEY.id);
    await page.fill('#secretAccessKey', KEY.secret);
    await page.fill('#endpoint', moto.endpoint);
    await page.check('#pathStyle');
    await page.click('text=Check keys');
    await page.getByTestId('wizard-bucket').waitFor(WAIT);
    await page.click('[data-testid=nav-status]');
    await team.getByTestId('card-problem').getByRole('button', { name: 'Try again' }).click();
    await waitText(team.getByTestId('state'), /^mounted$/);
    assert.equal(await team.getByTestId('card-problem').count(), 0, 'the problem is gone once the mount works');
    await team.getByText('Unmount', { exact: true }).click();
    await waitText(team.getByTestId('state'), /^unmounted$/);
  });

  it('asks before unlinking with changes not uploaded, listing what will be lost', async () => {
    // A change waits in demo's cache: written while paused, then unmounted.
    await demo().getByText('Mount', { exact: true }).click();
    await waitText(demo().getByTestId('state'), /^mounted$/);
    await page.click('[data-testid=pause]');
    await sh(`printf 'not uploaded' > '${path.join(mountRoot, 'demo', 'draft.txt')}'`);
    await waitText(demo().getByTestId('sync-line'), /^Paused — 12 B waiting$/);
    await demo().getByText('Unmount', { exact: true }).click();
    await waitText(demo().getByTestId('state'), /^unmounted$/);
    await page.click('[data-testid=pause]');
    await page.click('[data-testid=nav-settings]');
    await page.selectOption('#settingsFor', 'demo');
    await page.getByTestId('machine-settings').waitFor(WAIT);
    await page.click('text=Discard changes and unlink…');
    const ask = page.getByTestId('confirm-discard');
    await waitText(ask, /1 file \(12 B\) written on this computer and not yet in the bucket will be lost/);
    await shot(page, 'settings-unlink-discard');
    await ask.getByText('Cancel').click();
    assert.ok(
      (await appStatus()).filespaces.some((f) => f.name === 'demo'),
      'cancel keeps it linked',
    );
    await page.click('text=Discard changes and unlink…');
    await page.getByTestId('confirm-discard').getByRole('button', { name: 'Discard changes and unlink' }).click();
    await waitText(page.getByTestId('settings-message'), /^Unlinked "demo"/);
    assert.ok(!(await appStatus()).filespaces.some((f) => f.name === 'demo'));
  });

  it('uses a wide window, and stays usable at 800×600', async () => {
    // Evaluated in the page (this file is compiled without the DOM's types).
    const overflowJs = 'document.documentElement.scrollWidth - document.documentElement.clientWidth';
    await page.click('[data-testid=nav-status]');
    const mainWidth = await page.evaluate<number>('document.querySelector("main").getBoundingClientRect().width');
    assert.ok(mainWidth > 1200, `the content uses the window (${mainWidth} px of 1400)`);
    await page.setViewportSize({ width: 800, height: 600 });
    const overflow = await page.evaluate<number>(overflowJs);
    assert.ok(overflow <= 0, `no sideways scrolling at 800 px (${overflow} px too wide)`);
    await page.click('[data-testid=nav-settings]');
    await page.getByTestId('settings-keys').waitFor(WAIT);
    const overflowSettings = await page.evaluate<number>(overflowJs);
    assert.ok(overflowSettings <= 0, `settings fit at 800 px (${overflowSettings} px too wide)`);
    await shot(page, 'settings-800x600');
  });
});
