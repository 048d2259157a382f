/**
 * Pin for offline use, through real mounts, the S3 test server and a fault proxy: a pinned
 * folder is downloaded in the background and then reads whole with the bucket cut off (while
 * an unpinned file does not); pinned data survives reads that push the cache past its cap,
 * including a file written into the pinned folder later; a pin that does not fit is refused
 * and changes nothing, and so is a cap lowered below what pins hold, mounted or not; pins
 * survive a remount and one recorded while unmounted downloads at the next mount; on a
 * follower, the writer's new data in a pinned folder arrives in the cache without being read.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

interface Pin {
  path: string;
  localBytes: number;
  totalBytes: number;
}

const MiB = 1024 * 1024;

describe('pin for offline use', () => {
  const env = proxiedBed('pins');
  const bed = env.bed;

  async function pinsOf(fs: Linked): Promise<Pin[]> {
    return ((await fs.status()).pins as Pin[] | undefined) ?? [];
  }

  /** Waits until every pin is whole in the cache and holds at least `minBytes` in all; returns the pins. */
  function allLocal(fs: Linked, minBytes = 1): Promise<Pin[]> {
    return until(
      'pinned data to be downloaded',
      async () => {
        const pins = await pinsOf(fs);
        const total = pins.reduce((n, p) => n + p.totalBytes, 0);
        return pins.length > 0 && total >= minBytes && pins.every((p) => p.localBytes === p.totalBytes) ? pins : undefined;
      },
      180_000,
    );
  }

  /** Writes `files` (name -> bytes) of random data into `dir` of a mount; returns their local copies by name. */
  async function writeFiles(mnt: string, dir: string, files: Record<string, number>): Promise<Record<string, string>> {
    await sh(`mkdir -p '${path.join(mnt, dir)}'`);
    const out: Record<string, string> = {};
    for (const [name, bytes] of Object.entries(files)) {
      const src = await randomFile(env.local, `${dir.replace(/\W/g, '_')}-${name}-${Math.random().toString(36).slice(2)}`, bytes);
      await sh(`cp '${src}' '${path.join(mnt, dir, name)}'`);
      out[name] = src;
    }
    return out;
  }

  /** Compares every file through the mount with its local copy. */
  async function compareAll(mnt: string, dir: string, files: Record<string, string>): Promise<void> {
    for (const [name, src] of Object.entries(files)) await sh(`cmp '${src}' '${path.join(mnt, dir, name)}'`);
  }

  /** A filespace written by machine A straight to S3, and machine B linked through the fault proxy. */
  async function twoMachines(cacheSize: string): Promise<{ a: Linked; b: Linked; bucket: string }> {
    env.proxy.clear();
    const a = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    const b = await bed.link(await bed.machine('b'), a.bucket, '', cacheSize, env.proxy.endpoint);
    await b.set({ 'read-timeout': '3s' });
    return { a, b, bucket: a.bucket };
  }

  it('downloads a pinned folder in the background; offline, every pinned byte reads back (an unpinned file does not)', async () => {
    const { a, b } = await twoMachines('256MiB');
    await a.mount();
    const photos = await writeFiles(a.mnt, 'Photos', { 'one.jpg': 3 * MiB + 17, 'two.jpg': 2 * MiB });
    const nested = await writeFiles(a.mnt, 'Photos/2024', { 'three.raw': 4 * MiB + 5 });
    const other = await writeFiles(a.mnt, 'Other', { 'not-pinned.bin': 2 * MiB });
    await a.sync();
    await a.unmount();

    await b.mount();
    const out = await b.machine.ok('pin', b.name, path.join(b.mnt, 'Photos'));
    assert.match(out, /pinned \/Photos \(9\.0 MiB\): downloading in the background/);
    const pins = await allLocal(b, 9 * MiB);
    assert.deepEqual(
      pins.map((p) => p.path),
      ['/Photos'],
    );
    assert.equal(pins[0]!.totalBytes, 3 * MiB + 17 + 2 * MiB + 4 * MiB + 5);
    assert.match(await b.machine.ok('pin', b.name, '--list'), /^\/Photos: 9\.0 MiB of 9\.0 MiB local \(all local\)$/m);

    env.proxy.goOffline();
    try {
      await compareAll(b.mnt, 'Photos', photos);
      await compareAll(b.mnt, 'Photos/2024', nested);
      // The cut is real: what is not pinned cannot be read.
      const r = await run('cat', [path.join(b.mnt, 'Other', 'not-pinned.bin')], { timeoutMs: 60_000 });
      assert.notEqual(r.code, 0, 'an unpinned file read with the bucket cut off');
      assert.ok(Object.keys(other).length === 1);
    } finally {
      env.proxy.goOnline();
    }
    await b.unmount();
  });

  it('keeps pinned data (also a file written into the pinned folder later) when reads push the cache past its cap', async () => {
    // Machine B writes and reads; a 32 MiB cache leaves pins 25.6 MiB.
    const { a, b } = await twoMachines('32MiB');
    await a.mount();
    const others: Record<string, string> = await writeFiles(a.mnt, 'Big', {
      'a.bin': 16 * MiB,
      'b.bin': 16 * MiB,
      'c.bin': 16 * MiB,
    });
    const pinned = await writeFiles(a.mnt, 'Keep', { 'k1.bin': 3 * MiB, 'k2.bin': 2 * MiB + 3 });
    await a.sync();
    await a.unmount();

    await b.mount();
    await b.machine.ok('pin', b.name, '/Keep');
    await allLocal(b, 5 * MiB);
    // Written into the pinned folder after it was pinned: pinned too, once uploaded.
    const later = await writeFiles(b.mnt, 'Keep', { 'later.bin': 3 * MiB + 1 });
    await b.sync();
    await allLocal(b, 8 * MiB + 4);
    // 48 MiB of other reads through a 32 MiB cache.
    for (const [name, src] of Object.entries(others)) await sh(`cmp '${src}' '${path.join(b.mnt, 'Big', name)}'`);
    const st = await b.status();
    assert.ok(Number(st.cacheUsedBytes) <= Number(st.cacheCapBytes), 'the cap holds');
    const pins = await pinsOf(b);
    assert.equal(pins[0]!.localBytes, pins[0]!.totalBytes, 'no pinned chunk was evicted');
    // Drop the kernel's copies, so reads come from the engine's cache.
    await b.unmount();
    await b.mount();
    env.proxy.goOffline();
    try {
      await compareAll(b.mnt, 'Keep', pinned);
      await compareAll(b.mnt, 'Keep', later);
    } finally {
      env.proxy.goOnline();
    }
    await b.unmount();
  });

  it('refuses a pin that does not fit, and a cap below what pins hold, changing nothing (mounted or not)', async () => {
    const fs = await bed.filespace({ cacheSize: '32MiB', settings: { 'upload-delay': '0s' } });
    await fs.mount();
    await writeFiles(fs.mnt, 'Huge', { 'h.bin': 30 * MiB });
    await writeFiles(fs.mnt, 'Fits', { 'f.bin': 20 * MiB });
    await fs.sync();
    const cfgFile = path.join(fs.machine.home, 'config', 'filespaces', `${fs.name}.json`);
    const before = await fsp.readFile(cfgFile, 'utf8');

    const big = await fs.machine.cli('pin', fs.name, '/Huge');
    assert.equal(big.code, 1);
    assert.match(
      big.stderr,
      /^filespace: pinning \/Huge needs 4\.\d MiB more than the cache cap of 32\.0 MiB leaves room for; raise the cap or pin less\n$/,
    );
    const bad = await fs.machine.cli('pin', fs.name, '/Fits', '/No/such');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /\/No does not exist in the filespace/);
    assert.equal(await fsp.readFile(cfgFile, 'utf8'), before, 'the configuration is unchanged');
    assert.deepEqual(await pinsOf(fs), []);
    assert.match(await fs.machine.ok('pin', fs.name, '--list'), /nothing is pinned/);

    await fs.machine.ok('pin', fs.name, path.join(fs.mnt, 'Fits'));
    const low = await fs.machine.cli('set', fs.name, 'cache-size', '24MiB');
    assert.equal(low.code, 1);
    assert.match(
      low.stderr,
      /the cache cap cannot be 24\.0 MiB: pinned files take 20\.\d MiB and need a cap of at least 25\.\d MiB; unpin some first/,
    );
    assert.equal((await fs.status()).cacheCapBytes, 32 * MiB);

    // Unmounted, the same checks read the local tree.
    await fs.unmount();
    const low2 = await fs.machine.cli('set', fs.name, 'cache-size', '24MiB');
    assert.equal(low2.code, 1);
    assert.match(low2.stderr, /the cache cap cannot be 24\.0 MiB/);
    const big2 = await fs.machine.cli('pin', fs.name, 'Huge');
    assert.equal(big2.code, 1);
    assert.match(big2.stderr, /pinning \/Huge needs .* more than the cache cap of 32\.0 MiB leaves room for/);
    const cfg = JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as { settings: Record<string, unknown>; pins: Pin[] };
    assert.deepEqual(
      cfg.pins.map((p) => p.path),
      ['/Fits'],
    );
    assert.equal(cfg.settings.cacheCapBytes, 32 * MiB);
    // Unpinned, the cap may go down.
    await fs.machine.ok('unpin', fs.name, '/Fits');
    await fs.machine.ok('set', fs.name, 'cache-size', '24MiB');
    const notPinned = await fs.machine.cli('unpin', fs.name, '/Fits');
    assert.equal(notPinned.code, 1);
    assert.match(notPinned.stderr, /\/Fits is not pinned \(nothing is pinned\)/);
  });

  it('keeps pins across remounts, follows a rename, drops a deleted pin, and downloads a pin recorded while unmounted', async () => {
    const { a, b } = await twoMachines('128MiB');
    await a.mount();
    const docs = await writeFiles(a.mnt, 'Docs', { 'd.bin': 2 * MiB + 9 });
    const music = await writeFiles(a.mnt, 'Music', { 'm.bin': 3 * MiB });
    await writeFiles(a.mnt, 'Gone', { 'g.bin': 1 * MiB });
    await a.sync();
    await a.unmount();

    // Unmounted, paths are looked up in the tree as this machine saw it last.
    const stale = await b.machine.cli('pin', b.name, '/Docs');
    assert.equal(stale.code, 1);
    assert.match(
      stale.stderr,
      /\/Docs does not exist in the filespace as this machine last saw it \(mount ".*" to see the latest, then pin\)/,
    );
    await b.mount();
    await b.unmount();
    // Recorded while unmounted: nothing downloads yet.
    const rec = await b.machine.ok('pin', b.name, '/Docs', '/Gone');
    assert.match(rec, /pinned \/Docs \(2\.0 MiB\): recorded; downloaded when ".*" is mounted next/);
    const st0 = JSON.parse(await b.machine.ok('status', b.name, '--json')) as { pins: Pin[] };
    assert.deepEqual(
      st0.pins.map((p) => [p.path, p.localBytes]),
      [
        ['/Docs', 0],
        ['/Gone', 0],
      ],
    );
    await b.mount();
    await allLocal(b, 3 * MiB);
    await b.machine.ok('pin', b.name, '/Music');
    await allLocal(b, 6 * MiB);
    await sh(`mv '${b.mnt}/Docs' '${b.mnt}/Papers' && rm -r '${b.mnt}/Gone'`);
    await until('the pins to follow the rename and the deletion', async () => {
      const p = (await pinsOf(b)).map((x) => x.path).join(',');
      return p === '/Papers,/Music' ? p : undefined;
    });
    await b.sync();
    await b.unmount();
    await b.mount();
    const pins = await allLocal(b, 5 * MiB);
    assert.deepEqual(
      pins.map((p) => p.path),
      ['/Papers', '/Music'],
    );
    env.proxy.goOffline();
    try {
      await compareAll(b.mnt, 'Papers', docs);
      await compareAll(b.mnt, 'Music', music);
    } finally {
      env.proxy.goOnline();
    }
    await b.unmount();
  });

  it('on a follower, new data the writer puts into a pinned folder arrives in the cache without being read', async () => {
    const { a, b } = await twoMachines('128MiB');
    await a.mount();
    const first = await writeFiles(a.mnt, 'Shared', { 's1.bin': 2 * MiB });
    await a.sync();
    await b.mount({ readOnly: true });
    await b.machine.ok('pin', b.name, '/Shared');
    await allLocal(b, 2 * MiB);
    const more = await writeFiles(a.mnt, 'Shared', { 's2.bin': 3 * MiB + 7 });
    const deeper = await writeFiles(a.mnt, 'Shared/sub', { 's3.bin': 1 * MiB + 1 });
    await a.sync();
    await allLocal(b, 6 * MiB + 8);
    env.proxy.goOffline();
    try {
      await compareAll(b.mnt, 'Shared', { ...first, ...more });
      await compareAll(b.mnt, 'Shared/sub', deeper);
    } finally {
      env.proxy.goOnline();
    }
    await b.unmount();
    await a.unmount();
  });
});
