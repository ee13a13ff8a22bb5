// Uploader and Upload: the queue of files, each file's state machine, its events, its
// record for resuming, retries and the network. The two protocols (tus.js, chunk.js) are
// plain async functions that run inside a Session and report through the Upload.
//
// States (web/README.md):
//   idle ─start→ queued ─slot free→ hashing/uploading ⇄ retrying/offline → done | failed
//   any active state ─pause→ paused ─resume→ queued;  any state ─cancel→ canceled
// A Session is one run of an upload between start/resume and done/failed/pause/cancel;
// pausing or cancelling aborts the session's signal, which aborts every request and hash
// job of that run. Going offline aborts only the requests (the session's net signal), which
// then wait for 'online' and continue.

import { Emitter } from './emitter.js';
import { FerryError, errorFromResponse, toFerryError } from './errors.js';
import { DEFAULT_RETRY_DELAYS, anySignal, backoffDelay, sleep } from './retry.js';
import { SpeedMeter } from './progress.js';
import { fingerprint as computeFingerprint } from './fingerprint.js';
import { browserEnv } from './env.js';
import { runTus } from './tus.js';
import { runChunk, DEFAULT_CHUNK_DIALECT_CHUNK_SIZE } from './chunk.js';

export const STATES = ['idle', 'queued', 'hashing', 'uploading', 'paused', 'offline', 'retrying', 'done', 'failed', 'canceled'];
const ACTIVE = new Set(['hashing', 'uploading', 'offline', 'retrying']);
const FINAL = new Set(['done', 'canceled']);

export const DEFAULT_TUS_CHUNK_SIZE = 8 * 1024 * 1024;

let uploadSeq = 0;

/** Whether a blob (a slice of the user's file) can still be read. */
async function readable(blob) {
  try {
    await blob.slice(0, Math.min(1, blob.size)).arrayBuffer();
    return true;
  } catch {
    return false;
  }
}

/** One run of an upload: its abort signals, and requests with retries. */
export class Session {
  constructor(upload) {
    this.upload = upload;
    this.env = upload.uploader.env;
    this.options = upload.uploader.options;
    this.ctrl = new AbortController();
    this.netCtrl = new AbortController();
  }

  get signal() {
    return this.ctrl.signal;
  }

  get aborted() {
    return this.ctrl.signal.aborted;
  }

  throwIfAborted() {
    if (this.aborted) throw new FerryError('aborted');
  }

  /** Aborts the requests in flight (not the session): the network went away. */
  dropRequests() {
    const old = this.netCtrl;
    this.netCtrl = new AbortController();
    old.abort();
  }

  /** Resolves when the network is up (state 'offline' meanwhile); rejects on abort. */
  async waitOnline() {
    const network = this.env.network;
    if (!network || network.online) return;
    this.upload._setState('offline');
    await new Promise((resolve, reject) => {
      const off = network.on('online', () => {
        cleanup();
        resolve();
      });
      const onAbort = () => {
        cleanup();
        reject(new FerryError('aborted'));
      };
      const cleanup = () => {
        off?.();
        this.signal.removeEventListener('abort', onAbort);
      };
      this.signal.addEventListener('abort', onAbort, { once: true });
      // The event may have fired between the check above and the subscription.
      if (network.online) {
        cleanup();
        resolve();
      }
    });
  }

  /**
   * One HTTP request with the uploader's headers, aborted with the session or when the
   * network drops. Resolves with the response when `ok(status)`, else throws its FerryError.
   *
   * @param {{method: string, url: string, headers?: object, body?: any, signal?: AbortSignal,
   *          onUploadProgress?: (loaded: number) => void}} req
   * @param {(status: number) => boolean} ok
   */
  async request(req, ok = (s) => s >= 200 && s < 300) {
    this.throwIfAborted();
    await this.waitOnline();
    const sig = anySignal([this.ctrl.signal, this.netCtrl.signal, req.signal]);
    let res;
    try {
      res = await this.env.http.request({
        method: req.method,
        url: req.url,
        headers: { ...this.options.headers, ...req.headers },
        body: req.body ?? null,
        signal: sig.signal,
        onUploadProgress: req.onUploadProgress,
      });
    } catch (e) {
      this.throwIfAborted();
      if (req.signal?.aborted) throw new FerryError('aborted');
      throw toFerryError(e);
    } finally {
      sig.dispose();
    }
    this.throwIfAborted();
    if (!ok(res.status)) throw errorFromResponse(res, { now: () => Date.now() });
    return res;
  }

  /**
   * Runs `step` until it succeeds, retrying what is worth retrying after backoff with
   * jitter (at least what `Retry-After` asked for). Going offline is not a failure: the
   * step is repeated when the network is back, without counting. Failures are counted from
   * the last success, so a long upload over a flaky link keeps going while it moves.
   *
   * @param {() => Promise<T>} step
   * @param {{signal?: AbortSignal, onFailure?: (e: FerryError) => void, body?: Blob}} [opts]
   *   `body`: the file slice the step sends, checked for readability after network errors
   * @returns {Promise<T>}
   * @template T
   */
  async retrying(step, opts = {}) {
    let failures = 0;
    for (;;) {
      this.throwIfAborted();
      if (opts.signal?.aborted) throw new FerryError('aborted');
      try {
        return await step();
      } catch (e) {
        let err = toFerryError(e);
        this.throwIfAborted();
        if (opts.signal?.aborted) throw new FerryError('aborted');
        opts.onFailure?.(err);
        const network = this.env.network;
        if ((err.code === 'aborted' || err.code === 'network') && network && !network.online) {
          await this.waitOnline();
          continue;
        }
        // Aborted from below while online (the network blipped off and on, a stalled
        // connection was dropped): a failure like any network error, counted and delayed.
        if (err.code === 'aborted') err = new FerryError('network', undefined, { cause: err });
        // A network error while sending a file that can no longer be read (moved, edited,
        // deleted) is the file's fault, and no retry will fix it.
        if (err.code === 'network' && opts.body && !(await readable(opts.body))) {
          throw new FerryError('file_changed', undefined, { retryable: false, cause: err });
        }
        if (!err.retryable) throw err;
        const delayMs = backoffDelay(failures, this.options.retryDelays, { retryAfterMs: err.retryAfterMs });
        if (delayMs === null) throw err;
        failures++;
        this.upload._setState('retrying', { attempt: failures, delayMs, error: err });
        const both = anySignal([this.signal, opts.signal]);
        try {
          await sleep(delayMs, both.signal);
        } finally {
          both.dispose();
        }
      }
    }
  }
}

export class Upload extends Emitter {
  constructor(uploader, file, opts = {}) {
    super();
    this.uploader = uploader;
    this.file = file;
    this.handle = opts.handle ?? null;
    this.metadata = opts.metadata ?? {};
    this.id = `up-${++uploadSeq}-${Math.random().toString(36).slice(2, 8)}`;
    this.name = file.name ?? 'blob';
    this.size = file.size;
    this.type = file.type || '';
    this.lastModified = file.lastModified ?? 0;
    // Settings are taken when the file is added; changing uploader.options later (the page
    // does) applies to files added afterwards.
    this.protocol = uploader.options.protocol;
    this.chunkSize = Math.max(1, uploader.options.chunkSize || (this.protocol === 'chunk' ? DEFAULT_CHUNK_DIALECT_CHUNK_SIZE : DEFAULT_TUS_CHUNK_SIZE));
    this.state = 'idle';
    this.url = null; // the file's URL once done
    this.instant = false;
    this.error = null;
    this.fingerprint = null;
    this.confirmed = 0; // bytes the server acknowledged
    this.sent = 0; // confirmed + bytes of requests in flight
    this.transferred = 0; // every body byte that went out, retries included
    this.hashed = 0;
    this.speed = 0;
    this.eta = null;
    this.record = null; // the stored record, once known
    this.session = null;
    this.inflight = 0;
    this.meter = new SpeedMeter();
    this.lastProgressAt = -Infinity;
    this.recordWrites = Promise.resolve();
    // Protocol state kept across sessions of this Upload (pause/resume):
    this.tusUrl = null;
    this.chunkPlan = null; // {fileId, chunkIds, chunkSize}
  }

  /** Queues the upload (from idle, paused or failed); it starts when a slot is free. */
  start() {
    if (this.state === 'idle' || this.state === 'paused' || this.state === 'failed') {
      this.error = null;
      this._setState('queued');
      this.uploader._pump();
    }
    return this;
  }

  /** Same as start(): continue after pause(), or try again after 'failed'. */
  resume() {
    return this.start();
  }

  retry() {
    return this.start();
  }

  /** Aborts requests in flight; what the server acknowledged is kept. */
  pause() {
    if (this.state === 'queued' || ACTIVE.has(this.state)) {
      this._stopSession();
      this._setState('paused');
      this.uploader._pump();
    }
    return this;
  }

  /** Aborts, forgets its record, then terminates the upload on the server (tus DELETE). */
  async cancel() {
    if (FINAL.has(this.state)) return;
    this._stopSession();
    this._setState('canceled');
    this.uploader._pump();
    const url = this.tusUrl || (this.record?.protocol === 'tus' ? this.record.url : null);
    // The record goes first (after any write already queued; none is queued from now on), so
    // that a tab closed while the server is asked finds nothing to resume.
    await this._forgetRecord();
    const online = this.uploader.env.network?.online ?? true;
    // Offline, the DELETE is skipped rather than awaited: the server expires the upload.
    if (url && this.protocol === 'tus' && online) {
      const s = new Session(this);
      // tus termination extension: 204; 404/410 means it is gone already. A PATCH aborted a
      // moment ago may still hold the upload on the server (423/409), hence a few quick tries.
      for (const wait of [200, 600, 1500, null]) {
        try {
          await s.request(
            { method: 'DELETE', url, headers: { 'Tus-Resumable': '1.0.0' } },
            (st) => (st >= 200 && st < 300) || st === 404 || st === 410,
          );
          break;
        } catch (e) {
          if (wait === null || !e.retryable) {
            console.warn('ferry: the server did not confirm the cancellation:', e?.message || e);
            break;
          }
          await sleep(wait);
        }
      }
    }
  }

  _stopSession() {
    if (this.session) {
      this.session.ctrl.abort();
      this.session = null;
    }
    this.inflight = 0;
  }

  _setState(state, detail) {
    const previous = this.state;
    if (previous === state && state !== 'retrying') return;
    if (this.state === 'canceled') return;
    this.state = state;
    if (state !== 'uploading' && state !== 'hashing') {
      this.meter.reset(null);
      this.speed = 0;
      this.eta = null;
    }
    this.emit('state', { state, previous, detail: detail ?? null });
  }

  /** Called when a request goes out: back to 'uploading' from retrying/offline/hashing. */
  _sending() {
    if (this.session && this.state !== 'uploading') this._setState('uploading');
  }

  /** Bytes acknowledged by the server (only ever grows within a session). */
  _confirm(bytes) {
    if (bytes !== this.confirmed) {
      this.confirmed = bytes;
      this._emitProgress(true);
    }
  }

  _hashProgress(hashed) {
    this.hashed = hashed;
    this.emit('hash', { hashed, total: this.size });
  }

  /**
   * Tracks one request body's upload progress. `progress(loaded)` on each event; `end(ok)`
   * when the request settles.
   */
  _transfer(bodySize) {
    let last = 0;
    const add = (delta) => {
      if (delta <= 0) return;
      this.transferred += delta;
      this.inflight += delta;
      this.speed = this.meter.add(delta, this.uploader.env.now());
    };
    return {
      progress: (loaded) => {
        add(loaded - last);
        last = Math.max(last, loaded);
        this._emitProgress(false);
      },
      end: (ok) => {
        // fetch reports no upload progress: count the body when its request succeeded.
        if (ok && last < bodySize) {
          add(bodySize - last);
          last = bodySize;
        }
        this.inflight = Math.max(0, this.inflight - last);
        last = 0;
      },
    };
  }

  _emitProgress(force) {
    const now = this.uploader.env.now();
    this.sent = Math.min(this.size, this.confirmed + this.inflight);
    this.eta = this.meter.eta(this.size - this.confirmed);
    if (!force && now - this.lastProgressAt < 100) return;
    this.lastProgressAt = now;
    this.emit('progress', {
      confirmed: this.confirmed,
      total: this.size,
      sent: this.sent,
      speed: this.speed,
      eta: this.eta,
    });
  }

  /** Writes the record (merged with `patch`), in order, never failing the upload. */
  _saveRecord(patch) {
    const now = Date.now();
    const base = this.record ?? {
      fingerprint: this.fingerprint,
      name: this.name,
      size: this.size,
      lastModified: this.lastModified,
      type: this.type,
      protocol: this.protocol,
      endpoint: this.uploader.endpoint,
      url: null,
      fileId: null,
      chunkIds: null,
      chunkSize: null,
      confirmed: 0,
      createdAt: now,
    };
    this.record = { ...base, ...patch, confirmed: this.confirmed, updatedAt: now };
    if (this.handle) this.record.handle = this.handle;
    const rec = this.record;
    const store = this.uploader.env.store;
    this.recordWrites = this.recordWrites
      .then(() => (this.state === 'canceled' ? null : store.put(rec.fingerprint, rec)))
      .catch((e) => console.warn('ferry: could not save the upload record:', e?.message || e));
    return this.recordWrites;
  }

  _forgetRecord() {
    const fp = this.fingerprint;
    this.record = null;
    this.recordWrites = this.recordWrites.then(() => fp && this.uploader.env.store.delete(fp)).catch(() => {});
    return this.recordWrites;
  }

  /** Runs one session; the uploader calls it when a slot is free. */
  async _run() {
    const session = new Session(this);
    this.session = session;
    this.meter.reset(this.uploader.env.now());
    const env = this.uploader.env;
    try {
      if (this.protocol === 'chunk' && !this.chunkPlan) this._setState('hashing');
      else this._setState('uploading');
      if (!this.fingerprint) this.fingerprint = await computeFingerprint(this.file, env.hashers, session.signal);
      session.throwIfAborted();
      if (!this.record) {
        const rec = await env.store.get(this.fingerprint).catch(() => null);
        // A record made for another server or protocol is not this upload's: start anew
        // (and overwrite it); the server expires what it held.
        if (rec && rec.endpoint === this.uploader.endpoint && rec.protocol === this.protocol && rec.size === this.size) {
          this.record = rec;
          this.confirmed = rec.confirmed || 0;
          if (!this.handle && rec.handle) this.handle = rec.handle;
        }
      }
      session.throwIfAborted();
      const result = this.protocol === 'chunk' ? await runChunk(this, session) : await runTus(this, session);
      session.throwIfAborted();
      this.url = result.url;
      this.instant = !!result.instant;
      this.confirmed = this.size;
      this.inflight = 0;
      this._emitProgress(true);
      await this._forgetRecord();
      session.throwIfAborted();
      this.session = null;
      this._setState('done', { url: this.url, instant: this.instant });
      this.emit('success', { url: this.url, instant: this.instant });
    } catch (e) {
      if (session.aborted) return; // paused or canceled: they set the state
      const error = toFerryError(e, 'server');
      this.error = error;
      this.session = null;
      this.inflight = 0;
      // A record that cannot lead anywhere is dropped, so that "retry" starts clean.
      // (A tus checksum mismatch stored nothing; the upload itself is fine to continue.)
      if (error.code === 'not_found' || error.code === 'file_changed' || (error.code === 'checksum_mismatch' && this.protocol === 'chunk')) {
        this.tusUrl = null;
        this.chunkPlan = null;
        this.fingerprint = error.code === 'file_changed' ? null : this.fingerprint;
        await this._forgetRecord();
      }
      this._setState('failed', { error });
      this.emit('error', { error });
    } finally {
      if (this.session === session) this.session = null;
      this.uploader._pump();
    }
  }
}

/** Options with their defaults (web/README.md). */
function withDefaults(options) {
  const protocol = options.protocol ?? 'tus';
  if (protocol !== 'tus' && protocol !== 'chunk') throw new TypeError(`protocol must be 'tus' or 'chunk', not ${protocol}`);
  const endpoint = options.endpoint ?? globalThis.location?.origin;
  if (!endpoint) throw new TypeError('endpoint is required outside a browser page');
  return {
    protocol,
    endpoint,
    // null: the protocol's default (8 MiB tus, 5 MiB chunk), chosen when a file is added.
    chunkSize: options.chunkSize ?? null,
    concurrency: Math.max(1, options.concurrency ?? 3),
    parallelUploads: Math.max(1, options.parallelUploads ?? 3),
    retryDelays: options.retryDelays ?? DEFAULT_RETRY_DELAYS,
    headers: options.headers ?? {},
    autoStart: options.autoStart ?? true,
    tusPath: options.tusPath ?? '/files/',
    handshakePath: options.handshakePath ?? '/api/upload/handshake',
    chunkPath: options.chunkPath ?? '/api/upload',
    metadata: options.metadata ?? {},
  };
}

export class Uploader extends Emitter {
  /** @param {object} [options] see web/README.md */
  constructor(options = {}) {
    super();
    this.options = withDefaults(options);
    this.env = options.env ?? browserEnv({ forceSoftwareSha256: options.forceSoftwareSha256 });
    this.endpoint = new URL(this.options.endpoint).href.replace(/\/+$/, '');
    this.uploads = [];
    const net = this.env.network;
    this.unsubscribe = [
      net?.on?.('offline', () => this._offline()),
      net?.on?.('online', () => this._pump()),
    ].filter(Boolean);
  }

  /** Resolves a path (or absolute URL) against the endpoint. */
  url(path) {
    return new URL(path, `${this.endpoint}/`).href;
  }

  /**
   * Adds a file (File, or Blob with `name`). Options: `handle` (FileSystemFileHandle, kept
   * in the record), `autoStart` (default: the uploader's), `metadata` (extra tus metadata).
   */
  add(file, opts = {}) {
    // The same file added again while its upload is unfinished (dropped twice, picked
    // again to resume) is that upload: two uploads of one file would compete on the server.
    const same = this.uploads.find(
      (u) => !FINAL.has(u.state) && (u.file === file || (u.name === file.name && u.size === file.size && u.lastModified === (file.lastModified ?? 0))),
    );
    if (same) {
      if (opts.handle && !same.handle) same.handle = opts.handle;
      if ((opts.autoStart ?? this.options.autoStart) && (same.state === 'paused' || same.state === 'failed' || same.state === 'idle')) {
        // A file picked again (e.g. after it became unreadable) replaces the stale one.
        if (same.file !== file && same.state !== 'idle') same.file = file;
        same.start();
      }
      return same;
    }
    const up = new Upload(this, file, opts);
    this.uploads.push(up);
    if (opts.autoStart ?? this.options.autoStart) {
      // Queued at once, started a microtask later: listeners attached right after add()
      // see every state change from the first one.
      up.state = 'queued';
      queueMicrotask(() => this._pump());
    }
    this.emit('add', up);
    return up;
  }

  /** Records of uploads to this endpoint not yet complete (earlier visits included). */
  async unfinished() {
    const all = await this.env.store.list();
    return all
      .filter((r) => r && r.endpoint === this.endpoint)
      .sort((a, b) => (a.updatedAt ?? 0) - (b.updatedAt ?? 0));
  }

  async forget(fingerprint) {
    await this.env.store.delete(fingerprint);
  }

  pauseAll() {
    for (const up of this.uploads) up.pause();
  }

  resumeAll() {
    for (const up of this.uploads) if (up.state === 'paused' || up.state === 'failed') up.resume();
  }

  async cancelAll() {
    await Promise.all(this.uploads.map((up) => up.cancel()));
  }

  /** Stops listening to the network (the uploads keep their state). */
  destroy() {
    for (const off of this.unsubscribe) off?.();
    this.unsubscribe = [];
  }

  _offline() {
    for (const up of this.uploads) {
      if (up.session && ACTIVE.has(up.state) && up.state !== 'hashing') {
        up._setState('offline');
        up.session.dropRequests();
      } else if (up.session) {
        up.session.dropRequests();
      }
    }
  }

  /** Starts queued uploads while fewer than `parallelUploads` run. */
  _pump() {
    let running = this.uploads.filter((u) => u.session).length;
    for (const up of this.uploads) {
      if (running >= this.options.parallelUploads) break;
      if (up.state === 'queued' && !up.session) {
        running++;
        up._run();
      }
    }
  }
}
