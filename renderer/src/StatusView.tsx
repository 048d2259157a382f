// Per filespace: one headline (what it is doing, in words), the upload batch's progress, what
// waits to upload, who writes, throughput over time, cache use, and its problems with their fix.

import { useState } from 'react';
import type { FilespaceSummary } from '../../electron/contract/app';
import type { ErrorCode } from '../../electron/contract/errors';
import { formatBytes, formatRate } from '../../electron/contract/format';
import { countOf, followersWords, leaseWords, recentRate, statusHeadline } from '../../electron/contract/headline';
import { Chart } from './Chart';
import { actionProblemsOf, plainWords, type Problem } from './problems';
import { SecondMachinePanel, AsidePanel, FollowerPanel, isFollower } from './SecondMachine';
import { PinsPanel } from './Pins';
import { SnapshotsPanel } from './Snapshots';
import { ImportFolder } from './ImportFolder';
import {
  dismiss,
  hostTransport,
  mount,
  openFolder,
  retry,
  selectFilespaces,
  selectKeys,
  selectPaused,
  setPaused,
  show,
  showsDemoHint,
  startWizard,
  unmount,
  useApp,
  type Sample,
} from './store';

const EMPTY: Sample[] = [];

/** Failed mounts that a step elsewhere fixes (others offer Try again): new keys, or the settings. */
const FIXES: Partial<Record<ErrorCode, 'keys' | 'settings'>> = {
  NO_KEYS: 'keys',
  BAD_CREDENTIALS: 'keys',
  ACCESS_DENIED: 'keys',
  NO_PASSPHRASE: 'settings',
  WRONG_PASSPHRASE: 'settings',
  BAD_CACHE_DIR: 'settings',
  CACHE_NOT_EMPTY: 'settings',
  JOURNAL_DAMAGED: 'settings',
  SNAPSHOT_DAMAGED: 'settings',
};

function fixFor(code: ErrorCode | undefined, keysStored: boolean): { label: string; run: () => void } | undefined {
  const fix = code === undefined ? undefined : FIXES[code];
  if (fix === 'keys') return { label: 'Enter keys', run: () => startWizard(keysStored) };
  if (fix === 'settings') return { label: 'Open settings', run: () => show('settings') };
  return undefined;
}

function Details({ text }: { text: string }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <button className="link" aria-expanded={open} onClick={() => setOpen(!open)}>
        {open ? 'Hide details' : 'Details'}
      </button>
      {open ? <code className="details">{text}</code> : null}
    </>
  );
}

function ActionProblem({ p, keysStored }: { p: Problem; keysStored: boolean }) {
  const fix = fixFor(p.code, keysStored);
  return (
    <div className="error" role="alert" data-testid="card-problem">
      <p>
        {p.headline}
        {p.count > 1 ? ` (${p.count} times)` : ''} <Details text={p.detail} />
      </p>
      <div className="actions">
        {fix ? <button onClick={fix.run}>{fix.label}</button> : null}
        {p.retry ? (
          <button className={fix ? 'secondary' : ''} onClick={() => void retry(p)}>
            Try again
          </button>
        ) : null}
        <button className="secondary" onClick={() => dismiss(p)}>
          Dismiss
        </button>
      </div>
    </div>
  );
}

function Card({ f }: { f: FilespaceSummary }) {
  const s = f.status;
  const now = useApp((st) => st.now);
  const history = useApp((st) => st.history[f.name] ?? EMPTY);
  const batch = useApp((st) => st.batches[f.name]);
  const busyMessage = useApp((st) => st.unmountBusy[f.name]);
  const secondMachine = useApp((st) => st.secondMachine[f.name] !== undefined);
  const errors = useApp((st) => st.errors);
  const problems = actionProblemsOf(errors, f.name);
  const keysStored = useApp((st) => selectKeys(st)?.stored ?? false);
  const demoHint = useApp((st) => showsDemoHint(f, st.written));
  const mounted = s.state === 'mounted';
  const headline = statusHeadline(s, {
    rateBytesPerSec: recentRate(history, now),
    writing: batch !== undefined && batch.writingUntil > now,
  });
  const cachePct = s.cacheCapBytes > 0 ? Math.min(100, (s.cacheUsedBytes / s.cacheCapBytes) * 100) : 0;
  const busy = s.state === 'mounting' || s.state === 'unmounting';
  const shown = s.pendingFiles?.length ?? 0;
  const more = s.dirtyFiles - shown;
  return (
    <article className="card" data-testid={`filespace-${f.name}`} aria-labelledby={`title-${f.name}`}>
      <header>
        <h2 id={`title-${f.name}`}>{f.name}</h2>
        <span className={`badge ${s.state}`} data-testid="state">
          {s.state}
        </span>
        {mounted && s.readOnlyReason ? (
          <span className="badge readonly" data-testid="read-only">
            {isFollower(s) ? 'read-only · following' : 'read-only'}
          </span>
        ) : null}
      </header>
      <p className="where">
        {f.location} → {f.mountPoint}
      </p>
      {/* While another computer writes it and the user is choosing, the panel says what this card is. */}
      {secondMachine && s.state !== 'mounted' ? null : (
        <p className={`headline ${headline.tone}`} role="status" aria-live="polite" data-testid="sync-line">
          {headline.text}
        </p>
      )}
      {demoHint ? (
        <div className="demo-hint" data-testid="demo-hint">
          <p>
            <b>What next:</b> this filespace is empty. Files you put in it are encrypted and uploaded to a store on this computer,
            as they would be to your bucket.
          </p>
          <ol>
            <li>
              Open the folder{' '}
              {hostTransport()?.openFolder ? (
                <button className="link" onClick={() => void openFolder(f.mountPoint)}>
                  {f.mountPoint}
                </button>
              ) : (
                <code>{f.mountPoint}</code>
              )}
              .
            </li>
            <li>Drop or save a few files into it.</li>
            <li>Watch them upload here: the line above says what is left, then &quot;Up to date&quot;.</li>
          </ol>
        </div>
      ) : null}
      <FollowerPanel f={f} />
      <SecondMachinePanel f={f} />
      <AsidePanel f={f} />
      <SnapshotsPanel f={f} />
      <ImportFolder f={f} />
      {headline.kind === 'uploading' && batch && batch.totalBytes > 0 ? (
        <div className="progress-row">
          <div
            className="bar progress"
            role="progressbar"
            aria-label="Upload progress"
            aria-valuemin={0}
            aria-valuemax={batch.totalBytes}
            aria-valuenow={batch.doneBytes}
            aria-valuetext={`${formatBytes(batch.doneBytes)} of ${formatBytes(batch.totalBytes)} uploaded`}
          >
            <div style={{ width: `${(batch.doneBytes / batch.totalBytes) * 100}%` }} />
          </div>
          <span data-testid="progress">
            {formatBytes(batch.doneBytes)} of {formatBytes(batch.totalBytes)}
          </span>
        </div>
      ) : null}
      {problems.map((p) => (
        <ActionProblem key={p.key} p={p} keysStored={keysStored} />
      ))}
      {s.lastError ? (
        <div className="error" data-testid="last-error">
          Problem: {plainWords(s.lastError)} <Details text={s.lastError} />
        </div>
      ) : null}
      <dl>
        <dt>Waiting to upload</dt>
        <dd data-testid="pending">
          {countOf(s.dirtyFiles, 'file')}, {formatBytes(s.dirtyBytes)}
          {s.pendingMetaOps ? (
            <span className="muted" data-testid="pending-changes">
              {' '}
              and {countOf(s.pendingMetaOps, 'other change')} (new folders, renames, deletions, file sizes and dates)
            </span>
          ) : null}
          {shown > 0 ? (
            <ul className="pending-files" data-testid="pending-files">
              {s.pendingFiles!.map((p) => (
                <li key={p}>{p}</li>
              ))}
            </ul>
          ) : null}
          {shown > 0 && more > 0 ? (
            <p className="muted" data-testid="pending-more">
              …and {more.toLocaleString('en-US')} more
            </p>
          ) : null}
        </dd>
        {s.lease && mounted ? (
          <>
            <dt>Who writes</dt>
            <dd data-testid="lease">{leaseWords(s.lease, now)}</dd>
            {s.lease.role === 'writer' ? (
              <>
                <dt>Who reads along</dt>
                <dd data-testid="followers">{followersWords(s.lease, now)}</dd>
              </>
            ) : null}
          </>
        ) : null}
        <dt>Throughput</dt>
        <dd data-testid="throughput">
          up {formatRate(mounted ? s.uploadBytesPerSec : 0)}
          {s.uploadLimitBytesPerSec ? ` (limit ${formatRate(s.uploadLimitBytesPerSec)})` : ''}, down{' '}
          {formatRate(mounted ? s.downloadBytesPerSec : 0)}
        </dd>
        <dt>Cache</dt>
        <dd data-testid="cache">
          {mounted
            ? `${formatBytes(s.cacheUsedBytes)} of ${formatBytes(s.cacheCapBytes)}`
            : `${formatBytes(s.cacheUsedBytes)} on disk (limit ${formatBytes(s.cacheCapBytes)})`}
          {mounted ? (
            <span data-testid="hit-ratio">
              {' · '}
              {s.cacheReadBytes
                ? `${(s.cacheHitRatio * 100).toFixed(0)}% of ${formatBytes(s.cacheReadBytes)} read came from the cache`
                : 'nothing read yet'}
            </span>
          ) : null}
          <div className="bar">
            <div style={{ width: `${cachePct}%` }} />
          </div>
        </dd>
        {mounted && s.foldersLoading ? (
          <>
            <dt>Folders</dt>
            <dd data-testid="folders-loading">
              {s.foldersLoading} still loading from the bucket (each one loads at once when it is opened)
            </dd>
          </>
        ) : null}
        {s.readOnlyReason ? (
          <>
            <dt>Read-only</dt>
            <dd>{s.readOnlyReason}</dd>
          </>
        ) : null}
      </dl>
      {history.length > 0 ? <Chart samples={history} now={now} /> : null}
      <PinsPanel f={f} />
      {busyMessage && mounted ? (
        <div className="error" role="alert" data-testid="unmount-busy">
          <p>Cannot unmount: {busyMessage}.</p>
          <button className="secondary" onClick={() => void unmount(f.name, true)}>
            Detach anyway (files stay open until closed)
          </button>
        </div>
      ) : null}
      <div className="actions">
        {mounted ? (
          <button disabled={busy} onClick={() => void unmount(f.name)}>
            Unmount
          </button>
        ) : (
          <button disabled={busy || s.state !== 'unmounted'} onClick={() => void mount(f.name)}>
            Mount
          </button>
        )}
        {mounted && hostTransport()?.openFolder ? (
          <button className="secondary" onClick={() => void openFolder(f.mountPoint)}>
            Open folder
          </button>
        ) : null}
      </div>
    </article>
  );
}

function RecentProblem({ e }: { e: Problem }) {
  return (
    <li data-testid="recent-error">
      <span className="when">{new Date(e.at).toLocaleTimeString()}</span> {e.filespace ? <b>{e.filespace}: </b> : null}
      {e.headline}
      {e.count > 1 ? <span data-testid="error-count"> ({e.count} times)</span> : null} <Details text={e.detail} />
      {e.retry ? (
        <button className="secondary small" onClick={() => void retry(e)}>
          Retry
        </button>
      ) : null}
    </li>
  );
}

export function StatusView() {
  const filespaces = useApp(selectFilespaces);
  const paused = useApp(selectPaused);
  const errors = useApp((s) => s.errors);
  return (
    <div className="status-view">
      <div className="toolbar">
        {filespaces.length > 0 ? (
          <button className="secondary" data-testid="pause" onClick={() => void setPaused(!paused)}>
            {paused ? 'Resume uploads' : 'Pause uploads'}
          </button>
        ) : null}
        <button className="secondary" onClick={() => startWizard()}>
          Add a filespace
        </button>
      </div>
      {filespaces.length === 0 ? (
        <p>No filespace is linked on this computer yet.</p>
      ) : (
        <div className="cards">
          {filespaces.map((f) => (
            <Card key={f.name} f={f} />
          ))}
        </div>
      )}
      {errors.length > 0 ? (
        <section className="errors" data-testid="recent-errors">
          <h3>Recent problems</h3>
          <ul>
            {errors
              .slice()
              .reverse()
              .map((e) => (
                <RecentProblem key={e.key} e={e} />
              ))}
          </ul>
        </section>
      ) : null}
    </div>
  );
}
