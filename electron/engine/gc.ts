/**
 * Garbage collection of chunks, and of packs of small chunks (chunk/packs.ts), that no metadata
 * references (DESIGN invariant 2). Runs only in
 * the lease holder, whose tree is the newest committed metadata plus its own commits not yet
 * pushed (which name only chunks already uploaded); what `referenced` answers for includes
 * every chunk a live snapshot names (meta/snapshots.ts says why none of those is ever deleted).
 *
 * A pack is referenced while any reference, live or a snapshot's, names one of its members
 * (`referencedPacks`); a pack is marked, swept and held under its key (`packs/…`), which no
 * chunk name can equal. An upload holds its pack from before the pack's PUT until every
 * member's reference is committed.
 *
 * Two phases with a grace period, so nothing in flight breaks:
 * - mark: every chunk in the bucket that the tree does not reference is noted with the time it
 *   was first seen unreferenced (kept in the bucket, sealed, so a new lease holder continues);
 * - sweep: a chunk is deleted only if it has stayed unreferenced for `graceMs`, is still
 *   unreferenced now, and no upload has named it since it was marked.
 * The grace period also covers followers still reading a file's old chunks and a follower
 * catching up through older metadata.
 *
 * Ordering with uploads (same process): an upload registers its chunk name in `inUse` before
 * it decides whether to PUT, and keeps it there until its reference is committed; the sweep
 * skips names in `inUse` and names used since marking, and while a sweep deletes, an upload of
 * one of the names being deleted waits for the sweep to finish (`waitFor`). So a delete never
 * overtakes the PUT it would undo.
 */

import { open, seal } from './chunk/crypto';
import { CHUNK_LIST_PARTS, chunkKey } from './chunk/format';
import { PACK_LIST_PARTS, packIdOfKey } from './chunk/packs';
import { ObjectStore } from './store/types';

export const GC_MARKS_KEY = 'meta/gc-marks';

/** Whether a name the collector marks or holds is a pack's key rather than a chunk's name. */
function isPackKey(n: string): boolean {
  return n.startsWith('packs/');
}

export interface GcResult {
  readonly scanned: number;
  readonly referenced: number;
  readonly marked: number;
  readonly deleted: number;
  /** Packs mostly of garbage whose live members moved to new packs (upload/repack.ts), after the pass. */
  readonly repacked?: number;
}

export class ChunkCollector {
  private readonly inUse = new Map<string, number>();
  private readonly usedAt = new Map<string, number>();
  private deleting = new Set<string>();
  private sweep: Promise<void> | undefined;
  private running: Promise<GcResult> | undefined;

  constructor(
    private readonly store: ObjectStore,
    private readonly metaKey: Buffer,
    private readonly referenced: () => { has(name: string): boolean },
    private readonly graceMs: () => number,
    private readonly now: () => number = Date.now,
    /** The packs some reference names a member of (undefined: none is known to hold members). */
    private readonly referencedPacks: () => Promise<{ has(pack: string): boolean }> = async () => ({ has: () => false }),
  ) {}

  /** Marks `name` as being uploaded/referenced; waits if a sweep is deleting it right now. */
  async acquire(name: string): Promise<void> {
    while (this.deleting.has(name) && this.sweep) await this.sweep;
    this.inUse.set(name, (this.inUse.get(name) ?? 0) + 1);
    this.usedAt.set(name, this.now());
  }

  release(name: string): void {
    const n = (this.inUse.get(name) ?? 1) - 1;
    if (n <= 0) this.inUse.delete(name);
    else this.inUse.set(name, n);
  }

  private async readMarks(): Promise<Map<string, number>> {
    const got = await this.store.get(GC_MARKS_KEY);
    if (!got) return new Map();
    const obj = JSON.parse(
      open(this.metaKey, got.body, `meta:${GC_MARKS_KEY}`, 'garbage collection marks').toString('utf8'),
    ) as Record<string, number>;
    return new Map(Object.entries(obj));
  }

  private async writeMarks(marks: Map<string, number>): Promise<void> {
    const body = seal(this.metaKey, Buffer.from(JSON.stringify(Object.fromEntries(marks))), `meta:${GC_MARKS_KEY}`);
    await this.store.put(GC_MARKS_KEY, body);
  }

  /** One mark-and-sweep pass. Concurrent calls share it. */
  run(): Promise<GcResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<GcResult> {
    const started = this.now();
    const prev = await this.readMarks();
    const refs = this.referenced();
    const grace = this.graceMs();
    const unreferenced = (n: string) => !refs.has(n) && !this.inUse.has(n);

    const doomed: string[] = [];
    const marks = new Map<string, number>();
    let scanned = 0;
    const weigh = (n: string) => {
      const since = prev.get(n);
      const used = this.usedAt.get(n);
      if (since !== undefined && (used === undefined || used < since) && started - since >= grace) doomed.push(n);
      else marks.set(n, since !== undefined && (used === undefined || used < since) ? since : started);
    };
    // The bucket's chunks a sixteenth at a time; only the unreferenced names are kept.
    for (const part of CHUNK_LIST_PARTS) {
      for (const key of await this.store.list(part)) {
        scanned++;
        const n = key.slice(key.lastIndexOf('/') + 1);
        if (unreferenced(n)) weigh(n);
      }
    }
    // Then the packs, by key.
    const packs = await this.referencedPacks();
    for (const part of PACK_LIST_PARTS) {
      for (const key of await this.store.list(part)) {
        const id = packIdOfKey(key);
        if (id === undefined) continue;
        scanned++;
        if (!packs.has(id) && !this.inUse.has(key)) weigh(key);
      }
    }
    // Checked again right before deleting: the tree may have changed during the listing.
    const now = this.referenced();
    const packsNow = doomed.some(isPackKey) ? await this.referencedPacks() : packs;
    const toDelete = doomed.filter((n) =>
      isPackKey(n) ? !packsNow.has(packIdOfKey(n)!) && !this.inUse.has(n) : !now.has(n) && !this.inUse.has(n),
    );
    if (toDelete.length > 0) {
      let finished!: () => void;
      this.sweep = new Promise<void>((r) => (finished = r));
      this.deleting = new Set(toDelete);
      try {
        await this.store.deleteMany(toDelete.map((n) => (isPackKey(n) ? n : chunkKey(n))));
      } finally {
        this.deleting = new Set();
        this.sweep = undefined;
        finished();
      }
    }
    await this.writeMarks(marks);
    for (const [n, t] of this.usedAt) if (t < started - grace) this.usedAt.delete(n);
    return {
      scanned,
      referenced: scanned - marks.size - toDelete.length,
      marked: marks.size,
      deleted: toDelete.length,
    };
  }
}
