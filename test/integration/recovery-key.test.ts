/**
 * The recovery key against the real S3 test server, through the `filespace` command: created
 * with the filespace and printed once, never kept on the machine; when the passphrase is lost,
 * it sets a new one (`filespace passphrase`), and a machine links and reads every file with the
 * new passphrase. A wrong or mistyped key, or a filespace made without one, is refused in one
 * line with nothing changed; the recovery wrapping is covered by the header's seal.
 */

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseRecoveryKey } from '../../electron/contract/recoveryKey';
import { HEADER_KEY } from '../../electron/engine/filespace';
import { Bed, Machine, randomFile, sh } from '../helpers/bed';
import { s3StoreFor } from '../helpers/moto';

function oneLineError(r: { code: number; stderr: string }, re: RegExp): void {
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.match(r.stderr, re);
}

/** Every file under `dir` (the machine's home: configuration, cache, logs), read whole. */
async function everyFileText(dir: string): Promise<string> {
  let all = '';
  for (const e of await fsp.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) all += (await fsp.readFile(path.join(e.parentPath, e.name))).toString('latin1');
  }
  return all;
}

describe('recovery key', () => {
  const bed = new Bed();
  let bucket: string;
  let creator: Machine;
  let recoveryKey: string;
  let printed: string;
  let expected: Buffer;

  before(async () => {
    await bed.start();
    bucket = await bed.newBucket();
    creator = await bed.machine('creator');
  });

  after(() => bed.stop());

  it('is printed once at creation, in groups, and kept nowhere on the machine', async () => {
    const out = await creator.ok(
      'init',
      ...bed.storeArgs(bucket),
      '--chunk-size',
      '1MiB',
      '--passphrase-file',
      bed.passFile,
      '--recovery-key',
    );
    const m = /recovery key: ((?:[0-9A-Z]{4}-){7}[0-9A-Z]{4})/.exec(out);
    assert.ok(m, out);
    printed = m[1]!;
    recoveryKey = parseRecoveryKey(printed)!;
    assert.equal(recoveryKey.length, 32);
    assert.match(out, /Without the passphrase or this key the data is gone/);
    const linked = await bed.link(creator, bucket);
    await linked.mount();
    const file = await randomFile(linked.mnt, 'report.bin', 3 * 1024 * 1024 + 17);
    expected = await fsp.readFile(file);
    await linked.sync();
    await linked.unmount();
    const local = await everyFileText(creator.home);
    assert.ok(!local.includes(recoveryKey) && !local.includes(printed), 'the recovery key is stored on the machine');
    const header = (await s3StoreFor(bed.endpoint, bucket).get(HEADER_KEY))!.body.toString('utf8');
    assert.ok(!header.includes(recoveryKey), 'the recovery key is in the bucket in plain');
  });

  it('refuses a wrong, mistyped or loosely kept key in one line and changes nothing', async () => {
    const store = s3StoreFor(bed.endpoint, bucket);
    const headerBefore = (await store.get(HEADER_KEY))!.body;
    const lost = await bed.machine('lost');
    const newPass = path.join(lost.home, 'new-passphrase');
    await fsp.writeFile(newPass, 'orchid lamp tundra velvet', { mode: 0o600 });
    const keyFile = path.join(lost.home, 'key');
    const other = recoveryKey.startsWith('A') ? `B${recoveryKey.slice(1)}` : `A${recoveryKey.slice(1)}`;
    await fsp.writeFile(keyFile, other, { mode: 0o600 });
    const args = ['passphrase', ...bed.storeArgs(bucket), '--recovery-key-file', keyFile, '--passphrase-file', newPass];
    oneLineError(await lost.cli(...args), /wrong recovery key for this filespace/);
    await fsp.writeFile(keyFile, 'ABCD-EFGH', { mode: 0o600 });
    oneLineError(await lost.cli(...args), /holds no recovery key: a recovery key is 32 letters and digits/);
    await fsp.writeFile(keyFile, printed);
    await fsp.chmod(keyFile, 0o644);
    oneLineError(await lost.cli(...args), /readable by other users/);
    assert.deepEqual((await store.get(HEADER_KEY))!.body, headerBefore, 'the header changed');
    await store.close();
  });

  it('sets a new passphrase after the old one is lost, and the files read back with it', async () => {
    const lost = await bed.machine('lost2');
    const wrongPass = path.join(lost.home, 'forgotten');
    await fsp.writeFile(wrongPass, 'what was it again, something horse', { mode: 0o600 });
    const mnt = path.join(lost.home, 'mnt');
    await fsp.mkdir(mnt);
    const linkArgs = (pass: string) => [
      'link',
      ...bed.storeArgs(bucket),
      '--mount-point',
      mnt,
      '--name',
      'found',
      '--passphrase-file',
      pass,
    ];
    oneLineError(await lost.cli(...linkArgs(wrongPass)), /wrong passphrase/);
    const keyFile = path.join(lost.home, 'key');
    // Typed from paper: lower case, spaces instead of dashes, O for 0.
    await fsp.writeFile(keyFile, `${printed.toLowerCase().replace(/-/g, ' ').replace(/0/g, 'o')}\n`, { mode: 0o600 });
    const newPass = path.join(lost.home, 'new-passphrase');
    await fsp.writeFile(newPass, 'orchid lamp tundra velvet', { mode: 0o600 });
    const out = await lost.ok(
      'passphrase',
      ...bed.storeArgs(bucket),
      '--recovery-key-file',
      keyFile,
      '--passphrase-file',
      newPass,
    );
    assert.match(out, /set a new passphrase/);
    await lost.ok(...linkArgs(newPass));
    try {
      await lost.ok('mount', 'found');
      assert.deepEqual(await fsp.readFile(path.join(mnt, 'report.bin')), expected);
    } finally {
      await lost.cli('unmount', 'found', '--force');
      await sh(`fusermount -uz '${mnt}' 2>/dev/null || true`);
    }
    // The old passphrase no longer opens it; the recovery key still does.
    const again = await bed.machine('again');
    const mnt2 = path.join(again.home, 'mnt');
    await fsp.mkdir(mnt2);
    oneLineError(
      await again.cli(
        'link',
        ...bed.storeArgs(bucket),
        '--mount-point',
        mnt2,
        '--name',
        'old',
        '--passphrase-file',
        bed.passFile,
      ),
      /wrong passphrase/,
    );
    await lost.ok('passphrase', ...bed.storeArgs(bucket), '--recovery-key-file', keyFile, '--passphrase-file', bed.passFile);
    await again.ok('link', ...bed.storeArgs(bucket), '--mount-point', mnt2, '--name', 'old', '--passphrase-file', bed.passFile);
  });

  it('is covered by the header seal: a header stripped of it is refused as tampered', async () => {
    const store = s3StoreFor(bed.endpoint, bucket);
    const original = (await store.get(HEADER_KEY))!.body;
    const header = JSON.parse(original.toString('utf8')) as Record<string, unknown>;
    assert.ok(header.recovery, 'the header carries the recovery wrapping');
    delete header.recovery;
    await store.put(HEADER_KEY, Buffer.from(JSON.stringify(header)));
    try {
      const m = await bed.machine('tamper');
      const mnt = path.join(m.home, 'mnt');
      await fsp.mkdir(mnt);
      oneLineError(
        await m.cli('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--passphrase-file', bed.passFile),
        /changed by someone without the passphrase: its recovery key differs from the sealed one/,
      );
    } finally {
      await store.put(HEADER_KEY, original);
      await store.close();
    }
  });

  it('says so when the filespace was made without a recovery key', async () => {
    const plain = await bed.newBucket();
    await creator.ok('init', ...bed.storeArgs(plain), '--passphrase-file', bed.passFile);
    const keyFile = path.join(creator.home, 'key');
    await fsp.writeFile(keyFile, printed, { mode: 0o600 });
    oneLineError(
      await creator.cli('passphrase', ...bed.storeArgs(plain), '--recovery-key-file', keyFile, '--passphrase-file', bed.passFile),
      /created without a recovery key/,
    );
  });
});
