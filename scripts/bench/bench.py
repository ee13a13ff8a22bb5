#!/usr/bin/env python3
"""ferry's benchmark harness (issue 6): ferry against rustus, @tus/server and nginx; and
ferry against itself (W9: HTTP/2 against HTTP/1.1; W10: metadata on PostgreSQL against SQLite);
and ferry storing in S3 (a local Garage) against a client talking to Garage directly (W11).

Started by scripts/bench/run, which installs the peers first; see scripts/bench/README.md
for the workloads and the method. Python 3.11 standard library only, but for W11's direct
client: boto3, run as `bench.py --s3-client …` by an interpreter that has it.

Every server runs on 127.0.0.1 with a fresh data directory for every run (tmpfs, or the real
disk with durability on), the runs of one workload alternate between servers (A B C C B A A B C …),
and for each run the server's wall time, CPU seconds (utime+stime of every process of the
server, all threads included) and peak RSS (VmHWM, summed over its processes) are recorded.
The results go to a JSON file and, rendered, to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import random
import re
import shlex
import shutil
import signal
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
MiB = 1024 * 1024
GiB = 1024 * MiB
CACHE = Path(os.environ.get("FERRY_BENCH_CACHE", Path.home() / ".cache" / "ferry-bench"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

ALL_WORKLOADS = ["W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W9", "W10", "W11"]
# The peers each workload runs beside ferry (W1-W4 also on the disk, W8): only these must be
# installed for a full-size run of a subset (--only).
PEERS_OF = {"W1": {"nginx", "rustus", "tus-node"}, "W2": {"rustus", "tus-node"},
            "W3": {"nginx", "rustus", "tus-node"}, "W4": {"nginx", "rustus", "tus-node"},
            "W5": {"rustus", "tus-node"}, "W6": {"nginx"}, "W7": set(), "W8": {"nginx", "rustus"},
            "W9": set(), "W10": set(), "W11": set()}
# Workloads repeated on the real disk (W8): the durable-mode comparison.
DISK_WORKLOADS = ["W1", "W2", "W3", "W4"]


class BenchError(Exception):
    """A workload failed: wrong status, bytes not identical, a server that would not start."""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------
# Process metrics


def proc_tree(pid: int) -> list[int]:
    """pid and all its descendants (nginx's master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is state (field 3); utime, stime, cutime, cstime are fields 14-17.
        total += sum(int(x) for x in fields[11:15])
    return total / CLK_TCK


def vm_hwm_kib(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------
# Servers


class Server:
    """One server under test. start() launches it on a fresh port with data in `data_dir`."""

    name = "?"
    label = "?"
    kind = "tus"  # "tus" (full tus server), "sink" (nginx sink), "static" (nginx static)
    ready_path = "/files/"
    ready_method = "OPTIONS"

    def __init__(self, ctx: "Context"):
        self.ctx = ctx
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.data_dir: Path | None = None
        self.pids: list[int] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, data_dir: Path, durable: bool) -> tuple[list[str], dict]:
        raise NotImplementedError

    def start(self, data_dir: Path, durable: bool) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd, env = self.command(data_dir, durable)
        logf = open(self.ctx.work / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env}, start_new_session=True, cwd=data_dir,
        )
        logf.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} at start; see {self.ctx.work / (self.name + '.log')}")
            try:
                c = connect(self.base, timeout=2)
                c.request(self.ready_method, self.ready_path, headers={"Tus-Resumable": "1.0.0"})
                r = c.getresponse()
                r.read()
                c.close()
                if r.status < 500:
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise BenchError(f"{self.name} did not answer within 30 s")
        time.sleep(0.05)  # let nginx spawn its worker
        self.pids = proc_tree(self.proc.pid)

    def refresh_pids(self) -> None:
        if self.proc:
            self.pids = proc_tree(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def pg_cpu(self) -> float | None:
        """CPU seconds of the PostgreSQL cluster behind the server (W10), None without one."""
        return None

    def hwm_mib(self) -> float:
        return vm_hwm_kib(self.pids) / 1024

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    stop_signal = signal.SIGTERM

    def log_tail(self, n: int = 400) -> str:
        try:
            text = (self.ctx.work / f"{self.name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-6:])[-n:]

    def file_url(self, location: str) -> str:
        """The URL a finished tus upload downloads from."""
        return location


class Ferry(Server):
    name, label = "ferry", "ferry"
    ready_path, ready_method = "/healthz", "GET"

    def command(self, data_dir, durable):
        return ([self.ctx.ferry_bin, "serve", "--listen", f"127.0.0.1:{self.port}",
                 "--data-dir", str(data_dir), "--expire-incomplete", "0"],
                {"RUST_LOG": "warn"})


class FerryProto(Ferry):
    """W9: ferry serving one protocol to curl. `tls`: started with --tls-cert/--tls-key (ALPN
    h2 + http/1.1) and reached over https; otherwise the plain listener (HTTP/1.1, or h2c with
    prior knowledge). `curl_args` pick the protocol, `http_version` is what curl's
    %{http_version} must report; `vs` names the HTTP/1.1 variant on the same transport."""

    def __init__(self, ctx, name, label, tls, curl_args, http_version, vs=None):
        super().__init__(ctx)
        self.name, self.label, self.tls = name, label, tls
        self.curl_args, self.http_version, self.vs = curl_args, http_version, vs

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def command(self, data_dir, durable):
        cmd, env = super().command(data_dir, durable)
        if self.tls:
            cmd += ["--tls-cert", str(self.ctx.tls_cert), "--tls-key", str(self.ctx.tls_key)]
        return cmd, env


class PgCluster:
    """W10: a throwaway PostgreSQL cluster of scripts/pg.sh (its data on the same storage as
    the servers': the harness's work dir on tmpfs), a fresh database per ferry start, and the
    statement counts of pg_stat_database."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx
        self.dir: str | None = None
        self.admin_url = ""
        self.n = 0
        self.bindir = ""

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("FERRY_PG_DIR", "FERRY_TEST_DATABASE_URL")}
        # our own cluster, never the caller's (the test command exports FERRY_PG_DIR of its own)
        env["TMPDIR"] = str(self.ctx.work)
        t0 = time.perf_counter()
        out = subprocess.run([str(REPO / "scripts" / "pg.sh"), "start"], capture_output=True, text=True, env=env)
        exports = {}
        for line in out.stdout.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                k, v = words[1].split("=", 1)
                exports[k] = v
        self.dir = exports.get("FERRY_PG_DIR")
        if out.returncode != 0 or not self.dir or "FERRY_TEST_DATABASE_URL" not in exports:
            raise BenchError(f"scripts/pg.sh start failed (exit {out.returncode}): {out.stderr.strip()[-400:]}")
        self.admin_url = exports["FERRY_TEST_DATABASE_URL"]
        self.bindir = str(Path(sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                                      key=lambda q: [int(x) if x.isdigit() else 0 for x in q.parent.parent.name.split(".")])[-1]).parent)
        log(f"bench: PostgreSQL ({self.version()}) in {self.dir}, started in {time.perf_counter() - t0:.1f} s")

    def version(self) -> str:
        out = subprocess.run([f"{self.bindir}/postgres", "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def stop(self) -> None:
        if self.dir:
            env = {**os.environ, "FERRY_PG_DIR": self.dir}
            out = subprocess.run([str(REPO / "scripts" / "pg.sh"), "stop"], capture_output=True, text=True, env=env)
            if out.returncode != 0:
                log(f"bench: scripts/pg.sh stop: {out.stderr.strip()[-300:]}")
            self.dir = None

    def url(self, db: str) -> str:
        u = urllib.parse.urlsplit(self.admin_url)
        return urllib.parse.urlunsplit(u._replace(path="/" + db))

    def sql(self, query: str) -> str:
        """One statement on the admin database `postgres` (never on a test database, so the
        harness's own queries do not count in the test database's statistics)."""
        out = subprocess.run([f"{self.bindir}/psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-d", self.admin_url, "-c", query],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise BenchError(f"psql {query!r}: {out.stderr.strip()[-300:]}")
        return out.stdout.strip()

    def create_db(self) -> str:
        self.n += 1
        name = f"bench_{self.n}"
        self.sql(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def statements(self, db: str) -> int:
        """xact_commit + xact_rollback of `db` once no backend is connected to it: a backend
        flushes its counts to the shared statistics when it exits (and otherwise only every
        1-10 s), so this is read after ferry has stopped and its connections have ended."""
        deadline = time.monotonic() + 30
        while int(self.sql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'")) and time.monotonic() < deadline:
            time.sleep(0.05)
        q = f"SELECT coalesce(sum(xact_commit + xact_rollback), 0) FROM pg_stat_database WHERE datname = '{db}'"
        last = int(self.sql(q))
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = int(self.sql(q))
            if now == last:
                return now
            last = now
        return last

    def postmaster_pid(self) -> int:
        return int(Path(self.dir, "data", "postmaster.pid").read_text().split()[0])

    def cpu(self) -> float:
        """CPU seconds of the whole cluster: postmaster, background processes, backends
        (live ones; exited ones are reaped into the postmaster's cutime/cstime)."""
        return cpu_seconds(proc_tree(self.postmaster_pid()))


class FerryDb(Ferry):
    """W10: ferry with its metadata in SQLite (the default, `<data-dir>/ferry.db`) or, given a
    cluster, in a fresh PostgreSQL database made for this start (`--database postgres://…`)."""

    def __init__(self, ctx, name, label, pg: PgCluster | None = None, vs=None):
        super().__init__(ctx)
        self.name, self.label, self.pg, self.vs = name, label, pg, vs
        self.db: str | None = None
        self.statements0 = 0

    def start(self, data_dir, durable):
        if self.pg:
            self.db = self.pg.create_db()
            self.statements0 = self.pg.statements(self.db)
        log_file = self.ctx.work / f"{self.name}.log"
        self.log_offset = log_file.stat().st_size if log_file.exists() else 0
        super().start(data_dir, durable)

    def check_log(self) -> None:
        """ferry runs with RUST_LOG=warn: any line it logged since this start is a warning or an
        error (e.g. failed lease renewals, which fail PATCHes only once they last 2.3 s, longer
        than --quick's runs), and fails the run."""
        with open(self.ctx.work / f"{self.name}.log", "rb") as f:
            f.seek(self.log_offset)
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
        if lines:
            raise BenchError(f"{self.name} logged {len(lines)} line(s) at level warn or above, the first: {lines[0][:300]}")

    def command(self, data_dir, durable):
        cmd, env = super().command(data_dir, durable)
        if self.pg:
            cmd += ["--database", self.pg.url(self.db)]
        return cmd, env

    def pg_cpu(self):
        return self.pg.cpu() if self.pg else None

    def stop_and_count(self) -> int | None:
        """Stops ferry; returns the statements its database saw since before the start."""
        super().stop()
        if not (self.pg and self.db):
            return None
        return self.pg.statements(self.db) - self.statements0

    def stop(self):
        super().stop()
        if self.pg and self.db:
            try:
                self.pg.drop_db(self.db)
            except (BenchError, subprocess.TimeoutExpired) as e:
                log(f"bench: {e}")
            self.db = None


class Garage:
    """W11: a throwaway one-node Garage of scripts/s3.sh for the length of the workload, its
    data in the harness's work dir (tmpfs, like the servers' data), and its CPU."""

    def __init__(self, ctx: "Context"):
        self.ctx = ctx
        self.dir: str | None = None
        self.exports: dict[str, str] = {}
        self.pid = 0
        self.n = 0

    def start(self) -> None:
        # TMPDIR: s3.sh makes its directory there. A Garage of the caller's (the test command
        # exports FERRY_S3_DIR and the AWS_* of its own) is never used: s3.sh start ignores
        # them, and ferry and the direct client get this one's exports only.
        env = {**os.environ, "TMPDIR": str(self.ctx.work)}
        t0 = time.perf_counter()
        # stderr passes through: without a built Garage, s3.sh builds it first and says so
        out = subprocess.run([str(REPO / "scripts" / "s3.sh"), "start", "garage"], stdout=subprocess.PIPE,
                             text=True, env=env)
        for line in out.stdout.splitlines():
            words = shlex.split(line)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                k, v = words[1].split("=", 1)
                self.exports[k] = v
        self.dir = self.exports.get("FERRY_S3_DIR")
        if out.returncode != 0 or not self.dir or not self.exports.get("FERRY_TEST_S3_ENDPOINT"):
            raise BenchError(f"scripts/s3.sh start garage failed (exit {out.returncode}; its message, if any, is above)")
        self.pid = int(Path(self.dir, "pid").read_text().split()[0])
        comm = Path(f"/proc/{self.pid}/comm").read_text().strip()
        if comm != "garage":
            raise BenchError(f"Garage's pid file {self.dir}/pid names a {comm!r} process, not garage")
        log(f"bench: Garage ({self.version()}) at {self.endpoint}, data in {self.dir}, started in {time.perf_counter() - t0:.1f} s")

    @property
    def endpoint(self) -> str:
        return self.exports["FERRY_TEST_S3_ENDPOINT"]

    @property
    def bucket(self) -> str:
        return self.exports["FERRY_TEST_S3_BUCKET"]

    def version(self) -> str:
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "garage (version unknown)"

    def aws_env(self) -> dict:
        """Its credentials and region; an empty session token hides a caller's."""
        return {k: self.exports[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")} | {"AWS_SESSION_TOKEN": ""}

    def client_env(self) -> dict:
        """The direct client's environment: none of the caller's AWS_* (profiles, endpoints,
        tokens) and no AWS config files, only this Garage's credentials."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({k: self.exports[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")})
        env.update(AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        return env

    def new_prefix(self) -> str:
        """A key prefix of its own for every ferry start, so no run sees another's objects."""
        self.n += 1
        return f"w11-{self.n}/"

    def cpu(self) -> float:
        return cpu_seconds(proc_tree(self.pid))

    def stop(self) -> None:
        """Stops this Garage, and any other s3.sh directory in the work dir (a start that
        failed after launching the server prints no exports)."""
        dirs = {self.dir} if self.dir else set()
        dirs |= {str(d) for d in self.ctx.work.glob("ferry-s3.*") if (d / ".ferry-s3").exists()}
        for d in dirs:
            out = subprocess.run([str(REPO / "scripts" / "s3.sh"), "stop", d], capture_output=True, text=True)
            if out.returncode != 0:
                log(f"bench: scripts/s3.sh stop {d}: {out.stderr.strip()[-300:]}")
        self.dir = None


class FerryS3(Ferry):
    """W11: ferry with its file bytes in Garage (`--storage s3://<bucket>/<fresh prefix>/`,
    `--s3-endpoint`), logging ferry_core's INFO lines too, for `upload complete … finalize_ms=N`."""

    name = "ferry"
    TRACING_LINE = re.compile(r"^\S+\s+(TRACE|DEBUG|INFO|WARN|ERROR)\s")
    ANSI = re.compile(r"\x1b\[[0-9;]*m")

    def __init__(self, ctx, garage: Garage, label: str):
        super().__init__(ctx)
        self.garage, self.label = garage, label
        self.prefix = ""
        self.log_offset = 0

    def start(self, data_dir, durable):
        self.prefix = self.garage.new_prefix()
        log_file = self.ctx.work / f"{self.name}.log"
        self.log_offset = log_file.stat().st_size if log_file.exists() else 0
        super().start(data_dir, durable)

    def command(self, data_dir, durable):
        cmd, env = super().command(data_dir, durable)
        cmd += ["--storage", f"s3://{self.garage.bucket}/{self.prefix}", "--s3-endpoint", self.garage.endpoint]
        return cmd, {**env, **self.garage.aws_env(), "RUST_LOG": "warn,ferry_core=info"}

    def log_lines(self) -> list[str]:
        """What ferry logged since this start, colour codes removed."""
        with open(self.ctx.work / f"{self.name}.log", "rb") as f:
            f.seek(self.log_offset)
            text = f.read().decode(errors="replace")
        return [self.ANSI.sub("", l) for l in text.splitlines() if l.strip()]

    def finalize_ms(self, upload_id: str, wait: float = 5) -> int:
        """finalize_ms of the `upload complete` line of `upload_id` (logged before the last
        PATCH is answered; waited for a little all the same)."""
        deadline = time.monotonic() + wait
        while True:
            for line in self.log_lines():
                if "upload complete" in line and re.search(rf"\bid={re.escape(upload_id)}\b", line):
                    m = re.search(r"\bfinalize_ms=(\d+)", line)
                    if not m:
                        raise BenchError(f"{self.name}: no finalize_ms in its log line: {line[:300]}")
                    return int(m.group(1))
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: no `upload complete` line for {upload_id} in its log (RUST_LOG=warn,ferry_core=info)")
            time.sleep(0.05)

    def check_log(self) -> None:
        """Any line at WARN or ERROR since this start (a part that could not be sent, pieces
        not removed …), or any line that is not tracing's (a panic), fails the run."""
        bad = [l for l in self.log_lines() if not (m := self.TRACING_LINE.match(l)) or m.group(1) in ("WARN", "ERROR")]
        if bad:
            raise BenchError(f"{self.name} logged {len(bad)} line(s) at level warn or above, the first: {bad[0][:300]}")


class Rustus(Server):
    name, label = "rustus", "rustus 0.5.10"
    ready_path, ready_method = "/health", "GET"

    def command(self, data_dir, durable):
        return ([self.ctx.rustus_bin, "--host", "127.0.0.1", "--port", str(self.port),
                 "--data-dir", str(data_dir), "--info-dir", str(data_dir),
                 "--url", "/files", "--log-level", "WARN",
                 # One 1 GiB PATCH (W1) must fit: rustus reads a whole PATCH body into memory.
                 "--max-body-size", str(self.ctx.rustus_max_body),
                 "--force-fsync", "true" if durable else "false"], {})

    def file_url(self, location):
        # rustus' "getting" extension is routed at /files/<id>/ (trailing slash).
        return location if location.endswith("/") else location + "/"


class TusNode(Server):
    name, label = "tus-node", "@tus/server 1.10.2 + @tus/file-store 1.5.1"

    def command(self, data_dir, durable):
        return (["node", str(HERE / "tus-node-server.mjs"), str(self.port), str(data_dir)], {})


NGINX_COMMON = """
daemon off;
master_process on;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp;
  proxy_temp_path {prefix}/tmp;
  fastcgi_temp_path {prefix}/tmp;
  uwsgi_temp_path {prefix}/tmp;
  scgi_temp_path {prefix}/tmp;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
{body}
  }}
}}
"""


class Nginx(Server):
    stop_signal = signal.SIGQUIT

    def conf_body(self, data_dir: Path) -> str:
        raise NotImplementedError

    def command(self, data_dir, durable):
        prefix = data_dir / "nginx"
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_COMMON.format(prefix=prefix, port=self.port, body=self.conf_body(data_dir)))
        return (["nginx", "-p", str(prefix), "-c", str(conf)], {})


class NginxSink(Nginx):
    """Reads and discards every body (nginx's discard path), answers like a tus server would
    need to for a client that does not look at the answers: 201 + Location for POST, 204 else.
    nginx logs the request (and closes it) only once the whole body has been read; the harness
    checks curl's uploaded byte count."""

    name, label, kind = "nginx-sink", "nginx sink (body discarded)", "sink"

    def conf_body(self, data_dir):
        return """
    client_max_body_size 0;
    location /files/ {
      if ($request_method = POST) {
        add_header Location /files/sink always;
        add_header Tus-Resumable 1.0.0 always;
        return 201;
      }
      return 204;
    }"""


class NginxStatic(Nginx):
    name, label, kind = "nginx-static", "nginx static (sendfile)", "static"
    ready_path, ready_method = "/", "GET"

    def conf_body(self, data_dir):
        return f"""
    root {self.ctx.static_root};
    sendfile on;
    tcp_nopush on;
    location / {{ }}"""


# ----------------------------------------------------------------------------------------
# Client helpers


def parse_url(url: str) -> tuple[str, int, str]:
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port or (443 if u.scheme == "https" else 80), (u.path or "/") + (f"?{u.query}" if u.query else "")


# Trusts the self-signed certificate W9 makes (Context.make_cert); None until then.
TLS_CONTEXT: ssl.SSLContext | None = None


def connect(url: str, timeout: float) -> http.client.HTTPConnection:
    """A connection to url's host and port: HTTPS (HTTP/1.1) for https URLs, trusting W9's
    certificate, plain HTTP/1.1 otherwise."""
    host, port, _ = parse_url(url)
    if url.startswith("https:"):
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=TLS_CONTEXT)
    return http.client.HTTPConnection(host, port, timeout=timeout)


def tus_create(base: str, length: int) -> str:
    c = connect(base, timeout=60)
    c.request("POST", "/files/", headers={
        "Tus-Resumable": "1.0.0", "Upload-Length": str(length), "Content-Length": "0",
        "Upload-Metadata": "filename YmVuY2guYmlu",
    })
    r = c.getresponse()
    r.read()
    c.close()
    loc = r.getheader("Location")
    if r.status != 201 or not loc:
        raise BenchError(f"POST {base}/files/ answered {r.status} (Location: {loc})")
    return urllib.parse.urljoin(base + "/files/", loc)


def curl_patch(url: str, path: Path, offset: int = 0, extra: list[str] = ()) -> dict:
    """One tus PATCH with the whole file as its body (curl streams it from the file). `extra`:
    more curl options (W9's protocol choice). Also returns the HTTP version curl used and
    curl's own CPU seconds (from the rusage of reaped children: no other child ends meanwhile
    when one curl runs alone)."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["curl", "-sS", *extra, "-X", "PATCH", "-T", str(path), url, "-o", "/dev/null",
         "-H", "Tus-Resumable: 1.0.0", "-H", f"Upload-Offset: {offset}",
         "-H", "Content-Type: application/offset+octet-stream", "-H", "Expect:",
         "-w", "%{http_code} %{size_upload} %{http_version}"],
        capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise BenchError(f"curl PATCH {url}: exit {out.returncode}: {out.stderr.strip()}")
    code, sent, version = out.stdout.split()
    return {"status": int(code), "sent": int(float(sent)), "http_version": version,
            "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


def verify_download(url: str, src: Path, length: int | None = None) -> None:
    """GET url; the body must equal the first `length` bytes of src (all of it by default)."""
    length = src.stat().st_size if length is None else length
    _, _, path = parse_url(url)
    c = connect(url, timeout=120)
    c.request("GET", path)
    r = c.getresponse()
    if r.status != 200:
        raise BenchError(f"GET {url} answered {r.status}, expected 200")
    got = 0
    with open(src, "rb") as f:
        while True:
            block = r.read(4 * MiB)
            if not block:
                break
            want = f.read(len(block))
            if block != want:
                raise BenchError(f"GET {url}: bytes differ from the source near offset {got}")
            got += len(block)
    c.close()
    if got != length:
        raise BenchError(f"GET {url} returned {got} bytes, the source has {length}")


def verify_range(url: str, src: Path, first: int, last: int) -> None:
    host, port, path = parse_url(url)
    c = http.client.HTTPConnection(host, port, timeout=60)
    c.request("GET", path, headers={"Range": f"bytes={first}-{last}"})
    r = c.getresponse()
    body = r.read()
    c.close()
    with open(src, "rb") as f:
        f.seek(first)
        want = f.read(last - first + 1)
    if r.status != 206 or body != want:
        raise BenchError(f"GET {url} Range bytes={first}-{last}: status {r.status}, {len(body)} bytes, equal to the source: {body == want}")


class PatternBody:
    """`length` bytes cut from a repeated random block, sent without holding them in memory."""

    def __init__(self, block: bytes, length: int):
        self.block, self.length = memoryview(block), length

    def __iter__(self):
        left = self.length
        while left:
            n = min(left, len(self.block))
            yield self.block[:n]
            left -= n


def tus_patch_stream(url: str, offset: int, body, length: int, timeout: float = 600) -> http.client.HTTPResponse:
    host, port, path = parse_url(url)
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    c.request("PATCH", path, body=body, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": str(offset), "Content-Length": str(length),
        "Content-Type": "application/offset+octet-stream",
    })
    r = c.getresponse()
    r.read()
    c.close()
    return r


def metric(base: str, name: str) -> float | None:
    c = connect(base, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    for line in text.splitlines():
        if line.split(" ")[0] == name:
            return float(line.split()[1])
    return None


# ----------------------------------------------------------------------------------------
# The run context


class Context:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.runs = args.runs
        self.warmup = args.warmup
        self.rustus_bin = args.rustus_bin
        self.work = Path(tempfile.mkdtemp(prefix="ferry-bench.", dir=args.tmpfs))
        self.work.chmod(0o755)  # nginx's workers run as another user when we are root
        # Several harnesses may run at once (the test command runs --quick): each has its own
        # directories and removes only those.
        self.disk_parent = Path(args.disk)
        self.disk_root: Path | None = None
        # A snapshot of the binary: a `cargo build` during the run must not change what is measured.
        self.ferry_bin = str(self.work / "ferry")
        shutil.copy2(args.ferry_bin, self.ferry_bin)
        self.ferry_sha = hashlib.sha256(Path(self.ferry_bin).read_bytes()).hexdigest()[:16]
        self.static_root = self.work / "static"
        self.results: list[dict] = []
        self.errors: list[str] = []
        q = self.quick
        self.size_w1 = 32 * MiB if q else GiB
        self.size_w3 = 1 * MiB if q else 64 * MiB
        self.count_w3 = 32
        self.chunk_w2 = 8 * MiB
        self.w4_conns = 16
        self.w4_seconds = 1 if q else 5
        # W10's W4: 2 s in --quick, so that ferry's once-a-second lease renewal runs while
        # PATCHes hold leases (its warnings fail the run)
        self.w10_w4_seconds = 2 if q else self.w4_seconds
        self.w4_chunk = 256 * 1024
        self.w5_sizes = [32 * MiB] if q else [GiB, 8 * GiB]
        self.w5_tail = MiB
        self.w6_seconds = 1 if q else 5
        self.w6_conns = 8
        self.w7_chunk = 5 * MiB
        self.w7_parallel = 4
        self.rustus_max_body = GiB + MiB
        self.pattern = os.urandom(8 * MiB)
        # W9 sends W1's source file; its certificate is made only when W9 runs.
        self.size_w9 = self.size_w1
        self.tls_cert: Path | None = None
        self.tls_key: Path | None = None
        # W10: the PostgreSQL cluster (started only when W10 runs) and its fixed statement counts
        self.pg: PgCluster | None = None
        self.pg_fixed: dict = {}
        # W11: W1's source file uploaded and downloaded through ferry storing in Garage and
        # straight to Garage (boto3, 16 MiB parts, 8 at once; a presigned GET by curl), then
        # 32 concurrent 64 MiB uploads for ferry's peak RSS; the Garage is started only then.
        self.size_w11 = self.size_w1
        self.count_w11 = 8 if q else 32
        self.size_w11_mem = 4 * MiB if q else 64 * MiB
        self.w11_threshold, self.w11_part, self.w11_concurrency = 8 * MiB, 16 * MiB, 8
        self.garage: Garage | None = None
        self.boto3_python: str | None = None

    def make_cert(self) -> None:
        """A self-signed P-256 certificate for localhost and 127.0.0.1 in the work dir (W9);
        ferry serves it, curl and the harness's own HTTPS connections trust it."""
        global TLS_CONTEXT
        self.tls_cert, self.tls_key = self.work / "cert.pem", self.work / "key.pem"
        out = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-addext", "basicConstraints=critical,CA:FALSE", "-keyout", str(self.tls_key), "-out", str(self.tls_cert)],
            capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"openssl req (W9's certificate): {out.stderr.strip()[-300:]}")
        TLS_CONTEXT = ssl.create_default_context(cafile=str(self.tls_cert))

    # sources live on tmpfs whatever the servers' storage, so the client never waits for a disk
    def prepare_sources(self) -> None:
        log(f"bench: sources in {self.work}")
        self.src = self.work / "src.bin"
        self.src_w3 = self.work / "src-w3.bin"
        write_random(self.src, self.size_w1)
        write_random(self.src_w3, self.size_w3)
        self.src_w9 = self.src
        self.static_root.mkdir()
        os.link(self.src, self.static_root / "src.bin")
        # W7: the 5 MiB chunks with their MD5 ids, computed before any clock starts.
        self.chunk_dir = self.work / "chunks"
        self.chunk_dir.mkdir()
        self.chunks: list[tuple[str, Path]] = []
        whole = hashlib.md5()
        with open(self.src, "rb") as f:
            i = 0
            while block := f.read(self.w7_chunk):
                whole.update(block)
                p = self.chunk_dir / f"c{i:05d}"
                p.write_bytes(block)
                self.chunks.append((hashlib.md5(block).hexdigest() + str(i), p))
                i += 1
        self.src_md5 = whole.hexdigest()

    def storage_dir(self, storage: str) -> Path:
        if storage == "tmpfs":
            root = self.work
        else:
            if self.disk_root is None:
                self.disk_parent.mkdir(parents=True, exist_ok=True)
                self.disk_root = Path(tempfile.mkdtemp(prefix="ferry-bench.", dir=self.disk_parent))
            root = self.disk_root
        return Path(tempfile.mkdtemp(prefix="data.", dir=root))

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        if self.disk_root:
            shutil.rmtree(self.disk_root, ignore_errors=True)


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 * MiB)
            f.write(os.urandom(n))
            left -= n


# ----------------------------------------------------------------------------------------
# Workloads. Each `run_*` gets a started server and returns a dict of measurements; the
# server's CPU is sampled around the measured part only; VmHWM is read right after it.


def timed(server: Server, fn):
    server.refresh_pids()
    c0 = server.cpu()
    p0 = server.pg_cpu()
    t0 = time.perf_counter()
    extra = fn() or {}
    wall = time.perf_counter() - t0
    server.refresh_pids()
    out = {"wall_s": wall, "cpu_s": server.cpu() - c0, "rss_mib": server.hwm_mib(), **extra}
    if p0 is not None:
        out["pg_cpu_s"] = server.pg_cpu() - p0
    return out


def run_w1(ctx: Context, server: Server) -> dict:
    """One upload in a single PATCH (curl -T)."""
    size = ctx.size_w1
    url = tus_create(server.base, size)
    res = timed(server, lambda: {"curl": curl_patch(url, ctx.src)})
    st = res.pop("curl")
    if st["status"] != 204 or st["sent"] != size:
        raise BenchError(f"{server.name}: PATCH answered {st['status']} after {st['sent']} of {size} bytes")
    if server.kind == "tus":
        verify_download(server.file_url(url), ctx.src)
    res.update(bytes=size, mibps=size / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (size / GiB))
    return res


def run_w2(ctx: Context, server: Server) -> dict:
    """tus-js-client, 8 MiB PATCHes."""
    size = ctx.size_w1

    def go():
        out = subprocess.run(["node", str(HERE / "tusjs-upload.mjs"), server.base + "/files/", str(ctx.src),
                              str(ctx.chunk_w2)], capture_output=True, text=True)
        if out.returncode != 0:
            raise BenchError(f"{server.name}: tus-js-client failed: {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    res = timed(server, go)
    # the client's own clock: from upload.start() to onSuccess (file loading excluded)
    res["wall_s"] = res.pop("seconds")
    verify_download(server.file_url(urllib.parse.urljoin(server.base + "/files/", res.pop("url"))), ctx.src)
    res.update(bytes=size, mibps=size / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (size / GiB))
    return res


def run_w3(ctx: Context, server: Server) -> dict:
    """32 concurrent uploads, one PATCH each (32 curl processes)."""
    n, size = ctx.count_w3, ctx.size_w3
    urls = [tus_create(server.base, size) for _ in range(n)]

    def go():
        with ThreadPoolExecutor(n) as pool:
            return {"curls": list(pool.map(lambda u: curl_patch(u, ctx.src_w3), urls))}

    res = timed(server, go)
    for st in res.pop("curls"):
        if st["status"] != 204 or st["sent"] != size:
            raise BenchError(f"{server.name}: a PATCH answered {st['status']} after {st['sent']} of {size} bytes")
    if server.kind == "tus":
        for u in urls:
            verify_download(server.file_url(u), ctx.src_w3)
    total = n * size
    res.update(bytes=total, mibps=total / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (total / GiB))
    return res


def run_w4(ctx: Context, server: Server, seconds: float | None = None) -> dict:
    """16 uploads in parallel, sequential 256 KiB PATCHes, fixed duration."""
    cmd = ["node", str(HERE / "tus-patches.mjs"), server.base, str(ctx.w4_conns), str(seconds or ctx.w4_seconds),
           str(ctx.w4_chunk), str(GiB)]
    if server.kind == "sink":
        cmd.append("--no-offset-check")

    def go():
        out = subprocess.run(cmd, capture_output=True, text=True)
        try:
            r = json.loads(out.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            raise BenchError(f"{server.name}: W4 client failed: {out.stderr.strip()[-500:]}")
        if out.returncode != 0 or r["errors"]:
            raise BenchError(f"{server.name}: W4: {r['errors'] or out.stderr.strip()[-300:]}")
        return r

    res = timed(server, go)
    res["wall_s"] = res.pop("seconds")
    total = res["requests"] * ctx.w4_chunk
    res.update(bytes=total, cpu_s_per_gib=res["cpu_s"] / (total / GiB) if total else None)
    return res


def run_w5(ctx: Context, server: Server, size: int, pause: float = 0) -> dict:
    """Everything but the last MiB in 8 MiB PATCHes, then (after `pause` seconds): the last
    PATCH sent → first byte of GET /files/<id>."""
    tail = ctx.w5_tail
    url = tus_create(server.base, size)
    host, port, path = parse_url(url)
    c = http.client.HTTPConnection(host, port, timeout=120)
    off, step = 0, ctx.chunk_w2
    blk = ctx.pattern
    while off < size - tail:
        n = min(step, size - tail - off)
        i = off % len(blk)
        body = blk[i:i + n] if i + n <= len(blk) else (blk[i:] + blk)[:n]
        c.request("PATCH", path, body=body, headers={
            "Tus-Resumable": "1.0.0", "Upload-Offset": str(off), "Content-Length": str(n),
            "Content-Type": "application/offset+octet-stream"})
        r = c.getresponse()
        r.read()
        if r.status != 204:
            raise BenchError(f"{server.name}: prefix PATCH at {off} answered {r.status}")
        off += n
    c.close()
    if pause:
        time.sleep(pause)
    # the final MiB of the pattern stream: bytes size-tail .. size-1
    start = (size - tail) % len(blk)
    last = (blk[start:] + blk)[:tail]
    get_url = server.file_url(url)
    _, _, get_path = parse_url(get_url)
    server.refresh_pids()
    c0 = server.cpu()
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=120)
    c.request("PATCH", path, body=last, headers={
        "Tus-Resumable": "1.0.0", "Upload-Offset": str(size - tail), "Content-Length": str(tail),
        "Content-Type": "application/offset+octet-stream"})
    r = c.getresponse()
    r.read()
    t_ack = time.perf_counter()
    c.close()
    if r.status != 204:
        raise BenchError(f"{server.name}: last PATCH answered {r.status}")
    g = http.client.HTTPConnection(host, port, timeout=120)
    g.request("GET", get_path)
    gr = g.getresponse()
    first = gr.read(1)
    t1 = time.perf_counter()
    cl = gr.getheader("Content-Length")
    g.close()
    cpu = server.cpu() - c0
    if gr.status != 200 or first != blk[:1] or cl != str(size):
        raise BenchError(f"{server.name}: GET after the last PATCH: status {gr.status}, Content-Length {cl}, first byte ok: {first == blk[:1]}")
    return {"latency_ms": (t1 - t0) * 1000, "ack_ms": (t_ack - t0) * 1000, "cpu_s": cpu,
            "rss_mib": server.hwm_mib(), "bytes": size}


def run_w6(ctx: Context, server: Server) -> dict:
    """1 GiB GET with curl, then random 1 MiB Range GETs with wrk."""
    size = ctx.size_w1
    if server.kind == "static":
        url = server.base + "/src.bin"
    else:
        loc = tus_create(server.base, size)
        st = curl_patch(loc, ctx.src)
        if st["status"] != 204:
            raise BenchError(f"{server.name}: PATCH answered {st['status']}")
        url = server.file_url(loc)
    verify_range(url, ctx.src, size // 3, size // 3 + MiB - 1)

    def get():
        out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                             capture_output=True, text=True)
        code, got = out.stdout.split()
        if out.returncode or code != "200" or int(float(got)) != size:
            raise BenchError(f"{server.name}: GET {url}: curl exit {out.returncode}, status {code}, {got} bytes")

    res = timed(server, get)
    res.update(mibps=size / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (size / GiB), bytes=size)
    if shutil.which("wrk"):
        def ranges():
            out = subprocess.run(["wrk", "-t1", f"-c{ctx.w6_conns}", f"-d{ctx.w6_seconds}s", "-s",
                                  str(HERE / "ranges.lua"), url, "--", str(size)], capture_output=True, text=True)
            line = next((l for l in out.stdout.splitlines() if l.startswith("JSON ")), None)
            if out.returncode or not line:
                raise BenchError(f"{server.name}: wrk failed: {out.stderr.strip()[-300:]} {out.stdout[-300:]}")
            w = json.loads(line[5:])
            if w["non2xx"] or w["socket_errors"] or not w["requests"]:
                raise BenchError(f"{server.name}: wrk: {w}")
            return w
        rr = timed(server, ranges)
        res.update(range_rps=rr["rps"], range_p50_ms=rr["p50_ms"], range_p99_ms=rr["p99_ms"],
                   range_cpu_s=rr["cpu_s"], rss_mib=rr["rss_mib"])
    # and the bytes: once per server in a full run, every time in --quick
    if ctx.quick or not getattr(server, "_verified", False):
        verify_download(url, ctx.src)
        server._verified = True
    return res


def run_w9(ctx: Context, server: FerryProto) -> dict:
    """W1 over one protocol: one upload in a single PATCH by curl, which must report the HTTP
    version the variant stands for."""
    size = ctx.size_w9
    # the Location's path on this server's base (scheme and authority as the harness reaches it)
    url = server.base + urllib.parse.urlsplit(tus_create(server.base, size)).path
    res = timed(server, lambda: {"curl": curl_patch(url, ctx.src_w9, extra=server.curl_args)})
    st = res.pop("curl")
    if st["http_version"] != server.http_version:
        raise BenchError(f"{server.name}: curl {' '.join(server.curl_args) or '(no protocol option)'} used HTTP/{st['http_version']},"
                         f" not HTTP/{server.http_version}")
    if st["status"] != 204 or st["sent"] != size:
        raise BenchError(f"{server.name}: PATCH answered {st['status']} after {st['sent']} of {size} bytes")
    verify_download(url, ctx.src_w9)
    res.update(bytes=size, mibps=size / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (size / GiB),
               client_cpu_s_per_gib=st["client_cpu_s"] / (size / GiB), http_version=st["http_version"],
               vs=server.vs)
    return res


def run_w10(ctx: Context, server: FerryDb, base: str) -> dict:
    """W1 or W4 on ferry with its metadata in SQLite or PostgreSQL. For PostgreSQL, also the
    cluster's CPU over the measured part, and the statements ferry's database saw from before
    ferry started to after it stopped, less those of a start, W4's 16 creations and a stop
    without any PATCH (ctx.pg_fixed, measured once at the start of W10)."""
    res = run_w1(ctx, server) if base == "W1" else run_w4(ctx, server, ctx.w10_w4_seconds)
    # before the stop below: alternate() would ask a stopped ferry
    res["rehashed_bytes"] = metric(server.base, "ferry_rehashed_bytes_total")
    res["vs"] = server.vs
    server.check_log()
    if res.get("pg_cpu_s") is not None and res.get("bytes"):
        res["pg_cpu_s_per_gib"] = res["pg_cpu_s"] / (res["bytes"] / GiB)
    if base == "W4" and res.get("requests"):
        res["cpu_us_per_patch"] = res["cpu_s"] / res["requests"] * 1e6
        if res.get("pg_cpu_s") is not None:
            res["pg_cpu_us_per_patch"] = res["pg_cpu_s"] / res["requests"] * 1e6
    statements = server.stop_and_count()
    if statements is not None:
        res["pg_statements"] = statements
        if base == "W4" and res.get("requests"):
            res["pg_statements_fixed"] = ctx.pg_fixed["w4"]
            res["pg_statements_per_patch"] = (statements - ctx.pg_fixed["w4"]) / res["requests"]
        if base == "W1":
            res["pg_statements_fixed"] = ctx.pg_fixed["start"]
            res["pg_statements_per_upload"] = statements - ctx.pg_fixed["start"]
    return res


def pg_calibrate(ctx: Context, server: FerryDb, with_w4: bool) -> dict:
    """The statements that are not the workload's: a ferry started on a fresh database and
    stopped at once (start-up, migrations, pool connections, shutdown), and the same with
    W4's client creating its 16 uploads and sending no PATCH (duration 0)."""
    out = {}
    for what in ("start", "w4") if with_w4 else ("start",):
        data = ctx.storage_dir("tmpfs")
        try:
            server.start(data, durable=False)
            if what == "w4":
                r = subprocess.run(["node", str(HERE / "tus-patches.mjs"), server.base, str(ctx.w4_conns), "0",
                                    str(ctx.w4_chunk), str(GiB)], capture_output=True, text=True)
                if r.returncode != 0:
                    raise BenchError(f"W10 calibration: W4's client without PATCHes failed: {r.stderr.strip()[-300:]}")
            out[what] = server.stop_and_count()
        finally:
            server.stop()
            shutil.rmtree(data, ignore_errors=True)
    return out


# W11: file bytes on S3 (a local Garage)


def find_boto3_python() -> str | None:
    """An interpreter that imports boto3: this one, or the venv scripts/bench/run makes
    (~/.cache/ferry-bench/venv) when this one has no boto3."""
    for py in (sys.executable, str(CACHE / "venv" / "bin" / "python")):
        if py and Path(py).exists() and subprocess.run([py, "-c", "import boto3"], capture_output=True).returncode == 0:
            return py
    return None


def boto3_version(py: str) -> str | None:
    out = subprocess.run([py, "-c", "import boto3, botocore; print(f'boto3 {boto3.__version__} (botocore {botocore.__version__})')"],
                         capture_output=True, text=True)
    return out.stdout.strip() or None


def s3_client(ctx: Context, req: dict) -> dict:
    """One operation of W11's direct client (s3_client_main) in a process of its own, started
    by the interpreter that has boto3, with Garage's credentials only."""
    g = ctx.garage
    req = {"endpoint": g.endpoint, "bucket": g.bucket, **req}
    out = subprocess.run([ctx.boto3_python, str(Path(__file__).resolve()), "--s3-client", json.dumps(req)],
                         capture_output=True, text=True, env=g.client_env(), timeout=900)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"boto3 {req['op']} (exit {out.returncode}): {out.stderr.strip()[-500:]}")


def s3_client_main(arg: str) -> int:
    """W11's direct client, as `bench.py --s3-client JSON`: upload a file to Garage with
    boto3's managed multipart transfer (its own clock and CPU around upload_file only), or
    check an object (size, one range against the source) and presign a GET of it. Tuned as
    ferry's own S3 client sends: no payload signature (UNSIGNED-PAYLOAD) and no checksums
    beyond what S3 requires, path-style addressing."""
    import boto3
    import botocore.config
    from boto3.s3.transfer import TransferConfig

    req = json.loads(arg)
    opts = dict(s3={"addressing_style": "path", "payload_signing_enabled": False}, signature_version="s3v4",
                max_pool_connections=max(10, 2 * req.get("concurrency", 1)))
    try:
        cfg = botocore.config.Config(**opts, request_checksum_calculation="when_required",
                                     response_checksum_validation="when_required")
    except TypeError:  # botocore before 1.36 computes no checksums unasked
        cfg = botocore.config.Config(**opts)
    c = boto3.client("s3", endpoint_url=req["endpoint"], region_name=os.environ.get("AWS_REGION") or "garage", config=cfg)
    bucket, key = req["bucket"], req["key"]
    if req["op"] == "upload":
        topts = dict(multipart_threshold=req["threshold"], multipart_chunksize=req["part"],
                     max_concurrency=req["concurrency"], use_threads=True)
        try:  # the classic transfer manager, which honours these (not the CRT one if awscrt is installed)
            tc = TransferConfig(**topts, preferred_transfer_client="classic")
        except TypeError:
            tc = TransferConfig(**topts)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        c.upload_file(req["path"], bucket, key, Config=tc)
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        out = {"seconds": t1 - t0, "client_cpu_s": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)}
    elif req["op"] == "check":
        size = c.head_object(Bucket=bucket, Key=key)["ContentLength"]
        first, last = req["range"]
        got = c.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"].read()
        with open(req["path"], "rb") as f:
            f.seek(first)
            want = f.read(last - first + 1)
        url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
        out = {"size": size, "range_ok": got == want, "url": url}
    else:
        raise SystemExit(f"--s3-client: unknown op {req['op']!r}")
    print(json.dumps(out))
    return 0


def curl_get(url: str) -> dict:
    """GET url to /dev/null with curl: status, bytes, curl's own CPU seconds."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
                         capture_output=True, text=True)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise BenchError(f"curl GET {url}: exit {out.returncode}: {out.stderr.strip()}")
    code, got = out.stdout.split()
    return {"status": int(code), "got": int(float(got)),
            "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


def reset_hwm(pids: list[int]) -> bool:
    """Resets VmHWM to the current RSS (`echo 5 > /proc/PID/clear_refs`), so the peak read
    after the next part is that part's."""
    try:
        for p in pids:
            with open(f"/proc/{p}/clear_refs", "w") as f:
                f.write("5")
        return True
    except OSError:
        return False


def w11_timed(ctx: Context, ferry: FerryS3 | None, fn) -> dict:
    """Like timed(), and Garage's CPU over the same part; ferry's CPU and VmHWM when ferry
    is in the path (none for the direct client)."""
    g = ctx.garage
    if ferry:
        ferry.refresh_pids()
        c0 = ferry.cpu()
    g0 = g.cpu()
    t0 = time.perf_counter()
    extra = fn() or {}
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "garage_cpu_s": g.cpu() - g0, **extra}
    if ferry:
        ferry.refresh_pids()
        out.update(cpu_s=ferry.cpu() - c0, rss_mib=ferry.hwm_mib())
    return out


def w11_rates(res: dict, size: int) -> dict:
    gib = size / GiB
    res.update(bytes=size, mibps=size / MiB / res["wall_s"], garage_cpu_s_per_gib=res["garage_cpu_s"] / gib)
    if res.get("cpu_s") is not None:
        res["cpu_s_per_gib"] = res["cpu_s"] / gib
    if res.get("client_cpu_s") is not None:
        res["client_cpu_s_per_gib"] = res.pop("client_cpu_s") / gib
    return res


def upload_id_of(url: str) -> str:
    return urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


def run_w11_ferry_upload(ctx: Context, ferry: FerryS3, state: dict) -> dict:
    """One upload in a single tus PATCH (curl -T), the POST before the clock; then the
    finalize_ms of its `upload complete` line."""
    size = ctx.size_w11
    url = tus_create(ferry.base, size)
    res = w11_timed(ctx, ferry, lambda: {"curl": curl_patch(url, ctx.src)})
    st = res.pop("curl")
    if st["status"] != 204 or st["sent"] != size:
        raise BenchError(f"{ferry.name}: PATCH answered {st['status']} after {st['sent']} of {size} bytes")
    res["client_cpu_s"] = st["client_cpu_s"]
    res["finalize_ms"] = ferry.finalize_ms(upload_id_of(url))
    ferry.check_log()
    state["url"] = ferry.file_url(url)
    return w11_rates(res, size)


def run_w11_ferry_download(ctx: Context, ferry: FerryS3, state: dict) -> dict:
    """GET /files/<id> of the upload just made, curl to /dev/null (VmHWM reset before it);
    then the whole download compared with the source, byte for byte."""
    size = ctx.size_w11
    url = state.get("url")
    if not url:
        raise BenchError("nothing to download: this run's upload failed")
    reset = reset_hwm(ferry.pids)
    res = w11_timed(ctx, ferry, lambda: {"curl": curl_get(url)})
    st = res.pop("curl")
    if st["status"] != 200 or st["got"] != size:
        raise BenchError(f"{ferry.name}: GET {url} answered {st['status']} with {st['got']} of {size} bytes")
    if not reset:
        res["rss_mib"] = None  # the upload's peak, not the download's
    res["client_cpu_s"] = st["client_cpu_s"]
    verify_download(url, ctx.src)
    res["rehashed_bytes"] = metric(ferry.base, "ferry_rehashed_bytes_total")
    ferry.check_log()
    return w11_rates(res, size)


def run_w11_direct_upload(ctx: Context, state: dict) -> dict:
    """The same bytes straight to Garage by boto3's multipart transfer (the client's own clock
    around upload_file); then the object's size and one 1 MiB range against the source."""
    size, key = ctx.size_w11, "direct/src.bin"
    req = {"op": "upload", "key": key, "path": str(ctx.src), "threshold": ctx.w11_threshold,
           "part": ctx.w11_part, "concurrency": ctx.w11_concurrency}
    res = w11_timed(ctx, None, lambda: s3_client(ctx, req))
    res["wall_s"] = res.pop("seconds")
    first = size // 3
    chk = s3_client(ctx, {"op": "check", "key": key, "path": str(ctx.src), "range": [first, min(size, first + MiB) - 1]})
    if chk["size"] != size or not chk["range_ok"]:
        raise BenchError(f"boto3: the object has {chk['size']} of {size} bytes; the range at {first} equals the source: {chk['range_ok']}")
    state["url"] = chk["url"]
    return w11_rates(res, size)


def run_w11_direct_download(ctx: Context, state: dict) -> dict:
    """A GET of that object straight from Garage: curl of a presigned URL (boto3's)."""
    size = ctx.size_w11
    url = state.get("url")
    if not url:
        raise BenchError("nothing to download: this run's upload failed")
    res = w11_timed(ctx, None, lambda: {"curl": curl_get(url)})
    st = res.pop("curl")
    if st["status"] != 200 or st["got"] != size:
        raise BenchError(f"presigned GET answered {st['status']} with {st['got']} of {size} bytes")
    res["client_cpu_s"] = st["client_cpu_s"]
    return w11_rates(res, size)


def run_w11_memory(ctx: Context, ferry: FerryS3) -> dict:
    """count_w11 uploads created, then as many curl PATCHes at once (one each): ferry's peak
    RSS, the aggregate throughput, and the finalize_ms of every one of them."""
    n, size = ctx.count_w11, ctx.size_w11_mem
    urls = [tus_create(ferry.base, size) for _ in range(n)]

    def go():
        with ThreadPoolExecutor(n) as pool:
            return {"curls": list(pool.map(lambda u: curl_patch(u, ctx.src_w11m), urls))}

    res = w11_timed(ctx, ferry, go)
    for st in res.pop("curls"):
        if st["status"] != 204 or st["sent"] != size:
            raise BenchError(f"{ferry.name}: a PATCH answered {st['status']} after {st['sent']} of {size} bytes")
    fin = [ferry.finalize_ms(upload_id_of(u)) for u in urls]
    for u in urls:
        verify_download(ferry.file_url(u), ctx.src_w11m)
    ferry.check_log()
    res.update(finalize_ms=statistics.median(fin), finalize_ms_max=max(fin), count=n)
    return w11_rates(res, n * size)


def w11_attempt(ctx: Context, rec: dict, fn, server: Server | None = None) -> None:
    """One measured part of W11 as a record, like alternate() does for the other workloads."""
    try:
        rec.update(fn())
        rec["ok"] = True
        log(f"  W11 {rec['variant']} {rec['server']} run {rec['run']}: " + summary_line(rec))
    except (BenchError, OSError, http.client.HTTPException, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        e = f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)
        tail = server.log_tail() if server else ""
        if tail:
            e += f" [{server.name} log: {tail}]"
        rec.update(ok=False, error=e)
        ctx.errors.append(f"W11 {rec['variant']} [tmpfs] {rec['server']} run {rec['run']}: {e}")
        log(f"  FAILED W11 {rec['variant']} [tmpfs] {rec['server']} run {rec['run']}: {e}")
    ctx.results.append(rec)


def run_w11_all(ctx: Context, meta: dict) -> None:
    """W11: its own Garage for the length of the workload; a warm-up; then N rounds of
    (ferry: upload, download | boto3 upload, presigned download), then N runs of the
    concurrent uploads. A Garage that cannot start or a missing boto3 fails the run, also
    with --quick."""
    t0 = time.perf_counter()
    size, n, msize = ctx.size_w11, ctx.count_w11, ctx.size_w11_mem
    up_v, down_v, mem_v = f"upload, {fmt_size(size)}", f"download, {fmt_size(size)}", f"{n} × {fmt_size(msize)} at once"
    try:
        ctx.boto3_python = find_boto3_python()
        if not ctx.boto3_python:
            raise BenchError(f"boto3 (W11's direct client) is importable neither by {sys.executable} nor by"
                             f" {CACHE / 'venv' / 'bin' / 'python'}; scripts/bench/run installs it (a venv there)")
        meta["versions"]["boto3"] = boto3_version(ctx.boto3_python)
        ctx.garage = Garage(ctx)
        ctx.garage.start()
        meta["versions"]["garage"] = ctx.garage.version()
        ctx.src_w11m = ctx.work / "src-w11m.bin"
        write_random(ctx.src_w11m, msize)
        # Garage stores content-addressed 1 MiB blocks once: the first upload of the source
        # writes them, later ones find them. One untimed upload each way first, so every
        # measured upload meets the same store (and the data on tmpfs stays ~1 GiB).
        ferry = FerryS3(ctx, ctx.garage, "ferry (warm-up)")
        data = ctx.storage_dir("tmpfs")
        try:
            ferry.start(data, durable=False)
            st = curl_patch(tus_create(ferry.base, size), ctx.src)
            if st["status"] != 204 or st["sent"] != size:
                raise BenchError(f"warm-up PATCH through ferry answered {st['status']} after {st['sent']} of {size} bytes")
        finally:
            ferry.stop()
            shutil.rmtree(data, ignore_errors=True)
        run_w11_direct_upload(ctx, {})
        log(f"bench: W11 set-up (Garage, warm-up uploads) {time.perf_counter() - t0:.1f} s; direct client {meta['versions']['boto3']}"
            f" ({ctx.boto3_python})")
    except (BenchError, OSError, ValueError, KeyError, subprocess.TimeoutExpired, http.client.HTTPException) as e:
        e = f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)
        ctx.errors.append(f"W11 (set-up: Garage, boto3, warm-up): {e}")
        log(f"  FAILED W11 (set-up: Garage, boto3, warm-up): {e}")
        if ctx.garage:
            ctx.garage.stop()
            ctx.garage = None
        return
    g = ctx.garage
    direct_up = (f"boto3 → Garage directly (multipart: {ctx.w11_part // MiB} MiB parts, {ctx.w11_concurrency} at once)")
    log(f"bench: W11 {up_v} and {down_v}, {ctx.runs} run(s) each of ferry (--storage s3://) and straight to Garage")
    for i in range(ctx.runs):
        # ferry: a fresh server (and key prefix) per run; the upload, then its download
        busy = wait_quiet(ctx)
        ferry = FerryS3(ctx, g, "ferry --storage s3:// (curl)")
        rec = {"workload": "W11", "storage": "tmpfs", "server": "ferry", "run": i + 1, "busy_before": busy}
        data = ctx.storage_dir("tmpfs")
        state: dict = {}

        def upload(ferry=ferry, data=data, state=state):
            ferry.start(data, durable=False)
            return run_w11_ferry_upload(ctx, ferry, state)

        try:
            # `vs`: the ratio column is ferry ÷ the direct row
            w11_attempt(ctx, {**rec, "variant": up_v, "label": "ferry --storage s3:// (one tus PATCH by curl)", "vs": "boto3"},
                        upload, ferry)
            w11_attempt(ctx, {**rec, "variant": down_v, "label": "ferry --storage s3:// (GET /files/<id> by curl)",
                              "vs": "presigned-curl"},
                        lambda: run_w11_ferry_download(ctx, ferry, state), ferry)
        finally:
            ferry.stop()
            shutil.rmtree(data, ignore_errors=True)
        # straight to Garage: boto3's upload, then a presigned GET of that object by curl
        busy = wait_quiet(ctx)
        state = {}
        rec = {"workload": "W11", "storage": "tmpfs", "run": i + 1, "busy_before": busy}
        w11_attempt(ctx, {**rec, "variant": up_v, "server": "boto3", "label": direct_up},
                    lambda: run_w11_direct_upload(ctx, state))
        w11_attempt(ctx, {**rec, "variant": down_v, "server": "presigned-curl",
                          "label": "curl → Garage directly (GET of a URL presigned by boto3)"},
                    lambda: run_w11_direct_download(ctx, state))
    log(f"bench: W11 {mem_v}, {ctx.runs} run(s) of ferry (--storage s3://)")
    for i in range(ctx.runs):
        busy = wait_quiet(ctx)
        ferry = FerryS3(ctx, g, f"ferry --storage s3:// ({n} curl at once, one PATCH each)")
        data = ctx.storage_dir("tmpfs")

        def concurrent(ferry=ferry, data=data):
            ferry.start(data, durable=False)
            return run_w11_memory(ctx, ferry)

        try:
            w11_attempt(ctx, {"workload": "W11", "variant": mem_v, "storage": "tmpfs", "server": "ferry", "label": ferry.label,
                              "run": i + 1, "busy_before": busy}, concurrent, ferry)
        finally:
            ferry.stop()
            shutil.rmtree(data, ignore_errors=True)
    g.stop()
    ctx.garage = None
    meta["w11_s"] = time.perf_counter() - t0


def post_chunk(base: str, file_id: str, chunk_id: str, path: Path) -> str | list:
    out = subprocess.run(["curl", "-sS", "-F", f"chunkId={chunk_id}", "-F", f"fileId={file_id}",
                          "-F", f"file=@{path}", base + "/api/upload"], capture_output=True, text=True)
    try:
        body = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"chunk {chunk_id}: curl exit {out.returncode}: {out.stdout[:200]} {out.stderr[:200]}")
    if body.get("code") != 0:
        raise BenchError(f"chunk {chunk_id}: {body}")
    return body["data"]


def post_range(base: str, upload_id: str, first: int, path: Path, total: int) -> dict:
    last = first + path.stat().st_size - 1
    out = subprocess.run(["curl", "-sS", "-X", "POST", "-T", str(path), base + "/api/upload",
                          "-H", f"X-File-Id: {upload_id}", "-H", f"Content-Range: bytes {first}-{last}/{total}",
                          "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
                          "-w", "\n%{http_code}"], capture_output=True, text=True)
    body, _, code = out.stdout.rpartition("\n")
    if out.returncode or not code.startswith("2"):
        raise BenchError(f"Content-Range {first}-{last}: curl exit {out.returncode}, status {code}: {body[:200]}")
    return json.loads(body)


def run_w7(ctx: Context, server: Server, order: str) -> dict:
    """Chunk handshake, 5 MiB chunks, 4 in parallel, in order or shuffled; or the same shape
    through Content-Range (no digest declared): every chunk but the last with 4 in flight,
    then the last one alone, whose answer carries the URL (its time is the finalize)."""
    size = ctx.src.stat().st_size
    items = list(enumerate(ctx.chunks))
    if order == "shuffled":
        random.shuffle(items)
    base = server.base
    rehashed0 = metric(base, "ferry_rehashed_bytes_total") or 0
    if order in ("in-order", "shuffled"):
        ids = [cid for cid, _ in ctx.chunks]
        body = json.dumps({"fileId": ctx.src_md5, "ext": ".bin", "chunkIds": ids, "size": size,
                           "chunkSize": ctx.w7_chunk})
        host, port, _ = parse_url(base)
        c = http.client.HTTPConnection(host, port, timeout=60)
        c.request("POST", "/api/upload/handshake", body=body, headers={"Content-Type": "application/json"})
        hs = json.loads(c.getresponse().read())
        c.close()
        if hs.get("code") != 0 or len(hs.get("data", [])) != len(ids):
            raise BenchError(f"handshake: {str(hs)[:300]}")
        send = lambda it: post_chunk(base, ctx.src_md5, it[1][0], it[1][1])  # noqa: E731
    else:
        upload_id = f"bench-{random.getrandbits(48):x}"
        send = lambda it: post_range(base, upload_id, it[0] * ctx.w7_chunk, it[1][1], size)  # noqa: E731
    out = {}

    def go():
        with ThreadPoolExecutor(ctx.w7_parallel) as pool:
            list(pool.map(send, items[:-1]))
        t = time.perf_counter()
        final = send(items[-1])
        out["finalize_ms"] = (time.perf_counter() - t) * 1000
        out["final"] = final

    res = timed(server, go)
    final = out["final"]
    url = final if isinstance(final, str) else final.get("url")
    if not url:
        raise BenchError(f"{server.name} W7 {order}: the last chunk's answer has no URL: {str(final)[:300]}")
    res["finalize_ms"] = out["finalize_ms"]
    res["rehashed_bytes"] = (metric(base, "ferry_rehashed_bytes_total") or 0) - rehashed0
    res.update(bytes=size, mibps=size / MiB / res["wall_s"], cpu_s_per_gib=res["cpu_s"] / (size / GiB))
    verify_download(url.replace("localhost", "127.0.0.1"), ctx.src)
    return res


def openssl_speed(alg: str, seconds: int) -> float:
    """Single-core digest speed, MiB/s, 16 KiB blocks (openssl speed -evp ALG)."""
    out = subprocess.run(["openssl", "speed", "-mr", "-seconds", str(seconds), "-bytes", "16384", "-evp", alg],
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith("+F:"):
            # +F:<n>:<name>:<bytes per second for each block size>
            return float(line.split(":")[3]) / MiB
    raise BenchError(f"openssl speed -evp {alg}: no result in {out[-300:]}")


# ----------------------------------------------------------------------------------------
# Orchestration


def cpu_busy(interval: float) -> float:
    """Fraction of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = f[3] + f[4]
        return sum(f) - idle, sum(f)
    b0, t0 = sample()
    time.sleep(interval)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def wait_quiet(ctx: Context) -> float | None:
    """The machine is shared: before a run, wait (up to --quiet-wait seconds) for a moment
    when other processes use less than a quarter of the CPUs. Returns the last busy fraction."""
    if ctx.quick or ctx.args.quiet_wait <= 0:
        return None
    deadline = time.monotonic() + ctx.args.quiet_wait
    while True:
        busy = cpu_busy(0.25)
        if busy < 0.25 or time.monotonic() > deadline:
            return round(busy, 2)


def alternate(ctx: Context, workload: str, variant: str, storage: str, servers: list[Server], fn) -> None:
    """N rounds; in each, every server once, with a fresh start and a fresh data dir. Odd
    rounds go in reverse order (A B C, C B A, A B C …): on this shared virtual machine a
    workload can speed up run after run (guest memory the host took back is faulted in
    again; W4 went from 669 to 2,479 req/s over ten runs of two servers), and a fixed order
    would then always favour the server that runs last. Before them, --warmup rounds whose
    results are logged and dropped: they take most of that speed-up (ferry in W4, eight
    rounds with rustus: 456 req/s in the first, 1,495 in the second, 2,000–2,300 from the
    fourth), so that it spreads less noise over the rounds that count."""
    for i in range(-ctx.warmup, ctx.runs):
        for s in (servers if i % 2 == 0 else servers[::-1]):
            busy = wait_quiet(ctx)
            data = ctx.storage_dir(storage)
            rec = {"workload": workload, "variant": variant, "storage": storage, "server": s.name,
                   "label": s.label, "run": i + 1, "busy_before": busy}
            counted = i >= 0
            which = f"run {i + 1}" if counted else "warm-up"
            try:
                s.start(data, durable=(storage == "disk"))
                rec.update(fn(s))
                if isinstance(s, Ferry) and "rehashed_bytes" not in rec:
                    # bytes ferry read back to finish whole-file digests (fresh server: all of this run)
                    rec["rehashed_bytes"] = metric(s.base, "ferry_rehashed_bytes_total")
                rec["ok"] = True
                log(f"  {workload} {variant} [{storage}] {s.name} {which}: " + summary_line(rec))
            except (BenchError, OSError, http.client.HTTPException, ValueError, KeyError, subprocess.TimeoutExpired) as e:
                e = f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)
                tail = s.log_tail()
                if tail:
                    e += f" [{s.name} log: {tail}]"
                rec.update(ok=False, error=e)
                if counted:
                    ctx.errors.append(f"{workload} {variant} [{storage}] {s.name} {which}: {e}")
                log(f"  FAILED {workload} {variant} [{storage}] {s.name} {which}: {e}")
            finally:
                s.stop()
                shutil.rmtree(data, ignore_errors=True)
            if counted:
                ctx.results.append(rec)


def run_w10_all(ctx: Context, meta: dict, with_w4: bool) -> None:
    """W10: its own PostgreSQL cluster for the length of the workload, the statement counts
    that are not the workload's, then W1 and W4 alternating SQLite and PostgreSQL. A cluster
    that cannot start (e.g. no PostgreSQL binaries) fails the run, also with --quick."""
    t0 = time.perf_counter()
    try:
        ctx.pg = PgCluster(ctx)
        ctx.pg.start()
        meta["versions"]["postgresql"] = ctx.pg.version()
        servers = [FerryDb(ctx, "ferry-sqlite", "ferry, metadata in SQLite (default)"),
                   FerryDb(ctx, "ferry-pg", "ferry, metadata in PostgreSQL (--database postgres://…)", ctx.pg, vs="ferry-sqlite")]
        ctx.pg_fixed = pg_calibrate(ctx, servers[1], with_w4)
        meta["pg_fixed_statements"] = ctx.pg_fixed
        log(f"bench: W10 statements without PATCHes: {ctx.pg_fixed} (set-up {time.perf_counter() - t0:.1f} s)")
    except (BenchError, OSError, ValueError, subprocess.TimeoutExpired, IndexError) as e:
        e = f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)
        ctx.errors.append(f"W10 (PostgreSQL set-up): {e}")
        log(f"  FAILED W10 (PostgreSQL set-up): {e}")
        return
    for base in ("W1", "W4") if with_w4 else ("W1",):
        log(f"bench: W10 {base}, {ctx.runs} run(s) each of {[s.name for s in servers]}, data on tmpfs")
        alternate(ctx, "W10", base, "tmpfs", servers, lambda s, base=base: run_w10(ctx, s, base))
    ctx.pg.stop()
    ctx.pg = None
    meta["w10_s"] = time.perf_counter() - t0


def summary_line(r: dict) -> str:
    keys = ["mibps", "rps", "p99_ms", "latency_ms", "range_rps", "cpu_s_per_gib", "rss_mib", "finalize_ms",
            "pg_cpu_s_per_gib", "pg_statements_per_patch", "pg_statements_per_upload", "garage_cpu_s_per_gib"]
    return ", ".join(f"{k}={r[k]:.1f}" for k in keys if isinstance(r.get(k), (int, float)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small files, one run, installed peers only")
    ap.add_argument("--runs", type=int, default=None, help="runs per server and workload (default 5; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="rounds run first and not counted, per workload (default 1; 0 with --quick)")
    ap.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3 (W8 = the disk runs)")
    ap.add_argument("--storage", choices=["tmpfs", "disk", "both"], default=None,
                    help="tmpfs (W1-W7), disk (W8: W1-W4 durable on the real disk), both (default; tmpfs with --quick)")
    ap.add_argument("--servers", default="", help="comma-separated subset of ferry,nginx,rustus,tus-node")
    ap.add_argument("--ferry-bin", default=os.environ.get("FERRY_BIN", str(REPO / os.environ.get("CARGO_TARGET_DIR", "target") / "release" / "ferry")))
    ap.add_argument("--rustus-bin", default=os.environ.get("RUSTUS_BIN", str(CACHE / "cargo" / "bin" / "rustus")))
    ap.add_argument("--tmpfs", default=os.environ.get("BENCH_TMPFS", "/dev/shm"))
    ap.add_argument("--disk", default=os.environ.get("BENCH_DISK", "/var/tmp"),
                    help="a directory on the real disk; each run makes (and removes) its own ferry-bench.* in it")
    ap.add_argument("--doc", default=None, help="write the markdown report here (default docs/BENCHMARKS.md for a full run of every workload)")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--render", nargs="+", metavar="JSON", help="only render the report from saved results (merged in order)")
    ap.add_argument("--quiet-wait", type=float, default=2.0,
                    help="before each run, wait up to this many seconds for the machine to be mostly idle (0: never)")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.render:
        data = merge_results([json.loads(Path(p).read_text()) for p in args.render])
        doc = Path(args.doc or REPO / "docs" / "BENCHMARKS.md")
        write_doc(doc, render_markdown(data))
        print(render_text(data))
        log(f"bench: wrote {doc}")
        return 0

    args.runs = args.runs or (1 if args.quick else 5)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    args.storage = args.storage or ("tmpfs" if args.quick else "both")
    only = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(ALL_WORKLOADS)
    bad = [w for w in only if w not in ALL_WORKLOADS]
    if bad:
        ap.error(f"unknown workload(s) {bad}; known: {ALL_WORKLOADS}")
    want = {s.strip() for s in args.servers.split(",") if s.strip()}

    if not Path(args.ferry_bin).exists():
        log(f"bench: no ferry binary at {args.ferry_bin} (FERRY_BIN or cargo build)")
        return 2
    ctx = Context(args)
    have = {
        "ferry": True,
        "nginx": shutil.which("nginx") is not None,
        "rustus": Path(args.rustus_bin).exists(),
        "tus-node": shutil.which("node") is not None and (HERE / "node_modules" / "@tus" / "server").is_dir(),
        "tus-js-client": shutil.which("node") is not None and (HERE / "node_modules" / "tus-js-client").is_dir(),
        "wrk": shutil.which("wrk") is not None,
        "node": shutil.which("node") is not None,
    }
    skipped = []
    needed = set().union(*(PEERS_OF[w] for w in only))
    for peer in ["nginx", "rustus", "tus-node"]:
        if (not want or peer in want) and peer in needed and not have[peer]:
            if not args.quick:
                log(f"bench: {peer} is not installed (scripts/bench/run installs it)")
                return 2
            skipped.append(peer)
    use = lambda n: have[n] and (not want or n in want or n == "ferry")  # noqa: E731
    if "W10" in only and not have["node"]:
        if not args.quick:
            log("bench: W10 needs node for W4's client (scripts/bench/run installs it)")
            return 2
        skipped.append("node (W10's W4 half)")
    if "W11" in only and args.storage in ("tmpfs", "both") and not args.quick and not find_boto3_python():
        # --quick goes on and fails W11 with the same reason at the end (exit 1)
        log(f"bench: W11 needs boto3, importable neither by {sys.executable} nor by {CACHE / 'venv' / 'bin' / 'python'}"
            " (scripts/bench/run installs it)")
        return 2

    started = dt.datetime.now(dt.timezone.utc)
    meta = machine_info(ctx, args, started)
    meta["skipped_peers"] = skipped
    log(f"bench: {meta['command']}  (work dir {ctx.work})")
    t_start = time.monotonic()
    try:
        ctx.prepare_sources()
        meta["openssl_mib_s"] = {alg: openssl_speed(alg, 1 if ctx.quick else 3) for alg in ("md5", "sha256")}
        log(f"bench: openssl speed (1 core, 16 KiB blocks): " + ", ".join(f"{k} {v:.0f} MiB/s" for k, v in meta["openssl_mib_s"].items()))
        S = {"ferry": Ferry(ctx), "nginx-sink": NginxSink(ctx), "nginx-static": NginxStatic(ctx),
             "rustus": Rustus(ctx), "tus-node": TusNode(ctx)}
        uploads = [S["nginx-sink"]] if use("nginx") else []
        tus_peers = ([S["rustus"]] if use("rustus") else []) + ([S["tus-node"]] if use("tus-node") else [])
        tmpfs = args.storage in ("tmpfs", "both")
        disk = args.storage in ("disk", "both")
        plan = []
        if tmpfs:
            plan += [
                ("W1", "1 PATCH", uploads + [S["ferry"]] + tus_peers, lambda s: run_w1(ctx, s)),
                ("W2", "tus-js-client", [S["ferry"]] + tus_peers if have["tus-js-client"] else [], lambda s: run_w2(ctx, s)),
                ("W3", "32 concurrent", uploads + [S["ferry"]] + tus_peers, lambda s: run_w3(ctx, s)),
                ("W4", "256 KiB PATCHes", uploads + [S["ferry"]] + tus_peers if have["node"] else [], lambda s: run_w4(ctx, s)),
            ]
            for size in ctx.w5_sizes:
                plan.append(("W5", fmt_size(size), [S["ferry"]] + tus_peers, lambda s, size=size: run_w5(ctx, s, size)))
            if not ctx.quick:
                plan.append(("W5", f"{fmt_size(ctx.w5_sizes[0])}, 1 s pause", [S["ferry"]] + tus_peers,
                             lambda s: run_w5(ctx, s, ctx.w5_sizes[0], pause=1.0)))
            plan.append(("W6", "downloads", ([S["nginx-static"]] if use("nginx") else []) + [S["ferry"]], lambda s: run_w6(ctx, s)))
            for order in ("in-order", "shuffled", "content-range"):
                plan.append(("W7", order, [S["ferry"]], lambda s, order=order: run_w7(ctx, s, order)))
            if "W9" in only:
                ctx.make_cert()
                w9 = [FerryProto(ctx, "ferry-tls-h1", "ferry, HTTPS, HTTP/1.1 (curl --http1.1)", True, ["--http1.1", "--cacert", str(ctx.tls_cert)], "1.1"),
                      FerryProto(ctx, "ferry-tls-h2", "ferry, HTTPS, HTTP/2 by ALPN (curl --http2)", True, ["--http2", "--cacert", str(ctx.tls_cert)], "2", vs="ferry-tls-h1"),
                      FerryProto(ctx, "ferry-h1", "ferry, cleartext, HTTP/1.1 (curl --http1.1)", False, ["--http1.1"], "1.1"),
                      FerryProto(ctx, "ferry-h2c", "ferry, cleartext, h2c (curl --http2-prior-knowledge)", False, ["--http2-prior-knowledge"], "2", vs="ferry-h1")]
                plan.append(("W9", "1 PATCH", w9, lambda s: run_w9(ctx, s)))
        for w, variant, servers, fn in plan:
            if w not in only or not servers:
                continue
            log(f"bench: {w} {variant}, {ctx.runs} run(s) each of {[s.name for s in servers]}, data on tmpfs")
            alternate(ctx, w, variant, "tmpfs", servers, fn)
        if tmpfs and "W10" in only:
            run_w10_all(ctx, meta, with_w4=have["node"])
        if tmpfs and "W11" in only:
            run_w11_all(ctx, meta)
        # On the disk: W8 means all of DISK_WORKLOADS; with --storage disk, W1..W4 pick single ones.
        disk_only = DISK_WORKLOADS if "W8" in only else [w for w in only if w in DISK_WORKLOADS and args.storage == "disk"]
        if disk and disk_only:
            durable = [S["ferry"]] + ([S["rustus"]] if use("rustus") else [])
            for w, fn, servers in [("W1", run_w1, uploads + durable), ("W2", run_w2, durable if have["tus-js-client"] else []),
                                   ("W3", run_w3, uploads + durable), ("W4", run_w4, uploads + durable)]:
                if w not in disk_only or not servers:
                    continue
                log(f"bench: W8 ({w} on the real disk, durable), {ctx.runs} run(s) each of {[s.name for s in servers]}")
                alternate(ctx, "W8", w, "disk", servers, lambda s, f=fn: f(ctx, s))
    finally:
        if ctx.pg:
            ctx.pg.stop()
        if ctx.garage:
            ctx.garage.stop()
        ctx.cleanup()
    meta["duration_s"] = time.monotonic() - t_start
    meta["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    data = {"meta": meta, "results": ctx.results, "errors": ctx.errors}

    CACHE.mkdir(parents=True, exist_ok=True)
    jpath = Path(args.json) if args.json else CACHE / f"results-{started.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    jpath.write_text(json.dumps(data, indent=1))
    print(render_text(data))
    log(f"bench: raw results in {jpath}")
    doc = args.doc
    if doc is None and not args.quick and not args.only and not args.servers:
        doc = str(REPO / "docs" / "BENCHMARKS.md")
    if doc:
        write_doc(Path(doc), render_markdown(data))
        log(f"bench: wrote {doc}")
    log(f"bench: done in {meta['duration_s']:.0f} s")
    if ctx.errors:
        log(f"bench: {len(ctx.errors)} run(s) FAILED:")
        for e in ctx.errors:
            log(f"  {e}")
        return 1
    return 0


def fmt_size(n: int) -> str:
    return f"{n // GiB} GiB" if n >= GiB and n % GiB == 0 else f"{n // MiB} MiB"


def machine_info(ctx: Context, args, started) -> dict:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")), "0")

    def version(cmd):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    def fs(path):
        try:
            out = subprocess.run(["df", "-T", path], capture_output=True, text=True).stdout.splitlines()[-1].split()
            return f"{out[1]} ({out[0]})"
        except (OSError, IndexError):
            return "?"

    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "started": started.isoformat(timespec="seconds"),
        "command": args.command or "scripts/bench/bench.py " + " ".join(sys.argv[1:]),
        "quick": args.quick, "runs": args.runs, "warmup": args.warmup, "storage": args.storage,
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(), "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
        "tmpfs": f"{args.tmpfs}: {fs(args.tmpfs)}", "disk": f"{args.disk}: {fs(args.disk)}",
        "ferry_bin": args.ferry_bin, "ferry_rev": rev, "ferry_sha256": ctx.ferry_sha,
        "ferry_mtime": dt.datetime.fromtimestamp(Path(args.ferry_bin).stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": {
            "rustus": version([args.rustus_bin, "--version"]) if Path(args.rustus_bin).exists() else None,
            "nginx": version(["nginx", "-v"]) if shutil.which("nginx") else None,
            "node": version(["node", "--version"]), "curl": version(["curl", "--version"]),
            "wrk": " ".join((version(["wrk", "--version"]) or "").split()[:2]) or None if shutil.which("wrk") else None,
            "openssl": " ".join((version(["openssl", "version"]) or "").split()[:2]),
        },
    }


# ----------------------------------------------------------------------------------------
# Statistics and reports

# (workload, variant) → how to show it: the headline metric, its unit, whether higher is better
METRICS = {
    "W1": ("mibps", "MiB/s", True), "W2": ("mibps", "MiB/s", True), "W3": ("mibps", "MiB/s", True),
    "W4": ("rps", "req/s", True), "W5": ("latency_ms", "ms", False), "W6": ("mibps", "MiB/s", True),
    "W7": ("mibps", "MiB/s", True), "W9": ("mibps", "MiB/s", True), "W11": ("mibps", "MiB/s", True),
}
TITLES = {
    "W1": "W1: one upload in a single tus PATCH (curl)",
    "W2": "W2: tus-js-client (Node), 8 MiB PATCHes",
    "W3": "W3: 32 concurrent uploads (32 curl, one PATCH each): aggregate throughput",
    "W4": "W4: 256 KiB PATCHes, 16 uploads in parallel (keep-alive), fixed duration",
    "W5": "W5: finalize latency: last PATCH (1 MiB) sent → first byte of GET /files/<id>",
    "W6": "W6: downloads: GET of the whole file (curl) and random 1 MiB Range GETs (wrk)",
    "W7": "W7: chunk-handshake dialect, 5 MiB chunks, 4 in parallel, MD5 verified (ferry)",
    "W8": "W8: durable mode on the real disk (fsync before acknowledgement)",
    "W9": "W9: HTTP/2 against HTTP/1.1 on the same ferry: one upload in a single tus PATCH (curl)",
    "W10": "W10: metadata on PostgreSQL against SQLite (ferry)",
    "W11": "W11: file bytes on S3 (a local one-node Garage): ferry --storage s3:// against a client straight to Garage",
}
# W11's tables, by the first word of the variant ("upload, 1 GiB", "download, 1 GiB", "32 × 64 MiB at once")
W11_TITLES = {
    "upload": "one upload in a single tus PATCH (curl) through ferry against boto3's multipart upload straight to Garage",
    "download": "GET of the whole file (curl) through ferry against a presigned GET straight from Garage (curl)",
    "concurrent": "concurrent uploads through ferry (curl, one PATCH each): ferry's peak RSS",
}


def w11_kind(variant: str) -> str:
    word = variant.split(",")[0].split()[0]
    return word if word in W11_TITLES else "concurrent"


def merge_results(datas: list[dict]) -> dict:
    """Several result files into one report: later files replace earlier ones' workloads."""
    meta = dict(datas[0]["meta"])
    results, errors = [], []
    for d in datas:
        keys = {(r["workload"], r["variant"], r["storage"]) for r in d["results"]}
        results = [r for r in results if (r["workload"], r["variant"], r["storage"]) not in keys] + d["results"]
        errors += d["errors"]
        if d is not datas[0]:
            meta.setdefault("also", []).append({k: d["meta"][k] for k in ("started", "command", "loadavg_start", "loadavg_end", "duration_s") if k in d["meta"]})
    return {"meta": meta, "results": results, "errors": errors}


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def groups(results: list[dict]):
    """(workload, variant, storage) → server → [records], in first-seen order."""
    out: dict = {}
    for r in results:
        out.setdefault((r["workload"], r["variant"], r["storage"]), {}).setdefault(r["server"], []).append(r)
    return out


def fnum(x, digits=None):
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


def table_rows(key, servers: dict) -> tuple[list[str], list[list[str]]]:
    w, variant, storage = key
    metric_w = variant if w in ("W8", "W10") else w
    m, unit, higher = METRICS[metric_w]
    ref_name = next((s for s in servers if s.startswith("nginx")), None)
    ferry = servers.get("ferry")
    fmed = med(r.get(m) for r in ferry if r["ok"]) if ferry else None
    rmed = med(r.get(m) for r in servers[ref_name] if r["ok"]) if ref_name else None
    # W9: each HTTP/2 row is compared with HTTP/1.1 on the same transport (TLS or cleartext)
    vs_of = {name: next((r.get("vs") for r in recs if r.get("vs")), None) for name, recs in servers.items()}
    if any(vs_of.values()):
        ratio_head = {"W10": "PostgreSQL ÷ SQLite", "W11": "ferry ÷ direct"}.get(w, "÷ HTTP/1.1 on the same transport")
    elif ref_name:
        ratio_head = f"÷ {ref_name}"
    else:
        ratio_head = "ferry ÷ this"
    better = "higher is better" if higher else "lower is better"
    head = ["server", f"median {unit} ({better})", "min–max", ratio_head, "server CPU s/GiB", "peak RSS MiB", "runs"]
    both = bool(ref_name) and len([n for n in servers if not n.startswith("nginx")]) > 1
    if both:
        head.insert(4, "ferry ÷ this")
    extra_cols = []
    if metric_w == "W4":
        extra_cols = [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")]
    if metric_w == "W5":
        extra_cols = [("ack_ms", "of which PATCH answered, ms")]
    if metric_w == "W6":
        extra_cols = [("range_rps", "1 MiB ranges/s"), ("range_p99_ms", "range p99 ms")]
    if metric_w == "W7":
        extra_cols = [("finalize_ms", "last chunk → URL, ms"), ("rehashed_bytes", "bytes re-read for the file digest")]
    if metric_w == "W9":
        extra_cols = [("client_cpu_s_per_gib", "curl CPU s/GiB")]
    if w == "W10":
        extra_cols += [("pg_cpu_s_per_gib", "PostgreSQL CPU s/GiB")]
        if variant == "W4":
            extra_cols += [("cpu_us_per_patch", "ferry CPU µs/PATCH"), ("pg_cpu_us_per_patch", "PostgreSQL CPU µs/PATCH"),
                           ("pg_statements_per_patch", "PostgreSQL statements per PATCH")]
        else:
            extra_cols += [("pg_statements_per_upload", "PostgreSQL statements per upload (POST, PATCH, GET)")]
    if w == "W11":
        kind = w11_kind(variant)
        if kind == "upload":
            extra_cols = [("finalize_ms", "finalize ms (ferry's log)")]
        elif kind == "concurrent":
            extra_cols = [("finalize_ms", "finalize ms (median of the uploads)"), ("finalize_ms_max", "finalize ms (largest)")]
        extra_cols += [("garage_cpu_s_per_gib", "Garage CPU s/GiB")]
        if kind != "concurrent":
            extra_cols += [("client_cpu_s_per_gib", "client CPU s/GiB")]
    at = 6 if both else 5
    head[at:at] = [h for _, h in extra_cols]
    rows = []
    for name, recs in servers.items():
        ok = [r for r in recs if r["ok"]]
        vals = [r[m] for r in ok if isinstance(r.get(m), (int, float))]
        v = med(vals)
        if any(vs_of.values()):
            vs = vs_of.get(name)
            base = med(r.get(m) for r in servers.get(vs, []) if r["ok"]) if vs else None
            ratio_s = fnum(v / base, 2) if (vs and v is not None and base) else "–" if vs else "1"
        elif ref_name:
            ratio = (v / rmed) if (v is not None and rmed) else None
            ratio_s = "1" if name == ref_name else fnum(ratio, 2)
        else:
            ratio = (fmed / v) if (v and fmed is not None) else None
            ratio_s = "" if name == "ferry" else fnum(ratio, 2)
        cpu = med(r.get("cpu_s_per_gib") for r in ok)
        rss = max((r["rss_mib"] for r in ok if r.get("rss_mib") is not None), default=None)
        label = recs[0].get("label", name)
        row = [label, fnum(v), f"{fnum(min(vals))}–{fnum(max(vals))}" if vals else "–", ratio_s,
               fnum(cpu, 2), fnum(rss, 0), f"{len(ok)}/{len(recs)}"]
        if both:
            row.insert(4, "" if name == "ferry" or name == ref_name or not v or fmed is None else fnum(fmed / v, 2))
        at = 6 if both else 5
        row[at:at] = [fnum(med(r.get(k) for r in ok), DIGITS.get(k)) for k, _ in extra_cols]
        rows.append(row)
    return head, rows


# decimals of the extra columns (None: by magnitude)
DIGITS = {"rehashed_bytes": 0, "client_cpu_s_per_gib": 2, "pg_cpu_s_per_gib": 2, "pg_statements_per_patch": 2,
          "pg_statements_per_upload": 0, "cpu_us_per_patch": 0, "pg_cpu_us_per_patch": 0, "garage_cpu_s_per_gib": 2,
          "finalize_ms": 0, "finalize_ms_max": 0}


def section_title(key) -> str:
    w, variant, storage = key
    if w == "W8":
        return f"W8 / {TITLES[variant].split(': ', 1)[1]}, real disk, durable"
    if w == "W10":
        return f"W10 / {variant}, {TITLES[variant].split(': ', 1)[1]}: metadata on PostgreSQL against SQLite"
    if w == "W11":
        return f"W11 / {variant}: file bytes on S3 (Garage): {W11_TITLES[w11_kind(variant)]}"
    t = TITLES[w]
    if w in ("W5", "W7"):
        t += f", {variant}"
    return t + ("" if storage == "tmpfs" else f" [{storage}]")


def render_text(data: dict) -> str:
    out = []
    for key, servers in groups(data["results"]).items():
        head, rows = table_rows(key, servers)
        out.append("\n" + section_title(key) + f" [{key[2]}]")
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for row in [head] + rows:
            out.append("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)))
    t = targets(data)
    if t:
        out.append("\nTargets")
        for name, measured, ok in t:
            out.append(f"  [{'met' if ok else 'NOT met' if ok is False else 'info'}] {name}: {measured}")
    if data["errors"]:
        out.append("\nFailures")
        out += [f"  {e}" for e in data["errors"]]
    return "\n".join(out)


def stat_of(data, w, variant, storage, server, key, how=med):
    recs = [r for r in data["results"] if r["workload"] == w and r["variant"] == variant and r["storage"] == storage
            and r["server"] == server and r["ok"]]
    vals = [r[key] for r in recs if isinstance(r.get(key), (int, float))]
    return how(vals) if vals else None


def targets(data: dict) -> list[tuple[str, str, bool | None]]:
    out = []
    S = lambda *a, **k: stat_of(data, *a, **k)  # noqa: E731
    f, n = S("W1", "1 PATCH", "tmpfs", "ferry", "mibps"), S("W1", "1 PATCH", "tmpfs", "nginx-sink", "mibps")
    if f and n:
        out.append(("W1 ferry ≥ 0.8 × nginx sink (throughput, tmpfs)", f"{f:.0f} / {n:.0f} MiB/s = {f / n:.2f}", f / n >= 0.8))
    f, n = S("W1", "1 PATCH", "tmpfs", "ferry", "cpu_s_per_gib"), S("W1", "1 PATCH", "tmpfs", "nginx-sink", "cpu_s_per_gib")
    if f is not None and n:
        out.append(("W1 server CPU s/GiB ≤ 2 × nginx sink's", f"{f:.2f} / {n:.2f} s/GiB = {f / n:.2f}", f / n <= 2))
    r = S("W3", "32 concurrent", "tmpfs", "ferry", "rss_mib", how=max)
    if r is not None:
        out.append(("W3 peak server RSS ≤ 64 MiB", f"{r:.0f} MiB (largest of the runs)", r <= 64))
    for size in ("1 GiB", "8 GiB", "32 MiB"):
        v = S("W5", size, "tmpfs", "ferry", "latency_ms")
        if v is not None:
            mx = S("W5", size, "tmpfs", "ferry", "latency_ms", how=max)
            out.append((f"W5 finalize ≤ 50 ms, {size}", f"median {v:.1f} ms (max {mx:.1f})", v <= 50))
    f, n = S("W6", "downloads", "tmpfs", "ferry", "mibps"), S("W6", "downloads", "tmpfs", "nginx-static", "mibps")
    if f and n:
        out.append(("W6 whole-file GET ≥ 0.9 × nginx", f"{f:.0f} / {n:.0f} MiB/s = {f / n:.2f}", f / n >= 0.9))
    f, n = S("W6", "downloads", "tmpfs", "ferry", "range_rps"), S("W6", "downloads", "tmpfs", "nginx-static", "range_rps")
    if f and n:
        out.append(("W6 random 1 MiB Range GETs/s ≥ 0.9 × nginx", f"{f:.0f} / {n:.0f} req/s = {f / n:.2f}", f / n >= 0.9))
    f, r = S("W4", "256 KiB PATCHes", "tmpfs", "ferry", "rps"), S("W4", "256 KiB PATCHes", "tmpfs", "rustus", "rps")
    if f and r:
        out.append(("W4 ferry ≥ 1.5 × rustus (256 KiB PATCHes, requests/s)", f"{f:.0f} / {r:.0f} req/s = {f / r:.2f}", f / r >= 1.5))
    f = S("W7", "in-order", "tmpfs", "ferry", "mibps")
    md5 = (data["meta"].get("openssl_mib_s") or {}).get("md5")
    if f and md5:
        out.append(("W7 in order ≥ 0.9 × single-core MD5 speed", f"{f:.0f} / {md5:.0f} MiB/s = {f / md5:.2f}", f / md5 >= 0.9))
    for h2, h1, what in (("ferry-tls-h2", "ferry-tls-h1", "HTTP/2 ≥ 0.8 × HTTP/1.1 over TLS"),
                         ("ferry-h2c", "ferry-h1", "h2c ≥ 0.8 × HTTP/1.1 in cleartext")):
        f, n = S("W9", "1 PATCH", "tmpfs", h2, "mibps"), S("W9", "1 PATCH", "tmpfs", h1, "mibps")
        if f and n:
            # three digits: 0.7996 must not read as a missed 0.80
            out.append((f"W9 {what} (one PATCH, same ferry)", f"{f:.0f} / {n:.0f} MiB/s = {f / n:.3f}", f / n >= 0.8))
    for base, m, unit, bar, what in (("W1", "mibps", "MiB/s", 0.95, "one PATCH, throughput"),
                                     ("W4", "rps", "req/s", 0.7, "256 KiB PATCHes, requests/s")):
        f, n = S("W10", base, "tmpfs", "ferry-pg", m), S("W10", base, "tmpfs", "ferry-sqlite", m)
        if f and n:
            cf, cp, cs = (S("W10", base, "tmpfs", "ferry-pg", "cpu_s_per_gib"), S("W10", base, "tmpfs", "ferry-pg", "pg_cpu_s_per_gib"),
                          S("W10", base, "tmpfs", "ferry-sqlite", "cpu_s_per_gib"))
            cpu = f"; server CPU {cf:.2f} (ferry) + {cp:.2f} (PostgreSQL) against {cs:.2f} s/GiB" if None not in (cf, cp, cs) else ""
            # three digits: 0.6996 must not read as a met 0.70
            out.append((f"W10 {base} metadata on PostgreSQL ≥ {bar} × on SQLite ({what})",
                        f"{f:.0f} / {n:.0f} {unit} = {f / n:.3f}{cpu}", f / n >= bar))
    rt = S("W10", "W4", "tmpfs", "ferry-pg", "pg_statements_per_patch")
    if rt is not None:
        lo, hi = (S("W10", "W4", "tmpfs", "ferry-pg", "pg_statements_per_patch", how=h) for h in (min, max))
        out.append(("W10 W4 PostgreSQL round trips per PATCH (statements, from pg_stat_database; no bar)",
                    f"median {rt:.2f} (runs {lo:.2f}–{hi:.2f})", None))
    w11 = list(dict.fromkeys(r["variant"] for r in data["results"] if r["workload"] == "W11"))
    fin = []
    for v in w11:
        kind = w11_kind(v)
        if kind in ("upload", "download"):
            direct, bar, what = ("boto3", 0.8, "boto3's multipart upload") if kind == "upload" else ("presigned-curl", 0.9, "a presigned GET (curl)")
            f, d = S("W11", v, "tmpfs", "ferry", "mibps"), S("W11", v, "tmpfs", direct, "mibps")
            if f and d:
                # three digits: 0.7996 must not read as a met 0.80
                out.append((f"W11 {v} through ferry ≥ {bar} × {what} straight to Garage", f"{f:.0f} / {d:.0f} MiB/s = {f / d:.3f}", f / d >= bar))
        else:
            r = S("W11", v, "tmpfs", "ferry", "rss_mib", how=max)
            if r is not None:
                out.append((f"W11 peak ferry RSS ≤ 128 MiB, {v}", f"{r:.0f} MiB (largest of the runs)", r <= 128))
        fm = S("W11", v, "tmpfs", "ferry", "finalize_ms")
        if fm is not None:
            fin.append((v, kind, fm, S("W11", v, "tmpfs", "ferry", "finalize_ms_max" if kind == "concurrent" else "finalize_ms", how=max)))
    up = [x for x in fin if x[1] == "upload"]
    if up:
        v, _, fm, mx = up[0]
        also = "".join(f"; {w}: median {m:.0f} ms, largest {x:.0f} ms" for w, k, m, x in fin if k == "concurrent")
        out.append((f"W11 finalize ≤ 1000 ms whatever the size ({v.split(', ')[1]} upload; finalize_ms of ferry's log)",
                    f"median {fm:.0f} ms (max {mx:.0f}){also}", fm <= 1000))
    return out


NOTES_MARK = "<!-- Notes below this line are written by hand; scripts/bench/run keeps them when it rewrites the file. -->"


def write_doc(path: Path, text: str) -> None:
    """Writes the report, keeping the hand-written notes after NOTES_MARK of the old file."""
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARK in old:
            notes = old.split(NOTES_MARK, 1)[1]
    path.write_text(text.rstrip("\n") + "\n\n" + NOTES_MARK + (notes or "\n"))


def md_table(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def short_versions(v: dict) -> dict:
    """'nginx version: nginx/1.22.1' → 'nginx 1.22.1', and so on."""
    out = dict(v)
    for k, pat in (("nginx", r"nginx/(\S+)"), ("wrk", r"wrk (?:debian/)?([\d.]+)"), ("openssl", r"OpenSSL (\S+)"),
                   ("curl", r"curl (\S+)"), ("rustus", r"(\d+\.\d+\.\d+)")):
        mm = re.search(pat, v.get(k) or "")
        if mm:
            out[k] = f"{'OpenSSL' if k == 'openssl' else k} {mm.group(1)}"
    return out


def render_markdown(data: dict) -> str:
    m = data["meta"]
    v = short_versions(m.get("versions", {}))
    o = m.get("openssl_mib_s", {})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `scripts/bench/run` (rerunning it rewrites this file); the method, the",
        "clients and each workload's exact definition are in [scripts/bench/README.md](../scripts/bench/README.md).",
        "",
        f"- **Date**: {m['started']} (UTC), {m.get('duration_s', 0) / 60:.0f} minutes",
        f"- **Command**: `{m['command']}`",
    ]
    for a in m.get("also", []):
        lines.append(f"- **Merged with**: `{a['command']}` ({a['started']})")
    lines += [
        f"- **Machine**: {m['nproc']} cores, {m['cpu']}, {m['mem_gib']} GiB RAM, Linux {m['kernel']};"
        f" load average {' '.join(m['loadavg_start'])} at the start, {' '.join(m.get('loadavg_end', ['?']))} at the end"
        " (a shared machine: other work was running, hence the alternation and medians)",
        f"- **Storage**: tmpfs `{m['tmpfs']}`; real disk `{m['disk']}`",
        f"- **ferry**: `{m['ferry_bin']}`"
        + (f" built {m['ferry_mtime']} (sha256 {m['ferry_sha256']}…, copied at the start so rebuilds during the run change nothing)" if m.get("ferry_sha256") else "")
        + f"; the tree was at commit {m['ferry_rev']}",
        f"- **Peers**: {v.get('rustus') or 'rustus not run'}; @tus/server 1.10.2 + @tus/file-store 1.5.1 on Node {v.get('node')};"
        f" {v.get('nginx') or 'nginx not run'}; clients: {v.get('curl')}, tus-js-client 4.3.1, {v.get('wrk') or 'no wrk'}",
        f"- **Runs**: {m['runs']} per server and workload, alternating (A B C, then C B A, …), each on a freshly started server"
        " with an empty data directory; median, min–max over the runs; ratios are of medians from the same run",
        f"- **Single-core digest speed** (`openssl speed -evp md5|sha256`, 16 KiB blocks, {v.get('openssl')}):"
        f" MD5 {fnum(o.get('md5'))} MiB/s, SHA-256 {fnum(o.get('sha256'))} MiB/s",
    ]
    if v.get("postgresql"):
        lines.append(f"- **PostgreSQL** (W10): {v['postgresql']}, a throwaway cluster of `scripts/pg.sh` with its data on"
                     " tmpfs (fsync and synchronous_commit at their defaults, on)")
    if v.get("garage"):
        lines.append(f"- **Object store** (W11): {v['garage']}, one node of `scripts/s3.sh` (replication 1, LMDB metadata,"
                     f" its data on tmpfs); direct client {v.get('boto3') or 'boto3'}; {v.get('curl')}")
    if m.get("skipped_peers"):
        lines.append(f"- **Not installed, skipped**: {', '.join(m['skipped_peers'])}")
    lines += ["", "Server CPU is utime+stime of all the server's processes and threads over the measured part,",
              "per GiB moved; peak RSS is VmHWM (the largest of the runs). 1 MiB = 2^20 bytes. Ratios are of medians;",
              "'ferry ÷ this' above 1 means ferry is faster for throughputs and slower for latencies.", ""]
    t = targets(data)
    if t:
        lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {name} | {meas} | {'met' if ok else '**not met**' if ok is False else 'reported'} |" for name, meas, ok in t]
        lines.append("")
    lines += ["## Results", ""]
    noted = set()
    for key, servers in groups(data["results"]).items():
        head, rows = table_rows(key, servers)
        lines += [f"### {section_title(key)}", "", md_table(head, rows), ""]
        rh = med(r.get("rehashed_bytes") for r in servers.get("ferry", []) if r["ok"])
        if rh and key[0] != "W7":
            lines += [f"ferry read back {rh / MiB:,.0f} MiB per run (median) to finish whole-file digests"
                      " (`ferry_rehashed_bytes_total`).", ""]
        note = NOTES.get(key[0])
        if note and key[0] not in noted:
            lines += [note, ""]
            noted.add(key[0])
    if data["errors"]:
        lines += ["## Failed runs", ""] + [f"- {e}" for e in data["errors"]] + [""]
    return "\n".join(lines)


NOTES = {
    "W1": "Ratio column: ÷ the nginx sink (nginx reading and discarding the body, the loopback limit for one connection).",
    "W2": "No nginx row: tus-js-client needs real `Upload-Offset` answers. Ratio column: ferry's median ÷ that server's.",
    "W4": "Requests/s over all 16 connections; latency per PATCH as the client saw it.",
    "W5": "Latency from sending the last PATCH (1 MiB) to the first body byte of `GET` of the upload's URL,"
          " on a new connection; the earlier bytes were sent right before in 8 MiB PATCHes on one keep-alive connection."
          " '1 s pause': the last PATCH is sent 1 s after the one before, once background work (ferry's hash"
          " catch-up) is over. Ratio column: ferry ÷ that server (above 1: ferry is slower).",
    "W6": "Ratio column: ÷ nginx serving the same bytes as a static file with sendfile. RSS and CPU s/GiB: of the whole-file GET.",
    "W7": "in-order/shuffled: chunk handshake (chunk MD5 ids, whole-file MD5 as fileId); content-range: the same 5 MiB"
          " pieces ×4 through `Content-Range` with nothing declared, so the difference is the cost of verification."
          " 'last chunk → URL' is the finalize: every other chunk first, then the last one alone.",
    "W8": "ferry always fdatasyncs before acknowledging; rustus runs with `--force-fsync true`. @tus/server has no"
          " fsync option and is not in the durable comparison. The nginx sink stores nothing (same as on tmpfs).",
    "W9": "One ferry binary, four ways in: started with `--tls-cert`/`--tls-key` (a self-signed P-256 certificate,"
          " curl `--cacert`) for the two HTTPS rows, without for the two cleartext ones; each run on a fresh server,"
          " the four alternating. curl's `%{http_version}` is checked to be the protocol of the row. Ratio column:"
          " HTTP/2 ÷ HTTP/1.1 over the same transport. curl CPU: the client's own utime+stime per GiB"
          " (a client-bound row shows it near the wall time).",
    "W10": "One ferry binary, metadata two ways: the default SQLite (`<data-dir>/ferry.db`) and `--database postgres://…`"
           " on a fresh database of a throwaway cluster (`scripts/pg.sh`, data on tmpfs, pool of 16); the two alternate"
           " run by run, each on a fresh server. Server CPU is ferry's; PostgreSQL CPU is the whole cluster's"
           " (postmaster, backends, WAL writer …) over the same part. Statements: `xact_commit + xact_rollback` of"
           " ferry's database in `pg_stat_database` from before ferry's start to after its stop, less those of a"
           " start and stop without PATCHes (W4: with its 16 creations); every statement ferry sends outside an"
           " explicit transaction is one transaction, and so one round trip (the first use of a statement on a pooled"
           " connection adds its prepare). Lease renewal adds about one statement per second per node.",
    "W11": "One throwaway Garage (one node, `scripts/s3.sh`, data on tmpfs) for the whole workload. ferry runs with"
           " `--storage s3://<bucket>/<fresh prefix>/ --s3-endpoint …`, a fresh server per run; the direct rows talk to"
           " the same Garage: boto3's managed multipart upload (16 MiB parts, 8 at once, path-style, payload unsigned"
           " and no checksums, as ferry sends) and curl of a URL presigned by boto3. Ratio column: ferry ÷ the direct row."
           " Server CPU and peak RSS are ferry's (VmHWM reset before the download); Garage CPU is the Garage process's over"
           " the same part; client CPU is curl's or boto3's own (its process, all threads). Garage keeps content-addressed"
           " 1 MiB blocks once, and one untimed upload each way precedes the runs, so every measured upload meets blocks"
           " already stored. finalize ms: `finalize_ms` of ferry's `upload complete` log line.",
}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--s3-client":
        sys.exit(s3_client_main(sys.argv[2]))
    sys.exit(main())
