/**
 * The app contract over loopback HTTP, for the renderer running in an ordinary browser (UI
 * tests, and a developer without the Electron binary). Serves the built renderer and the
 * contract: `POST /app/<route>` with a JSON body, and `GET /app/events`, a server-sent event
 * stream of status changes. JSON requests go through the hosts' one JSON server and dispatch
 * (host/jsonServer.ts, host/dispatch.ts), as the control socket's do.
 *
 * Owner-only: it listens on 127.0.0.1 only, answers only requests whose Host is that loopback
 * address (no DNS rebinding), and every /app request must carry `Authorization: Bearer <token>`,
 * a random per-run token that the launcher hands to the page in the URL fragment (never sent
 * to a server) and writes to a 0600 file. Static files carry a strict CSP.
 */

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { appRoutes } from '../contract/app';
import { dispatch } from '../host/dispatch';
import { sendError, startJsonServer } from '../host/jsonServer';
import type { AppHost } from './appHost';

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STATIC: Record<string, string> = {
  '/': 'index.html',
  '/index.html': 'index.html',
  '/app.js': 'app.js',
  '/app.css': 'app.css',
  '/icon.svg': 'icon.svg',
};
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
};

export interface AppServer {
  readonly url: string;
  readonly token: string;
  close(): Promise<void>;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(/^Bearer (.+)$/.exec(header ?? '')?.[1] ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

export async function startAppServer(
  host: AppHost,
  opts: { rendererDir: string; port?: number; tokenFile?: string; log: (msg: string) => void },
): Promise<AppServer> {
  const token = randomBytes(32).toString('base64url');
  const streams = new Set<http.ServerResponse>();
  let origin = '';

  const serveStatic = async (res: http.ServerResponse, file: string) => {
    const body = await fsp.readFile(path.join(opts.rendererDir, file)).catch(() => undefined);
    if (!body) return sendError(res, { code: 'NOT_FOUND', message: `${file} is not built; run npm run build` });
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'content-length': body.length,
      'content-security-policy': CSP,
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      'cache-control': 'no-store',
    });
    res.end(body);
  };

  const streamEvents = (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write(': filespace status stream\n\n');
    streams.add(res);
    const unsubscribe = host.subscribe((e) => res.write(`data: ${JSON.stringify(e)}\n\n`));
    req.on('close', () => {
      unsubscribe();
      streams.delete(res);
    });
  };

  /** Everything but a JSON request: wrong Host, static files, the token, the event stream, the method. */
  const intercept = (req: http.IncomingMessage, res: http.ServerResponse, p: string): boolean => {
    if (req.headers.host !== origin.replace(/^http:\/\//, '')) sendError(res, { code: 'BAD_HOST', message: 'wrong Host header' });
    else if (req.method === 'GET' && STATIC[p]) void serveStatic(res, STATIC[p]);
    else if (!p.startsWith('/app/')) sendError(res, { code: 'NOT_FOUND', message: `no such path ${p}` });
    else if (!tokenMatches(req.headers.authorization, token))
      sendError(res, { code: 'UNAUTHORIZED', message: 'missing or wrong token' });
    else if (p === '/app/events' && req.method === 'GET') streamEvents(req, res);
    else if (req.method !== 'POST') sendError(res, { code: 'METHOD', message: 'app requests are POSTs' });
    else return false;
    return true;
  };

  const { server, origin: listening } = await startJsonServer({
    listen: { port: opts.port ?? 0 },
    intercept,
    handle: (p, body) => dispatch(appRoutes, host.handlers, p.slice('/app/'.length), body, opts.log),
  });
  origin = listening;
  if (opts.tokenFile) {
    await fsp.mkdir(path.dirname(opts.tokenFile), { recursive: true, mode: 0o700 });
    await fsp.writeFile(opts.tokenFile, JSON.stringify({ url: origin, token }) + '\n', { mode: 0o600 });
    await fsp.chmod(opts.tokenFile, 0o600);
  }
  return {
    url: origin,
    token,
    async close() {
      for (const s of streams) s.end();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (opts.tokenFile) await fsp.rm(opts.tokenFile, { force: true });
    },
  };
}
