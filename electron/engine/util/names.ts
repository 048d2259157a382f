/**
 * File names are bytes on Linux, not necessarily UTF-8. A name that is not valid UTF-8 is held
 * as a string in which each byte of an invalid sequence is the lone surrogate U+DC80+byte (as
 * Python's "surrogateescape"); valid UTF-8 never decodes to a lone surrogate, so the mapping
 * is one to one. The FUSE adapter converts at the boundary; the engine only needs the length
 * in bytes.
 */

/** Length of `name` in bytes as the kernel sees it. */
export function nameBytes(name: string): number {
  let n = 0;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xdc80 && c <= 0xdcff)
      n += 1; // an escaped raw byte
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < name.length && (name.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** The bytes of `name` (for handing a name to the local filesystem). */
export function nameToBytes(name: string): Buffer {
  const parts: Buffer[] = [];
  let run = '';
  for (const ch of name) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0xdc80 && cp <= 0xdcff) {
      if (run) parts.push(Buffer.from(run, 'utf8'));
      run = '';
      parts.push(Buffer.from([cp - 0xdc00]));
    } else {
      run += ch;
    }
  }
  if (run) parts.push(Buffer.from(run, 'utf8'));
  return Buffer.concat(parts);
}

/** The inverse of nameToBytes: a name from the local filesystem's bytes (invalid UTF-8 kept as U+DC80+byte). */
export function nameFromBytes(b: Buffer): string {
  let out = '';
  let i = 0;
  while (i < b.length) {
    const c = b[i]!;
    if (c < 0x80) {
      out += String.fromCharCode(c);
      i++;
      continue;
    }
    const n = c >= 0xc2 && c <= 0xdf ? 1 : c >= 0xe0 && c <= 0xef ? 2 : c >= 0xf0 && c <= 0xf4 ? 3 : 0;
    let cp = n === 1 ? c & 0x1f : n === 2 ? c & 0x0f : c & 0x07;
    let ok = n > 0 && i + n < b.length;
    for (let k = 1; ok && k <= n; k++) {
      const cc = b[i + k];
      if (cc === undefined || (cc & 0xc0) !== 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3f);
    }
    const min = n === 1 ? 0x80 : n === 2 ? 0x800 : 0x10000;
    if (ok && cp >= min && cp <= 0x10ffff && !(cp >= 0xd800 && cp <= 0xdfff)) {
      out += String.fromCodePoint(cp);
      i += n + 1;
    } else {
      out += String.fromCharCode(0xdc00 + c);
      i++;
    }
  }
  return out;
}
