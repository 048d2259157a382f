/**
 * Uploads give way to a streaming writer (upload/writeback.ts), on real mounts against the S3
 * test server: while writes keep arriving no new upload starts, but that wait never holds data
 * back for good. A writer that never pauses still gets the data waiting beside it uploaded once
 * it is `maxDirtyAgeMs` old, someone browsing the mount without a pause holds a closed file back
 * only until its last write is a few seconds old, and `filespace sync` uploads at once whatever
 * the writers do.
 *
 * The writer (or browser) is a separate process that rewrites a small region of its file (or
 * stats it and lists its folder) without a break until the test stops it.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, type RunResult, randomFile, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

const KiB = 1024;

/** Writes 256 KiB to `file`, then rewrites them 4 KiB at a time without a break until killed; resolves once the 256 KiB are written. */
function startStreamingWriter(file: string): Promise<ChildProcess> {
  return startLoop(
    file,
    `const fd = fs.openSync(file, 'w');
    const b = Buffer.alloc(4096, 7);
    let i = 0;
    for (let k = 0; k < 64; k++) fs.writeSync(fd, b, 0, b.length, k * 4096);`,
    'fs.writeSync(fd, b, 0, b.length, (i++ % 64) * 4096);',
  );
}

/** Stats `file` and lists its folder without a break until killed (someone browsing the mount). */
function startBrowsing(file: string): Promise<ChildProcess> {
  return startLoop(file, 'fs.statSync(file);', 'fs.statSync(file); fs.readdirSync(require("node:path").dirname(file));');
}

/** A process that runs `setup` on `file`, then `step` without a break until killed; resolves once setup is done. */
async function startLoop(file: string, setup: string, step: string): Promise<ChildProcess> {
  const script = `
    const fs = require('node:fs');
    const file = process.argv[1];
    ${setup}
    process.stdout.write('running\\n');
    for (;;) { ${step} }`;
  const child = spawn(process.execPath, ['-e', script, file], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.setEncoding('utf8').once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`the loop on ${file} exited (${code}) before it started`)));
  });
  return child;
}

async function stopWriter(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await gone;
}

/** Sets engine settings that `filespace set` does not offer, in the link's configuration (before mount). */
async function setEngineSettings(fs: Linked, settings: Record<string, number>): Promise<void> {
  const file = path.join(fs.machine.home, 'config', 'filespaces', `${fs.name}.json`);
  const cfg = JSON.parse(await fsp.readFile(file, 'utf8')) as { settings: Record<string, unknown> };
  cfg.settings = { ...cfg.settings, ...settings };
  await fsp.writeFile(file, JSON.stringify(cfg, null, 2) + '\n');
}

/** Files with data waiting for upload, writes still in the write buffer included (live, unlike the list of their paths). */
async function dirtyFiles(fs: Linked): Promise<number> {
  return Number((await fs.status()).dirtyFiles);
}

describe('uploads and a streaming writer', () => {
  const env = proxiedBed('writerfirst');
  const bed = env.bed;

  it('a writer that never pauses holds other data back no longer than the maximum dirty age', { timeout: 300_000 }, async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1s' } });
    await setEngineSettings(fs, { maxDirtyAgeMs: 3_000 });
    await fs.mount();
    const writer = await startStreamingWriter(path.join(fs.mnt, 'stream.bin'));
    try {
      const src = await randomFile(env.local, 'aged.bin', 256 * KiB);
      await fsp.copyFile(src, path.join(fs.mnt, 'aged.bin'));
      // Two files have data waiting (the writer's and aged.bin) until aged.bin is uploaded.
      await until('aged.bin to upload while the writer keeps writing', async () => (await dirtyFiles(fs)) <= 1, 120_000);
      assert.equal(writer.exitCode, null, 'the writer was still writing');
    } finally {
      await stopWriter(writer);
    }
    await fs.sync();
    await fs.unmount();
  });

  it('someone browsing the mount without a pause holds a closed file back only for a while', { timeout: 300_000 }, async () => {
    // Stats and listings hold uploads of closed files back as writes do (upload/writeback.ts),
    // until their last write is WRITER_BURST_DELAY_MS old, or on a machine of fewer than
    // WRITER_BURST_CORES cores until they have waited maxDirtyAgeMs: never for good.
    const fs = await bed.filespace({ settings: { 'upload-delay': '1s' } });
    await setEngineSettings(fs, { maxDirtyAgeMs: 10_000 });
    await fs.mount();
    await fsp.writeFile(path.join(fs.mnt, 'seen.txt'), 'browsed\n');
    const browser = await startBrowsing(path.join(fs.mnt, 'seen.txt'));
    try {
      const src = await randomFile(env.local, 'closed.bin', 256 * KiB);
      await fsp.copyFile(src, path.join(fs.mnt, 'closed.bin'));
      await until('closed.bin to upload while the mount is browsed', async () => (await dirtyFiles(fs)) === 0, 120_000);
      assert.equal(browser.exitCode, null, 'the browsing went on');
    } finally {
      await stopWriter(browser);
    }
    await fs.unmount();
  });

  it('filespace sync uploads at once while a writer keeps writing', { timeout: 300_000 }, async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1s' } });
    // Without the sync, nothing would upload for ten minutes while the writer writes.
    await setEngineSettings(fs, { maxDirtyAgeMs: 600_000 });
    await fs.mount();
    const writer = await startStreamingWriter(path.join(fs.mnt, 'stream.bin'));
    let syncing: Promise<RunResult> | undefined;
    const src = await randomFile(env.local, 'synced.bin', 256 * KiB);
    try {
      await fsp.copyFile(src, path.join(fs.mnt, 'synced.bin'));
      syncing = fs.machine.cli('sync', fs.name, '--timeout', '4m');
      await until(
        'the sync to upload synced.bin while the writer keeps writing',
        async () => (await dirtyFiles(fs)) <= 1,
        120_000,
      );
      assert.equal(writer.exitCode, null, 'the writer was still writing');
    } finally {
      await stopWriter(writer);
    }
    // Once the writer has stopped, the sync finishes with everything in the bucket.
    assert.ok(syncing);
    const r = await syncing;
    assert.equal(r.code, 0, r.stderr);
    await fs.unmount();
    const reader = await bed.link(await bed.machine('reader'), fs.bucket);
    await reader.mount({ readOnly: true });
    try {
      assert.deepEqual(await fsp.readFile(path.join(reader.mnt, 'synced.bin')), await fsp.readFile(src));
      assert.equal((await fsp.stat(path.join(reader.mnt, 'stream.bin'))).size, 256 * KiB);
    } finally {
      await reader.unmount();
    }
  });
});
