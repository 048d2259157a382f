/**
 * The one error vocabulary. Every error that crosses a boundary — the control socket (the
 * `filespace` command talking to a mount), the app contract (the renderer talking to the app
 * host), and the engine's own user errors on their way out — is `{code, message}` with a code
 * from this closed list. The schemas refuse any other code, and clients switch over the codes
 * (the renderer exhaustively), never over message text.
 *
 * Each code has the HTTP-like status it travels with and one human message: what the code
 * means, said when nothing more specific is known. The error itself usually carries a more
 * specific message (which folder, which bucket, what to do). Imports nothing of ours.
 */

import { z } from 'zod';

interface ErrorKind {
  readonly status: number;
  readonly message: string;
}

export const ERRORS = {
  // ---- requests that do not fit the contract -------------------------------------------------
  INVALID: { status: 400, message: 'the request does not match the contract' },
  BAD_JSON: { status: 400, message: 'the request body is not valid JSON' },
  TOO_LARGE: { status: 413, message: 'the request body is too large' },
  NOT_FOUND: { status: 404, message: 'no such thing' },
  METHOD: { status: 405, message: 'the request uses the wrong method' },
  UNAUTHORIZED: { status: 401, message: 'the access token is missing or wrong' },
  FORBIDDEN: { status: 403, message: 'the request came from an untrusted page' },
  BAD_HOST: { status: 421, message: 'the request names the wrong host' },

  // ---- what the user typed or chose -----------------------------------------------------------
  BAD_NAME: { status: 400, message: 'not a valid filespace name' },
  BAD_BUCKET: { status: 400, message: 'not a valid S3 bucket name' },
  BAD_ENDPOINT: { status: 400, message: 'the endpoint is not an http(s) URL' },
  BAD_SIZE: { status: 400, message: 'not a valid size' },
  BAD_DURATION: { status: 400, message: 'not a valid duration' },
  BAD_SETTING: { status: 400, message: 'a setting is out of range' },
  BAD_CHUNK_SIZE: { status: 400, message: 'the chunk size must be a power of two between 64 KiB and 64 MiB' },
  BAD_INPUT: { status: 400, message: 'the input is not valid' },
  NOT_ABSOLUTE: { status: 400, message: 'the path must be a full path' },
  NO_MOUNT_POINT: { status: 400, message: 'the mount point does not exist' },
  NOT_A_DIRECTORY: { status: 400, message: 'the path is not a folder' },
  NOT_EMPTY: { status: 400, message: 'the folder is not empty' },
  BAD_MOUNT_POINT: { status: 400, message: 'the mount point may not be there' },
  BAD_CACHE_DIR: { status: 400, message: 'the cache folder may not be there' },
  CACHE_NOT_EMPTY: { status: 400, message: 'the cache folder is not empty' },
  CACHE_TOO_SMALL: { status: 400, message: 'the cache is too small for this filespace' },
  CACHE_TOO_BIG: { status: 400, message: 'the cache cap is larger than the free space on the cache disk' },
  UNKNOWN_NAME: { status: 400, message: 'no filespace of that name is linked on this machine' },
  AMBIGUOUS: { status: 400, message: 'several filespaces are linked; name one' },
  NOT_LINKED: { status: 400, message: 'the filespace is not linked on this machine' },
  EXISTS: { status: 400, message: 'it already exists' },
  WRONG_PASSPHRASE: { status: 400, message: 'wrong passphrase for this filespace' },
  WEAK_PASSPHRASE: { status: 400, message: 'the passphrase is too weak' },
  WRONG_RECOVERY_KEY: { status: 400, message: 'wrong recovery key for this filespace' },
  BAD_RECOVERY_KEY: { status: 400, message: 'not a recovery key (32 letters and digits in groups of four)' },
  NO_RECOVERY_KEY: { status: 400, message: 'this filespace has no recovery key' },
  NO_PASSPHRASE: { status: 400, message: 'the passphrase is missing' },
  PASSPHRASE_PERMS: { status: 400, message: 'the passphrase file is readable by other users' },
  PASSPHRASE_IN_KEYCHAIN: { status: 400, message: "the passphrase of this filespace is in the desktop app's keychain" },
  NO_KEYS: { status: 400, message: 'no AWS keys are stored yet' },

  // ---- the state of a filespace -----------------------------------------------------------------
  ALREADY_MOUNTED: { status: 409, message: 'the filespace is already mounted' },
  MOUNTED: { status: 409, message: 'the filespace is mounted; unmount it first' },
  NOT_MOUNTED: { status: 409, message: 'the filespace is not mounted' },
  BUSY: { status: 409, message: 'the filespace is in use' },
  DIRTY: { status: 409, message: 'changes are not yet in the bucket' },
  FLUSH_FAILED: { status: 409, message: 'the changes could not be saved to the cache' },
  READ_ONLY: { status: 409, message: 'the filespace is read-only on this machine' },
  NOT_WRITER: { status: 409, message: 'this machine does not hold the write lease' },
  NOT_WRITING: { status: 409, message: 'this machine stopped writing the filespace' },
  LEASE_HELD: { status: 409, message: 'another machine holds the write lease' },
  NO_CONDITIONAL_WRITES: { status: 409, message: 'the store ignores conditional writes, so only one machine may write' },
  SYNC_TIMEOUT: { status: 409, message: 'not everything was uploaded in time' },
  CHECK_FAILED: { status: 409, message: 'the check found problems' },
  TRANSFER_FAILED: { status: 409, message: 'some files were not copied' },
  MOUNT_FAILED: { status: 500, message: 'the mount failed' },
  MOUNT_TIMEOUT: { status: 500, message: 'mounting did not finish in time' },

  // ---- the bucket -------------------------------------------------------------------------------
  NO_SUCH_BUCKET: { status: 400, message: 'the bucket does not exist' },
  ACCESS_DENIED: { status: 400, message: 'the credentials lack a permission' },
  BAD_CREDENTIALS: { status: 400, message: 'S3 rejected the keys' },
  UNREACHABLE: { status: 502, message: 'the bucket cannot be reached' },
  STORE_ERROR: { status: 502, message: 'the bucket answered with an error' },
  NO_FILESPACE: { status: 400, message: 'there is no filespace at this bucket and prefix' },
  BAD_HEADER: { status: 400, message: 'the filespace header in the bucket is not valid' },
  HEADER_TAMPERED: { status: 400, message: 'the filespace header was changed by someone without the passphrase' },
  HEADER_MISMATCH: { status: 400, message: 'the filespace header does not match what this machine linked' },
  MISMATCH: { status: 400, message: 'the bucket holds another filespace than the one linked here' },
  BUCKET_METADATA_DAMAGED: { status: 409, message: 'metadata in the bucket is damaged' },
  METADATA_KEYS_MISMATCH: {
    status: 409,
    message: 'the metadata in the bucket was written with other keys than the header gives',
  },
  NEWER_VERSION: { status: 409, message: 'the filespace was written by a newer version of Filespace' },

  // ---- this machine -----------------------------------------------------------------------------
  JOURNAL_DAMAGED: { status: 409, message: 'the local metadata journal is damaged' },
  SNAPSHOT_DAMAGED: { status: 409, message: 'the local metadata snapshot is damaged' },
  BAD_CONFIG: { status: 400, message: 'a configuration file is damaged' },
  NO_FUSE: { status: 503, message: 'FUSE is not available on this machine' },
  KEYCHAIN: { status: 503, message: 'the OS keychain is not available' },

  // ---- between a client and its host --------------------------------------------------------------
  NOT_RUNNING: { status: 503, message: 'not mounted' },
  HOST_DOWN: { status: 503, message: 'the Filespace host is not answering' },
  NO_HOST: { status: 503, message: 'not connected to the app host' },
  NO_TOKEN: { status: 401, message: 'open this page through the link the app host printed (it carries the access token)' },
  TIMEOUT: { status: 504, message: 'the host did not answer in time' },
  BAD_RESPONSE: { status: 500, message: 'the host answered with data of the wrong shape' },
  INTERNAL: { status: 500, message: 'an unexpected error' },
} as const satisfies Record<string, ErrorKind>;

export type ErrorCode = keyof typeof ERRORS;

export const ERROR_CODES = Object.keys(ERRORS) as [ErrorCode, ...ErrorCode[]];

export function isErrorCode(x: unknown): x is ErrorCode {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(ERRORS, x);
}

/** An error as it crosses a boundary. */
export const errorSchema = z.object({ code: z.enum(ERROR_CODES), message: z.string() });
export type ErrorDto = z.infer<typeof errorSchema>;

/** The status an error travels with (HTTP, and the same number over IPC). */
export function httpStatusOf(code: ErrorCode): number {
  return ERRORS[code].status;
}
