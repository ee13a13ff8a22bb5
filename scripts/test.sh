#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests need,
# builds once, runs the Rust tests (unit, integration, crash tests of the real binary), then
# the end-to-end checks with real clients (the README's curl tour, tus-js-client, tuspy, a
# curl pass of the IETF draft, the seed articles' spark-md5 / byte-offset / Content-Range
# clients in Node) against a real server, tus-js-client across two nodes on a throwaway
# PostgreSQL (which the Rust tests use too) with one node killed mid-upload, then the
# browser SDK's unit tests (Node), the upload page and SDK in Debian's Chromium driven by
# playwright-core (with Uppy interop), and smoke runs of the benchmark harnesses. Object
# storage: Garage and s3s-fs (scripts/s3.sh) for the S3 tests, and the end-to-end clients run
# a second time against a node whose files live in Garage.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
need=()
command -v curl >/dev/null || need+=(curl)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
# HTTPS tests: nginx terminating TLS in front of ferry (crates/client/tests/https.rs).
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
# Browser tests: Debian's Chromium (playwright's own browser downloads do not work here) and
# a CJK font so the page's Chinese text renders in screenshots.
[ -x /usr/bin/chromium ] || need+=(chromium)
fc-list 2>/dev/null | grep -qiE 'wqy|noto sans cjk' || need+=(fonts-wqy-microhei)
# PostgreSQL metadata store tests: a throwaway cluster from Debian's binaries (scripts/pg.sh).
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need+=(postgresql)
if ((${#need[@]})); then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked --quiet

step "build"
cargo build --workspace --all-targets --locked
# The client library as other Rust programs use it: without the server, clap and indicatif.
cargo build -p ferry --no-default-features --lib --locked

step "throwaway PostgreSQL for the metadata store tests"
eval "$(scripts/pg.sh start)"
S3_DIRS=()
pg_stop() {
  scripts/pg.sh stop || true
  for d in "${S3_DIRS[@]}"; do scripts/s3.sh stop "$d" || true; done
}
# Replaced by the cleanup below once a server runs; that one calls pg_stop too.
trap pg_stop EXIT
echo "PostgreSQL for the tests: data and log in $FERRY_PG_DIR"

step "S3-compatible servers: Garage and s3s-fs (built once from the crate registry, cached in ~/.cache/ferry-test)"
scripts/s3.sh install s3s-fs
scripts/s3.sh install garage
S3S_ENV=$(scripts/s3.sh start s3s-fs)
S3_DIRS+=("$(eval "$S3S_ENV"; echo "$FERRY_S3_DIR")")
GARAGE_ENV=$(scripts/s3.sh start garage)
S3_DIRS+=("$(eval "$GARAGE_ENV"; echo "$FERRY_S3_DIR")")
# Garage is the reference: every test runs against it; the S3 tests run on s3s-fs too.
eval "$GARAGE_ENV"
echo "Garage at $FERRY_TEST_S3_ENDPOINT; s3s-fs at $(eval "$S3S_ENV"; echo "$FERRY_TEST_S3_ENDPOINT")"

step "Rust tests (object storage on Garage)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
  cargo test --workspace --doc --locked
  step "Rust tests of object storage again, on s3s-fs (strict part sizes)"
  (eval "$S3S_ENV"; cargo nextest run --locked --no-fail-fast -p ferry-store --test s3 --test s3_engine -p ferry --test s3)
else
  cargo test --workspace --locked --no-fail-fast
  (eval "$S3S_ENV"; cargo test --locked --no-fail-fast -p ferry-store --test s3 --test s3_engine -p ferry --test s3)
fi

# End-to-end checks share one server with a throwaway data dir; suites that need servers of
# their own (browser tests, benchmark smoke) start them from the same binary.
FERRY_BIN="$ROOT/${CARGO_TARGET_DIR:-target}/debug/ferry"
case "${CARGO_TARGET_DIR:-}" in /*) FERRY_BIN="$CARGO_TARGET_DIR/debug/ferry" ;; esac
export FERRY_BIN
step "start a server for end-to-end clients"
DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" >"$DATA/server.log" 2>&1 &
SERVER=$!
S3SERVER=""
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$DATA"; pg_stop; }
trap cleanup EXIT
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
export FERRY_URL="http://127.0.0.1:$PORT"

step "README curl tour"
scripts/curl-tour.sh "$FERRY_URL"

step "real tus clients: tus-js-client (Node), tuspy (Python), curl IETF draft interop 8"
scripts/tus-clients.sh "$FERRY_URL"

step "tus-js-client through a load balancer over two nodes on PostgreSQL, kill -9 of one mid-upload"
# Its own two servers and database (on the cluster started above); node_modules from the step above.
(cd web/tests/tus-clients && node nodes.mjs)

if [ -d web/tests/seed-clients ]; then
  step "seed-article clients (spark-md5, byte-offset, Content-Range) in Node"
  (cd web/tests/seed-clients && npm ci --no-audit --no-fund --silent && node run.mjs "$FERRY_URL")
fi

step "the same end-to-end clients against a node storing its files in Garage (S3)"
S3DATA=$(mktemp -d)
S3PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$FERRY_BIN" serve --listen "127.0.0.1:$S3PORT" --data-dir "$S3DATA" \
  --storage "s3://$FERRY_TEST_S3_BUCKET/e2e-$$" --s3-endpoint "$FERRY_TEST_S3_ENDPOINT" >"$S3DATA/server.log" 2>&1 &
S3SERVER=$!
cleanup() {
  kill "$SERVER" "$S3SERVER" 2>/dev/null || true
  wait "$SERVER" "$S3SERVER" 2>/dev/null || true
  rm -rf "$DATA" "$S3DATA"
  pg_stop
}
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$S3PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
S3URL="http://127.0.0.1:$S3PORT"
scripts/curl-tour.sh "$S3URL"
scripts/tus-clients.sh "$S3URL"
(cd web/tests/seed-clients && node run.mjs "$S3URL")
# Once its requests have ended, the node's disk holds no file bytes: only its metadata.
leftover=$(find "$S3DATA" -type f -size +0 ! -name 'ferry.db*' ! -name ferry.lock ! -name link.key ! -name server.log)
if [ -n "$leftover" ]; then
  echo "file bytes left on the S3 node's disk:"; ls -l $leftover; exit 1
fi

step "browser SDK unit tests (node --test, against real servers)"
FERRY_BIN="$FERRY_BIN" node --test web/tests/sdk/

step "browser tests: upload page + SDK in Chromium (playwright-core), Uppy interop"
(cd web/tests/browser && npm ci --no-audit --no-fund --silent && FERRY_BIN="$FERRY_BIN" node run.mjs)

step "benchmark smoke (--quick)"
scripts/bench-dialects.sh --quick "$FERRY_URL"
FERRY_BIN="$FERRY_BIN" scripts/bench/run --quick

step "all tests passed"
