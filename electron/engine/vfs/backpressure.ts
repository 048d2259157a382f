/**
 * Backpressure: how a write waits for room when dirty data fills the cache cap (DESIGN
 * invariant 3), and when it stops waiting. The Vfs owns one; the engine tells it whether
 * uploads can free room.
 *
 * The rule:
 *  - While uploads make progress, a write waits for them to free room, however long that
 *    takes (every freed chunk lets writers on): that is ordinary backpressure.
 *  - While nothing can drain (uploads paused, the bucket not answering, every upload failing,
 *    nothing uploading), a write waits at most `stallTimeoutMs`, counted from the later of its
 *    start and the last time dirty data was freed, then fails with ENOSPC. A FUSE request that
 *    waits can never be interrupted (not even by SIGKILL), so it must not wait for minutes.
 *  - Once a write has failed so, later writes that need room fail at once, until dirty data is
 *    freed or draining becomes possible again (uploads resumed, the bucket back): a program
 *    writing many pieces, or many programs, do not each wait out the timeout.
 *  - A mount that turns read-only meanwhile (the write lease was lost to another machine)
 *    fails its waiting writes with EROFS at once, like every other write.
 * Nothing already written is touched: the data waits in the dirty store and uploads later.
 *
 * Waiting is on events (`freed()`, `drainChanged()`) with a deadline, never polling; a check
 * every second remains as a safety net for a drain state that changed without a call.
 *
 * It also keeps the "writes waiting" state for status: since when writers wait or are refused,
 * why, and how many writes were refused.
 */

import { FsError } from '../errors';
import { Signal } from '../util/concurrency';

/** Why uploads cannot free room now. */
export type StallCause = 'paused' | 'offline' | 'failing' | 'idle';

export interface BackpressureDeps {
  /**
   * Reserves room for `bytes` more dirty data if it fits under the cap now (one synchronous
   * check, so concurrent writers cannot both take the last room); returns the function that
   * gives the room back, or undefined when there is none.
   */
  readonly reserve: (bytes: number) => (() => void) | undefined;
  /** Why uploads cannot free room now; undefined while they make progress. */
  readonly blocked: () => StallCause | undefined;
  /** The reason writes are refused altogether (read-only), if they are. */
  readonly readOnly: () => string | undefined;
  readonly stallTimeoutMs: () => number;
  /** Called while writers wait, so the uploader treats every dirty chunk as due. */
  readonly onPressure: () => void;
  readonly now?: () => number;
}

export interface WritesWaiting {
  /** When the first writer of this episode started waiting. */
  readonly since: number;
  /** What keeps the cache full: a StallCause, or 'uploading' while uploads free room. */
  readonly cause: StallCause | 'uploading';
  /** True while writes that need room fail at once with ENOSPC. */
  readonly refusing: boolean;
  /** Writes refused with ENOSPC in this episode. */
  readonly refused: number;
  /** Writes waiting now. */
  readonly waiting: number;
}

const SAFETY_CHECK_MS = 1_000;

export class Backpressure {
  private readonly events = new Signal();
  private lastFreedAt = 0;
  private waiting = 0;
  /** Set when a write timed out; cleared when room is freed or draining is possible again. */
  private refusing = false;
  private episode: { since: number; refused: number } | undefined;
  private readonly now: () => number;

  constructor(private readonly deps: BackpressureDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Dirty data was freed (an upload finished, a file was deleted or truncated). */
  freed(): void {
    this.lastFreedAt = this.now();
    this.refusing = false;
    this.events.notify();
  }

  /** Whether uploads can drain may have changed (paused or resumed, offline or back, fenced). */
  drainChanged(): void {
    this.events.notify();
  }

  /**
   * A reservation was given back (its bytes are counted as dirty data now, or were not needed):
   * a waiting writer may fit. Not progress of the uploads, so it does not end a stall.
   */
  roomReturned(): void {
    this.events.notify();
  }

  /**
   * Resolves with a reservation of room for `bytes` (call the function once they are counted
   * as dirty data) when the write may go on; throws ENOSPC or EROFS as the rule says.
   */
  async waitForRoom(bytes: number): Promise<() => void> {
    const first = this.deps.reserve(bytes);
    if (first) return first;
    const startedAt = this.now();
    this.waiting++;
    const ep = (this.episode ??= { since: startedAt, refused: 0 });
    try {
      for (;;) {
        const room = this.deps.reserve(bytes);
        if (room) return room;
        const ro = this.deps.readOnly();
        if (ro !== undefined) throw new FsError('EROFS', ro);
        this.deps.onPressure();
        const cause = this.deps.blocked();
        if (cause === undefined) {
          this.refusing = false;
          await this.events.wait(SAFETY_CHECK_MS);
          continue;
        }
        const quietFor = this.now() - Math.max(startedAt, this.lastFreedAt);
        const left = this.deps.stallTimeoutMs() - quietFor;
        if (this.refusing || left <= 0) {
          this.refusing = true;
          ep.refused++;
          throw new FsError('ENOSPC', `the cache is full of changes that cannot upload (${cause})`);
        }
        await this.events.wait(Math.min(left, SAFETY_CHECK_MS));
      }
    } finally {
      this.waiting--;
      if (this.waiting === 0 && !this.refusing) this.episode = undefined;
    }
  }

  /** The "writes waiting" state, or undefined when no writer waits and none is refused. */
  status(): WritesWaiting | undefined {
    const ep = this.episode;
    if (!ep) return undefined;
    const cause = this.deps.blocked();
    if (this.waiting === 0 && (!this.refusing || cause === undefined)) {
      // Over: nobody waits, and writes are not refused any more (room was freed, or uploads can drain).
      this.episode = undefined;
      this.refusing = false;
      return undefined;
    }
    return {
      since: ep.since,
      cause: cause ?? 'uploading',
      refusing: this.refusing && cause !== undefined,
      refused: ep.refused,
      waiting: this.waiting,
    };
  }
}
