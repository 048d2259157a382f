/**
 * Unmounting a linked filespace, whichever process runs it: its engine is asked over its
 * control socket and waited for until its process is gone (it releases the cache lock last).
 * Forced, a mount whose engine cannot stop in order, or whose engine is gone while the kernel
 * still holds the mount, is detached lazily; the engine sees its session end and stops by
 * itself (see MountHost), and what it could not flush is what a crash would lose.
 */

import { sleep } from '../engine/util/concurrency';
import { Homes, LinkConfig, socketPath } from './config';
import { callControl, notRunning } from './control';
import { HostError } from './errors';

export type UnmountOutcome =
  /** The engine unmounted and its process is gone. */
  | { readonly kind: 'unmounted' }
  /** No engine ran it, but the kernel still had the mount: it was detached. */
  | { readonly kind: 'detached-stale' }
  /** The engine could not unmount in order (`reason`); the mount was detached lazily. */
  | { readonly kind: 'detached'; readonly reason: string };

/** How long to wait for the engine's process to be gone after it unmounted. */
const PROCESS_EXIT_WAIT_MS = 30_000;

export async function unmountLinked(h: Homes, cfg: LinkConfig, force: boolean): Promise<UnmountOutcome> {
  const sock = socketPath(h, cfg.name);
  let pid: number | undefined;
  let outcome: UnmountOutcome = { kind: 'unmounted' };
  try {
    pid = (await callControl(sock, '/v1/status', {}, 5000)).pid;
    await callControl(sock, '/v1/unmount', { force }, 120_000);
  } catch (err) {
    const { isMountPoint, unmountPath } = await import('../../native/fuse/adapter');
    if (notRunning(err)) {
      if (force && (await isMountPoint(cfg.mountPoint))) {
        await unmountPath(cfg.mountPoint, true);
        return { kind: 'detached-stale' };
      }
      throw new HostError(
        `"${cfg.name}" is not mounted${(await isMountPoint(cfg.mountPoint)) ? ' by a live engine; use --force to detach the stale mount' : ''}`,
        'NOT_MOUNTED',
      );
    }
    if (!force || !(await isMountPoint(cfg.mountPoint))) throw err;
    await unmountPath(cfg.mountPoint, true);
    outcome = { kind: 'detached', reason: (err as Error).message };
  }
  const deadline = Date.now() + PROCESS_EXIT_WAIT_MS;
  while (pid && Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      break;
    }
    await sleep(100);
  }
  return outcome;
}
