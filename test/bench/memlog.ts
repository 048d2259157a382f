/**
 * Loaded into an engine with `--require` by memprobe.ts (FILESPACE_MEMLOG=file): every
 * FILESPACE_MEMLOG_MS (default 100) each thread of the engine (the main thread and every worker
 * thread, which inherit --require) appends one JSON line with its heap figures; the main thread
 * adds the process's (rss, external, arrayBuffers). Nothing here changes what the engine does.
 */

import { appendFileSync } from 'node:fs';
import { getHeapStatistics } from 'node:v8';
import { isMainThread, threadId } from 'node:worker_threads';

const file = process.env.FILESPACE_MEMLOG;
if (file) {
  const every = Number(process.env.FILESPACE_MEMLOG_MS ?? 100);
  const timer = setInterval(() => {
    const h = getHeapStatistics();
    const row: Record<string, number> = {
      t: Date.now(),
      thread: threadId,
      heapTotal: h.total_heap_size,
      heapUsed: h.used_heap_size,
      external: h.external_memory,
      malloced: h.malloced_memory,
    };
    if (isMainThread) {
      const m = process.memoryUsage();
      row.rss = m.rss;
      row.arrayBuffers = m.arrayBuffers;
      row.processExternal = m.external;
    }
    appendFileSync(file, JSON.stringify(row) + '\n');
  }, every);
  timer.unref();
}
