// Per filespace: mount state, pending uploads (and which files), lease, throughput chart, cache use, errors.

import type { FilespaceSummary } from '../../electron/contract/app';
import { formatBytes, formatRate, leaseLine, syncLine } from '../../electron/contract/format';
import { SecondMachinePanel, AsidePanel, FollowerPanel, isFollower } from './SecondMachine';
import {
  hostTransport,
  mount,
  openFolder,
  retry,
  selectFilespaces,
  selectPaused,
  setPaused,
  startWizard,
  unmount,
  useApp,
  type Sample,
} from './store';

const EMPTY: Sample[] = [];

/** Throughput over the last minutes (one to five, as much as has been seen). Samples arrive only
 *  when a rate changes, so each holds until the next one (a step line), the last until now. */
function Chart({ samples }: { samples: Sample[] }) {
  const w = 300;
  const h = 60;
  const now = Date.now();
  const span = Math.min(5 * 60_000, Math.max(60_000, now - (samples[0]?.t ?? now)));
  const max = Math.max(1, ...samples.map((s) => Math.max(s.up, s.down)));
  const x = (t: number) => Math.max(0, ((t - (now - span)) / span) * w);
  const y = (v: number) => h - (v / max) * (h - 4) - 2;
  const line = (pick: (s: Sample) => number) =>
    samples.map((s, i) => `${x(s.t)},${y(pick(s))} ${x(samples[i + 1]?.t ?? now)},${y(pick(s))}`).join(' ');
  return (
    <svg
      className="chart"
      viewBox={`0 0 ${w} ${h}`}
      preserveAspectRatio="none"
      role="img"
      aria-label="upload (blue) and download (green) throughput over the last minutes"
    >
      <polyline className="up" points={line((s) => s.up)} />
      <polyline className="down" points={line((s) => s.down)} />
    </svg>
  );
}

function Card({ f }: { f: FilespaceSummary }) {
  const s = f.status;
  const history = useApp((st) => st.history[f.name] ?? EMPTY);
  const busyMessage = useApp((st) => st.unmountBusy[f.name]);
  const secondMachine = useApp((st) => st.secondMachine[f.name] !== undefined);
  const cachePct = s.cacheCapBytes > 0 ? Math.min(100, (s.cacheUsedBytes / s.cacheCapBytes) * 100) : 0;
  const busy = s.state === 'mounting' || s.state === 'unmounting';
  return (
    <article className="card" data-testid={`filespace-${f.name}`}>
      <header>
        <h2>{f.name}</h2>
        <span className={`badge ${s.state}`} data-testid="state">
          {s.state}
        </span>
        {s.offline ? <span className="badge offline">offline</span> : null}
        {s.state === 'mounted' && s.readOnlyReason ? (
          <span className="badge readonly" data-testid="read-only">
            {isFollower(s) ? 'read-only · following' : 'read-only'}
          </span>
        ) : null}
        {s.state === 'mounted' && s.writesWaiting ? (
          <span className="badge waiting" title={s.writesWaiting.message}>
            {s.writesWaiting.refusing ? 'writes refused' : 'writes waiting'}
          </span>
        ) : null}
      </header>
      <p className="where">
        {f.location} → {f.mountPoint}
      </p>
      {/* While another computer writes it and the user is choosing, the panel says what this card is. */}
      {secondMachine && s.state !== 'mounted' ? null : (
        <p className="sync" data-testid="sync-line">
          {syncLine(s)}
        </p>
      )}
      <FollowerPanel f={f} />
      <SecondMachinePanel f={f} />
      <AsidePanel f={f} />
      <dl>
        <dt>Pending uploads</dt>
        <dd data-testid="pending">
          {s.dirtyFiles} file{s.dirtyFiles === 1 ? '' : 's'}, {formatBytes(s.dirtyBytes)}
          {s.pendingMetaOps ? ` (+${s.pendingMetaOps} changes)` : ''}
          {s.pendingFiles && s.pendingFiles.length > 0 ? (
            <ul className="pending-files" data-testid="pending-files">
              {s.pendingFiles.map((p) => (
                <li key={p}>{p}</li>
              ))}
            </ul>
          ) : null}
        </dd>
        {s.lease && s.state === 'mounted' ? (
          <>
            <dt>Lease</dt>
            <dd data-testid="lease">{leaseLine(s.lease)}</dd>
          </>
        ) : null}
        <dt>Throughput</dt>
        <dd data-testid="throughput">
          up {formatRate(s.uploadBytesPerSec)}
          {s.uploadLimitBytesPerSec ? ` (limit ${formatRate(s.uploadLimitBytesPerSec)})` : ''}, down{' '}
          {formatRate(s.downloadBytesPerSec)}
        </dd>
        <dt>Cache</dt>
        <dd data-testid="cache">
          {formatBytes(s.cacheUsedBytes)} of {formatBytes(s.cacheCapBytes)} · hit ratio {(s.cacheHitRatio * 100).toFixed(0)}%
          <div className="bar">
            <div style={{ width: `${cachePct}%` }} />
          </div>
        </dd>
        {s.readOnlyReason ? (
          <>
            <dt>Read-only</dt>
            <dd>{s.readOnlyReason}</dd>
          </>
        ) : null}
        {s.lastError ? (
          <>
            <dt>Last error</dt>
            <dd className="error" data-testid="last-error">
              {s.lastError}
            </dd>
          </>
        ) : null}
      </dl>
      {s.state === 'mounted' ? <Chart samples={history} /> : null}
      {busyMessage && s.state === 'mounted' ? (
        <div className="error" role="alert" data-testid="unmount-busy">
          <p>Cannot unmount: {busyMessage}.</p>
          <button className="secondary" onClick={() => void unmount(f.name, true)}>
            Detach anyway (files stay open until closed)
          </button>
        </div>
      ) : null}
      <div className="actions">
        {s.state === 'mounted' ? (
          <button disabled={busy} onClick={() => void unmount(f.name)}>
            Unmount
          </button>
        ) : (
          <button disabled={busy || s.state !== 'unmounted'} onClick={() => void mount(f.name)}>
            Mount
          </button>
        )}
        {s.state === 'mounted' && hostTransport()?.openFolder ? (
          <button className="secondary" onClick={() => void openFolder(f.mountPoint)}>
            Open folder
          </button>
        ) : null}
      </div>
    </article>
  );
}

export function StatusView() {
  const filespaces = useApp(selectFilespaces);
  const paused = useApp(selectPaused);
  const errors = useApp((s) => s.errors);
  return (
    <div className="status-view">
      <div className="toolbar">
        <button className="secondary" data-testid="pause" onClick={() => void setPaused(!paused)}>
          {paused ? 'Resume uploads' : 'Pause uploads'}
        </button>
        <button className="secondary" onClick={() => startWizard()}>
          Add a filespace
        </button>
      </div>
      {filespaces.length === 0 ? (
        <p>No filespace is linked on this computer yet.</p>
      ) : (
        filespaces.map((f) => <Card key={f.name} f={f} />)
      )}
      {errors.length > 0 ? (
        <section className="errors" data-testid="recent-errors">
          <h3>Recent errors</h3>
          <ul>
            {errors
              .slice()
              .reverse()
              .map((e) => (
                <li key={`${e.at}-${e.message}`}>
                  {new Date(e.at).toLocaleTimeString()} — {e.message}
                  {e.retry ? (
                    <button className="secondary small" onClick={() => void retry(e)}>
                      Retry
                    </button>
                  ) : null}
                </li>
              ))}
          </ul>
        </section>
      ) : null}
    </div>
  );
}
