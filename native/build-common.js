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

/** The folder with node_api.h of the running Node (or npm_config_nodedir's); throws if none has it. */
function nodeApiInclude() {
  const candidates = [
    process.env.npm_config_nodedir && path.join(process.env.npm_config_nodedir, 'include', 'node'),
    path.join(path.dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
  ].filter(Boolean);
  const found = candidates.find((d) => fs.existsSync(path.join(d, 'node_api.h')));
  if (!found) throw new Error(`no node_api.h in ${candidates.join(', ')}`);
  return found;
}

/** Whether `dest` holds `binary` built from what the stamp `want` names (its `.built-from` file). */
function builtFrom(dest, binary, want) {
  try {
    return fs.readFileSync(path.join(dest, '.built-from'), 'utf8') === want && fs.existsSync(path.join(dest, binary));
  } catch {
    return false;
  }
}

module.exports = { nodeGyp, nodedirArgs, swapIn, nodeApiInclude, builtFrom };
