/**
 * A mounted filespace behaves like a POSIX filesystem, checked against an in-memory reference
 * model: a seeded stream of random operations over a small namespace (so operations collide)
 * runs on the mount and on the model, and every operation must agree on success or failure,
 * the errno code, the bytes read, sizes, modes, directory listings and link targets. Writes
 * land at random offsets with holes and across chunk boundaries (64 KiB chunks); truncates go
 * up and down; renames go over files, over empty and non-empty directories and into other
 * directories. The whole tree is compared every 50 operations, after `filespace sync` and a
 * restart of the mount, and on a second machine that links the filespace from the bucket.
 *
 * The same operations also run on a local directory, which pins the model itself to what the
 * kernel does on a local disk.
 *
 * FILESPACE_MODEL_SEED=<n> replays a run; FILESPACE_MODEL_OPS=<n> makes it longer.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { constants as C, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, tmpDir } from '../helpers/bed';
import {
  Entry,
  Generator,
  Model,
  Op,
  Result,
  UMASK,
  describeOp,
  describeResult,
  sameResult,
  treeDiff,
} from '../helpers/referenceModel';

// ---- a real directory (the mount, or a local one) ------------------------------------------

function entryFromStat(st: import('node:fs').Stats): Entry {
  const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : undefined;
  if (!type) throw new Error(`unexpected file type, mode ${st.mode.toString(8)}`);
  return type === 'dir' ? { type, mode: st.mode & 0o7777 } : { type, mode: st.mode & 0o7777, size: st.size };
}

class RealDir {
  constructor(readonly root: string) {}

  private abs(p: string): string {
    return path.join(this.root, p);
  }

  async apply(op: Op): Promise<Result> {
    try {
      return { ok: true, value: await this.run(op) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return { ok: false, code };
      throw err;
    }
  }

  private async run(op: Op): Promise<unknown> {
    switch (op.k) {
      case 'write': {
        const flags = op.flags === 'create' ? C.O_WRONLY | C.O_CREAT : op.flags;
        const fh = await fsp.open(this.abs(op.path), flags, op.mode);
        try {
          for (let done = 0; done < op.data.length;) {
            const { bytesWritten } = await fh.write(
              op.data,
              done,
              op.data.length - done,
              op.flags === 'a' ? null : op.pos + done,
            );
            done += bytesWritten;
          }
        } finally {
          await fh.close();
        }
        return undefined;
      }
      case 'truncate': {
        if (!op.viaHandle) return fsp.truncate(this.abs(op.path), op.size);
        const fh = await fsp.open(this.abs(op.path), 'r+');
        try {
          await fh.truncate(op.size);
        } finally {
          await fh.close();
        }
        return undefined;
      }
      case 'read': {
        const fh = await fsp.open(this.abs(op.path), 'r');
        try {
          const buf = Buffer.alloc(op.len);
          let got = 0;
          while (got < op.len) {
            const { bytesRead } = await fh.read(buf, got, op.len - got, op.pos + got);
            if (bytesRead === 0) break;
            got += bytesRead;
          }
          return buf.subarray(0, got);
        } finally {
          await fh.close();
        }
      }
      case 'readAll':
        return fsp.readFile(this.abs(op.path));
      case 'unlink':
        return fsp.unlink(this.abs(op.path));
      case 'mkdir':
        return fsp.mkdir(this.abs(op.path), { mode: op.mode });
      case 'rmdir':
        return fsp.rmdir(this.abs(op.path));
      case 'rename':
        return fsp.rename(this.abs(op.from), this.abs(op.to));
      case 'symlink':
        return fsp.symlink(op.target, this.abs(op.path));
      case 'readlink':
        return fsp.readlink(this.abs(op.path));
      case 'chmod':
        return fsp.chmod(this.abs(op.path), op.mode);
      case 'stat':
        return entryFromStat(await fsp.lstat(this.abs(op.path)));
      case 'readdir':
        return (await fsp.readdir(this.abs(op.path))).sort();
      case 'sync':
      case 'remount':
        return undefined;
    }
  }

  async snapshot(): Promise<Map<string, Entry>> {
    const out = new Map<string, Entry>();
    const walk = async (rel: string): Promise<void> => {
      for (const name of (await fsp.readdir(this.abs(rel))).sort()) {
        const p = rel ? `${rel}/${name}` : name;
        const e = entryFromStat(await fsp.lstat(this.abs(p)));
        if (e.type === 'file') e.data = await fsp.readFile(this.abs(p));
        if (e.type === 'symlink') e.target = await fsp.readlink(this.abs(p));
        out.set(p, e);
        if (e.type === 'dir') await walk(p);
      }
    };
    await walk('');
    return out;
  }
}

/** Differences between two trees, as readable lines (at most `max`). */
// ---- the test ------------------------------------------------------------------------------

describe('a mounted filespace against a reference model', () => {
  const bed = new Bed();
  const seed = process.env.FILESPACE_MODEL_SEED ? Number(process.env.FILESPACE_MODEL_SEED) : randomInt(2 ** 31);
  const opCount = process.env.FILESPACE_MODEL_OPS ? Number(process.env.FILESPACE_MODEL_OPS) : 400;
  const model = new Model();
  let fs: Linked & { bucket: string; prefix: string };
  let mount: RealDir;
  let local: RealDir;
  let localRoot: string;
  const history: string[] = [];

  const where = () =>
    `(seed ${seed}; replay with FILESPACE_MODEL_SEED=${seed}${opCount !== 400 ? ` FILESPACE_MODEL_OPS=${opCount}` : ''})\nlast operations:\n  ${history.slice(-8).join('\n  ')}`;

  async function compareTrees(dir: RealDir, what: string): Promise<void> {
    const diffs = treeDiff(model.snapshot(), await dir.snapshot());
    if (diffs.length) assert.fail(`${what}: the tree differs from the model:\n  ${diffs.join('\n  ')}\n${where()}`);
  }

  before(async () => {
    process.umask(UMASK);
    console.log(`# reference model: seed ${seed}, ${opCount} operations (FILESPACE_MODEL_SEED=${seed} replays this run)`);
    await bed.start();
    localRoot = await tmpDir('model');
    local = new RealDir(localRoot);
    fs = await bed.filespace({ chunkSize: '64KiB', cacheSize: '256MiB' });
    await fs.mount();
    mount = new RealDir(fs.mnt);
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(localRoot, { recursive: true, force: true });
  });

  // About 0.1 s per operation in a CI run; half a second each, at least 5 minutes.
  it(`agrees with the model on every operation (seed ${seed})`, { timeout: Math.max(5 * 60_000, opCount * 500) }, async (t) => {
    t.diagnostic(`seed ${seed}`);
    const gen = new Generator(seed, model);
    const tally = new Map<string, Map<string, number>>();
    for (let i = 0; i < opCount; i++) {
      const op = gen.next();
      history.push(`#${i} ${describeOp(op)}`);
      const key =
        op.k === 'write'
          ? `write(${op.flags})`
          : op.k === 'rename'
            ? `rename(${model.describe(op.from)} -> ${model.describe(op.to)})`
            : op.k;
      const expected = model.apply(op);
      const onDisk = await local.apply(op);
      const why = sameResult(expected, onDisk);
      if (why)
        assert.fail(
          `the model disagrees with a local disk (a test bug) on #${i} ${describeOp(op)}: ${why}: model ${describeResult(expected)}, local ${describeResult(onDisk)}\n${where()}`,
        );
      if (op.k === 'sync') await fs.sync();
      if (op.k === 'remount') {
        await fs.unmount();
        await fs.mount();
      }
      const actual = await mount.apply(op);
      const whyMount = sameResult(expected, actual);
      if (whyMount)
        assert.fail(
          `#${i} ${describeOp(op)}: ${whyMount}: expected ${describeResult(expected)}, the mount gave ${describeResult(actual)}\n${where()}`,
        );
      const outcomes = tally.get(key) ?? new Map<string, number>();
      const outcome = expected.ok ? 'ok' : expected.code;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      tally.set(key, outcomes);
      if ((i + 1) % 50 === 0) {
        await compareTrees(mount, `after operation #${i}`);
        await compareTrees(local, `local disk after operation #${i} (a test bug)`);
      }
    }
    await compareTrees(mount, 'after the last operation');
    for (const [k, outcomes] of [...tally.entries()].sort()) {
      t.diagnostic(
        `${k}: ${[...outcomes.entries()]
          .sort()
          .map(([o, n]) => `${o} ${n}`)
          .join(', ')}`,
      );
    }
    t.diagnostic(
      `final tree: ${model.nodes.size} entries, ${[...model.nodes.values()].reduce((s, n) => s + (n.type === 'file' ? n.data.length : 0), 0)} bytes`,
    );
  });

  it('keeps the same tree after sync and a restart of the mount', async () => {
    await fs.sync();
    await fs.unmount();
    await fs.mount();
    await compareTrees(mount, 'after a restart');
  });

  it('shows the same tree to a second machine that links the filespace', async () => {
    await fs.sync();
    const other = await bed.link(await bed.machine('second'), fs.bucket, fs.prefix);
    await other.mount({ readOnly: true });
    try {
      await compareTrees(new RealDir(other.mnt), 'on a second machine');
    } finally {
      await other.unmount();
    }
  });
});
