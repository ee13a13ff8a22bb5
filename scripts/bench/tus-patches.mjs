// Workload 4's client: CONNECTIONS uploads in parallel, each over its own keep-alive
// connection, each sending sequential 256 KiB tus PATCHes for DURATION seconds.
//
//   node tus-patches.mjs BASE_URL CONNECTIONS DURATION_S CHUNK_BYTES UPLOAD_LENGTH [--no-offset-check]
//
// Every upload is created (POST /files/, Upload-Length) before the clock starts. Each PATCH
// must answer 204 and, unless --no-offset-check (the nginx sink), `Upload-Offset` = the
// offset after the chunk; anything else fails the run. An upload that reaches its length is
// replaced by a new one. Prints one JSON line: requests, seconds, rps, p50_ms, p99_ms,
// max_ms, errors.
import http from 'node:http';
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';

const [base, connArg, durArg, chunkArg, lenArg, flag] = process.argv.slice(2);
if (!base || !connArg || !durArg || !chunkArg || !lenArg) {
  console.error('usage: node tus-patches.mjs BASE_URL CONNECTIONS DURATION_S CHUNK_BYTES UPLOAD_LENGTH [--no-offset-check]');
  process.exit(2);
}
const connections = Number(connArg);
const duration = Number(durArg) * 1000;
const chunk = Number(chunkArg);
const length = Number(lenArg);
const checkOffset = flag !== '--no-offset-check';
const body = randomFillSync(Buffer.allocUnsafe(chunk));
const endpoint = new URL('/files/', base);

function request(agent, method, url, headers, payload) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve(res));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

async function create(agent) {
  const res = await request(agent, 'POST', endpoint, {
    'Tus-Resumable': '1.0.0',
    'Upload-Length': String(length),
    'Content-Length': '0',
  });
  if (res.statusCode !== 201 || !res.headers.location) {
    throw new Error(`POST /files/ answered ${res.statusCode} (location: ${res.headers.location})`);
  }
  return new URL(res.headers.location, endpoint);
}

const latencies = [];
const errors = [];
let deadline = 0;

async function worker(agent, first) {
  let url = first;
  let offset = 0;
  while (performance.now() < deadline) {
    if (offset + chunk > length) {
      url = await create(agent);
      offset = 0;
    }
    const t0 = performance.now();
    const res = await request(agent, 'PATCH', url, {
      'Tus-Resumable': '1.0.0',
      'Upload-Offset': String(offset),
      'Content-Type': 'application/offset+octet-stream',
      'Content-Length': String(chunk),
    }, body);
    latencies.push(performance.now() - t0);
    offset += chunk;
    if (res.statusCode !== 204) {
      errors.push(`PATCH ${url} answered ${res.statusCode}`);
      return;
    }
    if (checkOffset && Number(res.headers['upload-offset']) !== offset) {
      errors.push(`PATCH ${url} answered Upload-Offset ${res.headers['upload-offset']}, expected ${offset}`);
      return;
    }
  }
}

const agents = Array.from({ length: connections }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }));
const firsts = [];
for (const agent of agents) firsts.push(await create(agent));
const t0 = performance.now();
deadline = t0 + duration;
try {
  await Promise.all(agents.map((agent, i) => worker(agent, firsts[i])));
} catch (err) {
  errors.push(String(err));
}
const seconds = (performance.now() - t0) / 1000;
latencies.sort((a, b) => a - b);
const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] : null);
console.log(JSON.stringify({
  requests: latencies.length,
  seconds,
  rps: latencies.length / seconds,
  p50_ms: pct(50),
  p99_ms: pct(99),
  max_ms: latencies.length ? latencies[latencies.length - 1] : null,
  errors: errors.slice(0, 5),
}));
for (const agent of agents) agent.destroy();
process.exit(errors.length ? 1 : 0);
