/**
 * Electron composition root: starts the AppHost (the same engines and contract the loopback
 * host serves), one window for the renderer, the tray, and the quit guard. Everything with
 * logic lives in plain-Node modules (appHost, tray, quitGuard, and host/dispatch.ts); this file only wires
 * Electron's APIs to them.
 *
 * Window security: contextIsolation on, nodeIntegration off, sandbox on, a strict CSP header on
 * every response, navigation and new windows refused; IPC accepted only from our own page.
 */

import * as path from 'node:path';
import {
  app,
  BrowserWindow,
  dialog,
  ipcMain,
  Menu,
  nativeImage,
  session,
  shell,
  Tray,
  type IpcMainInvokeEvent,
  type MenuItemConstructorOptions,
} from 'electron';
import {
  appRoutes,
  IPC_EVENT,
  IPC_INVOKE,
  IPC_OPEN_FOLDER,
  IPC_PICK_FOLDER,
  IPC_PICK_PIN,
  type AppRequest,
  type AppRoute,
  type AppStatus,
} from '../contract/app';
import { homes } from '../host/config';
import { tuneHeapForEngines } from '../host/engineHeap';
import { dispatch, type Outcome } from '../host/dispatch';
import { log } from '../host/log';
import { OsKeychain } from '../../native/keychain';
import { AppHost } from './appHost';
import { guardQuit } from './quitGuard';
import { CSP } from './server';
import { trayModel, type TrayAction, type TrayIconState } from './tray';
import { CredentialVault } from './vault';

const RENDERER_DIR = path.resolve(__dirname, '..', '..', 'renderer');
const INDEX = path.join(RENDERER_DIR, 'index.html');
const ICONS = path.resolve(__dirname, '..', '..', '..', 'build', 'tray');

let win: BrowserWindow | undefined;
let tray: Tray | undefined;
let quitting = false;

function trustedSender(e: IpcMainInvokeEvent): boolean {
  const url = e.senderFrame?.url ?? '';
  return (
    win !== undefined && e.sender === win.webContents && url.startsWith('file://') && decodeURI(new URL(url).pathname) === INDEX
  );
}

function openWindow(): void {
  if (win && !win.isDestroyed()) {
    win.show();
    win.focus();
    return;
  }
  win = new BrowserWindow({
    width: 900,
    height: 720,
    show: false,
    title: 'Filespace',
    webPreferences: {
      preload: path.resolve(__dirname, '..', '..', 'app', 'preload.js'),
      contextIsolation: true,
      nodeIntegration: false,
      sandbox: true,
      webSecurity: true,
      spellcheck: false,
    },
  });
  win.webContents.on('will-navigate', (e) => e.preventDefault());
  win.webContents.setWindowOpenHandler(() => ({ action: 'deny' }));
  win.once('ready-to-show', () => win?.show());
  win.on('close', (e) => {
    // Closing the window keeps the app (and its mounts) running in the tray.
    if (!quitting) {
      e.preventDefault();
      win?.hide();
    }
  });
  void win.loadFile(INDEX);
}

function applyTray(status: AppStatus, host: AppHost): void {
  const model = trayModel(status);
  const icon = (state: TrayIconState) => nativeImage.createFromPath(path.join(ICONS, `${state}.png`));
  if (!tray) tray = new Tray(icon(model.icon));
  tray.setImage(icon(model.icon));
  tray.setToolTip(model.tooltip);
  const toMenu = (items: typeof model.items): MenuItemConstructorOptions[] =>
    items.map((it) =>
      it.type === 'separator'
        ? { type: 'separator' as const }
        : {
            label: it.label,
            enabled: it.enabled,
            ...(it.checked !== undefined ? { type: 'checkbox' as const, checked: it.checked } : {}),
            click: it.action ? () => void runTrayAction(it.action!, host) : undefined,
          },
    );
  tray.setContextMenu(Menu.buildFromTemplate(toMenu(model.items)));
}

async function runTrayAction(a: TrayAction, host: AppHost): Promise<void> {
  const request = <R extends AppRoute>(route: R, body: AppRequest<R>) => dispatch(appRoutes, host.handlers, route, body, log);
  const report = (out: Outcome) => {
    if (!out.ok) dialog.showErrorBox('Filespace', out.error.message);
  };
  switch (a.kind) {
    case 'mount':
      return report(await request('filespace.mount', { name: a.name }));
    case 'unmount':
      return report(await request('filespace.unmount', { name: a.name }));
    case 'open-folder':
      return void (await shell.openPath(a.path));
    case 'open-window':
      return openWindow();
    case 'pause':
      return report(await request('uploads.pause', { paused: a.paused }));
    case 'quit':
      return app.quit();
  }
}

async function start(): Promise<void> {
  tuneHeapForEngines();
  const host = new AppHost({
    homes: homes(),
    vault: new CredentialVault(new OsKeychain('Filespace')),
    log,
    onAppSettings: (s) => app.setLoginItemSettings({ openAtLogin: s.startAtLogin }),
  });
  await host.init();

  session.defaultSession.webRequest.onHeadersReceived((details, cb) => {
    cb({ responseHeaders: { ...details.responseHeaders, 'Content-Security-Policy': [CSP] } });
  });
  // Only copying to the clipboard (the IAM policy) is allowed; camera, notifications etc. are refused.
  session.defaultSession.setPermissionRequestHandler((_wc, perm, cb) => cb(perm === 'clipboard-sanitized-write'));

  ipcMain.handle(IPC_INVOKE, async (e, route: unknown, body: unknown) => {
    if (!trustedSender(e)) return { ok: false, error: { code: 'FORBIDDEN', message: 'request from an untrusted page' } };
    const out = await dispatch(appRoutes, host.handlers, route, body, log);
    return out.ok ? { ok: true, data: out.data } : { ok: false, error: out.error };
  });
  ipcMain.handle(IPC_PICK_FOLDER, async (e) => {
    if (!trustedSender(e) || !win) return undefined;
    const r = await dialog.showOpenDialog(win, {
      properties: ['openDirectory', 'createDirectory'],
      title: 'Choose an empty folder to mount the filespace in',
    });
    return r.canceled ? undefined : r.filePaths[0];
  });
  ipcMain.handle(IPC_PICK_PIN, async (e, name: unknown) => {
    if (!trustedSender(e) || !win || typeof name !== 'string') return undefined;
    const f = (await host.status()).filespaces.find((x) => x.name === name);
    if (!f) return undefined;
    const r = await dialog.showOpenDialog(win, {
      defaultPath: f.mountPoint,
      properties: ['openDirectory'],
      title: 'Choose a folder to keep on this computer',
    });
    return r.canceled ? undefined : r.filePaths[0];
  });
  ipcMain.handle(IPC_OPEN_FOLDER, async (e, p: unknown) => {
    if (!trustedSender(e) || typeof p !== 'string') return;
    // Only folders of linked filespaces, and snapshots this app mounted, may be opened from the renderer.
    const known = (await host.status()).filespaces.some((f) => f.mountPoint === p) || host.servesSnapshotAt(p);
    if (known) await shell.openPath(p);
  });

  host.subscribe((e) => {
    applyTray(e.status, host);
    if (win && !win.isDestroyed()) win.webContents.send(IPC_EVENT, e);
  });

  app.on('before-quit', (e) => {
    if (quitting) return;
    e.preventDefault();
    void guardQuit(host, {
      ask: async (message, detail, buttons) =>
        (await dialog.showMessageBox({ type: 'warning', message, detail, buttons: [...buttons], defaultId: 0, cancelId: 2 }))
          .response,
    }).then((r) => {
      if (r === 'quit') {
        quitting = true;
        app.quit();
      }
    });
  });
  app.on('window-all-closed', () => undefined); // the tray keeps running
  app.on('activate', openWindow);
  openWindow();
  for (const r of await host.mountAtStart()) {
    if (r.error) dialog.showErrorBox('Filespace', `Could not mount "${r.name}" at start: ${r.error}`);
  }
}

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.on('second-instance', openWindow);
  void app
    .whenReady()
    .then(start)
    .catch((err) => {
      dialog.showErrorBox('Filespace could not start', err instanceof Error ? err.message : String(err));
      app.exit(1);
    });
}
