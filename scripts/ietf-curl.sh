#!/usr/bin/env bash
# A raw curl conformance pass of the IETF resumable-upload draft at interop version 8
# (draft-ietf-httpbis-resumable-upload-08, `Upload-Draft-Interop-Version: 8`) against
# ferry's /files/ endpoint (SPEC §2.4). tus-js-client and tuspy stop at interop version 6,
# so this is the check for the current draft.
#
#   scripts/ietf-curl.sh http://127.0.0.1:8080      (or FERRY_URL=... scripts/ietf-curl.sh)
#
# Every request's status and the headers the draft makes mandatory are checked; the script
# stops with a clear message (the request, the response's status, headers and body) at the
# first failure and exits 1. SHOULD-level items it cannot hold a server to are printed as
# "note:" lines, never failures.
#
# About 104 (Upload Resumption Supported): curl 7.x/8.x reads interim responses and moves
# on to the final one, and whether it records a 1xx other than 100 in its header dump
# depends on the version and on timing (a server sends 104 right when it creates the
# resource, possibly before curl is reading). So a 104 that curl shows is checked (its
# Location must equal the final one), and a 104 it does not show is a note, not a failure.
set -euo pipefail

BASE=${1:-${FERRY_URL:-}}
BASE=${BASE%/}
case "$BASE" in http://* | https://*) ;; *)
  echo "usage: scripts/ietf-curl.sh http://127.0.0.1:PORT   (or set FERRY_URL)" >&2
  exit 2
  ;;
esac
EP="$BASE/files/"
INTEROP=8
PROBLEM='https://iana.org/assignments/http-problem-types'

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CHECKS=0
STEP=""
T0=$(date +%s%N)

# ----------------------------------------------------------------------------------------
# Helpers. `call NAME METHOD URL [curl args…]` sends one request with the interop header
# and leaves the final response's status in $STATUS, its headers in $WORK/NAME.h (only the
# final response's block; the whole dump, interim responses included, is $WORK/NAME.all)
# and its body in $WORK/NAME.b.

step() {
  STEP="$*"
  printf '  %-66s' "$*"
}
ok() { printf 'ok%s\n' "${1:+ ($1)}"; }
note() { printf '    note: %s\n' "$*"; }

LAST=""
fail() {
  printf 'FAIL\n'
  echo "ietf-curl: $STEP: $*" >&2
  if [ -n "$LAST" ] && [ -f "$WORK/$LAST.all" ]; then
    echo "---- request: $(cat "$WORK/$LAST.req")" >&2
    echo "---- response headers:" >&2
    tr -d '\r' < "$WORK/$LAST.all" | sed 's/^/     /' >&2
    if [ -s "$WORK/$LAST.b" ]; then
      echo "---- response body (first 600 bytes):" >&2
      head -c 600 "$WORK/$LAST.b" | sed 's/^/     /' >&2
      echo >&2
    fi
  fi
  exit 1
}

call() {
  local name=$1 method=$2 url=$3
  shift 3
  LAST=$name
  echo "$method $url $*" > "$WORK/$name.req"
  local headflag=()
  # HEAD must go out as -I, or curl waits for a body that never comes.
  [ "$method" = HEAD ] && headflag=(-I) || headflag=(-X "$method")
  STATUS=$(curl -sS "${headflag[@]}" "$url" \
    -H "Upload-Draft-Interop-Version: $INTEROP" -H 'Expect:' \
    -D "$WORK/$name.all" -o "$WORK/$name.b" -w '%{http_code}' --max-time 60 "$@") ||
    fail "curl failed for $method $url"
  # The final response is the last block that starts with a status line.
  tr -d '\r' < "$WORK/$name.all" |
    awk '/^HTTP\//{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' > "$WORK/$name.h"
  [ -f "$WORK/$name.b" ] || : > "$WORK/$name.b"
}

# hdr NAME Header → the header's value in the final response ("" if absent)
hdr() {
  grep -i "^$2:" "$WORK/$1.h" | head -n1 | cut -d: -f2- | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' || true
}
# interim_hdr NAME Header → the header's value in the first 104 interim response, if any
interim_104() {
  tr -d '\r' < "$WORK/$1.all" | awk '/^HTTP\/[0-9.]+ 104/{on=1; next} /^HTTP\//{on=0} on' |
    grep -i "^$2:" | head -n1 | cut -d: -f2- | sed 's/^[[:space:]]*//; s/[[:space:]]*$//' || true
}
saw_104() { grep -Eq '^HTTP/[0-9.]+ 104' "$WORK/$1.all"; }

expect_status() { # NAME allowed-status…
  local name=$1 s
  shift
  for s in "$@"; do [ "$STATUS" = "$s" ] && return 0; done
  fail "status $STATUS, expected $*"
}
expect_4xx() { case "$STATUS" in 4??) ;; *) fail "status $STATUS, expected a 4xx refusal" ;; esac; }
expect_hdr() { # NAME Header expected-value
  local got
  got=$(hdr "$1" "$2")
  [ "$got" = "$3" ] || fail "$2 is '${got}', expected '$3'"
}
expect_hdr_contains() { # NAME Header substring
  local got
  got=$(hdr "$1" "$2")
  case ",$got," in *"$3"*) ;; *) fail "$2 is '${got}', expected it to contain '$3'" ;; esac
}
# json NAME key → a member of the problem-details body
json() {
  python3 - "$WORK/$1.b" "$2" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1], 'rb'))
except Exception:
    print('<not JSON>')
    sys.exit(0)
v = d.get(sys.argv[2], '') if isinstance(d, dict) else ''
print(v if not isinstance(v, bool) else str(v).lower())
PY
}
expect_problem() { # NAME type-fragment
  local ct type
  ct=$(hdr "$1" Content-Type)
  case "$ct" in application/problem+json*) ;; *) fail "Content-Type '$ct', expected application/problem+json" ;; esac
  type=$(json "$1" type)
  [ "$type" = "$PROBLEM#$2" ] || fail "problem type '$type', expected '$PROBLEM#$2'"
}
resolve() { # a Location value → absolute URL
  case "$1" in
    http://* | https://*) echo "$1" ;;
    /*) echo "$(echo "$BASE" | sed -E 's#^(https?://[^/]+).*#\1#')$1" ;;
    *) echo "$EP$1" ;;
  esac
}
# head_state NAME URL → HEAD with the draft's checks for a live upload; sets OFFSET, COMPLETE
head_state() {
  call "$1" HEAD "$2"
  expect_status "$1" 200 204
  OFFSET=$(hdr "$1" Upload-Offset)
  COMPLETE=$(hdr "$1" Upload-Complete)
  [[ "$OFFSET" =~ ^[0-9]+$ ]] || fail "Upload-Offset '$OFFSET' is not a non-negative integer"
  [ "$COMPLETE" = '?0' ] || [ "$COMPLETE" = '?1' ] || fail "Upload-Complete '$COMPLETE', expected ?0 or ?1"
  expect_hdr_contains "$1" Cache-Control no-store
}

# ----------------------------------------------------------------------------------------
echo "IETF resumable uploads, interop version $INTEROP, against $EP"

head -c $((3 * 1024 * 1024 + 17)) /dev/urandom > "$WORK/src.bin"
SIZE=$(stat -c %s "$WORK/src.bin")
P1=$((1024 * 1024))  # sent with the creation request
P2=$((1024 * 1024))  # the first append
head -c $P1 "$WORK/src.bin" > "$WORK/p1.bin"
dd if="$WORK/src.bin" of="$WORK/p2.bin" bs=1M skip=1 count=1 status=none
tail -c +$((P1 + P2 + 1)) "$WORK/src.bin" > "$WORK/p3.bin"
P3=$(stat -c %s "$WORK/p3.bin")

step "OPTIONS $EP"
call options OPTIONS "$EP"
case "$STATUS" in 2??) ;; *) fail "status $STATUS, expected 2xx" ;; esac
ok "$STATUS; Accept-Patch: $(hdr options Accept-Patch); Upload-Limit: $(hdr options Upload-Limit)"
case "$(hdr options Accept-Patch)" in *application/partial-upload*) ;; *)
  note "OPTIONS has no Accept-Patch with application/partial-upload (required from draft -09 on)" ;;
esac

# --- Upload creation, Upload-Complete: ?0 with the first part ------------------------------
step "POST creation, Upload-Complete: ?0, 1 MiB of $SIZE"
call create POST "$EP" -H 'Upload-Complete: ?0' -H "Upload-Length: $SIZE" \
  -H 'Content-Type: application/octet-stream' \
  -H 'Content-Disposition: inline; filename="ietf.bin"' --data-binary @"$WORK/p1.bin"
expect_status create 201
LOC=$(hdr create Location)
[ -n "$LOC" ] || fail "no Location header"
URL=$(resolve "$LOC")
if saw_104 create; then
  L104=$(interim_104 create Location)
  [ "$(resolve "$L104")" = "$URL" ] || fail "104 Location '$L104' differs from the 201's '$LOC'"
  ok "201 Location: $LOC; 104 seen with the same Location"
else
  ok "201 Location: $LOC"
  note "curl did not surface a 104 interim response for the creation (see the header comment)"
fi
CHECKS=$((CHECKS + 1))

# --- Offset retrieval --------------------------------------------------------------------
step "HEAD offset retrieval"
head_state head1 "$URL"
[ "$OFFSET" = "$P1" ] || fail "Upload-Offset $OFFSET, expected $P1"
[ "$COMPLETE" = '?0' ] || fail "Upload-Complete $COMPLETE, expected ?0"
expect_hdr head1 Upload-Length "$SIZE"
ok "$STATUS Upload-Offset: $OFFSET, Upload-Complete: ?0, Upload-Length: $SIZE, Cache-Control: $(hdr head1 Cache-Control)"
[ -n "$(hdr head1 Upload-Limit)" ] || note "HEAD carries no Upload-Limit (the draft requires it where limits apply, e.g. --max-upload-size)"
CHECKS=$((CHECKS + 1))

# --- Append at a wrong offset → 409 mismatching-upload-offset -----------------------------
step "PATCH at a wrong offset -> 409 problem details"
WRONG=$((P1 + 4096))
call wrong PATCH "$URL" -H "Upload-Offset: $WRONG" -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p2.bin"
expect_status wrong 409
expect_hdr wrong Upload-Offset "$P1"
expect_problem wrong mismatching-upload-offset
[ "$(json wrong expected-offset)" = "$P1" ] || fail "expected-offset '$(json wrong expected-offset)', expected $P1"
[ "$(json wrong provided-offset)" = "$WRONG" ] || fail "provided-offset '$(json wrong provided-offset)', expected $WRONG"
ok "409, Upload-Offset: $P1, expected-offset $P1, provided-offset $WRONG"
CHECKS=$((CHECKS + 1))

step "PATCH without Upload-Offset -> refused"
call nooffset PATCH "$URL" -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p2.bin"
expect_4xx
ok "$STATUS"
CHECKS=$((CHECKS + 1))

step "PATCH with a non-partial-upload Content-Type -> refused"
call badtype PATCH "$URL" -H "Upload-Offset: $P1" -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/p2.bin"
expect_4xx
ok "$STATUS"
CHECKS=$((CHECKS + 1))

step "HEAD: the refused appends stored nothing"
head_state head2 "$URL"
[ "$OFFSET" = "$P1" ] || fail "Upload-Offset $OFFSET after refused appends, expected $P1"
ok "Upload-Offset: $OFFSET"
CHECKS=$((CHECKS + 1))

# --- Append, not the last part -------------------------------------------------------------
step "PATCH append 1 MiB, Upload-Complete: ?0"
call append1 PATCH "$URL" -H "Upload-Offset: $P1" -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p2.bin"
case "$STATUS" in 2??) ;; *) fail "status $STATUS, expected 2xx" ;; esac
expect_hdr append1 Upload-Complete '?0'
AO=$(hdr append1 Upload-Offset)
[ -z "$AO" ] || [ "$AO" = $((P1 + P2)) ] || fail "Upload-Offset $AO in the append response, expected $((P1 + P2))"
ok "$STATUS, Upload-Complete: ?0${AO:+, Upload-Offset: $AO}"
CHECKS=$((CHECKS + 1))

step "HEAD after the append"
head_state head3 "$URL"
[ "$OFFSET" = $((P1 + P2)) ] || fail "Upload-Offset $OFFSET, expected $((P1 + P2))"
[ "$COMPLETE" = '?0' ] || fail "Upload-Complete $COMPLETE, expected ?0"
ok "Upload-Offset: $OFFSET"
CHECKS=$((CHECKS + 1))

# --- Upload-Length consistency --------------------------------------------------------------
step "PATCH with another Upload-Length -> inconsistent length"
head -c 1000 "$WORK/p3.bin" > "$WORK/p3head.bin"
call len1 PATCH "$URL" -H "Upload-Offset: $((P1 + P2))" -H 'Upload-Complete: ?0' \
  -H "Upload-Length: $((SIZE + 1))" -H 'Content-Type: application/partial-upload' \
  --data-binary @"$WORK/p3head.bin"
expect_status len1 400
expect_problem len1 inconsistent-upload-length
ok "400"
CHECKS=$((CHECKS + 1))

step "final PATCH ending before Upload-Length -> inconsistent length"
head -c $((P3 - 17)) "$WORK/p3.bin" > "$WORK/p3short.bin"
call len2 PATCH "$URL" -H "Upload-Offset: $((P1 + P2))" -H 'Upload-Complete: ?1' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p3short.bin"
expect_status len2 400
expect_problem len2 inconsistent-upload-length
ok "400"
CHECKS=$((CHECKS + 1))

step "HEAD: the inconsistent requests stored nothing"
head_state head4 "$URL"
[ "$OFFSET" = $((P1 + P2)) ] || fail "Upload-Offset $OFFSET, expected $((P1 + P2))"
[ "$COMPLETE" = '?0' ] || fail "Upload-Complete $COMPLETE, expected ?0"
expect_hdr head4 Upload-Length "$SIZE"
ok "Upload-Offset: $OFFSET, Upload-Length: $SIZE"
CHECKS=$((CHECKS + 1))

# --- Final append ---------------------------------------------------------------------------
step "PATCH final append, Upload-Complete: ?1"
call final PATCH "$URL" -H "Upload-Offset: $((P1 + P2))" -H 'Upload-Complete: ?1' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p3.bin"
case "$STATUS" in 2??) ;; *) fail "status $STATUS, expected 2xx" ;; esac
expect_hdr final Upload-Complete '?1'
ok "$STATUS, Upload-Complete: ?1"
CHECKS=$((CHECKS + 1))

step "HEAD of the completed upload"
head_state head5 "$URL"
[ "$OFFSET" = "$SIZE" ] || fail "Upload-Offset $OFFSET, expected $SIZE"
[ "$COMPLETE" = '?1' ] || fail "Upload-Complete $COMPLETE, expected ?1"
expect_hdr head5 Upload-Length "$SIZE"
ok "Upload-Offset: $SIZE, Upload-Complete: ?1"
CHECKS=$((CHECKS + 1))

step "PATCH to the completed upload -> refused"
head -c 10 /dev/urandom > "$WORK/extra.bin"
call after PATCH "$URL" -H "Upload-Offset: $SIZE" -H 'Upload-Complete: ?1' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/extra.bin"
expect_4xx
AFTER_TYPE=$(json after type)
ok "$STATUS ${AFTER_TYPE#"$PROBLEM"}"
CHECKS=$((CHECKS + 1))

step "GET the upload URL: bytes equal the source"
call get GET "$URL"
expect_status get 200
cmp -s "$WORK/get.b" "$WORK/src.bin" || fail "the body ($(stat -c %s "$WORK/get.b") bytes) differs from the source ($SIZE bytes)"
ok "$SIZE bytes, sha256 $(sha256sum < "$WORK/src.bin" | cut -c1-16)…"
CHECKS=$((CHECKS + 1))

# --- Exceeding the declared length (on a throwaway upload: the draft lets the server
#     deactivate an upload whose offset would pass its length) --------------------------------
step "append past Upload-Length -> refused"
call create2 POST "$EP" -H 'Upload-Complete: ?0' -H 'Upload-Length: 100' \
  -H 'Content-Type: application/octet-stream' --data-binary ''
expect_status create2 201
URL2=$(resolve "$(hdr create2 Location)")
head -c 101 /dev/urandom > "$WORK/101.bin"
call over PATCH "$URL2" -H 'Upload-Offset: 0' -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/101.bin"
expect_4xx
ok "$STATUS"
CHECKS=$((CHECKS + 1))

step "creation, Upload-Length != complete body -> inconsistent length"
head -c 50 /dev/urandom > "$WORK/50.bin"
call create3 POST "$EP" -H 'Upload-Complete: ?1' -H 'Upload-Length: 100' \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/50.bin"
expect_status create3 400
expect_problem create3 inconsistent-upload-length
ok "400"
CHECKS=$((CHECKS + 1))

# --- Cancellation -------------------------------------------------------------------------
step "DELETE cancellation -> 204, then HEAD 404"
call create4 POST "$EP" -H 'Upload-Complete: ?0' -H "Upload-Length: $SIZE" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/p1.bin"
expect_status create4 201
URL4=$(resolve "$(hdr create4 Location)")
call cancel DELETE "$URL4"
expect_status cancel 204
call gone HEAD "$URL4"
expect_status gone 404
call gone2 PATCH "$URL4" -H "Upload-Offset: $P1" -H 'Upload-Complete: ?0' \
  -H 'Content-Type: application/partial-upload' --data-binary @"$WORK/p2.bin"
expect_status gone2 404
ok "204; HEAD 404; PATCH 404"
CHECKS=$((CHECKS + 1))

# --- Optimistic creation: the whole representation in one request ------------------------
step "POST with Upload-Complete: ?1 and the whole body"
head -c $((256 * 1024 + 3)) /dev/urandom > "$WORK/small.bin"
call whole POST "$EP" -H 'Upload-Complete: ?1' -H "Upload-Length: $((256 * 1024 + 3))" \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/small.bin"
case "$STATUS" in 2??) ;; *) fail "status $STATUS, expected 2xx" ;; esac
[ "$(hdr whole Upload-Complete)" = '?1' ] || note "the completing response has no Upload-Complete: ?1"
WLOC=$(hdr whole Location)
if [ -n "$WLOC" ]; then
  call wholeget GET "$(resolve "$WLOC")"
  expect_status wholeget 200
  cmp -s "$WORK/wholeget.b" "$WORK/small.bin" || fail "GET $WLOC differs from the source"
  ok "$STATUS; GET Location equals the source"
else
  ok "$STATUS"
  note "no Location on the completed single-request upload, so its bytes were not checked"
fi
saw_104 whole && note "104 seen for the single-request upload: Location $(interim_104 whole Location)"
CHECKS=$((CHECKS + 1))

MS=$((($(date +%s%N) - T0) / 1000000))
echo "ietf-curl: $CHECKS passed, 0 failed (interop version $INTEROP, ${MS} ms)"
