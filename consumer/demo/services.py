"""The demo's services: use what is configured and reachable, else start a private one.

Redis: ``TELEMETRY_REDIS_URL`` when the user set it and it answers ``PING``; else a private
``redis-server`` on a free loopback port in a temporary directory; else (no binary installed) an
in-process fakeredis server (``TcpFakeServer``, with Lua for the worker's scripts).

InfluxDB: the configured URL when the user set it and it answers ``/ping``; else a private
``influxd`` (1.x, used through its v1 API) when installed; else line protocol appended to a file
(the file sink). A default URL is never probed: ``localhost:6379`` may be somebody else's Redis.

Everything started here is stopped by :meth:`Services.close` — child processes by their PID —
and its temporary directory removed. Nothing here touches a server it did not start.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

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

__all__ = ["DEMO_DATABASE", "Service", "Services", "free_port", "influx_answers", "redis_answers"]

DEMO_DATABASE: Final = "whisperengine"


def _error_reply_handler() -> type:
    """fakeredis's TCP handler, but an error reply (NOSCRIPT, BUSYGROUP) keeps the connection open.

    The stock handler closes the connection after any error reply; redis-py then sees "Connection
    closed by server" where Redis would have answered ``-NOSCRIPT`` and let the client load the
    script. Returning the error as the reply gives the client what a real Redis sends.
    """
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class ErrorReplyHandler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            read_response = self.current_client.read_response

            def read_or_error() -> Any:
                try:
                    return read_response()
                except redis.ResponseError as exc:
                    return exc

            self.current_client.read_response = read_or_error  # type: ignore[method-assign,assignment]

    return ErrorReplyHandler


@dataclass
class Service:
    """One service the demo uses: where it is and, when the demo started it, how to stop it."""

    name: str
    kind: str
    """``external``, ``redis-server``, ``fakeredis``, ``influxd`` or ``file``."""
    url: str
    pid: int | None = None
    directory: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    server: Any = field(default=None, repr=False)

    def describe(self) -> dict[str, Any]:
        """For the summary: what it is, where, and which PID the demo owns."""
        return {"kind": self.kind, "url": self.url, "pid": self.pid, "directory": self.directory}

    def stop(self) -> None:
        """Stop what the demo started (by PID), never an external service."""
        if self.proc is not None:
            stop_process(self.proc)
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Services:
    """The Redis and InfluxDB the demo runs against, found or started.

    Usage::

        with Services(tmp_root=None) as services:
            redis_url = services.redis(config.redis_url).url
            influx = services.influx(config.influx_url, config.influx_api)
    """

    def __init__(self, tmp_root: str | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="telemetry-demo-", dir=tmp_root))
        self.started: list[Service] = []

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop everything started, in reverse order, and remove the temporary directory."""
        while self.started:
            self.started.pop().stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def redis(self, url: str, *, use_configured: bool = True) -> Service:
        """The configured Redis when it answers, else a private one.

        ``use_configured=False`` skips the probe: a default URL (``localhost:6379``) may be
        somebody else's Redis, and a demo must not write into it unless asked to.
        """
        if use_configured and redis_answers(url):
            return Service("redis", "external", url)
        binary = shutil.which("redis-server")
        port = free_port()
        if binary:
            directory = self.tmp / "redis"
            directory.mkdir()
            proc = subprocess.Popen(
                redis_server_argv(binary, port, directory, appendonly=False),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            service = Service(
                "redis", "redis-server", f"redis://127.0.0.1:{port}/0", proc.pid, str(directory), proc=proc
            )
            self.started.append(service)
            wait_until(lambda: redis_answers(service.url, 0.5), "redis-server", proc)
            return service
        from fakeredis import TcpFakeServer

        server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
        server.RequestHandlerClass = _error_reply_handler()
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="demo-fakeredis", daemon=True).start()
        service = Service("redis", "fakeredis", f"redis://127.0.0.1:{port}/0", server=server)
        self.started.append(service)
        wait_until(lambda: redis_answers(service.url, 0.5), "fakeredis", None)
        return service

    def influx(self, url: str, api: str, *, use_configured: bool = True) -> Service:
        """The configured InfluxDB when it answers, else a private influxd, else a file."""
        if use_configured and influx_answers(url):
            return Service("influx", "external", url)
        binary = shutil.which("influxd")
        if binary:
            directory = self.tmp / "influxd"
            directory.mkdir()
            port = free_port()
            config = write_influx_config(directory, port, free_port())
            log = open(directory / "influxd.log", "ab")  # noqa: SIM115 - handed to the child
            proc = subprocess.Popen([binary, "-config", str(config)], stdout=log, stderr=log)
            log.close()
            service = Service(
                "influx", "influxd", f"http://127.0.0.1:{port}", proc.pid, str(directory), proc=proc
            )
            self.started.append(service)
            wait_until(lambda: influx_answers(service.url, 0.5), "influxd", proc)
            body = urllib.parse.urlencode({"q": f'CREATE DATABASE "{DEMO_DATABASE}"'}).encode()
            urllib.request.urlopen(f"{service.url}/query", data=body, timeout=10).close()
            return service
        path = self.tmp / "points.lp"
        path.touch()
        return Service("influx", "file", f"file://{path}", directory=str(self.tmp))
