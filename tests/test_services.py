"""The test servers themselves: they start on private ports, answer, and die when killed."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.services import InfluxServer, RedisServer


def test_redis_server_is_private_and_survives_restart_with_aof(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379
    client = redis_server.client()
    client.set("k", "v")
    redis_server.kill()
    assert not redis_server.ping()
    redis_server.start()
    assert redis_server.client().get("k") == b"v"


def test_influx_server_writes_and_queries(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    server.write_lines("m,t=a f=1i 1000000000", db=db)
    rows = server.query("SELECT f, t FROM m", db=db)
    assert rows == [{"time": 1000000000, "f": 1, "t": "a", "_measurement": "m"}]


def test_a_first_start_whose_ports_were_taken_meanwhile_picks_new_ones(tmp_path: Path) -> None:
    """A free port can be taken between picking it and the server binding it (the cluster test
    once failed so): the first start then picks new ports. A restart keeps its port."""
    holders = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
    try:
        for holder in holders:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
        main_port, cluster_port = (holder.getsockname()[1] for holder in holders)
        server = RedisServer(tmp_path, appendonly=False, extra_args=(
            "--cluster-enabled", "yes", "--cluster-config-file", str(tmp_path / "nodes.conf"),
            "--cluster-port", str(cluster_port)))
        server.port = main_port  # as if another process took the port picked for it
        server.start()
        try:
            assert server.ping() and server.port != main_port
            assert str(cluster_port) not in server.extra_args
            assert "Address already in use" in (tmp_path / "redis.log").read_text()  # the fault happened
            port = server.port
            server.restart()
            assert server.port == port and server.ping()
        finally:
            server.kill()
    finally:
        for holder in holders:
            holder.close()
