/**
 * A child process that runs `filespace link`'s work (linkFilespace) on a local-disk bucket and
 * stops half-way: once the link has made the cache folder's metadata folder, every read from
 * the bucket waits forever and it tells the parent "stalled"; the parent kills it with
 * SIGKILL: a link killed (or a machine losing power) while it builds its metadata.
 *
 * Arguments: <filespace home> <name> <bucket dir> <mount point> <passphrase file> <cache dir>.
 */

import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { homes } from '../../electron/host/config';
import { linkFilespace } from '../../electron/host/link';
import { LocalDiskStore } from '../../electron/engine/store/local';

const [home, name, bucket, mountPoint, passFile, cacheDir] = process.argv.slice(2);
const store = new LocalDiskStore(bucket!);
const get = store.get.bind(store);
let stalled = false;
store.get = (key: string, range?: { readonly start: number; readonly end: number }) => {
  if (!stalled && existsSync(path.join(cacheDir!, 'meta'))) {
    stalled = true;
    process.send!('stalled');
  }
  return stalled ? new Promise<undefined>(() => undefined) : get(key, range);
};
linkFilespace(
  homes({ FILESPACE_HOME: home! }),
  name!,
  { kind: 'local', root: bucket! },
  mountPoint!,
  cacheDir,
  undefined,
  passFile!,
  undefined,
  {
    store,
  },
).then(
  () => process.send!('finished'),
  (err: Error) => process.send!(`failed: ${err.message}`),
);
