// The kernel's page cache across opens (keep_cache), through real mounts: a file read once is
// read again from memory at its next open, and a file changed since (on this machine through
// the mount, or on a follower by the writer) is never served from pages of the old version.
// Whether the kernel kept a file's pages at an open is seen with fincore(1): it opens the file
// itself, so it reports the pages resident only if that open kept them.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, run, sh, tmpDir, until } from '../helpers/bed';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** `bytes` as whole pages, as fincore counts them. */
const paged = (bytes: number) => Math.ceil(bytes / 4096) * 4096;

/** Bytes of `file` in the kernel's page cache just after an open of it (fincore's own). */
async function residentAfterOpen(file: string): Promise<number> {
  const r = await run('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  if (r.code !== 0) throw new Error(`fincore ${file} failed: ${r.stderr}`);
  return Number(r.stdout.trim());
}

/**
 * The page-cache bytes charged to a memory cgroup made for one shell command (`cmd`), which
 * runs in it: what the kernel cached of the files the command wrote. Undefined where this
 * process cannot make a child memory cgroup (not root, or no memory controller).
 */
async function pageCacheOf(cmd: string): Promise<number | undefined> {
  const mine = (await fsp.readFile('/proc/self/cgroup', 'utf8')).split('\n');
  const v1 = mine.find((l) => /^\d+:([^:]*,)?memory(,[^:]*)?:/.test(l));
  const v2 = mine.find((l) => l.startsWith('0::'));
  const [root, rel, key] = v1
    ? ['/sys/fs/cgroup/memory', v1.split(':')[2]!, 'cache']
    : ['/sys/fs/cgroup', v2?.slice(3) ?? '', 'file'];
  if (!v1 && !v2) return undefined;
  const group = path.join(root, rel, `fs-pagecache-${process.pid}-${Date.now()}`);
  if (
    !(await fsp.mkdir(group).then(
      () => true,
      () => false,
    ))
  )
    return undefined;
  try {
    if (
      !v1 &&
      !(await fsp.readFile(path.join(group, 'memory.stat'), 'utf8').then(
        () => true,
        () => false,
      ))
    )
      return undefined;
    await sh(`echo $$ > '${group}/cgroup.procs' && ${cmd}`);
    const stat = await fsp.readFile(path.join(group, 'memory.stat'), 'utf8');
    const line = stat.split('\n').find((l) => l.startsWith(`${key} `));
    if (!line) throw new Error(`no "${key}" in ${group}/memory.stat`);
    return Number(line.split(' ')[1]);
  } finally {
    // Its charges go to the parent; the group goes once its process has.
    await until(
      'the cgroup to empty',
      () =>
        fsp.rmdir(group).then(
          () => true,
          () => undefined,
        ),
      10_000,
    );
  }
}

/** The sha256 of `file` as another process reads it. */
async function shaOf(file: string): Promise<string> {
  return (await sh(`sha256sum < '${file}'`)).split(' ')[0]!;
}

describe('the kernel page cache across opens', () => {
  const bed = new Bed();
  let local = '';

  before(async () => {
    await bed.start();
    local = await tmpDir('pagecache-local');
  });
  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  async function localFile(name: string, data: Buffer): Promise<string> {
    const f = path.join(local, name);
    await fsp.writeFile(f, data);
    return f;
  }

  it('a file read once is read from memory at the next open, and never stale after a change through the mount', async () => {
    const a = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    await a.mount();
    const file = path.join(a.mnt, 'data.bin');
    const v1 = randomBytes(3 * MiB);
    await sh(`cp '${await localFile('v1', v1)}' '${file}'`);
    await a.sync();
    assert.equal(await shaOf(file), sha(v1));
    assert.equal(await residentAfterOpen(file), paged(v1.length), 'an unchanged file keeps its cached pages at the next open');

    // Overwritten in place from another process, same size: the next reader sees the new bytes.
    const v2 = Buffer.from(v1);
    randomBytes(200_000).copy(v2, 1 * MiB + 123);
    await sh(`dd if='${await localFile('v2', v2)}' of='${file}' bs=1M conv=notrunc status=none`);
    assert.equal(await shaOf(file), sha(v2));
    await a.sync();
    assert.equal(await shaOf(file), sha(v2));

    // Truncated and rewritten (cp over it): the next reader sees the new bytes.
    await residentAfterOpen(file);
    const v3 = randomBytes(3 * MiB);
    await sh(`cp '${await localFile('v3', v3)}' '${file}'`);
    assert.equal(await shaOf(file), sha(v3));
    await sh(`truncate -s 1000000 '${file}'`);
    assert.equal(await shaOf(file), sha(v3.subarray(0, 1_000_000)));
    await a.sync();
    assert.equal(await shaOf(file), sha(v3.subarray(0, 1_000_000)));

    // Replaced by a rename over it, same size: the next reader sees the new file.
    const v4 = randomBytes(1_000_000);
    await sh(`cp '${await localFile('v4', v4)}' '${a.mnt}/tmp.bin' && mv '${a.mnt}/tmp.bin' '${file}'`);
    assert.equal(await shaOf(file), sha(v4));
    await a.sync();
    assert.equal(await shaOf(file), sha(v4));
    assert.equal(await residentAfterOpen(file), paged(v4.length));

    // Written through a second open while a reader holds it open: both see the new bytes.
    const reader = await fsp.open(file, 'r');
    try {
      await sh(`printf 'XYZ' | dd of='${file}' bs=1 seek=10 conv=notrunc status=none`);
      const want = Buffer.from(v4);
      want.write('XYZ', 10, 'latin1');
      assert.equal(await shaOf(file), sha(want));
      const back = Buffer.alloc(v4.length);
      await reader.read(back, 0, back.length, 0);
      assert.equal(sha(back), sha(want));
    } finally {
      await reader.close();
    }
    await a.unmount();
  });

  it("a new file written write-only takes none of the kernel's page cache, and a reader opened meanwhile reads every write", async (t) => {
    const a = await bed.filespace({ settings: { 'upload-delay': '0s' } });
    await a.mount();
    const MB64 = 64 * MiB;
    // dd creates its output write-only: its writes go around the kernel's page cache. A file
    // written read-write (the same bytes, dd conv=notrunc into an existing file opened O_RDWR
    // by the shell's <>) is cached as the kernel writes it through.
    const around = await pageCacheOf(`dd if=/dev/zero of='${a.mnt}/new.bin' bs=1M count=64 status=none`);
    const through = await pageCacheOf(`: > '${a.mnt}/rw.bin' && dd if=/dev/zero bs=1M count=64 status=none 1<>'${a.mnt}/rw.bin'`);
    if (around === undefined || through === undefined)
      t.diagnostic('no memory cgroup to measure the page cache with: not checked');
    else {
      t.diagnostic(`page cache charged to the writer: write-only ${around} bytes, read-write ${through} bytes`);
      assert.ok(through >= MB64 / 2, `a read-write file is cached as written (${through} bytes)`);
      assert.ok(around < MB64 / 8, `a new write-only file is not (${around} bytes)`);
    }
    assert.equal(await shaOf(path.join(a.mnt, 'new.bin')), sha(Buffer.alloc(MB64)));

    // A writer that created its file keeps writing while another process reads it: each of the
    // reader's reads, through one open, returns what was written last.
    const file = path.join(a.mnt, 'live.bin');
    const writer = await fsp.open(file, 'wx');
    try {
      await writer.write(Buffer.alloc(3 * MiB, 1), 0, 3 * MiB, 0);
      const reader = await fsp.open(file, 'r');
      try {
        for (let round = 2; round < 6; round++) {
          const got = Buffer.alloc(3 * MiB);
          await reader.read(got, 0, got.length, 0);
          assert.ok(
            got.every((b) => b === round - 1),
            `round ${round}: the reader reads the last write`,
          );
          await writer.write(Buffer.alloc(3 * MiB, round), 0, 3 * MiB, 0);
        }
      } finally {
        await reader.close();
      }
    } finally {
      await writer.close();
    }
    assert.equal(await shaOf(file), sha(Buffer.alloc(3 * MiB, 5)));
    await a.sync();
    assert.equal(await shaOf(file), sha(Buffer.alloc(3 * MiB, 5)));
    await a.unmount();
  });

  async function pair(tag: string): Promise<{ a: Linked & { bucket: string }; b: Linked }> {
    const settings = { 'follow-interval': '300ms', 'upload-delay': '0s' };
    const a = await bed.filespace({ settings });
    const b = await bed.link(await bed.machine(`${tag}-b`), a.bucket);
    await b.set(settings);
    return { a, b };
  }

  it('a follower keeps the pages of a file the writer did not change, and drops them when the writer changes it', async () => {
    const { a, b } = await pair('follow');
    await a.mount();
    const v1 = randomBytes(2 * MiB);
    const other = randomBytes(2 * MiB);
    await sh(`cp '${await localFile('f1', v1)}' '${a.mnt}/doc.bin' && cp '${await localFile('f2', other)}' '${a.mnt}/other.bin'`);
    await a.sync();
    await b.mount({ readOnly: true });
    const doc = path.join(b.mnt, 'doc.bin');
    assert.equal(await shaOf(doc), sha(v1));
    assert.equal(await residentAfterOpen(doc), paged(v1.length), 'a follower keeps the pages of an unchanged file');

    // The writer overwrites it in place, same size (no size change for the kernel to notice).
    const v2 = Buffer.from(v1);
    randomBytes(4096).copy(v2, 300_000);
    await sh(`dd if='${await localFile('f3', v2)}' of='${a.mnt}/doc.bin' bs=1M conv=notrunc status=none`);
    await a.sync();
    await until("the follower to read the writer's new bytes", async () => (await shaOf(doc)) === sha(v2), 60_000);

    // The writer replaces it with another file of the same size by a rename over it: the
    // follower's kernel still names the old file's node by that path.
    assert.equal(await shaOf(path.join(b.mnt, 'other.bin')), sha(other));
    assert.equal(await shaOf(doc), sha(v2));
    await sh(`mv '${a.mnt}/other.bin' '${a.mnt}/doc.bin'`);
    await a.sync();
    await until('the follower to read the renamed file', async () => (await shaOf(doc)) === sha(other), 60_000);
    // The follower tells its kernel to forget the names the rename changed, and once more
    // 200 ms later (lowlevel.ts NOTICE_AGAIN_MS): a node looked up in between is dropped by the
    // second notice, pages and all. Once the notices are out, what a read cached stays for the
    // next open.
    await until(
      'the renamed file to keep its pages across opens',
      async () => (await shaOf(doc)) === sha(other) && (await residentAfterOpen(doc)) === paged(other.length),
      20_000,
    );
    await b.unmount();
    await a.unmount();
  });

  it('a follower never mixes two versions: a reader opened before a change keeps its own, a new reader gets the new one', async () => {
    const { a, b } = await pair('mixed');
    await a.mount();
    const v1 = randomBytes(3 * MiB);
    await sh(`cp '${await localFile('m1', v1)}' '${a.mnt}/big.bin'`);
    await a.sync();
    await b.mount({ readOnly: true });
    const big = path.join(b.mnt, 'big.bin');
    assert.equal(await shaOf(big), sha(v1));
    const old = await fsp.open(big, 'r');
    try {
      const first = Buffer.alloc(MiB);
      await old.read(first, 0, first.length, 0);
      const v2 = randomBytes(3 * MiB);
      await sh(`dd if='${await localFile('m2', v2)}' of='${a.mnt}/big.bin' bs=1M conv=notrunc status=none`);
      await a.sync();
      await until('the follower to read the new version', async () => (await shaOf(big)) === sha(v2), 60_000);
      const rest = Buffer.alloc(3 * MiB);
      await old.read(rest, 0, rest.length, 0);
      assert.equal(sha(rest), sha(v1), 'the reader opened before the change reads its own version');
      // Both versions passed through the kernel's cache for that path: the next open keeps nothing.
      assert.equal(await residentAfterOpen(big), 0);
    } finally {
      await old.close();
    }
    assert.equal(await shaOf(big), await shaOf(path.join(a.mnt, 'big.bin')));
    await b.unmount();
    await a.unmount();
  });
});
