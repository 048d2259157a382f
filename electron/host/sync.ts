/**
 * Uploading everything a linked filespace has waiting: by its running mount, whichever process
 * runs it (over its control socket), or, when nothing runs it, by an engine opened without a
 * mount just for that and closed again.
 */

import type { SyncResult } from '../contract/api';
import { Engine } from '../engine/engine';
import { checkLinkedFilespace, unlockFilespace } from '../engine/filespace';
import { Homes, LinkConfig, readPassphraseFile, socketPath } from './config';
import { callControl, notRunning } from './control';
import { settingsOf } from './mountHost';
import { openStore } from './stores';

/** How much longer than the sync itself a running mount may take to answer. */
const ANSWER_MARGIN_MS = 30_000;

export async function syncLinked(h: Homes, cfg: LinkConfig, timeoutMs: number, log: (msg: string) => void): Promise<SyncResult> {
  try {
    return await callControl(socketPath(h, cfg.name), '/v1/sync', { timeoutMs }, timeoutMs + ANSWER_MARGIN_MS);
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
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
