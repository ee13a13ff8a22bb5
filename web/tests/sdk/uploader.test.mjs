// The Uploader's state machine without a server: an http env that answers from a script
// (or never, until aborted), to check states, events, pause while a request is in flight,
// offline at start, errors that must not be retried, records, and the same file added twice.

import test from 'node:test';
import assert from 'node:assert/strict';
import { Uploader, nodeEnv, memoryStore, manualNetwork, FerryError } from '../../sdk/ferry.js';

const ENDPOINT = 'http://ferry.test';

/** An http env whose answers come from `answer(req)`; `hang` requests wait for abort. */
function scriptedHttp(answer) {
  const log = [];
  return {
    log,
    request(req) {
      log.push(req);
      const out = answer(req, log.length);
      if (out === 'hang') {
        return new Promise((_, reject) => {
          req.signal?.addEventListener('abort', () => reject(new FerryError('aborted')), { once: true });
        });
      }
      return Promise.resolve({ status: out.status, headers: new Headers(out.headers || {}), text: out.text || '' });
    },
  };
}

const tusServer = (patch) => (req) => {
  if (req.method === 'POST') return { status: 201, headers: { Location: '/files/abc' } };
  if (req.method === 'HEAD') return { status: 200, headers: { 'Upload-Offset': '0', 'Upload-Length': '10' } };
  if (req.method === 'PATCH') return patch(req);
  if (req.method === 'DELETE') return { status: 204 };
  return { status: 500 };
};

const file = (name = 'a.txt', text = '0123456789') => new File([text], name, { lastModified: 5 });
const waitFor = (up, state) => new Promise((r) => (up.state === state ? r() : up.on('state', (e) => e.state === state && r())));

test('autoStart: false leaves the upload idle until start(); "add" is emitted; relative Location resolved', async () => {
  const http = scriptedHttp(tusServer((req) => ({ status: 204, headers: { 'Upload-Offset': String(10) } })));
  const u = new Uploader({ endpoint: ENDPOINT, autoStart: false, env: nodeEnv({ http }) });
  const added = [];
  u.on('add', (up) => added.push(up));
  const up = u.add(file());
  assert.equal(added[0], up);
  assert.equal(up.state, 'idle');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(http.log.length, 0);
  const states = [];
  up.on('state', (e) => states.push(`${e.previous}>${e.state}`));
  const done = new Promise((r) => up.on('success', r));
  up.start();
  const { url, instant } = await done;
  assert.equal(url, 'http://ferry.test/files/abc');
  assert.equal(instant, false);
  assert.deepEqual(states, ['idle>queued', 'queued>uploading', 'uploading>done']);
  assert.equal(http.log[0].url, 'http://ferry.test/files/');
  assert.equal(http.log[1].url, 'http://ferry.test/files/abc');
});

test('pause aborts the request in flight and keeps the record; resume asks HEAD', async () => {
  let patches = 0;
  const http = scriptedHttp(tusServer(() => (++patches === 1 ? 'hang' : { status: 204, headers: { 'Upload-Offset': '10' } })));
  const store = memoryStore();
  const u = new Uploader({ endpoint: ENDPOINT, env: nodeEnv({ http, store }) });
  const up = u.add(file());
  await new Promise((r) => {
    const check = () => (http.log.some((q) => q.method === 'PATCH') ? r() : setTimeout(check, 5));
    check();
  });
  up.pause();
  assert.equal(up.state, 'paused');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(up.state, 'paused', 'the aborted request does not turn into a failure');
  assert.equal((await store.list()).length, 1);
  const done = new Promise((r) => up.on('success', r));
  up.resume();
  await done;
  assert.deepEqual(http.log.map((q) => q.method), ['POST', 'PATCH', 'HEAD', 'PATCH']);
  assert.deepEqual(await store.list(), []);
});

test('4xx other than 408/409/423/429 fail at once: unauthorized', async () => {
  const http = scriptedHttp(() => ({ status: 401, text: '{"error":"unauthorized","message":"a valid bearer token is required"}' }));
  const u = new Uploader({ endpoint: ENDPOINT, env: nodeEnv({ http }), headers: { Authorization: 'Bearer nope' } });
  const up = u.add(file());
  const { error } = await new Promise((r) => up.on('error', r));
  assert.equal(error.code, 'unauthorized');
  assert.equal(error.message, 'a valid bearer token is required');
  assert.equal(up.state, 'failed');
  assert.equal(http.log.length, 1);
  assert.equal(http.log[0].headers.Authorization, 'Bearer nope');
});

test('offline from the start: state offline, no request until online', async () => {
  const network = manualNetwork(false);
  const http = scriptedHttp(tusServer(() => ({ status: 204, headers: { 'Upload-Offset': '10' } })));
  const u = new Uploader({ endpoint: ENDPOINT, env: nodeEnv({ http, network }) });
  const up = u.add(file());
  await waitFor(up, 'offline');
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(http.log.length, 0);
  const done = new Promise((r) => up.on('success', r));
  network.set(true);
  await done;
  assert.equal(http.log.length, 2);
});

test('the same file added twice is one upload; a finished one can be added again', async () => {
  const http = scriptedHttp(tusServer(() => ({ status: 204, headers: { 'Upload-Offset': '10' } })));
  const u = new Uploader({ endpoint: ENDPOINT, env: nodeEnv({ http }) });
  const a = u.add(file());
  const b = u.add(file());
  assert.equal(a, b);
  assert.equal(u.uploads.length, 1);
  await new Promise((r) => a.on('success', r));
  const c = u.add(file());
  assert.notEqual(c, a);
});

test('unfinished() lists only this endpoint\'s records; forget() removes one', async () => {
  const store = memoryStore();
  await store.put('k1', { fingerprint: 'k1', endpoint: ENDPOINT, name: 'x', updatedAt: 2 });
  await store.put('k2', { fingerprint: 'k2', endpoint: 'http://elsewhere', name: 'y', updatedAt: 1 });
  const u = new Uploader({ endpoint: `${ENDPOINT}/`, env: nodeEnv({ store }) });
  assert.deepEqual((await u.unfinished()).map((r) => r.fingerprint), ['k1']);
  await u.forget('k1');
  assert.deepEqual(await u.unfinished(), []);
});

test('chunk dialect: a server envelope error is reported with its message', async () => {
  const http = scriptedHttp((req) =>
    req.url.endsWith('/handshake')
      ? { status: 400, text: JSON.stringify({ code: 400, msg: 'ext: the extension may contain only letters and digits', data: null, error: 'invalid_ext' }) }
      : { status: 500 },
  );
  const u = new Uploader({ endpoint: ENDPOINT, protocol: 'chunk', env: nodeEnv({ http }) });
  const up = u.add(file('x.bin'));
  const { error } = await new Promise((r) => up.on('error', r));
  assert.equal(error.code, 'http_400');
  assert.equal(error.serverCode, 'invalid_ext');
  assert.match(error.message, /extension/);
  const hs = JSON.parse(http.log[0].body);
  assert.equal(hs.ext, '.bin');
  assert.equal(hs.size, 10);
  assert.equal(hs.chunkSize, 5 * 1024 * 1024);
  assert.equal(hs.fileName, 'x.bin');
  assert.match(hs.fileId, /^[0-9a-f]{32}$/);
  assert.deepEqual(hs.chunkIds, [`${hs.fileId}0`], 'one chunk: its MD5 is the file MD5, index 0 appended');
});
