/**
 * The consistency checker behind `filespace check`: verifies metadata against chunks, in the
 * bucket and in this machine's cache, and reports problems without fixing anything.
 *
 * Bucket: the tree rebuilt from the newest checkpoint and the log (as a new machine would
 * see it) must be well formed, and every chunk it names must exist (no dangling reference);
 * with `deep`, every named chunk is downloaded, authenticated, and its content must hash to
 * its name. Chunks nothing names are garbage, reported as a count, not as a problem.
 * A damaged metadata segment (or checkpoint) in the bucket is a problem that names it and
 * what it holds up. Snapshots (meta/snapshots.ts): each record and tree must open and be well
 * formed, and every chunk a snapshot names must exist (with `deep`, decode to its name); a
 * damaged one is a problem naming it. Chunks a snapshot names are not garbage. The log's
 * layout must agree with its compaction mark (`checkLogLayout`). Paged checkpoints
 * (`checkPages`): every page a kept manifest names must exist, open, and be the page the
 * manifest says it is; pages no kept manifest names are garbage compaction deletes after its
 * grace (a note, not a problem); manifests need a header of format 4. Local (only while not mounted): the snapshot and the journal must be
 * readable (a damaged journal is reported with what the records after the damage change and
 * the dirty chunks waiting; `filespace repair` is the way out), the tree must be well formed
 * and name only chunks the bucket has, every dirty chunk must belong to a live file (or is
 * noted as what the next mount does with it), and every cached clean chunk's content must hash
 * to its name.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { chunkName, Keys } from './chunk/crypto';
import { chunkKey, decodeChunk } from './chunk/format';
import { FORMAT_COMPACTED, FORMAT_PAGES, FORMAT_SNAPSHOT_PAGES, FilespaceHeader, HEADER_KEY } from './filespace';
import { PAGE_PREFIX, isManifest } from './meta/pages';
import { MetaStore, inodesChangedBy } from './meta/metastore';
import { readCacheFile } from './cache/chunkCache';
import { ReceivedIO } from './cache/received';
import { SealedIO, logicalSize } from './cache/sealed';
import { CKPT_PREFIX, DamagedMetadataError, LOG_PREFIX, PageGoneError, RemoteMeta, seqOf } from './meta/remote';
import { SnapshotStore, chunksOf } from './meta/snapshots';
import { INODE_KINDS, ROOT_INO, Tree, isSpecialKind, pathsOf } from './meta/tree';
import { countDirtyChunks, damageSummary } from './repair';
import { ObjectStore } from './store/types';
import { UserError } from './errors';

export interface CheckReport {
  readonly problems: string[];
  readonly notes: string[];
  /** The local metadata is damaged: mounting is refused until `filespace repair`. */
  readonly localDamage: boolean;
}

const AT_RISK_SHOWN = 20;

/** Structural checks of a tree; returns problem descriptions. */
export function checkTree(tree: Tree, where: string): string[] {
  const problems: string[] = [];
  const cs = tree.chunkSize;
  const seen = new Map<number, number>();
  const root = tree.get(ROOT_INO);
  if (!root || root.kind !== 'dir') problems.push(`${where}: the root directory is missing`);
  for (const inode of tree.inodes.values()) {
    if (inode.entries) {
      for (const [name, child] of inode.entries) {
        if (!tree.get(child)) problems.push(`${where}: directory ${inode.ino} names missing inode ${child} ("${name}")`);
        seen.set(child, (seen.get(child) ?? 0) + 1);
      }
    }
    if (inode.kind === 'file') {
      if (!(inode.size >= 0)) problems.push(`${where}: file ${inode.ino} has size ${inode.size}`);
      const chunks = inode.chunks ?? [];
      if (chunks.length > Math.ceil(inode.size / cs)) problems.push(`${where}: file ${inode.ino} has chunks past its size`);
      chunks.forEach((c, i) => {
        if (c && (c[1] < 0 || c[1] > cs || i * cs + c[1] > inode.size)) {
          problems.push(`${where}: file ${inode.ino} chunk ${i} has length ${c[1]} outside the file`);
        }
      });
    }
    if (inode.kind === 'dir' && !inode.entries) problems.push(`${where}: directory ${inode.ino} has no entry table`);
    if (!INODE_KINDS.includes(inode.kind))
      problems.push(`${where}: inode ${inode.ino} is of unknown kind "${String(inode.kind)}"`);
    if (isSpecialKind(inode.kind) && ((inode.chunks?.length ?? 0) > 0 || inode.size !== 0 || inode.entries)) {
      problems.push(`${where}: special file ${inode.ino} (${inode.kind}) holds content`);
    }
  }
  for (const ino of tree.inodes.keys()) {
    if (ino === ROOT_INO) continue;
    const n = seen.get(ino) ?? 0;
    if (n === 0) problems.push(`${where}: inode ${ino} is not in any directory (orphan)`);
    const inode = tree.get(ino)!;
    const names = inode.kind === 'dir' ? 1 : Tree.namesOf(inode);
    if (n > 0 && n !== names) problems.push(`${where}: inode ${ino} is named ${n} times but counts ${names} name(s)`);
  }
  return problems;
}

function referenced(tree: Tree): Set<string> {
  return new Set(tree.chunkRefs.keys());
}

/**
 * The log's layout against its compaction mark (meta/compaction.ts): a compacted log needs a
 * header of the format that says so and a checkpoint at or above the mark, and no segment may
 * be missing above the mark (a loader would take the gap for the end of the log and never read
 * what follows). Segments still at or below the mark wait for the writer's next round.
 */
async function checkLogLayout(
  store: ObjectStore,
  keys: Keys,
  header: FilespaceHeader,
  replayedTo: number,
  damagedSegment: boolean,
  problems: string[],
  notes: string[],
): Promise<void> {
  let upTo = 0;
  try {
    upTo = (await new RemoteMeta(store, keys.metaKey, header).readCompaction()).mark.upTo;
  } catch (err) {
    if (!(err instanceof UserError)) throw err;
    problems.push(`bucket: ${err.message}`);
    return;
  }
  const segs = (await store.list(LOG_PREFIX)).map(seqOf);
  const ckpts = (await store.list(CKPT_PREFIX)).map(seqOf);
  if (upTo > 0) {
    if (header.format < FORMAT_COMPACTED)
      problems.push(
        `bucket: the metadata log is compacted up to segment ${upTo}, but filespace.json is of format ${header.format} (a compacted log needs ${FORMAT_COMPACTED}): an older version of Filespace would misread it`,
      );
    if (!ckpts.some((c) => c >= upTo))
      problems.push(
        `bucket: the metadata log is compacted up to segment ${upTo}, but no checkpoint at or above it is in the bucket`,
      );
  }
  // Segments written since the log was read start right after it: only a hole is a problem.
  const after = segs.filter((n) => n > replayedTo);
  if (after.length > 0 && !segs.includes(replayedTo + 1) && !damagedSegment) {
    problems.push(
      `bucket: metadata segment ${replayedTo + 1} is missing, so the ${after.length} segment(s) after it (from ${Math.min(...after)}) ` +
        'are never read by a machine that links or follows this filespace',
    );
  }
  const below = segs.filter((n) => n <= upTo).length;
  notes.push(
    `bucket: metadata log: ${segs.length} segment(s), ${ckpts.length} checkpoint(s)` +
      (upTo > 0 ? `, compacted up to segment ${upTo}` : ', never compacted') +
      (below > 0 ? ` (${below} segment(s) at or below that wait for deletion)` : ''),
  );
}

/** The pages of paged checkpoints (see the module header). */
async function checkPages(
  store: ObjectStore,
  keys: Keys,
  header: FilespaceHeader,
  problems: string[],
  notes: string[],
): Promise<void> {
  const remote = new RemoteMeta(store, keys.metaKey, header);
  const pages = await store.list(PAGE_PREFIX);
  const named = new Set<string>();
  let manifests = 0;
  // The header as the bucket holds it now (what another version would read), not as unlocked.
  let format = header.format;
  try {
    const raw = JSON.parse((await store.get(HEADER_KEY))?.body.toString('utf8') ?? '{}') as { format?: unknown };
    if (typeof raw.format === 'number') format = raw.format;
  } catch {
    // Unreadable now: the unlocked one stands.
  }
  for (const key of await store.list(CKPT_PREFIX)) {
    let ck;
    try {
      ck = await remote.readCheckpoint(key);
    } catch (err) {
      if (err instanceof DamagedMetadataError) continue; // reported with the load
      throw err;
    }
    if (!ck || !isManifest(ck)) continue;
    manifests++;
    if (format < FORMAT_PAGES)
      problems.push(
        `bucket: metadata checkpoint ${key} is paged, but filespace.json is of format ${format} (paged checkpoints need ${FORMAT_PAGES}): an older version of Filespace would misread it`,
      );
    for (const ref of ck.pages) {
      named.add(ref.key);
      try {
        await remote.readPage(ref);
      } catch (err) {
        if (err instanceof DamagedMetadataError)
          problems.push(`bucket: metadata page ${ref.key} (named by checkpoint ${key}) is damaged: ${err.message}`);
        else if (err instanceof PageGoneError)
          problems.push(`bucket: metadata checkpoint ${key} names page ${ref.key}, which is not in the bucket`);
        else throw err;
      }
    }
  }
  const byCheckpoints = named.size;
  // Pages snapshot trees name are kept for them (their reading is checked with the snapshots).
  const bySnapshots = await new SnapshotStore(store, keys.metaKey, header.chunkSize, header).namedPages();
  if (bySnapshots && bySnapshots.size > 0 && format < FORMAT_SNAPSHOT_PAGES)
    problems.push(
      `bucket: snapshots keep paged trees, but filespace.json is of format ${format} (they need ${FORMAT_SNAPSHOT_PAGES}): an older version of Filespace would read them as damaged and could delete their pages`,
    );
  let snapshotOnly = 0;
  for (const key of bySnapshots ?? []) {
    if (named.has(key)) continue;
    named.add(key);
    snapshotOnly++;
  }
  const unnamed = pages.filter((k) => !named.has(k)).length;
  if (manifests + pages.length > 0)
    notes.push(
      `bucket: ${manifests} paged checkpoint(s) naming ${byCheckpoints} page(s)` +
        (snapshotOnly > 0 ? `; ${snapshotOnly} more page(s) named by snapshots only` : '') +
        (unnamed > 0 ? `; ${unnamed} page(s) no kept checkpoint names (left for compaction to delete)` : ''),
    );
}

export async function checkFilespace(opts: {
  store: ObjectStore;
  keys: Keys;
  header: FilespaceHeader;
  cacheDir?: string; // local checks when given (the filespace must not be mounted)
  deep?: boolean;
  progress?: (msg: string) => void;
}): Promise<CheckReport> {
  const { store, keys, header } = opts;
  const problems: string[] = [];
  const notes: string[] = [];
  const say = opts.progress ?? (() => undefined);

  let localDamage = false;

  say('reading the metadata in the bucket');
  const { tree: remoteTree, seq, damage } = await new RemoteMeta(store, keys.metaKey, header).loadTolerant(header.chunkSize);
  for (const key of damage.checkpoints) {
    problems.push(
      `bucket: metadata checkpoint ${key} is damaged (it fails authentication); an older checkpoint and the log are read instead`,
    );
  }
  if (damage.segment) {
    const { key, seq: bad, later } = damage.segment;
    problems.push(
      `bucket: metadata segment ${bad} (${key}) is damaged (it fails authentication): the changes in it` +
        `${later > 0 ? ` and in the ${later} segment(s) after it` : ''} cannot be read, so a machine that links or follows this filespace ` +
        `sees it as of segment ${seq}, and mounting it there fails`,
    );
  }
  problems.push(...checkTree(remoteTree, 'bucket'));
  say('checking the metadata log in the bucket');
  await checkLogLayout(store, keys, header, seq, damage.segment !== undefined, problems, notes);
  await checkPages(store, keys, header, problems, notes);
  say('listing chunks in the bucket');
  const inBucket = new Set((await store.list('chunks/')).map((k) => k.slice(k.lastIndexOf('/') + 1)));
  const remoteRefs = referenced(remoteTree);
  for (const name of remoteRefs)
    if (!inBucket.has(name)) problems.push(`bucket: metadata names chunk ${name}, which is not in the bucket`);

  say('reading the snapshots in the bucket');
  const snapshots = new SnapshotStore(store, keys.metaKey, header.chunkSize, header);
  const { records, damaged: damagedRecords } = await snapshots.list();
  for (const id of damagedRecords)
    problems.push(`bucket: the record of snapshot ${id} is damaged (it fails authentication); it cannot be listed or browsed`);
  const allRefs = new Set(remoteRefs);
  for (const r of records) {
    let tree: Tree;
    try {
      tree = await snapshots.loadTree(r.id);
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      problems.push(`bucket: snapshot ${r.id}${r.label ? ` ("${r.label}")` : ''}: ${err.message}`);
      continue;
    }
    problems.push(...checkTree(tree, `snapshot ${r.id}`));
    for (const name of chunksOf(tree).keys()) {
      if (!inBucket.has(name)) problems.push(`snapshot ${r.id}: names chunk ${name}, which is not in the bucket`);
      allRefs.add(name);
    }
  }
  const garbage = [...inBucket].filter((n) => !allRefs.has(n)).length;
  notes.push(
    `bucket: ${remoteTree.inodes.size} inodes at metadata segment ${seq}, ${remoteRefs.size} chunks referenced, ${inBucket.size} stored, ${garbage} unreferenced`,
  );
  if (records.length + damagedRecords.length > 0)
    notes.push(
      `bucket: ${records.length + damagedRecords.length} snapshot(s), naming ${allRefs.size - remoteRefs.size} chunk(s) the live tree does not`,
    );

  if (opts.deep) {
    let i = 0;
    for (const name of allRefs) {
      if (++i % 50 === 0) say(`verifying chunks: ${i}/${allRefs.size}`);
      if (!inBucket.has(name)) continue;
      try {
        const got = await store.get(chunkKey(name));
        if (!got) throw new Error('vanished');
        const plain = await decodeChunk(keys.chunkKey, name, got.body);
        if (chunkName(keys.nameKey, plain) !== name) problems.push(`bucket: chunk ${name} holds content of another name`);
      } catch (err) {
        problems.push(`bucket: chunk ${name} is unreadable: ${(err as Error).message}`);
      }
    }
  }

  if (opts.cacheDir) {
    say('checking the local cache');
    const metaDir = path.join(opts.cacheDir, 'meta');
    const seen = await MetaStore.inspect(metaDir, Tree.fromSnapshot(header.chunkSize, remoteTree.snapshot()));
    const summary = damageSummary(seen);
    if (summary) {
      localDamage = true;
      problems.push(`local: ${summary}`);
      const atRisk = new Set([...inodesChangedBy(seen.damage ? seen.laterOps : seen.localOps)]);
      const dirtyDir = path.join(opts.cacheDir, 'dirty');
      for (const f of await fsp.readdir(dirtyDir).catch(() => [] as string[])) {
        const m = /^(\d+)\.\d+$/.exec(f);
        if (m) atRisk.add(Number(m[1]));
      }
      const paths = seen.tree ? pathsOf(seen.tree) : new Map<number, string>();
      const named = [...atRisk].map((ino) => paths.get(ino) ?? `(unnamed inode ${ino})`).sort();
      problems.push(
        `local: at risk: ${named.length} file(s) with changes not yet in the bucket, ${await countDirtyChunks(opts.cacheDir)} dirty chunk(s): ` +
          `${named.slice(0, AT_RISK_SHOWN).join(', ')}${named.length > AT_RISK_SHOWN ? `, and ${named.length - AT_RISK_SHOWN} more` : ''}`,
      );
    } else if (seen.tornTailBytes > 0) {
      notes.push(
        `local: the metadata journal ends in ${seen.tornTailBytes} bytes of an interrupted write (nothing that was fsynced); dropped at the next mount`,
      );
    }
    const meta = summary
      ? undefined
      : await MetaStore.load(metaDir, { readOnly: true }).catch((err: Error) => {
          problems.push(`local: the metadata does not load: ${err.message}`);
          return undefined;
        });
    if (meta) {
      try {
        const tree = meta.tree;
        problems.push(...checkTree(tree, 'local'));
        for (const name of referenced(tree)) {
          if (!inBucket.has(name)) problems.push(`local: metadata names chunk ${name}, which is not in the bucket`);
        }
        const dirtyDir = path.join(opts.cacheDir, 'dirty');
        let dirtyCount = 0;
        for (const f of await fsp.readdir(dirtyDir).catch(() => [] as string[])) {
          const m = /^(\d+)\.(\d+)$/.exec(f);
          const inode = m ? tree.get(Number(m[1])) : undefined;
          dirtyCount++;
          if (!m || !inode || inode.kind !== 'file') {
            notes.push(
              m && !inode && Number(m[1]) < tree.nextIno
                ? `local: dirty chunk ${f} belongs to a deleted file (removed at the next mount)`
                : `local: dirty chunk ${f} belongs to no file this machine's metadata knows (set aside at the next mount; see "filespace aside")`,
            );
            continue;
          }
          const size = logicalSize((await fsp.stat(path.join(dirtyDir, f))).size) ?? 0;
          if (Number(m[2]) * header.chunkSize + size > Math.max(inode.size, 0) + header.chunkSize) {
            notes.push(`local: dirty chunk ${f} reaches past its file's recorded size (trimmed at the next mount)`);
          }
        }
        notes.push(
          `local: ${tree.inodes.size} inodes, ${meta.pendingRemote.length} changes and ${dirtyCount} dirty chunks not yet in the bucket`,
        );
        const chunksDir = path.join(opts.cacheDir, 'chunks');
        const io = new SealedIO(keys.cacheKey);
        const received = new ReceivedIO(keys.cacheKey, keys.chunkKey);
        for (const sub of await fsp.readdir(chunksDir).catch(() => [] as string[])) {
          for (const name of await fsp.readdir(path.join(chunksDir, sub)).catch(() => [] as string[])) {
            if (name.includes('.tmp')) continue;
            const file = path.join(chunksDir, sub, name);
            const fh = await fsp.open(file, 'r');
            try {
              const len = logicalSize((await fh.stat()).size);
              if (len === undefined) throw new Error('impossible size');
              const data = await readCacheFile(fh, name, len, io, received);
              if (chunkName(keys.nameKey, data) !== name) throw new Error('content does not match its name');
            } catch (err) {
              problems.push(`local: cached chunk ${name} is damaged (${(err as Error).message}); it would be fetched again`);
            } finally {
              await fh.close();
            }
          }
        }
      } finally {
        await meta.close();
      }
    }
  }
  return { problems, notes, localDamage };
}
