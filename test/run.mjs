// Runs the compiled test files with node's test runner: `node test/run.mjs [unit|engine|integration|ui ...]`.
// Two test files run at a time (FILESPACE_TEST_CONCURRENCY, default 2): every file starts its
// own S3 server on a free port and mounts under its own temporary folders, so files share
// nothing, and most of a file's time is spent waiting on mounts, servers and timers rather
// than on the CPU (the whole suite used about 0.6 of one core run one at a time), so two at a
// time on a two-core machine finish sooner without starving either. The tests wait for events
// with deadlines, never on speed, so a busier machine makes them slower, not flaky (the suite
// passed two at a time on a machine with a load of 12 to 16 on two cores). The engine suite
// (whole engines in process, no mount, no S3 server) runs before integration: it is the quick
// check after an engine change (`node test/run.mjs engine`).
//
// Timeouts: every test and hook gets a default timeout unless it sets its own (5 minutes, see
// test/helpers/testTimeouts.ts, loaded into each test process), so a hang fails under the
// test's name. `--test-timeout` bounds each test file as a whole (that is what it does on
// Node 20): 40 minutes, four times the slowest file of a CI run (real tools, 9 minutes), which
// also catches a file whose tests finished but whose process never exits.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const has = (cmd) => spawnSync('/bin/sh', ['-c', `command -v ${cmd}`]).status === 0;
// Name any missing prerequisite up front instead of failing deep inside a test.
// [name, check, how to get it, suites that need it]
const checks = [
  [
    '/dev/fuse',
    () => spawnSync('test', ['-e', '/dev/fuse']).status === 0,
    'the fuse kernel module (sudo apt-get install fuse)',
    ['integration', 'ui'],
  ],
  ['fusermount', () => has('fusermount'), 'sudo apt-get install fuse libfuse2', ['integration', 'ui']],
  // The low-level addon's libfuse3 build (1 MiB requests), which the integration tests use.
  [
    'libfuse3',
    () => spawnSync('test', ['-e', '/usr/include/fuse3/fuse_lowlevel.h']).status === 0,
    'sudo apt-get install libfuse3-dev, then npm run build',
    ['integration'],
  ],
  [
    'moto',
    () => spawnSync('python3', ['-c', 'import moto.server']).status === 0,
    'pip install "moto[server]"',
    ['integration', 'ui'],
  ],
  ['sqlite3', () => has('sqlite3'), 'sudo apt-get install sqlite3', ['integration']],
  ['git', () => has('git'), 'sudo apt-get install git', ['integration']],
  ['setfattr', () => has('setfattr'), 'sudo apt-get install attr', ['integration']],
  // The keychain tests run against a real Secret Service on a private D-Bus session.
  ['dbus-daemon', () => has('dbus-daemon') && has('dbus-send'), 'sudo apt-get install dbus', ['unit', 'ui']],
  ['gnome-keyring-daemon', () => has('gnome-keyring-daemon'), 'sudo apt-get install gnome-keyring', ['unit', 'ui']],
  [
    'chromium',
    () => spawnSync(process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', ['--version']).status === 0,
    'sudo apt-get install chromium (or set CHROMIUM_PATH)',
    ['ui'],
  ],
];
const suites = process.argv.slice(2).length ? process.argv.slice(2) : ['unit', 'engine', 'integration', 'ui'];
const missing = checks.filter(([, ok, , needed]) => needed.some((s) => suites.includes(s)) && !ok());
if (missing.length > 0) {
  for (const [name, , fix] of missing) console.error(`missing test prerequisite ${name}: ${fix}`);
  process.exit(1);
}

const root = new URL('../dist/test/', import.meta.url).pathname;
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
const concurrency = Number(process.env.FILESPACE_TEST_CONCURRENCY ?? 2);
const fileTimeoutMs = Number(process.env.FILESPACE_FILE_TIMEOUT_MS ?? 40 * 60_000);
const res = spawnSync(
  process.execPath,
  [
    '--require',
    join(root, 'helpers', 'testTimeouts.js'),
    '--test',
    `--test-concurrency=${concurrency}`,
    `--test-timeout=${fileTimeoutMs}`,
    '--test-reporter=spec',
    ...files,
  ],
  { stdio: 'inherit', env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' } },
);
process.exit(res.status ?? 1);
