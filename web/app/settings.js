// Upload settings (protocol, chunk size, concurrency) and the access token.
//
// Query parameters preset the settings: ?protocol=chunk&chunkSize=<bytes>&concurrency=<n>.
// The chunk size is kept in bytes; the #chunk-size field shows MiB (fractions allowed, so a
// preset such as 262144 bytes shows as 0.25 and is used exactly). Until the user picks a chunk
// size, it follows the protocol's default (tus 8 MiB, chunk handshake 5 MiB, as the SDK's).
// The token is kept in localStorage and sent as `Authorization: Bearer <token>`.

import { t } from './i18n.js';

const MiB = 1024 * 1024;
const TOKEN_KEY = 'ferry.token';
const DEFAULT_CHUNK = { tus: 8 * MiB, chunk: 5 * MiB };
const MIN_CHUNK = 64 * 1024;
const MAX_CHUNK = 1024 * MiB;

function clampInt(value, min, max) {
  const n = Math.round(Number(value));
  if (!Number.isFinite(n)) return null;
  return Math.min(max, Math.max(min, n));
}

function mibText(bytes) {
  // Up to six decimals, trailing zeros dropped: 8, 5, 0.25, 0.095367.
  return String(Number((bytes / MiB).toFixed(6)));
}

export class Settings {
  constructor() {
    this.protocol = 'tus';
    this.chunkSize = null; // null: the protocol's default
    this.concurrency = 3;
    this.token = '';
    this.listeners = new Set();

    const q = new URLSearchParams(location.search);
    const protocol = q.get('protocol');
    if (protocol === 'tus' || protocol === 'chunk') this.protocol = protocol;
    if (q.has('chunkSize')) this.chunkSize = clampInt(q.get('chunkSize'), 1, MAX_CHUNK);
    if (q.has('concurrency')) this.concurrency = clampInt(q.get('concurrency'), 1, 64) ?? 3;
    try { this.token = localStorage.getItem(TOKEN_KEY) || ''; } catch { /* storage off */ }
  }

  get effectiveChunkSize() {
    return this.chunkSize ?? DEFAULT_CHUNK[this.protocol];
  }

  /** Options for the SDK's Uploader / add(). */
  uploaderOptions() {
    return {
      protocol: this.protocol,
      chunkSize: this.effectiveChunkSize,
      concurrency: this.concurrency,
    };
  }

  /** Request headers the SDK should send (the same object is updated in place). */
  fillHeaders(headers) {
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    else delete headers.Authorization;
    return headers;
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  emit(what) {
    for (const fn of this.listeners) fn(what);
  }

  /** Wires the settings form: fields show the current values, edits update them. */
  bind(form) {
    const protocol = form.querySelector('#protocol');
    const chunk = form.querySelector('#chunk-size');
    const concurrency = form.querySelector('#concurrency');
    const token = form.querySelector('#token');
    const show = form.querySelector('#token-show');

    const render = () => {
      protocol.value = this.protocol;
      chunk.value = mibText(this.effectiveChunkSize);
      chunk.placeholder = mibText(DEFAULT_CHUNK[this.protocol]);
      concurrency.value = String(this.concurrency);
      concurrency.closest('.field').classList.toggle('is-inactive', this.protocol !== 'chunk');
      form.querySelector('#protocol-hint').textContent = t(`settings.protocol.${this.protocol}.hint`);
    };
    render();
    token.value = this.token;

    form.addEventListener('submit', (e) => e.preventDefault());
    protocol.addEventListener('change', () => {
      this.protocol = protocol.value === 'chunk' ? 'chunk' : 'tus';
      render();
      this.emit('protocol');
    });
    chunk.addEventListener('change', () => {
      const mib = Number(chunk.value);
      if (chunk.value.trim() === '' || !Number.isFinite(mib) || mib <= 0) {
        this.chunkSize = null;
      } else {
        this.chunkSize = clampInt(mib * MiB, MIN_CHUNK, MAX_CHUNK);
      }
      render();
      this.emit('chunkSize');
    });
    concurrency.addEventListener('change', () => {
      this.concurrency = clampInt(concurrency.value, 1, 16) ?? 3;
      render();
      this.emit('concurrency');
    });
    token.addEventListener('change', () => {
      this.token = token.value.trim();
      try {
        if (this.token) localStorage.setItem(TOKEN_KEY, this.token);
        else localStorage.removeItem(TOKEN_KEY);
      } catch { /* kept for this visit only */ }
      this.emit('token');
    });
    show.addEventListener('change', () => {
      token.type = show.checked ? 'text' : 'password';
    });
    this.render = render;
  }

  /** One short line for the closed <details>: "tus · 8 MiB" / "chunk · 5 MiB · ×3". */
  describe() {
    const parts = [this.protocol === 'chunk' ? 'MD5 chunk' : 'tus', `${mibText(this.effectiveChunkSize)} MiB`];
    if (this.protocol === 'chunk') parts.push(`×${this.concurrency}`);
    if (this.token) parts.push('Bearer');
    return parts.join(' · ');
  }
}
