// Browser tests of the upload page (GET /) and the browser SDK (/sdk/ferry.js), SPEC §5, and
// Uppy interop: Debian's Chromium driven by playwright-core, real ferry servers.
//
//   node run.mjs                 every scenario (FERRY_BIN or target/debug/ferry)
//   node run.mjs 3 offline       only the scenarios whose number or name matches a word
//   node run.mjs --web-dir       serve web/ from disk (FERRY_WEB_DIR=<repo>/web), no rebuild
//
// Each scenario gets a fresh ferry server (own port, throwaway data dir), a fresh browser
// context, and — where it needs to slow the network down or watch requests from the
// server's side — a Node reverse proxy (lib.mjs) between Chromium and ferry. It prints
// `ok N - name` or `not ok N - name` with the reason, writes a log (console, page errors,
// failed requests, the proxy's request log) and, on failure, screenshots and the server log
// to the artifacts dir (web/tests/browser/artifacts or $ARTIFACTS_DIR), and the run ends with
// "browser: N passed, N failed" and a non-zero exit if any failed.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { copyFileSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  HERE,
  MiB,
  REPO,
  artifactsDir,
  bytesReceived,
  ferryBin,
  fetchDigest,
  launchChromium,
  randomFixture,
  request,
  selfSignedCert,
  sleep,
  startFerry,
  startProxy,
  startStatic,
  until,
  workDir,
} from './lib.mjs';

const argv = process.argv.slice(2);
if (argv.includes('--web-dir')) process.env.FERRY_WEB_DIR = join(REPO, 'web');
const filters = argv.filter((a) => !a.startsWith('--'));
const SCENARIO_TIMEOUT_MS = Number(process.env.BROWSER_SCENARIO_TIMEOUT_MS || 120_000);
const BUDGET_MS = Number(process.env.BROWSER_TESTS_BUDGET_MS || 300_000);
const started = performance.now();

const ART = artifactsDir();
if (!process.env.ARTIFACTS_DIR) {
  // The default dir is ours alone: clear the last run's files so nothing stale is read.
  for (const f of readdirSync(ART)) if (f !== 'tmp') rmSync(join(ART, f), { recursive: true, force: true });
}
const WORK = workDir('ferry-browser-');

// ---------------------------------------------------------------------------------------
// Fixtures: random bytes, generated once per run, shared by the scenarios.

const FIX = {};
async function makeFixtures() {
  const specs = [
    ['big', 'a-64MiB.bin', 64 * MiB],
    ['odd', 'b-odd-1MiB.bin', MiB + 4097],
    ['named', 'c-名字 with space.txt', 200 * 1024 + 3],
    ['drop', 'd-drop.bin', 3 * MiB + 7],
    ['mid', 'f-32MiB.bin', 32 * MiB],
    ['twice', 'g-12MiB.bin', 12 * MiB + 5],
    ['conc', 'h-32MiB-conc.bin', 32 * MiB + 11],
    ['uppy', 'u-uppy.bin', 10 * MiB + 13],
    ['empty', 'e-empty.txt', 0],
  ];
  for (const [key, name, size] of specs) FIX[key] = await randomFixture(WORK, name, size);
}

// ---------------------------------------------------------------------------------------
// Page helpers (the page contract of web/README.md)

/** The row of `name` as the DOM shows it, or null when there is none. */
function rowInfo(page, name) {
  return page.evaluate((name) => {
    const li = [...document.querySelectorAll('#files li.file-row')].find((l) => l.dataset.name === name);
    if (!li) return null;
    const link = li.querySelector('a.download-link');
    const err = li.querySelector('.error');
    return {
      state: li.dataset.state,
      instant: li.dataset.instant === 'true',
      error: err ? err.textContent.trim() : '',
      href: link ? link.href : null,
      label: (li.querySelector('.state-label') || {}).textContent || '',
    };
  }, name);
}

/** The SDK's view of the upload of `name` (window.ferry.uploader), or null. */
function upInfo(page, name) {
  return page.evaluate((name) => {
    const up = window.ferry?.uploader?.uploads?.find((u) => u.name === name);
    return up ? { state: up.state, confirmed: up.confirmed, url: up.url, size: up.size, fingerprint: up.fingerprint } : null;
  }, name);
}

/** Waits for the row of `name` to reach one of `states`; a `failed` row ends the wait at once. */
async function waitRow(page, name, states, timeout = 60_000) {
  const info = await until(
    () => rowInfo(page, name),
    (r) => r && (states.includes(r.state) || r.state === 'failed'),
    { timeout, what: (r) => `row "${name}" to reach ${states.join('|')} (now: ${r ? `${r.state}${r.error ? `, error: ${r.error}` : ''}` : 'no row'})` },
  );
  if (!states.includes(info.state)) throw new Error(`row "${name}" is ${info.state}${info.error ? `: ${info.error}` : ''}, expected ${states.join('|')}`);
  return info;
}

/** Waits until the SDK reports at least `bytes` confirmed for `name` (and not yet done). */
async function waitConfirmed(page, name, bytes, timeout = 60_000) {
  return until(
    () => upInfo(page, name),
    (u) => u && (u.confirmed >= bytes || u.state === 'failed' || u.state === 'done'),
    { timeout, interval: 50, what: (u) => `"${name}" to have ${bytes} bytes confirmed (now: ${JSON.stringify(u)})` },
  ).then((u) => {
    if (u.state === 'failed') throw new Error(`"${name}" failed before ${bytes} bytes were confirmed`);
    if (u.state === 'done') throw new Error(`"${name}" finished before the test could act mid-upload (the throttle is too loose)`);
    return u;
  });
}

/** GETs the row's download link from Node and compares its bytes with the fixture. */
async function assertDownloadMatches(page, fixture) {
  const row = await rowInfo(page, fixture.name);
  assert.ok(row, `no row for ${fixture.name}`);
  assert.ok(row.href, `row "${fixture.name}" (${row.state}) has no a.download-link`);
  await assertUrlHolds(row.href, fixture);
  return row.href;
}

async function assertUrlHolds(url, fixture) {
  const got = await fetchDigest(url);
  assert.equal(got.status, 200, `GET ${url} → ${got.status}`);
  assert.equal(got.length, fixture.size, `GET ${url}: ${got.length} bytes, the source has ${fixture.size}`);
  assert.equal(got.sha, fixture.sha, `GET ${url}: sha256 differs from the source's`);
}

/** The tus upload URL's path on ferry itself (the page may have reached it via a proxy). */
const onFerry = (ferry, url) => ferry.url + new URL(url).pathname;

async function tusHeadStatus(url) {
  const res = await request(url, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } });
  return { status: res.status, offset: res.headers.has('upload-offset') ? Number(res.headers.get('upload-offset')) : null };
}

const fmt = (n) => `${(n / MiB).toFixed(1)} MiB`;

/** The run's self-signed certificate for localhost and 127.0.0.1 (made on first use). */
let TLS = null;
const tlsCert = () => (TLS ||= selfSignedCert(WORK));

// ---------------------------------------------------------------------------------------
// The per-scenario toolbox: everything started through it is stopped after the scenario.

class Scope {
  constructor(browser, index, name) {
    this.browser = browser;
    this.slug = `${String(index).padStart(2, '0')}-${name.replace(/[^a-z0-9]+/gi, '-').replace(/^-|-$/g, '').slice(0, 40).toLowerCase()}`;
    this.cleanups = [];
    this.contexts = [];
    this.log = [];
    this.proxies = [];
    this.ferries = [];
    this.creates = []; // tus uploads the pages created: absolute Location of each POST /files/
    this.assetErrors = []; // the page's own files (/, /app/*, /sdk/*) that failed to load
  }
  note(line) {
    this.log.push(`${new Date().toISOString().slice(11, 23)} ${line}`);
  }
  artifact(file) {
    return join(ART, file);
  }
  /** A ferry of this scenario's own; `tls: true` serves HTTPS (HTTP/2) with the run's self-signed certificate. */
  async ferry(args = [], { tls = false } = {}) {
    const f = await startFerry({ logDir: WORK, name: `${this.slug}-ferry-${this.ferries.length}`, args, tls: tls ? tlsCert() : null });
    this.ferries.push(f);
    this.cleanups.push(() => f.stop());
    this.note(`ferry at ${f.url}${process.env.FERRY_WEB_DIR ? ` (web from ${process.env.FERRY_WEB_DIR})` : ''}`);
    return f;
  }
  async proxy(opts) {
    const p = await startProxy(opts);
    this.proxies.push(p);
    this.cleanups.push(() => p.stop());
    this.note(`proxy at ${p.url} → ${opts.target}${opts.rate ? ` (request bodies ≤ ${fmt(opts.rate)}/s)` : ''}`);
    return p;
  }
  async static(routes) {
    const s = await startStatic(routes);
    this.cleanups.push(() => s.stop());
    return s;
  }
  /** A browser of this scenario's own, launched with extra command-line flags (and launchChromium's options). */
  async ownBrowser(args, opts) {
    const b = await launchChromium(args, opts);
    this.cleanups.push(() => b.close());
    return b;
  }
  async context(opts = {}, browser = this.browser) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US', ...opts });
    this.contexts.push(ctx);
    ctx.on('page', (p) => this.watch(p));
    return ctx;
  }
  watch(page) {
    const tag = `page${this.contexts.length}`;
    page.on('console', (m) => this.note(`${tag} console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => this.note(`${tag} PAGE ERROR: ${e.stack || e.message}`));
    page.on('requestfailed', (r) => this.note(`${tag} request failed: ${r.method()} ${r.url()} — ${r.failure()?.errorText}`));
    page.on('response', async (r) => {
      const req = r.request();
      const path = new URL(r.url()).pathname;
      if (r.status() >= 400) this.note(`${tag} ${r.status()} for ${req.method()} ${r.url()}`);
      if (r.status() >= 400 && req.method() === 'GET' && (path === '/' || path.startsWith('/app/') || path.startsWith('/sdk/'))) {
        this.assetErrors.push(`${r.status()} for ${path}`);
      }
      if (req.method() === 'POST' && path === '/files/' && r.status() === 201) {
        const loc = await r.headerValue('location').catch(() => null);
        if (loc) this.creates.push(new URL(loc, r.url()).href);
      }
    });
  }
  /** A new page in `ctx` at `url`, once window.ferry.uploader exists. */
  async page(ctx, url) {
    const page = await ctx.newPage();
    await this.goto(page, url);
    return page;
  }
  async goto(page, url) {
    const res = await page.goto(url);
    assert.equal(res.status(), 200, `GET ${url} → ${res.status()}`);
    await page.waitForFunction(() => window.ferry && window.ferry.uploader, null, { timeout: 10_000 }).catch(() => {
      throw new Error(`${url}: window.ferry.uploader never appeared (page contract)`);
    });
  }
  async finish(failed) {
    if (failed) {
      let i = 0;
      for (const ctx of this.contexts) {
        for (const page of ctx.pages()) {
          await page.screenshot({ path: this.artifact(`${this.slug}-failure-${i++}.png`), timeout: 5000 }).catch(() => {});
        }
      }
      for (const f of this.ferries) copyFileSync(f.logPath, this.artifact(`${this.slug}-ferry-${this.ferries.indexOf(f)}.log`));
    }
    for (const p of this.proxies) this.log.push('--- proxy request log (last 200) ---', ...p.stats.log);
    writeFileSync(this.artifact(`${this.slug}.log`), this.log.join('\n') + '\n');
    for (const ctx of this.contexts) await ctx.close().catch(() => {});
    for (const c of this.cleanups.reverse()) await c().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------
// Scenarios

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

scenario('three files (one of 64 MiB) through #file-input: all done, bytes identical', async (t) => {
  const ferry = await t.ferry();
  const ctx = await t.context();
  const page = await t.page(ctx, `${ferry.url}/`);
  const files = [FIX.big, FIX.odd, FIX.named];
  const t0 = performance.now();
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  for (const f of files) await waitRow(page, f.name, ['done'], 90_000);
  const secs = (performance.now() - t0) / 1000;
  for (const f of files) await assertDownloadMatches(page, f);
  const got = await bytesReceived(ferry.url);
  const total = files.reduce((s, f) => s + f.size, 0);
  assert.deepEqual(t.assetErrors, [], 'some of the page\'s own files did not load');
  assert.ok(got.total >= total, `the server received ${got.total} bytes, less than the ${total} of the files`);
  return `${fmt(total)} in ${secs.toFixed(1)} s; server received ${fmt(got.total)}`;
});

scenario('drag and drop onto #drop-zone: done, bytes identical', async (t) => {
  const ferry = await t.ferry();
  const ctx = await t.context();
  const page = await t.page(ctx, `${ferry.url}/`);
  const f = FIX.drop;
  // The page's CSP allows connections to its own origin only, so the bytes travel in the
  // evaluate argument (base64), and the File is built in the page as a drop would carry it.
  const b64 = readFileSync(f.path).toString('base64');
  const dataTransfer = await page.evaluateHandle(({ b64, name }) => {
    const bin = atob(b64);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type: 'application/octet-stream', lastModified: Date.now() }));
    return dt;
  }, { b64, name: f.name });
  for (const type of ['dragenter', 'dragover', 'drop']) await page.dispatchEvent('#drop-zone', type, { dataTransfer });
  await until(() => rowInfo(page, f.name), (r) => r, { timeout: 5000, what: () => `a row for the dropped "${f.name}"` });
  await waitRow(page, f.name, ['done'], 60_000);
  await assertDownloadMatches(page, f);
});

/** Network cut mid-upload for 3 s; `query` picks the dialect (tus when empty). */
async function networkCut(t, query) {
  const tus = !query.includes('protocol=chunk');
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/${query}`);
  const f = FIX.big;
  const before = await bytesReceived(ferry.url);
  await page.setInputFiles('#file-input', f.path);
  // Cut past 40 %: a client that started over instead of resuming would then send more
  // than 1.4× the size, which the 1.3× bound catches.
  const atCut = await waitConfirmed(page, f.name, 0.4 * f.size);
  await ctx.setOffline(true);
  const cutAt = Date.now();
  t.note(`offline at ${fmt(atCut.confirmed)} confirmed`);
  const seen = await waitRow(page, f.name, ['offline', 'retrying'], 5000);
  t.note(`row state while offline: ${seen.state} (${seen.label})`);
  await sleep(Math.max(0, 3000 - (Date.now() - cutAt)));
  const during = await upInfo(page, f.name);
  assert.notEqual(during.state, 'done', 'the upload finished while the browser was offline');
  await ctx.setOffline(false);
  await waitRow(page, f.name, ['done'], 60_000);
  const after = await bytesReceived(ferry.url);
  const received = after.total - before.total;
  if (tus) assert.equal(t.creates.length, 1, `the page created ${t.creates.length} tus uploads for one file (it started over after the cut)`);
  assert.ok(received >= f.size, `the server received ${received} bytes for a ${f.size}-byte file`);
  assert.ok(received < 1.3 * f.size, `the server received ${fmt(received)} for a ${fmt(f.size)} file (≥ 1.3×): the upload restarted instead of resuming`);
  await assertDownloadMatches(page, f);
  return `cut at ${fmt(atCut.confirmed)} confirmed, row went ${seen.state}; received ${(received / f.size).toFixed(3)}× the size`;
}

scenario('network cut mid-upload (offline 3 s): offline/retrying, then done; < 1.3× size received', (t) => networkCut(t, ''));

/** Page reload mid-upload, then the same file again; `query` picks the dialect. */
async function reloadResume(t, query) {
  const tus = !query.includes('protocol=chunk');
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/${query}`);
  const f = FIX.big;
  const before = await bytesReceived(ferry.url);
  await page.setInputFiles('#file-input', f.path);
  const mid = await waitConfirmed(page, f.name, 0.4 * f.size); // past 40 %: see the network-cut scenario
  if (tus) assert.equal(t.creates.length, 1, `POST /files/ created ${t.creates.length} uploads for one file`);
  t.note(`reload at ${fmt(mid.confirmed)} confirmed${tus ? `, upload ${t.creates[0]}` : ''}`);
  await page.reload();
  await page.waitForFunction(() => window.ferry && window.ferry.uploader, null, { timeout: 10_000 });

  // The earlier visit's upload is listed, with a way to select the file again.
  const rowSel = `#unfinished li.unfinished-row[data-name="${f.name}"]`;
  await page.waitForSelector(rowSel, { timeout: 5000 }).catch(() => {
    throw new Error(`after the reload, ${rowSel} did not appear (the earlier upload is not offered for resume)`);
  });
  const records = await page.evaluate(() => window.ferry.uploader.unfinished());
  const record = records.find((r) => r.name === f.name);
  assert.ok(record, `uploader.unfinished() has no record for ${f.name}: ${JSON.stringify(records)}`);
  assert.ok(record.confirmed > 0, `the stored record says ${record.confirmed} bytes confirmed`);

  // Select the file again: through the row's "reselect" button (a file chooser) as a person
  // would; if that opens no chooser, report it and fall back to #file-input so the resume
  // itself is still checked.
  let reselectProblem = null;
  const reselect = page.locator(`${rowSel} button[data-action="reselect"]`);
  if ((await reselect.count()) === 0) {
    reselectProblem = 'the unfinished row has no button[data-action="reselect"]';
  } else {
    const chooser = page.waitForEvent('filechooser', { timeout: 3000 }).catch(() => null);
    await reselect.click();
    const fc = await chooser;
    if (fc) await fc.setFiles(f.path);
    else reselectProblem = 'clicking button[data-action="reselect"] opened no file chooser';
  }
  if (reselectProblem) {
    t.note(`${reselectProblem}; selecting through #file-input instead`);
    await page.setInputFiles('#file-input', f.path);
  }
  await waitRow(page, f.name, ['done'], 60_000);
  if (tus) assert.equal(t.creates.length, 1, `after the reload the page created another tus upload (${t.creates.slice(1).join(', ')}) instead of continuing ${t.creates[0]}`);
  const received = (await bytesReceived(ferry.url)).total - before.total;
  assert.ok(received < 1.3 * f.size, `the server received ${fmt(received)} for a ${fmt(f.size)} file (≥ 1.3×): the upload restarted instead of resuming`);
  await assertDownloadMatches(page, f);
  const left = await page.evaluate(() => window.ferry.uploader.unfinished());
  assert.ok(!left.some((r) => r.name === f.name), 'the record is still in uploader.unfinished() after success');
  assert.equal(await page.locator(rowSel).count(), 0, `${rowSel} is still listed after the upload completed`);
  if (reselectProblem) throw new Error(`resume works, but ${reselectProblem}`);
  return `reloaded at ${fmt(mid.confirmed)}, resumed${tus ? ' on the same URL' : ''}; received ${(received / f.size).toFixed(3)}× the size`;
}

scenario('page reload mid-upload, same file selected again: resumes, < 1.3× size received', (t) => reloadResume(t, ''));

scenario('pause then resume (confirmed bytes stop, then done); cancel deletes the upload on the server', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const f = FIX.big;
  const row = page.locator(`#files li.file-row[data-name="${f.name}"]`);
  const before = await bytesReceived(ferry.url);
  await page.setInputFiles('#file-input', f.path);
  await waitConfirmed(page, f.name, 0.4 * f.size);
  await row.locator('button[data-action="pause"]').click();
  await waitRow(page, f.name, ['paused'], 5000);
  assert.ok(await row.locator('button[data-action="resume"]').isVisible(), 'a paused row shows no visible resume button');
  assert.ok(!(await row.locator('button[data-action="pause"]').isVisible()), 'a paused row still shows its pause button');
  await sleep(500); // the aborted request's last bytes reach the server
  assert.equal(t.creates.length, 1, `POST /files/ created ${t.creates.length} uploads for one file`);
  const tusUrl = onFerry(ferry, t.creates[0]);
  const p1 = await upInfo(page, f.name);
  const h1 = await tusHeadStatus(tusUrl);
  const m1 = await bytesReceived(ferry.url);
  await sleep(1500);
  const p2 = await upInfo(page, f.name);
  const h2 = await tusHeadStatus(tusUrl);
  const m2 = await bytesReceived(ferry.url);
  assert.equal(p2.state, 'paused', `the upload left 'paused' by itself (now ${p2.state})`);
  assert.equal(p2.confirmed, p1.confirmed, `confirmed bytes grew while paused: ${p1.confirmed} → ${p2.confirmed}`);
  assert.equal(h2.offset, h1.offset, `the server's offset grew while paused: ${h1.offset} → ${h2.offset}`);
  assert.equal(m2.total, m1.total, `the server received ${m2.total - m1.total} bytes while paused`);
  t.note(`paused at ${fmt(p1.confirmed)} confirmed, server offset ${h1.offset}`);
  await row.locator('button[data-action="resume"]').click();
  await waitRow(page, f.name, ['done'], 60_000);
  await assertDownloadMatches(page, f);
  const received = (await bytesReceived(ferry.url)).total - before.total;
  assert.ok(received < 1.3 * f.size, `pause/resume made the server receive ${fmt(received)} for ${fmt(f.size)}`);

  // Cancel: a second file, cut short by its row's cancel button.
  const g = FIX.mid;
  const grow = page.locator(`#files li.file-row[data-name="${g.name}"]`);
  await page.setInputFiles('#file-input', g.path);
  const mid = await waitConfirmed(page, g.name, 1);
  assert.equal(t.creates.length, 2, `expected a second POST /files/ for ${g.name}, saw ${t.creates.length} in all`);
  const url = onFerry(ferry, t.creates[1]);
  assert.equal((await tusHeadStatus(url)).status, 200, `HEAD ${url} before cancel`);
  await grow.locator('button[data-action="cancel"]').click();
  await until(() => rowInfo(page, g.name), (r) => !r || r.state === 'canceled', {
    timeout: 5000,
    what: (r) => `the canceled row to be removed or 'canceled' (now ${r && r.state})`,
  });
  const head = await until(() => tusHeadStatus(url), (h) => h.status === 404, {
    timeout: 5000,
    interval: 200,
    what: (h) => `HEAD ${url} to answer 404 after cancel (answers ${h.status}, offset ${h.offset})`,
  });
  // The server forgets the upload (HEAD 404) a moment before it answers the DELETE (it
  // removes the record first, then the bytes); the page drops its resume record on that
  // answer, so wait for it rather than race it.
  await until(
    () => page.evaluate(() => window.ferry.uploader.unfinished()),
    (records) => !records.some((r) => r.name === g.name),
    { timeout: 5000, interval: 100, what: () => 'the canceled upload is still in uploader.unfinished()' },
  );
  return `paused at ${fmt(p1.confirmed)} (held 1.5 s), resumed to done; canceled at ${fmt(mid.confirmed)} → HEAD ${head.status}`;
});

scenario('chunk dialect: the same file twice → the second is instant, no chunk bytes sent', async (t) => {
  const ferry = await t.ferry();
  const f = FIX.twice;
  const ctx1 = await t.context();
  const page1 = await t.page(ctx1, `${ferry.url}/?protocol=chunk`);
  await page1.setInputFiles('#file-input', f.path);
  const first = await waitRow(page1, f.name, ['done'], 60_000);
  assert.ok(!first.instant, 'the first upload of a new file says data-instant="true"');
  const m1 = await bytesReceived(ferry.url);
  assert.ok((m1.chunk || 0) >= f.size, `the first upload sent ${m1.chunk} chunk-dialect bytes for ${f.size} (did it use the chunk dialect?)`);
  await assertDownloadMatches(page1, f);

  const ctx2 = await t.context();
  const page2 = await ctx2.newPage();
  const chunkPosts = [];
  const handshakes = [];
  page2.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (r.method() === 'POST' && (path === '/api/upload' || path === '/upload')) chunkPosts.push(r.url());
    if (r.method() === 'POST' && path === '/api/upload/handshake') handshakes.push(r.url());
  });
  await t.goto(page2, `${ferry.url}/?protocol=chunk`);
  await page2.setInputFiles('#file-input', f.path);
  const second = await waitRow(page2, f.name, ['done'], 60_000);
  const m2 = await bytesReceived(ferry.url);
  assert.ok(second.instant, 'the second upload of the same file is not marked data-instant="true"');
  assert.equal(handshakes.length >= 1, true, 'no POST /api/upload/handshake was seen');
  assert.deepEqual(chunkPosts, [], `chunk requests were sent for a file the server has: ${chunkPosts.length}`);
  assert.equal((m2.chunk || 0) - (m1.chunk || 0), 0, `the server received ${m2.chunk - m1.chunk} chunk bytes for the instant upload`);
  await assertDownloadMatches(page2, f);
  return `first: ${fmt(m1.chunk)} of chunk bytes; second: instant, ${handshakes.length} handshake, 0 chunk requests`;
});

scenario('chunk dialect concurrency=2: never more than 2 chunk requests in flight (and 2 reached)', async (t) => {
  const ferry = await t.ferry();
  // The proxy slows request bodies a little so that requests overlap measurably.
  const proxy = await t.proxy({ target: ferry.url, rate: 24 * MiB });
  const ctx = await t.context();
  const f = FIX.conc;
  const page = await t.page(ctx, `${proxy.url}/?protocol=chunk&concurrency=2&chunkSize=1048576`);
  await page.setInputFiles('#file-input', f.path);
  await waitRow(page, f.name, ['done'], 90_000);
  const { maxInFlight, chunkRequests } = proxy.stats;
  const chunks = Math.ceil(f.size / MiB);
  assert.ok(chunkRequests >= chunks, `${chunkRequests} chunk requests for ${chunks} chunks of 1 MiB`);
  assert.ok(maxInFlight <= 2, `the server saw ${maxInFlight} chunk requests in flight at once (limit 2)`);
  assert.ok(maxInFlight >= 2, `at most ${maxInFlight} chunk request was in flight at once: no parallelism`);
  await assertDownloadMatches(page, f);
  return `${chunkRequests} chunk requests, at most ${maxInFlight} in flight`;
});

let uppyBundle = null;
async function bundleUppy() {
  if (uppyBundle) return uppyBundle;
  const esbuild = await import('esbuild');
  const outfile = join(WORK, 'uppy.bundle.js');
  await esbuild.build({
    entryPoints: [join(HERE, 'uppy-entry.js')],
    bundle: true,
    format: 'iife',
    platform: 'browser',
    target: 'chrome120',
    outfile,
    logLevel: 'error',
  });
  uppyBundle = outfile;
  return outfile;
}

/**
 * Uppy (its tus plugin is tus-js-client) uploads FIX.uppy to `ferry` from a test page on
 * another origin, one request at a time (no parallelUploads). `browser` and `onPage(page)`
 * (called before the page loads) are for the https variant. Returns { url, result, page, note }.
 */
async function uppyInterop(t, ferry, { browser, onPage } = {}) {
  const bundle = await bundleUppy();
  const f = FIX.uppy;
  const html = '<!doctype html><meta charset="utf-8"><title>Uppy → ferry</title><script src="/uppy.js"></script><p>Uppy test page</p>';
  // The test page lives on its own origin, as an application embedding Uppy would: the
  // uploads to ferry are cross-origin and go through its CORS answers.
  const site = await t.static({
    '/uppy.html': { type: 'text/html; charset=utf-8', body: html },
    '/uppy.js': { type: 'text/javascript; charset=utf-8', file: bundle },
    '/fixture.bin': { type: 'application/octet-stream', file: f.path },
  });
  const ctx = await t.context({}, browser);
  const page = await ctx.newPage();
  if (onPage) await onPage(page);
  await page.goto(`${site.url}/uppy.html`);
  const result = await page.evaluate(
    async ({ endpoint, name }) => {
      const data = await (await fetch('/fixture.bin')).blob();
      const uppy = new window.Uppy({ autoProceed: false });
      const progress = [];
      uppy.use(window.UppyTus, { endpoint, chunkSize: 4 * 1024 * 1024, retryDelays: [0, 1000, 3000] });
      uppy.on('upload-progress', (_file, p) => progress.push(p.bytesUploaded));
      uppy.addFile({ name, type: 'application/octet-stream', data });
      const res = await uppy.upload();
      return {
        successful: (res?.successful || []).map((x) => ({ name: x.name, uploadURL: x.uploadURL || x.response?.uploadURL })),
        failed: (res?.failed || []).map((x) => ({ name: x.name, error: String(x.error) })),
        progressEvents: progress.length,
      };
    },
    { endpoint: `${ferry.url}/files/`, name: f.name },
  );
  assert.deepEqual(result.failed, [], `Uppy reported failures: ${JSON.stringify(result.failed)}`);
  assert.equal(result.successful.length, 1, `Uppy result: ${JSON.stringify(result)}`);
  const url = result.successful[0].uploadURL;
  assert.ok(url && url.startsWith(`${ferry.url}/files/`), `uploadURL ${url} is not under ${ferry.url}/files/`);
  await assertUrlHolds(url, f);
  const res = await request(url, { method: 'HEAD' });
  const cd = res.headers.get('content-disposition') || '';
  assert.ok(cd.includes(f.name), `Content-Disposition "${cd}" does not carry the name Uppy sent (${f.name})`);
  const got = await bytesReceived(ferry.url);
  const note = `${fmt(f.size)} in ${Math.ceil(f.size / (4 * MiB))} PATCHes (${result.progressEvents} progress events), server received ${fmt(got.tus)} on tus`;
  return { url, result, page, note };
}

scenario('interop: Uppy (@uppy/core + @uppy/tus) uploads to ferry from a page, bytes identical', async (t) => {
  const ferry = await t.ferry();
  return (await uppyInterop(t, ferry)).note;
});

scenario('screenshots mid-upload (1280×800, 390×844, 中文, done); phone layout has no horizontal scroll', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 8 * MiB });
  const files = [FIX.big, FIX.odd, FIX.named];
  // Layout problems are collected, not thrown at once, so that every screenshot is taken.
  const problems = [];
  const checkWidth = async (page, width, when) => {
    const o = await layoutOverflow(page, width);
    if (o.scrollWidth > width) problems.push(`${when}: scrollWidth ${o.scrollWidth} > the ${width} px of the screen (horizontal scroll; innerWidth ${o.innerWidth})`);
    if (o.outside.length) problems.push(`${when}: elements reach past the ${width} px of the screen: ${o.outside.join('; ')}`);
  };

  const desk = await t.context({ viewport: { width: 1280, height: 800 } });
  const page = await t.page(desk, `${proxy.url}/`);
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  await waitConfirmed(page, FIX.big.name, 1);
  for (const f of [FIX.odd, FIX.named]) await waitRow(page, f.name, ['done'], 30_000);
  await waitSpeedShown(page, FIX.big.name);
  await page.screenshot({ path: t.artifact('screenshot-desktop.png') });
  await checkWidth(page, 1280, 'desktop mid-upload');
  const enText = await page.evaluate(() => document.body.innerText);
  await page.selectOption('#lang', 'zh');
  const lang = await page.evaluate(() => document.documentElement.lang);
  assert.match(lang, /^zh/, `<html lang> is "${lang}" after choosing zh`);
  const zhText = await page.evaluate(() => document.body.innerText);
  assert.notEqual(zhText, enText, 'the page text did not change after choosing zh');
  assert.match(zhText, /[\u4e00-\u9fff]/, 'no Chinese characters on the page after choosing zh');
  await page.screenshot({ path: t.artifact('screenshot-zh.png') });
  await checkWidth(page, 1280, 'desktop in Chinese');
  proxy.setRate(0);
  for (const f of files) await waitRow(page, f.name, ['done'], 60_000);
  await page.screenshot({ path: t.artifact('screenshot-done.png'), fullPage: true });

  proxy.setRate(8 * MiB);
  const PHONE_W = 390;
  const phone = await t.context({ viewport: { width: PHONE_W, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
  const p2 = await t.page(phone, `${proxy.url}/`);
  await checkWidth(p2, PHONE_W, 'phone, empty page');
  await p2.setInputFiles('#file-input', files.map((f) => f.path));
  await waitConfirmed(p2, FIX.big.name, 1);
  // The fullest mid-upload state: the small files done, the big one showing speed and time.
  for (const f of [FIX.odd, FIX.named]) await waitRow(p2, f.name, ['done'], 30_000);
  await waitSpeedShown(p2, FIX.big.name);
  await p2.screenshot({ path: t.artifact('screenshot-phone.png') });
  await checkWidth(p2, PHONE_W, 'phone mid-upload');
  await p2.selectOption('#lang', 'zh');
  await p2.screenshot({ path: t.artifact('screenshot-phone-zh.png') });
  await checkWidth(p2, PHONE_W, 'phone mid-upload in Chinese');
  proxy.setRate(0);
  for (const f of files) await waitRow(p2, f.name, ['done'], 60_000);
  await p2.screenshot({ path: t.artifact('screenshot-phone-done.png'), fullPage: true });
  await checkWidth(p2, PHONE_W, 'phone when done');
  if (problems.length) throw new Error(problems.join('\n'));
  return `screenshot-{desktop,zh,done,phone,phone-zh,phone-done}.png in ${ART}`;
});

/** Waits until the row of `name` shows a speed and a time left (mid-upload, measured). */
function waitSpeedShown(page, name) {
  return until(
    () =>
      page.evaluate((name) => {
        const li = [...document.querySelectorAll('#files li.file-row')].find((l) => l.dataset.name === name);
        const text = (sel) => (li?.querySelector(sel)?.textContent || '').trim();
        return { speed: text('.speed'), eta: text('.eta'), state: li?.dataset.state };
      }, name),
    (r) => (r.speed && r.eta) || r.state === 'done',
    { timeout: 10_000, what: (r) => `the row of ${name} to show .speed and .eta (now ${JSON.stringify(r)})` },
  );
}

/**
 * How far the page reaches past `width` px: its scrollWidth, and the visible elements whose
 * box crosses the right (or left) edge. The second catches what a container with overflow:
 * hidden cuts off, which scrollWidth does not show. The yardstick is the screen's width, not
 * innerWidth: in mobile emulation (as on a real phone) a page wider than the device widens
 * the layout viewport, and innerWidth with it.
 */
function layoutOverflow(page, width) {
  return page.evaluate((w) => {
    const outside = [];
    for (const el of document.body.querySelectorAll('*')) {
      const r = el.getBoundingClientRect();
      if (r.width < 2 || r.height < 2 || el.closest('[hidden], template, .visually-hidden')) continue;
      if (getComputedStyle(el).visibility === 'hidden') continue;
      if (r.right > w + 1 || r.left < -1) {
        const id = el.id ? `#${el.id}` : '';
        const cls = typeof el.className === 'string' && el.className.trim() ? `.${el.className.trim().split(/\s+/).join('.')}` : '';
        const text = (el.textContent || '').trim().slice(0, 30);
        outside.push(`${el.tagName.toLowerCase()}${id}${cls} "${text}" [${Math.round(r.left)}–${Math.round(r.right)}]`);
      }
    }
    return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, outside: outside.slice(0, 6) };
  }, width);
}

scenario('language: default from navigator.languages, #lang switches text and <html lang>, kept after reload', async (t) => {
  const ferry = await t.ferry();
  const zhCtx = await t.context({ locale: 'zh-CN' });
  const zh = await t.page(zhCtx, `${ferry.url}/`);
  const zhState = await zh.evaluate(() => ({ lang: document.documentElement.lang, select: document.querySelector('#lang')?.value, text: document.body.innerText }));
  assert.match(zhState.lang, /^zh/, `with navigator.languages zh-CN, <html lang> is "${zhState.lang}"`);
  assert.equal(zhState.select, 'zh', `with navigator.languages zh-CN, #lang is "${zhState.select}"`);

  const enCtx = await t.context({ locale: 'en-US' });
  const en = await t.page(enCtx, `${ferry.url}/`);
  const enState = await en.evaluate(() => ({ lang: document.documentElement.lang, select: document.querySelector('#lang')?.value, text: document.body.innerText }));
  assert.match(enState.lang, /^en/, `with navigator.languages en-US, <html lang> is "${enState.lang}"`);
  assert.equal(enState.select, 'en');
  assert.notEqual(enState.text, zhState.text, 'the zh and en pages show the same text');

  await en.selectOption('#lang', 'zh');
  assert.match(await en.evaluate(() => document.documentElement.lang), /^zh/, '<html lang> after choosing zh');
  await en.reload();
  await en.waitForFunction(() => window.ferry && window.ferry.uploader);
  const kept = await en.evaluate(() => ({ lang: document.documentElement.lang, select: document.querySelector('#lang')?.value }));
  assert.match(kept.lang, /^zh/, `after a reload the chosen zh was not kept (<html lang> "${kept.lang}")`);
  assert.equal(kept.select, 'zh');
});

scenario('keyboard and screen readers: Tab reaches the picker and row buttons, #status is aria-live and speaks', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 8 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const focused = () =>
    page.evaluate(() => {
      const el = document.activeElement;
      return el ? { id: el.id, tag: el.tagName, action: el.dataset?.action || null, inRow: !!el.closest('li.file-row') } : null;
    });
  const tabUntil = async (accept, max, what) => {
    const seen = [];
    for (let i = 0; i < max; i++) {
      await page.keyboard.press('Tab');
      const f = await focused();
      seen.push(f && (f.id ? `#${f.id}` : f.action ? `[${f.action}]` : f.tag));
      if (f && accept(f)) return f;
    }
    throw new Error(`${max} Tab presses never reached ${what}; focus went: ${seen.join(' → ')}`);
  };
  await tabUntil((f) => f.id === 'file-input' || f.id === 'pick-button', 30, 'the file picker (#file-input or #pick-button)');

  const status = await page.evaluate(() => {
    const s = document.querySelector('#status');
    return s && { live: s.getAttribute('aria-live'), text: s.textContent.trim() };
  });
  assert.ok(status, 'no #status element');
  assert.equal(status.live, 'polite', `#status has aria-live="${status.live}"`);

  const f = FIX.big;
  await page.setInputFiles('#file-input', f.path);
  await waitConfirmed(page, f.name, 1);
  const a11y = await page.evaluate((name) => {
    const li = [...document.querySelectorAll('#files li.file-row')].find((l) => l.dataset.name === name);
    const p = li && li.querySelector('progress');
    return p && { label: p.getAttribute('aria-label') || p.getAttribute('aria-labelledby') || (p.labels && p.labels.length ? 'label' : ''), now: p.getAttribute('aria-valuenow') };
  }, f.name);
  assert.ok(a11y, 'the row has no <progress>');
  assert.ok(a11y.label, 'the row\'s <progress> has no accessible label (aria-label, aria-labelledby or <label>)');
  const pause = await tabUntil((x) => x.inRow && x.action === 'pause', 60, 'the row\'s pause button');
  assert.equal(pause.action, 'pause');
  await page.keyboard.press('Enter');
  await waitRow(page, f.name, ['paused'], 5000);
  const spoken = await until(() => page.evaluate(() => document.querySelector('#status').textContent.trim()), (s) => s.length > 0, {
    timeout: 3000,
    what: () => '#status to announce something after a state change',
  });
  return `#status said: "${spoken.slice(0, 80)}"`;
});

scenario('a 503 with Retry-After: the row shows retrying, waits as told, then completes', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const f = FIX.mid;
  let patches = 0;
  proxy.failNext((req) => req.method === 'PATCH' && ++patches === 2, {
    status: 503,
    headers: { 'Retry-After': '2', 'Tus-Resumable': '1.0.0', 'Content-Type': 'text/plain' },
    body: 'injected: try again in 2 s',
  });
  await page.setInputFiles('#file-input', f.path);
  const seen = await waitRow(page, f.name, ['retrying', 'done'], 30_000);
  assert.equal(seen.state, 'retrying', 'the row never showed "retrying" after a 503 (it finished without being seen waiting)');
  await waitRow(page, f.name, ['done'], 60_000);
  await assertDownloadMatches(page, f);
  const [injected] = proxy.stats.injected;
  assert.ok(injected, 'no PATCH got the injected 503');
  const next = proxy.stats.seen.find((r) => r.at > injected.at && r.method !== 'OPTIONS');
  assert.ok(next, 'no request after the 503');
  const waited = next.at - injected.at;
  assert.ok(waited >= 1900, `the next request (${next.method} ${next.path}) came ${Math.round(waited)} ms after a 503 with Retry-After: 2`);
  return `next request ${Math.round(waited)} ms after the 503 (${next.method})`;
});

scenario('a file over the server\'s size limit fails at once with an understandable error (tus and chunk)', async (t) => {
  const ferry = await t.ferry(['--max-upload-size', '1MiB']);
  const f = FIX.drop; // 3 MiB
  const details = [];
  for (const query of ['', '?protocol=chunk']) {
    const ctx = await t.context();
    const page = await t.page(ctx, `${ferry.url}/${query}`);
    const t0 = performance.now();
    await page.setInputFiles('#file-input', f.path);
    const row = await waitRow(page, f.name, ['failed'], 15_000);
    const secs = (performance.now() - t0) / 1000;
    const what = query || '(tus)';
    assert.ok(secs < 10, `${what}: it took ${secs.toFixed(1)} s to fail: a 413 must not be retried`);
    assert.ok(row.error.length >= 10, `${what}: the failed row's .error says "${row.error}"`);
    assert.ok(!/^(http_)?\d{3}$|^[a-z_]+$/.test(row.error), `${what}: .error is a code, not a sentence: "${row.error}"`);
    const info = await upInfo(page, f.name);
    assert.equal(info.state, 'failed');
    details.push(`${what}: "${row.error.slice(0, 70)}"`);
  }
  return details.join('; ');
});

scenario('a server with a token: refused with an understandable error, then done once #token is set', async (t) => {
  const token = 'browser-test-token-8f1c';
  const ferry = await t.ferry(['--auth-token', token]);
  const ctx = await t.context();
  const page = await t.page(ctx, `${ferry.url}/`);
  const f = FIX.odd;
  await page.setInputFiles('#file-input', f.path);
  const failed = await waitRow(page, f.name, ['failed'], 15_000);
  assert.ok(failed.error.length >= 10 && !/^[a-z_0-9]+$/.test(failed.error), `the refused row's .error says "${failed.error}"`);
  // The access token lives in the settings (beyond the README's page contract: #token).
  await page.locator('#settings > summary').click();
  await page.locator('#token').fill(token);
  await page.locator('#token').press('Tab'); // commits the field (change event)
  const after = await until(() => rowInfo(page, f.name), (r) => r && r.state !== 'failed', { timeout: 3000 }).catch(() => null);
  if (!after) {
    t.note('the row did not retry by itself after the token was set; pressing its retry button');
    await page.locator(`#files li.file-row[data-name="${f.name}"] button[data-action="retry"]`).click();
  }
  await waitRow(page, f.name, ['done'], 30_000);
  const row = await rowInfo(page, f.name);
  const got = await fetch(row.href, { headers: { Authorization: `Bearer ${token}` } });
  const bytes = Buffer.from(await got.arrayBuffer());
  assert.equal(got.status, 200, `GET ${row.href} with the token → ${got.status}`);
  assert.equal(createHash('sha256').update(bytes).digest('hex'), f.sha, 'the downloaded bytes differ from the source');
  return `refused first: "${failed.error.slice(0, 60)}"; ${after ? 'retried by itself' : 'retried by its button'} once the token was set`;
});

// The chunk dialect through the same cuts: 2 MiB chunks, so that what is in flight at the
// cut (at most `concurrency` chunks) stays far below the 0.3× of slack.
const CHUNK_QUERY = '?protocol=chunk&chunkSize=2097152';
scenario('chunk dialect: network cut mid-upload, then done; < 1.3× size received', (t) => networkCut(t, CHUNK_QUERY));
scenario('chunk dialect: page reload mid-upload, same file again: resumes, < 1.3× size received', (t) => reloadResume(t, CHUNK_QUERY));

scenario('four files: at most 3 upload at once (the 4th queued); #pause-all, #resume-all', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 8 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const files = [FIX.big, FIX.mid, FIX.conc, FIX.twice];
  const states = () => page.evaluate(() => [...document.querySelectorAll('#files li.file-row')].map((l) => l.dataset.state));
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  await until(states, (s) => s.length === files.length, { timeout: 5000, what: (s) => `${files.length} rows (now ${s.length})` });
  let maxActive = 0;
  let sawQueued = false;
  for (let i = 0; i < 15; i++) {
    const s = await states();
    maxActive = Math.max(maxActive, s.filter((x) => ['hashing', 'uploading', 'retrying'].includes(x)).length);
    sawQueued ||= s.includes('queued');
    await sleep(100);
  }
  assert.ok(maxActive <= 3, `${maxActive} files were uploading at once (parallelUploads: 3)`);
  assert.ok(sawQueued, 'no row was "queued" while 4 files waited for 3 places');
  assert.ok(t.creates.length <= 3, `${t.creates.length} tus uploads were created while only 3 may run`);

  await page.click('#pause-all');
  await until(states, (s) => s.every((x) => x === 'paused' || x === 'done'), {
    timeout: 5000,
    what: (s) => `every row paused after #pause-all (now ${s.join(', ')})`,
  });
  await sleep(500);
  const m1 = await bytesReceived(ferry.url);
  await sleep(1000);
  const m2 = await bytesReceived(ferry.url);
  assert.equal(m2.total, m1.total, `the server received ${m2.total - m1.total} bytes while everything was paused`);

  proxy.setRate(0);
  await page.click('#resume-all');
  for (const f of files) await waitRow(page, f.name, ['done'], 60_000);
  for (const f of files) await assertDownloadMatches(page, f);
  return `at most ${maxActive} at once, a queued row seen; paused all, resumed all, all done`;
});

scenario('#cancel-all removes every upload on the server; "forget" drops an unfinished upload', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 8 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const files = [FIX.big, FIX.mid];
  await page.setInputFiles('#file-input', files.map((f) => f.path));
  for (const f of files) await waitConfirmed(page, f.name, 1);
  assert.equal(t.creates.length, 2, `${t.creates.length} tus uploads for 2 files`);
  await page.click('#cancel-all');
  for (const f of files) {
    await until(() => rowInfo(page, f.name), (r) => !r || r.state === 'canceled', {
      timeout: 5000,
      what: (r) => `the row of ${f.name} to be removed or 'canceled' after #cancel-all (now ${r && r.state})`,
    });
  }
  for (const url of t.creates.map((u) => onFerry(ferry, u))) {
    await until(() => tusHeadStatus(url), (h) => h.status === 404, {
      timeout: 5000,
      interval: 200,
      what: (h) => `HEAD ${url} to answer 404 after #cancel-all (answers ${h.status})`,
    });
  }
  // The records go as the cancellations finish (the stored ones asynchronously).
  await until(() => page.evaluate(() => window.ferry.uploader.unfinished()), (left) => left.length === 0, {
    timeout: 5000,
    interval: 100,
    what: (left) => `no record to remain after #cancel-all (${JSON.stringify(left.map((r) => [r.name, r.confirmed, r.url]))})`,
  });

  // Forget: an upload interrupted by a reload, then dropped from the unfinished list.
  const f = FIX.twice;
  await page.setInputFiles('#file-input', f.path);
  await waitConfirmed(page, f.name, 1);
  await page.reload();
  await page.waitForFunction(() => window.ferry && window.ferry.uploader, null, { timeout: 10_000 });
  const rowSel = `#unfinished li.unfinished-row[data-name="${f.name}"]`;
  await page.waitForSelector(rowSel, { timeout: 5000 });
  await page.click(`${rowSel} button[data-action="forget"]`);
  await until(() => page.locator(rowSel).count(), (n) => n === 0, { timeout: 5000, what: () => `${rowSel} to go after "forget"` });
  const left = await page.evaluate(() => window.ferry.uploader.unfinished());
  assert.ok(!left.some((r) => r.name === f.name), 'the record is still in uploader.unfinished() after "forget"');
  await page.reload();
  await page.waitForFunction(() => window.ferry && window.ferry.uploader, null, { timeout: 10_000 });
  await sleep(500);
  assert.equal(await page.locator(rowSel).count(), 0, 'the forgotten upload is listed again after another reload');
});

scenario('chunk dialect hashes in a Web Worker: the row shows hashing, the page stays responsive', async (t) => {
  const ferry = await t.ferry();
  const ctx = await t.context();
  const page = await ctx.newPage();
  const workers = [];
  page.on('worker', (w) => workers.push(w.url()));
  await t.goto(page, `${ferry.url}/?protocol=chunk`);
  const f = FIX.big;
  // The longest gap between timer ticks on the page's main thread while the file is hashed.
  await page.evaluate(() => {
    window.__lag = { max: 0, last: performance.now() };
    window.__lagTimer = setInterval(() => {
      const now = performance.now();
      window.__lag.max = Math.max(window.__lag.max, now - window.__lag.last);
      window.__lag.last = now;
    }, 10);
  });
  await page.setInputFiles('#file-input', f.path);
  const seen = new Set();
  await until(
    async () => {
      const r = await rowInfo(page, f.name);
      if (r) seen.add(r.state);
      return r;
    },
    (r) => r && (r.state === 'done' || r.state === 'failed'),
    { timeout: 60_000, interval: 20, what: (r) => `the row to finish (now ${r && r.state})` },
  );
  const lag = await page.evaluate(() => {
    clearInterval(window.__lagTimer);
    return window.__lag.max;
  });
  await waitRow(page, f.name, ['done'], 1000);
  assert.ok(seen.has('hashing'), `the row never showed "hashing" (states seen: ${[...seen].join(', ')})`);
  assert.ok(workers.some((u) => u.includes('/sdk/')), `no SDK Web Worker was started (workers: ${workers.join(', ') || 'none'})`);
  // Generous: on two busy cores the main thread stalls for a few hundred ms anyway; hashing
  // 64 MiB on it in one go would take seconds.
  assert.ok(lag < 1000, `the page's main thread stalled for ${Math.round(lag)} ms while hashing`);
  await assertDownloadMatches(page, f);
  return `workers: ${workers.map((u) => new URL(u).pathname).join(', ')}; longest main-thread stall ${Math.round(lag)} ms`;
});

scenario('plain http on a non-local name (no crypto.subtle): tus with the SDK\'s own SHA-256, and the chunk dialect', async (t) => {
  const ferry = await t.ferry();
  // A name that is not loopback to the browser, so the page is not a secure context — as on
  // a LAN address — while the resolver still sends it to 127.0.0.1.
  const host = 'ferry-lan.test';
  const browser = await t.ownBrowser([`--host-resolver-rules=MAP ${host} 127.0.0.1`]);
  const base = `http://${host}:${ferry.port}`;
  const details = [];
  for (const [query, f] of [['', FIX.mid], ['?protocol=chunk', FIX.twice]]) {
    const ctx = await t.context({}, browser);
    const page = await ctx.newPage();
    const patches = [];
    page.on('request', (r) => {
      if (r.method() === 'PATCH') patches.push(r.headers()['upload-checksum'] || '');
    });
    await t.goto(page, `${base}/${query}`);
    const env = await page.evaluate(() => ({ secure: window.isSecureContext, subtle: !!(window.crypto && window.crypto.subtle) }));
    assert.equal(env.secure, false, `${base} is a secure context: the test does not reach the fallback`);
    assert.equal(env.subtle, false, 'crypto.subtle exists on a plain-http page');
    await page.setInputFiles('#file-input', f.path);
    await waitRow(page, f.name, ['done'], 90_000);
    const row = await rowInfo(page, f.name);
    await assertUrlHolds(onFerry(ferry, row.href), f);
    if (!query) {
      assert.ok(patches.length >= 4, `${patches.length} PATCHes for ${fmt(f.size)}`);
      const bad = patches.filter((c) => !/^sha256 [A-Za-z0-9+/]{43}=$/.test(c));
      assert.deepEqual(bad, [], 'PATCHes without an Upload-Checksum: sha256 header');
    }
    details.push(`${query || 'tus'}: done${query ? '' : ` (${patches.length} PATCHes, each with its sha256)`}`);
  }
  return `${base} (isSecureContext false, no crypto.subtle): ${details.join(', ')}`;
});

scenario('a file with a stored FileSystemFileHandle resumes after a reload from "resume-handle", without picking it again', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const f = FIX.big;
  const before = await bytesReceived(ferry.url);
  // A real FileSystemFileHandle without the picker (which headless Chromium cannot drive):
  // the fixture is copied into the origin-private file system, and its handle given to the
  // SDK as the page does for a picked file.
  await page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'test-input';
    input.hidden = true;
    document.body.append(input);
  });
  await page.setInputFiles('#test-input', f.path);
  await page.evaluate(async () => {
    const src = document.querySelector('#test-input').files[0];
    const root = await navigator.storage.getDirectory();
    const handle = await root.getFileHandle(src.name, { create: true });
    const w = await handle.createWritable();
    await w.write(src);
    await w.close();
    window.ferry.uploader.add(await handle.getFile(), { handle });
  });
  await waitConfirmed(page, f.name, 0.4 * f.size);
  const records = await page.evaluate(async () => (await window.ferry.uploader.unfinished()).map((r) => ({ name: r.name, handle: !!r.handle })));
  assert.deepEqual(records, [{ name: f.name, handle: true }], 'the record does not keep the file handle');
  await page.reload();
  await page.waitForFunction(() => window.ferry && window.ferry.uploader, null, { timeout: 10_000 });
  const button = `#unfinished li.unfinished-row[data-name="${f.name}"] button[data-action="resume-handle"]`;
  await page.waitForSelector(button, { timeout: 5000 }).catch(() => {
    throw new Error(`after the reload there is no ${button}`);
  });
  await page.click(button);
  await waitRow(page, f.name, ['done'], 60_000);
  assert.equal(t.creates.length, 1, `the page created ${t.creates.length} tus uploads instead of continuing the first`);
  const received = (await bytesReceived(ferry.url)).total - before.total;
  assert.ok(received < 1.3 * f.size, `the server received ${fmt(received)} for a ${fmt(f.size)} file (≥ 1.3×)`);
  await assertDownloadMatches(page, f);
  return `resumed from the stored handle; received ${(received / f.size).toFixed(3)}× the size`;
});

scenario('an empty file completes in both dialects', async (t) => {
  const ferry = await t.ferry();
  const f = FIX.empty;
  for (const query of ['', '?protocol=chunk']) {
    const ctx = await t.context();
    const page = await t.page(ctx, `${ferry.url}/${query}`);
    await page.setInputFiles('#file-input', f.path);
    await waitRow(page, f.name, ['done'], 15_000);
    await assertDownloadMatches(page, f);
  }
});

scenario('the server is killed (SIGKILL) mid-upload and restarted: the page retries and completes, < 1.3× sent', async (t) => {
  const ferry = await t.ferry();
  const proxy = await t.proxy({ target: ferry.url, rate: 16 * MiB });
  const ctx = await t.context();
  const page = await t.page(ctx, `${proxy.url}/`);
  const f = FIX.big;
  await page.setInputFiles('#file-input', f.path);
  const mid = await waitConfirmed(page, f.name, 0.4 * f.size);
  await ferry.kill9();
  const killedAt = Date.now();
  t.note(`ferry killed at ${fmt(mid.confirmed)} confirmed`);
  const seen = await waitRow(page, f.name, ['retrying', 'offline'], 10_000);
  await sleep(Math.max(0, 2000 - (Date.now() - killedAt)));
  await ferry.restart();
  t.note('ferry restarted on the same port and data dir');
  await waitRow(page, f.name, ['done'], 90_000);
  assert.equal(t.creates.length, 1, `the page created ${t.creates.length} tus uploads instead of continuing the first`);
  // ferry's counters died with it: count what the browser sent through the proxy instead.
  const sent = proxy.stats.bodyBytes;
  assert.ok(sent < 1.3 * f.size, `the browser sent ${fmt(sent)} for a ${fmt(f.size)} file (≥ 1.3×)`);
  await assertDownloadMatches(page, f);
  return `killed at ${fmt(mid.confirmed)}, row went ${seen.state}, restarted after 2 s; sent ${(sent / f.size).toFixed(3)}× the size`;
});

// ---------------------------------------------------------------------------------------
// HTTPS and HTTP/2: ferry's own TLS (--tls-cert/--tls-key, ALPN h2 + http/1.1) with the
// run's self-signed certificate; Chromium started with --ignore-certificate-errors, Node
// trusting the certificate for the server's origin (lib.mjs).

// Resource Timing keeps 250 entries by default; an upload may make more requests than that.
const BIG_TIMING_BUFFER = () => performance.setResourceTimingBufferSize(100_000);

/**
 * Checks, from the page's Resource Timing, that every request it made to `origin`/files/
 * went over HTTP/2 (nextHopProtocol "h2"), and that among them are the upload's own
 * (XHR/fetch) requests. `sent` are the /files/ requests Playwright saw ("METHOD path").
 * Same-origin requests only: for a cross-origin one without Timing-Allow-Origin (ferry
 * sends none) Chromium reports nextHopProtocol "" — use the DevTools protocol's view there.
 */
async function assertFilesOverH2(page, origin, sent) {
  const entries = await page.evaluate(
    (prefix) =>
      performance
        .getEntriesByType('resource')
        .filter((e) => e.name.startsWith(prefix))
        .map((e) => ({ name: e.name, type: e.initiatorType, protocol: e.nextHopProtocol })),
    `${origin}/files/`,
  );
  const uploads = entries.filter((e) => e.type === 'xmlhttprequest' || e.type === 'fetch');
  const writes = sent.filter((r) => r.startsWith('POST ') || r.startsWith('PATCH '));
  assert.ok(writes.length >= 2, `the page sent ${writes.length} POST/PATCH requests to /files/: ${sent.join(', ')}`);
  assert.ok(uploads.length >= writes.length, `Resource Timing lists ${uploads.length} XHR/fetch entries under /files/ for ${writes.length} POST/PATCH requests: ${JSON.stringify(entries)}`);
  const other = entries.filter((e) => e.protocol !== 'h2');
  assert.deepEqual(other, [], 'requests to /files/ that did not go over h2');
  const methods = {};
  for (const r of sent) methods[r.split(' ')[0]] = (methods[r.split(' ')[0]] || 0) + 1;
  return `${entries.length} /files/ requests all h2 (${Object.entries(methods).map(([m, n]) => `${n} ${m}`).join(', ')})`;
}

/**
 * The protocol of each response under /files/ as Chromium's network stack reports it (the
 * DevTools protocol's Network.responseReceived, `response.protocol`), also for cross-origin
 * requests and CORS preflights, which Resource Timing hides or leaves out. Returns a live
 * list of { method, path, type, protocol, status }.
 */
async function networkProtocols(page) {
  const cdp = await page.context().newCDPSession(page);
  const methods = new Map();
  const out = [];
  cdp.on('Network.requestWillBeSent', (e) => methods.set(e.requestId, e.request.method));
  cdp.on('Network.responseReceived', (e) => {
    const u = new URL(e.response.url);
    if (!u.pathname.startsWith('/files/')) return;
    out.push({ method: methods.get(e.requestId) || '?', path: u.pathname, type: e.type, protocol: e.response.protocol, status: e.response.status });
  });
  await cdp.send('Network.enable');
  return out;
}

/** Asserts that `seen` (networkProtocols) holds POST and PATCH responses, all over h2. */
function assertSeenOverH2(seen) {
  const count = (m) => seen.filter((r) => r.method === m).length;
  assert.ok(count('POST') >= 1 && count('PATCH') >= 1, `responses under /files/: ${JSON.stringify(seen)}`);
  const other = seen.filter((r) => r.protocol !== 'h2');
  assert.deepEqual(other, [], 'responses under /files/ that did not come over h2 (DevTools protocol)');
  const methods = {};
  for (const r of seen) methods[r.method] = (methods[r.method] || 0) + 1;
  return `${seen.length} /files/ responses all h2 (${Object.entries(methods).map(([m, n]) => `${n} ${m}`).join(', ')})`;
}

/** Records "METHOD path" of each request `page` sends under /files/. */
function watchFiles(page) {
  const sent = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/files/')) sent.push(`${r.method()} ${u.pathname}`);
  });
  return sent;
}

scenario('https: the upload page over https with HTTP/2 (ferry\'s own TLS): 64 MiB through #file-input, done, bytes identical, /files/ requests h2', async (t) => {
  const ferry = await t.ferry([], { tls: true });
  assert.ok(ferry.url.startsWith('https://'), ferry.url);
  const browser = await t.ownBrowser([], { ignoreCertificateErrors: true });
  const ctx = await t.context({}, browser);
  await ctx.addInitScript(BIG_TIMING_BUFFER);
  const page = await ctx.newPage();
  const sent = watchFiles(page);
  const seen = await networkProtocols(page);
  await t.goto(page, `${ferry.url}/`);
  const doc = await page.evaluate(() => ({ protocol: performance.getEntriesByType('navigation')[0]?.nextHopProtocol, secure: window.isSecureContext }));
  assert.equal(doc.protocol, 'h2', `GET / went over ${doc.protocol}, not h2`);
  const f = FIX.big;
  const t0 = performance.now();
  await page.setInputFiles('#file-input', f.path);
  await waitRow(page, f.name, ['done'], 90_000);
  const secs = (performance.now() - t0) / 1000;
  const href = await assertDownloadMatches(page, f);
  assert.ok(href.startsWith(`${ferry.url}/`), `the download link ${href} is not on ${ferry.url}`);
  assert.deepEqual(t.assetErrors, [], 'some of the page\'s own files did not load');
  assert.equal(t.creates.length, 1, `the page created ${t.creates.length} tus uploads for one file`);
  assert.ok(t.creates[0].startsWith(`${ferry.url}/files/`), `the tus Location ${t.creates[0]} is not https on ${ferry.url}`);
  const h2 = await assertFilesOverH2(page, ferry.url, sent);
  assertSeenOverH2(seen); // the DevTools protocol agrees
  return `${fmt(f.size)} in ${secs.toFixed(1)} s; GET / over h2; ${h2} (Resource Timing nextHopProtocol; DevTools protocol agrees)`;
});

scenario('https: tus-js-client in the page over h2 (Uppy + @uppy/tus to ferry\'s own TLS), bytes identical', async (t) => {
  const ferry = await t.ferry([], { tls: true });
  const browser = await t.ownBrowser([], { ignoreCertificateErrors: true });
  let seen;
  const { url, note } = await uppyInterop(t, ferry, { browser, onPage: async (page) => (seen = await networkProtocols(page)) });
  assert.ok(url.startsWith(`${ferry.url}/files/`), url);
  // The Uppy page is on another origin, so Resource Timing hides nextHopProtocol (ferry sends
  // no Timing-Allow-Origin): the protocol comes from Chromium's network events instead.
  const h2 = assertSeenOverH2(seen);
  return `${note}; ${h2} (DevTools protocol: cross-origin)`;
});

scenario('"Your files": a finished upload is listed with its size and a working link (bytes identical); unfinished ones are not', async (t) => {
  const ferry = await t.ferry();
  // An unfinished tus upload of this (owner-less) user: the API lists it, the section must not.
  const created = await fetch(`${ferry.url}/files/`, {
    method: 'POST',
    headers: { 'Tus-Resumable': '1.0.0', 'Upload-Length': '1000', 'Upload-Metadata': `filename ${Buffer.from('half-done.bin').toString('base64')}` },
  });
  assert.equal(created.status, 201, 'tus creation of the unfinished upload');
  const ctx = await t.context();
  const page = await t.page(ctx, `${ferry.url}/`);
  const yours = () => page.evaluate(() => ({
    visible: !document.querySelector('#your-files-section').hidden,
    heading: document.querySelector('#your-files-heading').textContent,
    items: [...document.querySelectorAll('#your-files li.your-file')].map((li) => ({
      id: li.dataset.id,
      name: li.querySelector('.name').textContent,
      size: li.querySelector('.size').textContent,
      href: li.querySelector('a.download-link')?.href || null,
    })),
  }));
  await sleep(500); // the page's first listing has answered
  const before = await yours();
  assert.equal(before.visible, false, `"Your files" is shown with nothing finished: ${JSON.stringify(before)}`);

  const first = FIX.odd;
  await page.setInputFiles('#file-input', first.path);
  await waitRow(page, first.name, ['done'], 30_000);
  const one = await until(yours, (y) => y.visible && y.items.length === 1, {
    timeout: 10_000,
    what: (y) => `"Your files" to list the finished upload (now ${JSON.stringify(y)})`,
  });
  const item = one.items[0];
  assert.equal(one.heading, 'Your files');
  assert.equal(item.name, first.name);
  assert.match(item.size, /^1(\.\d+)? MiB$/, `size shown as "${item.size}" for ${first.size} bytes`);
  assert.ok(item.href && new URL(item.href).pathname === `/files/${item.id}`, `link ${item.href}`);
  await assertUrlHolds(item.href, first);
  // The link works in the browser too: a click downloads the same bytes.
  const [download] = await Promise.all([
    page.waitForEvent('download', { timeout: 15_000 }),
    page.locator(`#your-files li.your-file[data-id="${item.id}"] a.download-link`).click(),
  ]);
  const saved = await download.path();
  const sha = createHash('sha256').update(readFileSync(saved)).digest('hex');
  assert.equal(sha, first.sha, 'the file the link downloads in the browser differs from the source');
  assert.equal(download.suggestedFilename(), first.name);

  // A second upload: listed first once it finishes (refreshed without a reload).
  const second = FIX.named;
  await page.setInputFiles('#file-input', second.path);
  await waitRow(page, second.name, ['done'], 30_000);
  const two = await until(yours, (y) => y.items.length === 2, {
    timeout: 10_000,
    what: (y) => `"Your files" to list both finished uploads (now ${JSON.stringify(y)})`,
  });
  assert.deepEqual(two.items.map((i) => i.name), [second.name, first.name], 'not newest first');
  await assertUrlHolds(two.items[0].href, second);
  const api = await (await fetch(`${ferry.url}/api/files`)).json();
  assert.equal(api.files.length, 3, `GET /api/files lists ${api.files.length} uploads, expected 3`);
  assert.ok(!two.items.some((i) => i.name === 'half-done.bin'), 'the unfinished upload is listed among finished files');
  // And in Chinese.
  await page.selectOption('#lang', 'zh');
  assert.equal((await yours()).heading, '我的文件');
  return `listed ${two.items.map((i) => `${i.name} (${i.size})`).join(', ')}; link downloaded in the browser, bytes identical`;
});

(await import('./chunk-libs.mjs')).register(scenario); // 27–31: resumable.js, flow.js, simple-uploader.js → /api/resumable

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

const selected = scenarios
  .map((s, i) => ({ ...s, n: i + 1 }))
  .filter((s) => !filters.length || filters.some((f) => (/^\d+$/.test(f) ? String(s.n) === f : s.name.toLowerCase().includes(f.toLowerCase()))));
if (!selected.length) {
  console.error(`no scenario matches ${filters.join(' ')}`);
  process.exit(2);
}

let browser;
try {
  await makeFixtures();
  browser = await launchChromium();
} catch (err) {
  console.error(`setup failed: ${err.stack || err.message}`);
  process.exit(1);
}
console.log(`# Chromium ${browser.version()}, ferry ${ferryBin()}${process.env.FERRY_WEB_DIR ? `, web from ${process.env.FERRY_WEB_DIR}` : ''}; artifacts in ${ART}`);
console.log(`1..${selected.length}`);

let passed = 0;
let failed = 0;
for (const s of selected) {
  const label = `${s.n} - ${s.name}`;
  const left = BUDGET_MS - (performance.now() - started);
  if (left < 5000) {
    console.log(`not ok ${label} # the run's time budget (${BUDGET_MS / 1000} s) is spent`);
    failed++;
    continue;
  }
  const scope = new Scope(browser, s.n, s.name);
  const t0 = performance.now();
  let error = null;
  let detail;
  try {
    detail = await withTimeout(s.fn(scope), Math.min(SCENARIO_TIMEOUT_MS, left), `scenario ${s.n}`);
  } catch (err) {
    error = err;
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (error) scope.note(`FAILED: ${error.stack || error.message}`);
  await scope.finish(!!error);
  if (!error) {
    console.log(`ok ${label} (${secs} s)${detail ? ` — ${detail}` : ''}`);
    passed++;
  } else {
    failed++;
    console.log(`not ok ${label} (${secs} s)`);
    console.log(`  ${String(error.message || error).split('\n').join('\n  ')}`);
    const tail = scope.log.filter((l) => /console\.(error|warn)|PAGE ERROR|request failed|\b[45]\d\d for /.test(l)).slice(-8);
    if (tail.length) console.log(`  page log (last lines):\n    ${tail.join('\n    ')}`);
    console.log(`  artifacts: ${join(ART, `${scope.slug}*`)}`);
  }
}
await browser.close().catch(() => {});
console.log(`# ${((performance.now() - started) / 1000).toFixed(1)} s in all`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
