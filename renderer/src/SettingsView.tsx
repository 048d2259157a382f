// Per-machine settings of one filespace (applied live when mounted), the global pause, the keys.
// Every field is checked as it is typed (fieldRules.ts) and says beside itself what became of
// the last change; removing keys and unlinking with changes not uploaded ask first.

import { useEffect, useState, type ReactNode } from 'react';
import type { MachineSettings } from '../../electron/contract/app';
import { formatBytes, formatRate } from '../../electron/contract/format';
import { countOf } from '../../electron/contract/headline';
import {
  LIMITS,
  RATE_UNITS,
  SIZE_UNITS,
  inUnits,
  parseCount,
  parseFolder,
  parseRate,
  parseSize,
  type Parsed,
  type RateUnit,
  type SizeUnit,
} from './fieldRules';
import {
  changeAppSettings,
  changeSettings,
  clearNote,
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

const MiB = 1024 * 1024;

/** The line under a field: its inline error (tied to it by id), else what became of the last change. */
function FieldLine({ id, error, field }: { id: string; error?: string | undefined; field: string }) {
  const note = useApp((s) => s.fieldNotes[field]);
  if (error)
    return (
      <p id={`${id}-msg`} className="field-error" data-testid={`${id}-error`}>
        {error}
      </p>
    );
  if (!note) return <p id={`${id}-msg`} className="field-note" aria-live="polite" />;
  return (
    <p
      id={`${id}-msg`}
      className={note.tone === 'ok' ? 'field-note ok' : 'field-error'}
      role={note.tone === 'ok' ? 'status' : 'alert'}
      aria-live="polite"
      data-testid={`${id}-note`}
    >
      {note.text}
    </p>
  );
}

function CountSetting(props: {
  id: string;
  label: string;
  value: number;
  range: { min: number; max: number };
  zero?: string;
  onSave: (v: number) => void;
}) {
  const [text, setText] = useState(String(props.value));
  useEffect(() => setText(String(props.value)), [props.value]);
  const parsed = parseCount(text, props.range, props.zero);
  const error = parsed.ok ? undefined : parsed.error;
  return (
    <form
      className="setting"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        if (parsed.ok) props.onSave(parsed.value);
      }}
    >
      <div className="row">
        <label className="field" htmlFor={props.id}>
          <span>{props.label}</span>
          <input
            id={props.id}
            type="number"
            inputMode="numeric"
            min={props.range.min}
            max={props.range.max}
            value={text}
            aria-invalid={error !== undefined}
            aria-describedby={`${props.id}-msg`}
            onChange={(e) => {
              setText(e.target.value);
              clearNote(props.id);
            }}
          />
        </label>
        <button type="submit" className="secondary" disabled={!parsed.ok}>
          Apply
        </button>
      </div>
      <FieldLine id={props.id} field={props.id} error={error} />
    </form>
  );
}

function CacheCapSetting({ machine }: { machine: MachineSettings }) {
  const maxBytes = Math.max(LIMITS.cacheCapMinBytes, machine.cacheDiskFreeBytes + machine.cacheCapBytes);
  const initial = inUnits(machine.cacheCapBytes, SIZE_UNITS);
  const [text, setText] = useState(initial.text);
  const [unit, setUnit] = useState<SizeUnit>(initial.unit);
  useEffect(() => {
    const v = inUnits(machine.cacheCapBytes, SIZE_UNITS);
    setText(v.text);
    setUnit(v.unit);
  }, [machine.cacheCapBytes]);
  const parsed: Parsed = parseSize(text, unit, LIMITS.cacheCapMinBytes, maxBytes);
  const error = parsed.ok ? undefined : parsed.error;
  const sliderMiB = parsed.ok ? Math.round(parsed.value / MiB) : Math.round(machine.cacheCapBytes / MiB);
  const edited = () => clearNote('cacheCap');
  return (
    <form
      className="setting"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        if (parsed.ok)
          void changeSettings(
            'cacheCap',
            { cacheCapBytes: parsed.value },
            (m) => `Cache limit is now ${formatBytes(m.cacheCapBytes)}`,
          );
      }}
    >
      <label className="field" htmlFor="settingsCacheCapSlider">
        <span>
          Cache limit (the cache is in {machine.cacheDir}; {formatBytes(machine.cacheDiskFreeBytes)} free on its disk)
        </span>
      </label>
      <div className="row">
        <input
          id="settingsCacheCapSlider"
          className="grow"
          type="range"
          min={16}
          max={Math.floor(maxBytes / MiB)}
          step={16}
          value={sliderMiB}
          aria-label="Cache limit"
          aria-valuetext={formatBytes(sliderMiB * MiB)}
          onChange={(e) => {
            const v = inUnits(Number(e.target.value) * MiB, SIZE_UNITS);
            setText(v.text);
            setUnit(v.unit);
            edited();
          }}
        />
        <input
          id="settingsCacheCap"
          className="narrow"
          type="text"
          inputMode="decimal"
          aria-label="Cache limit, number"
          aria-invalid={error !== undefined}
          aria-describedby="cacheCap-msg"
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            edited();
          }}
        />
        <select
          id="settingsCacheCapUnit"
          aria-label="Cache limit, unit"
          value={unit}
          onChange={(e) => {
            setUnit(e.target.value as SizeUnit);
            edited();
          }}
        >
          {Object.keys(SIZE_UNITS).map((u) => (
            <option key={u}>{u}</option>
          ))}
        </select>
        <button type="submit" disabled={!parsed.ok}>
          Apply
        </button>
      </div>
      <FieldLine id="cacheCap" field="cacheCap" error={error} />
    </form>
  );
}

function UploadLimitSetting({ value }: { value: number }) {
  const start = (v: number) => (v > 0 ? inUnits(v, RATE_UNITS) : { text: '', unit: 'KiB/s' as RateUnit });
  const [text, setText] = useState(start(value).text);
  const [unit, setUnit] = useState<RateUnit>(start(value).unit);
  const [touched, setTouched] = useState(false);
  useEffect(() => {
    setText(start(value).text);
    setUnit(start(value).unit);
    setTouched(false);
  }, [value]);
  const parsed = parseRate(text, unit);
  // An empty box before anything was typed is just "no limit" shown; once edited it must be a rate.
  const error = parsed.ok || (!touched && text === '') ? undefined : parsed.error;
  const describe = (m: MachineSettings) =>
    m.uploadLimitBytesPerSec > 0
      ? `Uploads are now limited to ${formatRate(m.uploadLimitBytesPerSec)}`
      : 'Uploads are now unlimited';
  return (
    <form
      className="setting"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        setTouched(true);
        if (parsed.ok) void changeSettings('uploadLimit', { uploadLimitBytesPerSec: parsed.value }, describe);
      }}
    >
      <label className="field" htmlFor="uploadLimit">
        <span>
          Upload limit — now <b data-testid="settings-upload-limit">{value > 0 ? formatRate(value) : 'no limit'}</b>
        </span>
      </label>
      <div className="row">
        <input
          id="uploadLimit"
          className="narrow"
          type="text"
          inputMode="decimal"
          placeholder="no limit"
          aria-invalid={error !== undefined}
          aria-describedby="uploadLimit-msg"
          value={text}
          onChange={(e) => {
            setText(e.target.value);
            setTouched(true);
            clearNote('uploadLimit');
          }}
        />
        <select
          id="uploadLimitUnit"
          aria-label="Upload limit, unit"
          value={unit}
          onChange={(e) => {
            setUnit(e.target.value as RateUnit);
            clearNote('uploadLimit');
          }}
        >
          {Object.keys(RATE_UNITS).map((u) => (
            <option key={u}>{u}</option>
          ))}
        </select>
        <button type="submit" className="secondary" disabled={!parsed.ok}>
          Apply
        </button>
        <button
          type="button"
          className="secondary"
          disabled={value === 0}
          onClick={() => void changeSettings('uploadLimit', { uploadLimitBytesPerSec: 0 }, describe)}
        >
          No limit
        </button>
      </div>
      <FieldLine id="uploadLimit" field="uploadLimit" error={error} />
    </form>
  );
}

function CacheFolderSetting({ machine, mounted }: { machine: MachineSettings; mounted: boolean }) {
  const [cacheDir, setCacheDir] = useState(machine.cacheDir);
  useEffect(() => setCacheDir(machine.cacheDir), [machine.cacheDir]);
  const parsed = parseFolder(cacheDir);
  const error = parsed.ok ? undefined : parsed.error;
  return (
    <form
      className="setting"
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        if (parsed.ok) void moveCache(parsed.value);
      }}
    >
      <div className="row">
        <label className="field" htmlFor="cacheDir">
          <span>Cache folder (moving it keeps the data{mounted ? '; unmount first' : ''})</span>
          <input
            id="cacheDir"
            type="text"
            value={cacheDir}
            aria-invalid={error !== undefined}
            aria-describedby="cacheDir-msg"
            onChange={(e) => {
              setCacheDir(e.target.value);
              clearNote('cacheDir');
            }}
          />
        </label>
        <button type="submit" className="secondary" disabled={mounted || !parsed.ok || cacheDir === machine.cacheDir}>
          Move cache
        </button>
      </div>
      <FieldLine id="cacheDir" field="cacheDir" error={error} />
    </form>
  );
}

/** A question before something that cannot be undone: what is lost, and the two ways out. */
function Confirm(props: { testId: string; children: ReactNode; confirm: string; onConfirm: () => void; onCancel: () => void }) {
  return (
    <div className="confirm" role="alertdialog" aria-labelledby={`${props.testId}-text`} data-testid={props.testId}>
      <div id={`${props.testId}-text`}>{props.children}</div>
      <div className="actions">
        <button className="danger-button" onClick={props.onConfirm}>
          {props.confirm}
        </button>
        <button className="secondary" onClick={props.onCancel} autoFocus>
          Cancel
        </button>
      </div>
    </div>
  );
}

function UnlinkSection({ machine }: { machine: MachineSettings }) {
  const [asking, setAsking] = useState<'keep' | 'discard' | null>(null);
  const f = useApp((s) => selectFilespaces(s).find((x) => x.name === machine.name));
  const s = f?.status;
  const pending = s !== undefined && (s.dirtyFiles > 0 || s.dirtyBytes > 0);
  const mounted = s !== undefined && s.state !== 'unmounted';
  const more = s ? s.dirtyFiles - (s.pendingFiles?.length ?? 0) : 0;
  return (
    <div className="danger">
      <h3>Unlink from this computer</h3>
      <p className="muted">
        The filespace stays in the bucket; this computer forgets it and deletes its cache.
        {mounted ? ' Unmount it first.' : ''}
      </p>
      {asking === null ? (
        <div className="actions">
          <button className="secondary" disabled={mounted} onClick={() => setAsking('keep')}>
            Unlink…
          </button>
          {pending ? (
            <button className="secondary" disabled={mounted} onClick={() => setAsking('discard')}>
              Discard changes and unlink…
            </button>
          ) : null}
        </div>
      ) : asking === 'discard' && s ? (
        <Confirm
          testId="confirm-discard"
          confirm="Discard changes and unlink"
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            setAsking(null);
            void unlink(machine.name, true);
          }}
        >
          <p>
            {countOf(s.dirtyFiles, 'file')} ({formatBytes(s.dirtyBytes)}) written on this computer and not yet in the bucket will
            be lost for good:
          </p>
          {s.pendingFiles && s.pendingFiles.length > 0 ? (
            <ul className="pending-files">
              {s.pendingFiles.map((p) => (
                <li key={p}>{p}</li>
              ))}
              {more > 0 ? <li>…and {more.toLocaleString('en-US')} more</li> : null}
            </ul>
          ) : (
            <p className="muted">Mount it to see their names, or to let them upload instead.</p>
          )}
        </Confirm>
      ) : (
        <Confirm
          testId="confirm-unlink"
          confirm="Unlink"
          onCancel={() => setAsking(null)}
          onConfirm={() => {
            setAsking(null);
            void unlink(machine.name, false);
          }}
        >
          <p>
            Unlink &quot;{machine.name}&quot; from this computer?{' '}
            {pending
              ? 'Its changes not yet uploaded stop the unlink: mount it and let them upload first.'
              : 'Everything is in the bucket.'}
          </p>
        </Confirm>
      )}
      <FieldLine id="unlink" field="unlink" />
    </div>
  );
}

function KeysSection() {
  const keys = useApp(selectKeys);
  const users = useApp(selectFilespaces).filter((f) => f.kind === 's3');
  const [asking, setAsking] = useState(false);
  return (
    <section>
      <h3>AWS keys</h3>
      {keys?.stored ? (
        <>
          <p data-testid="settings-keys">
            Stored in the keychain for {keys.accessKeyIdHint}
            {keys.endpoint ? ` (${keys.endpoint})` : ''}.
          </p>
          {asking ? (
            <Confirm
              testId="confirm-remove-keys"
              confirm="Remove keys"
              onCancel={() => setAsking(false)}
              onConfirm={() => {
                setAsking(false);
                void forgetKeys();
              }}
            >
              <p>
                {users.length === 0
                  ? 'No linked filespace uses these keys.'
                  : `${users.map((f) => f.name).join(', ')} ${users.length === 1 ? 'uses' : 'use'} these keys: ${users.length === 1 ? 'it' : 'they'} cannot mount again until you enter keys. Mounted ones keep running until unmounted.`}
              </p>
            </Confirm>
          ) : (
            <div className="actions">
              <button className="secondary" onClick={() => startWizard(true)}>
                Replace keys
              </button>
              <button className="secondary" onClick={() => setAsking(true)}>
                Remove from keychain…
              </button>
            </div>
          )}
        </>
      ) : (
        <div className="row">
          <p data-testid="settings-keys">No keys are stored.</p>
          <button onClick={() => startWizard()}>Enter keys</button>
        </div>
      )}
      <FieldLine id="keys" field="keys" />
    </section>
  );
}

export function SettingsView() {
  const filespaces = useApp(selectFilespaces);
  const paused = useApp(selectPaused);
  const selected = useApp((s) => s.selected);
  const machine = useApp((s) => s.machine);
  const appSettings = useApp((s) => s.appSettings);
  const settingsMessage = useApp((s) => s.settingsMessage);
  const settingsError = useApp((s) => s.settingsError);
  const mountsAtStart = machine !== null && (appSettings?.mountAtStart.includes(machine.name) ?? false);
  const mounted = filespaces.find((f) => f.name === selected)?.status.state !== 'unmounted';
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
          <CacheCapSetting machine={machine} />
          <UploadLimitSetting value={machine.uploadLimitBytesPerSec} />
          <CountSetting
            id="uploadConcurrency"
            label="Parallel uploads"
            value={machine.uploadConcurrency}
            range={LIMITS.uploadConcurrency}
            onSave={(v) =>
              void changeSettings(
                'uploadConcurrency',
                { uploadConcurrency: v },
                (m) => `Now ${m.uploadConcurrency} uploads at a time`,
              )
            }
          />
          <CountSetting
            id="prefetch"
            label="Read-ahead, in chunks (0 turns it off)"
            value={machine.prefetchMaxChunks}
            range={LIMITS.prefetchMaxChunks}
            zero="turns read-ahead off"
            onSave={(v) =>
              void changeSettings('prefetch', { prefetchMaxChunks: v }, (m) =>
                m.prefetchMaxChunks === 0
                  ? 'Read-ahead is now off'
                  : `Read-ahead is now up to ${countOf(m.prefetchMaxChunks, 'chunk')}`,
              )
            }
          />
          <CacheFolderSetting machine={machine} mounted={mounted} />
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
          <UnlinkSection machine={machine} />
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
        <FieldLine id="app" field="app" />
      </section>
      <KeysSection />
      {settingsMessage ? (
        <p className="notice" role="status" data-testid="settings-message">
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
