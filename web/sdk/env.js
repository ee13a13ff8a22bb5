// The environment the SDK runs in, behind small interfaces (web/README.md, "Environment
// interfaces"), so that the upload logic runs unchanged in a browser, in Node tests and in
// other hosts:
//
//   http.request({method, url, headers, body, signal, onUploadProgress})
//       → Promise<{status, headers: {get(name)}, text}>; rejects with FerryError
//         ('network' | 'aborted'). Any HTTP status resolves.
//   store.get(key) / put(key, value) / delete(key) / list()   (all async)
//   hashers.fileMd5(blob, chunkSize, onProgress, signal) / sha256(blob, signal)
//   network.online, network.on('online' | 'offline', fn) → unsubscribe
//   now() → milliseconds (monotonic where the host has a monotonic clock)

import { FerryError } from './errors.js';
import { workerHashers, inThreadHashers } from './hashers.js';
import { Emitter } from './emitter.js';

/**
 * HTTP over XMLHttpRequest: the one browser API that reports upload progress. A request
 * that makes no progress for `stallTimeoutMs` (nothing sent, nothing received) is treated
 * as a network failure, because a dead connection otherwise hangs until the OS gives up.
 */
export function xhrHttp({ stallTimeoutMs = 60000 } = {}) {
  return {
    request({ method, url, headers = {}, body = null, signal, onUploadProgress }) {
      return new Promise((resolve, reject) => {
        if (signal?.aborted) {
          reject(new FerryError('aborted'));
          return;
        }
        const xhr = new XMLHttpRequest();
        let settled = false;
        let stallTimer = null;
        const finish = (fn, value) => {
          if (settled) return;
          settled = true;
          clearTimeout(stallTimer);
          signal?.removeEventListener('abort', onAbort);
          fn(value);
        };
        const poke = () => {
          clearTimeout(stallTimer);
          if (stallTimeoutMs > 0) {
            stallTimer = setTimeout(() => {
              xhr.abort();
              finish(reject, new FerryError('network', `No progress for ${Math.round(stallTimeoutMs / 1000)} s; the connection seems lost.`));
            }, stallTimeoutMs);
          }
        };
        const onAbort = () => {
          xhr.abort();
          finish(reject, new FerryError('aborted'));
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        xhr.open(method, url, true);
        for (const [k, v] of Object.entries(headers)) xhr.setRequestHeader(k, v);
        if (onUploadProgress && body != null) {
          xhr.upload.onprogress = (e) => {
            poke();
            onUploadProgress(e.loaded, e.lengthComputable ? e.total : null);
          };
        }
        xhr.onprogress = poke;
        xhr.onreadystatechange = poke;
        xhr.onload = () =>
          finish(resolve, {
            status: xhr.status,
            headers: { get: (name) => xhr.getResponseHeader(name) },
            text: typeof xhr.responseText === 'string' ? xhr.responseText : '',
          });
        xhr.onerror = () => finish(reject, new FerryError('network'));
        xhr.ontimeout = () => finish(reject, new FerryError('network'));
        xhr.onabort = () => finish(reject, new FerryError('aborted'));
        poke();
        xhr.send(body);
      });
    },
  };
}

/**
 * HTTP over fetch (Node 18+, Deno, browsers): no upload progress, so the SDK counts a
 * request's bytes when it completes.
 */
export function fetchHttp({ fetch: fetchFn = globalThis.fetch } = {}) {
  return {
    async request({ method, url, headers = {}, body = null, signal }) {
      if (signal?.aborted) throw new FerryError('aborted');
      let res;
      let text;
      try {
        res = await fetchFn(url, { method, headers, body: body ?? undefined, signal });
        text = method === 'HEAD' ? '' : await res.text();
      } catch (e) {
        if (signal?.aborted || e?.name === 'AbortError') throw new FerryError('aborted', undefined, { cause: e });
        throw new FerryError('network', undefined, { cause: e });
      }
      return { status: res.status, headers: res.headers, text };
    },
  };
}

/** Records in memory (structured clones, as IndexedDB keeps them); lost with the process. */
export function memoryStore(initial = []) {
  const map = new Map(initial);
  const clone = (v) => (v === undefined ? undefined : structuredClone(v));
  return {
    async get(key) {
      return clone(map.get(key));
    },
    async put(key, value) {
      map.set(key, clone(value));
    },
    async delete(key) {
      map.delete(key);
    },
    async list() {
      return [...map.values()].map(clone);
    },
  };
}

/**
 * Records in IndexedDB (database `ferry`, object store `uploads`, out-of-line keys), which
 * can hold a FileSystemFileHandle. Falls back to memory where IndexedDB cannot be opened
 * (some private modes), so an upload still works, only without resume after a reload.
 */
export function indexedDbStore({ dbName = 'ferry', storeName = 'uploads' } = {}) {
  let dbPromise = null;
  let fallback = null;
  const open = () => {
    if (!dbPromise) {
      dbPromise = new Promise((resolve, reject) => {
        if (typeof indexedDB === 'undefined') {
          reject(new Error('IndexedDB is not available'));
          return;
        }
        const req = indexedDB.open(dbName, 1);
        req.onupgradeneeded = () => {
          if (!req.result.objectStoreNames.contains(storeName)) req.result.createObjectStore(storeName);
        };
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
        req.onblocked = () => reject(new Error('IndexedDB upgrade blocked by another tab'));
      }).catch((e) => {
        console.warn('ferry: upload records kept in memory only:', e?.message || e);
        fallback = memoryStore();
        return null;
      });
    }
    return dbPromise;
  };
  const tx = async (mode, fn) => {
    const db = await open();
    if (!db) return null;
    return new Promise((resolve, reject) => {
      const t = db.transaction(storeName, mode);
      const req = fn(t.objectStore(storeName));
      t.oncomplete = () => resolve(req.result);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error || new Error('IndexedDB transaction aborted'));
    });
  };
  return {
    async get(key) {
      const v = await tx('readonly', (s) => s.get(key));
      return fallback ? fallback.get(key) : v;
    },
    async put(key, value) {
      await tx('readwrite', (s) => s.put(value, key));
      if (fallback) await fallback.put(key, value);
    },
    async delete(key) {
      await tx('readwrite', (s) => s.delete(key));
      if (fallback) await fallback.delete(key);
    },
    async list() {
      const v = await tx('readonly', (s) => s.getAll());
      return fallback ? fallback.list() : v || [];
    },
  };
}

/** navigator.onLine and the window's online/offline events. */
export function browserNetwork(target = globalThis) {
  return {
    get online() {
      return typeof navigator === 'undefined' || navigator.onLine !== false;
    },
    on(name, fn) {
      target.addEventListener?.(name, fn);
      return () => target.removeEventListener?.(name, fn);
    },
  };
}

/** A network switched by hand: `set(false)` fires 'offline', `set(true)` 'online'. */
export function manualNetwork(online = true) {
  const events = new Emitter();
  return {
    get online() {
      return online;
    },
    set(value) {
      if (value === online) return;
      online = value;
      events.emit(value ? 'online' : 'offline');
    },
    on(name, fn) {
      return events.on(name, fn);
    },
  };
}

const monotonic = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

/**
 * The browser environment: XHR, IndexedDB, hash workers, navigator.onLine.
 * Options: `forceSoftwareSha256`, `hashWorkers` (default 2), `stallTimeoutMs`.
 */
export function browserEnv(opts = {}) {
  return {
    http: xhrHttp({ stallTimeoutMs: opts.stallTimeoutMs }),
    store: indexedDbStore(),
    hashers: workerHashers({ workers: opts.hashWorkers ?? 2, forceSoftwareSha256: opts.forceSoftwareSha256 }),
    network: browserNetwork(),
    now: monotonic,
  };
}

/**
 * An environment for Node and tests: fetch, records in memory, hashing on the calling
 * thread, a network that is online until `network.set(false)`. Any part can be replaced.
 */
export function nodeEnv(opts = {}) {
  return {
    http: opts.http ?? fetchHttp(),
    store: opts.store ?? memoryStore(),
    hashers: opts.hashers ?? inThreadHashers({ forceSoftwareSha256: opts.forceSoftwareSha256 }),
    network: opts.network ?? manualNetwork(true),
    now: opts.now ?? monotonic,
  };
}
