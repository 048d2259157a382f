// The wizard's fields checked in plain words before anything is sent, the host's refusals about
// a field turned into a sentence that names it (no errno or schema text), the permission result
// dropped when what it was about changes, and the demo's "what next" hint.

import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { FilespaceSummary } from '../../../electron/contract/app';
import {
  editWizard,
  resetStore,
  showsDemoHint,
  slideCacheCap,
  editCacheCap,
  store,
  wizardErrors,
} from '../../../renderer/src/store';
import {
  accessKeyIdProblem,
  bucketProblem,
  cacheCapProblem,
  endpointProblem,
  prefixProblem,
  regionProblem,
  secretProblem,
  wizardFieldErrors,
  wizardHostError,
  type WizardInput,
} from '../../../renderer/src/wizardRules';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const RAW = /\bE[A-Z]{3,}\b|no such file|expected|Too small|invalid_|zod/;

const input: WizardInput = {
  accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
  secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
  region: 'eu-west-3',
  endpoint: '',
  bucket: 'my-bucket',
  prefix: 'team',
  mode: 'create',
  recovering: false,
  typedRecoveryKey: '',
  passphrase: 'correct horse battery staple',
  repeat: 'correct horse battery staple',
  name: 'team',
  mountPoint: '/home/me/Filespace',
  cacheCapText: '2',
  cacheCapUnit: 'GiB',
  cacheDiskFreeBytes: 100 * GiB,
};

describe('wizard fields', () => {
  it('keys: id, secret, region and endpoint in words', () => {
    assert.equal(accessKeyIdProblem(''), 'Enter the access key ID');
    assert.equal(accessKeyIdProblem('AKIA 123'), 'An access key ID has no spaces');
    assert.match(accessKeyIdProblem('AKIA_123')!, /^Only letters and digits/);
    assert.equal(accessKeyIdProblem(' AKIAIOSFODNN7EXAMPLE '), undefined);
    assert.equal(secretProblem(''), 'Enter the secret access key');
    assert.match(secretProblem('abc def')!, /no spaces/);
    assert.equal(secretProblem('x'.repeat(257)), 'At most 256 characters');
    assert.equal(regionProblem(''), undefined, 'empty is us-east-1');
    assert.match(regionProblem('EU West')!, /like us-east-1/);
    assert.equal(endpointProblem(''), undefined, 'empty is AWS itself');
    assert.match(endpointProblem('s3.example.com')!, /starting with https:\/\//);
    assert.match(endpointProblem('ftp://s3.example.com')!, /https:\/\/ or http:\/\//);
    assert.equal(endpointProblem('http://127.0.0.1:9000'), undefined);
  });

  it('bucket names: each S3 rule said on its own; prefixes', () => {
    assert.equal(bucketProblem(''), 'Enter a bucket name');
    assert.equal(bucketProblem('My-Bucket'), 'Bucket names are lowercase');
    assert.equal(bucketProblem('my_bucket'), 'Only lowercase letters, digits, "." and "-"');
    assert.equal(bucketProblem('ab'), '3 to 63 characters (this is 2)');
    assert.equal(bucketProblem('a'.repeat(64)), '3 to 63 characters (this is 64)');
    assert.equal(bucketProblem('-abc'), 'Starts and ends with a letter or digit');
    assert.equal(bucketProblem('a..b'), 'No two dots in a row');
    assert.equal(bucketProblem('ui-bucket'), undefined);
    assert.equal(prefixProblem('/team/'), undefined);
    assert.equal(prefixProblem('my team'), 'Letters, digits and / _ - . only (not spaces)');
    assert.equal(prefixProblem('a#b'), 'Letters, digits and / _ - . only (not "#")');
    assert.equal(prefixProblem('a//b'), 'No empty folder names ("//")');
  });

  it('cache size: at least 16 MiB, at most the room on the disk, in the unit typed', () => {
    assert.equal(cacheCapProblem('8', 'MiB', GiB), 'At least 16 MiB');
    assert.equal(cacheCapProblem('', 'GiB', GiB), 'Enter a size between 16 MiB and 1.0 GiB');
    assert.match(cacheCapProblem('2', 'GiB', GiB)!, /^At most 1\.0 GiB/);
    assert.equal(cacheCapProblem('0.5', 'GiB', GiB), undefined);
  });

  it('passphrase: strength, then the second one matching', () => {
    assert.deepEqual(wizardFieldErrors('passphrase', input), {});
    const differ = wizardFieldErrors('passphrase', { ...input, repeat: 'correct horse battery stapler' });
    assert.deepEqual(differ, { repeat: 'Does not match the passphrase above' });
    assert.deepEqual(wizardFieldErrors('passphrase', { ...input, repeat: '' }), { repeat: 'Type the passphrase again' });
    assert.match(wizardFieldErrors('passphrase', { ...input, passphrase: 'short' }).passphrase!, /at least 8 characters/);
    assert.deepEqual(wizardFieldErrors('passphrase', { ...input, mode: 'link', repeat: '' }), {});
    assert.deepEqual(Object.keys(wizardFieldErrors('passphrase', { ...input, mode: 'link', recovering: true })), [
      'typedRecoveryKey',
    ]);
  });

  it('each step checks only its own fields', () => {
    const bad = { ...input, bucket: 'X', mountPoint: 'relative', accessKeyId: '' };
    assert.deepEqual(Object.keys(wizardFieldErrors('keys', bad)), ['accessKeyId']);
    assert.deepEqual(Object.keys(wizardFieldErrors('bucket', bad)), ['bucket']);
    assert.deepEqual(wizardFieldErrors('place', bad), { mountPoint: 'Enter a full path, starting with /' });
  });
});

describe('host refusals in the wizard', () => {
  it('a mount point that cannot be made is named, with no errno text, beside its field', () => {
    const said = wizardHostError(
      "cannot make the mount point /proc/nope: ENOENT: no such file or directory, mkdir '/proc/nope'",
      'BAD_MOUNT_POINT',
      '/proc/nope',
    );
    assert.deepEqual(said, { field: 'mountPoint', text: 'The folder "/proc/nope" does not exist and cannot be made there' });
    const eacces = wizardHostError("EACCES: permission denied, mkdir '/root/x'", 'INTERNAL', '/root/x');
    assert.equal(eacces.text, 'No permission to use "/root/x"');
    const unquoted = wizardHostError('ENOTDIR: not a directory', 'INTERNAL', '/etc/passwd/x');
    assert.equal(unquoted.text, '"/etc/passwd/x" is not a folder');
    for (const s of [said, eacces, unquoted]) assert.doesNotMatch(s.text, RAW);
  });

  it("keeps the host's own sentences", () => {
    assert.deepEqual(wizardHostError('mount point /x is not empty; pick an empty folder', 'NOT_EMPTY'), {
      field: 'mountPoint',
      text: 'mount point /x is not empty; pick an empty folder',
    });
    assert.deepEqual(wizardHostError('wrong passphrase for this filespace', 'WRONG_PASSPHRASE'), {
      text: 'wrong passphrase for this filespace',
    });
  });
});

describe('wizard state', () => {
  afterEach(() => resetStore());

  it('drops the permission result when the keys, bucket, prefix or mode change', () => {
    const check = { ok: false, missing: ['s3:PutObject' as const], message: 'lack', policy: '{}', filespaceExists: false };
    for (const change of [{ bucket: 'other' }, { prefix: 'x' }, { mode: 'link' as const }, { keys: null }]) {
      editWizard({ bucket: 'b', prefix: '', mode: 'create', keys: { stored: true } });
      editWizard({ check });
      editWizard({ passphrase: 'unrelated' });
      assert.deepEqual(store.getState().wizard.check, check, 'an unrelated edit keeps it');
      editWizard(change);
      assert.equal(store.getState().wizard.check, null, `kept after ${JSON.stringify(change)}`);
    }
  });

  it('the cache box and slider follow each other; an invalid box keeps the last good size', () => {
    editWizard({ step: 'place', cacheDiskFreeBytes: 10 * GiB, mountPoint: '/m', name: 'n' });
    slideCacheCap(1536);
    assert.deepEqual([store.getState().wizard.cacheCapText, store.getState().wizard.cacheCapUnit], ['1.5', 'GiB']);
    editCacheCap('8', 'MiB');
    assert.equal(store.getState().wizard.cacheCapBytes, 8 * MiB);
    assert.deepEqual(wizardErrors(store.getState().wizard), { cacheCapText: 'At least 16 MiB' });
    editCacheCap('abc', 'MiB');
    assert.equal(store.getState().wizard.cacheCapBytes, 8 * MiB);
    editCacheCap('2', 'GiB');
    assert.equal(store.getState().wizard.cacheCapBytes, 2 * GiB);
    assert.deepEqual(wizardErrors(store.getState().wizard), {});
  });

  it('the demo hint shows on a mounted, empty local filespace until something is written', () => {
    const f = (status: Partial<FilespaceSummary['status']>, kind: 'local' | 's3' = 'local') =>
      ({
        name: 'demo',
        kind,
        status: { state: 'mounted', dirtyFiles: 0, pendingMetaOps: 0, cacheUsedBytes: 0, ...status },
      }) as FilespaceSummary;
    assert.equal(showsDemoHint(f({}), {}), true);
    assert.equal(showsDemoHint(f({}, 's3'), {}), false);
    assert.equal(showsDemoHint(f({ state: 'unmounted' }), {}), false);
    assert.equal(showsDemoHint(f({ dirtyFiles: 1 }), {}), false);
    assert.equal(showsDemoHint(f({}), { demo: true }), false, 'gone for good once a write was seen');
  });
});
