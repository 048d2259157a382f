/**
 * An upload encoder thread (started by upload/encoder.ts): opens, names and encodes chunks in
 * buffers it shares with the engine thread, one request at a time, and answers with the name
 * or the encoded object's length and CRC32. Pure CPU work on memory it is handed; it does no
 * I/O and keeps nothing between requests.
 */

import { parentPort, workerData } from 'node:worker_threads';
import { openSealedUnits, sealedBodySize } from '../cache/sealed';
import { AuthError, chunkName } from '../chunk/crypto';
import { encodeChunkIntoSync } from '../chunk/format';
import type { EncodeReply, EncodeRequest } from './encoder';

const data = workerData as { cacheKey: Uint8Array; nameKey: Uint8Array; chunkKey: Uint8Array };
const cacheKey = Buffer.from(data.cacheKey);
const nameKey = Buffer.from(data.nameKey);
const chunkKey = Buffer.from(data.chunkKey);

const view = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

function handle(m: EncodeRequest): EncodeReply {
  if (m.op === 'openAndName') {
    const buf = view(m.buf);
    const n = openSealedUnits(cacheKey, Buffer.from(m.fileId), buf, sealedBodySize(m.len), 0, m.what);
    if (n !== m.len) throw new AuthError(`${m.what} (cut short)`);
    return { id: m.id, name: chunkName(nameKey, buf.subarray(0, m.len)) };
  }
  const encoded = encodeChunkIntoSync(chunkKey, m.name, view(m.buf).subarray(0, m.len), view(m.out));
  return { id: m.id, encoded };
}

parentPort!.on('message', (m: EncodeRequest) => {
  let reply: EncodeReply;
  try {
    reply = handle(m);
  } catch (err) {
    reply = { id: m.id, error: { auth: err instanceof AuthError, message: err instanceof Error ? err.message : String(err) } };
  }
  parentPort!.postMessage(reply);
});
