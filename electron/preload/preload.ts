/**
 * The renderer's only way out of its sandbox: `window.filespace`, exposed with contextBridge.
 * It forwards contract requests to main over one invoke channel and host status events back;
 * raw ipcRenderer is never exposed, and main validates everything it receives.
 */

import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron';
import { IPC_EVENT, IPC_INVOKE, IPC_OPEN_FOLDER, IPC_PICK_FOLDER, IPC_PICK_PIN } from '../contract/app';

contextBridge.exposeInMainWorld('filespace', {
  invoke: (route: string, body: unknown) => ipcRenderer.invoke(IPC_INVOKE, route, body),
  onEvent: (listener: (e: unknown) => void) => {
    const wrapped = (_: IpcRendererEvent, e: unknown) => listener(e);
    ipcRenderer.on(IPC_EVENT, wrapped);
    return () => ipcRenderer.removeListener(IPC_EVENT, wrapped);
  },
  pickFolder: () => ipcRenderer.invoke(IPC_PICK_FOLDER),
  pickPin: (name: string) => ipcRenderer.invoke(IPC_PICK_PIN, name),
  openFolder: (path: string) => ipcRenderer.invoke(IPC_OPEN_FOLDER, path),
});
