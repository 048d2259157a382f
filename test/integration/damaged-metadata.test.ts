/**
 * Damaged metadata, through the real command and real mounts: a local journal damaged in the
 * middle after kill -9 refuses the mount with one line and keeps every dirty chunk, `check`
 * names it and what is at risk, and `repair` keeps every fsynced file as set-aside files that
 * export byte for byte; a damaged snapshot, a damaged segment in the bucket and a damaged
 * configuration file each give one line naming the file (never a stack trace), and `list`
 * still lists the other filespaces; dirty chunks found at mount without a known file are set
 * aside, not deleted; a negative size is named in one line.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, RunResult, killHard, randomFile, sh, tmpDir, until } from '../helpers/bed';
import { openDatabase } from '../../electron/engine/meta/db';
import { s3StoreFor } from '../helpers/moto';

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function assertOneLineError(r: RunResult, pattern: RegExp): string {
  assert.equal(r.code, 1, `expected exit 1, got ${r.code}: ${r.stderr}${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line, got: ${r.stderr}`);
  assert.match(lines[0]!, /^filespace: /);
  assert.doesNotMatch(lines[0]!, /unexpected error|\bat .*\.js:\d+/);
  assert.match(lines[0]!, pattern);
  return lines[0]!;
}

const FSYNC_WRITER = `
import os, sys
dst = sys.argv[1]
for src in sys.argv[2:]:
    with open(src, 'rb') as f: data = f.read()
    fd = os.open(os.path.join(dst, os.path.basename(src)), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data); os.fsync(fd); os.close(fd)
    d = os.open(dst, os.O_RDONLY); os.fsync(d); os.close(d)
`;

/** Writes each local file into the mount and fsyncs it and its directory, as an editor saving would. */
async function writeFsynced(local: string, sources: string[], dir: string): Promise<void> {
  const script = path.join(local, 'fsync-writer.py');
  await fsp.writeFile(script, FSYNC_WRITER);
  await sh(`python3 ${script} ${dir} ${sources.join(' ')}`);
}

/** Deletes a file in the mount and fsyncs its directory. */
async function unlinkFsynced(file: string): Promise<void> {
  await sh(
    `python3 -c 'import os, sys; os.unlink(sys.argv[1]); d = os.open(os.path.dirname(sys.argv[1]), os.O_RDONLY); os.fsync(d); os.close(d)' ${file}`,
  );
}

async function journalOf(fs: Linked): Promise<string> {
  const meta = path.join(fs.cacheDir, 'meta');
  const name = (await fsp.readdir(meta))
    .filter((n) => /^journal\.\d+$/.test(n))
    .sort()
    .pop();
  assert.ok(name, 'the journal exists');
  return path.join(meta, name);
}

/** Record offsets of a journal (`u32 length | u32 crc32 | JSON`). */
function recordOffsets(buf: Buffer): number[] {
  const out: number[] = [];
  for (let pos = 0; pos + 8 <= buf.length; pos += 8 + buf.readUInt32LE(pos)) out.push(pos);
  return out;
}

async function dirtyNames(fs: Linked): Promise<string[]> {
  return (await fsp.readdir(path.join(fs.cacheDir, 'dirty'))).sort();
}

/** Every file under `dir`, by path relative to it, with its content hash. */
async function hashesUnder(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (d: string) => {
    for (const e of await fsp.readdir(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(path.relative(dir, p), sha(await fsp.readFile(p)));
    }
  };
  await walk(dir);
  return out;
}

describe('damaged metadata', () => {
  const bed = new Bed();
  let local: string;

  before(async () => {
    await bed.start();
    local = await tmpDir('damaged');
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('a journal damaged in the middle refuses the mount, keeps every dirty chunk, and repair gives every fsynced file back', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '10m' } });
    await fs.mount();
    const srcDir = path.join(local, 'ten');
    await fsp.mkdir(srcDir);
    const sources: string[] = [];
    for (let i = 1; i <= 10; i++) sources.push(await randomFile(srcDir, `f${i}`, 50_000));
    await writeFsynced(local, sources, fs.mnt);
    await killHard(await fs.pid());

    // One bit in a record in the middle; the records after it stay intact.
    const journal = await journalOf(fs);
    const buf = await fsp.readFile(journal);
    const at = recordOffsets(buf);
    assert.ok(at.length >= 10, `the journal holds the changes (${at.length} records)`);
    const victim = at[Math.floor(at.length / 2)]!;
    buf[victim + 8 + Math.floor(buf.readUInt32LE(victim) / 2)]! ^= 0x04;
    await fsp.writeFile(journal, buf);
    const dirtyBefore = await dirtyNames(fs);
    assert.equal(dirtyBefore.filter((n) => /^\d+\.0$/.test(n)).length, 10, 'ten dirty chunks wait in the cache');

    const refused = await fs.machine.cli('mount', fs.name);
    const line = assertOneLineError(refused, /metadata journal .*journal\.\d+ is damaged/);
    assert.ok(line.includes(journal), line);
    assert.match(line, /record.* after the damage/);
    assert.match(line, /10 dirty chunks/);
    assert.ok(line.includes(`filespace check ${fs.name}`) && line.includes(`filespace repair ${fs.name}`), line);
    assert.deepEqual(await fsp.readFile(journal), buf, 'the journal is neither truncated nor changed');
    assert.deepEqual(await dirtyNames(fs), dirtyBefore, 'no dirty chunk was deleted');
    const st = await fs.status();
    assert.equal(st.dirtyFiles, 10, 'status counts the dirty data still waiting');
    assert.match(String(st.lastError), /metadata journal .* is damaged/);

    const check = await fs.machine.cli('check', fs.name);
    assert.equal(check.code, 1, check.stdout + check.stderr);
    assert.match(check.stdout, /PROBLEM local: the metadata journal .* is damaged/);
    assert.match(check.stdout, /PROBLEM local: at risk: \d+ file\(s\) with changes not yet in the bucket, 10 dirty chunk\(s\)/);
    assert.match(check.stdout, /at risk: .*: .*\/f\d+/, 'the files at risk are named by their paths');
    assert.match(check.stderr, new RegExp(`filespace repair ${fs.name}`));
    assert.deepEqual(await fsp.readFile(journal), buf, 'check changes nothing');

    // The repair's trees are databases in a scratch folder of the cache; one a killed repair
    // left is removed, and its own is gone when it ends.
    const left = path.join(fs.cacheDir, `filespace-repair-${spawnSync('true').pid}-left`);
    await fsp.mkdir(left);
    await fsp.writeFile(path.join(left, 'tree.db'), 'left by a killed repair');
    const repaired = await fs.machine.ok('repair', fs.name);
    assert.deepEqual(
      (await fsp.readdir(fs.cacheDir)).filter((n) => n.startsWith('filespace-')),
      [],
      'no scratch folder is left in the cache folder',
    );
    const id = /as (\d{8}T\d{6}Z(?:-\d+)?)/.exec(repaired)?.[1];
    assert.ok(id, repaired);
    const out = path.join(local, 'recovered');
    await fs.machine.ok('aside', fs.name, 'export', id, out);
    const exported = await hashesUnder(out);
    const unnamed = [...exported.keys()].filter((p) => p.startsWith('unnamed/'));
    assert.ok(
      unnamed.length <= 1,
      `at most the file whose creation was the damaged record is unnamed: ${[...exported.keys()].join(',')}`,
    );
    const found = new Map<string, string>(); // source -> exported path
    for (const src of sources) {
      const want = sha(await fsp.readFile(src));
      const name = path.basename(src);
      const at = exported.get(name) === want ? name : unnamed.find((p) => exported.get(p) === want);
      assert.ok(at, `${name} is recovered byte for byte (exported: ${[...exported.keys()].join(',')})`);
      found.set(src, at);
    }

    // The filespace mounts again, from the bucket's metadata; the files can be copied back.
    await fs.mount();
    for (const [src, at] of found) await sh(`cp ${path.join(out, at)} ${fs.mnt}/${path.basename(src)}`);
    for (const src of sources) await sh(`cmp ${src} ${fs.mnt}/${path.basename(src)}`);
    await fs.unmount();
    const after = await fs.machine.cli('check', fs.name);
    assert.equal(after.code, 0, after.stdout + after.stderr);
  });

  it('a damaged snapshot refuses the mount with one line naming it, check reports it, and repair recovers', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '10m' } });
    await fs.mount();
    const src = await randomFile(local, 'snapfile.bin', 70_000);
    await writeFsynced(local, [src], fs.mnt);
    await fs.unmount(); // checkpoints: the file is in the database, its data still dirty
    const db = path.join(fs.cacheDir, 'meta', 'tree.db');
    const name = (n: string) => Buffer.from(n, 'utf16le');
    const before = await fsp.readFile(db);
    const raw = openDatabase(db, { readOnly: false, mustExist: true });
    assert.equal(
      (raw.prepare('SELECT count(*) AS n FROM entries WHERE parent = 1 AND name = ?').get(name('snapfile.bin')) as { n: number })
        .n,
      1,
    );
    raw.close();

    // Cut short: the pages after the first are gone.
    await fsp.writeFile(db, before.subarray(0, 4096));
    assertOneLineError(
      await fs.machine.cli('mount', fs.name),
      new RegExp(`metadata snapshot ${db} is damaged.*filespace repair ${fs.name}`),
    );
    // Whole again, with one name changed: a valid database, only the checksum can tell.
    await fsp.writeFile(db, before);
    const edit = openDatabase(db, { readOnly: false, mustExist: true });
    edit.prepare('UPDATE entries SET name = ? WHERE parent = 1 AND name = ?').run(name('snapfile.bim'), name('snapfile.bin'));
    edit.close();
    assertOneLineError(
      await fs.machine.cli('mount', fs.name),
      /metadata snapshot .*tree\.db is damaged \(an entry of directory 1 fails its checksum/,
    );
    assertOneLineError(await fs.machine.cli('sync', fs.name), /metadata snapshot .*tree\.db is damaged/);

    const check = await fs.machine.cli('check', fs.name);
    assert.equal(check.code, 1);
    assert.match(check.stdout, /PROBLEM local: the metadata snapshot .*tree\.db is damaged/);
    assert.match(check.stdout, /at risk: .*1 dirty chunk/);

    const repaired = await fs.machine.ok('repair', fs.name);
    const id = /as (\d{8}T\d{6}Z(?:-\d+)?)/.exec(repaired)?.[1];
    assert.ok(id, repaired);
    const out = path.join(local, 'recovered-snap');
    await fs.machine.ok('aside', fs.name, 'export', id, out);
    const exported = await hashesUnder(out);
    assert.ok(
      [...exported.values()].includes(sha(await fsp.readFile(src))),
      `the file's data is kept: ${[...exported.keys()].join(',')}`,
    );
    await fs.mount();
    await fs.unmount();
  });

  it('a damaged segment in the bucket: link and mount give one line naming it, check says what is at risk', async () => {
    const fs = await bed.filespace();
    const lagging = await bed.link(await bed.machine('lagging'), fs.bucket); // linked before the changes
    await fs.mount();
    for (let i = 0; i < 3; i++) {
      await sh(`echo round ${i} > ${fs.mnt}/seg${i}.txt`);
      await fs.sync(); // at least one segment per round
    }
    // Killed: no checkpoint at the end, so readers need every segment.
    await killHard(await fs.pid());
    const store = s3StoreFor(bed.endpoint, fs.bucket);
    const segments = await store.list('meta/log/');
    assert.ok(segments.length >= 3, `segments: ${segments.join(',')}`);
    const key = segments[segments.length - 2]!;
    const body = (await store.get(key))!.body;
    body[body.length >> 1]! ^= 0x20;
    await store.put(key, body);
    await store.close();

    const newcomer = await bed.machine('newcomer');
    const mnt = path.join(newcomer.home, 'mnt');
    await fsp.mkdir(mnt);
    assertOneLineError(
      await newcomer.cli('link', ...bed.storeArgs(fs.bucket), '--mount-point', mnt, '--passphrase-file', bed.passFile),
      new RegExp(`metadata segment \\d+ in the bucket \\(${key}\\) is damaged`),
    );
    assertOneLineError(await lagging.machine.cli('mount', lagging.name, '--read-only'), new RegExp(`${key}\\) is damaged`));

    const check = await fs.machine.cli('check', fs.name);
    assert.equal(check.code, 1, check.stdout + check.stderr);
    assert.match(
      check.stdout,
      new RegExp(`PROBLEM bucket: metadata segment \\d+ \\(${key}\\) is damaged.*and in the 1 segment\\(s\\) after it`),
    );
  });

  it('a damaged configuration file is named in one line, and list still lists the other filespaces', async () => {
    const m = await bed.machine('configs');
    const good = await bed.filespace({ machine: m });
    const bad = await bed.link(m, good.bucket);
    const file = path.join(m.home, 'config', 'filespaces', `${bad.name}.json`);
    await fsp.writeFile(file, '{"version": 1, "name": ');
    const list = await m.cli('list');
    assertOneLineError(list, new RegExp(`configuration of "${bad.name}" \\(${file}\\) is damaged`));
    assert.match(list.stdout, new RegExp(`^${good.name}\\tunmounted\\t`, 'm'));
    assert.match(list.stdout, new RegExp(`^${bad.name}\\tdamaged\\t`, 'm'));
    assertOneLineError(await m.cli('status', bad.name), /is damaged: it is not valid JSON/);
    assert.equal((await m.cli('status', good.name)).code, 0);
    // Valid JSON, impossible settings.
    const cfg = JSON.parse(await fsp.readFile(path.join(m.home, 'config', 'filespaces', `${good.name}.json`), 'utf8')) as Record<
      string,
      unknown
    >;
    await fsp.writeFile(file, JSON.stringify({ ...cfg, name: bad.name, settings: { cacheCapBytes: -1 } }));
    assertOneLineError(await m.cli('mount', bad.name), /is damaged: its settings are invalid/);
  });

  it('dirty chunks without a known file are set aside at mount, not deleted; those of deleted files are removed', async () => {
    const fs = await bed.filespace({ settings: { 'upload-delay': '10m' } });
    await fs.mount();
    const src = await randomFile(local, 'kept.bin', 90_000);
    await writeFsynced(local, [src], fs.mnt);
    await writeFsynced(local, [await randomFile(local, 'gone.txt', 1000)], fs.mnt);
    const withGone = await until('both files to be dirty', async () => {
      const n = (await dirtyNames(fs)).filter((x) => /^\d+\.0$/.test(x));
      return n.length === 2 ? n : undefined;
    });
    await unlinkFsynced(path.join(fs.mnt, 'gone.txt'));
    const kept = await until("the deleted file's chunk to go", async () => {
      const n = (await dirtyNames(fs)).filter((x) => /^\d+\.0$/.test(x));
      return n.length === 1 ? n[0]! : undefined;
    });
    const goneChunk = withGone.find((n) => n !== kept)!;
    await killHard(await fs.pid());
    // A chunk of a file the metadata never heard of, and one of a file whose deletion it recorded.
    await fsp.copyFile(path.join(fs.cacheDir, 'dirty', kept), path.join(fs.cacheDir, 'dirty', '999999.0'));
    await fsp.copyFile(path.join(fs.cacheDir, 'dirty', kept), path.join(fs.cacheDir, 'dirty', goneChunk));

    const check = await fs.machine.cli('check', fs.name);

    await fs.mount();
    const st = await fs.status();
    const aside = st.aside as Array<{ id: string; files: number; reason: string }>;
    assert.equal(aside.length, 1, JSON.stringify(st));
    assert.match(aside[0]!.reason, /without a file/);
    assert.equal(aside[0]!.files, 1);
    const left = await dirtyNames(fs);
    assert.ok(!left.includes('999999.0') && !left.includes(goneChunk), `both copies left the dirty store: ${left.join(',')}`);
    const out = path.join(local, 'orphans');
    await fs.machine.ok('aside', fs.name, 'export', aside[0]!.id, out);
    assert.deepEqual(await fsp.readFile(path.join(out, 'unnamed', 'inode-999999')), await fsp.readFile(src));
    await sh(`cmp ${src} ${fs.mnt}/kept.bin`);
    await fs.unmount();
    // What check said before that mount: what the mount then did.
    assert.match(
      check.stdout,
      /dirty chunk 999999\.0 belongs to no file this machine's metadata knows \(set aside at the next mount/,
    );
    assert.match(check.stdout, new RegExp(`dirty chunk ${goneChunk.replace('.', '\\.')} belongs to a deleted file`));
  });

  it('names a negative size in one line instead of printing the usage', async () => {
    const fs = await bed.filespace();
    assertOneLineError(await fs.machine.cli('set', fs.name, 'cache-size', '-1'), /"-1" is not a size/);
    assertOneLineError(await fs.machine.cli('set', fs.name, 'upload-delay', '-5s'), /"-5s" is not a duration/);
    const mnt = path.join(fs.machine.home, 'mnt-neg');
    await fsp.mkdir(mnt);
    assertOneLineError(
      await fs.machine.cli(
        'link',
        ...bed.storeArgs(fs.bucket),
        '--mount-point',
        mnt,
        '--cache-size',
        '-1',
        '--passphrase-file',
        bed.passFile,
      ),
      /--cache-size: "-1" is not a size/,
    );
  });
});
