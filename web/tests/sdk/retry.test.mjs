// Backoff with jitter, Retry-After (seconds and HTTP-date), and the mapping of server
// answers to FerryError codes and retryability.

import test from 'node:test';
import assert from 'node:assert/strict';
import { backoffDelay, exponentialDelays, DEFAULT_RETRY_DELAYS, MIN_JITTER_MS, sleep } from '../../sdk/retry.js';
import { FerryError, errorFromResponse, parseRetryAfter, isRetryableStatus } from '../../sdk/errors.js';

test('backoff: each delay lies within [base, base + max(base/2, 250ms)]; first zero delay is immediate', () => {
  for (let k = 0; k < 200; k++) {
    DEFAULT_RETRY_DELAYS.forEach((base, attempt) => {
      const d = backoffDelay(attempt, DEFAULT_RETRY_DELAYS);
      const spread = attempt === 0 && base === 0 ? 0 : Math.max(base / 2, MIN_JITTER_MS);
      assert.ok(d >= base && d <= base + spread, `attempt ${attempt}: ${d}`);
    });
  }
  assert.equal(backoffDelay(0, [0]), 0);
  assert.equal(backoffDelay(DEFAULT_RETRY_DELAYS.length, DEFAULT_RETRY_DELAYS), null, 'retries used up');
  // The extremes of the random source.
  assert.equal(backoffDelay(2, [0, 1000, 4000], { random: () => 0 }), 4000);
  assert.equal(backoffDelay(2, [0, 1000, 4000], { random: () => 0.999999 }), 6000);
  assert.equal(backoffDelay(1, [0, 100], { random: () => 0.999999 }), 350);
});

test('backoff: jitter actually spreads clients out', () => {
  const seen = new Set(Array.from({ length: 50 }, () => backoffDelay(3, DEFAULT_RETRY_DELAYS)));
  assert.ok(seen.size > 10);
});

test('backoff: Retry-After wins when it asks for longer', () => {
  assert.equal(backoffDelay(0, [0, 1000], { retryAfterMs: 5000 }), 5000);
  const d = backoffDelay(1, [0, 10000], { retryAfterMs: 2000 });
  assert.ok(d >= 10000);
});

test('exponentialDelays doubles up to the cap', () => {
  assert.deepEqual(exponentialDelays(500, 3000, 6), [500, 1000, 2000, 3000, 3000, 3000]);
});

test('Retry-After: delay-seconds and the three HTTP-date forms', () => {
  const now = Date.UTC(2024, 0, 1, 12, 0, 0);
  assert.equal(parseRetryAfter('0', now), 0);
  assert.equal(parseRetryAfter('7', now), 7000);
  assert.equal(parseRetryAfter(' 120 ', now), 120000);
  assert.equal(parseRetryAfter('Mon, 01 Jan 2024 12:00:30 GMT', now), 30000);
  assert.equal(parseRetryAfter('Monday, 01-Jan-24 12:01:00 GMT', now), 60000);
  assert.equal(parseRetryAfter('Mon Jan  1 12:00:05 2024', now), 5000);
  assert.equal(parseRetryAfter(new Date(now + 42000).toUTCString(), now), 42000);
  assert.equal(parseRetryAfter('Mon, 01 Jan 2024 11:00:00 GMT', now), 0, 'a date in the past: now');
  for (const bad of ['', 'soon', '1.5', '-3', null, undefined]) assert.equal(parseRetryAfter(bad, now), null, String(bad));
  assert.equal(parseRetryAfter('999999999', now), 24 * 3600 * 1000, 'capped at a day');
});

const res = (status, text = '', headers = {}) => ({
  status,
  text,
  headers: { get: (n) => headers[Object.keys(headers).find((k) => k.toLowerCase() === n.toLowerCase())] ?? null },
});

test('errorFromResponse: stable codes, server messages, retryability', () => {
  const cases = [
    [res(460, JSON.stringify({ error: 'checksum_mismatch', message: 'sha256 differs' })), 'checksum_mismatch', false, 'sha256 differs'],
    [res(409, JSON.stringify({ error: 'offset_mismatch', message: 'held 5', offset: 5 })), 'offset_mismatch', true],
    [res(413, JSON.stringify({ code: 413, msg: 'too big', data: null, error: 'too_large' })), 'too_large', false, 'too big'],
    [res(401, ''), 'unauthorized', false],
    [res(404, ''), 'not_found', false],
    [res(410, ''), 'not_found', false],
    [res(422, JSON.stringify({ code: 422, msg: 'bad chunk', data: null, error: 'chunk_digest_mismatch' })), 'checksum_mismatch', false, 'bad chunk'],
    [res(422, JSON.stringify({ code: 422, msg: 'whole', data: null, error: 'file_digest_mismatch' })), 'file_changed', false],
    [res(423, JSON.stringify({ error: 'upload_busy', message: 'busy' })), 'http_423', true],
    [res(429, 'slow down', { 'Retry-After': '3' }), 'http_429', true, 'slow down'],
    [res(500, '<html>oops</html>'), 'server', true],
    [res(503, '', { 'retry-after': '2' }), 'server', true],
    [res(400, JSON.stringify({ error: 'invalid_header', message: 'bad' })), 'http_400', false, 'bad'],
    [res(408, ''), 'http_408', true],
  ];
  for (const [r, code, retryable, message] of cases) {
    const e = errorFromResponse(r);
    assert.ok(e instanceof FerryError && e instanceof Error);
    assert.equal(e.code, code, `status ${r.status}`);
    assert.equal(e.status, r.status);
    assert.equal(e.retryable, retryable, `retryable for ${r.status}`);
    if (message) assert.equal(e.message, message);
    assert.ok(e.message.length > 0);
  }
  assert.equal(errorFromResponse(res(429, '', { 'Retry-After': '3' })).retryAfterMs, 3000);
  assert.equal(errorFromResponse(res(503, '', { 'Retry-After': '2' })).retryAfterMs, 2000);
  assert.equal(errorFromResponse(res(500, '')).retryAfterMs, null);
  for (const s of [408, 409, 423, 429, 500, 502, 503, 504]) assert.ok(isRetryableStatus(s), String(s));
  for (const s of [400, 401, 403, 404, 410, 413, 415, 422, 460]) assert.ok(!isRetryableStatus(s), String(s));
});

test('sleep resolves after the delay and rejects with aborted on abort', async () => {
  const t = Date.now();
  await sleep(30);
  assert.ok(Date.now() - t >= 25);
  const ctrl = new AbortController();
  const p = sleep(10000, ctrl.signal);
  ctrl.abort();
  await assert.rejects(p, (e) => e.code === 'aborted');
});
