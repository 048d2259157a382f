/**
 * How the UI treats each error the host can report. Every code of the contract's vocabulary
 * (electron/contract/errors.ts) is decided here, in one exhaustive switch: a code added to the
 * contract does not compile here until someone decides how the window shows it. Nothing in the
 * renderer reads an error's text to decide what to do.
 *
 * - 'in-use': a process holds the mount; the card asks whether to detach it anyway.
 * - 'expected': something the user can act on (what they typed, the bucket, this machine, the
 *   state of a filespace): a UI state, shown as the host said it.
 * - 'unexpected': a bug, or a host and window that disagree about the contract: shown too, and
 *   reported on the console with its code.
 */

import type { ErrorCode } from '../../electron/contract/errors';

export type ErrorTreatment = 'in-use' | 'expected' | 'unexpected';

export function assertNever(x: never): never {
  throw new Error(`unexpected value: ${JSON.stringify(x)}`);
}

export function treatmentOf(code: ErrorCode): ErrorTreatment {
  switch (code) {
    case 'BUSY':
      return 'in-use';

    // What the user typed or chose.
    case 'BAD_NAME':
    case 'BAD_BUCKET':
    case 'BAD_ENDPOINT':
    case 'BAD_SIZE':
    case 'BAD_DURATION':
    case 'BAD_SETTING':
    case 'BAD_CHUNK_SIZE':
    case 'BAD_INPUT':
    case 'NOT_ABSOLUTE':
    case 'NO_MOUNT_POINT':
    case 'NOT_A_DIRECTORY':
    case 'NOT_EMPTY':
    case 'BAD_MOUNT_POINT':
    case 'BAD_CACHE_DIR':
    case 'CACHE_NOT_EMPTY':
    case 'CACHE_TOO_SMALL':
    case 'CACHE_TOO_BIG':
    case 'UNKNOWN_NAME':
    case 'AMBIGUOUS':
    case 'NOT_LINKED':
    case 'EXISTS':
    case 'WRONG_PASSPHRASE':
    case 'WEAK_PASSPHRASE':
    case 'WRONG_RECOVERY_KEY':
    case 'BAD_RECOVERY_KEY':
    case 'NO_RECOVERY_KEY':
    case 'NO_PASSPHRASE':
    case 'PASSPHRASE_PERMS':
    case 'PASSPHRASE_IN_KEYCHAIN':
    case 'NO_KEYS':
    // The state of a filespace.
    case 'ALREADY_MOUNTED':
    case 'MOUNTED':
    case 'NOT_MOUNTED':
    case 'DIRTY':
    case 'FLUSH_FAILED':
    case 'READ_ONLY':
    case 'NOT_WRITER':
    case 'NOT_WRITING':
    case 'LEASE_HELD':
    case 'NO_CONDITIONAL_WRITES':
    case 'SYNC_TIMEOUT':
    case 'CHECK_FAILED':
    case 'TRANSFER_FAILED':
    case 'MOUNT_FAILED':
    case 'MOUNT_TIMEOUT':
    // The bucket.
    case 'NO_SUCH_BUCKET':
    case 'ACCESS_DENIED':
    case 'BAD_CREDENTIALS':
    case 'UNREACHABLE':
    case 'STORE_ERROR':
    case 'NO_FILESPACE':
    case 'BAD_HEADER':
    case 'HEADER_TAMPERED':
    case 'HEADER_MISMATCH':
    case 'MISMATCH':
    case 'BUCKET_METADATA_DAMAGED':
    case 'METADATA_KEYS_MISMATCH':
    case 'NEWER_VERSION':
    // This machine, and the way to the host.
    case 'JOURNAL_DAMAGED':
    case 'SNAPSHOT_DAMAGED':
    case 'BAD_CONFIG':
    case 'NO_FUSE':
    case 'KEYCHAIN':
    case 'NOT_RUNNING':
    case 'HOST_DOWN':
    case 'NO_HOST':
    case 'NO_TOKEN':
    case 'TIMEOUT':
      return 'expected';

    // The window sent what the host does not take, or the host answered what the window cannot read.
    case 'INVALID':
    case 'BAD_JSON':
    case 'TOO_LARGE':
    case 'NOT_FOUND':
    case 'METHOD':
    case 'UNAUTHORIZED':
    case 'FORBIDDEN':
    case 'BAD_HOST':
    case 'BAD_RESPONSE':
    case 'INTERNAL':
      return 'unexpected';

    default:
      return assertNever(code);
  }
}
