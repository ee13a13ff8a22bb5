// Runs the unmodified seed-article clients (seed-client.js, offset-client.js,
// range-client.js) against a running ferry server, in Node 20 with no browser.
//
//   node run.mjs http://127.0.0.1:8080        (or FERRY_URL=... node run.mjs)
//
// The harness only supplies what a page has and Node lacks — the global SparkMD5 of a
// <script> tag, a FileReader, and a page origin for relative URLs — and watches the
// network: every fetch the clients make goes through a wrapper that counts requests and,
// where a scenario asks for it, simulates a network failure.

import assert from 'node:assert/strict';
import { randomFillSync, createHash } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

const base = (process.argv[2] || process.env.FERRY_URL || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node run.mjs http://127.0.0.1:PORT   (or set FERRY_URL)');
  process.exit(2);
}

// ---------------------------------------------------------------------------------------
// Browser globals the clients use and Node 20 lacks.

// <script src="spark-md5.min.js"> defines a global SparkMD5.
globalThis.SparkMD5 = require('spark-md5');

// A minimal FileReader: readAsArrayBuffer over Blob.arrayBuffer(), asynchronous like the
// real one, firing load/error/loadend both as on<type> handlers and as events.
class FileReader extends EventTarget {
  static EMPTY = 0;
  static LOADING = 1;
  static DONE = 2;
  constructor() {
    super();
    this.readyState = FileReader.EMPTY;
    this.result = null;
    this.error = null;
    this.onload = this.onerror = this.onloadend = this.onloadstart = null;
  }
  #fire(type) {
    const ev = new Event(type);
    this.dispatchEvent(ev); // sets ev.target = this
    const handler = this['on' + type];
    if (typeof handler === 'function') handler.call(this, ev);
  }
  readAsArrayBuffer(blob) {
    if (this.readyState === FileReader.LOADING) {
      throw new DOMException('already reading', 'InvalidStateError');
    }
    this.readyState = FileReader.LOADING;
    this.result = null;
    this.error = null;
    queueMicrotask(() => this.#fire('loadstart'));
    blob.arrayBuffer().then(
      (buf) => {
        this.readyState = FileReader.DONE;
        this.result = buf;
        this.#fire('load');
        if (this.readyState === FileReader.DONE) this.#fire('loadend');
      },
      (err) => {
        this.readyState = FileReader.DONE;
        this.error = err;
        this.#fire('error');
        this.#fire('loadend');
      },
    );
  }
}
globalThis.FileReader = FileReader;

// The network: page-relative URLs resolve against the server, as they would against the
// page's origin; every request is logged; `fault` may fail or cut a request.
const nodeFetch = globalThis.fetch;
const net = {
  log: [], // {method, path, status, ms, kind}
  inflight: new Set(),
  fault: null, // (info) => undefined | {reject: Error} | {cutAfter: bytes}
  reset() {
    this.log = [];
    this.fault = null;
  },
  count(pred) {
    return this.log.filter(pred).length;
  },
  async settle() {
    while (this.inflight.size) await Promise.allSettled([...this.inflight]);
  },
};
function kindOf(method, path, headers, body) {
  if (path.endsWith('/handshake')) return 'handshake';
  if (method === 'POST' && body instanceof FormData) return 'chunk';
  if (method === 'GET' && path.endsWith('/status')) return 'status';
  if (method === 'POST' && headers.has('content-range')) return 'range';
  if (method === 'POST' && headers.has('x-start-byte')) return 'append';
  return method === 'GET' || method === 'HEAD' ? 'download' : 'other';
}
// A body that delivers `limit` bytes of `blob`, then stalls until the request is aborted:
// a connection that dies in the middle of an upload.
function stallingBody(blob, limit, onStalled) {
  let sent = 0;
  const reader = blob.stream().getReader();
  return new ReadableStream({
    async pull(ctl) {
      if (sent >= limit) {
        onStalled();
        await new Promise(() => {}); // never resolves; the abort tears the request down
      }
      const { value, done } = await reader.read();
      if (done) return ctl.close();
      const part = value.subarray(0, Math.min(value.length, limit - sent));
      sent += part.length;
      ctl.enqueue(part);
    },
  });
}
globalThis.fetch = (input, init = {}) => {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url, base + '/');
  const method = (init.method || 'GET').toUpperCase();
  const headers = new Headers(init.headers);
  const entry = { method, path: url.pathname, kind: kindOf(method, url.pathname, headers, init.body), status: null };
  net.log.push(entry);
  const t0 = performance.now();
  const fault = net.fault?.(entry, init);
  let p;
  if (fault?.reject) {
    entry.status = 'failed';
    p = Promise.reject(fault.reject);
  } else if (fault?.cutAfter !== undefined) {
    const ctl = new AbortController();
    init.signal?.addEventListener('abort', () => ctl.abort(init.signal.reason));
    const body = stallingBody(init.body, fault.cutAfter, () => fault.onStalled?.(ctl));
    p = nodeFetch(url, { ...init, body, duplex: 'half', signal: ctl.signal });
  } else {
    p = nodeFetch(url, init);
  }
  p = p.then(
    (resp) => {
      entry.status = resp.status;
      entry.ms = performance.now() - t0;
      return resp;
    },
    (err) => {
      entry.status = entry.status ?? 'aborted';
      throw err;
    },
  );
  const tracked = p.catch(() => {});
  net.inflight.add(tracked);
  tracked.finally(() => net.inflight.delete(tracked));
  return p;
};

// ---------------------------------------------------------------------------------------
// Helpers.

const MiB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Pseudo-random content, fresh on every run so that the first upload of a run is never an
// "instant upload" of a file a previous run left on the server.
function makeFile(name, size, lastModified = Date.now()) {
  const bytes = new Uint8Array(size);
  for (let off = 0; off < size; off += 65536) randomFillSync(bytes, off, Math.min(65536, size - off));
  return { file: new File([bytes], name, { type: 'application/octet-stream', lastModified }), bytes };
}
const md5 = (bytes) => createHash('md5').update(bytes).digest('hex');

async function download(url) {
  const resp = await nodeFetch(new URL(url, base + '/'));
  assert.equal(resp.status, 200, `GET ${url} answered ${resp.status}`);
  return new Uint8Array(await resp.arrayBuffer());
}
async function assertDownloadsIdentical(url, bytes) {
  const got = await download(url);
  assert.equal(got.length, bytes.length, `${url}: downloaded ${got.length} bytes, expected ${bytes.length}`);
  assert.ok(Buffer.from(got.buffer, got.byteOffset, got.length).equals(Buffer.from(bytes)), `${url}: downloaded bytes differ from the source`);
}
function describe(err) {
  return err?.stack || String(err);
}

const results = [];
async function scenario(name, fn) {
  net.reset();
  const t0 = performance.now();
  try {
    const note = await fn();
    await net.settle();
    const ms = performance.now() - t0;
    results.push({ name, ok: true });
    console.log(`ok   ${name} — ${(ms / 1000).toFixed(2)} s${note ? ` — ${note}` : ''}`);
  } catch (err) {
    await net.settle();
    const ms = performance.now() - t0;
    results.push({ name, ok: false });
    console.log(`FAIL ${name} — ${(ms / 1000).toFixed(2)} s`);
    console.log('  ' + describe(err).split('\n').join('\n  '));
    console.log('  requests: ' + net.log.map((e) => `${e.method} ${e.path} [${e.kind}] → ${e.status}`).join('\n            '));
  }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

const { uploadFile, spiltFile, handshake } = await import('./seed-client.js');
const { resumeUpload, uploadedBytes, fileIdOf } = await import('./offset-client.js');
const { uploadByRanges } = await import('./range-client.js');

const big = makeFile('holiday-video.mp4', 23 * MiB); // 5 pieces of 5 MiB, the last one 3 MiB
const t0 = performance.now();
console.log(`ferry seed clients against ${base} (node ${process.version}, spark-md5 ${require('spark-md5/package.json').version})`);

await scenario('1. spark-md5 client: full upload of 23 MiB (5 chunks) and download', async () => {
  const r = await uploadFile(big.file);
  assert.equal(r.instant, false);
  assert.equal(r.fileId, md5(big.bytes), 'spark-md5 whole-file digest');
  assert.equal(net.count((e) => e.kind === 'handshake'), 1);
  assert.equal(net.count((e) => e.kind === 'chunk'), 5, 'all 5 chunks sent');
  assert.equal(r.sent.length, 5);
  assert.match(r.url, new RegExp(`/upload/${r.fileId}\\.mp4$`));
  await assertDownloadsIdentical(r.url, big.bytes);
  return `${r.url}`;
});

await scenario('1b. spark-md5 client: 3-byte file', async () => {
  const small = makeFile('abc.txt', 3);
  const r = await uploadFile(small.file);
  assert.equal(r.instant, false);
  assert.equal(net.count((e) => e.kind === 'chunk'), 1);
  await assertDownloadsIdentical(r.url, small.bytes);
  // And the same 3 bytes again: instant.
  const again = await uploadFile(small.file);
  assert.equal(again.instant, true);
  assert.equal(again.url, r.url);
  return r.url;
});

await scenario('1c. spark-md5 client: 0-byte file', async () => {
  const empty = makeFile('empty.log', 0);
  const r = await uploadFile(empty.file);
  assert.equal(r.fileId, 'd41d8cd98f00b204e9800998ecf8427e');
  await assertDownloadsIdentical(r.url, empty.bytes);
  return `${r.instant ? 'instant' : `${net.count((e) => e.kind === 'chunk')} chunk request(s)`}, ${r.url}`;
});

await scenario('2. spark-md5 client: same file again is an instant upload', async () => {
  const r = await uploadFile(big.file);
  assert.equal(r.instant, true, 'handshake should answer with the URL');
  assert.equal(net.count((e) => e.kind === 'handshake'), 1);
  assert.equal(net.count((e) => e.kind === 'chunk'), 0, 'no chunk may be sent');
  assert.equal(net.log.length, 1, 'exactly one request (the handshake)');
  await assertDownloadsIdentical(r.url, big.bytes);
  return 'handshake only, 0 chunk requests';
});

await scenario('3. spark-md5 client: interrupted after 2 chunks, run again from scratch', async () => {
  const src = makeFile('backup.tar.gz', 23 * MiB);
  // Attempt 1: the network lets the first two chunk requests through, then fails.
  let allowed = 2;
  net.fault = (e) =>
    e.kind === 'chunk' && allowed-- <= 0 ? { reject: new TypeError('Failed to fetch') } : undefined;
  await assert.rejects(uploadFile(src.file), /Failed to fetch/);
  await net.settle();
  const delivered = net.log.filter((e) => e.kind === 'chunk' && e.status === 200).length;
  assert.equal(delivered, 2, 'two chunks reached the server');

  // What the server now says it is missing is exactly the other three.
  const { fileId, ext, chunks } = await spiltFile(src.file);
  const ids = chunks.map((c) => c.id);
  const missing = await handshake(fileId, ext, ids);
  assert.ok(Array.isArray(missing), `handshake should list missing chunks, got ${JSON.stringify(missing)}`);
  assert.deepEqual(missing, ids.slice(2), 'missing = chunks 2, 3, 4 in file order');

  // Attempt 2: the unchanged client, from scratch, sends only those.
  net.reset();
  const r = await uploadFile(src.file);
  assert.equal(r.instant, false);
  assert.equal(net.count((e) => e.kind === 'chunk'), 3, 'only the 3 missing chunks are sent');
  assert.deepEqual([...r.sent].sort(), ids.slice(2).sort());
  await assertDownloadsIdentical(r.url, src.bytes);
  return `resumed with ${r.sent.length} of 5 chunks`;
});

await scenario('4. byte-offset client (X-File-Id/X-Start-Byte): connection cut mid-body, then resume', async () => {
  const src = makeFile('scan.pdf', 23 * MiB);
  const fileId = fileIdOf(src.file);
  assert.equal(await uploadedBytes(fileId), 0, 'a new file id starts at 0');

  // Attempt 1: the connection dies after 9 MiB of the body have gone out.
  const cut = 9 * MiB;
  net.fault = (e, init) =>
    e.kind === 'append'
      ? {
          cutAfter: cut,
          onStalled: async (ctl) => {
            await sleep(300); // let the server take in what was sent
            ctl.abort(new TypeError('network connection lost'));
          },
        }
      : undefined;
  await assert.rejects(resumeUpload(src.file));
  await net.settle();
  net.fault = null;

  // Attempt 2, at once: the unchanged client asks for the status and sends the rest. Like
  // the front ends' automatic retry, a 409 (the server is still closing the broken request,
  // or its status answer was already stale) or a network error is retried after a short
  // backoff.
  net.reset();
  const refusals = [];
  let resumed;
  for (let attempt = 0; ; attempt++) {
    try {
      resumed = await resumeUpload(src.file);
      break;
    } catch (err) {
      // A network error is retried too: the connection the broken request left behind may
      // be reset under the next one, and front ends retry that like any network loss.
      if (attempt >= 5 || !/\b409\b|fetch failed/.test(err.message)) throw err;
      refusals.push(err.message.replace(/^upload failed: /, ''));
      await sleep(100 * 2 ** attempt);
    }
  }
  const { startByte, result } = resumed;
  assert.ok(startByte > 0 && startByte <= cut, `resumed at ${startByte}: the server should keep part of the ${cut} bytes sent`);
  assert.equal(result.complete, true, JSON.stringify(result));
  assert.ok(result.url, `answer carries the URL: ${JSON.stringify(result)}`);
  assert.equal(await uploadedBytes(fileId), src.file.size);
  await assertDownloadsIdentical(result.url, src.bytes);
  const held = startByte;
  const retried = refusals.length
    ? `; ${refusals.length} immediate retr${refusals.length > 1 ? 'ies' : 'y'} refused first (${refusals.map((m) => m.match(/"error":"(\w+)"/)?.[1] ?? m).join(', ')})`
    : '';
  return `cut after ${cut} bytes, server kept ${held}, resumed at ${startByte}${retried}`;
});

await scenario('4b. byte-offset client: a first slice on its own, then the unchanged client resumes', async () => {
  const src = makeFile('notes.txt', 7 * MiB + 123);
  const fileId = fileIdOf(src.file);
  const first = 3 * MiB + 7;
  const resp = await fetch('/api/upload', {
    method: 'POST',
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': '0', 'X-File-Size': String(src.file.size), 'Content-Type': 'application/octet-stream' },
    body: src.file.slice(0, first),
  });
  assert.equal(resp.status, 200, await resp.clone().text());
  const partial = await resp.json();
  assert.equal(partial.complete, false);
  assert.equal(partial.url ?? null, null);
  assert.equal(await uploadedBytes(fileId), first);
  // A stale offset is refused with 409 and the held count, and changes nothing (SPEC §2.2).
  const stale = await fetch('/api/upload', {
    method: 'POST',
    headers: { 'X-File-Id': fileId, 'X-Start-Byte': '0', 'X-File-Size': String(src.file.size), 'Content-Type': 'application/octet-stream' },
    body: src.file.slice(0, 1000),
  });
  assert.equal(stale.status, 409, 'X-Start-Byte below the held count');
  assert.equal((await stale.json()).offset, first, '409 answer carries the held count');
  assert.equal(await uploadedBytes(fileId), first);
  const { startByte, result } = await resumeUpload(src.file);
  assert.equal(startByte, first);
  assert.ok(result.url, JSON.stringify(result));
  await assertDownloadsIdentical(result.url, src.bytes);
  return `resumed at ${startByte}`;
});

await scenario('5. Content-Range client: 1 MiB pieces, 3 at a time, out of order', async () => {
  const src = makeFile('dataset.csv', 10 * MiB + 4321); // 11 pieces, the last one short

  // Article 000's code as printed sends no X-File-Id: ferry must refuse that clearly.
  const bare = await nodeFetch(new URL('/upload', base), {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', 'Content-Range': `bytes 0-9/${src.file.size}` },
    body: src.file.slice(0, 10),
  });
  assert.equal(bare.status, 400, 'Content-Range without X-File-Id');
  assert.match(await bare.text(), /X-File-Id/);

  // Hold back every third piece so they reach the server after the ones behind them.
  const arrivals = [];
  const nodeFetchForward = globalThis.fetch;
  globalThis.fetch = async (input, init = {}) => {
    const range = new Headers(init.headers).get('content-range');
    if (range) {
      const first = +/bytes (\d+)-/.exec(range)[1];
      if ((first / MiB) % 3 === 0) await sleep(80);
      arrivals.push(first / MiB);
    }
    return nodeFetchForward(input, init);
  };
  let r;
  try {
    r = await uploadByRanges(src.file, { concurrency: 3 });
  } finally {
    globalThis.fetch = nodeFetchForward;
  }
  assert.equal(net.count((e) => e.kind === 'range'), 11);
  assert.notDeepEqual(arrivals, [...arrivals].sort((a, b) => a - b), 'pieces were sent out of order');
  const last = r.answers.find((a) => a.url);
  assert.equal(last.complete, true);
  assert.deepEqual(last.missing, []);
  assert.ok(r.answers.some((a) => !a.complete && a.missing.length > 0), 'earlier answers list missing ranges');
  await assertDownloadsIdentical(r.url, src.bytes);
  return `send order ${arrivals.join(',')}`;
});

const failed = results.filter((r) => !r.ok);
console.log(
  `${results.length - failed.length}/${results.length} scenarios passed in ${((performance.now() - t0) / 1000).toFixed(2)} s`,
);
process.exit(failed.length ? 1 : 0);
