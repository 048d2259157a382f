/**
 * The packer: gathers the objects of small chunks on their way to the bucket into packs
 * (chunk/packs.ts) and sends each pack with one PUT.
 *
 * An upload whose chunk object is small (`PACK_MEMBER_MAX`) enters it here (`enter`): the
 * object's bytes are copied into the open pack at once, so the upload's body buffer goes back
 * to its pool at once, and the upload then waits for the pack's PUT (`sent`), which says where
 * its object lies. A pack is sent when it is full (`PACK_BYTES`), when no member came for
 * `PACK_LINGER_MS`, or `PACK_WAIT_MS` after its first member came, whichever is first; at most
 * `PACKS_SENDING` are on their way at once (a member finding the packs all full or sending waits
 * for a place), so the packs' memory is bounded: (1 + PACKS_SENDING) buffers of PACK_BYTES.
 *
 * Order, and why (DESIGN invariant 2; gc.ts):
 *  1. Before a pack's PUT, the garbage collector's hold on its key is taken, and held until
 *     every member has said it is done (`done`: its reference committed, or given up): a pack
 *     the bucket holds but no reference names yet is never deleted.
 *  2. Before the first PUT of a pack, `beforePut` raises the bucket's header to the format that
 *     allows packed names (an older version then refuses the filespace); if that fails, the
 *     pack is not sent and its members fail (and are retried).
 *  3. A member's reference is committed only after its pack's PUT succeeded (the uploader).
 *  A PUT that fails fails every member (each is retried as its own upload later, into another
 *  pack); a pack whose PUT may have landed anyway is unreferenced and goes with the GC's grace.
 *
 * Stopping (`stop`): members of the open pack are told it was not sent (their chunks stay
 * dirty); packs on their way finish or fail as they will.
 */

import { randomBytes } from 'node:crypto';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { PACK_INDEX_ROOM, PACK_MEMBERS_MAX, PackEntry, PackedAt, packKey, writePackIndex } from '../chunk/packs';
import { ObjectStore } from '../store/types';
import type { ChunkNameHold } from './uploader';

/** A pack is sent once it holds this many bytes (or the next member would not fit). */
export const PACK_BYTES = 4 * 1024 * 1024;
/** ...or once no member came for this long... */
export const PACK_LINGER_MS = 25;
/** ...or this long after its first member came. */
export const PACK_WAIT_MS = 250;
/** Packs on their way to the bucket at once. */
export const PACKS_SENDING = 2;
/**
 * Uploads waiting in packs that the write-back queue starts past its places (engine.ts
 * `uploadsAhead`): enough to fill a pack or two while one is sent, few enough that a pump of
 * the queue never weighs thousands of chunks at once.
 */
export const PACK_AHEAD = 512;

const PACK_BUFFER_BYTES = PACK_BYTES + PACK_INDEX_ROOM;
/** Sizes of packs sent that are kept (a few hundred KiB). */
const PACK_SIZES_KEPT = 16_384;

const crc32: ((data: Buffer, value?: number) => number) | undefined = typeof zlibCrc32 === 'function' ? zlibCrc32 : undefined;

export interface PackerDeps {
  readonly store: Pick<ObjectStore, 'put'>;
  /** The key each pack's index is sealed with (the chunk key). */
  readonly indexKey: Buffer;
  readonly hold: ChunkNameHold;
  /** Before the first PUT of a pack (the header's format); a failure fails the pack. */
  readonly beforePut?: () => Promise<void>;
  readonly log: (msg: string) => void;
}

/** A member's place: where its object will lie once sent, and the call that ends its part. */
export interface PackMember {
  /** Where the object lies once its pack is in the bucket; undefined if it was not sent (stopping). */
  readonly sent: Promise<PackedAt | undefined>;
  /** The member's reference is committed, or will not be: once all have said so, the pack's hold goes. */
  done(): void;
}

interface Waiter {
  readonly name: string;
  readonly offset: number;
  readonly bytes: number;
  resolve(at: PackedAt | undefined): void;
  reject(err: unknown): void;
}

interface OpenPack {
  readonly id: string;
  readonly buf: Buffer;
  used: number;
  readonly members: Waiter[];
  /** Each member's answer by chunk name: the same chunk entering again shares its place. */
  readonly byName: Map<string, Promise<PackedAt | undefined>>;
  /** Uploads waiting for this pack's PUT: its members, and those that share a member's place. */
  waiting: number;
  /** Members that have not said `done` yet. */
  left: number;
  /** The PUT settled (or never happened); the hold may go once `left` is 0 too. */
  settled: boolean;
  held: boolean;
  readonly firstAt: number;
  timer: NodeJS.Timeout | undefined;
}

export class Packer {
  private open: OpenPack | undefined;
  /** Packs not yet sent or on their way (the open one included). */
  private readonly unsettled = new Set<OpenPack>();
  private sending = 0;
  private readonly spare: Buffer[] = [];
  private readonly roomWaiters: (() => void)[] = [];
  private stopped = false;
  private waitingMembers = 0;
  private packsSent = 0;
  /** The sizes of the packs sent lately (for repacking: upload/repack.ts). */
  private readonly sizes = new Map<string, number>();
  private buffers = 0;
  private peakBuffers = 0;

  constructor(private readonly deps: PackerDeps) {}

  /** Bytes of the pack buffers alive (in use, or kept for the next packs). */
  get heldBytes(): number {
    return this.buffers * PACK_BUFFER_BYTES;
  }

  /** The most bytes the pack buffers took at once so far. */
  get peakBytes(): number {
    return this.peakBuffers * PACK_BUFFER_BYTES;
  }

  /** The most the pack buffers take: one being filled and PACKS_SENDING on their way. */
  static readonly boundBytes = (1 + PACKS_SENDING) * (PACK_BYTES + PACK_INDEX_ROOM);

  /** Members entered and waiting for their pack's PUT. */
  get waiting(): number {
    return this.waitingMembers;
  }

  /** Packs sent so far. */
  get sent(): number {
    return this.packsSent;
  }

  /** The size of pack `id` in the bucket, if it is one of the last PACK_SIZES_KEPT this packer sent. */
  sizeOf(id: string): number | undefined {
    return this.sizes.get(id);
  }

  /**
   * Copies `obj`, the object of chunk `name` (at most PACK_MEMBER_MAX bytes), into the open pack,
   * waiting for room if every pack is full or on its way. Resolves once copied: `obj` is not
   * read after.
   */
  async enter(name: string, obj: Buffer): Promise<PackMember> {
    for (;;) {
      if (this.stopped) return { sent: Promise.resolve(undefined), done: () => undefined };
      // The same content on its way already (equal files written together): one copy in the bucket.
      for (const q of this.unsettled) {
        const sent = q.byName.get(name);
        if (sent) return this.share(q, sent);
      }
      const p = this.open;
      if (p && p.used + obj.length <= PACK_BYTES && p.members.length < PACK_MEMBERS_MAX) return this.place(p, name, obj);
      if (p) this.send(p);
      if (this.sending < PACKS_SENDING) {
        this.open = this.newPack();
        continue;
      }
      await new Promise<void>((r) => this.roomWaiters.push(r));
    }
  }

  /** Stops: the open pack's members hear that it was not sent. */
  stop(): void {
    this.stopped = true;
    const p = this.open;
    this.open = undefined;
    if (p) {
      if (p.timer) clearTimeout(p.timer);
      p.settled = true;
      this.unsettled.delete(p);
      for (const m of p.members) m.resolve(undefined);
      this.waitingMembers -= p.waiting;
    }
    for (const r of this.roomWaiters.splice(0)) r();
  }

  private newPack(): OpenPack {
    let buf = this.spare.pop();
    if (!buf) {
      buf = Buffer.allocUnsafeSlow(PACK_BUFFER_BYTES);
      this.buffers++;
      this.peakBuffers = Math.max(this.peakBuffers, this.buffers);
    }
    const p: OpenPack = {
      id: randomBytes(16).toString('hex'),
      buf,
      used: 0,
      members: [],
      byName: new Map(),
      waiting: 0,
      left: 0,
      settled: false,
      held: false,
      firstAt: Date.now(),
      timer: undefined,
    };
    this.unsettled.add(p);
    return p;
  }

  private place(p: OpenPack, name: string, obj: Buffer): PackMember {
    const offset = p.used;
    obj.copy(p.buf, offset);
    p.used += obj.length;
    const sent = new Promise<PackedAt | undefined>((resolve, reject) =>
      p.members.push({ name, offset, bytes: obj.length, resolve, reject }),
    );
    sent.catch(() => undefined);
    p.byName.set(name, sent);
    const member = this.share(p, sent);
    if (p.used >= PACK_BYTES || p.members.length >= PACK_MEMBERS_MAX) this.send(p);
    else this.schedule(p);
    return member;
  }

  /** One more upload waiting for `p`'s PUT, with the answer `sent` (its own member's, or one it shares). */
  private share(p: OpenPack, sent: Promise<PackedAt | undefined>): PackMember {
    p.left++;
    p.waiting++;
    this.waitingMembers++;
    let ended = false;
    const done = () => {
      if (ended) return;
      ended = true;
      p.left--;
      this.maybeLetGo(p);
    };
    return { sent, done };
  }

  /** Sends `p` once no member came for PACK_LINGER_MS, at the latest PACK_WAIT_MS after its first. */
  private schedule(p: OpenPack): void {
    if (p.timer) clearTimeout(p.timer);
    const wait = Math.max(0, Math.min(PACK_LINGER_MS, p.firstAt + PACK_WAIT_MS - Date.now()));
    p.timer = setTimeout(() => {
      p.timer = undefined;
      if (this.open === p) this.send(p);
    }, wait);
  }

  private send(p: OpenPack): void {
    if (this.open === p) this.open = undefined;
    if (p.timer) clearTimeout(p.timer);
    p.timer = undefined;
    this.sending++;
    void this.put(p).finally(() => {
      this.sending--;
      this.roomWaiters.shift()?.();
    });
  }

  private async put(p: OpenPack): Promise<void> {
    const key = packKey(p.id);
    let ok = false;
    try {
      const entries: PackEntry[] = p.members.map((m) => ({ name: m.name, offset: m.offset, bytes: m.bytes }));
      const body = p.buf.subarray(0, writePackIndex(this.deps.indexKey, p.id, entries, p.buf, p.used));
      await this.deps.hold.acquire(key);
      p.held = true;
      await this.deps.beforePut?.();
      await this.deps.store.put(key, body, { crc32: crc32?.(body) });
      ok = true;
      this.packsSent++;
      this.sizes.set(p.id, body.length);
      if (this.sizes.size > PACK_SIZES_KEPT) this.sizes.delete(this.sizes.keys().next().value!);
      for (const m of p.members) m.resolve({ pack: p.id, offset: m.offset, bytes: m.bytes });
    } catch (err) {
      for (const m of p.members) m.reject(err);
    } finally {
      this.waitingMembers -= p.waiting;
      p.settled = true;
      this.unsettled.delete(p);
      // A failed PUT may still be reading its body: that buffer is not used again.
      if (ok) this.spare.push(p.buf);
      else this.buffers--;
      this.maybeLetGo(p);
    }
  }

  private maybeLetGo(p: OpenPack): void {
    if (!p.settled || p.left > 0 || !p.held) return;
    p.held = false;
    this.deps.hold.release(packKey(p.id));
  }
}
