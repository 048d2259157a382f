// Several computers on one filespace, on its card: who writes it when a mount was refused (open
// read-only here, or take over after a confirmation that says what that means), a following
// card's lag and its way to writing, and the changes set aside after a takeover (save a copy,
// or discard after a confirmation listing what is lost).

import { useState } from 'react';
import type { FilespaceSummary } from '../../electron/contract/app';
import type { StatusDto } from '../../electron/contract/api';
import { formatBytes } from '../../electron/contract/format';
import {
  askDiscardAside,
  askSaveAside,
  askTakeover,
  discardAside,
  dismissSecondMachine,
  hostTransport,
  mountAs,
  saveAside,
  useApp,
} from './store';

export function isFollower(s: StatusDto): boolean {
  return s.state === 'mounted' && s.lease?.role === 'follower';
}

/** "12 s", "4 min", "3 h": how long ago, in words. */
function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 48 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

/** The computer name in a lease holder line ("laptop (process 12, machine ab12cd34)" -> "laptop"). */
function computerOf(holder: string): string {
  return holder.replace(/ \(process .*\)$/, '');
}

function TakeoverConfirm({ name, computer }: { name: string; computer: string }) {
  return (
    <div className="confirm" role="alertdialog" aria-label="Take over" data-testid="takeover-confirm">
      <p>
        <b>Take over only if {computer} is off or gone.</b> This computer becomes the one that writes "{name}"; {computer} stops
        writing at once. Its changes not yet uploaded stay on it and can be recovered there (they are set aside the next time it
        opens this filespace).
      </p>
      <div className="actions">
        <button className="danger" data-testid="takeover-yes" onClick={() => void mountAs(name, 'write', true)}>
          Take over now
        </button>
        <button className="secondary" onClick={() => askTakeover(name, false)}>
          Cancel
        </button>
      </div>
    </div>
  );
}

/** An unmounted card whose mount was refused because another computer writes the filespace. */
export function SecondMachinePanel({ f }: { f: FilespaceSummary }) {
  const sm = useApp((st) => st.secondMachine[f.name]);
  if (!sm || f.status.state === 'mounted') return null;
  const w = sm.writer;
  const now = Date.now();
  const computer = w ? w.computer : 'another computer';
  return (
    <div className="second-machine" data-testid="second-machine">
      {w ? (
        <p data-testid="writer">
          <b>{w.computer}</b> {w.live ? 'is writing this filespace' : 'was writing this filespace'} since{' '}
          {new Date(w.since).toLocaleString()}; last heard from {span(now - w.lastHeard)} ago
          {w.live ? '.' : ' (it stopped renewing its claim: taking over is safe if it is gone).'}
        </p>
      ) : (
        <p data-testid="writer">Another computer is writing this filespace.</p>
      )}
      <p>Only one computer writes at a time. Here you can follow it read-only (new files appear within seconds), or take over.</p>
      <div className="actions">
        <button data-testid="open-read-only" onClick={() => void mountAs(f.name, 'read', false)}>
          Open read-only here
        </button>
        <button className="secondary" data-testid="take-over" onClick={() => askTakeover(f.name, true)}>
          Take over…
        </button>
        <button className="secondary" onClick={() => dismissSecondMachine(f.name)}>
          Not now
        </button>
      </div>
      {sm.confirmTakeover ? <TakeoverConfirm name={f.name} computer={computer} /> : null}
    </div>
  );
}

/** A following card: whom it follows, how far behind, and the ways to writing. */
export function FollowerPanel({ f }: { f: FilespaceSummary }) {
  const s = f.status;
  const asked = useApp((st) => st.takeoverAsked[f.name] === true);
  if (!isFollower(s) || !s.lease) return null;
  const holder = s.lease.holder;
  const lag = s.lease.followerLagMs;
  return (
    <div className="follower" data-testid="follower">
      <p>
        <b>Read-only</b>:{' '}
        {holder ? (
          <>
            following <b>{computerOf(holder)}</b>, which writes it;{' '}
          </>
        ) : (
          <>nobody writes it now; </>
        )}
        {lag === null ? 'not following for now (see below)' : `at most ${span(lag)} behind`}.
      </p>
      <div className="actions">
        {holder ? (
          <button className="secondary" data-testid="take-over" onClick={() => askTakeover(f.name, true)}>
            Take over…
          </button>
        ) : (
          <button data-testid="start-writing" onClick={() => void mountAs(f.name, 'write', false)}>
            Start writing here
          </button>
        )}
      </div>
      {asked && holder ? <TakeoverConfirm name={f.name} computer={computerOf(holder)} /> : null}
    </div>
  );
}

/** Changes set aside after another computer took over: save a copy, or discard them. */
export function AsidePanel({ f }: { f: FilespaceSummary }) {
  const sets = f.status.aside ?? [];
  const ui = useApp((st) => st.aside[f.name]);
  const [dir, setDir] = useState('');
  if (sets.length === 0 && !ui?.message) return null;
  const pick = hostTransport()?.pickFolder;
  return (
    <div className="aside" data-testid="aside">
      {sets.map((a) => (
        <div key={a.id} className="aside-set" data-testid={`aside-${a.id}`}>
          <p>
            <b>
              {a.files} file{a.files === 1 ? '' : 's'} set aside
            </b>{' '}
            on {new Date(a.createdAt).toLocaleString()}: changes made here that were not uploaded when another computer took over.
            They are not in the filespace; save a copy to compare and copy back what you need.
          </p>
          <div className="actions">
            <button
              className="secondary"
              data-testid="aside-save"
              onClick={() =>
                pick
                  ? void pick().then((picked) => (picked ? saveAside(f.name, a.id, picked) : undefined))
                  : askSaveAside(f.name, a.id)
              }
            >
              Save a copy to…
            </button>
            <button className="secondary" data-testid="aside-discard" onClick={() => void askDiscardAside(f.name, a.id)}>
              Discard…
            </button>
          </div>
          {ui?.saving === a.id ? (
            <form
              className="row"
              onSubmit={(e) => {
                e.preventDefault();
                void saveAside(f.name, a.id, dir);
              }}
            >
              <label className="field" htmlFor={`aside-dir-${a.id}`}>
                <span>Save into this folder (new or empty; a full path)</span>
                <input id={`aside-dir-${a.id}`} value={dir} onChange={(e) => setDir(e.target.value)} spellCheck={false} />
              </label>
              <button type="submit" data-testid="aside-save-go" disabled={dir.trim().length === 0}>
                Save
              </button>
            </form>
          ) : null}
          {ui?.discarding === a.id ? (
            <div className="confirm" role="alertdialog" aria-label="Discard" data-testid="discard-confirm">
              <p>
                <b>These changes will be lost for good</b> (they exist nowhere else):
              </p>
              <ul>
                {(ui.sets?.find((x) => x.id === a.id)?.files ?? []).map((file) => (
                  <li key={file.path}>
                    {file.path}
                    {file.links?.length ? `, also named ${file.links.join(', ')}` : ''} ({formatBytes(file.size)})
                    {file.incomplete ? ' — incomplete' : ''}
                  </li>
                ))}
                {(ui.sets?.find((x) => x.id === a.id)?.removed ?? []).map((p) => (
                  <li key={`removed:${p}`}>{p} (deleted here)</li>
                ))}
              </ul>
              <div className="actions">
                <button className="danger" data-testid="discard-yes" onClick={() => void discardAside(f.name, a.id)}>
                  Discard them
                </button>
                <button className="secondary" onClick={() => void askDiscardAside(f.name, null)}>
                  Keep them
                </button>
              </div>
            </div>
          ) : null}
        </div>
      ))}
      {ui?.message ? (
        <p className="notice" role="status" data-testid="aside-message">
          {ui.message}
        </p>
      ) : null}
    </div>
  );
}
