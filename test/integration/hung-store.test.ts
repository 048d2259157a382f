/**
 * A bucket that accepts connections but never answers, through the fault proxy: status says
 * offline within seconds (not after the S3 client's minutes of timeouts and retries), cached
 * data stays readable, repeated failures are one state rather than one error per attempt, and
 * once the bucket answers again the backlog uploads at once and "offline" clears. A cold read
 * while the bucket does not answer fails after one read timeout, not two.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

describe('a bucket that does not answer', () => {
  const env = proxiedBed('hung');
  const bed = env.bed;

  it(
    'is shown offline within seconds, keeps serving the cache, and drains at once when it answers again',
    { timeout: 300_000 },
    async () => {
      env.proxy.clear();
      // A long lease: this test is about data, not about the lease.
      const fs = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '0s', 'lease-ttl': '120s' } });
      await fs.mount();
      const cached = await randomFile(env.local, 'cached.bin', 1024 * 1024);
      await sh(`cp ${cached} ${fs.mnt}/cached.bin`);
      await fs.sync();

      env.proxy.set({ stall: true });
      const during = await randomFile(env.local, 'during.bin', 3 * 1024 * 1024);
      await sh(`cp ${during} ${fs.mnt}/during.bin`);
      // The S3 client alone would wait 30 s per attempt, 5 attempts, before reporting anything.
      const st = await until(
        'status to say offline',
        async () => {
          const s = await fs.status();
          return s.offline === true ? s : undefined;
        },
        25_000,
      );
      assert.equal(typeof st.offlineSince, 'number');
      assert.match(await fs.machine.ok('status', fs.name), /\(offline since \d\d:\d\d:\d\d: the bucket does not answer\)/);
      await sh(`cmp ${cached} ${fs.mnt}/cached.bin && cmp ${during} ${fs.mnt}/during.bin`); // the cache still serves
      // Offline is one state: it does not churn into a new error per retry.
      const errors = new Set<string>();
      for (let i = 0; i < 5; i++) {
        const s = await fs.status();
        assert.equal(s.offline, true);
        if (typeof s.lastError === 'string' && s.lastError) errors.add(s.lastError);
        await new Promise((r) => setTimeout(r, 1000));
      }
      assert.ok(errors.size <= 1, `one state, not a stream of errors: ${[...errors].join(' | ')}`);

      // It answers again. The uploads stuck on dead connections are retried at once: without
      // that they would sit out the S3 client's 30 s request timeout first.
      env.proxy.clear();
      await until(
        'the backlog to upload and "offline" to clear, without anyone asking',
        async () => {
          const s = await fs.status();
          return s.dirtyBytes === 0 && s.pendingMetaOps === 0 && s.offline === false;
        },
        25_000,
      );
      await fs.unmount();
      const reader = await bed.link(await bed.machine('reader'), fs.bucket);
      await reader.mount({ readOnly: true });
      await sh(`cmp ${during} ${reader.mnt}/during.bin`);
      await reader.unmount();
    },
  );

  it(
    "a cold read fails with EIO after one read timeout: the kernel's retry of the same page does not wait again",
    { timeout: 300_000 },
    async () => {
      env.proxy.clear();
      const writer = await bed.filespace({ chunkSize: '1MiB' });
      await writer.mount();
      const src = await randomFile(env.local, 'cold.bin', 512 * 1024); // one chunk
      await sh(`cp ${src} ${writer.mnt}/cold.bin`);
      await writer.sync();
      await writer.unmount();
      const reader = await bed.link(await bed.machine('cold-reader'), writer.bucket, '', undefined, env.proxy.endpoint);
      // The read timeout must be well past the time to see that the bucket does not answer: up to
      // three probe timeouts (one for the read, one more when something answered just before
      // it, one for the probe), or the kernel's retry comes before "offline" and asks again.
      await reader.set({ 'probe-timeout': '1s', 'read-timeout': '10s' });
      await reader.mount({ readOnly: true });
      env.proxy.set({ stall: true });
      const chunkGets = (ranged: boolean) =>
        env.proxy.log.filter((r) => r.method === 'GET' && r.url.includes('/chunks/') && (r.range !== undefined) === ranged)
          .length;
      const before = { whole: chunkGets(false), ranged: chunkGets(true) };
      const r = await run('dd', [`if=${path.join(reader.mnt, 'cold.bin')}`, 'of=/dev/null', 'bs=128k', 'count=1'], {
        timeoutMs: 0,
      });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /Input\/output error/);
      // One read, one download that waited out the read timeout (the kernel read ahead, failed,
      // and asked again for the page; that second request is answered at once). The first read
      // of a stream also asks for the chunk's first segments alongside the whole chunk.
      assert.equal(chunkGets(false) - before.whole, 1, 'the chunk was asked for once');
      assert.ok(chunkGets(true) - before.ranged <= 1, 'its first segments at most once, alongside');
      env.proxy.clear();
      await until('the bucket to answer again', async () => (await reader.status()).offline === false, 30_000);
      await sh(`cmp ${src} ${reader.mnt}/cold.bin`);
      await reader.unmount();
    },
  );
});
