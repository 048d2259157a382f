/**
 * A bounded pool of open file handles shared by the chunk cache and the dirty store, so hot
 * chunks are read and written without an open/close per FUSE request, and the process never
 * holds more than `limit` descriptors. Handles are reference-counted: one is closed only when
 * it has fallen out of the pool *and* nobody is using it.
 */

import { promises as fsp } from 'node:fs';

interface Entry {
  readonly fh: Promise<fsp.FileHandle>;
  refs: number;
  retired: boolean;
}

export class HandlePool {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly limit = 256) {}

  async use<T>(file: string, fn: (fh: fsp.FileHandle) => Promise<T>): Promise<T> {
    let e = this.entries.get(file);
    if (e) {
      this.entries.delete(file);
      this.entries.set(file, e); // most recently used last
    } else {
      e = { fh: fsp.open(file, 'r+'), refs: 0, retired: false };
      this.entries.set(file, e);
      e.fh.catch(() => undefined);
      this.trim();
    }
    const entry = e;
    entry.refs++;
    try {
      let fh: fsp.FileHandle;
      try {
        fh = await entry.fh;
      } catch (err) {
        if (this.entries.get(file) === entry) this.entries.delete(file);
        throw err;
      }
      return await fn(fh);
    } finally {
      entry.refs--;
      if (entry.retired && entry.refs === 0) void this.closeEntry(entry);
    }
  }

  /** Puts a handle its caller just opened (read-write) into the pool, as if `use` had opened it. */
  adopt(file: string, fh: fsp.FileHandle): void {
    this.forget(file);
    this.entries.set(file, { fh: Promise.resolve(fh), refs: 0, retired: false });
    this.trim();
  }

  /** The file at `from` was renamed to `to`: a handle pooled for `from` serves `to` from now on. */
  rename(from: string, to: string): void {
    const e = this.entries.get(from);
    this.forget(to);
    if (!e) return;
    this.entries.delete(from);
    this.entries.set(to, e);
  }

  /** Drops a path from the pool (after rename or unlink); its handle closes once unused. */
  forget(file: string): void {
    const e = this.entries.get(file);
    if (!e) return;
    this.entries.delete(file);
    e.retired = true;
    if (e.refs === 0) void this.closeEntry(e);
  }

  private trim(): void {
    for (const [file, e] of this.entries) {
      if (this.entries.size <= this.limit) break;
      this.entries.delete(file);
      e.retired = true;
      if (e.refs === 0) void this.closeEntry(e);
    }
  }

  private async closeEntry(e: Entry): Promise<void> {
    try {
      await (await e.fh).close();
    } catch {
      /* already closed or never opened */
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.entries.values()];
    this.entries.clear();
    await Promise.all(all.map((e) => this.closeEntry(e)));
  }
}
