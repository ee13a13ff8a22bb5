#!/usr/bin/env bash
# 1 GiB upload/download throughput: ferry CLI vs curl / aria2c on one machine, interleaved.
# Usage: RUNS=5 scripts/bench-cli.sh   (needs aria2c: apt-get install aria2)
# Every upload goes to a fresh release server with an empty data dir on /dev/shm (stored
# uploads left behind would make later runs pay for first-touch memory in this VM).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p ferry --locked -q
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/ferry
RUNS=${RUNS:-3}
W=$(mktemp -d /dev/shm/ferry-clibench.XXXXXX)
trap 'rm -rf $W' EXIT
SRC=$W/src.bin; head -c $((1024*1024*1024)) /dev/urandom > $SRC; N=$(stat -c %s $SRC)
SHA=$(sha256sum $SRC | cut -c1-64)
now() { date +%s.%N; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { rm -rf $W/data; P=$(port); RUST_LOG=warn $BIN serve --listen 127.0.0.1:$P --data-dir $W/data --expire-incomplete 0 & SERVER=$!; B=http://127.0.0.1:$P; for _ in $(seq 100); do curl -fsS $B/healthz >/dev/null 2>&1 && break; sleep 0.05; done; }
stop() { kill $SERVER; wait $SERVER 2>/dev/null || true; }
t() { local name=$1; shift; local t0 t1; t0=$(now); "$@" > $W/out.txt 2>$W/err.txt || { cat $W/err.txt; exit 1; }; t1=$(now); python3 -c "print(f'$run  {\"$name\":34} {1024/($t1-$t0):6.0f} MiB/s  {$t1-$t0:6.2f} s')"; }
same() { [ "$(sha256sum $1 | cut -c1-64)" = "$SHA" ] || { echo "MISMATCH $1"; exit 1; }; rm -f $1 $1.part $1.part.meta; }
for run in $(seq $RUNS); do
  start; t "up   curl byte-offset POST" curl -fsS -X POST -T $SRC $B/api/upload -H "X-File-Id: b$run" -H 'X-Start-Byte: 0' -H "X-File-Size: $N" -H 'Expect:'; stop
  start; LOC=$(curl -fsSi -X POST $B/files/ -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $N" | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
  t "up   curl one tus PATCH" curl -fsS -X PATCH "$LOC" -T $SRC -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' -H 'Expect:'; stop
  start; t "up   ferry tus --parallel 1" $BIN upload $SRC --server $B --json --quiet --parallel 1 --state-file $W/s.json; rm -f $W/s.json; stop
  start; t "up   ferry tus (default: -p 4)" $BIN upload $SRC --server $B --json --quiet --state-file $W/s.json; rm -f $W/s.json; stop
  start; t "up   ferry chunk (-p 4, 5MiB)" $BIN upload $SRC --server $B --json --quiet --protocol chunk --state-file $W/s.json; rm -f $W/s.json; stop
  # Downloads of one plain upload (sha256 ETag: ferry verifies it).
  start; $BIN upload $SRC --server $B --json --quiet --parallel 1 --state-file $W/s.json > $W/out.txt; rm -f $W/s.json
  URL=$(python3 -c "import json; print(json.loads(open('$W/out.txt').read().splitlines()[-1])['url'])")
  t "down curl" curl -fsS -o $W/d.bin $URL; same $W/d.bin
  t "down aria2c -x4 -s4" aria2c -q -x4 -s4 --file-allocation=none --allow-overwrite=true -d $W -o d.bin $URL; same $W/d.bin
  t "down ferry" $BIN download $URL -o $W/d.bin --json --quiet; same $W/d.bin
  t "down ferry --connections 4" $BIN download $URL -o $W/d.bin --connections 4 --json --quiet; same $W/d.bin
  stop
done
