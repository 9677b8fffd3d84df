"""InfluxDB v2 API sink (InfluxDB 2.x, 1.8+ compatibility API, 3.x) through influxdb-client.

The client's SYNCHRONOUS write API is used, never its batching one: the worker must know that a
batch reached InfluxDB before it acknowledges the stream entries. Client-side retries are off
(``retries=False``) because the worker owns retries. The body is our own line protocol
(:func:`consumer.sinks.line_protocol.encode_points`), so escaping is the same for v1 and v2.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS, WriteApi
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

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

DEFAULT_TIMEOUT_MS: Final = 10_000


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    try:
        value = headers.get(name)
    except AttributeError:
        return None
    return None if value is None else str(value)


class InfluxV2Sink:
    """Write points to a bucket with the InfluxDB v2 write API.

    Usage::

        sink = InfluxV2Sink("http://localhost:8086", token="t0k", org="whisperengine",
                            bucket="whisperengine")
        result = sink.write(points)
        sink.close()

    For InfluxDB 1.8's compatibility API pass ``token="user:password"`` and ``bucket="db/rp"``.
    """

    def __init__(self, url: str, *, token: str | None, org: str, bucket: str,
                 timeout_ms: int = DEFAULT_TIMEOUT_MS, max_batch_points: int = MAX_BATCH_POINTS) -> None:
        if not bucket:
            raise ValueError("InfluxDB v2 sink needs a bucket (TELEMETRY_INFLUX_BUCKET)")
        self.url = url.rstrip("/")
        self.org = org
        self.bucket = bucket
        self.timeout_ms = timeout_ms
        self.max_batch_points = max_batch_points
        self._client: InfluxDBClient | None = InfluxDBClient(
            url=self.url, token=token or "", org=org, timeout=timeout_ms, retries=False)
        self._write_api: WriteApi | None = self._client.write_api(write_options=SYNCHRONOUS)

    def __repr__(self) -> str:
        return f"InfluxV2Sink({self.url!r}, org={self.org!r}, bucket={self.bucket!r})"

    def _post(self, points: Sequence[Point]) -> None:
        if self._write_api is None:
            raise SinkError("InfluxDB v2 sink is closed")
        target = f"{self.url} org={self.org} bucket={self.bucket}"
        try:
            self._write_api.write(bucket=self.bucket, org=self.org, record=encode_points(points),
                                  write_precision=WritePrecision.NS)  # type: ignore[arg-type]
        except ApiException as exc:
            status = int(exc.status or 0)
            if status == 0:  # the client's own wrapper for transport failures (TLS and the like)
                raise SinkUnavailable(f"InfluxDB at {self.url} unreachable: {exc.reason}") from exc
            message = error_message(exc.body, str(exc.reason or f"HTTP {status}"))
            raise error_for_status(status, message, retry_after=_header(exc.headers, "Retry-After"),
                                   target=target) from exc
        except urllib3.exceptions.HTTPError as exc:  # connection refused, reset, timeout
            raise SinkUnavailable(f"InfluxDB at {self.url} unreachable: {exc}") from exc

    def write(self, points: Sequence[Point]) -> WriteResult:
        """Write ``points``; bad points are isolated by bisection and returned in ``rejected``."""
        return write_bisecting(self._post, points, max_batch_points=self.max_batch_points)

    def ping(self) -> bool:
        """``GET /ping``; False when the server does not answer."""
        if self._client is None:
            return False
        try:
            return bool(self._client.ping())
        except Exception:  # ping reports, it never raises
            return False

    def close(self) -> None:
        if self._write_api is not None:
            self._write_api.close()  # type: ignore[no-untyped-call]
            self._write_api = None
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]
            self._client = None
