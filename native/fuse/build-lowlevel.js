#!/usr/bin/env node
// Builds the low-level FUSE addon (lowlevel.c beside this file) into native/fuse/lowlevel-addon:
// libfuse's low-level API, requests answered by inode number and asynchronously (see the
// comment atop lowlevel.c, and lowlevel.ts).
//
// One C file, compiled with the C compiler directly (`cc`, or $CC) against the Node-API headers
// of the running Node, twice:
//   - lowlevel.node against the libfuse2 headers fuse-native's fuse-shared-library ships, linked
//     against the libfuse.so.2 the high-level addon uses too;
//   - lowlevel3.node against libfuse3 (larger requests, see lowlevel.c), where its headers are
//     installed (Debian: libfuse3-dev). lowlevel.ts uses it where it can mount (lowLevelAddon).
// Nothing is downloaded. Built beside their final place and swapped in; a stamp names the
// sources they were built from (--if-stale does nothing while it matches). A failed build is
// only a warning: mounts then use the other binary, or the high-level addon (adapter.ts).
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
const BINARY3 = 'lowlevel3.node';

const FUSE3_HEADER = '/usr/include/fuse3/fuse_lowlevel.h';

/** Whether libfuse3's headers are installed. */
function haveFuse3() {
  return fs.existsSync(FUSE3_HEADER);
}

function stamp() {
  const h = crypto.createHash('sha256');
  h.update(fs.readFileSync(SRC));
  h.update(fs.readFileSync(__filename));
  h.update(haveFuse3() ? 'libfuse2+3' : 'libfuse2');
  return `${h.digest('hex')}\n`;
}

/** Compiler arguments that name libfuse's headers and library. */
function fuseArgs(version) {
  if (version === 3) return { include: ['-DFILESPACE_FUSE3', '-I', path.dirname(FUSE3_HEADER)], link: ['-lfuse3'] };
  // These two modules print their path when loaded (binding.gyp runs them the same way).
  const printed = (m) => execFileSync(process.execPath, ['-e', `require('${m}')`], { encoding: 'utf8' }).trim();
  return {
    include: ['-I', printed('fuse-shared-library/include')],
    link: [path.resolve(printed('fuse-shared-library/lib'))],
  };
}

function compile(version, binary) {
  const cc = process.env.CC || 'cc';
  const flags = ['-std=gnu11', '-O2', '-g', '-fPIC', '-shared', '-fvisibility=hidden', '-Wall', '-Wextra', '-Werror'];
  flags.push('-Wno-unused-parameter', '-Wno-missing-field-initializers', '-D_FILE_OFFSET_BITS=64');
  const fuse = fuseArgs(version);
  execFileSync(
    cc,
    [...flags, '-I', nodeApiInclude(), ...fuse.include, SRC, '-o', path.join(out, binary), ...fuse.link, '-lpthread'],
    {
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
}

function main() {
  const want = stamp();
  if (process.argv.includes('--if-stale') && builtFrom(dest, BINARY, want)) return;
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  compile(2, BINARY);
  const built = ['libfuse2'];
  if (haveFuse3()) {
    try {
      compile(3, BINARY3);
      built.push('libfuse3');
    } catch (err) {
      console.warn(`warning: could not build the low-level FUSE addon for libfuse3 (${String(err.message).split('\n')[0]})`);
    }
  }
  fs.writeFileSync(path.join(out, '.built-from'), want);
  swapIn(out, dest);
  console.log(`built the low-level FUSE addon (${built.join(', ')}) in ${path.relative(process.cwd(), dest)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  const kept = fs.existsSync(path.join(dest, BINARY));
  const msg = `could not build the low-level FUSE addon (${String(err.message).split('\n')[0]})`;
  console.warn(`warning: ${msg}; ${kept ? 'the one built before stays in use' : 'mounts use the high-level addon'}`);
}
