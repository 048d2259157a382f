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
 *
 * Memory does not grow with the tree (bench:scale checks a million files): the bucket's tree is
 * read into a database, as a fresh machine's link reads it, and each snapshot's tree as
 * browsing opens it; the bucket's chunk names and every name the trees reference are compared
 * in a database of their own (`ChunkNames`); the structural checks count names in typed arrays
 * (`checkTree`); the local tree is the cache folder's database (inspected without a copy, see
 * MetaStore `inspect`). Naming the files damaged local metadata puts at risk applies the
 * journal's records to a working copy of that database (or of the bucket's, when the local one
 * cannot be read). Those databases live in a scratch folder (util/scratch.ts).
 */

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chunkName, Keys } from './chunk/crypto';
import { CHUNK_LIST_PARTS, decodeChunk } from './chunk/format';
import { PACK_LIST_PARTS, chunkObject, contentName, packIdOfKey, packOf } from './chunk/packs';
import { FORMAT_COMPACTED, FORMAT_PAGES, FORMAT_SNAPSHOT_PAGES, FilespaceHeader, HEADER_KEY } from './filespace';
import { PAGE_PREFIX, isManifest } from './meta/pages';
import { MetaStore, inodesChangedBy } from './meta/metastore';
import { readCacheFile } from './cache/chunkCache';
import { ReceivedIO } from './cache/received';
import { SealedIO, logicalSize } from './cache/sealed';
import { CKPT_PREFIX, DamagedMetadataError, LOG_PREFIX, PageGoneError, RemoteMeta, seqOf } from './meta/remote';
import { SnapshotStore } from './meta/snapshots';
import { databaseSink } from './meta/build';
import type { TreeDb } from './meta/treeDb';
import { openDatabase, type Database, type Statement } from './meta/db';
import { INODE_KINDS, ROOT_INO, Tree, isSpecialKind, pathsOfInodes } from './meta/tree';
import { entriesWaiting } from './meta/treeDb';
import { countDirtyChunks, damageSummary } from './repair';
import { ObjectStore } from './store/types';
import { UserError } from './errors';
import { scratchFolder } from './util/scratch';

export interface CheckReport {
  readonly problems: string[];
  readonly notes: string[];
  /** The local metadata is damaged: mounting is refused until `filespace repair`. */
  readonly localDamage: boolean;
}

const AT_RISK_SHOWN = 20;

/**
 * Counts by inode number: a typed array up to the tree's next inode number (every inode of a
 * well-formed tree is below it), a map for anything beyond (only a malformed tree has such).
 */
class ByIno {
  private readonly beyond = new Map<number, number>();
  constructor(private readonly counts: Uint32Array | Float64Array) {}
  get(ino: number): number {
    return ino < this.counts.length ? this.counts[ino]! : (this.beyond.get(ino) ?? 0);
  }
  set(ino: number, n: number): void {
    if (ino < this.counts.length) this.counts[ino] = n;
    else this.beyond.set(ino, n);
  }
  /** Every inode number with a count other than 0, ascending. */
  *numbers(): IterableIterator<number> {
    for (let ino = 0; ino < this.counts.length; ino++) if (this.counts[ino] !== 0) yield ino;
    yield* [...this.beyond.keys()].sort((a, b) => a - b);
  }
}

/**
 * Structural checks of a tree; returns problem descriptions. One pass over the inodes (a tree
 * on disk reads them in batches, in scan mode), with the names each inode is given counted in
 * typed arrays: memory grows by a few bytes per inode number, not with the tree's records. A
 * second pass, only when some entry names an inode that is not there, names those entries.
 */
export function checkTree(tree: Tree, where: string): string[] {
  const problems: string[] = [];
  const cs = tree.chunkSize;
  const size = Math.max(tree.nextIno, ROOT_INO + 1);
  const named = new ByIno(new Uint32Array(size));
  // 1 + the names an inode counts; 0: no such inode.
  const wants = new ByIno(new Float64Array(size));
  const root = tree.get(ROOT_INO);
  if (!root || root.kind !== 'dir') problems.push(`${where}: the root directory is missing`);
  const valid = (child: number) => Number.isSafeInteger(child) && child > 0;
  let invalid = false;
  // Folders not loaded yet: an inode may have names in them that are not counted here.
  let waiting = false;
  tree.scan(() => {
    for (const inode of tree.inodes.values()) {
      // A folder a fresh machine has not loaded yet: its entries (and the records of what it
      // holds) are still only in the bucket's pages, which the bucket's check reads.
      if (inode.entries && entriesWaiting(inode)) waiting = true;
      else if (inode.entries) {
        for (const child of inode.entries.values()) {
          if (valid(child)) named.set(child, named.get(child) + 1);
          else invalid = true;
        }
      }
      wants.set(inode.ino, 1 + (inode.kind === 'dir' ? 1 : Tree.namesOf(inode)));
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
  });
  const missing = new Set<number>();
  for (const ino of named.numbers()) if (wants.get(ino) === 0) missing.add(ino);
  if (missing.size > 0 || invalid) {
    tree.scan(() => {
      for (const inode of tree.inodes.values()) {
        if (entriesWaiting(inode)) continue;
        for (const [name, child] of inode.entries ?? []) {
          if (!valid(child) || missing.has(child))
            problems.push(`${where}: directory ${inode.ino} names missing inode ${child} ("${name}")`);
        }
      }
    });
  }
  for (const ino of wants.numbers()) {
    if (ino === ROOT_INO) continue;
    const n = named.get(ino);
    const names = wants.get(ino) - 1;
    if (waiting && n < names) continue;
    if (n === 0) problems.push(`${where}: inode ${ino} is not in any directory (orphan)`);
    else if (n !== names) problems.push(`${where}: inode ${ino} is named ${n} times but counts ${names} name(s)`);
  }
  return problems;
}

/** A pack's row in the check's table of bucket objects (no chunk name starts so). */
const PACK_ROW = '~';

/** The row of the bucket object a reference's name needs: its chunk's, or its pack's. */
function objectRow(name: string): string {
  const pack = packOf(name);
  return pack ? PACK_ROW + pack : name;
}

/**
 * The chunk names a check compares, in a database of its own (in the check's scratch folder):
 * the bucket's chunks, and every name the trees it reads reference. The bucket can hold
 * millions; memory holds SQLite's page cache and a batch.
 */
class ChunkNames {
  private readonly db: Database;
  private readonly st: { inBucket: Statement; addBucket: Statement; addRef: Statement };
  constructor(file: string) {
    this.db = openDatabase(file, { readOnly: false, mustExist: false, bulk: true });
    // A reference's `obj` is the bucket row it needs: its chunk's name, or its pack's (PACK_ROW).
    this.db.exec(
      'CREATE TABLE bucket (name TEXT PRIMARY KEY) WITHOUT ROWID; ' +
        'CREATE TABLE refs (name TEXT PRIMARY KEY, obj TEXT NOT NULL) WITHOUT ROWID; CREATE INDEX refs_obj ON refs (obj);',
    );
    this.st = {
      inBucket: this.db.prepare('SELECT 1 AS x FROM bucket WHERE name = ?'),
      addBucket: this.db.prepare('INSERT OR IGNORE INTO bucket (name) VALUES (?)'),
      addRef: this.db.prepare('INSERT OR IGNORE INTO refs (name, obj) VALUES (?, ?)'),
    };
  }

  /** Adds keys as the bucket lists them (`chunks/<dir>/<name>`, `packs/<dir>/<id>`). */
  addListed(keys: readonly string[]): void {
    this.db.transaction(() => {
      for (const k of keys) {
        const pack = packIdOfKey(k);
        this.st.addBucket.run(pack ? PACK_ROW + pack : k.slice(k.lastIndexOf('/') + 1));
      }
    })();
  }

  /**
   * Adds the names `names` gives as references, a batch at a time, and calls `absent` with each
   * one the bucket does not hold (for a pack member: whose pack it does not hold).
   */
  addRefs(names: Iterable<string>, absent: (name: string) => void): void {
    const batch: string[] = [];
    const flush = this.db.transaction(() => {
      for (const name of batch) {
        const obj = objectRow(name);
        this.st.addRef.run(name, obj);
        if (!this.st.inBucket.get(obj)) absent(name);
      }
    });
    for (const name of names) {
      batch.push(name);
      if (batch.length >= NAME_BATCH) {
        flush();
        batch.length = 0;
      }
    }
    flush();
  }

  has(name: string): boolean {
    return this.st.inBucket.get(objectRow(name)) !== undefined;
  }

  count(table: 'bucket' | 'refs'): number {
    return (this.db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  }

  /** Objects in the bucket (chunks, packs) nothing references. */
  unreferenced(): number {
    return (
      this.db
        .prepare('SELECT count(*) AS n FROM bucket b WHERE NOT EXISTS (SELECT 1 FROM refs r WHERE r.obj = b.name)')
        .get() as {
        n: number;
      }
    ).n;
  }

  /** Referenced names whose object the bucket holds, in name order, a batch at a time. */
  *referencedInBucket(): IterableIterator<string> {
    const next = this.db.prepare(
      'SELECT r.name AS name FROM refs r WHERE r.name > ? AND EXISTS (SELECT 1 FROM bucket b WHERE b.name = r.obj) ORDER BY r.name LIMIT ?',
    );
    let after = '';
    for (;;) {
      const rows = next.all(after, NAME_BATCH) as Array<{ name: string }>;
      if (rows.length === 0) return;
      for (const r of rows) yield r.name;
      after = rows[rows.length - 1]!.name;
    }
  }

  close(): void {
    this.db.close();
  }
}

const NAME_BATCH = 2_000;

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
  /** Where the check's scratch folder goes (see `scratchFolder`); the system's temporary folder by default. */
  workDir?: string;
}): Promise<CheckReport> {
  const scratch = await scratchFolder(opts.workDir ?? os.tmpdir(), 'check');
  let names: ChunkNames | undefined;
  try {
    names = new ChunkNames(path.join(scratch, 'chunk-names.db'));
    return await check(opts, scratch, names);
  } finally {
    names?.close();
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}

async function check(opts: Parameters<typeof checkFilespace>[0], scratch: string, names: ChunkNames): Promise<CheckReport> {
  const { store, keys, header } = opts;
  const problems: string[] = [];
  const notes: string[] = [];
  const say = opts.progress ?? (() => undefined);

  let localDamage = false;

  say('reading the metadata in the bucket');
  // Into a database, as a fresh machine's link reads it: memory holds a working set of the tree.
  await fsp.mkdir(path.join(scratch, 'bucket'));
  const into = databaseSink(path.join(scratch, 'bucket'), header.chunkSize);
  let loaded;
  try {
    loaded = await new RemoteMeta(store, keys.metaKey, header).loadTolerantInto(header.chunkSize, into.sink);
  } catch (err) {
    await into.drop();
    throw err;
  }
  const { tree: remoteTree, seq, damage } = loaded;
  try {
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
    for (const part of [...CHUNK_LIST_PARTS, ...PACK_LIST_PARTS]) names.addListed(await store.list(part));
    const stored = names.count('bucket');
    names.addRefs(remoteTree.chunkRefs.keys(), (name) =>
      problems.push(`bucket: metadata names chunk ${name}, which is not in the bucket`),
    );
    const remoteRefs = names.count('refs');

    say('reading the snapshots in the bucket');
    const snapshots = new SnapshotStore(store, keys.metaKey, header.chunkSize, header);
    const { records, damaged: damagedRecords } = await snapshots.list();
    for (const id of damagedRecords)
      problems.push(`bucket: the record of snapshot ${id} is damaged (it fails authentication); it cannot be listed or browsed`);
    for (const [i, r] of records.entries()) {
      let opened;
      try {
        opened = await snapshots.openTree(r.id, path.join(scratch, `snapshot-${i}`));
      } catch (err) {
        if (!(err instanceof UserError)) throw err;
        problems.push(`bucket: snapshot ${r.id}${r.label ? ` ("${r.label}")` : ''}: ${err.message}`);
        continue;
      }
      try {
        problems.push(...checkTree(opened.tree, `snapshot ${r.id}`));
        names.addRefs(opened.tree.chunkRefs.keys(), (name) =>
          problems.push(`snapshot ${r.id}: names chunk ${name}, which is not in the bucket`),
        );
      } finally {
        await opened.close();
      }
    }
    const allRefs = names.count('refs');
    notes.push(
      `bucket: ${remoteTree.inodes.size} inodes at metadata segment ${seq}, ${remoteRefs} chunks referenced, ${stored} stored, ${names.unreferenced()} unreferenced`,
    );
    if (records.length + damagedRecords.length > 0)
      notes.push(
        `bucket: ${records.length + damagedRecords.length} snapshot(s), naming ${allRefs - remoteRefs} chunk(s) the live tree does not`,
      );

    if (opts.deep) {
      let i = 0;
      for (const name of names.referencedInBucket()) {
        if (++i % 50 === 0) say(`verifying chunks: ${i}/${allRefs}`);
        try {
          const where = chunkObject(name);
          const got = await store.get(where.key, where.range);
          if (!got) throw new Error('vanished');
          const plain = await decodeChunk(keys.chunkKey, name, got.body);
          if (chunkName(keys.nameKey, plain) !== contentName(name))
            problems.push(`bucket: chunk ${name} holds content of another name`);
        } catch (err) {
          problems.push(`bucket: chunk ${name} is unreadable: ${(err as Error).message}`);
        }
      }
    }

    if (opts.cacheDir) {
      say('checking the local cache');
      const metaDir = path.join(opts.cacheDir, 'meta');
      let seen = await MetaStore.inspect(metaDir);
      const summary = damageSummary(seen);
      if (summary) {
        localDamage = true;
        problems.push(`local: ${summary}`);
        // To name the files at risk: a working copy of the local tree (of the bucket's when the
        // local one cannot be read), with the journal's readable records applied.
        let fallback: TreeDb | undefined;
        seen = await MetaStore.inspect(metaDir, {
          withTree: true,
          copyIn: path.join(scratch, 'local'),
          fallback: () => {
            const copy = into.persist(remoteTree, seq).copyTo(path.join(scratch, 'local-fallback'));
            fallback = copy.db;
            return copy.tree;
          },
        });
        const atRisk = new Set([...inodesChangedBy(seen.damage ? seen.laterOps : seen.localOps)]);
        const dirtyDir = path.join(opts.cacheDir, 'dirty');
        for (const f of await fsp.readdir(dirtyDir).catch(() => [] as string[])) {
          const m = /^(\d+)\.\d+$/.exec(f);
          if (m) atRisk.add(Number(m[1]));
        }
        let paths: Map<number, string[]>;
        try {
          paths = seen.tree ? pathsOfInodes(seen.tree, atRisk) : new Map<number, string[]>();
        } finally {
          seen.closeTree();
          fallback?.close();
        }
        const named = [...atRisk].map((ino) => paths.get(ino)?.[0] ?? `(unnamed inode ${ino})`).sort();
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
          await checkLocal(opts.cacheDir, meta, keys, header, names, problems, notes);
        } finally {
          await meta.close();
        }
      }
    }
    return { problems, notes, localDamage };
  } finally {
    await into.drop();
  }
}

/** The local checks on metadata that loads (see the module header). */
async function checkLocal(
  cacheDir: string,
  meta: MetaStore,
  keys: Keys,
  header: FilespaceHeader,
  names: ChunkNames,
  problems: string[],
  notes: string[],
): Promise<void> {
  const tree = meta.tree;
  problems.push(...checkTree(tree, 'local'));
  for (const name of tree.chunkRefs.keys())
    if (!names.has(name)) problems.push(`local: metadata names chunk ${name}, which is not in the bucket`);
  const dirtyDir = path.join(cacheDir, 'dirty');
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
  if (meta.unloadedDirs > 0)
    notes.push(`local: ${meta.unloadedDirs} folder(s) not loaded from the bucket yet (they load as they are used while mounted)`);
  const chunksDir = path.join(cacheDir, 'chunks');
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
        if (chunkName(keys.nameKey, data) !== contentName(name)) throw new Error('content does not match its name');
      } catch (err) {
        problems.push(`local: cached chunk ${name} is damaged (${(err as Error).message}); it would be fetched again`);
      } finally {
        await fh.close();
      }
    }
  }
}
