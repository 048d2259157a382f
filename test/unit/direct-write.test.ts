// Downloaded chunks are written to the cache around the page cache (O_DIRECT) where the cache's
// file system takes it: the addon's writer puts every byte in place from unaligned buffers of
// any size, cuts the file to their length, leaves none of it in the page cache (fincore), and
// reports an error with its errno name; through the cache, a received chunk is stored that way
// on a disk file system, and on tmpfs (which takes O_DIRECT from Linux 6.6 and refuses it
// before, when the cache writes the usual way) reads back the same. Bytes that lie aligned in
// memory are written from where they lie, so an object received where `directPlace` says is
// stored with no copy but its last partial block.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { RECEIVED_HEAD_ROOM, RECEIVE_SLACK, ReceivedIO, receivePlace } from '../../electron/engine/cache/received';
import { physicalSize } from '../../electron/engine/cache/sealed';
import {
  DIRECT_ALIGN,
  canWriteDirect,
  cipherBackend,
  directCopiedBytes,
  directPlace,
  writeDirect,
} from '../../electron/engine/chunk/cipherAddon';
import { chunkName } from '../../electron/engine/chunk/crypto';
import { encodeChunk } from '../../electron/engine/chunk/format';
import { testChunkCache } from '../helpers/chunkCacheFixture';

const DIRECT = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DIRECT;

/** Bytes of `file` in the page cache (fincore opens it itself). */
function resident(file: string): number {
  return Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
}

/** Whether the file system of `dir` takes O_DIRECT. */
async function takesDirect(dir: string): Promise<boolean> {
  const probe = path.join(dir, 'probe');
  try {
    await (await fsp.open(probe, DIRECT, 0o600)).close();
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EINVAL') return false;
    throw err;
  } finally {
    await fsp.rm(probe, { force: true });
  }
}

const skip = canWriteDirect ? false : `the cipher addon cannot write with O_DIRECT here (${cipherBackend})`;

describe('cache files written around the page cache', { skip }, () => {
  let dir = '';
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'direct-'));
    // The tests below need a file system that takes O_DIRECT; the disk the cache lives on does.
    assert.ok(await takesDirect(dir), `${dir} refuses O_DIRECT`);
  });
  after(() => fsp.rm(dir, { recursive: true, force: true }));

  it('writes unaligned buffers of any size in place, cut to their length, and keeps none of it in the page cache', async () => {
    const shapes = [[], [0], [1], [4095], [4096], [4097], [88, 1792, 4 * 1024 * 1024], [1024 * 1024 + 1, 3, 2 * 1024 * 1024 + 5]];
    for (const sizes of shapes) {
      // Views at odd offsets of larger buffers: nothing here is aligned.
      const buffers = sizes.map((n) => randomBytes(n + 7).subarray(3, 3 + n));
      const file = path.join(dir, `f-${sizes.join('-')}`);
      const fh = await fsp.open(file, DIRECT, 0o600);
      try {
        assert.equal(
          await writeDirect(fh.fd, buffers),
          sizes.reduce((a, b) => a + b, 0),
        );
      } finally {
        await fh.close();
      }
      assert.equal(resident(file), 0, `${file}: left in the page cache`);
      assert.deepEqual(await fsp.readFile(file), Buffer.concat(buffers));
    }
  });

  it('writes the whole blocks of bytes that lie aligned in memory from where they lie, the rest through its own buffer', async () => {
    const MiB = 1024 * 1024;
    const cases = [
      // [bytes before the aligned part (a separate buffer), aligned part length]
      { head: [] as number[], len: 4 * MiB + 5 },
      { head: [], len: 3 * DIRECT_ALIGN },
      { head: [DIRECT_ALIGN], len: 2 * MiB + 100 },
      { head: [100], len: MiB }, // the aligned buffer starts at an unaligned file offset: copied
    ];
    for (const { head, len } of cases) {
      const big = randomBytes(len + 2 * DIRECT_ALIGN);
      const at = directPlace(big, 0);
      assert.equal(directPlace(big.subarray(at), 0), 0, 'directPlace finds an aligned address');
      assert.equal(directPlace(big.subarray(at + 1), 0), DIRECT_ALIGN - 1);
      const aligned = big.subarray(at, at + len);
      const buffers = [...head.map((n) => randomBytes(n)), aligned];
      const file = path.join(dir, `aligned-${head.join('-')}-${len}`);
      const before = directCopiedBytes()!;
      const fh = await fsp.open(file, DIRECT, 0o600);
      try {
        await writeDirect(fh.fd, buffers);
      } finally {
        await fh.close();
      }
      const copied = directCopiedBytes()! - before;
      const headBytes = head.reduce((a, b) => a + b, 0);
      const inPlace = headBytes % DIRECT_ALIGN === 0;
      const expected = inPlace ? headBytes + (len % DIRECT_ALIGN) : headBytes + len;
      assert.equal(copied, expected, `head ${head.join(',')}, ${len} bytes: copied ${copied}`);
      assert.equal(resident(file), 0);
      assert.deepEqual(await fsp.readFile(file), Buffer.concat(buffers));
    }
  });

  it('fails with the errno of the write, naming it, and writes nothing', async () => {
    const file = path.join(dir, 'readonly');
    await fsp.writeFile(file, 'kept');
    const fh = await fsp.open(file, 'r');
    try {
      await assert.rejects(writeDirect(fh.fd, [randomBytes(5000)])!, (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'EBADF');
        assert.match(err.message, /^EBADF: .*direct write of a cache file/);
        return true;
      });
    } finally {
      await fh.close();
    }
    assert.equal(await fsp.readFile(file, 'utf8'), 'kept');
  });

  it('through the cache: a downloaded chunk goes to disk around the page cache, and reads back on tmpfs too', async () => {
    const key = randomBytes(32);
    const chunkKey = randomBytes(32);
    const places = [{ root: dir, disk: true }];
    // tmpfs: always in memory, whether it takes O_DIRECT or the cache falls back.
    const shm = '/dev/shm';
    if (
      await fsp
        .stat(shm)
        .then((s) => s.isDirectory())
        .catch(() => false)
    )
      places.push({ root: shm, disk: false });
    for (const { root, disk } of places) {
      const cdir = await fsp.mkdtemp(path.join(root, 'fs-direct-cache-'));
      const { cache, handles } = testChunkCache(cdir, key, new ReceivedIO(key, chunkKey));
      try {
        await cache.init();
        for (const len of [1, 65_536 * 3 + 5, 4 * 1024 * 1024]) {
          const data = randomBytes(len);
          const name = chunkName(key, data);
          assert.equal(await cache.putReceived(name, await encodeChunk(chunkKey, name, data), data), true);
          const file = cache.pathOf(name);
          assert.equal((await fsp.stat(file)).size, physicalSize(len));
          if (disk) assert.equal(resident(file), 0, 'written around the page cache');
          assert.deepEqual(await cache.readAll(name), data);
        }
      } finally {
        await handles.closeAll();
        await fsp.rm(cdir, { recursive: true, force: true });
      }
    }
  });

  it('through the cache: an object received at its place is stored in place, copying only its last partial block', async () => {
    const key = randomBytes(32);
    const chunkKey = randomBytes(32);
    const cdir = await fsp.mkdtemp(path.join(dir, 'in-place-'));
    const { cache, handles } = testChunkCache(cdir, key, new ReceivedIO(key, chunkKey));
    try {
      await cache.init();
      for (const len of [4 * 1024 * 1024, 65_536 * 7 + 11]) {
        const data = randomBytes(len);
        const name = chunkName(key, data);
        const obj = await encodeChunk(chunkKey, name, data);
        // As the fetcher receives it: placed in a larger buffer.
        const body = Buffer.alloc(obj.length + RECEIVE_SLACK);
        const placed = receivePlace(body).subarray(0, obj.length);
        const at = placed.byteOffset - body.byteOffset;
        assert.ok(at >= RECEIVED_HEAD_ROOM, 'room for the header before it');
        obj.copy(placed);
        const before = directCopiedBytes()!;
        assert.equal(await cache.putReceived(name, placed, data, true), true);
        const copied = directCopiedBytes()! - before;
        assert.ok(copied < DIRECT_ALIGN, `${len} bytes: ${copied} bytes copied`);
        assert.equal(body.subarray(at - RECEIVED_HEAD_ROOM, at + 4).toString('latin1', 0, 4), 'FSR2', 'header written before it');
        assert.equal((await fsp.stat(cache.pathOf(name))).size, physicalSize(len));
        assert.deepEqual(await cache.readAll(name), data);
      }
      // Without the caller's room (inPlace false), the object's memory is left alone.
      const data = randomBytes(300_000);
      const name = chunkName(key, data);
      const obj = await encodeChunk(chunkKey, name, data);
      const copy = Buffer.from(obj);
      assert.equal(await cache.putReceived(name, obj, data), true);
      assert.deepEqual(obj, copy);
      assert.deepEqual(await cache.readAll(name), data);
    } finally {
      await handles.closeAll();
    }
  });
});
