/**
 * `python3` without a version manager's shim in between. Tests start python3 many times (the S3
 * server, and scripts that walk, write or map files in a mount); where python3 is pyenv's shim,
 * a bash script that asks pyenv which interpreter to run, each start costs about a second on a
 * busy two-core machine against a third of that for the interpreter itself. This puts a folder
 * with `python3` linked to the very interpreter the shim chose (here, for this process) first
 * on this process's PATH, which every command a test runs inherits; nothing else on the PATH
 * moves, and a python3 that is no shim is linked to itself.
 */

import { execFile } from 'node:child_process';
import { rmSync, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

let done: Promise<void> | undefined;

/** Once per process: python3 on the PATH is the interpreter itself (see the header). */
export function python3WithoutShim(): Promise<void> {
  done ??= (async () => {
    const exe = await new Promise<string>((resolve) =>
      execFile('python3', ['-c', 'import sys; print(sys.executable)'], (err, stdout) => resolve(err ? '' : stdout.trim())),
    );
    // No interpreter (the prerequisite check in test/run.mjs names it) or none that says where it is: leave PATH alone.
    if (!exe || !(await fsp.stat(exe).catch(() => undefined))) return;
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-python-'));
    await fsp.symlink(exe, path.join(dir, 'python3'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    process.env.PATH = `${dir}${path.delimiter}${process.env.PATH ?? ''}`;
  })();
  return done;
}
