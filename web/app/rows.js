// One `li.file-row` per upload (web/README.md, Page contract): it keeps the last values the
// SDK reported and draws them. Drawing is cheap and idempotent, so the page calls `render()`
// for every row once per animation frame when something changed, never per progress event.

import { t, applyStatic } from './i18n.js';
import { formatBytes, formatSpeed, formatDuration, formatPercent } from './format.js';
import { describeError } from './errors.js';

/** Which per-file buttons apply in each SDK state. */
const ACTIONS = {
  idle: ['resume', 'cancel'],
  queued: ['pause', 'cancel'],
  hashing: ['pause', 'cancel'],
  uploading: ['pause', 'cancel'],
  offline: ['pause', 'cancel'],
  retrying: ['pause', 'cancel'],
  paused: ['resume', 'cancel'],
  failed: ['retry', 'cancel'],
  done: ['remove'],
  canceled: ['remove'],
};

/** States in which the upload still has work to do (counted as active in the summary). */
export const ACTIVE_STATES = new Set(['queued', 'hashing', 'uploading', 'offline', 'retrying']);

export class FileRow {
  /** @param {object} up the SDK Upload; @param {HTMLTemplateElement} template */
  constructor(up, template) {
    this.up = up;
    this.el = template.content.firstElementChild.cloneNode(true);
    this.el.dataset.uploadId = String(up.id ?? '');
    this.q = (sel) => this.el.querySelector(sel);
    this.progress = this.q('progress');
    this.buttons = {};
    for (const b of this.el.querySelectorAll('.file-actions [data-action]')) this.buttons[b.dataset.action] = b;

    this.state = up.state || 'queued';
    this.total = Number(up.size) || 0;
    this.confirmed = Number(up.confirmed) || 0;
    this.sent = this.confirmed;
    this.speed = 0;
    this.eta = NaN;
    this.hashed = 0;
    this.hashTotal = 0;
    this.error = null;
    this.url = up.url || null;
    this.instant = false;
    this.retryAt = 0;
    this.attempt = 0;
    this.resumedFrom = 0;
    this.sawProgress = false;
    this.copiedUntil = 0;
    this.dirty = true;
  }

  get name() {
    return this.up.name || '';
  }

  /** Records an SDK `state` event. */
  setState({ state, detail }) {
    if (detail && detail.error) this.error = detail.error;
    // 'done' carries { url, instant } before the 'success' event repeats them.
    if (state === 'done' && detail) this.setSuccess(detail);
    if (state === 'retrying') {
      this.attempt = detail && Number.isFinite(detail.attempt) ? detail.attempt : this.attempt + 1;
      this.retryAt = detail && Number.isFinite(detail.delayMs) ? Date.now() + detail.delayMs : 0;
    }
    // A new attempt that got going, or the end, makes the last error history.
    if (state === 'uploading' || state === 'hashing' || state === 'done') this.error = null;
    if (state !== 'uploading') this.speed = 0;
    this.state = state;
    this.dirty = true;
  }

  setProgress({ confirmed, total, speed, eta, sent }) {
    if (Number.isFinite(confirmed)) this.confirmed = confirmed;
    // Bytes the server held before this page sent any: the upload was resumed (after a
    // reload, or from another tab or visit). The first progress report tells:
    // The SDK counts what this page sent (`transferred`); acknowledged bytes beyond that were
    // on the server already.
    if (!this.sawProgress) {
      this.sawProgress = true;
      const sentHere = Number(this.up.transferred);
      if (Number.isFinite(sentHere) && this.confirmed > sentHere) this.resumedFrom = this.confirmed;
    }
    this.sent = Number.isFinite(sent) ? Math.max(sent, this.confirmed) : this.confirmed;
    if (Number.isFinite(total) && total >= 0) this.total = total;
    this.speed = Number.isFinite(speed) ? speed : 0;
    this.eta = Number.isFinite(eta) ? eta : NaN;
    this.dirty = true;
  }

  setHash({ hashed, total }) {
    this.hashed = Number(hashed) || 0;
    this.hashTotal = Number(total) || this.total;
    this.dirty = true;
  }

  setSuccess({ url, instant }) {
    this.url = url || this.up.url || null;
    this.instant = Boolean(instant);
    this.confirmed = this.total;
    this.dirty = true;
  }

  setError(error) {
    this.error = error;
    this.dirty = true;
  }

  fraction() {
    if (this.state === 'done') return 1;
    return this.total > 0 ? Math.min(1, this.confirmed / this.total) : 0;
  }

  /** The words for the state badge (also announced on state changes). */
  stateText(now = Date.now()) {
    switch (this.state) {
      case 'hashing':
        return this.hashTotal > 0
          ? t('state.hashingPct', { pct: formatPercent(this.hashed / this.hashTotal) })
          : t('state.hashing');
      case 'retrying': {
        const left = Math.max(0, Math.ceil((this.retryAt - now) / 1000));
        return this.retryAt && left > 0
          ? t('state.retryingIn', { time: formatDuration(left), n: this.attempt || 1 })
          : t('state.retrying');
      }
      default:
        return t(`state.${this.state}`);
    }
  }

  render(now = Date.now()) {
    const el = this.el;
    const name = this.name;
    el.dataset.name = name;
    el.dataset.state = this.state;
    if (this.instant) el.dataset.instant = 'true';
    else delete el.dataset.instant;

    const nameEl = this.q('.name');
    if (nameEl.textContent !== name) {
      nameEl.textContent = name;
      nameEl.title = name;
    }
    this.q('.state-label').textContent = this.stateText(now);

    const fraction = this.fraction();
    const pct = Math.round(fraction * 1000) / 10;
    const pctText = formatPercent(fraction);
    this.progress.value = pct;
    this.progress.setAttribute('aria-valuenow', String(Math.floor(pct)));
    this.progress.setAttribute('aria-valuetext', `${pctText} (${formatBytes(this.confirmed)} / ${formatBytes(this.total)})`);
    this.progress.setAttribute('aria-label', t('row.progressLabel', { name }));
    // Bytes on the wire but not yet acknowledged: a lighter bar behind the confirmed one
    // (only the server's acknowledgement counts, as the percentage says).
    const sent = this.state === 'uploading' && this.total > 0 ? Math.min(1, this.sent / this.total) : fraction;
    this.q('.bar-sent').style.width = `${Math.max(fraction, sent) * 100}%`;

    this.q('.confirmed').textContent = this.state === 'done' ? '' : formatBytes(this.confirmed);
    this.q('.of').hidden = this.state === 'done';
    this.q('.size').textContent = formatBytes(this.total);
    this.q('.percent').textContent = pctText;
    const moving = this.state === 'uploading';
    this.q('.speed').textContent = moving && this.speed > 0 ? formatSpeed(this.speed) : '';
    this.q('.eta').textContent = moving && Number.isFinite(this.eta) && this.speed > 0
      ? t('row.eta', { time: formatDuration(this.eta) })
      : '';

    // A note: instant upload, a resume, or why it is waiting.
    let note = '';
    if (this.instant) note = t('row.instant');
    else if ((this.state === 'retrying' || this.state === 'offline') && this.error) note = shortReason(this.error);
    else if (this.resumedFrom > 0 && this.state !== 'failed' && this.state !== 'canceled') {
      note = t('row.resumed', { size: formatBytes(this.resumedFrom) });
    }
    const noteEl = this.q('.note');
    noteEl.textContent = note;
    noteEl.hidden = !note;

    const failed = this.state === 'failed';
    const described = failed && this.error ? describeError(this.error) : null;
    const errorEl = this.q('.error');
    const errorText = described ? described.text : failed ? t('err.unknown') : '';
    const detailText = described ? described.detail : '';
    if (errorEl.dataset.text !== errorText + detailText) {
      errorEl.dataset.text = errorText + detailText;
      const detail = document.createElement('span');
      detail.className = 'error-detail';
      detail.textContent = detailText;
      errorEl.replaceChildren(errorText, ...(detailText ? [' ', detail] : []));
    }
    this.q('.error-box').hidden = !failed;
    const tokenButton = this.q('[data-action="token"]');
    tokenButton.hidden = !(described && described.code === 'unauthorized');

    const done = this.state === 'done' && this.url;
    this.q('.result').hidden = !done;
    if (done) {
      const link = this.q('.download-link');
      const href = absoluteUrl(this.url);
      if (link.getAttribute('href') !== href) {
        link.href = href;
        link.textContent = href;
      }
      link.setAttribute('aria-label', `${t('row.download')}: ${name}`);
      const copy = this.q('[data-action="copy"]');
      const copied = now < this.copiedUntil;
      copy.classList.toggle('is-copied', copied);
      copy.querySelector('.copy-text').textContent = copied ? t('row.copied') : t('action.copy');
      copy.setAttribute('aria-label', copied ? `${t('row.copied')}: ${name}` : t('row.copy', { name }));
    }

    let wanted = ACTIONS[this.state] || ['cancel'];
    // Sending the same file again cannot get past the server's size limit.
    if (described && described.code === 'too_large') wanted = wanted.filter((a) => a !== 'retry');
    for (const [action, button] of Object.entries(this.buttons)) {
      button.hidden = !wanted.includes(action);
      button.setAttribute('aria-label', t(`row.${action}`, { name }));
      button.title = t(`action.${action}`);
    }
    this.dirty = false;
  }

  /** Re-renders text that depends on the language. */
  relabel() {
    applyStatic(this.el);
    this.dirty = true;
  }
}

function shortReason(error) {
  const code = error && error.code;
  if (code === 'network') return t('reason.network');
  if (code === 'server' || (error && error.status >= 500)) return t('reason.server');
  return describeError(error).text || t('reason.other');
}

function absoluteUrl(url) {
  try {
    return new URL(url, location.href).href;
  } catch {
    return String(url);
  }
}
