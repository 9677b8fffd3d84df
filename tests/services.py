"""Real servers for the tests: a private ``redis-server`` and a private ``influxd``.

Each starts on a free loopback port in its own temporary directory, is stopped by its PID, and
can be killed, paused and restarted for fault tests. The machine's own Redis on 6379 is never
touched. Used by the fixtures in ``conftest.py``; also importable by benchmarks and the demo tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Self

import redis

from consumer.demo.local_servers import (
    free_port,
    influx_answers,
    redis_answers,
    redis_server_argv,
    stop_process,
    wait_until,
    write_influx_config,
)

__all__ = ["InfluxServer", "RedisServer", "free_port"]


def _wait_started(server: _Process, ready: Any, what: str, log: Path, timeout_s: float) -> None:
    """Wait until ``ready()``; a server that exits or never answers fails with its log's path."""
    try:
        wait_until(ready, what, server.proc, timeout_s=timeout_s)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}; see {log}") from exc


class _Process:
    """A child server process in its own directory and port, with kill/pause/resume by PID."""

    proc: subprocess.Popen[bytes] | None = None

    def __init__(self, directory: Path, port: int | None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()

    def start(self) -> Self:
        raise NotImplementedError

    def restart(self) -> Self:
        """Kill and start again on the same port and directory (Redis reloads its append-only file)."""
        self.kill()
        return self.start()

    def stop(self) -> None:
        self.terminate()

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not running"
        return self.proc.pid

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash: no shutdown work happens."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)

    def terminate(self) -> None:
        """SIGTERM and wait (a clean shutdown)."""
        if self.proc is not None:
            stop_process(self.proc)

    def pause(self) -> None:
        """SIGSTOP: the process exists, holds its sockets, and answers nothing."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


class RedisServer(_Process):
    """A private redis-server on a free loopback port.

    Usage::

        server = RedisServer(tmp_path, appendonly=True).start()
        client = server.client()
        server.kill(); server.start()   # restarted from its append-only file
        server.stop()
    """

    def __init__(self, directory: Path, *, appendonly: bool = True, port: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(directory, port)
        self._port_chosen = port is None  # picked here: free to pick again if taken before the start
        self._started = False
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)

    def ping(self) -> bool:
        return redis_answers(self.url, 0.5)

    def start(self) -> Self:
        """Start (or restart, on the same ports). A first start whose free port was taken in the
        meantime (another process's connection got it: ports picked by binding port 0 come from
        the range outgoing connections use) picks new ports and tries again, up to three times."""
        log = self.directory / "redis.log"
        for attempt in range(BIND_ATTEMPTS):
            args = redis_server_argv(self.binary, self.port, self.directory, appendonly=self.appendonly,
                                     extra_args=self.extra_args)
            self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                _wait_started(self, self.ping, "redis-server", log, timeout_s=30)
            except RuntimeError:
                taken = log.exists() and "Address already in use" in log.read_text(errors="replace")
                if self._started or not self._port_chosen or not taken or attempt == BIND_ATTEMPTS - 1:
                    raise
                self.port = free_port()
                self.extra_args = _new_cluster_port(self.extra_args)
                continue
            break
        self._started = True
        return self


BIND_ATTEMPTS = 3


def _new_cluster_port(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with the value after ``--cluster-port`` (if any) replaced by a free port."""
    out = list(args)
    for index, arg in enumerate(out[:-1]):
        if arg == "--cluster-port":
            out[index + 1] = str(free_port())
    return tuple(out)


class InfluxServer(_Process):
    """A private InfluxDB 1.x (``influxd``) on a free loopback port, v1 ``/write`` and InfluxQL.

    Usage::

        influx = InfluxServer(tmp_path).start()
        influx.create_database("whisperengine")
        rows = influx.query("SELECT * FROM attachment_monitoring", db="whisperengine")
    """

    def __init__(self, directory: Path, *, port: int | None = None, auth: bool = False) -> None:
        super().__init__(directory, port)
        self.rpc_port = free_port()
        self.auth = auth
        self.binary = shutil.which("influxd") or "/usr/bin/influxd"
        self.config_path = self.directory / "influxdb.conf"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ping(self) -> bool:
        return influx_answers(self.url, 0.5)

    def start(self) -> Self:
        write_influx_config(self.directory, self.port, self.rpc_port, auth=self.auth)
        log = open(self.directory / "influxd.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([self.binary, "-config", str(self.config_path)],
                                     stdout=log, stderr=log)
        log.close()
        _wait_started(self, self.ping, "influxd", self.directory / "influxd.log", timeout_s=60)
        return self

    def _request(self, path: str, params: dict[str, str], data: bytes | None = None,
                 auth: tuple[str, str] | None = None) -> dict[str, Any]:
        if auth:
            params = {**params, "u": auth[0], "p": auth[1]}
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else {}

    def execute(self, statement: str, *, db: str | None = None,
                auth: tuple[str, str] | None = None) -> dict[str, Any]:
        """Run a management statement (POST /query): CREATE DATABASE, DROP ..., CREATE USER."""
        params = {"q": statement}
        if db:
            params["db"] = db
        return self._request("/query", params, data=b"", auth=auth)

    def create_database(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')

    def query(self, statement: str, *, db: str, auth: tuple[str, str] | None = None,
              epoch: str = "ns") -> list[dict[str, Any]]:
        """Run an InfluxQL query; return rows as dicts (with ``name`` and ``tags`` merged in)."""
        result = self._request("/query", {"q": statement, "db": db, "epoch": epoch}, auth=auth)
        rows: list[dict[str, Any]] = []
        for statement_result in result.get("results", []):
            if "error" in statement_result:
                raise RuntimeError(statement_result["error"])
            for series in statement_result.get("series", []):
                for values in series.get("values", []):
                    row = dict(zip(series["columns"], values, strict=True))
                    row["_measurement"] = series.get("name")
                    row.update(series.get("tags") or {})
                    rows.append(row)
        return rows

    def write_lines(self, lines: str, *, db: str, precision: str = "ns") -> None:
        """POST line protocol to /write (test set-up only)."""
        params = urllib.parse.urlencode({"db": db, "precision": precision})
        request = urllib.request.Request(f"{self.url}/write?{params}", data=lines.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass
