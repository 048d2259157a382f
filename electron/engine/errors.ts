/**
 * Filesystem errors as data. The VFS throws FsError with a POSIX errno name; each host adapter
 * (FUSE today) translates it exactly once. Anything else thrown inside an operation is a bug or
 * an I/O failure and surfaces as EIO.
 */

export type Errno =
  | 'EPERM' | 'ENOENT' | 'EIO' | 'EBADF' | 'EACCES' | 'EEXIST' | 'EXDEV' | 'ENOTDIR' | 'EISDIR'
  | 'EINVAL' | 'EFBIG' | 'ENOSPC' | 'EROFS' | 'ENAMETOOLONG' | 'ENOSYS' | 'ENOTEMPTY' | 'ELOOP'
  | 'ENODATA' | 'ERANGE' | 'ENOTSUP' | 'EBUSY' | 'EAGAIN' | 'E2BIG';

export const ERRNO_NUMBERS: Readonly<Record<Errno, number>> = {
  EPERM: 1, ENOENT: 2, EIO: 5, EBADF: 9, EAGAIN: 11, EACCES: 13, EBUSY: 16, EEXIST: 17, EXDEV: 18,
  ENOTDIR: 20, EISDIR: 21, EINVAL: 22, EFBIG: 27, ENOSPC: 28, EROFS: 30, ERANGE: 34,
  ENAMETOOLONG: 36, ENOSYS: 38, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, ENOTSUP: 95, E2BIG: 7,
};

export class FsError extends Error {
  constructor(readonly errno: Errno, message?: string) {
    super(message ?? errno);
    this.name = 'FsError';
  }
}

/** Maps any thrown value to an errno name: FsError keeps its own, Node I/O errors keep theirs. */
export function toErrno(err: unknown): Errno {
  if (err instanceof FsError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return 'ENOSPC';
  if (code === 'EROFS') return 'EROFS';
  return 'EIO';
}

/** Errors a user caused: printed as one line, exit code 1, no stack. */
export class UserError extends Error {
  constructor(message: string, readonly code: string = 'USER_ERROR') {
    super(message);
    this.name = 'UserError';
  }
}

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}
