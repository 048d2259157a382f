/**
 * ObjectStore: the one seam between the engine and the bucket.
 *
 * Every byte the engine keeps remotely goes through this interface, so the S3 client, the
 * embedded local-disk store used by the demo, the in-memory store used by unit tests and any
 * fault-injecting wrapper are interchangeable. Keys are relative to the filespace's root
 * (the implementation adds its own bucket/prefix).
 *
 * Semantics every implementation must honour (the conformance suite pins them down):
 * - `get` of a missing key resolves to `undefined` (a miss is not an error).
 * - `put` with `ifNoneMatch: '*'` fails with StoreError code 'PreconditionFailed' when the key
 *   exists; with `ifMatch: etag` it fails the same way when the current ETag differs or the
 *   key is missing. Both checks are atomic with the write.
 * - `list` returns every key under the prefix, sorted, following continuation internally.
 * - `deleteMany` ignores keys that do not exist.
 * - `put` is done with `body` once it resolves: the caller may then reuse that memory (a store
 *   that keeps the bytes keeps its own copy). After a failed `put` there is no such promise.
 * - A call given an AbortSignal that fires stops waiting for the bucket and fails with a
 *   StoreError (code 'Timeout'); what it did in the bucket by then is undefined, as with any
 *   failed request. Stores that answer at once (memory, local disk) may ignore the signal.
 */

export type StoreErrorCode =
  | 'PreconditionFailed'
  | 'NoSuchBucket'
  | 'AccessDenied'
  | 'InvalidCredentials'
  | 'Unreachable'
  | 'Timeout'
  | 'Throttled'
  | 'ServerError'
  | 'Corrupt'
  | 'Other';

export class StoreError extends Error {
  constructor(
    readonly code: StoreErrorCode,
    message: string,
    /** The S3 action that was attempted, e.g. 's3:PutObject'; used to name a missing permission. */
    readonly action?: string,
  ) {
    super(message);
    this.name = 'StoreError';
  }

  /** The bucket gave no answer (connection refused, reset or unanswered): nothing to do but wait for it. */
  get noAnswer(): boolean {
    return this.code === 'Unreachable' || this.code === 'Timeout';
  }

  /** Errors worth retrying: the same request may succeed later. */
  get retryable(): boolean {
    return (
      this.code === 'Unreachable' ||
      this.code === 'Timeout' ||
      this.code === 'Throttled' ||
      this.code === 'ServerError' ||
      this.code === 'Corrupt'
    );
  }
}

/** True when `err` says the bucket did not answer at all (as opposed to an answer that is an error). */
export function isNoAnswer(err: unknown): boolean {
  return err instanceof StoreError && err.noAnswer;
}

export interface CallOptions {
  /** Stops waiting for the bucket when it fires (see the semantics above). */
  readonly signal?: AbortSignal;
}

export interface GetOptions extends CallOptions {
  /**
   * A buffer the caller owns to receive the body, when it fits: the result's body is then a
   * view of it (stores that cannot fill it return a buffer of their own, which is as good).
   * The caller must not reuse it while the call may still write into it: after a failed or
   * abandoned call, never (see BufferPool.discard).
   */
  readonly into?: Buffer;
}

export interface PutOptions extends CallOptions {
  /** '*' = create only if absent. */
  readonly ifNoneMatch?: '*';
  /** Replace only if the current ETag is this one. */
  readonly ifMatch?: string;
  /**
   * CRC32 of the body, computed by the caller as it wrote the body. A store whose bucket can
   * verify it sends it along (S3: `x-amz-checksum-crc32`), so the body is checked where it lands
   * without another pass over it here; the others ignore it.
   */
  readonly crc32?: number;
}

export interface GetResult {
  readonly body: Buffer;
  readonly etag: string;
}

export interface HeadResult {
  readonly size: number;
  readonly etag: string;
}

export interface ObjectStore {
  /** Human-readable location, e.g. `s3://bucket/prefix` (never contains secrets). */
  readonly description: string;
  get(key: string, range?: { readonly start: number; readonly end: number }, call?: GetOptions): Promise<GetResult | undefined>;
  head(key: string, call?: CallOptions): Promise<HeadResult | undefined>;
  /** Resolves to the new ETag. */
  put(key: string, body: Buffer, options?: PutOptions): Promise<string>;
  delete(key: string, call?: CallOptions): Promise<void>;
  deleteMany(keys: readonly string[], call?: CallOptions): Promise<void>;
  list(prefix: string, call?: CallOptions): Promise<string[]>;
  /** Releases sockets/handles. */
  close(): Promise<void>;
}
