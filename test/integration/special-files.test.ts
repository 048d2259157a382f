/**
 * Special files on a real mount, against a real S3 server, compared with a local directory:
 * mkfifo, mknod (character and block devices) and Unix sockets bound in the mount are stored as
 * metadata-only entries with the same type, mode and device number as on a local disk; a FIFO
 * carries bytes between a writer and a reader, a socket bound in the mount takes connections;
 * nothing of theirs is uploaded; a follower, a remount and a machine linking from the bucket
 * (checkpoint) see them the same way, and `filespace check` finds nothing wrong.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Bed, Linked, run, sh, tmpDir, until } from '../helpers/bed';

/** Makes the special files under the folder argv[1], as tools do (mkfifo, mknod, bind). */
const MAKE = String.raw`
import os, socket, stat, sys
d = sys.argv[1]
os.mkdir(os.path.join(d, 'sp'), 0o750)
os.mkfifo(os.path.join(d, 'sp', 'pipe'), 0o640)
os.mknod(os.path.join(d, 'sp', 'tty'), 0o620 | stat.S_IFCHR, os.makedev(4, 7))
os.mknod(os.path.join(d, 'sp', 'disk'), 0o660 | stat.S_IFBLK, os.makedev(8, 1))
os.mknod(os.path.join(d, 'sp', 'plain'), 0o600 | stat.S_IFREG)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(os.path.join(d, 'sp', 'sock'))
s.close()
os.mkfifo(os.path.join(d, 'sp', 'moved'), 0o600)
os.rename(os.path.join(d, 'sp', 'moved'), os.path.join(d, 'sp', 'renamed'))
os.mkfifo(os.path.join(d, 'sp', 'gone'), 0o600)
os.unlink(os.path.join(d, 'sp', 'gone'))
`;

/** Serves one connection on a socket bound at argv[1]: echoes what it reads, upper-cased. */
const ECHO_SERVER = String.raw`
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(1)
print('listening', flush=True)
c, _ = s.accept()
c.sendall(c.recv(1024).upper())
c.close()
s.close()
`;

const CLIENT = String.raw`
import socket, sys
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(sys.argv[1])
c.sendall(sys.argv[2].encode())
print(c.recv(1024).decode())
`;

/** What `ls -l` and stat show of each entry of a folder: name, type, mode, rdev, size, nlink. */
async function listing(dir: string): Promise<string> {
  return sh(`cd '${dir}' && stat -c '%n %F %a %t:%T %s %h' * | sort && ls -l | awk 'NR>1 {print $1, $5, $6, $NF}' | sort`);
}

describe('special files', () => {
  const bed = new Bed();

  before(async () => {
    await bed.start();
  });

  after(async () => {
    await bed.stop();
  });

  async function waitFor(b: Linked, name: string): Promise<void> {
    await until(`the follower to see ${name}`, async () =>
      fsp
        .lstat(path.join(b.mnt, name))
        .then(() => true)
        .catch(() => false),
    );
  }

  it('FIFOs, sockets and device nodes look and work as on a local disk, here, on a follower and on a new machine', async () => {
    const settings = { 'lease-ttl': '3s', 'follow-interval': '500ms', 'upload-delay': '0s' };
    const a = await bed.filespace({ chunkSize: '1MiB', settings });
    const b = await bed.link(await bed.machine('follower'), a.bucket);
    await b.set(settings);
    await a.mount();
    await a.sync();
    await b.mount({ readOnly: true });

    const local = await tmpDir('special-ref');
    try {
      for (const dir of [local, a.mnt]) {
        const r = await run('python3', ['-c', MAKE, dir]);
        assert.equal(r.code, 0, `making special files in ${dir} failed: ${r.stderr}`);
      }
      const reference = await listing(path.join(local, 'sp'));
      assert.match(reference, /pipe fifo 640 0:0 0 1/);
      assert.equal(await listing(path.join(a.mnt, 'sp')), reference, 'the mount lists what a local disk lists');

      // A FIFO carries bytes from a writer to a reader, both on the mount.
      const payload = randomBytes(30_000).toString('hex');
      const pipe = path.join(a.mnt, 'sp', 'pipe');
      const [read] = await Promise.all([
        run('sh', ['-c', `cat '${pipe}'`]),
        run('python3', ['-c', `import sys; open(sys.argv[1], 'w').write(sys.argv[2])`, pipe, payload]),
      ]);
      assert.equal(read.code, 0, read.stderr);
      assert.equal(read.stdout, payload, 'the reader got what the writer wrote');

      // A socket bound in the mount takes connections through its name.
      const sockPath = path.join(a.mnt, 'sp', 'live.sock');
      const server = run('python3', ['-c', ECHO_SERVER, sockPath]);
      await until('the server to listen', async () =>
        fsp
          .lstat(sockPath)
          .then((s) => s.isSocket())
          .catch(() => false),
      );
      const answer = await until('a client to get an answer', async () => {
        const r = await run('python3', ['-c', CLIENT, sockPath, 'hello socket']);
        return r.code === 0 ? r.stdout : undefined;
      });
      assert.equal(answer.trim(), 'HELLO SOCKET');
      assert.equal((await server).code, 0);
      await fsp.unlink(sockPath);

      // Nothing of theirs is data: nothing waits to upload, and every entry is in the bucket.
      await a.sync();
      assert.equal(Number((await a.status()).dirtyBytes), 0);

      // A follower sees them as they are.
      await waitFor(b, 'sp/renamed');
      await until('the follower to list everything', async () => (await listing(path.join(b.mnt, 'sp'))) === reference);

      // A remount (snapshot and journal), and a new machine linking from the bucket (checkpoint).
      await b.unmount();
      await a.unmount();
      const check = await a.machine.cli('check', a.name);
      assert.equal(check.code, 0, `check found problems: ${check.stdout}${check.stderr}`);
      await a.mount();
      assert.equal(await listing(path.join(a.mnt, 'sp')), reference, 'a remount lists the same');
      const c = await bed.link(await bed.machine('fresh'), a.bucket);
      await c.mount({ readOnly: true });
      assert.equal(await listing(path.join(c.mnt, 'sp')), reference, 'a machine linking from the bucket lists the same');
      await c.unmount();
      const checkC = await c.machine.cli('check', c.name);
      assert.equal(checkC.code, 0, `check on the new machine found problems: ${checkC.stdout}${checkC.stderr}`);

      // They go like any other entry.
      await fsp.rm(path.join(a.mnt, 'sp'), { recursive: true });
      assert.deepEqual(await fsp.readdir(a.mnt), []);
      await a.unmount();
    } finally {
      await fsp.rm(local, { recursive: true, force: true });
    }
  });
});
