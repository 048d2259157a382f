// Snapshots through real mounts and the real `filespace` command against the S3 test server:
// a snapshot mounted read-only reads byte-identical to the tree when it was taken, after the
// live tree changed and GC ran past the grace period (the snapshot keeps the chunks the live
// tree dropped); it is listed and browsable from a second machine; changes are refused on a
// machine that does not write, naming the writer; deleting it frees the chunks only it named
// after the grace period while every live file stays whole; bad ids, labels and schedules
// get one-line errors and change nothing; unmounted, the command takes a snapshot as a
// short-lived writer; the writer takes the automatic snapshots its schedule makes due.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, randomFile, run, sh, tmpDir, until } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Path -> sha256 (files), "-> target" (symlinks), "dir" (folders), for everything under `root`. */
async function manifest(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (dir: string, rel: string) => {
    for (const e of (await fsp.readdir(dir, { withFileTypes: true })).sort((x, y) => (x.name < y.name ? -1 : 1))) {
      const p = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isSymbolicLink()) out[r] = `-> ${await fsp.readlink(p)}`;
      else if (e.isDirectory()) {
        out[r] = 'dir';
        await walk(p, r);
      } else out[r] = sha(await fsp.readFile(p));
    }
  };
  await walk(root, '');
  return out;
}

describe('snapshots', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('snap-local');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('a snapshot reads as it was taken, keeps its chunks through GC, is seen from a second machine, and its chunks go once it is deleted', async () => {
    const fs = await bed.filespace({
      chunkSize: '256KiB',
      settings: { 'gc-grace': '1s', 'gc-interval': '0s', 'upload-delay': '0s', 'follow-interval': '500ms' },
    });
    await fs.mount();
    const m = fs.mnt;
    await sh(`mkdir -p ${m}/docs/deep && echo hello > ${m}/docs/deep/hello.txt && ln -s docs/deep/hello.txt ${m}/link`);
    await sh(`cp ${await randomFile(local, 'big.bin', 900_000)} ${m}/big.bin`);
    await sh(`cp ${await randomFile(local, 'gone.bin', 600_000)} ${m}/gone.bin`);
    await sh(`cp ${await randomFile(local, 'tmp.bin', 300_000)} ${m}/tmp.bin && rm ${m}/tmp.bin`);
    await sh(`printf 'v1' > ${m}/docs/edit.txt`);
    const reference = await manifest(m);
    await fs.sync();
    // GC past the grace period: passes at least a grace apart, until nothing unreferenced waits.
    const gc = async () => fs.machine.ok('gc', fs.name);
    const settle = async (what: string) => {
      await gc();
      await until(what, async () => /0 unreferenced and waiting/.test(await gc()), 60_000, 1100);
    };
    // The bucket then holds exactly the chunks the tree names (tmp.bin's may have been uploaded).
    await settle('GC to free what the live tree does not name');
    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const chunksAtSnapshot = await store.list('chunks/');

    const created = await fs.machine.ok('snapshot', fs.name, 'create', 'before the cleanup');
    const id = /took snapshot (\S+) "before the cleanup"/.exec(created)?.[1];
    assert.ok(id, created);

    // Change more: the live tree drops big.bin's and gone.bin's chunks.
    await sh(`cp ${await randomFile(local, 'big2.bin', 500_000)} ${m}/big.bin && rm ${m}/gone.bin`);
    await sh(`printf 'v2, longer' > ${m}/docs/edit.txt && echo new > ${m}/new.txt && rm ${m}/link`);
    const live = await manifest(m);
    await fs.sync();
    await settle('GC to sweep what the live tree dropped');
    const afterGc = new Set(await store.list('chunks/'));
    for (const k of chunksAtSnapshot) assert.ok(afterGc.has(k), `the snapshot's chunk ${k} was deleted by GC`);

    const listed = await fs.machine.ok('snapshot', fs.name, 'list');
    assert.match(listed, new RegExp(`${id}\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\s+manual\\s+4\\s+.*before the cleanup`));
    const json = JSON.parse(await fs.machine.ok('snapshot', fs.name, 'list', '--json')) as {
      snapshots: Array<{ id: string; uniqueBytes: number; files: number }>;
    };
    const entry = json.snapshots.find((s) => s.id === id)!;
    assert.ok(entry.uniqueBytes >= 1_500_000, `size-unique counts the old big.bin and gone.bin (${entry.uniqueBytes})`);

    // Browse it here, through the running mount.
    const view = path.join(fs.machine.home, 'view');
    await fsp.mkdir(view);
    await fs.machine.ok('snapshot', fs.name, 'mount', id, view);
    assert.deepEqual(await manifest(view), reference);
    const w = await run('touch', [path.join(view, 'nope')]);
    assert.match(w.stderr, /Read-only file system/);
    // Restore = copy out; the live file gets the old bytes back.
    await sh(`cp ${view}/gone.bin ${m}/gone.bin`);
    assert.equal(sha(await fsp.readFile(path.join(m, 'gone.bin'))), reference['gone.bin']);
    await fs.machine.ok('snapshot', fs.name, 'unmount', view);
    assert.ok(!(await fsp.readFile('/proc/self/mounts', 'utf8')).includes(` ${view} `), 'the snapshot is unmounted');
    await sh(`rm ${m}/gone.bin`);
    await fs.sync();

    // A second machine links the filespace: it lists and browses the snapshot, and may not change it.
    const b = await bed.link(await bed.machine('snap-b'), fs.bucket);
    assert.match(await b.machine.ok('snapshot', b.name, 'list'), new RegExp(`${id}.*before the cleanup`));
    const refusedUnmounted = await b.machine.cli('snapshot', b.name, 'create', 'from b');
    assert.equal(refusedUnmounted.code, 1, refusedUnmounted.stderr);
    assert.match(refusedUnmounted.stderr, /done by the machine that writes .* holds its write lease; run it there/);
    const bView = path.join(b.machine.home, 'view');
    await fsp.mkdir(bView);
    const notMounted = await b.machine.cli('snapshot', b.name, 'mount', id, bView);
    assert.match(notMounted.stderr, /is not mounted here; .*filespace mount/);
    await b.mount({ readOnly: true });
    const refusedFollower = await b.machine.cli('snapshot', b.name, 'delete', id);
    assert.equal(refusedFollower.code, 1);
    assert.match(refusedFollower.stderr, /done by the machine that writes the filespace \(read-only: this mount follows/);
    await b.machine.ok('snapshot', b.name, 'mount', id, bView);
    assert.deepEqual(await manifest(bView), reference);
    await b.machine.ok('snapshot', b.name, 'unmount', bView);
    await b.unmount();

    // Delete it: the chunks only it named are freed after the grace period; the live tree is whole.
    await fs.machine.ok('snapshot', fs.name, 'delete', id);
    assert.doesNotMatch(await fs.machine.ok('snapshot', fs.name, 'list'), new RegExp(id));
    await settle("GC to free the deleted snapshot's chunks");
    const final = new Set(await store.list('chunks/'));
    const freed = chunksAtSnapshot.filter((k) => !final.has(k));
    assert.ok(freed.length >= 5, `the old big.bin's and gone.bin's chunks are gone (${freed.length} freed)`);
    await fs.unmount();
    const check = await fs.machine.cli('check', fs.name, '--deep');
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(check.stdout, / 0 unreferenced/);
    // Every live file reads whole from the bucket, through a fresh machine's empty cache.
    const c = await bed.link(await bed.machine('snap-c'), fs.bucket);
    await c.mount({ readOnly: true });
    assert.deepEqual(await manifest(c.mnt), live);
    await c.unmount();
    await store.close();
  });

  it('unmounted, the command takes and deletes snapshots as a short-lived writer; check names a damaged one', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    await fs.mount();
    await sh(`echo one > ${fs.mnt}/one.txt`);
    await fs.unmount();
    const out = await fs.machine.ok('snapshot', fs.name, 'create');
    const id = /took snapshot (\S+) \(1 files/.exec(out)?.[1];
    assert.ok(id, out);
    const second = /took snapshot (\S+)/.exec(await fs.machine.ok('snapshot', fs.name, 'create', 'second'))![1]!;
    assert.equal((await fs.machine.ok('check', fs.name)).includes('no problems found'), true);

    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const key = `meta/snapshots/${second}`;
    const got = (await store.get(key))!;
    got.body.writeUInt8(got.body.readUInt8(10) ^ 1, 10);
    await store.put(key, got.body);
    const check = await fs.machine.cli('check', fs.name);
    assert.equal(check.code, 1);
    assert.match(check.stdout, new RegExp(`PROBLEM bucket: the record of snapshot ${second} is damaged`));
    const list = await fs.machine.cli('snapshot', fs.name, 'list');
    assert.equal(list.code, 1);
    assert.match(list.stdout, new RegExp(`${id}.*manual`));
    assert.match(list.stderr, new RegExp(`snapshot ${second} of "${fs.name}" is damaged.*delete ${second}`));
    await fs.machine.ok('snapshot', fs.name, 'delete', second);
    await fs.machine.ok('snapshot', fs.name, 'delete', id);
    assert.match(await fs.machine.ok('snapshot', fs.name, 'list'), /0 snapshot\(s\); schedule: off/);
    await store.close();
  });

  it('bad ids, labels and schedules get one-line errors and change nothing; the schedule is kept in the bucket', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const bad = async (args: string[], re: RegExp) => {
      const r = await fs.machine.cli('snapshot', fs.name, ...args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stdout}${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    };
    await bad(['delete', '../../lease'], /"..\/..\/lease" is not a snapshot id/);
    await bad(['delete', '20261202-130501-abcd'], /there is no snapshot 20261202-130501-abcd/);
    await bad(['mount', 'nope', fs.machine.home], /"nope" is not a snapshot id/);
    await bad(['mount', '20261202-130501-abcd', path.join(fs.machine.home, 'missing')], /is not a folder/);
    await bad(['create', 'two\nlines'], /cannot hold control characters or line breaks/);
    await bad(['create', 'x'.repeat(101)], /at most 100 characters \(this one has 101\)/);
    await bad(['schedule', 'weekly=3'], /"weekly=3" is not hourly=N or daily=N/);
    await bad(['schedule', 'hourly=5000'], /hourly=5000" is not hourly=N|from 0 to 1000/);
    await bad(['schedule'], /takes hourly=N daily=N/);
    await bad(['frobnicate'], /unknown action "frobnicate"/);
    await bad(['create', 'a', 'b'], /create takes \[LABEL\]/);
    assert.match(await fs.machine.ok('snapshot', fs.name, 'list'), /0 snapshot\(s\); schedule: off/);

    await fs.machine.ok('snapshot', fs.name, 'schedule', 'hourly=24', 'daily=30');
    // The schedule is in the bucket, seen by any machine; the writer takes the hourly and daily
    // snapshots due now at its next look (every minute).
    const b = await bed.link(await bed.machine('sched-b'), fs.bucket);
    assert.match(await b.machine.ok('snapshot', b.name, 'list'), /schedule: hourly kept 24, daily kept 30/);
    const auto = await until(
      'the writer to take the automatic snapshots due',
      async () => {
        const out = await b.machine.ok('snapshot', b.name, 'list');
        return /\bhourly\s+\d+/.test(out) && /\bdaily\s+\d+/.test(out) && out;
      },
      180_000,
      2000,
    );
    assert.match(auto, /2 snapshot\(s\)/);
    await fs.machine.ok('snapshot', fs.name, 'schedule', 'off');
    assert.match(await b.machine.ok('snapshot', b.name, 'list'), /schedule: off/);
    await fs.unmount();
  });
});
