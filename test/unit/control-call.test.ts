// A control call from a process whose event loop was blocked when the mount closed an idle
// connection (a caller running a synchronous child process, say): it must reach the mount on a
// connection that is open, not fail on the one the mount closed.

import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, describe, it } from 'node:test';
import { callControl } from '../../electron/host/control';

/** A JSON server answering every call, on its own thread (its timers run while this one blocks). */
function serverThread(socket: string, keepAliveMs: number): Promise<Worker> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { startJsonServer } = require(workerData.module);
    startJsonServer({ listen: { socket: workerData.socket }, handle: async () => ({ ok: true, data: { ok: true } }) })
      .then(({ server }) => { server.keepAliveTimeout = workerData.keepAliveMs; parentPort.postMessage('ready'); });`;
  const worker = new Worker(code, {
    eval: true,
    workerData: { socket, keepAliveMs, module: path.join(__dirname, '../../electron/host/jsonServer.js') },
  });
  return new Promise((resolve, reject) => {
    worker.once('message', () => resolve(worker));
    worker.once('error', reject);
  });
}

describe('callControl', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
  });

  it('succeeds after the mount dropped an idle connection while the caller was blocked', { timeout: 20_000 }, async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-ctl-'));
    dirs.push(dir);
    const socket = path.join(dir, 'c.sock');
    // The mount announces that it closes connections idle for 2 s (Node's default is 5 s) and
    // closes them about a second later. A client that keeps connections drops an idle one a
    // second before the announced time, unless its event loop is blocked then.
    const worker = await serverThread(socket, 2_000);
    try {
      await callControl(socket, '/v1/pause', { paused: false }, 5_000);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 3_600);
      assert.deepEqual(await callControl(socket, '/v1/pause', { paused: false }, 5_000), { ok: true });
    } finally {
      await worker.terminate();
    }
  });
});
