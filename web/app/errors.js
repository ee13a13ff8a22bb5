// The SDK's FerryError codes (web/README.md) in sentences a person can act on.

import { t } from './i18n.js';

const KNOWN = new Set([
  'network', 'too_large', 'checksum_mismatch', 'offset_mismatch', 'unauthorized', 'not_found',
  'server', 'out_of_space', 'aborted', 'file_changed', 'hash_failed',
]);

/** The code, with the `http_<status>` spellings of known cases folded in. */
export function errorCode(error) {
  const code = error && typeof error.code === 'string' ? error.code : '';
  const status = Number(error && error.status) || Number((code.match(/^http_(\d+)$/) || [])[1]) || 0;
  if (KNOWN.has(code)) return code;
  if (status === 401 || status === 403) return 'unauthorized';
  if (status === 413) return 'too_large';
  if (status === 404 || status === 410) return 'not_found';
  if (status === 460) return 'checksum_mismatch';
  if (status >= 500) return 'server';
  if (status) return 'http';
  return 'unknown';
}

/**
 * `{ text, detail, code }`: `text` is our sentence for the code, `detail` the server's own
 * message when it said something beyond what our sentence says (shown smaller; servers speak
 * English, so it is kept as sent).
 */
export function describeError(error) {
  const code = errorCode(error);
  const status = Number(error && error.status) || 0;
  let text;
  if (code === 'server') text = status ? t('err.server', { status }) : t('err.serverNoStatus');
  else if (code === 'http') text = t('err.http', { status });
  else if (code === 'unknown') text = t('err.unknown');
  else text = t(`err.${code}`);
  const message = error && typeof error.message === 'string' ? error.message.trim() : '';
  // Without a server's sentence the SDK fills `message` with its own English default, which
  // says what our sentence says; a server's message (it sent an error code with it) or the
  // message of an error we have no sentence for adds information.
  const informative = Boolean(error && error.serverCode) || code === 'http' || code === 'unknown';
  const detail = informative && message ? t('err.serverSaid', { message }) : '';
  return { code, text, detail };
}
