/**
 * The app contract over loopback HTTP, for the renderer running in an ordinary browser (UI
 * tests, and a developer without the Electron binary). Serves the built renderer and the
 * contract: `POST /app/<route>` with a JSON body, and `GET /app/events`, a server-sent event
 * stream of status changes.
 *
 * Owner-only: it listens on 127.0.0.1 only, answers only requests whose Host is that loopback
 * address (no DNS rebinding), and every /app request must carry `Authorization: Bearer <token>`,
 * a random per-run token that the launcher hands to the page in the URL fragment (never sent
 * to a server) and writes to a 0600 file. Static files carry a strict CSP.
 */

import { randomBytes, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { MAX_BODY_BYTES } from '../contract/api';
import type { AppHost } from './appHost';
import { dispatch } from './dispatch';

export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const STATIC: Record<string, string> = {
  '/': 'index.html', '/index.html': 'index.html', '/app.js': 'app.js', '/app.css': 'app.css', '/icon.svg': 'icon.svg',
};
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml' };

export interface AppServer {
  readonly url: string;
  readonly token: string;
  close(): Promise<void>;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function tokenMatches(header: string | undefined, token: string): boolean {
  const given = Buffer.from(/^Bearer (.+)$/.exec(header ?? '')?.[1] ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        // Answer, then drain the rest unread (destroying the socket would lose the answer).
        reject(Object.assign(new Error(`request body exceeds ${MAX_BODY_BYTES} bytes`), { status: 413, code: 'TOO_LARGE' }));
        req.removeAllListeners('data');
        req.resume();
      } else chunks.push(c);
    });
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      try {
        resolve(text ? JSON.parse(text) : {});
      } catch {
        reject(Object.assign(new Error('request body is not valid JSON'), { status: 400, code: 'BAD_JSON' }));
      }
    });
    req.on('error', reject);
  });
}

export async function startAppServer(host: AppHost, opts: { rendererDir: string; port?: number; tokenFile?: string; log: (msg: string) => void }): Promise<AppServer> {
  const token = randomBytes(32).toString('base64url');
  const streams = new Set<http.ServerResponse>();
  let origin = '';

  const serveStatic = async (res: http.ServerResponse, file: string) => {
    const body = await fsp.readFile(path.join(opts.rendererDir, file)).catch(() => undefined);
    if (!body) return sendJson(res, 404, { code: 'NOT_FOUND', message: `${file} is not built; run npm run build` });
    res.writeHead(200, {
      'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'content-length': body.length,
      'content-security-policy': CSP, 'x-content-type-options': 'nosniff', 'referrer-policy': 'no-referrer', 'cache-control': 'no-store',
    });
    res.end(body);
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.headers.host !== origin.replace(/^http:\/\//, '')) return sendJson(res, 421, { code: 'BAD_HOST', message: 'wrong Host header' });
    if (req.method === 'GET' && STATIC[url.pathname]) return void serveStatic(res, STATIC[url.pathname]!);
    if (!url.pathname.startsWith('/app/')) return sendJson(res, 404, { code: 'NOT_FOUND', message: `no such path ${url.pathname}` });
    if (!tokenMatches(req.headers.authorization, token)) return sendJson(res, 401, { code: 'UNAUTHORIZED', message: 'missing or wrong token' });
    if (url.pathname === '/app/events' && req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive' });
      res.write(': filespace status stream\n\n');
      streams.add(res);
      const unsubscribe = host.subscribe((e) => res.write(`data: ${JSON.stringify(e)}\n\n`));
      req.on('close', () => {
        unsubscribe();
        streams.delete(res);
      });
      return;
    }
    if (req.method !== 'POST') return sendJson(res, 405, { code: 'METHOD', message: 'app requests are POSTs' });
    readBody(req).then(
      async (body) => {
        const out = await dispatch(host.handlers, url.pathname.slice('/app/'.length), body, opts.log);
        if (out.ok) sendJson(res, 200, out.data);
        else sendJson(res, out.status, out.error);
      },
      (err: { status?: number; code?: string; message: string }) => sendJson(res, err.status ?? 400, { code: err.code ?? 'BAD_REQUEST', message: err.message }),
    );
  });
  server.requestTimeout = 0; // mounting and probing can take a while
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, '127.0.0.1', () => resolve());
  });
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
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
