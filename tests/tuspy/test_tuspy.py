#!/usr/bin/env python3
"""tuspy (the tus project's Python client, unmodified) against a running ferry server.

    python test_tuspy.py http://127.0.0.1:8080        (or FERRY_URL=... python test_tuspy.py)

Scenarios (each prints one line with its time; the run ends with "N passed, N failed" and
exits non-zero if any failed):

  resume-by-url   64 MiB in 4 MiB chunks: upload_chunk() until ~40 % is acknowledged, drop
                  the uploader, then a new `client.uploader(path, url=...)` picks the offset
                  up from the server's HEAD and finishes (its chunks carry Upload-Checksum
                  sha1, tuspy's checksum option); GET of the upload URL equals the source.
  resume-storage  8 MiB: one chunk, then a new uploader with store_url + tuspy's FileStorage
                  finds the URL by the file's fingerprint and resumes. No metadata is given
                  here on purpose: tuspy then sends an empty `Upload-Metadata:` header on
                  the POST, which a server has to accept for tuspy's default use to work.
  async           8 MiB through tuspy's AsyncUploader (aiohttp).
"""

import asyncio
import hashlib
import os
import sys
import tempfile
import time
import traceback

import requests
from tusclient import client as tus_client
from tusclient.storage import filestorage

MiB = 1024 * 1024


def base_url() -> str:
    url = (sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FERRY_URL", "")).rstrip("/")
    if not url.startswith(("http://", "https://")):
        print("usage: test_tuspy.py http://127.0.0.1:PORT   (or set FERRY_URL)", file=sys.stderr)
        sys.exit(2)
    return url


BASE = base_url()
ENDPOINT = BASE + "/files/"
WORK = tempfile.mkdtemp(prefix="ferry-tuspy-")


def random_file(name: str, size: int):
    path = os.path.join(WORK, name)
    data = os.urandom(size)
    with open(path, "wb") as f:
        f.write(data)
    return path, hashlib.sha256(data).hexdigest(), size


def tus_head(url: str) -> requests.Response:
    return requests.head(url, headers={"Tus-Resumable": "1.0.0"}, timeout=30)


def assert_server_holds(url: str, sha: str, size: int, what: str):
    resp = requests.get(url, timeout=120)
    assert resp.status_code == 200, f"{what}: GET {url} -> {resp.status_code}, expected 200"
    body = resp.content
    assert len(body) == size, f"{what}: GET {url} returned {len(body)} bytes, source has {size}"
    assert hashlib.sha256(body).hexdigest() == sha, f"{what}: GET {url}: sha256 differs from the source"


def scenario_resume_by_url():
    path, sha, size = random_file("tuspy-64MiB.bin", 64 * MiB)
    client = tus_client.TusClient(ENDPOINT)
    chunk = 4 * MiB

    # First run: chunks until ~40 % is acknowledged, then the uploader is simply dropped
    # (as when the process is killed between two chunks).
    first = client.uploader(path, chunk_size=chunk, metadata={"filename": "tuspy-64MiB.bin"})
    while first.offset < 0.4 * size:
        first.upload_chunk()
    url, acked = first.url, first.offset
    assert url, "the first uploader has no URL"
    assert 0 < acked < size, f"unexpected offset after the first run: {acked}"
    del first

    head = tus_head(url)
    assert head.status_code in (200, 204), f"HEAD {url} -> {head.status_code}"
    server_offset = int(head.headers["Upload-Offset"])
    assert server_offset == acked, f"HEAD Upload-Offset {server_offset}, but {acked} bytes were acknowledged"
    assert int(head.headers["Upload-Length"]) == size, f"HEAD Upload-Length {head.headers.get('Upload-Length')}"

    # Second run: a new uploader on the same URL takes the offset from the server's HEAD.
    second = client.uploader(path, url=url, chunk_size=chunk, upload_checksum=True)
    assert second.offset == server_offset > 0, f"the new uploader starts at {second.offset}, the server holds {server_offset}"
    resumed_from = second.offset
    second.upload()
    assert second.offset == size, f"upload() ended at offset {second.offset}, expected {size}"
    assert second.url == url

    head = tus_head(url)
    assert int(head.headers["Upload-Offset"]) == size, f"HEAD after completion: Upload-Offset {head.headers.get('Upload-Offset')}"
    assert_server_holds(url, sha, size, "resumed tuspy upload")
    return f"stopped after {acked // MiB} MiB ({100 * acked // size} %), resumed from the server's offset {resumed_from // MiB} MiB with sha1 Upload-Checksum"


def scenario_resume_storage():
    path, sha, size = random_file("tuspy-8MiB.bin", 8 * MiB)
    client = tus_client.TusClient(ENDPOINT)
    storage = filestorage.FileStorage(os.path.join(WORK, "tuspy-urls.json"))

    first = client.uploader(path, chunk_size=2 * MiB, store_url=True, url_storage=storage)
    first.upload_chunk()
    url = first.url
    assert first.offset == 2 * MiB, f"offset after one chunk: {first.offset}"
    del first

    second = client.uploader(path, chunk_size=2 * MiB, store_url=True, url_storage=storage)
    assert second.url == url, f"store_url did not find the stored URL (got {second.url}, stored {url})"
    assert second.offset == 2 * MiB, f"the resumed uploader starts at {second.offset}, expected {2 * MiB}"
    second.upload()
    assert_server_holds(url, sha, size, "store_url-resumed tuspy upload")
    return "FileStorage found the URL by fingerprint; resumed at 2 MiB"


def scenario_async():
    path, sha, size = random_file("tuspy-async-8MiB.bin", 8 * MiB)
    client = tus_client.TusClient(ENDPOINT)
    uploader = client.async_uploader(path, chunk_size=2 * MiB, metadata={"filename": "async.bin"})
    asyncio.run(uploader.upload())
    assert uploader.offset == size, f"AsyncUploader ended at {uploader.offset}"
    assert_server_holds(uploader.url, sha, size, "AsyncUploader upload")
    return "4 PATCHes through aiohttp"


SCENARIOS = [
    ("resume-by-url: 64 MiB, 4 MiB chunks, stopped at ~40 %, new uploader(url=...) resumes", scenario_resume_by_url),
    ("resume-storage: store_url + FileStorage finds and resumes an 8 MiB upload", scenario_resume_storage),
    ("async: AsyncUploader, 8 MiB in 2 MiB chunks", scenario_async),
]


def main():
    try:
        opt = requests.options(ENDPOINT, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    except requests.RequestException as err:
        print(f"cannot reach {ENDPOINT}: {err}", file=sys.stderr)
        return 1
    import importlib.metadata as md

    print(
        f"tuspy {md.version('tuspy')} -> {ENDPOINT}: OPTIONS {opt.status_code}, "
        f"Tus-Version: {opt.headers.get('Tus-Version')}, Tus-Extension: {opt.headers.get('Tus-Extension')}"
    )
    filters = sys.argv[2:]
    passed = failed = 0
    for name, fn in SCENARIOS:
        if filters and not any(f in name for f in filters):
            continue
        t0 = time.monotonic()
        try:
            detail = fn()
            print(f"PASS {name} ({round((time.monotonic() - t0) * 1000)} ms) — {detail}", flush=True)
            passed += 1
        except Exception as err:  # noqa: BLE001 — report every failure the same way
            print(f"FAIL {name} ({round((time.monotonic() - t0) * 1000)} ms)", flush=True)
            detail = getattr(err, "response_content", None)
            status = getattr(err, "status_code", None)
            print(f"     {type(err).__name__}: {err}" + (f" (status {status}, body {detail[:300]!r})" if status or detail else ""))
            for line in traceback.format_exc().splitlines()[-6:]:
                print(f"     {line}")
            failed += 1
    print(f"tuspy: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        code = main()
    finally:
        import shutil

        shutil.rmtree(WORK, ignore_errors=True)
    sys.exit(code)
