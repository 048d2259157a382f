/**
 * Recent problems as a person reads them: one line per problem (not per occurrence), with the
 * filespace it concerns, how many times it happened and when last, a headline in plain words
 * (no chunk ids, object keys, errno codes or schema messages; those stay in the details), and
 * problems the engine reports clearing themselves once the engine no longer reports them.
 * Pure functions over an immutable list, so the store stays a thin caller and the rules are
 * tested in plain Node.
 */

import type { ErrorCode } from '../../electron/contract/errors';

export interface Problem {
  /** Filespace and headline: two reports of one problem share it. */
  readonly key: string;
  readonly filespace?: string;
  readonly headline: string;
  /** What the host or engine said, word for word (shown behind a toggle). */
  readonly detail: string;
  readonly count: number;
  readonly first: number;
  readonly at: number;
  /** 'status': reported by a running filespace (clears when it is gone); 'action': a failed action of the user. */
  readonly source: 'status' | 'action';
  readonly code?: ErrorCode;
  /** Runs the failed action again. */
  readonly retry?: () => Promise<void>;
}

const SENTENCE = (s: string) => (s ? s[0]!.toUpperCase() + s.slice(1) : s);

/** Chunk names, object keys and other long identifiers, which mean nothing to a person. */
function withoutIds(s: string): string {
  return s
    .replace(/\S*\/(chunks|meta|journal|lease)\/\S*/g, '…')
    .replace(/\b[0-9a-f]{16,}\b/gi, '…')
    .replace(/\s+/g, ' ')
    .trim();
}

const SYSTEM_ERRORS: Array<[RegExp, (path: string) => string]> = [
  [
    /ENOENT|no such file or directory/i,
    (p) => (p ? `The folder "${p}" does not exist and cannot be made there` : 'A file or folder is missing'),
  ],
  [/EACCES|EPERM|permission denied|operation not permitted/i, (p) => (p ? `No permission to use "${p}"` : 'Permission denied')],
  [/ENOSPC|no space left/i, () => 'The disk is full'],
  [/EROFS|read-only file system/i, (p) => (p ? `"${p}" is on a read-only disk` : 'The disk is read-only')],
  [/ENOTDIR|not a directory/i, (p) => (p ? `"${p}" is not a folder` : 'A path is not a folder')],
  [/EEXIST/i, (p) => (p ? `"${p}" already exists` : 'It already exists')],
  [/\bEIO\b|input\/output error/i, () => 'A file could not be read or written (input/output error)'],
];

/**
 * The headline of an error message in plain words. `code` is the host's error code, when the
 * error came from an action.
 */
export function plainWords(message: string, code?: ErrorCode): string {
  const m = message.trim();
  if (/download of chunk|refusing chunk|chunk \S+ is missing/i.test(m)) return 'Could not download file data from the bucket';
  if (/could not cache chunk/i.test(m)) return 'Could not keep downloaded data in the cache (is its disk full?)';
  if (/throttl|SlowDown|rate exceeded/i.test(m)) return 'The bucket asks to slow down; uploads retry by themselves';
  if (/^upload|upload of|uploads? fail/i.test(m)) return 'Could not upload changes to the bucket';
  if (/ECONNREFUSED|ENOTFOUND|ETIMEDOUT|EAI_AGAIN|cannot reach|does not answer/i.test(m) || code === 'UNREACHABLE')
    return 'Cannot reach the bucket';
  if (/invalid setting|expected number|too (small|big)/i.test(m) || code === 'BAD_SETTING' || code === 'INVALID')
    return 'That value is not allowed here';
  const path = /'(\/[^']*)'/.exec(m)?.[1] ?? '';
  for (const [re, say] of SYSTEM_ERRORS) if (re.test(m)) return say(path);
  return SENTENCE(withoutIds(m.replace(/^(Error|HostError):\s*/, '')));
}

/** The list with one more report: merged into its problem if known (count and time), else added. */
export function recordProblem(
  list: readonly Problem[],
  report: {
    message: string;
    at: number;
    source: Problem['source'];
    filespace?: string;
    code?: ErrorCode;
    retry?: () => Promise<void>;
  },
  keep = 20,
): Problem[] {
  const headline = plainWords(report.message, report.code);
  const key = `${report.filespace ?? ''}|${headline}`;
  const known = list.find((p) => p.key === key);
  const next: Problem = {
    key,
    headline,
    detail: report.message,
    count: (known?.count ?? 0) + 1,
    first: known?.first ?? report.at,
    at: report.at,
    source: report.source,
    ...(report.filespace !== undefined ? { filespace: report.filespace } : {}),
    ...(report.code !== undefined ? { code: report.code } : {}),
    ...(report.retry ? { retry: report.retry } : {}),
  };
  return [...list.filter((p) => p.key !== key), next].slice(-keep);
}

/**
 * Reports from running filespaces: a new or changed error is recorded once (not once per status
 * event), and a status problem its filespace no longer reports is gone from the list.
 */
export function followStatus(
  list: readonly Problem[],
  current: ReadonlyArray<{ filespace: string; lastError: string | null }>,
  previous: ReadonlyMap<string, string | null>,
  at: number,
): Problem[] {
  let out = [...list];
  for (const c of current) {
    if (c.lastError !== null && previous.get(c.filespace) !== c.lastError)
      out = recordProblem(out, { message: c.lastError, at, source: 'status', filespace: c.filespace });
  }
  const still = new Set(current.filter((c) => c.lastError !== null).map((c) => `${c.filespace}|${plainWords(c.lastError!)}`));
  return out.filter((p) => p.source !== 'status' || still.has(p.key));
}

/** Problems of one filespace from failed actions (e.g. a mount), which its card shows with their fix. */
export function actionProblemsOf(list: readonly Problem[], filespace: string): Problem[] {
  return list.filter((p) => p.source === 'action' && p.filespace === filespace);
}
