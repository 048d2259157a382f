/**
 * Waiting in tests: poll a condition with a deadline, never sleep as synchronisation. A test
 * that waits this way is as fast as the machine allows and fails with a name when the
 * condition never comes.
 */

/**
 * Polls `fn` every `everyMs` (100 ms) until it yields something other than undefined or false
 * (an error counts as "not yet"), and returns that; fails naming `what` after `timeoutMs`.
 */
export async function until<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 60_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve()
      .then(fn)
      .catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
