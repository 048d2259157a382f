/**
 * Plain objects under a prefix of any S3-compatible bucket, as either end of a copy: each
 * object is a file, its key below the prefix its path. Credentials come from the SDK's usual
 * chain (environment, shared config and profile, SSO, instance role) unless given. SDK errors
 * become StoreErrors (store/s3.ts `toStoreError`), which the hosts explain.
 *
 * As a source: the listing is read whole first (keys, sizes, times: about a hundred bytes an
 * object), so that a key that is also a folder ("a" beside "a/b") is known before either is
 * copied. A key that cannot be a path is skipped with its reason (`keyProblem`); a key ending
 * in "/" is a folder marker. A file's time is the object's LastModified.
 * As a destination: files become objects (a multipart upload past 8 MiB, so memory stays
 * bounded), holding their mtime and mode as `x-amz-meta-mtime` (seconds, as rclone writes it)
 * and `x-amz-meta-mode`; an object appears whole when its upload completes, never half
 * written. Folders are implied by the keys, and symlinks are skipped (plain objects keep none),
 * as are names that are not UTF-8 or hold control characters (`nameProblem`).
 */

import * as http from 'node:http';
import * as https from 'node:https';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { nameBytes } from '../util/names';
import { S3Credentials, toStoreError } from '../store/s3';
import { DestTree, Entry, FileWriter, Present, Skip, SourceTree, joinPath } from './tree';

const PART_BYTES = 8 * 1024 * 1024;

export interface S3Location {
  readonly bucket: string;
  /** Without leading or trailing '/'; '' for the whole bucket. */
  readonly prefix: string;
  readonly endpoint?: string;
  readonly region?: string;
  readonly pathStyle?: boolean;
  readonly credentials?: S3Credentials;
}

/** Why a key (below the prefix) cannot be a path, or undefined when it can. */
export function keyProblem(rel: string): string | undefined {
  const parts = rel.split('/');
  for (const c of parts) {
    if (c === '') return 'it has an empty name in it ("//", or a leading "/")';
    if (c === '.' || c === '..') return `it has "${c}" as a name`;
    if (nameBytes(c) > 255) return 'a name in it is longer than 255 bytes';
    if (c.includes('\u0000')) return 'it holds a NUL character';
  }
  return undefined;
}

interface Listed {
  readonly size: number;
  readonly mtimeMs: number;
}

interface Node {
  readonly dirs: Map<string, Node>;
  readonly files: Map<string, Listed>;
}

export class S3Tree implements SourceTree, DestTree {
  readonly description: string;
  readonly sparse = false;
  readonly symlinks = false;
  private readonly client: S3Client;
  private readonly base: string;
  private listing: Promise<Map<string, Listed>> | undefined;

  constructor(private readonly loc: S3Location) {
    this.base = loc.prefix ? `${loc.prefix}/` : '';
    this.description = `s3://${loc.bucket}/${loc.prefix}`;
    const agent = { keepAlive: true, maxSockets: 16 };
    this.client = new S3Client({
      region: loc.region ?? (loc.endpoint ? 'us-east-1' : undefined),
      endpoint: loc.endpoint,
      forcePathStyle: loc.pathStyle ?? false,
      credentials: loc.credentials,
      maxAttempts: 5,
      retryMode: 'standard',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: new NodeHttpHandler({
        httpAgent: new http.Agent(agent),
        httpsAgent: new https.Agent(agent),
        connectionTimeout: 5_000,
        requestTimeout: 60_000,
        socketTimeout: 60_000,
      }),
    });
  }

  private where(key: string): string {
    return `s3://${this.loc.bucket}/${key}`;
  }

  /** Every object below the prefix: relative key -> size and time. */
  private list(): Promise<Map<string, Listed>> {
    this.listing ??= (async () => {
      const out = new Map<string, Listed>();
      let token: string | undefined;
      for (;;) {
        let res;
        try {
          res = await this.client.send(
            new ListObjectsV2Command({ Bucket: this.loc.bucket, Prefix: this.base, ContinuationToken: token }),
          );
        } catch (err) {
          throw toStoreError(err, 's3:ListBucket', this.where(this.base));
        }
        for (const o of res.Contents ?? []) {
          if (o.Key === undefined || !o.Key.startsWith(this.base)) continue;
          out.set(o.Key.slice(this.base.length), { size: o.Size ?? 0, mtimeMs: o.LastModified?.getTime() ?? 0 });
        }
        if (!res.IsTruncated || !res.NextContinuationToken) return out;
        token = res.NextContinuationToken;
      }
    })();
    return this.listing;
  }

  /** Fails with a StoreError when the bucket cannot be listed (missing, no access): checked before anything changes. */
  async probe(): Promise<void> {
    await this.list();
  }

  async *walk(skip: (s: Skip) => void): AsyncIterable<Entry> {
    const root: Node = { dirs: new Map(), files: new Map() };
    const objects = await this.list();
    const folderOf = (parts: string[]): Node => {
      let n = root;
      for (const p of parts) {
        let next = n.dirs.get(p);
        if (!next) n.dirs.set(p, (next = { dirs: new Map(), files: new Map() }));
        n = next;
      }
      return n;
    };
    const files: [string, Listed][] = [];
    for (const [rel, o] of objects) {
      if (rel === '') continue; // the prefix's own folder marker
      const marker = rel.endsWith('/');
      const problem = keyProblem(marker ? rel.slice(0, -1) : rel);
      if (problem) {
        skip({ path: rel, reason: 'name not representable', detail: problem });
        continue;
      }
      const parts = (marker ? rel.slice(0, -1) : rel).split('/');
      if (marker) folderOf(parts);
      else {
        folderOf(parts.slice(0, -1));
        files.push([rel, o]);
      }
    }
    for (const [rel, o] of files) {
      const parts = rel.split('/');
      const name = parts.pop()!;
      const dir = folderOf(parts);
      if (dir.dirs.has(name))
        skip({ path: rel, reason: 'name not representable', detail: `it is also a folder (keys under "${rel}/")` });
      else dir.files.set(name, o);
    }
    const stack: [string, Node][] = [['', root]];
    while (stack.length > 0) {
      const [at, node] = stack.pop()!;
      for (const [name, o] of [...node.files].sort(([a], [b]) => (a < b ? -1 : 1)))
        yield { path: joinPath(at, name), kind: 'file', size: o.size, mtimeMs: o.mtimeMs };
      const subs = [...node.dirs].sort(([a], [b]) => (a < b ? 1 : -1));
      for (const [name, sub] of subs) {
        const rel = joinPath(at, name);
        yield { path: rel, kind: 'dir', size: 0, mtimeMs: 0 };
        stack.push([rel, sub]);
      }
    }
  }

  async *read(rel: string): AsyncIterable<Buffer> {
    const Key = this.base + rel;
    let res;
    try {
      res = await this.client.send(new GetObjectCommand({ Bucket: this.loc.bucket, Key }));
    } catch (err) {
      throw toStoreError(err, 's3:GetObject', this.where(Key));
    }
    const body = res.Body as AsyncIterable<Uint8Array> | undefined;
    if (!body) return;
    for await (const piece of body) yield Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
  }

  nameProblem(rel: string): string | undefined {
    // A name kept as raw bytes (util/names.ts) has lone surrogates: keys are UTF-8 text.
    if (/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(rel))
      return 'it is not valid UTF-8, which object keys must be';
    // S3 accepts them, but not every S3-compatible store does, nor every tool that lists keys.
    if ([...rel].some((c) => c.charCodeAt(0) < 0x20 || c === '\u007f'))
      return 'it holds a control character (a newline, a tab...)';
    if (Buffer.byteLength(this.base + rel) > 1024) return 'the key would be longer than 1024 bytes';
    return undefined;
  }

  async stat(rel: string): Promise<Present | undefined> {
    const o = (await this.list()).get(rel);
    if (!o) return undefined;
    const Key = this.base + rel;
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.loc.bucket, Key }));
      const meta = Number(head.Metadata?.mtime);
      return {
        kind: 'file',
        size: head.ContentLength ?? 0,
        mtimeMs: Number.isFinite(meta) ? Math.round(meta * 1000) : (head.LastModified?.getTime() ?? 0),
      };
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return undefined;
      throw toStoreError(err, 's3:GetObject', this.where(Key));
    }
  }

  async mkdir(): Promise<void> {
    // Folders are implied by the keys of what they hold.
  }

  async create(rel: string, mode: number | undefined, size: number, mtimeMs: number): Promise<FileWriter> {
    const Key = this.base + rel;
    const Bucket = this.loc.bucket;
    const Metadata: Record<string, string> = { mtime: (Math.floor(mtimeMs) / 1000).toFixed(3) };
    if (mode !== undefined) Metadata.mode = mode.toString(8);
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    let uploadId: string | undefined;
    const parts: { ETag: string; PartNumber: number }[] = [];
    const client = this.client;
    const where = this.where(Key);
    async function sendPart(): Promise<void> {
      const Body = Buffer.concat(pending);
      pending = [];
      pendingBytes = 0;
      try {
        if (uploadId === undefined) {
          const up = await client.send(new CreateMultipartUploadCommand({ Bucket, Key, Metadata }));
          uploadId = up.UploadId!;
        }
        const PartNumber = parts.length + 1;
        const res = await client.send(new UploadPartCommand({ Bucket, Key, UploadId: uploadId, PartNumber, Body }));
        parts.push({ ETag: res.ETag!, PartNumber });
      } catch (err) {
        throw toStoreError(err, 's3:PutObject', where);
      }
    }
    void size;
    return {
      write: async (data) => {
        pending.push(Buffer.from(data));
        pendingBytes += data.length;
        if (pendingBytes >= PART_BYTES) await sendPart();
      },
      finish: async () => {
        try {
          if (uploadId === undefined) {
            await client.send(new PutObjectCommand({ Bucket, Key, Body: Buffer.concat(pending), Metadata }));
            return;
          }
          if (pendingBytes > 0) await sendPart();
          await client.send(
            new CompleteMultipartUploadCommand({ Bucket, Key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
          );
        } catch (err) {
          throw toStoreError(err, 's3:PutObject', where);
        }
      },
      abort: async () => {
        if (uploadId !== undefined)
          await client.send(new AbortMultipartUploadCommand({ Bucket, Key, UploadId: uploadId })).catch(() => undefined);
      },
    };
  }

  async symlink(): Promise<void> {
    throw new Error('plain objects keep no symlinks');
  }

  async remove(rel: string): Promise<void> {
    const Key = this.base + rel;
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.loc.bucket, Key }));
    } catch (err) {
      throw toStoreError(err, 's3:DeleteObject', this.where(Key));
    }
  }

  async setAttrs(): Promise<void> {
    // Written with the object (its metadata cannot change without rewriting it).
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** Credentials from the SDK's usual chain, as this process sees it (undefined when there are none). */
export async function chainCredentials(region?: string): Promise<S3Credentials | undefined> {
  const client = new S3Client({ region: region ?? 'us-east-1' });
  try {
    const c = await client.config.credentials();
    return { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken };
  } catch {
    return undefined;
  } finally {
    client.destroy();
  }
}
