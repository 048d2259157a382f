// Pins down the cipher addon (native/cipher) and its node:crypto fallback (chunk/cipherAddon.ts):
// byte-identical output to node:crypto for the same key, nonce and data, round trips in place and
// into other buffers, sync and async, every tampered byte refused with the output wiped, empty
// and odd sizes. The whole file runs again in a child process with FILESPACE_CIPHER=node, so the
// fallback passes the same checks.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createCipheriv, createHmac, randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import * as fs from 'node:fs';
import { describe, it } from 'node:test';
import {
  CIPHER_ADDON,
  cipherBackend,
  ctrInto,
  gcmOpenInto,
  gcmOpenIntoAsync,
  gcmSealInto,
  gmacInto,
  gmacUnitsAsync,
  openSegmentsInto,
  openSegmentsIntoAsync,
  openUnitsAndNameAsync,
  sealSegmentsAsync,
  sealUnitsAsync,
  SEGMENT_PLAIN,
  SEGMENT_SEALED,
  uploadJobsOffThread,
} from '../../electron/engine/chunk/cipherAddon';
import { decryptSealedPart, open, openAsync, seal, sealInto } from '../../electron/engine/chunk/crypto';

const key = randomBytes(32);
const SIZES = [0, 1, 15, 16, 17, 4095, 65536, 65536 + 28, 1024 * 1024 + 3];

function nodeSeal(k: Buffer, iv: Buffer, aad: Buffer, plain: Buffer): { ct: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-256-gcm', k, iv);
  c.setAAD(aad);
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return { ct, tag: c.getAuthTag() };
}

const forced = process.env.FILESPACE_CIPHER === 'node';

describe(`cipher (${cipherBackend})`, () => {
  it('uses the addon whenever it is built, unless told not to', () => {
    if (forced) assert.match(cipherBackend, /^node:crypto/);
    else {
      // It builds wherever the engine's tests run (Linux with a C compiler): a missing addon
      // there is a failed build, which the engine would survive on node:crypto unnoticed.
      if (process.platform === 'linux')
        assert.ok(fs.existsSync(CIPHER_ADDON), `the cipher addon was not built (${CIPHER_ADDON})`);
      if (fs.existsSync(CIPHER_ADDON)) assert.match(cipherBackend, /^addon \(/);
      else assert.match(cipherBackend, /^node:crypto \(no addon/);
    }
  });

  it('seals byte for byte as node:crypto does, and opens what it sealed', () => {
    for (const size of SIZES) {
      const iv = randomBytes(12);
      const aad = randomBytes(size % 7 === 0 ? 0 : 33);
      const plain = randomBytes(size);
      const ct = Buffer.alloc(size);
      const tag = Buffer.alloc(16);
      gcmSealInto(key, iv, aad, plain, ct, tag);
      const want = nodeSeal(key, iv, aad, plain);
      assert.deepEqual(ct, want.ct, `ciphertext of ${size} bytes`);
      assert.deepEqual(tag, want.tag, `tag of ${size} bytes`);
      const back = Buffer.alloc(size);
      assert.equal(gcmOpenInto(key, iv, aad, ct, back, tag), true);
      assert.deepEqual(back, plain);
    }
  });

  it('seals and opens in place', () => {
    for (const size of SIZES) {
      const iv = randomBytes(12);
      const plain = randomBytes(size);
      const buf = Buffer.from(plain);
      const tag = Buffer.alloc(16);
      gcmSealInto(key, iv, Buffer.from('a'), buf, buf, tag);
      assert.deepEqual(buf, nodeSeal(key, iv, Buffer.from('a'), plain).ct);
      assert.equal(gcmOpenInto(key, iv, Buffer.from('a'), buf, buf, tag), true);
      assert.deepEqual(buf, plain);
    }
  });

  it('opens on the thread pool, in place and into another buffer', async () => {
    for (const size of SIZES) {
      const iv = randomBytes(12);
      const plain = randomBytes(size);
      const { ct, tag } = nodeSeal(key, iv, Buffer.from('x'), plain);
      const out = Buffer.alloc(size);
      assert.equal(await gcmOpenIntoAsync(key, iv, Buffer.from('x'), ct, out, tag), true);
      assert.deepEqual(out, plain);
      assert.equal(await gcmOpenIntoAsync(key, iv, Buffer.from('x'), ct, ct, tag), true);
      assert.deepEqual(ct, plain);
    }
  });

  it('refuses every flipped byte of nonce, ciphertext, tag and associated data, and wipes the output', async () => {
    const plain = randomBytes(100);
    const iv = randomBytes(12);
    const aad = Buffer.from('unit 7');
    const { ct, tag } = nodeSeal(key, iv, aad, plain);
    const cases: [string, Buffer][] = [
      ['nonce', iv],
      ['ciphertext', ct],
      ['tag', tag],
      ['aad', aad],
    ];
    for (const [name, part] of cases) {
      for (let i = 0; i < part.length; i++) {
        part[i]! ^= 0x40;
        const out = Buffer.alloc(plain.length, 0xaa);
        assert.equal(gcmOpenInto(key, iv, aad, ct, out, tag), false, `${name} byte ${i}`);
        assert.ok(
          out.every((b) => b === 0),
          `${name} byte ${i}: output wiped`,
        );
        const inPlace = Buffer.from(ct);
        assert.equal(await gcmOpenIntoAsync(key, iv, aad, inPlace, inPlace, tag), false, `${name} byte ${i} (async)`);
        assert.ok(
          inPlace.every((b) => b === 0),
          `${name} byte ${i} (async): output wiped`,
        );
        part[i]! ^= 0x40;
      }
    }
    assert.equal(gcmOpenInto(randomBytes(32), iv, aad, ct, Buffer.alloc(100), tag), false, 'another key');
    assert.equal(gcmOpenInto(key, iv, aad, ct, Buffer.alloc(100), tag), true, 'the untouched blob still opens');
  });

  it('refuses an empty plaintext whose tag or associated data changed', () => {
    const iv = randomBytes(12);
    const tag = Buffer.alloc(16);
    gcmSealInto(key, iv, Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(0), tag);
    assert.equal(gcmOpenInto(key, iv, Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(0), tag), true);
    assert.equal(gcmOpenInto(key, iv, Buffer.from('b'), Buffer.alloc(0), Buffer.alloc(0), tag), false);
    tag[0]! ^= 1;
    assert.equal(gcmOpenInto(key, iv, Buffer.from('a'), Buffer.alloc(0), Buffer.alloc(0), tag), false);
  });

  it('refuses output that overlaps the input only in part, or of another length', () => {
    const buf = randomBytes(200);
    const tag = Buffer.alloc(16);
    assert.throws(
      () => gcmSealInto(key, randomBytes(12), Buffer.alloc(0), buf.subarray(28, 128), buf.subarray(0, 100), tag),
      RangeError,
    );
    assert.throws(
      () => gcmSealInto(key, randomBytes(12), Buffer.alloc(0), buf.subarray(0, 100), buf.subarray(100, 199), tag),
      RangeError,
    );
  });

  it('computes the GMAC of two pieces of associated data as node:crypto does', () => {
    const iv = randomBytes(12);
    const a = randomBytes(84);
    const b = randomBytes(65536);
    const g = createCipheriv('aes-256-gcm', key, iv);
    g.setAAD(a);
    g.setAAD(b);
    g.final();
    const tag = Buffer.alloc(16);
    gmacInto(key, iv, a, b, tag);
    assert.deepEqual(tag, g.getAuthTag());
  });

  it('computes every unit code of a received file as the single GMAC does, off the JS thread', async () => {
    for (const size of [1, 65536, 65537, 4 * 1024 * 1024 - 5]) {
      const src = randomBytes(size);
      const prefix = randomBytes(84);
      const before = Buffer.from(prefix);
      const units = Math.ceil(size / 65536);
      const table = randomBytes(units * 28);
      await gmacUnitsAsync(key, prefix, src, table);
      assert.deepEqual(prefix, before, 'the prefix is not changed');
      for (let u = 0; u < units; u++) {
        const p = Buffer.from(prefix);
        p.writeUInt32BE(u, 16);
        const want = Buffer.alloc(16);
        gmacInto(key, table.subarray(u * 28, u * 28 + 12), p, src.subarray(u * 65536, (u + 1) * 65536), want);
        assert.deepEqual(table.subarray(u * 28 + 12, u * 28 + 28), want, `unit ${u} of ${size} bytes`);
      }
    }
    await assert.rejects(gmacUnitsAsync(key, randomBytes(84), randomBytes(70000), Buffer.alloc(28)), RangeError);
  });

  it('reads any 16-byte-aligned range of a GCM ciphertext with CTR, in place or not', () => {
    const iv = randomBytes(12);
    const plain = randomBytes(300000);
    const { ct } = nodeSeal(key, iv, Buffer.alloc(0), plain);
    for (const [from, to] of [
      [0, 300000],
      [65536, 131072],
      [16, 17],
      [299984, 300000],
    ] as const) {
      assert.deepEqual(decryptSealedPart(key, iv, ct.subarray(from, to), from), plain.subarray(from, to));
      const part = Buffer.from(ct.subarray(from, to));
      decryptSealedPart(key, iv, part, from, part);
      assert.deepEqual(part, plain.subarray(from, to));
    }
    const counter = Buffer.alloc(16);
    iv.copy(counter);
    counter.writeUInt32BE(2, 12);
    const out = Buffer.alloc(ct.length);
    ctrInto(key, counter, ct, out);
    assert.deepEqual(out, plain);
  });

  it('keeps the sealed blob format: nonce | ciphertext | tag, opened by node:crypto and by openAsync', async () => {
    for (const size of [0, 5, 4 * 1024 * 1024 + 1]) {
      const plain = randomBytes(size);
      const blob = seal(key, plain, 'chunk:abc:0');
      const want = nodeSeal(key, blob.subarray(0, 12), Buffer.from('chunk:abc:0'), plain);
      assert.deepEqual(blob.subarray(12), Buffer.concat([want.ct, want.tag]));
      assert.deepEqual(open(key, blob, 'chunk:abc:0', 'blob'), plain);
      assert.deepEqual(await openAsync(key, blob, 'chunk:abc:0', 'blob'), plain);
      await assert.rejects(openAsync(key, blob, 'chunk:abd:0', 'blob'), { name: 'AuthError' });
      const out = Buffer.alloc(size + 40);
      const pieces: Buffer[] = [];
      const n = sealInto(key, plain, 'x', out, 5, (p) => pieces.push(Buffer.from(p)));
      assert.equal(n, size + 28);
      assert.deepEqual(Buffer.concat(pieces), out.subarray(5, 5 + n), 'onOutput hands over every byte written, in order');
      assert.deepEqual(open(key, out.subarray(5, 5 + n), 'x', 'blob'), plain);
    }
  });

  /** `count` FSC2-style segments of `plain` (sealed one by one), and each one's plaintext. */
  function segments(name: string, plain: Buffer): { stored: Buffer; count: number } {
    const count = Math.max(1, Math.ceil(plain.length / SEGMENT_PLAIN));
    const parts: Buffer[] = [];
    for (let i = 0; i < count; i++)
      parts.push(seal(key, plain.subarray(i * SEGMENT_PLAIN, (i + 1) * SEGMENT_PLAIN), `chunkseg:${name}:${i}:${count}`));
    return { stored: Buffer.concat(parts), count };
  }

  it('opens a run of segments in one call, sync and async, byte for byte as one open per segment', async () => {
    const name = 'ab'.repeat(20);
    const prefix = Buffer.from(`chunkseg:${name}:`);
    for (const size of [1, 65536, 65537, 3 * 65536 + 5, 4 * 1024 * 1024]) {
      const plain = randomBytes(size);
      const { stored, count } = segments(name, plain);
      for (const [first, n] of [
        [0, count],
        [count - 1, 1],
        [Math.floor(count / 2), count - Math.floor(count / 2)],
        [0, Math.max(1, count - 1)],
      ] as const) {
        const src = stored.subarray(first * SEGMENT_SEALED, Math.min(stored.length, (first + n) * SEGMENT_SEALED));
        const want = Buffer.concat(
          Array.from({ length: n }, (_, k) =>
            open(
              key,
              src.subarray(k * SEGMENT_SEALED, (k + 1) * SEGMENT_SEALED),
              `chunkseg:${name}:${first + k}:${count}`,
              'seg',
            ),
          ),
        );
        const sync = Buffer.alloc(want.length, 0xee);
        assert.equal(openSegmentsInto(key, prefix, first, count, src, sync), true, `${size} bytes, from ${first}`);
        assert.deepEqual(sync, want);
        const later = Buffer.alloc(want.length, 0xee);
        assert.equal(await openSegmentsIntoAsync(key, prefix, first, count, src, later), true);
        assert.deepEqual(later, want);
        assert.deepEqual(want, plain.subarray(first * SEGMENT_PLAIN, first * SEGMENT_PLAIN + want.length));
      }
    }
  });

  it('refuses segments tampered with, moved, or opened with another index, count or name, and wipes all the output', async () => {
    const name = 'cd'.repeat(20);
    const prefix = Buffer.from(`chunkseg:${name}:`);
    const plain = randomBytes(3 * 65536 + 100);
    const { stored, count } = segments(name, plain);
    const refused = async (what: string, src: Buffer, first = 0, cnt = count, pre = prefix) => {
      const n = Math.ceil(src.length / SEGMENT_SEALED);
      const a = Buffer.alloc(src.length - n * 28, 0xee);
      assert.equal(openSegmentsInto(key, pre, first, cnt, src, a), false, what);
      assert.ok(
        a.every((b) => b === 0),
        `${what}: output wiped`,
      );
      const b = Buffer.alloc(src.length - n * 28, 0xee);
      assert.equal(await openSegmentsIntoAsync(key, pre, first, cnt, src, b), false, `${what} (async)`);
      assert.ok(
        b.every((x) => x === 0),
        `${what} (async): output wiped`,
      );
    };
    // A byte of each segment's nonce, ciphertext and tag, the last segment's included.
    for (let k = 0; k < count; k++) {
      const at = k * SEGMENT_SEALED;
      const end = Math.min(stored.length, at + SEGMENT_SEALED);
      for (const i of [at, at + 12, end - 17, end - 1]) {
        const bad = Buffer.from(stored);
        bad[i]! ^= 1;
        await refused(`segment ${k} byte ${i - at}`, bad);
      }
    }
    const swapped = Buffer.concat([stored.subarray(SEGMENT_SEALED, 2 * SEGMENT_SEALED), stored.subarray(0, SEGMENT_SEALED)]);
    await refused('two segments swapped', swapped);
    await refused('opened at another index', stored.subarray(0, 2 * SEGMENT_SEALED), 1);
    await refused('opened with another count', stored.subarray(0, 2 * SEGMENT_SEALED), 0, count + 1);
    await refused('opened under another name', stored, 0, count, Buffer.from(`chunkseg:${'ef'.repeat(20)}:`));
    await refused('cut short', stored.subarray(0, stored.length - 1));
  });

  it('refuses segment runs that do not fit their arguments, before touching anything', async () => {
    const prefix = Buffer.from('chunkseg:x:');
    const { stored, count } = segments('x', randomBytes(2 * 65536));
    const plainLen = stored.length - count * 28;
    const cases: [string, number, number, Buffer, Buffer][] = [
      ['output of another length', 0, count, stored, Buffer.alloc(plainLen + 1)],
      ['more segments than the count leaves', 1, count, stored, Buffer.alloc(plainLen)],
      ['no segment', 0, count, Buffer.alloc(0), Buffer.alloc(0)],
      ['a last segment shorter than its nonce and tag', 0, 3, Buffer.concat([stored, Buffer.alloc(5)]), Buffer.alloc(plainLen)],
      ['a fractional index', 0.5, count, stored, Buffer.alloc(plainLen)],
    ];
    for (const [what, first, cnt, src, dst] of cases) {
      assert.throws(() => openSegmentsInto(key, prefix, first, cnt, src, dst), RangeError, what);
      await assert.rejects(openSegmentsIntoAsync(key, prefix, first, cnt, src, dst), RangeError, `${what} (async)`);
    }
    const both = Buffer.alloc(stored.length + plainLen);
    stored.copy(both);
    assert.throws(
      () => openSegmentsInto(key, prefix, 0, count, both.subarray(0, stored.length), both.subarray(100, 100 + plainLen)),
      RangeError,
    );
  });

  it('seals a batch of units in one job as one seal per unit does, and refuses batches that do not fit', async () => {
    const aad = randomBytes(20);
    const lens = [65536, 1, 0, 4095, 65536];
    const srcs = lens.map((n) => randomBytes(n));
    const dsts = lens.map((n) => Buffer.alloc(n + 28 + (n % 3)));
    const spec = Buffer.alloc(16 * lens.length);
    lens.forEach((_, k) => {
      spec.writeUInt32BE(1000 + k, 16 * k);
      randomBytes(12).copy(spec, 16 * k + 4);
    });
    await sealUnitsAsync(key, aad, spec, srcs, dsts);
    srcs.forEach((src, k) => {
      const iv = spec.subarray(16 * k + 4, 16 * k + 16);
      const unitAad = Buffer.concat([aad.subarray(0, 16), spec.subarray(16 * k, 16 * k + 4)]);
      const want = nodeSeal(key, iv, unitAad, src);
      const dst = dsts[k]!;
      assert.deepEqual(dst.subarray(0, 12), iv, `unit ${k}: nonce`);
      assert.deepEqual(dst.subarray(12, 12 + src.length), want.ct, `unit ${k}: ciphertext`);
      assert.deepEqual(dst.subarray(12 + src.length, 28 + src.length), want.tag, `unit ${k}: tag`);
    });
    const one = [randomBytes(100)];
    const room = () => [Buffer.alloc(128)];
    assert.throws(() => sealUnitsAsync(key, randomBytes(19), Buffer.alloc(16), one, room()), RangeError);
    assert.throws(() => sealUnitsAsync(key, aad, Buffer.alloc(32), one, room()), RangeError);
    assert.throws(() => sealUnitsAsync(key, aad, Buffer.alloc(16), one, []), RangeError);
    await assert.rejects(async () => sealUnitsAsync(key, aad, Buffer.alloc(16), one, [Buffer.alloc(127)]), RangeError);
    if (!forced) {
      const both = Buffer.alloc(300);
      await assert.rejects(
        async () => sealUnitsAsync(key, aad, Buffer.alloc(16), [both.subarray(0, 100)], [both.subarray(50, 178)]),
        RangeError,
      );
    }
  });

  it('offers the upload jobs wherever the addon loads (HMAC-SHA256 and a crc32 were found)', () => {
    if (forced || !fs.existsSync(CIPHER_ADDON)) assert.equal(uploadJobsOffThread, false);
    else assert.equal(uploadJobsOffThread, true, 'the addon lacks openUnitsNameAsync or sealSegmentsAsync');
  });

  if (uploadJobsOffThread) {
    /** The sealed units of `plain` from unit `first` on, as a dirty file holds them. */
    const units = (fileId: Buffer, first: number, plain: Buffer): Buffer => {
      const out: Buffer[] = [];
      for (let i = 0; i * 65536 < plain.length; i++) {
        const iv = randomBytes(12);
        const aad = Buffer.alloc(20);
        fileId.copy(aad);
        aad.writeUInt32BE(first + i, 16);
        const { ct, tag } = nodeSeal(key, iv, aad, plain.subarray(i * 65536, (i + 1) * 65536));
        out.push(iv, ct, tag);
      }
      return Buffer.concat(out);
    };

    it("opens a dirty chunk's units in place and names the data in one job, as the engine thread does", async () => {
      const fileId = randomBytes(16);
      const nameKey = randomBytes(32);
      for (const [len, first] of [
        [0, 0],
        [1, 0],
        [65536, 3],
        [3 * 65536 + 5, 0],
        [4 << 20, 64],
      ] as const) {
        const plain = randomBytes(len);
        const buf = units(fileId, first, plain);
        const name = Buffer.alloc(32);
        const aad = Buffer.concat([fileId, Buffer.from('anyx')]);
        assert.equal(await openUnitsAndNameAsync(key, aad, nameKey, buf, first, name), true, `${len} bytes`);
        assert.deepEqual(buf.subarray(0, len), plain, `${len} bytes: the data is where the units were`);
        assert.deepEqual(name, createHmac('sha256', nameKey).update(plain).digest(), `${len} bytes: the name`);
      }
    });

    it('refuses a tampered, torn, moved or foreign dirty unit, wiping the whole buffer', async () => {
      const fileId = randomBytes(16);
      const nameKey = randomBytes(32);
      const plain = randomBytes(2 * 65536 + 100);
      const sealed = units(fileId, 5, plain);
      const aad = Buffer.concat([fileId, Buffer.alloc(4)]);
      const refused = async (buf: Buffer, a: Buffer, first: number, why: string) => {
        const name = Buffer.alloc(32, 7);
        assert.equal(await openUnitsAndNameAsync(key, a, nameKey, buf, first, name), false, why);
        assert.ok(
          buf.every((b) => b === 0),
          `${why}: the buffer is wiped`,
        );
        assert.ok(
          name.every((b) => b === 7),
          `${why}: no name is made`,
        );
      };
      for (const at of [0, 11, 12, 65536 + 40, 65536 + 28 + 3, sealed.length - 1]) {
        const buf = Buffer.from(sealed);
        buf[at]! ^= 1;
        await refused(buf, aad, 5, `byte ${at} flipped`);
      }
      await refused(Buffer.from(sealed), aad, 4, 'opened as other units of the file');
      await refused(Buffer.from(sealed), Buffer.concat([randomBytes(16), Buffer.alloc(4)]), 5, 'units of another file');
      await refused(Buffer.concat([sealed, Buffer.alloc(20)]), aad, 5, 'a torn last unit (no room for its nonce and tag)');
      await refused(Buffer.from(sealed.subarray(0, sealed.length - 1)), aad, 5, 'the last unit cut short');
      const name = Buffer.alloc(32);
      await assert.rejects(
        async () => openUnitsAndNameAsync(key, aad.subarray(0, 19), nameKey, Buffer.from(sealed), 5, name),
        RangeError,
      );
      await assert.rejects(
        async () => openUnitsAndNameAsync(key, aad, nameKey, Buffer.from(sealed), 5, name.subarray(1)),
        RangeError,
      );
      const both = Buffer.from(sealed);
      await assert.rejects(async () => openUnitsAndNameAsync(key, aad, nameKey, both, 5, both.subarray(0, 32)), RangeError);
      assert.deepEqual(both, sealed, 'arguments refused before anything was touched');
    });

    it("seals a chunk's segments in one job, opened by openSegments, with the CRC32 of the whole object", async () => {
      const prefix = Buffer.from('chunkseg:0123abcd:');
      for (const len of [0, 1, 65535, 65536, 65537, (4 << 20) - 3]) {
        const plain = randomBytes(len);
        const count = Math.max(1, Math.ceil(len / 65536));
        const head = Buffer.from('FSC2\0');
        const out = Buffer.alloc(head.length + len + count * 28);
        head.copy(out);
        const spec = Buffer.alloc(count * 12 + 4);
        randomBytes(count * 12).copy(spec);
        assert.equal(await sealSegmentsAsync(key, prefix, spec, plain, out, len % 2 ? 65536 : 0), true);
        assert.deepEqual(out.subarray(0, head.length), head, `${len} bytes: the header is kept`);
        assert.equal(spec.readUInt32BE(count * 12), crc32(out), `${len} bytes: CRC32`);
        for (let k = 0; k < count; k++) {
          const seg = plain.subarray(k * 65536, (k + 1) * 65536);
          const at = head.length + k * SEGMENT_SEALED;
          const want = nodeSeal(key, spec.subarray(12 * k, 12 * k + 12), Buffer.from(`${prefix.toString()}${k}:${count}`), seg);
          const stored = out.subarray(at, at + seg.length + 28);
          assert.deepEqual(
            stored,
            Buffer.concat([spec.subarray(12 * k, 12 * k + 12), want.ct, want.tag]),
            `${len} bytes: segment ${k}`,
          );
        }
        const back = Buffer.alloc(len);
        assert.equal(openSegmentsInto(key, prefix, 0, count, out.subarray(head.length), back), true);
        assert.deepEqual(back, plain);
      }
      // A sample that deflates to 7/8 or less: nothing sealed, no CRC32 written.
      const text = Buffer.alloc(200000, 'a log line that repeats itself\n');
      const untouched = Buffer.alloc(5 + text.length + 4 * 28, 9);
      const textSpec = Buffer.alloc(4 * 12 + 4, 7);
      assert.equal(await sealSegmentsAsync(key, prefix, textSpec, text, untouched, 65536), false);
      assert.ok(untouched.every((b) => b === 9) && textSpec.every((b) => b === 7), 'a compressible chunk is left as it was');
      // Random bytes do not shrink: sealed whatever the sample size.
      const noise = randomBytes(200000);
      const sealedOut = Buffer.alloc(5 + noise.length + 4 * 28);
      const noiseSpec = Buffer.alloc(4 * 12 + 4);
      assert.equal(await sealSegmentsAsync(key, prefix, noiseSpec, noise, sealedOut, 65536), true);
      assert.equal(noiseSpec.readUInt32BE(48), crc32(sealedOut));
      const plain = randomBytes(70000);
      const spec = Buffer.alloc(2 * 12 + 4);
      await assert.rejects(
        async () => sealSegmentsAsync(key, prefix, Buffer.alloc(12 + 4), plain, Buffer.alloc(70100)),
        RangeError,
      );
      await assert.rejects(async () => sealSegmentsAsync(key, prefix, spec, plain, Buffer.alloc(70000 + 55)), RangeError);
      const both = Buffer.alloc(200000);
      await assert.rejects(
        async () => sealSegmentsAsync(key, prefix, spec, both.subarray(0, 70000), both.subarray(60000, 130100)),
        RangeError,
      );
    });
  }

  it('runs many async opens at once without mixing them up', async () => {
    const blobs = Array.from({ length: 16 }, (_, i) => {
      const plain = randomBytes(200000 + i);
      return { plain, blob: seal(key, plain, `c${i}`) };
    });
    const opened = await Promise.all(blobs.map(({ blob }, i) => openAsync(key, blob, `c${i}`, 'blob')));
    opened.forEach((o, i) => assert.deepEqual(o, blobs[i]!.plain));
  });

  if (!forced) {
    it('passes the same checks through node:crypto (FILESPACE_CIPHER=node)', () => {
      const env: NodeJS.ProcessEnv = { ...process.env, FILESPACE_CIPHER: 'node' };
      delete env.NODE_TEST_CONTEXT; // a test run of its own, reporting on stdout
      const r = spawnSync(process.execPath, ['--test', '--test-reporter=tap', __filename], {
        env,
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout, /cipher \(node:crypto \(FILESPACE_CIPHER=node\)\)/);
    });
  }
});
