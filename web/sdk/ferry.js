// ferry browser SDK — the entry module. Plain ES modules, no build step, no third-party code.
//
//   import { Uploader, browserEnv, formatBytes } from '/sdk/ferry.js';
//
// The contract is web/README.md ("SDK contract"). Module map:
//   upload.js       Uploader, Upload: queue, states, events, records, retries, network
//   tus.js          tus 1.0.0: HEAD / POST / PATCH with Upload-Checksum, pipelined hashing
//   chunk.js        the chunk-handshake dialect: MD5 ids, handshake, chunk queue
//   env.js          environments: browserEnv (XHR, IndexedDB, workers), nodeEnv (fetch, memory)
//   hashers.js      workerHashers (Web Workers), inThreadHashers (Node, tests)
//   hash-worker.js  the worker; hash-core.js the slice-by-slice hashing it runs
//   md5.js, sha256.js  incremental MD5 (RFC 1321) and SHA-256 (FIPS 180-4)
//   fingerprint.js  the key an upload's record is stored under
//   retry.js, queue.js, progress.js, errors.js, format.js, emitter.js  small parts

export { Uploader, Upload, Session, STATES, DEFAULT_TUS_CHUNK_SIZE } from './upload.js';
export { FerryError, errorFromResponse, isRetryableStatus, parseRetryAfter } from './errors.js';
export {
  browserEnv,
  nodeEnv,
  xhrHttp,
  fetchHttp,
  memoryStore,
  indexedDbStore,
  browserNetwork,
  manualNetwork,
} from './env.js';
export { workerHashers, inThreadHashers } from './hashers.js';
export { fingerprint, sampleOf } from './fingerprint.js';
export { formatBytes, formatRate, formatDuration } from './format.js';
export { backoffDelay, exponentialDelays, DEFAULT_RETRY_DELAYS } from './retry.js';
export { TaskQueue } from './queue.js';
export { SpeedMeter } from './progress.js';
export { Md5, md5Hex } from './md5.js';
export { Sha256, sha256Hex } from './sha256.js';
export { extensionOf, chunkIdsOf, DEFAULT_CHUNK_DIALECT_CHUNK_SIZE } from './chunk.js';
export { encodeMetadata } from './tus.js';
