// "Unfinished uploads from an earlier visit": the SDK's records (uploader.unfinished()) that no
// upload on this page has picked up yet. Each offers to select the file again (a matching file
// resumes from what the server holds), to resume at once from a stored FileSystemFileHandle
// (after the browser's permission prompt), or to forget the record.

import { t, applyStatic } from './i18n.js';
import { formatBytes, formatPercent, formatDate } from './format.js';

/** True when `file` is the file a record was made from (same name, size and mtime). */
export function fileMatchesRecord(file, record) {
  return file.name === record.name && file.size === record.size
    && (!record.lastModified || !file.lastModified || file.lastModified === record.lastModified);
}

export class UnfinishedList {
  /**
   * @param {{ section: HTMLElement, list: HTMLUListElement, template: HTMLTemplateElement,
   *           reselectInput: HTMLInputElement, onFiles: (items: {file: File, handle?: any}[], record?: object) => void,
   *           forget: (record: object) => Promise<void>, announce: (msg: string) => void }} opts
   */
  constructor(opts) {
    Object.assign(this, opts);
    this.records = [];
    this.pending = null; // the record whose file the reselect picker is choosing
    this.list.addEventListener('click', (e) => this.onClick(e));
    this.reselectInput.addEventListener('change', () => {
      const files = [...(this.reselectInput.files || [])];
      const record = this.pending;
      this.pending = null;
      this.reselectInput.value = '';
      if (files.length) this.onFiles(files.map((file) => ({ file })), record);
    });
    this.reselectInput.addEventListener('cancel', () => { this.pending = null; });
  }

  set(records) {
    this.records = records.slice().sort((a, b) => (b.updatedAt || 0) - (a.updatedAt || 0));
    this.render();
  }

  /** The record `file` would continue, if any. */
  find(file) {
    return this.records.find((r) => fileMatchesRecord(file, r)) || null;
  }

  /** Drops the records that `file` continues (the upload on the page takes over). */
  taken(file) {
    const before = this.records.length;
    this.records = this.records.filter((r) => !fileMatchesRecord(file, r));
    if (this.records.length !== before) this.render();
  }

  /** Drops records whose fingerprint an upload on the page has. */
  takenFingerprints(fingerprints) {
    const before = this.records.length;
    this.records = this.records.filter((r) => !fingerprints.has(r.fingerprint));
    if (this.records.length !== before) this.render();
  }

  render() {
    this.section.hidden = this.records.length === 0;
    const rows = new Map([...this.list.children].map((li) => [li.dataset.fingerprint, li]));
    const keep = new Set();
    for (const record of this.records) {
      keep.add(record.fingerprint);
      let li = rows.get(record.fingerprint);
      if (!li) {
        li = this.template.content.firstElementChild.cloneNode(true);
        li.dataset.fingerprint = record.fingerprint;
        applyStatic(li);
      }
      this.fill(li, record);
      this.list.append(li); // keeps the sorted order
    }
    for (const [fp, li] of rows) if (!keep.has(fp)) li.remove();
  }

  fill(li, record) {
    const name = record.name || '';
    const size = Number(record.size) || 0;
    const confirmed = Math.min(size, Number(record.confirmed) || 0);
    const fraction = size > 0 ? confirmed / size : 0;
    li.dataset.name = name;
    const nameEl = li.querySelector('.name');
    nameEl.textContent = name;
    nameEl.title = name;
    const when = record.updatedAt || record.createdAt;
    li.querySelector('.when').textContent = when ? t('unfinished.when', { when: formatDate(when) }) : '';
    const progress = li.querySelector('progress');
    progress.value = Math.round(fraction * 1000) / 10;
    progress.setAttribute('aria-valuenow', String(Math.floor(fraction * 100)));
    progress.setAttribute('aria-label', t('unfinished.progressLabel', { name }));
    li.querySelector('.progress-text').textContent = t('unfinished.progress', {
      done: formatBytes(confirmed), total: formatBytes(size), pct: formatPercent(fraction),
    });
    li.querySelector('.size').textContent = formatBytes(size);
    const canHandle = Boolean(record.handle && typeof record.handle.getFile === 'function');
    const resume = li.querySelector('[data-action="resume-handle"]');
    resume.hidden = !canHandle;
    // Visible text first, then the file, so that speech input ("click Resume") still matches.
    resume.setAttribute('aria-label', `${t('unfinished.resume')}: ${name}`);
    li.querySelector('[data-action="reselect"]').setAttribute('aria-label', `${t('unfinished.reselect')}: ${name}`);
    li.querySelector('[data-action="forget"]').setAttribute('aria-label', `${t('unfinished.forget')}: ${name}`);
    // The reselect button is the main action where there is no handle.
    li.querySelector('[data-action="reselect"]').classList.toggle('btn-primary', !canHandle);
  }

  relabel() {
    for (const li of this.list.children) applyStatic(li);
    this.render();
  }

  note(li, text) {
    const note = li.querySelector('.note');
    note.textContent = text;
    note.hidden = !text;
  }

  async onClick(e) {
    const button = e.target.closest('button[data-action]');
    if (!button) return;
    const li = button.closest('li.unfinished-row');
    const record = this.records.find((r) => r.fingerprint === li.dataset.fingerprint);
    if (!record) return;
    const action = button.dataset.action;
    if (action === 'reselect') {
      this.pending = record;
      this.reselectInput.accept = extensionOf(record.name);
      this.reselectInput.click();
    } else if (action === 'forget') {
      button.disabled = true;
      try {
        await this.forget(record);
        this.records = this.records.filter((r) => r !== record);
        this.announce(t('announce.forgotten', { name: record.name }));
        const next = li.nextElementSibling || li.previousElementSibling;
        this.render();
        // Keep keyboard focus in the list instead of dropping it on <body>.
        next?.querySelector('[data-action="forget"]')?.focus();
      } finally {
        button.disabled = false;
      }
    } else if (action === 'resume-handle') {
      await this.resumeFromHandle(li, record);
    }
  }

  async resumeFromHandle(li, record) {
    const handle = record.handle;
    const name = record.name;
    try {
      // requestPermission needs the click's user activation, so it is asked first.
      let permission = 'granted';
      if (typeof handle.requestPermission === 'function') {
        permission = await handle.requestPermission({ mode: 'read' });
      }
      if (permission !== 'granted') {
        this.note(li, t('unfinished.denied', { name }));
        li.querySelector('[data-action="reselect"]').focus();
        return;
      }
      const file = await handle.getFile();
      this.onFiles([{ file, handle }], record);
    } catch (err) {
      this.note(li, t(err && err.name === 'NotAllowedError' ? 'unfinished.denied' : 'unfinished.gone', { name }));
      li.querySelector('[data-action="reselect"]').focus();
    }
  }
}

function extensionOf(name) {
  const i = String(name).lastIndexOf('.');
  return i > 0 && i < name.length - 1 ? name.slice(i) : '';
}
