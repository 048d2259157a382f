/**
 * Snapshots on a filespace's card, end to end in real Chromium: the app host (the same
 * AppHost Electron runs) over loopback HTTP, a real FUSE mount of the local demo filespace.
 * A snapshot is taken from the card with a label, listed with its date, label and
 * size-unique, browsed (mounted read-only beside the filespace: the folder holds the files as
 * they were), and deleted after a confirmation that says what is lost.
 *
 * Steps run in order and build on each other (one host, one browser page).
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import type { SnapshotListDto } from '../../electron/contract/api';
import { callHost, isMounted, launchChromium, RunningHost, startAppHost } from '../helpers/appHost';
import { sh, tmpDir } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';

const WAIT = { timeout: 120_000 };
const SERVICE = `filespace-ui-snapshots-${process.pid}`;

async function waitText(loc: Locator, re: RegExp): Promise<string> {
  await loc.filter({ hasText: re }).first().waitFor(WAIT);
  return (await loc.filter({ hasText: re }).first().textContent()) ?? '';
}

describe('snapshots on the card, in Chromium', () => {
  let keyring: Keyring;
  let dir: string;
  let mountRoot: string;
  let host: RunningHost;
  let browser: Browser;
  let page: Page;
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const demo = () => page.getByTestId('filespace-demo');
  const panel = () => demo().getByTestId('snapshots');
  let id = '';

  before(async () => {
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    dir = await tmpDir('ui-snapshots');
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
      await page?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-snapshots-last.png') }).catch(() => undefined);
      process.stderr.write(host?.stderr() ?? '');
    }
    await browser?.close();
    await host?.stop();
    let stillMounted = false;
    for (const d of [path.join(mountRoot, 'demo'), path.join(`${path.join(mountRoot, 'demo')}-snapshots`, id || 'none')]) {
      if (!mountRoot || !(await isMounted(d))) continue;
      stillMounted = true;
      await sh(`fusermount -uz '${d}'`).catch(() => undefined);
    }
    await keyring?.stop();
    if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
    else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'the app host left a mount behind when it stopped');
  });

  it('takes a snapshot from the card and lists it with its date, label and size-unique', async () => {
    await page.getByTestId('wizard-keys').waitFor(WAIT);
    await page.click('text=Try it locally (no AWS)');
    await waitText(demo().getByTestId('state'), /^mounted$/);
    const mnt = path.join(mountRoot, 'demo');
    await sh(
      `mkdir -p '${mnt}/docs' && printf 'first version' > '${mnt}/docs/a.txt' && head -c 300000 /dev/urandom > '${mnt}/b.bin'`,
    );
    await panel().getByText('No snapshots yet.').waitFor(WAIT);
    await panel().getByTestId('snapshot-label').fill('before the edit');
    await panel().getByTestId('snapshot-create').click();
    await waitText(panel().getByTestId('snapshot-message'), /^Took a snapshot: 2 files, 293 KiB\.$/);
    const r = await callHost(host, 'snapshot.list', { name: 'demo' });
    const list = JSON.parse(r.text) as SnapshotListDto;
    assert.equal(list.snapshots.length, 1);
    id = list.snapshots[0]!.id;
    const row = panel().getByTestId(`snapshot-${id}`);
    await waitText(row, /before the edit/);
    assert.match((await row.textContent()) ?? '', /\d{4}.*before the edit\s*0 B only here/, 'nothing is only in it yet');

    // Change the live files: what only the snapshot holds now shows as its size-unique.
    await sh(`printf 'second version' > '${mnt}/docs/a.txt' && rm '${mnt}/b.bin'`);
    await panel().getByTestId('snapshot-label').fill('after');
    await panel().getByTestId('snapshot-create').click();
    await waitText(panel().getByTestId('snapshot-message'), /^Took a snapshot: 1 file, 14 B\.$/);
    await waitText(row, /before the edit\s*293 KiB only here/);
  });

  it('browses a snapshot read-only: the folder holds the files as they were', async () => {
    await panel().getByTestId(`snapshot-${id}`).getByTestId('snapshot-browse').click();
    const said = await waitText(panel().getByTestId('snapshot-message'), /is open read-only at /);
    const view = /read-only at (.*); copy files out/.exec(said)?.[1];
    assert.equal(view, path.join(`${path.join(mountRoot, 'demo')}-snapshots`, id));
    assert.ok(await isMounted(view));
    assert.equal(await fsp.readFile(path.join(view, 'docs', 'a.txt'), 'utf8'), 'first version');
    assert.equal((await fsp.stat(path.join(view, 'b.bin'))).size, 300000);
    await assert.rejects(fsp.writeFile(path.join(view, 'c.txt'), 'x'), /EROFS/);
  });

  it('deletes a snapshot after a confirmation that says what is lost', async () => {
    const row = panel().getByTestId(`snapshot-${id}`);
    await row.getByTestId('snapshot-delete').click();
    const confirm = row.getByTestId('snapshot-delete-confirm');
    assert.match(
      (await confirm.textContent()) ?? '',
      /Delete the snapshot of .*\? Its 293 KiB of data that nothing else holds is gone for good/,
    );
    await confirm.getByText('Keep it').click();
    await confirm.waitFor({ state: 'detached', ...WAIT });
    await row.getByTestId('snapshot-delete').click();
    await row.getByTestId('snapshot-delete-yes').click();
    await waitText(panel().getByTestId('snapshot-message'), /^Deleted the snapshot of /);
    await row.waitFor({ state: 'detached', ...WAIT });
    const list = JSON.parse((await callHost(host, 'snapshot.list', { name: 'demo' })).text) as SnapshotListDto;
    assert.deepEqual(
      list.snapshots.map((s) => s.label),
      ['after'],
    );
    const bad = await callHost(host, 'snapshot.delete', { name: 'demo', id: 'nope' });
    assert.equal(bad.status, 400, bad.text);
    assert.match((JSON.parse(bad.text) as { message: string }).message, /^"nope" is not a snapshot id/);
  });
});
