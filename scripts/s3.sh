#!/usr/bin/env bash
# Throwaway S3-compatible servers for the object-storage tests, built from the crate
# registry and cached, so only the first run on a machine compiles them.
#
#   scripts/s3.sh install [garage|s3s-fs]   # builds the binaries into ~/.cache/ferry-test (once)
#   eval "$(scripts/s3.sh start garage)"    # starts a one-node Garage; prints the exports below
#   eval "$(scripts/s3.sh start s3s-fs)"    # starts s3s-fs (strict 5 MiB minimum part)
#   scripts/s3.sh stop [DIR]                # stops the server in DIR (default $FERRY_S3_DIR)
#   scripts/s3.sh restart [DIR]             # stops it and starts it again on the same port and data
#   scripts/s3.sh halt [DIR]                # stops it, keeping its data and port (an outage)
#   scripts/s3.sh resume [DIR]              # starts a halted server again
#
# The exports: FERRY_TEST_S3_ENDPOINT (http://127.0.0.1:<port>), FERRY_TEST_S3_BUCKET,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, FERRY_S3_DIR, FERRY_TEST_S3_SERVER.
# The keys are test constants. Data lives in a fresh temp dir; every port is a free one on
# 127.0.0.1. Garage: single node, LMDB metadata, replication factor 1, a 1 GB layout,
# the bucket and a key imported with fixed credentials. s3s-fs: a directory as the store,
# the bucket a subdirectory of it.
set -euo pipefail

CACHE=${FERRY_TEST_CACHE:-$HOME/.cache/ferry-test}
GARAGE_VERSION=2.5.0
S3S_VERSION=0.14.1
# Garage wants key ids of the form GK + 24 hex digits and 64-hex-digit secrets.
KEY_ID=GK0123456789abcdef01234567
SECRET=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
BUCKET=ferry-test
REGION=garage
MARKER=.ferry-s3

die() { echo "s3.sh: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

garage_bin() { echo "$CACHE/garage-$GARAGE_VERSION/bin/garage"; }
s3s_bin() { echo "$CACHE/s3s-fs-$S3S_VERSION/bin/s3s-fs"; }

install_one() {
  case "$1" in
    garage)
      [ -x "$(garage_bin)" ] && return
      echo "s3.sh: building Garage $GARAGE_VERSION (once; cached in $CACHE)" >&2
      # LMDB metadata only, libraries bundled: no system libsodium or sqlite needed.
      cargo install garage --version "$GARAGE_VERSION" --locked --no-default-features \
        --features bundled-libs,lmdb --root "$CACHE/garage-$GARAGE_VERSION" >&2
      ;;
    s3s-fs)
      [ -x "$(s3s_bin)" ] && return
      echo "s3.sh: building s3s-fs $S3S_VERSION (once; cached in $CACHE)" >&2
      cargo install s3s-fs --version "$S3S_VERSION" --locked --features binary \
        --root "$CACHE/s3s-fs-$S3S_VERSION" >&2
      ;;
    *) die "unknown server $1 (garage or s3s-fs)" ;;
  esac
}

wait_port() { # port what
  local i
  for i in $(seq 1 200); do
    if python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; then
      return
    fi
    sleep 0.1
  done
  die "$2 did not listen on 127.0.0.1:$1 within 20 s (log in $DIR)"
}

exports() { # dir
  cat "$1/env"
}

start_garage() {
  local port rpc admin
  port=${PORT:-$(free_port)}
  rpc=$(free_port)
  admin=$(free_port)
  cat >"$DIR/garage.toml" <<EOF
metadata_dir = "$DIR/meta"
data_dir = "$DIR/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(printf '%064x' 7)"

[s3_api]
s3_region = "$REGION"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
EOF
  local g
  g="$(garage_bin) -c $DIR/garage.toml"
  (cd "$DIR" && exec setsid $g server >"$DIR/server.log" 2>&1) &
  echo $! >"$DIR/pid"
  wait_port "$port" Garage
  if [ ! -f "$DIR/configured" ]; then
    local node i
    for i in $(seq 1 100); do
      node=$($g node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
      sleep 0.1
    done
    [ -n "$node" ] || die "Garage did not report its node id (log in $DIR/server.log)"
    $g layout assign -z dc1 -c 1G "$node" >/dev/null
    $g layout apply --version 1 >/dev/null
    $g key import --yes -n ferry-test "$KEY_ID" "$SECRET" >/dev/null
    $g bucket create "$BUCKET" >/dev/null
    $g bucket allow --read --write --owner "$BUCKET" --key "$KEY_ID" >/dev/null
    touch "$DIR/configured"
  fi
  echo "$port" >"$DIR/port"
}

start_s3s() {
  local port
  port=${PORT:-$(free_port)}
  mkdir -p "$DIR/root/$BUCKET"
  (cd "$DIR" && exec setsid "$(s3s_bin)" --host 127.0.0.1 --port "$port" \
    --access-key "$KEY_ID" --secret-key "$SECRET" "$DIR/root" >"$DIR/server.log" 2>&1) &
  echo $! >"$DIR/pid"
  wait_port "$port" s3s-fs
  echo "$port" >"$DIR/port"
}

start() { # server
  local server=$1
  install_one "$server"
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/ferry-s3.XXXXXX")
  touch "$DIR/$MARKER"
  echo "$server" >"$DIR/server"
  PORT="" launch "$server"
  cat >"$DIR/env" <<EOF
export FERRY_TEST_S3_SERVER=$server
export FERRY_TEST_S3_ENDPOINT=http://127.0.0.1:$(cat "$DIR/port")
export FERRY_TEST_S3_BUCKET=$BUCKET
export AWS_ACCESS_KEY_ID=$KEY_ID
export AWS_SECRET_ACCESS_KEY=$SECRET
export AWS_REGION=$REGION
export FERRY_S3_DIR=$DIR
EOF
  exports "$DIR"
}

launch() { # server
  case "$1" in
    garage) start_garage ;;
    s3s-fs) start_s3s ;;
  esac
}

stop_dir() { # dir
  local pid
  [ -f "$1/$MARKER" ] || die "$1 is not a directory of scripts/s3.sh"
  if [ -f "$1/pid" ]; then
    pid=$(cat "$1/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1/pid"
  fi
}

case "${1:-}" in
  install)
    if [ -n "${2:-}" ]; then install_one "$2"; else install_one s3s-fs; install_one garage; fi
    ;;
  start)
    start "${2:-garage}"
    ;;
  stop)
    d=${2:-${FERRY_S3_DIR:-}}
    [ -n "$d" ] || die "no directory: pass one or set FERRY_S3_DIR"
    stop_dir "$d"
    rm -rf "$d"
    ;;
  restart | halt | resume)
    d=${2:-${FERRY_S3_DIR:-}}
    [ -n "$d" ] || die "no directory: pass one or set FERRY_S3_DIR"
    [ "$1" = resume ] || stop_dir "$d"
    [ "$1" = halt ] || DIR=$d PORT=$(cat "$d/port") launch "$(cat "$d/server")"
    ;;
  *)
    sed -n '2,18p' "$0" >&2
    exit 2
    ;;
esac
