// Per-machine settings of one filespace (applied live when mounted), the global pause, the keys.

import { useEffect, useState } from 'react';
import { formatBytes, formatRate } from '../../electron/contract/format';
import {
  changeAppSettings,
  changeSettings,
  forgetKeys,
  moveCache,
  loadSettings,
  selectFilespaces,
  selectKeys,
  selectPaused,
  setPaused,
  startWizard,
  unlink,
  useApp,
} from './store';

const KiB = 1024;
const MiB = 1024 * KiB;

function NumberSetting(props: {
  id: string;
  label: string;
  value: number;
  min: number;
  max: number;
  onSave: (v: number) => void;
}) {
  const [v, setV] = useState(String(props.value));
  useEffect(() => setV(String(props.value)), [props.value]);
  return (
    <form
      className="row"
      onSubmit={(e) => {
        e.preventDefault();
        props.onSave(Number(v));
      }}
    >
      <label className="field" htmlFor={props.id}>
        <span>{props.label}</span>
        <input id={props.id} type="number" min={props.min} max={props.max} value={v} onChange={(e) => setV(e.target.value)} />
      </label>
      <button type="submit" className="secondary">
        Apply
      </button>
    </form>
  );
}

/** Upload bandwidth limit in KiB/s; empty or 0 means no limit. */
function UploadLimitSetting(props: { value: number }) {
  const shown = (v: number) => (v > 0 ? String(Math.round(v / 1024)) : '');
  const [v, setV] = useState(shown(props.value));
  useEffect(() => setV(shown(props.value)), [props.value]);
  return (
    <form
      className="row"
      onSubmit={(e) => {
        e.preventDefault();
        void changeSettings('Upload bandwidth limit', { uploadLimitBytesPerSec: Math.round(Number(v.trim() || '0') * KiB) });
      }}
    >
      <label className="field" htmlFor="uploadLimit">
        <span>
          Upload bandwidth limit, KiB/s (empty: no limit)
          {props.value > 0 ? (
            <>
              {' '}
              — now <b data-testid="settings-upload-limit">{formatRate(props.value)}</b>
            </>
          ) : (
            <>
              {' '}
              — now <b data-testid="settings-upload-limit">no limit</b>
            </>
          )}
        </span>
        <input id="uploadLimit" type="number" min={0} placeholder="no limit" value={v} onChange={(e) => setV(e.target.value)} />
      </label>
      <button type="submit" className="secondary">
        Apply
      </button>
    </form>
  );
}

export function SettingsView() {
  const filespaces = useApp(selectFilespaces);
  const keys = useApp(selectKeys);
  const paused = useApp(selectPaused);
  const selected = useApp((s) => s.selected);
  const machine = useApp((s) => s.machine);
  const appSettings = useApp((s) => s.appSettings);
  const settingsMessage = useApp((s) => s.settingsMessage);
  const settingsError = useApp((s) => s.settingsError);
  const mountsAtStart = machine !== null && (appSettings?.mountAtStart.includes(machine.name) ?? false);
  const [capMiB, setCapMiB] = useState(0);
  const [discard, setDiscard] = useState(false);
  const [cacheDir, setCacheDir] = useState('');
  useEffect(() => setCacheDir(machine?.cacheDir ?? ''), [machine]);
  const mounted = filespaces.find((f) => f.name === selected)?.status.state !== 'unmounted';
  useEffect(() => setCapMiB(machine ? Math.round(machine.cacheCapBytes / MiB) : 0), [machine]);
  const maxMiB = machine ? Math.max(16, Math.floor((machine.cacheDiskFreeBytes + machine.cacheCapBytes) / MiB)) : 16;
  return (
    <div className="settings-view">
      <label className="field" htmlFor="settingsFor">
        <span>Filespace</span>
        <select id="settingsFor" value={selected ?? ''} onChange={(e) => void loadSettings(e.target.value || null)}>
          <option value="">(choose)</option>
          {filespaces.map((f) => (
            <option key={f.name} value={f.name}>
              {f.name}
            </option>
          ))}
        </select>
      </label>
      {machine ? (
        <section data-testid="machine-settings">
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void changeSettings('Cache cap', { cacheCapBytes: capMiB * MiB });
            }}
          >
            <label className="field" htmlFor="settingsCacheCap">
              <span>
                Cache cap: <b data-testid="settings-cache-cap">{formatBytes(capMiB * MiB)}</b> (cache in {machine.cacheDir},{' '}
                {formatBytes(machine.cacheDiskFreeBytes)} free)
              </span>
              <input
                id="settingsCacheCap"
                type="range"
                min={16}
                max={maxMiB}
                value={capMiB}
                onChange={(e) => setCapMiB(Number(e.target.value))}
              />
            </label>
            <button type="submit">Apply cache cap</button>
          </form>
          <NumberSetting
            id="uploadConcurrency"
            label="Parallel uploads"
            value={machine.uploadConcurrency}
            min={1}
            max={64}
            onSave={(v) => void changeSettings('Parallel uploads', { uploadConcurrency: v })}
          />
          <UploadLimitSetting value={machine.uploadLimitBytesPerSec} />
          <NumberSetting
            id="prefetch"
            label="Read-ahead (chunks; 0 turns prefetch off)"
            value={machine.prefetchMaxChunks}
            min={0}
            max={64}
            onSave={(v) => void changeSettings('Read-ahead', { prefetchMaxChunks: v })}
          />
          <form
            className="row"
            onSubmit={(e) => {
              e.preventDefault();
              void moveCache(cacheDir);
            }}
          >
            <label className="field" htmlFor="cacheDir">
              <span>Cache folder (moving it keeps the data{mounted ? '; unmount first' : ''})</span>
              <input id="cacheDir" type="text" value={cacheDir} onChange={(e) => setCacheDir(e.target.value)} />
            </label>
            <button type="submit" className="secondary" disabled={mounted || cacheDir === machine.cacheDir}>
              Move cache
            </button>
          </form>
          <label className="check">
            <input
              type="checkbox"
              data-testid="settings-mount-at-start"
              checked={mountsAtStart}
              disabled={!appSettings}
              onChange={(e) =>
                void changeAppSettings({
                  mountAtStart: e.target.checked
                    ? [...(appSettings?.mountAtStart ?? []), machine.name]
                    : (appSettings?.mountAtStart ?? []).filter((n) => n !== machine.name),
                })
              }
            />{' '}
            Mount when Filespace starts
          </label>
          <div className="danger">
            <label className="check">
              <input type="checkbox" checked={discard} onChange={(e) => setDiscard(e.target.checked)} /> Discard changes not yet
              uploaded
            </label>
            <button className="secondary" onClick={() => void unlink(machine.name, discard)}>
              Unlink from this computer
            </button>
          </div>
        </section>
      ) : null}
      <section>
        <h3>This computer</h3>
        <label className="check">
          <input
            type="checkbox"
            data-testid="settings-pause"
            checked={paused}
            onChange={(e) => void setPaused(e.target.checked)}
          />{' '}
          Pause uploads
        </label>
        <label className="check">
          <input
            type="checkbox"
            data-testid="settings-start-at-login"
            checked={appSettings?.startAtLogin ?? false}
            disabled={!appSettings}
            onChange={(e) => void changeAppSettings({ startAtLogin: e.target.checked })}
          />{' '}
          Start Filespace at login
        </label>
      </section>
      <section>
        <h3>AWS keys</h3>
        {keys?.stored ? (
          <p data-testid="settings-keys">
            Stored in the keychain for {keys.accessKeyIdHint}
            {keys.endpoint ? ` (${keys.endpoint})` : ''}.{' '}
            <button className="secondary" onClick={() => startWizard(true)}>
              Replace keys
            </button>{' '}
            <button className="secondary" onClick={() => void forgetKeys()}>
              Remove from keychain
            </button>
          </p>
        ) : (
          <p data-testid="settings-keys">No keys are stored.</p>
        )}
      </section>
      {settingsMessage ? (
        <p className="notice" data-testid="settings-message">
          {settingsMessage}
        </p>
      ) : null}
      {settingsError ? (
        <p className="error" role="alert" data-testid="settings-error">
          {settingsError}
        </p>
      ) : null}
    </div>
  );
}
