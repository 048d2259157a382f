// The first-run wizard: keys -> bucket and permissions -> passphrase -> mount point and cache.
// Each field says what is wrong beside it (wizardRules.ts) before anything is sent; each step
// has a heading, the step indicator marks the current one, and focus moves to its first field.

import { type ReactNode, useDeferredValue, useEffect, useMemo, useRef, useState } from 'react';
import { formatBytes } from '../../electron/contract/format';
import { formatRecoveryKey } from '../../electron/contract/recoveryKey';
import { passphraseStrength, WIZARD_STEPS } from '../../electron/contract/wizard';
import { SIZE_UNITS, type SizeUnit } from './fieldRules';
import {
  editCacheCap,
  editWizard,
  hideRecoveryKit,
  hostTransport,
  passphraseInputs,
  pickMountPoint,
  selectKeys,
  selectWizard,
  slideCacheCap,
  submitBucket,
  submitKeys,
  submitPassphrase,
  submitPlace,
  tryLocally,
  useApp,
  useStoredKeys,
  wizardBack,
  wizardErrors,
  type WizardState,
} from './store';
import type { WizardField } from './wizardRules';

const MiB = 1024 * 1024;
const STEP_TITLES = { keys: 'AWS keys', bucket: 'Bucket', passphrase: 'Passphrase', place: 'Mount' } as const;

/** Secrets are judged once the user leaves the field (not while they type); the rest as they type. */
const JUDGED_ON_LEAVING: ReadonlySet<WizardField> = new Set(['secretAccessKey', 'passphrase', 'repeat', 'typedRecoveryKey']);

/** What is wrong with field `id` now, if the user should see it yet. */
function useFieldError(id: WizardField, left: boolean): string | undefined {
  const w = useApp(selectWizard);
  if (w.hostField?.field === id) return w.hostField.text;
  const problem = wizardErrors(w)[id];
  if (problem === undefined) return undefined;
  const raw = w[id as keyof WizardState];
  const value = typeof raw === 'string' ? raw : '';
  const shown = w.attempted || left || (!JUDGED_ON_LEAVING.has(id) && value.length > 0);
  return shown ? problem : undefined;
}

/** The sentence under a field, tied to it by aria-describedby. */
function FieldError({ id, text }: { id: string; text: string | undefined }) {
  return text ? (
    <span className="field-error" id={`${id}-error`} data-testid={`${id}-error`}>
      {text}
    </span>
  ) : null;
}

function Field(props: {
  label: string;
  id: WizardField;
  value: string;
  onChange: (v: string) => void;
  type?: string;
  placeholder?: string;
  autoComplete?: string;
}) {
  const [left, setLeft] = useState(false);
  const error = useFieldError(props.id, left);
  return (
    <label className="field" htmlFor={props.id}>
      <span>{props.label}</span>
      <input
        id={props.id}
        type={props.type ?? 'text'}
        value={props.value}
        placeholder={props.placeholder}
        autoComplete={props.autoComplete ?? 'off'}
        spellCheck={false}
        aria-invalid={error !== undefined}
        aria-describedby={error !== undefined ? `${props.id}-error` : undefined}
        onBlur={() => setLeft(props.value.length > 0)}
        onChange={(e) => props.onChange(e.target.value)}
      />
      <FieldError id={props.id} text={error} />
    </label>
  );
}

/** A step's form: submits through `submit`; a refused submit sends the focus to the first field in error. */
function StepForm(props: { submit: () => Promise<void>; className?: string; testId?: string; children: ReactNode }) {
  const refusals = useApp((s) => s.wizard.refusals);
  const form = useRef<HTMLFormElement>(null);
  useEffect(() => {
    if (refusals > 0) form.current?.querySelector<HTMLElement>('[aria-invalid=true]')?.focus();
  }, [refusals]);
  return (
    <form
      ref={form}
      className={props.className}
      data-testid={props.testId}
      noValidate
      onSubmit={(e) => {
        e.preventDefault();
        void props.submit();
      }}
    >
      {props.children}
    </form>
  );
}

function ErrorBox({ text }: { text: string | null }) {
  return text ? (
    <p className="error" role="alert" data-testid="wizard-error">
      {text}
    </p>
  ) : null;
}

/** Back, and the step's submit button (which says what it is doing while busy). */
function StepButtons(props: { busy: boolean; label: string; busyLabel: string }) {
  return (
    <div className="actions">
      <button type="button" className="secondary" onClick={wizardBack}>
        Back
      </button>
      <button type="submit" disabled={props.busy}>
        {props.busy ? props.busyLabel : props.label}
      </button>
    </div>
  );
}

function KeysStep() {
  const w = useApp(selectWizard);
  const keys = useApp(selectKeys);
  const [replacing, setReplacing] = useState(w.replaceKeys === true);
  useEffect(() => {
    if (replacing) document.getElementById('accessKeyId')?.focus();
  }, [replacing]);
  if (keys?.stored && !replacing) {
    return (
      <section>
        <p data-testid="keys-stored">
          Keys stored in the keychain for <b>{keys.accessKeyIdHint}</b>
          {keys.endpoint ? ` (${keys.endpoint})` : ''}.
        </p>
        <div className="actions">
          <button onClick={useStoredKeys}>Use these keys</button>
          <button className="secondary" onClick={() => setReplacing(true)}>
            Enter other keys
          </button>
          <button className="secondary" disabled={w.busy} onClick={() => void tryLocally()}>
            Try it locally (no AWS)
          </button>
        </div>
        <ErrorBox text={w.error} />
      </section>
    );
  }
  return (
    <StepForm submit={submitKeys}>
      <p className="lead">
        Enter the AWS access key of an IAM user that may use your bucket. The keys go to this computer's keychain, never to a
        file.
      </p>
      <Field
        id="accessKeyId"
        label="Access key ID"
        value={w.accessKeyId}
        placeholder="AKIA…"
        onChange={(v) => editWizard({ accessKeyId: v })}
      />
      <Field
        id="secretAccessKey"
        label="Secret access key"
        type="password"
        value={w.secretAccessKey}
        onChange={(v) => editWizard({ secretAccessKey: v })}
      />
      <Field id="region" label="Region" value={w.region} onChange={(v) => editWizard({ region: v })} />
      <Field
        id="endpoint"
        label="S3-compatible endpoint (optional)"
        value={w.endpoint}
        placeholder="https://s3.example.com"
        onChange={(v) => editWizard({ endpoint: v })}
      />
      <label className="check">
        <input
          id="pathStyle"
          type="checkbox"
          checked={w.pathStyle}
          onChange={(e) => editWizard({ pathStyle: e.target.checked })}
        />{' '}
        Path-style addressing
      </label>
      <ErrorBox text={w.error} />
      <div className="actions">
        <button type="submit" disabled={w.busy}>
          {w.busy ? 'Checking…' : 'Check keys'}
        </button>
        <button type="button" className="secondary" disabled={w.busy} onClick={() => void tryLocally()}>
          Try it locally (no AWS)
        </button>
      </div>
    </StepForm>
  );
}

function BucketStep() {
  const w = useApp(selectWizard);
  const [copied, setCopied] = useState(false);
  return (
    <StepForm submit={submitBucket}>
      <fieldset className="choice">
        <label>
          <input type="radio" name="mode" checked={w.mode === 'create'} onChange={() => editWizard({ mode: 'create' })} /> Create
          a new filespace
        </label>
        <label>
          <input type="radio" name="mode" checked={w.mode === 'link'} onChange={() => editWizard({ mode: 'link' })} /> Link an
          existing filespace
        </label>
      </fieldset>
      {w.buckets && w.buckets.length > 0 ? (
        <label className="field" htmlFor="bucketPick">
          <span>Bucket (from your account)</span>
          <select
            id="bucketPick"
            value={w.buckets.includes(w.bucket) ? w.bucket : ''}
            onChange={(e) => editWizard({ bucket: e.target.value })}
          >
            <option value="">(type a bucket name below)</option>
            {w.buckets.map((b) => (
              <option key={b} value={b}>
                {b}
              </option>
            ))}
          </select>
        </label>
      ) : null}
      <Field id="bucket" label="Bucket" value={w.bucket} onChange={(v) => editWizard({ bucket: v })} />
      <Field
        id="prefix"
        label="Folder in the bucket (prefix, optional)"
        value={w.prefix}
        placeholder="team"
        onChange={(v) => editWizard({ prefix: v })}
      />
      <ErrorBox text={w.error} />
      {w.check && !w.check.ok ? (
        <div className="policy" data-testid="policy">
          <p>
            Missing:{' '}
            {w.check.missing.map((m) => (
              <code key={m}>{m}</code>
            ))}
          </p>
          <p>Minimal IAM policy for this bucket and prefix:</p>
          <pre>{w.check.policy}</pre>
          <p className="hint" data-testid="multipart-note">
            No multipart permission is needed: Filespace uploads each chunk (at most 64 MiB) in a single request.
          </p>
          <button
            type="button"
            className="secondary"
            onClick={() =>
              void navigator.clipboard?.writeText(w.check!.policy).then(
                () => setCopied(true),
                () => setCopied(false),
              )
            }
          >
            {copied ? 'Copied' : 'Copy policy'}
          </button>
        </div>
      ) : null}
      <StepButtons busy={w.busy} busyLabel="Checking access…" label="Check access and continue" />
    </StepForm>
  );
}

const LOSS_WARNING =
  'Without the passphrase or the recovery key, the files in this filespace are gone for good: they are encrypted on this computer, and nobody (not Filespace, not Amazon) can open them.';

/** The passphrase meter: zxcvbn's score, coloured from red (very weak) to green (strong). */
function StrengthMeter({ passphrase: typed, inputs }: { passphrase: string; inputs: string[] }) {
  // The estimate takes up to a few hundred ms on a long passphrase: typing stays ahead of it.
  const passphrase = useDeferredValue(typed);
  const inputsKey = inputs.join('\u0000');
  const strength = useMemo(
    () => passphraseStrength(passphrase, inputsKey.split('\u0000').filter(Boolean)),
    [passphrase, inputsKey],
  );
  if (passphrase.length === 0) return null;
  return (
    <div className={`strength s${strength.score}`} data-testid="strength" data-score={strength.score} aria-live="polite">
      <span className="meter" aria-hidden="true">
        {[0, 1, 2, 3].map((i) => (
          <span key={i} className={i < Math.max(1, strength.score) ? 'on' : ''} />
        ))}
      </span>
      <b>{strength.label}</b> <span className="hint">{strength.hint}</span>
    </div>
  );
}

/** Recovery kit text, as printed and as saved to a file. */
function kitText(key: string, where: string): string {
  return [
    'Filespace recovery kit',
    '',
    `Filespace: ${where}`,
    `Made: ${new Date().toLocaleString()}`,
    '',
    `Recovery key: ${formatRecoveryKey(key)}`,
    '',
    'If the passphrase is lost, this key sets a new one: in the app choose "Link an existing filespace",',
    'then "I lost the passphrase"; or run: filespace passphrase --bucket ... --recovery-key-file FILE --passphrase-file NEW',
    '',
    LOSS_WARNING,
    'Keep this page offline and private: whoever has it can open every file.',
  ].join('\n');
}

function RecoveryKit() {
  const w = useApp(selectWizard);
  const where = `s3://${w.bucket.trim()}${w.prefix.trim() ? `/${w.prefix.trim().replace(/^\/+|\/+$/g, '')}` : ''}`;
  const save = () => {
    const url = URL.createObjectURL(new Blob([kitText(w.recoveryKey, where)], { type: 'text/plain' }));
    const a = document.createElement('a');
    a.href = url;
    a.download = `filespace-recovery-kit-${w.bucket.trim()}.txt`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };
  return (
    <StepForm className="recovery-kit" testId="recovery-kit" submit={submitPassphrase}>
      <h3>Your recovery kit</h3>
      <p className="lead">
        If you ever lose the passphrase, this recovery key lets you set a new one. It is shown only now and is not stored on this
        computer or in the bucket. Print it or save it, and keep it somewhere safe and offline.
      </p>
      <div className="kit-page">
        <p>Filespace {where}</p>
        <p className="recovery-key" data-testid="recovery-key" aria-label="recovery key">
          {formatRecoveryKey(w.recoveryKey)
            .split('-')
            .map((g, i) => (
              <code key={i}>{g}</code>
            ))}
        </p>
      </div>
      <p className="warning" data-testid="loss-warning">
        <b>{LOSS_WARNING}</b>
      </p>
      <div className="actions">
        <button type="button" className="secondary" onClick={() => window.print()}>
          Print…
        </button>
        <button type="button" className="secondary" onClick={save} data-testid="save-kit">
          Save as a file…
        </button>
      </div>
      <label className="check">
        <input id="kitSaved" type="checkbox" checked={w.kitSaved} onChange={(e) => editWizard({ kitSaved: e.target.checked })} />{' '}
        I have printed or saved the recovery kit
      </label>
      <ErrorBox text={w.error} />
      <div className="actions">
        <button type="button" className="secondary" onClick={hideRecoveryKit}>
          Back
        </button>
        <button type="submit" disabled={w.busy || !w.kitSaved}>
          Continue
        </button>
      </div>
    </StepForm>
  );
}

function PassphraseStep() {
  const w = useApp(selectWizard);
  const inputs = passphraseInputs(w);
  if (w.mode === 'create' && w.kitShown) return <RecoveryKit />;
  const choosing = w.mode === 'create' || w.recovering;
  return (
    <StepForm submit={submitPassphrase}>
      <p className="lead">
        {w.mode === 'create'
          ? 'Choose a passphrase. It encrypts every file on this computer before upload.'
          : w.recovering
            ? 'Enter the recovery key from your recovery kit, and choose a new passphrase. Computers that use the old passphrase will ask for the new one.'
            : 'Enter the passphrase this filespace was created with.'}
      </p>
      {w.mode === 'create' ? (
        <p className="warning" data-testid="loss-warning">
          {LOSS_WARNING} The next step gives you a recovery key.
        </p>
      ) : null}
      {w.recovering ? (
        <Field
          id="typedRecoveryKey"
          label="Recovery key"
          value={w.typedRecoveryKey}
          placeholder="XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX"
          onChange={(v) => editWizard({ typedRecoveryKey: v })}
        />
      ) : null}
      <Field
        id="passphrase"
        label={w.recovering ? 'New passphrase' : 'Passphrase'}
        type="password"
        value={w.passphrase}
        autoComplete={choosing ? 'new-password' : 'current-password'}
        onChange={(v) => editWizard({ passphrase: v })}
      />
      {choosing ? (
        <>
          <StrengthMeter passphrase={w.passphrase} inputs={inputs} />
          <Field
            id="repeat"
            label={w.recovering ? 'New passphrase again' : 'Passphrase again'}
            type="password"
            value={w.repeat}
            autoComplete="new-password"
            onChange={(v) => editWizard({ repeat: v })}
          />
        </>
      ) : null}
      {w.mode === 'link' ? (
        <button
          type="button"
          className="link"
          data-testid="lost-passphrase"
          onClick={() => editWizard({ recovering: !w.recovering, passphrase: '', repeat: '', typedRecoveryKey: '' })}
        >
          {w.recovering ? 'I know the passphrase' : 'I lost the passphrase (use the recovery key)'}
        </button>
      ) : null}
      <ErrorBox text={w.error} />
      <StepButtons
        busy={w.busy}
        busyLabel={w.recovering ? 'Setting the new passphrase…' : 'Checking…'}
        label={w.recovering ? 'Set the new passphrase and continue' : 'Continue'}
      />
    </StepForm>
  );
}

function PlaceStep() {
  const w = useApp(selectWizard);
  const maxMiB = Math.max(16, Math.floor(w.cacheDiskFreeBytes / MiB));
  const [capLeft, setCapLeft] = useState(false);
  const capError = useFieldError('cacheCapText', capLeft);
  return (
    <StepForm submit={submitPlace}>
      <Field id="name" label="Name on this computer" value={w.name} onChange={(v) => editWizard({ name: v })} />
      <div className="row">
        <Field
          id="mountPoint"
          label="Mount point (an empty folder)"
          value={w.mountPoint}
          onChange={(v) => editWizard({ mountPoint: v })}
        />
        {hostTransport()?.pickFolder ? (
          <button type="button" className="secondary" onClick={() => void pickMountPoint()}>
            Choose…
          </button>
        ) : null}
      </div>
      <div className="field">
        <label htmlFor="cacheCapText">
          Cache on this computer: <b data-testid="cache-cap">{formatBytes(w.cacheCapBytes)}</b> (of{' '}
          {formatBytes(w.cacheDiskFreeBytes)} free on the cache disk)
        </label>
        <div className="row">
          <input
            id="cacheCap"
            type="range"
            aria-label="Cache size"
            min={16}
            max={maxMiB}
            step={1}
            value={Math.round(w.cacheCapBytes / MiB)}
            aria-valuetext={formatBytes(w.cacheCapBytes)}
            onChange={(e) => slideCacheCap(Number(e.target.value))}
          />
          <input
            id="cacheCapText"
            className="number"
            inputMode="decimal"
            value={w.cacheCapText}
            aria-invalid={capError !== undefined}
            aria-describedby={capError !== undefined ? 'cacheCapText-error' : undefined}
            onBlur={() => setCapLeft(true)}
            onChange={(e) => editCacheCap(e.target.value, w.cacheCapUnit)}
          />
          <select
            id="cacheCapUnit"
            aria-label="Cache size unit"
            value={w.cacheCapUnit}
            onChange={(e) => editCacheCap(w.cacheCapText, e.target.value as SizeUnit)}
          >
            {Object.keys(SIZE_UNITS).map((u) => (
              <option key={u} value={u}>
                {u}
              </option>
            ))}
          </select>
        </div>
        <FieldError id="cacheCapText" text={capError} />
      </div>
      <ErrorBox text={w.error} />
      <StepButtons busy={w.busy} busyLabel="Mounting…" label={w.mode === 'create' ? 'Create and mount' : 'Link and mount'} />
    </StepForm>
  );
}

/** The step's heading: "Step 2 of 4: Bucket". */
function stepHeading(step: (typeof WIZARD_STEPS)[number]): string {
  return `Step ${WIZARD_STEPS.indexOf(step) + 1} of ${WIZARD_STEPS.length}: ${STEP_TITLES[step]}`;
}

/** The first thing to type into (or, with nothing to type, to press) in a step. */
function firstField(root: HTMLElement): HTMLElement | null {
  return (
    root.querySelector<HTMLElement>('input:not([type=radio]):not([type=checkbox]):not([type=range]), select, textarea') ??
    root.querySelector<HTMLElement>('button:not([disabled])')
  );
}

export function Wizard() {
  const step = useApp((s) => s.wizard.step);
  // A new view within a step (the recovery kit, the recovery key, other keys) is a new start too.
  const view = useApp((s) => `${s.wizard.step}|${s.wizard.kitShown}|${s.wizard.recovering}|${s.wizard.keys?.stored ?? false}`);
  const body = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (body.current) firstField(body.current)?.focus();
  }, [view]);
  return (
    <div className="wizard" data-testid={`wizard-${step}`}>
      <ol className="steps" aria-label="Setup steps">
        {WIZARD_STEPS.map((s) => (
          <li key={s} className={s === step ? 'current' : ''} aria-current={s === step ? 'step' : undefined}>
            {STEP_TITLES[s]}
          </li>
        ))}
      </ol>
      <h2 className="step-title" data-testid="step-title">
        {stepHeading(step)}
      </h2>
      <div ref={body}>
        {step === 'keys' ? (
          <KeysStep />
        ) : step === 'bucket' ? (
          <BucketStep />
        ) : step === 'passphrase' ? (
          <PassphraseStep />
        ) : (
          <PlaceStep />
        )}
      </div>
    </div>
  );
}
