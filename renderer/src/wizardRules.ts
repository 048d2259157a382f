/**
 * What a person may type into each wizard field, checked as they type and said beside the
 * field in plain words ("3 to 63 characters", "at least 16 MiB"), before anything is sent to
 * the host; and the host's answers about a field (a mount point that cannot be made, a cache
 * that does not fit) turned into a sentence that names the field's value, never errno or
 * schema text. The rules are the contract's (contract/app.ts, contract/wizard.ts), which the
 * host checks again. Pure functions.
 */

import { ACCESS_KEY_ID_RE, REGION_RE } from '../../electron/contract/app';
import type { ErrorCode } from '../../electron/contract/errors';
import { formatBytes } from '../../electron/contract/format';
import { parseRecoveryKey, RECOVERY_KEY_HINT } from '../../electron/contract/recoveryKey';
import { checkPassphraseStep, MIN_CACHE_BYTES, normalizePrefix, type WizardStep } from '../../electron/contract/wizard';
import { parseFolder, parseSize, type SizeUnit } from './fieldRules';
import { plainWords } from './problems';

/** The wizard's fields, by the id of their input. */
export type WizardField =
  | 'accessKeyId'
  | 'secretAccessKey'
  | 'region'
  | 'endpoint'
  | 'bucket'
  | 'prefix'
  | 'typedRecoveryKey'
  | 'passphrase'
  | 'repeat'
  | 'name'
  | 'mountPoint'
  | 'cacheCapText';

export type FieldErrors = Partial<Record<WizardField, string>>;

/** What the checks read of the wizard's state. */
export interface WizardInput {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly endpoint: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly mode: 'create' | 'link';
  readonly recovering: boolean;
  readonly typedRecoveryKey: string;
  readonly passphrase: string;
  readonly repeat: string;
  readonly name: string;
  readonly mountPoint: string;
  readonly cacheCapText: string;
  readonly cacheCapUnit: SizeUnit;
  readonly cacheDiskFreeBytes: number;
}

const SENTENCE = (s: string) => s[0]!.toUpperCase() + s.slice(1);

export function accessKeyIdProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '') return 'Enter the access key ID';
  if (/\s/.test(t)) return 'An access key ID has no spaces';
  if (!ACCESS_KEY_ID_RE.test(t)) return 'Only letters and digits, like AKIAIOSFODNN7EXAMPLE';
  return undefined;
}

export function secretProblem(v: string): string | undefined {
  if (v === '') return 'Enter the secret access key';
  if (/\s/.test(v)) return 'A secret access key has no spaces (check what was pasted)';
  if (v.length > 256) return 'At most 256 characters';
  return undefined;
}

export function regionProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '') return undefined; // us-east-1
  if (!REGION_RE.test(t)) return 'A region is lowercase letters, digits and "-", like us-east-1 or eu-west-3';
  return undefined;
}

export function endpointProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '') return undefined; // AWS itself
  if (t.length > 512) return 'At most 512 characters';
  let url: URL;
  try {
    url = new URL(t);
  } catch {
    return 'Enter a full address, starting with https:// (or http://), like https://s3.example.com';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'The address starts with https:// or http://';
  return undefined;
}

/** S3's bucket naming rules, each said on its own. */
export function bucketProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '') return 'Enter a bucket name';
  if (/[A-Z]/.test(t)) return 'Bucket names are lowercase';
  if (/[^a-z0-9.-]/.test(t)) return 'Only lowercase letters, digits, "." and "-"';
  if (t.length < 3 || t.length > 63) return `3 to 63 characters (this is ${t.length})`;
  if (!/^[a-z0-9]/.test(t) || !/[a-z0-9]$/.test(t)) return 'Starts and ends with a letter or digit';
  if (t.includes('..')) return 'No two dots in a row';
  return undefined;
}

export function prefixProblem(v: string): string | undefined {
  const p = normalizePrefix(v);
  if (p.length > 512) return 'At most 512 characters';
  const bad = /[^A-Za-z0-9!_.*'()/-]/.exec(p);
  if (bad) return `Letters, digits and / _ - . only (not ${bad[0] === ' ' ? 'spaces' : `"${bad[0]}"`})`;
  if (p.includes('//')) return 'No empty folder names ("//")';
  return undefined;
}

export function nameProblem(v: string): string | undefined {
  const t = v.trim();
  if (t === '') return 'Enter a name';
  if (!/^[A-Za-z0-9]/.test(t)) return 'Starts with a letter or digit';
  if (!/^[A-Za-z0-9._-]*$/.test(t)) return 'Letters, digits, ".", "_" and "-" only';
  if (t.length > 64) return 'At most 64 characters';
  return undefined;
}

export function mountPointProblem(v: string): string | undefined {
  const r = parseFolder(v);
  return r.ok ? undefined : r.error;
}

/** The cache size box: at least the engine's floor, at most the room on the cache disk. */
export function cacheCapProblem(text: string, unit: SizeUnit, diskFreeBytes: number): string | undefined {
  const r = parseSize(text, unit, MIN_CACHE_BYTES, Math.max(MIN_CACHE_BYTES, diskFreeBytes));
  return r.ok ? undefined : r.error;
}

/** Every problem of the fields of `step`, by field. */
export function wizardFieldErrors(step: WizardStep, w: WizardInput, userInputs: readonly string[] = []): FieldErrors {
  const out: FieldErrors = {};
  const put = (f: WizardField, p: string | undefined) => {
    if (p !== undefined) out[f] = p;
  };
  if (step === 'keys') {
    put('accessKeyId', accessKeyIdProblem(w.accessKeyId));
    put('secretAccessKey', secretProblem(w.secretAccessKey));
    put('region', regionProblem(w.region));
    put('endpoint', endpointProblem(w.endpoint));
  } else if (step === 'bucket') {
    put('bucket', bucketProblem(w.bucket));
    put('prefix', prefixProblem(w.prefix));
  } else if (step === 'passphrase') {
    const choosing = w.mode === 'create' || w.recovering;
    if (w.recovering && parseRecoveryKey(w.typedRecoveryKey) === undefined)
      put('typedRecoveryKey', w.typedRecoveryKey.trim() === '' ? 'Enter the recovery key' : SENTENCE(RECOVERY_KEY_HINT));
    if (!choosing) put('passphrase', w.passphrase === '' ? 'Enter the passphrase of this filespace' : undefined);
    else {
      const p = checkPassphraseStep('create', w.passphrase, w.passphrase, userInputs);
      put('passphrase', p);
      if (p === undefined && w.repeat !== w.passphrase)
        put('repeat', w.repeat === '' ? 'Type the passphrase again' : 'Does not match the passphrase above');
    }
  } else {
    put('name', nameProblem(w.name));
    put('mountPoint', mountPointProblem(w.mountPoint));
    put('cacheCapText', cacheCapProblem(w.cacheCapText, w.cacheCapUnit, w.cacheDiskFreeBytes));
  }
  return out;
}

/** Host error codes that are about one field of the place step. */
const PLACE_FIELD: Partial<Record<ErrorCode, WizardField>> = {
  NOT_ABSOLUTE: 'mountPoint',
  NO_MOUNT_POINT: 'mountPoint',
  NOT_A_DIRECTORY: 'mountPoint',
  NOT_EMPTY: 'mountPoint',
  BAD_MOUNT_POINT: 'mountPoint',
  ALREADY_MOUNTED: 'mountPoint',
  CACHE_TOO_SMALL: 'cacheCapText',
  CACHE_TOO_BIG: 'cacheCapText',
  BAD_NAME: 'name',
  EXISTS: 'name',
};

/** System and schema words that must not reach the screen as they are. */
const RAW = [/\bE[A-Z]{3,}\b/, /no such file or directory|permission denied|expected \w+|too (small|big)|invalid input|syscall/i];

/**
 * A host's refusal in the wizard: the field it is about (if any) and a sentence for a person.
 * The host's own sentences are kept; errno and schema text become plain words that name the
 * folder (`folder`, when the host's text does not quote it).
 */
export function wizardHostError(
  message: string,
  code: ErrorCode | undefined,
  folder?: string,
): { field?: WizardField; text: string } {
  const field = code === undefined ? undefined : PLACE_FIELD[code];
  let text = message.trim();
  if (RAW.some((re) => re.test(text))) {
    const quoted = /'(\/[^']*)'/.test(text) || folder === undefined ? text : `${text} '${folder}'`;
    text = plainWords(quoted, code);
    if (code === 'CACHE_TOO_SMALL') text = `At least ${formatBytes(MIN_CACHE_BYTES)}`;
  }
  return field === undefined ? { text } : { field, text };
}
