/**
 * The control API contract: the one typed description of what a host (CLI daemon, Electron
 * main) can be asked, shared by every client (CLI commands, preload/renderer, tests). Every
 * message is validated with these schemas at the boundary; errors cross as `{code, message}`
 * with a code of the one error vocabulary (errors.ts).
 * Imports nothing of ours.
 */

import { z } from 'zod';

export const MOUNT_STATES = ['unmounted', 'mounting', 'mounted', 'unmounting', 'error'] as const;
export type MountState = (typeof MOUNT_STATES)[number];

export const leaseStatusSchema = z.object({
  /** writer: holds the write lease; follower: read-only, follows the writer; none: neither (yet). */
  role: z.enum(['writer', 'follower', 'none']),
  holder: z.string().nullable(),
  holderIsThisMachine: z.boolean(),
  lastRenewedAt: z.number().nullable(),
  ttlMs: z.number(),
  followerLagMs: z.number().nullable(),
  /** Writer: when lease renewals began to fail (writes are then kept locally); null while they succeed. */
  renewFailingSince: z.number().nullable().optional(),
  /** Writer: until when it may commit without another renewal; past it, it commits nothing. */
  validUntil: z.number().nullable().optional(),
  lost: z.string().nullable(),
  conditionalWrites: z.boolean(),
  /** Writer: the read-only followers heard from lately (computer name, since, last heard, lag), newest first. */
  followers: z
    .array(z.object({ name: z.string(), since: z.number(), heardAt: z.number(), lagMs: z.number().nullable() }))
    .optional(),
  /** Writer: followers beyond those listed. */
  followersMore: z.number().optional(),
});
export type LeaseStatusDto = z.infer<typeof leaseStatusSchema>;

export const asideSetSchema = z.object({ id: z.string(), createdAt: z.number(), files: z.number(), reason: z.string() });

/** A file or folder pinned for use offline: its path in the filespace, and how many of its data bytes are in the cache. */
export const pinStatusSchema = z.object({ path: z.string(), localBytes: z.number(), totalBytes: z.number() });
export type PinStatusDto = z.infer<typeof pinStatusSchema>;

export const WRITE_STALL_CAUSES = ['paused', 'offline', 'failing', 'idle', 'uploading'] as const;

/** Writers waiting for room in a full cache (or refused it): since when, why, what to do. */
export const writesWaitingSchema = z.object({
  since: z.number(),
  /** uploads paused, the bucket offline, uploads failing, nothing uploading, or still uploading (ordinary backpressure). */
  cause: z.enum(WRITE_STALL_CAUSES),
  /** True while writes that need room fail at once with ENOSPC. */
  refusing: z.boolean(),
  refused: z.number(),
  message: z.string(),
});
export type WritesWaitingDto = z.infer<typeof writesWaitingSchema>;

/** Plain objects under a prefix of an S3-compatible bucket (credentials: the host's chain unless given). */
export const s3LocationSchema = z
  .object({
    bucket: z.string().min(1),
    prefix: z.string(),
    endpoint: z.string().optional(),
    region: z.string().optional(),
    pathStyle: z.boolean().optional(),
    credentials: z
      .object({ accessKeyId: z.string(), secretAccessKey: z.string(), sessionToken: z.string().optional() })
      .strict()
      .optional(),
  })
  .strict();

/** The end of an import or export outside the filespace: a local folder (full path) or an S3 prefix. */
export const transferOutsideSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('local'), path: z.string().min(1) }).strict(),
  s3LocationSchema.extend({ kind: z.literal('s3') }).strict(),
]);
export type TransferOutside = z.infer<typeof transferOutsideSchema>;

export const transferRequestSchema = z
  .object({
    direction: z.enum(['import', 'export']),
    /** The folder inside the filespace ('/' for its root). */
    inside: z.string().min(1),
    outside: transferOutsideSchema,
  })
  .strict();
export type TransferRequest = z.infer<typeof transferRequestSchema>;

export const TRANSFER_SKIP_REASONS = [
  'unreadable',
  'special file',
  'name not representable',
  'symlink (plain objects keep none)',
  'in the way',
] as const;

export const transferProgressSchema = z.object({
  phase: z.enum(['scanning', 'copying', 'finishing', 'uploading', 'done', 'cancelled', 'failed']),
  startedAt: z.number(),
  filesTotal: z.number(),
  bytesTotal: z.number(),
  scanned: z.boolean(),
  filesDone: z.number(),
  bytesDone: z.number(),
  bytesCopied: z.number(),
  copied: z.number(),
  alreadyThere: z.number(),
  verified: z.number(),
  folders: z.number(),
  symlinks: z.number(),
  skippedByReason: z.partialRecord(z.enum(TRANSFER_SKIP_REASONS), z.number()),
  skipped: z.array(z.object({ path: z.string(), reason: z.enum(TRANSFER_SKIP_REASONS), detail: z.string() })),
  failed: z.array(z.object({ path: z.string(), error: z.string() })),
  error: z.string().optional(),
});
export type TransferProgressDto = z.infer<typeof transferProgressSchema>;

/** An import or export a running mount does: what it copies from where to where, and how far it is. */
export const transferJobSchema = z.object({
  direction: z.enum(['import', 'export']),
  from: z.string(),
  to: z.string(),
  progress: transferProgressSchema,
});
export type TransferJobDto = z.infer<typeof transferJobSchema>;

export const statusSchema = z.object({
  name: z.string(),
  state: z.enum(MOUNT_STATES),
  mountPoint: z.string(),
  pid: z.number().int().optional(),
  dirtyBytes: z.number(),
  dirtyFiles: z.number(),
  pendingMetaOps: z.number(),
  uploadBytesPerSec: z.number(),
  /** The upload bandwidth limit in force, bytes per second (0 or absent: none). */
  uploadLimitBytesPerSec: z.number().optional(),
  downloadBytesPerSec: z.number(),
  cacheUsedBytes: z.number(),
  cacheCapBytes: z.number(),
  /** Share of the bytes read that did not have to come from the bucket (0 to 1; 0 before any read). */
  cacheHitRatio: z.number(),
  /** Bytes read from bucket data so far, cache hits and misses (0: no reads yet, the ratio says nothing). */
  cacheReadBytes: z.number().optional(),
  openFiles: z.number(),
  offline: z.boolean(),
  /** When the bucket stopped answering (ms since the epoch), while offline. */
  offlineSince: z.number().nullable().optional(),
  uploadsPaused: z.boolean(),
  writesWaiting: writesWaitingSchema.nullable().optional(),
  readOnlyReason: z.string().nullable(),
  lastError: z.string().nullable(),
  /** Files with data not yet uploaded (the first 50 by path). */
  pendingFiles: z.array(z.string()).optional(),
  lease: leaseStatusSchema.optional(),
  aside: z.array(asideSetSchema).optional(),
  /** What this machine keeps cached for use offline (also while unmounted, from the cache folder). */
  pins: z.array(pinStatusSchema).optional(),
  /** Why pinned data is not all in the cache yet, while it is not (no room, the bucket offline). */
  pinsProblem: z.string().nullable().optional(),
  /** The import or export the mount runs, or ran last. */
  transfer: transferJobSchema.nullable().optional(),
  /** Folders a fresh machine has not loaded from the bucket yet (they load as they are used, the rest in the background). */
  foldersLoading: z.number().int().optional(),
});
export type StatusDto = z.infer<typeof statusSchema>;

/**
 * The per-machine settings a user may change on a linked filespace, as numbers in the unit
 * their names say (bytes, bytes per second, milliseconds, counts), never as text: "50GiB" is
 * read where a person typed it (the command), and the renderer sends numbers. Whether a value
 * is in range is the engine's to say (engine/config.ts), once, where the change is applied.
 */
export const settingsChangeSchema = z
  .object({
    cacheCapBytes: z.number(),
    uploadDelayMs: z.number(),
    uploadConcurrency: z.number(),
    /** Average upload rate cap for file data (0: none). */
    uploadLimitBytesPerSec: z.number(),
    downloadConcurrency: z.number(),
    prefetchMaxChunks: z.number(),
    readTimeoutMs: z.number(),
    writeStallTimeoutMs: z.number(),
    probeTimeoutMs: z.number(),
    leaseTtlMs: z.number(),
    followIntervalMs: z.number(),
    gcGraceMs: z.number(),
    gcIntervalMs: z.number(),
    metaCompactIntervalMs: z.number(),
    metaCompactGraceMs: z.number(),
  })
  .partial()
  .strict()
  .refine((c) => Object.keys(c).length > 0, 'name at least one setting');
export type SettingsChange = z.infer<typeof settingsChangeSchema>;
export type SettingName = keyof SettingsChange;

export const unmountRequestSchema = z.object({ force: z.boolean().default(false) }).strict();
export const syncRequestSchema = z
  .object({
    timeoutMs: z
      .number()
      .int()
      .min(0)
      .max(7 * 24 * 3600 * 1000),
  })
  .strict();
export const setRequestSchema = settingsChangeSchema;
export const pauseRequestSchema = z.object({ paused: z.boolean() }).strict();

export type UnmountRequest = z.infer<typeof unmountRequestSchema>;
export type SyncRequest = z.infer<typeof syncRequestSchema>;
export type SetRequest = z.infer<typeof setRequestSchema>;

export const syncResultSchema = z.object({
  done: z.boolean(),
  dirtyBytes: z.number(),
  pendingMetaOps: z.number(),
  /** Set when the mount stopped writing for good (e.g. the write lease was lost): why, and to whom. */
  notWriting: z.string().nullable().optional(),
});
export type SyncResult = z.infer<typeof syncResultSchema>;

export const gcResultSchema = z.object({
  scanned: z.number(),
  referenced: z.number(),
  marked: z.number(),
  deleted: z.number(),
  repacked: z.number().optional(),
});
export type GcResultDto = z.infer<typeof gcResultSchema>;

/**
 * Paths inside the filespace ("/Photos"), as the command or the app resolved them from what the
 * user gave; the whole request stays within MAX_BODY_BYTES.
 */
export const pinRequestSchema = z
  .object({ paths: z.array(z.string().min(1).max(4096)).min(1, 'name at least one path').max(64) })
  .strict();
export type PinRequest = z.infer<typeof pinRequestSchema>;
export const pinResultSchema = z.object({ added: z.array(z.string()), pins: z.array(pinStatusSchema) });
export type PinResult = z.infer<typeof pinResultSchema>;
export const snapshotRecordSchema = z.object({
  id: z.string(),
  createdAt: z.number(),
  label: z.string(),
  kind: z.enum(['manual', 'hourly', 'daily']),
  seq: z.number(),
  files: z.number(),
  bytes: z.number(),
});
export type SnapshotRecordDto = z.infer<typeof snapshotRecordSchema>;
/** A snapshot as listed: its record, and the bytes of chunks nothing else (live tree, other snapshots) names. */
export const snapshotListedSchema = snapshotRecordSchema.extend({ uniqueBytes: z.number() });
export type SnapshotListedDto = z.infer<typeof snapshotListedSchema>;
export const snapshotScheduleSchema = z
  .object({ hourly: z.number().int().min(0).max(1000), daily: z.number().int().min(0).max(1000) })
  .strict();
export type SnapshotScheduleDto = z.infer<typeof snapshotScheduleSchema>;
export const snapshotListSchema = z.object({
  snapshots: z.array(snapshotListedSchema),
  /** Snapshots whose record fails authentication, by id. */
  damaged: z.array(z.string()),
  schedule: snapshotScheduleSchema,
});
export type SnapshotListDto = z.infer<typeof snapshotListSchema>;
const snapshotIdSchema = z.string().min(1).max(64);

const countsByOpSchema = z.record(z.string(), z.number());
export const fuseCountsSchema = z.object({
  answered: countsByOpSchema,
  crossed: countsByOpSchema,
  emptied: z.object({ byRequest: z.number(), byFilesystem: z.number(), inodes: z.number(), evicted: z.number() }),
  sentByThread: z.number().optional(),
});
export type FuseCountsDto = z.infer<typeof fuseCountsSchema>;

/** Route map: path -> request and response schemas. */
export const routes = {
  '/v1/status': { method: 'GET', request: z.object({}).strict(), response: statusSchema },
  '/v1/unmount': { method: 'POST', request: unmountRequestSchema, response: z.object({ ok: z.literal(true) }) },
  '/v1/sync': { method: 'POST', request: syncRequestSchema, response: syncResultSchema },
  '/v1/set': { method: 'POST', request: setRequestSchema, response: z.object({ ok: z.literal(true) }) },
  '/v1/pause': { method: 'POST', request: pauseRequestSchema, response: z.object({ ok: z.literal(true) }) },
  '/v1/gc': { method: 'POST', request: z.object({}).strict(), response: gcResultSchema },
  '/v1/pin': { method: 'POST', request: pinRequestSchema, response: pinResultSchema },
  '/v1/unpin': { method: 'POST', request: pinRequestSchema, response: pinResultSchema },
  '/v1/snapshot/create': {
    method: 'POST',
    request: z.object({ label: z.string().max(1000) }).strict(),
    response: snapshotRecordSchema,
  },
  '/v1/snapshot/list': {
    method: 'POST',
    request: z.object({}).strict(),
    response: snapshotListSchema,
  },
  '/v1/snapshot/delete': {
    method: 'POST',
    request: z.object({ id: snapshotIdSchema }).strict(),
    response: z.object({ ok: z.literal(true) }),
  },
  '/v1/snapshot/schedule': { method: 'POST', request: snapshotScheduleSchema, response: z.object({ ok: z.literal(true) }) },
  /** Mounts snapshot `id` read-only at `dir` (a full path to an empty folder), served by this mount's process. */
  '/v1/snapshot/mount': {
    method: 'POST',
    request: z.object({ id: snapshotIdSchema, dir: z.string().min(1).max(4096) }).strict(),
    response: z.object({ ok: z.literal(true) }),
  },
  '/v1/snapshot/unmount': {
    method: 'POST',
    request: z.object({ dir: z.string().min(1).max(4096) }).strict(),
    response: z.object({ ok: z.literal(true) }),
  },
  /** Starts an import or export in the mount (joined, started false, when the same one runs). */
  '/v1/transfer/start': {
    method: 'POST',
    request: transferRequestSchema,
    response: z.object({ started: z.boolean(), job: transferJobSchema }),
  },
  '/v1/transfer': { method: 'GET', request: z.object({}).strict(), response: z.object({ job: transferJobSchema.nullable() }) },
  '/v1/transfer/cancel': { method: 'POST', request: z.object({}).strict(), response: z.object({ ok: z.literal(true) }) },
  /**
   * How the mount's FUSE requests were answered (for probes and tests): per operation, on
   * libfuse's thread from the attribute cache or by a round trip to the engine's thread, and
   * how often that cache was emptied. Null without a mount or an addon that counts.
   */
  '/v1/debug/fuse': {
    method: 'GET',
    request: z.object({}).strict(),
    response: z.object({ counts: fuseCountsSchema.nullable() }),
  },
} as const;
export type Route = keyof typeof routes;
export type RequestOf<R extends Route> = z.input<(typeof routes)[R]['request']>;
export type ResponseOf<R extends Route> = z.infer<(typeof routes)[R]['response']>;

/** Largest request body the server reads. */
export const MAX_BODY_BYTES = 16 * 1024;
