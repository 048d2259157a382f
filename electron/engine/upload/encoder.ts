/**
 * The per-byte work of an upload: opening a dirty chunk's sealed units, naming the content
 * (keyed hash), and compressing and sealing the object with its CRC32. Everything else an
 * upload does is I/O and bookkeeping on the engine thread (upload/uploader.ts).
 *
 * Two implementations of one interface:
 * - `InThreadEncoder` does it from the engine's JS thread: compression on libuv's pool, and for
 *   a chunk of OFF_THREAD_BYTES or more the cipher passes, the hash and the CRC32 too, as two
 *   jobs of the cipher addon (chunk/cipherAddon.ts); a smaller chunk on the thread itself.
 * - `WorkerEncoder` does it in worker threads (node:worker_threads, upload/encodeWorker.ts), so
 *   the cipher passes, the hash, and the garbage the cipher's outputs leave (external memory
 *   that V8 collects with full GCs of the thread that made it) stay off the thread that answers
 *   FUSE. The buffers are the uploader's pooled ones, backed by SharedArrayBuffers: a worker
 *   reads and writes them in place and nothing of a chunk's size is copied or transferred.
 *   A chunk whose buffers are not shared (small chunks get buffers of their own size, see
 *   util/bufferPool.ts) is done in-thread: a thread hop would cost more than it saves.
 *
 * Which one runs is the host's choice (EngineOptions.encodeWorkers), by default
 * DEFAULT_ENCODE_WORKERS: see its comment for the measurement behind it.
 *
 * Keys: workers get the cache, naming and chunk keys at start (workerData); they stay in this
 * process's memory, as on the engine thread, and never leave it.
 */

import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { openSealedUnits, sealedBodySize, unitAad } from '../cache/sealed';
import { AuthError, Keys, chunkName } from '../chunk/crypto';
import { openUnitsAndNameAsync, uploadJobsOffThread } from '../chunk/cipherAddon';
import { EncodedChunk, OFF_THREAD_BYTES, encodeChunkInto } from '../chunk/format';

export type EncoderKeys = Pick<Keys, 'cacheKey' | 'nameKey' | 'chunkKey'>;

export interface ChunkEncoder {
  /**
   * Opens, in place, the sealed units of a chunk of `len` data bytes that `buf` holds as read
   * from its dirty file (`fileId`), and names the content. Then `buf.subarray(0, len)` is the
   * plaintext. Fails with AuthError if a unit was tampered with or torn.
   */
  openAndName(buf: Buffer, fileId: Buffer, len: number, what: string): Promise<string>;
  /** Encodes the plaintext `buf.subarray(0, len)`, named `name`, into `out` (format.ts). */
  encode(buf: Buffer, len: number, name: string, out: Buffer): Promise<EncodedChunk>;
  /** Whether `encode`/`openAndName` on these buffers would run off the engine thread. */
  offThread(buf: Buffer): boolean;
  /** Whether buffers should be shared memory (what a worker can work on in place). */
  readonly wantsSharedBuffers: boolean;
  close(): Promise<void>;
}

export class InThreadEncoder implements ChunkEncoder {
  readonly wantsSharedBuffers = false;

  constructor(private readonly keys: EncoderKeys) {}

  async openAndName(buf: Buffer, fileId: Buffer, len: number, what: string): Promise<string> {
    if (uploadJobsOffThread && len >= OFF_THREAD_BYTES) {
      // One job on the thread pool: the same opening and the same name as below.
      const aad = unitAad(fileId, 0);
      const mac = Buffer.allocUnsafeSlow(32);
      const ok = await openUnitsAndNameAsync(
        this.keys.cacheKey,
        aad,
        this.keys.nameKey,
        buf.subarray(0, sealedBodySize(len)),
        0,
        mac,
      );
      if (!ok) throw new AuthError(`${what} (a unit failed authentication or was cut short)`);
      return mac.toString('hex', 0, 20);
    }
    const n = openSealedUnits(this.keys.cacheKey, fileId, buf, sealedBodySize(len), 0, what);
    if (n !== len) throw new AuthError(`${what} (cut short)`);
    return chunkName(this.keys.nameKey, buf.subarray(0, len));
  }

  encode(buf: Buffer, len: number, name: string, out: Buffer): Promise<EncodedChunk> {
    return encodeChunkInto(this.keys.chunkKey, name, buf.subarray(0, len), out);
  }

  offThread(buf: Buffer): boolean {
    return uploadJobsOffThread && buf.length >= OFF_THREAD_BYTES;
  }

  async close(): Promise<void> {}
}

/** Messages to a worker (encodeWorker.ts) and its answers. */
export type EncodeRequest =
  | {
      readonly id: number;
      readonly op: 'openAndName';
      readonly buf: Uint8Array;
      readonly fileId: Uint8Array;
      readonly len: number;
      readonly what: string;
    }
  | {
      readonly id: number;
      readonly op: 'encode';
      readonly buf: Uint8Array;
      readonly len: number;
      readonly name: string;
      readonly out: Uint8Array;
    };
export type EncodeReply =
  | { readonly id: number; readonly name: string }
  | { readonly id: number; readonly encoded: EncodedChunk }
  | { readonly id: number; readonly error: { readonly auth: boolean; readonly message: string } };

interface Pending {
  resolve(reply: EncodeReply): void;
  reject(err: Error): void;
}

class EncodeThread {
  private readonly worker: Worker;
  readonly pending = new Map<number, Pending>();
  dead = false;

  constructor(
    keys: EncoderKeys,
    private readonly log: (msg: string) => void,
  ) {
    this.worker = new Worker(path.join(__dirname, 'encodeWorker.js'), {
      workerData: { cacheKey: keys.cacheKey, nameKey: keys.nameKey, chunkKey: keys.chunkKey },
    });
    this.worker.unref();
    this.worker.on('message', (m: EncodeReply) => {
      const p = this.pending.get(m.id);
      this.pending.delete(m.id);
      p?.resolve(m);
    });
    const fail = (why: string) => {
      if (!this.dead && this.pending.size > 0) this.log(`an upload encoder thread stopped (${why}); its chunks are retried`);
      this.dead = true;
      this.failAll(why);
    };
    this.worker.on('error', (err) => fail(err.message));
    this.worker.on('exit', (code) => fail(`exit code ${code}`));
  }

  /** Fails what was asked of this thread: it will never answer. */
  private failAll(why: string): void {
    for (const p of this.pending.values()) p.reject(new Error(`the upload encoder thread stopped: ${why}`));
    this.pending.clear();
  }

  call(req: EncodeRequest): Promise<EncodeReply> {
    return new Promise((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject });
      this.worker.postMessage(req);
    });
  }

  async stop(): Promise<void> {
    this.dead = true;
    await this.worker.terminate();
    this.failAll('the engine is closing');
  }
}

export class WorkerEncoder implements ChunkEncoder {
  readonly wantsSharedBuffers = true;
  private readonly threads: Array<EncodeThread | undefined>;
  private readonly inThread: InThreadEncoder;
  private nextId = 0;
  private closed = false;

  constructor(
    private readonly keys: EncoderKeys,
    workers: number,
    private readonly log: (msg: string) => void = () => undefined,
  ) {
    if (!(workers >= 1)) throw new RangeError(`WorkerEncoder needs at least one worker, got ${workers}`);
    this.threads = new Array<EncodeThread | undefined>(workers).fill(undefined);
    this.inThread = new InThreadEncoder(keys);
  }

  offThread(buf: Buffer): boolean {
    return !this.closed && buf.buffer instanceof SharedArrayBuffer;
  }

  async openAndName(buf: Buffer, fileId: Buffer, len: number, what: string): Promise<string> {
    if (!this.offThread(buf)) return this.inThread.openAndName(buf, fileId, len, what);
    const reply = await this.thread().call({ id: ++this.nextId, op: 'openAndName', buf, fileId, len, what });
    if ('error' in reply) throw replyError(reply.error);
    if (!('name' in reply)) throw new Error('the upload encoder thread answered out of turn');
    return reply.name;
  }

  async encode(buf: Buffer, len: number, name: string, out: Buffer): Promise<EncodedChunk> {
    if (!this.offThread(buf) || !(out.buffer instanceof SharedArrayBuffer)) return this.inThread.encode(buf, len, name, out);
    const reply = await this.thread().call({ id: ++this.nextId, op: 'encode', buf, len, name, out });
    if ('error' in reply) throw replyError(reply.error);
    if (!('encoded' in reply)) throw new Error('the upload encoder thread answered out of turn');
    return reply.encoded;
  }

  /** The least busy thread, started (again) if need be. */
  private thread(): EncodeThread {
    let best = -1;
    for (let i = 0; i < this.threads.length; i++) {
      const t = this.threads[i];
      if (!t || t.dead) {
        this.threads[i] = new EncodeThread(this.keys, this.log);
        return this.threads[i]!;
      }
      if (best < 0 || t.pending.size < this.threads[best]!.pending.size) best = i;
    }
    return this.threads[best]!;
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(this.threads.map((t) => t?.stop() ?? Promise.resolve()));
  }
}

function replyError(e: { readonly auth: boolean; readonly message: string }): Error {
  if (!e.auth) return new Error(e.message);
  const err = new AuthError('');
  err.message = e.message;
  return err;
}

/**
 * Encoder threads by default (0: encode on the engine thread): none, as a thread costs more
 * memory than the engine can spare. Measured on
 * the benchmark's 2-core machine (outside load 5 to 14 cores' worth), engine under --cpu-prof
 * (test/bench/engineprofile.ts), one thread against none:
 * - dd of 1 GiB then `filespace sync`, uploads overlapping the write: dd to close 19.5 and
 *   11.8 s against 31.2 and 23.1 s; dd + sync 25.2 and 18.4 s against 34.0 and 23.9 s; the
 *   engine thread busy 11.9 and 8.0 s against 25.4 and 18.5 s, its GC 2.8 and 1.5 s against 7.4
 *   and 4.4 s. dd of 256 MiB then sync: the engine thread busy during the sync 0.6-0.9 s against
 *   1.9-4.0 s. tar x of the npm tree (small chunks stay in-thread): within the noise.
 * - Memory: resident memory 45-70 MB higher, and it stays once idle (512 MiB then sync: 217-219
 *   MB idle against 148-169 MB). Every thread doing bulk AES-GCM through node:crypto leaves the
 *   cipher's outputs (two bytes per byte encoded) as garbage that V8 collects only at its
 *   external-memory limit (about 64 MB), and the allocator keeps that high-water mark in the
 *   thread's arena for good; a second such thread adds a second high-water mark. Replacing the
 *   thread every 64 MiB made it worse (new threads, new arenas: 345-374 MB), and stopping it
 *   when idle gave nothing back.
 * So on 2 cores it frees the thread that answers FUSE but breaks the engine's 300 MB bound; a
 * host that has the memory can turn it on (EngineOptions.encodeWorkers). One thread encodes
 * about 400 MB/s (two AES-GCM passes, an HMAC and a CRC32 per byte), more than an uplink.
 */
export const DEFAULT_ENCODE_WORKERS = 0;
