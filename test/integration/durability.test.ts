/**
 * The invariants that keep data safe, through real mounts on a real S3 server: fsynced data
 * survives kill -9 of the engine and uploads by itself after restart, also when writes
 * acknowledged from memory came before and after the fsync (and a closed file survives it
 * too: close puts its data in the dirty store); files deleted before
 * their upload delay never reach the bucket; the cache cap holds while reading three times
 * the cap; a tampered chunk in the bucket gives EIO, never wrong bytes; SIGTERM unmounts
 * cleanly; a busy mount refuses a plain unmount and names the way out.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, CLI, killHard, randomFile, run, sh, tmpDir, until } from '../helpers/bed';
import { describeSample, sampleFrozenDiskUsage } from '../helpers/frozen';
import { s3StoreFor } from '../helpers/moto';
import { isMountPoint } from '../../native/fuse/adapter';

describe('durability', () => {
  const bed = new Bed();
  let local: string;

  before(async () => {
    await bed.start();
    local = await tmpDir('dur');
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('keeps fsynced data through kill -9 of the engine and uploads it after restart', async () => {
    // A long upload delay keeps everything in the local store when the engine dies.
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    await fs.mount();
    const src = await randomFile(local, 'crash.bin', 3 * 1024 * 1024 + 77);
    await sh(`mkdir -p ${fs.mnt}/dir/sub && dd if=${src} of=${fs.mnt}/dir/sub/crash.bin bs=256k conv=fsync status=none`);
    await sh(`printf 'appended line\\n' > ${local}/log.txt && python3 -c "
import os
fd = os.open('${fs.mnt}/log.txt', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b'appended line\\n'); os.fsync(fd); os.close(fd)"`);
    const before = await fs.status();
    assert.ok(Number(before.dirtyBytes) > 0, 'data is still local before the kill');
    const pid = await fs.pid();
    await killHard(pid);
    assert.equal((await fs.machine.cli('status', fs.name, '--json')).code, 0);
    await fs.mount(); // clears the dead mount, takes over the cache lock, resumes
    await sh(`cmp ${src} ${fs.mnt}/dir/sub/crash.bin && cmp ${local}/log.txt ${fs.mnt}/log.txt`);
    await fs.set({ 'upload-delay': '0s' });
    await fs.sync();
    const after = await fs.status();
    assert.equal(after.dirtyBytes, 0);
    assert.equal(after.pendingMetaOps, 0);
    await fs.unmount();
    const other = await bed.link(await bed.machine('reader'), fs.bucket);
    await other.mount();
    await sh(`cmp ${src} ${other.mnt}/dir/sub/crash.bin && cmp ${local}/log.txt ${other.mnt}/log.txt`);
    await other.unmount();
  });

  it('keeps what fsync and close acknowledged through kill -9, with writes acknowledged from memory around them', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    // Buffered writes wait for close or fsync only (no flush by age, an engine setting the
    // command does not offer): what the kill finds in memory is exactly what was not promised.
    const cfgFile = (await sh(`find ${fs.machine.home} -path '*filespaces*' -name '${fs.name}.json'`)).trim();
    const cfg = JSON.parse(await fsp.readFile(cfgFile, 'utf8')) as { settings: Record<string, unknown> };
    cfg.settings.writeBufferFlushMs = 3_600_000;
    await fsp.writeFile(cfgFile, JSON.stringify(cfg));
    await fs.mount();
    // The writer: a small file closed without fsync; then a file written in pieces and
    // fsynced, then patched by small writes here and there (units only partly written, which
    // only a close or an fsync sends on) and fsynced again, then appended to (neither fsynced
    // nor closed) while the engine is killed.
    const synced = 3 * 1024 * 1024 + 77;
    const writer = String.raw`
import os, sys, time, random
mnt, seed, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rnd = random.Random(seed)
closed = os.urandom(10000)
fd = os.open(mnt + '/closed.bin', os.O_WRONLY | os.O_CREAT, 0o644)
for off in range(0, len(closed), 3000): os.write(fd, closed[off:off + 3000])
os.close(fd)
open(out + '/closed.bin', 'wb').write(closed)
data = bytearray(os.urandom(${synced}))
fd = os.open(mnt + '/f.bin', os.O_WRONLY | os.O_CREAT, 0o644)
off = 0
while off < len(data):
    n = rnd.randint(1, 300000)
    os.pwrite(fd, bytes(data[off:off + n]), off); off += n
os.fsync(fd)
for _ in range(40):
    at = rnd.randrange(len(data) - 5000); piece = os.urandom(rnd.randint(1, 5000))
    os.pwrite(fd, piece, at); data[at:at + len(piece)] = piece
os.fsync(fd)
open(out + '/f.bin', 'wb').write(data)
tail = os.urandom(2 * 1024 * 1024)
for k in range(0, len(tail), 50000): os.pwrite(fd, tail[k:k + 50000], len(data) + k)
open(out + '/tail.bin', 'wb').write(tail)
print('ready', flush=True)
time.sleep(600)
`;
    const expectDir = await fsp.mkdtemp(path.join(local, 'expect-'));
    const proc = spawn('python3', ['-c', writer, fs.mnt, '1', expectDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    try {
      let out = '';
      proc.stdout.on('data', (b: Buffer) => (out += b.toString()));
      await until('the writer has fsynced and appended', () => out.includes('ready') || proc.exitCode !== null);
      assert.ok(out.includes('ready'), 'the writer ran to the kill point');
      await killHard(await fs.pid());
    } finally {
      proc.kill('SIGKILL');
      await exited;
    }
    await fs.mount();
    await sh(`cmp ${expectDir}/closed.bin ${fs.mnt}/closed.bin`);
    // (The appended tail was in memory only: the size may have gone to the journal before the
    // data, which then reads as zeros; never other bytes.)
    // Everything fsync acknowledged is there; what came after it is either there or zeros.
    const got = await fsp.readFile(path.join(fs.mnt, 'f.bin'));
    const data = await fsp.readFile(path.join(expectDir, 'f.bin'));
    const tail = await fsp.readFile(path.join(expectDir, 'tail.bin'));
    assert.ok(got.length >= data.length, `the fsynced size survived (${got.length} < ${data.length})`);
    assert.ok(got.subarray(0, data.length).equals(data), 'the fsynced bytes survived');
    for (let k = data.length; k < got.length; k++) {
      const v = got[k]!;
      if (v !== 0 && v !== tail[k - data.length])
        assert.fail(`byte ${k} after the fsynced end is neither what was written nor zero`);
    }
    await fs.unmount();
  });

  it('never uploads a file deleted before its upload delay ran out', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '30s' } });
    await fs.mount();
    await sh(
      `head -c 3000000 /dev/urandom > ${fs.mnt}/scratch.tmp && mkdir ${fs.mnt}/build && head -c 100000 /dev/urandom > ${fs.mnt}/build/o.o && rm -r ${fs.mnt}/scratch.tmp ${fs.mnt}/build`,
    );
    await sh(`echo kept > ${fs.mnt}/kept.txt`);
    await fs.sync(); // forces every remaining dirty chunk up now
    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const chunks = await store.list('chunks/');
    const packs = await store.list('packs/');
    // kept.txt is small, so its chunk went into a pack: one pack, far smaller than o.o's 100 KB.
    const packBytes = packs.length === 1 ? (await store.head(packs[0]!))!.size : 0;
    await store.close();
    assert.equal(chunks.length, 0, `no chunk of the deleted files may be in the bucket, found ${chunks.length}`);
    assert.equal(packs.length, 1, `only kept.txt's pack may be in the bucket, found ${packs.length}`);
    assert.ok(packBytes < 10_000, `the pack holds kept.txt alone (${packBytes} bytes)`);
    await fs.unmount();
  });

  it('holds the cache cap while writing and reading three times the cap', async () => {
    const capBytes = 32 * 1024 * 1024;
    const fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '32MiB', settings: { 'upload-delay': '0s' } });
    const pid = await fs.mount();
    // Exact snapshots: the engine is stopped while its cache folders are walked (a walk of a
    // running engine adds up files that never existed at the same time).
    const sampler = sampleFrozenDiskUsage(pid, fs.cacheDir, ['chunks', 'dirty']);
    const src = await randomFile(local, 'cap.bin', 3 * capBytes);
    await sh(`cp ${src} ${fs.mnt}/cap.bin`);
    await fs.sync();
    await sh(`cmp ${src} ${fs.mnt}/cap.bin`); // reads 3x the cap through the cache
    const { peak, samples } = await sampler.stop();
    assert.ok(peak.bytes > capBytes / 2, `the cache was used (peak ${peak.bytes} over ${samples} snapshots)`);
    assert.ok(
      peak.bytes <= capBytes,
      `cache peaked at ${peak.bytes} bytes, above the ${capBytes}-byte cap:\n${describeSample(peak)}`,
    );
    const st = await fs.status();
    assert.ok(Number(st.cacheUsedBytes) <= capBytes);
    await fs.unmount();
  });

  it('refuses a tampered chunk with EIO and never returns wrong bytes', async () => {
    const fs = await bed.filespace({ chunkSize: '1MiB' });
    await fs.mount();
    const src = await randomFile(local, 'tamper.bin', 2 * 1024 * 1024);
    await sh(`cp ${src} ${fs.mnt}/tamper.bin`);
    await fs.sync();
    await fs.unmount();
    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const keys = await store.list('chunks/');
    assert.equal(keys.length, 2);
    const victim = (await store.get(keys[0]!))!.body;
    victim[victim.length >> 1]! ^= 0x40;
    await store.put(keys[0]!, victim);
    await store.close();
    const reader = await bed.link(await bed.machine('tamper'), fs.bucket);
    await reader.mount({ readOnly: true });
    const r = await run('cat', [path.join(reader.mnt, 'tamper.bin')], { timeoutMs: 120_000 });
    assert.notEqual(r.code, 0, 'reading a tampered file must fail');
    assert.match(r.stderr, /Input\/output error/);
    // The untouched chunk still reads correctly, and whatever was read matches the original.
    const ok = await run('bash', [
      '-c',
      `cmp <(dd if=${reader.mnt}/tamper.bin bs=1M skip=1 count=1 status=none) <(dd if=${src} bs=1M skip=1 count=1 status=none) || cmp <(dd if=${reader.mnt}/tamper.bin bs=1M count=1 status=none) <(dd if=${src} bs=1M count=1 status=none)`,
    ]);
    assert.equal(ok.code, 0, 'the intact chunk reads back correctly');
    const st = await reader.status();
    assert.match(String(st.lastError), /authentication|chunk/);
    await reader.unmount();
  });

  it('keeps the local cache encrypted at rest and refetches a tampered cache file', async () => {
    const fs = await bed.filespace({ chunkSize: '1MiB' });
    await fs.mount();
    // Recognisable plaintext: none of it may appear in any cache file, dirty or clean.
    const marker = 'FILESPACE-PLAINTEXT-MARKER-';
    await sh(
      `python3 -c "import sys; sys.stdout.write(('${marker}' * 100000)[:2500000])" > ${local}/marked.txt && cp ${local}/marked.txt ${fs.mnt}/marked.txt`,
    );
    const dirtyHits = await run('grep', ['-rl', marker, fs.cacheDir]);
    assert.equal(dirtyHits.stdout, '', 'dirty data is encrypted at rest');
    await fs.sync();
    const cleanHits = await run('grep', ['-rl', marker, fs.cacheDir]);
    assert.equal(cleanHits.stdout, '', 'cached chunks are encrypted at rest');
    await fs.unmount();
    // Damage every cached chunk file; the next read must refetch, never serve damaged bytes.
    const files = (await sh(`find ${fs.cacheDir}/chunks -type f`)).trim().split('\n');
    assert.ok(files.length >= 2, `cached chunk files: ${files.join(' ')}`);
    for (const f of files) {
      const b = await fsp.readFile(f);
      b[b.length - 100]! ^= 0xff;
      await fsp.writeFile(f, b);
    }
    await fs.mount();
    await sh(`cmp ${local}/marked.txt ${fs.mnt}/marked.txt`);
    const st = await fs.status();
    assert.ok(Number(st.downloadBytesPerSec) >= 0);
    const log = await fsp.readFile(path.join(fs.machine.home, 'run', `${fs.name}.log`), 'utf8');
    assert.match(log, /was damaged .*fetching it again/);
    await fs.unmount();
  });

  it('tells systemd it is ready once mounted, and unmounts cleanly on SIGTERM', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '1h' } });
    // A stand-in for systemd's notify socket: a datagram socket whose messages go to a file.
    const notifySocket = path.join(local, 'notify.sock');
    const notified = path.join(local, 'notified.txt');
    const listener = spawn(
      'python3',
      [
        '-c',
        `
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
open(sys.argv[2] + '.up', 'w').close()
while True:
    msg = s.recv(4096).decode()
    with open(sys.argv[2], 'a') as f:
        f.write(msg + '\\n')
`,
        notifySocket,
        notified,
      ],
      { stdio: 'ignore' },
    );
    await until('the notify listener', () =>
      fsp.access(notified + '.up').then(
        () => true,
        () => false,
      ),
    );
    const child = spawn(process.execPath, [CLI, 'mount', fs.name, '--foreground'], {
      env: { ...fs.machine.env, NOTIFY_SOCKET: notifySocket },
      stdio: 'ignore',
    });
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until('READY=1', () =>
      fsp.readFile(notified, 'utf8').then(
        (t) => t.includes('READY=1'),
        () => false,
      ),
    );
    listener.kill();
    assert.equal(await isMountPoint(fs.mnt), true, 'ready means mounted');
    await sh(`echo 'written before stop' > ${fs.mnt}/f.txt`);
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.equal(await isMountPoint(fs.mnt), false);
    const st = await fs.status();
    assert.equal(st.state, 'unmounted');
    assert.ok(Number(st.dirtyBytes) > 0, 'unsent data stays in the cache');
    await fs.mount();
    assert.equal(await fsp.readFile(path.join(fs.mnt, 'f.txt'), 'utf8'), 'written before stop\n');
    await fs.unmount();
  });

  it('refuses a plain unmount while a process uses the mount, and says how to proceed', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const holder = spawn('sleep', ['600'], { cwd: fs.mnt, stdio: 'ignore' });
    try {
      await until('sleep to start', async () => holder.pid !== undefined);
      const r = await fs.machine.cli('unmount', fs.name);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`in use by sleep \\(pid ${holder.pid}\\)`));
      assert.match(r.stderr, /--force/);
      assert.equal((await fs.status()).state, 'mounted');
    } finally {
      holder.kill('SIGKILL');
    }
    await new Promise((r) => holder.on('exit', r));
    await fs.unmount();
    assert.equal(await isMountPoint(fs.mnt), false);
  });

  it('detaches the dead mount of a killed engine with unmount --force', async () => {
    const fs = await bed.filespace();
    const pid = await fs.mount();
    await killHard(pid);
    assert.equal(await isMountPoint(fs.mnt), true, 'the kernel still has the dead mount');
    const plain = await fs.machine.cli('unmount', fs.name);
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /use --force to detach the stale mount/);
    await fs.machine.ok('unmount', fs.name, '--force');
    assert.equal(await isMountPoint(fs.mnt), false);
  });

  it('applies a new cache size live', async () => {
    const fs = await bed.filespace({ cacheSize: '64MiB' });
    await fs.mount();
    assert.equal((await fs.status()).cacheCapBytes, 64 * 1024 * 1024);
    await fs.machine.ok('set', fs.name, 'cache-size', '128MiB');
    assert.equal((await fs.status()).cacheCapBytes, 128 * 1024 * 1024);
    await fs.unmount();
    await fs.mount();
    assert.equal((await fs.status()).cacheCapBytes, 128 * 1024 * 1024, 'the setting persists');
    await fs.unmount();
  });
});
