// Runs the compiled test files with node's test runner: `node test/run.mjs [unit|integration|e2e ...]`.
// Suites run one file at a time (--test-concurrency=1): integration tests mount real FUSE
// filesystems and start real S3 servers, and the machine has two cores.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

// Name any missing prerequisite up front instead of failing deep inside a test.
const checks = [
  ['/dev/fuse', () => spawnSync('test', ['-e', '/dev/fuse']).status === 0, 'the fuse kernel module (sudo apt-get install fuse)'],
  ['fusermount', () => spawnSync('/bin/sh', ['-c', 'command -v fusermount']).status === 0, 'sudo apt-get install fuse libfuse2'],
  ['moto', () => spawnSync('python3', ['-c', 'import moto.server']).status === 0, 'pip install "moto[server]"'],
  ['sqlite3', () => spawnSync('/bin/sh', ['-c', 'command -v sqlite3']).status === 0, 'sudo apt-get install sqlite3'],
  ['git', () => spawnSync('/bin/sh', ['-c', 'command -v git']).status === 0, 'sudo apt-get install git'],
  ['setfattr', () => spawnSync('/bin/sh', ['-c', 'command -v setfattr']).status === 0, 'sudo apt-get install attr'],
];
const wantsIntegration = process.argv.slice(2).length === 0 || process.argv.slice(2).some((s) => s !== 'unit');
const missing = wantsIntegration ? checks.filter(([, ok]) => !ok()) : [];
if (missing.length > 0) {
  for (const [name, , fix] of missing) console.error(`missing test prerequisite ${name}: ${fix}`);
  process.exit(1);
}

const root = new URL('../dist/test/', import.meta.url).pathname;
const suites = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'integration'];
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
};
for (const s of suites) walk(join(root, s));
if (files.length === 0) {
  console.error('no test files found; did the build run?');
  process.exit(1);
}
const res = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], { stdio: 'inherit', env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } });
process.exit(res.status ?? 1);
