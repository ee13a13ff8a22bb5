// Text of the upload page in Chinese (zh-CN) and English, and the language choice.
//
// Static text lives in the HTML as `data-i18n="key"` (textContent), `data-i18n-attr="attr:key;…"`
// (attributes such as aria-label or placeholder); dynamic text is built with `t(key, params)`.
// The choice is: localStorage (the #lang switch) → navigator.languages → English.

const STORAGE_KEY = 'ferry.lang';

export const LANGS = {
  zh: { htmlLang: 'zh-CN', name: '中文' },
  en: { htmlLang: 'en', name: 'English' },
};

const en = {
  'doc.title': 'ferry — resumable upload',
  'app.tagline': 'Large files, uploaded reliably. An interrupted upload continues where it stopped.',
  'lang.label': 'Language',

  'drop.title': 'Drop files here',
  'drop.titleTouch': 'Upload files',
  'drop.or': 'or',
  'drop.pick': 'Choose files',
  'drop.input': 'use the standard file dialog',
  'drop.hint': 'Lost connection, closed tab, reloaded page — the upload continues from what the server already has.',
  'drop.hint.handles': 'Files chosen with “Choose files” are remembered, so after a reload they resume with one click.',
  'drop.active': 'Release to upload',

  'settings.title': 'Settings',
  'settings.note': 'Changes apply to files added afterwards.',
  'settings.protocol': 'Protocol',
  'settings.protocol.tus': 'tus (recommended)',
  'settings.protocol.chunk': 'MD5 分片 / chunk handshake',
  'settings.protocol.tus.hint': 'The open tus protocol: sequential chunks, each checked with SHA-256.',
  'settings.protocol.chunk.hint': 'Hashes the file (MD5) first; a file the server already has completes instantly (秒传), other chunks go up in parallel.',
  'settings.chunkSize': 'Chunk size (MiB)',
  'settings.concurrency': 'Parallel chunk requests',
  'settings.concurrency.hint': 'Chunk handshake only: how many chunks of one file are sent at the same time.',
  'settings.token': 'Access token',
  'settings.token.hint': 'Only needed if the server asks for one. Kept in this browser and sent as “Authorization: Bearer”.',
  'settings.token.show': 'Show token',
  'settings.token.saved': 'Access token saved.',
  'settings.token.cleared': 'Access token removed.',

  'summary.empty': 'No files yet.',
  'summary.files': '{n} file|{n} files',
  'summary.progress': '{done} of {total}',
  'summary.active': '{n} uploading',
  'summary.waiting': '{n} waiting',
  'summary.finished': '{n} done',
  'summary.failed': '{n} failed',
  'summary.overall': 'Overall progress',
  'summary.pauseAll': 'Pause all',
  'summary.resumeAll': 'Resume all',
  'summary.cancelAll': 'Cancel all',
  'summary.clear': 'Clear finished',

  'files.heading': 'Uploads',
  'files.emptyHint': 'Files you add appear here with their progress.',

  'state.idle': 'Not started',
  'state.queued': 'Queued',
  'state.hashing': 'Computing checksum',
  'state.hashingPct': 'Computing checksum {pct}',
  'state.uploading': 'Uploading',
  'state.paused': 'Paused',
  'state.offline': 'Waiting for network',
  'state.retrying': 'Retrying',
  'state.retryingIn': 'Retrying in {time} (attempt {n})',
  'state.done': 'Done',
  'state.failed': 'Failed',
  'state.canceled': 'Canceled',

  'row.instant': '秒传 / instant upload — the server already had this file, nothing was sent.',
  'row.resumed': 'Resumed: {size} were already on the server.',
  'row.progressLabel': 'Upload progress of {name}',
  'row.pause': 'Pause {name}',
  'row.resume': 'Resume {name}',
  'row.cancel': 'Cancel {name}',
  'row.retry': 'Retry {name}',
  'row.remove': 'Remove {name} from the list',
  'row.copy': 'Copy the link to {name}',
  'row.copied': 'Copied',
  'row.copyFailed': 'Select the link and press Ctrl+C to copy it.',
  'row.download': 'Download link',
  'row.tokenButton': 'Enter access token',
  'row.eta': '{time} left',
  'row.speedIdle': '—',

  'action.pause': 'Pause',
  'action.resume': 'Resume',
  'action.cancel': 'Cancel',
  'action.retry': 'Retry',
  'action.copy': 'Copy',
  'action.remove': 'Remove',

  'unfinished.heading': 'Unfinished uploads from an earlier visit',
  'unfinished.hint': 'Select the same file again and it continues from where it stopped.',
  'unfinished.progress': '{done} of {total} on the server ({pct})',
  'unfinished.progressLabel': 'Uploaded so far of {name}',
  'unfinished.reselect': 'Select the file again to resume',
  'unfinished.resume': 'Resume',
  'unfinished.forget': 'Forget',
  'unfinished.mismatch': '“{picked}” is not the file of this unfinished upload ({name}, {size}); it is uploaded as a new file.',
  'unfinished.denied': 'The browser did not allow reading {name}. Select the file again to resume.',
  'unfinished.gone': '{name} can no longer be read (moved or deleted?). Select it again to resume.',
  'unfinished.when': 'started {when}',

  'yours.heading': 'Your files',
  'yours.hint': 'Finished uploads on this server, newest first.',
  'yours.refresh': 'Refresh',
  'yours.more': 'Show more',
  'yours.download': 'Download',
  'yours.downloadLabel': 'Download {name}',
  'yours.when': 'uploaded {when}',

  'announce.state': '{name}: {state}',
  'announce.done': '{name}: upload finished.',
  'announce.instant': '{name}: instant upload, the server already had it.',
  'announce.failed': '{name}: upload failed. {reason}',
  'announce.added': '{n} file added.|{n} files added.',
  'announce.copied': 'Link to {name} copied.',
  'announce.duplicate': '{name} is already in the list and still uploading.',
  'fatal.sdk': 'The upload library (/sdk/ferry.js) could not be loaded. Check the connection and reload the page.',
  'announce.forgotten': 'Forgot {name}.',
  'announce.offline': 'You are offline. Uploads continue when the connection returns.',
  'announce.online': 'Back online.',

  'offline.banner': 'You are offline. Uploads wait and continue by themselves when the connection returns.',

  'err.network': 'The server could not be reached: the network connection was lost or the server is down. Check the connection, then retry; what was uploaded is kept.',
  'err.too_large': 'The server refused the file: it is larger than this server accepts.',
  'err.checksum_mismatch': 'The data did not match its checksum: either the file changed while it was being uploaded, or the network corrupted some data. Retry to send it again.',
  'err.offset_mismatch': 'The server and this page disagreed about how much had been uploaded. Retry to continue from what the server holds.',
  'err.unauthorized': 'Not authorised: this server needs a valid access token. Enter it in Settings, then retry.',
  'err.not_found': 'The server no longer has this upload (unfinished uploads expire). Retry to upload it again.',
  'err.server': 'The server ran into a problem (HTTP {status}). Retry in a moment; what was uploaded is kept.',
  'err.out_of_space': 'The server is out of disk space. What it acknowledged is kept: resume once space has been freed.',
  'err.serverNoStatus': 'The server ran into a problem. Retry in a moment; what was uploaded is kept.',
  'reason.network': 'The server cannot be reached right now (network lost or server down).',
  'reason.server': 'The server had a problem.',
  'reason.other': 'The last request failed.',
  'err.aborted': 'The upload was stopped.',
  'err.file_changed': 'The file has changed since the upload began. Select it again to upload the current version.',
  'err.hash_failed': 'The file could not be read to compute its checksum. It may have been moved, deleted or changed.',
  'err.http': 'The server refused the upload (HTTP {status}).',
  'err.unknown': 'Something went wrong.',
  'err.serverSaid': 'Server says: “{message}”',

  'unit.s': '{n} s',
  'unit.min': '{n} min',
  'unit.h': '{n} h',
  'unit.d': '{n} d',
  'unit.join': ' ',
  'time.lessThanSecond': '< 1 s',
};

const zh = {
  'doc.title': 'ferry — 断点续传上传',
  'app.tagline': '大文件稳定上传：中断之后，从断点继续。',
  'lang.label': '语言',

  'drop.title': '将文件拖放到这里',
  'drop.titleTouch': '上传文件',
  'drop.or': '或',
  'drop.pick': '选择文件',
  'drop.input': '使用系统文件对话框',
  'drop.hint': '断网、关闭标签页、刷新页面都不怕——上传会从服务器已有的部分继续。',
  'drop.hint.handles': '用“选择文件”按钮选的文件会被记住，刷新页面后一键即可继续上传。',
  'drop.active': '松开即可上传',

  'settings.title': '设置',
  'settings.note': '更改对之后添加的文件生效。',
  'settings.protocol': '协议',
  'settings.protocol.tus': 'tus（推荐）',
  'settings.protocol.chunk': 'MD5 分片 / chunk handshake',
  'settings.protocol.tus.hint': '开放的 tus 协议：按顺序上传分片，每个分片用 SHA-256 校验。',
  'settings.protocol.chunk.hint': '先计算文件的 MD5；服务器已有的文件立即完成（秒传），其余分片并发上传。',
  'settings.chunkSize': '分片大小（MiB）',
  'settings.concurrency': '并发分片请求数',
  'settings.concurrency.hint': '仅用于 MD5 分片协议：同一文件同时发送的分片数。',
  'settings.token': '访问令牌',
  'settings.token.hint': '仅在服务器要求时需要。保存在此浏览器中，以“Authorization: Bearer”发送。',
  'settings.token.show': '显示令牌',
  'settings.token.saved': '访问令牌已保存。',
  'settings.token.cleared': '访问令牌已清除。',

  'summary.empty': '还没有文件。',
  'summary.files': '{n} 个文件',
  'summary.progress': '{done} / {total}',
  'summary.active': '{n} 个上传中',
  'summary.waiting': '{n} 个等待中',
  'summary.finished': '{n} 个已完成',
  'summary.failed': '{n} 个失败',
  'summary.overall': '总进度',
  'summary.pauseAll': '全部暂停',
  'summary.resumeAll': '全部继续',
  'summary.cancelAll': '全部取消',
  'summary.clear': '清除已结束',

  'files.heading': '上传列表',
  'files.emptyHint': '添加的文件会显示在这里，并显示进度。',

  'state.idle': '未开始',
  'state.queued': '排队中',
  'state.hashing': '正在计算校验值',
  'state.hashingPct': '正在计算校验值 {pct}',
  'state.uploading': '上传中',
  'state.paused': '已暂停',
  'state.offline': '等待网络',
  'state.retrying': '准备重试',
  'state.retryingIn': '{time}后重试（第 {n} 次）',
  'state.done': '已完成',
  'state.failed': '失败',
  'state.canceled': '已取消',

  'row.instant': '秒传 / instant upload — 服务器已有此文件，无需再次上传。',
  'row.resumed': '已续传：服务器上已有 {size}。',
  'row.progressLabel': '{name} 的上传进度',
  'row.pause': '暂停 {name}',
  'row.resume': '继续 {name}',
  'row.cancel': '取消 {name}',
  'row.retry': '重试 {name}',
  'row.remove': '从列表中移除 {name}',
  'row.copy': '复制 {name} 的链接',
  'row.copied': '已复制',
  'row.copyFailed': '请选中链接后按 Ctrl+C 复制。',
  'row.download': '下载链接',
  'row.tokenButton': '填写访问令牌',
  'row.eta': '剩余 {time}',
  'row.speedIdle': '—',

  'action.pause': '暂停',
  'action.resume': '继续',
  'action.cancel': '取消',
  'action.retry': '重试',
  'action.copy': '复制',
  'action.remove': '移除',

  'unfinished.heading': '上次未完成的上传',
  'unfinished.hint': '重新选择同一个文件，即可从中断处继续。',
  'unfinished.progress': '服务器已有 {done} / {total}（{pct}）',
  'unfinished.progressLabel': '{name} 已上传的部分',
  'unfinished.reselect': '重新选择文件以继续',
  'unfinished.resume': '继续上传',
  'unfinished.forget': '忘记',
  'unfinished.mismatch': '“{picked}”不是这次未完成上传的文件（{name}，{size}），将作为新文件上传。',
  'unfinished.denied': '浏览器未允许读取 {name}。请重新选择该文件以继续。',
  'unfinished.gone': '无法再读取 {name}（已被移动或删除？）。请重新选择该文件以继续。',
  'unfinished.when': '开始于 {when}',

  'yours.heading': '我的文件',
  'yours.hint': '服务器上已上传完成的文件，最新的在前。',
  'yours.refresh': '刷新',
  'yours.more': '显示更多',
  'yours.download': '下载',
  'yours.downloadLabel': '下载 {name}',
  'yours.when': '上传于 {when}',

  'announce.state': '{name}：{state}',
  'announce.done': '{name}：上传完成。',
  'announce.instant': '{name}：秒传完成，服务器已有此文件。',
  'announce.failed': '{name}：上传失败。{reason}',
  'announce.added': '已添加 {n} 个文件。',
  'announce.copied': '已复制 {name} 的链接。',
  'announce.duplicate': '{name} 已在列表中，仍在上传。',
  'fatal.sdk': '无法加载上传组件（/sdk/ferry.js）。请检查网络后刷新页面。',
  'announce.forgotten': '已忘记 {name}。',
  'announce.offline': '网络已断开。恢复连接后上传会自动继续。',
  'announce.online': '网络已恢复。',

  'offline.banner': '网络已断开。上传正在等待，连接恢复后会自动继续。',

  'err.network': '无法连接服务器：网络连接已中断，或服务器未运行。请检查网络后重试，已上传的部分会保留。',
  'err.too_large': '服务器拒绝了此文件：文件超过了服务器允许的大小。',
  'err.checksum_mismatch': '数据与校验值不符：文件在上传过程中被修改，或数据在网络传输中损坏。请重试以重新发送。',
  'err.offset_mismatch': '服务器与本页记录的上传进度不一致。重试将从服务器已有的位置继续。',
  'err.unauthorized': '未授权：此服务器需要有效的访问令牌。请在“设置”中填写后重试。',
  'err.not_found': '服务器上已没有这次上传（未完成的上传会过期）。重试将重新上传。',
  'err.server': '服务器出现问题（HTTP {status}）。请稍后重试，已上传的部分会保留。',
  'err.out_of_space': '服务器磁盘空间已满。已确认的部分会保留：腾出空间后再继续上传。',
  'err.serverNoStatus': '服务器出现问题。请稍后重试，已上传的部分会保留。',
  'reason.network': '暂时无法连接服务器（网络中断或服务器未运行）。',
  'reason.server': '服务器出现问题。',
  'reason.other': '上一次请求失败。',
  'err.aborted': '上传已中止。',
  'err.file_changed': '文件在上传开始后已被修改。请重新选择该文件，以上传当前版本。',
  'err.hash_failed': '无法读取文件以计算校验值，文件可能已被移动、删除或修改。',
  'err.http': '服务器拒绝了上传（HTTP {status}）。',
  'err.unknown': '出现了问题。',
  'err.serverSaid': '服务器返回：“{message}”',

  'unit.s': '{n} 秒',
  'unit.min': '{n} 分',
  'unit.h': '{n} 小时',
  'unit.d': '{n} 天',
  'unit.join': ' ',
  'time.lessThanSecond': '不到 1 秒',
};

export const MESSAGES = { en, zh };

let current = 'en';

/** The language to start with: the remembered choice, else the first of navigator.languages we have. */
export function detectLang() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (saved && saved in MESSAGES) return saved;
  } catch { /* storage can be unavailable (privacy modes); fall through */ }
  const prefs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  for (const tag of prefs) {
    const base = String(tag).toLowerCase().split('-')[0];
    if (base in MESSAGES) return base;
  }
  return 'en';
}

export function getLang() {
  return current;
}

/** Switches the language, remembers it when `remember`, and re-renders every static text. */
export function setLang(lang, { remember = false } = {}) {
  current = lang in MESSAGES ? lang : 'en';
  if (remember) {
    try { localStorage.setItem(STORAGE_KEY, current); } catch { /* not fatal */ }
  }
  document.documentElement.lang = LANGS[current].htmlLang;
  document.title = t('doc.title');
  applyStatic(document);
}

/**
 * Looks up `key` and fills `{name}` placeholders. A message with a `|` has a singular and a
 * plural form chosen by `params.n` (only English needs it).
 */
export function t(key, params = {}) {
  let msg = MESSAGES[current][key] ?? MESSAGES.en[key] ?? key;
  if (msg.includes('|')) {
    const [one, many] = msg.split('|');
    msg = params.n === 1 ? one : many;
  }
  return msg.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
}

/** Fills every `data-i18n` / `data-i18n-attr` element below `root`. */
export function applyStatic(root) {
  for (const el of root.querySelectorAll('[data-i18n]')) {
    el.textContent = t(el.dataset.i18n);
  }
  for (const el of root.querySelectorAll('[data-i18n-attr]')) {
    for (const pair of el.dataset.i18nAttr.split(';')) {
      const [attr, key] = pair.split(':').map((s) => s.trim());
      if (attr && key) el.setAttribute(attr, t(key));
    }
  }
}
