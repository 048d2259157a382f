/**
 * The card's pins: files and folders this computer keeps in its cache for use offline (the
 * command's `filespace pin`), each with how much of it is here ("Photos: 12.4 of 18.0 GiB
 * local"), a way to add one (a path typed into the box, or a folder chosen in the Electron
 * dialog) and to remove one. The list comes from the status; a refusal (a pin that does not
 * fit, a path that does not exist) is said beside the box in the host's words.
 */

import { useState } from 'react';
import type { FilespaceSummary } from '../../electron/contract/app';
import { formatBytes } from '../../electron/contract/format';
import { hostTransport } from './store';

function nameOf(p: string): string {
  return p === '/' ? 'the whole filespace' : p.replace(/^\//, '');
}

/** "12.4 of 18.0 GiB local": both in the unit of the larger. */
export function pinProgressText(localBytes: number, totalBytes: number): string {
  const total = formatBytes(totalBytes);
  const unit = total.split(' ')[1] ?? 'B';
  const scale: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };
  const div = scale[unit] ?? 1;
  const local = unit === 'B' ? String(localBytes) : (localBytes / div).toFixed(1);
  return `${local} of ${total} local`;
}

export function PinsPanel({ f }: { f: FilespaceSummary }) {
  const pins = f.status.pins ?? [];
  const [path, setPath] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const t = hostTransport();
  const run = async (route: 'pins.add' | 'pins.remove', p: string) => {
    if (!t) return;
    setBusy(true);
    try {
      await t.call(route, { name: f.name, path: p });
      setMessage(null);
      if (route === 'pins.add') setPath('');
    } catch (err) {
      setMessage((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const pick = t?.pickPin;
  return (
    <section className="pins" data-testid="pins" aria-label="Kept on this computer">
      <h3>Kept on this computer for use offline</h3>
      {pins.length === 0 ? (
        <p className="muted" data-testid="pins-none">
          Nothing is pinned. Files and folders pinned here stay in the cache, so they open without a connection.
        </p>
      ) : (
        <ul>
          {pins.map((p) => (
            <li key={p.path} data-testid="pin">
              <span data-testid="pin-line">
                {nameOf(p.path)}: {pinProgressText(p.localBytes, p.totalBytes)}
              </span>{' '}
              <button
                className="link"
                disabled={busy}
                aria-label={`Remove ${nameOf(p.path)}`}
                onClick={() => void run('pins.remove', p.path)}
              >
                Remove
              </button>
            </li>
          ))}
        </ul>
      )}
      {f.status.pinsProblem ? (
        <p className="muted" data-testid="pins-problem">
          Not all downloaded yet: {f.status.pinsProblem}
        </p>
      ) : null}
      <form
        className="row"
        onSubmit={(e) => {
          e.preventDefault();
          void run('pins.add', path.trim());
        }}
      >
        <label className="field" htmlFor={`pin-path-${f.name}`}>
          <span>File or folder to keep (a path in {f.mountPoint}, or in the filespace, like /Photos)</span>
          <input
            id={`pin-path-${f.name}`}
            data-testid="pin-path"
            value={path}
            onChange={(e) => setPath(e.target.value)}
            spellCheck={false}
            aria-describedby={message ? `pin-msg-${f.name}` : undefined}
          />
        </label>
        <button type="submit" data-testid="pin-add" disabled={busy || path.trim().length === 0}>
          Keep on this computer
        </button>
        {pick ? (
          <button
            type="button"
            className="secondary"
            data-testid="pin-pick"
            disabled={busy}
            onClick={() => void pick(f.name).then((picked) => (picked ? run('pins.add', picked) : undefined))}
          >
            Choose a folder…
          </button>
        ) : null}
      </form>
      {message ? (
        <p className="error" role="alert" id={`pin-msg-${f.name}`} data-testid="pin-error">
          {message}
        </p>
      ) : null}
    </section>
  );
}
