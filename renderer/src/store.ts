/**
 * The renderer's state: one zustand store built from slices (host status, wizard, settings,
 * UI), read through the selectors below. Host events update it with setState outside React;
 * actions call the host through the Transport and turn failures into UI state, never throws.
 * `resetStore()` puts it back to its initial state (tests, and "start over").
 *
 * Time: a one-second tick (`tick`) samples each filespace's throughput into `history` (kept for
 * the app's lifetime, at most HISTORY_KEEP_MS, whatever the mounts do) and moves `now`, so
 * "confirmed 70 s ago" advances even when no status event arrives. Notices expire after
 * NOTICE_MS. Recent problems are de-duplicated and worded for people in problems.ts.
 */

import { createStore, useStore } from 'zustand';
import type {
  AppSettingsDto,
  AppStatus,
  AsideSetDto,
  BucketCheck,
  FilespaceSummary,
  KeysInfo,
  MachineSettings,
  WriterInfo,
} from '../../electron/contract/app';
import { newRecoveryKey, parseRecoveryKey, RECOVERY_KEY_HINT } from '../../electron/contract/recoveryKey';
import type { SettingsChange } from '../../electron/contract/api';
import {
  checkKeysStep,
  checkPassphraseStep,
  checkPlaceStep,
  checkTargetStep,
  nextStep,
  normalizePrefix,
  previousStep,
  type WizardStep,
} from '../../electron/contract/wizard';
import { nextBatch, type Batch } from '../../electron/contract/headline';
import { treatmentOf } from './errors';
import { inUnits, parseSize, SIZE_UNITS, type SizeUnit } from './fieldRules';
import { followStatus, plainWords, recordProblem, type Problem } from './problems';
import { wizardFieldErrors, wizardHostError, type FieldErrors, type WizardField } from './wizardRules';
import { HostError, type Transport } from './transport';

export type Screen = 'wizard' | 'status' | 'settings';

export interface Sample {
  readonly t: number;
  readonly up: number;
  readonly down: number;
}

/** A recent problem (one line per problem); one from an action the user took can be retried. */
export type ErrorEntry = Problem;

interface HostSlice {
  status: AppStatus | null;
  connectionTrouble: string | null;
  /** Throughput samples per filespace, one a second, newest last (see the module header). */
  history: Record<string, Sample[]>;
  /** The upload batch in progress per filespace (headline.ts). */
  batches: Record<string, Batch>;
  errors: ErrorEntry[];
  /** Filespaces something was seen written to (for the "what to do next" hint of an empty one). */
  written: Record<string, true>;
  /** The clock of the last tick (ms since the epoch). */
  now: number;
}

export interface WizardState {
  step: WizardStep;
  /** Opened from the settings to replace the stored keys: the keys step asks for new ones. */
  replaceKeys?: boolean;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  endpoint: string;
  pathStyle: boolean;
  keys: KeysInfo | null;
  buckets: string[] | null;
  bucket: string;
  prefix: string;
  mode: 'create' | 'link';
  check: BucketCheck | null;
  passphrase: string;
  repeat: string;
  name: string;
  mountPoint: string;
  cacheCapBytes: number;
  cacheDiskFreeBytes: number;
  busy: boolean;
  error: string | null;
  /** Create: the recovery key made for this filespace, shown on the kit (sent once, with the link). */
  recoveryKey: string;
  /** Create: the recovery kit is on screen (after a good passphrase, before the place step). */
  kitShown: boolean;
  /** Create: the user said the kit is printed or saved. */
  kitSaved: boolean;
  /** Link: the passphrase is lost; a recovery key sets a new one. */
  recovering: boolean;
  typedRecoveryKey: string;
  /** The cache size box, as typed, and its unit (cacheCapBytes follows it while it is valid). */
  cacheCapText: string;
  cacheCapUnit: SizeUnit;
  /** The step was submitted with fields in error: every field of it says what is wrong. */
  attempted: boolean;
  /** Submits refused for fields in error so far (each one sends the focus to the first such field). */
  refusals: number;
  /** The host refused what one field says (e.g. a mount point that cannot be made), in words. */
  hostField: { field: WizardField; text: string } | null;
}

/** Per filespace: another computer writes it (a mount was refused), and what the user is deciding. */
export interface SecondMachine {
  writer: WriterInfo['writer'];
  /** The takeover confirmation is open. */
  confirmTakeover: boolean;
}

/** Per filespace: changes set aside, and which set awaits a save folder or a discard confirmation. */
export interface AsideUi {
  sets: AsideSetDto[] | null;
  saving: string | null;
  discarding: string | null;
  message: string | null;
}

interface SettingsSlice {
  selected: string | null;
  machine: MachineSettings | null;
  appSettings: AppSettingsDto | null;
  settingsMessage: string | null;
  settingsError: string | null;
  /** Per settings field: what happened to the last change, in words, shown beside the field. */
  fieldNotes: Record<string, FieldNote>;
}

export interface FieldNote {
  readonly text: string;
  readonly tone: 'ok' | 'error';
}

interface UiSlice {
  screen: Screen;
  notice: string | null;
  /** 'ok': something done; 'info': a state worth knowing (e.g. uploads paused). */
  noticeTone: 'ok' | 'info';
  /** Per filespace: why the last unmount was refused because the mount is in use. */
  unmountBusy: Record<string, string>;
  secondMachine: Record<string, SecondMachine>;
  /** Per filespace: the takeover confirmation of a mounted (following) card is open. */
  takeoverAsked: Record<string, boolean>;
  aside: Record<string, AsideUi>;
}

export type State = HostSlice & { wizard: WizardState } & SettingsSlice & UiSlice;

const initialWizard: WizardState = {
  step: 'keys',
  accessKeyId: '',
  secretAccessKey: '',
  region: 'us-east-1',
  endpoint: '',
  pathStyle: false,
  keys: null,
  buckets: null,
  bucket: '',
  prefix: '',
  mode: 'create',
  check: null,
  passphrase: '',
  repeat: '',
  name: '',
  mountPoint: '',
  cacheCapBytes: 0,
  cacheDiskFreeBytes: 0,
  busy: false,
  error: null,
  recoveryKey: '',
  kitShown: false,
  kitSaved: false,
  recovering: false,
  typedRecoveryKey: '',
  cacheCapText: '',
  cacheCapUnit: 'GiB',
  attempted: false,
  refusals: 0,
  hostField: null,
};

const initialState: State = {
  status: null,
  connectionTrouble: null,
  history: {},
  batches: {},
  errors: [],
  written: {},
  now: Date.now(),
  wizard: initialWizard,
  selected: null,
  machine: null,
  appSettings: null,
  settingsMessage: null,
  settingsError: null,
  fieldNotes: {},
  screen: 'status',
  notice: null,
  noticeTone: 'ok',
  unmountBusy: {},
  secondMachine: {},
  takeoverAsked: {},
  aside: {},
};

export const store = createStore<State>()(() => initialState);

export function resetStore(): void {
  store.setState(initialState, true);
}

export function useApp<T>(selector: (s: State) => T): T {
  return useStore(store, selector);
}

// ---- selectors ---------------------------------------------------------------------------

export const selectFilespaces = (s: State): FilespaceSummary[] => s.status?.filespaces ?? [];
export const selectKeys = (s: State): KeysInfo | null => s.status?.keys ?? null;
export const selectPaused = (s: State): boolean => s.status?.uploadsPaused ?? false;
export const selectWizard = (s: State): WizardState => s.wizard;

// ---- host connection ----------------------------------------------------------------------

let transport: Transport | undefined;

export function hostTransport(): Transport | undefined {
  return transport;
}

export const HISTORY_KEEP_MS = 60 * 60 * 1000;
export const NOTICE_MS = 8000;

/** One throughput sample per filespace mounted once (0 while not mounted), and the clock moves on. */
export function tick(now = Date.now()): void {
  store.setState((s) => {
    const history: Record<string, Sample[]> = { ...s.history };
    for (const f of s.status?.filespaces ?? []) {
      const mounted = f.status.state === 'mounted';
      if (!mounted && !s.history[f.name]) continue; // never mounted in this app's lifetime: no chart yet
      const prev = (s.history[f.name] ?? []).filter((p) => now - p.t < HISTORY_KEEP_MS);
      history[f.name] = [
        ...prev,
        { t: now, up: mounted ? f.status.uploadBytesPerSec : 0, down: mounted ? f.status.downloadBytesPerSec : 0 },
      ];
    }
    return { history, now };
  });
}

let ticker: ReturnType<typeof setInterval> | undefined;

/** Timers never keep a process alive (plain-Node tests of the store); browsers have no unref. */
function unref(t: unknown): void {
  (t as { unref?: () => void } | undefined)?.unref?.();
}
let noticeTimer: ReturnType<typeof setTimeout> | undefined;

/** A notice expires after NOTICE_MS unless another replaced it. */
store.subscribe((s, prev) => {
  if (s.notice === prev.notice) return;
  if (noticeTimer) clearTimeout(noticeTimer);
  noticeTimer = undefined;
  if (s.notice === null) return;
  const shown = s.notice;
  noticeTimer = setTimeout(() => {
    if (store.getState().notice === shown) store.setState({ notice: null });
  }, NOTICE_MS);
  unref(noticeTimer);
});

/** Whether a filespace shows signs of something written to it: changes waiting, or data in its cache. */
export function hasWrites(f: FilespaceSummary): boolean {
  return f.status.dirtyFiles > 0 || f.status.pendingMetaOps > 0 || f.status.cacheUsedBytes > 0;
}

/** The demo's "what to do next": on a mounted local filespace until the first write is seen. */
export function showsDemoHint(f: FilespaceSummary, written: Readonly<Record<string, true>>): boolean {
  return f.kind === 'local' && f.status.state === 'mounted' && !written[f.name] && !hasWrites(f);
}

/** The last error each filespace reported, to record a problem once, not once per event. */
let reported = new Map<string, string | null>();

export function connect(t: Transport, opts: { tickMs?: number } = {}): () => void {
  transport = t;
  reported = new Map();
  if (ticker) clearInterval(ticker);
  ticker = opts.tickMs === 0 ? undefined : setInterval(() => tick(), opts.tickMs ?? 1000);
  unref(ticker);
  const unsubscribe = t.subscribe(
    (e) => {
      const now = Date.now();
      store.setState((s) => {
        const current = e.status.filespaces.map((f) => ({ filespace: f.name, lastError: f.status.lastError }));
        const errors = followStatus(s.errors, current, reported, now);
        reported = new Map(current.map((c) => [c.filespace, c.lastError]));
        const batches: Record<string, Batch> = {};
        let written = s.written;
        for (const f of e.status.filespaces) {
          if (!written[f.name] && hasWrites(f)) written = { ...written, [f.name]: true };
          const b = nextBatch(s.batches[f.name], f.status.state === 'mounted' ? f.status.dirtyBytes : 0, now);
          if (b) batches[f.name] = b;
        }
        const first = s.status === null;
        return {
          status: e.status,
          batches,
          written,
          errors,
          now,
          connectionTrouble: null,
          // First contact: a machine with nothing linked starts in the wizard.
          ...(first && e.status.filespaces.length === 0 ? { screen: 'wizard' as Screen } : {}),
          ...(first && e.status.filespaces[0] ? { selected: e.status.filespaces[0].name } : {}),
        };
      });
    },
    (message) => store.setState({ connectionTrouble: message }),
  );
  return () => {
    unsubscribe();
    if (ticker) clearInterval(ticker);
    ticker = undefined;
  };
}

/** What the host said about a failed action; an unexpected one is also reported on the console. */
function messageOf(err: unknown): string {
  if (!(err instanceof HostError) || treatmentOf(err.code) === 'unexpected') console.error('filespace:', err);
  return err instanceof Error ? err.message : String(err);
}

/** A failed action in plain words (no errno or schema text), for a line beside a field. */
function wordsOf(err: unknown): string {
  return plainWords(messageOf(err), err instanceof HostError ? err.code : undefined);
}

async function call<T>(fn: (t: Transport) => Promise<T>): Promise<T> {
  if (!transport) throw new HostError('NO_HOST');
  return fn(transport);
}

// ---- UI actions ---------------------------------------------------------------------------

export function show(screen: Screen): void {
  store.setState({ screen, notice: null, fieldNotes: {} });
  if (screen === 'settings') void loadSettings(store.getState().selected ?? selectFilespaces(store.getState())[0]?.name ?? null);
}

export function startWizard(replaceKeys = false): void {
  store.setState((s) => ({ screen: 'wizard', wizard: { ...initialWizard, keys: s.status?.keys ?? null, replaceKeys } }));
}

// ---- wizard -------------------------------------------------------------------------------

/** What the permission check was about: a change to any of it makes its result stale. */
const CHECKED_ON: ReadonlyArray<keyof WizardState> = ['bucket', 'prefix', 'mode', 'keys', 'accessKeyId', 'endpoint', 'region'];

export function editWizard(change: Partial<WizardState>): void {
  store.setState((s) => {
    const w = s.wizard;
    const stale = CHECKED_ON.some((k) => k in change && change[k] !== w[k]);
    const hostFieldGone = w.hostField !== null && (w.hostField.field in change || 'step' in change);
    return {
      wizard: {
        ...w,
        ...change,
        error: null,
        ...(stale && !('check' in change) ? { check: null } : {}),
        ...(hostFieldGone ? { hostField: null } : {}),
        ...('step' in change && change.step !== w.step ? { attempted: false } : {}),
      },
    };
  });
}

/** The cache size box: typed text, and the bytes it says while it is valid. */
export function editCacheCap(text: string, unit: SizeUnit): void {
  const r = parseSize(text, unit, 0, Number.MAX_SAFE_INTEGER);
  editWizard({ cacheCapText: text, cacheCapUnit: unit, ...(r.ok ? { cacheCapBytes: r.value } : {}) });
}

/** The cache slider (MiB): the box follows, in the unit it shows. */
export function slideCacheCap(mib: number): void {
  const bytes = mib * SIZE_UNITS.MiB;
  const shown = inUnits(bytes, SIZE_UNITS);
  editWizard({ cacheCapBytes: bytes, cacheCapText: shown.text, cacheCapUnit: shown.unit });
}

/** The current step's fields in error. */
export function wizardErrors(w: WizardState): FieldErrors {
  return wizardFieldErrors(w.step, w, passphraseInputs(w));
}

/** Fields in error: nothing is sent; every field of the step now says what is wrong. */
function fieldsInError(w: WizardState): boolean {
  if (Object.keys(wizardErrors(w)).length === 0) return false;
  store.setState((s) => ({
    wizard: { ...s.wizard, attempted: true, refusals: s.wizard.refusals + 1, busy: false, error: null },
  }));
  return true;
}

function wizardFails(error: string): void {
  store.setState((s) => ({ wizard: { ...s.wizard, busy: false, error } }));
}

async function wizardRun(fn: () => Promise<Partial<WizardState> | void>, folder?: string): Promise<void> {
  store.setState((s) => ({ wizard: { ...s.wizard, busy: true, error: null, hostField: null } }));
  try {
    const change = await fn();
    store.setState((s) => ({ wizard: { ...s.wizard, ...(change ?? {}), busy: false } }));
  } catch (err) {
    const said = wizardHostError(messageOf(err), err instanceof HostError ? err.code : undefined, folder);
    if (said.field !== undefined) {
      const hostField = { field: said.field, text: said.text };
      store.setState((s) => ({ wizard: { ...s.wizard, busy: false, hostField } }));
    } else wizardFails(said.text);
  }
}

export function wizardBack(): void {
  const prev = previousStep(store.getState().wizard.step);
  if (prev) editWizard({ step: prev });
}

/** Step 1: check the typed keys with S3 (the host stores them in the keychain if S3 accepts them). */
export function submitKeys(): Promise<void> {
  const w = store.getState().wizard;
  if (fieldsInError(w)) return Promise.resolve();
  const problem = checkKeysStep(w);
  if (problem) return Promise.resolve(wizardFails(problem));
  return wizardRun(async () => {
    const out = await call((t) =>
      t.call('keys.check', {
        accessKeyId: w.accessKeyId.trim(),
        secretAccessKey: w.secretAccessKey,
        region: w.region.trim() || 'us-east-1',
        ...(w.endpoint.trim() ? { endpoint: w.endpoint.trim() } : {}),
        pathStyle: w.pathStyle,
      }),
    );
    // The secret leaves the renderer's state as soon as the host has it.
    return {
      keys: out.keys,
      buckets: out.buckets,
      secretAccessKey: '',
      step: nextStep('keys') as WizardStep,
      bucket: out.buckets?.[0] ?? '',
      // A permission check of other keys says nothing about these.
      check: null,
    };
  });
}

/** Step 1, keys already in the keychain: go on with them. */
export function useStoredKeys(): void {
  editWizard({ step: 'bucket', buckets: null, check: null });
}

/** Step 2: probe the permissions on bucket/prefix and whether a filespace lives there. */
export function submitBucket(): Promise<void> {
  const w = store.getState().wizard;
  if (fieldsInError(w)) return Promise.resolve();
  const problem = checkTargetStep(w.bucket, w.prefix);
  if (problem) return Promise.resolve(wizardFails(problem));
  return wizardRun(async () => {
    const check = await call((t) => t.call('bucket.check', { bucket: w.bucket.trim(), prefix: normalizePrefix(w.prefix) }));
    if (!check.ok) return { check, error: check.message };
    if (w.mode === 'create' && check.filespaceExists)
      return {
        check,
        error: 'A filespace already exists at this bucket and prefix: choose "Link an existing filespace", or another prefix.',
      };
    if (w.mode === 'link' && !check.filespaceExists)
      return { check, error: 'There is no filespace at this bucket and prefix: check them, or choose "Create a new filespace".' };
    const prefix = normalizePrefix(w.prefix);
    const name = (prefix.split('/').pop() || w.bucket.trim()).replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 64);
    return { check, step: 'passphrase' as WizardStep, name };
  });
}

/** Step 3: passphrase twice (create), or checked on the spot against the bucket (link). */
export function submitPassphrase(): Promise<void> {
  const w = store.getState().wizard;
  if (!w.kitShown && fieldsInError(w)) return Promise.resolve();
  if (w.mode === 'link' && w.recovering) return recoverPassphrase();
  const problem = checkPassphraseStep(w.mode, w.passphrase, w.repeat, passphraseInputs(w));
  if (problem) return Promise.resolve(wizardFails(problem));
  // Create: the recovery kit comes first, with a key made here (it leaves only with the link request).
  if (w.mode === 'create' && !w.kitShown) {
    editWizard({ kitShown: true, kitSaved: false, recoveryKey: w.recoveryKey || newRecoveryKey() });
    return Promise.resolve();
  }
  if (w.mode === 'create' && !w.kitSaved)
    return Promise.resolve(wizardFails('Print or save the recovery kit first, then tick the box'));
  return wizardRun(async () => {
    if (w.mode === 'link') {
      const probe = await call((t) =>
        t.call('filespace.probe', {
          target: { bucket: w.bucket.trim(), prefix: normalizePrefix(w.prefix) },
          passphrase: w.passphrase,
        }),
      );
      if (!probe.exists) throw new HostError('NO_FILESPACE', 'There is no filespace at this bucket and prefix.');
    }
    const s = await call((t) => t.call('filespace.suggest', { name: w.name }));
    return placeStep(w, s);
  });
}

/** The place step, with the host's suggestions for the folder and the cache. */
function placeStep(
  w: WizardState,
  s: { mountPoint: string; cacheCapBytes: number; cacheDiskFreeBytes: number },
): Partial<WizardState> {
  const shown = inUnits(s.cacheCapBytes, SIZE_UNITS);
  return {
    step: 'place',
    mountPoint: w.mountPoint || s.mountPoint,
    cacheCapBytes: s.cacheCapBytes,
    cacheCapText: shown.text,
    cacheCapUnit: shown.unit,
    cacheDiskFreeBytes: s.cacheDiskFreeBytes,
  };
}

/** Words the user gave elsewhere in the wizard, which a passphrase should not lean on. */
export function passphraseInputs(w: WizardState): string[] {
  return [w.bucket, normalizePrefix(w.prefix), w.name, w.accessKeyId].filter((x) => x.length > 0);
}

/** Back from the kit to the passphrase fields (a new kit is made for a changed passphrase). */
export function hideRecoveryKit(): void {
  editWizard({ kitShown: false, kitSaved: false });
}

/** Link with a lost passphrase: the recovery key sets the new one typed here, then linking goes on with it. */
function recoverPassphrase(): Promise<void> {
  const w = store.getState().wizard;
  const key = parseRecoveryKey(w.typedRecoveryKey);
  if (key === undefined) return Promise.resolve(wizardFails(`Recovery key: ${RECOVERY_KEY_HINT}`));
  const problem = checkPassphraseStep('create', w.passphrase, w.repeat, passphraseInputs(w));
  if (problem) return Promise.resolve(wizardFails(`New passphrase: ${problem}`));
  return wizardRun(async () => {
    const target = { bucket: w.bucket.trim(), prefix: normalizePrefix(w.prefix) };
    await call((t) => t.call('filespace.recover', { target, recoveryKey: key, newPassphrase: w.passphrase }));
    const s = await call((t) => t.call('filespace.suggest', { name: w.name }));
    return { recovering: false, typedRecoveryKey: '', ...placeStep(w, s) };
  });
}

export async function pickMountPoint(): Promise<void> {
  const picked = await transport?.pickFolder?.();
  if (picked) editWizard({ mountPoint: picked });
}

/** Step 4: check the folder, create or link, then mount and open the folder. */
export function submitPlace(): Promise<void> {
  const w = store.getState().wizard;
  if (fieldsInError(w)) return Promise.resolve();
  const problem = checkPlaceStep(w.mountPoint, w.cacheCapBytes, w.cacheDiskFreeBytes);
  if (problem) return Promise.resolve(wizardFails(problem));
  return wizardRun(async () => {
    await call((t) => t.call('mountpoint.check', { path: w.mountPoint.trim() }));
    const linked = await call((t) =>
      t.call('filespace.link', {
        mode: w.mode,
        target: { bucket: w.bucket.trim(), prefix: normalizePrefix(w.prefix) },
        passphrase: w.passphrase,
        name: w.name,
        mountPoint: w.mountPoint.trim(),
        cacheCapBytes: w.cacheCapBytes,
        ...(w.mode === 'create' && w.recoveryKey ? { recoveryKey: w.recoveryKey } : {}),
      }),
    );
    store.setState({ selected: linked.name });
    try {
      await call((t) => t.call('filespace.mount', { name: linked.name }));
    } catch (err) {
      // Another computer writes it: linked all the same; its card says who and offers the ways on.
      if (!(err instanceof HostError && err.code === 'LEASE_HELD')) throw err;
      await showSecondMachine(linked.name);
      store.setState({ screen: 'status', notice: `Linked "${linked.name}": another computer is writing it` });
      return { ...initialWizard, keys: w.keys };
    }
    await transport?.openFolder?.(linked.mountPoint);
    store.setState({ screen: 'status', notice: `Mounted "${linked.name}" at ${linked.mountPoint}` });
    return { ...initialWizard, keys: w.keys };
  }, w.mountPoint.trim());
}

/** "Try it locally": the embedded demo store, no AWS. */
export function tryLocally(): Promise<void> {
  return wizardRun(async () => {
    const demo = await call((t) => t.call('filespace.demo', {}));
    await transport?.openFolder?.(demo.mountPoint);
    store.setState({ screen: 'status', selected: demo.name, notice: `Mounted the local demo at ${demo.mountPoint}` });
  });
}

// ---- status actions -----------------------------------------------------------------------

/** Records a failed action as a problem (of `filespace`, if it concerns one). */
function actionFailed(err: unknown, filespace?: string, self?: () => Promise<void>): void {
  store.setState((s) => ({
    notice: null,
    errors: recordProblem(s.errors, {
      message: messageOf(err),
      at: Date.now(),
      source: 'action',
      ...(filespace !== undefined ? { filespace } : {}),
      ...(err instanceof HostError ? { code: err.code } : {}),
      ...(self ? { retry: self } : {}),
    }),
  }));
}

async function statusAction(
  fn: () => Promise<unknown>,
  done?: { text: string; tone?: 'ok' | 'info'; filespace?: string },
  self?: () => Promise<void>,
): Promise<void> {
  try {
    await fn();
    store.setState((s) => ({
      notice: done?.text ?? null,
      noticeTone: done?.tone ?? 'ok',
      // The action worked: its earlier failures on this filespace are over.
      errors:
        done?.filespace === undefined
          ? s.errors
          : s.errors.filter((e) => !(e.source === 'action' && e.filespace === done.filespace)),
    }));
  } catch (err) {
    actionFailed(err, done?.filespace, self);
  }
}

/** Dismisses a problem from the list (and from its card). */
export function dismiss(entry: ErrorEntry): void {
  store.setState((s) => ({ errors: s.errors.filter((e) => e.key !== entry.key) }));
}

/** Runs a retryable error's action again; the entry leaves the list first (a new failure adds it back). */
export async function retry(entry: ErrorEntry): Promise<void> {
  if (!entry.retry) return;
  dismiss(entry);
  await entry.retry();
}

export const mount = (name: string): Promise<void> => mountAs(name, 'write', false);

// ---- several computers ----------------------------------------------------------------------

function without<T>(rec: Record<string, T>, name: string): Record<string, T> {
  return Object.fromEntries(Object.entries(rec).filter(([n]) => n !== name));
}

/** Asks the host who writes `name` and opens the card's choice (read-only here, or take over). */
export async function showSecondMachine(name: string): Promise<void> {
  const info = await call((t) => t.call('filespace.writer', { name })).catch(() => ({ writer: null }));
  store.setState((s) => ({ secondMachine: { ...s.secondMachine, [name]: { writer: info.writer, confirmTakeover: false } } }));
}

/**
 * Mounts as writer (the default), follower ('read'), or taking the write lease over. A lease
 * held by another computer is not an error but a choice: the card then says who writes.
 */
export async function mountAs(name: string, mode: 'write' | 'read', takeover: boolean): Promise<void> {
  try {
    await call((t) => t.call('filespace.mount', { name, mode, takeover }));
    store.setState((s) => ({
      noticeTone: 'ok',
      // The mount worked: its earlier failures on this filespace are over.
      errors: s.errors.filter((e) => !(e.source === 'action' && e.filespace === name)),
      notice: takeover
        ? `Took over "${name}": this computer writes it now`
        : mode === 'read'
          ? `Opened "${name}" read-only`
          : `Mounted "${name}"`,
      secondMachine: without(s.secondMachine, name),
      takeoverAsked: without(s.takeoverAsked, name),
    }));
  } catch (err) {
    if (err instanceof HostError && err.code === 'LEASE_HELD') {
      store.setState((s) => ({ notice: null, takeoverAsked: without(s.takeoverAsked, name) }));
      if (selectFilespaces(store.getState()).find((f) => f.name === name)?.status.state !== 'mounted')
        await showSecondMachine(name);
      else actionFailed(err, name);
      return;
    }
    actionFailed(err, name, () => mountAs(name, mode, takeover));
  }
}

/** Opens or closes the takeover confirmation (on an unmounted card with a writer elsewhere, or a following one). */
export function askTakeover(name: string, open: boolean): void {
  store.setState((s) => {
    const sm = s.secondMachine[name];
    return {
      takeoverAsked: open ? { ...s.takeoverAsked, [name]: true } : without(s.takeoverAsked, name),
      ...(sm ? { secondMachine: { ...s.secondMachine, [name]: { ...sm, confirmTakeover: open } } } : {}),
    };
  });
}

export function dismissSecondMachine(name: string): void {
  store.setState((s) => ({ secondMachine: without(s.secondMachine, name) }));
}

// ---- changes set aside ----------------------------------------------------------------------

function editAside(name: string, change: Partial<AsideUi>): void {
  store.setState((s) => {
    const cur = s.aside[name] ?? { sets: null, saving: null, discarding: null, message: null };
    return { aside: { ...s.aside, [name]: { ...cur, ...change } } };
  });
}

export async function loadAside(name: string): Promise<void> {
  try {
    const { sets } = await call((t) => t.call('aside.list', { name }));
    editAside(name, { sets });
  } catch (err) {
    editAside(name, { message: messageOf(err) });
  }
}

/** Opens "Save a copy to…" for one set: the folder picker where there is one, else a folder field. */
export function askSaveAside(name: string, id: string | null): void {
  editAside(name, { saving: id, discarding: null, message: null });
}

/** Opens the discard confirmation (which lists the files that would be lost). */
export async function askDiscardAside(name: string, id: string | null): Promise<void> {
  editAside(name, { discarding: id, saving: null, message: null });
  if (id) await loadAside(name);
}

export async function saveAside(name: string, id: string, dir: string): Promise<void> {
  try {
    const r = await call((t) => t.call('aside.export', { name, id, dir: dir.trim() }));
    editAside(name, { saving: null, message: `Saved a copy of ${r.files} file${r.files === 1 ? '' : 's'} to ${r.dir}` });
  } catch (err) {
    editAside(name, { message: messageOf(err) });
  }
}

export async function discardAside(name: string, id: string): Promise<void> {
  try {
    await call((t) => t.call('aside.discard', { name, id }));
    editAside(name, { discarding: null, sets: null, message: 'The set-aside changes were discarded' });
  } catch (err) {
    editAside(name, { message: messageOf(err) });
  }
}
/** Unmounts; a mount in use is not an error but a question: the card then offers to detach it. */
export async function unmount(name: string, force = false): Promise<void> {
  const clear = (s: State) => Object.fromEntries(Object.entries(s.unmountBusy).filter(([n]) => n !== name));
  try {
    await call((t) => t.call('filespace.unmount', { name, force }));
    store.setState((s) => ({ notice: `Unmounted "${name}"`, unmountBusy: clear(s) }));
  } catch (err) {
    if (err instanceof HostError && treatmentOf(err.code) === 'in-use') {
      store.setState((s) => ({ notice: null, unmountBusy: { ...clear(s), [name]: err.message } }));
    } else {
      store.setState((s) => ({ unmountBusy: clear(s) }));
      actionFailed(err, name, () => unmount(name, force));
    }
  }
}
export const setPaused = (paused: boolean): Promise<void> =>
  statusAction(
    () => call((t) => t.call('uploads.pause', { paused })),
    paused
      ? { text: 'Uploads paused: changes wait on this computer until you resume', tone: 'info' }
      : { text: 'Uploads resumed' },
    () => setPaused(paused),
  );
export const openFolder = (p: string) => statusAction(async () => transport?.openFolder?.(p));

// ---- settings -----------------------------------------------------------------------------

export async function loadSettings(name: string | null): Promise<void> {
  store.setState({ selected: name, machine: null, settingsError: null, settingsMessage: null });
  try {
    store.setState({ appSettings: await call((t) => t.call('app.settings.get', {})) });
    if (!name) return;
    const machine = await call((t) => t.call('settings.get', { name }));
    store.setState({ machine });
  } catch (err) {
    store.setState({ settingsError: wordsOf(err) });
  }
}

function note(field: string, n: FieldNote | null): void {
  store.setState((s) => {
    const fieldNotes = { ...s.fieldNotes };
    if (n) fieldNotes[field] = n;
    else delete fieldNotes[field];
    return { fieldNotes };
  });
}

/** Clears what a field said about its last change (the user edits it again). */
export const clearNote = (field: string): void => note(field, null);

/**
 * Changes settings of the selected filespace; beside `field` then reads what `done` says of
 * the machine settings after the change ("Cache limit is now 50 GiB"), or why it failed.
 */
export async function changeSettings(
  field: string,
  change: SettingsChange,
  done: (m: MachineSettings) => string = () => 'Saved',
): Promise<void> {
  const name = store.getState().selected;
  if (!name) return;
  try {
    const r = await call((t) => t.call('settings.set', { name, change }));
    const machine = await call((t) => t.call('settings.get', { name }));
    store.setState({ machine, settingsError: null });
    note(field, { tone: 'ok', text: `${done(machine)}${r.applied === 'live' ? '' : ' (from the next mount)'}` });
  } catch (err) {
    note(field, { tone: 'error', text: wordsOf(err) });
  }
}

export async function forgetKeys(): Promise<void> {
  try {
    await call((t) => t.call('keys.forget', {}));
    note('keys', { tone: 'ok', text: 'The AWS keys were removed from the keychain' });
  } catch (err) {
    note('keys', { tone: 'error', text: wordsOf(err) });
  }
}

export async function unlink(name: string, discardPending: boolean): Promise<void> {
  try {
    await call((t) => t.call('filespace.unlink', { name, discardPending }));
    store.setState({
      settingsMessage: `Unlinked "${name}" (it stays in the bucket)`,
      settingsError: null,
      selected: null,
      machine: null,
    });
  } catch (err) {
    note('unlink', { tone: 'error', text: wordsOf(err) });
  }
}

export async function changeAppSettings(change: { startAtLogin?: boolean; mountAtStart?: string[] }): Promise<void> {
  try {
    const appSettings = await call((t) => t.call('app.settings.set', change));
    store.setState({ appSettings, settingsError: null });
    note('app', { tone: 'ok', text: 'Saved' });
  } catch (err) {
    note('app', { tone: 'error', text: wordsOf(err) });
  }
}

export async function moveCache(cacheDir: string): Promise<void> {
  const name = store.getState().selected;
  if (!name) return;
  try {
    const machine = await call((t) => t.call('settings.moveCache', { name, cacheDir }));
    store.setState({ machine, settingsError: null });
    note('cacheDir', { tone: 'ok', text: `The cache is now in ${machine.cacheDir}` });
  } catch (err) {
    note('cacheDir', { tone: 'error', text: wordsOf(err) });
  }
}
