/**
 * Errors above the engine, and the one translation of anything thrown into the contract's
 * `{code, message}` (electron/contract/errors.ts). Both servers use it: the control socket of
 * a mount (control.ts, for the `filespace` command) and the app contract (dispatch.ts, for the
 * renderer over IPC or loopback HTTP).
 *
 * HostError is what the host library, the command and the app throw for something the user
 * can act on; the engine throws its own UserError, whose codes are a subset of the contract's
 * (checked at compile time below: the engine cannot import the contract). Filesystem-adapter,
 * store and keychain errors are translated by kind; anything else is unexpected: reported as
 * INTERNAL and logged with its stack.
 */

import { ERRORS, ErrorCode, ErrorDto, httpStatusOf } from '../contract/errors';
import { EngineErrorCode, UserError } from '../engine/errors';
import { StoreError, StoreErrorCode } from '../engine/store/types';
import { FuseError } from '../../native/fuse/adapter';
import { KeychainError } from '../../native/keychain';

/** Compile-time check: every code the engine throws is a code of the contract. */
type NotContractCodes = Exclude<EngineErrorCode, ErrorCode>;
export const ENGINE_CODES_ARE_CONTRACT_CODES: [NotContractCodes] extends [never] ? true : never = true;

/** An error a host reports to its user: a code of the contract and a specific message. */
export class HostError extends Error {
  constructor(
    message: string,
    readonly code: ErrorCode,
  ) {
    super(message);
    this.name = 'HostError';
  }

  /** An error that says no more than the contract's message for its code. */
  static of(code: ErrorCode): HostError {
    return new HostError(ERRORS[code].message, code);
  }
}

/** An error the user can act on (printed as one line, no stack). */
export function isUserFacing(err: unknown): err is UserError | HostError {
  return err instanceof UserError || err instanceof HostError;
}

const STORE_CODES: Readonly<Partial<Record<StoreErrorCode, ErrorCode>>> = {
  NoSuchBucket: 'NO_SUCH_BUCKET',
  AccessDenied: 'ACCESS_DENIED',
  InvalidCredentials: 'BAD_CREDENTIALS',
  Unreachable: 'UNREACHABLE',
  Timeout: 'UNREACHABLE',
};

const FUSE_CODES: Readonly<Record<FuseError['code'], ErrorCode>> = {
  BUSY: 'BUSY',
  NOT_MOUNTED: 'NOT_MOUNTED',
  FAILED: 'MOUNT_FAILED',
};

/** The contract's form of a thrown value; undefined when it is unexpected (a bug). */
export function expectedError(err: unknown): ErrorDto | undefined {
  if (err instanceof HostError || err instanceof UserError) return { code: err.code, message: err.message };
  if (err instanceof StoreError) return { code: STORE_CODES[err.code] ?? 'STORE_ERROR', message: err.message };
  if (err instanceof FuseError) return { code: FUSE_CODES[err.code], message: err.message };
  if (err instanceof KeychainError) return { code: 'KEYCHAIN', message: err.message };
  return undefined;
}

/** A failure as it leaves a server: the status it travels with and `{code, message}`. */
export interface Failure {
  readonly status: number;
  readonly error: ErrorDto;
}

export function failureOf(error: ErrorDto): Failure {
  return { status: httpStatusOf(error.code), error };
}

/** Translates anything thrown; an unexpected error is logged with its stack and sent as INTERNAL. */
export function toFailure(err: unknown, log: (msg: string) => void): Failure {
  const expected = expectedError(err);
  if (expected) return failureOf(expected);
  log(`internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return failureOf({ code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) });
}
