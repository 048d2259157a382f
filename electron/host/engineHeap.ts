/**
 * How far V8 lets the JavaScript heap of a process that hosts engines (`filespace mount`, the
 * desktop app) grow past what survived its last full collection.
 *
 * V8 picks that factor itself, up to 4x when collections are quick, so an engine's main heap
 * holding ~45 MB of live objects reached 135-170 MB of mostly garbage while it served a tree
 * read-back (memprobe: node_modules, tar d), and with the memory the chunk buffers need on top
 * the process went over its 300 MB bound. A fixed factor of 1.5 bounds that garbage. Measured
 * with test/bench/memprobe.ts (tar x, tar d, upload-limit of node_modules, --trace-gc): peak RSS
 * of tar d 250-268 -> 215-223 MB, of the upload-limit phase after it 292-299 -> 229-252 MB, and
 * the collections cost the same (full: 29 taking 531 ms -> 33 taking 490 ms; scavenges
 * unchanged), because most full collections were already started by V8's other triggers.
 *
 * V8 reads the flag at each full collection, so setting it once at start works the same in
 * Node and in Electron's main process (which takes no V8 flags from NODE_OPTIONS).
 */
import { setFlagsFromString } from 'node:v8';

/** The V8 flags a process hosting engines runs with (see the module header). */
export const ENGINE_V8_FLAGS: readonly string[] = ['--heap-growing-percent=50'];

let applied = false;

/** Gives this process the engine's V8 heap settings; once, before engines start. */
export function tuneHeapForEngines(): void {
  if (applied) return;
  applied = true;
  for (const flag of ENGINE_V8_FLAGS) setFlagsFromString(flag);
}
