/**
 * The disk under the cache folder: how much the cache may hold on it, and a reserve of space
 * held back for the metadata journal.
 *
 * The cache cap is what the user allows; the disk may hold less (a cap above the free space,
 * or other programs filling the disk). `sample()` reads the free space (statfs, async) and
 * turns it into a limit for the cache's own bytes: what the cache has on disk now plus what is
 * free, minus a headroom for what the cache does not count (the journal and its snapshots,
 * pre-images, file system overhead, writes on their way). The chunk cache keeps under the
 * smaller of the cap and this limit, so clean chunks make way and writers wait for uploads
 * when the disk, not the cap, is full.
 *
 * The reserve is a file of zeros (`reserve` in the cache folder). When the journal cannot be
 * written for lack of space and no clean chunk is left to evict, the reserve is given up so
 * that metadata (what makes written data findable, and lets uploads commit and so free their
 * dirty copies) can still be saved; it is made again once the disk has room.
 *
 * State changes are logged once each (the disk limits the cache, the disk is full and nothing
 * more can be freed, and when each ends), never per failed write.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { formatSize } from '../util/sizes';

export interface CacheDiskOptions {
  /** Size of the space held back for the metadata journal. */
  readonly reserveBytes: number;
  /** Kept free beyond what the cache counts. */
  readonly headroomBytes: number;
  readonly log: (msg: string) => void;
}

export const RESERVE_FILE = 'reserve';

export class CacheDisk {
  /** What the cache's own bytes may reach on this disk (Infinity until sampled). */
  private limit = Infinity;
  private freeBytes = Infinity;
  private reserveHeld = false;
  private sampling: Promise<void> | undefined;
  private limitingSaid = false;
  private fullSaid = false;

  constructor(
    private readonly dir: string,
    private readonly o: CacheDiskOptions,
  ) {}

  /** True from the moment nothing more could be freed until the disk has room again. */
  get full(): boolean {
    return this.fullSaid;
  }

  get limitBytes(): number {
    return this.limit;
  }

  /** Free bytes on the disk at the last sample. */
  get lastFreeBytes(): number {
    return this.freeBytes;
  }

  private get reservePath(): string {
    return path.join(this.dir, RESERVE_FILE);
  }

  /**
   * Reads the free space and recomputes the limit, given the bytes the cache has on disk now
   * (`onDiskBytes`) and its cap (for the log line). Remakes the reserve when there is room.
   * Concurrent calls share one sample.
   */
  sample(onDiskBytes: () => number, capBytes: number): Promise<void> {
    this.sampling ??= this.sampleNow(onDiskBytes, capBytes).finally(() => (this.sampling = undefined));
    return this.sampling;
  }

  private async sampleNow(onDiskBytes: () => number, capBytes: number): Promise<void> {
    let st;
    try {
      st = await fsp.statfs(this.dir);
    } catch {
      return; // keep the last limit
    }
    let free = Number(st.bavail) * Number(st.bsize);
    if (!this.reserveHeld && free >= this.o.reserveBytes + this.o.headroomBytes && (await this.makeReserve())) {
      free -= this.o.reserveBytes;
    }
    this.freeBytes = free;
    this.limit = Math.max(0, onDiskBytes() + free - this.o.headroomBytes);
    if (!this.limitingSaid && this.limit < capBytes) {
      this.limitingSaid = true;
      this.o.log(
        `the disk under ${this.dir} has room for ${formatSize(this.limit)} of cache, less than the cache size ${formatSize(capBytes)}; the cache keeps within the disk`,
      );
    } else if (this.limitingSaid && this.limit >= capBytes * 1.05) {
      this.limitingSaid = false;
      this.o.log(`the disk under ${this.dir} has room for the whole cache size again`);
    }
    if (this.fullSaid && this.reserveHeld) {
      this.fullSaid = false;
      this.o.log(`the disk under ${this.dir} has room again`);
    }
  }

  /** Creates the reserve file (durably); false when the disk has no room for it. */
  async makeReserve(): Promise<boolean> {
    if (this.reserveHeld) return true;
    const tmp = `${this.reservePath}.tmp`;
    try {
      const fh = await fsp.open(tmp, 'w', 0o600);
      try {
        const zeros = Buffer.alloc(Math.min(this.o.reserveBytes, 1024 * 1024));
        for (let done = 0; done < this.o.reserveBytes; done += zeros.length) {
          await fh.write(zeros, 0, Math.min(zeros.length, this.o.reserveBytes - done));
        }
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, this.reservePath);
      this.reserveHeld = true;
      return true;
    } catch {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      return false;
    }
  }

  /** Adopts a reserve left by an earlier run (or notes there is none). */
  async init(): Promise<void> {
    await fsp.rm(`${this.reservePath}.tmp`, { force: true }).catch(() => undefined);
    const st = await fsp.stat(this.reservePath).catch(() => undefined);
    this.reserveHeld = st?.isFile() === true && st.size === this.o.reserveBytes;
    if (st && !this.reserveHeld) await fsp.rm(this.reservePath, { force: true }).catch(() => undefined);
  }

  /** Gives the reserve back to the disk; false when there was none to give. */
  async releaseReserve(): Promise<boolean> {
    if (!this.reserveHeld) return false;
    this.reserveHeld = false;
    await fsp.rm(this.reservePath, { force: true }).catch(() => undefined);
    this.o.log(
      `the disk under ${this.dir} is full: gave up the ${formatSize(this.o.reserveBytes)} held back for metadata, so that it can still be saved`,
    );
    return true;
  }

  /** Nothing more can be freed: logged once until the disk has room again. */
  noteFull(err: Error): void {
    if (this.fullSaid) return;
    this.fullSaid = true;
    this.o.log(
      `the disk under ${this.dir} is full and the cache has nothing left to give back (${err.message}); ` +
        'changes are kept in memory until there is room; free space on that disk, or unmount with --force',
    );
  }
}

/** Whether `err` says the disk (or a quota) is full. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}
