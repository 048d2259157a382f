/**
 * A child process that links a filespace's metadata from a local-disk bucket (MetaStore.link)
 * and stops half-way: once `adds` batches of rows went into the database being built, every
 * further page read waits forever, and it tells the parent "stalled"; the parent kills it with
 * SIGKILL: a fresh machine that crashed mid-link.
 *
 * Arguments: <bucket dir> <metadata key, hex> <chunk size> <metadata dir> <adds>.
 */

import { MetaStore } from '../../electron/engine/meta/metastore';
import { PAGE_PREFIX } from '../../electron/engine/meta/pages';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { TreeDbBuilder } from '../../electron/engine/meta/build';
import { LocalDiskStore } from '../../electron/engine/store/local';

const [bucket, keyHex, chunkSize, metaDir, addsArg] = process.argv.slice(2);
let stalled = false;
const start = TreeDbBuilder.start.bind(TreeDbBuilder);
TreeDbBuilder.start = async (dir, cs, opts) => {
  const b = await start(dir, cs, opts);
  const add = b.add.bind(b);
  let adds = 0;
  b.add = async (inodes, entries) => {
    await add(inodes, entries);
    if (++adds === Number(addsArg)) {
      stalled = true;
      process.send!('stalled');
    }
  };
  return b;
};
const store = new LocalDiskStore(bucket!);
const get = store.get.bind(store);
store.get = (key: string, range?: { readonly start: number; readonly end: number }) =>
  stalled && key.startsWith(PAGE_PREFIX) ? new Promise<undefined>(() => undefined) : get(key, range);
MetaStore.link(metaDir!, new RemoteMeta(store, Buffer.from(keyHex!, 'hex')), Number(chunkSize)).then(
  () => process.send!('finished'),
  (err: Error) => process.send!(`failed: ${err.message}`),
);
