// FerryError: every failure the SDK reports, with a stable `code` that a page translates
// into words, the HTTP `status` (0 when there was no response), whether retrying can help,
// and the server's own sentence as `message` where it sent one.
//
// Codes (web/README.md): network, http_<status>, checksum_mismatch, offset_mismatch,
// too_large, unauthorized, not_found, server, out_of_space (507: not retried), aborted,
// file_changed, hash_failed.

export class FerryError extends Error {
  /**
   * @param {string} code stable machine-readable code
   * @param {string} [message] a sentence for people
   * @param {{status?: number, retryable?: boolean, retryAfterMs?: number|null,
   *          serverCode?: string|null, cause?: unknown}} [opts]
   */
  constructor(code, message, opts = {}) {
    super(message || DEFAULT_MESSAGES[code] || code, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'FerryError';
    this.code = code;
    this.status = opts.status ?? 0;
    this.retryable = opts.retryable ?? RETRYABLE_CODES.has(code);
    /** Milliseconds the server asked us to wait (`Retry-After`), or null. */
    this.retryAfterMs = opts.retryAfterMs ?? null;
    /** The server's own error code (ferry's `error` field, e.g. `chunk_digest_mismatch`). */
    this.serverCode = opts.serverCode ?? null;
  }
}

const RETRYABLE_CODES = new Set(['network', 'server', 'offset_mismatch']);

const DEFAULT_MESSAGES = {
  network: 'The server could not be reached; the upload continues when the connection is back.',
  checksum_mismatch: 'The data arrived damaged (checksum mismatch); nothing of it was stored.',
  offset_mismatch: 'The server holds a different amount of this file than expected.',
  too_large: 'The file is larger than the server accepts.',
  unauthorized: 'The server refused the upload: not authorised.',
  not_found: 'The upload no longer exists on the server.',
  server: 'The server had a problem; trying again later may help.',
  out_of_space: 'The server is out of disk space; what it acknowledged is kept. Resume once space is freed.',
  aborted: 'The request was stopped.',
  file_changed: 'The file changed or could not be read since it was chosen; choose it again.',
  hash_failed: 'The file could not be hashed.',
};

/**
 * Statuses worth trying again (web/README.md, Behaviour/Retry): 408, 409 (tus: ask HEAD for
 * the offset and go on), 423 (another request still holds the upload), 429, every 5xx.
 */
export function isRetryableStatus(status) {
  // 507: the server's disk is full; retrying at once only sends bytes it cannot keep.
  return status === 408 || status === 409 || status === 423 || status === 429 || (status >= 500 && status !== 507);
}

/**
 * The FerryError for an HTTP response that was not a success. Reads ferry's JSON error
 * bodies — `{"error", "message"}` (tus and the other fronts) and the chunk dialect's
 * `{"code", "msg", "error"}` envelope — for the sentence and the server's code.
 *
 * @param {{status: number, headers: {get(name: string): string|null}, text: string}} res
 * @param {{now?: () => number}} [opts]
 */
export function errorFromResponse(res, opts = {}) {
  const status = res.status;
  let body = null;
  try {
    body = res.text ? JSON.parse(res.text) : null;
  } catch {
    body = null;
  }
  const serverCode = (body && typeof body.error === 'string' && body.error) || null;
  let message = (body && (typeof body.message === 'string' ? body.message : typeof body.msg === 'string' ? body.msg : '')) || '';
  if (!message && res.text && res.text.length < 300 && !/^\s*</.test(res.text)) message = res.text.trim();
  let code;
  if (status === 460 || serverCode === 'checksum_mismatch' || serverCode === 'chunk_digest_mismatch') code = 'checksum_mismatch';
  else if (serverCode === 'file_digest_mismatch') code = 'file_changed';
  else if (serverCode === 'offset_mismatch') code = 'offset_mismatch';
  else if (status === 413) code = 'too_large';
  else if (status === 401 || (status === 403 && serverCode !== 'file_id_required' && serverCode !== 'final_upload_immutable')) code = 'unauthorized';
  else if (status === 404 || status === 410) code = 'not_found';
  else if (status === 409 && !serverCode) code = 'offset_mismatch';
  else if (status === 507) code = 'out_of_space';
  else if (status >= 500) code = 'server';
  else code = `http_${status}`;
  const retryAfter = res.headers && typeof res.headers.get === 'function' ? res.headers.get('Retry-After') : null;
  return new FerryError(code, message || DEFAULT_MESSAGES[code] || `The server answered HTTP ${status}.`, {
    status,
    retryable: isRetryableStatus(status),
    retryAfterMs: retryAfter != null ? parseRetryAfter(retryAfter, opts.now ? opts.now() : Date.now()) : null,
    serverCode,
  });
}

/**
 * `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date. Returns milliseconds
 * from `nowMs` (never negative), or null when the value is neither.
 */
export function parseRetryAfter(value, nowMs = Date.now()) {
  if (value == null) return null;
  const v = String(value).trim();
  if (/^\d+$/.test(v)) return Math.min(Number(v), 24 * 3600) * 1000;
  // An HTTP-date: IMF-fixdate, or the obsolete RFC 850 and asctime forms, which Date.parse
  // reads in every engine that matters. Plain numbers were handled above, so a bare
  // "2024" cannot be taken for a year.
  if (!/[a-z]/i.test(v)) return null;
  // asctime carries no zone but means GMT; Date.parse would take it as local time.
  const asctime = /^[A-Za-z]{3} [A-Za-z]{3} +\d{1,2} \d\d:\d\d:\d\d \d{4}$/.test(v);
  const at = Date.parse(asctime ? `${v} GMT` : v);
  if (Number.isNaN(at)) return null;
  return Math.max(0, at - nowMs);
}

/** Anything thrown → FerryError (an AbortError becomes `aborted`, a TypeError `network`). */
export function toFerryError(e, fallbackCode = 'network') {
  if (e instanceof FerryError) return e;
  if (e && (e.name === 'AbortError' || e.name === 'TimeoutError')) return new FerryError('aborted', undefined, { cause: e });
  if (e && (e.name === 'NotReadableError' || e.name === 'NotFoundError')) {
    return new FerryError('file_changed', undefined, { cause: e, retryable: false });
  }
  return new FerryError(fallbackCode, e && e.message ? `${DEFAULT_MESSAGES[fallbackCode] || ''} (${e.message})`.trim() : undefined, { cause: e });
}
