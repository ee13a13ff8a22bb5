#!/usr/bin/env bash
# The README's curl tour, executed and checked: pushes a file through each upload dialect
# with plain curl and verifies the downloads byte for byte. Usage: curl-tour.sh BASE_URL
set -euo pipefail
BASE=${1:-http://127.0.0.1:8080}
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
fail() { echo "curl-tour: $*" >&2; exit 1; }

head -c $((12 * 1024 * 1024 + 12345)) /dev/urandom > photo.bin
SIZE=$(stat -c %s photo.bin)

# --- chunk handshake (SPEC §2.1): 5 MiB chunks, ids = md5 of the chunk + its index ---
split -b 5M -a 3 -d photo.bin chunk.
FILE_ID=$(md5sum photo.bin | cut -c1-32)
IDS=(); i=0
for c in chunk.*; do IDS+=("$(md5sum "$c" | cut -c1-32)$i"); i=$((i + 1)); done
LIST=$(printf '"%s",' "${IDS[@]}"); LIST="[${LIST%,}]"
curl -fsS -X POST "$BASE/api/upload/handshake" -H 'Content-Type: application/json' \
  -d "{\"fileId\":\"$FILE_ID\",\"ext\":\".bin\",\"chunkIds\":$LIST,\"fileName\":\"照片.bin\"}" > hs.json
[ "$(json 'len(d["data"])' < hs.json)" = "${#IDS[@]}" ] || fail "handshake should list every chunk: $(cat hs.json)"
i=0
for c in chunk.*; do
  curl -fsS -F "chunkId=${IDS[$i]}" -F "fileId=$FILE_ID" -F "file=@$c" "$BASE/api/upload" > up.json
  i=$((i + 1))
done
URL=$(json 'd["data"]' < up.json)
curl -fsS "$URL" -o got.bin && cmp photo.bin got.bin || fail "chunk download differs"
# Instant upload: the same handshake again answers with the URL.
curl -fsS -X POST "$BASE/api/upload/handshake" -H 'Content-Type: application/json' \
  -d "{\"fileId\":\"$FILE_ID\",\"ext\":\".bin\",\"chunkIds\":$LIST}" > hs2.json
[ "$(json 'd["data"]' < hs2.json)" = "$URL" ] || fail "instant upload should return the URL: $(cat hs2.json)"
# Resumable download: a range.
curl -fsS -r 1000-1999 "$URL" -o part.bin
cmp part.bin <(tail -c +1001 photo.bin | head -c 1000) || fail "range download differs"

# --- byte-offset resume (SPEC §2.2): X-File-Id + X-Start-Byte ---
ID="photo.bin-$SIZE-$RANDOM$RANDOM"
[ "$(curl -fsS -H "X-File-Id: $ID" "$BASE/api/upload/status")" = 0 ] || fail "status of a new id is 0"
head -c 4000000 photo.bin > first.bin
curl -fsS -X POST "$BASE/api/upload" -H "X-File-Id: $ID" -H 'X-Start-Byte: 0' -H "X-File-Size: $SIZE" \
  -H 'Content-Type: application/octet-stream' --data-binary @first.bin > /dev/null
HELD=$(curl -fsS -H "X-File-Id: $ID" "$BASE/api/upload/status")
[ "$HELD" = 4000000 ] || fail "status after the first part: $HELD"
tail -c +$((HELD + 1)) photo.bin > rest.bin
curl -fsS -X POST "$BASE/api/upload" -H "X-File-Id: $ID" -H "X-Start-Byte: $HELD" -H "X-File-Size: $SIZE" \
  -H 'Content-Type: application/octet-stream' --data-binary @rest.bin > off.json
URL=$(json 'd["url"]' < off.json)
curl -fsS "$URL" -o got2.bin && cmp photo.bin got2.bin || fail "byte-offset download differs"

# --- byte-offset with Content-Range, out of order ---
ID="cr-$RANDOM$RANDOM"
split -b 4M -a 3 -d photo.bin piece.
PARTS=(piece.*); START=0; STARTS=()
for p in "${PARTS[@]}"; do STARTS+=("$START"); START=$((START + $(stat -c %s "$p"))); done
for k in $(seq $((${#PARTS[@]} - 1)) -1 0); do
  p=${PARTS[$k]}; s=${STARTS[$k]}; e=$((s + $(stat -c %s "$p") - 1))
  curl -fsS -X POST "$BASE/upload" -H "X-File-Id: $ID" -H "Content-Range: bytes $s-$e/$SIZE" \
    -H 'Content-Type: application/octet-stream' --data-binary @"$p" > cr.json
done
URL=$(json 'd["url"]' < cr.json)
curl -fsS "$URL" -o got3.bin && cmp photo.bin got3.bin || fail "Content-Range download differs"
# --- tus 1.0 (SPEC §2.3): create, PATCH with a checksum, HEAD, GET ---
LOC=$(curl -fsSi -X POST "$BASE/files/" -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $SIZE" \
  -H "Upload-Metadata: filename $(printf 'photo.bin' | base64)" | awk 'tolower($1)=="location:" {print $2}' | tr -d '\r')
[ -n "$LOC" ] || fail "tus creation returned no Location"
CODE=$(curl -sS -X PATCH "$LOC" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' \
  -H 'Content-Type: application/offset+octet-stream' \
  -H "Upload-Checksum: sha256 $(openssl dgst -sha256 -binary photo.bin | base64)" \
  --data-binary @photo.bin -o /dev/null -w '%{http_code}')
[ "$CODE" = 204 ] || fail "tus PATCH answered $CODE"
OFF=$(curl -fsSI "$LOC" -H 'Tus-Resumable: 1.0.0' | awk 'tolower($1)=="upload-offset:" {print $2}' | tr -d '\r')
[ "$OFF" = "$SIZE" ] || fail "tus HEAD offset $OFF, want $SIZE"
curl -fsS "$LOC" -o got4.bin && cmp photo.bin got4.bin || fail "tus download differs"

echo "curl-tour: chunk handshake, byte-offset, Content-Range and tus uploads verified ($SIZE bytes each)"
