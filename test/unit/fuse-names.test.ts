// Names are bytes: the FUSE adapter's conversion between the kernel's bytes and the engine's
// strings is one to one for every byte string, agrees with UTF-8 where the bytes are UTF-8,
// and the engine counts the same number of bytes as the kernel. libfuse2's hidden names for
// files deleted while open are told apart from ordinary renames.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { isHidingRename, nameToWire, wireToName } from '../../native/fuse/adapter';
import { nameBytes, nameToBytes } from '../../electron/engine/util/names';

function randomName(): Buffer {
  const len = 1 + Math.floor(Math.random() * 24);
  const b = randomBytes(len);
  // Bias towards UTF-8 lead/continuation bytes so partial and overlong sequences show up.
  for (let i = 0; i < b.length; i++) if (b[i]! % 3 === 0) b[i] = 0x80 | (b[i]! & 0x3f);
  return b;
}

describe('names as bytes', () => {
  it('round-trips every byte string, and distinct bytes give distinct names', () => {
    const seen = new Map<string, string>();
    for (let i = 0; i < 5000; i++) {
      const bytes = randomName();
      const wire = bytes.toString('latin1');
      const name = wireToName(wire);
      assert.equal(nameToWire(name), wire, `round trip of ${bytes.toString('hex')}`);
      assert.equal(nameBytes(name), bytes.length);
      assert.ok(nameToBytes(name).equals(bytes), 'the engine gives the local filesystem the same bytes');
      const prev = seen.get(name);
      assert.ok(prev === undefined || prev === wire, `${bytes.toString('hex')} collides`);
      seen.set(name, wire);
    }
  });

  it('decodes valid UTF-8 exactly as UTF-8, including 4-byte characters', () => {
    for (const s of ['plain', 'unicodé-名前-🎉', 'é'.repeat(128), '\u{10FFFF}x', 'a\u0000b']) {
      const wire = Buffer.from(s, 'utf8').toString('latin1');
      assert.equal(wireToName(wire), s);
      assert.equal(nameBytes(s), Buffer.byteLength(s));
    }
  });

  it('keeps invalid sequences byte for byte: lone bytes, truncated, overlong, surrogates', () => {
    for (const hex of ['ff', 'c3', 'c328', 'e282', 'c0af', 'eda080', 'f4908080', '80', 'fe41ff']) {
      const wire = Buffer.from(hex, 'hex').toString('latin1');
      const name = wireToName(wire);
      assert.ok(!name.includes('\uFFFD'), `${hex} is not replaced`);
      assert.equal(Buffer.from(nameToWire(name), 'latin1').toString('hex'), hex);
    }
    assert.notEqual(wireToName('\xff'), wireToName('\xfe'));
  });
});

describe('libfuse2 hiding a file deleted while open', () => {
  it('is a rename to .fuse_hidden<16 hex digits> in the same directory, and nothing else', () => {
    assert.equal(isHidingRename('/d/db.sqlite', '/d/.fuse_hidden0000000300000001'), true);
    assert.equal(isHidingRename('/a', '/.fuse_hidden00000abc0000ff01'), true);
    assert.equal(isHidingRename('/d/a', '/e/.fuse_hidden0000000300000001'), false, 'another directory');
    assert.equal(isHidingRename('/dd/a', '/d/.fuse_hidden0000000300000001'), false);
    assert.equal(isHidingRename('/d/a', '/d/.fuse_hidden000000030000001'), false, '15 digits');
    assert.equal(isHidingRename('/d/a', '/d/.fuse_hidden0000000300000001.bak'), false);
    assert.equal(isHidingRename('/d/a', '/d/fuse_hidden0000000300000001'), false);
    assert.equal(isHidingRename('/d/a', '/d/b'), false);
  });
});
