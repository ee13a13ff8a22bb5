// The fingerprint a record is stored under: stable for the same file, different when the
// name, size, modification time or the sampled content (first, middle, last 64 KiB) differ.

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { fingerprint, sampleOf, SAMPLE_BYTES } from '../../sdk/fingerprint.js';
import { inThreadHashers } from '../../sdk/hashers.js';
import { formatBytes, formatDuration, formatRate } from '../../sdk/format.js';
import { extensionOf } from '../../sdk/chunk.js';
import { encodeMetadata } from '../../sdk/tus.js';

const hashers = inThreadHashers();
const fp = (bytes, name = 'a.bin', lastModified = 1700000000000) => fingerprint(new File([bytes], name, { lastModified }), hashers);

test('fingerprint: format and stability', async () => {
  const data = crypto.randomBytes(1024 * 1024);
  const a = await fp(data);
  assert.match(a, /^ferry-v1:a\.bin:1048576:1700000000000:[0-9a-f]{64}$/);
  assert.equal(await fp(Buffer.from(data)), a, 'same content, same file facts: same fingerprint');
  assert.equal(await fingerprint(new File([data], 'a.bin', { lastModified: 1700000000000 }), inThreadHashers({ forceSoftwareSha256: true })), a, 'software SHA-256 gives the same sample');
});

test('fingerprint: sensitive to name, time and the sampled content', async () => {
  const data = crypto.randomBytes(1024 * 1024);
  const a = await fp(data);
  assert.notEqual(await fp(data, 'b.bin'), a);
  assert.notEqual(await fp(data, 'a.bin', 1700000000001), a);
  for (const at of [0, SAMPLE_BYTES - 1, data.length / 2, data.length / 2 - SAMPLE_BYTES / 2, data.length - 1]) {
    const changed = Buffer.from(data);
    changed[at] ^= 0xff;
    assert.notEqual(await fp(changed), a, `byte ${at} is sampled`);
  }
  // Outside the three samples a change goes unnoticed by design (the server's digests catch it).
  const unsampled = Buffer.from(data);
  unsampled[SAMPLE_BYTES + 10] ^= 0xff;
  assert.equal(await fp(unsampled), a);
});

test('fingerprint: small files are sampled whole', async () => {
  const small = crypto.randomBytes(3 * SAMPLE_BYTES);
  assert.equal(sampleOf(new Blob([small])).size, small.length);
  const changed = Buffer.from(small);
  changed[SAMPLE_BYTES + 5] ^= 1;
  assert.notEqual(await fp(changed), await fp(small));
  assert.equal(sampleOf(new Blob([crypto.randomBytes(3 * SAMPLE_BYTES + 1)])).size, 3 * SAMPLE_BYTES);
  assert.match(await fp(Buffer.alloc(0), 'empty'), /^ferry-v1:empty:0:/);
});

test('formatBytes, formatRate, formatDuration', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(1023), '1023 B');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(5 * 1024 * 1024), '5.00 MiB');
  assert.equal(formatBytes(123.4 * 1024 ** 3), '123 GiB');
  assert.equal(formatBytes(NaN), '–');
  assert.equal(formatRate(2 * 1024 * 1024), '2.00 MiB/s');
  assert.equal(formatDuration(0), '0s');
  assert.equal(formatDuration(42.4), '42s');
  assert.equal(formatDuration(125), '2m 5s');
  assert.equal(formatDuration(3725), '1h 2m');
  assert.equal(formatDuration(7200), '2h');
  assert.equal(formatDuration(125, 'zh'), '2分5秒');
  assert.equal(formatDuration(3725, 'zh-CN'), '1小时2分');
  assert.equal(formatDuration(null), '–');
  assert.equal(formatDuration(Infinity), '–');
});

test('extensionOf and encodeMetadata', () => {
  assert.equal(extensionOf('photo.JPG'), '.jpg');
  assert.equal(extensionOf('archive.tar.gz'), '.gz');
  assert.equal(extensionOf('README'), '');
  assert.equal(extensionOf('.bashrc'), '');
  assert.equal(extensionOf('weird.ex-t'), '');
  assert.equal(extensionOf('照片.png'), '.png');
  assert.equal(encodeMetadata({ filename: '照片.bin', filetype: 'image/png', empty: '', skip: null }), `filename ${Buffer.from('照片.bin').toString('base64')},filetype ${Buffer.from('image/png').toString('base64')},empty`);
});
