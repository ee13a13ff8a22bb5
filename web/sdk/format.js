// Numbers for people: sizes in binary units (the page's chunk size is set in MiB), rates,
// and times left, in English or Chinese.

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `formatBytes(1536)` → "1.5 KiB"; three significant digits from KiB up. */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '–';
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${Math.round(v)} B`;
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return `${v.toFixed(digits)} ${UNITS[i]}`;
}

/** `formatRate(1048576)` → "1.00 MiB/s". */
export function formatRate(bytesPerSecond) {
  return Number.isFinite(bytesPerSecond) && bytesPerSecond >= 0 ? `${formatBytes(bytesPerSecond)}/s` : '–';
}

const DURATION_UNITS = {
  en: { h: 'h', m: 'm', s: 's', sep: ' ' },
  zh: { h: '小时', m: '分', s: '秒', sep: '' },
};

/**
 * `formatDuration(3725)` → "1h 2m", `formatDuration(42)` → "42s",
 * `formatDuration(125, 'zh')` → "2分5秒". Unknown (null, NaN, Infinity) → "–".
 * Two units at most: a time left is an estimate.
 */
export function formatDuration(seconds, lang = 'en') {
  if (seconds == null || !Number.isFinite(seconds) || seconds < 0) return '–';
  const u = DURATION_UNITS[String(lang).slice(0, 2)] || DURATION_UNITS.en;
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return m > 0 ? `${h}${u.h}${u.sep}${m}${u.m}` : `${h}${u.h}`;
  if (m > 0) return s > 0 ? `${m}${u.m}${u.sep}${s}${u.s}` : `${m}${u.m}`;
  return `${s}${u.s}`;
}
