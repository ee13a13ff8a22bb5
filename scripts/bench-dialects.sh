#!/usr/bin/env bash
# Upload throughput of each dialect, driven by curl: byte-offset (one streamed POST),
# Content-Range (8 MiB parts, 4 in parallel), chunk handshake (5 MiB chunks, 4 in parallel,
# in order and shuffled; MD5 of file and chunks verified by the server).
#
#   scripts/bench-dialects.sh [--quick] [--size MiB] [--runs N] [BASE_URL]
#
# Without BASE_URL it builds a release server and runs it with its data on /dev/shm
# (override with BENCH_DIR=/path to measure a real disk). --quick: 32 MiB, one run.
# FILE_FIRST=1 sends each chunk's file field before its ids, as most browser clients do.
# Client-side hashing and splitting happen before the clock starts; the figures are the
# wall time from the first request to the finished file's URL. Prints medians.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=1024; RUNS=3; BASE=""
while (($#)); do
  case $1 in
    --quick) SIZE_MIB=32; RUNS=1 ;;
    --size) SIZE_MIB=$2; shift ;;
    --runs) RUNS=$2; shift ;;
    *) BASE=$1 ;;
  esac
  shift
done
ROOT=${BENCH_DIR:-/dev/shm}
WORK=$(mktemp -d "$ROOT/ferry-bench.XXXXXX")
SERVER=""
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
OWN=0
if [ -z "$BASE" ]; then
  OWN=1
  cargo build --release -p ferry --locked -q
fi
# A server of our own restarts with an empty data dir before every run: finished uploads
# left in tmpfs would make later runs pay for memory pressure, not for ferry.
fresh_server() {
  [ "$OWN" = 1 ] || return 0
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$WORK/data"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  RUST_LOG=warn "${CARGO_TARGET_DIR:-target}/release/ferry" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --expire-incomplete 0 &
  SERVER=$!
  BASE="http://127.0.0.1:$PORT"
  for _ in $(seq 100); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
}
fresh_server

SRC=$WORK/src.bin
head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom > "$SRC"
SIZE=$(stat -c %s "$SRC")
mkdir -p "$WORK/chunks" "$WORK/parts"
split -b 5M -a 4 -d "$SRC" "$WORK/chunks/c."
split -b 8M -a 4 -d "$SRC" "$WORK/parts/p."
FILE_ID=$(md5sum "$SRC" | cut -c1-32)
SRC_SHA=$(sha256sum "$SRC" | cut -c1-64)
: > "$WORK/chunks.tsv"; i=0
for c in "$WORK"/chunks/c.*; do
  printf '%s%d\t%s\n' "$(md5sum "$c" | cut -c1-32)" "$i" "$c" >> "$WORK/chunks.tsv"; i=$((i + 1))
done
now() { date +%s.%N; }
mibps() { python3 -c "import sys; print(f'{$SIZE/1048576/(float(sys.argv[1])):.0f}')" "$1"; }
check() { # url: the download must equal the source
  [ "$(curl -fsS "$1" | sha256sum | cut -c1-64)" = "$SRC_SHA" ] || { echo "bench: $1 differs from the source" >&2; exit 1; }
}
metric() { curl -fsS "$BASE/metrics" | awk -v k="$1" '$1==k {print $2}'; }

run_offset() {
  local id="bench-$RANDOM$RANDOM" t0 t1
  t0=$(now)
  curl -fsS -X POST -T "$SRC" "$BASE/api/upload" -H "X-File-Id: $id" -H 'X-Start-Byte: 0' \
    -H "X-File-Size: $SIZE" -H 'Content-Type: application/octet-stream' -H 'Expect:' > "$WORK/r.json"
  t1=$(now)
  check "$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' < "$WORK/r.json")"
  echo "$t1 - $t0" | bc -l
}

run_range() {
  local id="bench-$RANDOM$RANDOM" t0 t1 start=0 list="$WORK/ranges.txt"
  : > "$list"
  for p in "$WORK"/parts/p.*; do
    local n; n=$(stat -c %s "$p"); echo "$p $start $((start + n - 1))" >> "$list"; start=$((start + n))
  done
  t0=$(now)
  xargs -P4 -L1 sh -c 'curl -fsS -o /dev/null -X POST -T "$0" "'"$BASE"'/api/upload" -H "X-File-Id: '"$id"'" -H "Content-Range: bytes $1-$2/'"$SIZE"'" -H "Content-Type: application/octet-stream" -H "Expect:"' < "$list"
  t1=$(now)
  check "$(curl -fsS -X POST "$BASE/api/upload" -H "X-File-Id: $id" -H "Content-Range: bytes 0-0/$SIZE" --data-binary @<(head -c1 "$SRC") | python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])')"
  echo "$t1 - $t0" | bc -l
}

run_chunk() { # $1 = order: sorted | shuffled
  local t0 t1 ids file_id first
  # Each run needs content the server has not seen (it would answer an instant upload):
  # stamp the first 8 bytes, then re-derive the file id and the first chunk's id.
  first=$(head -n1 "$WORK/chunks.tsv" | cut -f2)
  printf '%08d' $((RANDOM * 32768 + RANDOM)) | dd of="$first" bs=8 count=1 conv=notrunc status=none
  cat "$WORK"/chunks/c.* > "$SRC"
  file_id=$(md5sum "$SRC" | cut -c1-32)
  SRC_SHA=$(sha256sum "$SRC" | cut -c1-64)
  sed -i "1s/^[0-9a-f]\{32\}/$(md5sum "$first" | cut -c1-32)/" "$WORK/chunks.tsv"
  ids=$(cut -f1 "$WORK/chunks.tsv" | python3 -c 'import sys,json; print(json.dumps([l.strip() for l in sys.stdin]))')
  curl -fsS -X POST "$BASE/api/upload/handshake" -H 'Content-Type: application/json' \
    -d "{\"fileId\":\"$file_id\",\"ext\":\".bin\",\"chunkIds\":$ids,\"size\":$SIZE,\"chunkSize\":5242880}" > "$WORK/hs.json"
  local order="$WORK/chunks.tsv"
  if [ "$1" = shuffled ]; then shuf "$WORK/chunks.tsv" > "$WORK/shuffled.tsv"; order="$WORK/shuffled.tsv"; fi
  t0=$(now)
  if [ "${FILE_FIRST:-0}" = 1 ]; then
    # The field order of most browser clients: the bytes before the ids (the server spools).
    xargs -P4 -L1 sh -c 'curl -fsS -o /dev/null -F "file=@$1" -F "chunkId=$0" -F "fileId='"$file_id"'" "'"$BASE"'/api/upload"' < "$order"
  else
    xargs -P4 -L1 sh -c 'curl -fsS -o /dev/null -F "chunkId=$0" -F "fileId='"$file_id"'" -F "file=@$1" "'"$BASE"'/api/upload"' < "$order"
  fi
  t1=$(now)
  local url
  url=$(curl -fsS -X POST "$BASE/api/upload/handshake" -H 'Content-Type: application/json' \
    -d "{\"fileId\":\"$file_id\",\"ext\":\".bin\",\"chunkIds\":$ids}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"])')
  check "$url"
  echo "$t1 - $t0" | bc -l
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "ferry upload throughput, $SIZE_MIB MiB, $RUNS run(s) each, data in $ROOT"
printf '%-42s %10s %10s\n' workload "median s" "MiB/s"
for w in offset range chunk-sorted chunk-shuffled; do
  : > "$WORK/times"
  for _ in $(seq "$RUNS"); do
    fresh_server
    case $w in
      offset) run_offset ;;
      range) run_range ;;
      chunk-sorted) run_chunk sorted ;;
      chunk-shuffled) run_chunk shuffled ;;
    esac >> "$WORK/times"
  done
  m=$(median < "$WORK/times")
  case $w in
    offset) label="byte-offset, one streamed POST" ;;
    range) label="Content-Range, 8 MiB parts x4 parallel" ;;
    chunk-sorted) label="chunk handshake, 5 MiB x4, in order" ;;
    chunk-shuffled) label="chunk handshake, 5 MiB x4, shuffled" ;;
  esac
  printf '%-42s %10.3f %10s\n' "$label" "$m" "$(mibps "$m")"
done
echo "bytes re-read for whole-file digests by the last server: $(metric ferry_rehashed_bytes_total)"
