/**
 * The write buffer: FUSE writes are acknowledged from memory; sealing them and writing them to
 * the dirty store (cache/dirty.ts) happen behind, in batches. libfuse2 sends a sequential
 * writer's 128 KiB requests one after the other, so the latency of one request is what limits
 * a writer: here a request costs a copy into memory, and a batch of units costs one seal pass
 * and one writev. `put` is synchronous, so the VFS answers a request it takes at once before
 * the flush it may start runs (Vfs.writeNow).
 *
 * Owns: the buffered data of each chunk (64 KiB units from a pool, with the byte ranges written
 * in each), the memory they take (at most `memoryBytes`, never more units allocated), the cache
 * room held for them, and when each chunk is flushed. The VFS (vfs.ts) owns the rest: it puts
 * writes here, overlays buffered bytes on what its reads find elsewhere, and does the flushing
 * itself (`flushChunk`, under the dirty store's chunk lock) when this module asks.
 *
 * A flush of a chunk, as the VFS does it under the chunk lock: `snapshot` (which units, their
 * ranges and versions), DirtyStore.writeUnits, then `flushed`, which drops each unit whose
 * version did not change meanwhile. A unit written again while its flush ran stays, with the
 * newest bytes, and goes with the next flush; so the buffer always holds the newest bytes of
 * every range it holds, and readers may overlay it on anything older. Flushes of one chunk run
 * one after another (the lock), and a requested flush that has not started yet is shared.
 *
 * When a chunk is flushed: once it holds `FLUSH_UNITS` whole units (a sequential writer: one
 * writev per MiB, whole units only, so a unit being filled is not rewritten), when the memory
 * in use passes half the budget (the chunks holding most units first), `flushAfterMs` after its
 * oldest buffered byte arrived, and when the VFS asks: close, fsync, truncate, `sync`, unmount.
 * A writer that finds the budget used up waits for a flush (bounded: local disk I/O, or the
 * fetch of a chunk's committed bytes, bounded by the read timeout).
 *
 * Room (DESIGN invariant 3): buffered bytes are counted against the cache cap from the moment
 * they are accepted, exactly like dirty data, so the cap and backpressure hold as before. A
 * chunk holds room for the most its flush can add on disk: the whole chunk file up to the
 * larger of its buffered end and the content it started from (a dirty chunk, or the committed
 * chunk a new dirty file is seeded from), plus a pre-image per unit (see cache/dirty.ts). The
 * room is taken with one synchronous check per write (`reserve`) and given back as flushes
 * turn it into dirty data. When there is none, `put` says so and the VFS waits as
 * backpressure says (vfs/backpressure.ts), outside any lock.
 *
 * Errors: a flush that fails (a full cache disk) keeps its data here and is tried again (by
 * the timer, or the next request); the next close or fsync of the file gets its error, as
 * a local disk reports write-back errors, and so does a writer waiting for memory.
 *
 * Durability: nothing here survives a crash. close and fsync flush the file first (cache/dirty
 * for what that then guarantees); data written and neither closed nor fsynced may be lost by a
 * crash of the engine, as on a local disk it may be lost by a power cut, never half-applied
 * within what fsync acknowledged.
 */

import { PRE_IMAGE_UNIT_BYTES, UnitPatch } from '../cache/dirty';
import { UNIT, budgetUnits, physicalSize } from '../cache/sealed';
import { Signal } from '../util/concurrency';

/** Whole units that make a chunk's flush worth it on its own (1 MiB, one writev). */
export const FLUSH_UNITS = 16;

/** Buffered bytes of one 64 KiB unit of a chunk. */
export interface BufferedUnit {
  readonly index: number;
  /** UNIT bytes from the pool; only the bytes within `ranges` were written. */
  readonly data: Buffer;
  /** Written ranges, flat [lo, hi) pairs of offsets within the unit, sorted, disjoint, not touching. */
  ranges: number[];
  /** Incremented by every change, so a flush can tell whether it wrote the newest bytes. */
  version: number;
}

/** What a flush writes: some units of one chunk, as they were when it started. */
export interface FlushSnapshot {
  readonly patches: readonly UnitPatch[];
  /** Where the snapshot's bytes end, in the chunk. */
  readonly end: number;
  /** When the chunk's oldest buffered byte arrived (its dirty age starts there). */
  readonly sinceMs: number;
  readonly versions: ReadonlyArray<{ readonly unit: BufferedUnit; readonly version: number }>;
  readonly takenMs: number;
}

export class BufferedChunk {
  readonly units = new Map<number, BufferedUnit>();
  /** Where the buffered bytes end in the chunk (the largest end written since buffering began). */
  end = 0;
  /** Units whose ranges cover all of them. */
  fullUnits = 0;
  /** Room held for this chunk (see the header). */
  room = 0;
  /** When the oldest byte still buffered arrived. */
  sinceMs: number;
  /** The last flush requested (queued or running), and one not started yet that later requests share. */
  tail: Promise<void> | undefined;
  queued: { all: boolean; readonly done: Promise<void> } | undefined;
  /** The failure of the last flush, while its data is still here. */
  error: unknown = undefined;
  /** The file was deleted: nothing of this chunk is written any more. */
  discarded = false;

  constructor(
    readonly ino: number,
    readonly idx: number,
    /** The length of the content a flush starts from when buffering began (see the header). */
    readonly baseLen: number,
    /** When buffering began: the dirty age of what a flush writes starts there. */
    readonly firstMs: number,
  ) {
    this.sinceMs = firstMs;
  }

  /** Whether every byte of [pos, pos+n) in the chunk is buffered. */
  covers(pos: number, n: number): boolean {
    for (let at = pos; at < pos + n;) {
      const u = this.units.get(Math.floor(at / UNIT));
      if (!u) return false;
      const base = u.index * UNIT;
      const lo = at - base;
      let hi = -1;
      for (let r = 0; r < u.ranges.length; r += 2) {
        if (u.ranges[r]! <= lo && lo < u.ranges[r + 1]!) {
          hi = u.ranges[r + 1]!;
          break;
        }
      }
      if (hi < 0) return false;
      if (hi < UNIT && base + hi < pos + n) return false;
      at = base + hi;
    }
    return true;
  }

  /** Copies the buffered bytes within [pos, pos+n) of the chunk into buf (buf[off] is pos). */
  copyOut(buf: Buffer, off: number, pos: number, n: number): void {
    const end = pos + n;
    for (let ui = Math.floor(pos / UNIT); ui * UNIT < end; ui++) {
      const u = this.units.get(ui);
      if (!u) continue;
      const base = ui * UNIT;
      for (let r = 0; r < u.ranges.length; r += 2) {
        const a = Math.max(base + u.ranges[r]!, pos);
        const b = Math.min(base + u.ranges[r + 1]!, end);
        if (b > a) u.data.copy(buf, off + (a - pos), a - base, b - base);
      }
    }
  }

  /** Buffered bytes of data. */
  get dataBytes(): number {
    let n = 0;
    for (const u of this.units.values()) for (let r = 0; r < u.ranges.length; r += 2) n += u.ranges[r + 1]! - u.ranges[r]!;
    return n;
  }
}

/** Adds [lo, hi) to a unit's ranges (see BufferedUnit), merging what overlaps or touches. */
export function addRange(ranges: number[], lo: number, hi: number): number[] {
  const out: number[] = [];
  let i = 0;
  while (i < ranges.length && ranges[i + 1]! < lo) {
    out.push(ranges[i]!, ranges[i + 1]!);
    i += 2;
  }
  let a = lo;
  let b = hi;
  while (i < ranges.length && ranges[i]! <= b) {
    a = Math.min(a, ranges[i]!);
    b = Math.max(b, ranges[i + 1]!);
    i += 2;
  }
  out.push(a, b);
  for (; i < ranges.length; i += 2) out.push(ranges[i]!, ranges[i + 1]!);
  return out;
}

/** Cuts a unit's ranges at `len` (offset within the unit). */
function cutRanges(ranges: number[], len: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < ranges.length; r += 2) {
    if (ranges[r]! >= len) break;
    out.push(ranges[r]!, Math.min(ranges[r + 1]!, len));
  }
  return out;
}

function isFull(u: BufferedUnit): boolean {
  return u.ranges.length === 2 && u.ranges[0] === 0 && u.ranges[1] === UNIT;
}

/** The room a chunk holds (see the header). */
function roomFor(c: { readonly baseLen: number; readonly end: number }, units: number): number {
  return units === 0 ? 0 : physicalSize(Math.max(c.end, c.baseLen)) + PRE_IMAGE_UNIT_BYTES * (units + 1);
}

export type PutResult = 'ok' | 'memory' | 'room';

export interface WriteBufferDeps {
  readonly chunkSize: number;
  /** The memory budget for buffered data, bytes (at least 4 units). */
  readonly memoryBytes: number;
  /** Writes a chunk's buffered data to the dirty store (the VFS; it calls `snapshot` and `flushed`). */
  readonly flushChunk: (c: BufferedChunk, all: boolean) => Promise<void>;
  /** Reserves cache room for dirty data in one synchronous check; undefined when there is none. */
  readonly reserve: (bytes: number) => (() => void) | undefined;
  /** Room was given back: writers waiting for room may look again. */
  readonly roomReturned: () => void;
  readonly log: (msg: string) => void;
  readonly flushAfterMs?: number;
  readonly now?: () => number;
}

const DEFAULT_FLUSH_AFTER_MS = 200;
const noop = (): void => undefined;

export class WriteBuffer {
  private readonly chunks = new Map<string, BufferedChunk>();
  private readonly byIno = new Map<number, Set<number>>();
  /** Unit buffers not in use, for reuse (they count against the budget as allocated memory). */
  private readonly free: Buffer[] = [];
  private unitsAllocated = 0;
  /** Unit buffers ever allocated (a writer that keeps within its budget allocates each once). */
  private allocations = 0;
  private unitsInUse = 0;
  /** Room held (each reservation and how to give it back) and room the chunks need. */
  private readonly ledger: Array<{ readonly bytes: number; readonly release: () => void }> = [];
  private roomHeld = 0;
  private roomNeeded = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Notified whenever units or room are given back, or a flush fails. */
  private readonly changed = new Signal();
  private readonly maxUnits: number;
  private readonly flushUnits: number;
  private readonly flushAfterMs: number;
  private readonly now: () => number;

  constructor(private readonly deps: WriteBufferDeps) {
    this.maxUnits = budgetUnits(deps.memoryBytes);
    this.flushUnits = Math.max(1, Math.min(FLUSH_UNITS, Math.floor(deps.chunkSize / UNIT)));
    this.flushAfterMs = deps.flushAfterMs ?? DEFAULT_FLUSH_AFTER_MS;
    this.now = deps.now ?? Date.now;
  }

  private static key(ino: number, idx: number): string {
    return `${ino}.${idx}`;
  }

  get(ino: number, idx: number): BufferedChunk | undefined {
    return this.chunks.get(WriteBuffer.key(ino, idx));
  }

  /** Inodes with buffered data. */
  inodes(): number[] {
    return [...this.byIno.keys()];
  }

  indexesOf(ino: number): number[] {
    return [...(this.byIno.get(ino) ?? [])];
  }

  get hasData(): boolean {
    return this.chunks.size > 0;
  }

  /** Bytes of buffered data (not yet in the dirty store). */
  get dataBytes(): number {
    let n = 0;
    for (const c of this.chunks.values()) n += c.dataBytes;
    return n;
  }

  /** Memory taken by unit buffers (in use or kept for reuse). */
  get memoryBytes(): number {
    return this.unitsAllocated * UNIT;
  }

  /** Unit buffers allocated since the start (reused ones are not counted again). */
  get unitAllocations(): number {
    return this.allocations;
  }

  /** Room held against the cache cap. */
  get roomBytes(): number {
    return this.roomHeld;
  }

  /**
   * Buffers `data` at `pos` of chunk (ino, idx), synchronously, if the memory budget and the
   * cache room allow it now: 'memory' when the budget is used up (then `makeMemory`), 'room'
   * when the cache has no room (then flush, wait for room and `addRoom`). `baseLen` gives the
   * length of the content a flush would start from, asked once when buffering begins.
   */
  put(ino: number, idx: number, pos: number, data: Buffer, baseLen: () => number): PutResult {
    if (data.length === 0) return 'ok';
    const key = WriteBuffer.key(ino, idx);
    const existing = this.chunks.get(key);
    const first = Math.floor(pos / UNIT);
    const last = Math.floor((pos + data.length - 1) / UNIT);
    let newUnits = 0;
    for (let u = first; u <= last; u++) if (!existing?.units.has(u)) newUnits++;
    if (newUnits > 0 && this.unitsInUse > 0 && this.unitsInUse + newUnits > this.maxUnits) return 'memory';
    const shape = { baseLen: existing?.baseLen ?? baseLen(), end: Math.max(existing?.end ?? 0, pos + data.length) };
    const room = roomFor(shape, (existing?.units.size ?? 0) + newUnits);
    const delta = room - (existing?.room ?? 0);
    if (delta > 0 && this.roomNeeded + delta > this.roomHeld) {
      const want = this.roomNeeded + delta - this.roomHeld;
      const release = this.deps.reserve(want);
      if (!release) return 'room';
      this.ledger.push({ bytes: want, release });
      this.roomHeld += want;
    }
    const now = this.now();
    let c = existing;
    if (!c) {
      c = new BufferedChunk(ino, idx, shape.baseLen, now);
      this.chunks.set(key, c);
      let set = this.byIno.get(ino);
      if (!set) this.byIno.set(ino, (set = new Set()));
      set.add(idx);
    }
    for (let ui = first; ui <= last; ui++) {
      let u = c.units.get(ui);
      if (!u) {
        u = { index: ui, data: this.allocUnit(), ranges: [], version: 0 };
        c.units.set(ui, u);
      }
      const base = ui * UNIT;
      const lo = Math.max(pos, base) - base;
      const hi = Math.min(pos + data.length, base + UNIT) - base;
      data.copy(u.data, lo, base + lo - pos, base + hi - pos);
      const wasFull = isFull(u);
      u.ranges = addRange(u.ranges, lo, hi);
      u.version++;
      if (!wasFull && isFull(u)) c.fullUnits++;
    }
    c.end = shape.end;
    this.roomNeeded += room - c.room;
    c.room = room;
    if (c.fullUnits >= this.flushUnits && !c.queued) void this.background(c, false);
    if (this.unitsInUse * 2 >= this.maxUnits) void this.flushLargest(false);
    this.arm();
    return 'ok';
  }

  /** Room reserved by a writer that waited for it (see `put`): held until the chunks no longer need it. */
  addRoom(bytes: number, release: () => void): void {
    this.ledger.push({ bytes, release });
    this.roomHeld += bytes;
  }

  /** What a flush of `c` writes now: every unit, or (`all` false) only whole units. */
  snapshot(c: BufferedChunk, all: boolean): FlushSnapshot {
    const patches: UnitPatch[] = [];
    const versions: Array<{ unit: BufferedUnit; version: number }> = [];
    let end = 0;
    for (const u of [...c.units.values()].sort((a, b) => a.index - b.index)) {
      if (!all && !isFull(u)) continue;
      if (u.ranges.length === 0) continue;
      patches.push({ index: u.index, data: u.data, ranges: [...u.ranges] });
      versions.push({ unit: u, version: u.version });
      end = Math.max(end, u.index * UNIT + u.ranges[u.ranges.length - 1]!);
    }
    return { patches, end, sinceMs: c.firstMs, versions, takenMs: this.now() };
  }

  /** A flush wrote `snap`: its units that did not change since go; the chunk's room shrinks. */
  flushed(c: BufferedChunk, snap: FlushSnapshot): void {
    let removed = false;
    for (const { unit, version } of snap.versions) {
      if (c.units.get(unit.index) !== unit || unit.version !== version) continue;
      this.removeUnit(c, unit);
      removed = true;
    }
    if (!removed) return;
    if (c.units.size > 0) c.sinceMs = snap.takenMs;
    this.resize(c);
  }

  /**
   * Cuts the chunk's buffered bytes at `len` (0: all go). Call it under the chunk lock, so no
   * flush of the chunk is writing meanwhile.
   */
  truncate(ino: number, idx: number, len: number): void {
    const c = this.get(ino, idx);
    if (!c) return;
    for (const u of [...c.units.values()]) {
      const base = u.index * UNIT;
      if (base >= len) {
        this.removeUnit(c, u);
      } else if (base + UNIT > len) {
        const wasFull = isFull(u);
        u.ranges = cutRanges(u.ranges, len - base);
        u.version++;
        if (wasFull) c.fullUnits--;
        if (u.ranges.length === 0) this.removeUnit(c, u);
      }
    }
    c.end = Math.min(c.end, len);
    this.resize(c);
  }

  /** Forgets the buffered data of a deleted file. */
  discardFile(ino: number): void {
    for (const idx of this.indexesOf(ino)) {
      const c = this.get(ino, idx)!;
      c.discarded = true;
      const units = [...c.units.values()];
      c.units.clear();
      c.fullUnits = 0;
      // A flush may still be sealing from these buffers: they are reused only once it is over.
      const giveBack = () => {
        this.unitsInUse -= units.length;
        for (const u of units) this.returnBuffer(u.data);
        this.changed.notify();
      };
      if (c.tail) void c.tail.then(giveBack, giveBack);
      else giveBack();
      this.resize(c);
    }
  }

  /** Flushes every buffered chunk of `ino`; throws the first failure (the data stays here). */
  async flushFile(ino: number): Promise<void> {
    const cs = this.indexesOf(ino).map((idx) => this.get(ino, idx)!);
    if (cs.length === 0) return;
    await Promise.all(cs.map((c) => this.requestFlush(c, true)));
  }

  /** Flushes every buffered chunk; throws the first failure (the data stays here). */
  async flushAll(): Promise<void> {
    if (this.chunks.size === 0) return;
    await Promise.all([...this.chunks.values()].map((c) => this.requestFlush(c, true)));
  }

  /**
   * The budget is used up: flushes the chunks holding most units and waits until one flush
   * ends. Throws the failure of that flush (the data stays here).
   */
  async makeMemory(): Promise<void> {
    const flushes = this.flushLargest(true, true);
    if (flushes.length === 0) {
      // Everything is being written already (or held by a discarded chunk's flush): wait for it.
      await this.changed.wait(1000);
      return;
    }
    await Promise.race(flushes);
  }

  /** Stops the timer; requested flushes still run. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  // ---- internals ------------------------------------------------------------------------

  private allocUnit(): Buffer {
    this.unitsInUse++;
    const b = this.free.pop();
    if (b) return b;
    this.unitsAllocated++;
    this.allocations++;
    return Buffer.allocUnsafeSlow(UNIT);
  }

  private returnBuffer(b: Buffer): void {
    // The whole budget is kept for reuse (it is the memory the buffer may take anyway): a
    // writer then allocates no unit twice, and V8, which starts a full collection after every
    // few megabytes of new ArrayBuffers, has none to count. Keeping half of it, a sequential
    // write of 1 GiB allocated a tenth of its units anew and ran about 20 full collections.
    if (this.free.length < this.maxUnits) this.free.push(b);
    else this.unitsAllocated--;
  }

  private removeUnit(c: BufferedChunk, u: BufferedUnit): void {
    c.units.delete(u.index);
    if (isFull(u)) c.fullUnits--;
    this.unitsInUse--;
    this.returnBuffer(u.data);
  }

  /** Recomputes a chunk's room after it shrank; an emptied chunk goes; surplus room goes back. */
  private resize(c: BufferedChunk): void {
    const room = c.discarded ? 0 : roomFor(c, c.units.size);
    this.roomNeeded += room - c.room;
    c.room = room;
    if (c.units.size === 0) {
      const key = WriteBuffer.key(c.ino, c.idx);
      if (this.chunks.get(key) === c) {
        this.chunks.delete(key);
        const set = this.byIno.get(c.ino);
        set?.delete(c.idx);
        if (set && set.size === 0) this.byIno.delete(c.ino);
      }
    }
    let released = false;
    while (this.ledger.length > 0 && this.roomHeld - this.ledger[this.ledger.length - 1]!.bytes >= this.roomNeeded) {
      const e = this.ledger.pop()!;
      this.roomHeld -= e.bytes;
      e.release();
      released = true;
    }
    if (released) this.deps.roomReturned();
    this.changed.notify();
  }

  /**
   * Requests a flush of `c` (every unit, or whole units only); one not started yet is shared.
   * Resolves when it is done; rejects with its failure.
   */
  private requestFlush(c: BufferedChunk, all: boolean): Promise<void> {
    const q = c.queued;
    if (q) {
      if (all) q.all = true;
      return q.done;
    }
    const prev = c.tail ?? Promise.resolve();
    const entry: { all: boolean; done: Promise<void> } = { all, done: Promise.resolve() };
    entry.done = prev.then(noop, noop).then(async () => {
      if (c.queued === entry) c.queued = undefined; // started: a later request needs another flush
      if (c.discarded || c.units.size === 0) return;
      try {
        await this.deps.flushChunk(c, entry.all);
        c.error = undefined;
      } catch (err) {
        c.error = err;
        this.changed.notify();
        throw err;
      }
    });
    c.queued = entry;
    c.tail = entry.done;
    void entry.done.then(noop, noop).then(() => {
      if (c.tail === entry.done) c.tail = undefined;
    });
    return entry.done;
  }

  /** A flush nobody waits for: its failure is logged (once per run of failures), its data kept. */
  private background(c: BufferedChunk, all: boolean): Promise<void> {
    const hadError = c.error !== undefined;
    const p = this.requestFlush(c, all);
    p.catch((err: unknown) => {
      if (!hadError)
        this.deps.log(
          `writing buffered data of ${c.ino}.${c.idx} to the cache failed (kept in memory, retried): ${(err as Error).message}`,
        );
    });
    return p;
  }

  /**
   * Flushes the chunks holding most units, about a quarter of the budget's worth (with
   * `queuedToo`, also those with a flush queued, which then writes every unit); returns the
   * flushes.
   */
  private flushLargest(all: boolean, queuedToo = false): Array<Promise<void>> {
    const cs = [...this.chunks.values()]
      .filter((c) => (queuedToo || !c.queued) && c.units.size > 0)
      .sort((a, b) => b.units.size - a.units.size);
    const out: Array<Promise<void>> = [];
    let units = 0;
    for (const c of cs) {
      if (units * 4 >= this.maxUnits && out.length > 0) break;
      out.push(this.background(c, all || c.fullUnits === 0));
      units += c.units.size;
    }
    return out;
  }

  private arm(): void {
    if (this.timer || this.stopped || this.chunks.size === 0) return;
    this.timer = setTimeout(() => this.tick(), this.flushAfterMs);
    this.timer.unref();
  }

  /** Flushes what has waited `flushAfterMs`; comes back while anything is buffered. */
  private tick(): void {
    this.timer = undefined;
    const now = this.now();
    for (const c of this.chunks.values()) {
      if (!c.queued && now - c.sinceMs >= this.flushAfterMs) void this.background(c, true).catch(noop);
    }
    this.arm();
  }
}
