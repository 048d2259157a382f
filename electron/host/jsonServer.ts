/**
 * The one JSON-over-HTTP server of the hosts: the control socket of a mount (control.ts, on a
 * Unix socket, for the `filespace` command) and the desktop app's loopback server
 * (main/server.ts, on 127.0.0.1, for the renderer in a browser). It reads a size-limited body,
 * parses it as JSON and sends the handler's outcome; errors leave as `{code, message}` with
 * their status. What differs between the two (authentication, static files, an event stream,
 * which paths exist) is the caller's `intercept`, which may answer a request before its body
 * is read.
 */

import * as http from 'node:http';
import { MAX_BODY_BYTES } from '../contract/api';
import type { ErrorDto } from '../contract/errors';
import { failureOf } from './errors';
import type { Outcome } from './dispatch';

export interface JsonServerOptions {
  /** A Unix socket path (the caller prepares its folder and mode), or a port on 127.0.0.1 (0: any). */
  readonly listen: { readonly socket: string } | { readonly port: number };
  /** Answers a request itself and returns true, or returns false to leave it to `handle`. */
  readonly intercept?: (req: http.IncomingMessage, res: http.ServerResponse, path: string) => boolean;
  /** Handles a JSON request: its path (without the query) and its parsed body ({} when empty). */
  readonly handle: (path: string, body: unknown) => Promise<Outcome>;
}

export interface JsonServer {
  readonly server: http.Server;
  /** For a port: http://127.0.0.1:PORT. */
  readonly origin: string;
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/** Sends an error with the status its code travels with. */
export function sendError(res: http.ServerResponse, error: ErrorDto): void {
  const f = failureOf(error);
  sendJson(res, f.status, f.error);
}

function readBody(req: http.IncomingMessage): Promise<{ body: unknown } | { error: ErrorDto }> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        // Answer, then drain the rest unread (destroying the socket would lose the answer).
        resolve({ error: { code: 'TOO_LARGE', message: `request body exceeds ${MAX_BODY_BYTES} bytes` } });
        req.removeAllListeners('data');
        req.resume();
      } else chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve({ body: text ? JSON.parse(text) : {} });
      } catch {
        resolve({ error: { code: 'BAD_JSON', message: 'request body is not valid JSON' } });
      }
    });
    req.on('error', reject);
  });
}

export async function startJsonServer(o: JsonServerOptions): Promise<JsonServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]!;
    if (o.intercept?.(req, res, path)) return;
    readBody(req).then(
      async (read) => {
        if ('error' in read) return sendError(res, read.error);
        const out = await o.handle(path, read.body);
        if (out.ok) sendJson(res, 200, out.data);
        else sendJson(res, out.status, out.error);
      },
      () => res.destroy(),
    );
  });
  server.requestTimeout = 0; // syncing, mounting and probing may legitimately take long
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    if ('socket' in o.listen) server.listen(o.listen.socket, () => resolve());
    else server.listen(o.listen.port, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  return { server, origin: typeof address === 'object' && address ? `http://127.0.0.1:${address.port}` : '' };
}
