/**
 * "Import a folder…" on a filespace's card: a folder picked with the native dialog (Electron)
 * or typed as a full path (browser), imported by the app host into the filespace's root under
 * its own name (host/transfer.ts, in the mount). Its progress and summary come with the status
 * feed (`status.transfer`), in the same words as the command's (contract/transferFormat.ts).
 * Shown while this computer writes the filespace.
 */

import { useState } from 'react';
import type { FilespaceSummary } from '../../electron/contract/app';
import { formatBytes } from '../../electron/contract/format';
import { skippedCount, transferLine } from '../../electron/contract/transferFormat';
import { hostTransport } from './store';

const RUNNING = ['scanning', 'copying', 'finishing', 'uploading'];

export function ImportFolder({ f }: { f: FilespaceSummary }) {
  const s = f.status;
  const [typing, setTyping] = useState(false);
  const [source, setSource] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  if (s.state !== 'mounted' || s.readOnlyReason) return null;
  const job = s.transfer?.direction === 'import' ? s.transfer : null;
  const running = job !== null && RUNNING.includes(job.progress.phase);
  const transport = hostTransport();

  const start = async (folder: string) => {
    setMessage(null);
    try {
      await transport?.call('transfer.import', { name: f.name, source: folder.trim() });
      setTyping(false);
    } catch (err) {
      setMessage((err as Error).message);
    }
  };
  const choose = () => {
    const pick = transport?.pickFolder;
    if (pick) void pick().then((picked) => (picked ? start(picked) : undefined));
    else setTyping(true);
  };
  const p = job?.progress;

  return (
    <div className="import" data-testid="import">
      {running && p ? (
        <div className="progress-row">
          <div
            className="bar progress"
            role="progressbar"
            aria-label="Import progress"
            aria-valuemin={0}
            aria-valuemax={Math.max(1, p.bytesTotal)}
            aria-valuenow={p.bytesDone}
            aria-valuetext={`${formatBytes(p.bytesDone)} of ${formatBytes(p.bytesTotal)} imported`}
          >
            <div style={{ width: `${p.bytesTotal > 0 ? (p.bytesDone / p.bytesTotal) * 100 : 0}%` }} />
          </div>
          <span data-testid="import-progress">
            Importing {job.from}: {transferLine(p, Date.now())}
          </span>
          <button
            className="secondary"
            data-testid="import-cancel"
            onClick={() => void transport?.call('transfer.cancel', { name: f.name })}
          >
            Stop
          </button>
        </div>
      ) : (
        <div className="actions">
          <button className="secondary" data-testid="import-folder" onClick={choose}>
            Import a folder…
          </button>
        </div>
      )}
      {job && p && !running ? (
        <p data-testid="import-summary" className={p.phase === 'done' && p.failed.length === 0 ? 'ok' : 'error'}>
          {p.phase === 'done' ? 'Imported' : `Import ${p.phase}:`} {job.from} → {job.to}: {p.copied} copied and verified (
          {formatBytes(p.bytesCopied)}), {p.alreadyThere} already there, {skippedCount(p)} skipped
          {Object.keys(p.skippedByReason).length > 0
            ? ` (${Object.entries(p.skippedByReason)
                .map(([r, n]) => `${n} ${r}`)
                .join(', ')})`
            : ''}
          {p.failed.length > 0 ? `, ${p.failed.length} failed: ${p.failed.map((x) => `${x.path}: ${x.error}`).join('; ')}` : ''}
          {p.error ? ` — ${p.error}` : ''}
        </p>
      ) : null}
      {typing && !running ? (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void start(source);
          }}
        >
          <label className="field" htmlFor={`import-source-${f.name}`}>
            <span>Folder to import (a full path); it becomes a folder of that name in {f.name}</span>
            <input
              id={`import-source-${f.name}`}
              data-testid="import-source"
              value={source}
              onChange={(e) => setSource(e.target.value)}
              spellCheck={false}
            />
          </label>
          <button type="submit" data-testid="import-start">
            Import
          </button>
        </form>
      ) : null}
      {message ? (
        <p className="error" role="alert" data-testid="import-error">
          {message}
        </p>
      ) : null}
    </div>
  );
}
