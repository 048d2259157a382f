// A filespace's snapshots on its card, while it is mounted: date, label and size-unique (what
// deleting one would free), "Browse" (mounts it read-only beside the filespace and opens the
// folder in the desktop app, or names it in a browser), "Delete…" after a confirmation that
// says what is lost, and "Take a snapshot" on the computer that writes.

import { useCallback, useEffect, useState } from 'react';
import type { FilespaceSummary } from '../../electron/contract/app';
import type { SnapshotListDto } from '../../electron/contract/api';
import { formatBytes } from '../../electron/contract/format';
import { hostTransport } from './store';

export function SnapshotsPanel({ f }: { f: FilespaceSummary }) {
  const mounted = f.status.state === 'mounted';
  const writer = mounted && f.status.lease?.role === 'writer';
  const [list, setList] = useState<SnapshotListDto | null>(null);
  const [message, setMessage] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<string | null>(null);
  const [label, setLabel] = useState('');
  const [busy, setBusy] = useState(false);

  const run = useCallback(
    async (work: () => Promise<string | null>) => {
      const t = hostTransport();
      if (!t) return;
      setBusy(true);
      try {
        const said = await work();
        setList(await t.call('snapshot.list', { name: f.name }));
        setMessage(said);
      } catch (err) {
        setMessage((err as Error).message);
      } finally {
        setBusy(false);
      }
    },
    [f.name],
  );

  useEffect(() => {
    if (mounted) void run(async () => null);
  }, [mounted, run]);

  if (!mounted) return null;
  const t = hostTransport();
  const snapshots = [...(list?.snapshots ?? [])].reverse(); // newest first
  return (
    <section className="snapshots" data-testid="snapshots" aria-label="Snapshots">
      <h3>Snapshots</h3>
      {list && snapshots.length === 0 ? <p>No snapshots yet.</p> : null}
      {!list ? <p>Reading the snapshots…</p> : null}
      <ul>
        {snapshots.map((s) => (
          <li key={s.id} data-testid={`snapshot-${s.id}`}>
            <span className="snapshot-date">{new Date(s.createdAt).toLocaleString()}</span>{' '}
            <b className="snapshot-label">{s.label || (s.kind === 'manual' ? 'no label' : s.kind)}</b>{' '}
            <span className="snapshot-unique" title="Freed when this snapshot is deleted: data nothing else holds">
              {formatBytes(s.uniqueBytes)} only here
            </span>{' '}
            <button
              className="secondary"
              data-testid="snapshot-browse"
              disabled={busy}
              onClick={() =>
                void run(async () => {
                  const { dir } = await t!.call('snapshot.browse', { name: f.name, id: s.id });
                  if (t!.openFolder) await t!.openFolder(dir);
                  return `Snapshot of ${new Date(s.createdAt).toLocaleString()} is open read-only at ${dir}; copy files out of it to restore them.`;
                })
              }
            >
              Browse
            </button>
            {writer ? (
              <button className="secondary" data-testid="snapshot-delete" disabled={busy} onClick={() => setConfirming(s.id)}>
                Delete…
              </button>
            ) : null}
            {confirming === s.id ? (
              <div className="confirm" role="alertdialog" aria-label="Delete snapshot" data-testid="snapshot-delete-confirm">
                <p>
                  <b>Delete the snapshot of {new Date(s.createdAt).toLocaleString()}?</b> Its {formatBytes(s.uniqueBytes)} of data
                  that nothing else holds is gone for good once garbage collection runs.
                </p>
                <div className="actions">
                  <button
                    className="danger"
                    data-testid="snapshot-delete-yes"
                    onClick={() => {
                      setConfirming(null);
                      void run(async () => {
                        await t!.call('snapshot.delete', { name: f.name, id: s.id });
                        return `Deleted the snapshot of ${new Date(s.createdAt).toLocaleString()}.`;
                      });
                    }}
                  >
                    Delete it
                  </button>
                  <button className="secondary" onClick={() => setConfirming(null)}>
                    Keep it
                  </button>
                </div>
              </div>
            ) : null}
          </li>
        ))}
      </ul>
      {writer ? (
        <form
          className="row"
          onSubmit={(e) => {
            e.preventDefault();
            void run(async () => {
              const r = await t!.call('snapshot.create', { name: f.name, label: label.trim() });
              setLabel('');
              return `Took a snapshot: ${r.files} file${r.files === 1 ? '' : 's'}, ${formatBytes(r.bytes)}.`;
            });
          }}
        >
          <label className="field" htmlFor={`snapshot-label-${f.name}`}>
            <span>Label (optional)</span>
            <input
              id={`snapshot-label-${f.name}`}
              data-testid="snapshot-label"
              value={label}
              maxLength={100}
              onChange={(e) => setLabel(e.target.value)}
            />
          </label>
          <button type="submit" data-testid="snapshot-create" disabled={busy}>
            Take a snapshot
          </button>
        </form>
      ) : null}
      {message ? (
        <p className="notice" role="status" data-testid="snapshot-message">
          {message}
        </p>
      ) : null}
    </section>
  );
}
