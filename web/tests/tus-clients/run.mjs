// Runs the unmodified tus-js-client (4.x, Node build) against a running ferry server's
// tus endpoint (`/files/`, SPEC §2.3) and its IETF resumable-upload dialect (§2.4).
//
//   node run.mjs http://127.0.0.1:8080        (or FERRY_URL=... node run.mjs)
//   node run.mjs http://127.0.0.1:8080 resume ietf-05   (only the scenarios whose name
//                                                        contains one of the words)
//
// Every scenario prints one line with its time; a failing one prints why and the last HTTP
// exchanges tus-js-client made; the run ends with "N passed, N failed" and exits non-zero
// if any failed. The client is used exactly as an application would use it: the only hooks
// are its public callbacks (onProgress, onChunkComplete, onBeforeRequest, onAfterResponse).

import assert from 'node:assert/strict';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tus from 'tus-js-client';

const { Upload, FileUrlStorage } = tus;

const base = (process.argv[2] || process.env.FERRY_URL || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node run.mjs http://127.0.0.1:PORT [scenario-filter…]   (or set FERRY_URL)');
  process.exit(2);
}
const filters = process.argv.slice(3);
const endpoint = `${base}/files/`;
const MiB = 1024 * 1024;
const SCENARIO_TIMEOUT_MS = Number(process.env.TUS_SCENARIO_TIMEOUT_MS || 90_000);

const work = mkdtempSync(join(tmpdir(), 'ferry-tus-js-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));

// ---------------------------------------------------------------------------------------
// Helpers

const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');

/** A file of `size` random bytes in the work dir: { path, bytes, sha } */
function randomFile(name, size) {
  const bytes = Buffer.allocUnsafe(size);
  // randomFillSync refuses more than 2^31-1 bytes at once; our files are far smaller.
  randomFillSync(bytes);
  const path = join(work, name);
  writeFileSync(path, bytes);
  return { path, bytes, sha: sha256(bytes) };
}

/** GET url and return { status, length, sha } of the body. */
async function fetchDigest(url) {
  const res = await fetch(url);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, length: body.length, sha: sha256(body) };
}

async function assertServerHolds(url, file, what) {
  const got = await fetchDigest(url);
  assert.equal(got.status, 200, `${what}: GET ${url} → ${got.status}, expected 200`);
  assert.equal(got.length, file.bytes.length, `${what}: GET ${url} returned ${got.length} bytes, source has ${file.bytes.length}`);
  assert.equal(got.sha, file.sha, `${what}: GET ${url}: sha256 differs from the source`);
}

/** HEAD url the tus way; returns { status, offset, length, headers }. */
async function tusHead(url, extraHeaders = {}) {
  const res = await fetch(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0', ...extraHeaders } });
  const num = (h) => (res.headers.has(h) ? Number(res.headers.get(h)) : null);
  return { status: res.status, offset: num('upload-offset'), length: num('upload-length'), headers: res.headers };
}

/** Keeps the last HTTP exchanges of one scenario, for the failure report. */
class Trace {
  constructor() {
    this.lines = [];
  }
  hooks() {
    return {
      onBeforeRequest: (req) => {
        const h = req.getHeader('Upload-Offset');
        this.push(`→ ${req.getMethod()} ${req.getURL()}${h != null ? ` Upload-Offset: ${h}` : ''}`);
      },
      onAfterResponse: (req, res) => {
        const pick = ['Upload-Offset', 'Upload-Length', 'Upload-Complete', 'Location', 'Tus-Resumable']
          .map((n) => [n, res.getHeader(n)])
          .filter(([, v]) => v != null)
          .map(([n, v]) => `${n}: ${v}`)
          .join(', ');
        const body = (res.getBody() || '').slice(0, 200).replace(/\s+/g, ' ');
        this.push(`← ${res.getStatus()} for ${req.getMethod()} ${req.getURL()}${pick ? ` (${pick})` : ''}${body ? ` body: ${body}` : ''}`);
      },
    };
  }
  push(line) {
    this.lines.push(line);
    if (this.lines.length > 40) this.lines.shift();
  }
}

/**
 * Starts `new Upload(file, options)` and resolves with the upload on success, rejects on
 * error. `control(upload)` is called right after construction so a scenario can keep a
 * handle (e.g. to abort from a callback). If the upload is aborted, the promise resolves
 * with { aborted: true } once `abortPromise` (set by the scenario) settles.
 */
function runUpload(file, options, control) {
  return new Promise((resolve, reject) => {
    const upload = new Upload(file, {
      ...options,
      onSuccess: () => resolve(upload),
      onError: (err) => reject(err),
    });
    upload.settle = resolve; // lets a scenario resolve after abort()
    if (control) control(upload);
    upload.start();
  });
}

const commonOptions = (trace) => ({
  endpoint,
  // A few fast retries: enough to ride over a 423/409 right after an aborted PATCH, short
  // enough that a real failure surfaces in seconds.
  retryDelays: [0, 300, 1000, 2000],
  ...trace.hooks(),
});

// ---------------------------------------------------------------------------------------
// Scenarios

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('a. resume: 64 MiB, 8 MiB chunks, abort at ~40 %, findPreviousUploads + resumeFromPreviousUpload', async (trace) => {
  const file = randomFile('a-64MiB.bin', 64 * MiB);
  const urlStorage = new FileUrlStorage(join(work, 'tus-url-storage.json'));
  const opts = { ...commonOptions(trace), chunkSize: 8 * MiB, urlStorage, metadata: { filename: 'a-64MiB.bin', filetype: 'application/octet-stream' } };

  // First attempt: abort at about 40 %, in the middle of the PATCH that carries the 40 %
  // mark (bytes 24–32 MiB), so the server sees a request cut mid-body. tus-js-client reports
  // progress at most every 100 ms per request, but always once right after a request's first
  // body bytes go out: that report is where we pull the plug.
  const cutChunkStart = Math.floor((0.4 * file.bytes.length) / opts.chunkSize) * opts.chunkSize;
  let acked = 0; // highest offset the server acknowledged with a 2xx before the abort
  let sentAtAbort = 0;
  let handle;
  const first = await runUpload(createReadStream(file.path), {
    ...opts,
    onChunkComplete: (_size, accepted) => {
      acked = accepted;
    },
    onProgress: (sent) => {
      if (sentAtAbort === 0 && sent > cutChunkStart) {
        sentAtAbort = sent;
        handle.abort().then(() => handle.settle({ aborted: true }));
      }
    },
  }, (u) => { handle = u; });
  assert.deepEqual(first, { aborted: true }, 'the first attempt finished before it could be aborted');
  const url = handle.url;
  assert.ok(url, 'the first attempt never got an upload URL');
  assert.ok(acked > 0 && acked < file.bytes.length, `expected some acknowledged chunks before the abort, got offset ${acked}`);

  // The server must still answer for the upload and hold at least every acknowledged byte.
  // (Right after a cut PATCH the server may take a moment to notice; allow a short wait
  // on 423.)
  let head;
  for (let i = 0; i < 50; i++) {
    head = await tusHead(url);
    if (head.status !== 423) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(head.status === 200 || head.status === 204, `HEAD ${url} after abort → ${head.status}`);
  assert.equal(head.length, file.bytes.length, 'HEAD Upload-Length after abort');
  assert.ok(head.offset >= acked, `HEAD Upload-Offset ${head.offset} < ${acked} bytes the server had acknowledged (durability)`);
  assert.ok(head.offset < file.bytes.length, `HEAD Upload-Offset ${head.offset}: the aborted upload is already complete?`);
  assert.match(head.headers.get('cache-control') || '', /\bno-store\b/, 'HEAD Cache-Control must contain no-store');

  // Second attempt: a new Upload for the same file finds the stored URL and resumes.
  const second = new Upload(createReadStream(file.path), { ...opts });
  const previous = await second.findPreviousUploads();
  assert.equal(previous.length, 1, `findPreviousUploads() found ${previous.length} uploads, expected 1`);
  assert.equal(previous[0].uploadUrl, url, 'findPreviousUploads() returned a different URL');
  let firstProgress = null;
  await new Promise((resolve, reject) => {
    second.options.onProgress = (sent) => {
      if (firstProgress === null) firstProgress = sent;
    };
    second.options.onSuccess = resolve;
    second.options.onError = reject;
    second.resumeFromPreviousUpload(previous[0]);
    second.start();
  });
  assert.equal(second.url, url, 'the resumed upload used a different URL (it was re-created)');
  assert.equal(firstProgress, head.offset, `the resume started at ${firstProgress}, the server held ${head.offset}`);
  assert.ok(firstProgress > 0, 'the resume restarted from 0');
  await assertServerHolds(url, file, 'resumed upload');
  return `aborted mid-PATCH at ${(sentAtAbort / MiB).toFixed(2)} MiB sent (${Math.round((100 * sentAtAbort) / file.bytes.length)} %), ${acked / MiB} MiB acknowledged; server held ${(head.offset / MiB).toFixed(2)} MiB and the resume started there`;
});

scenario('b. parallelUploads: 4 (concatenation), 32 MiB', async (trace) => {
  const file = randomFile('b-32MiB.bin', 32 * MiB);
  const partUrls = new Set();
  const t = trace.hooks();
  const upload = await runUpload(createReadStream(file.path), {
    ...commonOptions(trace),
    parallelUploads: 4,
    chunkSize: 4 * MiB,
    onAfterResponse: (req, res) => {
      t.onAfterResponse(req, res);
      if (req.getMethod() === 'POST' && String(req.getHeader('Upload-Concat')).startsWith('partial')) {
        partUrls.add(res.getHeader('Location'));
      }
    },
  });
  assert.equal(partUrls.size, 4, `expected 4 partial uploads, saw ${partUrls.size}`);
  const head = await tusHead(upload.url);
  assert.ok(head.status === 200 || head.status === 204, `HEAD final ${upload.url} → ${head.status}`);
  assert.ok(/^final;/.test(head.headers.get('upload-concat') || ''), `HEAD of the final upload: Upload-Concat is ${head.headers.get('upload-concat')}`);
  assert.equal(head.offset, file.bytes.length, 'HEAD Upload-Offset of the final upload');
  await assertServerHolds(upload.url, file, 'final (concatenated) upload');
  return `4 partial uploads concatenated into ${upload.url.replace(base, '')}`;
});

scenario('c1. uploadDataDuringCreation: true, 1 MiB in the POST', async (trace) => {
  const file = randomFile('c1-1MiB.bin', 1 * MiB);
  let patches = 0;
  const t = trace.hooks();
  const upload = await runUpload(file.bytes, {
    ...commonOptions(trace),
    uploadDataDuringCreation: true,
    onBeforeRequest: (req) => {
      t.onBeforeRequest(req);
      if (req.getMethod() === 'PATCH') patches++;
    },
  });
  assert.equal(patches, 0, `the whole file should have gone in the POST, but ${patches} PATCH requests followed`);
  await assertServerHolds(upload.url, file, 'creation-with-upload');
  return 'one POST carried every byte';
});

scenario('c2. uploadDataDuringCreation: true with chunkSize 256 KiB (POST + PATCHes)', async (trace) => {
  const file = randomFile('c2-1MiB.bin', 1 * MiB + 123);
  let patches = 0;
  const t = trace.hooks();
  const upload = await runUpload(file.bytes, {
    ...commonOptions(trace),
    uploadDataDuringCreation: true,
    chunkSize: 256 * 1024,
    onBeforeRequest: (req) => {
      t.onBeforeRequest(req);
      if (req.getMethod() === 'PATCH') patches++;
    },
  });
  assert.equal(patches, 4, `expected 4 PATCHes after the POST's first 256 KiB, saw ${patches}`);
  await assertServerHolds(upload.url, file, 'creation-with-upload + PATCH');
  return 'POST carried the first chunk, 4 PATCHes the rest';
});

/** Starts a 32 MiB upload in 4 MiB chunks and aborts it from onChunkComplete after 2 chunks. */
async function startThenAbort(trace, name, terminate) {
  const file = randomFile(name, 32 * MiB);
  let handle;
  let aborting = null;
  const result = await runUpload(file.bytes, {
    ...commonOptions(trace),
    chunkSize: 4 * MiB,
    onProgress: (sent) => {
      // Abort while the third PATCH is in flight, so the server sees a cut request too.
      if (aborting === null && sent > 9 * MiB) {
        aborting = handle.abort(terminate).then(
          () => handle.settle({ aborted: true }),
          (err) => handle.settle({ aborted: true, err }),
        );
      }
    },
  }, (u) => { handle = u; });
  assert.ok(result.aborted, 'the upload finished before it could be aborted');
  return { url: handle.url, result };
}

async function assertGone(url) {
  const head = await tusHead(url);
  assert.equal(head.status, 404, `HEAD ${url} with Tus-Resumable after termination → ${head.status}, expected 404`);
  assert.equal(head.headers.get('tus-resumable'), '1.0.0', 'Tus-Resumable on the 404');
  const get = await fetch(url);
  assert.equal(get.status, 404, `GET ${url} after termination → ${get.status}, expected 404`);
}

scenario('d1. terminate: upload.abort(true) during an upload → 404', async (trace) => {
  const { url, result } = await startThenAbort(trace, 'd1-32MiB.bin', true);
  assert.ok(url, 'no upload URL before the abort');
  assert.equal(result.err, undefined, `abort(true) failed: ${result.err}`);
  await assertGone(url);
  return 'DELETE answered 204 (tus-js-client requires it); HEAD and GET are 404';
});

scenario('d2. terminate: abort() then Upload.terminate(url) → 404', async (trace) => {
  const { url, result } = await startThenAbort(trace, 'd2-32MiB.bin', false);
  assert.ok(url, 'no upload URL before the abort');
  assert.equal(result.err, undefined);
  await Upload.terminate(url, { retryDelays: [0, 300, 1000, 2000], ...trace.hooks() });
  await assertGone(url);
  return 'Upload.terminate(url) got 204; HEAD and GET are 404';
});

// tus-js-client 4.x knows three protocols (lib/upload.js): 'tus-v1' (default),
// 'ietf-draft-03' (sends Upload-Draft-Interop-Version: 5, no Content-Type on appends) and
// 'ietf-draft-05' (Upload-Draft-Interop-Version: 6, Content-Type: application/partial-upload).
for (const protocol of ['ietf-draft-03', 'ietf-draft-05']) {
  scenario(`e. protocol: '${protocol}', 8 MiB in 2 MiB chunks, paused after 2 chunks and resumed by URL`, async (trace) => {
    const file = randomFile(`e-${protocol}.bin`, 8 * MiB);
    let handle;
    let firstInterop = null;
    const t = trace.hooks();
    const opts = {
      ...commonOptions(trace),
      protocol,
      chunkSize: 2 * MiB,
      onBeforeRequest: (req) => {
        t.onBeforeRequest(req);
        firstInterop ??= req.getHeader('Upload-Draft-Interop-Version');
        assert.equal(req.getHeader('Tus-Resumable'), undefined, 'an IETF request carried Tus-Resumable');
      },
    };
    const paused = await runUpload(file.bytes, {
      ...opts,
      onChunkComplete: (_size, accepted) => {
        // Aborting here stops before the next PATCH is sent: a clean pause at 4 MiB.
        if (accepted === 4 * MiB) handle.abort().then(() => handle.settle({ aborted: true }));
      },
    }, (u) => { handle = u; });
    assert.deepEqual(paused, { aborted: true }, 'the upload finished before the pause');
    const url = handle.url;

    // Offset retrieval in the same dialect the client speaks.
    const head = await fetch(url, { method: 'HEAD', headers: { 'Upload-Draft-Interop-Version': firstInterop } });
    assert.ok(head.status === 200 || head.status === 204, `IETF HEAD ${url} → ${head.status}`);
    assert.equal(head.headers.get('upload-offset'), String(4 * MiB), 'IETF HEAD Upload-Offset');
    const complete = head.headers.get('upload-complete') ?? head.headers.get('upload-incomplete');
    assert.ok(complete === '?0' || complete === '?1', `IETF HEAD: no Upload-Complete/Upload-Incomplete (got ${complete})`);

    let firstProgress = null;
    const resumed = await runUpload(file.bytes, {
      ...opts,
      endpoint: null,
      uploadUrl: url,
      onProgress: (sent) => {
        firstProgress ??= sent;
      },
    });
    assert.equal(resumed.url, url);
    assert.equal(firstProgress, 4 * MiB, `resumed from ${firstProgress}, expected ${4 * MiB}`);
    await assertServerHolds(url, file, `${protocol} upload`);
    return `Upload-Draft-Interop-Version: ${firstInterop}; paused at 4 MiB, resumed, bytes identical`;
  });
}

// ---------------------------------------------------------------------------------------
// Runner

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Make sure the server answers before spending time on random files.
try {
  const res = await fetch(endpoint, { method: 'OPTIONS', headers: { 'Tus-Resumable': '1.0.0' } });
  const version = res.headers.get('tus-version');
  const exts = res.headers.get('tus-extension');
  console.log(`tus-js-client ${tusVersion()} → ${endpoint}: OPTIONS ${res.status}, Tus-Version: ${version}, Tus-Extension: ${exts}`);
} catch (err) {
  console.error(`cannot reach ${endpoint}: ${err.message}`);
  process.exit(1);
}

let passed = 0;
let failed = 0;
for (const { name, fn } of scenarios) {
  if (filters.length && !filters.some((f) => name.includes(f))) continue;
  const trace = new Trace();
  const t0 = performance.now();
  try {
    const detail = await withTimeout(fn(trace), SCENARIO_TIMEOUT_MS, name);
    const ms = Math.round(performance.now() - t0);
    console.log(`PASS ${name} (${ms} ms)${detail ? ` — ${detail}` : ''}`);
    passed++;
  } catch (err) {
    const ms = Math.round(performance.now() - t0);
    console.log(`FAIL ${name} (${ms} ms)\n     ${String(err && err.message ? err.message : err).split('\n').join('\n     ')}`);
    if (trace.lines.length) console.log(`     last HTTP exchanges:\n       ${trace.lines.slice(-12).join('\n       ')}`);
    failed++;
  }
}
console.log(`tus-js-client: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);

function tusVersion() {
  try {
    const pkg = new URL('./node_modules/tus-js-client/package.json', import.meta.url);
    return JSON.parse(readFileSync(pkg, 'utf8')).version;
  } catch {
    return '4.x';
  }
}
