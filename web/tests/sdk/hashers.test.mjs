// workerHashers, the browser's hashing path, run on real hash-worker.js modules (inside
// Node worker threads that play Web Workers): results, the two-worker MD5 pass, progress,
// abort, a worker that cannot load.

import test from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { workerHashers } from '../../sdk/hashers.js';
import { installWorker } from './node-worker.mjs';

installWorker();

const md5 = (b) => crypto.createHash('md5').update(b).digest('hex');

test('workerHashers: the two-worker pass gives the file MD5 and every chunk MD5', async () => {
  const data = crypto.randomBytes(6 * 1024 * 1024 + 11);
  const chunkSize = 1024 * 1024;
  for (const workers of [1, 2]) {
    const h = workerHashers({ workers, twoPassMinBytes: 0 });
    const progress = [];
    const { fileMd5, chunkMd5s } = await h.fileMd5(new Blob([data]), chunkSize, (x) => progress.push(x));
    assert.equal(fileMd5, md5(data), `${workers} worker(s)`);
    assert.equal(chunkMd5s.length, 7);
    chunkMd5s.forEach((c, i) => assert.equal(c, md5(data.subarray(i * chunkSize, (i + 1) * chunkSize))));
    assert.equal(progress.at(-1), data.length);
    h.terminate();
  }
});

test('workerHashers: SHA-256 by Web Crypto and by the software path', async () => {
  const data = crypto.randomBytes(2 * 1024 * 1024 + 1);
  const expected = crypto.createHash('sha256').update(data).digest('base64');
  for (const forceSoftwareSha256 of [false, true]) {
    const h = workerHashers({ forceSoftwareSha256 });
    const results = await Promise.all([h.sha256(new Blob([data])), h.sha256(new Blob([data]).slice(0, 10))]);
    assert.equal(results[0], expected);
    assert.equal(results[1], crypto.createHash('sha256').update(data.subarray(0, 10)).digest('base64'));
    h.terminate();
  }
});

test('workerHashers: abort rejects with aborted and the pool keeps working', async () => {
  const h = workerHashers({ workers: 2, twoPassMinBytes: 0 });
  const ctrl = new AbortController();
  const big = new Blob([crypto.randomBytes(16 * 1024 * 1024)]);
  const p = h.fileMd5(big, 1024 * 1024, () => ctrl.abort(), ctrl.signal);
  await assert.rejects(p, (e) => e.code === 'aborted');
  const small = crypto.randomBytes(1000);
  assert.equal((await h.fileMd5(new Blob([small]), 1024)).fileMd5, md5(small));
  h.terminate();
});

test('workerHashers: a worker that cannot load fails with hash_failed', async () => {
  const h = workerHashers({ workerUrl: new URL('./does-not-exist.js', import.meta.url) });
  await assert.rejects(h.sha256(new Blob(['x'])), (e) => e.code === 'hash_failed');
});
