// Infrastructure shared by run.mjs (the browser tests) and bench.mjs (the benchmark):
// ferry servers on free loopback ports, /metrics, random fixture files, a small Node
// reverse proxy that can throttle request bodies and count chunk requests in flight,
// a static server for test-only pages, and the Chromium launch.
//
// Everything here talks to 127.0.0.1 only. A ferry started with `tls` serves HTTPS with a
// self-signed certificate (selfSignedCert); the Node-side helpers that read from servers
// (fetchDigest, bytesReceived, request) trust it for that server's origin.

import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';

export const MiB = 1024 * 1024;
export const HERE = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(HERE, '../../..');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `probe()` until `accept(value)`; throws with `what(last)` on timeout. */
export async function until(probe, accept, { timeout = 30_000, interval = 100, what = () => 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    last = await probe();
    if (accept(last)) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what(last)}`);
    await sleep(interval);
  }
}

/** A throwaway directory under the OS temp dir, removed when the process exits. */
export function workDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function artifactsDir() {
  const dir = process.env.ARTIFACTS_DIR ? resolve(process.env.ARTIFACTS_DIR) : join(HERE, 'artifacts');
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** A free TCP port on 127.0.0.1 (bound, read, released). */
export async function freePort() {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const { port } = srv.address();
  srv.close();
  await once(srv, 'close');
  return port;
}

// ---------------------------------------------------------------------------------------
// Fixtures

export async function sha256File(path) {
  const h = createHash('sha256');
  await pipeline(createReadStream(path), h);
  return h.digest('hex');
}

/**
 * Writes a file of `size` random bytes to dir/name in 4 MiB pieces (memory stays flat) and
 * returns { name, path, size, sha }. lastModified is whatever the filesystem says, so the
 * SDK's fingerprint sees a real, stable file.
 */
export async function randomFixture(dir, name, size) {
  const path = join(dir, name);
  const out = createWriteStream(path);
  const h = createHash('sha256');
  const piece = Buffer.allocUnsafe(4 * MiB);
  for (let left = size; left > 0; ) {
    const n = Math.min(left, piece.length);
    randomFillSync(piece, 0, n);
    const part = Buffer.from(piece.subarray(0, n)); // the stream keeps a reference
    h.update(part);
    if (!out.write(part)) await once(out, 'drain');
    left -= n;
  }
  out.end();
  await once(out, 'close');
  return { name, path, size, sha: h.digest('hex') };
}

// ---------------------------------------------------------------------------------------
// HTTPS with a self-signed certificate

/**
 * Writes a self-signed P-256 certificate for localhost and 127.0.0.1 (valid 2 days, not a
 * CA) to dir/cert.pem and dir/key.pem with openssl; returns { cert, key } (paths).
 */
export function selfSignedCert(dir) {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-addext', 'basicConstraints=critical,CA:FALSE', '-keyout', key, '-out', cert,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { cert, key };
}

// origin (https://127.0.0.1:port) → the PEM of the certificate its server presents. Node 20's
// global fetch cannot be given a CA, so https requests go through node:https with it.
const trusted = new Map();

/** Makes request() (and the helpers on it) trust `certPem` (a PEM string) for `origin`. */
export function trustOrigin(origin, certPem) {
  trusted.set(new URL(origin).origin, certPem);
}

/**
 * A small fetch for Node: for http URLs the global fetch; for https URLs node:https with the
 * CA registered for the origin (trustOrigin; the system's otherwise). Resolves to
 * { status, ok, headers (a Headers), body (async iterable of Buffers), text() }.
 */
export async function request(url, { method = 'GET', headers = {} } = {}) {
  const u = new URL(url);
  if (u.protocol !== 'https:') return fetch(url, { method, headers });
  const ca = trusted.get(u.origin);
  const res = await new Promise((resolve, reject) => {
    const req = https.request(u, { method, headers, ...(ca ? { ca } : {}), agent: false }, resolve);
    req.on('error', reject);
    req.end();
  });
  const hs = new Headers();
  for (const [k, v] of Object.entries(res.headers)) hs.set(k, Array.isArray(v) ? v.join(', ') : String(v));
  return {
    status: res.statusCode,
    ok: res.statusCode >= 200 && res.statusCode < 300,
    headers: hs,
    body: res,
    async text() {
      const parts = [];
      for await (const p of res) parts.push(p);
      return Buffer.concat(parts).toString('utf8');
    },
  };
}

/** GET url and return { status, length, sha, headers } of the body, streamed. */
export async function fetchDigest(url) {
  const res = await request(url);
  const h = createHash('sha256');
  let length = 0;
  if (res.body) {
    for await (const part of res.body) {
      h.update(part);
      length += part.length;
    }
  }
  return { status: res.status, length, sha: h.digest('hex'), headers: res.headers };
}

// ---------------------------------------------------------------------------------------
// ferry servers

// Servers still running when this process ends (an uncaught error, Ctrl-C) are killed with
// it rather than left listening.
const live = new Map(); // child → its data dir
process.on('exit', () => {
  for (const [child, dir] of live) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

/**
 * The ferry binary: FERRY_BIN (absolute, or relative to the current directory or else to the
 * repository root, as scripts/test.sh passes it), or `fallback` under the repository root.
 */
export function ferryBin(fallback = 'target/debug/ferry') {
  const given = process.env.FERRY_BIN;
  const bin = !given ? join(REPO, fallback) : existsSync(resolve(given)) ? resolve(given) : resolve(REPO, given);
  if (!existsSync(bin)) {
    throw new Error(`ferry binary not found at ${bin}: run \`cargo build -p ferry\` or set FERRY_BIN`);
  }
  return bin;
}

/**
 * Starts `ferry serve` on a free port with a fresh data dir; resolves once GET /healthz
 * answers 200. Returns { url, port, dataDir, logPath, log(), kill9(), restart(), stop() }.
 * `env` adds environment variables (e.g. FERRY_WEB_DIR); the server's output goes to
 * logPath. kill9() ends the process as a crash would (data dir kept); restart() starts it
 * again on the same port and data dir. `tls: { cert, key }` (PEM paths, e.g. from
 * selfSignedCert) serves HTTPS (`--tls-cert`/`--tls-key`, as are such flags in `args`):
 * url is then https://127.0.0.1:port, which the certificate's SAN covers, and the
 * certificate is trusted for it by request()/fetchDigest()/bytesReceived().
 */
export async function startFerry({ bin = ferryBin(), logDir, name = 'ferry', env = {}, args = [], tls = null } = {}) {
  const port = await freePort();
  const dataDir = mkdtempSync(join(tmpdir(), 'ferry-browser-data-'));
  const logPath = join(logDir || dataDir, `${name}.log`);
  const logStream = createWriteStream(logPath);
  if (tls) args = [...args, '--tls-cert', tls.cert, '--tls-key', tls.key];
  const certAt = args.indexOf('--tls-cert');
  const url = `${certAt >= 0 ? 'https' : 'http'}://127.0.0.1:${port}`;
  if (certAt >= 0) trustOrigin(url, readFileSync(args[certAt + 1], 'utf8'));
  let child = null;
  let exited = null;

  async function launch() {
    exited = null;
    child = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, ...args], {
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout.pipe(logStream, { end: false });
    child.stderr.pipe(logStream, { end: false });
    live.set(child, dataDir);
    const me = child;
    me.on('exit', (code, signal) => {
      if (me === child) exited = { code, signal };
      live.delete(me);
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (exited) throw new Error(`ferry exited during startup (${JSON.stringify(exited)}); log: ${logPath}\n${safeRead(logPath).slice(-2000)}`);
      try {
        const res = await request(`${url}/healthz`);
        res.body?.resume?.();
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`ferry did not answer /healthz within 15 s; log: ${logPath}`);
      }
      await sleep(50);
    }
  }

  async function end(signal) {
    if (!child || exited) return;
    const me = child;
    const gone = once(me, 'exit').catch(() => {});
    me.kill(signal);
    const t = setTimeout(() => me.kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
  }

  await launch();
  return {
    url,
    port,
    dataDir,
    logPath,
    log: () => safeRead(logPath),
    kill9: () => end('SIGKILL'),
    restart: launch,
    async stop() {
      await end('SIGTERM');
      logStream.end();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

function safeRead(path) {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

/**
 * Reads ferry's /metrics and returns the upload body bytes it has read:
 * { total, tus, chunk, offset, … } — one key per `dialect` label of
 * ferry_bytes_received_total, and `total` the sum of every line of that counter.
 */
export async function bytesReceived(ferryUrl) {
  const text = await (await request(`${ferryUrl}/metrics`)).text();
  const out = { total: 0 };
  for (const line of text.split('\n')) {
    const m = /^ferry_bytes_received_total(?:\{([^}]*)\})?\s+([0-9.eE+-]+)\s*$/.exec(line);
    if (!m) continue;
    const value = Number(m[2]);
    out.total += value;
    const dialect = /dialect="([^"]*)"/.exec(m[1] || '');
    if (dialect) out[dialect[1]] = (out[dialect[1]] || 0) + value;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// A reverse proxy in front of ferry (the "server side of the browser")

/**
 * A Node HTTP reverse proxy to `target` that streams bodies both ways (no buffering) and:
 * - throttles request bodies of every request to `rate` bytes/s in total (one token bucket
 *   for all requests; 0 = unlimited; `setRate` changes it at any time);
 * - counts chunk requests in flight — `POST /api/upload` (and its alias `POST /upload`),
 *   from the moment the request arrives until its response has ended or the connection
 *   closed — and keeps the maximum;
 * - serves `routes` (path → { type, body | file } or a function (req, res)) itself, e.g.
 *   test-only pages at the page's origin;
 * - answers chosen requests itself with an injected failure (`failNext`).
 * The Host header is passed through, so the URLs ferry hands out point back at the proxy.
 */
export async function startProxy({ target, rate = 0, routes = {} } = {}) {
  const port = await freePort();
  const upstream = new URL(target);
  const stats = { inFlight: 0, maxInFlight: 0, chunkRequests: 0, requests: 0, bodyBytes: 0, log: [], injected: [], seen: [] };
  const faults = [];
  const bucket = { rate, next: 0 };

  // The throttle reads the browser's body eagerly (a large writable buffer, no backpressure
  // towards the browser) and lets it out at the bucket's pace. Backpressure would park
  // megabytes in the kernel's socket buffers, where a browser's abort (pause, offline,
  // reload) is only noticed after they drained — so the server would keep receiving bytes
  // the browser had already given up on.
  const throttle = () =>
    new Transform({
      writableHighWaterMark: 64 * 1024 * 1024,
      transform(chunk, _enc, done) {
        stats.bodyBytes += chunk.length;
        if (!bucket.rate) return done(null, chunk);
        // The bucket's clock: this piece may leave once the bytes queued before it have.
        const now = performance.now();
        const start = Math.max(now, bucket.next);
        bucket.next = start + (chunk.length * 1000) / bucket.rate;
        const wait = bucket.next - now;
        if (wait < 1) return done(null, chunk);
        setTimeout(() => done(null, chunk), wait);
      },
    });

  const server = http.createServer((req, res) => {
    stats.requests++;
    const path = req.url.split('?')[0];
    const route = routes[path];
    if (route) return serveRoute(route, req, res);

    const fault = faults.findIndex((f) => f.match(req, path));
    if (fault >= 0) {
      // An injected failure: answered here, the request never reaches ferry.
      const [{ response }] = faults.splice(fault, 1);
      stats.log.push(`${new Date().toISOString()} ${req.method} ${req.url} → injected ${response.status}`);
      stats.injected.push({ at: performance.now(), method: req.method, path, status: response.status });
      req.resume();
      req.on('end', () => {
        res.writeHead(response.status, { 'access-control-allow-origin': '*', 'access-control-expose-headers': '*', ...(response.headers || {}) });
        res.end(response.body || '');
      });
      return;
    }

    const isChunk = req.method === 'POST' && (path === '/api/upload' || path === '/upload');
    let counted = false;
    if (isChunk) {
      counted = true;
      stats.chunkRequests++;
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    }
    const release = () => {
      if (counted) {
        counted = false;
        stats.inFlight--;
      }
    };
    stats.log.push(`${new Date().toISOString()} ${req.method} ${req.url}${isChunk ? ` (in flight: ${stats.inFlight})` : ''}`);
    stats.seen.push({ at: performance.now(), method: req.method, path });
    if (stats.log.length > 200) stats.log.shift();

    const up = http.request(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode, upRes.statusMessage, upRes.rawHeaders);
        upRes.pipe(res);
        upRes.on('error', () => res.destroy());
      },
    );
    up.on('error', (err) => {
      release();
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`proxy: ${err.message}`);
      } else {
        res.destroy();
      }
    });
    // A browser that aborts (pause, offline, reload) closes its connection: cut the
    // upstream request too, so ferry sees the body end early exactly as it would directly.
    const body = throttle();
    res.on('close', () => {
      release();
      if (!res.writableFinished) {
        body.destroy();
        up.destroy();
      }
    });
    req.pipe(body).pipe(up);
  });
  server.keepAliveTimeout = 5000;
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    stats,
    setRate(bps) {
      bucket.rate = bps;
    },
    /**
     * Answers the next request for which `match(req, path)` holds with `response`
     * ({ status, headers, body }) instead of passing it on; once.
     */
    failNext(match, response) {
      faults.push({ match, response });
    },
    resetStats() {
      Object.assign(stats, { inFlight: stats.inFlight, maxInFlight: stats.inFlight, chunkRequests: 0, requests: 0, bodyBytes: 0 });
    },
    async stop() {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** A static server for test-only files: `routes` as in startProxy, and 404 otherwise. */
export async function startStatic(routes) {
  const port = await freePort();
  const server = http.createServer((req, res) => {
    const route = routes[req.url.split('?')[0]];
    if (route) return serveRoute(route, req, res);
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found');
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      server.closeAllConnections();
      server.close();
    },
  };
}

function serveRoute(route, req, res) {
  if (typeof route === 'function') return route(req, res);
  const headers = { 'content-type': route.type || 'application/octet-stream', 'access-control-allow-origin': '*', 'cache-control': 'no-store' };
  if (route.file) {
    headers['content-length'] = statSync(route.file).size;
    res.writeHead(200, headers);
    createReadStream(route.file).pipe(res);
    return;
  }
  res.writeHead(200, headers);
  res.end(route.body);
}

// ---------------------------------------------------------------------------------------
// Chromium

export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * Debian's Chromium (or CHROMIUM_BIN) with CHROMIUM_ARGS and `extraArgs`;
 * `ignoreCertificateErrors` adds --ignore-certificate-errors (for ferry's self-signed TLS).
 */
export async function launchChromium(extraArgs = [], { ignoreCertificateErrors = false } = {}) {
  const { chromium } = await import('playwright-core');
  const executablePath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
  if (!existsSync(executablePath)) {
    throw new Error(`Chromium not found at ${executablePath}: apt-get install -y chromium (or set CHROMIUM_BIN)`);
  }
  const args = [...CHROMIUM_ARGS, ...(ignoreCertificateErrors ? ['--ignore-certificate-errors'] : []), ...extraArgs];
  return chromium.launch({ executablePath, args });
}
