/**
 * A child process that hosts one engine (on a local-disk bucket, so the parent test can open
 * the same bucket and cache after this process is gone) and runs a scripted workload through
 * the FUSE interface, telling the parent over IPC what it promised. The parent kills it with
 * SIGKILL: an in-process stand-in for a crashed daemon, with no kernel mount.
 *
 * Every message is handed to the OS before the operation it announces starts (send callback),
 * so the parent reads it even when this process dies right after.
 *
 * Scripts:
 *  - fsync-then-scribble: writes, rewrites, renames and truncates files with fsync, sends
 *    "synced" with their digests, then keeps writing other files without fsync until killed.
 *  - promise-stream: an endless seeded mix of creates, appends, overwrites, renames and
 *    deletes, each fsynced; before an operation it sends "busy" for the paths it touches (their
 *    state is unknown if it dies during it), after it "promised" with the path's new digest.
 *    Every few operations it uploads everything (engine.sync), announced by "uploading", so
 *    the parent can kill it with uploads and metadata pushes in flight.
 *  - cap-*: workloads that push the cache against its cap (three times the cap streamed in
 *    and read back; fsynced data rewritten in place; reads from the bucket while dirty data
 *    fills the cap; several writers and readers at once). Each checks what it reads, uploads
 *    everything, and sends "done" with the cache use it counts, then idles until killed.
 */

import { createHash, randomBytes } from 'node:crypto';
import { Engine } from '../../electron/engine/engine';
import { unlockFilespace } from '../../electron/engine/filespace';
import { LocalDiskStore } from '../../electron/engine/store/local';
import { FuseFilesystem } from '../../native/fuse/adapter';
import type { CapWorkload, ChildArgs, ChildMessage } from './engineBed';
import { O_WRONLY, PASSPHRASE, patchFile, readFile, testSettings, until, withFile, writeAt, writeFile } from './engineBed';
import { prng } from './referenceModel';

function send(msg: ChildMessage): Promise<void> {
  return new Promise((resolve, reject) => process.send!(msg, undefined, undefined, (err) => (err ? reject(err) : resolve())));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function bytes(rand: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

async function fsyncThenScribble(fs: FuseFilesystem, cs: number, rand: () => number): Promise<void> {
  const files: Record<string, string> = {};
  // A file of several chunks, fsynced.
  await writeFile(fs, '/a.bin', bytes(rand, 3 * cs + cs / 2), { fsync: true });
  // Fsynced, then rewritten in place across a chunk boundary and fsynced again.
  await writeFile(fs, '/b.bin', bytes(rand, 2 * cs), { fsync: true });
  await patchFile(fs, '/b.bin', cs - 50, bytes(rand, 100), { fsync: true });
  // Renamed across directories, the rename made durable with fsync on the directory.
  fs.mkdir('/d', 0o755);
  await writeFile(fs, '/d/c.bin', bytes(rand, cs + 10), { fsync: true });
  await fs.rename('/d/c.bin', '/e.bin');
  await fs.fsyncAll();
  // Cut inside a chunk, then grown again: zeros where data was cut.
  await withFile(fs, '/a.bin', O_WRONLY, async (fh) => {
    await fs.ftruncate(fh, cs + 123);
    await fs.ftruncate(fh, 2 * cs);
    await fs.fsync(fh);
  });
  for (const p of ['/a.bin', '/b.bin', '/e.bin']) files[p] = sha(await readFile(fs, p));
  await send({ type: 'synced', files });
  // Unsynced work on other files until the parent kills this process.
  for (let i = 0; ; i++) {
    await withFile(fs, `/scratch-${i % 3}.bin`, O_WRONLY, (fh) =>
      writeAt(fs, fh, (i * 7919) % (2 * cs), bytes(rand, 1 + ((rand() * cs) | 0))),
    );
    if (i % 5 === 4) await fs.unlink(`/scratch-${(i + 1) % 3}.bin`);
  }
}

async function promiseStream(engine: Engine, cs: number, rand: () => number, tag: number): Promise<void> {
  const fs = engine.vfs;
  const live: string[] = [];
  const pick = () => live[(rand() * live.length) | 0]!;
  let nextUpload = 3;
  for (let n = 1; ; n++) {
    if (n === nextUpload) {
      nextUpload += 3 + ((rand() * 6) | 0);
      await send({ type: 'uploading' });
      if (!(await engine.sync(Date.now() + 120_000))) throw new Error('sync did not finish');
    }
    const op = rand();
    if (op < 0.35 || live.length === 0) {
      const p = `/f${tag}-${n}`;
      await send({ type: 'busy', paths: [p] });
      const data = bytes(rand, (rand() * 3 * cs) | 0);
      await writeFile(fs, p, data, { fsync: true });
      await fs.fsyncAll();
      live.push(p);
      await send({ type: 'promised', path: p, sha256: sha(data), n });
    } else if (op < 0.55) {
      const p = pick();
      await send({ type: 'busy', paths: [p] });
      const size = fs.getattr(p).size;
      await patchFile(fs, p, size, bytes(rand, 1 + ((rand() * cs) | 0)), { fsync: true });
      await send({ type: 'promised', path: p, sha256: sha(await readFile(fs, p)), n });
    } else if (op < 0.75) {
      const p = pick();
      await send({ type: 'busy', paths: [p] });
      const size = fs.getattr(p).size;
      await patchFile(fs, p, (rand() * (size + 1000)) | 0, bytes(rand, 1 + ((rand() * cs) | 0)), { fsync: true });
      await send({ type: 'promised', path: p, sha256: sha(await readFile(fs, p)), n });
    } else if (op < 0.88) {
      const p = pick();
      const to = `/r${tag}-${n}`;
      await send({ type: 'busy', paths: [p, to] });
      await fs.rename(p, to);
      await fs.fsyncAll();
      live.splice(live.indexOf(p), 1, to);
      await send({ type: 'promised', path: p, sha256: null, n });
      await send({ type: 'promised', path: to, sha256: sha(await readFile(fs, to)), n });
    } else {
      const p = pick();
      await send({ type: 'busy', paths: [p] });
      await fs.unlink(p);
      await fs.fsyncAll();
      live.splice(live.indexOf(p), 1);
      await send({ type: 'promised', path: p, sha256: null, n });
    }
  }
}

/** Writes `data` at `pos` in pieces of at most 128 KiB, each piece its own call (as the kernel sends them). */
async function writeAll(fs: FuseFilesystem, p: string, data: Buffer, opts: { fsync?: boolean } = {}): Promise<void> {
  await withFile(fs, p, O_WRONLY, async (fh) => {
    await writeAt(fs, fh, 0, data);
    if (opts.fsync) await fs.fsync(fh);
  });
}

async function expectSame(fs: FuseFilesystem, p: string, data: Buffer): Promise<void> {
  const got = await readFile(fs, p);
  if (!got.equals(data)) throw new Error(`${p} reads back different bytes`);
}

async function capWorkload(engine: Engine, script: CapWorkload): Promise<void> {
  const fs = engine.vfs;
  const cap = engine.currentSettings.cacheCapBytes;
  const cs = engine.chunkSize;
  const sync = async () => {
    if (!(await engine.sync(Date.now() + 120_000))) throw new Error('sync did not finish');
  };
  switch (script) {
    case 'cap-stream': {
      const big = randomBytes(3 * cap);
      await writeAll(fs, '/big', big);
      await sync();
      await expectSame(fs, '/big', big);
      break;
    }
    case 'cap-rewrite': {
      // Durable (fsynced) data rewritten in place keeps pre-images of what it overwrites: the
      // rewrite needs as much room again as the data.
      await writeAll(fs, '/db', randomBytes(Math.floor(0.6 * cap)), { fsync: true });
      const db = randomBytes(Math.floor(0.6 * cap));
      await writeAll(fs, '/db', db);
      await sync();
      await expectSame(fs, '/db', db);
      break;
    }
    case 'cap-read-while-dirty': {
      const src = randomBytes(2 * cap);
      await writeAll(fs, '/src', src);
      await sync();
      // Dirty data fills the cache while nothing uploads; then a file is read from the bucket.
      engine.setUploadsPaused(true);
      const fill = randomBytes(cap);
      const writing = writeAll(fs, '/fill', fill);
      await until('dirty data to fill the cache', () => engine.stats().dirtyBytes >= cap - 3 * cs, 120_000, 10);
      await expectSame(fs, '/src', src);
      engine.setUploadsPaused(false);
      await writing;
      await sync();
      await expectSame(fs, '/fill', fill);
      break;
    }
    case 'cap-parallel': {
      const src = randomBytes(cap);
      await writeAll(fs, '/src', src);
      await sync();
      const files = Array.from({ length: 6 }, () => randomBytes(Math.floor(cap / 2)));
      await Promise.all([
        ...files.map((data, i) => writeAll(fs, `/w${i}`, data)),
        expectSame(fs, '/src', src),
        expectSame(fs, '/src', src),
      ]);
      await sync();
      for (const [i, data] of files.entries()) await expectSame(fs, `/w${i}`, data);
      break;
    }
  }
  // Settled: nothing in flight, nothing left to evict. Copies into the cache and evictions
  // run behind the workload, and on a busy machine one can take longer than a sampling
  // interval without changing the count: the count must hold for a second.
  let last = -1;
  let since = 0;
  await until(
    'the cache to settle',
    () => {
      const used = engine.stats().cacheUsedBytes;
      if (used !== last || used > cap) since = Date.now();
      last = used;
      return Date.now() - since >= 1000;
    },
    60_000,
    50,
  );
  await send({ type: 'done', usedBytes: engine.stats().cacheUsedBytes, capBytes: cap });
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]!) as ChildArgs;
  const store = new LocalDiskStore(args.storeDir);
  const { header, keys } = await unlockFilespace(store, PASSPHRASE);
  const engine = await Engine.open({ store, keys, header, cacheDir: args.cacheDir, settings: testSettings(args.settings) });
  await send({ type: 'ready' });
  const rand = prng(args.seed);
  if (args.script === 'fsync-then-scribble') await fsyncThenScribble(engine.vfs, header.chunkSize, rand);
  else if (args.script === 'promise-stream') await promiseStream(engine, header.chunkSize, rand, args.seed);
  else await capWorkload(engine, args.script);
  // The parent takes its last snapshots of a live process, then kills it: an engine with nothing
  // left to do holds no timer that would keep the process alive until then.
  setInterval(() => undefined, 60_000);
}

main().catch(async (err: unknown) => {
  await send({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }).catch(() => undefined);
  process.exit(1);
});
