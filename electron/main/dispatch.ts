/**
 * The one boundary every app request crosses, whatever the transport (IPC or loopback HTTP):
 * the route must exist, the body must match its request schema, the handler's answer must
 * match its response schema, and any failure leaves as `{code, message}` with an HTTP-like
 * status. Errors are translated here once: expected ones (UserError, ApiFailure, keychain
 * trouble) keep their code; anything else is reported as INTERNAL and logged.
 */

import type { ApiError } from '../contract/api';
import { appRoutes, isAppRoute } from '../contract/app';
import { ApiFailure } from '../host/control';
import { UserError } from '../engine/errors';
import { KeychainError } from '../../native/keychain';
import type { AppHandlers } from './appHost';

export type Outcome = { readonly ok: true; readonly data: unknown } | { readonly ok: false; readonly status: number; readonly error: ApiError };

export function toApiError(err: unknown, log: (msg: string) => void): { status: number; error: ApiError } {
  if (err instanceof UserError) return { status: 400, error: { code: err.code ?? 'USER_ERROR', message: err.message } };
  if (err instanceof ApiFailure) return { status: err.status, error: { code: err.code, message: err.message } };
  if (err instanceof KeychainError) return { status: 503, error: { code: 'KEYCHAIN', message: err.message } };
  log(`internal error: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  return { status: 500, error: { code: 'INTERNAL', message: err instanceof Error ? err.message : String(err) } };
}

export async function dispatch(handlers: AppHandlers, route: unknown, body: unknown, log: (msg: string) => void): Promise<Outcome> {
  if (!isAppRoute(route)) return { ok: false, status: 404, error: { code: 'NOT_FOUND', message: `no such request: ${String(route).slice(0, 64)}` } };
  const spec = appRoutes[route];
  const parsed = spec.request.safeParse(body ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { ok: false, status: 400, error: { code: 'INVALID', message: `invalid request: ${issue?.path.join('.') || 'body'}: ${issue?.message}` } };
  }
  try {
    const handler = handlers[route] as (req: unknown) => Promise<unknown>;
    const out = await handler(parsed.data);
    const checked = spec.response.safeParse(out);
    if (!checked.success) {
      log(`response of ${route} does not match the contract: ${checked.error.issues[0]?.message}`);
      return { ok: false, status: 500, error: { code: 'BAD_RESPONSE', message: `the app host answered ${route} with data of the wrong shape` } };
    }
    return { ok: true, data: checked.data };
  } catch (err) {
    return { ok: false, ...toApiError(err, log) };
  }
}
