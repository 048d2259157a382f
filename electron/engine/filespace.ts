/**
 * The filespace header (`filespace.json` in the bucket): creating a filespace, and unlocking
 * one with its passphrase. The header is the only plaintext object the engine writes; it holds
 * no secret (the data key inside is wrapped by the passphrase-derived key).
 */

import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { AuthError, KdfParams, Keys, deriveKek, deriveKeys, newDataKey, newKdfParams, open, seal } from './chunk/crypto';
import { UserError } from './errors';
import { RemoteMeta } from './meta/remote';
import { Tree } from './meta/tree';
import { ObjectStore, StoreError } from './store/types';

export const HEADER_KEY = 'filespace.json';
const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 64 * 1024 * 1024;

const headerSchema = z.object({
  format: z.literal(1),
  id: z.string().uuid(),
  chunkSize: z.number().int().min(MIN_CHUNK).max(MAX_CHUNK),
  createdAt: z.string(),
  kdf: z.object({ alg: z.literal('scrypt'), N: z.number().int(), r: z.number().int(), p: z.number().int(), salt: z.string() }),
  wrappedKey: z.string(),
});

export type FilespaceHeader = z.infer<typeof headerSchema>;

export interface Unlocked {
  readonly header: FilespaceHeader;
  readonly keys: Keys;
}

export function validateChunkSize(bytes: number): void {
  if (!Number.isInteger(bytes) || bytes < MIN_CHUNK || bytes > MAX_CHUNK || (bytes & (bytes - 1)) !== 0) {
    throw new UserError(`chunk size must be a power of two between 64KiB and 64MiB (got ${bytes} bytes)`);
  }
}

/** Turns a store failure during setup into one clear line naming the problem and the fix. */
export function explainStoreError(err: unknown, store: ObjectStore): Error {
  if (!(err instanceof StoreError)) return err as Error;
  switch (err.code) {
    case 'NoSuchBucket':
      return new UserError(`the bucket of ${store.description} does not exist: create it or check --bucket`, 'NO_SUCH_BUCKET');
    case 'AccessDenied':
      return new UserError(`access denied by ${store.description}: the credentials lack ${err.action ?? 'a required'} permission; grant it in the bucket or IAM policy`, 'ACCESS_DENIED');
    case 'InvalidCredentials':
      return new UserError(`the AWS credentials were rejected (${err.message}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or your profile`, 'BAD_CREDENTIALS');
    case 'Unreachable':
    case 'Timeout':
      return new UserError(`cannot reach ${store.description} (${err.message}); check --endpoint and the network`, 'UNREACHABLE');
    default:
      return new UserError(`${store.description}: ${err.message}`, 'STORE_ERROR');
  }
}

export async function readHeader(store: ObjectStore): Promise<FilespaceHeader | undefined> {
  const got = await store.get(HEADER_KEY);
  if (!got) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(got.body.toString('utf8'));
  } catch {
    throw new UserError(`${store.description}/${HEADER_KEY} is not a Filespace header (not JSON)`, 'BAD_HEADER');
  }
  const parsed = headerSchema.safeParse(raw);
  if (!parsed.success) throw new UserError(`${store.description}/${HEADER_KEY} is not a valid Filespace header`, 'BAD_HEADER');
  return parsed.data;
}

export async function unlockHeader(header: FilespaceHeader, passphrase: string): Promise<Keys> {
  const kek = await deriveKek(passphrase, header.kdf as KdfParams);
  try {
    const dataKey = open(kek, Buffer.from(header.wrappedKey, 'base64'), `datakey:${header.id}`, 'data key');
    return deriveKeys(dataKey);
  } catch (err) {
    if (err instanceof AuthError) throw new UserError('wrong passphrase for this filespace', 'WRONG_PASSPHRASE');
    throw err;
  }
}

export async function createFilespace(store: ObjectStore, passphrase: string, chunkSize: number): Promise<FilespaceHeader> {
  validateChunkSize(chunkSize);
  if (passphrase.length < 8) throw new UserError('the passphrase must be at least 8 characters', 'WEAK_PASSPHRASE');
  try {
    // A GET rather than a HEAD: a refused HEAD has no body to tell wrong keys from a missing permission.
    if (await store.get(HEADER_KEY)) {
      throw new UserError(`a filespace already exists at ${store.description}; use "filespace link" to join it, or pick another --prefix`, 'EXISTS');
    }
    const id = randomUUID();
    const kdf = newKdfParams();
    const dataKey = newDataKey();
    const kek = await deriveKek(passphrase, kdf);
    const header: FilespaceHeader = {
      format: 1, id, chunkSize, createdAt: new Date().toISOString(), kdf,
      wrappedKey: seal(kek, dataKey, `datakey:${id}`).toString('base64'),
    };
    const keys = deriveKeys(dataKey);
    // The empty tree goes first: a header in the bucket always has metadata behind it.
    if ((await store.list('meta')).length > 0) {
      throw new UserError(`${store.description} holds metadata of an unfinished or removed filespace; empty that prefix or pick another --prefix`, 'EXISTS');
    }
    const tree = Tree.create(chunkSize, process.getuid?.() ?? 0, process.getgid?.() ?? 0, Date.now());
    await new RemoteMeta(store, keys.metaKey).writeCheckpoint(0, tree.snapshot());
    try {
      await store.put(HEADER_KEY, Buffer.from(JSON.stringify(header, null, 2)), { ifNoneMatch: '*' });
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

export async function unlockFilespace(store: ObjectStore, passphrase: string): Promise<Unlocked> {
  let header: FilespaceHeader | undefined;
  try {
    header = await readHeader(store);
  } catch (err) {
    throw explainStoreError(err, store);
  }
  if (!header) {
    throw new UserError(`no filespace at ${store.description}; create one with "filespace init" or check --bucket/--prefix`, 'NO_FILESPACE');
  }
  return { header, keys: await unlockHeader(header, passphrase) };
}
