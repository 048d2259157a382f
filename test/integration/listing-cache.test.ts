/**
 * The attributes a mount caches from a listing (native/fuse/adapter.ts, `attributesChanged`),
 * on real mounts against the S3 test server: once a listing has filled the cache, a change is
 * seen at the next look, whoever made it: a request through this mount (size, mode, extended
 * attributes, rename, delete), the engine's own work (an import through the running mount),
 * and, on a follower, the writer's changes as they arrive from the bucket.
 *
 * Listings here are plain readdir (never a stat), so the kernel holds no attributes of the
 * listed names: the first stat of a name afterwards reaches the filesystem, and a stale answer
 * could only come from the cache. Extended attributes are never cached by the kernel at all.
 *
 * This cache is the high-level binding's (adapter.ts), which mounts use with
 * FILESPACE_FUSE=highlevel: these tests ask for it. The low-level binding lets the kernel cache
 * and tells it what changed instead (fuse-lowlevel.test.ts).
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { ATTR_CACHE_TTL_MS } from '../../native/fuse/adapter';
import { Bed, run, sh, tmpDir, until } from '../helpers/bed';
import { callControl } from '../../electron/host/control';

process.env.FILESPACE_FUSE = 'highlevel';

/** `stat -c FORMAT` of each path, one line each, from a child process. */
async function statOf(format: string, ...paths: string[]): Promise<string[]> {
  const r = await run('stat', ['-c', format, ...paths]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trimEnd().split('\n');
}

/** The value of extended attribute `name` of `p`, or undefined when it has none by that name. */
async function xattrOf(p: string, name: string): Promise<string | undefined> {
  const r = await run('getfattr', ['--only-values', '-n', name, p]);
  return r.code === 0 ? r.stdout : undefined;
}

/** The mount's request counts (answered in the addon, crossed to the engine) from its control socket. */
async function requestCounts(sock: string) {
  const c = (await callControl(sock, '/v1/debug/fuse', {})).counts;
  assert.ok(c, 'the mount counts its requests');
  return c;
}

describe('attributes cached from a listing', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('listing-cache');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('a change made through the mount is seen at once after a listing', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const d = path.join(fs.mnt, 'd');
    await sh(
      `mkdir '${d}' && printf one > '${d}/a' && printf two > '${d}/b' && printf three > '${d}/c' && printf four > '${d}/e'`,
    );
    // Fill the cache from a listing, then change every listed name in a different way.
    assert.deepEqual((await fsp.readdir(d)).sort(), ['a', 'b', 'c', 'e']);
    await sh(
      `cd '${d}' && printf more >> a && chmod 600 b && setfattr -n user.k -v set c && mv e moved && printf new > e2 && rm b`,
    );
    assert.deepEqual(await statOf('%n %s %a', `${d}/a`, `${d}/moved`), [`${d}/a 7 644`, `${d}/moved 4 644`]);
    assert.equal(await xattrOf(`${d}/c`, 'user.k'), 'set');
    assert.equal((await run('stat', [`${d}/b`])).code, 1, 'a deleted name is gone');
    assert.equal((await run('stat', [`${d}/e`])).code, 1, 'a renamed name is gone');

    // A name listed, then given a mode and an attribute: each seen at its first look.
    assert.deepEqual((await fsp.readdir(d)).sort(), ['a', 'c', 'e2', 'moved']);
    await sh(`chmod 640 '${d}/e2' && setfattr -n user.k -v again '${d}/moved'`);
    assert.deepEqual(await statOf('%a', `${d}/e2`), ['640']);
    assert.equal(await xattrOf(`${d}/moved`, 'user.k'), 'again');
    // An attribute name nothing had before, set on a file deleted while open: readable at once.
    const held = await sh(
      `exec 3<> '${d}/held' && rm '${d}/held' && setfattr -n user.fresh -v x /proc/self/fd/3 && getfattr --only-values -n user.fresh /proc/self/fd/3`,
    );
    assert.equal(held, 'x');
    await fs.unmount();
  });

  it('uploads that change nothing stat shows leave the cached attributes in place', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    const counts = () => requestCounts(sock);
    const d = path.join(fs.mnt, 'u');
    const names = Array.from({ length: 40 }, (_, i) => `f${i}`);
    // Held back until the listing has filled the cache: each upload then commits a chunk of a listed file.
    await callControl(sock, '/v1/pause', { paused: true });
    await sh(`mkdir '${d}' && cd '${d}' && for f in ${names.join(' ')}; do head -c 5000 /dev/urandom > $f; done`);
    assert.equal((await fsp.readdir(d)).length, names.length);
    assert.deepEqual(await fsp.readdir(fs.mnt), ['u']); // the folder's own attributes
    const before = await counts();
    await callControl(sock, '/v1/pause', { paused: false });
    await fs.sync();
    const synced = await counts();
    assert.ok(synced.emptied.inodes - before.emptied.inodes >= names.length, 'each upload reported its inode');
    assert.deepEqual(
      await statOf('%s', ...names.map((n) => path.join(d, n))),
      names.map(() => '5000'),
    );
    const after = await counts();
    // Only a listing could have put these attributes there (the kernel never looked the names up);
    // the mount's root, which no listing names, may cost one more.
    const crossed = (after.crossed.getattr ?? 0) - (synced.crossed.getattr ?? 0);
    assert.ok(crossed <= 2, `${crossed} of ${names.length} stats crossed to the engine`);
    assert.ok((after.answered.getattr ?? 0) - (synced.answered.getattr ?? 0) >= names.length);
    await fs.unmount();
  });

  it("a create answers the new file's and its folder's attributes from the cache, and later changes still show", async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    const counts = () => requestCounts(sock);
    const d = path.join(fs.mnt, 'c');
    await sh(`mkdir '${d}'`);
    const files = 30;
    const before = await counts();
    // One process, one open (with O_CREAT), write and close per file, as cp or tar do.
    await sh(`cd '${d}' && for i in $(seq 1 ${files}); do printf 'data %s' $i > f$i; done`);
    const after = await counts();
    const answered = (op: string) => (after.answered[op] ?? 0) - (before.answered[op] ?? 0);
    const crossed = (op: string) => (after.crossed[op] ?? 0) - (before.crossed[op] ?? 0);
    assert.equal(crossed('create'), files);
    // libfuse's look at the new file after each create, and the kernel's getattr of the folder
    // before the next one, come from what the create answered; only the lookup of each new name
    // (it does not exist yet) still reaches the engine.
    assert.equal(crossed('fgetattr'), 0, `fgetattr crossed ${crossed('fgetattr')} times`);
    assert.ok(answered('fgetattr') >= files);
    assert.ok(crossed('getattr') <= files + 2, `getattr crossed ${crossed('getattr')} times for ${files} creates`);
    assert.ok(answered('getattr') >= files - 1, `getattr answered ${answered('getattr')} times`);

    // What the cache answers is what the engine answers: the folder's times, link count and the
    // files' sizes as the cache holds them, then again once a rename elsewhere has emptied it.
    const fmt = '%n|%s|%h|%a|%y|%z';
    const names = [d, ...Array.from({ length: files }, (_, i) => path.join(d, `f${i + 1}`))];
    await new Promise((r) => setTimeout(r, 1100)); // the kernel's own attribute timeout (1 s)
    const cached = await statOf(fmt, ...names);
    await sh(`mkdir '${fs.mnt}/other' && mv '${fs.mnt}/other' '${fs.mnt}/other2'`);
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(await statOf(fmt, ...names), cached);
    assert.ok(cached[1]!.startsWith(`${d}/f1|6|1|644|`), cached[1]);
    // A write to one file leaves the others' entries in place (a build writing while make stats).
    await sh(`printf more >> '${d}/f${files}'`);
    await new Promise((r) => setTimeout(r, 1100));
    const w0 = await counts();
    assert.deepEqual(await statOf(fmt, ...names.slice(0, files)), cached.slice(0, files));
    const w1 = await counts();
    const statsCrossed = (w1.crossed.getattr ?? 0) - (w0.crossed.getattr ?? 0);
    assert.ok(statsCrossed <= 1, `${statsCrossed} of ${files} stats crossed after a write to another file`);

    // Changes of one file (a write through an open descriptor, chmod, a second name's view),
    // of the folder (a new subfolder, chmod) are seen at the next look.
    await sh(`cd '${d}' && ln f1 link1 && exec 3>> f1 && printf ' and more' >&3 && chmod 600 f2 && mkdir sub && chmod 750 .`);
    await new Promise((r) => setTimeout(r, 1100));
    assert.deepEqual(await statOf('%n %s %h %a', path.join(d, 'link1'), path.join(d, 'f1'), path.join(d, 'f2'), d), [
      `${d}/link1 15 2 644`,
      `${d}/f1 15 2 644`,
      `${d}/f2 6 1 600`,
      `${d} ${cached[0]!.split('|')[1]} 3 750`,
    ]);
    await fs.unmount();
  });

  it("the engine's own changes (an import through the running mount) are seen at once after a listing", async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const d = path.join(fs.mnt, 'in');
    await sh(`mkdir '${d}' && printf old > '${d}/x.txt'`);
    const src = path.join(local, 'import-src');
    await fsp.mkdir(src, { recursive: true });
    await fsp.writeFile(path.join(src, 'x.txt'), 'content that is longer\n');
    await fsp.writeFile(path.join(src, 'new.txt'), 'n\n');
    assert.deepEqual(await fsp.readdir(d), ['x.txt']);
    // The import runs inside the mount's engine: no request of the mount changes anything.
    const r = await fs.machine.cli('import', fs.name, src, 'in');
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.deepEqual(await statOf('%s', path.join(d, 'x.txt')), ['23']);
    assert.equal(await fsp.readFile(path.join(d, 'x.txt'), 'utf8'), 'content that is longer\n');
    assert.deepEqual((await fsp.readdir(d)).sort(), ['new.txt', 'x.txt']);
    await fs.unmount();
  });

  it("a follower sees the writer's changes at once after a listing, as soon as they arrive", async () => {
    const settings = { 'lease-ttl': '3s', 'follow-interval': '300ms' };
    const a = await bed.filespace({ settings });
    const b = await bed.link(await bed.machine('follower'), a.bucket);
    await b.set(settings);
    await a.mount();
    await sh(
      `mkdir '${a.mnt}/d' '${a.mnt}/e' && printf v1 > '${a.mnt}/d/f' && printf g > '${a.mnt}/d/g' && printf h > '${a.mnt}/e/h'`,
    );
    await a.sync();
    await b.mount({ readOnly: true });
    const d = path.join(b.mnt, 'd');
    // Seen by listing alone, so the follower's kernel has never looked the names up.
    await until('the follower to list d', async () => (await fsp.readdir(d).catch(() => [])).length === 2);
    assert.deepEqual((await fsp.readdir(d)).sort(), ['f', 'g']);

    // Changes of attributes only (no name changes; metadata only, so the writer ships them on its
    // own within a second), the one to e/h last: e/h was never listed, so the follower's first
    // look at it shows what has arrived.
    await sh(`setfattr -n user.k -v w '${a.mnt}/d/f' && chmod 600 '${a.mnt}/d/g' && setfattr -n user.k -v last '${a.mnt}/e/h'`);
    // Followers see changes within seconds (the follow interval here is 300 ms): a cached
    // answer that hid one for the cache's whole entry life (ATTR_CACHE_TTL_MS) would miss this.
    await until(
      'the last change to reach the follower',
      async () => (await xattrOf(path.join(b.mnt, 'e', 'h'), 'user.k')) === 'last',
      ATTR_CACHE_TTL_MS * 0.6,
    );
    // It came last in the writer's history, so every earlier change is applied here too.
    assert.equal(await xattrOf(path.join(d, 'f'), 'user.k'), 'w');
    assert.deepEqual(await statOf('%n %s %a', path.join(d, 'f'), path.join(d, 'g')), [`${d}/f 2 644`, `${d}/g 1 600`]);

    // A size changed, then a name removed and one added: the next listing shows them.
    assert.deepEqual((await fsp.readdir(d)).sort(), ['f', 'g']);
    await sh(`printf ', then v2' >> '${a.mnt}/d/f' && rm '${a.mnt}/d/g' && printf m > '${a.mnt}/d/marker'`);
    await a.sync();
    await until('the marker to reach the follower', async () => (await fsp.readdir(d)).includes('marker'));
    assert.deepEqual((await fsp.readdir(d)).sort(), ['f', 'marker']);
    // f was looked up above, so the kernel may hold its old size for its own attribute timeout.
    await until('the new size on the follower', async () => (await statOf('%s', path.join(d, 'f')))[0] === '11');
    await b.unmount();
    await a.unmount();
  });
});
