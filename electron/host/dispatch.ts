/**
 * The boundary every request to a host crosses, whatever carries it (the control socket, the
 * app's IPC or loopback HTTP): the route must exist, the body must match its request schema,
 * the handler's answer must match its response schema, and a failure leaves as `{code,
 * message}` with its status, translated once (errors.ts). Generic over a route map of the
 * contract (contract/api.ts `routes`, contract/app.ts `appRoutes`).
 */

import type { z } from 'zod';
import { Failure, failureOf, toFailure } from './errors';

export interface RouteSchemas {
  readonly request: z.ZodType;
  readonly response: z.ZodType;
}

export type HandlersFor<M extends Record<string, RouteSchemas>> = {
  [R in keyof M]: (req: z.infer<M[R]['request']>) => Promise<z.infer<M[R]['response']>>;
};

export type Outcome = { readonly ok: true; readonly data: unknown } | ({ readonly ok: false } & Failure);

export function failed(error: Failure['error']): Outcome {
  return { ok: false, ...failureOf(error) };
}

export async function dispatch<M extends Record<string, RouteSchemas>>(
  routes: M,
  handlers: HandlersFor<M>,
  route: unknown,
  body: unknown,
  log: (msg: string) => void,
): Promise<Outcome> {
  if (typeof route !== 'string' || !Object.prototype.hasOwnProperty.call(routes, route)) {
    return failed({ code: 'NOT_FOUND', message: `no such request: ${String(route).slice(0, 64)}` });
  }
  const spec = routes[route]!;
  // Only a missing body means "no fields"; a JSON null is a body, and the schema refuses it.
  const parsed = spec.request.safeParse(body === undefined ? {} : body);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return failed({ code: 'INVALID', message: `invalid request: ${issue?.path.join('.') || 'body'}: ${issue?.message}` });
  }
  try {
    const handler = handlers[route] as (req: unknown) => Promise<unknown>;
    const out = await handler(parsed.data);
    const checked = spec.response.safeParse(out);
    if (!checked.success) {
      log(`response of ${route} does not match the contract: ${checked.error.issues[0]?.message}`);
      return failed({ code: 'BAD_RESPONSE', message: `the host answered ${route} with data of the wrong shape` });
    }
    return { ok: true, data: checked.data };
  } catch (err) {
    return { ok: false, ...toFailure(err, log) };
  }
}
