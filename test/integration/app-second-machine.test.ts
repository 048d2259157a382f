/**
 * The app host as one of several computers on a filespace, over its contract (the routes the
 * window calls), against a real S3 server, real FUSE and a real keychain; the other computer is
 * the `filespace` command on another FILESPACE_HOME. A lease held elsewhere is LEASE_HELD in
 * words (who writes, no command flags); `filespace.writer` says who writes; a follower mounted
 * read-only is not switched to writing while the writer lives; after the command takes the
 * filespace over, the app's unsent changes are set aside at its next mount and are listed,
 * exported and discarded through `aside.*`; once the other computer unmounts, the follower
 * switches to writing. Recovery requests with a malformed key, or for a filespace without a
 * recovery key, are refused with their codes.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AppStatus, AsideSetDto, FilespaceSummary, WriterInfo } from '../../electron/contract/app';
import { callHost, isMounted, RunningHost, startAppHost } from '../helpers/appHost';
import { Bed, Linked, sh, until } from '../helpers/bed';
import { Keyring, startKeyring } from '../helpers/keyring';

const PASSPHRASE = 'correct horse battery staple';

describe('the app host as a second computer', () => {
  const bed = new Bed();
  let keyring: Keyring;
  let host: RunningHost;
  let other: Linked & { bucket: string };
  let root: string;
  let mnt: string;

  const call = async (route: string, body: unknown) => {
    const r = await callHost(host, route, body);
    return { status: r.status, body: JSON.parse(r.text) as Record<string, unknown> & { code?: string; message?: string } };
  };
  const summary = async (): Promise<FilespaceSummary> =>
    ((await call('app.status', {})).body as unknown as AppStatus).filespaces.find((f) => f.name === 'shared')!;

  before(async () => {
    await bed.start();
    keyring = await startKeyring();
    // The command's computer creates the filespace; the app links it.
    other = await bed.filespace();
    root = path.join(bed.root, 'app');
    mnt = path.join(root, 'mnt', 'shared');
    host = await startAppHost({
      home: path.join(root, 'home'),
      userHome: path.join(root, 'user'),
      mountRoot: path.join(root, 'mnt'),
      keychainService: `filespace-it-${process.pid}`,
      env: keyring.env,
    });
    const keys = await call('keys.check', {
      accessKeyId: 'test',
      secretAccessKey: 'test',
      endpoint: bed.endpoint,
      pathStyle: true,
    });
    assert.equal(keys.status, 200, JSON.stringify(keys.body));
    const linked = await call('filespace.link', {
      mode: 'link',
      target: { bucket: other.bucket, prefix: '' },
      passphrase: PASSPHRASE,
      name: 'shared',
      mountPoint: mnt,
      cacheCapBytes: 64 * 1024 * 1024,
    });
    assert.equal(linked.status, 200, JSON.stringify(linked.body));
  });

  after(async () => {
    if (process.env.FILESPACE_UI_DEBUG) process.stderr.write(host?.stderr() ?? '');
    await host?.stop();
    if (mnt && (await isMounted(mnt))) await sh(`fusermount -uz '${mnt}'`).catch(() => undefined);
    await keyring?.stop();
    await bed.stop();
  });

  it('is the writer when nobody else writes; the other computer is refused', async () => {
    const r = await call('filespace.mount', { name: 'shared' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((await summary()).status.lease?.role, 'writer');
    const w = (await call('filespace.writer', { name: 'shared' })).body as unknown as WriterInfo;
    assert.equal(w.writer?.thisComputer, true);
    await fsp.writeFile(path.join(mnt, 'a.txt'), 'from the app');
    await until('a.txt uploaded', async () => {
      const s = (await summary()).status;
      return s.dirtyBytes === 0 && s.pendingMetaOps === 0;
    });
    const refused = await other.machine.cli('mount', other.name);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /being written by/);
  });

  it('loses the filespace to a takeover; its unsent change stays in its cache', async () => {
    assert.equal((await call('uploads.pause', { paused: true })).status, 200);
    await fsp.writeFile(path.join(mnt, 'local.txt'), 'unsent, on the app computer');
    await until('local.txt is pending', async () => (await summary()).status.dirtyFiles > 0);
    await other.mount({ takeover: true });
    await until('the app stopped writing', async () => (await summary()).status.readOnlyReason, 120_000);
    assert.equal((await call('filespace.unmount', { name: 'shared' })).status, 200);
    assert.equal(await isMounted(mnt), false);
  });

  it('says who writes, in words, when its mount is refused, and mounts nothing', async () => {
    const r = await call('filespace.mount', { name: 'shared' });
    assert.equal(r.status, 409);
    assert.equal(r.body.code, 'LEASE_HELD');
    assert.equal(
      r.body.message,
      `"shared" is being written by ${os.hostname()}: open it read-only here, or take over if ${os.hostname()} is off or gone`,
    );
    assert.equal(await isMounted(mnt), false);
    const w = (await call('filespace.writer', { name: 'shared' })).body as unknown as WriterInfo;
    assert.ok(w.writer);
    assert.equal(w.writer.computer, os.hostname());
    assert.equal(w.writer.live, true);
    assert.equal(w.writer.thisComputer, false);
    assert.ok(w.writer.since <= w.writer.lastHeard && w.writer.lastHeard <= Date.now() + 5000);
  });

  it('opens read-only as a follower, keeps following when asked to write while the writer lives', async () => {
    const r = await call('filespace.mount', { name: 'shared', mode: 'read' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const s = (await summary()).status;
    assert.equal(s.lease?.role, 'follower');
    assert.match(s.lease?.holder ?? '', new RegExp(`^${os.hostname()} `));
    assert.equal(await fsp.readFile(path.join(mnt, 'a.txt'), 'utf8'), 'from the app');
    const sw = await call('filespace.mount', { name: 'shared', mode: 'write' });
    assert.equal(sw.status, 409);
    assert.equal(sw.body.code, 'LEASE_HELD');
    assert.equal((await summary()).status.state, 'mounted', 'a refused switch leaves the follower mounted');
    assert.equal((await summary()).status.lease?.role, 'follower');
  });

  it('lists, exports and discards the changes set aside at that mount', async () => {
    assert.equal((await summary()).status.aside?.length, 1);
    const { sets } = (await call('aside.list', { name: 'shared' })).body as unknown as { sets: AsideSetDto[] };
    assert.equal(sets.length, 1);
    assert.deepEqual(
      sets[0]!.files.map((f) => [f.path, f.size]),
      [['/local.txt', 'unsent, on the app computer'.length]],
    );
    const id = sets[0]!.id;
    const relative = await call('aside.export', { name: 'shared', id, dir: 'relative/dir' });
    assert.equal(relative.body.code, 'NOT_ABSOLUTE');
    const target = path.join(root, 'recovered');
    const exported = await call('aside.export', { name: 'shared', id, dir: target });
    assert.deepEqual(exported.body, { files: 1, dir: target });
    assert.equal(await fsp.readFile(path.join(target, 'local.txt'), 'utf8'), 'unsent, on the app computer');
    const again = await call('aside.export', { name: 'shared', id, dir: target });
    assert.equal(again.body.code, 'NOT_EMPTY');
    const unknown = await call('aside.discard', { name: 'shared', id: '20000101T000000Z' });
    assert.equal(unknown.status, 404);
    assert.equal((await call('aside.discard', { name: 'shared', id })).status, 200);
    assert.deepEqual((await summary()).status.aside, []);
    assert.deepEqual(((await call('aside.list', { name: 'shared' })).body as unknown as { sets: AsideSetDto[] }).sets, []);
  });

  it('switches the follower to writing once the other computer unmounts', async () => {
    await other.unmount();
    await until('the follower sees nobody writing', async () => (await summary()).status.lease?.holder === null, 120_000);
    const r = await call('filespace.mount', { name: 'shared', mode: 'write' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal((await summary()).status.lease?.role, 'writer');
    assert.equal((await call('uploads.pause', { paused: false })).status, 200);
    await fsp.writeFile(path.join(mnt, 'b.txt'), 'writing again');
    await until('b.txt uploaded', async () => {
      const s = (await summary()).status;
      return s.dirtyBytes === 0 && s.pendingMetaOps === 0;
    });
  });

  it('refuses a recovery with a malformed key, or on a filespace without one, by code', async () => {
    const target = { bucket: other.bucket, prefix: '' };
    const bad = await call('filespace.recover', {
      target,
      recoveryKey: 'ABCD-EFGH',
      newPassphrase: 'quarry violet mango ladder',
    });
    assert.equal(bad.body.code, 'BAD_RECOVERY_KEY');
    const none = await call('filespace.recover', {
      target,
      recoveryKey: '0123-4567-89AB-CDEF-GHJK-MNPQ-RSTV-WXYZ',
      newPassphrase: 'quarry violet mango ladder',
    });
    assert.equal(none.body.code, 'NO_RECOVERY_KEY');
    const weak = await call('filespace.recover', {
      target,
      recoveryKey: '0123-4567-89AB-CDEF-GHJK-MNPQ-RSTV-WXYZ',
      newPassphrase: 'password1',
    });
    assert.equal(weak.body.code, 'WEAK_PASSPHRASE');
  });
});
