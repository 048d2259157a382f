/**
 * A cache full of changes that cannot upload (DESIGN invariant 3), on real mounts: with uploads
 * paused, or the bucket unreachable, a writer gets ENOSPC once nothing has drained for
 * `write-stall-timeout` instead of sleeping uninterruptibly in the kernel; status says why as a
 * state; nothing already written is lost, and everything uploads after resume / reconnect.
 * When the write lease is lost to another machine meanwhile, the waiting writer gets EROFS at
 * once and its data is set aside, recoverable byte for byte.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { callControl } from '../../electron/host/control';
import { homes, socketPath } from '../../electron/host/config';
import { Linked, randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

/** What `filespace status --json` says about waiting writers. */
interface WritesWaiting {
  since: number;
  cause: string;
  refusing: boolean;
  refused: number;
  message: string;
}

describe('a full cache that cannot drain', () => {
  const env = proxiedBed('stall');
  const bed = env.bed;

  async function setPaused(fs: Linked, paused: boolean): Promise<void> {
    await callControl(socketPath(homes(fs.machine.env), fs.name), '/v1/pause', { paused });
  }

  /** Writes `src` into the mount with dd until the mount refuses; returns dd's outcome and what landed. */
  async function fillUntilRefused(fs: Linked, src: string, name: string): Promise<{ stderr: string; size: number }> {
    // No timeout of its own: were the write to hang, the test's timeout would end it.
    const r = await run('dd', [`if=${src}`, `of=${path.join(fs.mnt, name)}`, 'bs=1M'], { timeoutMs: 0 });
    assert.notEqual(r.code, 0, 'the write must fail, not wait forever');
    const size = (await fsp.stat(path.join(fs.mnt, name))).size;
    return { stderr: r.stderr, size };
  }

  /** Reads the filespace from the bucket alone, on another machine, and checks it. */
  async function verifyFromBucket(bucket: string, check: (mnt: string) => Promise<void>): Promise<void> {
    const reader = await bed.link(await bed.machine('reader'), bucket);
    await reader.mount({ readOnly: true });
    try {
      await check(reader.mnt);
    } finally {
      await reader.unmount();
    }
  }

  it(
    'uploads paused: the writer gets ENOSPC, status says why, and after resuming everything uploads',
    { timeout: 300_000 },
    async () => {
      env.proxy.clear();
      const fs = await bed.filespace({ cacheSize: '16MiB', settings: { 'upload-delay': '0s', 'write-stall-timeout': '2s' } });
      await fs.mount();
      const kept = await randomFile(env.local, 'kept.bin', 2 * 1024 * 1024);
      await sh(`cp ${kept} ${fs.mnt}/kept.bin`);
      await fs.sync();
      await setPaused(fs, true);
      const big = await randomFile(env.local, 'big.bin', 40 * 1024 * 1024);
      const { stderr, size } = await fillUntilRefused(fs, big, 'big.bin');
      assert.match(stderr, /No space left on device/);
      assert.ok(size > 0 && size < 40 * 1024 * 1024, `partial file of ${size} bytes`);

      const st = await fs.status();
      const w = st.writesWaiting as WritesWaiting;
      assert.equal(w.cause, 'paused');
      assert.equal(w.refusing, true);
      assert.ok(w.refused >= 1);
      assert.match(w.message, /cannot upload \(uploads are paused\); resume uploads or raise the cache size/);
      assert.match(
        await fs.machine.ok('status', fs.name),
        /writes refused since \d\d:\d\d:\d\d: the cache is full of changes that cannot upload/,
      );
      // Another write that needs room is refused at once too (the timeout is not paid again).
      const again = await run('dd', ['if=/dev/zero', `of=${fs.mnt}/more.bin`, 'bs=1M', 'count=4'], { timeoutMs: 0 });
      assert.match(again.stderr, /No space left on device/);

      // Nothing written is lost, and it all uploads once uploads resume.
      await sh(`cmp -n ${size} ${big} ${fs.mnt}/big.bin && cmp ${kept} ${fs.mnt}/kept.bin`);
      await setPaused(fs, false);
      await fs.sync();
      const after = await fs.status();
      assert.equal(after.dirtyBytes, 0);
      assert.equal(after.writesWaiting ?? null, null, 'the state is over');
      await fs.unmount();
      await verifyFromBucket(fs.bucket, async (mnt) => {
        assert.equal((await fsp.stat(path.join(mnt, 'big.bin'))).size, size);
        await sh(`cmp -n ${size} ${big} ${mnt}/big.bin && cmp ${kept} ${mnt}/kept.bin`);
      });
    },
  );

  it(
    'bucket unreachable: the writer gets ENOSPC, status says offline since when, and after reconnecting everything uploads by itself',
    { timeout: 300_000 },
    async () => {
      env.proxy.clear();
      const fs = await bed.filespace({
        endpoint: env.proxy.endpoint,
        cacheSize: '16MiB',
        settings: { 'upload-delay': '0s', 'write-stall-timeout': '2s', 'lease-ttl': '120s' },
      });
      await fs.mount();
      const kept = await randomFile(env.local, 'kept-off.bin', 1024 * 1024);
      await sh(`cp ${kept} ${fs.mnt}/kept.bin`);
      await fs.sync();
      env.proxy.goOffline();
      const big = await randomFile(env.local, 'big-off.bin', 40 * 1024 * 1024);
      const { stderr, size } = await fillUntilRefused(fs, big, 'big.bin');
      assert.match(stderr, /No space left on device/);

      const st = await fs.status();
      assert.equal(st.offline, true);
      assert.equal(typeof st.offlineSince, 'number');
      const w = st.writesWaiting as WritesWaiting;
      assert.equal(w.cause, 'offline');
      assert.match(w.message, /cannot upload \(the bucket does not answer\)/);
      // (kept.bin is not read here: its clean chunk was evicted to make room, and the bucket is away.)
      await sh(`cmp -n ${size} ${big} ${fs.mnt}/big.bin`);

      env.proxy.goOnline();
      // The status last seen names what is still missing should this time out.
      let last: unknown;
      await until(
        'everything to upload without anyone asking',
        async () => {
          const s = await fs.status();
          last = {
            dirtyBytes: s.dirtyBytes,
            pendingMetaOps: s.pendingMetaOps,
            offline: s.offline,
            writesWaiting: s.writesWaiting,
          };
          return s.dirtyBytes === 0 && s.pendingMetaOps === 0 && s.offline === false && (s.writesWaiting ?? null) === null;
        },
        180_000,
      ).catch((err: Error) => {
        throw new Error(`${err.message}; status last said ${JSON.stringify(last)}`);
      });
      await fs.sync();
      await fs.unmount();
      await verifyFromBucket(fs.bucket, async (mnt) => {
        await sh(`cmp -n ${size} ${big} ${mnt}/big.bin && cmp ${kept} ${mnt}/kept.bin`);
      });
    },
  );

  it(
    'write lease lost to another machine: the waiting writer gets EROFS at once, and its data is set aside intact',
    { timeout: 300_000 },
    async () => {
      env.proxy.clear();
      const settings = { 'upload-delay': '0s', 'lease-ttl': '3s', 'write-stall-timeout': '1h' };
      const a = await bed.filespace({ cacheSize: '16MiB', settings });
      const b = await bed.link(await bed.machine('taker'), a.bucket);
      await b.set(settings);
      await a.mount();
      await setPaused(a, true);
      const big = await randomFile(env.local, 'big-lease.bin', 40 * 1024 * 1024);
      const writing = fillUntilRefused(a, big, 'big.bin');
      writing.catch(() => undefined);
      // The writer waits for room (with a stall timeout of an hour) when the other machine takes over.
      const w = await until(
        'the writer to wait for room',
        // null until a writer waits (status says so as soon as it is asked, before the dd has filled the cache).
        async () => ((await a.status()).writesWaiting as WritesWaiting | null) ?? undefined,
        120_000,
      );
      assert.equal(w.cause, 'paused');
      assert.equal(w.refusing, false);
      await b.mount({ takeover: true });
      const { stderr, size } = await writing;
      assert.match(stderr, /Read-only file system/);
      assert.match(String((await a.status()).readOnlyReason), /taken over|another machine/);

      // What a wrote is kept aside and recoverable byte for byte.
      await a.unmount();
      await a.mount({ readOnly: true });
      const aside = (await a.status()).aside as Array<{ id: string; files: number }>;
      assert.equal(aside.length, 1);
      const out = path.join(env.local, 'recovered');
      await a.machine.ok('aside', a.name, 'export', aside[0]!.id, out);
      assert.equal((await fsp.stat(path.join(out, 'big.bin'))).size, size);
      await sh(`cmp -n ${size} ${big} ${out}/big.bin`);
      await a.unmount();
      await b.unmount();
    },
  );
});
