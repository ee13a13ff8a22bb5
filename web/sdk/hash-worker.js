// The hash worker: MD5 (file and chunks) and SHA-256 of Blobs, off the page's main thread.
//
// Protocol (messages from hashers.js):
//   → {id, op: 'md5', blob, options: {chunkSize, file, chunks, sliceSize}}
//   → {id, op: 'sha256', blob, options: {forceSoftware}}
//   → {id, op: 'abort'}
//   ← {id, type: 'progress', hashed}      (md5 only, after each slice)
//   ← {id, type: 'done', result}
//   ← {id, type: 'error', name, code, message}
// Jobs run concurrently: each awaits its slice reads, so an abort message is seen between
// slices.

import { md5Blob, sha256Blob } from './hash-core.js';

const jobs = new Map();

self.onmessage = async (event) => {
  const { id, op, blob, options = {} } = event.data || {};
  if (op === 'abort') {
    jobs.get(id)?.abort();
    return;
  }
  const ctrl = new AbortController();
  jobs.set(id, ctrl);
  try {
    let result;
    if (op === 'md5') {
      result = await md5Blob(blob, {
        ...options,
        signal: ctrl.signal,
        onProgress: (hashed) => self.postMessage({ id, type: 'progress', hashed }),
      });
    } else if (op === 'sha256') {
      result = await sha256Blob(blob, { ...options, signal: ctrl.signal });
    } else {
      throw new Error(`unknown hash operation ${op}`);
    }
    self.postMessage({ id, type: 'done', result });
  } catch (e) {
    self.postMessage({ id, type: 'error', name: e?.name || 'Error', code: e?.code || null, message: String(e?.message || e) });
  } finally {
    jobs.delete(id);
  }
};
