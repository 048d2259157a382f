/**
 * A link stopped half-way (killed, or power lost, while it builds the metadata) leaves a cache
 * folder that the next `filespace link` into it takes over and starts again; a folder holding
 * anything else stays refused and untouched.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { tmpDir } from '../helpers/bed';
import { configPath, homes, type Homes } from '../../electron/host/config';
import { linkFilespace } from '../../electron/host/link';
import type { HostError } from '../../electron/host/errors';
import { createFilespace } from '../../electron/engine/filespace';
import { MetaStore } from '../../electron/engine/meta/metastore';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { killWhenStalled } from '../helpers/stalledChild';

describe('a link stopped half-way', { timeout: 120_000 }, () => {
  let dir: string;
  let home: string;
  let h: Homes;
  let bucket: string;
  let mnt: string;
  let pass: string;
  let cache: string;

  before(async () => {
    dir = await tmpDir('link-retry');
    home = path.join(dir, 'home');
    h = homes({ FILESPACE_HOME: home });
    bucket = path.join(dir, 'bucket');
    mnt = path.join(dir, 'mnt');
    pass = path.join(dir, 'pass');
    cache = path.join(dir, 'cache');
    await fsp.mkdir(mnt);
    await fsp.writeFile(pass, 'link retry passphrase', { mode: 0o600 });
    const store = new LocalDiskStore(bucket);
    await createFilespace(store, 'link retry passphrase', 1024 * 1024);
    await store.close();
  });

  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('leaves a folder the next link starts over in, unless something else is in it', async () => {
    const child = fork(path.join(__dirname, '..', 'helpers', 'hostLinkChild.js'), [home, 'team', bucket, mnt, pass, cache], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    await killWhenStalled(child);
    assert.deepEqual((await fsp.readdir(cache)).sort(), ['.linking', 'meta'], 'the killed link was building its metadata');
    assert.ok(!existsSync(configPath(h, 'team')), 'and had saved no link');

    // Something besides what a link makes: the folder is not the link's to take.
    await fsp.writeFile(path.join(cache, 'notes.txt'), 'mine');
    const before = (await fsp.readdir(cache, { recursive: true })).sort();
    await assert.rejects(
      linkFilespace(h, 'team', { kind: 'local', root: bucket }, mnt, cache, undefined, pass),
      (e: HostError) => e.code === 'CACHE_NOT_EMPTY' && /cache directory .* is not empty/.test(e.message),
    );
    assert.deepEqual((await fsp.readdir(cache, { recursive: true })).sort(), before, 'a refused link changes nothing');
    assert.equal(await fsp.readFile(path.join(cache, 'notes.txt'), 'utf8'), 'mine');

    // Only the unfinished link's leftovers: the next link starts over and finishes.
    await fsp.rm(path.join(cache, 'notes.txt'));
    const cfg = await linkFilespace(h, 'team', { kind: 'local', root: bucket }, mnt, cache, undefined, pass);
    assert.equal(cfg.cacheDir, cache);
    assert.ok(existsSync(configPath(h, 'team')));
    assert.ok(!existsSync(path.join(cache, '.linking')), 'a finished link leaves no marker');
    const meta = await MetaStore.load(path.join(cache, 'meta'));
    assert.ok(meta, 'the new link built metadata a mount loads');
    await meta.close();

    // A linked cache folder (no marker) is never taken over, by another name either.
    const other = path.join(dir, 'mnt2');
    await fsp.mkdir(other);
    await assert.rejects(linkFilespace(h, 'again', { kind: 'local', root: bucket }, other, cache, undefined, pass));
    assert.ok(await MetaStore.load(path.join(cache, 'meta')).then(async (m) => (await m?.close(), m !== undefined)));
  });
});
