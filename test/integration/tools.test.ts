/**
 * Real tools on a mounted filespace: `tar x` of a tree of thousands of small files (nested
 * directories, empty directories, symlinks, executables, varied sizes) arrives identical in
 * content, type, mode, size, owner and mtime; git builds a repository with renames and
 * deletions that `git fsck --full` accepts before and after `git gc`; sqlite3 databases in
 * rollback-journal and WAL mode pass `PRAGMA integrity_check` with the expected rows. After
 * `filespace sync`, a second machine that links the filespace from the bucket sees the same.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, run, sh, tmpDir } from '../helpers/bed';
import { prng } from '../helpers/referenceModel';

/** Fails (never skips) when a tool the test relies on is not installed. */
async function requireTool(name: string): Promise<void> {
  const r = await run('bash', ['-c', `command -v ${name}`]);
  if (r.code !== 0)
    throw new Error(
      `"${name}" is not installed on this machine; this test needs it (install the Debian package providing ${name})`,
    );
}

function bytesFrom(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i += 4) {
    const v = (rand() * 4294967296) >>> 0;
    for (let k = 0; k < 4 && i + k < n; k++) b[i + k] = (v >>> (8 * k)) & 0xff;
  }
  return b;
}

interface TreeShape {
  files: number;
  dirs: number;
  emptyDirs: number;
  symlinks: number;
  executables: number;
  bytes: number;
}

/** Writes a deterministic tree of `fileCount` small files below `root` (a local directory). */
async function generateTree(root: string, seed: number, fileCount: number): Promise<TreeShape> {
  const rand = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const dirs: string[] = [''];
  const names = ['src', 'lib', 'docs', 'assets', 'test', 'build', 'vendor', 'pkg', 'util', 'core', 'with space', 'ünïcødé'];
  // Nested directories, up to five levels deep.
  for (let i = 0; i < 260; i++) {
    const parent = pick(dirs);
    if (parent.split('/').length > 5) continue;
    const d = path.posix.join(parent, `${pick(names)}-${i}`);
    dirs.push(d);
  }
  for (const d of dirs) if (d) await fsp.mkdir(path.join(root, d), { recursive: true });
  const shape: TreeShape = { files: 0, dirs: dirs.length - 1, emptyDirs: 0, symlinks: 0, executables: 0, bytes: 0 };
  const files: string[] = [];
  const jobs: Array<() => Promise<void>> = [];
  for (let i = 0; i < fileCount; i++) {
    const dir = pick(dirs.slice(1));
    const name = `${pick(['f', 'main', 'index', 'data', 'x y', 'ä'])}${i}${pick(['.txt', '.c', '.json', '.bin', ''])}`;
    const rel = path.posix.join(dir, name);
    // Mostly small files, a few up to 64 KiB, some empty.
    const r = rand();
    const size = r < 0.08 ? 0 : Math.floor(65536 * Math.pow(rand(), 3));
    const exec = rand() < 0.02;
    const mode = exec ? 0o755 : pick([0o644, 0o644, 0o644, 0o600, 0o640, 0o444]);
    const data = rand() < 0.5 ? bytesFrom(rand, size) : Buffer.from(`line ${i}\n`.repeat(Math.ceil(size / 10)).slice(0, size));
    files.push(rel);
    shape.files++;
    shape.bytes += size;
    if (exec) shape.executables++;
    jobs.push(async () => {
      await fsp.writeFile(path.join(root, rel), data);
      await fsp.chmod(path.join(root, rel), mode);
    });
  }
  for (let i = 0; i < jobs.length; i += 64) await Promise.all(jobs.slice(i, i + 64).map((j) => j()));
  for (let i = 0; i < 12; i++) {
    await fsp.mkdir(path.join(root, pick(dirs), `empty-${i}`));
    shape.emptyDirs++;
  }
  // Symlinks: to a file in the same directory, up the tree, to a directory, and dangling.
  for (let i = 0; i < 10; i++) {
    const file = pick(files);
    const dir = path.posix.dirname(file);
    const target =
      i % 4 === 0
        ? path.posix.basename(file)
        : i % 4 === 1
          ? path.posix.relative(dir, pick(files))
          : i % 4 === 2
            ? path.posix.relative(dir, pick(dirs)) || '.'
            : `../no/such/target-${i}`;
    await fsp.symlink(target, path.join(root, dir, `link-${i}`));
    shape.symlinks++;
  }
  await fsp.chmod(path.join(root, dirs[3]!), 0o700);
  await fsp.chmod(path.join(root, dirs[5]!), 0o750);
  return shape;
}

/** One line per entry: path, type, mode, owner, size (not for directories), link target; or path and mtime. */
async function listing(dir: string, what: 'attrs' | 'mtimes'): Promise<string> {
  const find =
    what === 'attrs'
      ? `find . ! -type d -printf '%p %y %m %U:%G %s -> %l\\n'; find . -type d -printf '%p %y %m %U:%G\\n'`
      : `find . -printf '%p %T@\\n'`;
  return sh(`cd ${q(dir)} && { ${find}; } | LC_ALL=C sort`);
}

function q(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

function firstDifference(a: string, b: string): string {
  const la = a.split('\n');
  const lb = b.split('\n');
  for (let i = 0; i < Math.max(la.length, lb.length); i++) {
    if (la[i] !== lb[i]) return `line ${i + 1}:\n  expected ${la[i]}\n  actual   ${lb[i]}`;
  }
  return 'no difference';
}

async function assertSameListing(
  expected: string,
  actual: string,
  what: string,
  kind: 'attrs' | 'mtimes' = 'attrs',
): Promise<void> {
  const [a, b] = await Promise.all([listing(expected, kind), listing(actual, kind)]);
  if (a !== b) assert.fail(`${what}: listings differ at ${firstDifference(a, b)}`);
}

describe('real tools on a mounted filespace', () => {
  const bed = new Bed();
  let fs: Linked & { bucket: string; prefix: string };
  let local: string;

  /** Links the filespace on a fresh machine, mounts it, runs `fn` on its mount point, unmounts. */
  async function onSecondMachine(fn: (mnt: string) => Promise<void>): Promise<void> {
    await fs.sync();
    const other = await bed.link(await bed.machine('second'), fs.bucket, fs.prefix);
    await other.mount({ readOnly: true });
    try {
      await fn(other.mnt);
    } finally {
      await other.unmount();
    }
  }

  before(async () => {
    await bed.start();
    local = await tmpDir('tools');
    fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '512MiB' });
    await fs.mount();
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  const tarTree = { ref: '', dst: '' };

  it('extracts a tar of 3000 small files identical in content, type, mode, size and owner to a local extraction', async () => {
    for (const tool of ['tar', 'diff', 'find', 'sort']) await requireTool(tool);
    const src = path.join(local, 'src');
    const ref = path.join(local, 'ref');
    const tarball = path.join(local, 'tree.tar');
    await fsp.mkdir(src);
    await fsp.mkdir(ref);
    const shape = await generateTree(src, 0x7a2b, 3000);
    assert.equal(shape.files, 3000);
    await sh(`tar cf ${q(tarball)} -C ${q(src)} .`);
    // The reference is a local extraction of the same archive, so mtimes have the archive's precision.
    await sh(`tar xf ${q(tarball)} -C ${q(ref)}`);
    const dst = path.join(fs.mnt, 'tree');
    await fsp.mkdir(dst);
    await sh(`tar xf ${q(tarball)} -C ${q(dst)}`);
    Object.assign(tarTree, { ref, dst });
    await sh(`diff -r --no-dereference ${q(ref)} ${q(dst)}`);
    await assertSameListing(ref, dst, 'after tar x into the mount');
    // Files, symlinks, empty directories and executables, counted by find on both sides.
    const counts = async (dir: string) =>
      (
        await sh(
          `cd ${q(dir)} && echo $(find . -type f | wc -l) $(find . -type l | wc -l) $(find . -type d -empty | wc -l) $(find . -type f -perm -u+x | wc -l)`,
        )
      )
        .trim()
        .split(' ')
        .map(Number);
    const [files, symlinks, empty, executables] = await counts(ref);
    assert.deepEqual([files, symlinks, executables], [shape.files, shape.symlinks, shape.executables]);
    assert.ok(empty! >= shape.emptyDirs);
    assert.deepEqual(await counts(dst), [files, symlinks, empty, executables]);
  });

  it("restores the archive's mtimes on files, directories and symlinks", async () => {
    assert.ok(tarTree.dst, 'the tar extraction ran');
    await assertSameListing(tarTree.ref, tarTree.dst, 'mtimes after tar x into the mount', 'mtimes');
  });

  it('shows the extracted tree to a second machine', async () => {
    assert.ok(tarTree.dst, 'the tar extraction ran');
    await onSecondMachine(async (mnt) => {
      const there = path.join(mnt, 'tree');
      await sh(`diff -r --no-dereference ${q(tarTree.ref)} ${q(there)}`);
      await assertSameListing(tarTree.ref, there, 'on a second machine');
      // Whatever times the writer recorded, the second machine shows the same.
      await assertSameListing(tarTree.dst, there, 'mtimes on a second machine', 'mtimes');
    });
  });

  it('keeps a git repository that fsck accepts through commits, a rename, a deletion and gc', async () => {
    await requireTool('git');
    const home = path.join(local, 'git-home');
    await fsp.mkdir(home);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      HOME: home,
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_CONFIG_GLOBAL: '/dev/null',
      GIT_AUTHOR_NAME: 'Filespace Test',
      GIT_AUTHOR_EMAIL: 'test@filespace.invalid',
      GIT_COMMITTER_NAME: 'Filespace Test',
      GIT_COMMITTER_EMAIL: 'test@filespace.invalid',
    };
    const repo = path.join(fs.mnt, 'repo');
    const git = (script: string) => sh(script, { cwd: repo, env });
    await fsp.mkdir(repo);
    await git('git -c init.defaultBranch=main init -q . && mkdir -p src docs');
    const rand = prng(0x91f);
    for (let i = 0; i < 40; i++)
      await fsp.writeFile(path.join(repo, 'src', `mod${i}.c`), `int f${i}(void) { return ${i}; }\n`.repeat(1 + i * 7));
    await fsp.writeFile(path.join(repo, 'docs', 'blob.bin'), bytesFrom(rand, 700_000));
    await fsp.writeFile(path.join(repo, 'README'), 'first\n');
    await git('git add -A && git commit -q -m "c1: initial import"');

    for (let i = 0; i < 40; i += 3) await fsp.appendFile(path.join(repo, 'src', `mod${i}.c`), `/* edited ${i} */\n`);
    await fsp.writeFile(path.join(repo, 'docs', 'notes.md'), '# notes\n'.repeat(500));
    await git('git add -A && git commit -q -m "c2: edits and notes"');

    await git('git mv src/mod1.c src/renamed.c && git mv docs/notes.md NOTES.md && git commit -q -m "c3: renames"');
    await git('git rm -q src/mod2.c docs/blob.bin && git commit -q -m "c4: deletions"');

    const blob = bytesFrom(rand, 1_500_000);
    await fsp.writeFile(path.join(repo, 'big.bin'), blob);
    await git('echo second >> README && git add -A && git commit -q -m "c5: big file"');

    const subjects = ['c5: big file', 'c4: deletions', 'c3: renames', 'c2: edits and notes', 'c1: initial import'];
    const check = async (dir: string) => {
      await sh('git fsck --full --strict --no-progress', { cwd: dir, env });
      assert.deepEqual((await sh('git log --format=%s', { cwd: dir, env })).trim().split('\n'), subjects);
      assert.equal((await sh('git status --porcelain', { cwd: dir, env: { ...env, GIT_OPTIONAL_LOCKS: '0' } })).trim(), '');
      assert.equal((await sh('git log -1 --format=%H --follow -- src/renamed.c', { cwd: dir, env })).trim().length, 40);
      assert.match(await sh('git show --stat --format=%s HEAD~2', { cwd: dir, env }), /src\/{mod1\.c => renamed\.c}/);
      assert.equal((await sh('git ls-files | wc -l', { cwd: dir, env })).trim(), '42');
    };
    await check(repo);
    await git('git gc -q');
    assert.match(await git('ls .git/objects/pack'), /\.pack/);
    await check(repo);

    // A clone made from the mount has the same working tree.
    const clone = path.join(local, 'clone');
    await sh(`git clone -q ${q(repo)} ${q(clone)} && diff -r --exclude=.git ${q(clone)} ${q(repo)}`, { env });
    assert.ok(Buffer.compare(await fsp.readFile(path.join(clone, 'big.bin')), blob) === 0);

    await onSecondMachine(async (mnt) => {
      await check(path.join(mnt, 'repo'));
      await sh(`diff -r --exclude=.git ${q(clone)} ${q(path.join(mnt, 'repo'))}`);
    });
  });

  // About 6 minutes in a CI run (20,000-row transactions, each a process, through the mount).
  it(
    'keeps sqlite3 databases (rollback journal and WAL) intact with every row, here and on a second machine',
    { timeout: 30 * 60_000 },
    async () => {
      await requireTool('sqlite3');
      const dir = path.join(fs.mnt, 'db');
      await fsp.mkdir(dir);
      const exec = async (db: string, script: string): Promise<string> => {
        const r = await run('sqlite3', ['-batch', '-bail', db], { input: script });
        if (r.code !== 0) throw new Error(`sqlite3 ${db} failed (${r.code}): ${r.stderr}${r.stdout}\n${script}`);
        return r.stdout.trim();
      };
      const batch = (n: number) => `BEGIN;
WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n})
INSERT INTO t(k, v) SELECT hex(randomblob(8)), randomblob(abs(random()) % 600) FROM c;
COMMIT;`;
      const digests = new Map<string, string>();
      const expectRows = 20_000 - Math.floor(20_000 / 13);
      for (const mode of ['delete', 'wal']) {
        const db = path.join(dir, `${mode}.db`);
        assert.equal(await exec(db, `PRAGMA journal_mode=${mode};`), mode);
        await exec(db, 'CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB); CREATE INDEX t_k ON t(k);');
        // Four transactions of 5000 rows, each in its own process, then updates and deletions.
        for (let i = 0; i < 4; i++) await exec(db, batch(5000));
        await exec(db, 'BEGIN; UPDATE t SET v = randomblob(900) WHERE id % 7 = 0; DELETE FROM t WHERE id % 13 = 0; COMMIT;');
        // A rolled-back transaction leaves no trace.
        await exec(db, `BEGIN; DELETE FROM t; ${batch(3000).replace(/^BEGIN;|COMMIT;$/gm, '')} ROLLBACK;`);
        assert.equal(await exec(db, 'PRAGMA integrity_check;'), 'ok');
        assert.equal(await exec(db, 'SELECT count(*) FROM t;'), String(expectRows));
        assert.equal(await exec(db, 'SELECT count(*) FROM t WHERE id % 13 = 0 OR id > 20000;'), '0');
        assert.equal(await exec(db, 'SELECT count(*) FROM t WHERE id % 7 = 0 AND length(v) <> 900;'), '0');
        if (mode === 'delete') {
          await exec(db, 'VACUUM;');
          assert.equal(await exec(db, 'PRAGMA integrity_check;'), 'ok');
        }
        digests.set(mode, await sh(`sqlite3 -batch ${q(db)} .dump | sha256sum`));
      }
      // Closing the last connection checkpoints the WAL into the database and removes it, while
      // it is still open (the kernel's RELEASE arrives after close(2)): gone at once, under no
      // hidden name either.
      assert.deepEqual((await fsp.readdir(dir)).sort(), ['delete.db', 'wal.db']);

      await onSecondMachine(async (mnt) => {
        for (const mode of ['delete', 'wal']) {
          // A reader on another machine must not write (one writer per filespace): open the
          // databases immutable, which reads without creating -shm or -journal files.
          const uri = `file:${path.join(mnt, 'db', `${mode}.db`)}?immutable=1`;
          assert.equal(await exec(uri, 'PRAGMA integrity_check;'), 'ok', `${mode} on the second machine`);
          assert.equal(await exec(uri, 'SELECT count(*) FROM t;'), String(expectRows));
          assert.equal(
            await sh(`sqlite3 -batch ${q(uri)} .dump | sha256sum`),
            digests.get(mode),
            `${mode} dump on the second machine`,
          );
        }
      });
    },
  );
});
