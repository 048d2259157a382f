/**
 * Engine tuning: one object with defaults, units in the names, and a self-check that rejects
 * nonsense with a message naming the setting (a UserError, BAD_SETTING). Per-machine settings
 * (cache size, concurrency, timeouts) live here; per-filespace facts (chunk size, keys) come
 * from the bucket header.
 */

import { z } from 'zod';
import { UserError } from './errors';
import { chunksInBudget } from './util/chunkBudget';

export const engineSettingsSchema = z
  .object({
    cacheCapBytes: z
      .number()
      .int()
      .min(16 * 1024 * 1024, 'cache size must be at least 16 MiB'),
    cacheHighWatermark: z.number().gt(0).max(1),
    cacheLowWatermark: z.number().gt(0).max(1),
    /** A dirty chunk waits this long after its last write before it uploads. */
    uploadDelayMs: z.number().int().min(0).max(3_600_000),
    /** A chunk that keeps changing uploads anyway once it has been dirty this long. */
    maxDirtyAgeMs: z.number().int().min(0).max(86_400_000),
    uploadConcurrency: z.number().int().min(1).max(64),
    /** Average upload rate cap for file data, bytes per second (0: no limit). */
    uploadLimitBytesPerSec: z
      .number()
      .int()
      .min(0, 'the upload limit cannot be negative')
      .max(1024 ** 4)
      .refine((v) => v === 0 || v >= 16 * 1024, 'the upload limit must be at least 16 KiB/s (or off)'),
    downloadConcurrency: z.number().int().min(1).max(64),
    /** Largest read-ahead window, in chunks. */
    prefetchMaxChunks: z.number().int().min(0).max(64),
    /** How long a read may keep retrying the bucket before it fails with EIO. */
    readTimeoutMs: z.number().int().min(100).max(3_600_000),
    /**
     * How long a write may wait for room while the cache is full of changes that cannot upload
     * (uploads paused, the bucket offline, every upload failing) before it fails with ENOSPC.
     */
    writeStallTimeoutMs: z.number().int().min(0).max(3_600_000),
    /**
     * Memory for writes acknowledged before they reach the dirty store on disk (they are sealed
     * and written behind, in batches; close and fsync wait for them).
     */
    writeBufferBytes: z
      .number()
      .int()
      .min(256 * 1024, 'the write buffer must be at least 256KiB')
      .max(1024 ** 3),
    /** The longest written data waits in that memory before it goes to the dirty store. */
    writeBufferFlushMs: z.number().int().min(1).max(3_600_000),
    /**
     * A request unanswered this long makes the engine probe the bucket; a probe unanswered this
     * long means offline.
     */
    probeTimeoutMs: z.number().int().min(200, 'the probe timeout must be at least 200ms').max(60_000),
    /** How often replicated metadata is pushed while there are changes. */
    metaPushDelayMs: z.number().int().min(0).max(600_000),
    /** The write lease expires this long after its last renewal; renewed every third of it. */
    leaseTtlMs: z.number().int().min(1000).max(600_000),
    /** How often a read-only follower looks for the writer's new metadata. */
    followIntervalMs: z.number().int().min(100).max(600_000),
    /** An unreferenced chunk is deleted only after it has been seen unreferenced this long. */
    gcGraceMs: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400_000),
    /** How often the writer collects garbage (0: only when asked). */
    gcIntervalMs: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400_000),
    /** How often the writer checkpoints (if there were changes) and compacts the metadata log (0: never). */
    metaCompactIntervalMs: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400_000),
    /** How long a compaction mark stands before the segments under it are deleted (at least twice the lease TTL). */
    metaCompactGraceMs: z
      .number()
      .int()
      .min(0)
      .max(30 * 86_400_000),
    attrTimeoutSec: z.number().min(0).max(3600),
    entryTimeoutSec: z.number().min(0).max(3600),
    negativeTimeoutSec: z.number().min(0).max(3600),
    xattrs: z.boolean(),
  })
  .strict()
  .refine((s) => s.cacheLowWatermark < s.cacheHighWatermark, {
    message: 'cacheLowWatermark must be below cacheHighWatermark',
  });

export type EngineSettings = z.infer<typeof engineSettingsSchema>;

export const DEFAULT_SETTINGS: EngineSettings = {
  cacheCapBytes: 20 * 1024 ** 3,
  cacheHighWatermark: 0.95,
  cacheLowWatermark: 0.85,
  uploadDelayMs: 2_000,
  maxDirtyAgeMs: 30_000,
  uploadConcurrency: 8,
  uploadLimitBytesPerSec: 0,
  downloadConcurrency: 8,
  prefetchMaxChunks: 8,
  readTimeoutMs: 60_000,
  writeStallTimeoutMs: 30_000,
  writeBufferBytes: 8 * 1024 * 1024,
  writeBufferFlushMs: 200,
  probeTimeoutMs: 3_000,
  metaPushDelayMs: 500,
  leaseTtlMs: 30_000,
  followIntervalMs: 2_000,
  gcGraceMs: 3_600_000,
  gcIntervalMs: 6 * 3_600_000,
  metaCompactIntervalMs: 10 * 60_000,
  metaCompactGraceMs: 15 * 60_000,
  attrTimeoutSec: 1,
  entryTimeoutSec: 1,
  negativeTimeoutSec: 0.5,
  xattrs: true,
};

export function resolveSettings(partial: Partial<EngineSettings>): EngineSettings {
  const merged = { ...DEFAULT_SETTINGS, ...partial };
  const parsed = engineSettingsSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new UserError(
      `invalid setting ${issue.path.join('.') || ''}: ${issue.message}`.replace('setting : ', 'settings: '),
      'BAD_SETTING',
    );
  }
  return parsed.data;
}

/**
 * The settings as they apply to a filespace of `chunkSize`. Downloads, uploads and read-ahead
 * each hold a chunk-sized buffer per chunk they count (a download its object and the chunk
 * decoded, an upload its sealed chunk, read-ahead a chunk in memory), so those counts are
 * budgets in bytes: what they allow with 4 MiB chunks. With 16 MiB chunks, 8 downloads become 2
 * (the same 32 MiB in flight), and a read-ahead window of 8 chunks becomes 2, which the 48 MiB
 * kept for readers holds; left as counts, a cold read of such a filespace peaked at 460-500 MB.
 * At least 2 downloads and uploads stay, so one slow request never holds up all the others.
 */
export function settingsForChunkSize(s: EngineSettings, chunkSize: number): EngineSettings {
  return {
    ...s,
    downloadConcurrency: chunksInBudget(s.downloadConcurrency, chunkSize, 2),
    uploadConcurrency: chunksInBudget(s.uploadConcurrency, chunkSize, 2),
    prefetchMaxChunks: chunksInBudget(s.prefetchMaxChunks, chunkSize, 1),
  };
}
