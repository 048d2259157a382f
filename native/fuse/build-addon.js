#!/usr/bin/env node
// Builds the FUSE addon from the installed fuse-native sources with one correction: its
// utimens handler passes the access time twice, so the modification time a tool sets (touch -m,
// cp -p, tar, rsync -t) is lost. The corrected addon goes to native/fuse/addon/ (not in git)
// and native/fuse/adapter.ts prefers it; without it (no compiler) the stock prebuild is used
// and only that one behaviour differs. Same N-API binary for Node and Electron.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const src = path.dirname(require.resolve('fuse-native/package.json'));
const out = path.join(__dirname, 'addon');
const BROKEN = 'FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)';
const FIXED = 'FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)';

function main() {
  const code = fs.readFileSync(path.join(src, 'fuse-native.c'), 'utf8');
  const hits = code.split(BROKEN).length - 1;
  if (hits !== 1) {
    if (code.includes(FIXED)) console.log('fuse-native already passes the modification time; using it as is');
    else console.log(`fuse-native sources changed (${hits} matches); not building a corrected addon`);
    fs.rmSync(out, { recursive: true, force: true });
    return;
  }
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  for (const f of ['index.js', 'binding.gyp', 'package.json', 'semaphore.h']) fs.copyFileSync(path.join(src, f), path.join(out, f));
  fs.writeFileSync(path.join(out, 'fuse-native.c'), code.replace(BROKEN, FIXED));
  const gyp = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js');
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
  console.warn(`warning: could not build the corrected FUSE addon (${err.message.split('\n')[0]}); ` +
    'the stock fuse-native build is used, which cannot set modification times on their own');
}
