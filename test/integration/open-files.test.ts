/**
 * Files in use while the engine works on them, through real mounts on a real S3 server:
 * fsync keeps succeeding while the chunks it is making durable upload and leave the local
 * store; a file deleted while a process holds it open is gone at once (on this machine, on a
 * follower, and after a kill -9 of the engine) yet stays readable and writable through the
 * open descriptor, and its data goes at the last close.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, run, sh, tmpDir } from '../helpers/bed';

// Rewrites its own file with random pwrites (1 B to 1 MiB, sizes spread evenly over the
// orders of magnitude), now and then an ftruncate, and an fsync every ~13 operations. An
// fsync that fails is counted (and the run goes on); at the end the file must hold exactly
// what was written. Prints one JSON line.
const REWRITER = String.raw`
import hashlib, json, os, random, sys
path, seed, ops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MiB = 1 << 20
rnd = random.Random(seed)
size = 40 * MiB
shadow = bytearray(os.urandom(size))
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
for off in range(0, size, MiB): os.pwrite(fd, shadow[off:off + MiB], off)
os.fsync(fd)
fsyncs, failures, errors = 0, 0, []
def fsync():
    global fsyncs, failures
    fsyncs += 1
    try: os.fsync(fd)
    except OSError as e:
        failures += 1
        errors.append('fsync: %s' % e)
for n in range(ops):
    try:
        if rnd.random() < 0.04:
            new = rnd.randint(30 * MiB, 40 * MiB)
            os.ftruncate(fd, new)
            if new < len(shadow): del shadow[new:]
            else: shadow.extend(bytes(new - len(shadow)))
        else:
            length = min(MiB, int(2 ** rnd.uniform(0, 20)))
            off = rnd.randint(0, 40 * MiB - length)
            data = os.urandom(length)
            os.pwrite(fd, data, off)
            if off > len(shadow): shadow.extend(bytes(off - len(shadow)))
            shadow[off:off + length] = data
    except OSError as e:
        errors.append('write: %s' % e)
    if rnd.randint(1, 13) == 1: fsync()
fsync()
os.close(fd)
with open(path, 'rb') as f: got = f.read()
print(json.dumps({'fsyncs': fsyncs, 'failures': failures, 'errors': errors[:5],
                  'intact': hashlib.sha256(got).hexdigest() == hashlib.sha256(bytes(shadow)).hexdigest()}))
`;

interface RewriterResult {
  fsyncs: number;
  failures: number;
  errors: string[];
  intact: boolean;
}

function python(script: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('python3', ['-c', script, ...args], { timeoutMs: 900_000 });
}

describe('files in use', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('open-files');
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('fsync succeeds while the chunks it syncs upload and move to the clean cache', async () => {
    // No upload delay: chunks upload (and leave the dirty store) while the writers fsync.
    const fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '1GiB', settings: { 'upload-delay': '0s' } });
    await fs.mount();
    const ops = Number(process.env.FILESPACE_FSYNC_STRESS_OPS ?? 600);
    const results = await Promise.all([1, 2].map(async (w) => {
      const r = await python(REWRITER, [path.join(fs.mnt, `db${w}.bin`), String(w), String(ops)]);
      assert.equal(r.code, 0, `writer ${w} failed: ${r.stderr}`);
      return JSON.parse(r.stdout) as RewriterResult;
    }));
    // The engine's own account of any I/O error, for the failure message.
    const ioErrors = (await sh(`cat ${fs.machine.home}/run/*.log 2>/dev/null | grep -i 'error' | head -5 || true`)).trim();
    for (const [i, r] of results.entries()) {
      console.log(`writer ${i + 1}: ${r.fsyncs} fsyncs, ${r.failures} failed`);
      assert.ok(r.fsyncs >= ops / 20, `writer ${i + 1} made enough fsyncs to count (${r.fsyncs})`);
      assert.deepEqual({ failures: r.failures, errors: r.errors }, { failures: 0, errors: [] }, `writer ${i + 1}: no fsync may fail (${r.fsyncs} fsyncs)\n${ioErrors}`);
      assert.ok(r.intact, `writer ${i + 1}: the file holds exactly what was written`);
    }
    await fs.unmount();
  });
});
