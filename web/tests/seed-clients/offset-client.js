// The byte-offset resume client of seed article 004, with fetch in place of XMLHttpRequest.
// The file is named by the client (name-size-lastModified); the server is asked how many
// bytes it holds, and the rest of the file is sent from there in one request. Browser-only
// APIs and page-relative URLs, so it runs unchanged in a page.

/** The id the server tracks this file by; changes when the name, size or mtime change. */
export function fileIdOf(file) {
  return file.name + '-' + file.size + '-' + file.lastModified;
}

/** How many bytes of this file the server already holds (0 if it has never seen it). */
export async function uploadedBytes(fileId) {
  const resp = await fetch('/api/upload/status', { headers: { 'X-File-Id': fileId } });
  if (!resp.ok) throw new Error(`status check failed: ${resp.status} ${await resp.text()}`);
  return +(await resp.text());
}

/**
 * Send the part of `file` the server does not have yet.
 * @param {File} file
 * @param {{signal?: AbortSignal}} [options] abort to interrupt (e.g. a pause button)
 * @returns {Promise<{startByte: number, result: any}>} result is the server's JSON answer;
 *   `result.url` is set once the whole file is there.
 */
export async function resumeUpload(file, { signal } = {}) {
  const fileId = fileIdOf(file);
  const startByte = await uploadedBytes(fileId);
  const resp = await fetch('/api/upload', {
    method: 'POST',
    headers: {
      'Content-Type': 'application/octet-stream',
      'X-File-Id': fileId,
      'X-Start-Byte': String(startByte),
      'X-File-Size': String(file.size),
    },
    body: file.slice(startByte),
    signal,
  });
  if (!resp.ok) throw new Error(`upload failed: ${resp.status} ${await resp.text()}`);
  return { startByte, result: await resp.json() };
}
