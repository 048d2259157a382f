// Pins down the local metadata journal: records survive a reopen, a torn or corrupt tail is dropped whole, and checkpoints switch generation cleanly.

import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile, appendFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Journal } from '../../electron/engine/meta/journal';

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
    assert.deepEqual(second.loaded.records.map((r) => (r as { i: number }).i), [0, 1, 2, 3]);
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
    assert.deepEqual(second.loaded.records.map((r) => (r as { i: number }).i), [0, 1, 2, 3, 4]);
    await second.journal.close();
  });

  it('drops a last record with a flipped byte (checksum mismatch)', async () => {
    const file = await writeRecords(5);
    const buf = await readFile(file);
    buf[buf.length - 2] ^= 0x01;
    await writeFile(file, buf);
    const { journal, loaded } = await open();
    assert.equal(loaded.records.length, 4);
    assert.deepEqual(loaded.records[3], { i: 3, text: 'record 3' });
    await journal.close();
  });

  it('stops at a corrupt record in the middle: later records are not applied out of order', async () => {
    const file = await writeRecords(5);
    const buf = await readFile(file);
    const recLen = 8 + buf.readUInt32LE(0);
    buf[recLen * 2 + 10] ^= 0xff; // inside record 2's body
    await writeFile(file, buf);
    const { journal, loaded } = await open();
    assert.deepEqual(loaded.records.map((r) => (r as { i: number }).i), [0, 1]);
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

    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('journal.')), ['journal.1']);
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
    assert.deepEqual((await readdir(dir)).filter((n) => n.startsWith('journal.')), ['journal.2']);
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

  it('refuses an unreadable snapshot file with a message naming the directory', async () => {
    await writeFile(path.join(dir, 'state.json'), '{not json');
    await assert.rejects(open(), (err: Error) => err.message.includes(dir) && /unreadable/.test(err.message));
  });
});
