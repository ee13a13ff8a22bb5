// The client of a typical spark-md5 "chunk handshake" front end (seed article 003, protocol
// of article 002), written the way such pages write it. Nothing here knows about ferry or
// about Node: it uses only what a browser page has — the global `SparkMD5` (from
// <script src="spark-md5.min.js">), `FileReader`, `Blob`, `FormData` and `fetch` with
// page-relative URLs — so the same file runs unchanged in a browser.
//
//   <script src="spark-md5.min.js"></script>
//   <script type="module">
//     import { uploadFile } from './seed-client.js';
//     input.onchange = async () => console.log(await uploadFile(input.files[0]));
//   </script>

/**
 * Cut a file into 5 MiB pieces, hashing the whole file and every piece with spark-md5.
 * A piece's id is its MD5 followed by its index, so that two equal pieces stay distinct.
 * @param {File} file
 * @returns {Promise<{fileId: string, ext: string, chunks: {id: string, content: Blob}[], time: number}>}
 */
export function spiltFile(file) {
  return new Promise((resolve, reject) => {
    // Read the piece at the current index.
    function loadNext() {
      const start = chunkIndex * chunkSize;
      const end = Math.min(start + chunkSize, file.size);
      fileReader.readAsArrayBuffer(file.slice(start, end));
    }

    // ".jpg" for "photo.jpg", "" when the name has no dot.
    function extName(filename) {
      const dot = filename.lastIndexOf('.');
      return dot < 0 ? '' : filename.substring(dot);
    }

    const startedAt = Date.now();
    const chunkSize = 5 * 1024 * 1024; // 5 MiB per piece
    const chunkCount = Math.ceil(file.size / chunkSize);
    let chunkIndex = 0;
    const spark = new SparkMD5.ArrayBuffer(); // running MD5 of the whole file
    const fileReader = new FileReader();
    const chunks = [];

    loadNext();

    fileReader.onerror = () => reject(fileReader.error);
    fileReader.onload = (e) => {
      const buffer = e.target.result;
      spark.append(buffer);
      const id = SparkMD5.ArrayBuffer.hash(buffer) + chunkIndex;
      chunkIndex++;
      chunks.push({ id, content: new Blob([buffer]) });
      if (chunkIndex < chunkCount) {
        loadNext();
      } else {
        resolve({
          fileId: spark.end(),
          ext: extName(file.name),
          chunks,
          time: Date.now() - startedAt,
        });
      }
    };
  });
}

// Every answer is {code, msg, data}; a non-zero code is an error whose msg is for people.
async function unwrap(resp) {
  let body;
  try {
    body = await resp.json();
  } catch {
    throw new Error(`upload server answered ${resp.status} without JSON`);
  }
  if (!resp.ok || body.code !== 0) {
    const err = new Error(body.msg || `upload server answered ${resp.status}`);
    err.code = body.code;
    err.status = resp.status;
    throw err;
  }
  return body.data;
}

/**
 * Ask the server what it still needs.
 * @returns {Promise<string|string[]>} the file's URL when the server already has it, else
 *   the ids of the pieces still missing.
 */
export async function handshake(fileId, ext, chunkIds) {
  const resp = await fetch('/api/upload/handshake', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ fileId, ext, chunkIds }),
  });
  return unwrap(resp);
}

/**
 * Send one piece as multipart/form-data.
 * @returns {Promise<string|string[]>} the ids still missing, or the URL once complete.
 */
export async function uploadChunk(fileId, chunk) {
  const form = new FormData();
  form.append('file', chunk.content);
  form.append('chunkId', chunk.id);
  form.append('fileId', fileId);
  const resp = await fetch('/api/upload', { method: 'POST', body: form });
  return unwrap(resp);
}

/**
 * Run async tasks with at most `limit` of them at once; rejects on the first failure.
 * @param {(() => Promise<any>)[]} tasks
 */
export function runQueue(tasks, limit) {
  return new Promise((resolve, reject) => {
    const results = new Array(tasks.length);
    let next = 0;
    let running = 0;
    let failed = false;
    function pump() {
      if (failed) return;
      if (next >= tasks.length && running === 0) {
        resolve(results);
        return;
      }
      while (running < limit && next < tasks.length) {
        const i = next++;
        running++;
        tasks[i]().then(
          (value) => {
            results[i] = value;
            running--;
            pump();
          },
          (err) => {
            failed = true;
            reject(err);
          },
        );
      }
    }
    pump();
  });
}

/**
 * Hash, hand-shake, and upload the missing pieces four at a time.
 * @param {File} file
 * @param {{concurrency?: number, onProgress?: (done: number, total: number) => void}} [options]
 * @returns {Promise<{url: string, fileId: string, sent: string[], instant: boolean}>}
 */
export async function uploadFile(file, { concurrency = 4, onProgress } = {}) {
  const { fileId, ext, chunks } = await spiltFile(file);
  const answer = await handshake(fileId, ext, chunks.map((c) => c.id));
  if (typeof answer === 'string') {
    // The server already has this file: nothing to send ("instant upload").
    return { url: answer, fileId, sent: [], instant: true };
  }
  const missing = new Set(answer);
  const todo = chunks.filter((c) => missing.has(c.id));
  let done = chunks.length - todo.length;
  let url = null;
  const sent = [];
  await runQueue(
    todo.map((chunk) => async () => {
      const data = await uploadChunk(fileId, chunk);
      sent.push(chunk.id);
      onProgress?.(++done, chunks.length);
      if (typeof data === 'string') url = data;
    }),
    concurrency,
  );
  if (!url) {
    // Every piece is there but no answer carried the URL: ask once more.
    const again = await handshake(fileId, ext, chunks.map((c) => c.id));
    if (typeof again !== 'string') {
      throw new Error(`upload incomplete: the server still needs ${again.length} piece(s)`);
    }
    url = again;
  }
  return { url, fileId, sent, instant: false };
}
