/**
 * `filespace pin NAME PATH…`, `filespace pin NAME --list` and `filespace unpin NAME PATH…`:
 * argument parsing and printing over host/pins.ts. A PATH is a path inside the mount point, or
 * a path inside the filespace (host/pins.ts says how one is told from the other). Works on a
 * running mount (through its control socket) and on an unmounted filespace (the pin is
 * recorded, and its data downloaded at the next mount).
 */

import { parseArgs } from 'node:util';
import type { PinStatusDto } from '../contract/api';
import { formatBytes } from '../contract/format';
import { homes, loadConfig } from '../host/config';
import { HostError } from '../host/errors';
import { filespacePathOf, pinLinked, pinsUnmounted, unpinLinked } from '../host/pins';
import { statusOf } from '../host/status';

/** "Photos: 12.4 of 18.0 GiB local" as a line of the list. */
export function pinLine(p: PinStatusDto): string {
  const done = p.totalBytes > 0 && p.localBytes >= p.totalBytes ? ' (all local)' : '';
  return `${p.path}: ${formatBytes(p.localBytes)} of ${formatBytes(p.totalBytes)} local${done}`;
}

function parsed(args: string[], list: boolean) {
  try {
    return parseArgs({
      args,
      options: list ? { list: { type: 'boolean' } } : {},
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new HostError((err as Error).message, 'BAD_INPUT');
  }
}

export async function cmdPin(args: string[]): Promise<void> {
  const { values, positionals } = parsed(args, true);
  const [name, ...given] = positionals;
  if (name === undefined) throw new HostError('pin takes NAME PATH… (or NAME --list)', 'BAD_INPUT');
  const h = homes();
  const cfg = await loadConfig(h, name);
  if ((values as { list?: boolean }).list) {
    if (given.length > 0) throw new HostError('pin --list takes only NAME', 'BAD_INPUT');
    const s = await statusOf(h, cfg);
    const pins = s.state === 'unmounted' ? await pinsUnmounted(cfg) : (s.pins ?? []);
    if (pins.length === 0) console.log(`${cfg.name}: nothing is pinned`);
    for (const p of pins) console.log(pinLine(p));
    if (s.pinsProblem) console.log(`not all downloaded yet: ${s.pinsProblem}`);
    return;
  }
  if (given.length === 0) throw new HostError('pin takes NAME PATH… (or NAME --list)', 'BAD_INPUT');
  const paths = given.map((p) => filespacePathOf(cfg.mountPoint, p, process.cwd()));
  const r = await pinLinked(h, cfg, paths);
  const already = paths.filter((p) => !r.added.includes(p));
  for (const p of r.added) {
    const st = r.pins.find((x) => x.path === p);
    const size = st ? ` (${formatBytes(st.totalBytes)})` : '';
    console.log(
      `pinned ${p}${size}: ${r.live ? 'downloading in the background' : `recorded; downloaded when "${cfg.name}" is mounted next`}`,
    );
  }
  for (const p of already) console.log(`${p} was already pinned`);
}

export async function cmdUnpin(args: string[]): Promise<void> {
  const { positionals } = parsed(args, false);
  const [name, ...given] = positionals;
  if (name === undefined || given.length === 0) throw new HostError('unpin takes NAME PATH…', 'BAD_INPUT');
  const h = homes();
  const cfg = await loadConfig(h, name);
  const paths = given.map((p) => filespacePathOf(cfg.mountPoint, p, process.cwd()));
  await unpinLinked(h, cfg, paths);
  for (const p of paths) console.log(`unpinned ${p} (its data may now be evicted from the cache)`);
}
