/**
 * Uploading everything a linked filespace has waiting: by its running mount, whichever process
 * runs it (over its control socket), or, when nothing runs it, by an engine opened without a
 * mount just for that and closed again.
 */

import type { SyncResult } from '../contract/api';
import type { Engine } from '../engine/engine';
import { Homes, LinkConfig, readPassphraseFile, settingsOf, socketPath } from './config';
import { callControl, notRunning } from './control';

/** How much longer than the sync itself a running mount may take to answer. */
const ANSWER_MARGIN_MS = 30_000;

export async function syncLinked(h: Homes, cfg: LinkConfig, timeoutMs: number, log: (msg: string) => void): Promise<SyncResult> {
  try {
    return await callControl(socketPath(h, cfg.name), '/v1/sync', { timeoutMs }, timeoutMs + ANSWER_MARGIN_MS);
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
  // The engine is loaded only now: a sync of a running mount is a control call, and starts fast.
  const [{ Engine }, { checkLinkedFilespace, unlockFilespace }, { openStore }] = await Promise.all([
    import('../engine/engine'),
    import('../engine/filespace'),
    import('./stores'),
  ]);
  const store = openStore(cfg.store);
  let engine: Engine;
  try {
    const { header, keys } = await unlockFilespace(store, await readPassphraseFile(cfg.passphraseFile));
    checkLinkedFilespace(header, cfg.filespaceId, cfg.name, store);
    engine = await Engine.open({ store, keys, header, cacheDir: cfg.cacheDir, settings: settingsOf(cfg), log, name: cfg.name });
  } catch (err) {
    await store.close().catch(() => undefined);
    throw err;
  }
  try {
    const done = await engine.sync(Date.now() + timeoutMs);
    const st = engine.stats();
    return { done, dirtyBytes: st.dirtyBytes, pendingMetaOps: st.pendingMetaOps, notWriting: engine.notWriting ?? null };
  } finally {
    await engine.close();
  }
}
