/**
 * Test fixture: a real Secret Service for keytar — a private D-Bus session bus with
 * gnome-keyring-daemon running on it, its login keyring created and unlocked with a throwaway
 * password, its data in a fresh temp dir. Nothing touches the user's own keyring or bus.
 *
 * The caller puts `env` into the environment of whatever uses the keychain (this process
 * before keytar first connects, or a child process), and calls stop() when done.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { OsKeychain } from '../../native/keychain';

export interface Keyring {
  readonly env: { DBUS_SESSION_BUS_ADDRESS: string };
  stop(): Promise<void>;
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}

export async function startKeyring(): Promise<Keyring> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-keyring-'));
  const bus = spawn('dbus-daemon', ['--session', '--nofork', '--nopidfile', '--print-address=1'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const reap = () => bus.kill('SIGKILL');
  process.once('exit', reap);
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    bus.once('error', (err) => reject(new Error(`dbus-daemon did not start (${err.message}); install the "dbus" package`)));
    bus.once('exit', (code) => reject(new Error(`dbus-daemon exited with code ${code}`)));
    bus.stdout.setEncoding('utf8');
    bus.stdout.on('data', (d: string) => {
      out += d;
      const line = out.split('\n')[0]!;
      if (out.includes('\n')) resolve(line.trim());
    });
  });
  const env = { DBUS_SESSION_BUS_ADDRESS: address };
  const home = path.join(dir, 'home');
  await fsp.mkdir(path.join(home, '.cache'), { recursive: true, mode: 0o700 });
  // --unlock reads the password from stdin and creates the login keyring with it.
  const daemon = spawn('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, ...env, HOME: home, XDG_DATA_HOME: path.join(dir, 'data'), XDG_RUNTIME_DIR: dir },
  });
  const reapDaemon = () => daemon.kill('SIGKILL');
  process.once('exit', reapDaemon);
  let failed: Error | undefined;
  daemon.once(
    'error',
    (err) => (failed = new Error(`gnome-keyring-daemon did not start (${err.message}); install the "gnome-keyring" package`)),
  );
  daemon.once('exit', (code) => (failed ??= new Error(`gnome-keyring-daemon exited with code ${code}`)));
  daemon.stdin.end('throwaway-test-keyring-password');
  // Ready once it owns the Secret Service name on the bus.
  for (let i = 0; ; i++) {
    if (failed) throw failed;
    if (await ownsSecretService(address)) break;
    if (i > 200) throw new Error('gnome-keyring-daemon did not claim org.freedesktop.secrets within 20 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  daemon.removeAllListeners('exit');
  return {
    env,
    async stop() {
      await stopChild(daemon);
      await stopChild(bus);
      process.removeListener('exit', reap);
      process.removeListener('exit', reapDaemon);
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

function ownsSecretService(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    execFile(
      'dbus-send',
      [
        '--session',
        '--print-reply',
        '--dest=org.freedesktop.DBus',
        '/org/freedesktop/DBus',
        'org.freedesktop.DBus.NameHasOwner',
        'string:org.freedesktop.secrets',
      ],
      { env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: address }, timeout: 5000 },
      (err, stdout) => resolve(!err && /boolean true/.test(String(stdout))),
    );
  });
}

/**
 * A suite's end: deletes every secret the app hosts stored under `services`, stops the keyring
 * and gives the process back the session bus it had (`savedBus`, as read before the suite).
 */
export async function endKeyring(
  keyring: Keyring | undefined,
  services: readonly string[],
  savedBus: string | undefined,
): Promise<void> {
  for (const s of services) {
    const kc = new OsKeychain(s);
    for (const acct of await kc.accounts().catch(() => [] as string[])) await kc.delete(acct).catch(() => undefined);
  }
  await keyring?.stop();
  if (savedBus === undefined) delete process.env.DBUS_SESSION_BUS_ADDRESS;
  else process.env.DBUS_SESSION_BUS_ADDRESS = savedBus;
}
