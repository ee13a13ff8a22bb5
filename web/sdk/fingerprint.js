// A file's fingerprint: the key its upload record is stored under, so that the same file
// chosen again (after a reload, in another tab, after a browser restart) finds its upload.
//
//   ferry-v1:<name>:<size>:<lastModified>:<sample>
//
// where <sample> is the hex SHA-256 of the file's first, middle and last 64 KiB (the whole
// file when it is at most 192 KiB). Name, size and modification time alone would match a
// file that was edited in place within the same second; the sample catches most such edits
// without reading a multi-GB file. A changed file gets a new fingerprint and a new upload;
// the server's digests (tus per-PATCH checksums, the chunk dialect's fileId) catch the rest.

import { base64ToHex } from './hash-core.js';

export const SAMPLE_BYTES = 64 * 1024;

/** The blob whose digest is the sample: first, middle and last SAMPLE_BYTES. */
export function sampleOf(file) {
  const size = file.size;
  if (size <= 3 * SAMPLE_BYTES) return file;
  const mid = Math.floor(size / 2) - SAMPLE_BYTES / 2;
  return new Blob([
    file.slice(0, SAMPLE_BYTES),
    file.slice(mid, mid + SAMPLE_BYTES),
    file.slice(size - SAMPLE_BYTES, size),
  ]);
}

/**
 * @param {Blob & {name?: string, lastModified?: number}} file
 * @param {{sha256(blob: Blob, signal?: AbortSignal): Promise<string>}} hashers
 * @param {AbortSignal} [signal]
 */
export async function fingerprint(file, hashers, signal) {
  const sample = base64ToHex(await hashers.sha256(sampleOf(file), signal));
  return `ferry-v1:${file.name ?? ''}:${file.size}:${file.lastModified ?? 0}:${sample}`;
}
