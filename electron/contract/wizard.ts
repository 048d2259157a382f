/**
 * First-run wizard rules: which steps exist, the order they come in, and what each step accepts
 * before the user may go on. Pure functions shared by the renderer (to say what is wrong as the
 * user types) and the host (which validates again: the renderer is not trusted).
 */

import { credentialsSchema, targetSchema } from './app';
import { type PassphraseEstimator, type StrengthScore, zxcvbnEstimator } from './strength';

export const WIZARD_STEPS = ['keys', 'bucket', 'passphrase', 'place'] as const;
export type WizardStep = (typeof WIZARD_STEPS)[number];

export const MIN_CACHE_BYTES = 16 * 1024 * 1024;
export const MIN_PASSPHRASE_CHARS = 8;

export function nextStep(step: WizardStep): WizardStep | 'done' {
  const i = WIZARD_STEPS.indexOf(step);
  return WIZARD_STEPS[i + 1] ?? 'done';
}

export function previousStep(step: WizardStep): WizardStep | undefined {
  const i = WIZARD_STEPS.indexOf(step);
  return i > 0 ? WIZARD_STEPS[i - 1] : undefined;
}

function firstIssue(
  r: { success: boolean; error?: { issues: ReadonlyArray<{ path: PropertyKey[]; message: string }> } },
  labels: Record<string, string>,
): string | undefined {
  if (r.success) return undefined;
  const issue = r.error!.issues[0]!;
  const field = String(issue.path[0] ?? '');
  return `${labels[field] ?? field}: ${issue.message}`;
}

export interface KeysInput {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly region: string;
  readonly endpoint: string;
  readonly pathStyle: boolean;
}

/** The keys step; an empty endpoint means AWS itself. */
export function checkKeysStep(k: KeysInput): string | undefined {
  const r = credentialsSchema.safeParse({
    accessKeyId: k.accessKeyId.trim(),
    secretAccessKey: k.secretAccessKey,
    region: k.region.trim() || 'us-east-1',
    ...(k.endpoint.trim() ? { endpoint: k.endpoint.trim() } : {}),
    pathStyle: k.pathStyle,
  });
  return firstIssue(r, {
    accessKeyId: 'Access key ID',
    secretAccessKey: 'Secret access key',
    region: 'Region',
    endpoint: 'Endpoint',
  });
}

export function checkTargetStep(bucket: string, prefix: string): string | undefined {
  return firstIssue(targetSchema.safeParse({ bucket: bucket.trim(), prefix: normalizePrefix(prefix) }), {
    bucket: 'Bucket',
    prefix: 'Prefix',
  });
}

export function normalizePrefix(prefix: string): string {
  return prefix.trim().replace(/^\/+|\/+$/g, '');
}

export interface Strength {
  /** 0 (very weak) to 4 (strong). */
  readonly score: StrengthScore;
  readonly label: string;
  readonly hint: string;
}

/** The weakest score a new filespace's passphrase may have: "good" (about 10^10 guesses and up). */
export const MIN_PASSPHRASE_SCORE: StrengthScore = 3;

const LABELS = ['very weak', 'weak', 'fair', 'good', 'strong'] as const;

/**
 * How strong a new passphrase is, in words for the meter: the estimator's score, what makes it
 * weak, and what to do. `userInputs` are words the user gave elsewhere (bucket, prefix, name),
 * which an attacker would try first.
 */
export function passphraseStrength(
  p: string,
  userInputs: readonly string[] = [],
  estimate: PassphraseEstimator = zxcvbnEstimator,
): Strength {
  if (p.length < MIN_PASSPHRASE_CHARS)
    return {
      score: 0,
      label: 'too short',
      hint: `use at least ${MIN_PASSPHRASE_CHARS} characters; four or more random words work well`,
    };
  const e = estimate(p, userInputs);
  const why = [e.warning, ...e.suggestions].filter((x): x is string => !!x && x.length > 0);
  const hint =
    e.score < MIN_PASSPHRASE_SCORE
      ? why.length > 0
        ? why.join(' ')
        : 'Add more random words.'
      : 'Keep it somewhere safe: without it (or the recovery key) nobody can open the files.';
  return { score: e.score, label: LABELS[e.score], hint };
}

export function checkPassphraseStep(
  mode: 'create' | 'link',
  passphrase: string,
  repeat: string,
  userInputs: readonly string[] = [],
  estimate: PassphraseEstimator = zxcvbnEstimator,
): string | undefined {
  if (mode === 'link') return passphrase.length === 0 ? 'Enter the passphrase of this filespace' : undefined;
  if (passphrase.length < MIN_PASSPHRASE_CHARS) return `The passphrase must be at least ${MIN_PASSPHRASE_CHARS} characters`;
  const strength = passphraseStrength(passphrase, userInputs, estimate);
  if (strength.score < MIN_PASSPHRASE_SCORE) return `This passphrase is ${strength.label}: ${strength.hint}`;
  if (passphrase !== repeat) return 'The two passphrases differ';
  return undefined;
}

export function checkPlaceStep(mountPoint: string, cacheCapBytes: number, cacheDiskFreeBytes: number): string | undefined {
  if (!mountPoint.trim()) return 'Choose a folder to mount the filespace in';
  if (!mountPoint.trim().startsWith('/') && !/^[A-Za-z]:[\\/]/.test(mountPoint.trim()))
    return 'The mount point must be a full path';
  if (!Number.isFinite(cacheCapBytes) || cacheCapBytes < MIN_CACHE_BYTES) return 'The cache must be at least 16 MiB';
  if (cacheCapBytes > cacheDiskFreeBytes) return 'The cache cap is larger than the free space on the cache disk';
  return undefined;
}
