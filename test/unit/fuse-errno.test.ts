// Errors cross into the kernel exactly once: errno names from the filesystem, a full cache
// disk from Node's own I/O errors, and EIO for anything else.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { errnoNumber } from '../../native/fuse/adapter';
import { FsError } from '../../electron/engine/errors';

describe('errnoNumber', () => {
  it("keeps the filesystem's errno", () => {
    assert.equal(errnoNumber(new FsError('ENOENT')), -2);
    assert.equal(errnoNumber(new FsError('ENOTEMPTY')), -39);
    assert.equal(errnoNumber(new FsError('EROFS')), -30);
  });
  it('passes a full cache disk through as ENOSPC', () => {
    assert.equal(errnoNumber(Object.assign(new Error('x'), { code: 'ENOSPC', errno: -28 })), -28);
    assert.equal(errnoNumber(Object.assign(new Error('x'), { code: 'EDQUOT', errno: -122 })), -122);
  });
  it('turns other internal failures into EIO, never a misleading code', () => {
    assert.equal(errnoNumber(Object.assign(new Error('cache file vanished'), { code: 'ENOENT', errno: -2 })), -5);
    assert.equal(errnoNumber(new Error('boom')), -5);
    assert.equal(errnoNumber(undefined), -5);
  });
});
