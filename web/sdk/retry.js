// Backoff for failed requests: the base delays of `retryDelays` (tus-js-client's default
// shape, roughly doubling), each with random jitter so that many clients failing together
// after the same outage do not come back together; a server's `Retry-After` wins when it
// asks for longer (RFC 9110 §10.2.3).

import { FerryError } from './errors.js';

export const DEFAULT_RETRY_DELAYS = [0, 1000, 3000, 5000, 10000, 20000];

/** Jitter added to a base delay: up to half of it, and up to 250 ms for a zero delay. */
export const JITTER_FRACTION = 0.5;
export const MIN_JITTER_MS = 250;

/**
 * The wait before retry number `attempt` (0-based), or null when the retries are used up.
 * The result lies in [base, base + max(base * 0.5, 250)] — except that the first retry of a
 * zero delay is immediate, as tus-js-client does — and never below `retryAfterMs`.
 *
 * @param {number} attempt failures since the last success, minus one
 * @param {number[]} delays base delays in ms
 * @param {{retryAfterMs?: number|null, random?: () => number}} [opts]
 */
export function backoffDelay(attempt, delays = DEFAULT_RETRY_DELAYS, opts = {}) {
  if (attempt >= delays.length) return null;
  const base = Math.max(0, delays[attempt]);
  const random = opts.random || Math.random;
  const spread = attempt === 0 && base === 0 ? 0 : Math.max(base * JITTER_FRACTION, MIN_JITTER_MS);
  const delay = Math.round(base + random() * spread);
  return Math.max(delay, opts.retryAfterMs ?? 0);
}

/**
 * Exponential base delays: `initial * 2^i`, capped at `max`, `count` of them. For
 * `retryDelays: exponentialDelays(500, 30000, 10)` and the like.
 */
export function exponentialDelays(initial = 500, max = 30000, count = 8) {
  return Array.from({ length: count }, (_, i) => Math.min(max, initial * 2 ** i));
}

/** Resolves after `ms`, or rejects with FerryError('aborted') when `signal` aborts first. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new FerryError('aborted'));
      return;
    }
    const done = () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    const timer = setTimeout(done, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new FerryError('aborted'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A signal that aborts when any of `signals` does (AbortSignal.any, which older browsers
 * lack). `dispose()` detaches it so long-lived parents do not collect listeners.
 */
export function anySignal(signals) {
  const ctrl = new AbortController();
  const live = signals.filter(Boolean);
  const onAbort = (e) => ctrl.abort(e?.target?.reason);
  for (const s of live) {
    if (s.aborted) {
      ctrl.abort(s.reason);
      break;
    }
    s.addEventListener('abort', onAbort, { once: true });
  }
  return {
    signal: ctrl.signal,
    dispose() {
      for (const s of live) s.removeEventListener('abort', onAbort);
    },
  };
}
