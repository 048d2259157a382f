#!/usr/bin/env node
// Builds the low-level FUSE addon (lowlevel.c beside this file) into
// native/fuse/lowlevel-addon/lowlevel.node: libfuse2's low-level API, requests answered by
// inode number and asynchronously (see the comment atop lowlevel.c, and lowlevel.ts).
//
// One C file, compiled with the C compiler directly (`cc`, or $CC) against the Node-API headers
// of the running Node and the libfuse2 headers fuse-native's fuse-shared-library ships, linked
// against the libfuse.so.2 the high-level addon uses too: nothing is downloaded. Built beside
// its final place and swapped in; a stamp names the sources it was built from (--if-stale does
// nothing while it matches). A failed build is only a warning: mounts then use the high-level
// addon (adapter.ts).
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { swapIn, nodeApiInclude, builtFrom } = require('../build-common');

const SRC = path.join(__dirname, 'lowlevel.c');
const dest = path.join(__dirname, 'lowlevel-addon');
const out = path.join(__dirname, `lowlevel-addon.build-${process.pid}`);
const BINARY = 'lowlevel.node';

function stamp() {
  const h = crypto.createHash('sha256');
  h.update(fs.readFileSync(SRC));
  h.update(fs.readFileSync(__filename));
  return `${h.digest('hex')}\n`;
}

function main() {
  const want = stamp();
  if (process.argv.includes('--if-stale') && builtFrom(dest, BINARY, want)) return;
  // These two modules print their path when loaded (binding.gyp runs them the same way).
  const printed = (m) => execFileSync(process.execPath, ['-e', `require('${m}')`], { encoding: 'utf8' }).trim();
  const fuseInclude = printed('fuse-shared-library/include');
  const fuseLib = printed('fuse-shared-library/lib');
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  const cc = process.env.CC || 'cc';
  const flags = ['-std=gnu11', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Werror'];
  flags.push('-Wno-unused-parameter', '-Wno-missing-field-initializers', '-D_FILE_OFFSET_BITS=64');
  execFileSync(
    cc,
    [...flags, '-I', nodeApiInclude(), '-I', fuseInclude, SRC, '-o', path.join(out, BINARY), path.resolve(fuseLib), '-lpthread'],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  );
  fs.writeFileSync(path.join(out, '.built-from'), want);
  swapIn(out, dest);
  console.log(`built the low-level FUSE addon in ${path.relative(process.cwd(), dest)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  const kept = fs.existsSync(path.join(dest, BINARY));
  const msg = `could not build the low-level FUSE addon (${String(err.message).split('\n')[0]})`;
  console.warn(`warning: ${msg}; ${kept ? 'the one built before stays in use' : 'mounts use the high-level addon'}`);
}
