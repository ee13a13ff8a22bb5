// The `hashers` part of the environment (web/README.md):
//   fileMd5(blob, chunkSize, onProgress, signal) → {fileMd5, chunkMd5s}
//   sha256(blob, signal) → base64
//
// workerHashers() — the browser's: Web Workers, never the page's main thread. The chunk
//   dialect's pass runs as two jobs on two workers at once, one for the whole-file MD5 and
//   one for the chunk MD5s, so two cores share what is otherwise twice the MD5 work of one.
// inThreadHashers() — the same code on the calling thread, for Node and tests.

import { md5Blob, sha256Blob } from './hash-core.js';
import { FerryError } from './errors.js';

function hashError(name, code, message) {
  if (code === 'aborted' || name === 'AbortError') return new FerryError('aborted', message);
  if (name === 'NotReadableError' || name === 'NotFoundError') {
    return new FerryError('file_changed', undefined, { retryable: false });
  }
  return new FerryError('hash_failed', `The file could not be hashed: ${message}`, { retryable: false });
}

/** Hashers that run on the calling thread (Node, tests, workers of other hosts). */
export function inThreadHashers({ forceSoftwareSha256 = false, sliceSize } = {}) {
  const wrap = async (fn) => {
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FerryError) throw e;
      throw hashError(e?.name, null, String(e?.message || e));
    }
  };
  return {
    fileMd5(blob, chunkSize, onProgress, signal) {
      return wrap(() => md5Blob(blob, { chunkSize, sliceSize, onProgress, signal }));
    },
    sha256(blob, signal) {
      return wrap(() => sha256Blob(blob, { forceSoftware: forceSoftwareSha256, sliceSize, signal }));
    },
  };
}

/**
 * Hashers on a small pool of module workers (`hash-worker.js`, next to this file), created
 * when first needed and ended after `idleMs` without work.
 *
 * @param {{workers?: number, forceSoftwareSha256?: boolean, idleMs?: number,
 *          workerUrl?: URL|string, twoPassMinBytes?: number}} [opts]
 */
export function workerHashers(opts = {}) {
  const {
    workers: max = 2,
    forceSoftwareSha256 = false,
    idleMs = 30000,
    workerUrl = null, // default: hash-worker.js beside this module
    // Below this size one pass on one worker is quicker than starting a second worker.
    twoPassMinBytes = 16 * 1024 * 1024,
  } = opts;
  const pool = []; // {worker, jobs: Map<id, job>, idleTimer}
  let nextId = 1;

  function spawn() {
    let worker;
    try {
      // Written out in full so that tools which follow `new Worker(new URL(…, import.meta.url))`
      // find the worker module.
      worker = workerUrl
        ? new Worker(workerUrl, { type: 'module' })
        : new Worker(new URL('./hash-worker.js', import.meta.url), { type: 'module' });
    } catch (e) {
      throw new FerryError('hash_failed', `A hash worker could not be started: ${e?.message || e}`, { retryable: false });
    }
    const slot = { worker, jobs: new Map(), idleTimer: null };
    worker.onmessage = (event) => {
      const m = event.data;
      const job = slot.jobs.get(m.id);
      if (!job) return;
      if (m.type === 'progress') job.onProgress?.(m.hashed);
      else {
        slot.jobs.delete(m.id);
        job.cleanup();
        if (m.type === 'done') job.resolve(m.result);
        else job.reject(hashError(m.name, m.code, m.message));
        idleCheck(slot);
      }
    };
    worker.onerror = (event) => {
      event.preventDefault?.();
      // A worker that fails to load or crashes takes its jobs with it.
      retire(slot, new FerryError('hash_failed', `The hash worker failed: ${event.message || 'it could not be loaded'}`, { retryable: false }));
    };
    pool.push(slot);
    return slot;
  }

  function retire(slot, error) {
    const i = pool.indexOf(slot);
    if (i >= 0) pool.splice(i, 1);
    clearTimeout(slot.idleTimer);
    slot.worker.terminate();
    for (const job of slot.jobs.values()) {
      job.cleanup();
      job.reject(error);
    }
    slot.jobs.clear();
  }

  function idleCheck(slot) {
    clearTimeout(slot.idleTimer);
    if (slot.jobs.size === 0 && idleMs >= 0) {
      slot.idleTimer = setTimeout(() => {
        if (slot.jobs.size === 0) retire(slot, null);
      }, idleMs);
    }
  }

  /** The least busy worker, not `avoid` when there is a choice; a new one while below max. */
  function pick(avoid) {
    const free = pool.filter((s) => s !== avoid && s.jobs.size === 0);
    if (free.length) return free[0];
    if (pool.length < max) return spawn();
    const candidates = pool.filter((s) => s !== avoid);
    const from = candidates.length ? candidates : pool;
    return from.reduce((a, b) => (b.jobs.size < a.jobs.size ? b : a));
  }

  function run(slot, op, blob, options, onProgress, signal) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new FerryError('aborted'));
        return;
      }
      const id = nextId++;
      const onAbort = () => {
        slot.worker.postMessage({ id, op: 'abort' });
        slot.jobs.delete(id);
        idleCheck(slot);
        reject(new FerryError('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const cleanup = () => signal?.removeEventListener('abort', onAbort);
      clearTimeout(slot.idleTimer);
      slot.jobs.set(id, { resolve, reject, onProgress, cleanup });
      slot.worker.postMessage({ id, op, blob, options });
    });
  }

  return {
    async fileMd5(blob, chunkSize, onProgress, signal) {
      if (max < 2 || blob.size < twoPassMinBytes) {
        return run(pick(), 'md5', blob, { chunkSize, file: true, chunks: true }, onProgress, signal);
      }
      // Two workers: each reads the file (the second read mostly comes from the OS cache)
      // and does half the MD5 work. Progress is the slower of the two.
      const done = [0, 0];
      const report = (i) => (hashed) => {
        done[i] = hashed;
        onProgress?.(Math.min(done[0], done[1]));
      };
      const a = pick();
      const b = pick(a);
      const inner = new AbortController();
      const relay = () => inner.abort();
      signal?.addEventListener('abort', relay, { once: true });
      try {
        const [whole, parts] = await Promise.all([
          run(a, 'md5', blob, { chunkSize, file: true, chunks: false }, report(0), inner.signal),
          run(b, 'md5', blob, { chunkSize, file: false, chunks: true }, report(1), inner.signal),
        ].map((p) => p.catch((e) => {
          inner.abort();
          throw e;
        })));
        return { fileMd5: whole.fileMd5, chunkMd5s: parts.chunkMd5s };
      } finally {
        signal?.removeEventListener('abort', relay);
      }
    },
    async sha256(blob, signal) {
      return run(pick(), 'sha256', blob, { forceSoftware: forceSoftwareSha256 }, null, signal);
    },
    /** Ends every worker now. */
    terminate() {
      for (const slot of pool.slice()) retire(slot, new FerryError('aborted'));
    },
  };
}
