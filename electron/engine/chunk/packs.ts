/**
 * Packs: many small chunks in one object, so a tree of small files costs a PUT per pack
 * instead of one per file (a bucket's price and an S3 server's work are per request; a small
 * file's object costs as much to send as a megabyte of a large one).
 *
 * A pack is the object `packs/<2 hex>/<id>` (`packKey`): the objects of its member chunks as
 * each would be stored alone (FSC1 or FSC2, chunk/format.ts), one after the other, then its
 * index, then a trailer:
 *
 *   member objects | sealed index | "FSPK" | index length (uint32 BE)
 *
 * The index (JSON `[[chunk name, offset, bytes], ...]`, sealed with the chunk key under
 * `pack:<id>`) says what the pack holds without the metadata: `filespace check` compares it with
 * the references, and a pack whose metadata is lost can still be told apart. Its id is random
 * (128 bits) and never written twice. A member is named in the metadata by its chunk
 * reference's name, which then says where the object lies:
 *
 *   `<chunk name>~<pack id>~<offset>~<bytes>`   (`packedName`)
 *
 * So a reference stays `[name, length]` and everything that keys by a chunk's name (reference
 * counts, the clean cache, snapshots' names, the GC's holds) works on it unchanged, while the
 * few places that turn a name into a GET (`chunkObject`) read the member's byte range. The
 * member's bytes are authenticated under its chunk name as a lone object's are (format.ts:
 * the name is in every seal's authenticated data), so a name that points at the wrong bytes
 * (another member, a damaged pack) fails to open and is never served; decoding takes the chunk
 * name from either kind of name (`contentName`).
 *
 * Only a filespace of format 7 (filespace.ts FORMAT_PACKS) may hold packed names: an older
 * version would look for `chunks/<name>` and find nothing, so the header is raised before the
 * first pack is sent, and such a version then refuses the filespace instead.
 *
 * A pack lives while any reference, live or kept by a snapshot, names one of its members
 * (gc.ts). A member whose file is gone stays in its pack until the whole pack goes.
 */

import { AuthError, SEAL_OVERHEAD, open, sealInto } from './crypto';

/** What reading a pack's index needs of a bucket (store/types.ts ObjectStore has it). */
export interface PackReader {
  head(key: string): Promise<{ readonly size: number } | undefined>;
  get(key: string, range: { readonly start: number; readonly end: number }): Promise<{ readonly body: Buffer } | undefined>;
}

/** Chunk objects of at most this many bytes go into packs; larger ones are sent alone... */
export const PACK_MEMBER_MAX = 256 * 1024;

/**
 * ...and at most a quarter of the filespace's chunk size: what packs save is the cost of a
 * request, which weighs on an object much smaller than a chunk (a small file, a file's short
 * tail), not on one near the chunk size.
 */
export function packMemberMax(chunkSize: number): number {
  return Math.min(PACK_MEMBER_MAX, Math.floor(chunkSize / 4));
}

const SEP = '~';
/** What separates a packed reference's chunk name from its place (`packedName`). */
export const PACKED_SEP = SEP;
const TRAILER_MAGIC = Buffer.from('FSPK', 'latin1');
/** Bytes of a pack's trailer: magic and the index's length. */
export const PACK_TRAILER = 8;
/** Members of one pack at most (so its index stays small: about 80 bytes each). */
export const PACK_MEMBERS_MAX = 2048;
/** Room a pack keeps after its members for its index and trailer. */
export const PACK_INDEX_ROOM = PACK_MEMBERS_MAX * 96 + SEAL_OVERHEAD + PACK_TRAILER;
const PACK_ID = /^[0-9a-f]{32}$/;

/** The key of a chunk stored alone. */
export function chunkKey(name: string): string {
  return `chunks/${name.slice(0, 2)}/${name}`;
}

/**
 * Listing prefixes that split the chunk keys in sixteen by their name's first hex digit, for
 * whoever lists every chunk: a listing of a million keys held whole weighs about 100 MB.
 */
export const CHUNK_LIST_PARTS: readonly string[] = [...'0123456789abcdef'].map((d) => `chunks/${d}`);

export function packKey(pack: string): string {
  return `packs/${pack.slice(0, 2)}/${pack}`;
}

/** Listing prefixes that split the pack keys in sixteen (as CHUNK_LIST_PARTS does the chunks). */
export const PACK_LIST_PARTS: readonly string[] = [...'0123456789abcdef'].map((d) => `packs/${d}`);

/** Where a packed member lies. */
export interface PackedAt {
  readonly pack: string;
  readonly offset: number;
  readonly bytes: number;
}

/** The name of chunk `name`'s object stored as a member of a pack at `at`. */
export function packedName(name: string, at: PackedAt): string {
  return `${name}${SEP}${at.pack}${SEP}${at.offset}${SEP}${at.bytes}`;
}

/** Where the object of a packed name lies; undefined for a name of a chunk stored alone. */
export function packedAt(name: string): (PackedAt & { readonly name: string }) | undefined {
  const first = name.indexOf(SEP);
  if (first < 0) return undefined;
  const parts = name.slice(first + 1).split(SEP);
  const [pack, offset, bytes] = parts;
  if (parts.length !== 3 || !PACK_ID.test(pack!) || !/^\d+$/.test(offset!) || !/^[1-9]\d*$/.test(bytes!)) {
    throw new Error(`chunk reference ${name} is neither a chunk name nor a pack member's`);
  }
  return { name: name.slice(0, first), pack: pack!, offset: Number(offset), bytes: Number(bytes) };
}

/** The chunk name within a reference's name (the name the chunk's object is sealed under). */
export function contentName(name: string): string {
  const at = name.indexOf(SEP);
  return at < 0 ? name : name.slice(0, at);
}

/** The pack a reference's name points into, if it is a pack member's. */
export function packOf(name: string): string | undefined {
  return name.includes(SEP) ? packedAt(name)!.pack : undefined;
}

/** The pack id in a pack's key (from a listing); undefined for any other key. */
export function packIdOfKey(key: string): string | undefined {
  const id = key.slice(key.lastIndexOf('/') + 1);
  return PACK_ID.test(id) && key === packKey(id) ? id : undefined;
}

/**
 * The object a chunk reference's name reads, and the byte range of it: a chunk stored alone is
 * its whole object (`chunks/…`, no range), a member its range of the pack. `within` narrows to
 * bytes [start, end] (inclusive) of the chunk's own object, as a ranged read of its segments asks.
 */
export function chunkObject(
  name: string,
  within?: { readonly start: number; readonly end: number },
): { readonly key: string; readonly range: { readonly start: number; readonly end: number } | undefined } {
  const at = packedAt(name);
  if (!at) return { key: chunkKey(name), range: within };
  const start = at.offset + (within?.start ?? 0);
  const end = within ? Math.min(at.offset + within.end, at.offset + at.bytes - 1) : at.offset + at.bytes - 1;
  return { key: packKey(at.pack), range: { start, end } };
}

/** A member as a pack's index lists it. */
export interface PackEntry {
  readonly name: string;
  readonly offset: number;
  readonly bytes: number;
}

/**
 * Writes pack `pack`'s index of `entries` and its trailer into `buf` at `at` (room for them:
 * PACK_INDEX_ROOM); returns the pack's length.
 */
export function writePackIndex(key: Buffer, pack: string, entries: readonly PackEntry[], buf: Buffer, at: number): number {
  const plain = Buffer.from(JSON.stringify(entries.map((e) => [e.name, e.offset, e.bytes])), 'utf8');
  const sealed = plain.length + SEAL_OVERHEAD;
  if (at + sealed + PACK_TRAILER > buf.length) throw new RangeError(`the index of pack ${pack} does not fit`);
  sealInto(key, plain, `pack:${pack}`, buf, at);
  TRAILER_MAGIC.copy(buf, at + sealed);
  buf.writeUInt32BE(sealed, at + sealed + 4);
  return at + sealed + PACK_TRAILER;
}

/** Reads and authenticates the index of pack `pack` from the bucket; undefined if the pack is not there. */
export async function readPackIndex(store: PackReader, key: Buffer, pack: string): Promise<PackEntry[] | undefined> {
  const objKey = packKey(pack);
  const head = await store.head(objKey);
  if (!head) return undefined;
  const what = `the index of pack ${pack}`;
  if (head.size < PACK_TRAILER + SEAL_OVERHEAD) throw new AuthError(what);
  const trailer = await store.get(objKey, { start: head.size - PACK_TRAILER, end: head.size - 1 });
  if (!trailer) return undefined;
  if (trailer.body.length !== PACK_TRAILER || !trailer.body.subarray(0, 4).equals(TRAILER_MAGIC)) throw new AuthError(what);
  const sealed = trailer.body.readUInt32BE(4);
  const start = head.size - PACK_TRAILER - sealed;
  if (sealed < SEAL_OVERHEAD || start < 0) throw new AuthError(what);
  const got = await store.get(objKey, { start, end: head.size - PACK_TRAILER - 1 });
  if (!got) return undefined;
  const list = JSON.parse(open(key, got.body, `pack:${pack}`, what).toString('utf8')) as unknown;
  if (!Array.isArray(list)) throw new AuthError(what);
  return list.map((e) => {
    const [name, offset, bytes] = e as [string, number, number];
    return { name, offset, bytes };
  });
}
