// MD5 (RFC 1321) and SHA-256 (FIPS 180-4) of the SDK against node:crypto: every length
// around the block and padding boundaries, random sizes up to a few MiB, incremental
// updates split at random points (unaligned views included), and the slice-by-slice Blob
// hashing the workers run.

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Md5, md5Hex } from '../../sdk/md5.js';
import { Sha256, sha256Hex } from '../../sdk/sha256.js';
import { md5Blob, sha256Blob, slicePlan } from '../../sdk/hash-core.js';
import { inThreadHashers } from '../../sdk/hashers.js';

const node = (alg, data) => crypto.createHash(alg).update(data).digest('hex');

// A seeded generator, so that a failure can be reproduced.
function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const EDGE_LENGTHS = [0, 1, 2, 3, 4, 5, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 191, 192, 193, 1000, 4095, 4096, 4097, 65535, 65536, 65537];

for (const [name, Hasher, oneShot, alg] of [
  ['md5', Md5, md5Hex, 'md5'],
  ['sha256', Sha256, sha256Hex, 'sha256'],
]) {
  test(`${name}: block and padding boundary lengths match node:crypto`, () => {
    const data = crypto.randomBytes(70000);
    for (const n of EDGE_LENGTHS) {
      const slice = data.subarray(0, n);
      assert.equal(oneShot(slice), node(alg, slice), `length ${n}`);
    }
  });

  test(`${name}: known vectors`, () => {
    assert.equal(oneShot(''), node(alg, ''));
    assert.equal(oneShot('abc'), node(alg, 'abc'));
    assert.equal(oneShot('The quick brown fox jumps over the lazy dog'), node(alg, 'The quick brown fox jumps over the lazy dog'));
    assert.equal(oneShot('中文文件名'), node(alg, Buffer.from('中文文件名')));
  });

  test(`${name}: random sizes up to 4 MiB match node:crypto`, () => {
    const random = rng(name === 'md5' ? 1 : 2);
    const data = crypto.randomBytes(4 * 1024 * 1024 + 7);
    for (let k = 0; k < 12; k++) {
      const n = Math.floor(random() * data.length);
      assert.equal(oneShot(data.subarray(0, n)), node(alg, data.subarray(0, n)), `length ${n}`);
    }
    assert.equal(oneShot(data), node(alg, data));
  });

  test(`${name}: incremental updates split at random points (unaligned views) match`, () => {
    const random = rng(name === 'md5' ? 3 : 4);
    const data = crypto.randomBytes(3 * 1024 * 1024 + 13);
    for (let round = 0; round < 25; round++) {
      const n = round < 5 ? EDGE_LENGTHS[round * 5] : Math.floor(random() * data.length);
      const h = new Hasher();
      let pos = 0;
      while (pos < n) {
        // Mostly small pieces, sometimes big ones, sometimes empty ones.
        const r = random();
        const len = r < 0.1 ? 0 : r < 0.6 ? Math.floor(random() * 200) : Math.floor(random() * 300000);
        const end = Math.min(n, pos + len);
        // subarray at an arbitrary offset: the fast path needs aligned views, this checks
        // the slow one too.
        h.update(data.subarray(pos, end));
        pos = end;
      }
      assert.equal(h.hex(), node(alg, data.subarray(0, n)), `round ${round}, length ${n}`);
    }
  });

  test(`${name}: reset() reuses the hasher; ArrayBuffer and strings are accepted`, () => {
    const h = new Hasher();
    h.update('garbage');
    h.reset();
    const bytes = crypto.randomBytes(1000);
    const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
    assert.equal(h.update(ab).hex(), node(alg, bytes));
    assert.equal(new Hasher().update('ab').update('c').hex(), node(alg, 'abc'));
  });
}

test('slicePlan: slices never straddle chunks and cover the file once', () => {
  const size = 10 * 1000 + 3;
  const plan = [...slicePlan(size, 3000, 1024)];
  let at = 0;
  for (const [s, e, c, last] of plan) {
    assert.equal(s, at);
    assert.ok(e > s && e - s <= 1024);
    assert.equal(Math.floor(s / 3000), c);
    assert.equal(Math.floor((e - 1) / 3000), c);
    assert.equal(last, e === Math.min(size, (c + 1) * 3000));
    at = e;
  }
  assert.equal(at, size);
  assert.deepEqual([...slicePlan(0, 3000)], []);
});

test('md5Blob: file MD5 and every chunk MD5 in one pass, over small slices', async () => {
  const data = crypto.randomBytes(5 * 1024 * 1024 + 333);
  const blob = new Blob([data]);
  const chunkSize = 1024 * 1024 + 17; // not a multiple of the slice size
  const seen = [];
  const { fileMd5, chunkMd5s } = await md5Blob(blob, { chunkSize, sliceSize: 256 * 1024 + 3, onProgress: (h) => seen.push(h) });
  assert.equal(fileMd5, node('md5', data));
  const expected = [];
  for (let s = 0; s < data.length; s += chunkSize) expected.push(node('md5', data.subarray(s, s + chunkSize)));
  assert.deepEqual(chunkMd5s, expected);
  assert.equal(seen.at(-1), data.length);
  assert.ok(seen.every((v, i) => i === 0 || v > seen[i - 1]), 'progress only grows');

  const onlyFile = await md5Blob(blob, { chunkSize, chunks: false });
  assert.equal(onlyFile.fileMd5, fileMd5);
  assert.equal(onlyFile.chunkMd5s, null);
  const empty = await md5Blob(new Blob([]), { chunkSize });
  assert.deepEqual(empty, { fileMd5: node('md5', ''), chunkMd5s: [] });
});

test('sha256Blob: Web Crypto and the software path agree with node:crypto', async () => {
  for (const n of [0, 1, 64, 100000, 3 * 1024 * 1024 + 5]) {
    const data = crypto.randomBytes(n);
    const expected = crypto.createHash('sha256').update(data).digest('base64');
    assert.equal(await sha256Blob(new Blob([data])), expected, `subtle, ${n}`);
    assert.equal(await sha256Blob(new Blob([data]), { forceSoftware: true, sliceSize: 65536 + 1 }), expected, `software, ${n}`);
  }
});

test('inThreadHashers: aborting stops the pass with code aborted', async () => {
  const hashers = inThreadHashers();
  const ctrl = new AbortController();
  const blob = new Blob([crypto.randomBytes(4 * 1024 * 1024)]);
  const p = hashers.fileMd5(blob, 1024 * 1024, () => ctrl.abort(), ctrl.signal);
  await assert.rejects(p, (e) => e.code === 'aborted');
});
