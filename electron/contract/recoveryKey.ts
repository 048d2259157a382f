/**
 * The recovery key as people see and type it, shared by the wizard (which makes one at
 * creation and shows it on the recovery kit), the app host and the `filespace` command (which
 * read one back). 160 random bits as 32 Crockford base32 characters, shown in eight groups of
 * four ("7KQ2-M9XD-…"). Reading forgives what people get wrong when copying from paper: case,
 * spaces and dashes, and the letters O, I and L read as 0, 1, 1. The canonical form (32
 * characters, no separators) is what the engine derives its key from. Imports nothing of ours;
 * randomness from Web Crypto, which both Node and the renderer have.
 */

const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const RECOVERY_KEY_CHARS = 32;
const RECOVERY_KEY_BYTES = 20;

/** A new recovery key, canonical form (160 bits from a cryptographic source). */
export function newRecoveryKey(): string {
  const bytes = new Uint8Array(RECOVERY_KEY_BYTES);
  globalThis.crypto.getRandomValues(bytes);
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += ALPHABET[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  return out;
}

/** The canonical form of a typed recovery key, or undefined when it is not one. */
export function parseRecoveryKey(typed: string): string | undefined {
  const s = typed
    .toUpperCase()
    .replace(/[\s-]+/g, '')
    .replace(/O/g, '0')
    .replace(/[IL]/g, '1');
  if (s.length !== RECOVERY_KEY_CHARS) return undefined;
  for (const c of s) if (!ALPHABET.includes(c)) return undefined;
  return s;
}

/** The key in groups of four, as printed on the recovery kit. */
export function formatRecoveryKey(canonical: string): string {
  return canonical.match(/.{1,4}/g)?.join('-') ?? canonical;
}

/** What the user is told when the typed text is not a recovery key. */
export const RECOVERY_KEY_HINT = 'a recovery key is 32 letters and digits, in eight groups of four';
