// tus 1.0.0 (https://tus.io/protocols/resumable-upload, SPEC §2.3) with the creation,
// termination and checksum extensions:
//
//   HEAD <stored url>            → Upload-Offset: where to continue (404/410: start anew)
//   POST <endpoint>/files/       Upload-Length, Upload-Metadata → 201 Location
//   PATCH <url>                  Upload-Offset, Upload-Checksum: sha256 <b64>,
//                                Content-Type: application/offset+octet-stream
//                                → 204 Upload-Offset
//
// PATCHes are sequential, `chunkSize` bytes each; the SHA-256 of chunk n+1 is computed
// (in a worker) while PATCH n is in flight. After any failed PATCH the next attempt asks
// HEAD first: a body cut off mid-way keeps what arrived (ferry stores it), a 409 means
// another view of the offset, and only the server knows which.

import { FerryError } from './errors.js';

const TUS = { 'Tus-Resumable': '1.0.0' };

/** `Upload-Metadata`: comma-separated `key base64(value)` pairs (tus 1.0.0 creation). */
export function encodeMetadata(meta) {
  return Object.entries(meta)
    .filter(([k, v]) => v != null && /^[^\s,]+$/.test(k))
    .map(([k, v]) => {
      const bytes = new TextEncoder().encode(String(v));
      let bin = '';
      for (const b of bytes) bin += String.fromCharCode(b);
      return bin ? `${k} ${btoa(bin)}` : k;
    })
    .join(',');
}

function offsetOf(res) {
  const v = res.headers.get('Upload-Offset');
  if (v == null || !/^\d+$/.test(v.trim())) {
    throw new FerryError('server', 'The server answered without a valid Upload-Offset header.', { status: res.status, retryable: true });
  }
  return Number(v);
}

/**
 * The offset the server holds for `url`, or null when the upload is gone (404, 410, 403)
 * or is not this file (another length).
 */
async function head(session, url, size) {
  const res = await session.request(
    { method: 'HEAD', url, headers: TUS },
    (s) => s === 200 || s === 204 || s === 404 || s === 410 || s === 403,
  );
  if (res.status === 404 || res.status === 410 || res.status === 403) return null;
  const length = res.headers.get('Upload-Length');
  if (length != null && Number(length) !== size) return null;
  return offsetOf(res);
}

async function create(up, session) {
  const { options } = up.uploader;
  const meta = { filename: up.name, filetype: up.type || null, ...options.metadata, ...up.metadata };
  const endpoint = up.uploader.url(options.tusPath);
  const res = await session.request(
    {
      method: 'POST',
      url: endpoint,
      headers: { ...TUS, 'Upload-Length': String(up.size), 'Upload-Metadata': encodeMetadata(meta) },
    },
    (s) => s === 201,
  );
  const location = res.headers.get('Location');
  if (!location) {
    throw new FerryError('server', 'The server created the upload but sent no Location (is it exposed to scripts by CORS?).', { status: 201, retryable: false });
  }
  // Location may be absolute or relative: resolve it against the creation URL.
  return new URL(location, endpoint).href;
}

/** Runs a tus upload to its end; returns {url, instant: false}. */
export async function runTus(up, session) {
  const { env } = session;
  const size = up.size;
  const chunkSize = up.chunkSize;

  // 1. Where to continue: the URL of this session's earlier run or of the stored record.
  let url = null;
  let offset = 0;
  const known = up.tusUrl || up.record?.url;
  if (known) {
    const held = await session.retrying(() => head(session, known, size));
    if (held !== null) {
      url = known;
      offset = held;
    } else {
      up.tusUrl = null;
      up.record = null;
    }
  }
  if (!url) {
    url = await session.retrying(() => create(up, session));
    offset = 0;
  }
  up.tusUrl = url;
  up._confirm(offset);
  up._saveRecord({ url });

  // 2. PATCHes, each hashed while the previous one is on the wire.
  const hash = (start) => {
    const end = Math.min(size, start + chunkSize);
    const promise = env.hashers.sha256(up.file.slice(start, end), session.signal);
    promise.catch(() => {}); // awaited later, or dropped when the offset moved
    return { start, end, promise };
  };
  let next = null;
  let needHead = false;
  while (offset < size) {
    const cur = next && next.start === offset ? next : hash(offset);
    let checksum;
    try {
      checksum = await cur.promise;
    } catch (e) {
      session.throwIfAborted();
      throw e;
    }
    next = cur.end < size ? hash(cur.end) : null;
    const step = async () => {
      if (needHead) {
        const held = await head(session, url, size);
        if (held === null) throw new FerryError('not_found', 'The upload expired or was removed on the server; start it again.', { status: 404, retryable: false });
        needHead = false;
        if (held !== cur.start) return held; // somewhere else than this chunk: re-plan
      }
      const body = up.file.slice(cur.start, cur.end);
      const transfer = up._transfer(body.size);
      up._sending();
      let res;
      try {
        res = await session.request(
          {
            method: 'PATCH',
            url,
            headers: {
              ...TUS,
              'Upload-Offset': String(cur.start),
              'Content-Type': 'application/offset+octet-stream',
              'Upload-Checksum': `sha256 ${checksum}`,
            },
            body,
            onUploadProgress: (loaded) => transfer.progress(loaded),
          },
          (s) => s === 204 || s === 200,
        );
      } catch (e) {
        transfer.end(false);
        throw e;
      }
      transfer.end(true);
      return offsetOf(res);
    };
    offset = await session.retrying(step, {
      body: up.file.slice(cur.start, cur.end),
      onFailure: (e) => {
        // 460 stored nothing and the offset is known; anything else may have moved it.
        if (e.code !== 'checksum_mismatch') needHead = true;
      },
    });
    if (offset > size) throw new FerryError('server', `The server reports ${offset} bytes of a ${size}-byte file.`, { retryable: false });
    up._confirm(offset);
    up._saveRecord({});
  }
  return { url, instant: false };
}
