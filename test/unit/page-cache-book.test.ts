// Pins down when the kernel may keep a file's cached pages at an open (PageCacheBook): only
// when every handle that could have filled them since they were last dropped read the same
// version as the new one, by the path the kernel caches them under.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ContentVersion, PageCacheBook, sameVersion } from '../../electron/engine/vfs/pageCache';

const v = (ino: number, size: number, ...names: Array<string | null>): ContentVersion => ({
  ino,
  size,
  chunks: names.map((n) => (n === null ? null : ([n, size] as const))),
});

describe('PageCacheBook', () => {
  it('drops the pages at the first open, keeps them at the next open of the same version', () => {
    const b = new PageCacheBook();
    assert.equal(b.open('/a', v(2, 10, 'x'), []), false);
    assert.equal(b.open('/a', v(2, 10, 'x'), []), true);
    assert.equal(b.open('/a', v(2, 10, 'x'), [v(2, 10, 'x')]), true);
  });

  it('drops them when the version differs in size, chunks, chunk length or inode', () => {
    for (const other of [
      v(2, 11, 'x'),
      v(2, 10, 'y'),
      v(3, 10, 'x'),
      { ino: 2, size: 10, chunks: [['x', 9] as const] },
      v(2, 10, 'x', null),
    ]) {
      const b = new PageCacheBook();
      b.open('/a', v(2, 10, 'x'), []);
      assert.equal(b.open('/a', other, []), false, JSON.stringify(other));
      assert.equal(b.open('/a', other, []), true, 'and keeps the new version from then on');
    }
  });

  it('keeps pages per path: another path with the same version starts empty', () => {
    const b = new PageCacheBook();
    b.open('/a', v(2, 10, 'x'), []);
    assert.equal(b.open('/b', v(2, 10, 'x'), []), false);
  });

  it('never keeps pages for a handle without a version, nor at the next open after it', () => {
    const b = new PageCacheBook();
    b.open('/a', v(2, 10, 'x'), []);
    assert.equal(b.open('/a', undefined, []), false);
    assert.equal(b.held('/a'), 'mixed');
    assert.equal(b.open('/a', v(2, 10, 'x'), []), false);
    assert.equal(b.open('/a', v(2, 10, 'x'), []), true);
  });

  it('is mixed while handles of two versions are open at a path, until an open finds them agreeing', () => {
    const b = new PageCacheBook();
    const old = v(2, 10, 'x');
    const cur = v(2, 10, 'y');
    b.open('/a', old, []);
    assert.equal(b.open('/a', cur, [old]), false);
    assert.equal(b.held('/a'), 'mixed');
    assert.equal(b.open('/a', cur, [old, cur]), false, 'the old handle may still fill pages');
    assert.equal(b.open('/a', cur, [cur]), false, 'the first open after the old handle closed drops what it read');
    assert.equal(b.open('/a', cur, [cur]), true);
  });

  it('a change under handles reading the live tree makes their paths, and every path of those inodes, mixed', () => {
    const b = new PageCacheBook();
    b.open('/a', v(2, 10, 'x'), []);
    b.open('/old-name', v(2, 10, 'x'), []);
    b.open('/c', v(3, 10, 'z'), []);
    b.open('/d', undefined, []);
    b.contentChangedUnder(new Set([2]), ['/d']);
    assert.equal(b.held('/a'), 'mixed');
    assert.equal(b.held('/old-name'), 'mixed');
    assert.equal(b.held('/d'), 'mixed');
    assert.deepEqual(b.held('/c'), v(3, 10, 'z'));
    assert.equal(b.open('/a', v(2, 10, 'x'), []), false);
  });

  it('stays bounded, forgetting the oldest paths (their next open drops the pages) and versions too big to hold', () => {
    const b = new PageCacheBook(3, 5);
    for (const p of ['/1', '/2', '/3', '/4']) b.open(p, v(9, 1, 'x'), []);
    assert.equal(b.size, 3);
    assert.equal(b.held('/1'), undefined);
    assert.equal(b.open('/1', v(9, 1, 'x'), []), false);
    const huge = v(9, 1, 'a', 'b', 'c', 'd', 'e', 'f');
    b.open('/huge', huge, []);
    assert.equal(b.held('/huge'), undefined);
    assert.equal(b.open('/huge', huge, []), false, 'a version too big to remember is never kept');
    b.open('/r1', v(9, 1, 'a', 'b', 'c'), []);
    b.open('/r2', v(9, 1, 'a', 'b', 'c'), []);
    assert.equal(b.held('/r1'), undefined, 'the oldest goes when the references held pass the bound');
    assert.ok(b.held('/r2'));
  });

  it('compares versions by content', () => {
    assert.equal(sameVersion(v(1, 5, 'a', null), v(1, 5, 'a', null)), true);
    assert.equal(sameVersion(v(1, 5, 'a', null), v(1, 5, 'a')), false);
    assert.equal(sameVersion(v(1, 5, null), v(1, 5, 'a')), false);
  });
});
