/**
 * `filespace snapshot NAME ...`: argument parsing and printing over host/snapshots.ts.
 *   create [LABEL]                 takes a snapshot now (after uploading what waits)
 *   list [--json]                  id, date, kind, files, size, size-unique, label; the schedule
 *   delete ID                      deletes one (its chunks are freed by GC after the grace period)
 *   schedule hourly=N daily=N | off
 *                                  automatic snapshots and how many of each kind are kept
 *   mount ID DIR / unmount DIR     browse one read-only beside this machine's mount
 */

import { parseArgs } from 'node:util';
import { formatBytes } from '../contract/format';
import { Homes, loadConfig } from '../host/config';
import { HostError } from '../host/errors';
import {
  createSnapshot,
  deleteSnapshot,
  listSnapshots,
  mountSnapshot,
  setSnapshotSchedule,
  unmountSnapshot,
} from '../host/snapshots';

function bad(message: string): HostError {
  return new HostError(message, 'BAD_INPUT');
}

function dateOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
}

/** Reads "hourly=24 daily=30" (either may be left out: 0) or "off". */
export function parseSchedule(words: string[]): { hourly: number; daily: number } {
  if (words.length === 1 && words[0] === 'off') return { hourly: 0, daily: 0 };
  if (words.length === 0) throw bad('snapshot schedule takes hourly=N daily=N (how many of each are kept), or off');
  const out = { hourly: 0, daily: 0 };
  const seen = new Set<string>();
  for (const w of words) {
    const m = /^(hourly|daily)=(\d{1,4})$/.exec(w);
    if (!m) throw bad(`snapshot schedule: "${w}" is not hourly=N or daily=N (N: how many are kept, 0 for none), or off`);
    const kind = m[1] as 'hourly' | 'daily';
    if (seen.has(kind)) throw bad(`snapshot schedule: ${kind} is given twice`);
    seen.add(kind);
    out[kind] = Number(m[2]);
  }
  return out;
}

export async function cmdSnapshot(h: Homes, args: string[], log: (m: string) => void): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({ args, options: { json: { type: 'boolean' } }, allowPositionals: true, strict: true });
  } catch (err) {
    throw bad(`snapshot: ${(err as Error).message}`);
  }
  const [name, verb, ...rest] = parsed.positionals;
  if (name === undefined || verb === undefined)
    throw bad('snapshot takes NAME and an action: create, list, delete, schedule, mount, unmount');
  const cfg = await loadConfig(h, name);
  const arity = (min: number, max: number, shape: string) => {
    if (rest.length < min || rest.length > max) throw bad(`snapshot ${verb} takes ${shape}`);
  };
  if (parsed.values.json && verb !== 'list') throw bad('--json goes with "snapshot NAME list"');
  switch (verb) {
    case 'create': {
      arity(0, 1, '[LABEL] (quote a label with spaces)');
      const r = await createSnapshot(h, cfg, rest[0] ?? '', log);
      console.log(
        `${cfg.name}: took snapshot ${r.id}${r.label ? ` "${r.label}"` : ''} (${r.files} files, ${formatBytes(r.bytes)}); ` +
          `browse it with "filespace snapshot ${cfg.name} mount ${r.id} DIR"`,
      );
      break;
    }
    case 'list': {
      arity(0, 0, 'no arguments');
      const l = await listSnapshots(h, cfg);
      if (parsed.values.json) {
        console.log(JSON.stringify(l, null, 2));
      } else {
        const s = l.schedule;
        console.log(
          `${cfg.name}: ${l.snapshots.length} snapshot(s); schedule: ${s.hourly || s.daily ? `hourly kept ${s.hourly}, daily kept ${s.daily}` : 'off'}`,
        );
        if (l.snapshots.length > 0)
          console.log('ID                    DATE (UTC)           KIND     FILES  SIZE        UNIQUE      LABEL');
        for (const r of l.snapshots) {
          console.log(
            `${r.id}  ${dateOf(r.createdAt)}  ${r.kind.padEnd(7)}  ${String(r.files).padStart(5)}  ${formatBytes(r.bytes).padEnd(10)}  ${formatBytes(r.uniqueBytes).padEnd(10)}  ${r.label}`,
          );
        }
        for (const id of l.damaged) console.log(`${id}  DAMAGED (its record or tree fails authentication)`);
      }
      if (l.damaged.length > 0)
        throw new HostError(
          `snapshot ${l.damaged[0]} of "${cfg.name}" is damaged${l.damaged.length > 1 ? ` (and ${l.damaged.length - 1} more)` : ''}: ` +
            `it cannot be browsed; "filespace snapshot ${cfg.name} delete ${l.damaged[0]}" removes it`,
          'SNAPSHOT_DAMAGED',
        );
      break;
    }
    case 'delete': {
      arity(1, 1, 'ID');
      await deleteSnapshot(h, cfg, rest[0]!, log);
      console.log(
        `${cfg.name}: deleted snapshot ${rest[0]}; chunks only it kept are freed by garbage collection after the grace period`,
      );
      break;
    }
    case 'schedule': {
      const s = parseSchedule(rest);
      await setSnapshotSchedule(h, cfg, s, log);
      console.log(
        s.hourly || s.daily
          ? `${cfg.name}: automatic snapshots: hourly kept ${s.hourly}, daily kept ${s.daily} (taken by the machine that writes)`
          : `${cfg.name}: automatic snapshots off (those taken so far are kept)`,
      );
      break;
    }
    case 'mount': {
      arity(2, 2, 'ID DIR');
      const dir = await mountSnapshot(h, cfg, rest[0]!, rest[1]!);
      console.log(
        `${cfg.name}: snapshot ${rest[0]} mounted read-only at ${dir}; "filespace snapshot ${cfg.name} unmount ${dir}" when done`,
      );
      break;
    }
    case 'unmount': {
      arity(1, 1, 'DIR');
      const dir = await unmountSnapshot(h, cfg, rest[0]!);
      console.log(`${cfg.name}: unmounted the snapshot at ${dir}`);
      break;
    }
    default:
      throw bad(`snapshot: unknown action "${verb}" (create, list, delete, schedule, mount, unmount)`);
  }
}
