/**
 * What the desktop app keeps in the OS keychain: one set of AWS keys (with the region and
 * endpoint they belong to) and one passphrase per linked filespace. This is the only place the
 * app reads or writes secrets; everything it hands to the UI is KeysInfo, which carries a hint
 * of the access key id and never the secret.
 */

import { credentialsSchema, type Credentials, type KeysInfo } from '../contract/app';
import type { SecretStore } from '../../native/keychain';

const AWS_ACCOUNT = 'aws-keys';
const passphraseAccount = (filespaceId: string) => `passphrase:${filespaceId}`;

/** The start of an access key id, enough for a user to recognise which keys are stored. */
export function keyIdHint(accessKeyId: string): string {
  return accessKeyId.length <= 8 ? `${accessKeyId.slice(0, 4)}…` : `${accessKeyId.slice(0, 8)}…`;
}

export class CredentialVault {
  constructor(private readonly secrets: SecretStore) {}

  async saveKeys(c: Credentials): Promise<KeysInfo> {
    await this.secrets.set(AWS_ACCOUNT, JSON.stringify(credentialsSchema.parse(c)));
    return this.infoOf(c);
  }

  /** The stored keys, or undefined when none are stored (or the entry is unreadable). */
  async keys(): Promise<Credentials | undefined> {
    const text = await this.secrets.get(AWS_ACCOUNT);
    if (text === undefined) return undefined;
    try {
      const parsed = credentialsSchema.safeParse(JSON.parse(text));
      return parsed.success ? parsed.data : undefined;
    } catch {
      return undefined;
    }
  }

  async info(): Promise<KeysInfo> {
    const k = await this.keys();
    return k ? this.infoOf(k) : { stored: false };
  }

  async forgetKeys(): Promise<void> {
    await this.secrets.delete(AWS_ACCOUNT);
  }

  savePassphrase(filespaceId: string, passphrase: string): Promise<void> {
    return this.secrets.set(passphraseAccount(filespaceId), passphrase);
  }

  passphrase(filespaceId: string): Promise<string | undefined> {
    return this.secrets.get(passphraseAccount(filespaceId));
  }

  async forgetPassphrase(filespaceId: string): Promise<void> {
    await this.secrets.delete(passphraseAccount(filespaceId));
  }

  private infoOf(c: Credentials): KeysInfo {
    return {
      stored: true,
      accessKeyIdHint: keyIdHint(c.accessKeyId),
      region: c.region,
      ...(c.endpoint ? { endpoint: c.endpoint } : {}),
    };
  }
}
