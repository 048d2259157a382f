/**
 * A fault-injecting HTTP proxy on 127.0.0.1, placed between the engine and the S3 test server.
 * Tests switch faults on and off while the engine runs in its own process:
 *   - latencyMs: delay every matching request;
 *   - status: answer 500 or 503 SlowDown (S3 error XML) instead of forwarding;
 *   - reset: destroy the client connection without an answer;
 *   - stall: accept the request and never answer;
 *   - cutBody: forward, but cut the response body short after half of it;
 *   - offline: refuse new connections and drop open ones (the store is unreachable);
 *   - freeze/thaw: like a server process that is stopped and resumed: requests are accepted
 *     and read but held; at thaw they reach the server one by one in the order they came,
 *     even those whose client gave up meanwhile (its answer is then lost);
 *   - stripConditions: drop If-None-Match / If-Match from requests, like S3-compatible
 *     stores that ignore conditional writes;
 *   - hold: like freeze, for the matching requests only, until `releaseHeld` (a request held
 *     in the network while everything else goes through).
 * Faults apply to requests whose method and path match `match` (e.g. GETs of chunks only).
 * It counts the requests it saw (and logs when each arrived) and the faults it injected, so
 * tests can check both.
 */

import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { after, before } from 'node:test';
import { Bed, tmpDir } from './bed';

export interface Fault {
  latencyMs?: number;
  status?: 500 | 503;
  reset?: boolean;
  stall?: boolean;
  cutBody?: boolean;
  stripConditions?: boolean;
  hold?: boolean;
  /** Which requests the fault applies to; all when absent. */
  match?: { method?: string; pathIncludes?: string };
}

export class FaultProxy {
  private server: http.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private fault: Fault = {};
  private offline = false;
  port = 0;
  requests = 0;
  injected = 0;
  /** Every request seen: when it arrived (ms), its method, path, declared body size and the server's status. */
  /** Requests seen: `bytes` of the request's body, `range` asked for, `answerBytes` of the answer's body (as forwarded). */
  readonly log: Array<{
    at: number;
    method: string;
    url: string;
    bytes: number;
    range?: string;
    answerBytes?: number;
    status?: number;
    end?: number;
  }> = [];
  /** Requests held while frozen, with their bodies, in arrival order. */
  private held: Array<(done: () => void) => void> | undefined;
  /** Requests held by a `hold` fault, in arrival order. */
  private heldByFault: Array<(done: () => void) => void> = [];

  constructor(private readonly target: string) {}

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  set(fault: Fault): void {
    this.fault = fault;
  }

  clear(): void {
    this.fault = {};
    this.offline = false;
    void this.thaw();
  }

  /** Unreachable: every connection is reset at once, existing ones are dropped. */
  goOffline(): void {
    this.offline = true;
    for (const s of this.sockets) s.destroy();
  }

  goOnline(): void {
    this.offline = false;
  }

  /** Frozen server: from now on requests are read and held, unanswered, until `thaw`. */
  freeze(): void {
    this.held ??= [];
  }

  /** How many requests a `hold` fault holds now. */
  get heldCount(): number {
    return this.heldByFault.length;
  }

  /** Delivers the requests a `hold` fault held, like `thaw`; resolves when all were answered. */
  async releaseHeld(): Promise<void> {
    const queue = this.heldByFault;
    this.heldByFault = [];
    for (const deliver of queue) await new Promise<void>((resolve) => deliver(resolve));
  }

  /** Delivers the held requests to the server one at a time, in arrival order; resolves when all were answered. */
  async thaw(): Promise<void> {
    const queue = this.held ?? [];
    this.held = undefined;
    for (const deliver of queue) await new Promise<void>((resolve) => deliver(resolve));
  }

  /**
   * The most requests matching `pathIncludes` (and `method`) that were open at once, counted from
   * arrival to the end of the answer, over the requests logged from index `from` on.
   */
  maxInFlight(pathIncludes: string, method = 'GET', from = 0): number {
    const edges: Array<[number, number]> = [];
    for (const e of this.log.slice(from)) {
      if (e.method !== method || !e.url.includes(pathIncludes)) continue;
      edges.push([e.at, 1], [e.end ?? Number.MAX_SAFE_INTEGER, -1]);
    }
    // An answer ending in the same millisecond as another arrives is counted closed first.
    edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    let open = 0;
    let max = 0;
    for (const [, d] of edges) max = Math.max(max, (open += d));
    return max;
  }

  async start(): Promise<void> {
    const target = new URL(this.target);
    this.server = http.createServer((req, res) => {
      this.requests++;
      const entry: (typeof this.log)[number] = {
        at: Date.now(),
        method: req.method ?? '',
        url: req.url ?? '',
        bytes: Number(req.headers['content-length'] ?? 0),
        range: req.headers.range,
      };
      this.log.push(entry);
      res.on('close', () => (entry.end = Date.now()));
      const f = this.fault;
      const applies =
        (!f.match?.method || f.match.method === req.method) &&
        (!f.match?.pathIncludes || (req.url ?? '').includes(f.match.pathIncludes));
      const hold = this.held && !this.offline ? this.held : applies && f.hold && !this.offline ? this.heldByFault : undefined;
      if (hold) {
        // Frozen (or held): read the whole request now, send it on at thaw; answer only a client still there.
        if (hold === this.heldByFault) this.injected++;
        const body: Buffer[] = [];
        req.on('data', (c: Buffer) => body.push(c));
        const queue = hold;
        req.on('end', () =>
          queue.push((done) => {
            const up = http.request(
              { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
              (upRes) => {
                entry.status = upRes.statusCode;
                upRes.on('end', done);
                upRes.on('close', done);
                upRes.on('error', done);
                if (res.destroyed || req.socket.destroyed) {
                  upRes.resume();
                  return;
                }
                res.on('close', () => upRes.resume()); // a client that leaves mid-answer must not stall the queue
                res.writeHead(upRes.statusCode ?? 502, upRes.headers);
                upRes.pipe(res);
              },
            );
            up.on('error', () => {
              res.socket?.destroy();
              done();
            });
            up.end(Buffer.concat(body));
          }),
        );
        return;
      }
      const forward = () => {
        const headers = { ...req.headers };
        if (applies && f.stripConditions && (headers['if-none-match'] !== undefined || headers['if-match'] !== undefined)) {
          this.injected++;
          delete headers['if-none-match'];
          delete headers['if-match'];
        }
        const up = http.request(
          { host: target.hostname, port: target.port, method: req.method, path: req.url, headers },
          (upRes) => {
            entry.status = upRes.statusCode;
            if (applies && f.cutBody && Number(upRes.headers['content-length'] ?? 0) > 1) {
              this.injected++;
              const total = Number(upRes.headers['content-length']);
              res.writeHead(upRes.statusCode ?? 502, upRes.headers);
              let sent = 0;
              upRes.on('data', (c: Buffer) => {
                const room = Math.floor(total / 2) - sent;
                if (room > 0) {
                  res.write(c.subarray(0, room));
                  sent += Math.min(room, c.length);
                }
                if (sent >= Math.floor(total / 2)) {
                  upRes.destroy();
                  res.socket?.destroy();
                }
              });
              return;
            }
            res.writeHead(upRes.statusCode ?? 502, upRes.headers);
            entry.answerBytes = Number(upRes.headers['content-length'] ?? 0);
            upRes.pipe(res);
          },
        );
        up.on('error', () => res.socket?.destroy());
        req.pipe(up);
      };
      if (this.offline) {
        req.socket.destroy();
        return;
      }
      if (!applies) return forward();
      if (f.stall) {
        this.injected++;
        req.resume(); // read the request, never answer
        return;
      }
      if (f.reset) {
        this.injected++;
        req.socket.destroy();
        return;
      }
      if (f.status) {
        this.injected++;
        req.resume();
        const code = f.status === 503 ? 'SlowDown' : 'InternalError';
        const body = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>injected fault</Message></Error>`;
        res.writeHead(f.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      if (f.latencyMs) {
        this.injected++;
        setTimeout(forward, f.latencyMs);
        return;
      }
      forward();
    });
    this.server.on('connection', (s: net.Socket) => {
      if (this.offline) {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

/**
 * A suite's S3 test server with a fault proxy in front of it and a scratch folder: started
 * before the suite's tests, stopped and removed after them. `proxy` and `local` are set once
 * the suite starts.
 */
export interface ProxiedBed {
  readonly bed: Bed;
  proxy: FaultProxy;
  local: string;
}

export function proxiedBed(tag: string): ProxiedBed {
  const env = { bed: new Bed() } as ProxiedBed;
  before(async () => {
    await env.bed.start();
    env.proxy = new FaultProxy(env.bed.endpoint);
    await env.proxy.start();
    env.local = await tmpDir(tag);
  });
  after(async () => {
    await env.bed.stop();
    await env.proxy.stop();
    await fsp.rm(env.local, { recursive: true, force: true });
  });
  return env;
}
