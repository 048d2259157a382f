/**
 * BENCHMARKS.md from one run's results (results.ts): the side-by-side table (one row per
 * workload: Filespace, rclone, s3fs, the local directory, the ceiling, Filespace's ratio to
 * the best peer and whether the target on it is met), the targets against the ceilings, the
 * figures only Filespace has, the ceilings, the set-up of every contender and of the server,
 * the machine and its outside load, and the CPU profile of every phase.
 *
 * Every number here comes from the run; the wording only restates them. A ratio is always
 * "how many times better Filespace is": Filespace / best peer for rates, best peer /
 * Filespace for times and memory. A peer stopped at its time limit gives a bound ("≥").
 */

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import type { ContenderKey } from './contenders';
import type { CpuUse } from './procstat';
import {
  type Ceilings,
  entriesOf,
  type ProductExtras,
  type Profile,
  type RandResult,
  type SmallPhase,
  type SmallResult,
  type Suite,
  type TreeFacts,
} from './results';
import type { ServerWindow } from './server';

/** Starts the section of BENCHMARKS.md that `npm run bench:scale` writes and this report keeps. */
export const SCALE_MARKER = '<!-- metadata at scale: written by npm run bench:scale -->';

const MB = 1e6;
const MiB = 2 ** 20;
const GiB = 2 ** 30;

export interface RunInfo {
  dataBytes: number;
  scale: number;
  smallFiles: number;
  smallFileBytes: number;
  randomReads: number;
  randomBlock: number;
  repeats: number;
  settleMs: number;
  chunkSize: string;
  concurrency: number;
  cacheSize: string;
  limitMiB: number;
  limitedMiB: number;
  rssLimit: number;
  peerTar: { factor: number; minS: number; maxS: number };
  trees: TreeFacts[];
  serverKind: 's3rver' | 'moto' | undefined;
  serverWhy: string;
  facts: Record<string, string>;
  loadBefore: number | undefined;
  loadAfter: number | undefined;
  runMinutes: number;
  totalSeconds: number;
  asRoot: boolean;
}

export interface RunResults {
  info: RunInfo;
  suites: Suite[];
  ceilings: Ceilings;
  extras: ProductExtras;
  profiles: Profile[];
  errors: string[];
  notes: string[];
}

// ---- values ---------------------------------------------------------------------------------

/** A measured value; `atLeast` when the contender was stopped and the true value is at least this (times only). */
interface Val {
  readonly v: number;
  readonly atLeast?: boolean;
  /** Shown after the number. */
  readonly note?: string;
  /** Measured on less work than the others (a stopped peer): shown, not compared. */
  readonly partial?: boolean;
}

interface Metric {
  readonly name: string;
  readonly unit: string;
  readonly digits: number;
  readonly higherIsBetter: boolean;
  readonly value: (s: Suite) => Val | undefined;
  readonly ceiling?: string;
  /** Minimum ratio to the best peer: 1.5, or "ahead" (> 1). */
  readonly peerTarget: number | 'ahead';
}

const fmtNum = (v: number | undefined, digits = 0) => {
  if (v === undefined || !Number.isFinite(v)) return 'n/a';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
};
const rate = (bytes: number, seconds: number | undefined) => (seconds ? bytes / seconds / MB : undefined);
const iops = (r: RandResult | undefined) => (r ? r.ops / r.seconds : undefined);
const ops = (p: SmallPhase | undefined, n: number | undefined) => (p && n ? n / p.seconds : undefined);
const val = (v: number | undefined, note?: string): Val | undefined =>
  v === undefined || !Number.isFinite(v) ? undefined : { v, note };
/** When creation was stopped, the rates are over fewer files: say how many. */
const partialSmall = (s: Suite) =>
  s.small && s.small.requested && s.small.count < s.small.requested
    ? `over ${fmtNum(s.small.count)} files: creating was stopped`
    : undefined;

function metrics(r: RunResults): Metric[] {
  const { info, ceilings: c } = r;
  const size = info.dataBytes >= GiB ? `${info.dataBytes / GiB} GiB` : `${info.dataBytes / MiB} MiB`;
  const nullRand = [c.nullRandIdle, c.nullRandAwake].reduce<RandResult | undefined>(
    (a, b) => (!b ? a : !a || iops(b)! > iops(a)! ? b : a),
    undefined,
  );
  const small = (k: 'create' | 'stat' | 'delete', label: string, target: number | 'ahead'): Metric => ({
    name: `Small files (${fmtNum(info.smallFiles)} x ${info.smallFileBytes / 1024} KiB): ${label}`,
    unit: 'files/s',
    digits: 0,
    higherIsBetter: true,
    value: (s) => val(ops(s.small?.[k], s.small?.count), partialSmall(s)),
    ceiling: c.nullSmall ? `FUSE ${fmtNum(ops(c.nullSmall[k], c.nullSmall.count))} files/s` : undefined,
    peerTarget: target,
  });
  const rows: Metric[] = [
    {
      name: `Sequential write ${size}, dd bs=1M, to close`,
      unit: 'MB/s',
      digits: 0,
      higherIsBetter: true,
      value: (s) => val(rate(info.dataBytes, s.seqWrite)),
      ceiling: c.nullWrite ? `FUSE ${fmtNum(c.nullWrite)} MB/s` : undefined,
      peerTarget: 1.5,
    },
    {
      name: `Sequential write ${size}, until durable`,
      unit: 'MB/s',
      digits: 0,
      higherIsBetter: true,
      value: (s) =>
        val(s.seqWrite !== undefined && s.seqDurable !== undefined ? rate(info.dataBytes, s.seqWrite + s.seqDurable) : undefined),
      ceiling: c.s3Put ? `S3 PUT ${fmtNum(c.s3Put)} MB/s` : undefined,
      peerTarget: 'ahead',
    },
    {
      name: `Sequential read ${size}, cold (new mount, empty cache)`,
      unit: 'MB/s',
      digits: 0,
      higherIsBetter: true,
      value: (s) =>
        val(s.cold ? rate(s.cold.bytes, s.cold.seconds) : undefined, s.coldVerified === false ? 'WRONG BYTES' : undefined),
      ceiling: c.s3Get ? `S3 GET ${fmtNum(c.s3Get)} MB/s` : undefined,
      peerTarget: 'ahead',
    },
    {
      name: `Time to first byte, cold ${size} file (open + first 4 KiB)`,
      unit: 'ms',
      digits: 1,
      higherIsBetter: false,
      value: (s) => val(s.cold ? s.cold.ttfbUs / 1000 : undefined),
      peerTarget: 'ahead',
    },
    {
      name: `Sequential read ${size}, warm (best of ${info.repeats})`,
      unit: 'MB/s',
      digits: 0,
      higherIsBetter: true,
      value: (s) => val(s.warmBest ? rate(s.warmBest.bytes, s.warmBest.seconds) : undefined),
      ceiling: c.nullRead ? `FUSE ${fmtNum(c.nullRead)} MB/s` : undefined,
      peerTarget: 1.5,
    },
    {
      name: `Random ${info.randomBlock / 1024} KiB reads, QD1, warm (${fmtNum(info.randomReads)} reads; best of ${info.repeats})`,
      unit: 'IOPS',
      digits: 0,
      higherIsBetter: true,
      value: (s) => val(iops(s.randWarm)),
      ceiling: nullRand ? `FUSE ${fmtNum(iops(nullRand))} IOPS` : undefined,
      peerTarget: 'ahead',
    },
    {
      name: `Random ${info.randomBlock / 1024} KiB reads, QD1, cold (new mount, empty cache)`,
      unit: 'IOPS',
      digits: 0,
      higherIsBetter: true,
      value: (s) => val(iops(s.randCold)),
      peerTarget: 'ahead',
    },
    small('create', 'create', 1.5),
    {
      name: `Small files: \`ls -l\` of ${fmtNum(info.smallFiles)}`,
      unit: 's',
      digits: 2,
      higherIsBetter: false,
      value: (s) =>
        s.small && s.small.count < info.smallFiles
          ? { v: s.small.ls.seconds, note: `${fmtNum(s.small.count)} files only`, partial: true }
          : val(s.small?.ls.seconds),
      ceiling: c.nullSmall ? `FUSE ${fmtNum(c.nullSmall.ls.seconds, 2)} s` : undefined,
      peerTarget: 'ahead',
    },
    small('stat', 'stat', 'ahead'),
    small('delete', 'rm', 'ahead'),
  ];
  for (const t of info.trees) {
    const what = `tar x ${t.label} (${fmtNum(entriesOf(t))} entries, ${fmtNum(t.bytes / MB, 0)} MB)`;
    rows.push({
      name: `${what}, until tar exits`,
      unit: 's',
      digits: 1,
      higherIsBetter: false,
      value: (s) => {
        const run = s.tars[t.key];
        if (!run) return undefined;
        if (!run.complete)
          return { v: run.seconds, atLeast: true, note: `stopped, ${fmtNum(run.entries)} of ${fmtNum(entriesOf(t))} entries` };
        return { v: run.seconds, note: run.errors ? `${fmtNum(run.errors)} tar errors` : undefined };
      },
      ceiling: c.nullTar[t.key] !== undefined ? `FUSE ${fmtNum(c.nullTar[t.key], 1)} s` : undefined,
      peerTarget: 'ahead',
    });
    rows.push({
      name: `${what}, until durable`,
      unit: 's',
      digits: 1,
      higherIsBetter: false,
      value: (s) => {
        const run = s.tars[t.key];
        if (!run) return undefined;
        if (!run.complete) return { v: run.seconds, atLeast: true, note: 'stopped' };
        return run.durableSeconds === undefined ? undefined : { v: run.seconds + run.durableSeconds };
      },
      peerTarget: 'ahead',
    });
  }
  rows.push({
    name: 'Peak RSS of the filesystem process (all phases, all its mounts)',
    unit: 'MB',
    digits: 0,
    higherIsBetter: false,
    value: (s) => val(s.rssPeak ? s.rssPeak / MB : undefined),
    peerTarget: 'ahead',
  });
  return rows;
}

const PEERS: ContenderKey[] = ['rclone', 's3fs'];

interface Comparison {
  ratio?: number;
  /** The ratio is a lower bound (a peer was stopped). */
  atLeast?: boolean;
  best?: ContenderKey;
  met?: boolean;
}

function compare(m: Metric, suites: Suite[]): Comparison {
  const fs = suites.find((s) => s.key === 'filespace');
  const f = fs ? m.value(fs) : undefined;
  if (!f || f.atLeast || f.v <= 0) return {};
  const peers = suites
    .filter((s) => PEERS.includes(s.key) && !s.skipped)
    .map((s) => ({ key: s.key, v: m.value(s) }))
    .filter((p) => p.v && !p.v.partial);
  if (peers.length === 0) return {};
  const best = peers.reduce((a, b) => (m.higherIsBetter ? (b.v!.v > a.v!.v ? b : a) : b.v!.v < a.v!.v ? b : a));
  const bv = best.v!;
  const ratio = m.higherIsBetter ? f.v / bv.v : bv.v / f.v;
  const atLeast = !m.higherIsBetter && bv.atLeast === true;
  const need = m.peerTarget === 'ahead' ? 1 : m.peerTarget;
  const met = m.peerTarget === 'ahead' ? ratio > need : ratio >= need;
  // A bound that already meets the target settles it; one that does not leaves it open.
  return { ratio, atLeast, best: best.key, met: atLeast && !met ? undefined : met };
}

const metText = (m: boolean | undefined) => (m === undefined ? '' : m ? 'met' : '**NOT met**');

function cell(m: Metric, s: Suite | undefined): string {
  if (!s) return 'not run';
  if (s.skipped) return 'not run';
  const v = m.value(s);
  if (!v) return 'n/a';
  return `${v.atLeast ? '> ' : ''}${fmtNum(v.v, m.digits)} ${m.unit}${v.note ? ` (${v.note})` : ''}`;
}

function sideBySide(r: RunResults): string {
  const by = (k: ContenderKey) => r.suites.find((s) => s.key === k);
  const lines = [
    '| Workload | Filespace | rclone | s3fs | local dir | Ceiling | Filespace vs best peer | Target | Met |',
    '|---|---|---|---|---|---|---|---|---|',
  ];
  for (const m of metrics(r)) {
    const cmp = compare(m, r.suites);
    const ratio = cmp.ratio === undefined ? '' : `${cmp.atLeast ? '≥ ' : ''}${cmp.ratio.toFixed(2)}x (${cmp.best})`;
    const target = m.peerTarget === 'ahead' ? '> 1x' : `>= ${m.peerTarget}x`;
    lines.push(
      `| ${m.name} | ${cell(m, by('filespace'))} | ${cell(m, by('rclone'))} | ${cell(m, by('s3fs'))} | ${cell(m, by('local'))} | ${m.ceiling ?? ''} | ${ratio} | ${target} | ${metText(cmp.met)} |`,
    );
  }
  return lines.join('\n');
}

// ---- targets against the ceilings -----------------------------------------------------------

function ceilingTargets(r: RunResults): string {
  const { info, ceilings: c } = r;
  const fs = r.suites.find((s) => s.key === 'filespace');
  const lines = ['| Target | Filespace | Ceiling | Ratio | Target | Met |', '|---|---|---|---|---|---|'];
  const row = (
    what: string,
    value: number | undefined,
    unit: string,
    ceiling: number | undefined,
    cunit: string,
    need: number,
    digits = 0,
    invert = false,
  ) => {
    const ratio = value !== undefined && ceiling ? (invert ? ceiling / value : value / ceiling) : undefined;
    lines.push(
      `| ${what} | ${fmtNum(value, digits)} ${unit} | ${fmtNum(ceiling, digits)} ${cunit} | ${ratio === undefined ? '' : ratio.toFixed(2)} | >= ${need} | ${metText(ratio === undefined ? undefined : ratio >= need)} |`,
    );
  };
  const nullRand = Math.max(iops(c.nullRandIdle) ?? 0, iops(c.nullRandAwake) ?? 0) || undefined;
  row(
    'Sequential write to close vs the FUSE write ceiling',
    rate(info.dataBytes, fs?.seqWrite),
    'MB/s',
    c.nullWrite,
    'MB/s',
    0.6,
  );
  row(
    'Warm sequential read vs the FUSE read ceiling (above it counts, from the page cache)',
    fs?.warmBest ? rate(fs.warmBest.bytes, fs.warmBest.seconds) : undefined,
    'MB/s',
    c.nullRead,
    'MB/s',
    0.9,
  );
  row(
    'Cold sequential read vs raw S3 GET',
    fs?.cold ? rate(fs.cold.bytes, fs.cold.seconds) : undefined,
    'MB/s',
    c.s3Get,
    'MB/s',
    0.7,
  );
  const inflight = fs?.coldWindow?.inflightAvg;
  lines.push(
    `| Cold sequential read: S3 requests in flight on average | ${fmtNum(inflight, 1)} (max ${fmtNum(fs?.coldWindow?.inflightMax)}) | raw GET ${fmtNum(c.s3GetWindow?.inflightAvg, 1)} |  | >= 6 | ${metText(inflight === undefined ? undefined : inflight >= 6)} |`,
  );
  row('Random 4 KiB reads, warm, vs the FUSE ceiling', iops(fs?.randWarm), 'IOPS', nullRand, 'IOPS', 0.6);
  row(
    'Small-file creates vs the FUSE ceiling',
    ops(fs?.small?.create, fs?.small?.count),
    'files/s',
    ops(c.nullSmall?.create, c.nullSmall?.count),
    'files/s',
    0.6,
  );
  for (const t of info.trees) {
    const run = fs?.tars[t.key];
    row(
      `tar x ${t.label} vs the FUSE ceiling (time)`,
      run?.complete ? run.seconds : undefined,
      's',
      c.nullTar[t.key],
      's',
      0.8,
      1,
      true,
    );
  }
  const fsPhases = r.profiles.filter((p) => p.contender === 'filespace' && p.fsRss);
  const top = fsPhases.reduce<Profile | undefined>((a, b) => (!a || (b.fsRss ?? 0) > (a.fsRss ?? 0) ? b : a), undefined);
  const over = fsPhases.filter((p) => (p.fsRss ?? 0) >= info.rssLimit);
  lines.push(
    `| Engine peak RSS in every phase | ${top ? `${fmtNum((top.fsRss ?? 0) / MB)} MB (in "${top.phase}")` : 'n/a'} |  |  | < ${fmtNum(info.rssLimit / MB)} MB | ${metText(top ? over.length === 0 : undefined)}${over.length ? ` (${over.length} phases over)` : ''} |`,
  );
  const ttfb = fs?.cold ? fs.cold.ttfbUs / 1000 : undefined;
  lines.push(
    `| Time to first byte of a cold ${info.dataBytes >= GiB ? `${info.dataBytes / GiB} GiB` : `${info.dataBytes / MiB} MiB`} file (reported, no target) | ${fmtNum(ttfb, 1)} ms |  |  |  |  |`,
  );
  return lines.join('\n');
}

// ---- Filespace alone ------------------------------------------------------------------------

function productTable(r: RunResults): string {
  const { info, extras: x } = r;
  const fs = r.suites.find((s) => s.key === 'filespace');
  const lines = ['| Figure | Result |', '|---|---|'];
  const add = (a: string, b: string) => lines.push(`| ${a} | ${b} |`);
  add(
    'Data still to upload when the sequential write closed',
    x.dirtyAtClose === undefined ? 'n/a' : `${fmtNum(x.dirtyAtClose / MB)} MB`,
  );
  add('Upload left after close (`filespace sync`)', fs?.seqDurable === undefined ? 'n/a' : `${fmtNum(fs.seqDurable, 1)} s`);
  if (x.dirtyAfterTar) {
    const t = info.trees.find((tr) => tr.key === x.dirtyAfterTar!.tree);
    const d = fs?.tars[x.dirtyAfterTar.tree]?.durableSeconds;
    add(
      `Upload left after tar x ${t?.label ?? ''} (uploads also ran during the extraction)`,
      `${fmtNum(d, 1)} s for ${x.dirtyAfterTar.files} files, ${fmtNum(x.dirtyAfterTar.bytes / MB, 1)} MB still dirty when tar exited`,
    );
  }
  if (x.tarVerify) {
    const t = info.trees.find((tr) => tr.key === x.tarVerify!.tree);
    const diff =
      Object.keys(x.tarVerify.differences).length === 0
        ? 'identical'
        : `differences: ${Object.entries(x.tarVerify.differences)
            .map(([k, n]) => `${n} x "${k}"`)
            .join(', ')}`;
    add(
      `Tree read-back and compare, warm (tar d of ${t?.label ?? '?'})`,
      t ? `${fmtNum(t.files / x.tarVerify.seconds)} files/s, ${fmtNum(rate(t.bytes, x.tarVerify.seconds))} MB/s; ${diff}` : diff,
    );
  }
  add(
    `Upload under upload-limit ${info.limitMiB} MiB/s, ${info.limitedMiB} MiB written then synced (dd start to sync done)`,
    x.limitedUpload === undefined
      ? 'n/a'
      : `${fmtNum(info.limitedMiB / x.limitedUpload, 1)} MiB/s (${fmtNum(x.limitedUpload, 1)} s), ${(info.limitedMiB / x.limitedUpload / info.limitMiB).toFixed(2)} of the limit`,
  );
  add(
    'Cold read verified (cmp with the source)',
    fs?.coldVerified === undefined ? 'n/a' : fs.coldVerified ? 'identical' : '**DIFFERENT BYTES**',
  );
  const peaks = new Map<string, number>();
  for (const p of r.profiles.filter((q) => q.contender === 'filespace' && q.fsRss)) {
    const name = p.phase.replace(/^Filespace: /, '').replace(/ \d+\/\d+$/, '');
    peaks.set(name, Math.max(peaks.get(name) ?? 0, p.fsRss ?? 0));
  }
  add('Engine peak RSS per phase (MB)', [...peaks].map(([k, v]) => `${k} ${fmtNum(v / MB)}`).join('; ') || 'n/a');
  add(`Peak ${info.serverKind ?? 'server'} RSS (context)`, x.serverRss ? `${fmtNum(x.serverRss / MB)} MB` : 'n/a');
  return lines.join('\n');
}

// ---- ceilings -------------------------------------------------------------------------------

function ceilingTable(r: RunResults): string {
  const { info, ceilings: c } = r;
  const size = info.dataBytes >= GiB ? `${info.dataBytes / GiB} GiB` : `${info.dataBytes / MiB} MiB`;
  const rnd = (x: RandResult | undefined) =>
    x ? `${fmtNum(iops(x))} IOPS, p50 ${fmtNum(x.p50Us)} µs, p99 ${fmtNum(x.p99Us)} µs` : 'n/a';
  const sm = (x: SmallResult | undefined, k: 'create' | 'stat' | 'delete') =>
    x ? `${fmtNum(ops(x[k], x.count))} files/s` : 'n/a';
  const lines = ['| Ceiling | Result |', '|---|---|'];
  const add = (a: string, b: string) => lines.push(`| ${a} | ${b} |`);
  add(`FUSE sequential write ${size}, dd bs=1M (do-nothing fs; best of ${info.repeats})`, `${fmtNum(c.nullWrite)} MB/s`);
  add(`FUSE sequential read ${size}, 1 MiB reads (do-nothing fs; best of ${info.repeats})`, `${fmtNum(c.nullRead)} MB/s`);
  add(`FUSE random 4 KiB reads, QD1, machine otherwise idle (best of ${info.repeats})`, rnd(c.nullRandIdle));
  add('FUSE random 4 KiB reads, QD1, one core kept busy (no wake-ups from idle)', rnd(c.nullRandAwake));
  add('FUSE small files: create', sm(c.nullSmall, 'create'));
  add('FUSE small files: `ls -l`', c.nullSmall ? `${fmtNum(c.nullSmall.ls.seconds, 2)} s` : 'n/a');
  add('FUSE small files: stat', sm(c.nullSmall, 'stat'));
  add('FUSE small files: rm', sm(c.nullSmall, 'delete'));
  for (const t of info.trees)
    add(
      `FUSE tar x ${t.label}`,
      c.nullTar[t.key] !== undefined
        ? `${fmtNum(c.nullTar[t.key], 1)} s (${fmtNum(entriesOf(t) / c.nullTar[t.key]!)} entries/s)`
        : 'n/a',
    );
  add(`S3 PUT, ${info.chunkSize} objects, ${info.concurrency} in flight (the product's S3Store)`, `${fmtNum(c.s3Put)} MB/s`);
  add(
    `S3 GET, ${info.chunkSize} objects, ${info.concurrency} in flight (the product's S3Store; best of 2 passes)`,
    `${fmtNum(c.s3Get)} MB/s${c.s3GetWindow ? `, ${fmtNum(c.s3GetWindow.inflightAvg, 1)} requests in flight on average` : ''}`,
  );
  return lines.join('\n');
}

// ---- profile --------------------------------------------------------------------------------

const cores = (c: CpuUse | undefined) => (c ? c.total.toFixed(2) : '');

/** The server's garbage-collection pauses in cores over the phase, and its full collections. */
function serverGcText(w: ServerWindow | undefined, seconds: number): string {
  if (w?.gcSeconds === undefined || seconds <= 0 || (w.gcSeconds === 0 && !w.majorGcs)) return '';
  return `${(w.gcSeconds / seconds).toFixed(2)} (${w.majorGcs ?? 0})`;
}

function requestsText(w: ServerWindow | undefined): string {
  if (!w?.requests) return '';
  return Object.entries(w.requests)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
}

/** Plain reading of the CPU figures of one phase. */
function hint(p: Profile, ncpu: number): string {
  const out: string[] = [];
  const js = p.contender === 'filespace' || p.contender === 'ceiling';
  if (js && p.fs && p.fs.main >= 0.85)
    out.push(p.contender === 'filespace' ? 'engine JS thread saturated' : 'ceiling fs JS thread saturated');
  if (p.server && p.server.total >= 0.85) out.push('S3 server saturated (one process)');
  if (p.machine !== undefined && p.machine >= 0.9 * ncpu) out.push('all cores busy');
  if (p.outside !== undefined && p.outside >= 0.3)
    out.push(`outside load ${p.outside.toFixed(1)} cores: figure likely depressed`);
  if (p.contender === 'filespace' && p.fs && p.fs.main < 0.5 && p.fs.total < 0.9 && (p.machine ?? 0) < 0.7 * ncpu)
    out.push('engine waiting (latency-bound), not CPU-bound');
  if (p.window?.errors5xx) out.push(`${p.window.errors5xx} server errors (5xx)`);
  return out.join('; ');
}

function profileTable(r: RunResults, ncpu: number): string {
  const lines = [
    '| Phase | Wall s | FS CPU | FS main thread | FS peak RSS MB | Server CPU | Server GC (full) | S3 requests | In flight avg/max | Tools + bench | Outside load | Whole machine | Reading |',
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const p of r.profiles) {
    if (p.seconds < 0.05) continue;
    const w = p.window;
    lines.push(
      `| ${p.phase} | ${p.seconds.toFixed(2)} | ${cores(p.fs)} | ${p.fs ? p.fs.main.toFixed(2) : ''} | ${p.fsRss ? (p.fsRss / MB).toFixed(0) : ''} | ${cores(p.server)} | ${serverGcText(w, p.seconds)} | ${requestsText(w)} | ${w && w.inflightMax > 0 ? `${w.inflightAvg.toFixed(1)}/${w.inflightMax}` : ''} | ${p.tools.toFixed(2)} | ${p.outside === undefined ? '' : p.outside.toFixed(2)} | ${p.machine === undefined ? '' : p.machine.toFixed(2)} | ${hint(p, ncpu)} |`,
    );
  }
  return lines.join('\n');
}

/** Outside load over the measured phases, time-weighted. */
function loadSummary(r: RunResults): { avg?: number; max?: number; maxPhase?: string; loaded: number; phases: number } {
  const ps = r.profiles.filter((p) => p.outside !== undefined && p.seconds >= 0.5);
  const secs = ps.reduce((a, p) => a + p.seconds, 0);
  if (ps.length === 0 || secs === 0) return { loaded: 0, phases: 0 };
  const avg = ps.reduce((a, p) => a + (p.outside ?? 0) * p.seconds, 0) / secs;
  const top = ps.reduce((a, b) => ((b.outside ?? 0) > (a.outside ?? 0) ? b : a));
  return {
    avg,
    max: top.outside,
    maxPhase: top.phase,
    loaded: ps.filter((p) => (p.outside ?? 0) >= 0.3).length,
    phases: ps.length,
  };
}

// ---- observations ---------------------------------------------------------------------------

function observations(r: RunResults): string[] {
  const out: string[] = [];
  const one = (name: string) => r.profiles.find((p) => p.phase === name);
  const cpu = (p: Profile | undefined) =>
    p?.fs
      ? `its process ${p.fs.total.toFixed(2)} cores (main thread ${p.fs.main.toFixed(2)}), server ${p.server?.total.toFixed(2) ?? '?'}, whole machine ${p.machine?.toFixed(2) ?? '?'}, outside load ${p.outside?.toFixed(2) ?? '?'}`
      : 'n/a';
  for (const s of r.suites.filter((x) => !x.skipped && x.key !== 'local')) {
    const L = s.label;
    const w = one(`${L}: sequential write (dd bs=1M, to close)`);
    if (w)
      out.push(`${L}, sequential write to close: ${cpu(w)}; S3 requests meanwhile: ${requestsText(w.window) || 'none counted'}.`);
    const d = one(`${L}: sequential write: until durable`);
    if (d && d.seconds >= 0.5)
      out.push(
        `${L}, upload after close: ${d.seconds.toFixed(1)} s with ${d.window ? d.window.inflightAvg.toFixed(1) : '?'} requests in flight on average; ${cpu(d)}.`,
      );
    const serverGc = (p: Profile) =>
      p.window?.gcSeconds !== undefined
        ? `; the server paused ${(p.window.gcSeconds * 1000).toFixed(0)} ms for garbage collection (${p.window.majorGcs ?? 0} full)`
        : '';
    const passes = (prefix: string) => {
      const ps = r.profiles.filter((p) => p.phase.startsWith(prefix));
      const figure = (p: Profile) => `${p.seconds.toFixed(2)} s (server ${p.server?.total.toFixed(2) ?? '?'} cores)`;
      return ps.length > 1 ? ` All ${ps.length} passes, wall time of the phase: ${ps.map(figure).join(', ')}.` : '';
    };
    const c = s.coldPhase ? one(s.coldPhase) : undefined;
    if (c)
      out.push(
        `${L}, cold read (the fastest pass): ${c.window ? `${c.window.inflightAvg.toFixed(1)} requests in flight on average (max ${c.window.inflightMax}), ${requestsText(c.window)}` : 'requests not counted'}; ${cpu(c)}${serverGc(c)}.${passes(`${L}: cold sequential read`)}`,
      );
    const rc = s.randColdPhase ? one(s.randColdPhase) : undefined;
    if (rc)
      out.push(
        `${L}, random reads cold (the fastest pass): ${rc.window ? `${rc.window.inflightAvg.toFixed(1)} requests in flight on average (max ${rc.window.inflightMax}), ${requestsText(rc.window)}` : 'requests not counted'}; its peak RSS ${fmtNum((rc.fsRss ?? 0) / MB)} MB; ${cpu(rc)}${serverGc(rc)}.${passes(`${L}: random 4 KiB reads, cold`)}`,
      );
    const sm = s.smallPhase ? one(s.smallPhase) : undefined;
    const total = sm?.window?.requests ? Object.values(sm.window.requests).reduce((a, b) => a + b, 0) : undefined;
    const creates =
      s.smallCreates && s.smallCreates.length > 1
        ? ` All ${s.smallCreates.length} passes, files created per second: ${s.smallCreates.map((v) => fmtNum(v)).join(', ')}.`
        : '';
    if (sm && s.small)
      out.push(
        `${L}, small files (the pass that created fastest): ${total !== undefined ? `${(total / s.small.count).toFixed(1)} S3 requests per file over create, ls -l, stat and rm (${requestsText(sm.window)})` : 'requests not counted'}; ${cpu(sm)}.${creates}`,
      );
  }
  const ceil = Math.max(iops(r.ceilings.nullRandIdle) ?? 0, iops(r.ceilings.nullRandAwake) ?? 0);
  for (const s of r.suites.filter((x) => PEERS.includes(x.key) && x.randWarm)) {
    const rw = iops(s.randWarm) ?? 0;
    const busy = r.profiles
      .filter((p) => p.phase.startsWith(`${s.label}: random 4 KiB reads, warm`))
      .map((p) => p.fs?.total ?? 0);
    if (ceil > 0 && rw > 1.5 * ceil) {
      out.push(
        `${s.label}'s warm random reads (${fmtNum(rw)} IOPS, its process at ${fmtNum(Math.max(...busy, 0), 2)} cores) beat the do-nothing FUSE ceiling (${fmtNum(ceil)} IOPS): many of them never reached it, but were served from the kernel's page cache, which it keeps from one open of a file to the next; Filespace: ${fmtNum(iops(r.suites.find((x) => x.key === 'filespace')?.randWarm))} IOPS.`,
      );
    }
  }
  const warm = r.profiles.filter((p) => p.phase.startsWith('Filespace: warm sequential read'));
  if (warm.length)
    out.push(
      `Filespace warm read passes: ${warm.map((p) => `${(r.info.dataBytes / p.seconds / MB).toFixed(0)} MB/s with the engine's JS thread at ${p.fs?.main.toFixed(2) ?? '?'}`).join('; ')}.`,
    );
  return out;
}

// ---- the document ---------------------------------------------------------------------------

export async function report(r: RunResults, file: string): Promise<string> {
  const { info } = r;
  const ncpu = os.cpus().length;
  const load = loadSummary(r);
  const loaded = (load.avg ?? 0) >= 0.15 || load.loaded > 0;
  const loadLine =
    load.avg === undefined
      ? 'Outside load: not measured.'
      : `${loaded ? '**This run was on a loaded machine.** ' : ''}Outside load (processes that are not part of the benchmark) averaged ${load.avg.toFixed(2)} of ${ncpu} cores over the measured phases; ${load.loaded} of ${load.phases} phases had 0.3 cores or more (most: ${load.max?.toFixed(2)} in "${load.maxPhase}"); ${fmtNum(info.loadBefore, 2)} cores just before the run, ${fmtNum(info.loadAfter, 2)} just after.${loaded ? ' Figures from loaded phases are depressed and noisy; compare ratios within this run only.' : ''}`;
  const cold = r.suites.filter((s) => s.coldMethod).map((s) => `${s.label}: ${s.coldMethod}`);
  const md = [
    '# Filespace benchmarks',
    '',
    `Generated by \`npm run bench\` (test/bench/bench.ts) on ${new Date().toISOString()}; the run took ${info.runMinutes.toFixed(1)} min (${(info.totalSeconds / 60).toFixed(1)} min with the wait for a quiet machine).`,
    `Every figure below comes from that one run, against one local S3 server (${info.serverKind ?? '?'}), through real FUSE mounts. MB = 10^6 bytes; MiB/GiB = 2^20/2^30 bytes.`,
    '',
    loadLine,
    '',
    '## Side by side',
    '',
    'Each contender mounts its own bucket of the same server, and every workload runs on each in turn, from separate processes (dd, tar, ls and small probes). "Filespace vs best peer" is how many times better Filespace did than the better of rclone and s3fs (Filespace / peer for rates; peer / Filespace for times and memory). The target is to be ahead of the best peer on every row, by at least 1.5x on sequential write to close, warm read and small-file creates. "≥" and "> N s" mark a peer that was stopped at its time limit (see Settings).',
    '',
    sideBySide(r),
    '',
    '## Against the ceilings',
    '',
    ceilingTargets(r),
    '',
    '## Filespace only',
    '',
    productTable(r),
    '',
    '## Ceilings (same run)',
    '',
    ceilingTable(r),
    '',
    '## S3 server',
    '',
    `${r.info.facts['S3 server'] ?? '?'}: ${info.serverWhy}`,
    '',
    '## Contenders and settings',
    '',
    ...r.suites.map((s) => `- ${s.label}: ${s.skipped ? `**not run**: ${s.skipped}` : s.setup}.`),
    `- Mount options of the FUSE ceiling (the product's own, from its FuseMount): \`${r.ceilings.nullOptions ?? '?'}\`.`,
    `- Data set: ${info.dataBytes / MiB} MiB of random (incompressible) bytes${info.scale !== 1 ? ` (FILESPACE_BENCH_GIB=${info.scale})` : ''}; Filespace chunk size ${info.chunkSize}; cache cap ${info.cacheSize} for Filespace and rclone (s3fs's cache has no cap).`,
    '- Durable: Filespace `filespace sync`; rclone, its write-back queue empty for a second (remote control `vfs/stats`: nothing queued or uploading; the time counts to the start of that second), then for the big file a HEAD of its object with the full size; s3fs uploads on close (then the same HEAD check); local dir `sync -f`.',
    `- Cold: ${cold.join('; ') || 'n/a'}. A new mount starts with nothing of the file in the kernel's page cache (FUSE caches per mount), so only the local directory needs the page cache dropped.`,
    `- Repetitions: warm sequential reads and warm random reads are the best of ${info.repeats} passes on every contender, as are the FUSE ceilings, the cold reads (each pass on a new mount) and the small files (the pass that created fastest, with its ls -l, stat and rm); the S3 GET ceiling is the best of 2; the rest are single passes (a repeat would not start from the same state). Before each sequential write the inputs are read into the page cache and the scratch filesystem is synced.`,
    `- Random reads: ${fmtNum(info.randomReads)} distinct block-aligned offsets, one pread at a time, from a separate process. At queue depth 1 on this VM, waking an idle vCPU costs tens of µs per request, so latency is lower when the machine is busy; the FUSE ceiling is the better of an idle pass and a pass with one core kept busy.`,
    `- Small files: distinct random contents; ${info.settleMs} ms pause between create, ls -l, stat and rm so the kernel's attribute and entry caches have expired.`,
    `- tar: GNU tar (${info.asRoot ? 'as root: restores owners, modes, mtimes' : 'as a user'}); hard links stored as files (the peers have none). ${info.trees.map((t) => `${t.label}: ${fmtNum(t.files)} files, ${fmtNum(t.dirs)} directories, ${fmtNum(t.symlinks)} symlinks, ${fmtNum(t.bytes / MB, 1)} MB of file data`).join('; ')}. A peer's extraction is stopped at ${info.peerTar.factor}x Filespace's time until the same tree was durable (at least ${info.peerTar.minS} s, at most ${info.peerTar.maxS} s), which keeps the run short and still settles the comparison of both rows.`,
    '',
    '## Machine',
    '',
    ...Object.entries(info.facts).map(([k, v]) => `- ${k}: ${v}`),
    `- Outside load: ${fmtNum(info.loadBefore, 2)} cores busy just before the run, ${fmtNum(info.loadAfter, 2)} just after; per phase below.`,
    '',
    '## Where the time goes (CPU per phase)',
    '',
    `CPU is in cores (1.00 = one core busy for the whole phase), from /proc. "FS" is the process serving the mount: the Filespace engine (its main thread is the JS thread, where every FUSE callback and all engine logic run), rclone, s3fs, or the ceiling filesystem. "S3 requests" are counted by the server (LIST = GET with a listing query), and "in flight" is the time-weighted number of requests between arrival and the end of the response${info.serverKind === 'moto' ? ' (moto: open connections, sampled every 100 ms; it closes each after its response)' : ''}. "Server GC" is the time the server's JS thread was paused by garbage collection, in cores, and the number of full collections (s3rver; part of its CPU). "Tools + bench" is the commands the phase ran plus the bench process; "Outside load" is whatever else kept the ${ncpu} cores busy (other users of the machine): figures from phases with outside load are likely low.`,
    '',
    profileTable(r, ncpu),
    '',
  ];
  const obs = observations(r);
  if (obs.length > 0) md.push('## Observations (measured in this run)', '', ...obs.map((o) => `- ${o}`), '');
  if (r.errors.length > 0) md.push('## Errors', '', ...r.errors.map((e) => `- ${e}`), '');
  if (r.notes.length > 0) md.push('## Notes', '', ...r.notes.map((n) => `- ${n}`), '');
  // The metadata-at-scale section (metascale.ts) comes from its own run: kept as it is.
  const old = await fsp.readFile(file, 'utf8').catch(() => '');
  const scale = old.indexOf(SCALE_MARKER);
  await fsp.writeFile(file, md.join('\n') + (scale >= 0 ? `\n${old.slice(scale)}` : ''));
  return [
    loadLine,
    '',
    sideBySide(r),
    '',
    ceilingTargets(r),
    '',
    productTable(r),
    '',
    ceilingTable(r),
    '',
    ...obs.map((o) => `- ${o}`),
  ].join('\n');
}
