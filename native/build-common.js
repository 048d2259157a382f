// What the native builds (fuse/build-addon.js, sqlite/build-sqlite.js) share: how node-gyp is
// found and run against the running Node's headers, and how a finished build is swapped in.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

/** node-gyp as [program, ...args]: npm's own copy beside this Node when there is one. */
function nodeGyp() {
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
  return fs.existsSync(gyp) ? [process.execPath, gyp] : ['node-gyp'];
}

/** `--nodedir=` for the headers of the running Node when the system has them (no download). */
function nodedirArgs() {
  const nodedir = process.env.npm_config_nodedir || (fs.existsSync('/usr/include/node/node_api.h') ? '/usr' : undefined);
  return nodedir ? [`--nodedir=${nodedir}`] : [];
}

/**
 * Puts the folder `built` in place of `dest` (a folder or a symbolic link), so a process loading
 * the addon meanwhile finds the old one or the new one, never half of one.
 */
function swapIn(built, dest) {
  const old = `${dest}.old-${process.pid}`;
  let moved = false;
  try {
    fs.renameSync(dest, old);
    moved = true;
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
  }
  fs.renameSync(built, dest);
  if (moved) fs.rmSync(old, { recursive: true, force: true });
}

module.exports = { nodeGyp, nodedirArgs, swapIn };
