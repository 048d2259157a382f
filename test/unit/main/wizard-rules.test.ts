// The first-run wizard's step rules, shared by the renderer and the host.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clockTime, syncLine, formatBytes } from '../../../electron/contract/format';
import {
  checkKeysStep,
  checkPassphraseStep,
  checkPlaceStep,
  checkTargetStep,
  nextStep,
  normalizePrefix,
  passphraseStrength,
  previousStep,
} from '../../../electron/contract/wizard';

const MiB = 1024 * 1024;
const keys = { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'x', region: 'eu-west-1', endpoint: '', pathStyle: false };

describe('wizard steps', () => {
  it('go keys -> bucket -> passphrase -> place -> done, and back', () => {
    assert.equal(nextStep('keys'), 'bucket');
    assert.equal(nextStep('bucket'), 'passphrase');
    assert.equal(nextStep('passphrase'), 'place');
    assert.equal(nextStep('place'), 'done');
    assert.equal(previousStep('bucket'), 'keys');
    assert.equal(previousStep('keys'), undefined);
  });

  it('keys: accepts good input, names the field that is wrong', () => {
    assert.equal(checkKeysStep(keys), undefined);
    assert.equal(checkKeysStep({ ...keys, region: '' }), undefined, 'an empty region means us-east-1');
    assert.equal(checkKeysStep({ ...keys, endpoint: 'http://127.0.0.1:9000', pathStyle: true }), undefined);
    assert.match(checkKeysStep({ ...keys, accessKeyId: '' }) ?? '', /^Access key ID:/);
    assert.match(checkKeysStep({ ...keys, accessKeyId: 'AKIA with spaces' }) ?? '', /^Access key ID:/);
    assert.match(checkKeysStep({ ...keys, secretAccessKey: '' }) ?? '', /^Secret access key: the secret access key is empty/);
    assert.match(checkKeysStep({ ...keys, endpoint: 'ftp://x' }) ?? '', /^Endpoint: must be an http\(s\) URL/);
    assert.match(checkKeysStep({ ...keys, region: 'EU WEST' }) ?? '', /^Region:/);
  });

  it('bucket: S3 naming rules; the prefix loses outer slashes', () => {
    assert.equal(checkTargetStep('my-bucket', '/team/'), undefined);
    assert.match(checkTargetStep('My_Bucket', '') ?? '', /^Bucket: not a valid S3 bucket name/);
    assert.match(checkTargetStep('ab', '') ?? '', /^Bucket:/);
    assert.match(checkTargetStep('my-bucket', 'a b') ?? '', /^Prefix:/);
    assert.equal(normalizePrefix(' //team/docs// '), 'team/docs');
  });

  it('passphrase: long enough, strong enough and typed twice alike when creating; non-empty when linking', () => {
    assert.match(checkPassphraseStep('create', 'short', 'short') ?? '', /at least 8/);
    assert.match(checkPassphraseStep('create', 'password1', 'password1') ?? '', /^This passphrase is very weak: .*commonly used/);
    assert.match(checkPassphraseStep('create', 'troubadour', 'troubadour') ?? '', /is weak/);
    assert.match(
      checkPassphraseStep('create', 'ui-bucket-team', 'ui-bucket-team', ['ui-bucket', 'team']) ?? '',
      /is fair: There should not be any personal or page related data/,
      'words the user typed elsewhere (bucket, prefix) count as known',
    );
    assert.equal(checkPassphraseStep('create', 'correct horse battery', 'correct horse battery'), undefined);
    assert.equal(checkPassphraseStep('create', 'correct horse battery', 'correct horse batterY'), 'The two passphrases differ');
    assert.equal(checkPassphraseStep('link', 'x', ''), undefined);
    assert.match(checkPassphraseStep('link', '', '') ?? '', /Enter the passphrase/);
  });

  it('passphrase strength comes from a dictionary-based estimator (zxcvbn), not from character classes', () => {
    assert.equal(passphraseStrength('abc').score, 0);
    assert.equal(passphraseStrength('aaaaaaaaaaaa').score, 0, 'repeating one character is weak however long');
    assert.equal(passphraseStrength('password').score, 0);
    // Upper case, digits and symbols do not save a dictionary word in l33t speak.
    assert.ok(passphraseStrength('Tr0ub4dor&3').score < 3);
    const words = passphraseStrength('orchid lamp tundra velvet');
    assert.equal(words.score, 4);
    assert.equal(words.label, 'strong');
    assert.match(words.hint, /recovery key/);
  });

  it('the estimator sits behind an interface: the rules use whatever score it gives', () => {
    const fixed = (score: 0 | 1 | 2 | 3 | 4) => () => ({ score, warning: 'said the estimator', suggestions: [] });
    assert.equal(passphraseStrength('anything long', [], fixed(1)).label, 'weak');
    assert.match(checkPassphraseStep('create', 'anything long', 'anything long', [], fixed(2)) ?? '', /fair: said the estimator/);
    assert.equal(checkPassphraseStep('create', 'anything long', 'anything long', [], fixed(3)), undefined);
  });

  it('place: a full path, a cache of at least 16 MiB and no more than the free space', () => {
    const GB = 1e9;
    assert.equal(checkPlaceStep('/home/u/Filespace/team', 2 * GB, 10 * GB), undefined);
    assert.equal(checkPlaceStep('C:\\Users\\u\\Filespace', 2 * GB, 10 * GB), undefined);
    assert.match(checkPlaceStep('', 2 * GB, 10 * GB) ?? '', /Choose a folder/);
    assert.match(checkPlaceStep('Filespace', 2 * GB, 10 * GB) ?? '', /full path/);
    assert.match(checkPlaceStep('/m', 1024, 10 * GB) ?? '', /at least 16 MiB/);
    assert.match(checkPlaceStep('/m', 11 * GB, 10 * GB) ?? '', /larger than the free space/);
  });
});

describe('sync wording', () => {
  const base = {
    state: 'mounted' as const,
    dirtyBytes: 0,
    dirtyFiles: 0,
    pendingMetaOps: 0,
    uploadsPaused: false,
    offline: false,
  };
  it('reads like the tray and status window say it', () => {
    assert.equal(syncLine(base), 'Up to date');
    assert.equal(syncLine({ ...base, dirtyFiles: 3, dirtyBytes: 212 * MiB }), 'Uploading 3 files, 212 MiB left');
    assert.equal(
      syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 3 * MiB, uploadsPaused: true }),
      'Uploads paused: 1 file, 3.0 MiB waiting',
    );
    assert.equal(syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 10, offline: true }), 'Offline: 1 file, 10 B waiting');
    assert.equal(syncLine({ ...base, pendingMetaOps: 2 }), 'Uploading 2 changes');
    assert.equal(
      syncLine({ ...base, state: 'unmounted', dirtyFiles: 2, dirtyBytes: 1536 }),
      '2 files, 1.5 KiB waiting to upload at the next mount',
    );
    assert.equal(syncLine({ ...base, state: 'unmounted' }), 'Everything is in the bucket');
  });

  it('says since when it is offline, and that writes wait or are refused, as states', () => {
    const t = new Date(2026, 11, 2, 14, 3, 7).getTime();
    assert.equal(clockTime(t), '14:03:07');
    assert.equal(
      syncLine({ ...base, dirtyFiles: 3, dirtyBytes: 21 * MiB, offline: true, offlineSince: t }),
      'Offline since 14:03:07: 3 files, 21.0 MiB waiting',
    );
    const w = {
      since: t,
      cause: 'paused' as const,
      refusing: false,
      refused: 0,
      message:
        'the cache is full of changes that cannot upload (uploads are paused); resume uploads or raise the cache size. Writes fail with "No space left on device" after waiting 30 s.',
    };
    assert.equal(
      syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 10, uploadsPaused: true, writesWaiting: w }),
      `Writes waiting: ${w.message}`,
    );
    assert.match(
      syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 10, uploadsPaused: true, writesWaiting: { ...w, refusing: true } }),
      /^Writes refused: the cache is full/,
    );
    // Ordinary backpressure while uploads make progress is not news: the upload line stays.
    assert.equal(
      syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 10, writesWaiting: { ...w, cause: 'uploading' } }),
      'Uploading 1 file, 10 B left',
    );
    assert.equal(
      syncLine({ ...base, dirtyFiles: 1, dirtyBytes: 10, writesWaiting: null, offlineSince: null }),
      'Uploading 1 file, 10 B left',
    );
  });

  it('formats sizes in binary units, as the command does', () => {
    assert.deepEqual([0, 1023, 1024, 1536, 212 * MiB, 20 * 1024 * MiB, 3.5 * 1024 ** 4].map(formatBytes), [
      '0 B',
      '1023 B',
      '1.0 KiB',
      '1.5 KiB',
      '212 MiB',
      '20.0 GiB',
      '3.5 TiB',
    ]);
  });
});
