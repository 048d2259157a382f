/**
 * The engine's errors as data, in two kinds.
 *
 * FsError: a filesystem error with a POSIX errno name, thrown by the VFS; each mount adapter
 * (FUSE today, native/fuse/adapter.ts) translates it exactly once. Anything else thrown inside
 * an operation is a bug or an I/O failure and surfaces as EIO.
 *
 * UserError: something the user can fix (a wrong passphrase, a missing bucket, a setting out
 * of range), with a code from the closed list below. The hosts send these codes on as they are:
 * each one is also a code of the contract's error vocabulary (electron/contract/errors.ts,
 * checked at compile time in electron/host/errors.ts, since the engine imports nothing above it).
 */

export type Errno =
  | 'EPERM'
  | 'ENOENT'
  | 'EIO'
  | 'ENXIO'
  | 'EBADF'
  | 'EACCES'
  | 'EEXIST'
  | 'EXDEV'
  | 'ENOTDIR'
  | 'EISDIR'
  | 'EINVAL'
  | 'EFBIG'
  | 'ENOSPC'
  | 'EROFS'
  | 'ENAMETOOLONG'
  | 'ENOSYS'
  | 'ENOTEMPTY'
  | 'ELOOP'
  | 'ENODATA'
  | 'ERANGE'
  | 'ENOTSUP'
  | 'EBUSY'
  | 'EAGAIN'
  | 'E2BIG';

export class FsError extends Error {
  constructor(
    readonly errno: Errno,
    message?: string,
  ) {
    // An answer, not a fault: no stack trace (ENOENT on every lookup of a new name and
    // ENODATA on the kernel's xattr check before every write made it a cost per request).
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message ?? errno);
    Error.stackTraceLimit = limit;
    this.name = 'FsError';
  }
}

/** The codes of the engine's user errors. */
export const ENGINE_ERROR_CODES = [
  'BAD_SETTING',
  'BAD_CHUNK_SIZE',
  'BAD_INPUT',
  'NOT_FOUND',
  'NOT_EMPTY',
  'EXISTS',
  'NOT_LINKED',
  'CACHE_TOO_SMALL',
  'WRONG_PASSPHRASE',
  'WEAK_PASSPHRASE',
  'WRONG_RECOVERY_KEY',
  'BAD_RECOVERY_KEY',
  'NO_RECOVERY_KEY',
  'BUSY',
  'READ_ONLY',
  'NOT_WRITER',
  'LEASE_HELD',
  'NO_CONDITIONAL_WRITES',
  'NO_SUCH_BUCKET',
  'ACCESS_DENIED',
  'BAD_CREDENTIALS',
  'UNREACHABLE',
  'STORE_ERROR',
  'NO_FILESPACE',
  'BAD_HEADER',
  'HEADER_TAMPERED',
  'HEADER_MISMATCH',
  'MISMATCH',
  'JOURNAL_DAMAGED',
  'SNAPSHOT_DAMAGED',
  'BUCKET_METADATA_DAMAGED',
  'METADATA_KEYS_MISMATCH',
  'NEWER_VERSION',
] as const;
export type EngineErrorCode = (typeof ENGINE_ERROR_CODES)[number];

/** Errors a user caused: printed as one line, exit code 1, no stack. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly code: EngineErrorCode,
  ) {
    super(message);
    this.name = 'UserError';
  }
}
