/**
 * The engine lives exactly as long as its mount. Unmounted from outside (`fusermount -u`, a
 * plain `umount`), it notices, flushes to the cache, releases the write lease and exits, so
 * the folder mounts again here and other machines can write; with the bucket unreachable it
 * still exits. SIGTERM ends it within a bounded time even when every S3 request hangs, and
 * what was written before is intact at the next mount.
 */

import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A process that exited but was not reaped yet holds nothing.
  return true;
}

/** Waits (polling /proc) until `pid` has exited. */
async function exited(pid: number, timeoutMs: number): Promise<void> {
  await until(
    `engine process ${pid} to exit`,
    async () => {
      if (!alive(pid)) return true;
      const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      return stat === '' || /^\d+ \(.*\) Z /.test(stat);
    },
    timeoutMs,
  );
}

async function isMounted(dir: string): Promise<boolean> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[4] === dir);
}

describe('the engine lives as long as its mount', () => {
  const env = proxiedBed('lifetime');

  it('exits after an external unmount, releases the lease, and the folder mounts again', { timeout: 300_000 }, async () => {
    const bed = env.bed;
    const fs = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    const pid = await fs.mount();
    await sh(`echo before > ${fs.mnt}/a.txt`);
    await fs.sync();
    const r = await run('fusermount', ['-u', fs.mnt]);
    assert.equal(r.code, 0, r.stderr);
    await exited(pid, 60_000);
    assert.equal((await fs.status()).state, 'unmounted');
    const log = await fsp.readFile(path.join(fs.machine.home, 'run', `${fs.name}.log`), 'utf8');
    assert.match(log, /was unmounted from outside/);
    // The lease was released: another machine writes without --takeover, long before it expires.
    const other = await bed.link(await bed.machine('second'), fs.bucket);
    await other.mount();
    await sh(`test "$(cat ${other.mnt}/a.txt)" = before && echo second > ${other.mnt}/b.txt`);
    await other.sync();
    await other.unmount();
    // And this machine mounts its folder again.
    await fs.mount();
    await sh(`test "$(cat ${fs.mnt}/a.txt)" = before && test "$(cat ${fs.mnt}/b.txt)" = second`);
    await fs.unmount();
  });

  it('keeps serving a lazily detached mount until its last user lets go, then exits', { timeout: 300_000 }, async () => {
    const bed = env.bed;
    const fs = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    const pid = await fs.mount();
    await sh(`echo held > ${fs.mnt}/h.txt`);
    const out = path.join(env.local, 'held.txt');
    // A process working inside the mount, which reads a file there once told to.
    const holder = spawn('bash', ['-c', 'read -r _; cat h.txt > "$0"', out], {
      cwd: fs.mnt,
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    const holderExit = new Promise<number | null>((r) => holder.on('exit', (code) => r(code)));
    const logFile = path.join(fs.machine.home, 'run', `${fs.name}.log`);
    try {
      await until(
        'the holder to start in the mount',
        async () => (await fsp.readlink(`/proc/${holder.pid}/cwd`).catch(() => '')) === fs.mnt,
      );
      const r = await run('umount', ['-l', fs.mnt]);
      assert.equal(r.code, 0, r.stderr);
      await until('the engine to notice the detach', async () =>
        /was detached from outside/.test(await fsp.readFile(logFile, 'utf8')),
      );
      assert.ok(alive(pid), 'the engine still serves the detached mount');
      holder.stdin.end('go\n');
      assert.equal(await holderExit, 0);
    } finally {
      holder.kill('SIGKILL');
    }
    assert.equal(await fsp.readFile(out, 'utf8'), 'held\n', 'the detached mount still answered');
    await exited(pid, 60_000);
    assert.match(await fsp.readFile(logFile, 'utf8'), /was unmounted from outside/);
  });

  it('exits after an external unmount while the bucket is unreachable', { timeout: 300_000 }, async () => {
    const bed = env.bed;
    env.proxy.clear();
    const fs = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '1h' } });
    const pid = await fs.mount();
    const src = await randomFile(env.local, 'offline-unmount.bin', 3 * 1024 * 1024 + 5);
    await sh(`cp ${src} ${fs.mnt}/data.bin`);
    env.proxy.goOffline();
    try {
      const r = await run('umount', [fs.mnt]);
      assert.equal(r.code, 0, r.stderr);
      await exited(pid, 90_000);
      assert.equal(await isMounted(fs.mnt), false);
    } finally {
      env.proxy.clear();
    }
    // Nothing was lost: it mounts again here (its own lease) and uploads what waited.
    await fs.mount();
    await sh(`cmp ${src} ${fs.mnt}/data.bin`);
    await fs.set({ 'upload-delay': '0s' });
    await fs.sync();
    await fs.unmount();
  });

  it(
    'ends within a bounded time on SIGTERM while every S3 request hangs, keeping what was written',
    { timeout: 300_000 },
    async () => {
      const bed = env.bed;
      env.proxy.clear();
      const fs = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '0s' } });
      const pid = await fs.mount();
      const src = await randomFile(env.local, 'sigterm.bin', 2 * 1024 * 1024 + 17);
      await sh(`cp ${src} ${fs.mnt}/kept.bin && mkdir ${fs.mnt}/dir && echo meta > ${fs.mnt}/dir/m.txt`);
      // Everything is in the bucket, so a clean stop would also write a metadata checkpoint.
      await fs.sync();
      env.proxy.set({ stall: true }); // S3 accepts connections and never answers
      try {
        process.kill(pid, 'SIGTERM');
        // The engine's own deadline is 30 s; this only bounds the test.
        await exited(pid, 90_000);
        assert.equal(await isMounted(fs.mnt), false, 'the mount is gone');
      } finally {
        env.proxy.clear();
      }
      await fs.mount();
      await sh(`cmp ${src} ${fs.mnt}/kept.bin && test "$(cat ${fs.mnt}/dir/m.txt)" = meta`);
      await fs.unmount();
    },
  );
});
