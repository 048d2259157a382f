/**
 * The local control API of a running mount over a Unix socket (HTTP/1.1, JSON): served by
 * MountHost, used by the `filespace` commands (and by another process's host library, e.g.
 * to change a setting of a mount the daemon runs). Owner-only: the socket lives in a 0700
 * directory and is itself 0600. Requests go through the hosts' one JSON server and one
 * dispatch (size limit, JSON, schemas both ways, errors as `{code, message}`); the client
 * turns every failure into a HostError with a code of the contract.
 */

import * as http from 'node:http';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { RequestOf, ResponseOf, Route, routes } from '../contract/api';
import { errorSchema } from '../contract/errors';
import { dispatch, type HandlersFor } from './dispatch';
import { HostError } from './errors';
import { sendError, startJsonServer } from './jsonServer';

export type Handlers = HandlersFor<typeof routes>;

function isRoute(p: string): p is Route {
  return Object.prototype.hasOwnProperty.call(routes, p);
}

export async function startControlServer(socket: string, handlers: Handlers, log: (msg: string) => void): Promise<http.Server> {
  await fsp.mkdir(path.dirname(socket), { recursive: true, mode: 0o700 });
  await fsp.chmod(path.dirname(socket), 0o700);
  if (Buffer.byteLength(socket) > 100) {
    throw new HostError(
      `control socket path is too long (${socket}); set FILESPACE_HOME or XDG_RUNTIME_DIR to a shorter path`,
      'BAD_INPUT',
    );
  }
  await fsp.rm(socket, { force: true });
  const { server } = await startJsonServer({
    listen: { socket },
    intercept: (req, res, route) => {
      if (!isRoute(route)) {
        sendError(res, { code: 'NOT_FOUND', message: `no such endpoint ${req.url}` });
        return true;
      }
      if (req.method !== routes[route].method) {
        sendError(res, { code: 'METHOD', message: `${route} takes ${routes[route].method}` });
        return true;
      }
      return false;
    },
    handle: (route, body) => dispatch(routes, handlers, route, body, log),
  });
  await fsp.chmod(socket, 0o600);
  return server;
}

/**
 * Calls a running mount. Rejects with a HostError: code NOT_RUNNING when nothing listens on the
 * socket, the mount's own code when it refused.
 */
export function callControl<R extends Route>(
  socket: string,
  route: R,
  body: RequestOf<R>,
  timeoutMs = 30_000,
): Promise<ResponseOf<R>> {
  const spec = routes[route];
  return new Promise((resolve, reject) => {
    const payload = spec.method === 'GET' ? '' : JSON.stringify(body);
    const req = http.request(
      {
        socketPath: socket,
        // A connection of its own per call: a kept one may have been closed by the mount while
        // this process's event loop was busy (a synchronous child process, say), and a request
        // written to it fails with EPIPE. A Unix socket's connect costs next to nothing.
        agent: false,
        path: route,
        method: spec.method,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            return reject(new HostError('the filespace daemon sent an unreadable answer', 'BAD_RESPONSE'));
          }
          if (res.statusCode !== 200) {
            const e = errorSchema.safeParse(json);
            return reject(
              e.success
                ? new HostError(e.data.message, e.data.code)
                : new HostError(`the filespace daemon answered HTTP ${res.statusCode} without a known error`, 'BAD_RESPONSE'),
            );
          }
          const parsed = spec.response.safeParse(json);
          if (!parsed.success)
            return reject(new HostError('the filespace daemon sent an answer of the wrong shape', 'BAD_RESPONSE'));
          resolve(parsed.data as ResponseOf<R>);
        });
      },
    );
    req.setTimeout(timeoutMs, () =>
      req.destroy(new HostError(`the filespace daemon did not answer within ${timeoutMs} ms`, 'TIMEOUT')),
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (err instanceof HostError) return reject(err);
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') return reject(HostError.of('NOT_RUNNING'));
      reject(new HostError(err.message, 'HOST_DOWN'));
    });
    req.end(payload);
  });
}

/** Whether a control call failed because no mount listens (the filespace is not mounted anywhere). */
export function notRunning(err: unknown): boolean {
  return err instanceof HostError && err.code === 'NOT_RUNNING';
}
