/**
 * Replication of the metadata to the bucket, so another machine can link the filespace from
 * the bucket alone.
 *
 * Layout under the filespace root:
 *   filespace.json           header: format, chunk size, KDF parameters, wrapped data key
 *   meta/log/<seq>           sealed JSON {seq, ops}: the ops committed after segment seq-1
 *   meta/ckpt/<seq>          sealed JSON snapshot of the tree after applying segments 1..seq
 * Sequence numbers are zero-padded to 12 digits so listings sort numerically. Segments and
 * checkpoints are created with If-None-Match so a segment number is written exactly once, and
 * every segment names its writer (machine id and lease epoch). A writer that finds its number
 * taken by a segment of another writer has been fenced off: it must stop committing. A new
 * lease holder writes an empty fence segment after catching up, so an old holder that was
 * merely suspended collides with it on its next push.
 *
 * Checkpoints are snapshots of the whole tree, so only the newest `CHECKPOINTS_KEPT` stay:
 * the writer deletes older ones after writing a new one. Nothing needs them (segments are
 * kept, so the log replays from any checkpoint), and a loader that listed a checkpoint deleted
 * before it read it simply lists again.
 *
 * Everything is sealed with the metadata key and the object's key as associated data, so a
 * segment cannot be swapped for another unnoticed.
 */

import { isDeepStrictEqual } from 'node:util';
import { AuthError, open, seal } from '../chunk/crypto';
import { ObjectStore, StoreError } from '../store/types';
import { MetaOp, Tree, TreeSnapshot } from './tree';

export const LOG_PREFIX = 'meta/log/';
export const CKPT_PREFIX = 'meta/ckpt/';
/** Checkpoints kept in the bucket: the newest, and one before it in case the newest is damaged. */
export const CHECKPOINTS_KEPT = 2;

export function seqKey(prefix: string, seq: number): string {
  return `${prefix}${String(seq).padStart(12, '0')}`;
}

/** Who wrote a segment. Segments from before the lease carry none. */
export interface SegmentWriter {
  readonly id: string;
  readonly epoch: number;
}

export interface Segment {
  readonly ops: MetaOp[];
  readonly writer?: SegmentWriter;
}

export class SegmentConflictError extends Error {
  constructor(seq: number) {
    super(`metadata segment ${seq} in the bucket was written by another machine; this machine stopped writing`);
    this.name = 'SegmentConflictError';
  }
}

export class RemoteMeta {
  constructor(private readonly store: ObjectStore, private readonly metaKey: Buffer) {}

  private sealJson(key: string, value: unknown): Buffer {
    return seal(this.metaKey, Buffer.from(JSON.stringify(value), 'utf8'), `meta:${key}`);
  }

  private async getJson<T>(key: string): Promise<T | undefined> {
    const got = await this.store.get(key);
    if (!got) return undefined;
    return JSON.parse(open(this.metaKey, got.body, `meta:${key}`, `metadata object ${key}`).toString('utf8')) as T;
  }

  /**
   * Writes `ops` as segment `seq`. Returns how many of `ops` the bucket now holds at that
   * sequence number: all of them, or, when a previous run of this machine wrote the segment
   * before crashing, the length of that earlier segment (a prefix of `ops`).
   */
  async pushSegment(seq: number, ops: readonly MetaOp[], writer: SegmentWriter): Promise<number> {
    const key = seqKey(LOG_PREFIX, seq);
    try {
      await this.store.put(key, this.sealJson(key, { seq, ops, writer }), { ifNoneMatch: '*' });
      return ops.length;
    } catch (err) {
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
      let existing: Segment | undefined;
      try {
        existing = await this.getJson<Segment>(key);
      } catch (e) {
        if (e instanceof AuthError) throw new SegmentConflictError(seq); // not ours, not even readable
        throw e;
      }
      if (!existing || !isOwnPrefix(existing, ops, writer.id)) throw new SegmentConflictError(seq);
      return existing.ops.length;
    }
  }

  async writeCheckpoint(seq: number, snap: TreeSnapshot): Promise<void> {
    const key = seqKey(CKPT_PREFIX, seq);
    try {
      await this.store.put(key, this.sealJson(key, { seq, tree: snap }), { ifNoneMatch: '*' });
    } catch (err) {
      // A checkpoint for this seq already exists (written before a crash): same content by construction.
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
    }
  }

  /** Reads segment `seq`, or undefined when it does not exist (yet). */
  readSegment(seq: number): Promise<Segment | undefined> {
    return this.getJson<Segment>(seqKey(LOG_PREFIX, seq));
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
    let ck: { seq: number; tree: TreeSnapshot } | undefined;
    for (let attempt = 0; !ck; attempt++) {
      const ckpts = await this.store.list(CKPT_PREFIX);
      if (ckpts.length === 0) throw new Error('the bucket holds no metadata checkpoint for this filespace');
      let damaged: Error | undefined;
      for (const key of ckpts.slice().reverse()) {
        try {
          ck = await this.getJson<{ seq: number; tree: TreeSnapshot }>(key);
        } catch (err) {
          if (!(err instanceof AuthError)) throw err;
          damaged ??= err;
          continue; // damaged: an older checkpoint plus more segments gives the same tree
        }
        break; // found, or vanished (pruned): list again
      }
      if (!ck && damaged && attempt >= 2) throw damaged;
      if (!ck && attempt >= 5) throw new Error('the metadata checkpoints keep vanishing while reading; try again');
    }
    const tree = Tree.fromSnapshot(chunkSize, ck.tree);
    let seq = ck.seq;
    for (;;) {
      const seg = await this.getJson<{ seq: number; ops: MetaOp[] }>(seqKey(LOG_PREFIX, seq + 1));
      if (!seg) break;
      for (const op of seg.ops) tree.apply(op);
      seq++;
    }
    return { tree, seq };
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
