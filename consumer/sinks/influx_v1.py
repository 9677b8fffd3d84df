"""InfluxDB 1.x ``/write`` sink (also served by InfluxDB 3.x and 2.x's compatibility API).

Each write is one ``POST /write?db=&rp=&precision=ns`` carrying our own line protocol
(:func:`consumer.sinks.line_protocol.encode_points`), with basic auth when a user is set. urllib3 is
used with retries disabled: the worker owns retries, so that it can renew its shard lease and
stop while it waits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlencode

import urllib3

from consumer.core.model import Point
from consumer.sinks.base import (
    MAX_BATCH_POINTS,
    SinkError,
    SinkUnavailable,
    WriteResult,
    error_for_status,
    error_message,
    write_bisecting,
)
from consumer.sinks.line_protocol import encode_points

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S: Final = 10.0
PING_TIMEOUT_S: Final = 2.0


class InfluxV1Sink:
    """Write points to InfluxDB with the 1.x HTTP API.

    Usage::

        sink = InfluxV1Sink("http://localhost:8086", db="whisperengine", user="w", password="s")
        result = sink.write(points)
        sink.close()
    """

    def __init__(self, url: str, *, db: str, rp: str | None = None, user: str | None = None,
                 password: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_batch_points: int = MAX_BATCH_POINTS) -> None:
        if not db:
            raise ValueError("InfluxDB v1 sink needs a database name (TELEMETRY_INFLUX_DB)")
        self.url = url.rstrip("/")
        self.db = db
        self.rp = rp or None
        self.timeout_s = timeout_s
        self.max_batch_points = max_batch_points
        params = {"db": db, "precision": "ns"}
        if self.rp:
            params["rp"] = self.rp
        self._write_url = f"{self.url}/write?{urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if user:
            self._headers.update(urllib3.make_headers(basic_auth=f"{user}:{password or ''}"))
        self._pool: urllib3.PoolManager | None = urllib3.PoolManager(retries=False)

    def __repr__(self) -> str:
        return f"InfluxV1Sink({self.url!r}, db={self.db!r}, rp={self.rp!r})"

    def _request(self, method: str, url: str, body: bytes | None = None,
                 timeout_s: float | None = None) -> urllib3.BaseHTTPResponse:
        if self._pool is None:
            raise SinkError("InfluxDB v1 sink is closed")
        # Always explicit: timeout=None would mean "wait forever", not "the pool's default".
        timeout = urllib3.Timeout(total=self.timeout_s if timeout_s is None else timeout_s)
        try:
            return self._pool.request(method, url, body=body, headers=self._headers,
                                      timeout=timeout, redirect=False)
        except urllib3.exceptions.HTTPError as exc:  # connection refused, reset, timeout
            raise SinkUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc

    def _post(self, points: Sequence[Point]) -> None:
        response = self._request("POST", self._write_url, encode_points(points))
        if response.status in (200, 204):
            return
        message = error_message(response.data, response.reason or f"HTTP {response.status}")
        raise error_for_status(response.status, message, retry_after=response.headers.get("Retry-After"),
                               target=f"{self.url} db={self.db}")

    def write(self, points: Sequence[Point]) -> WriteResult:
        """Write ``points``; bad points are isolated by bisection and returned in ``rejected``."""
        return write_bisecting(self._post, points, max_batch_points=self.max_batch_points)

    def ping(self) -> bool:
        """``GET /ping`` answers 204 when the server is up."""
        try:
            response = self._request("GET", f"{self.url}/ping", timeout_s=min(self.timeout_s, PING_TIMEOUT_S))
        except SinkError:
            return False
        return response.status in (200, 204)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
            self._pool = None
