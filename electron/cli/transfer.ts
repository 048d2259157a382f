/**
 * `filespace import` and `filespace export`: parses the ends (a folder, or an s3://bucket/prefix
 * URL with --endpoint/--region/--path-style for S3-compatible stores), hands the job to the host
 * library (host/transfer.ts, which runs it in the mount or on the unmounted filespace) and
 * prints its progress: one line rewritten in place on a terminal, a plain line every 10 s
 * otherwise, then the summary. Ctrl-C cancels (a re-run resumes).
 */

import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { TransferJobDto, TransferOutside, TransferRequest } from '../contract/api';
import { transferLine, transferSummary } from '../contract/transferFormat';
import { createWriteStream } from 'node:fs';
import { homes, loadConfig, logPath } from '../host/config';
import { HostError } from '../host/errors';
import { runTransfer } from '../host/transfer';

const PLAIN_EVERY_MS = 10_000;

/** A command line's outside end: a local folder (made absolute) or an S3 location. */
export function parseOutside(arg: string, flags: { endpoint?: string; region?: string; pathStyle?: boolean }): TransferOutside {
  if (/^s3:/i.test(arg)) {
    const m = /^s3:\/\/([^/]*)\/?(.*)$/i.exec(arg);
    const bucket = m?.[1] ?? '';
    if (!m || bucket === '')
      throw new HostError(`"${arg}" names no bucket: write s3://BUCKET or s3://BUCKET/PREFIX`, 'BAD_INPUT');
    if (flags.endpoint !== undefined) {
      try {
        const u = new URL(flags.endpoint);
        if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error();
      } catch {
        throw new HostError(`--endpoint "${flags.endpoint}" is not an http(s) URL`, 'BAD_ENDPOINT');
      }
    }
    return {
      kind: 's3',
      bucket,
      prefix: m[2]!.replace(/^\/+|\/+$/g, ''),
      endpoint: flags.endpoint,
      region: flags.region ?? process.env.AWS_REGION ?? process.env.AWS_DEFAULT_REGION,
      pathStyle: flags.pathStyle,
    };
  }
  if (flags.endpoint !== undefined || flags.region !== undefined || flags.pathStyle)
    throw new HostError('--endpoint, --region and --path-style go with an s3:// URL', 'BAD_INPUT');
  return { kind: 'local', path: path.resolve(arg) };
}

export async function cmdTransfer(direction: 'import' | 'export', args: string[], usage: (msg: string) => Error): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { endpoint: { type: 'string' }, region: { type: 'string' }, 'path-style': { type: 'boolean' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw usage((err as Error).message);
  }
  const { values, positionals } = parsed;
  const [name, a, b, extra] = positionals;
  if (extra !== undefined) throw usage(`unexpected argument "${extra}"`);
  if (name === undefined || a === undefined || (direction === 'export' && b === undefined))
    throw usage(direction === 'import' ? 'import takes NAME SOURCE [DEST]' : 'export takes NAME PATH DEST');
  const flags = { endpoint: values.endpoint, region: values.region, pathStyle: values['path-style'] };
  const h = homes();
  const cfg = await loadConfig(h, name);
  const req: TransferRequest =
    direction === 'import'
      ? { direction, outside: parseOutside(a, flags), inside: b ?? '/' }
      : { direction, outside: parseOutside(b!, flags), inside: a };

  const tty = process.stderr.isTTY === true;
  let lastPlain = 0;
  const abort = new AbortController();
  const onSigint = () => {
    process.stderr.write(`\ncancelling the ${direction}; run the same command again to resume\n`);
    abort.abort();
  };
  process.once('SIGINT', onSigint);
  const show = (job: TransferJobDto) => {
    const now = Date.now();
    const line = `${direction}: ${transferLine(job.progress, now)}`;
    if (tty) process.stderr.write(`\r${line}\u001b[K`);
    else if (now - lastPlain >= PLAIN_EVERY_MS) {
      lastPlain = now;
      process.stderr.write(`${line}\n`);
    }
  };
  // What the engine says while it runs here goes to the filespace's log, not over the progress line.
  const logFile = createWriteStream(logPath(h, cfg.name), { flags: 'a', mode: 0o600 });
  logFile.on('error', () => undefined);
  const log = (m: string) => logFile.write(`${new Date().toISOString()} ${m}\n`);
  let job: TransferJobDto;
  try {
    job = await runTransfer(h, cfg, req, { progress: show, log, signal: abort.signal });
  } finally {
    logFile.end();
    process.removeListener('SIGINT', onSigint);
    if (tty) process.stderr.write('\r\u001b[K');
  }
  for (const line of transferSummary(job, Date.now())) console.log(line);
  const p = job.progress;
  if (p.phase !== 'done' || p.failed.length > 0) {
    const why = p.error ?? (p.failed.length > 0 ? `${p.failed.length} file(s) failed` : `it was ${p.phase}`);
    throw new HostError(`the ${direction} did not finish: ${why}; run the same command again to resume`, 'TRANSFER_FAILED');
  }
}
