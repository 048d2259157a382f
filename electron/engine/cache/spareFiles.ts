/**
 * Spare files: empty files made ahead of need in `<cacheDir>/spare`, so that a new dirty chunk
 * (every small file, at its close) gets its file by renaming a spare into `dirty/` instead of
 * creating one while the close waits. On the cache disk's filesystem a create is the costly
 * metadata operation when its journal is busy (ext4 with other writers syncing: 0.5 to 1 ms
 * per create, against 20 to 30 µs per rename and 10 to 20 µs per small write, measured side by
 * side on the benchmark machine); a rename within the same filesystem is not.
 *
 * A spare never holds data: the dirty store renames it to the chunk's name first and writes
 * into it after (DirtyStore.newFile), as it would into a file it had just created. So what a
 * crash leaves in this folder is only empty files, and `init` removes the folder whole. The
 * order matters for fsync on a journaling filesystem too: the chunk's blocks are allocated
 * after the rename, so the fdatasync that makes them durable also commits the rename that
 * named them (journal transactions commit in order), as it commits the creation of a new file.
 *
 * Owns the folder and the open handles of the spares not yet taken. At most `target` are kept;
 * they are made one at a time in the background after a take, so the first take after start
 * finds none. When none is ready the caller creates its file itself, as without spares; a
 * failure to make one (a full disk) only means that, until the next take tries again.
 */

import { promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as path from 'node:path';

export interface SpareFile {
  readonly path: string;
  readonly fh: FileHandle;
}

export class SpareFiles {
  private readonly ready: SpareFile[] = [];
  private filling: Promise<void> | undefined;
  private seq = 0;
  private closed = false;
  /** Whether the folder is known to exist (made once, not at every take: a small file's close waits behind the fill's thread-pool jobs). */
  private made = false;

  constructor(
    private readonly dir: string,
    private readonly target: number,
  ) {
    if (!Number.isInteger(target) || target < 0) throw new Error(`spare files: a count of ${target} is not a whole number >= 0`);
  }

  /** At start, before any take: removes what an earlier run left (empty files only). */
  async init(): Promise<void> {
    await fsp.rm(this.dir, { recursive: true, force: true });
  }

  /** A ready spare, now the caller's (to rename into place, or close and remove), or undefined. */
  take(): SpareFile | undefined {
    const s = this.ready.pop();
    this.fill();
    return s;
  }

  /** How many spares are ready now. */
  get readyCount(): number {
    return this.ready.length;
  }

  /** Resolves once the spares being made now are made (tests). */
  async filled(): Promise<void> {
    await this.filling;
  }

  private fill(): void {
    if (this.filling || this.closed || this.target === 0) return;
    this.filling = (async () => {
      try {
        if (!this.made) await fsp.mkdir(this.dir, { recursive: true, mode: 0o700 });
        this.made = true;
        while (!this.closed && this.ready.length < this.target) {
          const p = path.join(this.dir, String(this.seq++));
          const fh = await fsp.open(p, 'wx+', 0o600);
          this.ready.push({ path: p, fh });
        }
      } catch {
        // A full disk or a folder removed under us: new chunks create their files themselves
        // (and the next fill makes the folder again).
        this.made = false;
      } finally {
        this.filling = undefined;
      }
    })();
  }

  /** Closes and removes the spares not taken; takes find none afterwards. Never fails. */
  async close(): Promise<void> {
    this.closed = true;
    await this.filling;
    for (const s of this.ready.splice(0)) await s.fh.close().catch(() => undefined);
    await fsp.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
