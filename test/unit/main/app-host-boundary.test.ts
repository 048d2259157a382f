// The app host's boundaries in plain Node: request validation and error translation (dispatch),
// the loopback HTTP server's token, Host and CSP rules, the keychain vault, app settings
// persistence, mount point checks, the IAM policy it suggests, and that it calls its own mounts
// directly (never over their control sockets).

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { appEventSchema, appRoutes, appStatusSchema } from '../../../electron/contract/app';
import { homes, listConfigs, loadConfig, readPassphraseFile, saveConfig, type LinkConfig } from '../../../electron/host/config';
import * as control from '../../../electron/host/control';
import { MountHost } from '../../../electron/host/mountHost';
import { UserError } from '../../../electron/engine/errors';
import { StoreError } from '../../../electron/engine/store/types';
import { dispatch as dispatchRoutes } from '../../../electron/host/dispatch';
import { HostError } from '../../../electron/host/errors';
import { KeychainError } from '../../../native/keychain';
import { checkMountPoint } from '../../../electron/host/mountPoint';
import { AppHost, type AppHandlers } from '../../../electron/main/appHost';
import { AppSettingsFile, DEFAULT_APP_SETTINGS } from '../../../electron/main/appSettings';
import { minimalPolicy } from '../../../electron/main/permissions';
import { startAppServer, type AppServer } from '../../../electron/main/server';
import { CredentialVault, keyIdHint } from '../../../electron/main/vault';
import { physicalSize } from '../../../electron/engine/cache/sealed';
import type { SecretStore } from '../../../native/keychain';

/** A SecretStore in memory, for logic above the keychain (the keychain itself is tested against gnome-keyring). */
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

const logs: string[] = [];
const log = (m: string) => logs.push(m);
const dispatch = (h: AppHandlers, route: unknown, body: unknown, l: (m: string) => void) =>
  dispatchRoutes(appRoutes, h, route, body, l);

describe('dispatch', () => {
  const handlers = {
    'keys.forget': async () => ({ ok: true }),
    'uploads.pause': async ({ paused }: { paused: boolean }) => {
      if (paused) throw new HostError('cannot pause now', 'BAD_INPUT');
      throw new Error('boom');
    },
    'keys.check': async ({ accessKeyId }: { accessKeyId: string }) => {
      if (accessKeyId === 'AKIAENGINE') throw new UserError('wrong passphrase for this filespace', 'WRONG_PASSPHRASE');
      if (accessKeyId === 'AKIASTORE')
        throw new StoreError('InvalidCredentials', 'The AWS Access Key Id you provided does not exist');
      throw new KeychainError('the OS keychain refused to store a secret');
    },
    'app.status': async () => ({ filespaces: 'not an array' }),
  } as unknown as AppHandlers;

  it('refuses unknown routes and malformed bodies before any handler runs', async () => {
    assert.deepEqual(await dispatch(handlers, 'rm -rf', {}, log), {
      ok: false,
      status: 404,
      error: { code: 'NOT_FOUND', message: 'no such request: rm -rf' },
    });
    assert.deepEqual(await dispatch(handlers, 'toString', {}, log), {
      ok: false,
      status: 404,
      error: { code: 'NOT_FOUND', message: 'no such request: toString' },
    });
    const bad = await dispatch(handlers, 'uploads.pause', { paused: 'yes' }, log);
    assert.equal(bad.ok, false);
    assert.equal(!bad.ok && bad.error.code, 'INVALID');
    assert.match(!bad.ok ? bad.error.message : '', /^invalid request: paused:/);
    const extra = await dispatch(handlers, 'keys.forget', { secret: 'x' }, log);
    assert.equal(!extra.ok && extra.error.code, 'INVALID', 'unknown fields are refused');
    const nothing = await dispatch(handlers, 'keys.forget', null, log);
    assert.equal(!nothing.ok && nothing.error.code, 'INVALID', 'a JSON null is not an empty request');
  });

  it('keeps the code of expected errors, hides nothing but reports unexpected ones as INTERNAL', async () => {
    assert.deepEqual(await dispatch(handlers, 'uploads.pause', { paused: true }, log), {
      ok: false,
      status: 400,
      error: { code: 'BAD_INPUT', message: 'cannot pause now' },
    });
    const keys = (accessKeyId: string) => dispatch(handlers, 'keys.check', { accessKeyId, secretAccessKey: 's' }, log);
    assert.deepEqual(await keys('AKIAENGINE'), {
      ok: false,
      status: 400,
      error: { code: 'WRONG_PASSPHRASE', message: 'wrong passphrase for this filespace' },
    });
    assert.deepEqual(await keys('AKIASTORE'), {
      ok: false,
      status: 400,
      error: { code: 'BAD_CREDENTIALS', message: 'The AWS Access Key Id you provided does not exist' },
    });
    assert.deepEqual(await keys('AKIAKEYCHAIN'), {
      ok: false,
      status: 503,
      error: { code: 'KEYCHAIN', message: 'the OS keychain refused to store a secret' },
    });
    const internal = await dispatch(handlers, 'uploads.pause', { paused: false }, log);
    assert.deepEqual(internal, { ok: false, status: 500, error: { code: 'INTERNAL', message: 'boom' } });
    assert.ok(
      logs.some((l) => l.includes('boom')),
      'unexpected errors are logged',
    );
  });

  it('refuses to pass on an answer that breaks the contract', async () => {
    const out = await dispatch(handlers, 'app.status', {}, log);
    assert.equal(!out.ok && out.error.code, 'BAD_RESPONSE');
    assert.deepEqual(await dispatch(handlers, 'keys.forget', {}, log), { ok: true, data: { ok: true } });
  });
});

describe('status feed', () => {
  it('a change published while nobody listens does not block later events', { timeout: 20_000 }, async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-feed-'));
    const host = new AppHost({
      homes: homes({ FILESPACE_HOME: dir }),
      vault: new CredentialVault(new MemorySecrets()),
      log,
      sampleMs: 3_600_000,
    });
    try {
      await host.init();
      await host.publish(); // e.g. a mount at start, before any window is open
      const seen: boolean[] = [];
      let wake: () => void = () => undefined;
      const unsubscribe = host.subscribe((e) => {
        seen.push(e.status.uploadsPaused);
        wake();
      });
      const next = () => new Promise<void>((r) => (wake = r));
      if (seen.length === 0) await next();
      const second = next();
      await host.handlers['uploads.pause']({ paused: true });
      await second;
      unsubscribe();
      assert.deepEqual(seen, [false, true]);
    } finally {
      await host.shutdown();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});

describe('credential vault', () => {
  it('stores keys and passphrases; tells the UI only a key id hint', async () => {
    const secrets = new MemorySecrets();
    const v = new CredentialVault(secrets);
    assert.deepEqual(await v.info(), { stored: false });
    const info = await v.saveKeys({
      accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
      secretAccessKey: 'wJalrXUtnFEMI',
      region: 'eu-west-1',
      pathStyle: false,
    });
    assert.deepEqual(info, { stored: true, accessKeyIdHint: 'AKIAIOSF…', region: 'eu-west-1' });
    assert.ok(!JSON.stringify(await v.info()).includes('wJalrXUtnFEMI'));
    assert.equal((await v.keys())?.secretAccessKey, 'wJalrXUtnFEMI');
    await v.savePassphrase('id-1', 'pass one');
    assert.equal(await v.passphrase('id-1'), 'pass one');
    assert.equal(await v.passphrase('id-2'), undefined);
    await v.forgetKeys();
    assert.equal(await v.keys(), undefined);
    assert.deepEqual([...secrets.map.keys()], ['passphrase:id-1']);
    secrets.map.set('aws-keys', '{not json');
    assert.equal(await v.keys(), undefined, 'a damaged entry reads as no keys');
    assert.equal(keyIdHint('AKIA12'), 'AKIA…');
  });
});

describe('app settings file', () => {
  let dir: string;
  before(async () => (dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-appset-'))));
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  it('starts from defaults, saves owner-only, and reads back', async () => {
    const f = AppSettingsFile.in(dir);
    assert.deepEqual(await f.load(), { settings: DEFAULT_APP_SETTINGS });
    await f.update({ uploadsPaused: true, mountAtStart: ['team'] });
    assert.deepEqual((await f.load()).settings, { version: 1, uploadsPaused: true, startAtLogin: false, mountAtStart: ['team'] });
    assert.equal((await fsp.stat(f.file)).mode & 0o777, 0o600);
  });

  it('sets a damaged file aside instead of overwriting it silently', async () => {
    const f = AppSettingsFile.in(dir);
    await fsp.writeFile(f.file, '{"version": 1, "uploadsPaused": "maybe"}');
    const r = await f.load();
    assert.deepEqual(r.settings, DEFAULT_APP_SETTINGS);
    assert.ok(r.damaged && r.damaged.startsWith(`${f.file}.damaged-`));
    assert.equal(await fsp.readFile(r.damaged, 'utf8'), '{"version": 1, "uploadsPaused": "maybe"}');
  });
});

describe('mount point and policy rules', () => {
  it('accepts a missing or empty folder; refuses a relative path, a file, a non-empty folder', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-mp-'));
    try {
      assert.equal(await checkMountPoint(path.join(dir, 'new'), 'allow'), false);
      assert.equal(await checkMountPoint(dir, 'allow'), true);
      await assert.rejects(
        checkMountPoint(path.join(dir, 'absent')),
        { code: 'NO_MOUNT_POINT' },
        'the command does not create it',
      );
      await assert.rejects(checkMountPoint('relative/dir', 'allow'), { code: 'NOT_ABSOLUTE' });
      await fsp.writeFile(path.join(dir, 'f'), 'x');
      await assert.rejects(checkMountPoint(path.join(dir, 'f'), 'allow'), { code: 'NOT_A_DIRECTORY' });
      await assert.rejects(
        checkMountPoint(dir, 'allow'),
        (e: HostError) => e.code === 'NOT_EMPTY' && /is not empty; pick an empty folder/.test(e.message),
      );
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('limits the policy to the prefix when there is one', () => {
    const p = JSON.parse(minimalPolicy({ bucket: 'b', prefix: 'team/docs' })) as { Statement: Array<Record<string, unknown>> };
    assert.deepEqual(p.Statement[0], {
      Sid: 'FilespaceList',
      Effect: 'Allow',
      Action: ['s3:ListBucket'],
      Resource: 'arn:aws:s3:::b',
      Condition: { StringLike: { 's3:prefix': ['team/docs/', 'team/docs/*'] } },
    });
    assert.equal(p.Statement[1]!.Resource, 'arn:aws:s3:::b/team/docs/*');
    const whole = JSON.parse(minimalPolicy({ bucket: 'b', prefix: '' })) as { Statement: Array<Record<string, unknown>> };
    assert.equal(whole.Statement[0]!.Condition, undefined);
    assert.equal(whole.Statement[1]!.Resource, 'arn:aws:s3:::b/*');
  });
});

describe('loopback HTTP server', () => {
  let dir: string;
  let server: AppServer;
  let host: AppHost;

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-appsrv-'));
    await fsp.mkdir(path.join(dir, 'renderer'));
    await fsp.writeFile(path.join(dir, 'renderer', 'index.html'), '<!doctype html><title>t</title>');
    host = new AppHost({
      homes: homes({ FILESPACE_HOME: path.join(dir, 'home') }),
      vault: new CredentialVault(new MemorySecrets()),
      log,
      sampleMs: 50,
    });
    await host.init();
    server = await startAppServer(host, {
      rendererDir: path.join(dir, 'renderer'),
      tokenFile: path.join(dir, 'home', 'run', 'app-http.json'),
      log,
    });
  });
  after(async () => {
    await server.close();
    await host.shutdown();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  function request(
    p: string,
    opts: { method?: string; token?: string | null; host?: string; body?: string } = {},
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
    const u = new URL(server.url);
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: p,
          method: opts.method ?? 'POST',
          headers: {
            host: opts.host ?? u.host,
            'content-type': 'application/json',
            ...(opts.token === null ? {} : { authorization: `Bearer ${opts.token ?? server.token}` }),
          },
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        },
      );
      req.on('error', reject);
      req.end(opts.method === 'GET' ? undefined : (opts.body ?? '{}'));
    });
  }

  it('serves the page with a strict CSP, without needing the token', async () => {
    const r = await request('/', { method: 'GET', token: null });
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-security-policy']), /default-src 'none'; script-src 'self'/);
    assert.equal(r.headers['x-content-type-options'], 'nosniff');
  });

  it('answers the contract only with the right token and Host', async () => {
    assert.equal((await request('/app/app.status', { token: null })).status, 401);
    assert.equal((await request('/app/app.status', { token: 'x'.repeat(43) })).status, 401);
    assert.equal((await request('/app/app.status', { host: 'evil.example:80' })).status, 421, 'a rebinding Host is refused');
    const ok = await request('/app/app.status');
    assert.equal(ok.status, 200);
    assert.deepEqual(appStatusSchema.parse(JSON.parse(ok.body)), {
      filespaces: [],
      uploadsPaused: false,
      keys: { stored: false },
    });
  });

  it('sends errors as {code, message}', async () => {
    assert.deepEqual(JSON.parse((await request('/app/app.status', { body: '{' })).body), {
      code: 'BAD_JSON',
      message: 'request body is not valid JSON',
    });
    assert.equal((await request('/app/app.status', { body: JSON.stringify({ pad: 'x'.repeat(20_000) }) })).status, 413);
    assert.equal((await request('/app/app.status', { method: 'GET' })).status, 405);
    const missing = await request('/app/filespace.mount', { body: JSON.stringify({ name: 'nothing' }) });
    assert.equal(missing.status, 400);
    assert.equal((JSON.parse(missing.body) as { code: unknown }).code, 'UNKNOWN_NAME');
  });

  it('keeps the token in an owner-only file', async () => {
    const file = path.join(dir, 'home', 'run', 'app-http.json');
    assert.equal((await fsp.stat(file)).mode & 0o777, 0o600);
    assert.equal((JSON.parse(await fsp.readFile(file, 'utf8')) as { token: unknown }).token, server.token);
  });

  it('streams status events and pushes a change without being asked', async () => {
    const u = new URL(server.url);
    const events: unknown[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          host: u.hostname,
          port: u.port,
          path: '/app/events',
          method: 'GET',
          headers: { authorization: `Bearer ${server.token}` },
        },
        (res) => {
          assert.equal(res.headers['content-type'], 'text/event-stream');
          let buf = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            buf += d;
            for (const frame of buf.split('\n\n').slice(0, -1)) {
              const data = frame.split('\n').find((l) => l.startsWith('data: '));
              if (data) events.push(appEventSchema.parse(JSON.parse(data.slice(6))));
            }
            buf = buf.slice(buf.lastIndexOf('\n\n') + 2);
            if (events.length === 1) void request('/app/uploads.pause', { body: '{"paused":true}' });
            if (events.length === 2) {
              req.destroy();
              resolve();
            }
          });
        },
      );
      req.on('error', (e) => (events.length >= 2 ? undefined : reject(e)));
      req.end();
    });
    assert.deepEqual(
      events.map((e) => (e as { status: { uploadsPaused: boolean } }).status.uploadsPaused),
      [false, true],
    );
  });
});

describe('unlinking and forgetting keys', () => {
  it('refuses to unlink while changes wait in the cache unless told to discard them; forgets the passphrase', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-unlink-'));
    const secrets = new MemorySecrets();
    const vault = new CredentialVault(secrets);
    const h = homes({ FILESPACE_HOME: dir });
    const host = new AppHost({ homes: h, vault, log });
    try {
      await host.init();
      const cacheDir = path.join(h.cacheRoot, 'team');
      await fsp.mkdir(path.join(cacheDir, 'dirty'), { recursive: true });
      // One dirty chunk holding 1000 data bytes (sealed on disk, so larger), and a pre-image that is not data.
      await fsp.writeFile(path.join(cacheDir, 'dirty', '7.0'), Buffer.alloc(physicalSize(1000)));
      await fsp.writeFile(path.join(cacheDir, 'dirty', '7.0.pre'), Buffer.alloc(100));
      await saveConfig(h, {
        version: 1,
        name: 'team',
        filespaceId: 'fs-1',
        store: { kind: 'local', root: path.join(dir, 'store') },
        mountPoint: path.join(dir, 'mnt'),
        cacheDir,
        passphraseFile: '',
        settings: {},
        secrets: 'keychain',
        conditionalWrites: true,
      });
      await vault.savePassphrase('fs-1', 'the passphrase');
      await vault.saveKeys({ accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 's', region: 'us-east-1', pathStyle: false });

      const status = await dispatch(host.handlers, 'app.status', {}, log);
      assert.ok(status.ok);
      const team = (
        status.data as { filespaces: Array<{ name: string; status: { state: string; dirtyFiles: number; dirtyBytes: number } }> }
      ).filespaces[0]!;
      assert.deepEqual(
        [team.name, team.status.state, team.status.dirtyFiles, team.status.dirtyBytes],
        ['team', 'unmounted', 1, 1000],
      );

      const refused = await dispatch(host.handlers, 'filespace.unlink', { name: 'team' }, log);
      assert.equal(!refused.ok && refused.error.code, 'DIRTY');
      assert.match(!refused.ok ? refused.error.message : '', /1 file\(s\) not yet uploaded/);
      assert.deepEqual(await listConfigs(h), ['team'], 'a refused unlink changes nothing');

      assert.deepEqual(await dispatch(host.handlers, 'filespace.unlink', { name: 'team', discardPending: true }, log), {
        ok: true,
        data: { ok: true },
      });
      assert.deepEqual(await listConfigs(h), []);
      await assert.rejects(fsp.stat(cacheDir), { code: 'ENOENT' });
      assert.equal(await vault.passphrase('fs-1'), undefined, 'the passphrase left the keychain');

      assert.deepEqual(await dispatch(host.handlers, 'keys.forget', {}, log), { ok: true, data: { ok: true } });
      assert.deepEqual(await secrets.accounts(), []);
      const after = await dispatch(host.handlers, 'app.status', {}, log);
      assert.deepEqual(after.ok && (after.data as { keys: unknown }).keys, { stored: false });
      const noKeys = await dispatch(host.handlers, 'bucket.check', { bucket: 'my-bucket' }, log);
      assert.deepEqual(noKeys, {
        ok: false,
        status: 400,
        error: { code: 'NO_KEYS', message: 'no AWS keys are stored yet: enter them first' },
      });
    } finally {
      await host.shutdown();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('moves the cache of an unmounted filespace with its pending data, and refuses a non-empty target', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-move-'));
    const h = homes({ FILESPACE_HOME: dir });
    const host = new AppHost({ homes: h, vault: new CredentialVault(new MemorySecrets()), log });
    try {
      await host.init();
      const from = path.join(h.cacheRoot, 'team');
      await fsp.mkdir(path.join(from, 'dirty'), { recursive: true });
      await fsp.writeFile(path.join(from, 'dirty', '7.0'), 'pending chunk');
      await fsp.writeFile(path.join(from, 'index'), 'clean index');
      await saveConfig(h, {
        version: 1,
        name: 'team',
        filespaceId: 'fs-1',
        store: { kind: 'local', root: path.join(dir, 'store') },
        mountPoint: path.join(dir, 'mnt'),
        cacheDir: from,
        passphraseFile: '',
        settings: {},
        secrets: 'keychain',
        conditionalWrites: true,
      });
      const busy = path.join(dir, 'busy');
      await fsp.mkdir(busy);
      await fsp.writeFile(path.join(busy, 'x'), 'x');
      const refused = await dispatch(host.handlers, 'settings.moveCache', { name: 'team', cacheDir: busy }, log);
      assert.equal(!refused.ok && refused.error.code, 'CACHE_NOT_EMPTY');
      const inside = await dispatch(host.handlers, 'settings.moveCache', { name: 'team', cacheDir: path.join(from, 'sub') }, log);
      assert.equal(!inside.ok && inside.error.code, 'BAD_CACHE_DIR');
      assert.equal(await fsp.readFile(path.join(from, 'dirty', '7.0'), 'utf8'), 'pending chunk', 'refusals change nothing');

      const to = path.join(dir, 'elsewhere', 'team-cache');
      const moved = await dispatch(host.handlers, 'settings.moveCache', { name: 'team', cacheDir: to }, log);
      assert.ok(moved.ok, JSON.stringify(moved));
      assert.equal((moved.data as { cacheDir: string }).cacheDir, to);
      assert.equal(await fsp.readFile(path.join(to, 'dirty', '7.0'), 'utf8'), 'pending chunk');
      assert.equal(await fsp.readFile(path.join(to, 'index'), 'utf8'), 'clean index');
      await assert.rejects(fsp.stat(from), { code: 'ENOENT' });
      assert.equal((await loadConfig(h, 'team')).cacheDir, to);
    } finally {
      await host.shutdown();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });

  it('the CLI says where the passphrase of an app-linked filespace lives', async () => {
    await assert.rejects(
      readPassphraseFile(''),
      (e: HostError) => e.code === 'PASSPHRASE_IN_KEYCHAIN' && /desktop app/.test(e.message),
    );
  });
});

describe("the app's own mounts", () => {
  it('are asked directly for status, settings, unlink and moving the cache, never over their control socket', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-own-'));
    const h = homes({ FILESPACE_HOME: dir });
    const host = new AppHost({ homes: h, vault: new CredentialVault(new MemorySecrets()), log });
    const socketCalls: string[] = [];
    const realCallControl = control.callControl;
    (control as { callControl: unknown }).callControl = (socket: string, route: string, ...rest: unknown[]) => {
      socketCalls.push(route);
      return (realCallControl as (...a: unknown[]) => unknown)(socket, route, ...rest);
    };
    try {
      await host.init();
      const cfg: LinkConfig = {
        version: 1,
        name: 'team',
        filespaceId: 'fs-1',
        store: { kind: 'local', root: path.join(dir, 'store') },
        mountPoint: path.join(dir, 'mnt'),
        cacheDir: path.join(h.cacheRoot, 'team'),
        passphraseFile: '',
        settings: {},
        secrets: 'keychain',
        conditionalWrites: true,
      };
      await saveConfig(h, cfg);
      // A mount this app runs (its engine is not needed to answer these requests).
      const own = new MountHost(cfg, h, { log });
      own.state = 'mounted';
      (host as unknown as { mounts: Map<string, MountHost> }).mounts.set('team', own);

      const status = await dispatch(host.handlers, 'app.status', {}, log);
      assert.ok(status.ok);
      assert.equal(
        (status.data as { filespaces: Array<{ status: { state: string; pid?: number } }> }).filespaces[0]!.status.state,
        'mounted',
      );
      const set = await dispatch(
        host.handlers,
        'settings.set',
        { name: 'team', change: { uploadLimitBytesPerSec: 64 * 1024 } },
        log,
      );
      assert.deepEqual(set, { ok: true, data: { applied: 'live' } });
      assert.equal((await loadConfig(h, 'team')).settings.uploadLimitBytesPerSec, 64 * 1024);
      const unlink = await dispatch(host.handlers, 'filespace.unlink', { name: 'team', discardPending: true }, log);
      assert.equal(!unlink.ok && unlink.error.code, 'MOUNTED');
      const move = await dispatch(
        host.handlers,
        'settings.moveCache',
        { name: 'team', cacheDir: path.join(dir, 'elsewhere') },
        log,
      );
      assert.equal(!move.ok && move.error.code, 'MOUNTED');
      assert.deepEqual(socketCalls, [], 'no request went over a control socket into this process');
      (host as unknown as { mounts: Map<string, MountHost> }).mounts.delete('team');
    } finally {
      (control as { callControl: unknown }).callControl = realCallControl;
      await host.shutdown();
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
