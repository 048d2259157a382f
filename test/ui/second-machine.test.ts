/**
 * Two computers on one filespace, and the passphrase's recovery, end to end in real Chromium:
 * two app hosts (each its own FILESPACE_HOME, so its own machine identity, and its own keychain
 * service in one real gnome-keyring), real FUSE mounts and one moto server.
 *
 * Computer A creates the filespace in the wizard: a weak passphrase is refused by the strength
 * estimator (meter in red), a strong one is accepted (green), and the recovery kit shows a key
 * that is kept nowhere. Computer B links it while A writes: its card says who writes and offers
 * "Open read-only here" and "Take over"; it follows A live, then takes over (after a
 * confirmation in words) while A holds changes not yet uploaded. A, refused on its next mount,
 * opens read-only: its changes are set aside and shown on its card, saved to a folder and
 * discarded (after a confirmation listing them). When B unmounts, A starts writing with one
 * click. Last, B links the filespace again having "lost" the passphrase: the recovery key sets
 * a new one against the bucket, and B reads A's files with it.
 *
 * Steps run in order and build on each other.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { Browser, Locator, Page } from 'playwright-core';
import type { AppStatus, FilespaceSummary } from '../../electron/contract/app';
import { formatRecoveryKey, parseRecoveryKey } from '../../electron/contract/recoveryKey';
import { OsKeychain } from '../../native/keychain';
import { callHost, launchChromium, RunningHost, SHOTS, startAppHost, stopHosts } from '../helpers/appHost';
import { tmpDir, until } from '../helpers/bed';
import { endKeyring, Keyring, startKeyring } from '../helpers/keyring';
import { createBucket, MotoServer, startMoto, TEST_CREDENTIALS, TEST_REGION } from '../helpers/moto';

const WAIT = { timeout: 120_000 };
const KEY = { accessKeyId: 'AKIAFILESPACEUIFLOWS', secretAccessKey: 'ui-flows-secret-key-0123456789abcdef' };
const STRONG = 'orchid lamp tundra velvet';
const NEW_PASSPHRASE = 'quarry violet mango ladder';
const BUCKET = 'flows';

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function waitText(loc: Locator, re: RegExp): Promise<string> {
  await loc.filter({ hasText: re }).first().waitFor(WAIT);
  return (await loc.filter({ hasText: re }).first().textContent()) ?? '';
}

async function summary(h: RunningHost, name: string): Promise<FilespaceSummary | undefined> {
  const r = await callHost(h, 'app.status', {});
  return (JSON.parse(r.text) as AppStatus).filespaces.find((f) => f.name === name);
}

async function allFileBytes(dir: string): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true }))
    if (e.isFile()) out.push(await fsp.readFile(path.join(e.parentPath, e.name)));
  return out;
}

describe('two computers and the recovery key, in Chromium', () => {
  let keyring: Keyring;
  let moto: MotoServer;
  let dir: string;
  const hosts: Record<'a' | 'b', RunningHost | undefined> = { a: undefined, b: undefined };
  const homes = { a: '', b: '' };
  const roots = { a: '', b: '' };
  let browser: Browser;
  let pageA: Page;
  let pageB: Page;
  let recoveryKey = '';
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const services = { a: `filespace-ui-a-${process.pid}`, b: `filespace-ui-b-${process.pid}` };

  const a = () => hosts.a!;
  const b = () => hosts.b!;
  const mntA = () => path.join(roots.a, 'flows');
  const mntB = () => path.join(roots.b, 'flows');

  before(async () => {
    await fsp.mkdir(SHOTS, { recursive: true });
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    moto = await startMoto();
    await createBucket(moto.endpoint, BUCKET);
    dir = await tmpDir('ui-flows');
    for (const m of ['a', 'b'] as const) {
      homes[m] = path.join(dir, m, 'home');
      roots[m] = path.join(dir, m, 'mnt');
      hosts[m] = await startAppHost({
        home: homes[m],
        userHome: path.join(dir, m, 'user'),
        mountRoot: roots[m],
        keychainService: services[m],
        env: keyring.env,
      });
    }
    ({ browser, page: pageA } = await launchChromium());
    pageB = await (await browser.newContext({ viewport: { width: 960, height: 900 }, acceptDownloads: true })).newPage();
  });

  after(async () => {
    if (process.env.FILESPACE_UI_DEBUG) {
      await pageA?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-flows-a.png') }).catch(() => undefined);
      await pageB?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-flows-b.png') }).catch(() => undefined);
      process.stderr.write(`--- host A ---\n${hosts.a?.stderr() ?? ''}\n--- host B ---\n${hosts.b?.stderr() ?? ''}\n`);
    }
    await browser?.close();
    const stillMounted = await stopHosts(
      [hosts.a, hosts.b],
      roots.a ? [path.join(roots.a, 'flows'), path.join(roots.b, 'flows'), path.join(roots.b, 'flows2')] : [],
    );
    await moto?.stop();
    await endKeyring(keyring, Object.values(services), savedBus);
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'an app host left a mount behind when it stopped');
  });

  it('refuses a weak passphrase by its estimated strength, in red, and creates nothing', async () => {
    await pageA.goto(a().open);
    await pageA.getByTestId('wizard-keys').waitFor(WAIT);
    await pageA.fill('#accessKeyId', KEY.accessKeyId);
    await pageA.fill('#secretAccessKey', KEY.secretAccessKey);
    await pageA.fill('#endpoint', moto.endpoint);
    await pageA.check('#pathStyle');
    await pageA.click('text=Check keys');
    await pageA.getByTestId('wizard-bucket').waitFor(WAIT);
    await pageA.fill('#bucket', BUCKET);
    await pageA.click('text=Check access and continue');
    await pageA.getByTestId('wizard-passphrase').waitFor(WAIT);
    assert.match(
      (await pageA.getByTestId('loss-warning').textContent()) ?? '',
      /Without the passphrase or the recovery key, the files in this filespace are gone for good/,
    );
    // Long enough, and varied characters, but a common password with a digit: very weak.
    await pageA.fill('#passphrase', 'Password1!');
    await pageA.fill('#repeat', 'Password1!');
    const meter = pageA.getByTestId('strength');
    await waitText(meter, /very weak|weak/);
    assert.ok(Number(await meter.getAttribute('data-score')) <= 1);
    const red = await meter
      .locator('b')
      .evaluate(
        (el) => (globalThis as unknown as { getComputedStyle: (e: unknown) => { color: string } }).getComputedStyle(el).color,
      );
    assert.ok(['rgb(201, 42, 42)', 'rgb(232, 89, 12)'].includes(red), `weak is shown in red or orange, not ${red}`);
    await pageA.click('text=Continue');
    // Said beside the field, tied to it for screen readers.
    await waitText(pageA.getByTestId('passphrase-error'), /This passphrase is (very )?weak/);
    assert.equal(await pageA.locator('#passphrase').getAttribute('aria-describedby'), 'passphrase-error');
    await shot(pageA, 'wizard-passphrase-weak');

    // The host refuses it too (the renderer is not trusted), and nothing reaches the bucket.
    const direct = await callHost(a(), 'filespace.link', {
      mode: 'create',
      target: { bucket: BUCKET, prefix: '' },
      passphrase: 'Password1!',
      name: 'flows',
      mountPoint: mntA(),
      cacheCapBytes: 64 * 1024 * 1024,
    });
    assert.equal(direct.status, 400);
    assert.match(direct.text, /"code":"WEAK_PASSPHRASE"/);
    const s3 = new S3Client({
      endpoint: moto.endpoint,
      forcePathStyle: true,
      region: TEST_REGION,
      credentials: TEST_CREDENTIALS,
    });
    assert.equal((await s3.send(new ListObjectsV2Command({ Bucket: BUCKET }))).KeyCount ?? 0, 0, 'something was created');
    s3.destroy();
  });

  it('offers a recovery kit at creation, kept nowhere, then creates and mounts', async () => {
    await pageA.fill('#passphrase', STRONG);
    await pageA.fill('#repeat', STRONG);
    const meter = pageA.getByTestId('strength');
    await waitText(meter, /strong/);
    assert.equal(await meter.getAttribute('data-score'), '4');
    assert.equal(
      await meter
        .locator('b')
        .evaluate(
          (el) => (globalThis as unknown as { getComputedStyle: (e: unknown) => { color: string } }).getComputedStyle(el).color,
        ),
      'rgb(43, 138, 62)',
      'strong is green',
    );
    await pageA.click('text=Continue');
    const kit = pageA.getByTestId('recovery-kit');
    await kit.waitFor(WAIT);
    recoveryKey = parseRecoveryKey((await kit.getByTestId('recovery-key').textContent()) ?? '') ?? '';
    assert.equal(recoveryKey.length, 32, 'the kit shows a 160-bit key');
    assert.match((await kit.getByTestId('loss-warning').textContent()) ?? '', /gone for good/);
    assert.equal(await kit.locator('button[type=submit]').isDisabled(), true, 'the kit must be kept before going on');
    const [download] = await Promise.all([pageA.waitForEvent('download'), kit.getByTestId('save-kit').click()]);
    const saved = await fsp.readFile(await download.path(), 'utf8');
    assert.ok(saved.includes(formatRecoveryKey(recoveryKey)), 'the saved kit holds the key in groups');
    assert.match(saved, /gone for good/);
    await shot(pageA, 'wizard-recovery-kit');
    await pageA.check('#kitSaved');
    await kit.locator('button[type=submit]').click();
    await pageA.getByTestId('wizard-place').waitFor(WAIT);
    await pageA.fill('#cacheCap', '256');
    await pageA.click('text=Create and mount');
    await waitText(pageA.getByTestId('filespace-flows').getByTestId('state'), /^mounted$/);
    for (const body of await allFileBytes(homes.a)) {
      assert.ok(!body.includes(recoveryKey) && !body.includes(formatRecoveryKey(recoveryKey)), 'the key is stored locally');
    }
    const kc = new OsKeychain(services.a);
    for (const acct of await kc.accounts())
      assert.ok(!((await kc.get(acct)) ?? '').includes(recoveryKey), 'the key is in the keychain');

    await fsp.writeFile(path.join(mntA(), 'hello.txt'), 'hello from A');
    await until(
      'A uploaded hello.txt',
      async () => {
        const s = (await summary(a(), 'flows'))?.status;
        return s && s.dirtyBytes === 0 && s.pendingMetaOps === 0;
      },
      120_000,
    );
  });

  it('linking while another computer writes says who writes and offers read-only or takeover', async () => {
    const keys = await callHost(b(), 'keys.check', { ...KEY, endpoint: moto.endpoint, pathStyle: true });
    assert.equal(keys.status, 200, keys.text);
    await pageB.goto(b().open);
    await pageB.getByTestId('wizard-keys').waitFor(WAIT);
    await pageB.click('text=Use these keys');
    await pageB.getByTestId('wizard-bucket').waitFor(WAIT);
    await pageB.check('input[name=mode] >> nth=1');
    await pageB.fill('#bucket', BUCKET);
    await pageB.click('text=Check access and continue');
    await pageB.getByTestId('wizard-passphrase').waitFor(WAIT);
    await pageB.fill('#passphrase', STRONG);
    await pageB.click('text=Continue');
    await pageB.getByTestId('wizard-place').waitFor(WAIT);
    await pageB.click('text=Link and mount');
    const card = pageB.getByTestId('filespace-flows');
    const panel = card.getByTestId('second-machine');
    await panel.waitFor(WAIT);
    const writer = (await panel.getByTestId('writer').textContent()) ?? '';
    assert.match(writer, new RegExp(`^${os.hostname()} is writing this filespace since .+; last heard from \\d+ s ago\\.$`));
    const text = (await pageB.textContent('body')) ?? '';
    assert.ok(!/--read-only|--takeover/.test(text), `the window names command flags: ${text}`);
    assert.doesNotMatch(text, /Everything is in the bucket/);
    await shot(pageB, 'second-machine-choice');

    await panel.getByTestId('take-over').click();
    const confirm = panel.getByTestId('takeover-confirm');
    assert.match((await confirm.textContent()) ?? '', /only if .+ is off or gone/);
    assert.match((await confirm.textContent()) ?? '', /changes not yet uploaded stay on it and can be recovered there/);
    await confirm.locator('text=Cancel').click();
    await confirm.waitFor({ state: 'detached', ...WAIT });
  });

  it('opens read-only as a live follower, labelled as such, with how far behind it is', async () => {
    const card = pageB.getByTestId('filespace-flows');
    await card.getByTestId('open-read-only').click();
    await waitText(card.getByTestId('state'), /^mounted$/);
    await waitText(card.getByTestId('read-only'), /read-only · following/);
    const follower = await waitText(card.getByTestId('follower'), /following/);
    assert.match(follower, new RegExp(`Read-only: following ${os.hostname()}, which writes it; at most \\d+ s behind\\.`));
    assert.equal(await fsp.readFile(path.join(mntB(), 'hello.txt'), 'utf8'), 'hello from A');
    await fsp.writeFile(path.join(mntA(), 'second.txt'), 'written later on A');
    await until('B sees second.txt', () => fsp.readFile(path.join(mntB(), 'second.txt'), 'utf8'), 120_000);
    await shot(pageB, 'second-machine-follower');
  });

  it('takes over after a confirmation; the old writer stops writing', async () => {
    // A has one change it cannot upload (uploads paused) when B takes over; everything before it is in the bucket.
    await until(
      'A uploaded everything so far',
      async () => {
        const s = (await summary(a(), 'flows'))?.status;
        return s && s.dirtyBytes === 0 && s.pendingMetaOps === 0;
      },
      120_000,
    );
    await pageA.click('[data-testid=pause]');
    await waitText(pageA.getByTestId('pause'), /Resume uploads/);
    await fsp.writeFile(path.join(mntA(), 'local.txt'), 'only on A');
    await fsp.link(path.join(mntA(), 'local.txt'), path.join(mntA(), 'local-link.txt')); // a second name
    await until('A holds local.txt', async () => ((await summary(a(), 'flows'))?.status.dirtyFiles ?? 0) > 0);

    const card = pageB.getByTestId('filespace-flows');
    await card.getByTestId('follower').getByTestId('take-over').click();
    const confirm = card.getByTestId('takeover-confirm');
    assert.match((await confirm.textContent()) ?? '', /Take over only if .+ is off or gone/);
    await shot(pageB, 'second-machine-takeover');
    await confirm.getByTestId('takeover-yes').click();
    await until('B writes', async () => (await summary(b(), 'flows'))?.status.lease?.role === 'writer', 120_000);
    await card.getByTestId('follower').waitFor({ state: 'detached', ...WAIT });
    await until('A stopped writing', async () => (await summary(a(), 'flows'))?.status.readOnlyReason, 120_000);
    await waitText(pageA.getByTestId('filespace-flows').getByTestId('read-only'), /read-only/);
  });

  it('shows the changes set aside on the old writer, saves a copy and discards them after a confirmation', async () => {
    const card = pageA.getByTestId('filespace-flows');
    await card.locator('button', { hasText: /^Unmount$/ }).click();
    await waitText(card.getByTestId('state'), /^unmounted$/);
    await card.locator('button', { hasText: /^Mount$/ }).click();
    const panel = card.getByTestId('second-machine');
    await panel.waitFor(WAIT);
    await panel.getByTestId('open-read-only').click();
    await waitText(card.getByTestId('state'), /^mounted$/);
    const aside = card.getByTestId('aside');
    await waitText(aside, /1 file set aside/);
    await shot(pageA, 'second-machine-aside');
    await aside.getByTestId('aside-save').click();
    const target = path.join(dir, 'recovered');
    await aside.locator('input').fill(target);
    await aside.getByTestId('aside-save-go').click();
    await waitText(aside.getByTestId('aside-message'), /Saved a copy of 1 file to /);
    assert.equal(await fsp.readFile(path.join(target, 'local.txt'), 'utf8'), 'only on A');
    const [one, two] = await Promise.all([
      fsp.stat(path.join(target, 'local.txt')),
      fsp.stat(path.join(target, 'local-link.txt')),
    ]);
    assert.equal(two.ino, one.ino, 'the copy keeps the second name as a link');

    await aside.getByTestId('aside-discard').click();
    const confirm = aside.getByTestId('discard-confirm');
    await waitText(confirm, /local-link\.txt, also named \/local\.txt/);
    assert.match((await confirm.textContent()) ?? '', /These changes will be lost for good/);
    await confirm.getByTestId('discard-yes').click();
    await waitText(aside.getByTestId('aside-message'), /discarded/);
    await until('the set is gone', async () => (await summary(a(), 'flows'))?.status.aside?.length === 0);
    const left = JSON.parse((await callHost(a(), 'aside.list', { name: 'flows' })).text) as { sets: unknown[] };
    assert.deepEqual(left.sets, []);
  });

  it('switches a follower to writing with one click once the writer unmounts', async () => {
    const cardB = pageB.getByTestId('filespace-flows');
    await cardB.locator('button', { hasText: /^Unmount$/ }).click();
    await waitText(cardB.getByTestId('state'), /^unmounted$/);
    const cardA = pageA.getByTestId('filespace-flows');
    await waitText(cardA.getByTestId('follower'), /nobody writes it now/);
    await cardA.getByTestId('start-writing').click();
    await until('A writes again', async () => (await summary(a(), 'flows'))?.status.lease?.role === 'writer', 120_000);
    await pageA.click('[data-testid=pause]');
    await waitText(pageA.getByTestId('pause'), /Pause uploads/);
    await fsp.writeFile(path.join(mntA(), 'third.txt'), 'A writes again');
    await until(
      'A uploaded third.txt',
      async () => {
        const s = (await summary(a(), 'flows'))?.status;
        return s && s.dirtyBytes === 0 && s.pendingMetaOps === 0;
      },
      120_000,
    );
  });

  it('sets a new passphrase with the recovery key when the passphrase is lost, and reads the files', async () => {
    await pageB.click('text=Add a filespace');
    await pageB.getByTestId('wizard-keys').waitFor(WAIT);
    await pageB.click('text=Use these keys');
    await pageB.check('input[name=mode] >> nth=1');
    await pageB.fill('#bucket', BUCKET);
    await pageB.click('text=Check access and continue');
    await pageB.getByTestId('wizard-passphrase').waitFor(WAIT);
    await pageB.getByTestId('lost-passphrase').click();
    const wrong = recoveryKey.startsWith('A') ? `B${recoveryKey.slice(1)}` : `A${recoveryKey.slice(1)}`;
    await pageB.fill('#typedRecoveryKey', formatRecoveryKey(wrong));
    await pageB.fill('#passphrase', NEW_PASSPHRASE);
    await pageB.fill('#repeat', NEW_PASSPHRASE);
    await pageB.click('text=Set the new passphrase and continue');
    await waitText(pageB.getByTestId('wizard-error'), /wrong recovery key/);
    // Typed from paper: lower case, spaces between the groups.
    await pageB.fill('#typedRecoveryKey', formatRecoveryKey(recoveryKey).toLowerCase().replace(/-/g, ' '));
    await shot(pageB, 'wizard-recover');
    await pageB.click('text=Set the new passphrase and continue');
    await pageB.getByTestId('wizard-place').waitFor(WAIT);
    await pageB.fill('#name', 'flows2');
    await pageB.fill('#mountPoint', path.join(roots.b, 'flows2'));
    await pageB.click('text=Link and mount');
    const card = pageB.getByTestId('filespace-flows2');
    await card.getByTestId('second-machine').getByTestId('open-read-only').click();
    await waitText(card.getByTestId('state'), /^mounted$/);
    assert.equal(await fsp.readFile(path.join(roots.b, 'flows2', 'third.txt'), 'utf8'), 'A writes again');
  });
});
