/**
 * Attribute probe: how many requests of `ls -l` and of a stat loop still cross from libfuse's
 * thread to the engine's JS thread, and how many the addon answers from its attribute cache
 * (native/fuse/build-addon.js, correction 7). Counts, not times, so it can be read on a busy
 * machine: a filespace on the test S3 server, mounted by the real `filespace` command;
 * FILESPACE_PROBE_FILES files of 4 KiB (default 2000) created in one folder, listed with
 * `ls -l`, stat'ed one by one (`stat`, one process) and deleted (`rm`), each phase after the
 * kernel's own attribute and entry caches have expired (1.1 s), as the benchmark's small-files
 * phase does. For each phase it prints the crossings per file, by operation, and how often the
 * cache was emptied (by a request of the mount, by the engine: all or one inode; and valid
 * entries evicted by others), read from the mount's `/v1/debug/fuse` before and after.
 *
 *   node dist/test/bench/attrprobe.js
 */

import * as path from 'node:path';
import { Bed, run, sh } from '../helpers/bed';
import { callControl } from '../../electron/host/control';
import type { FuseCountsDto } from '../../electron/contract/api';

const FILES = Number(process.env.FILESPACE_PROBE_FILES ?? 2000);
const SETTLE_MS = 1100;

function diff(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (b[k] ?? 0) - (a[k] ?? 0);
    if (d) out[k] = d;
  }
  return out;
}

function line(label: string, before: FuseCountsDto, after: FuseCountsDto, per: number): string {
  const crossed = diff(before.crossed, after.crossed);
  const answered = diff(before.answered, after.answered);
  const sum = (r: Record<string, number>) => Object.values(r).reduce((s, v) => s + v, 0);
  const fmt = (r: Record<string, number>) =>
    Object.entries(r)
      .sort((x, y) => y[1] - x[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  const e = after.emptied;
  const b = before.emptied;
  return [
    `${label}: ${(sum(crossed) / per).toFixed(3)} crossings per file (${sum(crossed)}: ${fmt(crossed)})`,
    `  answered in the addon: ${sum(answered)} (${fmt(answered)})`,
    `  cache emptied: by requests ${e.byRequest - b.byRequest}, by the engine ${e.byFilesystem - b.byFilesystem}, ` +
      `inodes forgotten ${e.inodes - b.inodes}, valid entries evicted ${e.evicted - b.evicted}`,
  ].join('\n');
}

async function main(): Promise<void> {
  const bed = new Bed();
  await bed.start();
  try {
    const fs = await bed.filespace({ chunkSize: '4MiB' });
    await fs.mount();
    const sock = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    const counts = async (): Promise<FuseCountsDto> => {
      const c = (await callControl(sock, '/v1/debug/fuse', {})).counts;
      if (!c) throw new Error('the mount keeps no request counters (no corrected FUSE addon)');
      return c;
    };
    const dir = path.join(fs.mnt, 'small');
    const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));
    const names = Array.from({ length: FILES }, (_, i) => `f${String(i).padStart(6, '0')}.dat`);
    const phase = async (label: string, work: () => Promise<unknown>) => {
      await settle();
      const before = await counts();
      await work();
      console.log(line(label, before, await counts(), FILES));
    };
    await sh(`mkdir '${dir}'`);
    await phase('create', () =>
      sh(
        `cd '${dir}' && head -c 4096 /dev/urandom > /tmp/.attrprobe-$$ && for i in $(seq -f '%06g' 0 ${FILES - 1}); do cat /tmp/.attrprobe-$$ > f$i.dat; done; rm -f /tmp/.attrprobe-$$`,
      ),
    );
    await phase('ls -l', async () => {
      const r = await run('ls', ['-l', dir]);
      if (r.code !== 0) throw new Error(r.stderr);
    });
    await phase('stat', async () => {
      const r = await run('stat', ['-c', '%s', ...names.map((n) => path.join(dir, n))], { cwd: dir });
      if (r.code !== 0) throw new Error(r.stderr);
    });
    await phase('ls -l again', async () => {
      const r = await run('ls', ['-l', dir]);
      if (r.code !== 0) throw new Error(r.stderr);
    });
    await phase('rm', () => sh(`cd '${dir}' && for f in f*.dat; do rm "$f"; done`));
    await fs.unmount();
  } finally {
    await bed.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
