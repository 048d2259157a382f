#!/usr/bin/env node
// Builds the FUSE addon from the installed fuse-native sources with two corrections to time
// setting, so tools that restore modification times (tar, cp -p, rsync -t, touch -m) work:
//  1. its utimens handler passes the access time twice, losing the modification time;
//  2. it does not tell libfuse that it understands UTIME_OMIT/UTIME_NOW, so libfuse2 drops
//     every request that sets only one of the two times (GNU tar sets only mtime). With the
//     flag set, those arrive as sentinel values (see SPECIAL_TIMES in adapter.ts).
// A third edit lets open(2) ask for direct I/O per file handle (bit 30 of the returned handle,
// stripped before libfuse sees it): a read-only follower uses it when a file it already has
// open changed in the bucket, so the kernel's shared page cache cannot mix the two versions.
// Names cross as bytes: paths, names and link targets pass as latin1 strings (one char per
// byte) instead of UTF-8, which replaced invalid byte sequences with U+FFFD (two different
// names could become one). adapter.ts decodes them (see wireToName).
// The corrected addon goes to native/fuse/addon/ (not in git) and native/fuse/adapter.ts
// prefers it; without it (no compiler) the stock prebuild is used and only time setting
// differs. Same N-API binary for Node and Electron.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const src = path.dirname(require.resolve('fuse-native/package.json'));
const out = path.join(__dirname, 'addon');
const EDITS = [
  ['FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)', 'FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)'],
  ['if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;',
    'if (implemented[op_utimens]) { ops.utimens = fuse_native_utimens; ops.flag_utime_omit_ok = 1; }'],
  ['  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);',
    '  if (ts->tv_nsec == UTIME_OMIT) return 281474976710655ULL; /* 2^48-1 */\n' +
    '  if (ts->tv_nsec == UTIME_NOW) return 281474976710654ULL;  /* 2^48-2 */\n' +
    '  uint64_t ms = (ts->tv_sec * 1000) + (ts->tv_nsec / 1000000);'],
  ['}, {\n  NAPI_ARGV_INT32(fd, 2)\n  if (fd != 0) {\n    l->info->fh = fd;\n  }\n})\n\nFUSE_METHOD(opendir',
    '}, {\n  NAPI_ARGV_INT32(fd, 2)\n  if (fd != 0) {\n    if (fd & 0x40000000) { l->info->direct_io = 1; fd &= ~0x40000000; }\n' +
    '    l->info->fh = fd;\n  }\n})\n\nFUSE_METHOD(opendir'],
];

// Replaced everywhere: [from, to, expected count].
const EVERYWHERE = [
  ['napi_create_string_utf8(env, l->', 'napi_create_string_latin1(env, l->', 42],
  ['NAPI_UTF8(name, 1024, raw_name)', 'NAPI_LATIN1(name, 1024, raw_name)', 2],
  ['NAPI_ARGV_UTF8(linkname, l->len, 2)', 'NAPI_LATIN1(linkname, l->len, argv[2])', 1],
  ['static const uint32_t op_open = 21;',
    '#define NAPI_LATIN1(name, size, val) \\\n  char name[size]; \\\n  size_t name##_len; \\\n' +
    '  if (napi_get_value_string_latin1(env, val, (char *) &name, size, &name##_len) != napi_ok) { \\\n' +
    '    napi_throw_error(env, "EINVAL", "Expected string"); \\\n    return NULL; \\\n  }\n' +
    'static const uint32_t op_open = 21;', 1],
];

function main() {
  let code = fs.readFileSync(path.join(src, 'fuse-native.c'), 'utf8');
  for (const [from, to, count] of EVERYWHERE) {
    const hits = code.split(from).length - 1;
    if (hits !== count) {
      console.log(`fuse-native sources changed (${hits} matches for "${from}"); not building a corrected addon`);
      fs.rmSync(out, { recursive: true, force: true });
      return;
    }
    code = code.split(from).join(to);
  }
  for (const [from, to] of EDITS) {
    const hits = code.split(from).length - 1;
    if (hits !== 1) {
      console.log(`fuse-native sources changed (${hits} matches for a correction); not building a corrected addon`);
      fs.rmSync(out, { recursive: true, force: true });
      return;
    }
    code = code.replace(from, to);
  }
  fs.rmSync(out, { recursive: true, force: true });
  fs.mkdirSync(out, { recursive: true });
  for (const f of ['index.js', 'binding.gyp', 'package.json', 'semaphore.h']) fs.copyFileSync(path.join(src, f), path.join(out, f));
  fs.writeFileSync(path.join(out, 'fuse-native.c'), code);
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
