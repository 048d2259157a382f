/**
 * MemoryStore: an ObjectStore held in a Map, for unit tests of everything above the store.
 *
 * Same semantics as S3 as the conformance suite pins them (content-hash ETags, atomic
 * conditional writes, sorted listing, missing keys are not errors), plus request counters so
 * tests can assert how often the engine went to the bucket. Stored and returned buffers are
 * copies, so callers mutating their buffers can never change what is "in the bucket".
 */

import { createHash } from 'node:crypto';
import { GetResult, HeadResult, ObjectStore, PutOptions, StoreError } from './types';

interface Entry {
  readonly body: Buffer;
  readonly etag: string;
}

export class MemoryStore implements ObjectStore {
  readonly description = 'memory:';
  private readonly objects = new Map<string, Entry>();

  /** Request counters (tests read them; only the store changes them). */
  puts = 0;
  gets = 0;
  heads = 0;
  deletes = 0;
  lists = 0;

  async get(key: string, range?: { readonly start: number; readonly end: number }): Promise<GetResult | undefined> {
    checkKey(key);
    this.gets++;
    const e = this.objects.get(key);
    if (!e) return undefined;
    if (!range) return { body: Buffer.from(e.body), etag: e.etag };
    const { start, end } = range;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end < start) {
      throw new StoreError('Other', `invalid byte range ${start}-${end}`);
    }
    return { body: Buffer.from(e.body.subarray(start, end + 1)), etag: e.etag };
  }

  async head(key: string): Promise<HeadResult | undefined> {
    checkKey(key);
    this.heads++;
    const e = this.objects.get(key);
    return e ? { size: e.body.length, etag: e.etag } : undefined;
  }

  async put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    checkKey(key);
    this.puts++;
    // Check and write happen in one synchronous step, so they are atomic.
    const current = this.objects.get(key);
    if (options?.ifNoneMatch === '*' && current) {
      throw new StoreError('PreconditionFailed', `conditional write to ${key} failed: the object already exists`);
    }
    if (options?.ifMatch !== undefined && current?.etag !== options.ifMatch) {
      throw new StoreError(
        'PreconditionFailed',
        `conditional write to ${key} failed: ${current ? 'the object changed' : 'the object does not exist'}`,
      );
    }
    const copy = Buffer.from(body);
    const etag = createHash('sha256').update(copy).digest('hex').slice(0, 32);
    this.objects.set(key, { body: copy, etag });
    return etag;
  }

  async delete(key: string): Promise<void> {
    checkKey(key);
    this.deletes++;
    this.objects.delete(key);
  }

  async deleteMany(keys: readonly string[]): Promise<void> {
    for (const k of keys) checkKey(k);
    for (const k of keys) {
      this.deletes++;
      this.objects.delete(k);
    }
  }

  async list(prefix: string): Promise<string[]> {
    this.lists++;
    const out: string[] = [];
    for (const k of this.objects.keys()) if (k.startsWith(prefix)) out.push(k);
    return out.sort();
  }

  async close(): Promise<void> {}

  /** Number of stored objects. */
  get size(): number {
    return this.objects.size;
  }
}

function checkKey(key: string): void {
  if (typeof key !== 'string' || key.length === 0) throw new StoreError('Other', 'object key is empty');
}
