/**
 * The engine behaves like a POSIX filesystem, checked in process against the reference model
 * (test/helpers/referenceModel.ts, which the integration suite pins to a local disk): a seeded
 * stream of random operations runs on the model and, through the FUSE interface, on the
 * engine, and every operation must agree on success or failure, the errno, the bytes read,
 * sizes, modes, listings and link targets. `sync` uploads everything; `remount` closes the
 * engine and opens it again on the same cache. The whole tree is compared every 100
 * operations, at the end, after a restart, and on a second machine that links the filespace
 * from the bucket alone.
 *
 * What the kernel does before it calls the filesystem is done here (`KernelView`): path walks
 * (a dangling symlink on the way is ENOENT), O_EXCL and O_TRUNC, the rename checks on
 * ancestors, the umask, and writes in pieces of at most 128 KiB.
 *
 * FILESPACE_MODEL_SEED=<n> replays a run; FILESPACE_MODEL_OPS=<n> changes its length (1000).
 */

import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { FuseFilesystem } from '../../native/fuse/adapter';
import {
  EngineBed,
  Filespace,
  Mounted,
  O_APPEND,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  errnoName,
  readAt,
  writeAt,
} from '../helpers/engineBed';
import {
  CHUNK,
  Entry,
  Generator,
  Model,
  Op,
  Result,
  UMASK,
  WriteFlags,
  describeOp,
  describeResult,
  sameResult,
  treeDiff,
} from '../helpers/referenceModel';

/**
 * Chunks upload at `sync` operations (and at close), never between operations, so every run
 * of a seed does the same thing. FILESPACE_MODEL_UPLOAD_DELAY_MS=0 lets uploads run alongside
 * the operations (the engine's own timing, not replayable); that is how the straddling-write
 * loss pinned in read-write.test.ts was found (and fixed).
 */
const UPLOAD_DELAY_MS = Number(process.env.FILESPACE_MODEL_UPLOAD_DELAY_MS ?? 3_600_000);

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;

class KernelError extends Error {
  constructor(readonly code: string) {
    super(code);
  }
}

/** The engine's filesystem as a process sees it through the kernel (see the header). */
class KernelView {
  constructor(private readonly fs: () => FuseFilesystem) {}

  private type(p: string): 'missing' | 'dir' | 'symlink' | 'file' {
    try {
      const mode = this.fs().getattr(p).mode & S_IFMT;
      return mode === S_IFDIR ? 'dir' : mode === S_IFLNK ? 'symlink' : 'file';
    } catch (err) {
      if (errnoName(err) === 'ENOENT') return 'missing';
      throw err;
    }
  }

  /** Every component but the last must be a directory (the test's symlinks all dangle). */
  private walkParent(p: string): void {
    const ps = p.split('/');
    for (let i = 1; i < ps.length; i++) {
      const t = this.type('/' + ps.slice(0, i).join('/'));
      if (t === 'missing' || t === 'symlink') throw new KernelError('ENOENT');
      if (t !== 'dir') throw new KernelError('ENOTDIR');
    }
  }

  /** The last component is followed too (open, truncate, chmod, opendir). */
  private follow(p: string): 'missing' | 'dir' | 'file' {
    this.walkParent(p);
    const t = this.type('/' + p);
    if (t === 'symlink') throw new KernelError('ENOENT');
    return t;
  }

  async apply(op: Op): Promise<Result> {
    try {
      return { ok: true, value: await this.run(op) };
    } catch (err) {
      return { ok: false, code: err instanceof KernelError ? err.code : errnoName(err) };
    }
  }

  private async close(fh: number): Promise<void> {
    await this.fs().flush(fh);
    await this.fs().release(fh);
  }

  private openForWrite(p: string, flags: WriteFlags, mode: number): number {
    this.walkParent(p);
    const t = this.type('/' + p);
    if (flags === 'wx' && t !== 'missing') throw new KernelError('EEXIST');
    if (t === 'symlink') throw new KernelError('ENOENT'); // the target's directory does not exist
    if (t === 'dir') throw new KernelError('EISDIR');
    if (t === 'missing') {
      if (flags === 'r+') throw new KernelError('ENOENT');
      return this.fs().create('/' + p, mode & ~UMASK);
    }
    return this.fs().open('/' + p, flags === 'a' ? O_WRONLY | O_APPEND : flags === 'r+' ? O_RDWR : O_WRONLY);
  }

  private async run(op: Op): Promise<unknown> {
    const fs = this.fs();
    switch (op.k) {
      case 'write': {
        const fh = this.openForWrite(op.path, op.flags, op.mode);
        try {
          if (op.flags === 'w') await fs.ftruncate(fh, 0); // O_TRUNC
          await writeAt(fs, fh, op.flags === 'a' ? fs.getattr('/' + op.path).size : op.pos, op.data);
        } finally {
          await this.close(fh);
        }
        return undefined;
      }
      case 'truncate': {
        const t = this.follow(op.path);
        if (t === 'missing') throw new KernelError('ENOENT');
        if (t === 'dir') throw new KernelError('EISDIR');
        if (!op.viaHandle) return fs.truncate('/' + op.path, op.size);
        const fh = fs.open('/' + op.path, O_RDWR);
        try {
          await fs.ftruncate(fh, op.size);
        } finally {
          await this.close(fh);
        }
        return undefined;
      }
      case 'read':
      case 'readAll': {
        if (this.follow(op.path) === 'missing') throw new KernelError('ENOENT');
        const fh = fs.open('/' + op.path, O_RDONLY);
        try {
          if (op.k === 'read') return await readAt(fs, fh, op.pos, op.len);
          const chunks: Buffer[] = [];
          for (let pos = 0; ;) {
            const b = await readAt(fs, fh, pos, 256 * 1024);
            if (b.length === 0) break;
            chunks.push(b);
            pos += b.length;
          }
          return Buffer.concat(chunks);
        } finally {
          await this.close(fh);
        }
      }
      case 'unlink':
        this.walkParent(op.path);
        return fs.unlink('/' + op.path);
      case 'mkdir':
        this.walkParent(op.path);
        return fs.mkdir('/' + op.path, op.mode & ~UMASK);
      case 'rmdir':
        this.walkParent(op.path);
        return fs.rmdir('/' + op.path);
      case 'rename': {
        this.walkParent(op.from);
        this.walkParent(op.to);
        if (this.type('/' + op.from) === 'missing') throw new KernelError('ENOENT');
        // The kernel's checks before the filesystem is asked (lock_rename's "trap").
        if (op.to.startsWith(`${op.from}/`)) throw new KernelError('EINVAL');
        if (op.from.startsWith(`${op.to}/`)) throw new KernelError('ENOTEMPTY');
        return fs.rename('/' + op.from, '/' + op.to);
      }
      case 'symlink':
        this.walkParent(op.path);
        return fs.symlink(op.target, '/' + op.path);
      case 'readlink':
        this.walkParent(op.path);
        return fs.readlink('/' + op.path);
      case 'chmod':
        if (this.follow(op.path) === 'missing') throw new KernelError('ENOENT');
        return fs.chmod('/' + op.path, op.mode);
      case 'stat':
        this.walkParent(op.path);
        return this.entry('/' + op.path);
      case 'readdir':
        if (this.follow(op.path) === 'missing') throw new KernelError('ENOENT');
        return this.list('/' + op.path);
      case 'sync':
      case 'remount':
        return undefined;
    }
  }

  private entry(p: string): Entry {
    const st = this.fs().getattr(p);
    const t = st.mode & S_IFMT;
    const mode = st.mode & 0o7777;
    if (t === S_IFDIR) return { type: 'dir', mode };
    return { type: t === S_IFLNK ? 'symlink' : 'file', mode, size: st.size };
  }

  private list(p: string): string[] {
    return this.fs()
      .readdir(p)
      .filter((n) => n !== '.' && n !== '..')
      .sort();
  }

  async snapshot(): Promise<Map<string, Entry>> {
    const out = new Map<string, Entry>();
    const walk = async (rel: string): Promise<void> => {
      for (const name of this.list(rel ? '/' + rel : '/')) {
        const p = rel ? `${rel}/${name}` : name;
        const e = this.entry('/' + p);
        if (e.type === 'file') e.data = (await this.run({ k: 'readAll', path: p })) as Buffer;
        if (e.type === 'symlink') e.target = this.fs().readlink('/' + p);
        out.set(p, e);
        if (e.type === 'dir') await walk(p);
      }
    };
    await walk('');
    return out;
  }
}

describe('the engine against the reference model', () => {
  const bed = new EngineBed();
  const seed = process.env.FILESPACE_MODEL_SEED ? Number(process.env.FILESPACE_MODEL_SEED) : randomInt(2 ** 31);
  const opCount = process.env.FILESPACE_MODEL_OPS ? Number(process.env.FILESPACE_MODEL_OPS) : 1000;
  const model = new Model();
  const history: string[] = [];
  let space: Filespace;
  let m: Mounted;
  const view = new KernelView(() => m.fs);

  const where = () =>
    `(seed ${seed}; replay with FILESPACE_MODEL_SEED=${seed}${opCount !== 1000 ? ` FILESPACE_MODEL_OPS=${opCount}` : ''})\nlast operations:\n  ${history.slice(-8).join('\n  ')}`;

  async function compareTrees(v: KernelView, what: string): Promise<void> {
    const actual = await v
      .snapshot()
      .catch((err: Error) => assert.fail(`${what}: reading the whole tree failed: ${err.message}\n${where()}`));
    const diffs = treeDiff(model.snapshot(), actual);
    if (diffs.length) assert.fail(`${what}: the tree differs from the model:\n  ${diffs.join('\n  ')}\n${where()}`);
  }

  async function remount(): Promise<void> {
    await m.close();
    m = await bed.mount(space, { cacheDir: m.cacheDir, settings: { uploadDelayMs: UPLOAD_DELAY_MS } });
  }

  before(async () => {
    console.log(`# engine reference model: seed ${seed}, ${opCount} operations (FILESPACE_MODEL_SEED=${seed} replays this run)`);
    await bed.start();
    space = await bed.filespace({ chunkSize: CHUNK });
    m = await bed.mount(space, { settings: { uploadDelayMs: UPLOAD_DELAY_MS } });
  });

  after(() => bed.stop());

  it(`agrees with the model on every operation (seed ${seed})`, async (t) => {
    t.diagnostic(`seed ${seed}`);
    const gen = new Generator(seed, model);
    const tally = new Map<string, number>();
    for (let i = 0; i < opCount; i++) {
      const op = gen.next();
      history.push(`#${i} ${describeOp(op)}`);
      const expected = model.apply(op);
      if (op.k === 'sync') await m.sync();
      if (op.k === 'remount') await remount();
      const actual = await view.apply(op);
      const why = sameResult(expected, actual);
      if (why)
        assert.fail(
          `#${i} ${describeOp(op)}: ${why}: expected ${describeResult(expected)}, the engine gave ${describeResult(actual)}\n${where()}`,
        );
      const key = `${op.k}: ${expected.ok ? 'ok' : expected.code}`;
      tally.set(key, (tally.get(key) ?? 0) + 1);
      if ((i + 1) % 100 === 0) await compareTrees(view, `after operation #${i}`);
    }
    await compareTrees(view, 'after the last operation');
    t.diagnostic(
      [...tally.entries()]
        .sort()
        .map(([k, n]) => `${k} ${n}`)
        .join(', '),
    );
  });

  it('keeps the same tree after sync and a restart', async () => {
    await m.sync();
    await remount();
    await compareTrees(view, 'after a restart');
  });

  it('shows the same tree to a second machine that links the filespace', async () => {
    await m.sync();
    const other = await bed.mount(space, { mode: 'read' });
    try {
      await compareTrees(new KernelView(() => other.fs), 'on a second machine');
    } finally {
      await other.close();
    }
  });
});
