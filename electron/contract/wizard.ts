/**
 * First-run wizard rules: which steps exist, the order they come in, and what each step accepts
 * before the user may go on. Pure functions shared by the renderer (to say what is wrong as the
 * user types) and the host (which validates again: the renderer is not trusted).
 */

import { credentialsSchema, targetSchema } from './app';

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
  readonly score: 0 | 1 | 2 | 3 | 4;
  readonly label: string;
  readonly hint: string;
}

/**
 * A rough strength estimate from length and character variety (entropy bits); enough to nudge
 * users towards long passphrases without pretending to be a cracking model.
 */
export function passphraseStrength(p: string): Strength {
  let pool = 0;
  if (/[a-z]/.test(p)) pool += 26;
  if (/[A-Z]/.test(p)) pool += 26;
  if (/[0-9]/.test(p)) pool += 10;
  if (/[^A-Za-z0-9]/.test(p)) pool += 33;
  const distinct = new Set(p).size;
  const bits =
    distinct <= 2 ? distinct * 2 : Math.log2(Math.max(pool, 1)) * p.length * Math.min(1, distinct / Math.max(4, p.length / 2));
  if (p.length < MIN_PASSPHRASE_CHARS)
    return {
      score: 0,
      label: 'too short',
      hint: `use at least ${MIN_PASSPHRASE_CHARS} characters; four or more random words work well`,
    };
  if (bits < 40) return { score: 1, label: 'weak', hint: 'add more words or characters' };
  if (bits < 60) return { score: 2, label: 'fair', hint: 'longer is better: this passphrase protects every file' };
  if (bits < 80) return { score: 3, label: 'good', hint: 'keep it somewhere safe: it cannot be recovered' };
  return { score: 4, label: 'strong', hint: 'keep it somewhere safe: it cannot be recovered' };
}

export function checkPassphraseStep(mode: 'create' | 'link', passphrase: string, repeat: string): string | undefined {
  if (mode === 'link') return passphrase.length === 0 ? 'Enter the passphrase of this filespace' : undefined;
  if (passphrase.length < MIN_PASSPHRASE_CHARS) return `The passphrase must be at least ${MIN_PASSPHRASE_CHARS} characters`;
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
