// Pins down that the commands which only talk to a running mount (status, set, sync, unmount)
// start without loading the engine or the AWS SDK: the real `filespace` command runs against a
// control server that answers as a mount does, and reports which modules it loaded.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { StatusDto } from '../../electron/contract/api';
import { homes, saveConfig, socketPath } from '../../electron/host/config';
import { startControlServer, type Handlers } from '../../electron/host/control';
import { REPO } from '../helpers/bed';

const status: StatusDto = {
  name: 'quick',
  state: 'mounted',
  mountPoint: '/nowhere/quick',
  pid: 4321,
  dirtyBytes: 0,
  dirtyFiles: 0,
  pendingMetaOps: 0,
  uploadBytesPerSec: 0,
  downloadBytesPerSec: 0,
  cacheUsedBytes: 1024,
  cacheCapBytes: 2 ** 30,
  cacheHitRatio: 1,
  openFiles: 0,
  offline: false,
  uploadsPaused: false,
  readOnlyReason: null,
  lastError: null,
};

/** Runs `filespace ARGS` with `preload` (which prints, at exit, the modules the process loaded). */
function run(home: string, preload: string, args: string[]): Promise<{ code: number; stdout: string; modules: string[] }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--require', preload, path.join(REPO, 'bin', 'filespace'), ...args], {
      env: { ...process.env, FILESPACE_HOME: home },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      const line = /^MODULES (.*)$/m.exec(stderr)?.[1];
      if (!line) return reject(new Error(`no module list from filespace ${args.join(' ')}: ${stderr}`));
      resolve({ code: code ?? -1, stdout, modules: JSON.parse(line) as string[] });
    });
  });
}

describe('commands for a running mount', () => {
  let home: string;
  let server: http.Server;
  const received: string[] = [];

  before(async () => {
    home = await mkdtemp(path.join(os.tmpdir(), 'filespace-cli-'));
    const h = homes({ FILESPACE_HOME: home });
    await writeFile(path.join(home, 'pass'), 'correct horse battery staple', { mode: 0o600 });
    await writeFile(
      path.join(home, 'modules.js'),
      "process.on('exit', () => process.stderr.write('\\nMODULES ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));\n",
    );
    await saveConfig(h, {
      version: 1,
      name: 'quick',
      filespaceId: 'fs-quick',
      store: {
        kind: 's3',
        bucket: 'quick-bucket',
        prefix: '',
        pathStyle: true,
        endpoint: 'http://127.0.0.1:9',
        region: 'us-east-1',
      },
      mountPoint: '/nowhere/quick',
      cacheDir: path.join(home, 'cache'),
      passphraseFile: path.join(home, 'pass'),
      settings: {},
      conditionalWrites: true,
    });
    // Answers as a running mount does; only the routes these commands use.
    const handlers: Partial<Handlers> = {
      '/v1/status': async () => {
        received.push('status');
        return status;
      },
      '/v1/set': async () => {
        received.push('set');
        return { ok: true as const };
      },
      '/v1/sync': async () => {
        received.push('sync');
        return { done: true, dirtyBytes: 0, pendingMetaOps: 0, notWriting: null };
      },
      '/v1/unmount': async () => {
        received.push('unmount');
        return { ok: true as const };
      },
    };
    server = await startControlServer(socketPath(h, 'quick'), handlers as Handlers, () => undefined);
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
    await rm(home, { recursive: true, force: true });
  });

  for (const [args, says] of [
    [['status', 'quick'], /quick: mounted at \/nowhere\/quick/],
    [['set', 'quick', 'upload-delay', '5s'], /applied live/],
    [['sync', 'quick'], /every local change is in the bucket/],
  ] as const) {
    it(`${args[0]} answers from the mount without loading the engine or the AWS SDK`, async () => {
      const r = await run(home, path.join(home, 'modules.js'), [...args]);
      assert.equal(r.code, 0, r.stdout);
      assert.match(r.stdout, says);
      assert.equal(received.at(-1), args[0], 'the mount was asked');
      const loaded = (part: string) => r.modules.filter((m) => m.includes(part));
      assert.deepEqual(loaded('@aws-sdk'), [], 'no AWS SDK module');
      assert.deepEqual(loaded(`${path.sep}engine${path.sep}engine.js`), [], 'not the engine');
      assert.deepEqual(loaded(`${path.sep}host${path.sep}mountHost.js`), [], 'not the mount host');
      assert.ok(loaded(`${path.sep}host${path.sep}control.js`).length === 1, 'the control client, which it used');
    });
  }
});
