/**
 * A misbehaving or absent S3, through a fault-injecting proxy between the engine and the test
 * server: uploads retry and complete once a fault clears; reads retry, then fail with EIO
 * within the read timeout (never hang); a cut-short body is never served; offline, cached data
 * stays readable, writes keep landing in the cache, status says offline and what is pending,
 * and everything uploads by itself when the store is back.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, randomFile, run, sh, until } from '../helpers/bed';
import { Fault, proxiedBed } from '../helpers/faultProxy';

describe('faults between the engine and S3', () => {
  const env = proxiedBed('faults');
  const bed = env.bed;

  /** A filespace whose machine talks to S3 through the proxy, with short timeouts. */
  async function proxied(): Promise<Linked & { bucket: string }> {
    env.proxy.clear();
    const fs = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '0s', 'read-timeout': '4s' } });
    await fs.mount();
    return fs;
  }

  /** A second machine that reads straight from the S3 server. */
  async function verifyFromBucket(bucket: string, check: (mnt: string) => Promise<void>): Promise<void> {
    const reader = await bed.link(await bed.machine('direct'), bucket);
    await reader.mount({ readOnly: true });
    try {
      await check(reader.mnt);
    } finally {
      await reader.unmount();
    }
  }

  for (const [label, fault] of [
    ['503 SlowDown', { status: 503, match: { method: 'PUT' } }],
    ['500 InternalError', { status: 500, match: { method: 'PUT' } }],
    ['connection resets', { reset: true, match: { method: 'PUT' } }],
    ['added latency', { latencyMs: 300 }],
  ] as Array<[string, Fault]>) {
    it(`uploads everything once ${label} clear`, async () => {
      const fs = await proxied();
      const src = await randomFile(env.local, `up-${label.replace(/\W/g, '')}.bin`, 3 * 1024 * 1024 + 11);
      env.proxy.set(fault);
      const injectedBefore = env.proxy.injected;
      await sh(`cp ${src} ${fs.mnt}/data.bin && mkdir ${fs.mnt}/dir && echo meta > ${fs.mnt}/dir/m.txt`);
      await until('faults to hit uploads', () => env.proxy.injected > injectedBefore + 2, 120_000);
      if (!fault.latencyMs) {
        const st = await fs.status();
        assert.ok(Number(st.dirtyBytes) > 0 || Number(st.pendingMetaOps) > 0, 'changes wait while the store fails');
      }
      env.proxy.clear();
      await fs.sync();
      const st = await fs.status();
      assert.equal(st.dirtyBytes, 0);
      assert.equal(st.pendingMetaOps, 0);
      await fs.unmount();
      await verifyFromBucket(fs.bucket, async (mnt) => {
        await sh(`cmp ${src} ${mnt}/data.bin && test "$(cat ${mnt}/dir/m.txt)" = meta`);
      });
    });
  }

  for (const [label, fault] of [
    ['a stalled response', { stall: true, match: { method: 'GET', pathIncludes: '/chunks/' } }],
    ['a body cut short', { cutBody: true, match: { method: 'GET', pathIncludes: '/chunks/' } }],
    ['500s on every read', { status: 500, match: { method: 'GET', pathIncludes: '/chunks/' } }],
  ] as Array<[string, Fault]>) {
    it(`fails a read with EIO within the read timeout on ${label}, and reads correctly once it clears`, async () => {
      env.proxy.clear();
      // Written straight to S3 by one machine, read through the proxy by a machine with an empty cache.
      const writer = await bed.filespace({ chunkSize: '1MiB' });
      await writer.mount();
      const src = await randomFile(env.local, `rd-${label.replace(/\W/g, '')}.bin`, 2 * 1024 * 1024);
      await sh(`cp ${src} ${writer.mnt}/r.bin`);
      await writer.sync();
      await writer.unmount();
      const reader = await bed.link(await bed.machine('proxied-reader'), writer.bucket, '', undefined, env.proxy.endpoint);
      await reader.set({ 'read-timeout': '3s' });
      await reader.mount({ readOnly: true });
      env.proxy.set(fault);
      const r = await run('cat', [path.join(reader.mnt, 'r.bin')], { timeoutMs: 90_000 });
      assert.notEqual(r.code, 0, 'the read must fail, not return data');
      assert.match(r.stderr, /Input\/output error/);
      assert.ok(env.proxy.injected > 0);
      env.proxy.clear();
      await sh(`cmp ${src} ${reader.mnt}/r.bin`);
      await reader.unmount();
    });
  }

  it('keeps working offline and uploads by itself when the store is back', async () => {
    const fs = await proxied();
    const before = await randomFile(env.local, 'cached.bin', 1024 * 1024);
    await sh(`cp ${before} ${fs.mnt}/cached.bin`);
    await fs.sync();
    env.proxy.goOffline();
    await sh(`cmp ${before} ${fs.mnt}/cached.bin`); // cached data stays readable
    const during = await randomFile(env.local, 'offline.bin', 2 * 1024 * 1024);
    await sh(`cp ${during} ${fs.mnt}/offline.bin && mkdir ${fs.mnt}/made-offline`); // writes land in the cache
    await until('status to say offline', async () => (await fs.status()).offline === true, 120_000);
    const st = await fs.status();
    assert.ok(Number(st.dirtyBytes) >= 2 * 1024 * 1024, 'status shows what is pending');
    assert.equal(st.state, 'mounted');
    env.proxy.goOnline();
    // On a timeout, what the engine last said and did goes into the failure.
    let last: unknown;
    try {
      await until(
        'uploads to finish without user action',
        async () => {
          const s = await fs.status();
          last = s;
          return s.dirtyBytes === 0 && s.pendingMetaOps === 0 && s.offline === false;
        },
        120_000,
      );
    } catch (err) {
      const log = await fsp.readFile(path.join(fs.machine.home, 'run', `${fs.name}.log`), 'utf8').catch(() => '');
      const tail = log.trimEnd().split('\n').slice(-20).join('\n');
      throw new Error(`${(err as Error).message}; last status ${JSON.stringify(last)}; the engine's log ends:\n${tail}`, {
        cause: err,
      });
    }
    await fs.unmount();
    await verifyFromBucket(fs.bucket, async (mnt) => {
      await sh(`cmp ${during} ${mnt}/offline.bin && test -d ${mnt}/made-offline`);
    });
  });
});
