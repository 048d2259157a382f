/**
 * Pins: files and folders this machine keeps whole in its cache, for use offline. A pin names
 * an inode (the tree's inode numbers are stable and never reused), so a pinned folder that is
 * renamed stays pinned; its path is kept beside it for people (and refreshed after a rename).
 * A pinned inode that is deleted drops out of the pins (logged, and the list saved without it).
 * The list itself is per machine: the host keeps it in the link configuration and hands it to
 * the engine at open; every change goes back through `onPinsChanged`.
 *
 * What is pinned is everything under the pinned inodes: the chunks of every file reached from
 * them, recomputed after tree changes that touch pinned inodes (local writes and the writer's
 * changes applied on a follower alike), debounced. A recompute walks only the pinned content,
 * never the whole tree; deciding whether a change touches pins costs O(1) per op, and a rename
 * or removal elsewhere costs a check of the pins' paths (the whole tree is walked only when a
 * pin or a folder above it was renamed, to find its new path). The chunk cache never evicts a
 * pinned chunk (chunkCache.ts `setPinned`).
 *
 * Missing pinned chunks are downloaded in the background, at the lowest priority of the
 * fetcher's download slots (reads and read-ahead go first, and one slot is left for them).
 * What is missing is worked out from the cache each time, so a restart simply carries on.
 *
 * Room: pinned chunks count against the cache cap like any cached chunk. Pins may take at
 * most the cap less a margin for writes and reads (`PIN_WRITE_MARGIN_SHARE` of the cap, and at
 * least `PIN_WRITE_MARGIN_CHUNKS` chunks); a pin that does not fit is refused before anything
 * changes, and so is a cap lowered below what pins hold (`checkCapForPins`).
 */

import { ChunkCache } from './cache/chunkCache';
import { physicalSize } from './cache/sealed';
import { UserError } from './errors';
import { MetaOp, ROOT_INO, Tree, pathsOfInodes } from './meta/tree';
import { ChunkFetcher } from './prefetch/fetcher';
import { formatSize } from './util/sizes';

/** A pinned file or folder: its inode, and its path when last seen (for people). */
export interface PinRecord {
  readonly ino: number;
  readonly path: string;
}

/** How far a pin's data is on this machine (data bytes of its distinct chunks). */
export interface PinProgress {
  readonly path: string;
  readonly localBytes: number;
  readonly totalBytes: number;
}

/** Share of the cache cap pins leave free for writes and reads. */
export const PIN_WRITE_MARGIN_SHARE = 0.2;
/** Chunks pins leave free at least, whatever the cap. */
export const PIN_WRITE_MARGIN_CHUNKS = 4;
/** How long after a change to pinned content the pinned set is recomputed. */
export const PIN_RECOMPUTE_DELAY_MS = 300;
/** How long the background download waits after a failure before it tries again (sooner when the bucket answers again). */
export const PIN_RETRY_MS = 10_000;

/** Bytes of the cache (as the cache counts them) that pins may take under `capBytes`. */
export function pinRoomBytes(capBytes: number, chunkSize: number): number {
  return Math.max(0, capBytes - Math.max(Math.ceil(capBytes * PIN_WRITE_MARGIN_SHARE), PIN_WRITE_MARGIN_CHUNKS * chunkSize));
}

/** The smallest cap that leaves room for `pinnedBytes` (cache bytes). */
export function capNeededForPins(pinnedBytes: number, chunkSize: number): number {
  if (pinnedBytes <= 0) return 0;
  return Math.max(Math.ceil(pinnedBytes / (1 - PIN_WRITE_MARGIN_SHARE)), pinnedBytes + PIN_WRITE_MARGIN_CHUNKS * chunkSize);
}

/** A path inside the filespace in its one spelling: "/", or "/a/b" (no ".", "..", empty or trailing parts). */
export function normalFsPath(p: string): string {
  const parts: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') parts.pop();
    else parts.push(part);
  }
  return '/' + parts.join('/');
}

/** The inode at filespace path `p`, refusing what cannot be pinned (a clear one-line error). */
export function resolvePinPath(tree: Tree, p: string): number {
  const norm = normalFsPath(p);
  let ino = ROOT_INO;
  let sofar = '';
  for (const name of norm.split('/').filter(Boolean)) {
    const here = tree.lookup(ino, name);
    sofar += `/${name}`;
    if (!here) throw new UserError(`${sofar} does not exist in the filespace`, 'NOT_FOUND');
    if (here.kind !== 'dir' && sofar !== norm) throw new UserError(`${sofar} is not a folder`, 'NOT_FOUND');
    ino = here.ino;
  }
  const node = tree.get(ino)!;
  if (node.kind !== 'dir' && node.kind !== 'file')
    throw new UserError(
      `${norm} is a ${node.kind === 'symlink' ? 'symbolic link' : 'special file'}; pin a file or folder`,
      'BAD_INPUT',
    );
  return ino;
}

/** Chunks (name -> data bytes) of everything under `ino`, and every inode seen (folders and files). */
export function contentUnder(tree: Tree, ino: number, chunks = new Map<string, number>(), inos = new Set<number>()): void {
  const stack = [ino];
  while (stack.length > 0) {
    const at = stack.pop()!;
    if (inos.has(at)) continue;
    const node = tree.get(at);
    if (!node) continue;
    inos.add(at);
    if (node.entries) for (const child of node.entries.values()) stack.push(child);
    for (const c of node.chunks ?? []) if (c) chunks.set(c[0], c[1]);
  }
}

/** Bytes the cache counts for these chunks (each distinct chunk once). */
export function cacheBytesOf(chunks: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const len of chunks.values()) n += physicalSize(len);
  return n;
}

function dataBytesOf(chunks: ReadonlyMap<string, number>): number {
  let n = 0;
  for (const len of chunks.values()) n += len;
  return n;
}

/** The chunks of every pin together (each distinct chunk once). */
export function pinnedChunks(tree: Tree, pins: readonly PinRecord[]): Map<string, number> {
  const chunks = new Map<string, number>();
  for (const p of pins) contentUnder(tree, p.ino, chunks);
  return chunks;
}

/** Refuses a pin of `what` when pins would then hold `pinnedBytes` (cache bytes), more than the cap leaves room for. */
export function checkPinsFit(what: string, pinnedBytes: number, capBytes: number, chunkSize: number): void {
  const room = pinRoomBytes(capBytes, chunkSize);
  if (pinnedBytes <= room) return;
  throw new UserError(
    `pinning ${what} needs ${formatSize(pinnedBytes - room)} more than the cache cap of ${formatSize(capBytes)} leaves room for; raise the cap or pin less`,
    'CACHE_TOO_SMALL',
  );
}

/** Refuses a cache cap that leaves no room for what pins hold (`pinnedBytes`, cache bytes). */
export function checkCapForPins(capBytes: number, pinnedBytes: number, chunkSize: number): void {
  if (pinnedBytes <= pinRoomBytes(capBytes, chunkSize)) return;
  throw new UserError(
    `the cache cap cannot be ${formatSize(capBytes)}: pinned files take ${formatSize(pinnedBytes)} and need a cap of at least ${formatSize(capNeededForPins(pinnedBytes, chunkSize))}; unpin some first`,
    'CACHE_TOO_SMALL',
  );
}

/**
 * New pins for `paths` added to `pins`: resolved, checked, and refused as a whole (nothing
 * changes) when one is bad or they do not fit. Paths already pinned are left as they are.
 */
export function planPins(
  tree: Tree,
  pins: readonly PinRecord[],
  paths: readonly string[],
  capBytes: number,
): { pins: PinRecord[]; added: PinRecord[] } {
  const next = [...pins];
  const added: PinRecord[] = [];
  for (const p of paths) {
    const ino = resolvePinPath(tree, p);
    if (next.some((x) => x.ino === ino)) continue;
    const rec = { ino, path: normalFsPath(p) };
    next.push(rec);
    added.push(rec);
  }
  if (added.length > 0) {
    const what = added.length === 1 ? added[0]!.path : `${added.length} paths`;
    checkPinsFit(what, cacheBytesOf(pinnedChunks(tree, next)), capBytes, tree.chunkSize);
  }
  return { pins: next, added };
}

/** `pins` without those `paths` name (by current path, or by the inode a path leads to); refuses a path that is not pinned. */
export function planUnpins(tree: Tree, pins: readonly PinRecord[], paths: readonly string[]): PinRecord[] {
  let next = [...pins];
  for (const p of paths) {
    const norm = normalFsPath(p);
    let hit = next.find((x) => x.path === norm);
    if (!hit) {
      let ino: number | undefined;
      try {
        ino = resolvePinPath(tree, norm);
      } catch {
        ino = undefined;
      }
      hit = next.find((x) => x.ino === ino);
    }
    if (!hit) {
      const known = pins.map((x) => x.path).join(', ');
      throw new UserError(`${norm} is not pinned${known ? ` (pinned: ${known})` : ' (nothing is pinned)'}`, 'NOT_FOUND');
    }
    next = next.filter((x) => x !== hit);
  }
  return next;
}

/**
 * Current paths of `pins` in `tree`, without those whose inode is gone (deleted). A path that
 * still leads to its inode is kept as it is; otherwise (renamed) it is looked up again.
 */
export function currentPins(tree: Tree, pins: readonly PinRecord[]): { pins: PinRecord[]; dropped: PinRecord[] } {
  const kept: PinRecord[] = [];
  const dropped: PinRecord[] = [];
  let paths: Map<number, string[]> | undefined;
  for (const p of pins) {
    if (!tree.get(p.ino)) {
      dropped.push(p);
      continue;
    }
    let still: boolean;
    try {
      still = resolvePinPath(tree, p.path) === p.ino;
    } catch {
      still = false;
    }
    if (still) {
      kept.push(p);
      continue;
    }
    // A rename: the paths of all pins at once, found upward from each.
    paths ??= pathsOfInodes(
      tree,
      pins.map((x) => x.ino),
    );
    const now = paths.get(p.ino)?.[0];
    if (now === undefined) dropped.push(p);
    else kept.push({ ino: p.ino, path: now });
  }
  return { pins: kept, dropped };
}

export interface PinKeeperOptions {
  readonly tree: () => Tree;
  readonly cache: ChunkCache;
  readonly fetcher: ChunkFetcher;
  /** Download slots pins may use at once (the download concurrency). */
  readonly concurrency: () => number;
  readonly offline: () => boolean;
  readonly pins: readonly PinRecord[];
  readonly onPinsChanged: (pins: readonly PinRecord[]) => void;
  readonly log: (msg: string) => void;
}

/** The pins of a running engine: what is pinned, keeping it cached, and its progress. */
export class PinKeeper {
  private records: PinRecord[];
  /** Chunks of each pin, parallel to `records`. */
  private perPin: Array<Map<string, number>> = [];
  private all = new Map<string, number>();
  /** Inodes under pins: a change to one of them (or in one of them) changes what is pinned. */
  private watched = new Set<number>();
  private recomputeTimer: NodeJS.Timeout | undefined;
  /** A change to pinned content waits for the next recompute. */
  private contentStale = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private downloading: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  /** Why the background download stopped short, if it did (no room, the bucket failing). */
  problem: string | undefined;

  constructor(private readonly opts: PinKeeperOptions) {
    this.records = [...opts.pins];
    this.recompute();
  }

  get pins(): readonly PinRecord[] {
    return this.records;
  }

  /** Cache bytes of every pinned chunk. */
  get pinnedBytes(): number {
    return cacheBytesOf(this.all);
  }

  /** Starts keeping pinned data cached (downloading what is missing). */
  start(): void {
    this.kick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.recomputeTimer);
    clearTimeout(this.retryTimer);
  }

  /** The bucket answers again: a download that stopped on a failure goes on now. */
  retryNow(): void {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.kick();
    }
  }

  /** Pins `paths` (filespace paths); refuses all of them, changing nothing, if one is bad or they do not fit. */
  add(paths: readonly string[], capBytes: number): PinRecord[] {
    const tree = this.opts.tree();
    const { pins, added } = planPins(tree, currentPins(tree, this.records).pins, paths, capBytes);
    if (added.length > 0) this.replace(pins);
    return added;
  }

  /** Unpins `paths`; refuses all of them, changing nothing, if one is not pinned. */
  remove(paths: readonly string[]): void {
    const tree = this.opts.tree();
    this.replace(planUnpins(tree, currentPins(tree, this.records).pins, paths));
  }

  /** Refuses a cache cap that leaves no room for what is pinned now. */
  checkCap(capBytes: number): void {
    checkCapForPins(capBytes, this.pinnedBytes, this.opts.tree().chunkSize);
  }

  private replace(pins: PinRecord[]): void {
    this.records = pins;
    this.opts.onPinsChanged(this.records);
    this.recompute();
    this.kick();
  }

  /** Each pin with how much of it is here. */
  progress(): PinProgress[] {
    const cache = this.opts.cache;
    return this.records.map((p, i) => {
      const chunks = this.perPin[i] ?? new Map<string, number>();
      let local = 0;
      for (const [name, len] of chunks) if (cache.has(name)) local += len;
      return { path: p.path, localBytes: local, totalBytes: dataBytesOf(chunks) };
    });
  }

  /**
   * Tree ops just applied (a local commit, or the writer's changes on a follower); 'all' when
   * the tree was replaced. Recomputes (debounced) when they touch pinned inodes, or may have
   * moved or removed a pin.
   */
  noteOps(ops: readonly MetaOp[] | 'all'): void {
    if (this.records.length === 0 || this.stopped) return;
    if (ops === 'all') return this.schedule('content');
    for (const op of ops) {
      const what = this.touches(op);
      if (what) this.schedule(what);
    }
  }

  /**
   * What an op may change: pinned content (it names a pinned inode, or a pinned folder), or
   * only where pins are (a rename or removal elsewhere may move or delete a pin or a folder
   * above one: the pins' paths are checked, O(pins × depth)).
   */
  private touches(op: MetaOp): 'content' | 'paths' | undefined {
    const w = this.watched;
    switch (op.t) {
      case 'mk':
      case 'ln':
        return w.has(op.parent) ? 'content' : undefined;
      case 'rm':
        return w.has(op.parent) ? 'content' : 'paths';
      case 'mv':
        return w.has(op.sp) || w.has(op.dp) ? 'content' : 'paths';
      case 'attr':
      case 'chunk':
      case 'xattr':
        return w.has(op.ino) ? 'content' : undefined;
    }
  }

  private schedule(what: 'content' | 'paths'): void {
    if (what === 'content') this.contentStale = true;
    if (this.recomputeTimer) return;
    this.recomputeTimer = setTimeout(() => {
      this.recomputeTimer = undefined;
      if (this.stopped) return;
      const content = this.contentStale;
      this.contentStale = false;
      if (content || this.pathsChanged()) {
        this.recompute();
        this.kick();
      }
    }, PIN_RECOMPUTE_DELAY_MS);
    this.recomputeTimer.unref();
  }

  /** Whether a pin was renamed or deleted (then the whole recompute runs). */
  private pathsChanged(): boolean {
    const { pins, dropped } = currentPins(this.opts.tree(), this.records);
    return dropped.length > 0 || pins.some((p, i) => p.path !== this.records[i]?.path);
  }

  /** Works out what is pinned now: the pins' current paths and content. O(pinned content). */
  private recompute(): void {
    const tree = this.opts.tree();
    const { pins, dropped } = currentPins(tree, this.records);
    const changed = dropped.length > 0 || pins.some((p, i) => p.path !== this.records[i]?.path);
    for (const d of dropped) this.opts.log(`unpinned ${d.path}: it was deleted`);
    this.records = pins;
    const all = new Map<string, number>();
    const watched = new Set<number>();
    this.perPin = pins.map((p) => {
      const chunks = new Map<string, number>();
      contentUnder(tree, p.ino, chunks, watched);
      for (const [k, v] of chunks) all.set(k, v);
      return chunks;
    });
    this.all = all;
    this.watched = watched;
    this.opts.cache.setPinned(new Set(all.keys()));
    if (changed) this.opts.onPinsChanged(this.records);
  }

  /** Downloads missing pinned chunks (one pass at a time; a change meanwhile runs another). */
  private kick(): void {
    if (this.stopped) return;
    if (this.downloading) {
      this.again = true;
      return;
    }
    this.downloading = this.downloadMissing()
      .catch((err) => this.opts.log(`downloading pinned data: ${(err as Error).message}`))
      .finally(() => {
        this.downloading = undefined;
        if (this.again) {
          this.again = false;
          this.kick();
        }
      });
  }

  private async downloadMissing(): Promise<void> {
    const cache = this.opts.cache;
    const missing = [...this.all.keys()].filter((n) => !cache.has(n));
    if (missing.length === 0) {
      this.problem = undefined;
      return;
    }
    // Offline or out of room, the pass stops; a chunk that fails otherwise is passed over (the
    // others still come) and tried again with the next pass.
    let failure: string | undefined;
    let halted = false;
    let next = 0;
    const worker = async () => {
      while (!this.stopped && !halted && next < missing.length) {
        if (this.opts.offline()) {
          failure = 'the bucket does not answer';
          halted = true;
          return;
        }
        const name = missing[next++]!;
        if (cache.has(name) || !this.all.has(name)) continue;
        try {
          if (!(await this.opts.fetcher.background(name))) {
            failure = 'the cache has no room for it (changes waiting to upload fill it)';
            halted = true;
          }
        } catch (err) {
          failure = (err as Error).message;
        }
      }
    };
    const n = Math.max(1, Math.min(this.opts.concurrency(), missing.length));
    await Promise.all(Array.from({ length: n }, worker));
    if (failure !== undefined && !this.stopped) {
      if (this.problem !== failure) this.opts.log(`pinned data not all downloaded yet: ${failure}; trying again`);
      this.problem = failure;
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined;
        this.kick();
      }, PIN_RETRY_MS);
      this.retryTimer.unref();
    } else {
      this.problem = undefined;
    }
  }
}
