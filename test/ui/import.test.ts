/**
 * "Import a folder…" on a filespace's card, end to end in real Chromium: the app host (the
 * same AppHost Electron runs) over loopback HTTP, a real FUSE mount of the demo filespace, the
 * folder named in the path box (a browser has no native dialog), the summary on the card, the
 * files read back through the mount identical; a folder that does not exist is refused beside
 * the box and imports nothing.
 */

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { isMounted, launchChromium, RunningHost, startAppHost } from '../helpers/appHost';
import { sh, tmpDir } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';

const WAIT = { timeout: 180_000 };
const SERVICE = `filespace-ui-import-${process.pid}`;

async function digest(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fsp.readFile(file))
    .digest('hex');
}

describe('importing a folder from the app in Chromium', () => {
  let keyring: Keyring;
  let dir: string;
  let mountRoot: string;
  let host: RunningHost;
  let browser: Browser;
  let page: Page;
  let source: string;
  const files: string[] = [];
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const card = () => page.getByTestId('filespace-demo');

  before(async () => {
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    dir = await tmpDir('ui-import');
    mountRoot = path.join(dir, 'mnt');
    source = path.join(dir, 'Holiday photos');
    for (let i = 0; i < 300; i++) {
      const rel = path.join(`day ${i % 7}`, `IMG_${i}.jpg`);
      await fsp.mkdir(path.join(source, path.dirname(rel)), { recursive: true });
      await fsp.writeFile(path.join(source, rel), randomBytes(500 + i * 17));
      files.push(rel);
    }
    await fsp.writeFile(path.join(source, 'video.mp4'), randomBytes(5 * 1024 * 1024 + 3));
    files.push('video.mp4');
    await sh(`mkfifo '${source}/a pipe'`);
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
    await browser?.close();
    await host?.stop();
    const mnt = path.join(mountRoot ?? '/nonexistent', 'demo');
    const left = mountRoot ? await isMounted(mnt) : false;
    if (left) await sh(`fusermount -uz '${mnt}'`).catch(() => undefined);
    await keyring?.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(left, false, 'the app host left a mount behind when it stopped');
  });

  it('imports a folder named in the path box, says what it copied and skipped, and the files read back identical', async () => {
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.click('text=Try it locally (no AWS)');
    await card()
      .getByTestId('state')
      .filter({ hasText: /^mounted$/ })
      .waitFor(WAIT);

    await card().getByTestId('import-folder').click();
    await card().getByTestId('import-source').fill(path.join(dir, 'no such folder'));
    await card().getByTestId('import-start').click();
    await card()
      .getByTestId('import-error')
      .filter({ hasText: /no such folder does not exist/ })
      .waitFor(WAIT);
    assert.deepEqual(await fsp.readdir(path.join(mountRoot, 'demo')), [], 'a refused import changed nothing');

    await card().getByTestId('import-source').fill(source);
    await card().getByTestId('import-start').click();
    const summary = card().getByTestId('import-summary');
    await summary.filter({ hasText: /^Imported/ }).waitFor(WAIT);
    const text = (await summary.textContent()) ?? '';
    assert.match(text, /Holiday photos → \/Holiday photos: 301 copied and verified/);
    assert.match(text, /0 already there, 1 skipped \(1 special file\)/);
    assert.equal(await card().getByTestId('import-error').count(), 0);

    const into = path.join(mountRoot, 'demo', 'Holiday photos');
    for (const rel of files) assert.equal(await digest(path.join(into, rel)), await digest(path.join(source, rel)), rel);
    await assert.rejects(fsp.lstat(path.join(into, 'a pipe')));
  });
});
