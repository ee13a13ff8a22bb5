#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the tests of the PostgreSQL metadata store.
#
#   eval "$(scripts/pg.sh start)"   # starts one; prints `export FERRY_TEST_DATABASE_URL=...`
#                                   # (an admin URL, database `postgres`) and `export FERRY_PG_DIR=...`
#   scripts/pg.sh stop              # stops the cluster in $FERRY_PG_DIR and removes its files
#   scripts/pg.sh restart           # restarts the cluster in $FERRY_PG_DIR (fast shutdown: open
#                                   # connections are cut), same port and files
#   scripts/pg.sh halt | resume     # stops it, keeping port and files (an outage); starts it again
#
# Debian's PostgreSQL binaries (the highest version under /usr/lib/postgresql; the
# `postgresql` package), data and socket in a fresh temp dir, listening on a free port of
# 127.0.0.1 only. The superuser is `ferry`: trusted over the Unix socket, SCRAM password
# over TCP (the password below is a test constant and is in the printed URL), so the tests
# can check what a wrong password does. Durability settings stay at PostgreSQL's defaults
# (fsync and synchronous_commit on): the tests rely on commits being durable; only initdb's
# final sync of the fresh cluster is skipped (--no-sync), which no test depends on.
#
# `start` is idempotent: with FERRY_PG_DIR pointing at a running cluster of ours it prints
# the same exports again. Only the export lines go to stdout.
set -euo pipefail

PASSWORD=ferry-test-password
MARKER=.ferry-pg

die() { echo "pg.sh: $*" >&2; exit 1; }

bindir() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] ||
    die "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)"
  echo "$dir"
}

# Runs a PostgreSQL program as the cluster's owner: initdb and postgres refuse root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$OWNER" -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

running() { # dir
  [ -f "$1/$MARKER" ] && [ -f "$1/env" ] && [ -f "$1/data/postmaster.pid" ] &&
    kill -0 "$(head -n 1 "$1/data/postmaster.pid")" 2>/dev/null
}

start() {
  if [ -n "${FERRY_PG_DIR:-}" ] && running "$FERRY_PG_DIR"; then
    cat "$FERRY_PG_DIR/env"
    return
  fi
  local bin dir port try
  bin=$(bindir)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/ferry-pg.XXXXXX")
  touch "$dir/$MARKER"
  if [ "$(id -u)" = 0 ]; then
    OWNER=postgres
    id -u "$OWNER" >/dev/null 2>&1 || OWNER=nobody
    chown "$OWNER" "$dir"
  fi
  printf '%s\n' "$PASSWORD" >"$dir/pwfile"
  if [ "$(id -u)" = 0 ]; then chown "$OWNER" "$dir/pwfile"; fi
  # The programs resolve their own path from the working directory, which the owner may not
  # be able to read (e.g. root's checkout): run from the temp dir.
  cd "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U ferry --pwfile="$dir/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 --no-sync \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; die "initdb failed (files kept in $dir)"; }
  rm -f "$dir/pwfile"
  cat >>"$dir/data/postgresql.conf" <<EOF

# scripts/pg.sh: a throwaway test cluster.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
# Tests run in parallel, each with its own database and pool.
max_connections = 200
EOF
  # A port found free can be taken before the server binds it: try a few.
  for try in 1 2 3; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
      -o "-p $port" start >/dev/null 2>&1; then
      break
    fi
    echo "pg.sh: start on port $port failed (try $try of 3)" >&2
    port=
  done
  [ -n "$port" ] || { cat "$dir/server.log" >&2; die "PostgreSQL did not start (files kept in $dir)"; }
  {
    printf 'export FERRY_TEST_DATABASE_URL=%q\n' "postgres://ferry:$PASSWORD@127.0.0.1:$port/postgres"
    printf 'export FERRY_PG_DIR=%q\n' "$dir"
  } >"$dir/env"
  cat "$dir/env"
}

stop() {
  local dir=${FERRY_PG_DIR:-}
  [ -n "$dir" ] || { echo "pg.sh: FERRY_PG_DIR is not set; nothing to stop" >&2; return; }
  [ -d "$dir" ] || return 0
  [ -f "$dir/$MARKER" ] || die "$dir is not a cluster made by pg.sh; not touching it"
  if [ -f "$dir/data/postmaster.pid" ]; then
    OWNER=$(stat -c %U "$dir")
    (cd "$dir" && as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null) ||
      echo "pg.sh: pg_ctl stop failed" >&2
  fi
  rm -rf "$dir"
}

restart() {
  local dir=${FERRY_PG_DIR:-}
  [ -n "$dir" ] || die "FERRY_PG_DIR is not set; nothing to restart"
  [ -f "$dir/$MARKER" ] || die "$dir is not a cluster made by pg.sh; not touching it"
  running "$dir" || die "no cluster of ours is running in $dir"
  OWNER=$(stat -c %U "$dir")
  # pg_ctl restart keeps the options of the last start (postmaster.opts: the port).
  (cd "$dir" && as_owner "$(bindir)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w \
    -t 30 restart >/dev/null) || { tail -n 20 "$dir/server.log" >&2; die "pg_ctl restart failed"; }
}

# An outage: stops the server, keeping its files and port, until `resume`.
halt() {
  local dir=${FERRY_PG_DIR:-}
  [ -n "$dir" ] || die "FERRY_PG_DIR is not set; nothing to halt"
  [ -f "$dir/$MARKER" ] || die "$dir is not a cluster made by pg.sh; not touching it"
  running "$dir" || die "no cluster of ours is running in $dir"
  OWNER=$(stat -c %U "$dir")
  head -n 4 "$dir/data/postmaster.pid" | sed -n 4p >"$dir/port"
  (cd "$dir" && as_owner "$(bindir)/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null) ||
    die "pg_ctl stop failed"
}

resume() {
  local dir=${FERRY_PG_DIR:-}
  [ -n "$dir" ] || die "FERRY_PG_DIR is not set; nothing to resume"
  [ -f "$dir/$MARKER" ] && [ -f "$dir/port" ] || die "$dir holds no halted cluster of pg.sh"
  OWNER=$(stat -c %U "$dir")
  (cd "$dir" && as_owner "$(bindir)/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-p $(cat "$dir/port")" start >/dev/null) || { tail -n 20 "$dir/server.log" >&2; die "pg_ctl start failed"; }
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  halt) halt ;;
  resume) resume ;;
  *) echo "usage: $0 start|stop|restart|halt|resume" >&2; exit 2 ;;
esac
