/**
 * Quitting with changes not yet in the bucket: say how much is pending and offer to wait for
 * the uploads, to quit anyway (the data stays in the local cache and uploads at the next
 * mount), or to cancel. The dialog and the host are small interfaces, so the decision logic is
 * tested in plain Node; main.ts passes Electron's dialog.
 */

import { formatBytes } from '../contract/format';
import { countOf, type Pending } from '../contract/headline';

export interface QuitDialog {
  /** Shows a question; resolves to the index of the chosen button. */
  ask(message: string, detail: string, buttons: readonly string[]): Promise<number>;
}

export interface QuitHost {
  /** What the mounts of this app have not uploaded yet (`pendingOf` their statuses). */
  pending(): Promise<Pending>;
  /** Waits for uploads; resolves to whether everything was uploaded in time. */
  syncAll(timeoutMs: number): Promise<boolean>;
  /** Unmounts everything; pending data stays in the caches. */
  shutdown(): Promise<void>;
}

export const QUIT_BUTTONS = ['Wait for uploads', 'Quit anyway', 'Cancel'] as const;

/** What is not in the bucket yet, counted and worded as the status headline does (pendingOf, formatBytes). */
export function pendingMessage(p: Pending): string | undefined {
  if (p.bytes === 0 && p.files === 0 && p.metaOps === 0) return undefined;
  if (p.files === 0 && p.bytes === 0)
    return `${countOf(p.metaOps, 'change')} ${p.metaOps === 1 ? 'is' : 'are'} not in the bucket yet.`;
  return `${countOf(p.files, 'file')} (${formatBytes(p.bytes)}) ${p.files === 1 ? 'is' : 'are'} not in the bucket yet.`;
}

/**
 * Runs the quit decision. Resolves to 'quit' once everything is unmounted, or 'cancel' when the
 * user chose to keep the app running.
 */
export async function guardQuit(host: QuitHost, dialog: QuitDialog, waitSliceMs = 60_000): Promise<'quit' | 'cancel'> {
  for (;;) {
    const message = pendingMessage(await host.pending());
    if (!message) break;
    const choice = await dialog.ask(
      message,
      'Quit anyway keeps them in the local cache; they upload the next time the filespace is mounted.',
      QUIT_BUTTONS,
    );
    if (choice === 1) break;
    if (choice !== 0) return 'cancel';
    // Wait: sync for a while, then ask again with what is still pending.
    if (await host.syncAll(waitSliceMs)) break;
  }
  await host.shutdown();
  return 'quit';
}
