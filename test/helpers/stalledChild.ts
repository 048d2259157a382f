/**
 * For tests that kill a child process at a chosen point (kill -9 mid-way): waits for the child
 * to say "stalled" over IPC, then kills it with SIGKILL and waits for it to be gone. A child
 * that dies or says anything else first fails the test at once; the child is killed whatever
 * happens.
 */

import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';

export async function killWhenStalled(child: ChildProcess): Promise<void> {
  const exited = new Promise<string>((resolve) => child.on('exit', (code, signal) => resolve(`exited (${signal ?? code})`)));
  try {
    const said = await Promise.race([
      new Promise<string>((resolve) => child.once('message', (m) => resolve(m as string))),
      exited,
    ]);
    assert.equal(said, 'stalled');
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}
