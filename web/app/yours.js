// "Your files": the finished uploads the server holds for this page's user, newest first, each
// with its size, when it was uploaded and its download link. Fed by the files API
// (GET /api/files, docs/PROTOCOL.md "Files API") with the same credentials as the uploads
// (the settings' access token), and refreshed when an upload finishes or the token changes.
// Unfinished uploads are left out here: the rows above and "Unfinished uploads" show those.

import { t, applyStatic } from './i18n.js';
import { formatBytes, formatDate } from './format.js';

/** Uploads asked for per request (finished and unfinished; only the finished are shown). */
const PAGE = 100;

export class YourFiles {
  /**
   * @param {{ section: HTMLElement, list: HTMLUListElement, template: HTMLTemplateElement,
   *           more: HTMLButtonElement, refreshButton: HTMLButtonElement,
   *           headers: Record<string, string>, endpoint: string }} opts
   *   `headers` is the live object the uploads send (Authorization when a token is set).
   */
  constructor(opts) {
    Object.assign(this, opts);
    this.files = []; // finished uploads, newest first, as the API gives them
    this.next = null; // the cursor of the page after the last one loaded
    this.generation = 0; // a refresh makes answers to earlier requests stale
    this.timer = 0;
    this.more.addEventListener('click', () => this.loadMore());
    this.refreshButton.addEventListener('click', () => this.refresh());
  }

  /** Loads the first page again (after an upload finished, a token change, a click). */
  async refresh() {
    clearTimeout(this.timer);
    this.timer = 0;
    const generation = ++this.generation;
    const page = await this.fetchPage(null);
    if (!page || generation !== this.generation) return;
    this.files = page.files;
    this.next = page.next;
    this.render();
  }

  /** A refresh shortly: uploads finishing together cause one request. */
  refreshSoon(delay = 300) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), delay);
  }

  async loadMore() {
    if (!this.next) return;
    const generation = this.generation;
    this.more.disabled = true;
    try {
      const page = await this.fetchPage(this.next);
      if (!page || generation !== this.generation) return;
      const known = new Set(this.files.map((f) => f.id));
      this.files.push(...page.files.filter((f) => !known.has(f.id)));
      this.next = page.next;
      this.render();
    } finally {
      this.more.disabled = false;
    }
  }

  /** One page of finished uploads: `{ files, next }`, or null when the server said no. */
  async fetchPage(cursor) {
    const url = new URL('/api/files', this.endpoint);
    url.searchParams.set('limit', String(PAGE));
    if (cursor) url.searchParams.set('cursor', cursor);
    let res;
    try {
      res = await fetch(url, { headers: { ...this.headers }, cache: 'no-store', credentials: 'omit' });
    } catch (err) {
      console.warn('ferry: could not list your files', err);
      return null;
    }
    if (res.status === 401) {
      // No (valid) token yet: nothing to show; the upload rows explain the token.
      this.files = [];
      this.next = null;
      this.render();
      return null;
    }
    if (!res.ok) {
      console.warn(`ferry: listing your files answered ${res.status}`);
      return null;
    }
    const body = await res.json().catch(() => null);
    if (!body || !Array.isArray(body.files)) return null;
    return {
      files: body.files.filter((f) => f && f.state === 'complete' && typeof f.url === 'string'),
      next: typeof body.next === 'string' && body.next ? body.next : null,
    };
  }

  render() {
    this.section.hidden = this.files.length === 0 && !this.next;
    this.more.hidden = !this.next;
    const rows = new Map([...this.list.children].map((li) => [li.dataset.id, li]));
    const keep = new Set();
    for (const file of this.files) {
      keep.add(file.id);
      let li = rows.get(file.id);
      if (!li) {
        li = this.template.content.firstElementChild.cloneNode(true);
        li.dataset.id = file.id;
        applyStatic(li);
      }
      this.fill(li, file);
      this.list.append(li); // keeps the newest-first order
    }
    for (const [id, li] of rows) if (!keep.has(id)) li.remove();
  }

  fill(li, file) {
    const name = file.name || file.id;
    li.dataset.name = name;
    const nameEl = li.querySelector('.name');
    nameEl.textContent = name;
    nameEl.title = name;
    li.querySelector('.size').textContent = formatBytes(Number(file.size ?? file.offset));
    const when = Date.parse(file.createdAt);
    li.querySelector('.when').textContent = Number.isFinite(when) ? t('yours.when', { when: formatDate(when) }) : '';
    const link = li.querySelector('a.download-link');
    if (link.getAttribute('href') !== file.url) link.href = file.url;
    // The file's own name when saved (the server's Content-Disposition says the same).
    if (file.name) link.download = file.name;
    link.setAttribute('aria-label', t('yours.downloadLabel', { name }));
  }

  relabel() {
    for (const li of this.list.children) applyStatic(li);
    this.render();
  }
}
