/**
 * Pure parts of the low-level FUSE binding (native/fuse/lowlevel.ts): the directory entries
 * as the kernel reads them, and which binding a mount uses.
 */

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { FuseError } from '../../native/fuse/adapter';
import { direntBuffer, fuseBindingChoice, lowLevelAddon, sendThreadBytes } from '../../native/fuse/lowlevel';

/** Reads struct fuse_dirent records back: [ino, next offset, type, name]. */
function entries(buf: Buffer): Array<[number, number, number, string]> {
  const out: Array<[number, number, number, string]> = [];
  let at = 0;
  while (at < buf.length) {
    const len = buf.readUInt32LE(at + 16);
    out.push([
      Number(buf.readBigUInt64LE(at)),
      Number(buf.readBigUInt64LE(at + 8)),
      buf.readUInt32LE(at + 20),
      buf.subarray(at + 24, at + 24 + len).toString('latin1'),
    ]);
    at += (24 + len + 7) & ~7;
  }
  return out;
}

describe('low-level FUSE binding', () => {
  const dir = { names: ['.', '..', 'a', 'longer-name.txt', 'é'], inos: [5, 1, 9, 12, 40] };

  it('lays out entries as struct fuse_dirent, 8-byte aligned, offsets naming the next entry', () => {
    const buf = direntBuffer(dir, 0, 4096);
    assert.equal(buf.length % 8, 0);
    assert.deepEqual(entries(buf), [
      [5, 1, 4, '.'],
      [1, 2, 4, '..'],
      [9, 3, 0, 'a'],
      [12, 4, 0, 'longer-name.txt'],
      // Names cross as their UTF-8 bytes.
      [40, 5, 0, Buffer.from('é', 'utf8').toString('latin1')],
    ]);
  });

  it('starts at the offset asked for and stops before an entry that does not fit', () => {
    assert.deepEqual(
      entries(direntBuffer(dir, 2, 4096)).map((e) => e[3]),
      ['a', 'longer-name.txt', Buffer.from('é', 'utf8').toString('latin1')],
    );
    // 'a' takes 32 bytes, 'longer-name.txt' 40: 60 bytes hold only the first.
    assert.deepEqual(
      entries(direntBuffer(dir, 2, 60)).map((e) => e[3]),
      ['a'],
    );
    assert.equal(direntBuffer(dir, 5, 4096).length, 0, 'past the end: nothing');
    assert.equal(direntBuffer(dir, 2, 10).length, 0, 'too small for one entry: nothing');
  });

  it('uses the binding FILESPACE_FUSE names, else the low-level one when it is built', () => {
    assert.equal(fuseBindingChoice({ FILESPACE_FUSE: 'highlevel' }), 'highlevel');
    assert.equal(fuseBindingChoice({}), lowLevelAddon() ? 'lowlevel' : 'highlevel');
    assert.throws(
      () => fuseBindingChoice({ FILESPACE_FUSE: 'fast' }),
      (err: unknown) => {
        assert.ok(err instanceof FuseError);
        assert.match(err.message, /FILESPACE_FUSE is "fast": use lowlevel or highlevel/);
        return true;
      },
    );
  });

  it('large read answers go by the send thread from four cores up, or as FILESPACE_FUSE_SEND_THREAD says', () => {
    assert.equal(sendThreadBytes({}, 2), 0);
    assert.equal(sendThreadBytes({}, 3), 0);
    assert.equal(sendThreadBytes({}, 4), 32 * 1024);
    assert.equal(sendThreadBytes({}, 16), 32 * 1024);
    assert.equal(sendThreadBytes({ FILESPACE_FUSE_SEND_THREAD: 'on' }, 2), 32 * 1024);
    assert.equal(sendThreadBytes({ FILESPACE_FUSE_SEND_THREAD: 'off' }, 16), 0);
    assert.throws(
      () => sendThreadBytes({ FILESPACE_FUSE_SEND_THREAD: 'yes' }, 2),
      (err: unknown) => err instanceof FuseError && /FILESPACE_FUSE_SEND_THREAD is "yes": use on or off/.test(err.message),
    );
  });

  it('the addon is built here, and names every operation it passes on', () => {
    const a = lowLevelAddon();
    assert.ok(a, 'npm ci and npm run build build native/fuse/lowlevel-addon');
    assert.equal(fuseBindingChoice({ FILESPACE_FUSE: 'lowlevel' }), 'lowlevel');
    for (const op of ['lookup', 'getattr', 'setattr', 'create', 'read', 'write', 'readdir', 'rename', 'link', 'getxattr']) {
      assert.equal(typeof a.ops[op], 'number', op);
    }
  });
});
