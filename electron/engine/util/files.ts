/**
 * Durable file writes, shared by everything that keeps state on the local disk: the metadata
 * journal and its snapshot, the dirty-chunk store, set-aside changes, the embedded local-disk
 * store, the cache lock, and the hosts' configuration files. A rename or a new entry reaches
 * the disk only once its directory is fsynced; a file replaced atomically is written to a
 * temporary name, fsynced, renamed over the old one, and its directory fsynced.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

/** Filesystems that cannot fsync a directory answer so; the rename before it is still atomic. */
const CANNOT_SYNC_DIRECTORIES = new Set(['EINVAL', 'ENOTSUP', 'EISDIR']);

/**
 * Makes the entries of `dir` (files created, renamed or deleted in it) durable. `lenient`: a
 * filesystem that cannot sync directories, or a directory removed meanwhile, is not an error.
 */
export async function fsyncDir(dir: string, opts: { readonly lenient?: boolean } = {}): Promise<void> {
  let fh: fsp.FileHandle | undefined;
  try {
    fh = await fsp.open(dir, 'r');
    await fh.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code ?? '';
    if (!opts.lenient || !(CANNOT_SYNC_DIRECTORIES.has(code) || code === 'ENOENT')) throw err;
  } finally {
    await fh?.close().catch(() => undefined);
  }
}

/** Replaces `file` with `data` atomically and durably (owner-only by default). */
export async function writeFileAtomic(file: string, data: Buffer | string, mode = 0o600): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${Date.now()}`;
  try {
    const fh = await fsp.open(tmp, 'w', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    // A full disk must not keep a half-written copy taking up what room is left.
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(path.dirname(file));
}
