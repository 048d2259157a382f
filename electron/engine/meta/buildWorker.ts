/**
 * The thread that writes a database being built (started by build.ts): it owns the database
 * while it is built, says when it has opened it, takes rows (`TreeDb.writer`), answers each
 * batch once written, and ends with the state row and the database made durable and closed. After an error it answers
 * nothing more; build.ts stops it and removes the files.
 */

import { parentPort, workerData } from 'node:worker_threads';
import type { BuildReply, BuildRequest } from './build';
import { TreeDb, type BuildWriter } from './treeDb';

const { dir, chunkSize } = workerData as { dir: string; chunkSize: number };
let writer: BuildWriter | undefined;

function reply(m: BuildReply): void {
  parentPort!.postMessage(m);
}

function fail(err: unknown): void {
  writer?.close();
  writer = undefined;
  const code = (err as { code?: unknown }).code;
  reply({ error: { message: err instanceof Error ? err.message : String(err), ...(typeof code === 'string' ? { code } : {}) } });
}

try {
  writer = TreeDb.writer(dir, chunkSize);
  reply({ ready: true });
} catch (err) {
  fail(err);
}

parentPort!.on('message', (m: BuildRequest) => {
  if (!writer) return;
  try {
    if ('rows' in m) {
      writer.write(m.rows);
      reply({ written: true });
    } else reply({ state: writer.finish(m.finish) });
  } catch (err) {
    fail(err);
  }
});
