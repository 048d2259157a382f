/**
 * How `filespace mount` starts a mount's engine as a background process: the same command in
 * the foreground, with glibc malloc settings (below) unless the caller's environment already
 * sets them. The systemd unit (build/systemd/filespace@.service) sets the same ones for
 * `mount --foreground`.
 *
 * Why, measured with test/bench/memprobe.ts (what a phase's peak RSS is made of): the engine's
 * live JavaScript objects stay near 50 MB even with a tree of 18,000 files, but its resident
 * memory reached 290-390 MB, made of
 *   - malloc'd memory freed long ago: every thread that allocates (libuv's pool, libfuse's,
 *     SQLite's callers) gets a glibc arena of its own, and glibc raises its mmap threshold to
 *     the largest block freed (a 4 MiB chunk buffer), after which chunk-sized buffers come from
 *     the arenas and their pages stay resident when freed; it also raises the trim threshold to
 *     twice that, so the top of an arena is rarely given back. Two arenas and a fixed threshold
 *     of 4 MiB (chunk buffers are mapped and unmapped, and pooled: util/bufferPool.ts) keep that
 *     near what is in use;
 *   - V8's heap and the buffers outside it that wait for a collection. Smaller semi-spaces
 *     (--max-semi-space-size=4) were tried and made it worse: buffer objects then survive to the
 *     old generation, and their memory waits for a full collection.
 * glibc reads its variables when the process starts: so they are given to the process, never
 * set from inside it.
 */

/** glibc malloc tuning for the engine process (see the module header). */
export const ENGINE_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_ARENA_MAX: '2',
  MALLOC_MMAP_THRESHOLD_: String(4 * 1024 * 1024),
};

/** `base` with the engine's malloc settings added where it does not set them itself. */
export function engineProcessEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  for (const [k, v] of Object.entries(ENGINE_MALLOC_ENV)) if (env[k] === undefined || env[k] === '') env[k] = v;
  return env;
}
