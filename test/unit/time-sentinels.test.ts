// The FUSE adapter and the VFS agree on how UTIME_OMIT and UTIME_NOW cross between them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SPECIAL_TIMES } from '../../native/fuse/adapter';
import { TIME_NOW, TIME_OMIT } from '../../electron/engine/vfs/vfs';

describe('utimens special values', () => {
  it('are the same numbers on both sides, beyond any real time in ms', () => {
    assert.equal(SPECIAL_TIMES.omit, TIME_OMIT);
    assert.equal(SPECIAL_TIMES.now, TIME_NOW);
    assert.notEqual(TIME_OMIT, TIME_NOW);
    assert.ok(TIME_NOW > Date.UTC(9999, 0, 1));
  });
});
