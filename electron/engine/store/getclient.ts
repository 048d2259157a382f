/**
 * GetClient: a minimal HTTP/1.1 client for GETs whose answer body goes straight into its final
 * buffer, read there by the socket itself. DirectPut (s3direct.ts) sends chunk GETs this way.
 *
 * Why (measured): node:http hands each socket read to the body as a fresh 64 KiB Buffer, which
 * the caller then copies where it belongs; V8 counts each of those ArrayBuffers against its
 * external-memory budget, so a cold read of 1 GiB cost 57 to 83 mark-compacts (a third of the
 * engine's CPU in concurrent marking and sweeping) plus a memmove pass over every byte on the
 * JS thread; this way 16, and the engine's CPU seconds for that read about halved
 * (test/bench/coldprobe.ts seq, on a loaded 2-core machine). Here each socket is created with
 * `onread`: the status line and headers are read into a small scratch buffer of the connection;
 * once they are parsed, the body bytes already in the scratch are copied to the destination
 * (the caller's `into` when the body fits, else one buffer of the announced length) and every
 * further read is given the rest of that destination. No Buffer is allocated per read and no
 * 'data' event is emitted.
 *
 * The invariant the fast path relies on: the read buffer handed to the socket is never longer
 * than what is left of the announced body, so the socket cannot write past the answer into the
 * caller's buffer; a connection whose exchange is over (settled, failed, abandoned) is either
 * destroyed (no read lands anywhere after that) or back on the scratch buffer before its read
 * callback returns (the next read buffer is asked for after the callback).
 *
 * Answers that are not a 2xx with a Content-Length (error answers, bodies without a length or
 * sent chunked) take a plain path: the bytes are collected (an error body up to a bound), the
 * chunked framing is removed, and the whole body is returned.
 *
 * Connections: kept alive per client, at most `maxSockets` at once (further GETs wait for one),
 * the most recently used first. A connection goes back to the idle set only after a complete
 * answer that did not say `Connection: close`; idle ones are unref'd (they never keep the
 * process alive) and closed after IDLE_SOCKET_MS or when the server closes them. A connection
 * that errors, times out, or carries bytes nobody asked for is destroyed. A GET sent on a kept
 * connection that fails before any byte of the answer (the server closed it meanwhile) is sent
 * once more on a new connection, as node's agent and the SDK effectively do.
 *
 * Timeouts, as node:http with the SDK's handler: connecting (`connectTimeoutMs`, until the TLS
 * handshake for https), the request until the answer's headers (`requestTimeoutMs`, waiting for
 * a connection included), and the connection idle mid-answer for as long.
 */

import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';

export interface GetClientOptions {
  readonly https: boolean;
  readonly hostname: string;
  readonly port: number | undefined;
  /** The agent whose connections the SDK uses: its TLS options, socket bound and keep-alive probes are taken. */
  readonly agent: http.Agent;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** The body of an answer that is not a 2xx is kept up to this many bytes (the rest is read and dropped). */
  readonly errorBodyMax: number;
}

export interface GetAnswer {
  readonly status: number;
  /** Header names in lower case; repeated headers joined with ', '. */
  readonly headers: Record<string, string>;
  readonly body: Buffer;
  /** The Content-Length the answer announced, if it did (and was not chunked). */
  readonly length: number | undefined;
}

/** Bytes read into a connection's scratch buffer before its headers are found; it doubles up to HEAD_MAX. */
const SCRATCH_BYTES = 16 * 1024;
const HEAD_MAX = 256 * 1024;
/** A kept connection unused this long is closed. */
const IDLE_SOCKET_MS = 15_000;
const DEFAULT_MAX_SOCKETS = 32;
const CRLF2 = Buffer.from('\r\n\r\n', 'latin1');

/** One GET's side of a connection. */
interface Exchange {
  readonly into: Buffer | undefined;
  /** The status line and headers were read. */
  headed(): void;
  /**
   * Called once, unless the exchange is abandoned first. `stale`: the connection was a kept one
   * and failed before any byte of the answer.
   */
  done(err: Error | undefined, answer?: GetAnswer, stale?: boolean): void;
}

export class GetClient {
  private readonly idle: Connection[] = [];
  private readonly waiting: Array<() => void> = [];
  private count = 0;
  private readonly maxSockets: number;
  private readonly connectOptions: net.NetConnectOpts & tls.ConnectionOptions;
  private tlsSession: Buffer | undefined;
  private closed = false;

  constructor(readonly o: GetClientOptions) {
    const agent = o.agent as http.Agent & { options?: Record<string, unknown>; keepAliveMsecs?: number };
    this.maxSockets = Number.isFinite(agent.maxSockets) && agent.maxSockets > 0 ? agent.maxSockets : DEFAULT_MAX_SOCKETS;
    const port = o.port ?? (o.https ? 443 : 80);
    // The agent's own options (CA, client certificate, TLS versions, rejectUnauthorized...), as its
    // createConnection would pass them; `path` is the agent's null (not a unix socket).
    const base = { ...(agent.options ?? {}), path: undefined, host: o.hostname, port, noDelay: true };
    this.connectOptions = o.https ? { ...base, servername: net.isIP(o.hostname) ? undefined : o.hostname } : base;
    this.keepAliveMsecs = agent.keepAliveMsecs ?? 1000;
  }

  private readonly keepAliveMsecs: number;

  /** Closes the idle connections; GETs in flight finish on theirs, which are closed after. */
  close(): void {
    this.closed = true;
    for (const c of this.idle.splice(0)) c.destroy();
  }

  /**
   * Sends `GET path` with `headers` (host included); resolves to the whole answer, any status.
   * A 2xx with a Content-Length is read into `into` when it fits. The signal destroys the
   * connection and rejects with an AbortError.
   */
  get(
    path: string,
    headers: Record<string, string>,
    into: Buffer | undefined,
    signal: AbortSignal | undefined,
  ): Promise<GetAnswer> {
    let head = `GET ${path} HTTP/1.1\r\n`;
    for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
    head += 'connection: keep-alive\r\n\r\n';
    const { requestTimeoutMs } = this.o;
    return new Promise<GetAnswer>((resolve, reject) => {
      let settled = false;
      let conn: Connection | undefined;
      let cancelWait: (() => void) | undefined;
      let fresh = false;
      let requestTimer: NodeJS.Timeout | undefined;
      const finish = (err: Error | undefined, answer?: GetAnswer) => {
        if (settled) return;
        settled = true;
        if (requestTimer) clearTimeout(requestTimer);
        signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(answer!);
      };
      const giveUp = (err: Error) => {
        if (settled) return;
        cancelWait?.();
        const c = conn;
        conn = undefined;
        c?.destroy();
        finish(err);
      };
      const exchange: Exchange = {
        into,
        headed: () => {
          if (requestTimer) clearTimeout(requestTimer);
          requestTimer = undefined;
        },
        done: (err, answer, stale) => {
          conn = undefined;
          if (settled) return;
          if (err && stale && !fresh) {
            fresh = true;
            start();
            return;
          }
          finish(err, answer);
        },
      };
      const start = () => {
        cancelWait = undefined;
        if (settled) return;
        const c = this.acquire(fresh);
        if (!c) {
          cancelWait = this.wait(start);
          return;
        }
        conn = c;
        c.begin(exchange, head);
      };
      const onAbort = () => giveUp(abortError());
      if (signal?.aborted) {
        finish(abortError());
        return;
      }
      signal?.addEventListener('abort', onAbort, { once: true });
      if (requestTimeoutMs > 0) {
        requestTimer = setTimeout(
          () =>
            giveUp(
              Object.assign(new Error(`the request was not answered within ${requestTimeoutMs} ms`), {
                name: 'TimeoutError',
                code: 'ETIMEDOUT',
              }),
            ),
          requestTimeoutMs,
        );
      }
      start();
    });
  }

  /** A kept connection (the most recently used), else a new one within the bound, else none. */
  private acquire(fresh: boolean): Connection | undefined {
    if (!fresh) {
      const kept = this.idle.pop();
      if (kept) return kept;
    }
    // A new connection is wanted while kept ones fill the bound: the oldest kept one makes room.
    if (this.count >= this.maxSockets && this.idle.length > 0) this.idle.shift()!.destroy(false);
    if (this.count >= this.maxSockets) return undefined;
    this.count++;
    return new Connection(this, this.connectOptions, this.o, this.tlsSession, this.keepAliveMsecs);
  }

  private wait(start: () => void): () => void {
    this.waiting.push(start);
    return () => {
      const at = this.waiting.indexOf(start);
      if (at >= 0) this.waiting.splice(at, 1);
    };
  }

  private wake(): void {
    this.waiting.shift()?.();
  }

  /** @internal A connection whose answer completed and may carry another request. */
  release(c: Connection): void {
    if (this.closed) {
      c.destroy();
      return;
    }
    this.idle.push(c);
    c.rest(IDLE_SOCKET_MS);
    this.wake();
  }

  /** @internal A connection is gone (destroyed or closed); its place is free. */
  forget(c: Connection, wake: boolean): void {
    this.count--;
    const at = this.idle.indexOf(c);
    if (at >= 0) this.idle.splice(at, 1);
    if (wake) this.wake();
  }

  /** @internal */
  keepSession(session: Buffer): void {
    this.tlsSession = session;
  }
}

type Phase = 'idle' | 'head' | 'body' | 'collect';

/** How a collected body ends. */
type Framing = { kind: 'length'; left: number } | { kind: 'chunked'; dechunker: Dechunker } | { kind: 'close' };

/** One keep-alive connection and the answer being read on it. */
class Connection {
  private readonly socket: net.Socket;
  private scratch: Buffer = Buffer.allocUnsafeSlow(SCRATCH_BYTES);
  /** Bytes of the scratch holding the answer's head read so far. */
  private used = 0;
  private searchFrom = 0;
  private phase: Phase = 'idle';
  private ex: Exchange | undefined;
  /** Some byte of the current answer arrived. */
  private answered = false;
  /** Answers completed on this connection. */
  private served = 0;
  private gone = false;
  private connectTimer: NodeJS.Timeout | undefined;
  // The answer in progress.
  private status = 0;
  private headers: Record<string, string> = {};
  private keepAlive = false;
  private out: Buffer | undefined;
  private off = 0;
  private announced = 0;
  private framing: Framing | undefined;
  private parts: Buffer[] = [];
  private kept = 0;
  private keepMax = 0;

  constructor(
    private readonly client: GetClient,
    connectOptions: net.NetConnectOpts & tls.ConnectionOptions,
    private readonly o: GetClientOptions,
    session: Buffer | undefined,
    keepAliveMsecs: number,
  ) {
    const onread = {
      buffer: () => this.readBuffer(),
      callback: (n: number) => {
        this.onRead(n);
        return true; // keep reading
      },
    };
    this.socket = o.https
      ? tls.connect({ ...connectOptions, session, onread } as unknown as tls.ConnectionOptions)
      : net.connect({ ...connectOptions, onread } as unknown as net.NetConnectOpts);
    const socket = this.socket;
    if (o.connectTimeoutMs > 0) {
      this.connectTimer = setTimeout(
        () =>
          this.fail(Object.assign(new Error(`no connection within ${o.connectTimeoutMs} ms`), { name: 'TimeoutError' }), false),
        o.connectTimeoutMs,
      );
    }
    socket.once(o.https ? 'secureConnect' : 'connect', () => {
      if (this.connectTimer) clearTimeout(this.connectTimer);
      socket.setKeepAlive(true, keepAliveMsecs);
    });
    if (o.https) socket.on('session', (s: Buffer) => client.keepSession(s));
    socket.on('error', (err) => this.fail(err, this.staleNow()));
    socket.on('end', () => {
      if (this.phase === 'collect' && this.framing?.kind === 'close') this.complete();
      else this.fail(this.hangUp(), this.staleNow());
    });
    socket.on('close', () => {
      this.fail(this.hangUp(), this.staleNow());
      this.destroy();
    });
    socket.on('timeout', () => {
      if (!this.ex) {
        this.destroy(); // kept unused long enough
        return;
      }
      const ms = this.o.requestTimeoutMs;
      this.fail(Object.assign(new Error(`the connection sat idle for ${ms} ms`), { name: 'TimeoutError' }), false);
    });
  }

  /** Sends the request of `ex` (the connection is new or kept, and idle). */
  begin(ex: Exchange, head: string): void {
    this.ex = ex;
    this.phase = 'head';
    this.used = 0;
    this.searchFrom = 0;
    this.answered = false;
    this.socket.ref();
    this.socket.setTimeout(this.o.requestTimeoutMs > 0 ? this.o.requestTimeoutMs : 0);
    this.socket.write(head, 'latin1');
  }

  /** Kept unused: closed after `ms`, never keeping the process alive. */
  rest(ms: number): void {
    this.socket.setTimeout(ms);
    this.socket.unref();
  }

  /** Closes the connection; an exchange on it is dropped without a word (its owner gave up). */
  destroy(wake = true): void {
    this.ex = undefined;
    this.phase = 'idle';
    this.out = undefined;
    if (this.gone) return;
    this.gone = true;
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.socket.destroy();
    this.client.forget(this, wake);
  }

  private staleNow(): boolean {
    return this.served > 0 && !this.answered;
  }

  private hangUp(): Error {
    if (this.phase === 'body' || this.phase === 'collect') {
      const got = this.phase === 'body' ? ` after ${this.off} of ${this.announced} bytes` : '';
      return Object.assign(new Error(`the connection closed in the middle of the answer${got}`), { code: 'ECONNRESET' });
    }
    return Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  }

  /** Where the next read lands: the rest of the body's buffer, or the scratch. Never empty. */
  private readBuffer(): Buffer {
    if (this.phase === 'body') return this.out!.subarray(this.off, this.announced);
    if (this.phase === 'collect') this.used = 0; // collected pieces are copied out of the scratch
    return this.scratch.subarray(this.used);
  }

  private onRead(n: number): void {
    if (!this.ex) {
      // Bytes nobody asked for (after a complete answer): the connection is out of step.
      this.destroy();
      return;
    }
    this.answered = true;
    if (this.phase === 'body') {
      this.off += n;
      if (this.off === this.announced) this.complete();
      return;
    }
    if (this.phase === 'collect') {
      this.collect(this.scratch.subarray(0, n));
      return;
    }
    this.used += n;
    this.readHead();
  }

  private readHead(): void {
    for (;;) {
      const end = this.scratch.subarray(0, this.used).indexOf(CRLF2, this.searchFrom);
      if (end < 0) {
        this.searchFrom = Math.max(0, this.used - 3);
        if (this.used === this.scratch.length) {
          if (this.scratch.length >= HEAD_MAX) {
            this.fail(new Error(`the answer's headers ran past ${HEAD_MAX} bytes`), false);
            return;
          }
          const bigger = Buffer.allocUnsafeSlow(this.scratch.length * 2);
          this.scratch.copy(bigger, 0, 0, this.used);
          this.scratch = bigger;
        }
        return;
      }
      const head = parseHead(this.scratch.toString('latin1', 0, end));
      if (!head) {
        this.fail(new Error('the answer was not HTTP/1.x'), false);
        return;
      }
      const rest = this.scratch.subarray(end + 4, this.used);
      if (head.status < 200) {
        // 100 Continue and the like: the real answer follows.
        rest.copy(this.scratch, 0);
        this.used = rest.length;
        this.searchFrom = 0;
        continue;
      }
      this.status = head.status;
      this.headers = head.headers;
      const connection = (head.headers.connection ?? '').toLowerCase();
      this.keepAlive = head.version === '1.1' ? !/\bclose\b/.test(connection) : /\bkeep-alive\b/.test(connection);
      this.ex!.headed();
      this.startBody(rest);
      return;
    }
  }

  /** The headers are read; `rest` is what followed them in the scratch. */
  private startBody(rest: Buffer): void {
    const h = this.headers;
    const te = h['transfer-encoding'];
    const cl = h['content-length'];
    if (cl !== undefined && !/^\d+$/.test(cl)) {
      this.fail(new Error(`the answer's Content-Length is not a number (${cl})`), false);
      return;
    }
    const length = cl === undefined ? undefined : Number(cl);
    if (length !== undefined && !Number.isSafeInteger(length)) {
      this.fail(new Error(`the answer's Content-Length is too large (${cl})`), false);
      return;
    }
    const ok = this.status >= 200 && this.status < 300;
    this.parts = [];
    this.kept = 0;
    this.keepMax = ok ? Infinity : this.o.errorBodyMax;
    this.announced = length ?? 0;
    if (this.status === 204 || this.status === 304) {
      this.framing = { kind: 'length', left: 0 };
    } else if (te !== undefined) {
      const chunked = /(?:^|,)\s*chunked\s*$/i.test(te);
      this.framing = chunked ? { kind: 'chunked', dechunker: new Dechunker() } : { kind: 'close' };
      if (!chunked) this.keepAlive = false;
    } else if (length !== undefined) {
      if (ok) {
        // The fast path: the body goes where it belongs, read there by the socket.
        if (rest.length > length) {
          this.fail(new Error(`the answer ran past its Content-Length of ${length} bytes`), false);
          return;
        }
        const into = this.ex!.into;
        this.out = into && into.length >= length ? into.subarray(0, length) : Buffer.allocUnsafeSlow(length);
        rest.copy(this.out, 0);
        this.off = rest.length;
        this.used = 0;
        if (this.off === length) this.complete();
        else this.phase = 'body';
        return;
      }
      this.framing = { kind: 'length', left: length };
    } else {
      this.framing = { kind: 'close' };
      this.keepAlive = false;
    }
    this.phase = 'collect';
    this.used = 0;
    this.collect(rest);
  }

  /** A piece of a collected body (a view of the scratch: copied out before the next read). */
  private collect(piece: Buffer): void {
    const f = this.framing!;
    if (f.kind === 'length') {
      if (piece.length > f.left) {
        this.fail(new Error(`the answer ran past its Content-Length of ${this.announced} bytes`), false);
        return;
      }
      f.left -= piece.length;
      this.keep(piece);
      if (f.left === 0) this.complete();
      return;
    }
    if (f.kind === 'close') {
      this.keep(piece);
      return;
    }
    let ended: number;
    try {
      ended = f.dechunker.feed(piece, (data) => this.keep(data));
    } catch (err) {
      this.fail(err as Error, false);
      return;
    }
    if (ended < 0) return;
    if (ended < piece.length) {
      this.fail(new Error('the answer ran past the end of its chunked body'), false);
      return;
    }
    this.complete();
  }

  private keep(data: Buffer): void {
    if (data.length === 0) return;
    const room = this.keepMax - this.kept;
    if (room <= 0) return;
    const piece = data.length <= room ? data : data.subarray(0, room);
    this.parts.push(Buffer.from(piece));
    this.kept += piece.length;
  }

  /** The answer is read whole: the exchange is told, and the connection kept or closed. */
  private complete(): void {
    const ex = this.ex!;
    const answer: GetAnswer = {
      status: this.status,
      headers: this.headers,
      body: this.out ?? Buffer.concat(this.parts),
      length: this.framing?.kind === 'chunked' || this.framing?.kind === 'close' ? undefined : this.announced,
    };
    this.ex = undefined;
    this.phase = 'idle';
    this.out = undefined;
    this.framing = undefined;
    this.parts = [];
    this.used = 0;
    this.served++;
    if (this.keepAlive && !this.gone) this.client.release(this);
    else this.destroy();
    ex.done(undefined, answer);
  }

  /** The exchange (if any) fails with `err`; the connection is closed. */
  private fail(err: Error, stale: boolean): void {
    const ex = this.ex;
    this.destroy();
    ex?.done(err, undefined, stale);
  }
}

function parseHead(text: string): { version: string; status: number; headers: Record<string, string> } | undefined {
  const lines = text.split('\r\n');
  const m = /^HTTP\/1\.([01]) (\d{3})(?: .*)?$/.exec(lines[0] ?? '');
  if (!m) return undefined;
  const headers = Object.create(null) as Record<string, string>;
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    const colon = line.indexOf(':');
    if (colon <= 0) return undefined;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined ? value : `${headers[name]}, ${value}`;
  }
  return { version: `1.${m[1]}`, status: Number(m[2]), headers };
}

/** Removes the chunked framing of a body, piece by piece. */
class Dechunker {
  private state: 'size' | 'data' | 'dataEnd' | 'trailer' = 'size';
  private line = '';
  private left = 0;

  /**
   * Feeds the next bytes, passing the data within to `emit`; returns how many bytes of `b` the
   * body took when it ended in them (the last chunk and the trailer read), else -1.
   */
  feed(b: Buffer, emit: (data: Buffer) => void): number {
    let i = 0;
    while (i < b.length) {
      if (this.state === 'data') {
        const n = Math.min(this.left, b.length - i);
        emit(b.subarray(i, i + n));
        i += n;
        this.left -= n;
        if (this.left === 0) this.state = 'dataEnd';
        continue;
      }
      const lf = b.indexOf(10, i);
      this.line += b.toString('latin1', i, lf < 0 ? b.length : lf);
      if (this.line.length > 8192) throw new Error('a line of the chunked body is too long');
      if (lf < 0) return -1;
      i = lf + 1;
      const line = this.line.endsWith('\r') ? this.line.slice(0, -1) : this.line;
      this.line = '';
      if (this.state === 'size') {
        const m = /^([0-9a-fA-F]{1,12})[ \t]*(?:;.*)?$/.exec(line);
        if (!m) throw new Error(`a chunk size that is not one (${line.slice(0, 40)})`);
        this.left = parseInt(m[1]!, 16);
        this.state = this.left === 0 ? 'trailer' : 'data';
      } else if (this.state === 'dataEnd') {
        if (line !== '') throw new Error('a chunk longer than its size');
        this.state = 'size';
      } else if (line === '') {
        return i;
      }
    }
    return -1;
  }
}

function abortError(): Error {
  return Object.assign(new Error('the request was abandoned'), { name: 'AbortError' });
}
