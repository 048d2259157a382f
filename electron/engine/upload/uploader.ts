/**
 * The upload of one chunk, from a dirty chunk to a committed chunk: read the dirty bytes, name
 * them, encode, PUT, commit the reference (and the size it needs), and hand the file to the
 * clean cache. The write-back queue (writeback.ts) decides when a chunk goes and retries it;
 * this module does the going. It also says how much of the pending metadata may be published
 * (`publishableOps`), because that depends on which data is uploaded.
 *
 * Owns: the upload bandwidth limit, the count of bytes uploaded, the upload failure state
 * (since when uploads fail with an answer from the bucket, and the first error of that run;
 * status reports it, and while it lasts uploads cannot free room in a full cache), and the
 * upload buffers (util/bufferPool.ts): a chunk is read into a pooled plaintext buffer (at most
 * ENCODING_SLOTS chunks' worth at once: a small file's chunk takes only its size of that, so many
 * small ones are sealed at once), sealed from it into a pooled body buffer (one per PUT in flight:
 * the write-back queue may start more uploads than that, and the others wait for a body here),
 * and sent from that; no chunk-sized buffer is allocated or copied per upload, and the memory
 * uploads take is bounded by `memory.boundBytes` whatever the load. Pool slots are taken in
 * that order (plaintext, then body) and never while holding the chunk lock.
 *
 * Order of one upload, and why (DESIGN invariants 2 and 1; locks as cache/dirty.ts says):
 *  1. Under a bandwidth limit, wait for the budget before reading and sealing the chunk, so the
 *     chunks waiting for their turn hold no memory; no lock is held. The reservation is the
 *     plaintext size, corrected once the sealed size is known (or returned if nothing is sent).
 *  2. Under the chunk lock: a chunk replaced since the queue picked it is left alone; so is one
 *     of a file deleted while still open (the VFS keeps it: its data stays local until the last
 *     close and never uploads). A chunk whose file is gone is dropped once the deletion is
 *     durable (else the queue would pick it again and again). Otherwise its sealed bytes are
 *     read as they are on disk, with its `fileId`, its `gen` and the time of the read; they
 *     are opened (decrypted and authenticated) after the lock, by the encoder (encoder.ts).
 *  3. Without the chunk lock: the content is named (keyed hash, so identical content is stored
 *     once), and the GC's hold on that name is taken; unless committed metadata references the
 *     name already, the chunk is encoded and PUT with the CRC32 of its body (computed while
 *     sealing; the bucket verifies it). The hold lasts until the reference is committed, so a
 *     garbage collection cannot delete the object between the PUT and the commit. A chunk the
 *     encoder sealed in segments (FSC2) is PUT only once the bucket's header allows that
 *     (`beforeSegmentedPut`); if the header cannot be raised, the upload fails before its PUT.
 *     A small chunk's object goes into a pack instead (upload/packer.ts: copied there, its body
 *     buffer given back at once, and sent with the pack's one PUT), and its reference names its
 *     place in the pack (chunk/packs.ts); the packer holds the pack against GC from before its
 *     PUT until this upload says it is done (after step 4, or on giving up). A chunk committed in
 *     a pack lately is referenced where it lies, under the GC's hold on that pack, instead of
 *     packed again (`holdPacked`).
 *  4. Under the chunk lock again, unless the engine is stopping (the chunk stays dirty and
 *     uploads next time) or the chunk was deleted or truncated away meanwhile: the file's size
 *     as written so far is committed first (the VFS keeps it in memory; a reference past the
 *     committed size would be cut, see meta/tree.ts), then the reference. So metadata that names
 *     a chunk always postdates the chunk's successful PUT (invariant 2).
 *  5. If the chunk did not change since step 2, the reference is made durable and only then
 *     does the clean cache adopt the file: the dirty copy stops being the data's home only
 *     once the reference is durable (invariant 1); its pre-images go with it (cache/dirty.ts).
 *     If it changed, it stays dirty, and its dirty age counts from the read: what came before
 *     it is in the bucket.
 *  6. The GC's hold is let go, and waiting writers are told dirty data may have been freed.
 *
 * Publishing sizes: a size change reaches the bucket only once the data it exposes is uploaded,
 * or other machines would read zeros where this one has data (`publishableOps`).
 */

import { ChunkCache } from '../cache/chunkCache';
import { sealedBodySize } from '../cache/sealed';
import { DirtyChunk, DirtyStore } from '../cache/dirty';
import { Keys } from '../chunk/crypto';
import { chunkKey, maxEncodedBytes } from '../chunk/format';
import { PackedAt, packKey, packMemberMax, packedAt, packedName } from '../chunk/packs';
import { MetaStore } from '../meta/metastore';
import { CutOffError, MonitoredStore } from '../store/monitored';
import { StoreError, isNoAnswer } from '../store/types';
import { BufferPool } from '../util/bufferPool';
import { ChunkEncoder, InThreadEncoder, WorkerEncoder } from './encoder';
import { PackMember, Packer } from './packer';
import { RateLimiter } from './ratelimit';

/** The garbage collector's hold on a chunk name (gc.ts): while held, the name is not deleted. */
export interface ChunkNameHold {
  acquire(name: string): Promise<void>;
  release(name: string): void;
}

/** What the uploader needs of the open files (the VFS owns them). */
export interface UploadFiles {
  /** Whether `ino` is a file deleted while still open here (its data never uploads). */
  isUnlinked(ino: number): boolean;
  /** Commits the file's size as written so far (kept in memory until then). */
  commitSize(ino: number): void;
}

export interface UploaderDeps {
  readonly dirty: DirtyStore;
  readonly meta: MetaStore;
  readonly cache: ChunkCache;
  readonly store: MonitoredStore;
  readonly keys: Pick<Keys, 'nameKey' | 'chunkKey' | 'cacheKey'>;
  readonly names: ChunkNameHold;
  readonly files: UploadFiles;
  /** Dirty data may have been freed: writers waiting for room look again. */
  readonly freed: () => void;
  readonly limitBytesPerSec: number;
  /** Uploads in flight at most (the write-back queue's limit): one body buffer each. */
  readonly uploadConcurrency: () => number;
  /** Threads that open, name and seal chunks (upload/encoder.ts); 0: the engine thread does. */
  readonly encodeWorkers: number;
  /**
   * Before the PUT of a chunk sealed in segments (FSC2, chunk/format.ts): the bucket's header
   * must say chunks may be (filespace.ts, format 5), so a version that reads only whole-sealed
   * chunks refuses the filespace instead of failing its reads. If it fails, that PUT is not
   * made (the upload fails and is retried). Settles at once once the header says so.
   */
  readonly beforeSegmentedPut?: () => Promise<void>;
  /**
   * Small chunks go into packs (upload/packer.ts): before the first pack's PUT, the header must
   * allow packed names (filespace.ts FORMAT_PACKS). Without it, every chunk is sent alone.
   */
  readonly beforePackPut?: () => Promise<void>;
  /** A small chunk's object entered a pack: its upload no longer takes a PUT's place (the queue may start another). */
  readonly packed?: () => void;
  readonly log: (msg: string) => void;
}

/**
 * Chunks read and encoded at once, each holding a plaintext buffer until its body is sealed.
 * Two let one chunk's disk read or compression overlap another's sealing on the engine thread.
 */
export const ENCODING_SLOTS = 2;

/** Packed references remembered for content uploaded again (see `Uploader.packedRefs`). */
const PACKED_REFS_KEPT = 16_384;

/** A chunk read for upload: its sealed bytes in `buf` (opened in place by the encoder), with what identified them. */
interface Snapshot {
  readonly buf: Buffer;
  readonly len: number;
  readonly fileId: Buffer;
  readonly gen: number;
  readonly at: number;
}

/** The memory the uploader's buffers take (util/bufferPool.ts), in bytes. */
export interface UploadMemory {
  readonly heldBytes: number;
  readonly peakBytes: number;
  /** What they may take at most: ENCODING_SLOTS plaintext buffers, one body per upload in flight, and the packs' buffers. */
  readonly boundBytes: number;
}

/** Uploads failing with an answer from the bucket: since when, and the first error of the run. */
export interface UploadFailure {
  readonly since: number;
  readonly code: string;
  readonly message: string;
}

export class Uploader {
  private readonly limiter: RateLimiter;
  /** Plaintext of chunks being read and encoded; then sealed bodies, held until their PUT ends. */
  private readonly plainBuffers: BufferPool;
  private readonly bodyBuffers: BufferPool;
  private readonly encoder: ChunkEncoder;
  private readonly packer: Packer | undefined;
  /**
   * The packed references committed lately, by chunk name (at most PACKED_REFS_KEPT, oldest
   * out first): the same content uploaded again (a file copied, a dependency unpacked twice)
   * is referenced where it lies instead of packed again.
   */
  private readonly packedRefs = new Map<string, string>();
  private uploaded = 0;
  private failing: UploadFailure | undefined;
  private error: string | undefined;
  private stopped = false;

  constructor(private readonly deps: UploaderDeps) {
    this.limiter = new RateLimiter(deps.limitBytesPerSec);
    this.encoder =
      deps.encodeWorkers > 0 ? new WorkerEncoder(deps.keys, deps.encodeWorkers, deps.log) : new InThreadEncoder(deps.keys);
    const chunkSize = deps.meta.chunkSize;
    const shared = this.encoder.wantsSharedBuffers;
    // A small file's chunk takes only its size of the plaintext slots: many are read and sealed at
    // once (a tree of small files), while whole chunks still go ENCODING_SLOTS at a time.
    this.plainBuffers = new BufferPool(sealedBodySize(chunkSize), () => ENCODING_SLOTS, { shared, smallBySize: true });
    this.bodyBuffers = new BufferPool(maxEncodedBytes(chunkSize), deps.uploadConcurrency, { shared });
    this.packer = deps.beforePackPut
      ? new Packer({
          store: deps.store,
          indexKey: deps.keys.chunkKey,
          hold: deps.names,
          beforePut: deps.beforePackPut,
          log: deps.log,
        })
      : undefined;
  }

  /** Uploads whose chunk waits in a pack for the pack's PUT (they hold no PUT's place). */
  get packWaiting(): number {
    return this.packer?.waiting ?? 0;
  }

  /** Packs sent so far. */
  get packsSent(): number {
    return this.packer?.sent ?? 0;
  }

  /** The size of a pack this engine sent lately, if known (upload/repack.ts). */
  packSize(id: string): number | undefined {
    return this.packer?.sizeOf(id);
  }

  /**
   * Copies the stored object `obj` of chunk `name` into the open pack (upload/repack.ts); the
   * caller waits for its place (`sent`) and says `done`. Undefined without packs, or stopping.
   */
  async enterPack(name: string, obj: Buffer): Promise<PackMember | undefined> {
    if (!this.packer || this.stopped) return undefined;
    return this.packer.enter(name, obj);
  }

  /** The memory the upload buffers take now, at most so far, and at most ever. */
  get memory(): UploadMemory {
    const pools = [this.plainBuffers, this.bodyBuffers];
    return {
      heldBytes: pools.reduce((n, p) => n + p.heldBytes, 0) + (this.packer?.heldBytes ?? 0),
      peakBytes: pools.reduce((n, p) => n + p.peakBytes, 0) + (this.packer?.peakBytes ?? 0),
      boundBytes: pools.reduce((n, p) => n + p.boundBytes, 0) + (this.packer ? Packer.boundBytes : 0),
    };
  }

  /** Bytes sent to the bucket (encoded chunks). */
  get uploadedBytes(): number {
    return this.uploaded;
  }

  /** The upload bandwidth limit in force (0: none). */
  get limitBytesPerSec(): number {
    return this.limiter.limit;
  }

  setLimit(bytesPerSec: number): void {
    this.limiter.setRate(bytesPerSec);
  }

  /** Set while uploads fail with an answer from the bucket; cleared by a success. */
  get failure(): UploadFailure | undefined {
    return this.failing;
  }

  /** The upload error status shows (the first of the current run of failures). */
  get lastError(): string | undefined {
    return this.error;
  }

  /**
   * The engine is stopping: uploads in flight commit nothing more (their chunks stay dirty and
   * upload at the next start), and one waiting for bandwidth goes no further.
   */
  stop(): void {
    this.stopped = true;
    this.limiter.close();
    this.packer?.stop();
  }

  /** Stops the encoder threads (after `stop`, once uploads in flight are over or abandoned). */
  async close(): Promise<void> {
    await this.encoder.close();
  }

  /** Uploads one dirty chunk (the write-back queue's `upload`). */
  async upload(d: DirtyChunk): Promise<void> {
    let reserved = 0;
    if (this.limiter.limit > 0 && this.deps.meta.tree.get(d.ino)) {
      reserved = d.len;
      await this.limiter.take(reserved);
      if (this.stopped) return; // stopping while waiting for bandwidth: stays dirty
    }
    let sent = 0;
    try {
      await this.uploadReserved(d, (n) => (sent = n));
    } finally {
      if (reserved > 0) this.limiter.adjust(sent - reserved);
    }
  }

  private async uploadReserved(d: DirtyChunk, sending: (bytes: number) => void): Promise<void> {
    const { dirty, meta, cache, names, files } = this.deps;
    const snap = await this.snapshot(d);
    if (!snap) return;
    let plainHeld = true;
    const letGoOfPlain = () => {
      if (plainHeld) this.plainBuffers.release(snap.buf);
      plainHeld = false;
    };
    let member: PackMember | undefined;
    let heldPack: string | undefined;
    try {
      const name = await this.encoder.openAndName(snap.buf, snap.fileId, snap.len, `dirty chunk ${d.ino}.${d.idx}`);
      const tagged = await dirty.tagAsClean(d, name, snap.len);
      // Held from before the PUT until the reference is committed, so GC cannot delete it between.
      await names.acquire(name);
      try {
        // The name the reference carries: the chunk's own, or its place in a pack (chunk/packs.ts).
        let ref = name;
        if (!meta.tree.chunkRefs.has(name)) {
          const known = await this.holdPacked(name);
          if (known) {
            ref = known.ref;
            heldPack = known.key;
          } else {
            const put = await this.put(name, snap.buf, snap.len, letGoOfPlain, sending);
            if (put === 'stopped') return; // stopping: the chunk stays dirty and uploads next time
            if (put !== 'alone') {
              member = put.member;
              ref = packedName(name, put.at);
            }
          }
        }
        letGoOfPlain();
        await dirty.withChunk(d.ino, d.idx, async () => {
          if (this.stopped) return; // shutting down: the chunk stays dirty and uploads next time
          if (dirty.get(d.ino, d.idx) !== d || !meta.tree.get(d.ino)) return; // deleted or truncated away meanwhile
          files.commitSize(d.ino);
          meta.commit({ t: 'chunk', ino: d.ino, idx: d.idx, ref: [ref, snap.len] });
          if (ref !== name) this.notePacked(name, ref);
          if (d.gen !== snap.gen) {
            // Written to during the upload: what is still dirty is only what came after the snapshot.
            dirty.uploadedAsOf(d, snap.at);
          } else {
            // The reference must be durable before the dirty copy stops being the data's home.
            await meta.sync();
            if (dirty.get(d.ino, d.idx) !== d || d.gen !== snap.gen) return;
            const { file, fileId, size } = dirty.release(d);
            // The tag written after the read holds this data's name and length (same gen).
            await cache.adopt(ref, file, size, fileId, tagged && d.len === snap.len);
          }
        });
      } finally {
        names.release(name);
      }
    } finally {
      letGoOfPlain();
      // The reference is committed (its pack now referenced), or will not be: the pack's hold may go.
      member?.done();
      if (heldPack !== undefined) names.release(heldPack);
    }
    this.deps.freed();
  }

  /**
   * The packed reference to chunk `name` committed lately, if it is still referenced, with the
   * GC's hold on its pack taken (the caller lets go of `key` once its own reference is
   * committed): from the check on, the pack cannot be deleted before that commit.
   */
  private async holdPacked(name: string): Promise<{ readonly ref: string; readonly key: string } | undefined> {
    // Committed lately by this engine, else as the table knew it at its last checkpoint (an
    // earlier run, another writer).
    const ref = this.packedRefs.get(name) ?? this.deps.meta.tree.chunkRefs.packedOf?.(name);
    if (ref === undefined) return undefined;
    const key = packKey(packedAt(ref)!.pack);
    await this.deps.names.acquire(key);
    if (this.deps.meta.tree.chunkRefs.has(ref)) return { ref, key };
    this.deps.names.release(key);
    this.packedRefs.delete(name);
    return undefined;
  }

  private notePacked(name: string, ref: string): void {
    this.packedRefs.delete(name);
    this.packedRefs.set(name, ref);
    if (this.packedRefs.size > PACKED_REFS_KEPT) this.packedRefs.delete(this.packedRefs.keys().next().value!);
  }

  /**
   * Step 2: takes a plaintext buffer (before the chunk lock: a pool slot is never waited for
   * under it, cache/dirty.ts), then under the lock reads the chunk's sealed bytes into it, with
   * its `gen` and the time of the read; undefined when the chunk is not to upload. The caller
   * gives the buffer back. A chunk grown past the buffer meanwhile is read again into a whole one.
   */
  private async snapshot(d: DirtyChunk): Promise<Snapshot | undefined> {
    const { dirty, meta, files } = this.deps;
    let want = sealedBodySize(d.len);
    for (;;) {
      const buf = await this.plainBuffers.acquire(want);
      if (this.stopped) {
        this.plainBuffers.release(buf); // stopping while waiting for its turn: stays dirty
        return undefined;
      }
      let kept = false;
      try {
        const got = await dirty.withChunk(d.ino, d.idx, async () => {
          if (dirty.get(d.ino, d.idx) !== d) return undefined;
          if (files.isUnlinked(d.ino)) return undefined; // deleted while open: its data stays local until the last close
          if (!meta.tree.get(d.ino)) {
            // Its file is gone: drop the data here (after the deletion is durable), or the queue
            // would pick this chunk again and again.
            await meta.sync();
            await dirty.drop(d);
            return undefined;
          }
          if (sealedBodySize(d.len) > buf.length) return 'grown' as const;
          const len = await dirty.readSealedInto(d, buf);
          return { buf, len, fileId: d.fileId, gen: d.gen, at: Date.now() };
        });
        if (got === 'grown') {
          want = sealedBodySize(meta.chunkSize);
          continue;
        }
        kept = got !== undefined;
        return got;
      } finally {
        if (!kept) this.plainBuffers.release(buf);
      }
    }
  }

  /**
   * Encodes the plaintext `buf.subarray(0, len)` into a body buffer and PUTs it. `encoded` is
   * called once the plaintext is no longer needed (its buffer can go back). A body whose PUT
   * failed is discarded, not reused: a request cut off or timed out may still be reading it
   * (util/bufferPool.ts).
   */
  private async put(
    name: string,
    buf: Buffer,
    len: number,
    encoded: () => void,
    sending: (bytes: number) => void,
  ): Promise<'alone' | 'stopped' | { readonly at: PackedAt; readonly member: PackMember }> {
    // Taken while the plaintext's buffer is held: body holders never wait for a plaintext
    // buffer (they are encoding, waiting for the header's raise, or sending), so this wait
    // always ends.
    const body = await this.bodyBuffers.acquire(maxEncodedBytes(len));
    let sent = false;
    let member: PackMember | undefined;
    try {
      const obj = await this.encoder.encode(buf, len, name, body);
      encoded();
      if (this.packer && obj.length <= packMemberMax(this.deps.meta.chunkSize)) {
        // Copied into a pack: the body goes back at once, and the pack's PUT sends it.
        member = await this.packer.enter(name, body.subarray(0, obj.length));
        this.bodyBuffers.release(body);
        sent = true;
        this.deps.packed?.();
        sending(obj.length);
        const at = await member.sent;
        if (!at) {
          member.done();
          return 'stopped';
        }
        this.uploaded += obj.length;
        return { at, member };
      }
      // The encoder chose the layout: one sealed in segments needs the header to allow it first.
      if (obj.segmented) await this.deps.beforeSegmentedPut?.();
      sending(obj.length);
      await this.deps.store.put(chunkKey(name), body.subarray(0, obj.length), { crc32: obj.crc32 });
      sent = true;
      this.uploaded += obj.length;
      return 'alone';
    } catch (err) {
      member?.done();
      throw err;
    } finally {
      if (!member) {
        if (sent) this.bodyBuffers.release(body);
        else this.bodyBuffers.discard(body);
      }
    }
  }

  /**
   * An upload failed (the write-back queue's `onError`; `attempts` in a row). Failures are one
   * state, not one error per attempt: while the bucket does not answer, status says offline
   * (the store monitor's state); while it answers with errors, `lastError` names the first
   * error of the run and stays the same until an upload succeeds.
   */
  failed(err: unknown, d: DirtyChunk, attempts: number): void {
    const msg = err instanceof Error ? err.message : String(err);
    if (err instanceof CutOffError) return; // sent during an outage that is over; retried at once
    if (isNoAnswer(err) && this.deps.store.offline) {
      if (attempts === 1) this.deps.log(`upload of ${d.ino}.${d.idx} waits for the bucket: ${msg}`);
      return;
    }
    const code = err instanceof StoreError ? err.code : 'Other';
    if (this.failing?.code !== code) {
      this.failing = { since: Date.now(), code, message: msg };
      this.error = `uploads fail (since ${new Date(this.failing.since).toISOString()}, retrying): ${msg}`;
      this.deps.log(`upload of ${d.ino}.${d.idx} failed (attempt ${attempts}): ${msg}`);
    }
  }

  /** An upload succeeded (the write-back queue's `onSuccess`): a run of failures is over. */
  succeeded(): void {
    if (!this.failing) return;
    this.deps.log(`uploads work again (they failed since ${new Date(this.failing.since).toISOString()})`);
    this.failing = undefined;
    this.error = undefined;
  }
}

/**
 * How many pending metadata ops may reach the bucket now. A size change is published only
 * once the data it exposes is uploaded: otherwise other machines would read zeros where this
 * one has data. The op is held (with everything after it, to keep the order) while its file
 * has a dirty chunk within the new size that was already dirty when the op was committed.
 */
export function publishableOps(
  meta: MetaStore,
  dirty: Pick<DirtyStore, 'indexesOf'> & { get(ino: number, idx: number): { readonly firstDirtyMs: number } | undefined },
): number {
  const ops = meta.pendingRemote;
  const times = meta.pendingTimes;
  const cs = meta.chunkSize;
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.t !== 'attr' || op.size === undefined) continue;
    // A deleted file's size exposes nothing (its deletion follows); one deleted while still
    // open keeps dirty chunks that never upload, and must not hold everything back.
    if (!meta.tree.get(op.ino)) continue;
    const last = Math.ceil(op.size / cs) - 1;
    for (const idx of dirty.indexesOf(op.ino)) {
      if (idx > last) continue;
      const d = dirty.get(op.ino, idx);
      if (d && d.firstDirtyMs <= (times[i] ?? Infinity)) return i;
    }
  }
  return ops.length;
}
