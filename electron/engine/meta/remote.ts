/**
 * Replication of the metadata to the bucket, so another machine can link the filespace from
 * the bucket alone.
 *
 * Layout under the filespace root:
 *   filespace.json           header: format, chunk size, KDF parameters, wrapped data key
 *   meta/log/<seq>           sealed JSON {seq, ops}: the ops committed after segment seq-1
 *   meta/ckpt/<seq>          sealed JSON snapshot of the tree after applying segments 1..seq
 * Sequence numbers are zero-padded to 12 digits so listings sort numerically. Segments and
 * checkpoints are created with If-None-Match so a segment number is written exactly once; a
 * writer that finds its number taken learns that someone else wrote (the lease work builds on
 * this fence).
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

export function seqKey(prefix: string, seq: number): string {
  return `${prefix}${String(seq).padStart(12, '0')}`;
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
  async pushSegment(seq: number, ops: readonly MetaOp[]): Promise<number> {
    const key = seqKey(LOG_PREFIX, seq);
    try {
      await this.store.put(key, this.sealJson(key, { seq, ops }), { ifNoneMatch: '*' });
      return ops.length;
    } catch (err) {
      if (!(err instanceof StoreError) || err.code !== 'PreconditionFailed') throw err;
      let existing: { ops: MetaOp[] } | undefined;
      try {
        existing = await this.getJson<{ ops: MetaOp[] }>(key);
      } catch (e) {
        if (e instanceof AuthError) throw new SegmentConflictError(seq); // not ours, not even readable
        throw e;
      }
      const theirs = existing?.ops ?? [];
      const isOurPrefix = theirs.length <= ops.length && theirs.every((op, i) => isDeepStrictEqual(op, ops[i]));
      if (!isOurPrefix) throw new SegmentConflictError(seq);
      return theirs.length;
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
  async readSegment(seq: number): Promise<MetaOp[] | undefined> {
    const seg = await this.getJson<{ seq: number; ops: MetaOp[] }>(seqKey(LOG_PREFIX, seq));
    return seg?.ops;
  }

  /** Reads the newest checkpoint and every segment after it. */
  async load(chunkSize: number): Promise<{ tree: Tree; seq: number }> {
    const ckpts = await this.store.list(CKPT_PREFIX);
    const latest = ckpts.length > 0 ? ckpts[ckpts.length - 1]! : undefined;
    if (!latest) throw new Error('the bucket holds no metadata checkpoint for this filespace');
    const ck = await this.getJson<{ seq: number; tree: TreeSnapshot }>(latest);
    if (!ck) throw new Error(`checkpoint ${latest} vanished while reading`);
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
