/**
 * Received cache files: how the clean cache keeps a chunk downloaded from the bucket without a
 * second cipher pass. The chunk object is already encrypted and was authenticated as a whole
 * when it was decoded; its ciphertext is stored as received, and what keeps a modified file
 * from being served is a code per 64 KiB unit computed here, so any byte range can be checked
 * and decrypted alone (random access) and a whole chunk with one pass of each.
 *
 * Layout:  header (88 bytes) | unit table (28 bytes per unit) | ciphertext
 *   header     = magic "FSR1" | fileId (16 random bytes) | the chunk's nonce (12) | zeros (56, unused)
 *   table[i]   = code nonce (12 random bytes) | code (16)
 *   ciphertext = the chunk object's AES-256-GCM ciphertext, as received (uncompressed chunks)
 *   code i     = GMAC, under a key derived from the cache key, of
 *                fileId | i | chunk nonce | chunk name | data length | ciphertext unit i
 * The same size on disk as a sealed file (sealed.ts) of the same data, so the cache counts
 * both alike. Unit i decrypts with the chunk key in AES-CTR from GCM's counter for offset
 * i * 64 KiB. A unit moved, a nonce or fileId changed, a file renamed to another chunk's name
 * or cut short (the data length comes from the file's size) all fail the codes: the cache
 * then drops the file and fetches the chunk again (chunkCache.ts), never serving wrong bytes.
 *
 * A chunk received in the segmented format (FSC2, chunk/format.ts) is kept the same way with
 * no code of ours at all: `magic "FSR2" | zeros (92) | the object's segments as received`.
 * Its segments have the layout of a sealed file's units (nonce | up to 64 KiB | tag, every one
 * but the last full), so the file has a sealed file's size; each segment is authenticated by
 * its own tag, whose associated data binds the chunk's name, the segment's index and the
 * segment count (taken from the file's size). A segment moved, a file renamed to another
 * chunk's name or cut short therefore fails to open, as with the codes above.
 *
 * Compressed chunks are not kept this way (a range of deflated data cannot be read alone):
 * the cache seals their decoded bytes instead (sealed.ts). Pure I/O helpers; the caller
 * (ChunkCache) owns locking and accounting.
 */

import { hkdfSync, randomFillSync, timingSafeEqual } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { DIRECT_ALIGN, directPlace, gmacInto, gmacUnitsAsync } from '../chunk/cipherAddon';
import { AuthError, decryptSealedPart } from '../chunk/crypto';
import { HEAD_BYTES, openSegments, segmentCount } from '../chunk/format';
import { HEADER, UNIT, UNIT_OVERHEAD, lastUnitOf, unitOffset } from './sealed';
import { SpareBuffers } from '../util/spareBuffers';

const MAGIC = Buffer.from('FSR1', 'ascii');
/**
 * Bytes before an FSC2 object's start that storing it in place overwrites (the file's header
 * takes the object's head and these): a downloader that receives objects where `receivePlace`
 * says has them written to the cache with no copy (ChunkCache.putReceived, putUnopened).
 */
export const RECEIVED_HEAD_ROOM = HEADER - HEAD_BYTES;

/** Bytes a receiving buffer needs beyond the largest object, for `receivePlace`. */
export const RECEIVE_SLACK = RECEIVED_HEAD_ROOM + DIRECT_ALIGN;

/**
 * Where in `buffer` to receive an object so that it can be stored in place: RECEIVED_HEAD_ROOM
 * bytes or more in, where the cache file made of it starts at an aligned address (the cache's
 * direct write then takes it from where it lies). The buffer needs RECEIVE_SLACK bytes more
 * than the object.
 */
export function receivePlace(buffer: Buffer): Buffer {
  let at = directPlace(buffer, RECEIVED_HEAD_ROOM);
  if (at < RECEIVED_HEAD_ROOM) at += DIRECT_ALIGN;
  return buffer.subarray(at);
}
const MAGIC_SEGMENTED = Buffer.from('FSR2', 'ascii');
const CODE_NONCE = 12;
const CHUNK_NONCE = 12;

/** What a received file's header says (checked by the unit codes, not by itself). */
export interface ReceivedHeader {
  readonly fileId: Buffer;
  readonly nonce: Buffer;
  /** The file holds an FSC2 object's segments (fileId and nonce unused). */
  readonly segmented?: true;
}

/** Offset of the ciphertext in a file holding `len` data bytes. */
function dataStart(len: number): number {
  return HEADER + (lastUnitOf(len) + 1) * UNIT_OVERHEAD;
}

async function readFully(fh: FileHandle, buf: Buffer, pos: number): Promise<number> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got;
}

/** A read of up to this many segments of a segmented file goes through a scratch buffer used again. */
const SCRATCH_SEGMENTS = 2;
const SCRATCH_RAW = SCRATCH_SEGMENTS * (UNIT + UNIT_OVERHEAD);

export class ReceivedIO {
  private readonly codeKey: Buffer;
  /**
   * Scratch buffers for reads of a few segments (the segments as read, then their plaintext):
   * a random reader's every read allocated both, outside the JS heap (V8 counts that against
   * its collection limit). A read takes one, copies out, and gives it back.
   */
  private readonly scratch = new SpareBuffers(SCRATCH_RAW + SCRATCH_SEGMENTS * UNIT);

  constructor(
    cacheKey: Buffer,
    private readonly chunkKey: Buffer,
  ) {
    this.codeKey = Buffer.from(hkdfSync('sha256', cacheKey, Buffer.alloc(0), 'filespace cache unit codes v1', 32));
  }

  /** What every unit code of a file covers besides the unit: fileId | i | chunk nonce | name | length (i set per unit). */
  private static codePrefix(fileId: Buffer, nonce: Buffer, name: string, len: number): Buffer {
    const prefix = Buffer.alloc(16 + 4 + CHUNK_NONCE + 48);
    fileId.copy(prefix, 0);
    nonce.copy(prefix, 20);
    prefix.write(name.padEnd(40, '\0').slice(0, 40), 32, 'latin1');
    prefix.writeUIntBE(len, 74, 6);
    return prefix;
  }

  /** Unit i's code into `out` (16 bytes). */
  private code(codeNonce: Buffer, prefix: Buffer, i: number, unit: Buffer, out: Buffer): void {
    prefix.writeUInt32BE(i, 16);
    gmacInto(this.codeKey, codeNonce, prefix, unit, out);
  }

  /**
   * The whole file for chunk `name`, as buffers for one writev (the ciphertext is not copied).
   * The codes are computed off the JS thread (chunk/cipherAddon.ts); `ciphertext` must not
   * change until this settles.
   */
  async fileFor(name: string, nonce: Buffer, ciphertext: Buffer): Promise<Buffer[]> {
    const len = ciphertext.length;
    const head = Buffer.alloc(HEADER);
    MAGIC.copy(head, 0);
    const fileId = randomFillSync(head.subarray(4, 20));
    nonce.copy(head, 20);
    const prefix = ReceivedIO.codePrefix(fileId, nonce, name, len);
    const units = lastUnitOf(len) + 1;
    const table = Buffer.allocUnsafe(units * UNIT_OVERHEAD);
    for (let i = 0; i < units; i++) randomFillSync(table, i * UNIT_OVERHEAD, CODE_NONCE);
    // The codes `code` computes, one per unit, in one pass off this thread.
    await gmacUnitsAsync(this.codeKey, prefix, ciphertext, table);
    return [head, table, ciphertext];
  }

  /**
   * The whole file for an FSC2 chunk `name`, given the object's segments, as buffers for one
   * writev (not copied). `inPlace`: the HEADER bytes before the segments in their memory are
   * the caller's to overwrite (the object's own head and room before it, see
   * `RECEIVED_HEAD_ROOM`): the header is written there and the file is one buffer, which a
   * direct write takes from where it lies when it is aligned (cipherAddon.ts `directPlace`).
   */
  static segmentedFileFor(segments: Buffer, inPlace = false): Buffer[] {
    if (inPlace && segments.byteOffset >= HEADER) {
      const file = Buffer.from(segments.buffer, segments.byteOffset - HEADER, HEADER + segments.length);
      file.fill(0, 0, HEADER);
      MAGIC_SEGMENTED.copy(file, 0);
      return [file];
    }
    const head = Buffer.alloc(HEADER);
    MAGIC_SEGMENTED.copy(head, 0);
    return [head, segments];
  }

  /** Reads a header: undefined when the file is not a received file (e.g. a sealed one). */
  async readHeader(fh: FileHandle): Promise<ReceivedHeader | undefined> {
    const head = Buffer.alloc(HEADER);
    if ((await readFully(fh, head, 0)) !== HEADER) return undefined;
    if (head.subarray(0, 4).equals(MAGIC_SEGMENTED)) {
      return { fileId: Buffer.alloc(16), nonce: Buffer.alloc(CHUNK_NONCE), segmented: true };
    }
    if (!head.subarray(0, 4).equals(MAGIC)) return undefined;
    // Views into the header's own buffer, not copies from Node's shared pool (see sealed.ts readHeader).
    return { fileId: head.subarray(4, 20), nonce: head.subarray(20, 20 + CHUNK_NONCE) };
  }

  /** Units [first, last] of a file holding `len` data bytes: checked, then decrypted as one buffer starting at first * UNIT. */
  private async readUnits(
    fh: FileHandle,
    h: ReceivedHeader,
    name: string,
    len: number,
    first: number,
    last: number,
    what: string,
    scratch?: Buffer,
  ): Promise<Buffer> {
    if (h.segmented) return this.readSegments(fh, name, len, first, last, what, scratch);
    const table = Buffer.allocUnsafe((last - first + 1) * UNIT_OVERHEAD);
    const from = first * UNIT;
    const data = Buffer.allocUnsafe(Math.min(len, (last + 1) * UNIT) - from);
    const [gotTable, gotData] = await Promise.all([
      readFully(fh, table, HEADER + first * UNIT_OVERHEAD),
      readFully(fh, data, dataStart(len) + from),
    ]);
    if (gotTable < table.length || gotData < data.length) throw new AuthError(`${what} (cut short)`);
    const prefix = ReceivedIO.codePrefix(h.fileId, h.nonce, name, len);
    const want = Buffer.allocUnsafe(16);
    for (let i = first; i <= last; i++) {
      const at = (i - first) * UNIT_OVERHEAD;
      const unit = data.subarray(i * UNIT - from, Math.min(len, (i + 1) * UNIT) - from);
      this.code(table.subarray(at, at + CODE_NONCE), prefix, i, unit, want);
      if (!timingSafeEqual(want, table.subarray(at + CODE_NONCE, at + UNIT_OVERHEAD))) throw new AuthError(`${what} unit ${i}`);
    }
    // In place: `data` is this call's own buffer.
    return decryptSealedPart(this.chunkKey, h.nonce, data, from, data);
  }

  /** Segments [first, last] of a segmented file holding `len` data bytes, opened as one buffer starting at first * UNIT. */
  private async readSegments(
    fh: FileHandle,
    name: string,
    len: number,
    first: number,
    last: number,
    what: string,
    scratch?: Buffer,
  ): Promise<Buffer> {
    const from = unitOffset(first);
    const size = unitOffset(last) + Math.min(UNIT, len - last * UNIT) + UNIT_OVERHEAD - from;
    const fits = scratch !== undefined && size <= SCRATCH_RAW;
    const raw = fits ? scratch.subarray(0, size) : Buffer.allocUnsafe(size);
    if ((await readFully(fh, raw, from)) < raw.length) throw new AuthError(`${what} (cut short)`);
    try {
      return openSegments(this.chunkKey, name, segmentCount(len), first, raw, fits ? scratch.subarray(SCRATCH_RAW) : undefined);
    } catch {
      throw new AuthError(what);
    }
  }

  /** Copies data bytes [pos, pos+n) into buf at bufOff (n already clamped to the length). */
  async read(
    fh: FileHandle,
    h: ReceivedHeader,
    name: string,
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
    // Every read into the scratch buffer has finished once readUnits settles, either way.
    const scratch = h.segmented && last - first < SCRATCH_SEGMENTS ? this.scratch.take() : undefined;
    try {
      const plain = await this.readUnits(fh, h, name, len, first, last, what, scratch);
      plain.copy(buf, bufOff, pos - first * UNIT, pos - first * UNIT + n);
    } finally {
      if (scratch) this.scratch.give(scratch);
    }
  }

  async readAll(fh: FileHandle, h: ReceivedHeader, name: string, len: number, what: string): Promise<Buffer> {
    if (len === 0) return Buffer.alloc(0);
    return this.readUnits(fh, h, name, len, 0, lastUnitOf(len), what);
  }
}
