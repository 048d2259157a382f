/**
 * `filespace import` and `filespace export` against the real S3 test server and real mounts:
 * a generated tree (thousands of small files, a sparse file, a file of many chunks, symlinks,
 * odd names: spaces, unicode, a newline, bytes that are not UTF-8; a FIFO, which is skipped)
 * imported from a folder with the filespace unmounted and while it is mounted, read back
 * through the mount identical (content, type, mode, size, mtime to the millisecond, link
 * targets) with the sparse file still sparse; a re-run copies nothing; an import killed with
 * SIGKILL midway (the command on an unmounted filespace, the mount's daemon on a mounted
 * one) and run again gives the complete tree; plain objects of another bucket become files
 * (keys that cannot be paths skipped with their reason); an export to a folder and to a
 * bucket matches the filespace; bad input is refused in one line and changes nothing.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Bed, CLI, killHard, Linked, run, sh, tmpDir, until } from '../helpers/bed';
import { TEST_CREDENTIALS, TEST_REGION } from '../helpers/moto';
import { prng } from '../helpers/referenceModel';
import { spawn } from 'node:child_process';
import { isUtf8 } from 'node:buffer';

function bytesFrom(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) & 0xff;
  return b;
}

const MiB = 1024 * 1024;
const NOT_UTF8 = Buffer.from([0x6c, 0x61, 0x74, 0x69, 0x6e, 0x2d, 0xe9, 0x2e, 0x74, 0x78, 0x74]); // "latin-\xe9.txt"

/**
 * Writes the test tree below `root` (local): `files` small files in nested folders, plus the
 * special cases. Returns the number of regular files written.
 */
async function generateTree(root: string, seed: number, files: number, opts: { bigBytes?: number } = {}): Promise<number> {
  const rand = prng(seed);
  const names = ['src', 'docs', 'with space', 'ünïcødé', 'a.b', 'deep'];
  const dirs = [''];
  for (let i = 0; i < 40; i++) {
    const parent = dirs[Math.floor(rand() * dirs.length)]!;
    const d = path.join(parent, `${names[i % names.length]}${i}`);
    await fsp.mkdir(path.join(root, d), { recursive: true });
    dirs.push(d);
  }
  await fsp.mkdir(path.join(root, 'empty folder'));
  let n = 0;
  for (let i = 0; i < files; i++) {
    const d = dirs[Math.floor(rand() * dirs.length)]!;
    const f = path.join(root, d, `f${i}${i % 7 === 0 ? ' x' : ''}.dat`);
    await fsp.writeFile(f, bytesFrom(rand, Math.floor(rand() * 3000)));
    if (i % 11 === 0) await fsp.chmod(f, 0o755);
    if (i % 13 === 0) await fsp.chmod(f, 0o600);
    await fsp.utimes(f, new Date(1_600_000_000_000 + i * 1001), new Date(1_600_000_000_000 + i * 1001 + 0.5));
    n++;
  }
  // Odd names.
  await fsp.writeFile(path.join(root, 'new\nline.txt'), 'newline in the name\n');
  await fsp.writeFile(path.join(root, '日本語 ファイル.txt'), 'unicode\n');
  await fsp.writeFile(Buffer.concat([Buffer.from(root + '/'), NOT_UTF8]), 'not utf-8\n');
  n += 3;
  // A sparse file: 32 MiB with data at 3 places.
  const sparse = await fsp.open(path.join(root, 'sparse.img'), 'w');
  await sparse.write(bytesFrom(rand, 100_000), 0, 100_000, 5 * MiB);
  await sparse.write(bytesFrom(rand, 4096), 0, 4096, 20 * MiB + 17);
  await sparse.truncate(32 * MiB);
  await sparse.close();
  // A file of many chunks (1 MiB chunks), not a multiple of anything.
  await fsp.writeFile(path.join(root, 'big.bin'), bytesFrom(rand, opts.bigBytes ?? 9 * MiB + 12345));
  n += 2;
  // Symlinks: relative, absolute, dangling, to a folder.
  await fsp.symlink('big.bin', path.join(root, 'link-to-big'));
  await fsp.symlink('/etc/hostname', path.join(root, 'abs-link'));
  await fsp.symlink('no/such/target', path.join(root, 'dangling'));
  await fsp.symlink('src0', path.join(root, 'dir-link'));
  await fsp.lutimes(path.join(root, 'dangling'), new Date(1_500_000_000_000), new Date(1_500_000_000_000));
  // A FIFO: skipped with its reason.
  await sh(`mkfifo '${root}/pipe'`);
  await fsp.utimes(root, new Date(1_650_000_000_000), new Date(1_650_000_000_000));
  return n;
}

interface Seen {
  kind: string;
  mode: number;
  size: number;
  mtimeMs: number;
  target?: string;
  sha?: string;
}

async function sha256(file: Buffer): Promise<string> {
  const h = createHash('sha256');
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.allocUnsafe(MiB);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, MiB, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

/** Every entry below `root` (names as latin1 of their bytes), special files left out, with content digests. */
async function snapshot(
  root: string,
  opts: { mtimes?: boolean; modes?: boolean; dirs?: boolean } = {},
): Promise<Map<string, Seen>> {
  const out = new Map<string, Seen>();
  const rootB = Buffer.from(root);
  async function walk(rel: Buffer): Promise<void> {
    const abs = rel.length ? Buffer.concat([rootB, Buffer.from('/'), rel]) : rootB;
    for (const name of await fsp.readdir(abs, { encoding: 'buffer' })) {
      const r = rel.length ? Buffer.concat([rel, Buffer.from('/'), name]) : name;
      const p = Buffer.concat([rootB, Buffer.from('/'), r]);
      const st = await fsp.lstat(p);
      const key = r.toString('latin1');
      const base = {
        mode: opts.modes === false ? 0 : st.mode & 0o7777,
        mtimeMs: opts.mtimes === false ? 0 : Math.floor(st.mtimeMs),
        size: 0,
      };
      if (st.isDirectory()) {
        if (opts.dirs !== false) out.set(key, { ...base, kind: 'dir' });
        await walk(r);
      } else if (st.isFile()) out.set(key, { ...base, kind: 'file', size: st.size, sha: await sha256(p) });
      else if (st.isSymbolicLink())
        out.set(key, { ...base, mode: 0, kind: 'symlink', target: (await fsp.readlink(p)).toString() });
    }
  }
  await walk(Buffer.alloc(0));
  return out;
}

function assertSameTree(expected: Map<string, Seen>, actual: Map<string, Seen>, what: string): void {
  const missing = [...expected.keys()].filter((k) => !actual.has(k));
  const extra = [...actual.keys()].filter((k) => !expected.has(k));
  assert.deepEqual(
    { missing: missing.slice(0, 5), extra: extra.slice(0, 5) },
    { missing: [], extra: [] },
    `${what}: names differ`,
  );
  for (const [k, e] of expected) assert.deepEqual(actual.get(k), e, `${what}: ${JSON.stringify(k)} differs`);
}

function s3(endpoint: string): S3Client {
  return new S3Client({ endpoint, forcePathStyle: true, region: TEST_REGION, credentials: TEST_CREDENTIALS });
}

async function listKeys(client: S3Client, bucket: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  let token: string | undefined;
  do {
    const res = await client.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
    for (const o of res.Contents ?? []) out.set(o.Key!, o.Size ?? 0);
    token = res.IsTruncated ? res.NextContinuationToken : undefined;
  } while (token);
  return out;
}

describe('import and export', () => {
  const bed = new Bed();
  let work: string;
  let src: string;
  let expected: Map<string, Seen>;
  let small: string;
  let expectedSmall: Map<string, Seen>;

  before(async () => {
    await bed.start();
    work = await tmpDir('impexp');
    src = path.join(work, 'src');
    await fsp.mkdir(src);
    await generateTree(src, 7, 2500);
    expected = await snapshot(src);
    small = path.join(work, 'small');
    await fsp.mkdir(small);
    await generateTree(small, 11, 150, { bigBytes: 3 * MiB + 5 });
    expectedSmall = await snapshot(small);
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(work, { recursive: true, force: true });
  });

  async function mountedTree(fs: Linked, sub: string, opts?: Parameters<typeof snapshot>[1]): Promise<Map<string, Seen>> {
    return snapshot(path.join(fs.mnt, sub), opts);
  }

  it('imports a folder into an unmounted filespace: identical through the mount, sparse stays sparse, a re-run copies nothing', async () => {
    const fs = await bed.filespace();
    const r = await fs.machine.cli('import', fs.name, src, '/data');
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /imported .* 2505 copied .*2505 verified by SHA-256\), 0 already there/);
    assert.match(r.stdout, /skipped: 1 special file/);
    assert.match(r.stdout, /skipped "pipe": special file \(FIFO\)/);
    // The import waited for the upload: a second machine sees everything from the bucket.
    const other = await bed.link(await bed.machine('other'), fs.bucket, fs.prefix);
    await other.mount({ readOnly: true });
    assertSameTree(expected, await mountedTree(other, 'data'), 'read on a second machine');
    const sparse = await fsp.stat(path.join(other.mnt, 'data', 'sparse.img'));
    assert.ok(sparse.blocks * 512 < 2 * MiB, `sparse.img takes ${sparse.blocks * 512} bytes in the filespace`);
    await other.unmount();

    const again = await fs.machine.cli('import', fs.name, src, '/data');
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.match(again.stdout, / 0 copied .* 2505 already there/);

    await fs.mount();
    assertSameTree(expected, await mountedTree(fs, 'data'), 'read through the mount');
    await fs.unmount();
  });

  it('imports into a mounted filespace through its running mount, and a daemon killed midway leaves a tree a re-run completes', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const pid = await fs.pid();
    const cmd = spawn(process.execPath, [CLI, 'import', fs.name, src, 'in/here'], { env: fs.machine.env, stdio: 'ignore' });
    const ended = new Promise((r) => cmd.once('exit', r));
    const dest = path.join(fs.mnt, 'in', 'here');
    await until('a few hundred files in', async () => Number(await sh(`find '${dest}' -type f | wc -l`)) >= 300, 120_000);
    await killHard(pid);
    await ended;
    await run('fusermount', ['-uz', fs.mnt]);
    await fs.mount();
    const status = await fs.status();
    assert.equal(status.state, 'mounted');
    const r = await fs.machine.cli('import', fs.name, src, 'in/here');
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /[1-9]\d* already there/);
    assertSameTree(expected, await mountedTree(fs, 'in/here'), 'after the re-run');
    await fs.unmount();
  });

  it('an import of an unmounted filespace killed with SIGKILL midway, run again, gives the complete tree', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    const cmd = spawn(process.execPath, [CLI, 'import', fs.name, src], { env: fs.machine.env, stdio: 'ignore' });
    const ended = new Promise((r) => cmd.once('exit', r));
    // Data written and not yet uploaded (the upload delay holds it): the import is midway.
    await until(
      'the import to be writing',
      async () => (await fsp.readdir(path.join(fs.cacheDir, 'dirty'))).filter((f) => /^\d+\.\d+$/.test(f)).length >= 300,
      120_000,
    );
    await killHard(cmd.pid!);
    await ended;
    await fs.set({ 'upload-delay': '0s' });
    const r = await fs.machine.cli('import', fs.name, src);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /[1-9]\d* already there/);
    await fs.mount();
    assertSameTree(expected, await mountedTree(fs, ''), 'after the re-run');
    await fs.unmount();
  });

  it('imports plain objects from another bucket: keys become paths, keys that cannot be paths are skipped with their reason', async () => {
    const fs = await bed.filespace();
    const client = s3(bed.endpoint);
    const plain = await bed.newBucket();
    const rand = prng(3);
    const objects: Record<string, Buffer> = {
      'photos/a.jpg': bytesFrom(rand, 5000),
      'photos/2024/b c.jpg': bytesFrom(rand, 70_000),
      'docs/ünï.txt': Buffer.from('unicode key\n'),
      'big/object.bin': bytesFrom(rand, 10 * MiB + 3),
      'empty-folder/': Buffer.alloc(0),
      'both/child': Buffer.from('child\n'),
      // Not paths:
      both: Buffer.from('a file and a folder\n'),
      'bad//double': Buffer.from('x'),
      'dots/../up': Buffer.from('x'),
      ['long/' + 'x'.repeat(256)]: Buffer.from('x'),
    };
    for (const [Key, Body] of Object.entries(objects)) await client.send(new PutObjectCommand({ Bucket: plain, Key, Body }));
    const url = `s3://${plain}`;
    const flags = ['--endpoint', bed.endpoint, '--path-style'];
    const r = await fs.machine.cli('import', fs.name, url, '/from-s3', ...flags);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, / 5 copied .*5 verified by SHA-256/);
    assert.match(r.stdout, /skipped: 4 name not representable/);
    assert.match(r.stdout, /skipped "both": name not representable \(it is also a folder/);
    assert.match(r.stdout, /skipped "bad\/\/double": .*empty name/);
    assert.match(r.stdout, /skipped "dots\/\.\.\/up": .*"\.\."/);
    assert.match(r.stdout, /skipped "long\/x+": .*longer than 255 bytes/);
    // A prefix: only what is under it, relative to it.
    const p = await fs.machine.cli('import', fs.name, `${url}/photos/`, '/photos', ...flags);
    assert.equal(p.code, 0, p.stderr + p.stdout);
    assert.match(p.stdout, / 2 copied /);

    await fs.mount();
    for (const key of ['photos/a.jpg', 'photos/2024/b c.jpg', 'docs/ünï.txt', 'big/object.bin', 'both/child']) {
      const got = await fsp.readFile(path.join(fs.mnt, 'from-s3', key));
      assert.ok(got.equals(objects[key]!), `${key} differs`);
    }
    assert.deepEqual(await fsp.readdir(path.join(fs.mnt, 'from-s3', 'empty-folder')), []);
    assert.deepEqual((await fsp.readdir(path.join(fs.mnt, 'photos'))).sort(), ['2024', 'a.jpg']);
    // Mounted now: the same import runs in the mount and finds everything there.
    const again = await fs.machine.cli('import', fs.name, url, '/from-s3', ...flags);
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.match(again.stdout, / 0 copied .* 5 already there/);
    await fs.unmount();
    client.destroy();
  });

  it('exports to a folder and to plain objects in a bucket, identical to what was imported, and a re-run copies nothing', async () => {
    const fs = await bed.filespace();
    await fs.machine.ok('import', fs.name, small, '/t');
    const out = path.join(work, 'exported');
    const r = await fs.machine.cli('export', fs.name, '/t', out);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.match(r.stdout, /exported \/t -> /);
    assertSameTree(expectedSmall, await snapshot(out), 'exported to a folder');
    const sparse = await fsp.stat(path.join(out, 'sparse.img'));
    assert.ok(sparse.blocks * 512 < 2 * MiB, `the exported sparse.img takes ${sparse.blocks * 512} bytes`);

    const client = s3(bed.endpoint);
    const bucket = await bed.newBucket();
    const flags = ['--endpoint', bed.endpoint, '--path-style'];
    await fs.mount(); // exported by the running mount this time
    const e = await fs.machine.cli('export', fs.name, '/t', `s3://${bucket}/pre`, ...flags);
    assert.equal(e.code, 0, e.stderr + e.stdout);
    assert.match(e.stdout, /symlink \(plain objects keep none\)/);
    assert.match(e.stdout, /skipped "latin-\\udce9\.txt": name not representable \(it is not valid UTF-8/);
    const keys = await listKeys(client, bucket);
    assert.match(e.stdout, /skipped "new\\nline\.txt": name not representable \(it holds a control character/);
    const files = [...expectedSmall].filter(
      ([k, v]) => v.kind === 'file' && isUtf8(Buffer.from(k, 'latin1')) && !k.includes('\n'),
    );
    assert.equal(files.length, [...expectedSmall.values()].filter((v) => v.kind === 'file').length - 2);
    for (const [k, v] of files) {
      const key = `pre/${Buffer.from(k, 'latin1').toString('utf8')}`;
      assert.equal(keys.get(key), v.size, `${key} in the bucket`);
      const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
      const body = Buffer.from(await got.Body!.transformToByteArray());
      assert.equal(createHash('sha256').update(body).digest('hex'), v.sha, `${key} differs`);
      assert.equal(Number(got.Metadata?.mtime), Math.floor(v.mtimeMs) / 1000, `${key}'s mtime`);
    }
    assert.equal(keys.size, files.length, 'no other objects in the bucket');
    const again = await fs.machine.cli('export', fs.name, '/t', `s3://${bucket}/pre`, ...flags);
    assert.equal(again.code, 0, again.stderr + again.stdout);
    assert.match(again.stdout, new RegExp(` 0 copied .* ${files.length} already there`));
    await fs.unmount();
    client.destroy();
  });

  it('refuses bad input in one line and changes nothing', async () => {
    const fs = await bed.filespace();
    await fs.machine.ok('import', fs.name, small, '/kept');
    const client = s3(bed.endpoint);
    const before = await listKeys(client, fs.bucket);
    const localFile = path.join(work, 'a-file');
    await fsp.writeFile(localFile, 'x');
    const cases: [string[], RegExp][] = [
      [['import', 'nosuch', small], /nosuch/],
      [['import', fs.name, path.join(work, 'no-such-folder')], /no-such-folder does not exist/],
      [['import', fs.name, localFile], /is not a folder/],
      [['import', fs.name, small, '../outside'], /leads out of the filespace/],
      [['import', fs.name, 's3://'], /names no bucket/],
      [['import', fs.name, 's3:///prefix'], /names no bucket/],
      [['import', fs.name, `s3://no-such-bucket-${Date.now()}/x`, '--endpoint', bed.endpoint, '--path-style'], /does not exist/],
      [['import', fs.name, small, '/kept/big.bin'], /is not a folder/],
      [['export', fs.name, '/no/such', path.join(work, 'out-x')], /does not exist in the filespace/],
      [['export', fs.name, '/kept', localFile], /is a file/],
      [['export', fs.name, '../..', path.join(work, 'out-y')], /leads out of the filespace/],
    ];
    for (const [args, message] of cases) {
      const r = await fs.machine.cli(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: exit ${r.code}\n${r.stderr}${r.stdout}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, `${args.join(' ')}: one line: ${r.stderr}`);
    }
    await assert.rejects(fsp.stat(path.join(work, 'out-x')));
    // Nothing of the filespace changed: its data and metadata objects are the same.
    const data = (m: Map<string, number>) => [...m].filter(([k]) => !/^(lease|followers\/)/.test(k)).sort();
    assert.deepEqual(data(await listKeys(client, fs.bucket)), data(before));
    await fs.mount();
    assertSameTree(expectedSmall, await snapshot(path.join(fs.mnt, 'kept')), 'the filespace after the refusals');
    assert.deepEqual((await fsp.readdir(fs.mnt)).sort(), ['kept']);
    await fs.unmount();
    client.destroy();
  });

  it('refuses to import into a filespace another machine writes, and into one mounted read-only here', async () => {
    const fs = await bed.filespace();
    const writer = await bed.link(await bed.machine('writer'), fs.bucket, fs.prefix);
    await writer.mount();
    const r = await fs.machine.cli('import', fs.name, small);
    assert.equal(r.code, 1, r.stderr + r.stdout);
    assert.match(
      r.stderr,
      /^filespace: cannot import into "fs\w+": this filespace is being written by .*; import on that machine, or take over/,
    );
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    await fs.mount({ readOnly: true });
    const ro = await fs.machine.cli('import', fs.name, small);
    assert.equal(ro.code, 1, ro.stderr + ro.stdout);
    assert.match(ro.stderr, /^filespace: this machine cannot write to the filespace: /);
    assert.deepEqual(await fsp.readdir(fs.mnt), []);
    await fs.unmount();
    await writer.unmount();
  });
});
