/**
 * The local control API over a Unix socket (HTTP/1.1, JSON), served by a running mount and
 * used by the `filespace` commands. Owner-only: the socket lives in a 0700 directory and is
 * itself 0600. Every request body is size-limited, parsed and schema-validated before a
 * handler sees it; errors go back as `{code, message}` with a 4xx/5xx status.
 */

import * as http from 'node:http';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { MAX_BODY_BYTES, RequestOf, ResponseOf, Route, apiErrorSchema, routes } from '../contract/api';
import { UserError } from '../engine/errors';

export type Handlers = { [R in Route]: (req: ResponseOf<R> extends unknown ? ParsedRequest<R> : never) => Promise<ResponseOf<R>> };
type ParsedRequest<R extends Route> = import('zod').infer<(typeof routes)[R]['request']>;

export class ApiFailure extends Error {
  constructor(readonly code: string, message: string, readonly status = 400) {
    super(message);
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startControlServer(socket: string, handlers: Handlers): Promise<http.Server> {
  await fsp.mkdir(path.dirname(socket), { recursive: true, mode: 0o700 });
  await fsp.chmod(path.dirname(socket), 0o700);
  if (Buffer.byteLength(socket) > 100) throw new UserError(`control socket path is too long (${socket}); set FILESPACE_HOME or XDG_RUNTIME_DIR to a shorter path`);
  await fsp.rm(socket, { force: true });
  const server = http.createServer((req, res) => {
    const route = (req.url ?? '').split('?')[0] as Route;
    const spec = routes[route];
    if (!spec) return send(res, 404, { code: 'NOT_FOUND', message: `no such endpoint ${req.url}` });
    if (req.method !== spec.method) return send(res, 405, { code: 'METHOD', message: `${route} takes ${spec.method}` });
    const chunks: Buffer[] = [];
    let size = 0;
    let aborted = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        aborted = true;
        send(res, 413, { code: 'TOO_LARGE', message: `request body exceeds ${MAX_BODY_BYTES} bytes` });
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (aborted) return;
      let body: unknown = {};
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.length > 0) {
        try {
          body = JSON.parse(text);
        } catch {
          return send(res, 400, { code: 'BAD_JSON', message: 'request body is not valid JSON' });
        }
      }
      const parsed = spec.request.safeParse(body);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return send(res, 400, { code: 'INVALID', message: `invalid request: ${issue?.path.join('.') || 'body'}: ${issue?.message}` });
      }
      const handler = handlers[route] as (r: unknown) => Promise<unknown>;
      handler(parsed.data).then(
        (out) => send(res, 200, out),
        (err: unknown) => {
          if (err instanceof ApiFailure) return send(res, err.status, { code: err.code, message: err.message });
          if (err instanceof UserError) return send(res, 400, { code: err.code, message: err.message });
          send(res, 500, { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) });
        },
      );
    });
  });
  server.requestTimeout = 0; // sync may legitimately take long
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, () => resolve());
  });
  await fsp.chmod(socket, 0o600);
  return server;
}

export class ControlClientError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
  }
}

/** Calls a running mount. Rejects with code 'NOT_RUNNING' when nothing listens on the socket. */
export function callControl<R extends Route>(socket: string, route: R, body: RequestOf<R>, timeoutMs = 30_000): Promise<ResponseOf<R>> {
  const spec = routes[route];
  return new Promise((resolve, reject) => {
    const payload = spec.method === 'GET' ? '' : JSON.stringify(body);
    const req = http.request({ socketPath: socket, path: route, method: spec.method, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        } catch {
          return reject(new ControlClientError('BAD_RESPONSE', 'the filespace daemon sent an unreadable answer'));
        }
        if (res.statusCode !== 200) {
          const e = apiErrorSchema.safeParse(json);
          return reject(new ControlClientError(e.success ? e.data.code : 'ERROR', e.success ? e.data.message : `HTTP ${res.statusCode}`));
        }
        const parsed = spec.response.safeParse(json);
        if (!parsed.success) return reject(new ControlClientError('BAD_RESPONSE', 'the filespace daemon sent an answer of the wrong shape'));
        resolve(parsed.data as ResponseOf<R>);
      });
    });
    req.setTimeout(timeoutMs, () => req.destroy(new ControlClientError('TIMEOUT', `the filespace daemon did not answer within ${timeoutMs} ms`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof ControlClientError) return reject(err);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return reject(new ControlClientError('NOT_RUNNING', 'not mounted'));
      reject(new ControlClientError('ERROR', err.message));
    });
    req.end(payload);
  });
}
