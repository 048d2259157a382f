#!/usr/bin/env node
// Builds the SQLite addon the engine's local metadata store uses (electron/engine/meta/db.ts):
// better-sqlite3's sources (SQLite itself included), with the correction in
// better-sqlite3.patch beside this file, into native/sqlite/addon/better_sqlite3.node.
//
// Why a build of our own: better-sqlite3 is an N-API addon (one binary for Node and Electron),
// but its releases target Node-API 10 (Node 22 and later), and its prebuilt binary crashes on
// Node 20 as it loads: it keeps persistent references to strings, which Node-API allows only
// from version 10. The patch holds each such string in a one-element array (a `StringRef`
// class in src/util/helpers.cpp, used by src/util/constants.cpp and src/util/bind-map.cpp)
// and builds for Node-API 9 (binding.gyp), so the same binary loads in Node 20, Node 22 and
// Electron. The patch is applied with `git apply` (every hunk or none, never with fuzz).
//
// It is built beside its final place and swapped in, so a process loading the addon meanwhile
// finds the old one or the new one. A stamp names the sources and patch it was built from:
// with --if-stale (as `npm run build` runs it) nothing is done while the stamp matches.
// Unlike the FUSE addon there is no fallback on Node 20: if the build fails there, this exits
// with an error (the engine cannot open its metadata without it).
'use strict';
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { nodeGyp: findNodeGyp, nodedirArgs, swapIn } = require('../build-common');

const src = path.dirname(require.resolve('better-sqlite3/package.json'));
const dest = path.join(__dirname, 'addon');
const out = path.join(__dirname, `addon.build-${process.pid}`);
const PATCH = path.join(__dirname, 'better-sqlite3.patch');
const STAMP = '.built-from';
const BINARY = 'better_sqlite3.node';
const TREES = ['src', 'deps', 'lib'];
const FILES = ['binding.gyp', 'package.json'];

function filesUnder(dir) {
  const all = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) all.push(...filesUnder(p));
    else all.push(p);
  }
  return all;
}

/** What an addon built now would be built from: the sources, the patch and this script. */
function stamp() {
  const h = crypto.createHash('sha256');
  for (const f of FILES) h.update(fs.readFileSync(path.join(src, f)));
  for (const t of ['src']) for (const f of filesUnder(path.join(src, t))) h.update(fs.readFileSync(f));
  h.update(fs.readFileSync(PATCH));
  h.update(fs.readFileSync(__filename));
  return `${h.digest('hex')}\n`;
}

function upToDate(want) {
  try {
    return fs.readFileSync(path.join(dest, STAMP), 'utf8') === want && fs.existsSync(path.join(dest, BINARY));
  } catch {
    return false;
  }
}

function main() {
  const want = stamp();
  if (process.argv.includes('--if-stale') && upToDate(want)) return;
  fs.rmSync(out, { recursive: true, force: true });
  const tree = path.join(out, 'tree');
  fs.mkdirSync(tree, { recursive: true });
  for (const t of TREES) fs.cpSync(path.join(src, t), path.join(tree, t), { recursive: true });
  for (const f of FILES) fs.copyFileSync(path.join(src, f), path.join(tree, f));
  // node-addon-api: the copy better-sqlite3 resolves (its own nested one when npm put one
  // there), beside the sources, so the build does not pick up another version further up.
  const napiSrc = path.dirname(require.resolve('node-addon-api/package.json', { paths: [src] }));
  fs.cpSync(napiSrc, path.join(tree, 'node_modules', 'node-addon-api'), { recursive: true });
  const env = { ...process.env, GIT_CEILING_DIRECTORIES: out };
  delete env.GIT_DIR;
  delete env.GIT_WORK_TREE;
  execFileSync('git', ['apply', '--whitespace=nowarn', PATCH], { cwd: tree, env, stdio: ['ignore', 'pipe', 'pipe'] });
  const nodeGyp = findNodeGyp();
  const args = [
    ...nodeGyp.slice(1),
    'rebuild',
    '--release',
    '--force_build=1',
    '--loglevel=error',
    `--jobs=${Math.max(1, require('node:os').availableParallelism())}`,
    ...nodedirArgs(),
  ];
  execFileSync(nodeGyp[0], args, { cwd: tree, env, stdio: ['ignore', 'ignore', 'inherit'] });
  fs.mkdirSync(path.join(out, 'addon'));
  fs.copyFileSync(path.join(tree, 'build', 'Release', BINARY), path.join(out, 'addon', BINARY));
  fs.writeFileSync(path.join(out, 'addon', STAMP), want);
  swapIn(path.join(out, 'addon'), dest);
  fs.rmSync(out, { recursive: true, force: true });
  console.log(`built the SQLite addon in ${path.relative(process.cwd(), dest)}`);
}

try {
  main();
} catch (err) {
  fs.rmSync(out, { recursive: true, force: true });
  const kept = fs.existsSync(path.join(dest, BINARY));
  const napi = Number(process.versions.napi);
  const msg = `could not build the SQLite addon (${String(err.message).split('\n')[0]})`;
  if (kept) console.warn(`warning: ${msg}; the one built before stays in use`);
  else if (napi >= 10) console.warn(`warning: ${msg}; better-sqlite3's own build is used`);
  else {
    console.error(`error: ${msg}; this Node (Node-API ${napi}) needs it: install make, g++ and python3, then run npm install`);
    process.exitCode = 1;
  }
}
