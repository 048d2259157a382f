/**
 * The desktop app end to end, in real Chromium: the renderer served by the app host (the same
 * AppHost Electron runs) over loopback HTTP, the real engine mounting with FUSE, a real S3
 * server (moto; a second one with IAM checks for bad keys and missing permissions), and a real
 * Secret Service (gnome-keyring on a private D-Bus). From an empty keychain through the wizard
 * to a mounted filespace, then status, settings and the error paths. Screenshots of each screen
 * go to the temp folder, or to docs/screenshots/ with FILESPACE_SCREENSHOTS=1 (to refresh the
 * README's pictures on purpose rather than on every run).
 *
 * Steps run in order and build on each other (one host, one browser page).
 */

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CreateBucketCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { CreateAccessKeyCommand, CreateUserCommand, IAMClient, PutUserPolicyCommand } from '@aws-sdk/client-iam';
import type { Browser, Locator, Page } from 'playwright-core';
import { OsKeychain } from '../../native/keychain';
import { callHost, isMounted, launchChromium, RunningHost, startAppHost, SHOTS } from '../helpers/appHost';
import { sh, tmpDir } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';
import { createBucket, MotoServer, startMoto, TEST_CREDENTIALS, TEST_REGION } from '../helpers/moto';

const WAIT = { timeout: 120_000 };
const GOOD_KEY = { id: 'AKIAFILESPACEUITEST1', secret: 'ui-test-secret-key-0123456789abcdef' };
const PASSPHRASE = 'correct horse battery staple';
const SERVICE = `filespace-ui-${process.pid}`;

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Waits until the element with `id` has the keyboard focus. */
async function focusOn(page: Page, id: string): Promise<void> {
  await page.waitForFunction(
    (want) =>
      (globalThis as unknown as { document: { activeElement: { id: string } | null } }).document.activeElement?.id === want,
    id,
    WAIT,
  );
}

/** The current step as the step indicator and the heading say it. */
async function stepSaid(page: Page): Promise<{ current: string[]; heading: string }> {
  return {
    current: await page.locator('.steps [aria-current=step]').allTextContents(),
    heading: (await page.locator('.wizard h2').textContent()) ?? '',
  };
}

async function waitText(loc: Locator, re: RegExp): Promise<string> {
  await loc.filter({ hasText: re }).first().waitFor(WAIT);
  return (await loc.first().textContent()) ?? '';
}

/** Every file under `dir`, read whole (small trees only). */
async function allFileBytes(dir: string): Promise<Array<{ file: string; body: Buffer }>> {
  const out: Array<{ file: string; body: Buffer }> = [];
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const file = path.join(e.parentPath, e.name);
    out.push({ file, body: await fsp.readFile(file) });
  }
  return out;
}

describe('desktop app in Chromium', () => {
  let keyring: Keyring;
  let moto: MotoServer;
  let authMoto: MotoServer;
  let readonlyKey: { id: string; secret: string };
  let dir: string;
  let home: string;
  let mountRoot: string;
  let host: RunningHost;
  let browser: Browser;
  let page: Page;
  let keychain: OsKeychain;
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;

  before(async () => {
    await fsp.mkdir(SHOTS, { recursive: true });
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    keychain = new OsKeychain(SERVICE);
    moto = await startMoto();
    await createBucket(moto.endpoint, 'ui-bucket');
    await createBucket(moto.endpoint, 'ui-other');
    // Four setup requests run unauthenticated (bucket, user, key, policy); IAM checks the rest.
    authMoto = await startMoto({ env: { INITIAL_NO_AUTH_ACTION_COUNT: '4' } });
    const s3 = new S3Client({
      endpoint: authMoto.endpoint,
      forcePathStyle: true,
      region: TEST_REGION,
      credentials: TEST_CREDENTIALS,
    });
    await s3.send(new CreateBucketCommand({ Bucket: 'auth-bucket' }));
    s3.destroy();
    const iam = new IAMClient({ endpoint: authMoto.endpoint, region: TEST_REGION, credentials: TEST_CREDENTIALS });
    await iam.send(new CreateUserCommand({ UserName: 'readonly' }));
    const key = (await iam.send(new CreateAccessKeyCommand({ UserName: 'readonly' }))).AccessKey!;
    readonlyKey = { id: key.AccessKeyId!, secret: key.SecretAccessKey! };
    await iam.send(
      new PutUserPolicyCommand({
        UserName: 'readonly',
        PolicyName: 'filespace',
        PolicyDocument: JSON.stringify({
          Version: '2012-10-17',
          Statement: [
            {
              Effect: 'Allow',
              Action: ['s3:GetObject', 's3:ListBucket'],
              Resource: ['arn:aws:s3:::auth-bucket', 'arn:aws:s3:::auth-bucket/*'],
            },
          ],
        }),
      }),
    );
    iam.destroy();
    dir = await tmpDir('ui');
    home = path.join(dir, 'home');
    mountRoot = path.join(dir, 'mnt');
    host = await startAppHost({ home, userHome: path.join(dir, 'user'), mountRoot, keychainService: SERVICE, env: keyring.env });
    ({ browser, page } = await launchChromium());
    await page.goto(host.open);
  });

  after(async () => {
    // FILESPACE_UI_DEBUG=1: the app host's log and the last page, for a failure's post-mortem.
    if (process.env.FILESPACE_UI_DEBUG) {
      await page?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-last.png') }).catch(() => undefined);
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
    await authMoto?.stop();
    await keychain?.delete('aws-keys').catch(() => undefined);
    await keyring?.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'the app host left a mount behind when it stopped');
  });

  it('starts in the wizard with an empty keychain', async () => {
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    assert.equal(await page.getByTestId('keys-stored').count(), 0);
    assert.deepEqual(await keychain.accounts(), []);
    assert.equal(new URL(page.url()).hash, '', 'the token is taken out of the address bar');
    assert.deepEqual(await stepSaid(page), { current: ['AWS keys'], heading: 'Step 1 of 4: AWS keys' });
    await focusOn(page, 'accessKeyId');
    await shot(page, 'wizard-keys');
  });

  it('says beside each keys field what is wrong, before anything is sent', async () => {
    await page.fill('#accessKeyId', 'AKIA_not valid');
    await waitText(page.getByTestId('accessKeyId-error'), /^An access key ID has no spaces$/);
    assert.equal(await page.locator('#accessKeyId').getAttribute('aria-describedby'), 'accessKeyId-error');
    assert.equal(await page.locator('#accessKeyId').getAttribute('aria-invalid'), 'true');
    await page.fill('#region', 'EU West');
    await waitText(page.getByTestId('region-error'), /like us-east-1/);
    await page.fill('#endpoint', 's3.example.com');
    await waitText(page.getByTestId('endpoint-error'), /starting with https:\/\//);
    // The secret is judged on submit (or on leaving it), not while typed.
    assert.equal(await page.getByTestId('secretAccessKey-error').count(), 0);
    await page.click('text=Check keys');
    await waitText(page.getByTestId('secretAccessKey-error'), /^Enter the secret access key$/);
    await focusOn(page, 'accessKeyId');
    assert.equal(await page.getByTestId('wizard-error').count(), 0, 'nothing was sent, so the host said nothing');
    assert.deepEqual(await keychain.accounts(), []);
    await shot(page, 'wizard-validation');
    await page.fill('#accessKeyId', 'AKIAFILESPACEUITEST1');
    await page.fill('#region', 'us-east-1');
    await page.fill('#endpoint', '');
    await page.getByTestId('accessKeyId-error').waitFor({ state: 'detached', ...WAIT });
    assert.equal(await page.getByTestId('region-error').count(), 0);
    assert.equal(await page.getByTestId('endpoint-error').count(), 0);
  });

  it('rejects bad keys with a clear message and stores nothing', async () => {
    await page.fill('#accessKeyId', 'AKIAWRONGWRONGWRONG1');
    await page.fill('#secretAccessKey', 'wrong-secret');
    await page.fill('#endpoint', authMoto.endpoint);
    await page.check('#pathStyle');
    await page.click('text=Check keys');
    const msg = await waitText(page.getByTestId('wizard-error'), /rejected/);
    assert.match(msg, /S3 rejected these keys: check the access key ID and the secret access key/);
    assert.ok(!msg.includes('wrong-secret'));
    assert.deepEqual(await keychain.accounts(), [], 'rejected keys are not stored');
    await shot(page, 'wizard-bad-keys');
  });

  it('names the missing permissions and shows the minimal IAM policy', async () => {
    await page.fill('#accessKeyId', readonlyKey.id);
    await page.fill('#secretAccessKey', readonlyKey.secret);
    await page.click('text=Check keys');
    await page.getByTestId('wizard-bucket').waitFor(WAIT);
    assert.deepEqual(await stepSaid(page), { current: ['Bucket'], heading: 'Step 2 of 4: Bucket' });
    // These keys may not list buckets: the user types the bucket.
    assert.equal(await page.locator('#bucketPick').count(), 0);
    await focusOn(page, 'bucket');
    await page.fill('#bucket', 'Auth_Bucket');
    await waitText(page.getByTestId('bucket-error'), /^Bucket names are lowercase$/);
    await page.fill('#prefix', 'my team');
    await waitText(page.getByTestId('prefix-error'), /not spaces/);
    await page.click('text=Check access and continue');
    await focusOn(page, 'bucket');
    assert.equal(await page.getByTestId('policy').count(), 0, 'nothing was sent');
    await page.fill('#prefix', '');
    await page.fill('#bucket', 'auth-bucket');
    await page.click('text=Check access and continue');
    const msg = await waitText(page.getByTestId('wizard-error'), /lack/);
    assert.match(msg, /These keys lack s3:PutObject, s3:DeleteObject on s3:\/\/auth-bucket/);
    const policy = JSON.parse((await page.locator('[data-testid=policy] pre').textContent()) ?? '') as {
      Statement: Array<{ Action: string[]; Resource: string }>;
    };
    assert.deepEqual(
      policy.Statement.map((s) => s.Action),
      [['s3:ListBucket'], ['s3:GetObject', 's3:PutObject', 's3:DeleteObject']],
    );
    assert.equal(policy.Statement[1]!.Resource, 'arn:aws:s3:::auth-bucket/*');
    assert.match((await page.getByTestId('multipart-note').textContent()) ?? '', /No multipart permission is needed/);
    await shot(page, 'wizard-missing-permission');
  });

  it('creates, links and mounts a filespace with good keys', async () => {
    await page.click('text=Back');
    await page.click('text=Enter other keys');
    await page.fill('#accessKeyId', GOOD_KEY.id);
    await page.fill('#secretAccessKey', GOOD_KEY.secret);
    await page.fill('#endpoint', moto.endpoint);
    await page.click('text=Check keys');
    await page.getByTestId('wizard-bucket').waitFor(WAIT);
    // The permission result of the other keys is gone with them.
    assert.equal(await page.getByTestId('policy').count(), 0, 'a policy for the old keys stays on screen');
    await focusOn(page, 'bucketPick');
    assert.deepEqual(await page.locator('#bucketPick option').allTextContents(), [
      '(type a bucket name below)',
      'ui-bucket',
      'ui-other',
    ]);
    await page.selectOption('#bucketPick', 'ui-bucket');
    await page.fill('#prefix', '/team/');
    await shot(page, 'wizard-bucket');
    await page.click('text=Check access and continue');
    await page.getByTestId('wizard-passphrase').waitFor(WAIT);
    assert.deepEqual(await stepSaid(page), { current: ['Passphrase'], heading: 'Step 3 of 4: Passphrase' });
    await focusOn(page, 'passphrase');

    await page.fill('#passphrase', 'short');
    assert.match((await page.getByTestId('strength').textContent()) ?? '', /too short/);
    await page.fill('#passphrase', PASSPHRASE);
    await page.fill('#repeat', `${PASSPHRASE}!`);
    await page.click('text=Continue');
    await waitText(page.getByTestId('repeat-error'), /^Does not match the passphrase above$/);
    assert.equal(await page.locator('#repeat').getAttribute('aria-describedby'), 'repeat-error');
    await page.fill('#repeat', PASSPHRASE);
    await page.getByTestId('repeat-error').waitFor({ state: 'detached', ...WAIT });
    assert.match((await page.getByTestId('strength').textContent()) ?? '', /good|strong/);
    await shot(page, 'wizard-passphrase');
    await page.click('text=Continue');
    // The recovery kit (tested in second-machine.test.ts): kept, then on.
    await page.getByTestId('recovery-kit').waitFor(WAIT);
    await page.check('#kitSaved');
    await page.click('[data-testid=recovery-kit] button[type=submit]');
    await page.getByTestId('wizard-place').waitFor(WAIT);
    assert.deepEqual(await stepSaid(page), { current: ['Mount'], heading: 'Step 4 of 4: Mount' });
    await focusOn(page, 'name');

    const suggested = await page.inputValue('#mountPoint');
    assert.equal(suggested, path.join(mountRoot, 'team'));
    // A folder that cannot be made: a sentence naming it, beside the field, and the bucket as it was.
    await page.fill('#mountPoint', '/proc/nope');
    await page.click('text=Create and mount');
    const said = await waitText(page.getByTestId('mountPoint-error'), /proc\/nope/);
    assert.equal(said, 'The folder "/proc/nope" does not exist and cannot be made there');
    assert.equal(await page.locator('#mountPoint').getAttribute('aria-describedby'), 'mountPoint-error');
    assert.doesNotMatch(await page.locator('.wizard').innerText(), /ENOENT|mkdir|no such file/);
    const s3 = new S3Client({
      endpoint: moto.endpoint,
      forcePathStyle: true,
      region: TEST_REGION,
      credentials: TEST_CREDENTIALS,
    });
    try {
      const listed = await s3.send(new ListObjectsV2Command({ Bucket: 'ui-bucket', Prefix: 'team/' }));
      assert.equal(listed.KeyCount ?? 0, 0, 'a refused mount point created the filespace in the bucket');
    } finally {
      s3.destroy();
    }
    await page.fill('#mountPoint', 'relative/folder');
    await waitText(page.getByTestId('mountPoint-error'), /^Enter a full path, starting with \/$/);
    // The cache size box: at least the engine's floor, in the unit chosen.
    await page.selectOption('#cacheCapUnit', 'MiB');
    await page.fill('#cacheCapText', '8');
    await waitText(page.getByTestId('cacheCapText-error'), /^At least 16 MiB$/);
    assert.equal(await page.locator('#cacheCapText').getAttribute('aria-describedby'), 'cacheCapText-error');
    await page.fill('#cacheCapText', '256');
    await page.getByTestId('cacheCapText-error').waitFor({ state: 'detached', ...WAIT });
    const busy = path.join(dir, 'not-empty');
    await fsp.mkdir(busy);
    await fsp.writeFile(path.join(busy, 'keep.txt'), 'x');
    await page.fill('#mountPoint', busy);
    await page.click('text=Create and mount');
    await waitText(page.getByTestId('mountPoint-error'), /not empty/);
    await page.fill('#mountPoint', suggested);
    await page.fill('#cacheCap', '256');
    assert.equal(await page.getByTestId('cache-cap').textContent(), '256 MiB');
    assert.equal(await page.inputValue('#cacheCapText'), '256', 'the box follows the slider');
    assert.equal(await page.getByTestId('cacheCapText-error').count(), 0);
    assert.equal(await page.locator('#cacheCap').getAttribute('aria-valuetext'), '256 MiB', 'the slider speaks in sizes');
    await shot(page, 'wizard-mount');
    await page.click('text=Create and mount');

    const card = page.getByTestId('filespace-team');
    await waitText(card.getByTestId('state'), /^mounted$/);
    assert.equal(await isMounted(suggested), true, 'the folder is a real mount');
    await shot(page, 'status-mounted');

    const cfg = JSON.parse(await fsp.readFile(path.join(home, 'config', 'filespaces', 'team.json'), 'utf8')) as {
      settings: { cacheCapBytes: number };
      secrets: string;
      store: { prefix: string };
    };
    assert.equal(cfg.settings.cacheCapBytes, 256 * 1024 * 1024);
    assert.equal(cfg.secrets, 'keychain');
    assert.equal(cfg.store.prefix, 'team');
  });

  it('keeps the keys and passphrase in the keychain only, and never hands them back', async () => {
    const stored = JSON.parse((await keychain.get('aws-keys')) ?? '{}') as { accessKeyId: string; secretAccessKey: string };
    assert.equal(stored.accessKeyId, GOOD_KEY.id);
    assert.equal(stored.secretAccessKey, GOOD_KEY.secret);
    const accounts = await keychain.accounts();
    assert.equal(accounts.filter((a) => a.startsWith('passphrase:')).length, 1);
    for (const { file, body } of await allFileBytes(home)) {
      assert.ok(!body.includes(GOOD_KEY.secret), `${file} holds the secret key`);
      assert.ok(!body.includes(PASSPHRASE), `${file} holds the passphrase`);
    }
    const status = await callHost(host, 'app.status', {});
    assert.equal(status.status, 200);
    assert.ok(!status.text.includes(GOOD_KEY.secret));
    assert.match(status.text, /"accessKeyIdHint":"AKIAFILE…"/);
    const noToken = await fetch(`${host.url}/app/app.status`, { method: 'POST', body: '{}' });
    assert.equal(noToken.status, 401, 'the API refuses requests without the token');
  });

  it('shows a file written from a shell as pending, then as synced', async () => {
    const mnt = path.join(mountRoot, 'team');
    const card = page.getByTestId('filespace-team');
    await page.click('[data-testid=pause]');
    await waitText(page.getByTestId('pause'), /Resume uploads/);
    await sh(`head -c 3145728 /dev/urandom > '${mnt}/report.bin'`);
    await waitText(card.getByTestId('pending'), /^1 file, 3\.0 MiB/);
    assert.match((await card.getByTestId('sync-line').textContent()) ?? '', /^Paused — 3\.0 MiB waiting$/);
    await waitText(card.getByTestId('pending-files'), /^\/report\.bin$/);
    assert.match(
      (await card.getByTestId('lease').textContent()) ?? '',
      /^This computer is writing; others can open it read-only \(claim confirmed \d+ s ago\)$/,
    );
    await shot(page, 'status-pending');

    const bucketKeys = async () => {
      const s3 = new S3Client({
        endpoint: moto.endpoint,
        forcePathStyle: true,
        region: TEST_REGION,
        credentials: TEST_CREDENTIALS,
      });
      try {
        return (await s3.send(new ListObjectsV2Command({ Bucket: 'ui-bucket', Prefix: 'team/' }))).Contents?.length ?? 0;
      } finally {
        s3.destroy();
      }
    };
    const before = await bucketKeys();
    await page.click('[data-testid=pause]');
    await waitText(card.getByTestId('sync-line'), /^Up to date$/);
    assert.match((await card.getByTestId('pending').textContent()) ?? '', /^0 files, 0 B/);
    assert.ok((await bucketKeys()) > before, 'the upload reached the bucket');
    await shot(page, 'status-synced');
  });

  it('changes the cache cap and the upload bandwidth limit live from the settings', async () => {
    await page.click('[data-testid=nav-settings]');
    await page.getByTestId('machine-settings').waitFor(WAIT);
    assert.equal(await page.inputValue('#settingsCacheCap'), '256');
    assert.equal(await page.inputValue('#settingsCacheCapUnit'), 'MiB');
    await page.fill('#settingsCacheCap', '128');
    await page.locator('form:has(#settingsCacheCap) button[type=submit]').click();
    await waitText(page.getByTestId('cacheCap-note'), /^Cache limit is now 128 MiB$/);
    assert.equal(await page.getByTestId('settings-upload-limit').textContent(), 'no limit');
    await page.fill('#uploadLimit', '256');
    await page.locator('form:has(#uploadLimit) button[type=submit]').click();
    await waitText(page.getByTestId('uploadLimit-note'), /^Uploads are now limited to 256 KiB\/s$/);
    await waitText(page.getByTestId('settings-upload-limit'), /^256 KiB\/s$/);
    await shot(page, 'settings');
    const cfgFile = path.join(home, 'config', 'filespaces', 'team.json');
    const cfg = JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as {
      settings: { cacheCapBytes: number; uploadLimitBytesPerSec: number };
    };
    assert.equal(cfg.settings.cacheCapBytes, 128 * 1024 * 1024);
    assert.equal(cfg.settings.uploadLimitBytesPerSec, 256 * 1024);
    await page.click('[data-testid=nav-status]');
    const card = page.getByTestId('filespace-team');
    await waitText(card.getByTestId('cache'), /of 128 MiB/);
    await waitText(card.getByTestId('throughput'), /\(limit 256 KiB\/s\)/);

    // A value below the engine's floor is refused beside the field before anything is sent.
    await page.click('[data-testid=nav-settings]');
    await page.fill('#uploadLimit', '4');
    await waitText(page.getByTestId('uploadLimit-error'), /^At least 16 KiB\/s$/);
    assert.equal(await page.locator('form:has(#uploadLimit) button[type=submit]').isDisabled(), true);
    assert.equal((JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as typeof cfg).settings.uploadLimitBytesPerSec, 256 * 1024);

    // Emptied: not silently "no limit"; that is a button of its own.
    await page.fill('#uploadLimit', '');
    await waitText(page.getByTestId('uploadLimit-error'), /choose "No limit"/);
    await page.click('text=No limit');
    await waitText(page.getByTestId('settings-upload-limit'), /^no limit$/);
    await page.click('[data-testid=nav-status]');
    await card.getByTestId('throughput').filter({ hasNotText: /limit/ }).waitFor(WAIT);
  });

  it('replaces the stored keys from the settings, keeping them when S3 rejects the new ones', async () => {
    const storedId = async () => (JSON.parse((await keychain.get('aws-keys')) ?? '{}') as { accessKeyId?: string }).accessKeyId;
    await page.click('[data-testid=nav-settings]');
    await page.click('text=Replace keys');
    await page.locator('#accessKeyId').waitFor(WAIT);
    await page.fill('#accessKeyId', 'AKIAWRONGWRONGWRONG2');
    await page.fill('#secretAccessKey', 'wrong-secret-2');
    await page.fill('#endpoint', authMoto.endpoint);
    await page.check('#pathStyle');
    await page.click('text=Check keys');
    await waitText(page.getByTestId('wizard-error'), /S3 rejected these keys/);
    assert.equal(await storedId(), GOOD_KEY.id, 'rejected keys leave the stored ones in place');

    const second = { id: 'AKIAFILESPACEUITEST2', secret: 'ui-test-second-secret-0123456789' };
    await page.fill('#accessKeyId', second.id);
    await page.fill('#secretAccessKey', second.secret);
    await page.fill('#endpoint', moto.endpoint);
    await page.click('text=Check keys');
    await page.getByTestId('wizard-bucket').waitFor(WAIT);
    const stored = JSON.parse((await keychain.get('aws-keys')) ?? '{}') as { accessKeyId: string; secretAccessKey: string };
    assert.deepEqual([stored.accessKeyId, stored.secretAccessKey], [second.id, second.secret]);
    await page.click('[data-testid=nav-status]');
  });

  it('catches a wrong passphrase when linking an existing filespace', async () => {
    await page.click('[data-testid=nav-wizard]');
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.click('text=Use these keys');
    await page.check('text=Link an existing filespace');
    await page.fill('#bucket', 'ui-bucket');
    await page.fill('#prefix', 'team');
    await page.click('text=Check access and continue');
    await page.getByTestId('wizard-passphrase').waitFor(WAIT);
    await page.fill('#passphrase', 'not the right passphrase');
    await page.click('text=Continue');
    const msg = await waitText(page.getByTestId('wizard-error'), /passphrase/);
    assert.match(msg, /^wrong passphrase for this filespace$/);
    await shot(page, 'wizard-wrong-passphrase');
  });

  it('tries it locally on the embedded demo store, no AWS involved', async () => {
    await page.click('[data-testid=nav-wizard]');
    await page.click('text=Try it locally (no AWS)');
    await waitText(page.getByTestId('notice'), /Mounted the local demo at/);
    const card = page.getByTestId('filespace-demo');
    await waitText(card.getByTestId('state'), /^mounted$/);
    const mnt = path.join(mountRoot, 'demo');
    assert.equal(await isMounted(mnt), true);
    // Empty: the card says what to do next, until the first file is written.
    const hint = await waitText(card.getByTestId('demo-hint'), /Open the folder/);
    assert.match(hint, /Open the folder .*demo\..*Drop or save a few files into it\..*Watch them upload here/s);
    await shot(page, 'status-demo-empty');
    // With uploads paused the new file stays pending, and an unmount keeps it in the cache.
    await page.click('[data-testid=pause]');
    await waitText(page.getByTestId('pause'), /Resume uploads/);
    assert.equal(await sh(`printf 'hello from the demo' > '${mnt}/hello.txt' && cat '${mnt}/hello.txt'`), 'hello from the demo');
    await waitText(card.getByTestId('sync-line'), /^Paused — 19 B waiting$/);
    assert.equal(await card.getByTestId('demo-hint').count(), 0, 'the hint goes once a file is written');
    await shot(page, 'status-demo');
    await card.getByText('Unmount').click();
    await waitText(card.getByTestId('state'), /^unmounted$/);
    assert.equal(await isMounted(mnt), false);
    assert.match(
      (await card.getByTestId('sync-line').textContent()) ?? '',
      /^Not mounted — 19 B waits to upload at the next mount$/,
    );
    await page.click('[data-testid=pause]');
    await waitText(page.getByTestId('pause'), /Pause uploads/);
  });

  it('unmounts from the status view; a mount in use says which process holds it', async () => {
    await page.click('[data-testid=nav-status]');
    const card = page.getByTestId('filespace-team');
    const mnt = path.join(mountRoot, 'team');
    // A shell whose working directory is inside the mount keeps it busy.
    const holder = spawn('bash', ['-c', 'exec sleep 600'], { cwd: mnt, stdio: 'ignore' });
    try {
      await card.getByText('Unmount').click();
      const msg = await waitText(card.getByTestId('unmount-busy'), /in use by/);
      assert.match(msg, new RegExp(`Cannot unmount: ${mnt.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is in use by .*sleep`));
      assert.equal(await isMounted(mnt), true, 'a refused unmount leaves the filespace mounted');
      assert.equal(await card.getByTestId('state').textContent(), 'mounted');
      await shot(page, 'status-unmount-busy');
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
    }
    await card.getByText('Unmount', { exact: true }).click();
    await waitText(card.getByTestId('state'), /^unmounted$/);
    assert.equal(await isMounted(path.join(mountRoot, 'team')), false);
  });

  it('mounts at start what the settings say, with the keys and passphrase from the keychain', async () => {
    await page.click('[data-testid=nav-settings]');
    await page.selectOption('#settingsFor', 'team');
    await page.getByTestId('machine-settings').waitFor(WAIT);
    // The boxes are checked once the host has saved the change.
    await page.click('[data-testid=settings-mount-at-start]');
    await page.locator('[data-testid=settings-mount-at-start]:checked').waitFor(WAIT);
    await page.click('[data-testid=settings-start-at-login]');
    await page.locator('[data-testid=settings-start-at-login]:checked').waitFor(WAIT);
    const saved = JSON.parse(await fsp.readFile(path.join(home, 'config', 'app.json'), 'utf8')) as {
      mountAtStart: string[];
      startAtLogin: boolean;
    };
    assert.deepEqual(saved.mountAtStart, ['team']);
    assert.equal(saved.startAtLogin, true);

    await host.stop();
    host = await startAppHost({
      home,
      userHome: path.join(dir, 'user'),
      mountRoot,
      keychainService: SERVICE,
      env: keyring.env,
      args: ['--mount-at-start'],
    });
    await page.goto(host.open);
    const card = page.getByTestId('filespace-team');
    await waitText(card.getByTestId('state'), /^mounted$/);
    assert.equal(await isMounted(path.join(mountRoot, 'team')), true);
    assert.equal(
      await sh(`head -c 3000000 '${path.join(mountRoot, 'team', 'report.bin')}' | wc -c`),
      '3000000\n',
      'the file written before is read back from the bucket',
    );
    assert.equal(
      await page.getByTestId('filespace-demo').getByTestId('state').textContent(),
      'unmounted',
      'only the chosen filespace mounts at start',
    );
    await card.getByText('Unmount', { exact: true }).click();
    await waitText(card.getByTestId('state'), /^unmounted$/);
  });
});
