/**
 * The hosts' log: one line per event on standard error, stamped with the time. The daemon's
 * stderr is its log file (or systemd's journal), the app's is the terminal or the desktop
 * session's log. Callers never pass secrets.
 */

export function log(msg: string): void {
  process.stderr.write(`${new Date().toISOString()} ${msg}\n`);
}
