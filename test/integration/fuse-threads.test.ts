/**
 * The threads that serve FUSE requests in a mount's engine take no signals. When a session
 * ends, libfuse cancels its worker threads; a signal handler (libuv's, for SIGCHLD of any
 * child such as fusermount) run on a worker being cancelled deadlocked it, and the unmount
 * waited for ever. So every thread waiting on /dev/fuse blocks SIGCHLD, SIGTERM, SIGINT and
 * SIGHUP, while the engine's JS thread still takes them (a mount still stops on SIGTERM). And
 * the engine's connection to the kernel (/dev/fuse) is close-on-exec.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, sh } from '../helpers/bed';

const SIGNALS = { SIGHUP: 1, SIGINT: 2, SIGTERM: 15, SIGCHLD: 17 } as const;
/** O_CLOEXEC in /proc/<pid>/fdinfo's octal flags (Linux, x86 and arm alike). */
const O_CLOEXEC = 0o2000000;

/** Whether `signal` is in a /proc status mask (hex, bit n-1 for signal n). */
function inMask(mask: string, signal: number): boolean {
  return (BigInt(`0x${mask}`) & (1n << BigInt(signal - 1))) !== 0n;
}

/** Threads of `pid` in a read of /dev/fuse now, with their blocked-signal masks. */
async function fuseReaders(pid: number): Promise<Array<{ tid: number; blocked: string }>> {
  const out: Array<{ tid: number; blocked: string }> = [];
  for (const tid of await fsp.readdir(`/proc/${pid}/task`)) {
    const task = `/proc/${pid}/task/${tid}`;
    const syscall = (await fsp.readFile(`${task}/syscall`, 'utf8').catch(() => '')).trim().split(' ');
    if (syscall[0] !== '0') continue; // read(2)
    const fd = Number(BigInt(syscall[1] ?? '-1'));
    const target = await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (target !== '/dev/fuse') continue;
    const status = await fsp.readFile(`${task}/status`, 'utf8');
    out.push({ tid: Number(tid), blocked: /^SigBlk:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '' });
  }
  return out;
}

describe('the threads serving a mount', () => {
  const bed = new Bed();
  let fs: Linked;

  before(async () => {
    await bed.start();
    fs = await bed.filespace({ chunkSize: '1MiB' });
    await fs.mount();
  });

  after(async () => {
    await bed.stop();
  });

  it('keep the kernel connection to themselves: a child of the engine does not inherit it', async () => {
    // Inherited, a child that outlived the engine would keep the mount's connection open, and
    // every access to the mount would wait for ever instead of failing with ENOTCONN.
    const pid = await fs.pid();
    const conns: string[] = [];
    for (const fd of await fsp.readdir(`/proc/${pid}/fd`)) {
      if ((await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '')) !== '/dev/fuse') continue;
      const flags = /^flags:\s*([0-7]+)$/m.exec(await fsp.readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1] ?? '';
      conns.push(`${fd}:${flags}`);
      assert.ok(
        flags !== '' && (parseInt(flags, 8) & O_CLOEXEC) !== 0,
        `/dev/fuse as fd ${fd} is close-on-exec (flags ${flags})`,
      );
    }
    assert.equal(conns.length, 1, `one connection to /dev/fuse: ${conns.join(', ')}`);
  });

  it('take no signals where they wait for FUSE requests; the JS thread takes them', async () => {
    // Some requests first, so libfuse has started workers of its own besides the first thread.
    await sh(`for i in 1 2 3 4 5 6 7 8; do echo $i > ${fs.mnt}/f$i & done; wait; cat ${fs.mnt}/f* > /dev/null`);
    const pid = await fs.pid();
    const readers = await fuseReaders(pid);
    assert.ok(readers.length >= 1, 'a thread waits on /dev/fuse');
    for (const r of readers) {
      for (const [name, n] of Object.entries(SIGNALS))
        assert.ok(inMask(r.blocked, n), `thread ${r.tid} blocks ${name} (SigBlk ${r.blocked})`);
    }
    const main = await fsp.readFile(`/proc/${pid}/task/${pid}/status`, 'utf8');
    const mainBlocked = /^SigBlk:\s*([0-9a-f]+)$/m.exec(main)?.[1] ?? '';
    assert.ok(
      !inMask(mainBlocked, SIGNALS.SIGCHLD) && !inMask(mainBlocked, SIGNALS.SIGTERM),
      `the JS thread takes signals (SigBlk ${mainBlocked})`,
    );
    assert.equal((await fsp.readFile(path.join(fs.mnt, 'f8'), 'utf8')).trim(), '8');
    await fs.unmount();
  });
});
