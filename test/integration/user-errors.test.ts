/**
 * Every error a user can cause exits non-zero with one clear line naming the problem and the
 * fix, and changes nothing: no configuration, cache or bucket object appears.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, CLI, Machine, RunResult, run } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';

function assertOneLineError(r: RunResult, pattern: RegExp): void {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got: ${r.stderr}`);
  assert.match(lines[0]!, /^filespace: /);
  assert.match(lines[0]!, pattern);
}

async function snapshotDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      out.push(p);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}

describe('user errors', () => {
  const bed = new Bed();
  let m: Machine;
  let bucket: string;
  let mnt: string;

  before(async () => {
    await bed.start();
    m = await bed.machine('errs');
    bucket = await bed.newBucket();
    await m.ok('init', ...bed.storeArgs(bucket), '--passphrase-file', bed.passFile);
    mnt = path.join(m.home, 'mnt');
    await fsp.mkdir(mnt);
  });

  after(() => bed.stop());

  /** Runs a failing command and checks it changed nothing on this machine or in the bucket. */
  async function failsCleanly(args: string[], pattern: RegExp, env?: NodeJS.ProcessEnv): Promise<void> {
    const beforeLocal = await snapshotDir(m.home);
    const store = s3StoreFor(bed.endpoint, bucket);
    const beforeBucket = await store.list('');
    const r = env ? await run(process.execPath, [CLI, ...args], { env }) : await m.cli(...args);
    assertOneLineError(r, pattern);
    assert.deepEqual(await snapshotDir(m.home), beforeLocal, 'the machine changed');
    assert.deepEqual(await store.list(''), beforeBucket, 'the bucket changed');
    await store.close();
  }

  it('refuses to create a filespace where one exists', async () => {
    await failsCleanly(['init', ...bed.storeArgs(bucket), '--passphrase-file', bed.passFile], /already exists.*link/);
  });

  it('names a missing bucket', async () => {
    await failsCleanly(
      ['link', ...bed.storeArgs('no-such-bucket-here'), '--mount-point', mnt, '--passphrase-file', bed.passFile],
      /does not exist.*--bucket/,
    );
  });

  it('names an unreachable endpoint', async () => {
    await failsCleanly(
      [
        'link',
        '--bucket',
        bucket,
        '--endpoint',
        'http://127.0.0.1:9',
        '--path-style',
        '--mount-point',
        mnt,
        '--passphrase-file',
        bed.passFile,
      ],
      /cannot reach/,
    );
  });

  it('names a prefix that holds no filespace', async () => {
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket, 'elsewhere'), '--mount-point', mnt, '--passphrase-file', bed.passFile],
      /no filespace at .*init/,
    );
  });

  it('catches a wrong passphrase', async () => {
    const wrong = path.join(m.home, '..', 'wrong-pass');
    await fsp.writeFile(wrong, 'not the passphrase', { mode: 0o600 });
    await failsCleanly(['link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--passphrase-file', wrong], /wrong passphrase/);
  });

  it('refuses a passphrase file other users can read', async () => {
    const open = path.join(m.home, '..', 'open-pass');
    await fsp.writeFile(open, 'correct horse battery staple', { mode: 0o644 });
    await fsp.chmod(open, 0o644);
    await failsCleanly(['link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--passphrase-file', open], /chmod 600/);
  });

  it('checks the mount point: missing, not a directory, not empty', async () => {
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', path.join(m.home, 'absent'), '--passphrase-file', bed.passFile],
      /does not exist.*mkdir/,
    );
    const file = path.join(m.home, '..', 'a-file');
    await fsp.writeFile(file, 'x');
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', file, '--passphrase-file', bed.passFile],
      /not a directory/,
    );
    const full = path.join(m.home, '..', 'full');
    await fsp.mkdir(full, { recursive: true });
    await fsp.writeFile(path.join(full, 'x'), 'x');
    await failsCleanly(['link', ...bed.storeArgs(bucket), '--mount-point', full, '--passphrase-file', bed.passFile], /not empty/);
  });

  it('rejects bad sizes, names, buckets and endpoints', async () => {
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--cache-size', '12XB', '--passphrase-file', bed.passFile],
      /cache-size.*not a size/,
    );
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--cache-size', '1MiB', '--passphrase-file', bed.passFile],
      /at least 16 MiB/,
    );
    await failsCleanly(
      ['init', ...bed.storeArgs(bucket, 'p2'), '--chunk-size', '3MiB', '--passphrase-file', bed.passFile],
      /power of two/,
    );
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 'bad/name', '--passphrase-file', bed.passFile],
      /not a valid filespace name/,
    );
    await failsCleanly(['init', '--bucket', 'Bad_Bucket', '--passphrase-file', bed.passFile], /not a valid S3 bucket name/);
    await failsCleanly(
      ['init', '--bucket', bucket, '--endpoint', 'ftp://x', '--passphrase-file', bed.passFile],
      /not an http\(s\) URL/,
    );
  });

  it('names an unknown filespace and lists the linked ones', async () => {
    await failsCleanly(['status', 'nope'], /no filespace named "nope"/);
    await failsCleanly(['mount', 'nope'], /no filespace named "nope"/);
  });

  it('works once, then refuses a second link of the same name and a second mount', async () => {
    await m.ok('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 'main', '--passphrase-file', bed.passFile);
    const other = path.join(m.home, 'mnt2');
    await fsp.mkdir(other);
    await failsCleanly(
      ['link', ...bed.storeArgs(bucket), '--mount-point', other, '--name', 'main', '--passphrase-file', bed.passFile],
      /already linked/,
    );
    await failsCleanly(['set', 'main', 'cache-size', 'lots'], /not a size/);
    await failsCleanly(['set', 'main', 'colour', 'blue'], /unknown setting "colour"/);
    await failsCleanly(['unmount', 'main'], /not mounted/);
    await m.ok('mount', 'main');
    try {
      const r = await m.cli('mount', 'main');
      assertOneLineError(r, /already mounted/);
      const r2 = await m.cli('unlink', 'main');
      assertOneLineError(r2, /unmount it first/);
    } finally {
      await m.ok('unmount', 'main');
    }
  });

  it('names FUSE as missing when fusermount is not installed', async () => {
    const env = { ...m.env, PATH: '/nonexistent' };
    await failsCleanly(['mount', 'main', '--foreground'], /fusermount is not installed.*apt-get install fuse/, env);
  });

  it('prints usage and exits 2 on a malformed command line', async () => {
    const r = await m.cli('link', '--bogus');
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Unknown option '--bogus'/);
    const r2 = await m.cli('frobnicate');
    assert.equal(r2.code, 2);
    assert.match(r2.stderr, /unknown command "frobnicate"/);
  });
});
