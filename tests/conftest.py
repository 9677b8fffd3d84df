"""Fixtures for real services: each test that needs Redis or InfluxDB gets its own private server.

The servers are started on free loopback ports in temporary directories and stopped by PID
afterwards; fault tests use the same objects to kill, pause and restart them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest

from tests.services import InfluxServer, RedisServer

if TYPE_CHECKING:
    from tests.cluster import LocalCluster


# Nothing a test forgets to point somewhere may reach a server that is not the suite's own: the
# defaults (localhost:6379, localhost:8086) can be the machine's services. Port 1 answers nothing.
os.environ["TELEMETRY_REDIS_URL"] = "redis://127.0.0.1:1/0"
os.environ["TELEMETRY_INFLUX_URL"] = "http://127.0.0.1:1"


def _require(binary: str, package: str) -> None:
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} is not installed: run `make services` (apt-get install {package})")


_Server = TypeVar("_Server", RedisServer, InfluxServer)


def _running(server: _Server, binary: str, package: str) -> Iterator[_Server]:
    """Start ``server`` for one fixture and kill it by PID afterwards, however the test ended."""
    _require(binary, package)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server with append-only persistence, stopped after the test."""
    yield from _running(RedisServer(tmp_path / "redis"), "redis-server", "redis-server")


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[object]:
    """Start as many private redis-servers as a test needs; all are stopped afterwards."""
    _require("redis-server", "redis-server")
    started: list[RedisServer] = []

    def make(**kwargs: object) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(started)}", **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A private three-master Redis Cluster (``tests.cluster.LocalCluster``), every node stopped by PID.

    Tests that need replicas (failover) build their own ``LocalCluster(..., replicas=1)``.
    """
    from tests.cluster import LocalCluster

    _require("redis-server", "redis-server")
    _require("redis-cli", "redis-tools")
    cluster = LocalCluster(tmp_path / "cluster", masters=3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def influx_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxServer]:
    """One private influxd for the whole run (tests use their own databases)."""
    yield from _running(InfluxServer(tmp_path_factory.mktemp("influxd")), "influxd", "influxdb")


_db_counter = iter(range(1_000_000))


@pytest.fixture
def influx(influx_session: InfluxServer) -> Iterator[tuple[InfluxServer, str]]:
    """The shared influxd and a fresh database name, created for this test and dropped after."""
    name = f"t{next(_db_counter)}"
    influx_session.create_database(name)
    try:
        yield influx_session, name
    finally:
        if influx_session.is_running():
            influx_session.execute(f'DROP DATABASE "{name}"')


@pytest.fixture
def influx_server(tmp_path: Path) -> Iterator[InfluxServer]:
    """A private influxd for fault tests that stop, kill or restart it."""
    yield from _running(InfluxServer(tmp_path / "influxd"), "influxd", "influxdb")


@pytest.fixture
def auth_influx(tmp_path: Path) -> Iterator[InfluxServer]:
    """A private influxd with authentication on: user ``admin``/``right``, database ``whisperengine``."""
    running = _running(InfluxServer(tmp_path / "influx-auth", auth=True), "influxd", "influxdb")
    server = next(running)
    try:
        # with no user yet, influxd accepts exactly this statement unauthenticated
        server.execute("CREATE USER admin WITH PASSWORD 'right' WITH ALL PRIVILEGES")
        server.execute('CREATE DATABASE "whisperengine"', auth=("admin", "right"))
        yield server
    finally:
        running.close()


@pytest.fixture
def influx_v2(influx: tuple[InfluxServer, str]) -> Iterator[tuple[object, InfluxServer, str]]:
    """A v2 write API gateway (``tests.influx_gateway``) in front of the shared influxd, and a db.

    Yields ``(gateway, influx_server, db)``; write to bucket ``db`` through ``gateway.url``.
    """
    from tests.influx_gateway import InfluxV2Gateway

    server, db = influx
    gateway = InfluxV2Gateway(server.url).start()
    try:
        yield gateway, server, db
    finally:
        gateway.stop()
