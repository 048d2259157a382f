/**
 * A default timeout for every test and hook, loaded into each test process by test/run.mjs
 * (`--require`), so a test that hangs fails under its own name after DEFAULT_TEST_TIMEOUT_MS
 * instead of holding the run until CI gives up.
 *
 * Why not only `node --test --test-timeout`: on Node 20 that flag bounds each test *file* as a
 * whole (the child process running it) and no test inside it; per-test semantics came in later
 * Node versions. run.mjs still passes it, as the bound on a whole file (which also catches a
 * file whose tests are done but whose process never exits). A test or hook that sets its own
 * `timeout` keeps it; slow tests set theirs explicitly (e.g. `it(name, { timeout: 20 * 60_000 }, fn)`).
 *
 * It wraps `it`/`test` and the hooks of node:test (the functions every test file imports);
 * `describe` is left alone, since on Node 20 a suite's timeout bounds the whole suite.
 */

// The module object itself (not an import-time copy), so every importer sees the wrapped functions.
// eslint-disable-next-line @typescript-eslint/no-require-imports -- `import * as` would give a copy (esModuleInterop)
import nodeTest = require('node:test');

/**
 * 5 minutes: at least four times the slowest ordinary test of a CI run on a busy two-core
 * machine (untarring 3,000 files through a mount, about 76 s), short next to CI's budget.
 */
export const DEFAULT_TEST_TIMEOUT_MS = Number(process.env.FILESPACE_TEST_TIMEOUT_MS ?? 5 * 60_000);

type Fn = (...args: unknown[]) => unknown;

/** `it(name?, options?, fn?)`: fills in `timeout` when the caller did not give one. */
function withDefaultTimeout(original: Fn): Fn {
  const wrapped = function (this: unknown, ...args: unknown[]): unknown {
    const i = typeof args[0] === 'string' ? 1 : 0;
    if (typeof args[i] === 'function' || args[i] === undefined) args.splice(i, 0, {});
    const options = args[i] as { timeout?: number } | null;
    args[i] = { ...options, timeout: options?.timeout ?? DEFAULT_TEST_TIMEOUT_MS };
    return original.apply(this, args);
  };
  return Object.assign<Fn, Fn>(wrapped, original);
}

/** `before(fn?, options?)` and the other hooks: options come second. */
function hookWithDefaultTimeout(original: Fn): Fn {
  return function (this: unknown, ...args: unknown[]): unknown {
    const options = args[1] as { timeout?: number } | undefined;
    return original.call(this, args[0], { ...options, timeout: options?.timeout ?? DEFAULT_TEST_TIMEOUT_MS });
  };
}

const api = nodeTest as unknown as Record<string, Fn>;
if (!(api.it as { filespaceDefaultTimeout?: boolean }).filespaceDefaultTimeout) {
  const it = withDefaultTimeout(api.it!);
  (it as { filespaceDefaultTimeout?: boolean }).filespaceDefaultTimeout = true;
  api.it = it;
  api.test = it;
  for (const hook of ['before', 'after', 'beforeEach', 'afterEach']) api[hook] = hookWithDefaultTimeout(api[hook]!);
}
