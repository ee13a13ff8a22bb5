// Workload 2's client: the unmodified tus-js-client 4.x (Node build) uploads one file in
// fixed-size PATCHes, as an application would.
//
//   node tusjs-upload.mjs ENDPOINT FILE CHUNK_BYTES
//
// The file is read into memory before the clock starts; the time is from upload.start() to
// onSuccess (creation included, one POST). Prints one JSON line: {"seconds": s, "url": u}.
// Retries are off, so any error status fails the run (exit 1).
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import tus from 'tus-js-client';

const [endpoint, file, chunk] = process.argv.slice(2);
if (!endpoint || !file || !chunk) {
  console.error('usage: node tusjs-upload.mjs ENDPOINT FILE CHUNK_BYTES');
  process.exit(2);
}
const data = readFileSync(file);
let patches = 0;
const t0 = performance.now();
const upload = new tus.Upload(data, {
  endpoint,
  chunkSize: Number(chunk),
  retryDelays: null,
  storeFingerprintForResuming: false,
  metadata: { filename: 'bench.bin', filetype: 'application/octet-stream' },
  onChunkComplete: () => {
    patches += 1;
  },
  onError: (err) => {
    console.error(`tus-js-client: ${err}`);
    process.exit(1);
  },
  onSuccess: () => {
    const seconds = (performance.now() - t0) / 1000;
    console.log(JSON.stringify({ seconds, url: upload.url, patches }));
  },
});
upload.start();
