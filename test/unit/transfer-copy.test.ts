/**
 * The copy behind import and export (engine/transfer/copy.ts) on local folders: a file whose
 * bytes arrive changed fails verification by name, is removed and keeps no time, so a re-run
 * copies it again; a re-run skips what is complete; object keys that cannot be paths are named
 * (s3Tree.ts `keyProblem`); names that are not UTF-8 survive as bytes (util/names.ts).
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { copyTree, newProgress } from '../../electron/engine/transfer/copy';
import { LocalTree } from '../../electron/engine/transfer/localTree';
import { keyProblem } from '../../electron/engine/transfer/s3Tree';
import type { DestTree, FileWriter } from '../../electron/engine/transfer/tree';
import { nameFromBytes, nameToBytes } from '../../electron/engine/util/names';

/** A local destination that flips one byte of the file named `victim` as it is written. */
function corrupting(inner: LocalTree, victim: string): DestTree {
  return {
    description: inner.description,
    sparse: inner.sparse,
    symlinks: inner.symlinks,
    stat: (p) => inner.stat(p),
    mkdir: (p) => inner.mkdir(p),
    symlink: (t, p) => inner.symlink(t, p),
    remove: (p) => inner.remove(p),
    setAttrs: (p, m, t) => inner.setAttrs(p, m, t),
    read: (p) => inner.read(p),
    close: () => inner.close(),
    async create(p, mode, size, mtimeMs): Promise<FileWriter> {
      const w = await (inner as DestTree).create(p, mode, size, mtimeMs);
      if (p !== victim) return w;
      return {
        write: (data, pos) => {
          const bad = Buffer.from(data);
          bad[0] = bad[0]! ^ 0xff;
          return w.write(bad, pos);
        },
        finish: (n) => w.finish(n),
        abort: () => w.abort(),
      };
    },
  };
}

describe('copying a tree (import and export)', () => {
  let dir: string;
  let src: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-copy-'));
    src = path.join(dir, 'src');
    await fsp.mkdir(path.join(src, 'sub'), { recursive: true });
    for (let i = 0; i < 20; i++) await fsp.writeFile(path.join(src, 'sub', `f${i}`), randomBytes(1000 + i));
    await fsp.writeFile(path.join(src, 'victim.bin'), randomBytes(300_000));
    await fsp.utimes(path.join(src, 'victim.bin'), new Date(1_500_000_000_123), new Date(1_500_000_000_123));
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  it('fails a file whose copy reads back different, naming it; leaves no copy that a re-run would take as done', async () => {
    const out = path.join(dir, 'out');
    await fsp.mkdir(out);
    const p = await copyTree(new LocalTree(src), corrupting(new LocalTree(out), 'victim.bin'), newProgress(Date.now()));
    assert.equal(p.phase, 'done');
    assert.equal(p.copied, 20);
    assert.equal(p.failed.length, 1);
    assert.equal(p.failed[0]!.path, 'victim.bin');
    assert.match(
      p.failed[0]!.error,
      /^verification failed: victim\.bin reads back with SHA-256 [0-9a-f]{64}, the source had [0-9a-f]{64}$/,
    );
    await assert.rejects(fsp.stat(path.join(out, 'victim.bin')), 'the bad copy is removed');

    const again = await copyTree(new LocalTree(src), new LocalTree(out), newProgress(Date.now()));
    assert.deepEqual([again.copied, again.alreadyThere, again.failed.length, again.verified], [1, 20, 0, 1]);
    assert.ok((await fsp.readFile(path.join(out, 'victim.bin'))).equals(await fsp.readFile(path.join(src, 'victim.bin'))));
    const mtime = async (root: string) => Math.floor((await fsp.stat(path.join(root, 'victim.bin'))).mtimeMs);
    assert.equal(await mtime(out), await mtime(src), "the time is the source's, to the millisecond");
  });

  it('names object keys that cannot be paths', () => {
    assert.equal(keyProblem('a/b c/ü.txt'), undefined);
    assert.match(keyProblem('a//b')!, /empty name/);
    assert.match(keyProblem('/a')!, /empty name/);
    assert.match(keyProblem('a/../b')!, /"\.\."/);
    assert.match(keyProblem('./b')!, /"\."/);
    assert.match(keyProblem('x'.repeat(256))!, /longer than 255 bytes/);
    assert.equal(keyProblem('é'.repeat(127)), undefined); // 254 bytes
    assert.match(keyProblem('é'.repeat(128))!, /longer than 255 bytes/);
  });

  it('keeps names that are not UTF-8 byte for byte', () => {
    for (let i = 0; i < 500; i++) {
      const raw = randomBytes(1 + (i % 12));
      assert.ok(nameToBytes(nameFromBytes(raw)).equals(raw), raw.toString('hex'));
    }
    assert.equal(nameFromBytes(Buffer.from('ünïcødé 日本', 'utf8')), 'ünïcødé 日本');
  });
});
