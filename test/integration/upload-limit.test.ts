/**
 * The upload bandwidth limit, on a real mount talking to the S3 test server through a proxy
 * that logs when each request arrives: chunk uploads under a limit never get ahead of the
 * budget (rate * elapsed + one second of burst), the limit shows in status, lifting it live
 * releases uploads already waiting, and bad values are refused without changing anything.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomFile, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

const KiB = 1024;

describe('upload bandwidth limit', () => {
  const env = proxiedBed('uplimit');
  const bed = env.bed;

  const chunkPuts = (since: number) => env.proxy.log.slice(since).filter((r) => r.method === 'PUT' && r.url.includes('/chunks/'));

  it('keeps chunk uploads within the limit and reports it', async () => {
    // The uploads are timed by when their PUTs reach the proxy, so they start once all files are
    // written (upload-delay): an upload starting while the next files are still being written
    // shares the engine's thread with them, and its PUT would leave later than its grant.
    const fs = await bed.filespace({
      endpoint: env.proxy.endpoint,
      settings: { 'upload-delay': '2s', 'upload-limit': '128KiB' },
    });
    await fs.mount();
    const st = await fs.status();
    assert.equal(st.uploadLimitBytesPerSec, 128 * KiB);
    assert.match(await fs.machine.ok('status', fs.name), /throughput: up .*\(limit 128 KiB\/s\)/);

    // One upload first, outside the timed ones: the first upload of a mount also starts the
    // encoder and opens a connection, so its PUT leaves later after its grant than the next ones
    // and would make the gap to the second look shorter than the limit made it.
    await fsp.copyFile(await randomFile(env.local, 'first.bin', 16 * KiB), path.join(fs.mnt, 'first.bin'));
    await fs.sync();

    const files = 6;
    // Random bytes: each file is one chunk of at least this size once sealed, too large for a
    // pack (chunk/packs.ts), so each is a PUT of its own.
    const size = 320 * KiB;
    const sources: string[] = [];
    for (let i = 0; i < files; i++) sources.push(await randomFile(env.local, `f${i}.bin`, size));
    const logStart = env.proxy.log.length;
    for (let i = 0; i < files; i++) await fsp.copyFile(sources[i]!, path.join(fs.mnt, `f${i}.bin`));
    await fs.sync();
    const puts = chunkPuts(logStart);
    assert.equal(puts.length, files, 'one chunk upload per file');
    // The k-th upload may start only once the k before it fit the budget: at 128 KiB/s with one
    // second of burst, (k * 320 KiB) / 128 KiB/s - 1 s after the first.
    const t0 = puts[0]!.at;
    for (let k = 1; k < files; k++) {
      const earliest = ((k * size) / (128 * KiB)) * 1000 - 1000;
      assert.ok(
        puts[k]!.at - t0 >= earliest - 100, // a PUT leaves its grant after reading and sealing its chunk
        `upload ${k} started ${puts[k]!.at - t0} ms after the first; the limit allows it no earlier than ${earliest} ms`,
      );
    }
    await fs.unmount();

    // Everything arrived: a second machine reads it from the bucket.
    const reader = await bed.link(await bed.machine('reader'), fs.bucket);
    await reader.mount({ readOnly: true });
    for (let i = 0; i < files; i++) {
      assert.deepEqual(
        await fsp.readFile(path.join(reader.mnt, `f${i}.bin`)),
        await fsp.readFile(path.join(env.local, `f${i}.bin`)),
      );
    }
    await reader.unmount();
  });

  it('lifting the limit live releases uploads already waiting for bandwidth', async () => {
    const fs = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '0s', 'upload-limit': '16KiB' } });
    await fs.mount();
    const logStart = env.proxy.log.length;
    for (let i = 0; i < 4; i++) {
      const src = await randomFile(env.local, `w${i}.bin`, 512 * KiB);
      await fsp.copyFile(src, path.join(fs.mnt, `w${i}.bin`));
    }
    // The first chunk goes at once; at 16 KiB/s each next one waits 32 s for its budget.
    await until('the first chunk upload', () => chunkPuts(logStart).length >= 1);
    const waiting = await fs.status();
    assert.ok(Number(waiting.dirtyFiles) >= 3, `files still waiting for bandwidth: ${String(waiting.dirtyFiles)}`);
    assert.equal(chunkPuts(logStart).length, 1, 'nothing else is sent while the budget is in debt');

    await fs.machine.ok('set', fs.name, 'upload-limit', 'off');
    const lifted = await fs.status();
    assert.equal(lifted.uploadLimitBytesPerSec, 0);
    // With the limit still in force the rest would need 96 s; lifted, it goes at once.
    await fs.machine.ok('sync', fs.name, '--timeout', '40s');
    assert.equal(chunkPuts(logStart).length, 4);
    await fs.unmount();
  });

  it('refuses bad limits with a clear message and keeps the one in force', async () => {
    const fs = await bed.filespace({ settings: { 'upload-limit': '2MiB' } });
    const configFile = path.join(fs.machine.home, 'config', 'filespaces', `${fs.name}.json`);
    const before = await fsp.readFile(configFile, 'utf8');
    assert.match(before, /"uploadLimitBytesPerSec": ?2097152/);
    for (const [value, message] of [
      ['fast', /"fast" is not a rate; write bytes per second .* e\.g\. 512KiB, 2MiB\/s, or off/],
      ['-5', /"-5" is not a rate/],
      ['1KiB', /upload limit must be at least 16 KiB\/s \(or off\)/],
    ] as Array<[string, RegExp]>) {
      const r = await fs.machine.cli('set', fs.name, 'upload-limit', ...(value.startsWith('-') ? ['--', value] : [value]));
      assert.notEqual(r.code, 0, value);
      assert.match(r.stderr, message, value);
    }
    assert.equal(await fsp.readFile(configFile, 'utf8'), before, 'a refused value changes nothing');
    await fs.mount();
    assert.equal((await fs.status()).uploadLimitBytesPerSec, 2 * 1024 * 1024);
    await fs.machine.ok('set', fs.name, 'upload-limit', '512KiB/s');
    assert.equal((await fs.status()).uploadLimitBytesPerSec, 512 * KiB);
    await fs.unmount();
  });
});
