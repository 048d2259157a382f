// Pins down the local metadata journal: records survive a reopen, a torn or corrupt tail is dropped whole, damage in the middle (bad bytes with valid records after them) is refused with nothing changed and can be read around, a damaged snapshot is detected, and checkpoints switch generation cleanly.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile, appendFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Journal, JournalDamagedError, SnapshotDamagedError, decodeRecords } from '../../electron/engine/meta/journal';

interface Snap {
  gen: number;
  note: string;
}

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'filespace-journal-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function open(): ReturnType<typeof Journal.open<Snap>> {
  return Journal.open<Snap>(dir);
}

/** Writes records 0..n-1 and closes; returns the journal file's path. */
async function writeRecords(n: number): Promise<string> {
  const { journal } = await open();
  for (let i = 0; i < n; i++) journal.append({ i, text: `record ${i}` });
  await journal.sync();
  await journal.close();
  return path.join(dir, 'journal.0');
}

describe('Journal persistence', () => {
  it('starts empty in a new directory', async () => {
    const { journal, loaded } = await open();
    assert.equal(loaded.snapshot, undefined);
    assert.deepEqual(loaded.records, []);
    assert.equal(journal.generation, 0);
    await journal.close();
  });

  it('returns appended records after sync and reopen, in order', async () => {
    await writeRecords(50);
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 50);
    assert.deepEqual(loaded.records[0], { i: 0, text: 'record 0' });
    assert.deepEqual(loaded.records[49], { i: 49, text: 'record 49' });
    await journal.close();
  });

  it('flush writes records so another open sees them without close', async () => {
    const { journal } = await open();
    journal.append({ a: 1 });
    journal.append({ b: 'two' });
    await journal.flush();
    const raw = await readFile(path.join(dir, 'journal.0'));
    assert.equal(raw.length, journal.bytes);
    assert.ok(raw.includes(Buffer.from('"two"')));
    await journal.close();
    const again = await open();
    assert.deepEqual(again.loaded.records, [{ a: 1 }, { b: 'two' }]);
    await again.journal.close();
  });

  it('keeps appending after a reopen', async () => {
    await writeRecords(3);
    const first = await open();
    first.journal.append({ i: 3 });
    await first.journal.close();
    const second = await open();
    assert.deepEqual(
      second.loaded.records.map((r) => (r as { i: number }).i),
      [0, 1, 2, 3],
    );
    await second.journal.close();
  });

  it('bytes counts written and pending records', async () => {
    const { journal } = await open();
    assert.equal(journal.bytes, 0);
    journal.append({ x: 'abc' });
    const one = journal.bytes;
    assert.equal(one, 8 + JSON.stringify({ x: 'abc' }).length);
    await journal.flush();
    assert.equal(journal.bytes, one);
    await journal.close();
    assert.throws(() => journal.append({ late: true }), /closed/);
  });
});

describe('Journal torn tails', () => {
  it('drops a record cut short and keeps the ones before it', async () => {
    const file = await writeRecords(10);
    const { size } = await stat(file);
    await truncate(file, size - 3);
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 9);
    assert.deepEqual(loaded.records[8], { i: 8, text: 'record 8' });
    await journal.close();
  });

  it('drops a tail that is only part of a record header', async () => {
    const file = await writeRecords(4);
    await appendFile(file, Buffer.from([0x10, 0x00, 0x00]));
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 4);
    await journal.close();
  });

  it('drops appended garbage, then appends after the last good record', async () => {
    const file = await writeRecords(4);
    const good = (await stat(file)).size;
    await appendFile(file, Buffer.from('garbage that is not a record at all'));
    const first = await open();
    assert.equal(first.loaded.records.length, 4);
    assert.equal((await stat(file)).size, good, 'the corrupt tail is cut off on open');
    first.journal.append({ i: 4 });
    await first.journal.close();
    const second = await open();
    assert.deepEqual(
      second.loaded.records.map((r) => (r as { i: number }).i),
      [0, 1, 2, 3, 4],
    );
    await second.journal.close();
  });

  it('drops a last record with a flipped byte (checksum mismatch)', async () => {
    const file = await writeRecords(5);
    const buf = await readFile(file);
    buf[buf.length - 2]! ^= 0x01;
    await writeFile(file, buf);
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 4);
    assert.deepEqual(loaded.records[3], { i: 3, text: 'record 3' });
    await journal.close();
  });

  it('drops a tail of zeros (blocks a power cut left unwritten)', async () => {
    const file = await writeRecords(4);
    const good = (await stat(file)).size;
    await appendFile(file, Buffer.alloc(4096));
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 4);
    assert.equal((await stat(file)).size, good);
    await journal.close();
  });

  it('drops a record whose length field claims more than the file holds', async () => {
    const file = await writeRecords(3);
    const buf = await readFile(file);
    const recLen = 8 + buf.readUInt32LE(0);
    buf.writeUInt32LE(0xffffff, recLen * 2); // record 2's length
    await writeFile(file, buf);
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 2);
    await journal.close();
  });
});

/** Offsets of each record in a journal written by writeRecords. */
function offsets(buf: Buffer): number[] {
  const out: number[] = [];
  for (let pos = 0; pos < buf.length; pos += 8 + buf.readUInt32LE(pos)) out.push(pos);
  return out;
}

describe('Journal damage in the middle', () => {
  it('refuses a corrupt record followed by valid ones, and changes nothing', async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'one' });
    for (let i = 0; i < 10; i++) journal.append({ i, text: `record ${i}` });
    await journal.close();
    const file = path.join(dir, 'journal.1');
    // Leftovers of another generation stay too: nothing is removed by a refused open.
    await writeFile(path.join(dir, 'journal.0'), 'other generation');
    const buf = await readFile(file);
    const at = offsets(buf);
    buf[at[4]! + 12]! ^= 0x01; // one bit inside record 4's body
    await writeFile(file, buf);
    await assert.rejects(open(), (err: unknown) => {
      assert.ok(err instanceof JournalDamagedError, String(err));
      assert.ok(err.message.includes(file), err.message);
      assert.equal(err.damage.spans[0]!.offset, at[4]);
      assert.equal(err.damage.later.length, 5, 'records 5..9 are after the damage');
      return true;
    });
    assert.deepEqual(await readFile(file), buf, 'the journal is not truncated');
    assert.equal(await readFile(path.join(dir, 'journal.0'), 'utf8'), 'other generation');
  });

  it('finds the records after a corrupt length field (resynchronises on the next valid header)', async () => {
    const file = await writeRecords(6);
    const buf = await readFile(file);
    const at = offsets(buf);
    buf.writeUInt32LE(3, at[2]); // record 2 claims 3 bytes
    await writeFile(file, buf);
    const d = decodeRecords(buf);
    assert.deepEqual(
      d.records.map((r) => (r as { i: number }).i),
      [0, 1],
    );
    assert.deepEqual(
      d.later.map((r) => (r as { i: number }).i),
      [3, 4, 5],
    );
    assert.deepEqual(d.spans, [{ offset: at[2], length: at[3]! - at[2]! }]);
    assert.equal(d.validBytes, at[2]);
    assert.equal(d.tornTailBytes, 0);
  });

  it('tells a torn tail (nothing valid after the bad bytes) from damage (valid records after them)', () => {
    const rec = (i: number) => {
      const body = Buffer.from(JSON.stringify({ i }));
      const head = Buffer.alloc(8);
      head.writeUInt32LE(body.length, 0);
      head.writeUInt32LE(crc32(body), 4);
      return Buffer.concat([head, body]);
    };
    const good = Buffer.concat([rec(0), rec(1)]);
    const torn = decodeRecords(Buffer.concat([good, rec(2).subarray(0, 9)]));
    assert.deepEqual([torn.records.length, torn.spans.length, torn.later.length, torn.tornTailBytes], [2, 0, 0, 9]);
    const garbage = decodeRecords(Buffer.concat([good, Buffer.from('not a record'), Buffer.alloc(100)]));
    assert.deepEqual([garbage.records.length, garbage.spans.length], [2, 0]);
    const damaged = decodeRecords(
      Buffer.concat([good, Buffer.from('xxxx'), rec(3), Buffer.alloc(7, 0xff), rec(4), rec(5).subarray(0, 4)]),
    );
    assert.deepEqual(
      damaged.records.map((r) => (r as { i: number }).i),
      [0, 1],
    );
    assert.deepEqual(
      damaged.later.map((r) => (r as { i: number }).i),
      [3, 4],
    );
    assert.equal(damaged.spans.length, 2, 'two damaged places');
    assert.equal(damaged.tornTailBytes, 4);
  });

  it('inspect reads around the damage without changing anything', async () => {
    const file = await writeRecords(8);
    const buf = await readFile(file);
    buf[offsets(buf)[3]! + 5]! ^= 0x80; // record 3's checksum
    await writeFile(file, buf);
    const seen = await Journal.inspect<Snap>(dir);
    assert.equal(seen.file, file);
    assert.deepEqual(
      seen.records.map((r) => (r as { i: number }).i),
      [0, 1, 2],
    );
    assert.deepEqual(
      seen.damage?.later.map((r) => (r as { i: number }).i),
      [4, 5, 6, 7],
    );
    assert.deepEqual(await readFile(file), buf);
  });

  it('replace starts a new generation from a given snapshot and keeps the damaged journal beside it', async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'one' });
    for (let i = 0; i < 5; i++) journal.append({ i });
    await journal.close();
    const file = path.join(dir, 'journal.1');
    const buf = await readFile(file);
    buf[offsets(buf)[1]! + 9]! ^= 0x04;
    await writeFile(file, buf);
    await assert.rejects(open(), JournalDamagedError);
    const kept = await Journal.replace<Snap>(dir, (gen) => ({ gen, note: 'from the bucket' }));
    assert.deepEqual(kept, [`${file}.damaged`]);
    assert.deepEqual(await readFile(`${file}.damaged`), buf);
    const { journal: j2, loaded } = await open();
    assert.deepEqual(loaded.snapshot, { gen: 2, note: 'from the bucket' });
    assert.deepEqual(loaded.records, []);
    await j2.close();
    assert.deepEqual(
      (await readdir(dir)).filter((n) => /^journal\.\d+$/.test(n)),
      ['journal.2'],
    );
  });
});

describe('Journal snapshot damage', () => {
  it('detects a flipped bit that still leaves valid JSON (checksum), naming the file', async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'abcdefgh' });
    await journal.close();
    const file = path.join(dir, 'state.json');
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.replace('abcdefgh', 'abcdefgi'));
    await assert.rejects(
      open(),
      (err: unknown) => err instanceof SnapshotDamagedError && err.message.includes(file) && /checksum/.test(err.message),
    );
    assert.equal((await Journal.inspect<Snap>(dir)).snapshotError?.file, file);
  });

  it('reads a snapshot written before checksums', async () => {
    await writeFile(path.join(dir, 'state.json'), JSON.stringify({ gen: 3, note: 'old format' }));
    const { journal, loaded } = await open();
    assert.deepEqual(loaded.snapshot, { gen: 3, note: 'old format' });
    await journal.close();
  });

  it("refuses a missing snapshot when a later generation's journal needs it, and removes nothing", async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'one' });
    journal.append({ after: 1 });
    await journal.close();
    await rm(path.join(dir, 'state.json'));
    await assert.rejects(open(), (err: unknown) => err instanceof SnapshotDamagedError && /missing/.test(err.message));
    assert.ok((await stat(path.join(dir, 'journal.1'))).size > 0, 'the journal is kept');
  });
});

describe('Journal checkpoints', () => {
  it('records before checkpoint() are covered by the snapshot; records after it land in the new journal', async () => {
    const { journal } = await open();
    journal.append({ before: 1 });
    journal.append({ before: 2 });
    const cp = journal.checkpoint({ gen: 1, note: 'covers before 1 and 2' });
    journal.append({ after: 1 }); // appended while the checkpoint is still being written
    await cp;
    journal.append({ after: 2 });
    await journal.close();
    assert.equal(journal.generation, 1);

    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('journal.')),
      ['journal.1'],
    );
    const { journal: j2, loaded } = await open();
    assert.deepEqual(loaded.snapshot, { gen: 1, note: 'covers before 1 and 2' });
    assert.deepEqual(loaded.records, [{ after: 1 }, { after: 2 }]);
    assert.equal(j2.generation, 1);
    await j2.close();
  });

  it('a second checkpoint moves to the next generation', async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'one' });
    journal.append({ x: 1 });
    await journal.checkpoint({ gen: 2, note: 'two' });
    journal.append({ y: 2 });
    await journal.close();
    const { journal: j2, loaded } = await open();
    assert.equal(loaded.snapshot?.note, 'two');
    assert.deepEqual(loaded.records, [{ y: 2 }]);
    await j2.close();
    assert.deepEqual(
      (await readdir(dir)).filter((n) => n.startsWith('journal.')),
      ['journal.2'],
    );
  });

  it('rejects a snapshot whose generation is not the next one, and keeps working', async () => {
    const { journal } = await open();
    await assert.rejects(journal.checkpoint({ gen: 5, note: 'skips ahead' }), /generation/);
    journal.append({ still: 'fine' });
    await journal.close();
    const { journal: j2, loaded } = await open();
    assert.equal(loaded.snapshot, undefined);
    assert.deepEqual(loaded.records, [{ still: 'fine' }]);
    await j2.close();
  });

  it('removes journals of other generations on open', async () => {
    const { journal } = await open();
    await journal.checkpoint({ gen: 1, note: 'one' });
    await journal.close();
    // Leftovers of a crash between writing the snapshot and removing the old journal.
    await writeFile(path.join(dir, 'journal.0'), 'stale');
    await writeFile(path.join(dir, 'journal.7'), 'from the future');
    const { journal: j2, loaded } = await open();
    assert.equal(loaded.snapshot?.gen, 1);
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('journal.')).sort(), ['journal.1']);
    await j2.close();
  });

  it('refuses an unreadable snapshot file with a message naming it', async () => {
    await writeFile(path.join(dir, 'state.json'), '{not json');
    await assert.rejects(
      open(),
      (err: Error) =>
        err instanceof SnapshotDamagedError && err.message.includes(path.join(dir, 'state.json')) && /damaged/.test(err.message),
    );
  });
});
