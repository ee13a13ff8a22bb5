// The browser's `Worker` class, for Node tests, on worker_threads: enough of it for
// workerHashers (module workers, postMessage of Blobs, onmessage, onerror, terminate).
import { Worker as ThreadWorker } from 'node:worker_threads';

export class NodeWebWorker {
  constructor(url, options = {}) {
    if (options.type !== 'module') throw new TypeError('only module workers are supported');
    this.onmessage = null;
    this.onerror = null;
    this.thread = new ThreadWorker(new URL('./worker-shim.mjs', import.meta.url), { workerData: { url: String(url) } });
    this.thread.on('message', (data) => this.onmessage?.({ data }));
    this.thread.on('error', (e) => this.onerror?.({ message: e.message, preventDefault() {} }));
  }

  postMessage(message) {
    this.thread.postMessage(message);
  }

  terminate() {
    this.thread.terminate();
  }
}

/** Installs NodeWebWorker as globalThis.Worker (where there is none). */
export function installWorker() {
  if (typeof globalThis.Worker === 'undefined') globalThis.Worker = NodeWebWorker;
}
