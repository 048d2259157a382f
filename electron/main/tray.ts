/**
 * The tray icon and its menu as data: a pure function of the app status, so the wording, the
 * order and which entries are enabled are tested in plain Node, and main.ts only turns the
 * model into an Electron Menu and routes the chosen action.
 *
 * Each filespace shows the same headline as its card in the window (contract/headline.ts). The
 * icon shows the state that most needs the user, in this order: 'error' (a filespace reports an
 * error or failed to mount), 'waiting' (writes wait for room in a full cache), 'offline',
 * 'paused' (uploads are paused), 'syncing' (a mounted filespace has changes to upload),
 * 'read-only' (a mounted filespace follows another computer), else 'idle'. The tooltip is the
 * headline of the filespace that decided the icon.
 */

import type { AppStatus, FilespaceSummary } from '../contract/app';
import { statusHeadline } from '../contract/headline';

/** Icon states, least pressing first. */
export const TRAY_ICON_STATES = ['idle', 'read-only', 'syncing', 'paused', 'offline', 'waiting', 'error'] as const;
export type TrayIconState = (typeof TRAY_ICON_STATES)[number];

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

/** The icon state one filespace asks for (with the app-wide pause). */
function iconOf(f: FilespaceSummary, uploadsPaused: boolean): TrayIconState {
  const s = f.status;
  if (s.state === 'error' || s.lastError !== null) return 'error';
  if (s.state !== 'mounted') return 'idle';
  const kind = statusHeadline(s).kind;
  if (kind === 'writes-waiting') return 'waiting';
  if (s.offline) return 'offline';
  if (kind === 'read-only') return 'read-only';
  if (uploadsPaused || s.uploadsPaused) return 'paused';
  if (s.dirtyBytes > 0 || s.dirtyFiles > 0 || s.pendingMetaOps > 0) return 'syncing';
  return 'idle';
}

/** The filespace that decides the icon (the first with the most pressing state), if any. */
function decidingFilespace(status: AppStatus): { icon: TrayIconState; f?: FilespaceSummary } {
  let best: { icon: TrayIconState; f?: FilespaceSummary } = { icon: 'idle' };
  for (const f of status.filespaces) {
    const icon = iconOf(f, status.uploadsPaused);
    if (TRAY_ICON_STATES.indexOf(icon) > TRAY_ICON_STATES.indexOf(best.icon)) best = { icon, f };
  }
  return best;
}

export function trayIconState(status: AppStatus): TrayIconState {
  return decidingFilespace(status).icon;
}

function tooltipOf(status: AppStatus): string {
  const { icon, f } = decidingFilespace(status);
  if (!f) return status.filespaces.length === 0 ? 'Filespace: no filespace linked yet' : 'Filespace: everything is in the bucket';
  if (icon === 'error' && f.status.state !== 'error') return `Filespace: ${f.name} reports a problem; open Filespace to see it`;
  return `Filespace: ${f.name} — ${statusHeadline(f.status).text}`;
}

export function trayModel(status: AppStatus): TrayModel {
  const icon = trayIconState(status);
  const items: TrayItem[] = [];
  for (const f of status.filespaces) {
    const s = f.status;
    const mounted = s.state === 'mounted';
    items.push({ type: 'item', label: f.name, enabled: false });
    items.push({ type: 'item', label: `    ${statusHeadline(s).text}`, enabled: false });
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
  return { icon, tooltip: tooltipOf(status), items };
}
