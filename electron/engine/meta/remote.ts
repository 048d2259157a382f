/**
 * Replication of the metadata to the bucket, so another machine can link the filespace from
 * the bucket alone.
 *
 * Layout under the filespace root:
 *   filespace.json           header: format, chunk size, KDF parameters, wrapped data key, seal
 *   meta/log/<seq>           sealed JSON {seq, ops}: the ops committed after segment seq-1
 *   meta/ckpt/<seq>          sealed JSON: the tree after applying segments 1..seq, and the
 *                            filespace id and chunk size it was written for (checkpoints
 *                            written before that carry none). Either the whole tree
 *                            {seq, tree, filespace} (format 3 and before, and a new filespace's
 *                            first checkpoint), or a manifest {seq, filespace, nextIno, root,
 *                            pages} naming the pages that hold the tree (format 4, pages.ts)
 *   meta/page/<seq>-<run>-<n> sealed JSON: one page of a paged checkpoint (pages.ts), written
 *                            once and named by as many manifests as it stays unchanged for
 * Sequence numbers are zero-padded to 12 digits so listings sort numerically. Segments and
 * checkpoints are created with If-None-Match so a segment number is written exactly once, and
 * every segment names its writer (machine id and lease epoch). A writer that finds its number
 * taken by a segment of another writer has been fenced off: it must stop committing. A new
 * lease holder writes an empty fence segment after catching up, so an old holder that was
 * merely suspended collides with it on its next push.
 *
 * Only the newest `CHECKPOINTS_KEPT` checkpoints stay: the writer deletes older ones after
 * writing a new one, and a loader that listed a checkpoint deleted before it read it (or one
 * of whose pages is gone) simply lists again. Pages that no kept manifest names are deleted by
 * compaction after its grace period (compaction.ts). A paged checkpoint's pages are written
 * before its manifest, so a manifest never names a page that was not written.
 *
 * A load reads the checkpoint into a `TreeSink`: a tree in memory, or, for a fresh machine, the
 * rows of its local database as each page arrives (metastore.ts `link`), so that the memory a
 * link needs does not grow with the tree.
 *
 * Log compaction (compaction.ts): the writer deletes the segments a kept checkpoint covers.
 *   meta/compacted           sealed JSON {upTo, writer, at}: segments 1..upTo may be gone
 * The mark is written (raised only, conditional on the ETag read) before any segment at or
 * below it is deleted, and always names a checkpoint that is kept (the older of the two), so
 * the newest checkpoint and the segments after the mark rebuild the tree. A reader whose
 * position is below the mark reloads from the newest checkpoint (`load`) instead of replaying,
 * and never reads a segment at or below it: such a slot may hold a segment written after the
 * compaction by a writer that had lost the lease (it never counted it as committed, see
 * replicator.ts), which is not part of the log. `load` reads the mark when the log seems to
 * end, so a compaction during a long load makes it start over rather than stop early.
 *
 * Everything is sealed with the metadata key and the object's key as associated data, so a
 * segment cannot be swapped for another unnoticed. An object that fails authentication is
 * damaged (DamagedMetadataError, naming it): a damaged checkpoint is passed over for an older
 * one, but a damaged segment stops every reader there, since the segments after it build on it.
 * When no checkpoint opens at all, the likeliest cause is a header of another filespace (its
 * keys open none of this metadata), and the error says so.
 *
 * The filespace id and chunk size inside each checkpoint are checked against the header the
 * loader unlocked (HeaderMismatchError): a header whose chunk size was changed would otherwise
 * place every read in the wrong chunk. This holds even for a header without its seal
 * (filespace.ts), so stripping the seal does not make such a change go unnoticed. Before a
 * writer seals a header written without a seal, it rewrites the newest checkpoint with the
 * identity if it lacks one (`bindNewestCheckpoint`), so a sealed header always has a newest
 * checkpoint that names its chunk size.
 */

import { isDeepStrictEqual } from 'node:util';
import { AuthError, open, seal } from '../chunk/crypto';
import { EngineErrorCode, UserError } from '../errors';
import { ObjectStore, StoreError } from '../store/types';
import { formatSize } from '../util/sizes';
import { MetaOp, Tree, TreeSnapshot } from './tree';
import {
  CheckpointPlan,
  Manifest,
  Page,
  PageRef,
  assemble,
  directoryPages,
  isDirCover,
  isManifest,
  pageHash,
  pageHashKey,
  pageMatches,
} from './pages';

export const LOG_PREFIX = 'meta/log/';
export const CKPT_PREFIX = 'meta/ckpt/';
export const COMPACTED_KEY = 'meta/compacted';
/** Checkpoints kept in the bucket: the newest, and one before it in case the newest is damaged. */
export const CHECKPOINTS_KEPT = 2;
/** Pages read or written at a time. */
const PAGE_PARALLEL = 8;
/**
 * Pages a stream (a fresh machine's link, every page of the tree) reads ahead at most, and
 * the bytes (as stored) they may hold: a page of a folder of 100 files is about 16 KB, and its
 * GET costs a round trip to the bucket more than its bytes, so a tree of small folders keeps
 * 32 GETs in flight, while one of big folders (up to 4,096 names a page) keeps a few.
 */
export const STREAM_AHEAD = 32;
export const STREAM_AHEAD_BYTES = 1024 * 1024;

/** Runs `fn` over `items`, at most `limit` at a time. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

export function seqKey(prefix: string, seq: number): string {
  return `${prefix}${String(seq).padStart(12, '0')}`;
}

/** The sequence number in a segment's or checkpoint's key. */
export function seqOf(key: string): number {
  return Number(key.slice(key.lastIndexOf('/') + 1));
}

/** The compaction high-water mark: segments 1..upTo may have been deleted. */
export interface CompactionMark {
  readonly upTo: number;
  /** The machine that raised it, and when (for people). */
  readonly writer?: SegmentWriter;
  readonly at?: number;
}

/** The mark as read, with the ETag a raise is conditional on (undefined: none written yet). */
export interface CompactionView {
  readonly mark: CompactionMark;
  readonly etag: string | undefined;
}

/** Who wrote a segment. Segments from before the lease carry none. */
export interface SegmentWriter {
  readonly id: string;
  readonly epoch: number;
}

export interface Segment {
  readonly ops: MetaOp[];
  readonly writer?: SegmentWriter;
  /** Where the files its ops name by number live (see `Homes`); absent in older segments. */
  readonly homes?: Homes;
}

/**
 * For the inodes a segment's ops name by number only (attributes, chunks, extended attributes,
 * a further name), the directories that named each when the segment was written, unless the
 * segment makes it: a machine that has not loaded every folder yet (pageLoader.ts) loads
 * those to find its record, instead of every folder.
 */
export type Homes = Readonly<Record<string, readonly number[]>>;

/** A metadata object in the bucket cannot be read (it fails authentication). */
export class DamagedMetadataError extends UserError {
  constructor(
    readonly key: string,
    message: string,
    code: EngineErrorCode = 'BUCKET_METADATA_DAMAGED',
  ) {
    super(message, code);
    this.name = 'DamagedMetadataError';
  }
}

/** What a checkpoint was written for: the filespace and its chunk size, as its header says. */
export interface FilespaceIdentity {
  readonly id: string;
  readonly chunkSize: number;
}

/** The header the loader unlocked is not the one the metadata in the bucket was written for. */
export class HeaderMismatchError extends UserError {
  constructor(message: string) {
    super(message, 'HEADER_MISMATCH');
    this.name = 'HeaderMismatchError';
  }
}

interface WholeCheckpoint {
  readonly seq: number;
  readonly tree: TreeSnapshot;
  readonly filespace?: FilespaceIdentity;
}

type Checkpoint = WholeCheckpoint | Manifest;

/** A checkpoint read whole: the tree it holds (from its pages, for a manifest). */
interface LoadedCheckpoint {
  readonly seq: number;
  readonly tree: Tree;
  readonly filespace?: FilespaceIdentity;
}

/**
 * Where a load puts the checkpoint it reads: a tree in memory (`load`), or rows of a database
 * written as the pages arrive (a fresh machine, metastore.ts `link`), so that memory holds a
 * few pages and not the tree. One attempt is one checkpoint: whole, or a manifest and then its
 * pages in the manifest's order; `discard` drops an attempt that failed (a damaged page, a
 * checkpoint pruned meanwhile), and the next attempt starts from nothing.
 */
export interface TreeSink {
  /** A whole-tree checkpoint (the older formats): the tree to apply the later segments to. */
  whole(seq: number, snap: TreeSnapshot): Tree | Promise<Tree>;
  /** A paged checkpoint's manifest, before its pages. */
  manifest(manifest: Manifest): void | Promise<void>;
  /**
   * One page, authenticated and checked against `ref`; it is not used after the call (after
   * the promise, if it returns one: the next page waits for it).
   */
  page(ref: PageRef, page: Page): void | Promise<void>;
  /** The tree the manifest and its pages make, to apply the later segments to. */
  pagesDone(): Tree | Promise<Tree>;
  /**
   * Which of the manifest's pages to read (all when absent): a fresh machine's link reads the
   * root's and the link pages, and loads the other directories on demand (pageLoader.ts).
   */
  wants?(ref: PageRef): boolean;
  /** Called before each later segment's ops are applied (to load what they name). */
  beforeOps?(ops: readonly MetaOp[], homes?: Homes): Promise<void>;
  /** Drops what the attempt built. */
  discard(): void;
}

/** A sink that assembles the tree in memory (every page held until the last one is read). */
function memorySink(chunkSize: number): TreeSink {
  let manifest: Manifest | undefined;
  let pages = new Map<string, Page>();
  return {
    whole: (_seq, snap) => Tree.fromSnapshot(chunkSize, snap),
    manifest(m) {
      manifest = m;
      pages = new Map();
    },
    page(ref, page) {
      pages.set(ref.key, page);
    },
    pagesDone() {
      if (!manifest) throw new Error('no manifest was read');
      const tree = assemble(chunkSize, manifest, pages);
      pages = new Map();
      return tree;
    },
    discard() {
      manifest = undefined;
      pages = new Map();
    },
  };
}

/** A page a manifest names is gone: the manifest was pruned meanwhile (list again). */
export class PageGoneError extends Error {}

/** What a tolerant `load` found damaged on its way (the checker reports it). */
export interface RemoteDamage {
  /** Checkpoints passed over because they fail authentication. */
  readonly checkpoints: string[];
  /** The first segment that cannot be read, and how many segments follow it. */
  readonly segment?: { readonly key: string; readonly seq: number; readonly later: number };
}

export class SegmentConflictError extends Error {
  constructor(seq: number) {
    super(`metadata segment ${seq} in the bucket was written by another machine; this machine stopped writing`);
    this.name = 'SegmentConflictError';
  }
}

export class RemoteMeta {
  /**
   * `identity` (from the unlocked header) goes into every checkpoint written, and is checked
   * against every checkpoint read that carries one.
   */
  constructor(
    private readonly store: ObjectStore,
    private readonly metaKey: Buffer,
    private readonly identity?: FilespaceIdentity,
  ) {}

  private sealJson(key: string, value: unknown): Buffer {
    return seal(this.metaKey, Buffer.from(JSON.stringify(value), 'utf8'), `meta:${key}`);
  }

  private async getJson<T>(key: string): Promise<T | undefined> {
    const got = await this.store.get(key);
    if (!got) return undefined;
    try {
      return JSON.parse(open(this.metaKey, got.body, `meta:${key}`, `metadata object ${key}`).toString('utf8')) as T;
    } catch (err) {
      if (!(err instanceof AuthError || err instanceof SyntaxError)) throw err;
      throw new DamagedMetadataError(key, `the metadata object ${key} in the bucket is damaged (${err.message})`);
    }
  }

  /** Segments stored after `seq`. */
  private async segmentsAfter(seq: number): Promise<number> {
    const key = seqKey(LOG_PREFIX, seq);
    return (await this.store.list(LOG_PREFIX)).filter((k) => k > key).length;
  }

  private async segmentDamaged(seq: number): Promise<DamagedMetadataError> {
    const key = seqKey(LOG_PREFIX, seq);
    const later = await this.segmentsAfter(seq).catch(() => undefined);
    return new DamagedMetadataError(
      key,
      `metadata segment ${seq} in the bucket (${key}) is damaged: it fails authentication, so the changes ` +
        `in it${later ? ` and in the ${later} segment(s) after it` : ''} cannot be read by any machine that links or follows this filespace; ` +
        'nothing was changed ("filespace check" reports it)',
    );
  }

  /** Segment `seq`, or undefined when it does not exist (yet); a damaged one throws, naming what it holds up. */
  private async segment(seq: number): Promise<Segment | undefined> {
    try {
      return await this.getJson<Segment>(seqKey(LOG_PREFIX, seq));
    } catch (err) {
      if (err instanceof DamagedMetadataError) throw await this.segmentDamaged(seq);
      throw err;
    }
  }

  /**
   * Writes `ops` as segment `seq`. Returns how many of `ops` the bucket now holds at that
   * sequence number: all of them, or, when a previous run of this machine wrote the segment
   * before crashing, the length of that earlier segment (a prefix of `ops`).
   */
  async pushSegment(seq: number, ops: readonly MetaOp[], writer: SegmentWriter, homes?: Homes): Promise<number> {
    const key = seqKey(LOG_PREFIX, seq);
    const body = homes && Object.keys(homes).length > 0 ? { seq, ops, writer, homes } : { seq, ops, writer };
    try {
      await this.store.put(key, this.sealJson(key, body), { ifNoneMatch: '*' });
      return ops.length;
    } catch (err) {
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
      let existing: Segment | undefined;
      try {
        existing = await this.getJson<Segment>(key);
      } catch (e) {
        if (e instanceof DamagedMetadataError) throw new SegmentConflictError(seq); // not ours, not even readable
        throw e;
      }
      if (!existing || !isOwnPrefix(existing, ops, writer.id)) throw new SegmentConflictError(seq);
      return existing.ops.length;
    }
  }

  async writeCheckpoint(seq: number, snap: TreeSnapshot): Promise<void> {
    const key = seqKey(CKPT_PREFIX, seq);
    try {
      const ckpt: Checkpoint = {
        seq,
        tree: snap,
        ...(this.identity ? { filespace: { id: this.identity.id, chunkSize: this.identity.chunkSize } } : {}),
      };
      await this.store.put(key, this.sealJson(key, ckpt), { ifNoneMatch: '*' });
    } catch (err) {
      // A checkpoint for this seq already exists (written before a crash): same content by construction.
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
    }
  }

  /**
   * Writes a paged checkpoint as `plan` says: its new pages (at most `PAGE_PARALLEL` at a time),
   * then its manifest. Resolves false when a checkpoint of that sequence number was already
   * there (written by an earlier run: the same tree, but other pages, so the plan must not be
   * the base of the next one).
   */
  async writePagedCheckpoint(plan: CheckpointPlan): Promise<boolean> {
    await eachLimit(plan.write, PAGE_PARALLEL, async ({ ref, body }) => {
      try {
        await this.store.put(ref.key, seal(this.metaKey, body, `meta:${ref.key}`), { ifNoneMatch: '*' });
      } catch (err) {
        // The key is this run's own: a conflict is an earlier attempt of this PUT that succeeded.
        if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
      }
    });
    const key = seqKey(CKPT_PREFIX, plan.manifest.seq);
    try {
      await this.store.put(key, this.sealJson(key, plan.manifest), { ifNoneMatch: '*' });
      return true;
    } catch (err) {
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
      return false;
    }
  }

  /** The newest checkpoint if it is a manifest that opens (what a writer's first paged checkpoint compares with). */
  async newestManifest(): Promise<Manifest | undefined> {
    const key = (await this.store.list(CKPT_PREFIX)).pop();
    if (!key) return undefined;
    const ck = await this.getJson<Checkpoint>(key).catch((err: unknown) => {
      if (err instanceof DamagedMetadataError) return undefined;
      throw err;
    });
    return ck && isManifest(ck) ? ck : undefined;
  }

  /** Reads checkpoint `key` (a manifest or a whole tree), undefined when it is gone. */
  async readCheckpoint(key: string): Promise<Checkpoint | undefined> {
    return this.getJson<Checkpoint>(key);
  }

  /**
   * Reads the page `ref` names. PageGoneError when it is not there; DamagedMetadataError when it
   * does not open or is not the page `ref` says (a swapped page).
   */
  async readPage(ref: PageRef): Promise<Page> {
    const got = await this.store.get(ref.key);
    if (!got) throw new PageGoneError(`metadata page ${ref.key} is gone`);
    const damaged = (why: string) =>
      new DamagedMetadataError(ref.key, `the metadata page ${ref.key} in the bucket is damaged (${why})`);
    let body: Buffer;
    let page: Page;
    try {
      body = open(this.metaKey, got.body, `meta:${ref.key}`, `metadata object ${ref.key}`);
      page = JSON.parse(body.toString('utf8')) as Page;
    } catch (err) {
      if (!(err instanceof AuthError || err instanceof SyntaxError)) throw err;
      throw damaged(err.message);
    }
    // The content hash: a manifest naming a page of other content (an older one) is caught too.
    this.hashKey ??= pageHashKey(this.metaKey);
    if (pageHash(this.hashKey, body) !== ref.hash || !pageMatches(ref, page))
      throw damaged('it is not the page its checkpoint names');
    return page;
  }

  private hashKey: Buffer | undefined;

  /** Reads every page `refs` names (bounded parallel GETs). */
  async readPages(refs: readonly PageRef[]): Promise<Map<string, Page>> {
    const pages = new Map<string, Page>();
    await eachLimit(refs, PAGE_PARALLEL, async (ref) => {
      pages.set(ref.key, await this.readPage(ref));
    });
    return pages;
  }

  /**
   * The tree manifest `m` and its pages make (a snapshot's, meta/snapshots.ts), assembled in
   * memory; PageGoneError or DamagedMetadataError when a page cannot be read.
   */
  async treeOfManifest(chunkSize: number, m: Manifest): Promise<Tree> {
    this.checkIdentity(m);
    const sink = memorySink(chunkSize);
    await sink.manifest(m);
    await this.streamPages(m.pages, (ref, page) => sink.page(ref, page));
    return sink.pagesDone();
  }

  /**
   * Reads the pages `refs` names and hands each to `each` in the order of `refs`, at most
   * `STREAM_AHEAD` (and `STREAM_AHEAD_BYTES`) read ahead: memory holds those, not every page.
   */
  async streamPages(refs: readonly PageRef[], each: (ref: PageRef, page: Page) => void | Promise<void>): Promise<void> {
    const ahead: Array<Promise<Page>> = [];
    let aheadBytes = 0;
    let next = 0;
    for (const ref of refs) {
      while (
        next < refs.length &&
        ahead.length < STREAM_AHEAD &&
        (ahead.length === 0 || aheadBytes + refs[next]!.bytes <= STREAM_AHEAD_BYTES)
      ) {
        const read = this.readPage(refs[next]!);
        aheadBytes += refs[next++]!.bytes;
        read.catch(() => undefined); // awaited below, in order; a failure ahead is reported there
        ahead.push(read);
      }
      const page = await ahead.shift()!;
      aheadBytes -= ref.bytes;
      await each(ref, page);
    }
  }

  /**
   * The ops of segments `from`..`to`, in order (bounded parallel GETs); undefined when one of
   * them is not in the bucket (compacted away, or not written).
   */
  async readSegments(from: number, to: number): Promise<Array<{ seq: number; ops: MetaOp[] }> | undefined> {
    const seqs: number[] = [];
    for (let seq = from; seq <= to; seq++) seqs.push(seq);
    const got = new Map<number, MetaOp[]>();
    let missing = false;
    await eachLimit(seqs, PAGE_PARALLEL, async (seq) => {
      if (missing) return;
      const segment = await this.segment(seq);
      if (!segment) missing = true;
      else got.set(seq, segment.ops);
    });
    return missing ? undefined : seqs.map((seq) => ({ seq, ops: got.get(seq)! }));
  }

  /** The inode numbers each link page of `manifest` holds, by the page's range start. */
  async linkInodes(manifest: Manifest): Promise<Map<number, number[]>> {
    const refs = manifest.pages.filter((r) => !isDirCover(r));
    const pages = await this.readPages(refs);
    const out = new Map<number, number[]>();
    for (const ref of refs) {
      if (!isDirCover(ref))
        out.set(
          ref.lo,
          pages.get(ref.key)!.inodes.map((i) => i.ino),
        );
    }
    return out;
  }

  /** The pages of one directory in `manifest`, in name order (one directory fetched alone). */
  async readDirectory(manifest: Manifest, dir: number): Promise<Page[]> {
    const refs = directoryPages(manifest, dir);
    const pages = await this.readPages(refs);
    return refs.map((r) => pages.get(r.key)!);
  }

  /**
   * Makes the newest checkpoint name this filespace, if it was written before checkpoints did:
   * the same tree, rewritten with the identity, conditional on the ETag read (a checkpoint is
   * the same tree for its sequence number whoever writes it). Resolves true when the newest
   * checkpoint names the filespace afterwards.
   */
  async bindNewestCheckpoint(): Promise<boolean> {
    const identity = this.identity;
    const key = (await this.store.list(CKPT_PREFIX)).pop();
    if (!identity || !key) return false;
    const got = await this.store.get(key);
    if (!got) return false; // pruned meanwhile: a newer one exists
    let ck: Checkpoint;
    try {
      ck = JSON.parse(open(this.metaKey, got.body, `meta:${key}`, `metadata object ${key}`).toString('utf8')) as Checkpoint;
    } catch {
      return false; // damaged: loaders pass it over
    }
    if (ck.filespace) return true;
    try {
      await this.store.put(key, this.sealJson(key, { ...ck, filespace: { id: identity.id, chunkSize: identity.chunkSize } }), {
        ifMatch: got.etag,
      });
    } catch (err) {
      if (err instanceof StoreError && err.code === 'PreconditionFailed') return false;
      throw err;
    }
    return true;
  }

  /** Reads segment `seq`, or undefined when it does not exist (yet). */
  readSegment(seq: number): Promise<Segment | undefined> {
    return this.segment(seq);
  }

  /** The compaction mark (upTo 0 when the log was never compacted). */
  async readCompaction(): Promise<CompactionView> {
    const got = await this.store.get(COMPACTED_KEY);
    if (!got) return { mark: { upTo: 0 }, etag: undefined };
    let mark: CompactionMark;
    try {
      mark = JSON.parse(
        open(this.metaKey, got.body, `meta:${COMPACTED_KEY}`, `metadata object ${COMPACTED_KEY}`).toString('utf8'),
      ) as CompactionMark;
    } catch (err) {
      if (!(err instanceof AuthError || err instanceof SyntaxError)) throw err;
      throw new DamagedMetadataError(
        COMPACTED_KEY,
        `the metadata object ${COMPACTED_KEY} in the bucket is damaged (${err.message}); nothing was changed`,
      );
    }
    if (!Number.isSafeInteger(mark.upTo) || mark.upTo < 0) {
      throw new DamagedMetadataError(COMPACTED_KEY, `the metadata object ${COMPACTED_KEY} in the bucket is damaged (no mark)`);
    }
    return { mark, etag: got.etag };
  }

  /**
   * Raises the compaction mark to `upTo`, conditional on the mark read (`seen`): a mark is
   * never lowered. Resolves the mark now in the bucket (a higher one another writer raised
   * meanwhile wins).
   */
  async raiseCompaction(upTo: number, writer: SegmentWriter, seen: CompactionView): Promise<CompactionView> {
    let cur = seen;
    for (let attempt = 0; ; attempt++) {
      if (cur.mark.upTo >= upTo) return cur;
      const mark: CompactionMark = { upTo, writer, at: Date.now() };
      try {
        const etag = await this.store.put(
          COMPACTED_KEY,
          this.sealJson(COMPACTED_KEY, mark),
          cur.etag === undefined ? { ifNoneMatch: '*' } : { ifMatch: cur.etag },
        );
        return { mark, etag };
      } catch (err) {
        if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed' || attempt >= 3) throw err;
        cur = await this.readCompaction();
      }
    }
  }

  /** Deletes every segment at or below `upTo` (compaction; the mark must already say so). Returns how many. */
  async deleteSegmentsThrough(upTo: number): Promise<number> {
    const last = seqKey(LOG_PREFIX, upTo);
    const old = (await this.store.list(LOG_PREFIX)).filter((k) => k <= last);
    for (const key of old) await this.store.delete(key);
    return old.length;
  }

  /**
   * Deletes every checkpoint but the newest `keep`. Returns how many it deleted. Safe for any
   * machine to run at any time: which ones stay depends only on the bucket's listing.
   */
  async pruneCheckpoints(keep = CHECKPOINTS_KEPT): Promise<number> {
    const ckpts = await this.store.list(CKPT_PREFIX);
    const old = ckpts.slice(0, Math.max(0, ckpts.length - keep));
    for (const key of old) await this.store.delete(key);
    return old.length;
  }

  /**
   * Reads the newest checkpoint and every segment after it. A checkpoint that vanished
   * between the listing and the read (pruned by the writer) means listing again; one that
   * fails authentication makes the previous one the starting point.
   */
  async load(chunkSize: number): Promise<{ tree: Tree; seq: number }> {
    return this.loadFrom(chunkSize, false, memorySink(chunkSize));
  }

  /**
   * Like `load`, but the checkpoint goes into `sink` as it is read (see TreeSink); the tree
   * returned is the one the sink gave, with the later segments applied.
   */
  async loadInto(chunkSize: number, sink: TreeSink): Promise<{ tree: Tree; seq: number }> {
    return this.loadFrom(chunkSize, false, sink);
  }

  /**
   * Like `load`, but a damaged segment ends the log instead of failing: the tree is the one up
   * to the segment before it, and `damage` says what was passed over (the checker).
   */
  loadTolerant(chunkSize: number): Promise<{ tree: Tree; seq: number; damage: RemoteDamage }> {
    return this.loadFrom(chunkSize, true, memorySink(chunkSize));
  }

  /** `loadTolerant` into `sink` (see `loadInto`). */
  loadTolerantInto(chunkSize: number, sink: TreeSink): Promise<{ tree: Tree; seq: number; damage: RemoteDamage }> {
    return this.loadFrom(chunkSize, true, sink);
  }

  private async loadFrom(
    chunkSize: number,
    tolerant: boolean,
    sink: TreeSink,
    round = 0,
  ): Promise<{ tree: Tree; seq: number; damage: RemoteDamage }> {
    let ck: LoadedCheckpoint | undefined;
    const damagedCheckpoints = new Set<string>();
    const pagesGone = new Set<string>();
    for (let attempt = 0; !ck; attempt++) {
      const ckpts = await this.store.list(CKPT_PREFIX);
      if (ckpts.length === 0) throw new Error('the bucket holds no metadata checkpoint for this filespace');
      let damaged: DamagedMetadataError | undefined;
      for (const key of ckpts.slice().reverse()) {
        try {
          ck = await this.loadCheckpoint(key, sink);
        } catch (err) {
          sink.discard();
          if (err instanceof PageGoneError && !pagesGone.has(key)) {
            pagesGone.add(key);
            break; // pruned meanwhile: list again
          }
          // Still listed with a page gone: as damaged as a checkpoint that does not open.
          const bad =
            err instanceof PageGoneError
              ? new DamagedMetadataError(key, `the metadata checkpoint ${key} in the bucket is damaged (${err.message})`)
              : err;
          if (!(bad instanceof DamagedMetadataError)) throw bad;
          damaged ??= bad;
          damagedCheckpoints.add(key);
          continue; // damaged: an older checkpoint plus more segments gives the same tree
        }
        break; // found, or vanished (pruned): list again
      }
      if (!ck && damaged && attempt >= 2) throw this.noCheckpointOpens(damaged, ckpts.length);
      if (!ck && attempt >= 5) throw new Error('the metadata checkpoints keep vanishing while reading; try again');
    }
    this.checkIdentity(ck);
    let loaded: Awaited<ReturnType<RemoteMeta['replay']>>;
    try {
      loaded = await this.replay(ck, tolerant, sink);
    } catch (err) {
      sink.discard();
      throw err;
    }
    if (loaded === undefined) {
      sink.discard();
      // Compacted past the point reached meanwhile: a newer checkpoint covers it.
      if (round >= 5)
        throw new Error(
          'the metadata log is compacted past every checkpoint that could be read (or keeps being compacted while reading); try again, and run "filespace check"',
        );
      return this.loadFrom(chunkSize, tolerant, sink, round + 1);
    }
    return {
      ...loaded,
      damage: { checkpoints: [...damagedCheckpoints], ...(loaded.segment ? { segment: loaded.segment } : {}) },
    };
  }

  /**
   * Checkpoint `key`, read into `sink` (from its pages for a manifest), with the tree the sink
   * made of it; undefined when it is gone.
   */
  private async loadCheckpoint(key: string, sink: TreeSink): Promise<LoadedCheckpoint | undefined> {
    const ck = await this.getJson<Checkpoint>(key);
    if (!ck) return undefined;
    // Checked before the tree is built: a chunk size from another header must not be used.
    this.checkIdentity(ck);
    const filespace = ck.filespace ? { filespace: ck.filespace } : {};
    if (!isManifest(ck)) return { seq: ck.seq, tree: await sink.whole(ck.seq, ck.tree), ...filespace };
    await sink.manifest(ck);
    const wanted = sink.wants ? ck.pages.filter((r) => sink.wants!(r)) : ck.pages;
    await this.streamPages(wanted, (ref, page) => sink.page(ref, page));
    try {
      return { seq: ck.seq, tree: await sink.pagesDone(), ...filespace };
    } catch (err) {
      throw new DamagedMetadataError(key, `the metadata checkpoint ${key} in the bucket is damaged (${(err as Error).message})`);
    }
  }

  /**
   * The tree of checkpoint `ck` with the segments after it applied; undefined when the log was
   * compacted past the point reached meanwhile (the caller loads again from a newer checkpoint).
   */
  private async replay(
    ck: LoadedCheckpoint,
    tolerant: boolean,
    sink?: TreeSink,
  ): Promise<{ tree: Tree; seq: number; segment?: RemoteDamage['segment'] } | undefined> {
    const tree = ck.tree;
    let seq = ck.seq;
    let segment: RemoteDamage['segment'];
    for (;;) {
      let seg: Segment | undefined;
      try {
        seg = await this.segment(seq + 1);
      } catch (err) {
        if (!tolerant || !(err instanceof DamagedMetadataError)) throw err;
        segment = { key: err.key, seq: seq + 1, later: await this.segmentsAfter(seq + 1) };
        break;
      }
      if (!seg) {
        if ((await this.readCompaction()).mark.upTo > seq) return undefined;
        break;
      }
      if (sink?.beforeOps) await sink.beforeOps(seg.ops, seg.homes);
      for (const op of seg.ops) tree.apply(op);
      seq++;
    }
    return { tree, seq, ...(segment ? { segment } : {}) };
  }

  /**
   * Every checkpoint fails authentication: the keys of the header (another filespace's?) do
   * not open this metadata, or all of it is damaged. Either way nothing can be read.
   */
  private noCheckpointOpens(first: DamagedMetadataError, count: number): DamagedMetadataError {
    return new DamagedMetadataError(
      first.key,
      `none of the ${count} metadata checkpoint(s) in ${this.store.description} opens with the keys of its ` +
        `filespace.json: that header belongs to another filespace (was filespace.json replaced?), or the metadata is damaged; nothing was changed`,
      'METADATA_KEYS_MISMATCH',
    );
  }

  /** A checkpoint that names its filespace must name the one of the header in use. */
  private checkIdentity(ck: { readonly filespace?: FilespaceIdentity }): void {
    const want = this.identity;
    const got = ck.filespace;
    if (!want || !got) return;
    const where = `${this.store.description}/filespace.json`;
    if (got.id !== want.id) {
      throw new HeaderMismatchError(
        `${where} names filespace ${want.id}, but the metadata in the bucket belongs to another filespace ` +
          `(${got.id}): the header was replaced; put the original back (nothing was changed)`,
      );
    }
    if (got.chunkSize !== want.chunkSize) {
      throw new HeaderMismatchError(
        `${where} gives a chunk size of ${formatSize(want.chunkSize)}, but the filespace was written with ` +
          `${formatSize(got.chunkSize)} chunks: the header was changed; put the original back (nothing was changed)`,
      );
    }
  }
}

/**
 * True when `seg` is one this machine wrote from the front of `ops` (it crashed after the
 * write, before noting it). A segment without a writer predates the lease: only a non-empty
 * matching prefix counts.
 */
export function isOwnPrefix(seg: Segment, ops: readonly MetaOp[], selfId: string): boolean {
  if (seg.writer ? seg.writer.id !== selfId : seg.ops.length === 0) return false;
  return seg.ops.length <= ops.length && seg.ops.every((op, i) => isDeepStrictEqual(op, ops[i]));
}
