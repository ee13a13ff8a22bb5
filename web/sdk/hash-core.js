// Hashing a Blob in slices, with flat memory whatever the file's size: the code that runs
// inside the hash worker (hash-worker.js), and on the calling thread for Node and tests
// (hashers.js `inThreadHashers`). No DOM, no Worker API: only Blob, Web Crypto and the
// SDK's own MD5 and SHA-256.

import { Md5 } from './md5.js';
import { Sha256 } from './sha256.js';
import { FerryError } from './errors.js';

/** Bytes read from the file at a time: large enough to amortise the read, small enough to stay flat. */
export const SLICE_SIZE = 8 * 1024 * 1024;

function checkAborted(signal) {
  if (signal?.aborted) throw new FerryError('aborted', 'Hashing was stopped.');
}

/**
 * Yields `[start, end, chunkIndex, lastOfChunk]` for slices of at most `sliceSize` bytes
 * that never straddle a chunk boundary.
 */
export function* slicePlan(size, chunkSize, sliceSize = SLICE_SIZE) {
  for (let c = 0, cs = 0; cs < size; c++, cs += chunkSize) {
    const ce = Math.min(size, cs + chunkSize);
    for (let s = cs; s < ce; s += sliceSize) {
      const e = Math.min(ce, s + sliceSize);
      yield [s, e, c, e === ce];
    }
  }
}

/**
 * Reads the slices of `plan` from `blob` one ahead: the next read is under way while the
 * current slice is hashed, so disk and CPU overlap. At most two slices are held.
 */
async function* readAhead(blob, plan) {
  const it = plan[Symbol.iterator]();
  const read = (r) => (r.done ? null : { slice: r.value, data: blob.slice(r.value[0], r.value[1]).arrayBuffer() });
  let cur = read(it.next());
  while (cur) {
    const next = read(it.next());
    // An abandoned read must not surface as an unhandled rejection.
    next?.data.catch(() => {});
    yield [cur.slice, await cur.data];
    cur = next;
  }
}

/**
 * MD5 of the whole blob and/or of each `chunkSize` chunk of it, in one pass over slices.
 *
 * @param {Blob} blob
 * @param {{chunkSize: number, file?: boolean, chunks?: boolean, sliceSize?: number,
 *          onProgress?: (hashed: number) => void, signal?: AbortSignal}} opts
 * @returns {Promise<{fileMd5: string|null, chunkMd5s: string[]|null}>}
 */
export async function md5Blob(blob, opts) {
  const { chunkSize, file = true, chunks = true, sliceSize = SLICE_SIZE, onProgress, signal } = opts;
  if (!(chunkSize > 0)) throw new FerryError('hash_failed', 'chunkSize must be a positive number of bytes.');
  const fileHash = file ? new Md5() : null;
  const chunkHash = chunks ? new Md5() : null;
  const chunkMd5s = chunks ? [] : null;
  checkAborted(signal);
  for await (const [[, end, , lastOfChunk], buf] of readAhead(blob, slicePlan(blob.size, chunkSize, sliceSize))) {
    checkAborted(signal);
    const bytes = new Uint8Array(buf);
    if (fileHash) fileHash.update(bytes);
    if (chunkHash) {
      chunkHash.update(bytes);
      if (lastOfChunk) {
        chunkMd5s.push(chunkHash.hex());
        chunkHash.reset();
      }
    }
    onProgress?.(end);
  }
  return { fileMd5: fileHash ? fileHash.hex() : null, chunkMd5s };
}

/** Standard base64 of bytes. */
export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

/** Hex of standard base64. */
export function base64ToHex(b64) {
  const s = atob(b64);
  let out = '';
  for (let i = 0; i < s.length; i++) out += s.charCodeAt(i).toString(16).padStart(2, '0');
  return out;
}

/** Whether Web Crypto's digest is usable here (secure contexts only; SPEC §5). */
export function hasSubtle() {
  return typeof globalThis.crypto?.subtle?.digest === 'function';
}

/**
 * SHA-256 of a blob as base64 (the form `Upload-Checksum` carries): Web Crypto when there is
 * one and `forceSoftware` is not set, else the SDK's own implementation over slices.
 *
 * @param {Blob} blob
 * @param {{forceSoftware?: boolean, sliceSize?: number, signal?: AbortSignal}} [opts]
 */
export async function sha256Blob(blob, opts = {}) {
  const { forceSoftware = false, sliceSize = SLICE_SIZE, signal } = opts;
  checkAborted(signal);
  if (!forceSoftware && hasSubtle()) {
    const digest = await globalThis.crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
    checkAborted(signal);
    return toBase64(new Uint8Array(digest));
  }
  const h = new Sha256();
  for await (const [, buf] of readAhead(blob, slicePlan(blob.size, blob.size || 1, sliceSize))) {
    checkAborted(signal);
    h.update(new Uint8Array(buf));
  }
  return toBase64(h.digest());
}
