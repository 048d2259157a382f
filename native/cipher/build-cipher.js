#!/usr/bin/env node
// Builds the cipher addon (cipher.c beside this file) into native/cipher/addon/cipher.node:
// AES-256-GCM into buffers the caller owns, on the JS thread or libuv's thread pool (see the
// comment atop cipher.c). One C file, so it is compiled with the C compiler directly (`cc`, or
// $CC), against the Node-API headers of the running Node (Debian's nodejs and Node's own
// tarballs ship them; npm_config_nodedir names others): nothing is downloaded. It needs no
// OpenSSL headers nor library at build time (OpenSSL is found as the addon loads).
//
// It is built beside its final place and swapped in, so a process loading the addon meanwhile
// finds the old one or the new one. A stamp names the sources it was built from: with
// --if-stale (as `npm run build` runs it) nothing is done while the stamp matches. A failed
// build is only a warning: without the addon the engine uses node:crypto (chunk/cipherAddon.ts).
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { swapIn, nodeApiInclude, builtFrom } = require('../build-common');

const SRC = path.join(__dirname, 'cipher.c');
const dest = path.join(__dirname, 'addon');
const out = path.join(__dirname, `addon.build-${process.pid}`);
const BINARY = 'cipher.node';

function stamp() {
  const h = crypto.createHash('sha256');
  h.update(fs.readFileSync(SRC));
  h.update(fs.readFileSync(__filename));
  return `${h.digest('hex')}\n`;
}

function main() {
  const want = stamp();
  if (process.argv.includes('--if-stale') && builtFrom(dest, BINARY, want)) return;
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  const cc = process.env.CC || 'cc';
  const flags = ['-std=c11', '-O2', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Werror', '-D_GNU_SOURCE'];
  if (process.platform === 'darwin') flags.push('-undefined', 'dynamic_lookup');
  execFileSync(cc, [...flags, '-I', nodeApiInclude(), SRC, '-o', path.join(out, BINARY), '-ldl'], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  fs.writeFileSync(path.join(out, '.built-from'), want);
  swapIn(out, dest);
  console.log(`built the cipher addon in ${path.relative(process.cwd(), dest)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  const kept = fs.existsSync(path.join(dest, BINARY));
  const msg = `could not build the cipher addon (${String(err.message).split('\n')[0]})`;
  console.warn(`warning: ${msg}; ${kept ? 'the one built before stays in use' : 'node:crypto is used instead'}`);
}
