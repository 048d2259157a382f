/**
 * The tray icon and its menu as data: a pure function of the app status, so the wording, the
 * order and which entries are enabled are tested in plain Node, and main.ts only turns the
 * model into an Electron Menu and routes the chosen action.
 *
 * Icon: 'error' when a filespace reports an error, else 'offline' when one cannot reach its
 * store, else 'syncing' while a mounted one has changes to upload, else 'idle'.
 */

import type { AppStatus } from '../contract/app';
import { syncLine } from '../contract/format';

export type TrayIconState = 'idle' | 'syncing' | 'offline' | 'error';

export type TrayAction =
  | { readonly kind: 'mount'; readonly name: string }
  | { readonly kind: 'unmount'; readonly name: string }
  | { readonly kind: 'open-folder'; readonly path: string }
  | { readonly kind: 'open-window' }
  | { readonly kind: 'pause'; readonly paused: boolean }
  | { readonly kind: 'quit' };

export type TrayItem =
  | { readonly type: 'separator' }
  | {
      readonly type: 'item';
      readonly label: string;
      readonly enabled: boolean;
      readonly action?: TrayAction;
      readonly checked?: boolean;
    };

export interface TrayModel {
  readonly icon: TrayIconState;
  readonly tooltip: string;
  readonly items: readonly TrayItem[];
}

export function trayIconState(status: AppStatus): TrayIconState {
  const fs = status.filespaces.map((f) => f.status);
  if (fs.some((s) => s.state === 'error' || s.lastError !== null)) return 'error';
  if (fs.some((s) => s.state === 'mounted' && s.offline)) return 'offline';
  if (fs.some((s) => s.state === 'mounted' && (s.dirtyBytes > 0 || s.dirtyFiles > 0 || s.pendingMetaOps > 0))) return 'syncing';
  return 'idle';
}

const TOOLTIPS: Record<TrayIconState, string> = {
  idle: 'Filespace: everything is in the bucket',
  syncing: 'Filespace: uploading',
  offline: 'Filespace: offline, changes wait in the cache',
  error: 'Filespace: a filespace reports an error',
};

export function trayModel(status: AppStatus): TrayModel {
  const icon = trayIconState(status);
  const items: TrayItem[] = [];
  for (const f of status.filespaces) {
    const s = f.status;
    const mounted = s.state === 'mounted';
    items.push({ type: 'item', label: `${f.name} — ${s.state}`, enabled: false });
    items.push({ type: 'item', label: `    ${syncLine(s)}`, enabled: false });
    items.push(
      mounted
        ? { type: 'item', label: 'Unmount', enabled: true, action: { kind: 'unmount', name: f.name } }
        : { type: 'item', label: 'Mount', enabled: s.state === 'unmounted', action: { kind: 'mount', name: f.name } },
    );
    items.push({ type: 'item', label: 'Open folder', enabled: mounted, action: { kind: 'open-folder', path: f.mountPoint } });
    items.push({ type: 'separator' });
  }
  if (status.filespaces.length === 0)
    items.push({ type: 'item', label: 'No filespace linked yet', enabled: false }, { type: 'separator' });
  items.push({ type: 'item', label: 'Open Filespace', enabled: true, action: { kind: 'open-window' } });
  items.push({
    type: 'item',
    label: 'Pause uploads',
    enabled: true,
    checked: status.uploadsPaused,
    action: { kind: 'pause', paused: !status.uploadsPaused },
  });
  items.push({ type: 'separator' });
  items.push({ type: 'item', label: 'Quit Filespace', enabled: true, action: { kind: 'quit' } });
  return { icon, tooltip: TOOLTIPS[icon], items };
}
