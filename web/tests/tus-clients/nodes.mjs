// tus-js-client (4.x, Node build, unmodified) through a load balancer in front of two ferry
// nodes on one PostgreSQL database and one shared blob directory (ARCHITECTURE.md, "Many
// nodes"): at about 40 % of a 64 MiB upload node A is killed with SIGKILL and the balancer
// sends everything to node B from then on; the client's own retries (retryDelays) must
// finish the upload on B. Node A is then started again on the same data dir and port, and
// the file read from A directly must have the source's sha256.
//
//   FERRY_BIN=target/debug/ferry FERRY_TEST_DATABASE_URL=postgres://… node nodes.mjs
//
// FERRY_TEST_DATABASE_URL is an admin URL of a throwaway cluster (`eval "$(scripts/pg.sh
// start)"`, as scripts/test.sh does): the script makes a database of its own there with
// psql and drops it at the end. FERRY_BIN is absolute, or relative to the current directory
// or else to the repository root (default target/debug/ferry).
//
// The balancer is a small Node HTTP reverse proxy: it streams request and response bodies,
// passes headers through unchanged (Host included, so the tus Location ferry hands out names
// the proxy), answers 502 (Connection: close) when its upstream fails before answering, and
// passes request bodies at 16 MiB/s (FERRY_NODES_RATE), so that the upload takes about 4 s
// and the kill lands inside a PATCH (checked).
// Prints the timings (kill → next 204 PATCH on B, …); exits non-zero on any failure, after
// removing its processes, directories and database either way.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createServer as netServer } from 'node:net';
import { Transform } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import tus from 'tus-js-client';

const { Upload } = tus;
const MiB = 1024 * 1024;
const SIZE = 64 * MiB;
const CHUNK = 4 * MiB;
const KILL_AT = 0.4;
const RETRY_DELAYS = [0, 200, 500, 1000, 2000, 3000];
/// Request bodies pass the load balancer at this rate (bytes/s, over all requests), so the
/// upload lasts a few seconds and the kill lands inside a PATCH rather than between two.
const RATE = Number(process.env.FERRY_NODES_RATE || 16 * MiB);
/// The whole run (the upload, the restart, the download) must end within this.
const TIMEOUT_MS = Number(process.env.FERRY_NODES_TIMEOUT_MS || 180_000);
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

const t0 = Date.now();
const ms = (t) => `${(t / 1000).toFixed(3)} s`;
const note = (msg) => console.log(`[${ms(Date.now() - t0)}] ${msg}`);
const sleep = (n) => new Promise((r) => setTimeout(r, n));

// ---------------------------------------------------------------------------------------
// Set-up and clean-up

function ferryBin() {
  const given = process.env.FERRY_BIN;
  const bin = !given ? join(REPO, 'target/debug/ferry') : existsSync(resolve(given)) ? resolve(given) : resolve(REPO, given);
  if (!existsSync(bin)) throw new Error(`ferry binary not found at ${bin}: run \`cargo build -p ferry\` or set FERRY_BIN`);
  return bin;
}

function freePort() {
  return new Promise((res, rej) => {
    const s = netServer();
    s.on('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function psql(url, sql) {
  const r = spawnSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qc', sql], { encoding: 'utf8' });
  if (r.error) throw new Error(`psql: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`psql ${sql}: ${r.stderr}`);
}

const cleanups = []; // run in reverse at the end, whatever happens
const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {}
  }
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, async () => {
    console.error(`nodes.mjs: ${sig}, cleaning up`);
    await cleanup();
    process.exit(130);
  });
}
let cleaned = false;
async function cleanup() {
  if (cleaned) return;
  cleaned = true;
  for (const f of cleanups.reverse()) {
    try {
      await f();
    } catch (e) {
      console.error(`nodes.mjs: clean-up: ${e.message}`);
    }
  }
}

/** One `ferry serve` node, restartable on the same port, data dir and arguments. */
class Node {
  constructor(name, bin, port, dataDir, args, logPath) {
    Object.assign(this, { name, bin, port, dataDir, args, logPath });
    this.url = `http://127.0.0.1:${port}`;
    this.child = null;
    this.exited = null;
    this.log = createWriteStream(logPath, { flags: 'a' });
    this.starts = 0;
  }

  async start() {
    this.starts += 1;
    this.log.write(`===== start #${this.starts} on port ${this.port} =====\n`);
    // No FERRY_* settings from the caller's environment (scripts/test.sh exports FERRY_URL…),
    // and no ferry.toml from its working directory.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('FERRY_')));
    const child = spawn(this.bin, ['serve', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, ...this.args], {
      cwd: this.dataDir,
      env: { ...env, RUST_LOG: process.env.RUST_LOG || 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    this.exited = null;
    children.add(child);
    child.stdout.pipe(this.log, { end: false });
    child.stderr.pipe(this.log, { end: false });
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (this.child === child) this.exited = { code, signal };
    });
    const began = Date.now();
    for (;;) {
      if (this.exited) throw new Error(`node ${this.name} exited during start-up (${JSON.stringify(this.exited)}):\n${this.tail()}`);
      try {
        const r = await fetch(`${this.url}/healthz`);
        await r.arrayBuffer();
        if (r.ok) return Date.now() - began;
      } catch {
        // not listening yet
      }
      if (Date.now() - began > 30_000) throw new Error(`node ${this.name} did not answer /healthz within 30 s:\n${this.tail()}`);
      await sleep(50);
    }
  }

  kill9() {
    if (this.child && !this.exited) this.child.kill('SIGKILL');
  }

  async stop() {
    const c = this.child;
    if (c && !this.exited) {
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGKILL');
      await gone;
    }
    await new Promise((r) => this.log.end(r));
  }

  tail(n = 40) {
    try {
      return readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/** A pass-through that delays data so that all of them together go at most `rate` bytes/s. */
let clock = 0;
function throttled(rate, passed) {
  return new Transform({
    transform(chunk, _enc, cb) {
      const now = performance.now();
      clock = Math.max(clock, now) + (chunk.length / rate) * 1000;
      const wait = clock - now;
      const go = () => {
        cb(null, chunk);
        passed(chunk.length);
      };
      if (wait >= 1) setTimeout(go, wait);
      else go();
    },
  });
}

/**
 * The load balancer: forwards every request to `proxy.target` (a Node), as it is when the
 * request arrives; bodies streamed both ways, headers unchanged. `events` records each
 * request with the node that got it, the body bytes passed on, and its status or error;
 * `proxy.onForward(ev)` is called after each piece of a request body is passed on.
 */
function startProxy(port, target) {
  const events = [];
  const agents = new Map();
  const agentOf = (node) => {
    if (!agents.has(node)) agents.set(node, new http.Agent({ keepAlive: true }));
    return agents.get(node);
  };
  const proxy = {
    target,
    events,
    onForward: () => {},
    url: `http://127.0.0.1:${port}`,
    server: null,
  };
  proxy.server = http.createServer((req, res) => {
    const node = proxy.target;
    const ev = { at: Date.now() - t0, method: req.method, path: req.url, node: node.name, bytes: 0, status: null, error: null, offset: req.headers['upload-offset'] ?? null };
    events.push(ev);
    const up = http.request(
      { host: '127.0.0.1', port: node.port, method: req.method, path: req.url, headers: req.headers, agent: agentOf(node) },
      (ur) => {
        ev.status = ur.statusCode;
        res.writeHead(ur.statusCode, ur.statusMessage, ur.rawHeaders);
        ur.pipe(res);
        ur.on('error', (e) => {
          ev.error = `response body: ${e.message}`;
          res.destroy(e);
        });
      },
    );
    up.on('error', (e) => {
      ev.error = e.code || e.message;
      if (!res.headersSent) {
        ev.status = 502;
        res.writeHead(502, { 'content-type': 'text/plain', connection: 'close' });
        res.end(`proxy: node ${node.name}: ${e.message}\n`);
      } else {
        res.destroy(e);
      }
    });
    const body = throttled(RATE, (n) => {
      ev.bytes += n;
      proxy.onForward(ev);
    });
    const drop = () => {
      body.destroy();
      up.destroy();
    };
    req.on('error', drop);
    res.on('close', () => {
      if (!req.complete) drop();
    });
    req.pipe(body).pipe(up);
  });
  return new Promise((res, rej) => {
    proxy.server.on('error', rej);
    proxy.server.listen(port, '127.0.0.1', () => res(proxy));
  });
}

/** GET url; { status, length, sha } of the body, hashed as it streams. */
function getDigest(url) {
  return new Promise((res, rej) => {
    http
      .get(url, (r) => {
        const h = createHash('sha256');
        let length = 0;
        r.on('data', (d) => {
          h.update(d);
          length += d.length;
        });
        r.on('end', () => res({ status: r.statusCode, length, sha: h.digest('hex') }));
        r.on('error', rej);
      })
      .on('error', rej);
  });
}

// ---------------------------------------------------------------------------------------
// The run

async function main() {
  const admin = process.env.FERRY_TEST_DATABASE_URL;
  if (!admin) throw new Error('FERRY_TEST_DATABASE_URL is not set: start a throwaway PostgreSQL with `eval "$(scripts/pg.sh start)"`');
  const bin = ferryBin();

  const work = mkdtempSync(join(tmpdir(), 'ferry-nodes-js-'));
  cleanups.push(() => rmSync(work, { recursive: true, force: true }));
  const dbName = `ferry_nodes_js_${randomBytes(6).toString('hex')}`;
  psql(admin, `CREATE DATABASE ${dbName}`);
  cleanups.push(() => psql(admin, `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`));
  const dbUrl = new URL(admin);
  dbUrl.pathname = `/${dbName}`;

  const shared = join(work, 'shared');
  mkdirSync(join(shared, 'files'), { recursive: true });
  const args = ['--database', dbUrl.toString(), '--storage', `file://${join(shared, 'files')}`];
  const [pa, pb, pp] = [await freePort(), await freePort(), await freePort()];
  const nodes = ['a', 'b'].map((n, i) => {
    mkdirSync(join(work, n));
    return new Node(n.toUpperCase(), bin, [pa, pb][i], join(work, n), args, join(work, `${n}.log`));
  });
  const [A, B] = nodes;
  for (const n of nodes) cleanups.push(() => n.stop());
  const started = await Promise.all(nodes.map((n) => n.start()));
  note(`nodes up: A ${A.url} (${started[0]} ms), B ${B.url} (${started[1]} ms), database ${dbName}`);
  const proxy = await startProxy(pp, A);
  cleanups.push(() => new Promise((r) => proxy.server.close(() => r())));
  cleanups.push(() => proxy.server.closeAllConnections());
  note(`load balancer ${proxy.url} → A`);

  const src = join(work, 'source.bin');
  const bytes = randomFillSync(Buffer.allocUnsafe(SIZE));
  writeFileSync(src, bytes);
  const sha = createHash('sha256').update(bytes).digest('hex');

  let failed = false;
  try {
    // -- the upload, with the kill at 40 % ---------------------------------------------------
    // tus-js-client's progress runs ahead of what reaches the server by what the sockets
    // buffer (up to a whole 4 MiB chunk on loopback): 40 % reported arms the kill, which the
    // load balancer then fires once the PATCH it is streaming to A has passed 1 MiB on, so
    // that A dies inside a request body.
    let armedAt = null; // client-reported bytes when 40 % was reported
    let killAt = null; // ms since t0
    let killedAtBytes = null; // bytes the load balancer had passed to A by then
    let nextPatchOk = null; // { at, offset, status } of the first 204 PATCH after the kill
    let resumedFrom = null; // Upload-Offset of the first HEAD after the kill
    const afterKill = []; // client-side view of every exchange after the kill
    proxy.onForward = (ev) => {
      if (armedAt === null || killAt !== null || ev.node !== 'A' || ev.method !== 'PATCH' || ev.bytes < MiB) return;
      A.kill9();
      proxy.target = B;
      killAt = Date.now() - t0;
      killedAtBytes = Number(ev.offset) + ev.bytes;
      note(`kill -9 of A with ${(killedAtBytes / MiB).toFixed(2)} MiB passed to it (${(ev.bytes / MiB).toFixed(2)} MiB into the PATCH at ${(Number(ev.offset) / MiB).toFixed(0)} MiB); the load balancer now sends to B`);
    };
    const started = Date.now();
    const upload = await new Promise((res, rej) => {
      const up = new Upload(createReadStream(src), {
        endpoint: `${proxy.url}/files/`,
        chunkSize: CHUNK,
        retryDelays: RETRY_DELAYS,
        metadata: { filename: 'nodes-64MiB.bin' },
        onProgress(sent, total) {
          if (armedAt === null && sent >= KILL_AT * total) {
            armedAt = sent;
            note(`tus-js-client reports ${(sent / MiB).toFixed(1)} MiB of ${total / MiB} MiB: kill armed`);
          }
        },
        onAfterResponse(req, resp) {
          if (killAt === null) return;
          const at = Date.now() - t0;
          const e = { at, method: req.getMethod(), status: resp.getStatus(), offset: resp.getHeader('Upload-Offset') };
          afterKill.push(e);
          note(`after the kill: ${e.method} → ${e.status}${e.offset != null ? ` (Upload-Offset ${e.offset})` : ''}`);
          if (resumedFrom === null && e.method === 'HEAD' && e.status === 200) resumedFrom = Number(e.offset);
          if (nextPatchOk === null && e.method === 'PATCH' && e.status === 204) nextPatchOk = e;
        },
        onError: rej,
        onSuccess: () => res(up),
      });
      up.start();
    });
    const done = Date.now();
    note(`upload finished: ${upload.url}`);

    // -- what happened around the kill ----------------------------------------------------
    assert.ok(killAt !== null, `node A was not killed (40 % reported: ${armedAt !== null})`);
    assert.ok(
      upload.url.startsWith(`${proxy.url}/`),
      `the tus Location does not go through the load balancer: ${upload.url} (proxy ${proxy.url})`,
    );
    const toA = proxy.events.filter((e) => e.node === 'A');
    const cut = toA.filter((e) => e.error);
    assert.ok(cut.length >= 1, `no request to A was cut by the kill (the kill came between requests): ${JSON.stringify(toA.slice(-3))}`);
    const lateToA = proxy.events.filter((e) => e.node === 'A' && e.at > killAt);
    assert.equal(lateToA.length, 0, `requests reached A after the switch: ${JSON.stringify(lateToA)}`);
    assert.ok(nextPatchOk, `no PATCH succeeded after the kill: ${JSON.stringify(afterKill)}`);
    assert.ok(resumedFrom !== null, `no HEAD after the kill: ${JSON.stringify(afterKill)}`);
    assert.ok(resumedFrom <= killedAtBytes, `B says ${resumedFrom} bytes are held, but only ${killedAtBytes} were sent when A died`);
    const onB = proxy.events.filter((e) => e.node === 'B');
    const refused = onB.filter((e) => e.status !== 200 && e.status !== 204 && e.status !== 201);

    // -- A again, and the file from A directly --------------------------------------------
    const restartMs = await A.start();
    note(`A restarted on ${A.url} (same data dir and arguments) in ${restartMs} ms`);
    const path = new URL(upload.url).pathname;
    for (const n of [A, B]) {
      const got = await getDigest(`${n.url}${path}`);
      assert.equal(got.status, 200, `GET ${path} on ${n.name}: ${got.status}`);
      assert.equal(got.length, SIZE, `GET ${path} on ${n.name}: ${got.length} bytes, the source has ${SIZE}`);
      assert.equal(got.sha, sha, `GET ${path} on ${n.name}: sha256 differs from the source`);
      note(`GET ${path} on ${n.name} directly: ${got.length} bytes, sha256 matches the source`);
    }

    console.log('\ntimings:');
    console.log(`  upload of 64 MiB in 4 MiB chunks, start to finish: ${ms(done - started)}`);
    console.log(`  kill -9 of A with ${(killedAtBytes / MiB).toFixed(2)} MiB passed to it (client reported ${(armedAt / MiB).toFixed(1)} MiB at 40 %), ${ms(killAt)} into the run; cut requests on A: ${cut.map((e) => `${e.method} ${e.error}`).join(', ')}`);
    console.log(`  B's HEAD after the kill: offset ${(resumedFrom / MiB).toFixed(2)} MiB`);
    console.log(`  kill → next successful PATCH (204, on B): ${ms(nextPatchOk.at - killAt)}`);
    console.log(`  answers on B that were not 2xx: ${refused.length ? refused.map((e) => `${e.method} ${e.status}${e.error ? ` ${e.error}` : ''}`).join(', ') : 'none'}`);
    console.log(`  client exchanges after the kill until that PATCH: ${afterKill.filter((e) => e.at <= nextPatchOk.at).map((e) => `${e.method} ${e.status} @+${ms(e.at - killAt)}`).join(', ')}`);
    console.log(`  restart of A: ${restartMs} ms`);
    console.log('nodes.mjs: PASS');
  } catch (e) {
    failed = true;
    console.error(`nodes.mjs: FAIL: ${e.stack || e}`);
    console.error(`--- load balancer, last requests ---\n${proxy.events.slice(-25).map((e) => JSON.stringify(e)).join('\n')}`);
    for (const n of nodes) console.error(`--- node ${n.name} log (tail) ---\n${n.tail()}`);
  }
  return failed ? 1 : 0;
}

const watchdog = setTimeout(async () => {
  console.error(`nodes.mjs: FAIL: not done after ${TIMEOUT_MS} ms`);
  await cleanup();
  process.exit(1);
}, TIMEOUT_MS);

let code = 1;
try {
  code = await main();
} catch (e) {
  console.error(`nodes.mjs: FAIL: ${e.stack || e}`);
} finally {
  await cleanup();
  clearTimeout(watchdog);
}
process.exit(code);
