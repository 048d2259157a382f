/**
 * How the renderer reaches the app host: one small interface, two implementations. In
 * Electron, the preload script's contextBridge API (IPC); in a browser (UI tests), loopback
 * HTTP with the per-run token from the URL fragment. Both check every answer against the
 * contract before the UI sees it, and both deliver host-pushed status events (no polling).
 */

import {
  appEventSchema,
  appRoutes,
  type AppEvent,
  type AppRequest,
  type AppResponse,
  type AppRoute,
} from '../../electron/contract/app';
import { ERRORS, errorSchema, type ErrorCode } from '../../electron/contract/errors';

/**
 * An error the host reported (or the transport met), with a code of the contract's vocabulary;
 * without a more specific message it says what the contract says of its code.
 */
export class HostError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string = ERRORS[code].message,
  ) {
    super(message || ERRORS[code].message);
  }
}

/** An error answer as the host sent it; one that breaks the contract is itself an error. */
function reported(raw: unknown, what: string): HostError {
  const e = errorSchema.safeParse(raw);
  return e.success
    ? new HostError(e.data.code, e.data.message)
    : new HostError('BAD_RESPONSE', `the app host answered with an error the window does not know (${what})`);
}

export interface Transport {
  call<R extends AppRoute>(route: R, body: AppRequest<R>): Promise<AppResponse<R>>;
  /** Calls onEvent for every status event until the returned function is called. */
  subscribe(onEvent: (e: AppEvent) => void, onTrouble: (message: string) => void): () => void;
  /** Native folder dialog (Electron only). */
  readonly pickFolder?: () => Promise<string | undefined>;
  /** Opens a folder in the file manager (Electron only). */
  readonly openFolder?: (path: string) => Promise<void>;
  /** Native folder dialog in filespace `name`'s mount point, to choose what to pin (Electron only). */
  readonly pickPin?: (name: string) => Promise<string | undefined>;
}

function checked<R extends AppRoute>(route: R, data: unknown): AppResponse<R> {
  const r = appRoutes[route].response.safeParse(data);
  if (!r.success) throw new HostError('BAD_RESPONSE', `the app host answered ${route} with data of the wrong shape`);
  return r.data as AppResponse<R>;
}

/** What preload.ts exposes as window.filespace. */
export interface BridgeApi {
  invoke(route: string, body: unknown): Promise<{ ok: true; data: unknown } | { ok: false; error: unknown }>;
  onEvent(listener: (e: unknown) => void): () => void;
  pickFolder(): Promise<string | undefined>;
  openFolder(path: string): Promise<void>;
  pickPin?(name: string): Promise<string | undefined>;
}

export function ipcTransport(bridge: BridgeApi): Transport {
  return {
    async call(route, body) {
      const out = await bridge.invoke(route, body);
      if (!out.ok) throw reported(out.error, route);
      return checked(route, out.data);
    },
    subscribe(onEvent, onTrouble) {
      return bridge.onEvent((raw) => {
        const e = appEventSchema.safeParse(raw);
        if (e.success) onEvent(e.data);
        else onTrouble('the app host sent a status event of the wrong shape');
      });
    },
    pickFolder: () => bridge.pickFolder(),
    openFolder: (p) => bridge.openFolder(p),
    pickPin: bridge.pickPin ? (name) => bridge.pickPin!(name) : undefined,
  };
}

export function httpTransport(base: string, token: string): Transport {
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  return {
    async call(route, body) {
      let res: Response;
      try {
        res = await fetch(`${base}/app/${route}`, { method: 'POST', headers, body: JSON.stringify(body) });
      } catch {
        throw new HostError('HOST_DOWN', 'the Filespace app host is not answering');
      }
      const json: unknown = await res.json().catch(() => undefined);
      if (!res.ok) throw reported(json, `HTTP ${res.status}`);
      return checked(route, json);
    },
    subscribe(onEvent, onTrouble) {
      const abort = new AbortController();
      let stopped = false;
      const connect = async (): Promise<void> => {
        try {
          const res = await fetch(`${base}/app/events`, { headers, signal: abort.signal });
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let end: number;
            while ((end = buf.indexOf('\n\n')) >= 0) {
              const frame = buf.slice(0, end);
              buf = buf.slice(end + 2);
              const data = frame
                .split('\n')
                .filter((l) => l.startsWith('data: '))
                .map((l) => l.slice(6))
                .join('\n');
              if (!data) continue;
              const e = appEventSchema.safeParse(JSON.parse(data));
              if (e.success) onEvent(e.data);
              else onTrouble('the app host sent a status event of the wrong shape');
            }
          }
          throw new Error('stream ended');
        } catch (err) {
          if (stopped) return;
          onTrouble(`lost the connection to the app host (${(err as Error).message}); reconnecting`);
          // One reconnect attempt every 2 s while the host is away.
          setTimeout(() => void connect(), 2000);
        }
      };
      void connect();
      return () => {
        stopped = true;
        abort.abort();
      };
    },
  };
}

declare global {
  interface Window {
    filespace?: BridgeApi;
  }
}

/** Picks the transport for this page: the preload bridge in Electron, else HTTP with the fragment's token. */
export function detectTransport(): Transport {
  if (window.filespace) return ipcTransport(window.filespace);
  const token = new URLSearchParams(window.location.hash.slice(1)).get('token');
  if (!token) throw new HostError('NO_TOKEN');
  // Keep the token out of the address bar (and of screenshots and history).
  history.replaceState(null, '', window.location.pathname);
  return httpTransport(window.location.origin, token);
}
