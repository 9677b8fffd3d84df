"""The test servers themselves: they start on private ports, answer, and die when killed."""

from __future__ import annotations

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
