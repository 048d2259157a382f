/**
 * The OS keychain (macOS Keychain, Windows Credential Manager, the Secret Service on Linux)
 * behind a small interface, so hosts store secrets without knowing keytar, and code above it
 * can be handed another SecretStore. Secrets are strings per (service, account); nothing here
 * writes a file or logs a value.
 *
 * keytar is loaded on first use: a machine without a keychain (a server) never loads it, and a
 * failure to load or to reach the Secret Service becomes a KeychainError that says what to fix.
 */

export interface SecretStore {
  set(account: string, secret: string): Promise<void>;
  /** A missing entry is not an error: resolves to undefined. */
  get(account: string): Promise<string | undefined>;
  /** Resolves to whether an entry was there. */
  delete(account: string): Promise<boolean>;
  accounts(): Promise<string[]>;
}

export class KeychainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeychainError';
  }
}

type Keytar = typeof import('keytar');

let keytar: Keytar | undefined;

function load(): Keytar {
  if (!keytar) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports -- loaded on first use, so a missing libsecret is a KeychainError, not a crash at import
      keytar = require('keytar') as Keytar;
    } catch (err) {
      throw new KeychainError(
        `the OS keychain library could not be loaded (${(err as Error).message.split('\n')[0]}); on Linux install libsecret-1-0`,
      );
    }
  }
  return keytar;
}

async function guarded<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof KeychainError) throw err;
    const msg = (err as Error).message ?? String(err);
    // libsecret's messages name the D-Bus problem; keep one line and never any argument values.
    throw new KeychainError(
      `the OS keychain refused to ${what}: ${msg.split('\n')[0]}${/dbus|secret/i.test(msg) ? ' (is a Secret Service such as gnome-keyring running and unlocked?)' : ''}`,
    );
  }
}

export class OsKeychain implements SecretStore {
  constructor(readonly service: string) {
    if (!service) throw new KeychainError('keychain service name is empty');
  }

  set(account: string, secret: string): Promise<void> {
    return guarded('store a secret', () => load().setPassword(this.service, account, secret));
  }

  async get(account: string): Promise<string | undefined> {
    return (await guarded('read a secret', () => load().getPassword(this.service, account))) ?? undefined;
  }

  delete(account: string): Promise<boolean> {
    return guarded('delete a secret', () => load().deletePassword(this.service, account));
  }

  async accounts(): Promise<string[]> {
    const found = await guarded('list secrets', () => load().findCredentials(this.service));
    return found.map((c) => c.account).sort();
  }
}
