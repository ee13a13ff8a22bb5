// Runs a Web Worker module (hash-worker.js) inside a Node worker thread: `self`,
// `postMessage` and `onmessage` as a dedicated worker has them. Messages that arrive while
// the module loads are held and delivered once it has set `onmessage`, as a browser does.
import { parentPort, workerData } from 'node:worker_threads';

globalThis.self = globalThis;
globalThis.postMessage = (message) => parentPort.postMessage(message);
const early = [];
let loaded = false;
parentPort.on('message', (data) => (loaded ? globalThis.onmessage?.({ data }) : early.push(data)));
await import(workerData.url);
loaded = true;
for (const data of early.splice(0)) globalThis.onmessage?.({ data });
