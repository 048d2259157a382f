/**
 * Damaged local metadata: how it is told to the user, and the repair.
 *
 * A journal damaged in the middle (a bad record with valid ones after it) or an unreadable
 * snapshot makes the engine refuse to open and change nothing (meta/journal.ts), because the
 * records after the damage may hold fsynced changes that cutting the journal would lose, and
 * the dirty chunks they name would look ownerless. `describeLocalDamage` says so in one line.
 *
 * The repair never commits a guess to the bucket: what a damaged record said is unknown, so the
 * state the readable records give may lack a change (a rename, a size, a chunk reference). It
 * keeps, as one set of set-aside files (aside.ts), every file this machine's readable records
 * or dirty data changed, as those records and that data give it (a file's size is never cut
 * below its dirty data), plus every dirty chunk whose file cannot be named; a file the bucket
 * already holds exactly as here is not kept. Only once that set is durable does it replace the
 * local metadata with the bucket's (the old files stay beside it as `*.damaged`) and remove the
 * dirty chunks. The user exports the set and copies back what they want.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { AsideManifest, AsideWriter, UnownedChunk, addUnownedChunks } from './aside';
import { DirtyStore } from './cache/dirty';
import { HandlePool } from './cache/handles';
import { SealedIO } from './cache/sealed';
import { Keys } from './chunk/crypto';
import { decodeChunk } from './chunk/format';
import { chunkObject } from './chunk/packs';
import { UserError } from './errors';
import { FilespaceHeader, linkedChunkSizeMismatch } from './filespace';
import { JournalDamagedError, SnapshotDamagedError } from './meta/journal';
import { LocalMetaInspection, MetaStore, inodesChangedBy } from './meta/metastore';
import { RemoteMeta } from './meta/remote';
import { Inode, MetaOp, Tree, pathsOfInodes } from './meta/tree';
import { databaseSink } from './meta/build';
import { ObjectStore } from './store/types';
import { scratchFolder } from './util/scratch';

const DIRTY_RE = /^(\d+)\.(\d+)$/;

/** Dirty chunk files in the cache (not loaded: the metadata that owns them may be unreadable). */
export async function countDirtyChunks(cacheDir: string): Promise<number> {
  const names = await fsp.readdir(path.join(cacheDir, 'dirty')).catch(() => [] as string[]);
  return names.filter((n) => DIRTY_RE.test(n)).length;
}

function opsOf(records: readonly unknown[]): MetaOp[] {
  const out: MetaOp[] = [];
  for (const raw of records) {
    const rec = raw as { op?: MetaOp; rop?: MetaOp };
    const op = rec.op ?? rec.rop;
    if (op) out.push(op);
  }
  return out;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

/** The way out, for a filespace known as `name` (omitted: the only one linked). */
function wayOut(name: string | undefined): string {
  const n = name ? ` ${name}` : '';
  return `nothing was changed; "filespace check${n}" shows what is at risk, and "filespace repair${n}" keeps it as set-aside files you can export`;
}

/**
 * One line for a user whose local metadata is damaged: which file, what is at risk, the way
 * out. Other errors are returned as they are.
 */
export async function describeLocalDamage(err: unknown, cacheDir: string, name?: string): Promise<unknown> {
  if (err instanceof JournalDamagedError) {
    const { file, spans, later } = err.damage;
    const bad = spans.reduce((n, s) => n + s.length, 0);
    const files = inodesChangedBy(opsOf(later)).size;
    const dirty = await countDirtyChunks(cacheDir);
    return new UserError(
      `the metadata journal ${file} is damaged at byte ${spans[0]!.offset} (${plural(bad, 'byte')} unreadable), ` +
        `and ${plural(later.length, 'record')} written after the damage (changes to ${plural(files, 'file')}) cannot be applied safely; ` +
        `${plural(dirty, 'dirty chunk')} not yet in the bucket wait in the cache; ${wayOut(name)}`,
      'JOURNAL_DAMAGED',
    );
  }
  if (err instanceof SnapshotDamagedError) {
    const dirty = await countDirtyChunks(cacheDir);
    return new UserError(
      `the metadata snapshot ${err.file} is damaged (${err.reason}); ` +
        `${plural(dirty, 'dirty chunk')} not yet in the bucket wait in the cache; ${wayOut(name)}`,
      'SNAPSHOT_DAMAGED',
    );
  }
  return err;
}

/** What the damage in an inspection puts at risk, in words (the checker). */
export function damageSummary(seen: LocalMetaInspection): string | undefined {
  if (seen.snapshotError) return seen.snapshotError.message.replace(/; nothing was changed$/, '');
  if (!seen.damage) return undefined;
  const { file, spans, later } = seen.damage;
  const bad = spans.reduce((n, s) => n + s.length, 0);
  return (
    `the metadata journal ${file} is damaged at byte ${spans[0]!.offset} (${plural(bad, 'byte')} unreadable in ${plural(spans.length, 'place')}); ` +
    `${plural(later.length, 'valid record')} after the damage (${plural(seen.laterOps.length, 'change')} to ${plural(inodesChangedBy(seen.laterOps).size, 'file')}) ` +
    'would be lost by cutting the journal there, and mounting is refused until it is repaired'
  );
}

export interface RepairResult {
  /** False when the local metadata was not damaged: nothing was changed. */
  readonly repaired: boolean;
  /** The set the readable changes were kept in (none when there was nothing to keep). */
  readonly aside?: AsideManifest;
  /** Of the files in the set, how many could not be named (`unnamed/inode-<n>`). */
  readonly unnamed: number;
  /** The damaged files, kept beside the new metadata. */
  readonly kept: string[];
}

/** Reads a clean chunk from the bucket. */
async function fetchChunk(store: ObjectStore, keys: Keys, name: string): Promise<Buffer> {
  const where = chunkObject(name);
  const got = await store.get(where.key, where.range);
  if (!got) throw new Error(`chunk ${name} is not in the bucket`);
  return decodeChunk(keys.chunkKey, name, got.body);
}

/** Whether the bucket holds file `a` as it is here: the same content, mode and names (`pathsA`, `pathsB`). */
function sameFile(
  a: Inode,
  b: Inode | undefined,
  pathsA: readonly string[] | undefined,
  pathsB: readonly string[] | undefined,
): boolean {
  return (
    b !== undefined &&
    b.kind === a.kind &&
    b.size === a.size &&
    b.mode === a.mode &&
    isDeepStrictEqual(pathsA ?? [], pathsB ?? []) &&
    isDeepStrictEqual(a.chunks ?? [], b.chunks ?? [])
  );
}

/** The folders whose names `ops` remove or rename (`removedBy` names paths in them). */
function foldersNamedBy(ops: readonly MetaOp[]): number[] {
  const out: number[] = [];
  for (const op of ops) {
    if (op.t === 'rm') out.push(op.parent);
    if (op.t === 'mv') out.push(op.sp, op.dp);
  }
  return out;
}

/** Paths the readable ops removed or renamed away (best effort: named in the tree they lead to). */
function removedBy(ops: readonly MetaOp[], paths: ReadonlyMap<number, readonly string[]>): string[] {
  const at = (dir: number, name: string) => `${(paths.get(dir)?.[0] ?? '?').replace(/\/$/, '')}/${name}`;
  const out: string[] = [];
  for (const op of ops) {
    if (op.t === 'rm') out.push(at(op.parent, op.name));
    if (op.t === 'mv') out.push(`${at(op.sp, op.sn)} (renamed to ${at(op.dp, op.dn)})`);
  }
  return out;
}

/**
 * The repair (see the header). The caller holds the cache directory's lock; `uncleanStop`
 * says the last engine did not stop cleanly (dirty chunks are checked for torn units).
 */
export async function repairLocalMetadata(opts: {
  store: ObjectStore;
  keys: Keys;
  header: FilespaceHeader;
  cacheDir: string;
  uncleanStop: boolean;
  log: (msg: string) => void;
}): Promise<RepairResult> {
  const { store, keys, header, cacheDir, log } = opts;
  const cs = header.chunkSize;
  const metaDir = path.join(cacheDir, 'meta');
  const first = await MetaStore.inspect(metaDir);
  if (!first.damage && !first.snapshotError) return { repaired: false, unnamed: 0, kept: [] };

  // The trees are databases in a scratch folder on the cache's disk, so memory does not grow
  // with them: the bucket's (as a fresh machine's link reads it), and a working copy of the
  // local one with the journal's readable records applied.
  const scratch = await scratchFolder(cacheDir, 'repair');
  const into = databaseSink(path.join(scratch, 'bucket'), cs);
  const closers: Array<() => void> = [];
  const handles = new HandlePool(16);
  try {
    await fsp.mkdir(path.join(scratch, 'bucket'));
    const bucket = await new RemoteMeta(store, keys.metaKey, header).loadInto(cs, into.sink);
    const bucketDb = into.persist(bucket.tree, bucket.seq);
    // With the snapshot unreadable, the journal's records are applied to a copy of the bucket's
    // tree, only to name the files they touched.
    const bucketCopy = (): Tree => {
      const copy = bucketDb.copyTo(path.join(scratch, 'fallback'));
      closers.push(() => copy.db.close());
      return copy.tree;
    };
    const seen = await MetaStore.inspect(metaDir, { withTree: true, copyIn: path.join(scratch, 'local'), fallback: bucketCopy });
    closers.push(() => seen.closeTree());
    const tree = seen.tree ?? bucketCopy();
    if (tree.chunkSize !== cs) throw linkedChunkSizeMismatch(store, cs, tree.chunkSize);

    const dirty = new DirtyStore(cacheDir, handles, new SealedIO(keys.cacheKey), log);
    // No trimming to a recorded size: a size may be one of the things the damage lost.
    await dirty.init((ino) => (tree.get(ino)?.kind === 'file' ? cs : 'unknown'), Date.now(), { uncleanStop: opts.uncleanStop });

    const writer = await AsideWriter.create(cacheDir, keys.cacheKey);
    const unowned: UnownedChunk[] = dirty.orphans.map((o) => ({ ...o, read: () => dirty.readOrphan(o) }));
    const touched = new Set<number>([...inodesChangedBy(seen.localOps), ...dirty.inodes()]);
    // Paths of what the repair names only (pathsOfInodes reads their folders, not the tree).
    const paths = pathsOfInodes(tree, [...touched, ...foldersNamedBy(seen.localOps)]);
    const bucketPaths = pathsOfInodes(bucket.tree, touched);
    for (const ino of [...touched].sort((a, b) => a - b)) {
      const inode = tree.get(ino);
      const p = paths.get(ino)?.[0];
      const dirtyIdx = dirty.indexesOf(ino);
      if (!inode || inode.kind !== 'file' || p === undefined) {
        for (const idx of dirtyIdx) {
          const d = dirty.get(ino, idx)!;
          unowned.push({ ino, idx, len: d.len, read: () => dirty.readAll(d) });
        }
        continue;
      }
      if (dirtyIdx.length === 0 && sameFile(inode, bucket.tree.get(ino), paths.get(ino), bucketPaths.get(ino))) continue;
      let size = inode.size;
      for (const idx of dirtyIdx) size = Math.max(size, idx * cs + dirty.get(ino, idx)!.len);
      await writer.addFile(p, size, inode.mode, Math.ceil(size / cs), async (idx) => {
        const out = Buffer.alloc(Math.min(cs, size - idx * cs));
        const d = dirty.get(ino, idx);
        const ref = inode.chunks?.[idx];
        if (d) (await dirty.readAll(d)).copy(out, 0, 0, out.length);
        else if (ref) (await fetchChunk(store, keys, ref[0])).copy(out, 0, 0, Math.min(out.length, ref[1]));
        return out;
      });
    }
    const unnamed = await addUnownedChunks(writer, cs, unowned);
    const removed = removedBy(seen.localOps, paths);
    const what = seen.snapshotError ? 'unreadable snapshot' : 'damaged journal';
    let aside: AsideManifest | undefined;
    if (writer.fileCount > 0 || removed.length > 0) {
      aside = await writer.finish(
        `kept by "filespace repair" from this machine's ${what}: changes not yet in the bucket, as far as they could be read`,
        removed,
      );
    } else {
      await writer.abandon();
    }
    // The set is durable: now the metadata can start over from the bucket's, and the dirty
    // chunks can go.
    const kept = await MetaStore.replace(metaDir, bucket.tree, bucket.seq);
    for (const d of [...dirty.all()]) await dirty.drop(d);
    await dirty.removeOrphans();
    log(
      `repaired the local metadata of ${cacheDir}: ${aside ? `${plural(aside.files.length, 'file')} set aside as ${aside.id}` : 'nothing needed setting aside'}`,
    );
    return { repaired: true, aside, unnamed, kept };
  } finally {
    for (const close of closers) close();
    await handles.closeAll();
    await into.drop();
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}
