#!/usr/bin/env bash
# Real tus clients, unmodified, against a running ferry server (SPEC §2.3, §2.4):
#   1. tus-js-client 4.x in Node   (web/tests/tus-clients/run.mjs)
#   2. tuspy from PyPI             (tests/tuspy/test_tuspy.py)
#   3. curl, IETF draft interop 8  (scripts/ietf-curl.sh)
# Installs what it needs when missing (npm ci; a Python venv with tests/tuspy/requirements.txt,
# kept in ${FERRY_TUSPY_VENV:-~/.cache/ferry/tuspy-venv}), runs all three even if one fails,
# prints a summary and exits non-zero if any failed. It starts no server.
#
#   scripts/tus-clients.sh http://127.0.0.1:8080      (or FERRY_URL=... scripts/tus-clients.sh)
set -uo pipefail
cd "$(dirname "$0")/.."

BASE=${1:-${FERRY_URL:-}}
BASE=${BASE%/}
case "$BASE" in http://* | https://*) ;; *)
  echo "usage: scripts/tus-clients.sh http://127.0.0.1:PORT   (or set FERRY_URL)" >&2
  exit 2
  ;;
esac
SUITE_TIMEOUT=${TUS_SUITE_TIMEOUT:-300}

say() { printf '\n--> %s\n' "$*"; }
die() { echo "tus-clients: $*" >&2; exit 1; }

# ---- installs --------------------------------------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (apt-get install nodejs npm)"
command -v python3 >/dev/null || die "python3 is needed"
command -v curl >/dev/null || die "curl is needed"

JS=web/tests/tus-clients
if [ ! -d "$JS/node_modules/tus-js-client" ] || [ "$JS/package-lock.json" -nt "$JS/node_modules/.package-lock.json" ]; then
  say "npm ci in $JS"
  (cd "$JS" && npm ci --no-audit --no-fund --silent) || die "npm ci failed in $JS"
fi

VENV=${FERRY_TUSPY_VENV:-$HOME/.cache/ferry/tuspy-venv}
REQ=tests/tuspy/requirements.txt
STAMP="$VENV/.ferry-requirements"
if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$REQ" "$STAMP"; then
  say "Python venv for tuspy in $VENV"
  if [ ! -x "$VENV/bin/python" ]; then
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      # Debian ships venv's pip bootstrap separately.
      rm -rf "$VENV"
      SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null ||
        die "python3 -m venv failed and python3-venv could not be installed"
      python3 -m venv "$VENV" || die "python3 -m venv failed"
    fi
  fi
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQ" || die "pip install -r $REQ failed"
  cp "$REQ" "$STAMP"
fi

# ---- is the tus endpoint there at all? ---------------------------------------------------
code=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS -H 'Tus-Resumable: 1.0.0' "$BASE/files/" || true)
case "$code" in 2??) ;; *) die "OPTIONS $BASE/files/ answered '$code': is the tus endpoint up?" ;; esac

# ---- the suites --------------------------------------------------------------------------
NAMES=()
RESULTS=()
run_suite() { # name command…
  local name=$1 t0 rc ms
  shift
  say "$name"
  t0=$(date +%s%N)
  timeout --kill-after=10 "$SUITE_TIMEOUT" "$@"
  rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  [ "$rc" = 124 ] && echo "$name: timed out after ${SUITE_TIMEOUT}s"
  NAMES+=("$name")
  RESULTS+=("$rc ${ms}")
}

run_suite "tus-js-client (Node)" node "$JS/run.mjs" "$BASE"
run_suite "tuspy (Python)" "$VENV/bin/python" tests/tuspy/test_tuspy.py "$BASE"
run_suite "curl, IETF draft interop 8" bash scripts/ietf-curl.sh "$BASE"

# ---- summary -----------------------------------------------------------------------------
echo
echo "tus clients against $BASE:"
passed=0
failed=0
for i in "${!NAMES[@]}"; do
  read -r rc ms <<<"${RESULTS[$i]}"
  if [ "$rc" = 0 ]; then
    printf '  PASS  %-30s %6d ms\n' "${NAMES[$i]}" "$ms"
    passed=$((passed + 1))
  else
    printf '  FAIL  %-30s %6d ms (exit %s)\n' "${NAMES[$i]}" "$ms" "$rc"
    failed=$((failed + 1))
  fi
done
echo "tus-clients: $passed passed, $failed failed"
[ "$failed" = 0 ]
