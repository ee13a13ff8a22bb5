// Test support: a real ferry server for the SDK's end-to-end tests, and an http
// environment wrapper that records (and can tamper with) every request.
//
// The binary is $FERRY_BIN (relative paths from the repository root), default
// target/debug/ferry. Each server gets a free port and a fresh data directory.

import { spawn } from 'node:child_process';
import { mkdtemp, rm, access } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchHttp } from '../../sdk/env.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

export async function startFerry() {
  const bin = path.resolve(ROOT, process.env.FERRY_BIN || 'target/debug/ferry');
  try {
    await access(bin);
  } catch {
    throw new Error(`ferry binary not found at ${bin}: run \`cargo build -p ferry\` or set FERRY_BIN`);
  }
  const dataDir = await mkdtemp(path.join(tmpdir(), 'ferry-sdk-test-'));
  const port = await freePort();
  const child = spawn(bin, ['serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let log = '';
  child.stderr.on('data', (d) => {
    log += d;
  });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`ferry exited with ${child.exitCode}:\n${log}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`ferry did not answer /healthz within 20 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    log: () => log,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Bytes of a request body: a Blob, a string, or a FormData's `file` part. */
export function bodyBytes(body) {
  if (body == null) return 0;
  if (typeof body === 'string') return Buffer.byteLength(body);
  if (body instanceof Blob) return body.size;
  if (typeof FormData !== 'undefined' && body instanceof FormData) return body.get('file')?.size ?? 0;
  return body.byteLength ?? 0;
}

/** What kind of request this is, for counting: tus verbs, handshake, chunk. */
export function kindOf(req) {
  const p = new URL(req.url).pathname;
  if (p.endsWith('/api/upload/handshake')) return 'handshake';
  if (p.endsWith('/api/upload')) return 'chunk';
  return req.method; // POST (tus create), PATCH, HEAD, DELETE
}

/**
 * Wraps an http env: records every request ({kind, method, url, bytes, status, headers}),
 * keeps the peak number in flight per kind, and lets `intercept(req, n)` replace the
 * request (return a new req), answer it (return {response}), or throw.
 */
export function recordingHttp({ inner = fetchHttp(), intercept } = {}) {
  const log = [];
  const inFlight = {};
  const peak = {};
  const counts = {};
  return {
    log,
    peak,
    count: (kind) => log.filter((r) => r.kind === kind).length,
    bytes: (kind) => log.filter((r) => !kind || r.kind === kind).reduce((a, r) => a + (r.status >= 200 && r.status < 300 ? r.bytes : 0), 0),
    async request(req) {
      const kind = kindOf(req);
      counts[kind] = (counts[kind] || 0) + 1;
      const entry = { kind, method: req.method, url: req.url, headers: { ...req.headers }, bytes: bodyBytes(req.body), status: null, at: Date.now() };
      log.push(entry);
      inFlight[kind] = (inFlight[kind] || 0) + 1;
      peak[kind] = Math.max(peak[kind] || 0, inFlight[kind]);
      try {
        const out = intercept ? await intercept(req, counts[kind], kind) : null;
        if (out?.response) {
          entry.status = out.response.status;
          entry.fake = true;
          return out.response;
        }
        const res = await inner.request(out?.req ?? req);
        entry.status = res.status;
        return res;
      } catch (e) {
        entry.status = e.code || 'error';
        throw e;
      } finally {
        inFlight[kind]--;
      }
    },
  };
}

/** A fake HTTP answer for intercept(). */
export function fakeResponse(status, headers = {}, text = '') {
  const h = new Headers(headers);
  return { status, headers: h, text };
}
