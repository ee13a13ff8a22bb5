// Numbers as people read them: binary sizes (KiB, MiB, GiB), speeds in MiB/s, durations as
// "1 min 20 s" / "1 分 20 秒", percentages. Units are the same in both languages; only the
// number formatting and the words for time follow the page language.

import { getLang, t } from './i18n.js';

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
const MiB = 1024 * 1024;

function locale() {
  return getLang() === 'zh' ? 'zh-CN' : 'en';
}

function number(value, maxFractionDigits) {
  return new Intl.NumberFormat(locale(), { maximumFractionDigits: maxFractionDigits }).format(value);
}

/** 0 B, 512 B, 1.5 KiB, 12.3 MiB, 4.07 GiB — three significant digits above 1 KiB. */
export function formatBytes(bytes) {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let unit = 0;
  let value = bytes;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 ? 0 : value < 10 ? 2 : value < 100 ? 1 : 0;
  return `${number(value, digits)} ${UNITS[unit]}`;
}

/** Bytes per second as MiB/s: "12.3 MiB/s", "0.42 MiB/s"; "—" when unknown or zero. */
export function formatSpeed(bytesPerSecond) {
  if (!Number.isFinite(bytesPerSecond) || bytesPerSecond <= 0) return '—';
  const value = bytesPerSecond / MiB;
  const digits = value < 1 ? 2 : value < 100 ? 1 : 0;
  return `${number(value, digits)} MiB/s`;
}

/**
 * Seconds as at most two units: "45 s", "1 min 20 s", "2 h 5 min", "3 d 4 h"
 * (zh: "45 秒", "1 分 20 秒", "2 小时 5 分"). Returns "" when unknown.
 */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '';
  if (seconds < 1) return t('time.lessThanSecond');
  let s = Math.round(seconds);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const parts = [];
  if (d) parts.push(t('unit.d', { n: d }), h && t('unit.h', { n: h }));
  else if (h) parts.push(t('unit.h', { n: h }), m && t('unit.min', { n: m }));
  else if (m) parts.push(t('unit.min', { n: m }), s && t('unit.s', { n: s }));
  else parts.push(t('unit.s', { n: s }));
  return parts.filter(Boolean).join(t('unit.join'));
}

/** 0–1 as "42%" (integer; "99%" until it is really complete). */
export function formatPercent(fraction) {
  if (!Number.isFinite(fraction)) return '0%';
  const pct = fraction >= 1 ? 100 : Math.min(99, Math.floor(fraction * 100));
  return `${pct}%`;
}

export function formatDate(ms) {
  if (!Number.isFinite(ms)) return '';
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(ms));
}
