/**
 * MonitoredStore: the ObjectStore the engine talks to, wrapped around the real one so that
 * at every moment the engine knows whether the bucket answers. Being offline is a state with
 * a start time, not a stream of errors (DESIGN: Status).
 *
 * - Any answer, including an S3 error (404, 403, 412, 500), means online. A request that ends
 *   without an answer (connection refused or reset, timed out) means offline.
 * - A request still unanswered after `probeTimeoutMs`, while nothing else was answered for
 *   that long, is either slow (a big upload) or hung. A probe tells which: a HEAD of one small
 *   object with its own `probeTimeoutMs` deadline. No answer to the probe (and none to
 *   anything else meanwhile) means offline, so a server that accepts connections but never
 *   answers is shown offline within about two probe timeouts, like one that refuses them.
 * - While offline it probes every `PROBE_INTERVAL_MS` (2 s). The first answer (a probe's or any
 *   request's) brings it online at once, `reconnects` goes up, and `onChange` runs, so work
 *   waiting on backoff timers starts again at once. If that first answer came to a request
 *   sent during the outage, requests sent before it and still waiting are cut off: they sit
 *   on connections that died with the outage, where the SDK would wait out its own timeouts
 *   and retries; they fail with a retryable CutOffError. (If it came to a request older than
 *   the outage, the old connections are alive: nothing is cut.)
 *
 * Outcomes of requests sent before the latest reconnect say nothing about now and are
 * ignored. A caller's own AbortSignal is honoured and its abort is no verdict either way.
 */

import { Signal } from '../util/concurrency';
import { CallOptions, GetOptions, GetResult, HeadResult, ObjectStore, PutOptions, StoreError, isNoAnswer } from './types';

/** How often the bucket is probed while it does not answer. */
export const PROBE_INTERVAL_MS = 2_000;

export interface MonitorOptions {
  /** A small object that exists (the filespace header); its HEAD is the probe. */
  readonly probeKey: string;
  /** An unanswered request triggers a probe after this long; an unanswered probe means offline. */
  readonly probeTimeoutMs: () => number;
  /** How often to probe while offline; default PROBE_INTERVAL_MS. */
  readonly probeIntervalMs?: number;
  readonly log?: (msg: string) => void;
  readonly now?: () => number;
}

/** A request sent while the bucket did not answer, cut off when it answered again: retry it now. */
export class CutOffError extends StoreError {
  constructor() {
    super(
      'Unreachable',
      'the request was sent while the bucket did not answer and was cut off when it answered again; it is retried',
    );
    this.name = 'CutOffError';
  }
}

/** What other parts of the engine need to know about the bucket's reachability. */
export interface Connectivity {
  readonly offline: boolean;
  /** Goes up every time the bucket answers again after not answering. */
  readonly reconnects: number;
  /** Notified at every change between online and offline. */
  readonly changed: Signal;
}

/** For stores that always answer (tests, the embedded store without a monitor). */
export const ALWAYS_ONLINE: Connectivity = { offline: false, reconnects: 0, changed: new Signal() };

interface Call {
  readonly startedAt: number;
  /** `reconnects` when the call started. */
  readonly epoch: number;
  readonly cutOff: AbortController;
  timer: NodeJS.Timeout | undefined;
}

export class MonitoredStore implements ObjectStore, Connectivity {
  readonly description: string;
  private offlineAt: number | undefined;
  private lastAnswerAt = 0;
  private readonly calls = new Set<Call>();
  private probing = false;
  private probeTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private epoch = 0;
  private readonly now: () => number;
  private readonly log: (msg: string) => void;
  /** Notified at every change between online and offline. */
  readonly changed = new Signal();
  /** Called at every change between online and offline (after the state changed). */
  onChange: (online: boolean) => void = () => undefined;

  constructor(
    private readonly inner: ObjectStore,
    private readonly o: MonitorOptions,
  ) {
    this.description = inner.description;
    this.now = o.now ?? Date.now;
    this.log = o.log ?? (() => undefined);
  }

  /** When the bucket stopped answering; undefined while it answers. */
  get offlineSince(): number | undefined {
    return this.offlineAt;
  }

  get offline(): boolean {
    return this.offlineAt !== undefined;
  }

  /** How many times the bucket came back after not answering. */
  get reconnects(): number {
    return this.epoch;
  }

  get(key: string, range?: { readonly start: number; readonly end: number }, call?: GetOptions): Promise<GetResult | undefined> {
    return this.track(call, (signal) => this.inner.get(key, range, { signal, into: call?.into }));
  }

  head(key: string, call?: CallOptions): Promise<HeadResult | undefined> {
    return this.track(call, (signal) => this.inner.head(key, { signal }));
  }

  put(key: string, body: Buffer, options?: PutOptions): Promise<string> {
    return this.track(options, (signal) => this.inner.put(key, body, { ...options, signal }));
  }

  delete(key: string, call?: CallOptions): Promise<void> {
    return this.track(call, (signal) => this.inner.delete(key, { signal }));
  }

  deleteMany(keys: readonly string[], call?: CallOptions): Promise<void> {
    return this.track(call, (signal) => this.inner.deleteMany(keys, { signal }));
  }

  list(prefix: string, call?: CallOptions): Promise<string[]> {
    return this.track(call, (signal) => this.inner.list(prefix, { signal }));
  }

  /**
   * An outcome reported from above the store: a success counts as an answer (nothing is cut
   * off for it). Failures are ignored: the request went through this store, which judged it
   * already, knowing whether it was sent before the latest reconnect.
   */
  note(err: unknown): void {
    if (err === undefined) this.answered(-Infinity);
  }

  /**
   * Gets reads ready ahead of the first one: a ranged GET of the probe key's first byte, the way
   * a chunk's segments are read. It opens the first connection, and a mount's first read then
   * finds that path's code run once already (V8 compiles a function at its first call: signing,
   * sending, parsing an answer). Never throws.
   */
  warm(): void {
    if (this.closed) return;
    const signal = AbortSignal.timeout(this.o.probeTimeoutMs());
    this.get(this.o.probeKey, { start: 0, end: 0 }, { signal }).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    for (const c of this.calls) if (c.timer) clearTimeout(c.timer);
    await this.inner.close();
  }

  private async track<T>(call: CallOptions | undefined, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const c: Call = { startedAt: this.now(), epoch: this.epoch, cutOff: new AbortController(), timer: undefined };
    const own = call?.signal;
    const signal = own ? AbortSignal.any([own, c.cutOff.signal]) : c.cutOff.signal;
    // Cut off means cut off, even for a store that ignores signals.
    const cut = new Promise<never>((_, reject) =>
      c.cutOff.signal.addEventListener('abort', () => reject(new Error('cut off')), { once: true }),
    );
    cut.catch(() => undefined);
    this.calls.add(c);
    this.watch(c);
    try {
      const pending = fn(signal);
      pending.catch(() => undefined); // it may fail after being cut off: never unhandled
      const v = await Promise.race([pending, cut]);
      if (c.epoch === this.epoch) this.answered(c.startedAt);
      return v;
    } catch (err) {
      if (c.cutOff.signal.aborted) throw new CutOffError();
      if (!own?.aborted && c.epoch === this.epoch) {
        if (isNoAnswer(err)) this.unanswered(err);
        else this.answered(c.startedAt);
      }
      throw err;
    } finally {
      if (c.timer) clearTimeout(c.timer);
      this.calls.delete(c);
    }
  }

  /** Probes the bucket if `c` stays unanswered for a probe timeout while nothing else answers. */
  private watch(c: Call): void {
    if (this.closed) return;
    const timeout = this.o.probeTimeoutMs();
    c.timer = setTimeout(() => {
      c.timer = undefined;
      if (!this.calls.has(c) || this.closed) return;
      if (!this.offline && this.now() - this.lastAnswerAt >= timeout) void this.probe();
      this.watch(c);
    }, timeout);
    c.timer.unref();
  }

  private async probe(): Promise<void> {
    if (this.probing || this.closed) return;
    this.probing = true;
    const startedAt = this.now();
    const epoch = this.epoch;
    try {
      await this.inner.head(this.o.probeKey, { signal: AbortSignal.timeout(this.o.probeTimeoutMs()) });
      this.answered(startedAt);
    } catch (err) {
      // Something else answered meanwhile: the bucket is there, only this probe was slow.
      if (epoch !== this.epoch || this.lastAnswerAt >= startedAt) return;
      if (isNoAnswer(err)) this.unanswered(err);
      else this.answered(startedAt);
    } finally {
      this.probing = false;
      this.scheduleProbe();
    }
  }

  private scheduleProbe(): void {
    if (!this.offline || this.closed || this.probeTimer || this.probing) return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      void this.probe();
    }, this.o.probeIntervalMs ?? PROBE_INTERVAL_MS);
    this.probeTimer.unref();
  }

  private answered(requestStartedAt: number): void {
    this.lastAnswerAt = this.now();
    const since = this.offlineAt;
    if (since === undefined) return;
    this.offlineAt = undefined;
    this.epoch++;
    if (this.probeTimer) clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    let cut = 0;
    if (requestStartedAt > since) {
      for (const c of this.calls) {
        if (c.startedAt < requestStartedAt) {
          c.cutOff.abort();
          cut++;
        }
      }
    }
    this.log(
      `the bucket answers again after ${Math.round((this.now() - since) / 1000)} s offline${cut > 0 ? `; retrying ${cut} request(s) sent meanwhile` : ''}`,
    );
    this.changed.notify();
    this.onChange(true);
  }

  private unanswered(err: unknown): void {
    if (this.offlineAt !== undefined || this.closed) return;
    this.offlineAt = this.now();
    this.log(
      `the bucket does not answer (${(err as Error).message}); working from the cache and checking every ${(this.o.probeIntervalMs ?? PROBE_INTERVAL_MS) / 1000} s`,
    );
    this.changed.notify();
    this.onChange(false);
    this.scheduleProbe();
  }
}
