/**
 * Crashes at random points: a mixed workload (creates, appends, random writes, renames,
 * deletes, fsyncs) runs on the mount while the engine is killed with SIGKILL after a random
 * delay, again and again, restarting each time. After every restart everything the workload
 * had fsynced before the kill is exactly there (and everything it deleted and fsynced is
 * gone), and `filespace check` finds the metadata consistent, locally and in the bucket.
 * Each kill comes after the workload made a random number (3 to 10) of new promises, not after
 * a time, so every round checks something whatever the machine's speed.
 * FILESPACE_CRASH_ROUNDS raises the number of rounds (CI runs 6).
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, sh, tmpDir, until } from '../helpers/bed';

// The workload logs "FILE name hash" / "GONE name" only after the operation and its fsync
// returned: a promise the filesystem made. Before touching a file it logs "BUSY name": a kill
// during that one operation may leave either the old or the new state (POSIX allows both).
const WORKLOAD = String.raw`
import os, random, sys, hashlib
root, log_path, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rnd = random.Random(seed)
log = open(log_path, 'a', buffering=1)
def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY); os.fsync(fd); os.close(fd)
def digest(p):
    with open(p, 'rb') as f: return hashlib.sha256(f.read()).hexdigest()
os.makedirs(root, exist_ok=True)
live = []
n = 0
while True:
    n += 1
    op = rnd.random()
    try:
        if op < 0.35 or not live:
            name = os.path.join(root, 'f%d-%d' % (seed, n))
            log.write('BUSY %s\n' % name)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, os.urandom(rnd.randint(0, 300000)))
            os.fsync(fd); os.close(fd); fsync_dir(root)
            live.append(name); log.write('FILE %s %s\n' % (name, digest(name)))
        elif op < 0.55:
            name = rnd.choice(live)
            log.write('BUSY %s\n' % name)
            fd = os.open(name, os.O_WRONLY | os.O_APPEND)
            os.write(fd, os.urandom(rnd.randint(1, 70000))); os.fsync(fd); os.close(fd)
            log.write('FILE %s %s\n' % (name, digest(name)))
        elif op < 0.75:
            name = rnd.choice(live)
            log.write('BUSY %s\n' % name)
            fd = os.open(name, os.O_WRONLY)
            size = os.fstat(fd).st_size
            os.pwrite(fd, os.urandom(rnd.randint(1, 50000)), rnd.randint(0, size + 10000))
            os.fsync(fd); os.close(fd)
            log.write('FILE %s %s\n' % (name, digest(name)))
        elif op < 0.88:
            name = rnd.choice(live)
            new = os.path.join(root, 'r%d-%d' % (seed, n))
            log.write('BUSY %s\n' % name); log.write('BUSY %s\n' % new)
            os.rename(name, new); fsync_dir(root)
            live.remove(name); live.append(new)
            log.write('GONE %s\n' % name); log.write('FILE %s %s\n' % (new, digest(new)))
        else:
            name = rnd.choice(live)
            log.write('BUSY %s\n' % name)
            os.unlink(name); fsync_dir(root)
            live.remove(name); log.write('GONE %s\n' % name)
    except OSError:
        sys.exit(0)  # the filesystem went away: the engine was killed
`;

/** Promises made so far: "FILE" and "GONE" lines of the workload's log. */
function promiseLines(log: string): number {
  return log.split('\n').filter((l) => l.startsWith('FILE ') || l.startsWith('GONE ')).length;
}

async function sha256(file: string): Promise<string> {
  return createHash('sha256')
    .update(await fsp.readFile(file))
    .digest('hex');
}

describe('crash loop', () => {
  const bed = new Bed();
  let local: string;

  before(async () => {
    await bed.start();
    local = await tmpDir('crash');
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  const rounds = Number(process.env.FILESPACE_CRASH_ROUNDS ?? 6);
  // About 7 s per round in a CI run; a minute per round, at least 10 minutes.
  it(
    'keeps every fsynced change through repeated SIGKILLs of the engine',
    { timeout: Math.max(10, rounds) * 60_000 },
    async () => {
      const fs = await bed.filespace({ chunkSize: '64KiB', settings: { 'upload-delay': '300ms' } });
      const script = path.join(local, 'workload.py');
      const logFile = path.join(local, 'promises.log');
      await fsp.writeFile(script, WORKLOAD);
      let promised = 0;
      for (let round = 0; round < rounds; round++) {
        const pid = await fs.mount();
        // Everything promised so far is there after the restart.
        // Each name's hash (FILE), null (GONE) or the string 'busy' (BUSY).
        const expected = new Map<string, string | null>();
        const text = await fsp.readFile(logFile, 'utf8').catch(() => '');
        for (const line of text.split('\n')) {
          const [kind, name, hash] = line.split(' ');
          if (kind === 'FILE') expected.set(name!, hash!);
          if (kind === 'GONE') expected.set(name!, null);
          if (kind === 'BUSY') expected.set(name!, 'busy');
        }
        const busy = [...expected.values()].filter((v) => v === 'busy').length;
        for (const [name, hash] of expected) {
          if (hash === 'busy') continue;
          // (names are absolute paths inside this same mount point)
          if (hash === null) await assert.rejects(fsp.stat(name), `round ${round}: ${name} was deleted and must stay deleted`);
          else assert.equal(await sha256(name), hash, `round ${round}: ${name} lost fsynced data`);
        }
        promised = expected.size - busy;
        // Run the workload and kill the engine once it has made a few more promises (so every
        // round tests something, however slow the machine), sometimes in the middle of the next
        // operation.
        const before = promiseLines(await fsp.readFile(logFile, 'utf8').catch(() => ''));
        const wanted = before + 3 + Math.floor(Math.random() * 8);
        const worker = spawn('python3', [script, path.join(fs.mnt, 'work'), logFile, String(1000 + round)], { stdio: 'ignore' });
        const exited = new Promise((r) => worker.on('exit', r));
        await until(
          `round ${round}: the workload to promise ${wanted - before} more changes`,
          async () => promiseLines(await fsp.readFile(logFile, 'utf8').catch(() => '')) >= wanted,
          120_000,
          20,
        );
        if (round % 2 === 1) {
          const lines = (await fsp.readFile(logFile, 'utf8')).split('\n').length;
          await until(
            `round ${round}: the workload to start another operation`,
            async () =>
              (await fsp.readFile(logFile, 'utf8'))
                .split('\n')
                .slice(lines - 1)
                .some((l) => l.startsWith('BUSY ')),
            120_000,
            5,
          );
        }
        process.kill(pid, 'SIGKILL');
        await exited;
        await until(
          `the killed engine ${pid} to be gone`,
          async () => {
            const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
            return stat === '' || / Z /.test(stat);
          },
          30_000,
          50,
        );
      }
      assert.ok(promised > 0, `the checks after each restart covered ${promised} promised changes`);
      await fs.mount();
      await fs.sync();
      await fs.unmount();
      const check = await fs.machine.cli('check', fs.name);
      assert.equal(check.code, 0, `filespace check: ${check.stdout}${check.stderr}`);
      assert.match(check.stdout, /no problems found/);
      // A second machine sees the same final state.
      const other = await bed.link(await bed.machine('after-crashes'), fs.bucket);
      await other.mount({ readOnly: true });
      const first = await fs.mount().then(() => sh(`cd ${fs.mnt} && find . -type f -print0 | sort -z | xargs -0 sha256sum`));
      const second = await sh(`cd ${other.mnt} && find . -type f -print0 | sort -z | xargs -0 sha256sum`);
      assert.equal(second, first);
      await other.unmount();
      await fs.unmount();
    },
  );
});
