/**
 * S3Store: the ObjectStore backed by a real S3 (or S3-compatible) bucket.
 *
 * Owns everything that is specific to talking to S3: the HTTP client (keep-alive sockets,
 * connect/request/idle timeouts, the SDK's retry with backoff), the mapping from the
 * filespace's relative keys to `prefix/key` in the bucket, conditional writes
 * (If-None-Match / If-Match) and the translation of every SDK, HTTP and socket failure into
 * a StoreError whose code the engine can act on and whose message a user can read. Nothing
 * above this module ever sees an SDK error or a credential. A caller's AbortSignal goes to the
 * SDK (which then stops its retries too) and fails the call with code 'Timeout'.
 *
 * Checksums of PUT bodies (a decision, and why). By default the pinned SDK reads every PUT body
 * twice before sending it: a CRC32 for `x-amz-checksum-crc32` (requestChecksumCalculation
 * WHEN_SUPPORTED), and a SHA-256 for SigV4's `x-amz-content-sha256`. For a chunk those are two
 * more passes over 4 MiB on the engine's one JS thread, for an object that is already sealed
 * with AES-GCM (any changed byte fails authentication when it is read: chunk/format.ts). What
 * that tag cannot do is refuse a body damaged on its way in before the local copy is given up,
 * so an integrity check the bucket verifies at the PUT is kept, computed once: the caller passes
 * the CRC32 it computed while sealing (`PutOptions.crc32`), it goes as `x-amz-checksum-crc32`
 * (signed, as every header), S3 recomputes it and refuses the PUT on a mismatch (BadDigest,
 * retried), and the SDK, finding the header, computes none. Such a PUT is signed with
 * `UNSIGNED-PAYLOAD` (the SDK does the same for any streamed body), so the SHA-256 pass goes
 * too: over HTTPS, TLS protects the body in transit; over plain HTTP (a local S3-compatible
 * server) the signed CRC32 still catches damage, which is all the SHA-256 added for a body the
 * engine authenticates itself. PUTs without a caller's CRC32 (metadata, lease, GC marks: small)
 * keep the SDK's defaults. For the same reason GET responses are not checked against a stored
 * checksum (responseChecksumValidation WHEN_REQUIRED): everything the engine reads back is
 * authenticated by its own seal, and the check would cost a pass over every chunk read.
 *
 * Chunk PUTs (those with a caller's CRC32) skip the SDK (s3direct.ts): signed with the same
 * credentials and sent over the same sockets with the same timeouts, retries and error mapping,
 * at about a fifth of the engine-thread CPU per PUT (test/bench/putcost.ts: 4 KiB PUTs to the
 * benchmark's s3rver, median of 3 rounds, SDK 1,237 µs, direct 263 µs). So do chunk GETs (whole
 * objects the caller gives a buffer for, `GetOptions.into`, and ranges of chunks), over
 * keep-alive connections of their own (getclient.ts, bounded like the agents, with their TLS
 * options) whose sockets read the body straight into that buffer: no Buffer per socket read,
 * no copy. A bucket that needs more than plain SigV4 (S3 Express) keeps the SDK for them; so
 * does `directPut: false`.
 */

import * as http from 'node:http';
import * as https from 'node:https';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { DirectPut, THROTTLING_CODES } from './s3direct';
import { CallOptions, GetOptions, GetResult, HeadResult, ObjectStore, PutOptions, StoreError, StoreErrorCode } from './types';

export interface S3Credentials {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface S3StoreOptions {
  readonly bucket: string;
  /** Folder inside the bucket that holds the filespace; leading/trailing slashes are ignored. */
  readonly prefix?: string;
  /** Defaults to the SDK's region chain (AWS_REGION, profile); 'us-east-1' for custom endpoints. */
  readonly region?: string;
  /** S3-compatible endpoint URL, e.g. `http://127.0.0.1:9000`. */
  readonly endpoint?: string;
  readonly pathStyle?: boolean;
  /** Time to first response byte, and the longest a socket may sit idle mid-transfer. */
  readonly requestTimeoutMs?: number;
  readonly connectTimeoutMs?: number;
  /** Total attempts per request, including the first (the SDK retries with backoff). */
  readonly maxAttempts?: number;
  /** Defaults to the SDK's standard provider chain (env, profile, SSO, instance role). */
  readonly credentials?: S3Credentials;
  /** false: chunk PUTs go through the SDK too (default: straight over HTTP, s3direct.ts). */
  readonly directPut?: boolean;
}

const DELETE_BATCH = 1000;
const MAX_SOCKETS = 32;

export class S3Store implements ObjectStore {
  readonly description: string;
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly client: S3Client;
  /** Chunk PUTs (those with a caller's CRC32) go this way when the bucket allows (s3direct.ts). */
  private readonly direct: DirectPut | undefined;
  private closed = false;

  constructor(options: S3StoreOptions) {
    if (!options.bucket) throw new StoreError('Other', 'S3 bucket name is empty');
    this.bucket = options.bucket;
    this.prefix = normalizePrefix(options.prefix ?? '');
    const endpoint = options.endpoint ? safeEndpoint(options.endpoint) : undefined;
    this.description = `s3://${this.bucket}${this.prefix ? `/${this.prefix}` : ''}` + (endpoint ? ` at ${endpoint}` : '');

    const requestTimeout = options.requestTimeoutMs ?? 30_000;
    const connectionTimeout = options.connectTimeoutMs ?? 5_000;
    const agentOptions = { keepAlive: true, maxSockets: MAX_SOCKETS };
    const httpAgent = new http.Agent(agentOptions);
    const httpsAgent = new https.Agent(agentOptions);
    const maxAttempts = options.maxAttempts ?? 5;
    const region = options.region ?? (options.endpoint ? process.env.AWS_REGION || 'us-east-1' : undefined);

    this.client = new S3Client({
      region,
      endpoint: options.endpoint,
      forcePathStyle: options.pathStyle ?? false,
      credentials: options.credentials
        ? {
            accessKeyId: options.credentials.accessKeyId,
            secretAccessKey: options.credentials.secretAccessKey,
            sessionToken: options.credentials.sessionToken,
          }
        : undefined,
      maxAttempts,
      retryMode: 'standard',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        httpAgent,
        httpsAgent,
        connectionTimeout,
        requestTimeout,
        throwOnRequestTimeout: true,
        // Idle timeout: also catches a body that stalls after the headers arrived.
        socketTimeout: requestTimeout,
      }),
    });
    this.direct =
      options.directPut === false
        ? undefined
        : new DirectPut({
            client: this.client,
            bucket: this.bucket,
            httpAgent,
            httpsAgent,
            connectTimeoutMs: connectionTimeout,
            requestTimeoutMs: requestTimeout,
            maxAttempts,
          });
  }

  async get(
    key: string,
    range?: { readonly start: number; readonly end: number },
    call?: GetOptions,
  ): Promise<GetResult | undefined> {
    if (range) checkRange(range);
    const Key = this.fullKey(key);
    try {
      if ((range || call?.into) && this.direct && (await this.direct.usable())) {
        const got = await this.direct.get({ key: Key, into: call?.into, range, signal: call?.signal });
        if (got.length !== undefined && got.length !== got.body.length) {
          throw new StoreError('Corrupt', `S3 returned ${got.body.length} of ${got.length} bytes for ${this.where(Key)}`);
        }
        return { body: range ? rangeOf(got.body, got.from, range) : got.body, etag: unquote(got.etag) };
      }
      const res = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key,
          Range: range ? `bytes=${range.start}-${range.end}` : undefined,
        }),
        { abortSignal: call?.signal },
      );
      const body = await readBody(res.Body, res.ContentLength, call?.into);
      if (res.ContentLength !== undefined && res.ContentLength !== body.length) {
        throw new StoreError('Corrupt', `S3 returned ${body.length} of ${res.ContentLength} bytes for ${this.where(Key)}`);
      }
      return { body, etag: unquote(res.ETag ?? '') };
    } catch (err) {
      checkAborted(call, 's3:GetObject', this.where(Key));
      if (isNotFound(err)) return undefined;
      if (range && httpStatus(err) === 416) {
        // The range starts at or past the end of the object (or the object is empty):
        // a ranged read past EOF yields no bytes, as it does from a file.
        const head = await this.head(key, call);
        return head ? { body: Buffer.alloc(0), etag: head.etag } : undefined;
      }
      throw toStoreError(err, 's3:GetObject', this.where(Key));
    }
  }

  async head(key: string, call?: CallOptions): Promise<HeadResult | undefined> {
    const Key = this.fullKey(key);
    try {
      const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: call?.signal });
      return { size: res.ContentLength ?? 0, etag: unquote(res.ETag ?? '') };
    } catch (err) {
      checkAborted(call, 's3:GetObject', this.where(Key));
      // HEAD responses have no body, so a missing bucket also looks like a plain 404 here.
      if (isNotFound(err)) return undefined;
      throw toStoreError(err, 's3:GetObject', this.where(Key));
    }
  }

  /**
   * Note on retries: if a conditional PUT reaches S3 but its response is lost, the SDK's retry
   * of the same request fails with PreconditionFailed although this writer's bytes are in
   * place. Callers that race for a key (the write lease) read it back to tell the two apart.
   */
  async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    const Key = this.fullKey(key);
    try {
      if (options?.crc32 !== undefined && this.direct && (await this.direct.usable())) {
        const etag = await this.direct.put({
          key: Key,
          body,
          crc32Header: crc32Header(options.crc32),
          ifNoneMatch: options.ifNoneMatch,
          ifMatch: options.ifMatch !== undefined ? quote(options.ifMatch) : undefined,
          signal: options.signal,
        });
        if (etag) return unquote(etag);
        const head = await this.head(key, options);
        if (!head) throw new StoreError('ServerError', `S3 accepted ${this.where(Key)} but it cannot be found`);
        return head.etag;
      }
      const command = new PutObjectCommand({
        Bucket: this.bucket,
        Key,
        Body: body,
        ContentLength: body.length,
        IfNoneMatch: options?.ifNoneMatch,
        IfMatch: options?.ifMatch !== undefined ? quote(options.ifMatch) : undefined,
        // The caller's CRC32 (see the header): the bucket verifies it, the SDK computes none.
        ChecksumCRC32: options?.crc32 !== undefined ? crc32Header(options.crc32) : undefined,
      });
      if (options?.crc32 !== undefined) {
        // Signed without a hash of the body (`UNSIGNED-PAYLOAD`), set before signing so the
        // signer does not read the body (see the header).
        command.middlewareStack.add(
          (next) => (args) => {
            const request = args.request as { headers?: Record<string, string> };
            if (request.headers) request.headers['x-amz-content-sha256'] = 'UNSIGNED-PAYLOAD';
            return next(args);
          },
          { step: 'build', name: 'filespaceUnsignedPayload' },
        );
      }
      const res = await this.client.send(command, { abortSignal: options?.signal });
      if (res.ETag) return unquote(res.ETag);
      const head = await this.head(key, options);
      if (!head) throw new StoreError('ServerError', `S3 accepted ${this.where(Key)} but it cannot be found`);
      return head.etag;
    } catch (err) {
      checkAborted(options, 's3:PutObject', this.where(Key));
      // S3 answers If-Match on a missing key with 404 NoSuchKey: the condition failed.
      if (options?.ifMatch !== undefined && isNotFound(err)) {
        throw new StoreError('PreconditionFailed', `conditional write to ${this.where(Key)} failed: the object does not exist`);
      }
      throw toStoreError(err, 's3:PutObject', this.where(Key));
    }
  }

  async delete(key: string, call?: CallOptions): Promise<void> {
    const Key = this.fullKey(key);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key }), { abortSignal: call?.signal });
    } catch (err) {
      checkAborted(call, 's3:DeleteObject', this.where(Key));
      if (isNotFound(err)) return;
      throw toStoreError(err, 's3:DeleteObject', this.where(Key));
    }
  }

  async deleteMany(keys: readonly string[], call?: CallOptions): Promise<void> {
    const unique = [...new Set(keys)].map((k) => this.fullKey(k));
    for (let i = 0; i < unique.length; i += DELETE_BATCH) {
      const batch = unique.slice(i, i + DELETE_BATCH);
      let errors: Array<{ Key?: string; Code?: string; Message?: string }>;
      try {
        const res = await this.client.send(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
          }),
          { abortSignal: call?.signal },
        );
        errors = res.Errors ?? [];
      } catch (err) {
        checkAborted(call, 's3:DeleteObject', this.where(batch[0]!));
        throw toStoreError(err, 's3:DeleteObject', this.where(batch[0]!));
      }
      const real = errors.filter((e) => e.Code !== 'NoSuchKey');
      if (real.length > 0) {
        const first = real[0]!;
        const mapped = toStoreError(
          { name: first.Code ?? 'Unknown', Code: first.Code, message: first.Message ?? '' },
          's3:DeleteObject',
          this.where(first.Key ?? batch[0]!),
        );
        throw new StoreError(
          mapped.code,
          `${real.length} of ${batch.length} deletes failed; first: ${mapped.message}`,
          mapped.action,
        );
      }
    }
  }

  async list(prefix: string, call?: CallOptions): Promise<string[]> {
    const base = this.prefix ? `${this.prefix}/` : '';
    const keys: string[] = [];
    let token: string | undefined;
    let startAfter: string | undefined;
    for (;;) {
      let res;
      try {
        res = await this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: base + prefix,
            ContinuationToken: token,
            StartAfter: token ? undefined : startAfter,
          }),
          { abortSignal: call?.signal },
        );
      } catch (err) {
        checkAborted(call, 's3:ListBucket', this.where(base + prefix));
        throw toStoreError(err, 's3:ListBucket', this.where(base + prefix));
      }
      let last: string | undefined;
      for (const obj of res.Contents ?? []) {
        if (obj.Key === undefined) continue;
        last = obj.Key;
        if (obj.Key.startsWith(base)) keys.push(obj.Key.slice(base.length));
      }
      if (!res.IsTruncated) break;
      if (res.NextContinuationToken) {
        token = res.NextContinuationToken;
      } else if (last !== undefined) {
        // Some S3-compatible servers truncate without a token: resume after the last key.
        token = undefined;
        startAfter = last;
      } else {
        throw new StoreError('ServerError', `S3 returned a truncated, empty listing for ${this.where(base + prefix)}`);
      }
    }
    return keys.sort();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.direct?.close();
    this.client.destroy();
  }

  private fullKey(key: string): string {
    if (!key) throw new StoreError('Other', 'object key is empty');
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  private where(fullKey: string): string {
    return `s3://${this.bucket}/${fullKey}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Error mapping

const CREDENTIAL_CODES = new Set([
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'ExpiredTokenException',
  'InvalidToken',
  'TokenRefreshRequired',
  'InvalidClientTokenId',
  'UnrecognizedClientException',
  'CredentialsProviderError',
]);
const UNREACHABLE_ERRNOS = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'ECONNRESET',
  'EPIPE',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'EAI_AGAIN',
  'ECONNABORTED',
  'EPROTO',
  'ERR_SOCKET_CLOSED',
]);
const TIMEOUT_CODES = new Set(['TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'ETIMEDOUT']);

interface ErrorShape {
  name?: unknown;
  code?: unknown;
  Code?: unknown;
  message?: unknown;
  errors?: unknown;
  cause?: unknown;
  $metadata?: { httpStatusCode?: number };
}

/**
 * Translates anything the SDK (or the socket underneath it) throws into a StoreError.
 * `action` is the IAM action the request needed, named in AccessDenied errors; `where` is the
 * `s3://bucket/key` the request addressed. Messages are one line and carry no secrets.
 */
export function toStoreError(err: unknown, action: string, where: string): StoreError {
  if (err instanceof StoreError) return err;
  const e = (err ?? {}) as ErrorShape;
  const name = typeof e.name === 'string' ? e.name : '';
  const message = typeof e.message === 'string' ? e.message : '';
  const code = typeof e.Code === 'string' ? e.Code : name;
  const errno = socketErrno(err);
  const status = httpStatus(err);
  const detail = [code || errno, status ? `HTTP ${status}` : ''].filter(Boolean).join(', ');
  const suffix = `(${action} ${where}${detail ? `; ${detail}` : ''})`;
  const make = (c: StoreErrorCode, what: string, withAction = false) =>
    new StoreError(c, oneLine(`${what} ${suffix}`), withAction ? action : undefined);

  if (code === 'PreconditionFailed' || status === 412 || code === 'ConditionalRequestConflict') {
    return make('PreconditionFailed', 'conditional write failed: the object changed or already exists');
  }
  if (code === 'BadDigest' || code === 'XAmzContentChecksumMismatch') {
    // The bucket computed another checksum than the one sent: the body was damaged on its way.
    return make('Corrupt', 'the bucket received the object damaged (its checksum did not match); it is sent again');
  }
  if (code === 'NoSuchBucket') {
    return make('NoSuchBucket', `the bucket ${bucketOf(where)} does not exist`);
  }
  if (CREDENTIAL_CODES.has(code) || name === 'CredentialsProviderError') {
    if (name === 'CredentialsProviderError') {
      return new StoreError('InvalidCredentials', oneLine(`no usable AWS credentials: ${redact(message)} ${suffix}`));
    }
    return make('InvalidCredentials', 'S3 rejected the AWS credentials (wrong key, secret or expired token)');
  }
  if (code === 'AccessDenied' || code === 'AllAccessDisabled' || code === 'Forbidden' || status === 403) {
    return make('AccessDenied', `access denied: the credentials lack permission ${action}`, true);
  }
  if (THROTTLING_CODES.has(code) || status === 429) {
    return make('Throttled', 'S3 is throttling requests; slow down and retry');
  }
  // Checked before the timeout names: the HTTP handler renames ECONNRESET/EPIPE to TimeoutError.
  if (errno && UNREACHABLE_ERRNOS.has(errno)) {
    return make('Unreachable', `cannot reach the S3 endpoint (${errno})`);
  }
  if (/socket hang up/i.test(message)) {
    return make('Unreachable', 'the S3 endpoint closed the connection');
  }
  if (TIMEOUT_CODES.has(code) || (errno !== undefined && TIMEOUT_CODES.has(errno))) {
    return make('Timeout', 'the S3 request timed out');
  }
  const rawCode = typeof e.code === 'string' ? e.code : '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(rawCode)) {
    return new StoreError('Other', oneLine(`the S3 endpoint's TLS certificate is not trusted (${rawCode}) ${suffix}`));
  }
  if (code === 'NotImplemented' || status === 501) {
    // Not transient: e.g. an S3-compatible server without conditional writes.
    return make('Other', 'the S3 server does not implement this request');
  }
  if (status !== undefined && status >= 500) {
    return make('ServerError', 'S3 reported a server error; retry later');
  }
  if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || status === 301) {
    return make('Other', 'the bucket is in a different region than the one configured');
  }
  if (code === 'RequestTimeTooSkewed') {
    return make('Other', "this computer's clock is too far off for S3 to accept requests");
  }
  const msg = redact(message) || 'unknown error';
  return make('Other', `S3 request failed: ${msg}`);
}

/** A call whose caller gave up fails as a timeout, whatever the SDK reported on the way out. */
function checkAborted(call: CallOptions | undefined, action: string, where: string): void {
  if (call?.signal?.aborted)
    throw new StoreError('Timeout', oneLine(`the S3 request was abandoned before it was answered (${action} ${where})`));
}

function socketErrno(err: unknown): string | undefined {
  const seen = new Set<unknown>();
  let cur: unknown = err;
  while (cur && typeof cur === 'object' && !seen.has(cur)) {
    seen.add(cur);
    const e = cur as ErrorShape;
    if (typeof e.code === 'string' && /^E[A-Z_]+$/.test(e.code)) return e.code;
    // Node's happy-eyeballs connect reports an AggregateError of per-address failures.
    if (Array.isArray(e.errors) && e.errors.length > 0) {
      const inner = socketErrno(e.errors[0]);
      if (inner) return inner;
    }
    cur = e.cause;
  }
  return undefined;
}

function httpStatus(err: unknown): number | undefined {
  const s = (err as ErrorShape | null)?.$metadata?.httpStatusCode;
  return typeof s === 'number' ? s : undefined;
}

function isNotFound(err: unknown): boolean {
  const e = (err ?? {}) as ErrorShape;
  const code = typeof e.Code === 'string' ? e.Code : e.name;
  if (code === 'NoSuchBucket') return false;
  return code === 'NoSuchKey' || code === 'NotFound' || httpStatus(err) === 404;
}

function bucketOf(where: string): string {
  return where.replace(/^s3:\/\//, '').split('/')[0] ?? where;
}

/** One line, bounded in length. */
function oneLine(s: string): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > 400 ? `${flat.slice(0, 397)}...` : flat;
}

/** Strips anything shaped like an access key ID, secret key or session token. */
function redact(s: string): string {
  return oneLine(s.replace(/\b(AKIA|ASIA)[A-Z0-9]{12,}\b/g, '[access key]').replace(/[A-Za-z0-9/+=_-]{32,}/g, '[redacted]'));
}

// ---------------------------------------------------------------------------------------------
// Helpers

function normalizePrefix(prefix: string): string {
  return prefix.replace(/^\/+|\/+$/g, '');
}

/** The endpoint as shown to users: no user-info, no query. */
function safeEndpoint(endpoint: string): string {
  try {
    const u = new URL(endpoint);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid endpoint URL)';
  }
}

/**
 * Bytes start..end of an object out of `body`, the part of it that starts at byte `from` (the
 * answer to a ranged GET: just the range, clamped at the object's end, or the whole object from
 * a server that ignores Range). Nothing past the object's end, as a file read gives.
 */
function rangeOf(body: Buffer, from: number, range: { readonly start: number; readonly end: number }): Buffer {
  if (range.start < from) throw new StoreError('Corrupt', `S3 answered a read from byte ${range.start} with bytes from ${from}`);
  return body.subarray(range.start - from, Math.min(body.length, range.end + 1 - from));
}

function checkRange(range: { readonly start: number; readonly end: number }): void {
  const { start, end } = range;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
    throw new StoreError('Other', `invalid byte range ${start}-${end}`);
  }
}

/** A CRC32 as S3's `x-amz-checksum-crc32` carries it: base64 of the 4 big-endian bytes. */
export function crc32Header(crc: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(crc >>> 0);
  return b.toString('base64');
}

function unquote(etag: string): string {
  return etag.replace(/^(W\/)?"|"$/g, '');
}

function quote(etag: string): string {
  return etag.startsWith('"') ? etag : `"${etag}"`;
}

/**
 * Reads a response body completely into a Buffer that owns its memory (never a view into a
 * shared socket or pool buffer, which would pin that whole allocation for as long as the
 * caller keeps the object), or into the caller's `into` when the body fits it. With the
 * length known (Content-Length), each piece is copied where it belongs as it arrives and
 * dropped at once: one body-sized buffer, not the pieces and then their concatenation.
 */
async function readBody(body: unknown, length: number | undefined, into: Buffer | undefined): Promise<Buffer> {
  if (body === undefined || body === null) return Buffer.alloc(0);
  const known = length !== undefined && Number.isSafeInteger(length) && length >= 0;
  const streamed = body instanceof Readable || (typeof body === 'object' && Symbol.asyncIterator in body);
  if (known && streamed) {
    const out = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
    let off = 0;
    for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
      const c = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      if (off + c.byteLength > length) throw new StoreError('Corrupt', `S3 sent more than the ${length} bytes it announced`);
      out.set(c, off);
      off += c.byteLength;
    }
    return off === length ? out : out.subarray(0, off);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  if (streamed) {
    for await (const chunk of body as AsyncIterable<Uint8Array | string>) {
      const c = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
      chunks.push(c);
      total += c.byteLength;
    }
  } else if (typeof (body as { transformToByteArray?: unknown }).transformToByteArray === 'function') {
    const bytes = await (body as { transformToByteArray(): Promise<Uint8Array> }).transformToByteArray();
    chunks.push(bytes);
    total = bytes.byteLength;
  } else {
    throw new StoreError('Other', 'S3 returned a response body of an unexpected type');
  }
  const out = Buffer.allocUnsafeSlow(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}
