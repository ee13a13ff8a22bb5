// The upload page (GET /): wires the SDK (/sdk/ferry.js) to the DOM described in
// web/README.md, "Page contract". The SDK does the uploading; this file turns its events into
// rows, words and buttons, and the user's clicks, drops and keys into SDK calls.

import { detectLang, getLang, setLang, t } from './i18n.js';
import { formatBytes, formatSpeed, formatPercent } from './format.js';
import { Settings } from './settings.js';
import { FileRow, ACTIVE_STATES } from './rows.js';
import { UnfinishedList, fileMatchesRecord } from './unfinished.js';
import { describeError } from './errors.js';
import { YourFiles } from './yours.js';

const $ = (sel) => document.querySelector(sel);

const els = {
  lang: $('#lang'),
  drop: $('#drop-zone'),
  input: $('#file-input'),
  pick: $('#pick-button'),
  settings: $('#settings'),
  settingsForm: $('#settings-form'),
  settingsSummary: $('#settings-summary'),
  files: $('#files'),
  filesSection: $('#files-section'),
  summary: $('#summary'),
  overall: $('#overall-progress'),
  pauseAll: $('#pause-all'),
  resumeAll: $('#resume-all'),
  cancelAll: $('#cancel-all'),
  clearFinished: $('#clear-finished'),
  status: $('#status'),
  offline: $('#offline-banner'),
  rowTemplate: $('#file-row-template'),
};

// ---------------------------------------------------------------------------------------
// Language

setLang(detectLang());
els.lang.value = getLang();
els.lang.addEventListener('change', () => {
  setLang(els.lang.value, { remember: true });
  for (const row of rows.values()) row.relabel();
  unfinished?.relabel();
  yours.relabel();
  settings.render();
  renderSettingsSummary();
  scheduleRender();
});

// ---------------------------------------------------------------------------------------
// Settings and the token

const settings = new Settings();
settings.bind(els.settingsForm);
const headers = settings.fillHeaders({});
function renderSettingsSummary() {
  els.settingsSummary.textContent = settings.describe();
}
renderSettingsSummary();
settings.onChange((what) => {
  renderSettingsSummary();
  if (what === 'token') {
    settings.fillHeaders(headers);
    announce(t(settings.token ? 'settings.token.saved' : 'settings.token.cleared'));
    yours.refresh(); // another token, maybe another tenant's files
    // Uploads refused for want of a token try again with the new one.
    if (settings.token) {
      for (const row of rows.values()) {
        if (row.state === 'failed' && row.error && describeError(row.error).code === 'unauthorized') retry(row.up);
      }
    }
  } else {
    applySettings();
  }
});

// ---------------------------------------------------------------------------------------
// "Your files": finished uploads on the server (GET /api/files), with the uploads' headers.

const yours = new YourFiles({
  section: $('#your-files-section'),
  list: $('#your-files'),
  template: $('#your-file-template'),
  more: $('#your-files-more'),
  refreshButton: $('#your-files-refresh'),
  headers,
  endpoint: location.origin,
});
yours.refresh();

// ---------------------------------------------------------------------------------------
// The SDK

let sdk = null; // the module, once loaded (see Start, below)
let uploader = null;
const rows = new Map(); // Upload → FileRow
let unfinished = null;

function makeUploader() {
  const u = new sdk.Uploader({
    endpoint: location.origin,
    ...settings.uploaderOptions(),
    headers,
    env: sdk.browserEnv(),
  });
  u.on('add', (up) => attach(up));
  return u;
}

/** Settings apply to files added from now on. */
function applySettings() {
  if (!uploader) return;
  const opts = settings.uploaderOptions();
  if (uploader.options && typeof uploader.options === 'object') Object.assign(uploader.options, opts);
}

function showFatal() {
  els.drop.classList.add('is-disabled');
  els.summary.textContent = t('fatal.sdk');
  document.body.classList.add('is-fatal');
}

// ---------------------------------------------------------------------------------------
// Rows

function attach(up) {
  if (rows.has(up)) return rows.get(up);
  const row = new FileRow(up, els.rowTemplate);
  rows.set(up, row);
  row.relabel();
  els.files.append(row.el);
  up.on('state', (e) => {
    const previous = row.state;
    row.setState(e);
    // State changes are few: drawn at once, so that the DOM never shows a state the upload
    // has left (progress waits for the next frame).
    row.render();
    if (e.state !== previous) announceState(row);
    if (e.state === 'uploading' && up.fingerprint) unfinished?.takenFingerprints(new Set([up.fingerprint]));
    scheduleRender();
  });
  up.on('progress', (e) => {
    row.setProgress(e);
    scheduleRender();
  });
  up.on('hash', (e) => {
    row.setHash(e);
    scheduleRender();
  });
  up.on('success', (e) => {
    row.setSuccess(e);
    yours.refreshSoon();
    scheduleRender();
  });
  up.on('error', ({ error }) => {
    row.setError(error);
    scheduleRender();
  });
  scheduleRender();
  return row;
}

/** Adds files to the uploader: `items` are `{ file, handle? }`. */
function addFiles(items, record) {
  if (!uploader || !items.length) return;
  let added = 0;
  for (const { file, handle } of items) {
    // The same file twice at once would be two uploads racing for one record.
    const busy = [...rows.values()].find((r) => r.state !== 'done' && r.state !== 'canceled' && r.state !== 'failed'
      && r.up.file && r.up.file.name === file.name && r.up.file.size === file.size && r.up.file.lastModified === file.lastModified);
    if (busy) {
      announce(t('announce.duplicate', { name: file.name }));
      busy.el.classList.remove('is-flash');
      void busy.el.offsetWidth; // restart the highlight
      busy.el.classList.add('is-flash');
      continue;
    }
    added += 1;
    if (record && !fileMatchesRecord(file, record)) {
      announce(t('unfinished.mismatch', { picked: file.name, name: record.name, size: formatBytes(record.size) }));
    }
    // A file of an unfinished upload continues in the protocol it was started with, whatever
    // the settings say now (the SDK resumes only a record of the same protocol).
    const earlier = record && fileMatchesRecord(file, record) ? record : unfinished?.find(file);
    unfinished?.taken(file);
    const up = withProtocolOf(earlier, () => uploader.add(file, handle ? { handle } : {}));
    if (up) attach(up);
  }
  if (added) announce(t('announce.added', { n: added }));
  scheduleRender();
}

/** Runs `add` with the uploader's protocol (and chunk size) set to those of `record`. */
function withProtocolOf(record, add) {
  const opts = uploader.options;
  if (!record || !record.protocol || record.protocol === opts.protocol) return add();
  const saved = { protocol: opts.protocol, chunkSize: opts.chunkSize };
  opts.protocol = record.protocol;
  opts.chunkSize = record.chunkSize || null; // null: that protocol's default
  try {
    return add();
  } finally {
    Object.assign(opts, saved);
  }
}

els.files.addEventListener('click', async (e) => {
  const button = e.target.closest('button[data-action]');
  if (!button) return;
  const li = button.closest('li.file-row');
  const row = [...rows.values()].find((r) => r.el === li);
  if (!row) return;
  const up = row.up;
  switch (button.dataset.action) {
    case 'pause':
      up.pause();
      focusAfter(row, 'resume');
      break;
    case 'resume':
      if (up.state === 'idle') up.start();
      else up.resume();
      focusAfter(row, 'pause');
      break;
    case 'retry':
      retry(up);
      focusAfter(row, 'pause');
      break;
    case 'cancel':
      button.disabled = true;
      try {
        await up.cancel();
      } catch (err) {
        console.warn('ferry: cancel', err);
      } finally {
        button.disabled = false;
      }
      focusAfter(row, 'remove');
      break;
    case 'remove':
      removeRow(row);
      break;
    case 'copy':
      await copyLink(row, button);
      break;
    case 'token':
      openToken();
      break;
    default:
  }
});

function retry(up) {
  if (typeof up.retry === 'function') up.retry();
  else up.resume();
}

/** After a button hides itself, keep the keyboard focus on the row's next button. */
function focusAfter(row, action) {
  requestAnimationFrame(() => {
    if (!row.el.contains(document.activeElement) && document.activeElement !== document.body) return;
    row.render();
    const target = row.el.querySelector(`.file-actions [data-action="${action}"]:not([hidden])`)
      || row.el.querySelector('.file-actions button:not([hidden])');
    target?.focus();
  });
}

function removeRow(row) {
  const next = row.el.nextElementSibling || row.el.previousElementSibling;
  rows.delete(row.up);
  row.el.remove();
  (next?.querySelector('.file-actions button:not([hidden])') || els.filesSection).focus();
  scheduleRender();
}

function openToken() {
  els.settings.open = true;
  const token = $('#token');
  token.scrollIntoView({ block: 'center', behavior: reducedMotion() ? 'auto' : 'smooth' });
  token.focus();
}

async function copyLink(row, button) {
  const url = row.el.querySelector('.download-link').href;
  let ok = false;
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(url);
      ok = true;
    }
  } catch { /* fall back below */ }
  if (!ok) ok = copyWithSelection(url);
  if (ok) {
    row.copiedUntil = Date.now() + 2000;
    row.dirty = true;
    announce(t('announce.copied', { name: row.name }));
    setTimeout(() => { row.dirty = true; scheduleRender(); }, 2050);
  } else {
    // Leave the link selected so that Ctrl+C works, and say so.
    const range = document.createRange();
    range.selectNodeContents(row.el.querySelector('.download-link'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    announce(t('row.copyFailed'));
  }
  scheduleRender();
  button.focus();
}

/** Clipboard fallback for plain-http pages: a selected textarea and execCommand('copy'). */
function copyWithSelection(text) {
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.className = 'clipboard-helper';
  document.body.append(area);
  const focused = document.activeElement;
  area.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  area.remove();
  focused?.focus?.();
  return ok;
}

// ---------------------------------------------------------------------------------------
// Bulk actions and the summary

els.pauseAll.addEventListener('click', () => uploader?.pauseAll());
els.resumeAll.addEventListener('click', () => uploader?.resumeAll());
els.cancelAll.addEventListener('click', async () => {
  els.cancelAll.disabled = true;
  try {
    await uploader?.cancelAll();
  } catch (err) {
    console.warn('ferry: cancel all', err);
  } finally {
    scheduleRender();
  }
});
els.clearFinished.addEventListener('click', () => {
  for (const row of [...rows.values()]) {
    if (row.state === 'done' || row.state === 'canceled') {
      rows.delete(row.up);
      row.el.remove();
    }
  }
  els.filesSection.focus();
  scheduleRender();
});

function renderSummary() {
  if (!sdk) return; // the line carries the load error instead
  const all = [...rows.values()];
  const counted = all.filter((r) => r.state !== 'canceled');
  const total = counted.reduce((s, r) => s + r.total, 0);
  const confirmed = counted.reduce((s, r) => s + Math.min(r.total, r.state === 'done' ? r.total : r.confirmed), 0);
  const speed = all.filter((r) => r.state === 'uploading').reduce((s, r) => s + (r.speed || 0), 0);
  const active = all.filter((r) => ACTIVE_STATES.has(r.state)).length;
  const waiting = all.filter((r) => r.state === 'offline' || r.state === 'retrying').length;
  const done = all.filter((r) => r.state === 'done').length;
  const failed = all.filter((r) => r.state === 'failed').length;
  const paused = all.filter((r) => r.state === 'paused').length;
  const fraction = total > 0 ? confirmed / total : counted.length && counted.every((r) => r.state === 'done') ? 1 : 0;

  document.body.classList.toggle('has-files', all.length > 0);
  const parts = [];
  if (all.length) {
    parts.push([t('summary.files', { n: all.length })]);
    parts.push([formatPercent(fraction), 'summary-pct']);
    parts.push([t('summary.progress', { done: formatBytes(confirmed), total: formatBytes(total) })]);
    if (speed > 0) parts.push([formatSpeed(speed)]);
    if (active - waiting) parts.push([t('summary.active', { n: active - waiting })]);
    if (waiting) parts.push([t('summary.waiting', { n: waiting })]);
    if (done) parts.push([t('summary.finished', { n: done })]);
    if (failed) parts.push([t('summary.failed', { n: failed })]);
  } else {
    parts.push([t('summary.empty')]);
  }
  const key = parts.map((p) => p[0]).join('\u0000');
  if (els.summary.dataset.key !== key) {
    els.summary.dataset.key = key;
    // Spaces between the parts let the line wrap between them (never inside one).
    els.summary.replaceChildren(...parts.flatMap(([text, cls], i) => {
      const span = document.createElement('span');
      span.textContent = text;
      if (cls) span.className = cls;
      return i ? [' ', span] : [span];
    }));
  }
  els.overall.classList.toggle('is-complete', fraction >= 1);
  els.overall.value = Math.round(fraction * 1000) / 10;
  els.overall.setAttribute('aria-valuenow', String(Math.floor(fraction * 100)));
  els.overall.hidden = !all.length;

  const unfinishedCount = all.filter((r) => r.state !== 'done' && r.state !== 'canceled').length;
  els.pauseAll.disabled = active === 0;
  els.resumeAll.disabled = paused + failed === 0;
  els.cancelAll.disabled = unfinishedCount === 0;
  els.clearFinished.hidden = !all.some((r) => r.state === 'done' || r.state === 'canceled');
}

// ---------------------------------------------------------------------------------------
// Rendering: at most once per frame; a 1 s tick keeps retry countdowns moving.

let frame = 0;
function scheduleRender() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    const now = Date.now();
    for (const row of rows.values()) if (row.dirty || row.state === 'retrying') row.render(now);
    renderSummary();
  });
}
setInterval(() => {
  for (const row of rows.values()) {
    if (row.state === 'retrying' || (row.copiedUntil && row.copiedUntil > Date.now() - 1000)) row.dirty = true;
  }
  if ([...rows.values()].some((r) => r.dirty)) scheduleRender();
}, 1000);

// ---------------------------------------------------------------------------------------
// Announcements (#status, aria-live=polite): state changes, batched so that ten files
// finishing together are one sentence, never progress ticks.

const queue = [];
let flushTimer = 0;
function announce(message) {
  if (!message) return;
  queue.push(message);
  if (!flushTimer) {
    flushTimer = setTimeout(() => {
      flushTimer = 0;
      els.status.textContent = queue.splice(0).join(' ');
    }, 250);
  }
}

function announceState(row) {
  const name = row.name;
  switch (row.state) {
    case 'queued':
      return; // "added" was said already
    case 'done':
      announce(row.instant ? t('announce.instant', { name }) : t('announce.done', { name }));
      return;
    case 'failed':
      announce(t('announce.failed', { name, reason: row.error ? describeError(row.error).text : '' }));
      return;
    case 'offline':
      return; // one page-wide announcement instead (below)
    default:
      announce(t('announce.state', { name, state: t(`state.${row.state}`) }));
  }
}

// ---------------------------------------------------------------------------------------
// Network

function renderOnline(announceChange) {
  const online = navigator.onLine !== false;
  els.offline.hidden = online;
  if (announceChange) announce(t(online ? 'announce.online' : 'announce.offline'));
}
renderOnline(false);
addEventListener('online', () => renderOnline(true));
addEventListener('offline', () => renderOnline(true));

// ---------------------------------------------------------------------------------------
// Choosing and dropping files

const canPickHandles = typeof window.showOpenFilePicker === 'function';
$('.handles-hint').hidden = !canPickHandles;

els.input.addEventListener('change', () => {
  const files = [...(els.input.files || [])];
  els.input.value = ''; // choosing the same file again must fire change again
  addFiles(files.map((file) => ({ file })));
});

async function pick() {
  if (!canPickHandles) {
    els.input.click();
    return;
  }
  let handles;
  try {
    handles = await window.showOpenFilePicker({ multiple: true });
  } catch (err) {
    if (err && err.name === 'AbortError') return; // the user closed the picker
    els.input.click(); // e.g. SecurityError in a cross-origin frame
    return;
  }
  const items = [];
  for (const handle of handles) {
    try {
      items.push({ file: await handle.getFile(), handle });
    } catch (err) {
      console.warn('ferry: could not read a picked file', err);
    }
  }
  addFiles(items);
}
els.pick.addEventListener('click', pick);

// The drop zone itself: click on its empty area or Enter/Space while it has focus.
els.drop.addEventListener('click', (e) => {
  if (e.target.closest('button, a, input, label, select')) return;
  pick();
});
els.drop.addEventListener('keydown', (e) => {
  if (e.target !== els.drop) return;
  if (e.key === 'Enter' || e.key === ' ') {
    e.preventDefault();
    pick();
  }
});

// Dropping works anywhere on the page (the zone lights up); a file dropped outside must not
// make the browser navigate away to it.
let dragDepth = 0;
function isFileDrag(e) {
  const types = e.dataTransfer && e.dataTransfer.types;
  return !!types && [...types].includes('Files');
}
function setDragging(on) {
  els.drop.classList.toggle('dragover', on);
  document.body.classList.toggle('is-dragging', on);
}
addEventListener('dragenter', (e) => {
  if (!isFileDrag(e)) return;
  e.preventDefault();
  dragDepth += 1;
  setDragging(true);
});
addEventListener('dragover', (e) => {
  if (!isFileDrag(e)) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
  setDragging(true);
});
addEventListener('dragleave', (e) => {
  if (!isFileDrag(e)) return;
  dragDepth = Math.max(0, dragDepth - 1);
  if (dragDepth === 0 || e.relatedTarget === null) {
    dragDepth = 0;
    setDragging(false);
  }
});
addEventListener('drop', async (e) => {
  if (!e.dataTransfer) return;
  e.preventDefault();
  dragDepth = 0;
  setDragging(false);
  addFiles(await droppedFiles(e.dataTransfer));
});

/**
 * Files of a drop, with their FileSystemFileHandle where the browser gives one (Chromium's
 * getAsFileSystemHandle), so that dropped files resume after a reload as picked ones do.
 * Folders are skipped. Everything is requested synchronously: the items go stale after the
 * event handler returns.
 */
async function droppedFiles(dt) {
  const entries = [];
  for (const item of [...(dt.items || [])]) {
    if (item.kind !== 'file') continue;
    const entry = typeof item.webkitGetAsEntry === 'function' ? item.webkitGetAsEntry() : null;
    if (entry && entry.isDirectory) continue;
    const file = item.getAsFile();
    let handle = null;
    if (typeof item.getAsFileSystemHandle === 'function') {
      handle = item.getAsFileSystemHandle().catch(() => null);
    }
    if (file) entries.push({ file, handle });
  }
  if (!entries.length && dt.files) {
    for (const file of dt.files) entries.push({ file, handle: null });
  }
  const items = [];
  for (const { file, handle } of entries) {
    const h = await handle;
    items.push(h && h.kind === 'file' ? { file, handle: h } : { file });
  }
  return items;
}

function reducedMotion() {
  return matchMedia('(prefers-reduced-motion: reduce)').matches;
}

// ---------------------------------------------------------------------------------------
// Start

// The SDK is imported last, so that everything above is set up before the await: a click or
// a language switch while it loads finds no half-initialised module.
try {
  sdk = await import('/sdk/ferry.js');
} catch (err) {
  console.error('ferry: the SDK did not load', err);
  showFatal();
}
if (sdk) {
  uploader = makeUploader();
  window.ferry = { uploader };
  unfinished = new UnfinishedList({
    section: $('#unfinished-section'),
    list: $('#unfinished'),
    template: $('#unfinished-row-template'),
    reselectInput: $('#reselect-input'),
    onFiles: addFiles,
    forget: (record) => uploader.forget(record.fingerprint),
    announce,
  });
  loadUnfinished();
}
scheduleRender();

/** Lists the earlier visits' records, less those an upload on this page already continues. */
async function loadUnfinished() {
  try {
    const records = await uploader.unfinished();
    const live = [...rows.keys()];
    unfinished.set((records || []).filter((r) => !live.some((up) => (up.fingerprint && up.fingerprint === r.fingerprint)
      || (up.file && fileMatchesRecord(up.file, r)))));
  } catch (err) {
    console.warn('ferry: could not list unfinished uploads', err);
  }
}
