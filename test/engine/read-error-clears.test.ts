/**
 * A failed download is reported in the status while it is the problem, and no longer once the
 * bucket serves chunks again: a healthy filespace shows no old error.
 */

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MemoryStore } from '../../electron/engine/store/memory';
import { StoreError } from '../../electron/engine/store/types';
import { EngineBed, failsWith, random, readFile, writeFile } from '../helpers/engineBed';

const CS = 64 * 1024;

/** Refuses chunk downloads while `refusing` is set (an answer, not silence: not "offline"). */
class RefusingStore extends MemoryStore {
  refusing = false;

  override async get(key: string, range?: { readonly start: number; readonly end: number }) {
    if (this.refusing && key.startsWith('chunks/'))
      throw new StoreError('AccessDenied', 'injected 403 AccessDenied', 's3:GetObject');
    return super.get(key, range);
  }
}

describe('download errors in the status', () => {
  const bed = new EngineBed();
  before(() => bed.start());
  after(() => bed.stop());

  it('clears once a download works again', async () => {
    const store = new RefusingStore();
    const space = await bed.filespace({ chunkSize: CS, store });
    const writer = await bed.mount(space);
    const data = random(2 * CS);
    await writeFile(writer.fs, '/a.bin', data);
    await writeFile(writer.fs, '/b.bin', data);
    await writer.sync();
    await writer.close();

    const reader = await bed.mount(space, { mode: 'read' });
    store.refusing = true;
    assert.equal(await failsWith(() => readFile(reader.fs, '/a.bin')), 'EIO');
    assert.match(reader.engine.stats().lastError ?? '', /injected 403/);
    store.refusing = false;
    assert.deepEqual(await readFile(reader.fs, '/b.bin'), data);
    assert.equal(reader.engine.stats().lastError, undefined, 'the bucket serves chunks again: no error left');
    await reader.close();
  });
});
