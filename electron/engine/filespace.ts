/**
 * The filespace header (`filespace.json` in the bucket): creating a filespace, and unlocking
 * one with its passphrase. The header is the only plaintext object the engine writes; it holds
 * no secret (the data key inside is wrapped by the passphrase-derived key).
 *
 * Anyone who can write to the bucket can edit the header, so its fields are authenticated:
 * `seal` holds a copy of every other field, sealed (AES-256-GCM) with the header key, which
 * only the unwrapped data key gives. Unlocking unwraps the data key (the wrapped key is bound
 * to the id, and the passphrase key to the KDF parameters, so a change to either reads as a
 * wrong passphrase), then opens the seal and compares: a field that differs from its sealed
 * copy, or a seal that does not open, is refused before anything uses the header, naming the
 * field. A sealed copy rather than a bare MAC, so the refusal can say what was changed.
 *
 * A recovery key (optional, chosen at creation) wraps the same data key a second time
 * (`recovery`: its own scrypt parameters and wrapped key, bound to the id like the passphrase's),
 * so a lost passphrase can be replaced (`resetPassphrase`). The recovery key itself is never
 * stored: it is high-entropy (160 bits) and kept by the user on paper or in a file.
 *
 * Headers written before the seal existed have none. They are accepted (their chunk size is
 * still checked against the metadata checkpoints, meta/remote.ts, and against the linked
 * machine's own metadata), and the next read-write mount seals them (`sealLegacyHeader`), with
 * a write conditional on the ETag of the header it unlocked.
 *
 * `format` says what a client must know to read the filespace: 1 for everything but hard
 * links, 2 once the metadata may hold one (op `ln`, nlink in the tree). A filespace is created
 * at format 1 and raised to 2 by the writer before it commits its first link
 * (`raiseHeaderFormat`, resealed, conditional on the ETag), so a filespace without links stays
 * readable by versions that know only format 1, and one with links is refused by them. Format-1
 * metadata reads unchanged as format 2. Format 3: the metadata log may have been compacted
 * (meta/compaction.ts); the writer raises the header to it before it writes the first
 * compaction mark, because a version that does not know the mark would take the first gap in
 * the log for its end (a follower would stop following without a word; a writer with a copy
 * from before the gap would write into it and lose its changes). Formats are levels: 3 allows
 * links too. Format 4: the metadata checkpoints may be paged (a manifest naming pages, see
 * meta/pages.ts); the writer raises the header to it before it writes its first paged
 * checkpoint, since a version that reads only whole-tree checkpoints would fail on a manifest.
 * Format-3 metadata (whole-tree checkpoints) reads unchanged as format 4. Format 5: chunks may
 * be sealed in segments (FSC2, chunk/format.ts); the writer raises the header to it before it
 * PUTs its first chunk sealed so (upload/uploader.ts), since a version that knows only
 * whole-sealed chunks (FSC1) would answer every read of such a chunk with EIO (chunks that
 * compress are FSC1 and need no raise). Format-4 chunks read unchanged as format 5. Format 6:
 * a snapshot may keep its tree as the manifest of a paged checkpoint, whose pages it shares with
 * the checkpoints (meta/snapshots.ts); the writer raises the header to it before it writes the
 * first such snapshot, since a version that does not know it would read the snapshot as
 * damaged and, as the writer, let compaction delete the pages only snapshots name. Format-5
 * snapshots (whole trees) read unchanged as format 6. Format 7: small chunks may be stored in
 * packs, many to an object, and referenced by their place in one (chunk/packs.ts); the writer
 * raises the header to it before it PUTs its first pack (upload/packer.ts), since a version that
 * does not know packs would look for each such chunk as an object of its own, find nothing and
 * answer EIO, and its garbage collection would not know that packs are referenced. Format-6
 * chunks read unchanged as format 7. A format newer than this version knows is refused with one
 * line saying so.
 */

import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { AuthError, Keys, deriveKek, deriveKeys, newDataKey, newKdfParams, open, seal } from './chunk/crypto';
import { UserError } from './errors';
import { RemoteMeta } from './meta/remote';
import { Tree } from './meta/tree';
import { ObjectStore, StoreError } from './store/types';
import { formatSize } from './util/sizes';

export const HEADER_KEY = 'filespace.json';
const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 64 * 1024 * 1024;
/** The newest header format this version reads (see the module header). */
export const FORMAT_NEWEST = 7;
/** The format a filespace needs once its metadata holds hard links. */
export const FORMAT_LINKS = 2;
/** The format a filespace needs once its metadata log may have been compacted. */
export const FORMAT_COMPACTED = 3;
/** The format a filespace needs once its metadata checkpoints may be paged. */
export const FORMAT_PAGES = 4;
/** The format a filespace needs once its chunks may be sealed in segments (FSC2). */
export const FORMAT_SEGMENTS = 5;
/** The format a filespace needs once a snapshot may keep its tree as a paged checkpoint's manifest. */
export const FORMAT_SNAPSHOT_PAGES = 6;
/** The format a filespace needs once small chunks may be stored in packs (chunk/packs.ts). */
export const FORMAT_PACKS = 7;

const kdfSchema = z.object({
  alg: z.literal('scrypt'),
  N: z.number().int(),
  r: z.number().int(),
  p: z.number().int(),
  salt: z.string(),
});

const fieldsSchema = z.object({
  format: z.number().int().min(1).max(FORMAT_NEWEST),
  id: z.string().uuid(),
  chunkSize: z.number().int().min(MIN_CHUNK).max(MAX_CHUNK),
  createdAt: z.string(),
  kdf: kdfSchema,
  wrappedKey: z.string(),
  /** The data key wrapped a second time, by a key derived from the recovery key (absent: no recovery key). */
  recovery: z.object({ kdf: kdfSchema, wrappedKey: z.string() }).optional(),
});

/** A recovery key in its canonical form: 32 Crockford base32 characters (160 bits). */
export const RECOVERY_KEY_RE = /^[0-9A-HJKMNP-TV-Z]{32}$/;

const headerSchema = fieldsSchema.extend({
  /** The other fields, sealed with the header key (absent in headers written before it existed). */
  seal: z.string().optional(),
});

export type FilespaceHeader = z.infer<typeof headerSchema>;
type HeaderFields = z.infer<typeof fieldsSchema>;

/** Associated data of the seal: it belongs to this object and to nothing else. */
const SEAL_AAD = `header:${HEADER_KEY}`;

/** What each field is, for the message that names a changed one. */
const FIELD_NAMES: Readonly<Record<keyof HeaderFields, string>> = {
  format: 'format version',
  id: 'filespace id',
  chunkSize: 'chunk size',
  createdAt: 'creation time',
  kdf: 'passphrase key parameters',
  wrappedKey: 'wrapped data key',
  recovery: 'recovery key',
};

export interface Unlocked {
  readonly header: FilespaceHeader;
  readonly keys: Keys;
}

export function validateChunkSize(bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < MIN_CHUNK || bytes > MAX_CHUNK || (bytes & (bytes - 1)) !== 0) {
    throw new UserError(`chunk size must be a power of two between 64 KiB and 64 MiB (got ${bytes} bytes)`, 'BAD_CHUNK_SIZE');
  }
}

/** Turns a store failure during setup into one clear line naming the problem and the fix. */
export function explainStoreError(err: unknown, store: Pick<ObjectStore, 'description'>): Error {
  if (!(err instanceof StoreError)) return err as Error;
  switch (err.code) {
    case 'NoSuchBucket':
      return new UserError(`the bucket of ${store.description} does not exist: create it or check --bucket`, 'NO_SUCH_BUCKET');
    case 'AccessDenied':
      return new UserError(
        `access denied by ${store.description}: the credentials lack ${err.action ?? 'a required'} permission; grant it in the bucket or IAM policy`,
        'ACCESS_DENIED',
      );
    case 'InvalidCredentials':
      return new UserError(
        `the AWS credentials were rejected (${err.message}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or your profile`,
        'BAD_CREDENTIALS',
      );
    case 'Unreachable':
    case 'Timeout':
      return new UserError(`cannot reach ${store.description} (${err.message}); check --endpoint and the network`, 'UNREACHABLE');
    case 'PreconditionFailed':
    case 'Throttled':
    case 'ServerError':
    case 'Corrupt':
    case 'Other':
      return new UserError(`${store.description}: ${err.message}`, 'STORE_ERROR');
  }
}

function parseHeader(body: Buffer, store: ObjectStore): FilespaceHeader {
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UserError(`${store.description}/${HEADER_KEY} is not a Filespace header (not JSON)`, 'BAD_HEADER');
  }
  const format = (raw as { format?: unknown } | null)?.format;
  if (typeof format === 'number' && Number.isInteger(format) && format > FORMAT_NEWEST) {
    throw new UserError(
      `${store.description}/${HEADER_KEY} is of format ${format}, written by a newer version of Filespace ` +
        `(this one reads formats up to ${FORMAT_NEWEST}): update Filespace on this machine`,
      'NEWER_VERSION',
    );
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) throw new UserError(`${store.description}/${HEADER_KEY} is not a valid Filespace header`, 'BAD_HEADER');
  return parsed.data;
}

export async function readHeader(store: ObjectStore): Promise<FilespaceHeader | undefined> {
  const got = await store.get(HEADER_KEY);
  return got ? parseHeader(got.body, store) : undefined;
}

/** The fields the seal covers, in a fixed order (the canonical encoding is their JSON). */
function fieldsOf(h: HeaderFields): HeaderFields {
  const kdfOf = ({ alg, N, r, p, salt }: HeaderFields['kdf']) => ({ alg, N, r, p, salt });
  return {
    format: h.format,
    id: h.id,
    chunkSize: h.chunkSize,
    createdAt: h.createdAt,
    kdf: kdfOf(h.kdf),
    wrappedKey: h.wrappedKey,
    ...(h.recovery ? { recovery: { kdf: kdfOf(h.recovery.kdf), wrappedKey: h.recovery.wrappedKey } } : {}),
  };
}

/** The header with its seal: every field sealed with the header key. */
export function sealHeader(fields: HeaderFields, headerKey: Buffer): FilespaceHeader {
  const f = fieldsOf(fields);
  return { ...f, seal: seal(headerKey, Buffer.from(JSON.stringify(f), 'utf8'), SEAL_AAD).toString('base64') };
}

function describeField(field: keyof HeaderFields, value: unknown, sealed: unknown): string {
  const show = (v: unknown) => (field === 'chunkSize' && typeof v === 'number' ? formatSize(v) : JSON.stringify(v));
  if (field === 'kdf') return 'its passphrase key parameters differ from the sealed ones';
  if (field === 'wrappedKey') return 'its wrapped data key differs from the sealed one';
  if (field === 'recovery') return 'its recovery key differs from the sealed one';
  return `its ${FIELD_NAMES[field]} is ${show(value)}, sealed as ${show(sealed)}`;
}

/**
 * Refuses a header whose fields differ from its seal, or whose seal does not open with the
 * header key; accepts a header without a seal (written before it existed).
 */
export function verifyHeaderSeal(header: FilespaceHeader, headerKey: Buffer, where: string): void {
  if (header.seal === undefined) return;
  const tampered = (what: string) =>
    new UserError(
      `${where}/${HEADER_KEY} was changed by someone without the passphrase: ${what}; ` +
        'refused, nothing was changed (put the original filespace.json back)',
      'HEADER_TAMPERED',
    );
  let sealed: HeaderFields;
  try {
    const parsed = fieldsSchema.safeParse(
      JSON.parse(open(headerKey, Buffer.from(header.seal, 'base64'), SEAL_AAD, 'header seal').toString('utf8')),
    );
    if (!parsed.success) throw new AuthError('header seal');
    sealed = fieldsOf(parsed.data);
  } catch (err) {
    if (!(err instanceof AuthError || err instanceof SyntaxError)) throw err;
    throw tampered('its seal does not open with the key of this filespace');
  }
  const actual = fieldsOf(header);
  const changed = (Object.keys(FIELD_NAMES) as Array<keyof HeaderFields>).filter((k) => !isDeepStrictEqual(actual[k], sealed[k]));
  if (changed.length > 0) throw tampered(changed.map((k) => describeField(k, actual[k], sealed[k])).join(', '));
}

async function unlockHeader(header: FilespaceHeader, passphrase: string, where: string): Promise<Keys> {
  const kek = await deriveKek(passphrase, header.kdf);
  let keys: Keys;
  try {
    const dataKey = open(kek, Buffer.from(header.wrappedKey, 'base64'), `datakey:${header.id}`, 'data key');
    keys = deriveKeys(dataKey);
  } catch (err) {
    if (err instanceof AuthError) throw new UserError('wrong passphrase for this filespace', 'WRONG_PASSPHRASE');
    throw err;
  }
  verifyHeaderSeal(header, keys.headerKey, where);
  return keys;
}

function checkRecoveryKey(recoveryKey: string): void {
  if (!RECOVERY_KEY_RE.test(recoveryKey))
    throw new UserError('not a recovery key: it is 32 letters and digits, written in groups of four', 'BAD_RECOVERY_KEY');
}

/** The data key, unwrapped with the recovery key; the header's seal is checked with it. */
async function unlockHeaderWithRecoveryKey(header: FilespaceHeader, recoveryKey: string, where: string): Promise<Buffer> {
  checkRecoveryKey(recoveryKey);
  if (!header.recovery)
    throw new UserError('this filespace was created without a recovery key; only its passphrase opens it', 'NO_RECOVERY_KEY');
  const kek = await deriveKek(recoveryKey, header.recovery.kdf);
  let dataKey: Buffer;
  try {
    dataKey = open(kek, Buffer.from(header.recovery.wrappedKey, 'base64'), `recoverykey:${header.id}`, 'data key');
  } catch (err) {
    if (err instanceof AuthError) throw new UserError('wrong recovery key for this filespace', 'WRONG_RECOVERY_KEY');
    throw err;
  }
  verifyHeaderSeal(header, deriveKeys(dataKey).headerKey, where);
  return dataKey;
}

/** Refuses a header naming another filespace than the one this machine linked as `name`. */
export function checkLinkedFilespace(header: FilespaceHeader, linkedId: string, name: string, store: ObjectStore): void {
  if (header.id === linkedId) return;
  throw new UserError(
    `${store.description}/${HEADER_KEY} names a different filespace (${header.id}) than the one linked as "${name}" (${linkedId}): ` +
      'if the header was replaced, put the original back; if the bucket now holds another filespace, unlink and link again',
    'MISMATCH',
  );
}

/** The header's chunk size is not the one this machine linked the filespace with: the header was changed. */
export function linkedChunkSizeMismatch(store: ObjectStore, headerChunkSize: number, linkedChunkSize: number): UserError {
  return new UserError(
    `${store.description}/${HEADER_KEY} gives a chunk size of ${formatSize(headerChunkSize)}, but this machine linked the filespace ` +
      `with ${formatSize(linkedChunkSize)} chunks: the header was changed; put the original back (nothing was changed)`,
    'HEADER_MISMATCH',
  );
}

/**
 * Adds the seal to a header written without one, if the bucket still holds exactly the header
 * this machine unlocked (the write is conditional on its ETag). Called by the read-write mount
 * once its metadata agrees with the header. Resolves true when it sealed the header.
 */
export async function sealLegacyHeader(store: ObjectStore, header: FilespaceHeader, keys: Keys): Promise<boolean> {
  if (header.seal !== undefined) return false;
  const got = await store.get(HEADER_KEY);
  if (!got) return false;
  let current: FilespaceHeader;
  try {
    current = parseHeader(got.body, store);
  } catch {
    return false;
  }
  if (!isDeepStrictEqual(current, header)) return false; // changed since it was unlocked: not ours to bless
  try {
    await store.put(HEADER_KEY, headerBody(sealHeader(header, keys.headerKey)), { ifMatch: got.etag });
  } catch (err) {
    if (err instanceof StoreError && err.code === 'PreconditionFailed') return false;
    throw err;
  }
  return true;
}

/**
 * Seals a header written before headers were sealed, from the machine that holds the write
 * lease, once its metadata agreed with the header (checked at open) and the newest checkpoint
 * names the chunk size (so stripping the seal again cannot hide a changed chunk size from a
 * machine that links). Never throws: a failure only delays it to the next read-write mount.
 */
export async function sealHeaderWhenBound(
  store: ObjectStore,
  header: FilespaceHeader,
  keys: Keys,
  remote: RemoteMeta,
  log: (msg: string) => void,
): Promise<void> {
  if (header.seal !== undefined) return;
  try {
    if (!(await remote.bindNewestCheckpoint())) {
      log(
        'filespace.json has no seal yet; the newest metadata checkpoint could not be made to name the chunk size now, so the next read-write mount seals it',
      );
      return;
    }
    if (await sealLegacyHeader(store, header, keys)) log('sealed filespace.json: a change to it is now refused');
  } catch (err) {
    log(`could not seal filespace.json now (${(err as Error).message}); the next read-write mount tries again`);
  }
}

/**
 * Raises the bucket's header to `format` (sealed again, with the new format under the seal),
 * conditional on the ETag of the header as read, which must still be the one this machine
 * unlocked (`header`, same id and key) apart from a format already raised. Resolves the header
 * now in the bucket. Throws when the bucket's header changed otherwise, or the write fails.
 */
export async function raiseHeaderFormat(
  store: ObjectStore,
  header: FilespaceHeader,
  keys: Keys,
  format: number,
): Promise<FilespaceHeader> {
  const got = await store.get(HEADER_KEY);
  if (!got) throw new Error(`${store.description}/${HEADER_KEY} is gone`);
  const current = parseHeader(got.body, store);
  verifyHeaderSeal(current, keys.headerKey, store.description);
  if (current.id !== header.id || current.wrappedKey !== header.wrappedKey || current.chunkSize !== header.chunkSize) {
    throw new Error(`${store.description}/${HEADER_KEY} changed since this machine unlocked it`);
  }
  if (current.format >= format) return current;
  // A header written before seals existed stays without one (sealHeaderWhenBound seals it).
  const raised: FilespaceHeader =
    current.seal === undefined ? { ...fieldsOf(current), format } : sealHeader({ ...current, format }, keys.headerKey);
  try {
    await store.put(HEADER_KEY, headerBody(raised), { ifMatch: got.etag });
  } catch (err) {
    if (err instanceof StoreError && err.code === 'PreconditionFailed') {
      throw new Error(`${store.description}/${HEADER_KEY} was changed while raising its format; try again`, { cause: err });
    }
    throw err;
  }
  return raised;
}

function headerBody(header: FilespaceHeader): Buffer {
  return Buffer.from(JSON.stringify(header, null, 2));
}

/**
 * Creates a filespace. With `recoveryKey` (canonical form, RECOVERY_KEY_RE) the data key is
 * also wrapped by it, so it can replace a lost passphrase; the key is not kept anywhere.
 */
export async function createFilespace(
  store: ObjectStore,
  passphrase: string,
  chunkSize: number,
  opts: { readonly recoveryKey?: string } = {},
): Promise<FilespaceHeader> {
  validateChunkSize(chunkSize);
  if (passphrase.length < 8) throw new UserError('the passphrase must be at least 8 characters', 'WEAK_PASSPHRASE');
  if (opts.recoveryKey !== undefined) checkRecoveryKey(opts.recoveryKey);
  try {
    // A GET rather than a HEAD: a refused HEAD has no body to tell wrong keys from a missing permission.
    if (await store.get(HEADER_KEY)) {
      throw new UserError(
        `a filespace already exists at ${store.description}; use "filespace link" to join it, or pick another --prefix`,
        'EXISTS',
      );
    }
    const id = randomUUID();
    const kdf = newKdfParams();
    const dataKey = newDataKey();
    const kek = await deriveKek(passphrase, kdf);
    const keys = deriveKeys(dataKey);
    const header = sealHeader(
      {
        format: 1,
        id,
        chunkSize,
        createdAt: new Date().toISOString(),
        kdf,
        wrappedKey: seal(kek, dataKey, `datakey:${id}`).toString('base64'),
        ...(opts.recoveryKey !== undefined ? { recovery: await wrapForRecovery(opts.recoveryKey, dataKey, id) } : {}),
      },
      keys.headerKey,
    );
    // The empty tree goes first: a header in the bucket always has metadata behind it.
    if ((await store.list('meta')).length > 0) {
      throw new UserError(
        `${store.description} holds metadata of an unfinished or removed filespace; empty that prefix or pick another --prefix`,
        'EXISTS',
      );
    }
    const tree = Tree.create(chunkSize, process.getuid?.() ?? 0, process.getgid?.() ?? 0, Date.now());
    await new RemoteMeta(store, keys.metaKey, header).writeCheckpoint(0, tree.snapshot());
    try {
      await store.put(HEADER_KEY, headerBody(header), { ifNoneMatch: '*' });
    } catch (err) {
      if (err instanceof StoreError && err.code === 'PreconditionFailed') {
        throw new UserError(`a filespace was created at ${store.description} at the same moment by someone else`, 'EXISTS');
      }
      throw err;
    }
    return header;
  } catch (err) {
    throw explainStoreError(err, store);
  }
}

async function wrapForRecovery(recoveryKey: string, dataKey: Buffer, id: string): Promise<NonNullable<HeaderFields['recovery']>> {
  const kdf = newKdfParams();
  const kek = await deriveKek(recoveryKey, kdf);
  return { kdf, wrappedKey: seal(kek, dataKey, `recoverykey:${id}`).toString('base64') };
}

async function readHeaderOrFail(store: ObjectStore): Promise<{ header: FilespaceHeader; etag: string }> {
  let got;
  try {
    got = await store.get(HEADER_KEY);
  } catch (err) {
    throw explainStoreError(err, store);
  }
  if (!got) {
    throw new UserError(
      `no filespace at ${store.description}; create one with "filespace init" or check --bucket/--prefix`,
      'NO_FILESPACE',
    );
  }
  return { header: parseHeader(got.body, store), etag: got.etag };
}

/** Opens a filespace with its recovery key instead of the passphrase. */
export async function unlockWithRecoveryKey(store: ObjectStore, recoveryKey: string): Promise<Unlocked> {
  const { header } = await readHeaderOrFail(store);
  const dataKey = await unlockHeaderWithRecoveryKey(header, recoveryKey, store.description);
  return { header, keys: deriveKeys(dataKey) };
}

/**
 * Replaces the passphrase of a filespace, proven by its recovery key: the data key (and so
 * every chunk and all metadata) stays, only its passphrase wrapping is new; the recovery key
 * keeps working. The header is rewritten only if the bucket still holds the one read (ETag).
 * Machines that linked with the old passphrase are refused it from then on.
 */
export async function resetPassphrase(store: ObjectStore, recoveryKey: string, newPassphrase: string): Promise<FilespaceHeader> {
  if (newPassphrase.length < 8) throw new UserError('the passphrase must be at least 8 characters', 'WEAK_PASSPHRASE');
  const { header, etag } = await readHeaderOrFail(store);
  const dataKey = await unlockHeaderWithRecoveryKey(header, recoveryKey, store.description);
  const kdf = newKdfParams();
  const kek = await deriveKek(newPassphrase, kdf);
  const next = sealHeader(
    { ...fieldsOf(header), kdf, wrappedKey: seal(kek, dataKey, `datakey:${header.id}`).toString('base64') },
    deriveKeys(dataKey).headerKey,
  );
  try {
    await store.put(HEADER_KEY, headerBody(next), { ifMatch: etag });
  } catch (err) {
    if (err instanceof StoreError && err.code === 'PreconditionFailed')
      throw new UserError(
        `${store.description}/${HEADER_KEY} changed while the passphrase was being replaced; try again`,
        'BUSY',
      );
    throw explainStoreError(err, store);
  }
  return next;
}

export async function unlockFilespace(store: ObjectStore, passphrase: string): Promise<Unlocked> {
  let header: FilespaceHeader | undefined;
  try {
    header = await readHeader(store);
  } catch (err) {
    throw explainStoreError(err, store);
  }
  if (!header) {
    throw new UserError(
      `no filespace at ${store.description}; create one with "filespace init" or check --bucket/--prefix`,
      'NO_FILESPACE',
    );
  }
  return { header, keys: await unlockHeader(header, passphrase, store.description) };
}
