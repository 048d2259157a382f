/**
 * Repacking: the live members of packs that are mostly garbage move into new packs, so the
 * space of their deleted members is given back to the bucket (a pack goes only once no
 * reference names any of its members: gc.ts).
 *
 * A pack is a candidate when at least `REPACK_DEAD_SHARE` of its bytes and at least
 * `REPACK_DEAD_MIN` bytes are members no live reference names, and no snapshot names any of
 * its members (a snapshot's references never change, so moving the live ones would free
 * nothing), nor a file deleted while open. A pack's size comes from this engine's own PUTs or,
 * for older packs, from a HEAD (a pack never changes, so each is asked once per process).
 *
 * Moving a member copies its object as it is: it is sealed under its chunk's name, not under its
 * place (chunk/packs.ts), so it needs no key and no cipher work. Order, and why (DESIGN
 * invariant 2):
 *  1. the new pack is held by the packer from before its PUT until every moved reference is
 *     committed (upload/packer.ts), so the collector never deletes it in between;
 *  2. a reference moves only where it still names the old place when the move is committed
 *     (checked and committed in one step): a chunk written meanwhile keeps its new data;
 *  3. the old pack is left to the collector: once no reference names it, it is marked and
 *     deleted after the grace period, which also covers followers still reading the old place.
 * A run stopped half-way leaves both packs referenced, or the new one unreferenced (collected
 * after the grace period); the next run picks up what is left.
 *
 * A machine that holds a moved chunk in its cache keeps it under the new name (`rekey`).
 */

import { PACK_INDEX_ROOM, PackedAt, contentName, packKey, packedAt, packedName } from '../chunk/packs';
import type { Inode, MetaOp, RefCounts } from '../meta/tree';
import type { ObjectStore } from '../store/types';
import { PACK_BYTES, type PackMember } from './packer';

/** A pack is repacked when at least this share of its bytes is garbage... */
export const REPACK_DEAD_SHARE = 0.5;
/** ...and at least this many bytes. */
export const REPACK_DEAD_MIN = 512 * 1024;
/** Live bytes moved in one run at most (the rest waits for the next). */
export const REPACK_BYTES_PER_RUN = 64 * 1024 * 1024;
/** Packs of unknown size asked about (HEAD) in one run at most. */
export const REPACK_HEADS_PER_RUN = 1_000;
/** The largest a pack can be: its members and the room for its index. */
const PACK_SIZE_MAX = PACK_BYTES + PACK_INDEX_ROOM;
/** Live bytes gathered before waiting for their new packs (a pack's worth). */
const GROUP_BYTES = PACK_BYTES;
/** Pack sizes learnt by HEAD that are kept (packs never change). */
const SIZES_KEPT = 65_536;
/** Inodes or names walked between yields to the event loop. */
const YIELD_EVERY = 5_000;

export interface RepackDeps {
  readonly store: Pick<ObjectStore, 'get' | 'head'>;
  /** The live tree's reference counts and inodes (the lease holder's). */
  readonly tree: () => {
    readonly chunkRefs: RefCounts;
    readonly inodes: { values(): IterableIterator<Inode> };
    get(ino: number): Inode | undefined;
  };
  /** Names referenced elsewhere than the tree: files deleted while still open. */
  readonly otherRefs: () => Iterable<string>;
  /** Packs some snapshot names a member of; undefined while the snapshots are not counted. */
  readonly snapshotPacks: () => ReadonlySet<string> | undefined;
  /** The size of a pack this engine sent, if it knows it. */
  readonly knownSize: (pack: string) => number | undefined;
  /** Copies a member's object into the open pack (upload/packer.ts `enter`); undefined when stopping. */
  readonly enter: (name: string, obj: Buffer) => Promise<PackMember | undefined>;
  readonly commit: (op: MetaOp) => void;
  readonly sync: () => Promise<void>;
  /** The chunk cached under `from` now answers to `to` (same content). */
  readonly rekey: (from: string, to: string) => Promise<void>;
  /** The engine is stopping: nothing more is committed. */
  readonly stopping: () => boolean;
  readonly log: (msg: string) => void;
}

export interface RepackResult {
  /** Packs whose live members moved. */
  readonly packs: number;
  /** References moved to a new place. */
  readonly moved: number;
  /** Live bytes copied. */
  readonly bytesMoved: number;
  /** Bytes the old packs hold that are given back once they are collected. */
  readonly bytesFreed: number;
}

const NOTHING: RepackResult = { packs: 0, moved: 0, bytesMoved: 0, bytesFreed: 0 };

interface Candidate {
  readonly pack: string;
  readonly size: number;
  readonly live: number;
  /** The live members' names as references carry them (one per member). */
  readonly refs: string[];
}

const breathe = () => new Promise<void>((r) => setImmediate(r));

export class Repacker {
  private readonly sizes = new Map<string, number>();
  private running: Promise<RepackResult> | undefined;

  constructor(private readonly deps: RepackDeps) {}

  /** One run; concurrent calls share it. */
  run(): Promise<RepackResult> {
    this.running ??= this.pass().finally(() => (this.running = undefined));
    return this.running;
  }

  private async pass(): Promise<RepackResult> {
    const chosen = await this.choose();
    if (chosen.length === 0) return NOTHING;
    const places = await this.placesOf(new Set(chosen.map((c) => c.pack)));
    let moved = 0;
    let bytesMoved = 0;
    let packs = 0;
    let bytesFreed = 0;
    let group: Array<{ readonly from: string; readonly member: PackMember; readonly name: string }> = [];
    let groupBytes = 0;
    const settle = async () => {
      const g = group;
      group = [];
      groupBytes = 0;
      moved += await this.settle(g, places);
    };
    try {
      for (const c of chosen) {
        const got = await this.deps.store.get(packKey(c.pack));
        if (!got) {
          this.deps.log(`repacking: pack ${c.pack} is not in the bucket; its references are left as they are`);
          continue;
        }
        for (const ref of c.refs) {
          const at = packedAt(ref)!;
          if (at.offset + at.bytes > got.body.length) throw new Error(`pack ${c.pack} is shorter than its member ${ref} says`);
          const member = await this.deps.enter(contentName(ref), got.body.subarray(at.offset, at.offset + at.bytes));
          if (!member) return { packs, moved, bytesMoved, bytesFreed }; // stopping
          group.push({ from: ref, member, name: contentName(ref) });
          groupBytes += at.bytes;
          bytesMoved += at.bytes;
        }
        packs++;
        bytesFreed += c.size;
        if (groupBytes >= GROUP_BYTES) await settle();
      }
      await settle();
    } finally {
      for (const m of group) m.member.done();
    }
    return { packs, moved, bytesMoved, bytesFreed };
  }

  /**
   * Waits for the new places of `group`'s members, moves every reference to them that still
   * names the old place, makes that durable, then lets the new packs' holds go. Resolves the
   * references moved.
   */
  private async settle(
    group: ReadonlyArray<{ readonly from: string; readonly member: PackMember; readonly name: string }>,
    places: ReadonlyMap<string, ReadonlyArray<readonly [ino: number, idx: number]>>,
  ): Promise<number> {
    let moved = 0;
    try {
      const answers = await Promise.allSettled(group.map((m) => m.member.sent));
      if (this.deps.stopping()) return 0; // the old places stay; the new pack goes as garbage
      const tree = this.deps.tree();
      const rekeys: Array<Promise<void>> = [];
      for (let i = 0; i < group.length; i++) {
        const a = answers[i]!;
        if (a.status === 'rejected') throw a.reason;
        const at: PackedAt | undefined = a.value;
        if (!at) continue; // stopping: the old place stays
        const { from, name } = group[i]!;
        const to = packedName(name, at);
        for (const [ino, idx] of places.get(from) ?? []) {
          const ref = tree.get(ino)?.chunks?.[idx];
          if (!ref || ref[0] !== from) continue; // written, truncated or deleted meanwhile
          this.deps.commit({ t: 'chunk', ino, idx, ref: [to, ref[1]] });
          moved++;
        }
        // Started in the step that moved the references, before a sweep of the cache can drop
        // the chunk under its old name (ChunkCache.rekey).
        rekeys.push(this.deps.rekey(from, to).catch(() => undefined));
      }
      await this.deps.sync();
      await Promise.all(rekeys);
    } finally {
      for (const m of group) m.member.done();
    }
    return moved;
  }

  /** The packs worth repacking, most garbage first, up to REPACK_BYTES_PER_RUN of live bytes. */
  private async choose(): Promise<Candidate[]> {
    const kept = this.deps.snapshotPacks();
    if (!kept) return [];
    const elsewhere = new Set<string>();
    for (const name of this.deps.otherRefs()) {
      const at = packedAt(name);
      if (at) elsewhere.add(at.pack);
    }
    // Live bytes per pack first (a number per pack: there may be millions of members)...
    const live = new Map<string, number>();
    let n = 0;
    for (const name of this.deps.tree().chunkRefs.keys()) {
      if (++n % YIELD_EVERY === 0) await breathe();
      const at = packedAt(name);
      if (at && !kept.has(at.pack) && !elsewhere.has(at.pack)) live.set(at.pack, (live.get(at.pack) ?? 0) + at.bytes);
    }
    const out: Array<{ readonly pack: string; readonly size: number; readonly live: number }> = [];
    let heads = 0;
    for (const [pack, bytes] of live) {
      // A pack with more live bytes than this can never qualify: no need to know its size.
      if (bytes > (1 - REPACK_DEAD_SHARE) * PACK_SIZE_MAX) continue;
      let size = this.sizes.get(pack) ?? this.deps.knownSize(pack);
      if (size === undefined) {
        if (heads >= REPACK_HEADS_PER_RUN) continue;
        heads++;
        size = (await this.deps.store.head(packKey(pack)))?.size;
        if (size === undefined) continue;
        if (this.sizes.size >= SIZES_KEPT) this.sizes.clear();
        this.sizes.set(pack, size);
      }
      const dead = size - bytes;
      if (dead >= REPACK_DEAD_MIN && dead >= size * REPACK_DEAD_SHARE) out.push({ pack, size, live: bytes });
    }
    out.sort((a, b) => b.size - b.live - (a.size - a.live));
    const chosen = new Map<string, Candidate>();
    let bytes = 0;
    for (const c of out) {
      if (bytes > 0 && bytes + c.live > REPACK_BYTES_PER_RUN) break;
      chosen.set(c.pack, { ...c, refs: [] });
      bytes += c.live;
    }
    // ...then the members' names, of the chosen packs only.
    if (chosen.size > 0) {
      n = 0;
      for (const name of this.deps.tree().chunkRefs.keys()) {
        if (++n % YIELD_EVERY === 0) await breathe();
        const at = packedAt(name);
        if (at) chosen.get(at.pack)?.refs.push(name);
      }
    }
    return [...chosen.values()];
  }

  /** Where each reference into `packs` lies: (inode, chunk index) pairs, by reference. */
  private async placesOf(packs: ReadonlySet<string>): Promise<Map<string, Array<readonly [number, number]>>> {
    const out = new Map<string, Array<readonly [number, number]>>();
    let n = 0;
    for (const inode of this.deps.tree().inodes.values()) {
      if (++n % YIELD_EVERY === 0) await breathe();
      const chunks = inode.chunks;
      if (!chunks) continue;
      for (let idx = 0; idx < chunks.length; idx++) {
        const ref = chunks[idx];
        if (!ref) continue;
        const at = packedAt(ref[0]);
        if (!at || !packs.has(at.pack)) continue;
        let l = out.get(ref[0]);
        if (!l) out.set(ref[0], (l = []));
        l.push([inode.ino, idx]);
      }
    }
    return out;
  }
}
