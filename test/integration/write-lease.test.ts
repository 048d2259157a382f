// Several machines on one filespace (DESIGN invariant 4), through real mounts against the S3
// test server, each machine with its own FILESPACE_HOME: a second writer is refused, followers
// see the writer's changes live, a killed writer is taken over with nothing it uploaded lost,
// a suspended writer cannot commit after waking, garbage collection never deletes a
// referenced chunk under concurrent writes, and a store that ignores conditional writes is
// detected.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Bed, Linked, killHard, randomFile, run, sh, tmpDir, until } from '../helpers/bed';
import { FaultProxy } from '../helpers/faultProxy';
import { s3StoreFor } from '../helpers/moto';

const TTL = '3s';
const FOLLOW = '500ms';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('one writer, many readers', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('lease-local');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  async function pair(tag: string, extra: Record<string, string> = {}): Promise<{ a: Linked & { bucket: string }; b: Linked }> {
    const settings = { 'lease-ttl': TTL, 'follow-interval': FOLLOW, ...extra };
    const a = await bed.filespace({ settings });
    const b = await bed.link(await bed.machine(`${tag}-b`), a.bucket);
    await b.set(settings);
    return { a, b };
  }

  it('refuses a second writer, naming the holder and its last renewal, and offers read-only', async () => {
    const { a, b } = await pair('second');
    await a.mount();
    const r = await b.machine.cli('mount', b.name);
    assert.notEqual(r.code, 0, 'the second read-write mount must fail');
    assert.match(r.stderr, /being written by \S+ \(process \d+, machine [0-9a-f]{8}\), lease last renewed \d+s ago/);
    assert.match(r.stderr, /--read-only/);
    assert.ok(!(await fsp.readFile('/proc/self/mounts', 'utf8')).includes(` ${b.mnt} `), 'nothing was mounted');
    await b.mount({ readOnly: true });
    const st = await b.status();
    const lease = st.lease as Record<string, unknown>;
    assert.equal(lease.role, 'follower');
    assert.match(String(lease.holder), /process \d+/);
    const w = await run('touch', [path.join(b.mnt, 'nope')]);
    assert.match(w.stderr, /Read-only file system/);
    const aSt = await a.status();
    assert.equal((aSt.lease as Record<string, unknown>).role, 'writer');
    await b.unmount();
    await a.unmount();
    // Released at unmount: the other machine may write at once.
    await b.mount();
    assert.equal(((await b.status()).lease as Record<string, unknown>).role, 'writer');
    await b.unmount();
  });

  it("the writer's status names the computers that follow it read-only; one that unmounts drops off", async () => {
    const { a, b } = await pair('followers');
    await a.mount();
    const quiet = (await a.status()).lease as { followers?: unknown[] };
    assert.deepEqual(quiet.followers, [], 'nobody follows yet');
    await b.mount({ readOnly: true });
    // The writer reads the announcements at its lease renewals (every TTL/3 here).
    type Follower = { name: string; since: number; heardAt: number; lagMs: number | null };
    const seen = await until('the writer to list its follower', async () => {
      const l = (await a.status()).lease as { followers?: Follower[] };
      return l.followers && l.followers.length === 1 ? l.followers : undefined;
    });
    assert.equal(seen[0]!.name, os.hostname());
    assert.ok(seen[0]!.heardAt >= seen[0]!.since, 'heard from after it mounted');
    assert.match(
      await a.machine.ok('status', a.name),
      new RegExp(`followed read-only by ${os.hostname()} \\(heard \\d+s ago\\)`),
    );
    // The follower's status does not list followers; its record is gone once it unmounts.
    assert.deepEqual(((await b.status()).lease as { followers?: unknown[] }).followers, []);
    await b.unmount();
    await until("the follower to drop off the writer's list", async () => {
      const l = (await a.status()).lease as { followers?: unknown[] };
      return l.followers?.length === 0;
    });
    await a.unmount();
  });

  it('a follower sees creates, changes, renames and deletes without remounting; an open file keeps its data', async () => {
    const { a, b } = await pair('follow');
    await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'doc.txt'), 'version 1\n');
    const big = await randomFile(local, 'big-v1.bin', 3 * 1024 * 1024);
    await sh(`cp ${big} ${a.mnt}/big.bin`);
    await a.sync();
    await b.mount({ readOnly: true });
    assert.equal(await fsp.readFile(path.join(b.mnt, 'doc.txt'), 'utf8'), 'version 1\n');
    // A reader on the follower opens big.bin before the writer replaces its content.
    const reader = await fsp.open(path.join(b.mnt, 'big.bin'), 'r');
    const firstMiB = Buffer.alloc(1024 * 1024);
    await reader.read(firstMiB, 0, firstMiB.length, 0);

    const lags: Record<string, number> = {};
    const timed = async (what: string, change: () => Promise<void>, seen: () => Promise<boolean>) => {
      await change();
      await a.sync();
      const t0 = Date.now();
      await until(`the follower to see ${what}`, async () => (await seen()) || undefined);
      lags[what] = Date.now() - t0;
    };
    await timed(
      'a new file',
      () => fsp.writeFile(path.join(a.mnt, 'new.txt'), 'fresh\n'),
      async () => (await fsp.readFile(path.join(b.mnt, 'new.txt'), 'utf8')) === 'fresh\n',
    );
    await timed(
      'a change',
      () => fsp.writeFile(path.join(a.mnt, 'doc.txt'), 'version 2, longer\n'),
      async () => (await fsp.readFile(path.join(b.mnt, 'doc.txt'), 'utf8')) === 'version 2, longer\n',
    );
    await timed(
      'a rename',
      () => fsp.rename(path.join(a.mnt, 'new.txt'), path.join(a.mnt, 'renamed.txt')),
      async () =>
        (await fsp.readFile(path.join(b.mnt, 'renamed.txt'), 'utf8')) === 'fresh\n' &&
        !(await fsp.stat(path.join(b.mnt, 'new.txt')).then(
          () => true,
          () => false,
        )),
    );
    const big2 = await randomFile(local, 'big-v2.bin', 3 * 1024 * 1024);
    await timed(
      'replaced content',
      async () => void (await sh(`cp ${big2} ${a.mnt}/big.bin`)),
      async () => sha(await fsp.readFile(path.join(b.mnt, 'big.bin'))) === sha(await fsp.readFile(big2)),
    );
    await timed(
      'a delete',
      () => fsp.rm(path.join(a.mnt, 'doc.txt')),
      async () =>
        !(await fsp.stat(path.join(b.mnt, 'doc.txt')).then(
          () => true,
          () => false,
        )),
    );
    console.log(`follower lag after sync (ms): ${JSON.stringify(lags)}`);

    // The handle opened before the change still reads the old version, start to end.
    const all = Buffer.alloc(3 * 1024 * 1024);
    const { bytesRead } = await reader.read(all, 0, all.length, 0);
    await reader.close();
    assert.equal(bytesRead, all.length);
    assert.equal(sha(all), sha(await fsp.readFile(big)), 'an open file reads the version it opened');
    assert.ok(all.subarray(0, firstMiB.length).equals(firstMiB));
    const st = await b.status();
    assert.equal(typeof (st.lease as Record<string, unknown>).followerLagMs, 'number');
    await b.unmount();
    await a.unmount();
  });

  it('after the writer is killed, another machine takes over with everything it had uploaded; the old writer sets its unsent work aside', async () => {
    // A long TTL: the lease is certainly still live when the other machine asks.
    const { a, b } = await pair('takeover', { 'lease-ttl': '60s' });
    const pidA = await a.mount();
    const kept = await randomFile(local, 'kept.bin', 2 * 1024 * 1024);
    await sh(`cp ${kept} ${a.mnt}/kept.bin && sync ${a.mnt}/kept.bin`);
    await a.sync(); // fsynced and uploaded
    await a.set({ 'upload-delay': '1h' });
    const unsent = await randomFile(local, 'unsent.bin', 1536 * 1024);
    await sh(`cp ${unsent} ${a.mnt}/unsent.bin && sync ${a.mnt}/unsent.bin`); // fsynced, not uploaded
    // A second name for it (a hard link), in a folder of its own.
    await sh(`mkdir ${a.mnt}/sub && ln ${a.mnt}/unsent.bin ${a.mnt}/sub/also.bin && sync ${a.mnt}/sub`);
    await killHard(pidA);
    // The lease is still live: a plain mount is refused, --takeover takes it.
    const refused = await b.machine.cli('mount', b.name);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /being written by/);
    await b.mount({ takeover: true });
    assert.equal(
      sha(await fsp.readFile(path.join(b.mnt, 'kept.bin'))),
      sha(await fsp.readFile(kept)),
      'everything uploaded before the kill is there',
    );
    // Its creation may have reached the bucket before the kill (an empty file); its size must
    // not have: the bytes never did.
    const unsentOnB = await fsp.stat(path.join(b.mnt, 'unsent.bin')).catch(() => undefined);
    assert.ok(
      unsentOnB === undefined || unsentOnB.size === 0,
      `a file whose data never reached the bucket is not published with its size (no file of zeros); size seen: ${unsentOnB?.size}`,
    );
    await fsp.writeFile(path.join(b.mnt, 'by-b.txt'), 'b writes now\n');
    await b.sync();

    // The old writer comes back: it may not write while b holds the lease...
    const again = await a.machine.cli('mount', a.name);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /being written by/);
    // ...and as a follower it sets its unsent work aside and shows b's filespace.
    await a.mount({ readOnly: true });
    const st = await a.status();
    const aside = st.aside as Array<{ id: string; files: number }>;
    assert.equal(aside.length, 1, JSON.stringify(st));
    assert.equal(await fsp.readFile(path.join(a.mnt, 'by-b.txt'), 'utf8'), 'b writes now\n');
    const out = path.join(local, 'recovered-takeover');
    await a.machine.ok('aside', a.name, 'export', aside[0]!.id, out);
    assert.equal(
      sha(await fsp.readFile(path.join(out, 'unsent.bin'))),
      sha(await fsp.readFile(unsent)),
      'the unsent file is recoverable byte for byte',
    );
    // Kept once, with both names: export links the second to the first, as it was.
    const listed = await a.machine.ok('aside', a.name, 'list');
    assert.match(listed, /\/sub\/also\.bin .*\n\s+also named \/unsent\.bin/, listed); // names in order
    const [one, two] = await Promise.all([fsp.stat(path.join(out, 'unsent.bin')), fsp.stat(path.join(out, 'sub', 'also.bin'))]);
    assert.equal(two.ino, one.ino, 'the second name is a link to the same file');
    assert.equal(one.nlink, 2);
    await a.unmount();
    // b's work was never overwritten.
    assert.equal(await fsp.readFile(path.join(b.mnt, 'by-b.txt'), 'utf8'), 'b writes now\n');
    const check = await b.machine.cli('check', b.name, '--deep');
    assert.equal(check.code, 0, check.stdout + check.stderr);
    await b.unmount();
  });

  it('a writer suspended past its lease cannot commit when it wakes, and says so', async () => {
    const { a, b } = await pair('suspend');
    const pidA = await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'before.txt'), 'committed\n');
    await a.sync();
    await a.set({ 'upload-delay': '1h' });
    await fsp.writeFile(path.join(a.mnt, 'late.txt'), 'written before the pause\n');
    process.kill(pidA, 'SIGSTOP');
    try {
      // Past the TTL the lease has expired: b takes it with a plain mount.
      await until('the lease to expire', async () => (await b.machine.cli('mount', b.name)).code === 0 || undefined, 60_000);
    } finally {
      process.kill(pidA, 'SIGCONT');
    }
    await fsp.writeFile(path.join(b.mnt, 'from-b.txt'), 'b\n');
    await b.sync();
    const st = await until('the woken writer to report the lost lease', async () => {
      const s = await a.status();
      return /taken over|another machine|written by another/.test(String(s.readOnlyReason)) ? s : undefined;
    });
    assert.notEqual((st.lease as Record<string, unknown>).role, 'writer');
    const w = await run('touch', [path.join(a.mnt, 'after-wake.txt')]);
    assert.match(w.stderr, /Read-only file system/, 'it stops writing at once');
    assert.equal(
      await fsp.readFile(path.join(a.mnt, 'late.txt'), 'utf8'),
      'written before the pause\n',
      'its unsent change stays in its cache',
    );
    const sync = await a.machine.cli('sync', a.name, '--timeout', '5s');
    assert.notEqual(sync.code, 0, 'it cannot push its unsent change');
    // Nothing of a's reached the filespace after b took over.
    await until(
      'b to be unaffected',
      async () => {
        const names = (await fsp.readdir(b.mnt)).sort().join(',');
        return names === 'before.txt,from-b.txt' || undefined;
      },
      10_000,
    );
    await a.unmount();
    await b.unmount();
  });

  it('garbage collection deletes unreferenced chunks but never a referenced one, under concurrent writes', async () => {
    const fs = await bed.filespace({
      chunkSize: '256KiB',
      settings: { 'gc-grace': '1s', 'gc-interval': '0s', 'upload-delay': '0s' },
    });
    await fs.mount();
    const expected = new Map<string, string>();
    let deleted = 0;
    let writing = true;
    let copies = 0;
    const collect = async () => {
      const r = await fs.gc(); // what `filespace gc` prints as "N deleted, M unreferenced and waiting"
      deleted += r.deleted;
      return r.marked;
    };
    const writer = (async () => {
      for (let i = 0; writing || i < 30; i++) {
        const name = `f${i % 7}.bin`;
        const file = await randomFile(local, `gc-${name}`, 100_000 + ((i * 37_000) % 600_000));
        await sh(`cp ${file} ${fs.mnt}/${name}`);
        expected.set(name, sha(await fsp.readFile(file)));
        if (i % 5 === 4) {
          await fsp.rm(path.join(fs.mnt, `f${(i + 3) % 7}.bin`), { force: true });
          expected.delete(`f${(i + 3) % 7}.bin`);
        }
        copies = i + 1;
      }
    })();
    // Collections interleaved with the writes: each round waits for at least one more copy.
    for (let round = 0; round < 8; round++) {
      const seen = copies;
      await collect();
      await until('the writer to copy another file', () => copies > seen, 120_000);
    }
    writing = false;
    await writer;
    await fs.sync();
    // Rounds until nothing unreferenced is left waiting out its grace period (1 s): by then
    // every chunk the overwrites and deletions left behind was deleted.
    await until('garbage collection to delete every unreferenced chunk', async () => (await collect()) === 0, 120_000);
    assert.ok(deleted > 0, 'overwritten files left chunks to collect');
    const check = await fs.machine.cli('check', fs.name, '--deep');
    assert.equal(check.code, 0, `every referenced chunk is still there: ${check.stdout}${check.stderr}`);
    await fs.unmount();
    const reader = await bed.link(await bed.machine('gc-reader'), fs.bucket);
    await reader.mount({ readOnly: true });
    for (const [name, digest] of expected) {
      assert.equal(sha(await fsp.readFile(path.join(reader.mnt, name))), digest, `${name} reads back from a fresh cache`);
    }
    await reader.unmount();
  });

  it('detects a store that ignores conditional writes and keeps other machines read-only', async () => {
    const proxy = new FaultProxy(bed.endpoint);
    await proxy.start();
    try {
      proxy.set({ stripConditions: true });
      const bucket = await bed.newBucket();
      const m = await bed.machine('nocond-a');
      const init = await m.ok(
        'init',
        ...bed.storeArgs(bucket, '', proxy.endpoint),
        '--chunk-size',
        '1MiB',
        '--passphrase-file',
        bed.passFile,
      );
      assert.match(init, /ignores conditional writes/);
      const a = await bed.link(m, bucket, '', undefined, proxy.endpoint);
      const b = await bed.link(await bed.machine('nocond-b'), bucket, '', undefined, proxy.endpoint);
      await a.mount();
      await fsp.writeFile(path.join(a.mnt, 'x.txt'), 'x\n');
      await a.sync();
      await a.unmount();
      const r = await b.machine.cli('mount', b.name);
      assert.notEqual(r.code, 0, 'a second machine may not mount read-write');
      assert.match(r.stderr, /ignores conditional writes/);
      await b.mount({ readOnly: true });
      assert.equal(await fsp.readFile(path.join(b.mnt, 'x.txt'), 'utf8'), 'x\n');
      await b.unmount();
      assert.ok(proxy.injected > 0);
      const store = s3StoreFor(bed.endpoint, bucket);
      assert.deepEqual(await store.list('probe/'), [], 'the probe leaves nothing behind');
      await store.close();
    } finally {
      await proxy.stop();
    }
  });
});
