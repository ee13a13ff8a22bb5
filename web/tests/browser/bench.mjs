// A benchmark, not a test: in-browser hashing speed of the SDK, and the time to upload a big
// file from the page versus the `ferry upload` CLI, on this machine.
//
//   node bench.mjs                 256 MiB hashes, 1 GiB uploads, median of 3 runs
//   node bench.mjs --runs 5
//   node bench.mjs --quick         small sizes, 1 run: a smoke test that every path works
//   node bench.mjs --chunk-libs    only the chunk-library part (below); a default run includes it
//   node bench.mjs --uploads       only the 1 GiB page-versus-CLI uploads (the issue's browser figure)
//
// The server and the CLI are the same binary: FERRY_BIN, else target/release/ferry (build
// it with `cargo build --release -p ferry`). Every upload run gets a fresh server and data
// dir (a server that already holds the file would make the chunk dialect instant) and a
// fresh browser context.
//
// Hashing runs in the SDK's own hash worker (/sdk/hash-worker.js, its message protocol) on a
// file picked through a file input, so the bytes come from disk the way a user's do:
//   MD5 (SDK JS)            the whole file, one worker
//   SHA-256 (crypto.subtle) Web Crypto in the worker, as tus uses on secure origins
//   SHA-256 (SDK JS)        the SDK's own SHA-256, as tus uses where crypto.subtle is missing
//   chunk-dialect pass      workerHashers().fileMd5(file, 5 MiB): file MD5 + every chunk MD5,
//                           what the page does before a chunk-dialect handshake
//
// Chunk libraries (chunk-libs.mjs's test page, on another origin, straight to ferry): a 256 MiB
// file (--quick: 32 MiB) picked from disk, uploaded by resumable.js to /api/resumable (1 MiB
// chunks, 3 at once, its defaults otherwise: a test GET before every chunk) and by
// tus-js-client to /files/ (8 MiB chunks, one request at a time); then resumable.js again
// with the same file, which is how it resumes: one test GET per chunk, each answered 200, no
// chunk sent. Times are the page's own (from adding the file to fileSuccess / onSuccess).

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { countRequests, finishedUrl, openPage, pageRoutes, startUpload, waitEnd } from './chunk-libs.mjs';
import { MiB, fetchDigest, ferryBin, launchChromium, randomFixture, sleep, startFerry, startStatic, workDir } from './lib.mjs';

const argv = process.argv.slice(2);
const quick = argv.includes('--quick');
const runsArg = argv.indexOf('--runs');
const RUNS = quick ? 1 : runsArg >= 0 ? Number(argv[runsArg + 1]) : 3;
const HASH_SIZE = quick ? 16 * MiB : 256 * MiB;
const UPLOAD_SIZE = quick ? 32 * MiB : 1024 * MiB;
const CHUNK_LIBS_SIZE = quick ? 32 * MiB : 256 * MiB;
const chunkLibsOnly = argv.includes('--chunk-libs');
const uploadsOnly = argv.includes('--uploads');
if (!(RUNS >= 1)) {
  console.error('usage: node bench.mjs [--quick] [--runs N] [--chunk-libs | --uploads]');
  process.exit(2);
}

let BIN;
try {
  BIN = ferryBin('target/release/ferry');
} catch (err) {
  console.error(`${err.message} (the benchmark wants a release build: cargo build --release -p ferry)`);
  process.exit(1);
}
const WORK = workDir('ferry-browser-bench-');

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const mibps = (bytes, ms) => bytes / MiB / (ms / 1000);

// ---------------------------------------------------------------------------------------

async function hashBench(browser, fixture) {
  const ferry = await startFerry({ bin: BIN, logDir: WORK, name: 'bench-hash' });
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    await page.goto(`${ferry.url}/`);
    // Our own file input, beside the page's (which would start an upload).
    await page.evaluate(() => {
      const input = document.createElement('input');
      input.type = 'file';
      input.id = 'bench-input';
      document.body.append(input);
    });
    await page.setInputFiles('#bench-input', fixture.path);
    const cases = [
      ['MD5 (SDK JS, 1 worker)', { op: 'md5', options: { chunkSize: fixture.size, file: true, chunks: false } }],
      ['SHA-256 (crypto.subtle, worker)', { op: 'sha256', options: {} }],
      ['SHA-256 (SDK JS, worker)', { op: 'sha256', options: { forceSoftware: true } }],
      ['chunk-dialect pass (fileMd5, 5 MiB chunks)', { pass: true }],
    ];
    const rows = [];
    for (const [name, job] of cases) {
      const times = [];
      for (let r = 0; r < RUNS; r++) {
        const ms = await page.evaluate(async (job) => {
          const file = document.querySelector('#bench-input').files[0];
          if (job.pass) {
            const { workerHashers } = await import('/sdk/hashers.js');
            const hashers = workerHashers();
            const t0 = performance.now();
            const res = await hashers.fileMd5(file, 5 * 1024 * 1024, null);
            const ms = performance.now() - t0;
            hashers.terminate?.();
            if (!res?.fileMd5 || !res.chunkMd5s?.length) throw new Error(`fileMd5 returned ${JSON.stringify(res)}`);
            return ms;
          }
          const worker = new Worker('/sdk/hash-worker.js', { type: 'module' });
          try {
            const t0 = performance.now();
            await new Promise((resolve, reject) => {
              worker.onmessage = (e) => {
                if (e.data.type === 'done') resolve(e.data.result);
                else if (e.data.type === 'error') reject(new Error(e.data.message));
              };
              worker.onerror = (e) => reject(new Error(e.message || 'worker failed to load'));
              worker.postMessage({ id: 1, op: job.op, blob: file, options: job.options });
            });
            return performance.now() - t0;
          } finally {
            worker.terminate();
          }
        }, job);
        times.push(ms);
      }
      rows.push([name, mibps(fixture.size, median(times))]);
    }
    return rows;
  } finally {
    await ctx.close();
    await ferry.stop();
  }
}

/** One page upload: fresh server and context; ms from selecting the file to data-state="done". */
async function pageUpload(browser, fixture, query) {
  const ferry = await startFerry({ bin: BIN, logDir: WORK, name: 'bench-page' });
  const ctx = await browser.newContext();
  try {
    const page = await ctx.newPage();
    await page.goto(`${ferry.url}/${query}`);
    await page.waitForFunction(() => window.ferry && window.ferry.uploader);
    const t0 = performance.now();
    await page.setInputFiles('#file-input', fixture.path);
    const state = await page
      .waitForFunction(
        (name) => {
          const li = [...document.querySelectorAll('#files li.file-row')].find((l) => l.dataset.name === name);
          return li && (li.dataset.state === 'done' || li.dataset.state === 'failed') && li.dataset.state;
        },
        fixture.name,
        { timeout: 600_000, polling: 50 },
      )
      .then((h) => h.jsonValue());
    const ms = performance.now() - t0;
    if (state !== 'done') throw new Error(`page upload ${query || '(tus)'} ended ${state}`);
    const href = await page.$eval(`#files li.file-row a.download-link`, (a) => a.href);
    await verify(href, fixture);
    return ms;
  } finally {
    await ctx.close();
    await ferry.stop();
  }
}

/** One CLI upload: fresh server; wall time of `ferry upload`. */
async function cliUpload(fixture, protocol) {
  const ferry = await startFerry({ bin: BIN, logDir: WORK, name: 'bench-cli' });
  try {
    const t0 = performance.now();
    // A state file of its own: a remembered upload from an earlier run (another server)
    // must not be resumed.
    const out = await run(BIN, ['upload', fixture.path, '--server', ferry.url, '--protocol', protocol, '--quiet', '--state-file', join(WORK, `cli-state-${Date.now()}.json`)]);
    const ms = performance.now() - t0;
    // With stdout not a terminal the CLI prints JSON lines; one `result` per file.
    const url = out
      .split('\n')
      .map((l) => {
        try {
          return JSON.parse(l);
        } catch {
          return /^https?:\/\/\S+$/.test(l.trim()) ? { url: l.trim() } : null;
        }
      })
      .find((m) => m && m.url)?.url;
    if (!url) throw new Error(`ferry upload printed no URL: ${out}`);
    await verify(url, fixture);
    return ms;
  } finally {
    await ferry.stop();
  }
}

/**
 * One run of the chunk-library part on a fresh server: resumable.js (1 MiB × 3), the same
 * file again with resumable.js (its resume: a test GET per chunk), tus-js-client (8 MiB).
 * Returns { resumable, again, tus }, each { ms, requests }.
 */
async function chunkLibsRun(browser, fixture) {
  const ferry = await startFerry({ bin: BIN, logDir: WORK, name: 'bench-chunk-libs' });
  const site = await startStatic(pageRoutes());
  const ctx = await browser.newContext();
  try {
    const resumable = async () => {
      const page = await ctx.newPage();
      const requests = countRequests(page);
      await openPage(page, site.url);
      await startUpload(page, 'resumable', { target: `${ferry.url}/api/resumable`, chunkSize: MiB, simultaneousUploads: 3 }, fixture.path);
      const end = await waitEnd(page, 600_000);
      await page.close();
      if (end.error) throw new Error(`resumable.js: fileError ${end.error.message.slice(0, 300)}`);
      const { url } = await finishedUrl(ferry.url, 'resumable', { chunkSize: MiB, size: fixture.size, identifier: end.identifier, filename: fixture.name }, end.success.message);
      await verify(url, fixture);
      return { ms: end.success.ms, chunks: end.chunks, requests: { ...requests } };
    };
    const first = await resumable();
    const again = await resumable();
    if (again.requests.POST) throw new Error(`resumable.js sent ${again.requests.POST} chunk POSTs for a file the server holds`);

    const page = await ctx.newPage();
    const requests = countRequests(page, '/files/');
    await openPage(page, site.url);
    await page.setInputFiles('#pick', fixture.path);
    const res = await page.evaluate(({ endpoint, chunkSize }) => window.harness.tus(endpoint, chunkSize), { endpoint: `${ferry.url}/files/`, chunkSize: 8 * MiB });
    await page.close();
    await verify(res.url, fixture);
    return { resumable: first, again, tus: { ms: res.ms, requests: { ...requests } } };
  } finally {
    await ctx.close();
    await site.stop();
    await ferry.stop();
  }
}

async function chunkLibsBench(browser, fixture) {
  const runs = [];
  for (let r = 0; r < RUNS; r++) {
    runs.push(await chunkLibsRun(browser, fixture));
    await sleep(200);
  }
  const med = (pick) => median(runs.map(pick));
  const size = fixture.size;
  const rq = runs[0];
  console.log(`  ${'client'.padEnd(36)} ${'median s'.padStart(9)} ${'MiB/s'.padStart(7)} ${'chunk req/s'.padStart(12)} ${'all req/s'.padStart(10)}   requests per upload`);
  const row = (name, pick, chunkReqs, allReqs, what) => {
    const ms = med(pick);
    console.log(
      `  ${name.padEnd(36)} ${(ms / 1000).toFixed(2).padStart(9)} ${mibps(size, ms).toFixed(0).padStart(7)} ${(chunkReqs / (ms / 1000)).toFixed(0).padStart(12)} ${(allReqs / (ms / 1000)).toFixed(0).padStart(10)}   ${what}`,
    );
  };
  const R = rq.resumable.requests;
  row('resumable.js, 1 MiB chunks, 3 at once', (x) => x.resumable.ms, R.POST, R.POST + R.GET, `${R.POST} POST + ${R.GET} test GET`);
  const T = rq.tus.requests;
  row('tus-js-client, 8 MiB chunks', (x) => x.tus.ms, T.PATCH, T.PATCH + T.POST + T.HEAD + T.other, `${T.POST} POST + ${T.PATCH} PATCH${T.HEAD ? ` + ${T.HEAD} HEAD` : ''}${T.other ? ` + ${T.other} other` : ''}`);
  const A = rq.again;
  const ms = med((x) => x.again.ms);
  console.log(
    `  resumable.js resuming the complete file: ${A.requests.GET} test GETs (= its ${A.chunks} chunks: one per chunk, whatever is held), ` +
      `${A.requests.POST} POST, median ${(ms / 1000).toFixed(2)} s (${(A.requests.GET / (ms / 1000)).toFixed(0)} GET/s); runs (s): ${runs.map((x) => (x.again.ms / 1000).toFixed(2)).join(' ')}`,
  );
  console.log(`  runs (s): resumable.js ${runs.map((x) => (x.resumable.ms / 1000).toFixed(2)).join(' ')}; tus-js-client ${runs.map((x) => (x.tus.ms / 1000).toFixed(2)).join(' ')}`);
}

async function verify(url, fixture) {
  const got = await fetchDigest(url);
  if (got.status !== 200 || got.sha !== fixture.sha) throw new Error(`GET ${url}: ${got.status}, ${got.length} bytes, bytes ${got.sha === fixture.sha ? 'identical' : 'DIFFER'}`);
}

function run(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.slice(-1000)}`))));
  });
}

// ---------------------------------------------------------------------------------------

console.log(`# ferry ${BIN}; ${RUNS} run(s) per line, median; ${quick ? 'quick mode' : 'full sizes'}`);
const browser = await launchChromium();
let failed = false;
try {
  if (!chunkLibsOnly) await pageAndCli();
  if (!uploadsOnly) await chunkLibsPart();
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

/** The chunk libraries' part (skipped with `--uploads`). */
async function chunkLibsPart() {
  const fix = await randomFixture(WORK, 'chunk-libs.bin', CHUNK_LIBS_SIZE);
  console.log(`\nchunk libraries, ${CHUNK_LIBS_SIZE / MiB} MiB from one page (another origin, straight to a fresh server each run, loopback; ${/release/.test(BIN) ? "release" : "not a release"} build)`);
  try {
    await chunkLibsBench(browser, fix);
  } catch (err) {
    failed = true;
    console.log(`  FAILED: ${err.message.split('\n')[0]}`);
  }
}

async function pageAndCli() {
  const upFix = await randomFixture(WORK, 'upload.bin', UPLOAD_SIZE);
  if (!uploadsOnly) {
    const hashFix = await randomFixture(WORK, 'hash.bin', HASH_SIZE);
    console.log(`\nin-browser hashing, ${HASH_SIZE / MiB} MiB file from disk (Chromium ${browser.version()})`);
    for (const [name, rate] of await hashBench(browser, hashFix)) console.log(`  ${name.padEnd(46)} ${rate.toFixed(0).padStart(6)} MiB/s`);
  }

  console.log(`\nupload ${UPLOAD_SIZE / MiB} MiB to a fresh server each run (loopback; ${/release/.test(BIN) ? "release" : "not a release"} build)`);
  console.log(`  ${'client'.padEnd(30)} ${'median s'.padStart(9)} ${'MiB/s'.padStart(7)}   runs (s)`);
  const lines = [
    ['page, tus (default settings)', () => pageUpload(browser, upFix, '')],
    ['page, chunk dialect', () => pageUpload(browser, upFix, '?protocol=chunk')],
    ['CLI ferry upload, tus', () => cliUpload(upFix, 'tus')],
    ['CLI ferry upload, chunk', () => cliUpload(upFix, 'chunk')],
  ];
  // Run by run, every line once (page, page, CLI, CLI, then again), so that a machine that
  // gets faster or slower during the benchmark shifts every line alike.
  const times = lines.map(() => []);
  const errors = lines.map(() => null);
  for (let r = 0; r < RUNS; r++) {
    for (const [i, [, once]] of lines.entries()) {
      if (errors[i]) continue;
      try {
        times[i].push(await once());
      } catch (err) {
        errors[i] = err;
      }
      await sleep(200);
    }
  }
  for (const [i, [name]] of lines.entries()) {
    if (errors[i]) {
      failed = true;
      console.log(`  ${name.padEnd(30)} FAILED: ${errors[i].message.split('\n')[0]}`);
      continue;
    }
    const m = median(times[i]);
    console.log(`  ${name.padEnd(30)} ${(m / 1000).toFixed(2).padStart(9)} ${mibps(UPLOAD_SIZE, m).toFixed(0).padStart(7)}   ${times[i].map((t) => (t / 1000).toFixed(2)).join(' ')}`);
  }
  // The issue's browser target: the page's tus upload against the CLI's, same server build.
  const ratio = (a, b) => (errors[a] || errors[b] ? null : median(times[a]) / median(times[b]));
  const tusRatio = ratio(0, 2);
  const chunkRatio = ratio(1, 3);
  if (tusRatio !== null) console.log(`  page ÷ CLI time, tus: ${tusRatio.toFixed(2)} (target ≤ 1.2)`);
  if (chunkRatio !== null) console.log(`  page ÷ CLI time, chunk dialect: ${chunkRatio.toFixed(2)}`);
}
