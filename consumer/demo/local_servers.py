"""Private ``redis-server`` and ``influxd`` on loopback: the pieces the demo and the tests share.

Both start servers on a free loopback port in a directory of their own and wait until they
answer; this module holds what that needs (a free port, the probes, the command line and the
configuration file) so the demo's launcher and the test servers cannot drift apart. It starts
nothing itself and never touches a server by name: callers own the processes they start.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Final

import redis

STARTUP_TIMEOUT_S: Final = 30.0

INFLUX_CONFIG: Final = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false

[continuous_queries]
  log-enabled = false
  run-interval = "1s"

[logging]
  level = "warn"
"""
"""influxd 1.x settings for a private server: loopback only, quiet, no usage reporting."""


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether a Redis at ``url`` answers PING."""
    try:
        with contextlib.closing(
            redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        ) as client:
            return bool(client.ping())
    except (redis.RedisError, ValueError):
        return False


def influx_answers(url: str, timeout_s: float = 1.0) -> bool:
    """Whether an InfluxDB at ``url`` answers ``/ping``."""
    if not url.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/ping", timeout=timeout_s) as response:
            return int(response.status) in (200, 204)
    except (OSError, urllib.error.URLError, ValueError):
        return False


def wait_until(predicate: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None,
               timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll ``predicate`` until true; fail early when ``proc`` exits, so a bad start is not a long wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start (code {proc.returncode})")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout_s:.0f}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Stop a child we started: SIGTERM (after SIGCONT, in case it is paused), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def redis_server_argv(binary: str, port: int, directory: Path, *, appendonly: bool,
                      extra_args: tuple[str, ...] = ()) -> list[str]:
    """The command line of a private redis-server: loopback, no RDB snapshots, log in ``directory``."""
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--save", "", "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", "always", "--daemonize", "no", "--logfile", "redis.log",
        "--protected-mode", "no", *extra_args,
    ]


def write_influx_config(directory: Path, port: int, rpc_port: int, *, auth: bool = False) -> Path:
    """Write ``influxdb.conf`` for a private influxd keeping its data in ``directory``; return its path."""
    path = directory / "influxdb.conf"
    path.write_text(INFLUX_CONFIG.format(dir=directory, port=port, rpc_port=rpc_port,
                                         auth="true" if auth else "false"))
    return path
