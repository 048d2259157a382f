/**
 * A fresh computer's folders, end to end in real Chromium: computer A (its own app host, home
 * and keychain service) makes a filespace of many folders in a real S3 server (moto) and
 * unmounts, which writes a paged checkpoint. Computer B links it through a fault proxy and
 * mounts: the link read only the root's page, so every other folder is loaded in the
 * background after the mount (meta/pageLoader.ts). The proxy holds B's reads of folder pages,
 * so the card's "Folders … still loading" line is seen for certain; once they are let through,
 * the line goes and every file reads back on B.
 *
 * Steps run in order and build on each other.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, Locator, Page } from 'playwright-core';
import type { AppStatus } from '../../electron/contract/app';
import { PAGE_PREFIX } from '../../electron/engine/meta/pages';
import { callHost, isMounted, launchChromium, RunningHost, SHOTS, startAppHost, stopHosts } from '../helpers/appHost';
import { tmpDir } from '../helpers/bed';
import { until } from '../helpers/until';
import { FaultProxy } from '../helpers/faultProxy';
import { endKeyring, Keyring, startKeyring } from '../helpers/keyring';
import { createBucket, MotoServer, startMoto } from '../helpers/moto';

const WAIT = { timeout: 120_000 };
const KEY = { id: 'AKIAFILESPACEFRESH01', secret: 'ui-fresh-secret-key-0123456789abcdef' };
const BUCKET = 'fresh-bucket';
const NAME = 'tree';
const FOLDERS = 30;
const PASSPHRASE = 'lantern oboe quiver saddle';
const MiB = 1024 * 1024;

describe('a fresh computer loads its folders in the background, in Chromium', () => {
  let keyring: Keyring;
  let moto: MotoServer;
  let proxy: FaultProxy;
  let dir: string;
  let browser: Browser;
  let page: Page;
  const hosts: Record<'a' | 'b', RunningHost | undefined> = { a: undefined, b: undefined };
  const roots = { a: '', b: '' };
  const services = { a: `filespace-ui-fresh-a-${process.pid}`, b: `filespace-ui-fresh-b-${process.pid}` };
  const savedBus = process.env.DBUS_SESSION_BUS_ADDRESS;
  const card = () => page.getByTestId(`filespace-${NAME}`);

  async function call(h: RunningHost, route: string, body: unknown): Promise<string> {
    const r = await callHost(h, route, body);
    assert.equal(r.status, 200, `${route}: ${r.text}`);
    return r.text;
  }

  async function foldersLoading(h: RunningHost): Promise<number | undefined> {
    const s = JSON.parse(await call(h, 'app.status', {})) as AppStatus;
    return s.filespaces.find((f) => f.name === NAME)?.status.foldersLoading;
  }

  /** Keys (through `endpoint`), then the filespace linked or created on this computer. */
  async function link(h: RunningHost, mode: 'create' | 'link', endpoint: string, root: string): Promise<void> {
    await call(h, 'keys.check', {
      accessKeyId: KEY.id,
      secretAccessKey: KEY.secret,
      region: 'us-east-1',
      endpoint,
      pathStyle: true,
    });
    await call(h, 'filespace.link', {
      mode,
      target: { bucket: BUCKET, prefix: NAME },
      passphrase: PASSPHRASE,
      name: NAME,
      mountPoint: path.join(root, NAME),
      cacheCapBytes: 64 * MiB,
    });
  }

  before(async () => {
    await fsp.mkdir(SHOTS, { recursive: true });
    keyring = await startKeyring();
    process.env.DBUS_SESSION_BUS_ADDRESS = keyring.env.DBUS_SESSION_BUS_ADDRESS;
    moto = await startMoto();
    await createBucket(moto.endpoint, BUCKET);
    proxy = new FaultProxy(moto.endpoint);
    await proxy.start();
    dir = await tmpDir('ui-fresh');
    for (const m of ['a', 'b'] as const) {
      roots[m] = path.join(dir, m, 'mnt');
      hosts[m] = await startAppHost({
        home: path.join(dir, m, 'home'),
        userHome: path.join(dir, m, 'user'),
        mountRoot: roots[m],
        keychainService: services[m],
        env: keyring.env,
      });
    }
    ({ browser, page } = await launchChromium());
  });

  after(async () => {
    proxy?.clear();
    await proxy?.releaseHeld();
    if (process.env.FILESPACE_UI_DEBUG) {
      await page?.screenshot({ path: path.join(os.tmpdir(), 'filespace-ui-fresh-last.png') }).catch(() => undefined);
      process.stderr.write(`--- host A ---\n${hosts.a?.stderr() ?? ''}\n--- host B ---\n${hosts.b?.stderr() ?? ''}\n`);
    }
    await browser?.close();
    const stillMounted = await stopHosts(
      [hosts.a, hosts.b],
      [roots.a, roots.b].filter(Boolean).map((r) => path.join(r, NAME)),
    );
    await proxy?.stop();
    await moto?.stop();
    await endKeyring(keyring, Object.values(services), savedBus);
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
    assert.equal(stillMounted, false, 'an app host left a mount behind when it stopped');
  });

  it('computer A makes a filespace of many folders and unmounts (a paged checkpoint)', async () => {
    const a = hosts.a!;
    await link(a, 'create', moto.endpoint, roots.a);
    await call(a, 'filespace.mount', { name: NAME });
    const mnt = path.join(roots.a, NAME);
    for (let i = 0; i < FOLDERS; i++) {
      await fsp.mkdir(path.join(mnt, `folder-${i}`));
      await fsp.writeFile(path.join(mnt, `folder-${i}`, 'note.txt'), `folder ${i}\n`);
    }
    // Everything in the bucket first, so the checkpoint written at unmount holds every folder.
    await until('computer A has uploaded everything', async () => {
      const st = (JSON.parse(await call(a, 'app.status', {})) as AppStatus).filespaces.find((f) => f.name === NAME)?.status;
      return st && st.dirtyFiles === 0 && st.dirtyBytes === 0 && st.pendingMetaOps === 0;
    });
    await call(a, 'filespace.unmount', { name: NAME });
    assert.equal(await isMounted(mnt), false);
  });

  it('computer B links through the proxy and shows how many folders are still loading while their pages are held', async () => {
    const b = hosts.b!;
    await link(b, 'link', proxy.endpoint, roots.b);
    // From here B's reads of folder pages wait in the network until let through.
    proxy.set({ hold: true, match: { method: 'GET', pathIncludes: `/${NAME}/${PAGE_PREFIX}` } });
    await call(b, 'filespace.mount', { name: NAME });
    await page.goto(b.open);
    const line: Locator = card().getByTestId('folders-loading');
    await line.waitFor(WAIT);
    const text = (await line.textContent()) ?? '';
    const m = /^(\d+) still loading from the bucket \(each one loads at once when it is opened\)$/.exec(text);
    assert.ok(m, `the line says how many folders load: "${text}"`);
    assert.ok(Number(m[1]) >= FOLDERS, `every folder but the root is still to load (${m[1]} of ${FOLDERS})`);
    await until('the background load asks for a folder page', () => proxy.heldCount > 0);
    assert.equal(await foldersLoading(b), Number(m[1]), 'nothing loaded while the pages are held');
    await page.screenshot({ path: path.join(SHOTS, 'status-folders-loading.png'), fullPage: true });
  });

  it('the line goes once the pages come, and every file reads back on B', async () => {
    const b = hosts.b!;
    proxy.clear();
    await proxy.releaseHeld();
    await card()
      .getByTestId('folders-loading')
      .waitFor({ state: 'detached', ...WAIT });
    await until('the host says every folder is loaded', async () => !(await foldersLoading(b)));
    const mnt = path.join(roots.b, NAME);
    for (let i = 0; i < FOLDERS; i++)
      assert.equal(await fsp.readFile(path.join(mnt, `folder-${i}`, 'note.txt'), 'utf8'), `folder ${i}\n`);
    await call(b, 'filespace.unmount', { name: NAME });
  });
});
