/**
 * Summary of a V8 .cpuprofile of the engine (engineprofile.ts): where the JS thread's time
 * went, as milliseconds and as shares of the time it was busy.
 *
 *   node dist/test/bench/engineprofile-summary.js <file.cpuprofile>
 *
 * "Self" rows charge each sample to the function at the top of its stack (a native call such
 * as a cipher's update shows as the JS function that entered it). "Under" rows charge a sample
 * to every marked function on its stack (inclusive time), so e.g. the SDK's payload hash and
 * the chunk naming HMAC, both `Hash.update` at the top, are told apart by who called them.
 */

import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Inclusive markers: a label and a test on a frame. */
const MARKERS: Array<[string, (f: CallFrame) => boolean]> = [
  ['upload of a chunk (Uploader.uploadReserved)', (f) => f.functionName.endsWith('uploadReserved')],
  [
    'dirty chunk read for upload (DirtyStore.readAll/readSealedInto)',
    (f) => /(readAll|readSealedInto)$/.test(f.functionName) && f.url.includes('dirty'),
  ],
  ['chunk naming HMAC (chunkName)', (f) => f.functionName === 'chunkName'],
  ['chunk encoding (encodeChunk/encodeChunkParts)', (f) => /^encodeChunk/.test(f.functionName)],
  ['S3 PUT (S3Store.put)', (f) => f.functionName.endsWith('put') && f.url.includes('store/s3')],
  ['SDK payload SHA-256 (getPayloadHash)', (f) => f.functionName === 'getPayloadHash'],
  [
    'SDK body checksum (flexibleChecksums)',
    (f) => f.functionName === 'stringHasher' || f.functionName.includes('flexibleChecksums'),
  ],
  ['FUSE write (vfs write/writeNow)', (f) => /(^|\.)write(Now)?$/.test(f.functionName) && f.url.includes('vfs/vfs')],
  ['sealed unit write (SealedIO.write)', (f) => /(^|\.)write$/.test(f.functionName) && f.url.includes('cache/sealed')],
  [
    'sealed unit read (SealedIO.readUnits/openUnitsInPlace, openSealedUnits)',
    (f) => /(readUnits|openUnitsInPlace|openSealedUnits)$/.test(f.functionName),
  ],
];

/** Self-time categories of the function at the top of the stack. */
function category(f: CallFrame): string {
  const { functionName: n, url } = f;
  if (n === '(garbage collector)') return 'GC';
  if (n === '(idle)') return 'idle';
  if (n === '(program)') return 'program (native, outside JS)';
  if (url.includes('internal/crypto/cipher') || /Cipher|Decipher/.test(n)) return 'cipher (AES-GCM update/final)';
  if (url.includes('internal/crypto/hash') || url.includes('internal/crypto/hmac')) return 'hash/HMAC update+digest';
  if (n === 'crc32' || /crc32/i.test(url) || /Crc32/.test(n)) return 'CRC32';
  if (url.includes('zlib')) return 'zlib (JS side)';
  if (n === 'concat' && url === 'node:buffer') return 'Buffer.concat';
  if ((n === 'copy' || n === '_copyActual' || n === '_copy') && url === 'node:buffer') return 'Buffer copy';
  if (/^(allocUnsafe|allocUnsafeSlow|alloc|allocate|createUnsafeBuffer|from)$/.test(n) && url === 'node:buffer')
    return 'Buffer allocation';
  if (n === 'randomBytes' || url.includes('crypto/random')) return 'randomBytes';
  if (url.includes('fuse-native') || url.includes('native/fuse')) return 'FUSE binding';
  if (url.includes('internal/fs')) return 'fs (JS side)';
  if (url.includes('node_modules/@aws-sdk') || url.includes('node_modules/@smithy')) return 'AWS SDK (other)';
  if (
    url.includes('internal/http') ||
    url.includes('node:_http') ||
    url.includes('node:net') ||
    url.includes('internal/stream') ||
    url.includes('node:stream')
  )
    return 'http/net/streams';
  if (url.includes('/dist/electron/')) return 'engine (own JS)';
  if (url === '') return 'native calls (fs, sockets, microtasks)';
  return 'other';
}

/** A stretch of the profile, in the monotonic clock's microseconds (process.hrtime / 1000). */
export interface Window {
  readonly label: string;
  readonly fromUs: number;
  readonly toUs: number;
}

/** The summary of the whole profile, or only of the samples taken within `window`. */
export function summarise(p: CpuProfile, window?: Window): string {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) byId.set(n.id, n);
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const selfUs = new Map<number, number>();
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (window && (t < window.fromUs || t > window.toUs)) continue;
    const dt = p.timeDeltas[i + 1] ?? 0;
    selfUs.set(p.samples[i]!, (selfUs.get(p.samples[i]!) ?? 0) + dt);
  }
  const cats = new Map<string, number>();
  const fns = new Map<string, number>();
  const under = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    total += us;
    const c = category(f);
    cats.set(c, (cats.get(c) ?? 0) + us);
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*\/(dist|node_modules)\//, '$1/')}:${f.lineNumber + 1}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const cf = byId.get(cur)!.callFrame;
      for (const [label, test] of MARKERS) if (!seen.has(label) && test(cf)) seen.add(label);
    }
    for (const label of seen) under.set(label, (under.get(label) ?? 0) + us);
  }
  const idle = cats.get('idle') ?? 0;
  const busy = total - idle;
  const ms = (us: number) => `${(us / 1000).toFixed(0).padStart(7)} ms`;
  const pct = (us: number) => `${((100 * us) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
  const lines: string[] = [];
  const span = window ? (window.toUs - window.fromUs) / 1e6 : (p.endTime - p.startTime) / 1e6;
  lines.push(
    `${window ? `window "${window.label}"` : 'profile'}: ${span.toFixed(1)} s sampled, JS thread busy ${(busy / 1e6).toFixed(2)} s (idle ${(idle / 1e6).toFixed(2)} s); shares are of busy time`,
  );
  lines.push('self time by category:');
  for (const [c, us] of [...cats].filter(([c]) => c !== 'idle').sort((a, b) => b[1] - a[1]))
    lines.push(`  ${ms(us)} ${pct(us)}  ${c}`);
  lines.push('inclusive time under:');
  for (const [label] of MARKERS) lines.push(`  ${ms(under.get(label) ?? 0)} ${pct(under.get(label) ?? 0)}  ${label}`);
  lines.push('top self time by function:');
  for (const [k, us] of [...fns].sort((a, b) => b[1] - a[1]).slice(0, 25)) lines.push(`  ${ms(us)} ${pct(us)}  ${k}`);
  return lines.join('\n');
}

if (require.main === module) {
  const file = process.argv[2];
  if (!file) {
    console.error('usage: engineprofile-summary <file.cpuprofile>');
    process.exit(2);
  }
  console.log(summarise(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile));
}
