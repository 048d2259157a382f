/**
 * RandomFill: when to bring the rest of a file read at random into the cache, and in what
 * order. Pure logic, no I/O: the VFS reports each random read that had to go to the bucket
 * (`noteMiss`), asks which chunk to download next (`next`), and says when a file was closed by
 * its last handle or is read as a stream (`stop`).
 *
 * Why: a random read that misses is answered by one ranged GET of the segments that cover it
 * (fetcher.ts), which is the quickest answer for that read but leaves the next read of the same
 * file to miss too; on a file read at random all over (a database, an image, an archive) a
 * reader pays a round trip per read for as long as it reads. Once a file has shown `minMisses`
 * random misses in a row (none further apart than `forgetAfterMs`), its other chunks come
 * whole into the clean cache in the background, nearest to the latest miss first, while each
 * miss is still answered at once by its own ranged GET (the VFS downloads them with the
 * fetcher's background priority, which leaves a slot to readers and keeps nothing in memory).
 *
 * Bounds: only a file whose chunks fit in `budgetBytes` (a fraction of the cache cap) is
 * filled, so random reads of a file larger than that (or than the cache) never flush the cache;
 * each chunk is asked for once per fill; a file being filled stops when it is closed, when it
 * is read sequentially (read-ahead takes over) or when the cache refuses a chunk (`stop`).
 */

/** How a fill is decided and bounded. */
export interface RandomFillLimits {
  /** Random misses on one file, each within `forgetAfterMs` of the last, before its fill starts. */
  readonly minMisses: number;
  /** A pause between misses this long starts the count again. */
  readonly forgetAfterMs: number;
  /** A file is filled only if all its chunks fit in this many bytes (a fraction of the cache cap). */
  readonly budgetBytes: number;
}

/** How many files' miss counts are remembered (the oldest go first). */
const MAX_FILES = 1024;

interface FileState {
  misses: number;
  lastMissMs: number;
  /** The chunk of the latest miss: the fill works outward from it. */
  lastIdx: number;
  chunks: number;
  /** Chunks asked for (or known present) in this fill; set once the fill starts. */
  asked?: Uint8Array;
  askedCount: number;
  /** How far from `lastIdx` every chunk has been asked for (the outward search resumes there). */
  reach: number;
}

/** What the VFS should do after a miss. */
export type MissVerdict = 'none' | 'started' | 'filling';

export class RandomFill {
  private readonly files = new Map<number, FileState>();

  constructor(private readonly limits: () => RandomFillLimits) {}

  /**
   * A random read of chunk `idx` of file `ino` (`chunks` chunks of `chunkBytes`) had to go to
   * the bucket at `nowMs`. Says whether the file's fill starts now, runs already, or not.
   */
  noteMiss(ino: number, idx: number, chunks: number, chunkBytes: number, nowMs: number): MissVerdict {
    const lim = this.limits();
    let f = this.files.get(ino);
    if (!f || (!f.asked && nowMs - f.lastMissMs > lim.forgetAfterMs)) {
      f = { misses: 0, lastMissMs: nowMs, lastIdx: idx, chunks, askedCount: 0, reach: 0 };
      this.files.delete(ino);
      this.files.set(ino, f);
      // Files read at random once or twice long ago are not worth remembering.
      if (this.files.size > MAX_FILES) this.files.delete(this.files.keys().next().value!);
    }
    f.misses++;
    f.lastMissMs = nowMs;
    if (f.lastIdx !== idx) f.reach = 0;
    f.lastIdx = idx;
    if (f.asked) return 'filling';
    f.chunks = chunks;
    if (f.misses < lim.minMisses || chunks <= 1 || chunks * chunkBytes > lim.budgetBytes) return 'none';
    f.asked = new Uint8Array(chunks);
    return 'started';
  }

  /** Whether file `ino` is being filled. */
  filling(ino: number): boolean {
    return this.files.get(ino)?.asked !== undefined;
  }

  /**
   * The next chunk of file `ino` to download for its fill: the one nearest to the latest miss
   * not asked for yet (marked asked now), or undefined when every chunk was (the fill is over).
   */
  next(ino: number): number | undefined {
    const f = this.files.get(ino);
    if (!f?.asked) return undefined;
    const asked = f.asked;
    const n = asked.length;
    for (let d = f.reach; d < n; d++) {
      for (const i of d === 0 ? [f.lastIdx] : [f.lastIdx + d, f.lastIdx - d]) {
        if (i < 0 || i >= n || asked[i]) continue;
        asked[i] = 1;
        f.askedCount++;
        f.reach = d;
        return i;
      }
    }
    f.reach = n;
    return undefined;
  }

  /** Chunks of file `ino` asked for by its fill so far. */
  asked(ino: number): number {
    return this.files.get(ino)?.askedCount ?? 0;
  }

  /** Forgets file `ino`: closed by its last handle, read as a stream, or refused by the cache. */
  stop(ino: number): void {
    this.files.delete(ino);
  }

  /** Files with a miss count or a fill (tests). */
  get size(): number {
    return this.files.size;
  }
}
