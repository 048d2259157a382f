/**
 * Sealed cache files: how the local cache keeps chunk data encrypted at rest, so a stolen
 * disk reveals nothing and a modified cache file is detected instead of served.
 *
 * Layout:  header (88 bytes) | unit 0 | unit 1 | ...
 *   header = magic "FSL1" | fileId (16 random bytes) | name tag (76 bytes)
 *   unit i = nonce (12) | AES-256-GCM ciphertext of up to 64 KiB | tag (16)
 * Every unit but the last holds exactly 64 KiB, so unit i starts at a fixed offset and any
 * byte range can be read or rewritten by touching only the units it covers (random access).
 * A unit's associated data is the fileId and its index, so units cannot be moved within or
 * between files. The name tag (the chunk's name and data length, sealed under the fileId) is
 * written when a file becomes a clean chunk, so a file renamed to another chunk's name, or
 * cut short at a unit boundary, is detected too.
 * A rewritten unit gets a fresh nonce.
 *
 * Unit writes are single pwrite calls; a process crash never tears one, but a power loss can
 * (DirtyStore keeps pre-images of units it rewrites, see dirty.ts). Pure I/O helpers: the
 * callers (DirtyStore, ChunkCache) own locking and accounting. Reads open units where they
 * were read, in one buffer (`openSealedUnits`, which the uploader's encoder also runs on the
 * raw units it is handed, possibly in a worker thread). The cipher writes where the bytes
 * belong (chunk/cipherAddon.ts): opening allocates nothing, sealing one buffer per unit.
 */

import type { FileHandle } from 'node:fs/promises';
import { gcmOpenInto, gcmSealInto, sealUnitsAsync } from '../chunk/cipherAddon';
import { AuthError, freshNonce, freshRandom } from '../chunk/crypto';
import { contentName } from '../chunk/packs';
import { SpareBuffers } from '../util/spareBuffers';
import { writeAllAt } from '../util/writeAll';

export const UNIT = 64 * 1024;
const NONCE = 12;
const TAG = 16;
export const UNIT_OVERHEAD = NONCE + TAG;
const MAGIC = Buffer.from('FSL1', 'ascii');
const NAME_TAG = NONCE + 48 + TAG;
export const HEADER = MAGIC.length + 16 + NAME_TAG;

/** Bytes on disk for `len` bytes of data. */
export function physicalSize(len: number): number {
  if (len <= 0) return HEADER;
  const full = Math.floor(len / UNIT);
  const rem = len - full * UNIT;
  return HEADER + full * (UNIT + UNIT_OVERHEAD) + (rem > 0 ? rem + UNIT_OVERHEAD : 0);
}

/** Data bytes held by a file of `size` bytes on disk (undefined when no valid layout has it). */
export function logicalSize(size: number): number | undefined {
  if (size < HEADER) return undefined;
  const body = size - HEADER;
  const full = Math.floor(body / (UNIT + UNIT_OVERHEAD));
  const rem = body - full * (UNIT + UNIT_OVERHEAD);
  if (rem === 0) return full * UNIT;
  if (rem <= UNIT_OVERHEAD) return undefined;
  return full * UNIT + rem - UNIT_OVERHEAD;
}

/** Bytes of the sealed units (the file without its header) for `len` bytes of data. */
export function sealedBodySize(len: number): number {
  return physicalSize(len) - HEADER;
}

export function unitOffset(i: number): number {
  return HEADER + i * (UNIT + UNIT_OVERHEAD);
}

/** Index of the last unit of `len` bytes of data (-1 when empty). */
export function lastUnitOf(len: number): number {
  return len > 0 ? Math.floor((len - 1) / UNIT) : -1;
}

/** The associated data of unit i of the sealed file `fileId` (its id, then i big-endian). */
export function unitAad(fileId: Buffer, i: number): Buffer {
  const b = Buffer.allocUnsafe(20);
  fileId.copy(b, 0, 0, 16);
  b.writeUInt32BE(i, 16);
  return b;
}

/**
 * Opens one sealed unit (unit i of the file `fileId`) into `dst` (its data's length: `sealed`'s
 * own ciphertext bytes to open in place, or bytes apart from `sealed`). On a failed tag `dst`
 * is wiped and AuthError thrown.
 */
function openUnitInto(key: Buffer, fileId: Buffer, i: number, sealed: Buffer, dst: Buffer, what: string): void {
  if (sealed.length <= UNIT_OVERHEAD) throw new AuthError(what);
  const ct = sealed.subarray(NONCE, sealed.length - TAG);
  if (!gcmOpenInto(key, sealed.subarray(0, NONCE), unitAad(fileId, i), ct, dst, sealed.subarray(sealed.length - TAG)))
    throw new AuthError(what);
}

/** Opens one sealed unit; its data is a new buffer. */
function openUnit(key: Buffer, fileId: Buffer, i: number, sealed: Buffer, what: string): Buffer {
  if (sealed.length <= UNIT_OVERHEAD) throw new AuthError(what);
  const out = Buffer.allocUnsafe(sealed.length - UNIT_OVERHEAD);
  openUnitInto(key, fileId, i, sealed, out, what);
  return out;
}

/**
 * Opens the sealed units held in `buf.subarray(0, size)` (unit `first` at 0, the others after
 * it, as read from the file) where they are: unit i's data goes to (i - first) * UNIT, which
 * never reaches a unit not yet opened (each sealed unit is longer than its data). Returns the
 * data bytes. If a unit fails authentication, `buf` holds nothing usable. Pure: it needs only
 * the key, so it can run on any thread that has the key and the buffer (upload/encoder.ts).
 */
export function openSealedUnits(key: Buffer, fileId: Buffer, buf: Buffer, size: number, first: number, what: string): number {
  let data = 0;
  for (let i = first, off = 0; off < size; i++) {
    const n = Math.min(UNIT + UNIT_OVERHEAD, size - off);
    // Opened in place, then moved down to its place (copy is a memmove): the cipher never
    // writes to bytes that overlap its input only in part.
    const ct = buf.subarray(off + NONCE, off + n - TAG);
    openUnitInto(key, fileId, i, buf.subarray(off, off + n), ct, `${what} unit ${i}`);
    data += buf.copy(buf, data, off + NONCE, off + n - TAG);
    off += n;
  }
  return data;
}

/**
 * A read of up to this many units goes through a scratch buffer used again: any FUSE read
 * (128 KiB at most, so 3 units when it does not start on a unit's boundary).
 */
const SCRATCH_UNITS = 3;

/**
 * Spare sealed-unit buffers a SealedIO keeps for `sealUnitsForWrite`: as many units as the
 * write buffer's budget can have in flushes at once (`budgetUnits`), so a sequential writer
 * allocates none (V8 starts a full collection after every few megabytes of new ArrayBuffers;
 * with half as many, a write of 1 GiB allocated a tenth of its units anew). This many for the
 * default budget of 8 MiB, and where no write buffer seals (tools that read cache files).
 */
export const DEFAULT_SPARE_UNITS = 128;

/** The units a write buffer of `budgetBytes` holds at most (vfs/writeBuffer.ts): at least 4. */
export function budgetUnits(budgetBytes: number): number {
  return Math.max(4, Math.floor(budgetBytes / UNIT));
}

export class SealedIO {
  /**
   * Buffers of one sealed unit each (their own memory, UNIT + UNIT_OVERHEAD bytes), given back
   * by `releaseSealed` once the write that read them completed: a steady stream of writes
   * seals into the same memory instead of allocating (outside the JS heap) 64 KiB per unit.
   */
  private readonly spare: Buffer[] = [];
  private spareAllocations = 0;
  /**
   * Scratch buffers for `read`s of a few units (read sealed, opened in place, copied out): a
   * stream of small reads, such as a tree of small files read back, allocates nothing per read.
   */
  private readonly scratch = new SpareBuffers(SCRATCH_UNITS * (UNIT + UNIT_OVERHEAD));

  constructor(
    private readonly key: Buffer,
    /** Spare sealed-unit buffers kept at most (see DEFAULT_SPARE_UNITS). */
    private readonly spareUnits = DEFAULT_SPARE_UNITS,
  ) {}

  private aad(fileId: Buffer, i: number): Buffer {
    return unitAad(fileId, i);
  }

  /** Unit i sealed from `plain`: nonce | ciphertext | tag in one new buffer. */
  private seal(fileId: Buffer, i: number, plain: Buffer): Buffer {
    return this.sealInto(fileId, i, plain, Buffer.allocUnsafe(NONCE + plain.length + TAG));
  }

  /** Unit i sealed from `plain` into the start of `out`; returns the sealed bytes (a view of `out`). */
  private sealInto(fileId: Buffer, i: number, plain: Buffer, out: Buffer): Buffer {
    if (plain.length > UNIT || out.length < plain.length + UNIT_OVERHEAD) throw new RangeError('sealInto: no room for the unit');
    out = out.subarray(0, NONCE + plain.length + TAG);
    const nonce = out.subarray(0, NONCE);
    freshNonce().copy(nonce);
    gcmSealInto(
      this.key,
      nonce,
      this.aad(fileId, i),
      plain,
      out.subarray(NONCE, NONCE + plain.length),
      out.subarray(NONCE + plain.length),
    );
    return out;
  }

  private open(fileId: Buffer, i: number, sealed: Buffer, what: string): Buffer {
    return openUnit(this.key, fileId, i, sealed, what);
  }

  /** A new file's header (no name yet). */
  newHeader(): { header: Buffer; fileId: Buffer } {
    // A slice of a shared draw: a dirty chunk keeps its id in memory for as long as it is dirty,
    // and an id of its own would hold an ArrayBuffer (about 90 bytes more) for each of them.
    const fileId = freshRandom(16);
    const header = Buffer.alloc(HEADER);
    MAGIC.copy(header, 0);
    fileId.copy(header, MAGIC.length);
    return { header, fileId };
  }

  /**
   * Reads and checks a header. With `name`, the file must have been sealed as that chunk and
   * must still hold the data length sealed with it (`len`). The tag holds the chunk's name, which
   * a pack member's reference carries first (chunk/packs.ts `contentName`).
   */
  async readHeader(fh: FileHandle, what: string, name?: string, len?: number): Promise<Buffer> {
    const header = Buffer.alloc(HEADER);
    const { bytesRead } = await fh.read(header, 0, HEADER, 0);
    if (bytesRead !== HEADER || !header.subarray(0, 4).equals(MAGIC)) throw new AuthError(what);
    // A view into the header's own buffer: a copy with Buffer.from would be a slice of Node's
    // shared 8 KiB pool, and an id kept for long (the cache's header map) would keep that slab.
    const fileId = header.subarray(4, 20);
    if (name !== undefined) {
      const opened = this.open(fileId, 0xffffffff, header.subarray(20), what);
      if (opened.subarray(0, 40).toString('latin1') !== contentName(name).padEnd(40, '\0')) throw new AuthError(what);
      if (len !== undefined && opened.readUIntBE(42, 6) !== len) throw new AuthError(`${what} (cut short or extended)`);
    }
    return fileId;
  }

  /** Seals `name` and the data length into the header (done when it becomes a clean chunk). */
  async writeNameTag(fh: FileHandle, fileId: Buffer, name: string, len: number): Promise<void> {
    const plain = Buffer.alloc(48);
    plain.write(contentName(name).padEnd(40, '\0').slice(0, 40), 0, 'latin1');
    plain.writeUIntBE(len, 42, 6);
    const tag = this.seal(fileId, 0xffffffff, plain);
    await fh.write(tag, 0, tag.length, 20);
  }

  /** Units [first, last] decrypted, as one buffer of data starting at first * UNIT. */
  private async readUnits(
    fh: FileHandle,
    fileId: Buffer,
    first: number,
    last: number,
    len: number,
    what: string,
  ): Promise<Buffer> {
    const raw = Buffer.allocUnsafe(Math.min(unitOffset(last + 1), physicalSize(len)) - unitOffset(first));
    return raw.subarray(0, await this.openUnitsInPlace(fh, fileId, first, last, len, raw, what));
  }

  /**
   * Reads the sealed units [first, last] into `buf` (room for their sealed size), then opens
   * them there (`openSealedUnits`). Returns the data bytes. One read and one buffer, however
   * many units.
   */
  private async openUnitsInPlace(
    fh: FileHandle,
    fileId: Buffer,
    first: number,
    last: number,
    len: number,
    buf: Buffer,
    what: string,
  ): Promise<number> {
    const size = await this.readSealed(fh, first, last, len, buf, what);
    return openSealedUnits(this.key, fileId, buf, size, first, what);
  }

  /** Reads the sealed units [first, last] of a file of `len` data bytes into `buf`, as they are; returns their size. */
  private async readSealed(fh: FileHandle, first: number, last: number, len: number, buf: Buffer, what: string): Promise<number> {
    const start = unitOffset(first);
    const size = Math.min(unitOffset(last + 1), physicalSize(len)) - start;
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(buf, got, size - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got < size) throw new AuthError(`${what} (cut short)`);
    return size;
  }

  /** Copies data bytes [pos, pos+n) into buf at bufOff (n already clamped to the length). */
  async read(
    fh: FileHandle,
    fileId: Buffer,
    len: number,
    buf: Buffer,
    bufOff: number,
    n: number,
    pos: number,
    what: string,
  ): Promise<void> {
    if (n <= 0) return;
    const first = Math.floor(pos / UNIT);
    const last = Math.floor((pos + n - 1) / UNIT);
    if (last - first >= SCRATCH_UNITS) {
      const data = await this.readUnits(fh, fileId, first, last, len, what);
      data.copy(buf, bufOff, pos - first * UNIT, pos - first * UNIT + n);
      return;
    }
    // The file read into the scratch has finished once openUnitsInPlace settles, either way.
    const scratch = this.scratch.take();
    try {
      await this.openUnitsInPlace(fh, fileId, first, last, len, scratch, what);
      scratch.copy(buf, bufOff, pos - first * UNIT, pos - first * UNIT + n);
    } finally {
      this.scratch.give(scratch);
    }
  }

  async readAll(fh: FileHandle, fileId: Buffer, len: number, what: string): Promise<Buffer> {
    if (len === 0) return Buffer.alloc(0);
    return this.readUnits(fh, fileId, 0, Math.floor((len - 1) / UNIT), len, what);
  }

  /**
   * `readAll` into `buf` (at least `sealedBodySize(len)` bytes: the data is opened where its
   * sealed units were read); the data is `buf.subarray(0, len)`.
   */
  async readAllInto(fh: FileHandle, fileId: Buffer, len: number, buf: Buffer, what: string): Promise<void> {
    if (len === 0) return;
    if (buf.length < sealedBodySize(len)) throw new RangeError('readAllInto: the buffer is smaller than the sealed data');
    const n = await this.openUnitsInPlace(fh, fileId, 0, lastUnitOf(len), len, buf, what);
    if (n !== len) throw new AuthError(`${what} (cut short)`);
  }

  /**
   * The whole file's sealed units, unopened, into `buf` (at least `sealedBodySize(len)` bytes),
   * for `openSealedUnits` to open wherever the work runs.
   */
  async readSealedInto(fh: FileHandle, len: number, buf: Buffer, what: string): Promise<void> {
    if (len === 0) return;
    if (buf.length < sealedBodySize(len)) throw new RangeError('readSealedInto: the buffer is smaller than the sealed data');
    await this.readSealed(fh, 0, lastUnitOf(len), len, buf, what);
  }

  /**
   * Writes `data` at `pos` into a file holding `len` bytes; returns the new length. Units only
   * partly covered keep their other bytes (read, patched, resealed); a gap between the old end
   * and `pos` reads as zeros. An empty `data` past the end extends the file with zeros.
   */
  async write(fh: FileHandle, fileId: Buffer, len: number, data: Buffer, pos: number, what: string): Promise<number> {
    const to = pos + data.length;
    const newLen = Math.max(len, to);
    if (newLen === len && data.length === 0) return len;
    const from = Math.min(pos, len); // a gap past the old end is rewritten as zeros
    const first = Math.floor(from / UNIT);
    const last = Math.floor((Math.max(to, from + 1) - 1) / UNIT);
    const base = first * UNIT;
    // Old bytes inside the rewritten units that the data does not replace must be kept.
    const oldEnd = Math.min(len, (last + 1) * UNIT);
    const keepsOld = base < oldEnd && (pos > base || to < oldEnd);
    let plain: Buffer;
    if (pos === base && !keepsOld) {
      // The data starts the first unit and nothing old survives in the units it touches (the
      // usual sequential write): seal straight from it, no staging copy.
      plain = data;
    } else {
      plain = Buffer.alloc((last - first + 1) * UNIT);
      if (keepsOld) {
        const old = await this.readUnits(fh, fileId, first, Math.floor((oldEnd - 1) / UNIT), len, what);
        old.copy(plain, 0, 0, oldEnd - base);
      }
      data.copy(plain, pos - base);
    }
    const sealed: Buffer[] = [];
    for (let i = first; i <= last; i++) {
      const a = i * UNIT - base;
      const b = Math.min((i + 1) * UNIT, newLen) - base;
      if (b > a) {
        sealed.push(this.seal(fileId, i, plain.subarray(a, b)));
      }
    }
    await writeAllAt(fh, sealed, unitOffset(first));
    return newLen;
  }

  /**
   * Units `indexes[k]` sealed from `plains[k]`, each in a spare buffer: for a write that then
   * hands them, and only them, to `releaseSealed` once it has completed or failed (nothing may
   * read them after that: they are sealed into again).
   */
  sealUnitsForWrite(fileId: Buffer, indexes: readonly number[], plains: readonly Buffer[]): Buffer[] {
    return plains.map((plain, k) => this.sealInto(fileId, indexes[k]!, plain, this.spareUnit()));
  }

  /**
   * `sealUnitsForWrite` with the sealing on libuv's thread pool, the whole batch in one job, so
   * a megabyte of units does not hold the JS thread (which answers FUSE) for a millisecond. The
   * plaintexts must stay alive until it settles; bytes of them changed meanwhile may or may not
   * be in the result (the write buffer seals only under the chunk lock, and a unit written again
   * while its flush runs is flushed again; vfs/writeBuffer.ts). On failure nothing is returned.
   */
  async sealUnitsForWriteAsync(fileId: Buffer, indexes: readonly number[], plains: readonly Buffer[]): Promise<Buffer[]> {
    const spec = Buffer.allocUnsafe(16 * plains.length);
    const outs = plains.map((plain, k) => {
      if (plain.length > UNIT) throw new RangeError('sealUnitsForWriteAsync: a unit is too long');
      spec.writeUInt32BE(indexes[k]!, 16 * k);
      freshNonce().copy(spec, 16 * k + 4);
      return this.spareUnit();
    });
    await sealUnitsAsync(this.key, unitAad(fileId, 0), spec, [...plains], outs);
    return outs.map((out, k) => out.subarray(0, NONCE + plains[k]!.length + TAG));
  }

  /** A spare sealed-unit buffer, allocated when none is free. */
  private spareUnit(): Buffer {
    const b = this.spare.pop();
    if (b) return b;
    this.spareAllocations++;
    return Buffer.allocUnsafeSlow(UNIT + UNIT_OVERHEAD);
  }

  /** Sealed-unit buffers `sealUnitsForWrite` allocated so far (reused ones are not counted again). */
  get unitBuffersAllocated(): number {
    return this.spareAllocations;
  }

  /** Takes back what `sealUnitsForWrite` returned (see there). */
  releaseSealed(sealed: readonly Buffer[]): void {
    for (const b of sealed) {
      if (this.spare.length >= this.spareUnits) return;
      if (b.byteOffset === 0 && b.buffer.byteLength === UNIT + UNIT_OVERHEAD) this.spare.push(Buffer.from(b.buffer));
    }
  }

  /** The data of unit i of a file holding `len` bytes, decrypted and authenticated. */
  readUnit(fh: FileHandle, fileId: Buffer, i: number, len: number, what: string): Promise<Buffer> {
    return this.readUnits(fh, fileId, i, i, len, what);
  }

  /**
   * Writes sealed units `first`, `first`+1, ... (as sealUnitsForWrite returns them, one unit
   * after the other), in writev calls of at most a megabyte (util/writeAll.ts).
   */
  writeSealedRun(fh: FileHandle, first: number, sealed: readonly Buffer[]): Promise<void> {
    return writeAllAt(fh, sealed, unitOffset(first));
  }

  /** The sealed bytes of unit i as on disk for a file holding `len` bytes (shorter if cut). */
  async readRawUnit(fh: FileHandle, i: number, len: number): Promise<Buffer> {
    const start = unitOffset(i);
    const size = Math.max(0, Math.min(UNIT + UNIT_OVERHEAD, physicalSize(len) - start));
    const raw = Buffer.alloc(size);
    let got = 0;
    while (got < size) {
      const { bytesRead } = await fh.read(raw, got, size - got, start + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    return raw.subarray(0, got);
  }

  async writeRawUnit(fh: FileHandle, i: number, raw: Buffer): Promise<void> {
    let done = 0;
    while (done < raw.length) {
      const { bytesWritten } = await fh.write(raw, done, raw.length - done, unitOffset(i) + done);
      done += bytesWritten;
    }
  }

  /** True when `raw` is a valid sealing of unit i of the file `fileId`. */
  unitValid(fileId: Buffer, i: number, raw: Buffer): boolean {
    try {
      this.open(fileId, i, raw, 'unit');
      return true;
    } catch {
      return false;
    }
  }

  /** Unit i sealed with `n` zero bytes. */
  zeroUnit(fileId: Buffer, i: number, n: number): Buffer {
    return this.seal(fileId, i, Buffer.alloc(n));
  }

  /** Changes the length: cuts (resealing the new last unit) or extends with zeros. */
  async truncate(fh: FileHandle, fileId: Buffer, len: number, newLen: number, what: string): Promise<void> {
    if (newLen > len) {
      await this.write(fh, fileId, len, Buffer.alloc(0), newLen, what);
      return;
    }
    if (newLen === len) return;
    const lastUnit = newLen === 0 ? -1 : Math.floor((newLen - 1) / UNIT);
    if (lastUnit >= 0 && newLen % UNIT !== 0) {
      const keep = await this.readUnits(fh, fileId, lastUnit, lastUnit, len, what);
      const out = this.seal(fileId, lastUnit, keep.subarray(0, newLen - lastUnit * UNIT));
      await fh.write(out, 0, out.length, unitOffset(lastUnit));
    }
    await fh.truncate(physicalSize(newLen));
  }
}
