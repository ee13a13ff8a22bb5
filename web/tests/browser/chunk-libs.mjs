// resumable.js, flow.js and simple-uploader.js — unmodified, from node_modules — against
// ferry's /api/resumable in Chromium: the scenarios run.mjs registers after its own
// (`(await import('./chunk-libs.mjs')).register(scenario)`), and the test page that
// bench.mjs uses too.
//
// The page (PAGE_PATH, routes from pageRoutes()) loads the three libraries and tus-js-client
// from their dist files plus a small harness (window.harness): setup(kind, options) makes an
// instance of one library with the given options (each library's default field names, only
// `target` and the chunking set), hooks its events (fileSuccess / fileError / fileRetry;
// simple-uploader's fileComplete) into window.h, and adds the file picked in `#pick` and
// starts it — the way an application wires these libraries. Where a scenario must catch an
// upload mid-way or count its requests from the server's side, the page is served by lib.mjs's
// proxy (same origin as the endpoint, request bodies throttled); elsewhere it is a static
// page on another origin talking to ferry directly (CORS).

import assert from 'node:assert/strict';
import { join } from 'node:path';
import { HERE, MiB, fetchDigest, randomFixture, request, sleep, until, workDir } from './lib.mjs';

const NM = join(HERE, 'node_modules');
export const PAGE_PATH = '/chunk-libs.html';
const SCRIPTS = {
  '/libs/resumable.js': join(NM, 'resumablejs/resumable.js'),
  '/libs/flow.js': join(NM, '@flowjs/flow.js/dist/flow.js'),
  '/libs/uploader.js': join(NM, 'simple-uploader.js/dist/uploader.js'),
  '/libs/tus.js': join(NM, 'tus-js-client/dist/tus.min.js'),
};

export const LIB_NAMES = { resumable: 'resumable.js', flow: 'flow.js', simple: 'simple-uploader.js' };

// ---------------------------------------------------------------------------------------
// The page

/** Runs in the page (stringified): window.harness and window.h. */
function harness() {
  const ctors = { resumable: () => window.Resumable, flow: () => window.Flow, simple: () => window.Uploader };
  const text = (m) => (typeof m === 'string' ? m : m == null ? '' : JSON.stringify(m));
  window.h = null;
  window.harness = {
    /** A fresh instance of `kind` with `options`; the next file picked in #pick is added to it and started. */
    setup(kind, options) {
      const opts = { ...options };
      // simple-uploader's single-check mode: the answer about the first chunk says which
      // chunks the server holds (a function cannot cross page.evaluate, so it is made here).
      if (opts.checkChunkUploadedByResponse === 'uploaded-list') {
        opts.checkChunkUploadedByResponse = (chunk, message) => JSON.parse(message).uploaded.includes(chunk.offset + 1);
      }
      const inst = new (ctors[kind]())(opts);
      const st = { kind, inst, t0: 0, success: null, error: null, complete: false, retries: 0, added: 0 };
      window.h = st;
      const done = (file, message) => {
        st.success = { message: text(message), identifier: file.uniqueIdentifier, chunks: file.chunks.length, ms: performance.now() - st.t0 };
      };
      const fail = (file, message) => {
        st.error = { message: text(message), identifier: file && file.uniqueIdentifier, ms: performance.now() - st.t0 };
      };
      if (kind === 'resumable') {
        inst.on('fileAdded', () => inst.upload());
        inst.on('fileSuccess', (file, message) => done(file, message));
        inst.on('fileError', (file, message) => fail(file, message));
      } else if (kind === 'flow') {
        inst.on('filesSubmitted', () => inst.upload());
        inst.on('fileSuccess', (file, message) => done(file, message));
        inst.on('fileError', (file, message) => fail(file, message));
      } else {
        inst.on('filesSubmitted', () => inst.upload());
        inst.on('fileSuccess', (_root, file, message) => done(file, message));
        inst.on('fileComplete', () => (st.complete = true));
        inst.on('fileError', (_root, file, message) => fail(file, message));
      }
      inst.on('fileRetry', () => st.retries++);
      return true;
    },
    /** Adds `file` to the current instance (which starts it). */
    add(file) {
      const st = window.h;
      st.t0 = performance.now();
      st.added++;
      st.inst.addFile(file);
    },
    /** The current file's chunks as the library sees them. */
    info() {
      const st = window.h;
      const file = st && st.inst.files[0];
      const chunks = (file && file.chunks) || [];
      const succeeded = [];
      chunks.forEach((c, i) => c.status() === 'success' && succeeded.push(i + 1));
      return {
        identifier: file ? file.uniqueIdentifier : null,
        chunks: chunks.length,
        succeeded,
        success: st ? st.success : null,
        error: st ? st.error : null,
        complete: st ? st.complete : false,
        retries: st ? st.retries : 0,
      };
    },
    /** A random file of `size` bytes built in the page (window.testFile). */
    makeFile(name, size) {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
      window.testFile = new File([bytes], name, { type: 'application/octet-stream', lastModified: Date.now() });
      return { name, size };
    },
    /** Adds window.testFile to the current instance. */
    addTestFile() {
      window.harness.add(window.testFile);
    },
    /**
     * A request by hand with fetch(): GET with `fields` as the query, or a multipart POST with
     * `fields` then (when `range` is given) the bytes range[0]..range[1] of window.testFile as
     * the part `file`. Resolves to { status, text }.
     */
    async send(method, url, fields, range) {
      let res;
      if (method === 'GET') {
        res = await fetch(`${url}?${new URLSearchParams(fields)}`);
      } else {
        const form = new FormData();
        for (const [k, v] of Object.entries(fields)) form.append(k, String(v));
        if (range) form.append('file', window.testFile.slice(range[0], range[1]), window.testFile.name);
        res = await fetch(url, { method: 'POST', body: form });
      }
      return { status: res.status, text: await res.text() };
    },
    /** tus-js-client: the file in #pick to `endpoint` in `chunkSize` requests. */
    tus(endpoint, chunkSize) {
      const file = document.getElementById('pick').files[0];
      return new Promise((resolve, reject) => {
        const t0 = performance.now();
        const up = new window.tus.Upload(file, {
          endpoint,
          chunkSize,
          retryDelays: [0, 1000],
          storeFingerprintForResuming: false,
          metadata: { filename: file.name },
          onError: (e) => reject(new Error(String(e))),
          onSuccess: () => resolve({ url: up.url, ms: performance.now() - t0 }),
        });
        up.start();
      });
    },
  };
  document.getElementById('pick').addEventListener('change', (e) => {
    const file = e.target.files[0];
    if (file && window.h && window.h.inst) window.harness.add(file);
  });
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>resumable.js, flow.js, simple-uploader.js → ferry</title>
<p>Chunk libraries test page</p>
<input type="file" id="pick">
${Object.keys(SCRIPTS).map((p) => `<script src="${p}"></script>`).join('\n')}
<script src="/harness.js"></script>
`;

/** Routes (for startProxy / startStatic) serving the test page, the libraries and the harness. */
export function pageRoutes() {
  const routes = {
    [PAGE_PATH]: { type: 'text/html; charset=utf-8', body: PAGE },
    '/harness.js': { type: 'text/javascript; charset=utf-8', body: `(${harness.toString()})();\n` },
  };
  for (const [path, file] of Object.entries(SCRIPTS)) routes[path] = { type: 'text/javascript; charset=utf-8', file };
  return routes;
}

/** Loads the test page in `page` and waits for the libraries and the harness. */
export async function openPage(page, origin) {
  const res = await page.goto(`${origin}${PAGE_PATH}`);
  assert.equal(res.status(), 200, `GET ${origin}${PAGE_PATH} → ${res.status()}`);
  await page.waitForFunction(() => window.harness && window.Resumable && window.Flow && window.Uploader && window.tus, null, { timeout: 10_000 });
}

/** setup(kind, options) in the page, then the file at `path` through #pick (which starts it). */
export async function startUpload(page, kind, options, path) {
  await page.evaluate(({ kind, options }) => window.harness.setup(kind, options), { kind, options });
  await page.setInputFiles('#pick', path);
}

/** Waits for fileSuccess or fileError; returns info(). */
export async function waitEnd(page, timeout = 90_000) {
  return until(
    () => page.evaluate(() => window.harness.info()),
    (i) => i.success || i.error,
    { timeout, interval: 50, what: (i) => `fileSuccess or fileError (now ${i.succeeded.length}/${i.chunks} chunks done, ${i.retries} retries)` },
  );
}

/** Counts the page's own requests to /api/resumable (Chromium's view): { GET, POST }. */
export function countRequests(page, path = '/api/resumable') {
  const counts = { GET: 0, POST: 0, PATCH: 0, HEAD: 0, other: 0 };
  page.on('request', (r) => {
    if (new URL(r.url()).pathname !== path && !(path.endsWith('/') && new URL(r.url()).pathname.startsWith(path))) return;
    const m = r.method();
    if (m in counts) counts[m]++;
    else counts.other++;
  });
  return counts;
}

// ---------------------------------------------------------------------------------------
// The protocol from Node (the same fields the libraries send)

/** Each library's default field name for `Key` (ChunkNumber, TotalSize, Filename, …). */
const FIELD = {
  resumable: (k) => `resumable${k}`,
  flow: (k) => `flow${k}`,
  simple: (k) => k[0].toLowerCase() + k.slice(1),
};

/** The libraries' chunking: how many chunks, and chunk n's byte range [start, end). */
export function geometry(size, chunkSize, force = false) {
  const total = Math.max((force ? Math.ceil : Math.floor)(size / chunkSize), 1);
  const span = (n) => {
    const start = (n - 1) * chunkSize;
    let end = Math.min(size, n * chunkSize);
    if (!force && size - end < chunkSize) end = size;
    return [start, end];
  };
  return { total, span };
}

/** The fields of chunk `number` of a file, named as library `kind` names them. */
export function fields(kind, { number, chunkSize, size, identifier, filename, force = false, ...overrides }) {
  const geo = geometry(size, chunkSize, force);
  const [start, end] = geo.span(number);
  const f = FIELD[kind];
  const out = {
    [f('ChunkNumber')]: number,
    [f('ChunkSize')]: chunkSize,
    [f('CurrentChunkSize')]: Math.max(0, end - start),
    [f('TotalSize')]: size,
    [f('Identifier')]: identifier,
    [f('Filename')]: filename,
    [f('RelativePath')]: filename,
    [f('TotalChunks')]: geo.total,
  };
  for (const [k, v] of Object.entries(overrides)) out[f(k[0].toUpperCase() + k.slice(1))] = v;
  return out;
}

/** A test GET from Node: { status, json } (json null for a 204). */
export async function testGet(base, kind, file) {
  const res = await request(`${base}/api/resumable?${new URLSearchParams(fields(kind, file))}`);
  const text = await res.text();
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      throw new Error(`test GET → ${res.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
  }
  return { status: res.status, json };
}

/** The chunks ferry holds for a file, per a test GET about chunk 1 (which lists them all). */
async function heldChunks(base, kind, file) {
  const r = await testGet(base, kind, { ...file, number: 1 });
  if (r.status === 204) return [];
  assert.equal(r.status, 200, `test GET of chunk 1 → ${r.status}`);
  assert.ok(Array.isArray(r.json?.uploaded), `test GET of chunk 1: no "uploaded" list in ${JSON.stringify(r.json)}`);
  return r.json.uploaded;
}

/**
 * The finished file's URL: from the fileSuccess message (the response to the chunk that
 * completed the file, as the library saw it), else from a test GET (a complete file answers
 * 200 with `url`). Returns { url, from }.
 */
export async function finishedUrl(base, kind, file, message) {
  let url = null;
  try {
    url = JSON.parse(message).url || null;
  } catch {
    // not JSON: reported through the test GET below
  }
  if (url) return { url, from: 'the fileSuccess message' };
  const r = await testGet(base, kind, { ...file, number: 1 });
  assert.equal(r.status, 200, `the file is done per the library, but a test GET of chunk 1 → ${r.status}`);
  assert.equal(r.json?.skipUpload, true, `the file is done per the library, but the test GET says skipUpload ${r.json?.skipUpload}`);
  assert.ok(r.json?.url, `a test GET of the complete file carries no url: ${JSON.stringify(r.json)}`);
  return { url: r.json.url, from: `a test GET (the fileSuccess message had no url: ${String(message).slice(0, 120)})` };
}

async function assertUrlHolds(url, fixture) {
  assert.ok(/^\/files\/[^/]+/.test(new URL(url).pathname), `the file's url ${url} is not a /files/<id> URL`);
  const got = await fetchDigest(url);
  assert.equal(got.status, 200, `GET ${url} → ${got.status}`);
  assert.equal(got.length, fixture.size, `GET ${url}: ${got.length} bytes, the source has ${fixture.size}`);
  assert.equal(got.sha, fixture.sha, `GET ${url}: sha256 differs from the source's`);
}

// ---------------------------------------------------------------------------------------
// Helpers

const fmt = (n) => `${(n / MiB).toFixed(1)} MiB`;

let WORK = null;
const FIX = {};
/** Fixtures of this file's own, written on first use. */
async function fixture(key) {
  const specs = {
    // Not a multiple of the chunk size, so the two last-chunk rules differ: 64 chunks, the
    // last 1 MiB + 54321 bytes (forceChunkSize false), or 65 chunks, the last 54321 bytes.
    big: ['cl-64MiB-odd.bin', 64 * MiB + 54321],
    twice: ['cl-twice.bin', 8 * MiB + 777],
  };
  if (!FIX[key]) {
    WORK ||= workDir('ferry-chunk-libs-');
    FIX[key] = await randomFixture(WORK, ...specs[key]);
  }
  return FIX[key];
}

const CHUNK = MiB;
const SIMULTANEOUS = 3;
const SINGLE_CHECK = { checkChunkUploadedByResponse: 'uploaded-list' };

// ---------------------------------------------------------------------------------------
// 1. 64 MiB, interrupted past 40 %, finished by the same library

/**
 * `kind` uploads the big fixture through the proxy (16 MiB/s), is interrupted once 40 % of its
 * chunks succeeded — `reload` (the page is reloaded, the same File picked again in a fresh
 * instance) or `offline` (3 s of context.setOffline, the same instance carries on) — and
 * finishes. Checks bytes, what the server held at the cut, the chunk POSTs after it and the
 * request body bytes in all (< 1.3× the size).
 */
async function interrupted(t, kind, { interrupt, options = {} }) {
  const f = await fixture('big');
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB, routes: pageRoutes() });
  const ctx = await t.context();
  const page = await ctx.newPage();
  await openPage(page, proxy.url);
  const opts = { target: `${proxy.url}/api/resumable`, chunkSize: CHUNK, simultaneousUploads: SIMULTANEOUS, ...options };
  const force = !!opts.forceChunkSize;
  const geo = geometry(f.size, CHUNK, force);
  const info = () => page.evaluate(() => window.harness.info());

  await startUpload(page, kind, opts, f.path);
  const mid = await until(info, (i) => i.error || i.success || (i.chunks && i.succeeded.length >= 0.4 * i.chunks), {
    timeout: 60_000,
    interval: 50,
    what: (i) => `40 % of the chunks to succeed (now ${i.succeeded.length}/${i.chunks})`,
  });
  assert.ok(!mid.error, `fileError before 40 %: ${mid.error?.message}`);
  assert.ok(!mid.success, 'the upload finished before the test could interrupt it (the throttle is too loose)');
  assert.equal(mid.chunks, geo.total, `${LIB_NAMES[kind]} cut the file into ${mid.chunks} chunks, expected ${geo.total} (forceChunkSize ${force})`);
  const file = { chunkSize: CHUNK, size: f.size, identifier: mid.identifier, filename: f.name, force };

  const cutAt = performance.now();
  let held;
  let duringOffline = null;
  if (interrupt === 'reload') {
    await page.reload();
    await page.waitForFunction(() => window.harness, null, { timeout: 10_000 });
    held = await heldChunks(ferry.url, kind, file);
  } else {
    await ctx.setOffline(true);
    held = await heldChunks(ferry.url, kind, file);
    await sleep(3000);
    duringOffline = await info();
    assert.ok(!duringOffline.success && !duringOffline.error, `while offline: ${JSON.stringify({ success: duringOffline.success, error: duringOffline.error })}`);
    await ctx.setOffline(false);
  }
  t.note(`${interrupt} with ${mid.succeeded.length}/${geo.total} chunks done per the library; the server held ${held.length}`);
  const missing = mid.succeeded.filter((n) => !held.includes(n));
  assert.deepEqual(missing, [], `chunks the library saw succeed are not held by the server: ${missing.join(', ')}`);

  // Requests from here on are the resume's (the reloaded page's old instance could still
  // start a request between the cut and its unload).
  const resumedAt = performance.now();
  if (interrupt === 'reload') await startUpload(page, kind, opts, f.path);
  const end = await waitEnd(page);
  assert.ok(!end.error, `fileError: ${end.error?.message}`);
  const { url, from } = await finishedUrl(ferry.url, kind, file, end.success.message);
  await assertUrlHolds(url, f);

  const after = proxy.stats.seen.filter((s) => s.at >= (interrupt === 'reload' ? resumedAt : cutAt) && s.path === '/api/resumable');
  const postsAfter = after.filter((s) => s.method === 'POST').length;
  const getsAfter = after.filter((s) => s.method === 'GET').length;
  const postsAll = proxy.stats.seen.filter((s) => s.path === '/api/resumable' && s.method === 'POST').length;
  const bodies = proxy.stats.bodyBytes;
  // After the cut only the chunks the server did not hold are sent again (plus, for a cut
  // connection, up to one per simultaneous upload whose answer was lost).
  const bound = geo.total - held.length + (interrupt === 'offline' ? SIMULTANEOUS : 0);
  assert.ok(postsAfter <= bound, `${postsAfter} chunk POSTs after the ${interrupt}, but only ${geo.total - held.length} of ${geo.total} chunks were missing`);
  assert.ok(bodies < 1.3 * f.size, `the browser sent ${fmt(bodies)} of request bodies for a ${fmt(f.size)} file (≥ 1.3×): the upload restarted instead of resuming`);
  if (interrupt === 'offline') assert.ok(duringOffline.retries > 0, 'no fileRetry while offline: the cut went unnoticed, the test proves nothing');
  if (opts.checkChunkUploadedByResponse) {
    assert.equal(getsAfter, 1, `the resume sent ${getsAfter} test GETs (checkChunkUploadedByResponse: one expected, about chunk 1)`);
  }
  return (
    `${geo.total} chunks (forceChunkSize ${force}), ${interrupt} at ${mid.succeeded.length} done; server held ${held.length}; ` +
    `after: ${getsAfter} test GET, ${postsAfter} POST${interrupt === 'offline' ? ` (${duringOffline.retries} fileRetry while offline)` : ''}; ` +
    `${postsAll} POSTs, ${(bodies / f.size).toFixed(3)}× the size in bodies; url from ${from}`
  );
}

// ---------------------------------------------------------------------------------------
// 2. The same file again: nothing sent

async function secondUpload(t) {
  const f = await fixture('twice');
  const site = await t.static(pageRoutes());
  const ctx = await t.context();
  const lines = [];
  for (const [kind, options, expectGets] of [
    ['resumable', {}, 'chunks'],
    ['flow', {}, 'chunks'],
    ['simple', SINGLE_CHECK, 1],
  ]) {
    // A server per library: the identifiers are alike (size + name), and each library's
    // first upload must find an empty server.
    const ferry = await t.ferry();
    const opts = { target: `${ferry.url}/api/resumable`, chunkSize: CHUNK, simultaneousUploads: SIMULTANEOUS, ...options };
    const runOnce = async () => {
      const page = await ctx.newPage();
      const counts = countRequests(page);
      await openPage(page, site.url);
      await startUpload(page, kind, opts, f.path);
      const end = await waitEnd(page, 60_000);
      await page.close();
      assert.ok(!end.error, `${LIB_NAMES[kind]}: fileError: ${end.error?.message}`);
      const file = { chunkSize: CHUNK, size: f.size, identifier: end.identifier, filename: f.name };
      const { url } = await finishedUrl(ferry.url, kind, file, end.success.message);
      await assertUrlHolds(url, f);
      return { end, counts: { ...counts }, url };
    };
    const first = await runOnce();
    const second = await runOnce();
    const chunks = second.end.chunks;
    assert.equal(second.counts.POST, 0, `${LIB_NAMES[kind]}: the second upload sent ${second.counts.POST} chunk POSTs (the file was complete on the server)`);
    const gets = expectGets === 'chunks' ? chunks : expectGets;
    assert.equal(second.counts.GET, gets, `${LIB_NAMES[kind]}: the second upload sent ${second.counts.GET} test GETs, expected ${gets}`);
    lines.push(
      `${LIB_NAMES[kind]}: first ${first.counts.GET} GET + ${first.counts.POST} POST, second ${second.counts.GET} GET + 0 POST for ${chunks} chunks` +
        `${second.url === first.url ? ', same url' : `, url ${first.url} then ${second.url}`}`,
    );
    t.note(lines.at(-1));
  }
  return lines.join('; ');
}

// ---------------------------------------------------------------------------------------
// 3. Refusals change nothing

async function refusals(t) {
  const ferry = await t.ferry();
  const site = await t.static(pageRoutes());
  const ctx = await t.context();
  const page = await ctx.newPage();
  await openPage(page, site.url);
  const target = `${ferry.url}/api/resumable`;
  const name = 'cl-refusals.bin';
  const size = 3 * MiB + 100; // 3 chunks of 1 MiB, the last 1 MiB + 100 (forceChunkSize false)
  await page.evaluate(({ name, size }) => window.harness.makeFile(name, size), { name, size });
  const identifier = `${size}-${name.replace(/[^0-9a-zA-Z_-]/g, '')}`; // the libraries' default
  const file = { chunkSize: CHUNK, size, identifier, filename: name };
  const geo = geometry(size, CHUNK);
  const send = (method, flds, range) => page.evaluate(({ method, target, flds, range }) => window.harness.send(method, target, flds, range), { method, target, flds, range });
  // The refusal's machine-readable code: ferry's error body is {"error": "<code>", "message"};
  // a `code` field is taken too.
  const codeOf = (body) => (body && [body.code, body.error].find((c) => typeof c === 'string' && c)) || null;
  const json = (r) => {
    try {
      return JSON.parse(r.text);
    } catch {
      return null;
    }
  };

  // Chunks 1 and 2, as resumable.js sends them.
  for (const n of [1, 2]) {
    const r = await send('POST', fields('resumable', { ...file, number: n }), geo.span(n));
    assert.equal(r.status, 200, `chunk ${n} → ${r.status}: ${r.text.slice(0, 200)}`);
    assert.ok(json(r)?.uploaded?.includes(n), `chunk ${n}'s answer does not list it: ${r.text.slice(0, 200)}`);
  }
  const snapshot = async () => {
    const one = await send('GET', fields('resumable', { ...file, number: 1 }));
    const three = await send('GET', fields('resumable', { ...file, number: 3 }));
    return { one: { status: one.status, body: json(one) }, three: three.status };
  };
  const before = await snapshot();
  assert.equal(before.one.status, 200, `test GET of chunk 1 → ${before.one.status}`);
  assert.deepEqual([...before.one.body.uploaded].sort((a, b) => a - b), [1, 2], `held after chunks 1 and 2: ${JSON.stringify(before.one.body)}`);
  assert.equal(before.one.body.skipUpload, false, 'skipUpload true for a file missing a chunk');
  assert.equal(before.three, 204, `test GET of the missing chunk 3 → ${before.three}`);

  const c3 = geo.span(3);
  const oneMiB = [c3[0], c3[0] + MiB];
  const cases = [
    // Self-consistent under forceChunkSize (⌈size/1 MiB⌉ = 4, chunk 3 of 1 MiB), but the
    // file's earlier chunks said 3 chunks.
    ['totalChunks 4 contradicting the earlier chunks (3)', fields('resumable', { ...file, number: 3, force: true }), oneMiB, [400]],
    ['chunkSize 2 MiB contradicting the earlier chunks (1 MiB)', fields('resumable', { ...file, chunkSize: 2 * MiB, number: 1 }), [0, size], [400]],
    ['currentChunkSize not the length of the file part', fields('resumable', { ...file, number: 3 }), oneMiB, [400]],
    ['last chunk cut at 1 MiB (the fields say 1 MiB + 100)', fields('resumable', { ...file, number: 3, currentChunkSize: MiB }), oneMiB, [400]],
    ['chunkNumber 0', fields('resumable', { ...file, number: 1, chunkNumber: 0 }), geo.span(1), [400]],
    ['chunkNumber past totalChunks', fields('resumable', { ...file, number: 3, chunkNumber: 4 }), c3, [400]],
    ['no file part', fields('resumable', { ...file, number: 3 }), null, [400]],
    ['totalSize not a number', fields('resumable', { ...file, number: 3, totalSize: 'abc' }), c3, [400]],
  ];
  const seen = [];
  for (const [what, flds, range, statuses] of cases) {
    const r = await send('POST', flds, range);
    const body = json(r);
    assert.ok(statuses.includes(r.status), `${what}: ${r.status} (${r.text.slice(0, 200)}), expected ${statuses.join(' or ')}`);
    assert.ok(codeOf(body), `${what}: ${r.status} without a JSON body with a code ("error" or "code"): ${r.text.slice(0, 200)}`);
    seen.push(`${r.status} ${codeOf(body)}`);
    t.note(`${what} → ${r.status} ${r.text.slice(0, 300)}`);
  }
  const afterFetch = await snapshot();
  assert.deepEqual(afterFetch, before, `the refused chunks changed what the server holds: ${JSON.stringify(afterFetch)} (was ${JSON.stringify(before)})`);

  // Through a library: flow.js (then resumable.js) with the same file, so the same
  // identifier, cut at 512 KiB — every chunk contradicts the file's earlier ones.
  const libs = [];
  for (const kind of ['flow', 'resumable']) {
    const lp = await ctx.newPage();
    const counts = countRequests(lp);
    await openPage(lp, site.url);
    await lp.evaluate(({ name, size }) => window.harness.makeFile(name, size), { name, size });
    // The same bytes are not needed: the fields contradict before any byte is compared.
    await lp.evaluate(({ kind, opts }) => {
      window.harness.setup(kind, opts);
      window.harness.addTestFile();
    }, { kind, opts: { target, chunkSize: 512 * 1024, simultaneousUploads: 1 } });
    const end = await waitEnd(lp, 60_000);
    assert.ok(!end.success, `${LIB_NAMES[kind]} reported fileSuccess with contradicting chunking`);
    let code = null;
    try {
      code = codeOf(JSON.parse(end.error.message));
    } catch {
      // checked below
    }
    assert.ok(code, `${LIB_NAMES[kind]}'s fileError message has no JSON code: ${end.error.message.slice(0, 200)}`);
    // A refusal is permanent for the library: one chunk POST, not a hundred retries.
    assert.ok(counts.POST <= 1, `${LIB_NAMES[kind]} sent ${counts.POST} chunk POSTs for a refused chunk: it retried the refusal`);
    libs.push(`${LIB_NAMES[kind]} fileError ${code} after ${counts.GET} GET + ${counts.POST} POST`);
    t.note(libs.at(-1));
    await lp.close();
    const now = await snapshot();
    assert.deepEqual(now, before, `${LIB_NAMES[kind]}'s refused upload changed what the server holds: ${JSON.stringify(now)}`);
  }
  return `${cases.length} refusals (${seen.join(', ')}), held chunks still [1,2]; ${libs.join('; ')}`;
}

// ---------------------------------------------------------------------------------------

/** Registers the scenarios with run.mjs's `scenario(name, fn)`. */
export function register(scenario) {
  scenario('resumable.js: 64 MiB, 1 MiB chunks × 3, page reload past 40 %, same File again: done, bytes identical, < 1.3× sent', (t) =>
    interrupted(t, 'resumable', { interrupt: 'reload' }));
  scenario('flow.js (forceChunkSize): 64 MiB, offline 3 s past 40 %, same instance carries on: done, bytes identical, < 1.3× sent', (t) =>
    interrupted(t, 'flow', { interrupt: 'offline', options: { forceChunkSize: true, maxChunkRetries: 100, chunkRetryInterval: 500 } }));
  scenario('simple-uploader.js (checkChunkUploadedByResponse): 64 MiB, page reload past 40 %: resumes with one test GET, bytes identical, < 1.3× sent', (t) =>
    interrupted(t, 'simple', { interrupt: 'reload', options: SINGLE_CHECK }));
  scenario('chunk libraries: the same file a second time sends no chunk POST (resumable.js, flow.js, simple-uploader.js)', secondUpload);
  scenario('chunk libraries: refused chunks (bad or contradicting fields, by fetch and through flow.js/resumable.js) → 400 with a code, nothing changed, no library retries', refusals);
}
