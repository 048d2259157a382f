/**
 * The desktop app's half of the control API: what the renderer may ask the app host (Electron
 * main, or the loopback HTTP host that browser tests use). One route map, zod schemas for every
 * request and response, errors as `{code, message}` (errorSchema in errors.ts). The same map
 * drives the IPC handler, the HTTP server and both renderer transports, so a route added here is
 * validated everywhere at once. Imports nothing of ours but the contract.
 *
 * Secrets flow one way: access keys and passphrases go from the renderer to the host and into
 * the OS keychain; no response ever carries them back (keysInfoSchema holds only a key id hint).
 */

import { z } from 'zod';
import { settingsChangeSchema, snapshotListSchema, snapshotRecordSchema, statusSchema } from './api';

export const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
export const ACCESS_KEY_ID_RE = /^[A-Za-z0-9]{3,128}$/;
export const REGION_RE = /^[a-z0-9-]{2,32}$/;

const httpUrl = z
  .string()
  .max(512)
  .refine((v) => {
    try {
      const u = new URL(v);
      return u.protocol === 'http:' || u.protocol === 'https:';
    } catch {
      return false;
    }
  }, 'must be an http(s) URL');

export const credentialsSchema = z
  .object({
    accessKeyId: z.string().regex(ACCESS_KEY_ID_RE, 'an access key id is letters and digits, like AKIA...'),
    secretAccessKey: z.string().min(1, 'the secret access key is empty').max(256),
    region: z.string().regex(REGION_RE, 'a region looks like us-east-1').default('us-east-1'),
    endpoint: httpUrl.optional(),
    pathStyle: z.boolean().default(false),
  })
  .strict();
export type Credentials = z.infer<typeof credentialsSchema>;

/** What the renderer may know about the stored keys: never the secret, only a hint of the key id. */
export const keysInfoSchema = z
  .object({
    stored: z.boolean(),
    accessKeyIdHint: z.string().optional(),
    region: z.string().optional(),
    endpoint: z.string().optional(),
  })
  .strict();
export type KeysInfo = z.infer<typeof keysInfoSchema>;

export const targetSchema = z
  .object({
    bucket: z.string().regex(BUCKET_RE, 'not a valid S3 bucket name (3-63 lowercase letters, digits, "." and "-")'),
    prefix: z
      .string()
      .max(512)
      .regex(/^[A-Za-z0-9!_.*'()/-]*$/, 'use letters, digits and / _ - . in the prefix')
      .default(''),
  })
  .strict();
export type Target = z.infer<typeof targetSchema>;

export const PERMISSIONS = ['s3:ListBucket', 's3:GetObject', 's3:PutObject', 's3:DeleteObject'] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const bucketCheckSchema = z
  .object({
    ok: z.boolean(),
    /** Permissions the keys lack on this bucket/prefix, in the order they were probed. */
    missing: z.array(z.enum(PERMISSIONS)),
    message: z.string(),
    /** The minimal IAM policy for this bucket and prefix, ready to copy. */
    policy: z.string(),
    /** Whether a filespace already lives at this bucket/prefix (known only when ok). */
    filespaceExists: z.boolean(),
  })
  .strict();
export type BucketCheck = z.infer<typeof bucketCheckSchema>;

export const filespaceSummarySchema = z
  .object({
    name: z.string(),
    location: z.string(),
    kind: z.enum(['s3', 'local']),
    mountPoint: z.string(),
    cacheDir: z.string(),
    status: statusSchema,
  })
  .strict();
export type FilespaceSummary = z.infer<typeof filespaceSummarySchema>;

export const appStatusSchema = z
  .object({
    filespaces: z.array(filespaceSummarySchema),
    uploadsPaused: z.boolean(),
    keys: keysInfoSchema,
  })
  .strict();
export type AppStatus = z.infer<typeof appStatusSchema>;

export const nameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'use letters, digits, ".", "_" or "-" (at most 64)');

export const linkRequestSchema = z
  .object({
    mode: z.enum(['create', 'link']),
    target: targetSchema,
    passphrase: z.string().min(1).max(1024),
    name: nameSchema,
    mountPoint: z.string().min(1).max(4096),
    cacheCapBytes: z
      .number()
      .int()
      .min(16 * 1024 * 1024),
    /**
     * Create only: a recovery key the wizard made (contract/recoveryKey.ts) and showed on the
     * recovery kit. It wraps the data key in the bucket and is kept nowhere else.
     */
    recoveryKey: z.string().max(64).optional(),
  })
  .strict();
export type LinkRequest = z.infer<typeof linkRequestSchema>;

export const machineSettingsSchema = z
  .object({
    name: z.string(),
    cacheCapBytes: z.number(),
    uploadConcurrency: z.number(),
    downloadConcurrency: z.number(),
    prefetchMaxChunks: z.number(),
    uploadDelayMs: z.number(),
    /** Average upload rate cap, bytes per second (0: none). */
    uploadLimitBytesPerSec: z.number(),
    cacheDir: z.string(),
    /** Free bytes on the disk that holds the cache (bounds the cache cap slider). */
    cacheDiskFreeBytes: z.number(),
  })
  .strict();
export type MachineSettings = z.infer<typeof machineSettingsSchema>;

export const suggestionSchema = z
  .object({
    mountPoint: z.string(),
    cacheDir: z.string(),
    cacheDiskFreeBytes: z.number(),
    /** A cache cap to preselect: 20 GiB or half the free space, whichever is smaller. */
    cacheCapBytes: z.number(),
  })
  .strict();

/** Settings of the app itself on this machine (engine tuning is per filespace: settings.get). */
export const appSettingsDtoSchema = z
  .object({
    startAtLogin: z.boolean(),
    /** Names of the filespaces the app mounts when it starts. */
    mountAtStart: z.array(z.string()),
    uploadsPaused: z.boolean(),
  })
  .strict();
export type AppSettingsDto = z.infer<typeof appSettingsDtoSchema>;

/** Who writes a filespace, as the lease in the bucket says (null: nobody holds the lease). */
export const writerInfoSchema = z
  .object({
    writer: z
      .object({
        /** The writing computer's host name. */
        computer: z.string(),
        /** When it took the write lease (ms since the epoch). */
        since: z.number(),
        /** When it last renewed the lease (its own clock). */
        lastHeard: z.number(),
        /** False once the lease expired or was released: taking over then loses nothing of its. */
        live: z.boolean(),
        /** The writer is this computer (this app, or a crashed earlier run of it). */
        thisComputer: z.boolean(),
      })
      .strict()
      .nullable(),
  })
  .strict();
export type WriterInfo = z.infer<typeof writerInfoSchema>;

/** A set of changes kept aside after another computer took over (the command's `filespace aside`). */
export const asideSetDtoSchema = z
  .object({
    id: z.string(),
    createdAt: z.number(),
    reason: z.string(),
    files: z.array(
      z
        .object({
          path: z.string(),
          /** The file's other names (hard links), kept with it. */
          links: z.array(z.string()).optional(),
          size: z.number(),
          incomplete: z.boolean(),
        })
        .strict(),
    ),
    /** Paths deleted or renamed away here whose change was not uploaded. */
    removed: z.array(z.string()),
  })
  .strict();
export type AsideSetDto = z.infer<typeof asideSetDtoSchema>;

const ok = z.object({ ok: z.literal(true) }).strict();
const byName = z.object({ name: nameSchema }).strict();

/** The app route map: route -> request and response schemas. Every route is a POST with a JSON body. */
export const appRoutes = {
  'app.status': { request: z.object({}).strict(), response: appStatusSchema },
  'keys.check': {
    request: credentialsSchema,
    response: z.object({ keys: keysInfoSchema, buckets: z.array(z.string()).nullable() }).strict(),
  },
  'keys.forget': { request: z.object({}).strict(), response: ok },
  'bucket.check': { request: targetSchema, response: bucketCheckSchema },
  'filespace.probe': {
    request: z.object({ target: targetSchema, passphrase: z.string().min(1).max(1024) }).strict(),
    response: z.object({ exists: z.boolean() }).strict(),
  },
  'filespace.suggest': { request: byName, response: suggestionSchema },
  'mountpoint.check': { request: z.object({ path: z.string().min(1).max(4096) }).strict(), response: ok },
  'filespace.link': { request: linkRequestSchema, response: filespaceSummarySchema },
  'filespace.demo': { request: z.object({}).strict(), response: filespaceSummarySchema },
  /**
   * Mounts: 'write' takes the write lease (LEASE_HELD when another computer holds it), 'read'
   * follows the writer read-only; `takeover` takes the lease from another computer, which
   * stops writing. Mounted here in the other mode, it is unmounted first (a switch).
   */
  'filespace.mount': {
    request: z
      .object({ name: nameSchema, mode: z.enum(['write', 'read']).default('write'), takeover: z.boolean().default(false) })
      .strict(),
    response: filespaceSummarySchema,
  },
  'filespace.writer': { request: byName, response: writerInfoSchema },
  /** Lost passphrase: the recovery key sets a new one in the bucket (then link with it). */
  'filespace.recover': {
    request: z
      .object({ target: targetSchema, recoveryKey: z.string().min(1).max(64), newPassphrase: z.string().min(1).max(1024) })
      .strict(),
    response: ok,
  },
  'aside.list': { request: byName, response: z.object({ sets: z.array(asideSetDtoSchema) }).strict() },
  'aside.export': {
    request: z.object({ name: nameSchema, id: z.string().max(64), dir: z.string().min(1).max(4096) }).strict(),
    response: z.object({ files: z.number(), dir: z.string() }).strict(),
  },
  'aside.discard': { request: z.object({ name: nameSchema, id: z.string().max(64) }).strict(), response: ok },
  'filespace.unmount': { request: z.object({ name: nameSchema, force: z.boolean().default(false) }).strict(), response: ok },
  'filespace.unlink': {
    request: z.object({ name: nameSchema, discardPending: z.boolean().default(false) }).strict(),
    response: ok,
  },
  'settings.get': { request: byName, response: machineSettingsSchema },
  'settings.set': {
    request: z.object({ name: nameSchema, change: settingsChangeSchema }).strict(),
    response: z.object({ applied: z.enum(['live', 'next-mount']) }).strict(),
  },
  'uploads.pause': { request: z.object({ paused: z.boolean() }).strict(), response: ok },
  'settings.moveCache': {
    request: z.object({ name: nameSchema, cacheDir: z.string().min(1).max(4096) }).strict(),
    response: machineSettingsSchema,
  },
  /**
   * Imports a local folder (a full path) into a filespace mounted by this app, as a folder of
   * that name at its root; progress shows in the filespace's status (`transfer`).
   */
  'transfer.import': { request: z.object({ name: nameSchema, source: z.string().min(1).max(4096) }).strict(), response: ok },
  'transfer.cancel': { request: byName, response: ok },
  'app.settings.get': { request: z.object({}).strict(), response: appSettingsDtoSchema },
  'app.settings.set': {
    request: z.object({ startAtLogin: z.boolean().optional(), mountAtStart: z.array(nameSchema).max(100).optional() }).strict(),
    response: appSettingsDtoSchema,
  },
  /**
   * Pins a file or folder for use offline (the command's `filespace pin`): `path` inside the
   * mount point, or inside the filespace ("/Photos"). The card lists pins from the status.
   */
  'pins.add': { request: z.object({ name: nameSchema, path: z.string().min(1).max(4096) }).strict(), response: ok },
  'pins.remove': { request: z.object({ name: nameSchema, path: z.string().min(1).max(4096) }).strict(), response: ok },
  /** Snapshots of a filespace, from the bucket (any computer), with size-unique and the schedule. */
  'snapshot.list': { request: byName, response: snapshotListSchema },
  /** Taken and deleted by the computer that writes: the filespace must be mounted here for writing. */
  'snapshot.create': {
    request: z.object({ name: nameSchema, label: z.string().max(1000) }).strict(),
    response: snapshotRecordSchema,
  },
  'snapshot.delete': { request: z.object({ name: nameSchema, id: z.string().max(64) }).strict(), response: ok },
  /** Mounts a snapshot read-only beside the filespace's mount point (`<mount point>-snapshots/<id>`); answers the folder. */
  'snapshot.browse': {
    request: z.object({ name: nameSchema, id: z.string().max(64) }).strict(),
    response: z.object({ dir: z.string() }).strict(),
  },
} as const;

export type AppRoute = keyof typeof appRoutes;
export type AppRequest<R extends AppRoute> = z.input<(typeof appRoutes)[R]['request']>;
export type AppParsedRequest<R extends AppRoute> = z.infer<(typeof appRoutes)[R]['request']>;
export type AppResponse<R extends AppRoute> = z.infer<(typeof appRoutes)[R]['response']>;

export function isAppRoute(x: unknown): x is AppRoute {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(appRoutes, x);
}

/** Pushed by the host whenever something visible changed (never on a client's timer). */
export const appEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('status'), status: appStatusSchema }).strict(),
]);
export type AppEvent = z.infer<typeof appEventSchema>;

/** IPC channel names (Electron transport); the HTTP transport uses /app/<route> and /app/events. */
export const IPC_INVOKE = 'filespace:invoke';
export const IPC_EVENT = 'filespace:event';
export const IPC_PICK_FOLDER = 'filespace:pick-folder';
export const IPC_OPEN_FOLDER = 'filespace:open-folder';
/** A folder dialog opened in a filespace's mount point, to choose what to pin. */
export const IPC_PICK_PIN = 'filespace:pick-pin';
