#!/usr/bin/env node
// Builds the FUSE addon from the installed fuse-native sources with the corrections in
// fuse-native.patch beside this file (a unified diff against fuse-native 2.2.6's fuse-native.c;
// hunks named here by the function or macro they change):
//  1. Time setting, so tools that restore modification times (tar, cp -p, rsync -t, touch -m)
//     work. Its utimens handler passes the access time twice, losing the modification time:
//     the FUSE_METHOD_VOID(utimens) hunk passes l->mtime as the second time. It does not tell
//     libfuse that it understands UTIME_OMIT/UTIME_NOW, so libfuse2 drops every request that
//     sets only one of the two times (GNU tar sets only mtime): the fuse_native_mount hunk sets
//     ops.flag_utime_omit_ok, and the timespec_to_uint64 hunk passes the two as sentinel
//     values (see SPECIAL_TIMES in adapter.ts).
//  2. Direct I/O per file handle: the hunk in FUSE_METHOD(open)'s reply lets open(2) ask for it
//     with bit 30 of the returned handle, stripped before libfuse sees it. A read-only follower
//     uses it when a file it already has open changed in the bucket, so the kernel's shared page
//     cache cannot mix the two versions.
//  3. Names cross as bytes: paths, names and link targets pass as latin1 strings (one char per
//     byte) instead of UTF-8, which replaced invalid byte sequences with U+FFFD (two different
//     names could become one). The first hunk adds a NAPI_LATIN1 macro; every other hunk turns
//     napi_create_string_utf8(env, l->...) into napi_create_string_latin1, and NAPI_UTF8 /
//     NAPI_ARGV_UTF8 into NAPI_LATIN1 in readdir's and readlink's replies. adapter.ts decodes
//     them (see wireToName).
// The patch is applied with `git apply`, not `patch`: git is already needed (CI installs it;
// `patch` is an optional Debian package), and git applies every hunk or none, never with fuzz.
// When the sources do not match (fuse-native changed) nothing is built.
// The corrected addon goes to native/fuse/addon/ (not in git) and native/fuse/adapter.ts
// prefers it; without it (no compiler, no git, other sources) the stock prebuild is used and
// only time setting, direct I/O and names that are not UTF-8 differ. Same N-API binary for
// Node and Electron.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const src = path.dirname(require.resolve('fuse-native/package.json'));
const out = path.join(__dirname, 'addon');
const PATCH = path.join(__dirname, 'fuse-native.patch');

/** Applies PATCH to the sources copied into `out`; the reason it does not apply, or undefined. */
function applyPatch() {
  const pristine = fs.readFileSync(path.join(out, 'fuse-native.c'));
  // Not inside our repository: out/ is a directory of its own, so the patch's paths are
  // relative to it (git would otherwise resolve them against the repository's top).
  const env = { ...process.env, GIT_CEILING_DIRECTORIES: path.dirname(out) };
  delete env.GIT_DIR;
  delete env.GIT_WORK_TREE;
  try {
    execFileSync('git', ['apply', '--whitespace=nowarn', PATCH], { cwd: out, env, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    if (typeof err.status !== 'number') throw err; // git itself could not run
    return String(err.stderr).trim().split('\n')[0] || `git apply exited with ${err.status}`;
  }
  if (pristine.equals(fs.readFileSync(path.join(out, 'fuse-native.c')))) return 'the patch changed nothing';
  return undefined;
}

function main() {
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  for (const f of ['index.js', 'binding.gyp', 'package.json', 'semaphore.h', 'fuse-native.c'])
    fs.copyFileSync(path.join(src, f), path.join(out, f));
  const refused = applyPatch();
  if (refused) {
    console.log(`fuse-native sources changed (${refused}); not building a corrected addon`);
    fs.rmSync(out, { recursive: true, force: true });
    return;
  }
  const gyp = path.join(
    path.dirname(process.execPath),
    '..',
    'lib',
    'node_modules',
    'npm',
    'node_modules',
    'node-gyp',
    'bin',
    'node-gyp.js',
  );
  const nodeGyp = fs.existsSync(gyp) ? [process.execPath, gyp] : ['node-gyp'];
  // Build against the headers of the running Node when the system has them (no download).
  const nodedir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
  const args = [...nodeGyp.slice(1), 'rebuild', '--loglevel=error', ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  execFileSync(nodeGyp[0], args, { cwd: out, stdio: ['ignore', 'ignore', 'inherit'] });
  console.log(`built the corrected FUSE addon in ${path.relative(process.cwd(), out)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  console.warn(
    `warning: could not build the corrected FUSE addon (${err.message.split('\n')[0]}); ` +
      'the stock fuse-native build is used, which cannot set modification times on their own',
  );
}
