/**
 * Mount points and cache folders never lie inside a filespace or overlap another filespace's
 * cache: the CLI (link, mount), the desktop app's host (its settings, link and mount) refuse
 * them with one line and change nothing on disk, a refused mount creates no folder in another
 * filespace's mount point, and the app host never ends up waiting on a mount it serves.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Machine, RunResult, run, tmpDir } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';
import { startAppHost, type RunningHost } from '../helpers/appHost';
import { homes, loadConfig, saveConfig, type Homes } from '../../electron/host/config';
import { linkFilespace } from '../../electron/host/link';
import { createFilespace } from '../../electron/engine/filespace';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { AppHost } from '../../electron/main/appHost';
import { CredentialVault } from '../../electron/main/vault';
import type { SecretStore } from '../../native/keychain';

function assertOneLineError(r: RunResult, pattern: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got: ${r.stderr}`);
  assert.match(lines[0]!, /^filespace: /);
  assert.match(lines[0]!, pattern);
}

/** Every path under `dir` (asynchronously: some of them are mounts). */
async function snapshotDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      out.push(p);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}

class MemorySecrets implements SecretStore {
  readonly map = new Map<string, string>();
  async set(a: string, s: string) {
    this.map.set(a, s);
  }
  async get(a: string) {
    return this.map.get(a);
  }
  async delete(a: string) {
    return this.map.delete(a);
  }
  async accounts() {
    return [...this.map.keys()].sort();
  }
}

describe('where mount points and cache folders may be', () => {
  const bed = new Bed();
  let m: Machine;
  let bucket: string;
  let mnt: string;
  let free: string;

  before(async () => {
    await bed.start();
    m = await bed.machine('place');
    bucket = await bed.newBucket();
    await m.ok('init', ...bed.storeArgs(bucket), '--passphrase-file', bed.passFile);
    mnt = path.join(m.home, 'mnt-main');
    await fsp.mkdir(mnt);
    await m.ok('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 'main', '--passphrase-file', bed.passFile);
    free = path.join(bed.root, 'free-mnt');
    await fsp.mkdir(free);
  });

  after(async () => {
    await m.cli('unmount', 'main', '--force');
    await bed.stop();
  });

  /** Runs a failing command and checks it changed nothing on this machine or in the bucket. */
  async function failsCleanly(args: string[], pattern: RegExp): Promise<void> {
    const beforeLocal = await snapshotDir(bed.root);
    const store = s3StoreFor(bed.endpoint, bucket);
    const beforeBucket = await store.list('');
    const r = await m.cli(...args);
    assertOneLineError(r, pattern);
    assert.deepEqual(await snapshotDir(bed.root), beforeLocal, 'the machine changed');
    assert.deepEqual(await store.list(''), beforeBucket, 'the bucket changed');
    await store.close();
  }

  const link = (...extra: string[]) => [
    'link',
    ...bed.storeArgs(bucket),
    '--name',
    'other',
    '--passphrase-file',
    bed.passFile,
    ...extra,
  ];

  it('link refuses a mount point or cache folder inside a mounted filespace, in another cache, or a cache in its own mount point', async () => {
    await m.ok('mount', 'main');
    try {
      const mainCache = path.join(m.home, 'cache', 'main');
      await failsCleanly(
        link('--mount-point', path.join(mnt, 'sub')),
        /mount point .*\/mnt-main\/sub is inside the mounted filespace at .*\/mnt-main /,
      );
      await failsCleanly(link('--mount-point', mnt), /mount point .*\/mnt-main is the mounted filespace at .*\/mnt-main /);
      await failsCleanly(
        link('--mount-point', free, '--cache-dir', path.join(mnt, 'cache')),
        /cache folder .*\/mnt-main\/cache is inside the mounted filespace at /,
      );
      await failsCleanly(
        link('--mount-point', free, '--cache-dir', path.join(mainCache, 'x')),
        /cache folder .* is inside the cache folder of "main"/,
      );
      await failsCleanly(link('--mount-point', mainCache), /mount point .* is the cache folder of "main"/);
      await failsCleanly(
        link('--mount-point', free, '--cache-dir', path.join(free, 'cache')),
        /cache folder .* is inside this filespace's own mount point/,
      );
      // Through a symlink, too: real paths are compared.
      const alias = path.join(bed.root, 'alias-of-main');
      await fsp.symlink(mnt, alias);
      await failsCleanly(
        link('--mount-point', free, '--cache-dir', path.join(alias, 'cache')),
        /cache folder .*alias-of-main\/cache is inside the mounted filespace at /,
      );
    } finally {
      await m.ok('unmount', 'main');
    }
    // Not mounted, its mount point is still a filespace's.
    await failsCleanly(
      link('--mount-point', free, '--cache-dir', path.join(mnt, 'cache')),
      /cache folder .* is inside the mount point of "main"/,
    );
  });

  it("a mount whose cache folder lies in another filespace's mount point is refused and creates nothing there", async () => {
    const mnt2 = path.join(m.home, 'mnt-second');
    await fsp.mkdir(mnt2);
    await m.ok('link', ...bed.storeArgs(bucket), '--mount-point', mnt2, '--name', 'second', '--passphrase-file', bed.passFile);
    const h = homes(m.env);
    const cfg = await loadConfig(h, 'second');
    // A configuration from before these checks, or edited by hand.
    await saveConfig(h, { ...cfg, cacheDir: path.join(mnt, 'second-cache') });
    try {
      await failsCleanly(
        ['mount', 'second', '--foreground'],
        /cache folder .*\/mnt-main\/second-cache is inside the mount point of "main"/,
      );
      const daemon = await m.cli('mount', 'second');
      assert.equal(daemon.code, 1);
      assert.match(daemon.stderr, /inside the mount point of "main"/);
      assert.deepEqual(await fsp.readdir(mnt), [], 'nothing was created in the other mount point');
      await saveConfig(h, { ...cfg, mountPoint: path.join(mnt, 'inside') });
      await failsCleanly(
        ['mount', 'second', '--foreground'],
        /mount point .*\/mnt-main\/inside is inside the mount point of "main"/,
      );
      assert.deepEqual(await fsp.readdir(mnt), []);
    } finally {
      await saveConfig(h, cfg);
    }
    // Both still mount (one at a time: they are the same filespace, and one machine writes it).
    await m.ok('mount', 'main');
    await m.ok('unmount', 'main');
    await m.ok('mount', 'second');
    await m.ok('unmount', 'second');
  });

  describe('in the desktop app', () => {
    let dir: string;
    let appHome: string;
    let h: Homes;
    let host: RunningHost | undefined;
    let mntA: string;
    let mntB: string;

    /** Links a filespace on an embedded store (no AWS keys needed), as the CLI would. */
    async function localFilespace(name: string): Promise<string> {
      const root = path.join(dir, `store-${name}`);
      const store = new LocalDiskStore(root);
      await createFilespace(store, 'local passphrase', 1024 * 1024);
      await store.close();
      const mp = path.join(dir, 'mounts', name);
      await fsp.mkdir(mp, { recursive: true });
      await linkFilespace(h, name, { kind: 'local', root }, mp, undefined, 64 * 1024 * 1024, path.join(dir, 'pass'));
      return mp;
    }

    /** Calls the app host as its window does; a host stuck on its own mount shows as a timeout. */
    async function call(route: string, body: unknown): Promise<{ status: number; body: { code?: string; message?: string } }> {
      const res = await fetch(`${host!.url}/app/${route}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${host!.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(60_000),
      });
      return { status: res.status, body: JSON.parse(await res.text()) as { code?: string; message?: string } };
    }

    async function refused(route: string, body: unknown, code: string, pattern: RegExp): Promise<void> {
      const before = await snapshotDir(dir);
      const r = await call(route, body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.equal(r.body.code, code);
      assert.match(r.body.message ?? '', pattern);
      assert.ok(!(r.body.message ?? '').includes('\n'), 'one line');
      assert.deepEqual(await snapshotDir(dir), before, 'nothing changed on disk');
    }

    before(async () => {
      dir = await tmpDir('app-place');
      appHome = path.join(dir, 'home');
      h = homes({ FILESPACE_HOME: appHome });
      await fsp.writeFile(path.join(dir, 'pass'), 'local passphrase', { mode: 0o600 });
      mntA = await localFilespace('a');
      mntB = await localFilespace('b');
      // No keychain is needed: these filespaces keep their passphrase in a file.
      host = await startAppHost({
        home: appHome,
        userHome: path.join(dir, 'user'),
        mountRoot: path.join(dir, 'mounts'),
        keychainService: 'filespace-placement-test',
        env: {},
      });
    });

    after(async () => {
      // A host stuck on its own mount is freed only by aborting that mount's connection.
      if (
        host &&
        (await call('app.settings.get', {}).then(
          () => false,
          () => true,
        ))
      )
        await run('umount', ['-f', mntA]);
      await host?.stop();
      for (const mp of [mntA, mntB]) await run('fusermount', ['-uz', mp]);
      await fsp.rm(dir, { recursive: true, force: true });
    });

    it(
      'refuses cache folders and mount points inside a filespace it serves, or in another cache, and keeps serving',
      { timeout: 300_000 },
      async () => {
        const mounted = await call('filespace.mount', { name: 'a' });
        assert.equal(mounted.status, 200, JSON.stringify(mounted.body));
        // A configuration that puts b's mount point inside a (made before these checks, or by
        // hand): mounting it would have the host enter its own mount synchronously.
        const cfgB = await loadConfig(h, 'b');
        await saveConfig(h, { ...cfgB, mountPoint: path.join(mntA, 'b') });
        try {
          await refused('filespace.mount', { name: 'b' }, 'BAD_MOUNT_POINT', /is inside the mounted filespace at /);
        } finally {
          await saveConfig(h, cfgB);
        }
        const cacheA = (await loadConfig(h, 'a')).cacheDir;
        const cacheB = (await loadConfig(h, 'b')).cacheDir;
        await refused(
          'settings.moveCache',
          { name: 'b', cacheDir: path.join(mntA, 'b-cache') },
          'BAD_CACHE_DIR',
          /is inside the mounted filespace at .*\/mounts\/a /,
        );
        await refused(
          'settings.moveCache',
          { name: 'b', cacheDir: path.join(mntB, 'b-cache') },
          'BAD_CACHE_DIR',
          /is inside this filespace's own mount point/,
        );
        await refused(
          'settings.moveCache',
          { name: 'b', cacheDir: path.join(cacheA, 'b-cache') },
          'BAD_CACHE_DIR',
          /is inside the cache folder of "a"/,
        );
        await refused(
          'mountpoint.check',
          { path: path.join(mntA, 'new') },
          'BAD_MOUNT_POINT',
          /is inside the mounted filespace at /,
        );
        assert.equal((await loadConfig(h, 'b')).cacheDir, cacheB, 'the configuration is unchanged');

        // The app's own link checks before it creates anything (a filespace in the bucket, folders).
        // (Keys for a store that is not there: nothing may reach it.)
        const vault = new CredentialVault(new MemorySecrets());
        await vault.saveKeys({
          accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
          secretAccessKey: 's',
          region: 'us-east-1',
          endpoint: 'http://127.0.0.1:9',
          pathStyle: true,
        });
        const local = new AppHost({ homes: h, vault, log: () => undefined });
        await local.init();
        const beforeLink = await snapshotDir(dir);
        await assert.rejects(
          local.handlers['filespace.link']({
            mode: 'create',
            target: { bucket: 'some-bucket', prefix: '' },
            passphrase: 'p',
            name: 'c',
            mountPoint: path.join(mntA, 'c'),
            cacheCapBytes: 64 * 1024 * 1024,
          }),
          (e: { code?: string; message?: string }) =>
            e.code === 'BAD_MOUNT_POINT' && /is inside the mounted filespace at /.test(e.message ?? ''),
        );
        assert.deepEqual(await snapshotDir(dir), beforeLink);
        await local.shutdown();

        const status = await call('app.settings.get', {});
        assert.equal(status.status, 200, 'the host still answers');
        assert.deepEqual(await fsp.readdir(mntA), [], 'nothing was created inside the served mount');
        const un = await call('filespace.unmount', { name: 'a', force: false });
        assert.equal(un.status, 200, JSON.stringify(un.body));
      },
    );

    it(
      "a refused mount leaves no folder in an unmounted filespace's mount point, so both still mount",
      { timeout: 300_000 },
      async () => {
        const cfgB = await loadConfig(h, 'b');
        await saveConfig(h, { ...cfgB, cacheDir: path.join(mntA, 'b-cache') });
        try {
          await refused('filespace.mount', { name: 'b' }, 'BAD_CACHE_DIR', /is inside the mount point of "a"/);
        } finally {
          await saveConfig(h, cfgB);
        }
        assert.deepEqual(await fsp.readdir(mntA), []);
        for (const name of ['a', 'b']) assert.equal((await call('filespace.mount', { name })).status, 200);
        for (const name of ['b', 'a']) assert.equal((await call('filespace.unmount', { name, force: false })).status, 200);
      },
    );
  });
});
