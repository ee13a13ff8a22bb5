// The SDK end to end against a real ferry server (started here), in Node: fetch for HTTP,
// records in memory, hashing on this thread. Each test checks the bytes the server gives
// back and counts the requests the SDK made.

import test, { before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Uploader, nodeEnv, memoryStore, manualNetwork, inThreadHashers, FerryError } from '../../sdk/ferry.js';
import { workerHashers } from '../../sdk/hashers.js';
import { startFerry, recordingHttp, fakeResponse } from './server.mjs';
import { installWorker } from './node-worker.mjs';

let server;
before(async () => {
  server = await startFerry();
});
after(async () => {
  await server?.stop();
});

const KiB = 1024;
const MiB = 1024 * 1024;

function makeFile(size, name = `f-${crypto.randomBytes(4).toString('hex')}.bin`) {
  const bytes = crypto.randomBytes(size);
  return { bytes, name, file: () => new File([bytes], name, { lastModified: 1700000000000, type: 'application/octet-stream' }) };
}

/** Resolves with the success payload, rejects with the FerryError; fails after `ms`. */
function outcome(up, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out in state ${up.state}`)), ms);
    up.on('success', (s) => {
      clearTimeout(timer);
      resolve(s);
    });
    up.on('error', ({ error }) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

function until(up, pred, ms = 20000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`condition not met in state ${up.state}`)), ms);
    const check = () => {
      if (pred(up)) {
        clearTimeout(timer);
        off1();
        off2();
        resolve();
      }
    };
    const off1 = up.on('progress', check);
    const off2 = up.on('state', check);
    check();
  });
}

async function download(url) {
  const res = await fetch(url);
  assert.equal(res.status, 200, `GET ${url}`);
  return Buffer.from(await res.arrayBuffer());
}

function uploader(opts) {
  const http = opts.http ?? recordingHttp();
  const env = nodeEnv({ http, store: opts.store, network: opts.network, hashers: opts.hashers, forceSoftwareSha256: opts.forceSoftwareSha256 });
  const u = new Uploader({ endpoint: server.url, retryDelays: [0, 50, 100, 200], ...opts.options, env });
  return { u, http, env };
}

test('tus: a few MiB in checksummed PATCHes; GET gives the same bytes; progress is what the server confirmed', async () => {
  const src = makeFile(3 * MiB + 77, '照片 tus.bin');
  const { u, http, env } = uploader({ options: { chunkSize: 512 * KiB } });
  const up = u.add(src.file());
  const states = [];
  const confirmed = [];
  up.on('state', (e) => states.push(e.state));
  up.on('progress', (e) => confirmed.push(e.confirmed));
  const result = await outcome(up);
  assert.equal(result.instant, false);
  assert.match(result.url, /\/files\//);
  assert.deepEqual(await download(result.url), src.bytes);
  assert.equal(up.state, 'done');
  assert.equal(up.confirmed, src.bytes.length);
  assert.equal(http.count('POST'), 1);
  assert.equal(http.count('PATCH'), 7);
  for (const r of http.log.filter((r) => r.kind === 'PATCH')) {
    assert.match(r.headers['Upload-Checksum'], /^sha256 [A-Za-z0-9+/]{43}=$/);
    assert.equal(r.headers['Tus-Resumable'], '1.0.0');
  }
  // Progress reports acknowledged offsets: multiples of the chunk size, then the total.
  for (const c of confirmed) assert.ok(c % (512 * KiB) === 0 || c === src.bytes.length, `confirmed ${c}`);
  assert.deepEqual(states.slice(0, 1), ['uploading']);
  assert.equal(states.at(-1), 'done');
  assert.deepEqual(await env.store.list(), [], 'the record is deleted on success');
  const meta = await fetch(result.url, { method: 'HEAD' });
  assert.match(meta.headers.get('content-disposition') || '', /filename\*=UTF-8''/i, 'the file name reached the server');
});

test('tus: the software SHA-256 path (no Web Crypto) uploads too; an empty file completes', async () => {
  const src = makeFile(1 * MiB + 3);
  const { u } = uploader({ forceSoftwareSha256: true, options: { chunkSize: 256 * KiB } });
  const r = await outcome(u.add(src.file()));
  assert.deepEqual(await download(r.url), src.bytes);
  const empty = await outcome(u.add(new File([], 'empty.txt')));
  assert.equal((await download(empty.url)).length, 0);
});

test('chunk dialect: upload with at most `concurrency` chunks in flight; the same file again is instant with no chunk sent', async () => {
  const src = makeFile(3 * MiB + 5 * KiB, 'clip.MP4');
  const { u, http } = uploader({ options: { protocol: 'chunk', chunkSize: 256 * KiB, concurrency: 3 } });
  const up = u.add(src.file());
  const hashing = [];
  up.on('hash', (e) => hashing.push(e.hashed));
  const r = await outcome(up);
  assert.equal(r.instant, false);
  assert.match(r.url, /\/upload\/[0-9a-f]{32}\.mp4$/);
  assert.equal(r.url.split('/').pop().slice(0, 32), crypto.createHash('md5').update(src.bytes).digest('hex'));
  assert.deepEqual(await download(r.url), src.bytes);
  assert.equal(http.count('handshake'), 1);
  assert.equal(http.count('chunk'), 13);
  assert.ok(http.peak.chunk <= 3, `peak ${http.peak.chunk} chunk requests in flight`);
  assert.ok(http.peak.chunk >= 2, 'chunks did go in parallel');
  assert.equal(hashing.at(-1), src.bytes.length);

  const again = uploader({ options: { protocol: 'chunk', chunkSize: 256 * KiB } });
  const up2 = again.u.add(src.file());
  const r2 = await outcome(up2);
  assert.equal(r2.instant, true);
  assert.equal(r2.url, r.url);
  assert.equal(again.http.count('handshake'), 1);
  assert.equal(again.http.count('chunk'), 0, 'no chunk request for a file the server has');
  assert.equal(up2.confirmed, src.bytes.length);
});

test('tus: interrupted mid-way and added again (new page, same records) continues from the server offset', async () => {
  const src = makeFile(4 * MiB + 9);
  const store = memoryStore();
  const first = uploader({ store, options: { chunkSize: 256 * KiB } });
  const up = first.u.add(src.file());
  await until(up, (x) => x.confirmed >= 1 * MiB);
  up.pause();
  assert.equal(up.state, 'paused');
  const held = up.confirmed;
  first.u.destroy();
  await up.recordWrites; // record writes are queued; a real reload may see one chunk less, HEAD corrects it

  // "Reload": a new uploader with the same store.
  const second = uploader({ store, options: { chunkSize: 256 * KiB } });
  const records = await second.u.unfinished();
  assert.equal(records.length, 1);
  assert.equal(records[0].name, src.name);
  assert.equal(records[0].protocol, 'tus');
  assert.ok(records[0].url && records[0].confirmed >= held, JSON.stringify({ ...records[0], held }));
  const up2 = second.u.add(src.file());
  const firstProgress = new Promise((r) => up2.once('progress', r));
  const r = await outcome(up2);
  assert.ok((await firstProgress).confirmed >= held, 'the first progress is the offset held');
  assert.deepEqual(await download(r.url), src.bytes);
  assert.equal(second.http.count('POST'), 0, 'no new upload was created');
  assert.equal(second.http.count('HEAD'), 1);
  const sent = second.http.bytes('PATCH');
  assert.ok(sent < src.bytes.length, `sent ${sent} of ${src.bytes.length}`);
  assert.ok(sent <= src.bytes.length - held, 'nothing the server held was sent again');
  assert.equal(r.url, records[0].url);
  assert.deepEqual(await second.u.unfinished(), []);
});

test('chunk dialect: interrupted after some chunks and resumed from the record: no re-hashing, only missing chunks sent', async () => {
  const src = makeFile(3 * MiB, 'resume.bin');
  const store = memoryStore();
  const first = uploader({ store, options: { protocol: 'chunk', chunkSize: 256 * KiB, concurrency: 2 } });
  const up = first.u.add(src.file());
  await until(up, (x) => x.confirmed >= 768 * KiB);
  up.pause();
  first.u.destroy();
  await up.recordWrites;
  const records = await first.u.unfinished();
  assert.equal(records.length, 1);
  assert.equal(records[0].chunkIds.length, 12);
  assert.match(records[0].chunkIds[11], /^[0-9a-f]{32}11$/);

  let md5Passes = 0;
  const base = inThreadHashers();
  const hashers = { ...base, fileMd5: (...a) => (md5Passes++, base.fileMd5(...a)) };
  const second = uploader({ store, hashers, options: { protocol: 'chunk', chunkSize: 1 * MiB /* ignored: the record's wins */ } });
  const r = await outcome(second.u.add(src.file()));
  assert.equal(r.instant, false);
  assert.equal(md5Passes, 0, 'the stored ids were reused');
  assert.deepEqual(await download(r.url), src.bytes);
  const sent = second.http.bytes('chunk');
  assert.ok(sent < src.bytes.length, `sent ${sent} of ${src.bytes.length}`);
  assert.ok(second.http.count('chunk') <= 12 - 3);
});

test('tus: a 460 checksum mismatch surfaces as checksum_mismatch, and nothing of it is stored', async () => {
  const src = makeFile(1 * MiB);
  let corrupted = 0;
  const http = recordingHttp({
    intercept: async (req, n, kind) => {
      if (kind === 'PATCH' && n === 2) {
        corrupted++;
        return { req: { ...req, body: new Blob([crypto.randomBytes(req.body.size)]) } };
      }
      return null;
    },
  });
  const { u } = uploader({ http, options: { chunkSize: 256 * KiB } });
  const up = u.add(src.file());
  await assert.rejects(outcome(up), (e) => e instanceof FerryError && e.code === 'checksum_mismatch' && e.status === 460 && !e.retryable);
  assert.equal(corrupted, 1);
  assert.equal(up.state, 'failed');
  assert.equal(up.error.code, 'checksum_mismatch');
  assert.equal(up.confirmed, 256 * KiB);
  const head = await fetch(up.tusUrl, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  assert.equal(head.headers.get('upload-offset'), String(256 * KiB));
  // Retry goes on from the server's offset and finishes.
  const r = await outcome(up.retry());
  assert.deepEqual(await download(r.url), src.bytes);
});

test('retries: a 503 with Retry-After: 1 is honoured, a dropped connection is retried, state goes through retrying', async () => {
  const src = makeFile(768 * KiB);
  const times = [];
  const http = recordingHttp({
    intercept: async (req, n, kind) => {
      if (kind === 'PATCH') times.push(Date.now());
      if (kind === 'PATCH' && n === 1) return { response: fakeResponse(503, { 'Retry-After': '1' }, 'maintenance') };
      if (kind === 'PATCH' && n === 3) throw new FerryError('network');
      return null;
    },
  });
  const { u } = uploader({ http, options: { chunkSize: 256 * KiB } });
  const up = u.add(src.file());
  const retrying = [];
  up.on('state', (e) => e.state === 'retrying' && retrying.push(e.detail));
  const r = await outcome(up);
  assert.deepEqual(await download(r.url), src.bytes);
  assert.ok(times[1] - times[0] >= 990, `waited ${times[1] - times[0]} ms after Retry-After: 1`);
  assert.equal(retrying.length, 2);
  assert.ok(retrying[0].delayMs >= 1000);
  assert.equal(retrying[0].error.code, 'server');
  assert.equal(retrying[1].error.code, 'network');
  // After the failed PATCH the SDK asked HEAD where to continue.
  const kinds = http.log.map((x) => x.kind);
  assert.ok(kinds.includes('HEAD'));
});

test('retries run out: the upload fails with the last error', async () => {
  const http = recordingHttp({ intercept: async (req, n, kind) => (kind === 'PATCH' ? { response: fakeResponse(500, {}, '{"error":"storage_error","message":"disk on fire"}') } : null) });
  const { u } = uploader({ http, options: { retryDelays: [0, 10, 10] } });
  const up = u.add(makeFile(10 * KiB).file());
  await assert.rejects(outcome(up), (e) => e.code === 'server' && e.message === 'disk on fire' && e.status === 500);
  assert.equal(http.count('PATCH'), 4);
});

test('offline pauses the upload, online resumes it', async () => {
  const src = makeFile(2 * MiB);
  const network = manualNetwork(true);
  const { u, http } = uploader({ network, options: { chunkSize: 256 * KiB } });
  const up = u.add(src.file());
  await until(up, (x) => x.confirmed >= 512 * KiB);
  network.set(false);
  assert.equal(up.state, 'offline');
  const before = http.log.length;
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(http.log.length, before, 'no request while offline');
  network.set(true);
  const r = await outcome(up);
  assert.deepEqual(await download(r.url), src.bytes);
});

test('chunk dialect: offline stops the chunk queue; online finishes', async () => {
  const src = makeFile(2 * MiB);
  const network = manualNetwork(true);
  const { u, http } = uploader({ network, options: { protocol: 'chunk', chunkSize: 128 * KiB, concurrency: 2 } });
  const up = u.add(src.file());
  await until(up, (x) => x.confirmed >= 256 * KiB);
  network.set(false);
  assert.equal(up.state, 'offline');
  const before = http.log.length;
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(http.log.length, before);
  network.set(true);
  const r = await outcome(up);
  assert.deepEqual(await download(r.url), src.bytes);
  assert.ok(http.peak.chunk <= 2);
});

test('cancel aborts, forgets the record, then DELETEs the tus upload (204)', async () => {
  const src = makeFile(2 * MiB);
  // What the store held when the DELETE went out: a tab closed from then on resumes nothing.
  const store = memoryStore();
  let storeAtDelete = null;
  const intercept = async (req, _n, kind) => {
    if (kind === 'DELETE') storeAtDelete = await store.list();
    return null;
  };
  const { u, http, env } = uploader({ http: recordingHttp({ intercept }), store, options: { chunkSize: 256 * KiB } });
  const up = u.add(src.file());
  await until(up, (x) => x.confirmed >= 512 * KiB);
  const url = up.tusUrl;
  assert.equal((await env.store.list()).length, 1);
  await up.cancel();
  assert.equal(up.state, 'canceled');
  const del = http.log.find((r) => r.kind === 'DELETE');
  assert.equal(del?.status, 204);
  assert.deepEqual(storeAtDelete, [], 'the record was still stored when the DELETE went out');
  assert.deepEqual(await env.store.list(), []);
  const head = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  assert.equal(head.status, 404);
});

test('pause and resume in the same page: HEAD, then on from the held offset', async () => {
  const src = makeFile(2 * MiB);
  const { u, http } = uploader({ options: { chunkSize: 256 * KiB } });
  const up = u.add(src.file());
  await until(up, (x) => x.confirmed >= 512 * KiB);
  up.pause();
  const patchesBefore = http.count('PATCH');
  const headsBefore = http.count('HEAD');
  up.resume();
  const r = await outcome(up);
  assert.deepEqual(await download(r.url), src.bytes);
  assert.equal(http.count('HEAD'), headsBefore + 1);
  assert.ok(http.count('PATCH') - patchesBefore <= 6);
});

test('parallelUploads: the rest wait queued', async () => {
  const { u } = uploader({ options: { parallelUploads: 2, chunkSize: 128 * KiB } });
  const files = [makeFile(512 * KiB), makeFile(512 * KiB), makeFile(512 * KiB), makeFile(512 * KiB)];
  let peak = 0;
  const ups = files.map((f) => u.add(f.file()));
  for (const up of ups) {
    up.on('state', () => {
      peak = Math.max(peak, ups.filter((x) => ['hashing', 'uploading', 'retrying', 'offline'].includes(x.state)).length);
    });
  }
  assert.deepEqual(ups.map((x) => x.state), ['queued', 'queued', 'queued', 'queued']);
  const results = await Promise.all(ups.map((x) => outcome(x)));
  assert.equal(peak, 2);
  for (let i = 0; i < files.length; i++) assert.deepEqual(await download(results[i].url), files[i].bytes);
});

test('errors a person can act on: a file over the server limit is too_large, no retry', async () => {
  // Only the declared length matters for the refusal: a Blob that lies about its size.
  const http = recordingHttp({
    intercept: async (req, n, kind) => (kind === 'POST' ? { req: { ...req, headers: { ...req.headers, 'Upload-Length': String(2 ** 50) } } } : null),
  });
  const { u } = uploader({ http });
  const up = u.add(makeFile(1000).file());
  await assert.rejects(outcome(up), (e) => e.code === 'too_large' && e.status === 413 && /./.test(e.message));
  assert.equal(http.count('POST'), 1);
});

test('the browser hashing path: hash workers (two for the chunk pass), software SHA-256, both dialects', async () => {
  installWorker();
  const hashers = workerHashers({ workers: 2, twoPassMinBytes: 0, forceSoftwareSha256: true });
  try {
    for (const protocol of ['tus', 'chunk']) {
      const src = makeFile(2 * MiB + 1);
      const { u } = uploader({ hashers, options: { protocol, chunkSize: 512 * KiB } });
      const r = await outcome(u.add(src.file()));
      assert.deepEqual(await download(r.url), src.bytes, protocol);
    }
  } finally {
    hashers.terminate();
  }
});
