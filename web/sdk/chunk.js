// The chunk-handshake dialect (SPEC §2.1), as the spark-md5 clients of Chinese front-end
// practice speak it, with instant upload:
//
//   1. one pass over the file (in workers) gives the file's MD5 (`fileId`) and each chunk's
//      MD5; chunk ids are `<md5><index>` so that equal chunks stay distinct;
//   2. POST /api/upload/handshake {fileId, ext, chunkIds, size, chunkSize, fileName}
//      → {code: 0, data: <URL: the server has the file> | <ids still missing>};
//   3. POST /api/upload multipart: chunkId, fileId, then file (ids first, so that ferry
//      streams the bytes to their place instead of spooling them), at most `concurrency`
//      at once → data: ids still missing, or the URL from the chunk that completed it.
//
// A stored record keeps fileId and chunk ids, so a resumed upload skips the hashing pass
// and the handshake says what is left.

import { FerryError, errorFromResponse } from './errors.js';
import { TaskQueue } from './queue.js';

export const DEFAULT_CHUNK_DIALECT_CHUNK_SIZE = 5 * 1024 * 1024;

/** ferry's error codes for a chunk that needs a new handshake rather than a retry. */
const REHANDSHAKE = new Set(['handshake_required', 'unknown_chunk', 'not_found']);

/** ".jpg" for "photo.JPG"; "" when there is no extension ferry accepts (1-16 letters/digits). */
export function extensionOf(name) {
  const m = /\.([A-Za-z0-9]{1,16})$/.exec(name || '');
  return m && m.index > 0 ? `.${m[1].toLowerCase()}` : '';
}

/** Chunk ids as spark-md5 clients make them: the chunk's hex MD5, then its index. */
export function chunkIdsOf(chunkMd5s) {
  return chunkMd5s.map((md5, i) => `${md5}${i}`);
}

/** Parses the `{code, msg, data}` envelope of a 2xx answer; a non-zero code is an error. */
function envelope(res) {
  let body;
  try {
    body = JSON.parse(res.text);
  } catch {
    throw new FerryError('server', 'The server answered with something other than the expected JSON.', { status: res.status, retryable: true });
  }
  if (!body || body.code !== 0) throw errorFromResponse({ ...res, status: body?.code || res.status });
  return body.data;
}

/** Runs a chunk-dialect upload to its end; returns {url, instant}. */
export async function runChunk(up, session) {
  const { env, options } = session;
  const size = up.size;

  // 1. Ids: from the record or an earlier run of this upload, else one hashing pass.
  if (!up.chunkPlan && up.record?.fileId && Array.isArray(up.record.chunkIds) && up.record.chunkSize > 0) {
    up.chunkPlan = { fileId: up.record.fileId, chunkIds: up.record.chunkIds, chunkSize: up.record.chunkSize };
  }
  if (!up.chunkPlan) {
    up._setState('hashing');
    const chunkSize = up.chunkSize;
    const { fileMd5, chunkMd5s } = await env.hashers.fileMd5(up.file, chunkSize, (hashed) => up._hashProgress(hashed), session.signal);
    session.throwIfAborted();
    up.chunkPlan = { fileId: fileMd5, chunkIds: chunkIdsOf(chunkMd5s), chunkSize };
    up._hashProgress(size);
  }
  const { fileId, chunkIds, chunkSize } = up.chunkPlan;
  up._saveRecord({ fileId, chunkIds, chunkSize });
  up._setState('uploading');
  const spanOf = (i) => [i * chunkSize, Math.min(size, (i + 1) * chunkSize)];
  const indexOf = new Map(chunkIds.map((id, i) => [id, i]));
  const held = new Set();
  const noteMissing = (missing) => {
    // Chunks not listed are held. Answers to parallel requests may arrive out of order, so
    // what is known held stays held.
    const miss = new Set(missing);
    for (let i = 0; i < chunkIds.length; i++) if (!miss.has(chunkIds[i])) held.add(i);
    let confirmed = 0;
    for (const i of held) {
      const [s, e] = spanOf(i);
      confirmed += e - s;
    }
    up._confirm(confirmed);
    up._saveRecord({});
  };

  const handshake = () =>
    session.retrying(async () => {
      up._sending();
      const res = await session.request(
        {
          method: 'POST',
          url: up.uploader.url(options.handshakePath),
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ fileId, ext: extensionOf(up.name), chunkIds, size, chunkSize, fileName: up.name }),
        },
        () => true,
      );
      if (res.status < 200 || res.status >= 300) throw errorFromResponse(res);
      return envelope(res);
    });

  // A few rounds: handshake, send what is missing. A second round happens only when the
  // server forgot the upload meanwhile (expiry) or did not name the URL at the end.
  for (let round = 0; round < 3; round++) {
    const data = await handshake();
    if (typeof data === 'string') return { url: data, instant: up.transferred === 0 };
    if (!Array.isArray(data)) throw new FerryError('server', 'The handshake answer has neither a URL nor a list of missing chunks.', { retryable: false });
    noteMissing(data);
    const result = await sendMissing(up, session, data, { fileId, indexOf, spanOf, noteMissing });
    if (result.url) return { url: result.url, instant: false };
  }
  throw new FerryError('server', 'The server did not complete the file after every chunk was sent.', { retryable: false });
}

/** Sends the `missing` chunks through a queue of `concurrency`; returns {url} or {} to re-handshake. */
async function sendMissing(up, session, missing, { fileId, indexOf, spanOf, noteMissing }) {
  const { options, env } = session;
  const queue = new TaskQueue(options.concurrency);
  const round = new AbortController(); // ends the round's other requests on a fatal error
  let url = null;
  let rehandshake = false;
  const offs = [
    env.network?.on?.('offline', () => queue.pause()),
    env.network?.on?.('online', () => queue.resume()),
  ];
  if (env.network && !env.network.online) queue.pause();

  const sendOne = (chunkId) => async () => {
    if (url || rehandshake) return;
    const i = indexOf.get(chunkId);
    if (i === undefined) throw new FerryError('server', `The server asked for chunk ${chunkId}, which this file does not have.`, { retryable: false });
    const [start, end] = spanOf(i);
    const data = await session.retrying(
      async () => {
        const form = new FormData();
        // Ids before the bytes: ferry then streams the chunk to its place (no spooling).
        form.append('chunkId', chunkId);
        form.append('fileId', fileId);
        form.append('file', up.file.slice(start, end), `${up.name || 'blob'}.part${i}`);
        const transfer = up._transfer(end - start);
        up._sending();
        try {
          const res = await session.request(
            { method: 'POST', url: up.uploader.url(options.chunkPath), body: form, signal: round.signal, onUploadProgress: (loaded) => transfer.progress(Math.min(loaded, end - start)) },
            () => true,
          );
          if (res.status < 200 || res.status >= 300) {
            const err = errorFromResponse(res);
            // The server no longer knows this upload or chunk: waiting will not help, a
            // new handshake will.
            if (REHANDSHAKE.has(err.serverCode)) err.retryable = false;
            throw err;
          }
          const d = envelope(res);
          transfer.end(true);
          return d;
        } catch (e) {
          transfer.end(false);
          throw e;
        }
      },
      { signal: round.signal, body: up.file.slice(start, end) },
    );
    if (typeof data === 'string') {
      url = data;
      up._confirm(up.size);
    } else if (Array.isArray(data)) {
      noteMissing(data);
    }
  };

  try {
    await Promise.all(
      missing.map((id) =>
        queue.push(sendOne(id)).catch((e) => {
          // The upload is gone on the server (expired): handshake again, which recreates it.
          if (e instanceof FerryError && (REHANDSHAKE.has(e.serverCode) || e.code === 'not_found') && !rehandshake) {
            rehandshake = true;
            round.abort();
            queue.clear(e);
            return;
          }
          if (rehandshake || url) return;
          round.abort();
          queue.clear(e);
          throw e;
        }),
      ),
    );
  } finally {
    for (const off of offs) off?.();
    round.abort();
  }
  session.throwIfAborted();
  return url ? { url } : {};
}
