/**
 * Changing the per-machine settings of a linked filespace, as typed values: applied live to a
 * mount this process runs (called directly), or to a mount another process runs (over its
 * control socket), else saved for the next mount. The values are checked once, by whoever
 * applies them: the running engine, or resolveSettings here when nothing runs (and, for the
 * cache cap, the room pinned data needs: host/pins.ts).
 */

import type { SettingsChange } from '../contract/api';
import { EngineSettings, resolveSettings } from '../engine/config';
import { Homes, LinkConfig, saveConfig, socketPath } from './config';
import { callControl, notRunning } from './control';
import type { MountHost } from './mountHost';

/** Compile-time check: every setting the contract lets a user change is an engine setting of that name and unit. */
type NotEngineSettings = Exclude<keyof SettingsChange, keyof EngineSettings>;
export const CONTRACT_SETTINGS_ARE_ENGINE_SETTINGS: [NotEngineSettings] extends [never] ? true : never = true;
const asEngineSettings = (c: SettingsChange): Partial<EngineSettings> => c;

/**
 * Applies `change` to the filespace `cfg` names. `mounted` is this process's own mount of it,
 * if any. Resolves to whether the change is in force now or at the next mount.
 */
export async function applySettings(
  h: Homes,
  cfg: LinkConfig,
  change: SettingsChange,
  mounted?: MountHost,
): Promise<'live' | 'next-mount'> {
  if (mounted) {
    await mounted.updateSettings(change);
    return 'live';
  }
  try {
    await callControl(socketPath(h, cfg.name), '/v1/set', change);
    return 'live';
  } catch (err) {
    if (!notRunning(err)) throw err;
  }
  const settings = { ...cfg.settings, ...asEngineSettings(change) };
  const resolved = resolveSettings(settings);
  // Pinned data must still fit (a running engine checks this itself).
  if (change.cacheCapBytes !== undefined) await (await import('./pins')).checkCapForPinsUnmounted(cfg, resolved.cacheCapBytes);
  await saveConfig(h, { ...cfg, settings });
  return 'next-mount';
}
