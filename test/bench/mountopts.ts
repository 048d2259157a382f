/**
 * The product's libfuse2 mount options (see FuseMount's option string in
 * native/fuse/adapter.ts) with the engine's default timeouts, for the ceiling filesystem and
 * for the report. Kept apart from nullfs.ts so reading it does not load the fuse addon.
 */

import { DEFAULT_SETTINGS } from '../../electron/engine/config';

export function productMountOptions(fsName: string): string[] {
  const s = DEFAULT_SETTINGS;
  const list = [
    `fsname=${fsName}`,
    'subtype=filespace',
    'big_writes',
    'max_write=131072',
    'max_read=131072',
    'use_ino',
    `attr_timeout=${s.attrTimeoutSec}`,
    `entry_timeout=${s.entryTimeoutSec}`,
    `negative_timeout=${s.negativeTimeoutSec}`,
    'default_permissions',
  ];
  if (process.getuid?.() === 0) list.push('allow_other');
  return list;
}
