/**
 * A clean chunk cache in a folder of its own, as the engine builds one (64 MiB cap, sealed and
 * received files under `cacheKey`, chunks opened with `chunkKey`), for tests of cache files.
 */

import { ChunkCache } from '../../electron/engine/cache/chunkCache';
import { HandlePool } from '../../electron/engine/cache/handles';
import { ReceivedIO } from '../../electron/engine/cache/received';
import { SealedIO } from '../../electron/engine/cache/sealed';

export function testChunkCache(dir: string, cacheKey: Buffer, received: ReceivedIO): { cache: ChunkCache; handles: HandlePool } {
  const handles = new HandlePool(8);
  const cache = new ChunkCache(
    dir,
    { capBytes: 64 * 1024 * 1024, highWatermark: 0.9, lowWatermark: 0.7 },
    handles,
    () => 0,
    new SealedIO(cacheKey),
    received,
  );
  return { cache, handles };
}
