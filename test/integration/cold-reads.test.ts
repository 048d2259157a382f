// Cold reads through real mounts: a machine that reads a file it never had keeps the chunks it
// downloads as received (no second encryption: "FSR2" cache files of segmented chunks), serves the same bytes from
// them, and refuses a damaged one (it is fetched again; never a wrong byte; the checker names
// it); a compressed chunk is kept sealed ("FSL1").

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, randomFile, sh, tmpDir } from '../helpers/bed';

async function magicOf(file: string): Promise<string> {
  const fh = await fsp.open(file, 'r');
  try {
    const b = Buffer.alloc(4);
    await fh.read(b, 0, 4, 0);
    return b.toString('latin1');
  } finally {
    await fh.close();
  }
}

describe('cold reads', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('cold-local');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('keeps downloaded chunks as received, serves them, and fetches a damaged one again', async () => {
    const w = await bed.filespace({ chunkSize: '1MiB', settings: { 'upload-delay': '0s' } });
    await w.mount();
    const src = await randomFile(local, 'random.bin', 5 * 1024 * 1024 + 12_345);
    await sh(`cp '${src}' '${w.mnt}/random.bin'`);
    await sh(
      `python3 -c "import sys; sys.stdout.write('compressible text ' * 100000)" > '${local}/text.txt' && cp '${local}/text.txt' '${w.mnt}/text.txt'`,
    );
    await w.sync();
    await w.unmount();

    const r = await bed.link(await bed.machine('cold'), w.bucket);
    await r.mount({ readOnly: true });
    await sh(`cmp '${src}' '${r.mnt}/random.bin' && cmp '${local}/text.txt' '${r.mnt}/text.txt'`);
    await r.unmount();
    const files = (await sh(`find '${r.cacheDir}/chunks' -type f`)).trim().split('\n');
    const magics = await Promise.all(files.map(magicOf));
    assert.equal(magics.filter((m) => m === 'FSR2').length, 6, `random data is kept as received: ${magics.join(' ')}`);
    assert.equal(magics.filter((m) => m === 'FSL1').length, files.length - 6, 'compressed chunks are sealed');

    // The checker reads both kinds of cache file and finds them whole.
    const whole = await r.machine.cli('check', r.name);
    assert.equal(whole.code, 0, whole.stdout + whole.stderr);
    assert.doesNotMatch(whole.stdout + whole.stderr, /cached chunk .* is damaged/);

    // Damage every cached chunk: each is refused, fetched again, and the bytes are right.
    for (const f of files) {
      const b = await fsp.readFile(f);
      b[b.length - 100]! ^= 0xff;
      await fsp.writeFile(f, b);
    }
    const damaged = await r.machine.cli('check', r.name);
    assert.equal(
      (damaged.stdout + damaged.stderr).match(/cached chunk \S+ is damaged/g)?.length,
      files.length,
      damaged.stdout + damaged.stderr,
    );
    await r.mount({ readOnly: true });
    await sh(`cmp '${src}' '${r.mnt}/random.bin' && cmp '${local}/text.txt' '${r.mnt}/text.txt'`);
    await r.unmount();
    const log = await fsp.readFile(path.join(r.machine.home, 'run', `${r.name}.log`), 'utf8');
    assert.ok((log.match(/was damaged .*fetching it again/g) ?? []).length >= files.length, log);
  });
});
