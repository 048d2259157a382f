/**
 * Changing the per-machine settings of a linked filespace: live when it is mounted (by this
 * process or another), else saved for the next mount.
 */

import { resolveSettings } from '../engine/config';
import { UserError } from '../engine/errors';
import { Homes, LinkConfig, saveConfig, socketPath } from './config';
import { callControl, ControlClientError } from './control';
import { settingFromKey } from './mountHost';

/** Applies one `filespace set` change: live to a running mount, else saved for the next mount. */
export async function applySetting(h: Homes, cfg: LinkConfig, key: string, value: string): Promise<'live' | 'next-mount'> {
  const change = settingFromKey(key, value);
  try {
    resolveSettings({ ...(cfg.settings as object), ...change });
  } catch (err) {
    throw new UserError((err as Error).message, 'BAD_SETTING');
  }
  try {
    await callControl(socketPath(h, cfg.name), '/v1/set', { key: key as 'cache-size', value });
    return 'live';
  } catch (err) {
    if (!(err instanceof ControlClientError && err.code === 'NOT_RUNNING')) throw err;
    await saveConfig(h, { ...cfg, settings: { ...cfg.settings, ...change } });
    return 'next-mount';
  }
}
