// Throughput of the SDK's own MD5 and SHA-256 in this Node (V8), beside node:crypto
// (OpenSSL) for scale. Not a test: `node web/tests/sdk/bench-hash.mjs [MiB] [runs]`.
// Hashes a random buffer in 8 MiB updates (as the workers do with file slices) and reports
// the best of the runs in MB/s (10^6 bytes per second), since other load only slows runs.

import crypto from 'node:crypto';
import { Md5 } from '../../sdk/md5.js';
import { Sha256 } from '../../sdk/sha256.js';

const mib = Number(process.argv[2] || 128);
const runs = Number(process.argv[3] || 5);
const buf = crypto.randomBytes(mib * 1024 * 1024);
const SLICE = 8 * 1024 * 1024;

function best(fn) {
  let top = 0;
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    fn();
    const mbs = buf.length / 1e6 / ((performance.now() - t) / 1000);
    top = Math.max(top, mbs);
  }
  return Math.round(top);
}

const own = (H) => () => {
  const h = new H();
  for (let i = 0; i < buf.length; i += SLICE) h.update(buf.subarray(i, i + SLICE));
  h.digest();
};
const native = (alg) => () => crypto.createHash(alg).update(buf).digest();

const rows = [
  ['md5 (ferry JS)', best(own(Md5))],
  ['md5 (node:crypto)', best(native('md5'))],
  ['sha256 (ferry JS)', best(own(Sha256))],
  ['sha256 (node:crypto)', best(native('sha256'))],
];
console.log(`${mib} MiB, best of ${runs}, Node ${process.version}`);
for (const [name, v] of rows) console.log(`${name.padEnd(22)} ${String(v).padStart(5)} MB/s`);
