/** The chunk size the counts of chunk-sized buffers (settings, pools) are set for: the default one. */
const COUNTS_CHUNK_BYTES = 4 * 1024 * 1024;

/**
 * `count` chunk-sized buffers, as set for 4 MiB chunks, for a filespace of `chunkSize`: the same
 * bytes (rounded down, at least `min`), never more than `count`. Smaller chunks keep the count.
 */
export function chunksInBudget(count: number, chunkSize: number, min = 1): number {
  if (chunkSize <= COUNTS_CHUNK_BYTES) return count;
  return Math.min(count, Math.max(min, Math.floor((count * COUNTS_CHUNK_BYTES) / chunkSize)));
}
