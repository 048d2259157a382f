/**
 * Checks a set of AWS keys against the store before anything is created: whether S3 accepts
 * them at all (and which buckets they can see), and whether they hold each permission a
 * filespace needs on one bucket/prefix — probed with real requests in the order the engine
 * needs them, so the answer names exactly what is missing. Also writes the minimal IAM policy
 * for that bucket/prefix, which the wizard shows for copying.
 *
 * Probing writes and deletes one small object (`.filespace-permission-probe-<random>`) under
 * the prefix; nothing else is changed.
 */

import { randomBytes } from 'node:crypto';
import { ListBucketsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import type { BucketCheck, Credentials, Permission, Target } from '../contract/app';
import { HostError } from '../host/errors';
import { HEADER_KEY } from '../engine/filespace';
import { S3Store, toStoreError } from '../engine/store/s3';
import { StoreError } from '../engine/store/types';

/** Permissions a filespace needs, and the request that proves each. */
const PROBE_ORDER: readonly Permission[] = ['s3:ListBucket', 's3:GetObject', 's3:PutObject', 's3:DeleteObject'];

export function storeFor(c: Credentials, t: Target): S3Store {
  return new S3Store({
    bucket: t.bucket,
    prefix: t.prefix,
    region: c.region,
    endpoint: c.endpoint,
    pathStyle: c.pathStyle,
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
    maxAttempts: 2,
  });
}

function clientFor(c: Credentials): S3Client {
  return new S3Client({
    region: c.region,
    endpoint: c.endpoint,
    forcePathStyle: c.pathStyle,
    maxAttempts: 2,
    credentials: { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey },
  });
}

/** A StoreError as the wizard says it: bad keys and unreachable endpoints are errors of their own. */
function keysError(err: StoreError, endpoint: string | undefined): HostError {
  switch (err.code) {
    case 'InvalidCredentials':
      return new HostError('S3 rejected these keys: check the access key ID and the secret access key', 'BAD_CREDENTIALS');
    case 'Unreachable':
    case 'Timeout':
      return new HostError(`cannot reach ${endpoint ?? 'AWS S3'}: check the endpoint and the network`, 'UNREACHABLE');
    case 'NoSuchBucket':
      return new HostError('that bucket does not exist: pick one from the list or create it first', 'NO_SUCH_BUCKET');
    case 'AccessDenied':
    case 'PreconditionFailed':
    case 'Throttled':
    case 'ServerError':
    case 'Corrupt':
    case 'Other':
      return new HostError(err.message, 'STORE_ERROR');
  }
}

/**
 * Checks that S3 accepts the keys. Resolves to the bucket names they can list, or null when
 * they may not list buckets (s3:ListAllMyBuckets is optional: the user can type the bucket).
 */
export async function checkKeys(c: Credentials): Promise<string[] | null> {
  const client = clientFor(c);
  try {
    const out = await client.send(new ListBucketsCommand({}));
    return (out.Buckets ?? [])
      .map((b) => b.Name ?? '')
      .filter(Boolean)
      .sort();
  } catch (raw) {
    const err = toStoreError(raw, 's3:ListAllMyBuckets', 's3://');
    if (err.code === 'AccessDenied') return null;
    throw keysError(err, c.endpoint);
  } finally {
    client.destroy();
  }
}

export function minimalPolicy(t: Target): string {
  const prefix = t.prefix.replace(/^\/+|\/+$/g, '');
  const objects = `arn:aws:s3:::${t.bucket}/${prefix ? `${prefix}/` : ''}*`;
  const list: Record<string, unknown> = {
    Sid: 'FilespaceList',
    Effect: 'Allow',
    Action: ['s3:ListBucket'],
    Resource: `arn:aws:s3:::${t.bucket}`,
  };
  if (prefix) list.Condition = { StringLike: { 's3:prefix': [`${prefix}/`, `${prefix}/*`] } };
  return JSON.stringify(
    {
      Version: '2012-10-17',
      Statement: [
        list,
        {
          Sid: 'FilespaceObjects',
          Effect: 'Allow',
          Action: ['s3:GetObject', 's3:PutObject', 's3:DeleteObject'],
          Resource: objects,
        },
      ],
    },
    null,
    2,
  );
}

/** Probes each permission the engine needs on the bucket/prefix; never throws for a missing one. */
export async function checkBucket(c: Credentials, t: Target): Promise<BucketCheck> {
  const policy = minimalPolicy(t);
  const store = storeFor(c, t);
  const client = clientFor(c);
  const missing: Permission[] = [];
  let filespaceExists = false;
  const probeKey = `.filespace-permission-probe-${randomBytes(6).toString('hex')}`;
  const base = t.prefix ? `${t.prefix.replace(/^\/+|\/+$/g, '')}/` : '';
  const probes: Record<Permission, () => Promise<void>> = {
    's3:ListBucket': async () => {
      try {
        await client.send(new ListObjectsV2Command({ Bucket: t.bucket, Prefix: base, MaxKeys: 1 }));
      } catch (err) {
        throw toStoreError(err, 's3:ListBucket', `s3://${t.bucket}/${base}`);
      }
    },
    's3:GetObject': async () => {
      filespaceExists = (await store.get(HEADER_KEY)) !== undefined;
    },
    's3:PutObject': async () => {
      await store.put(probeKey, Buffer.from('filespace permission probe\n'));
    },
    's3:DeleteObject': async () => {
      await store.delete(probeKey);
    },
  };
  try {
    for (const perm of PROBE_ORDER) {
      try {
        await probes[perm]();
      } catch (err) {
        if (!(err instanceof StoreError)) throw err;
        if (err.code !== 'AccessDenied') throw keysError(err, c.endpoint);
        missing.push(perm);
      }
    }
  } finally {
    await store.close();
    client.destroy();
  }
  const where = `s3://${t.bucket}${base ? `/${base.slice(0, -1)}` : ''}`;
  const message =
    missing.length === 0
      ? `These keys can list, read, write and delete in ${where}.`
      : `These keys lack ${missing.join(', ')} on ${where}. Add the policy below to the IAM user (or the bucket policy), then check again.`;
  return { ok: missing.length === 0, missing, message, policy, filespaceExists };
}
