// The Content-Range client of seed article 000: the file is read in 1 MiB pieces and every
// piece is POSTed to /upload as application/octet-stream with
// `Content-Range: bytes first-last/total`, several at once, so they may arrive in any order.
//
// One addition to the article's code: an `X-File-Id` header (name-size-lastModified, as in
// article 004). The article sends none, and without it no server can tell which file a
// range belongs to; ferry refuses such a request with 400 (SPEC §2.2).

const MAX_CHUNK_SIZE = 1024 * 1024; // 1 MiB per piece

function readChunk(file, start, end) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = (event) => resolve(event.target.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsArrayBuffer(file.slice(start, end));
  });
}

async function sendChunk(file, fileId, chunkData, start, end) {
  const resp = await fetch('/upload', {
    method: 'POST',
    body: chunkData,
    headers: {
      'Content-Type': 'application/octet-stream',
      'Content-Range': `bytes ${start}-${end - 1}/${file.size}`,
      'X-File-Id': fileId,
    },
  });
  if (!resp.ok) throw new Error(`piece ${start}-${end - 1} failed: ${resp.status} ${await resp.text()}`);
  return resp.json();
}

/**
 * Upload `file` in 1 MiB pieces, `concurrency` at a time.
 * @returns {Promise<{url: string, answers: any[]}>}
 */
export async function uploadByRanges(file, { concurrency = 3, chunkSize = MAX_CHUNK_SIZE } = {}) {
  const fileId = file.name + '-' + file.size + '-' + file.lastModified;
  const ranges = [];
  for (let start = 0; start < file.size; start += chunkSize) {
    ranges.push([start, Math.min(start + chunkSize, file.size)]);
  }
  const answers = [];
  let next = 0;
  async function worker() {
    while (next < ranges.length) {
      const [start, end] = ranges[next++];
      const data = await readChunk(file, start, end);
      answers.push(await sendChunk(file, fileId, data, start, end));
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, ranges.length) }, worker));
  const done = answers.find((a) => a.url);
  if (!done) throw new Error('every piece was sent but the server did not report the file complete');
  return { url: done.url, answers };
}
