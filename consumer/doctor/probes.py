"""How ``doctor`` talks to InfluxDB and Grafana: one small probe per InfluxDB API.

Each probe raises :class:`ProbeError` with a ``kind`` (``unreachable``, ``auth`` or ``error``) so
the checks in :mod:`consumer.doctor.checks` can say which link failed and how to fix it.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Final, Protocol

from consumer.aggregation.catalogue import PIPELINE_MEASUREMENT

DEFAULT_TIMEOUT_S: Final = 5.0


class DoctorConfig(Protocol):
    """The settings doctor reads (``consumer.core.config.WorkerConfig`` has them all)."""

    @property
    def redis_url(self) -> str: ...

    @property
    def stream_prefix(self) -> str: ...

    @property
    def shards(self) -> int: ...

    @property
    def group(self) -> str: ...

    @property
    def influx_url(self) -> str: ...

    @property
    def influx_api(self) -> str: ...

    @property
    def influx_token(self) -> str | None: ...

    @property
    def influx_org(self) -> str: ...

    @property
    def influx_bucket(self) -> str: ...

    @property
    def influx_db(self) -> str | None: ...

    @property
    def influx_rp(self) -> str | None: ...

    @property
    def influx_user(self) -> str | None: ...

    @property
    def influx_password(self) -> str | None: ...

    @property
    def lease_s(self) -> float: ...


class ProbeError(Exception):
    """An InfluxDB or Grafana request failed; ``kind`` is ``unreachable``, ``auth`` or ``error``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def http_request(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: bytes | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[int, bytes]:
    """GET/POST ``url``; status and body. Connection failures raise ``ProbeError('unreachable')``."""
    request = urllib.request.Request(
        url, data=data, headers=headers or {}, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, urllib.error.URLError) as exc:
        raise ProbeError("unreachable", f"{url.split('?')[0]}: {getattr(exc, 'reason', exc)}") from exc


class InfluxProbe(Protocol):
    """What doctor asks InfluxDB; one implementation per API."""

    def ping(self) -> None: ...
    def check_auth(self) -> None: ...
    def container_exists(self) -> bool: ...
    def containers(self) -> list[str]: ...
    def point_counts(self, since_s: float) -> dict[str, int]: ...
    def pipeline_points(self, since_s: float) -> int: ...
    def newest_points(self) -> dict[str, int]: ...


class V1Probe:
    """InfluxDB 1.x HTTP API (``/ping``, ``/query`` with InfluxQL)."""

    def __init__(self, config: DoctorConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = config.influx_url.rstrip("/")
        self.db = config.influx_db or config.influx_bucket
        self.rp = config.influx_rp
        self.timeout_s = timeout_s
        self.headers: dict[str, str] = {}
        if config.influx_user:
            raw = f"{config.influx_user}:{config.influx_password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()

    def ping(self) -> None:
        status, body = http_request(f"{self.url}/ping", timeout_s=self.timeout_s)
        if status not in (200, 204):
            raise ProbeError("error", f"/ping answered {status}: {body[:200]!r}")

    def _query(self, statement: str) -> dict[str, Any]:
        params = urllib.parse.urlencode({"q": statement, "db": self.db, "epoch": "ns"})
        status, body = http_request(
            f"{self.url}/query?{params}", headers=self.headers, timeout_s=self.timeout_s
        )
        if status in (401, 403):
            raise ProbeError(
                "auth", f"InfluxDB refused the credentials ({status}): {body[:200].decode(errors='replace')}"
            )
        if status >= 400 and not body:
            raise ProbeError("error", f"/query answered {status}")
        try:
            result: dict[str, Any] = json.loads(body)["results"][0]
        except (ValueError, KeyError, IndexError) as exc:
            raise ProbeError("error", f"/query answered {status}: {body[:200]!r}") from exc
        return result

    def check_auth(self) -> None:
        self._query(f'SHOW RETENTION POLICIES ON "{self.db}"')

    def container_exists(self) -> bool:
        result = self._query(f'SHOW RETENTION POLICIES ON "{self.db}"')
        if "error" in result:
            if "not found" in result["error"]:
                return False
            raise ProbeError("error", result["error"])
        return True

    def _select(self, statement: str) -> list[dict[str, Any]]:
        result = self._query(statement)
        if "error" in result:
            raise ProbeError("error", result["error"])
        series: list[dict[str, Any]] = result.get("series", [])
        return [s for s in series if s.get("values")]

    def _source(self, measurement: str | None = None) -> str:
        name = "/.*/" if measurement is None else f'"{measurement}"'
        return f'"{self.rp}".{name}' if self.rp else name

    def containers(self) -> list[str]:
        return sorted(str(row[0]) for series in self._select("SHOW DATABASES") for row in series["values"])

    def point_counts(self, since_s: float) -> dict[str, int]:
        series = self._select(
            f'SELECT count("event_count") FROM {self._source()} WHERE time > now() - {int(since_s)}s'
        )
        return {s["name"]: int(s["values"][0][1]) for s in series}

    def pipeline_points(self, since_s: float) -> int:
        series = self._select(
            f'SELECT count("events_in") FROM {self._source(PIPELINE_MEASUREMENT)} '
            f"WHERE time > now() - {int(since_s)}s"
        )
        return sum(int(s["values"][0][1]) for s in series)

    def newest_points(self) -> dict[str, int]:
        # no time condition: a point stamped in the future (a producer's clock ahead) counts too
        series = self._select(f'SELECT last("event_count") FROM {self._source()} WHERE time > 0')
        return {s["name"]: int(s["values"][0][0]) for s in series}


class V2Probe:
    """InfluxDB 2.x API through influxdb-client (``/ping``, buckets API, Flux)."""

    def __init__(self, config: DoctorConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient

        self.bucket = config.influx_bucket
        self.org = config.influx_org
        self.url = config.influx_url.rstrip("/")
        self.timeout_s = timeout_s
        self.client = InfluxDBClient(
            url=self.url,
            token=config.influx_token or "",
            org=config.influx_org,
            timeout=int(timeout_s * 1000),
        )

    def _call(self, action: Callable[[], Any]) -> Any:
        from influxdb_client.rest import ApiException

        try:
            return action()
        except ApiException as exc:
            kind = "auth" if exc.status in (401, 403) else "error"
            raise ProbeError(kind, f"InfluxDB answered {exc.status}: {exc.reason}") from exc
        except Exception as exc:  # OSError, or urllib3's own tree of connection errors
            raise ProbeError("unreachable", f"{self.url}: {exc}") from exc

    def ping(self) -> None:
        http_request(f"{self.url}/ping", timeout_s=self.timeout_s)

    def check_auth(self) -> None:
        self._call(lambda: self.client.buckets_api().find_buckets(limit=1))  # type: ignore[no-untyped-call]

    def container_exists(self) -> bool:
        bucket = self._call(
            lambda: self.client.buckets_api().find_bucket_by_name(self.bucket)  # type: ignore[no-untyped-call]
        )
        return bucket is not None

    def containers(self) -> list[str]:
        found = self._call(lambda: self.client.buckets_api().find_buckets(limit=100))  # type: ignore[no-untyped-call]
        return sorted(str(b.name) for b in (found.buckets or []))

    def _flux(self, query: str) -> list[Any]:
        tables = self._call(lambda: self.client.query_api().query(query, org=self.org))
        return [record for table in tables for record in table.records]

    def point_counts(self, since_s: float) -> dict[str, int]:
        records = self._flux(
            f'from(bucket: "{self.bucket}") |> range(start: -{int(since_s)}s) '
            '|> filter(fn: (r) => r._field == "event_count") '
            '|> group(columns: ["_measurement"]) |> count()'
        )
        return {str(r.get_measurement()): int(r.get_value()) for r in records}

    def pipeline_points(self, since_s: float) -> int:
        records = self._flux(
            f'from(bucket: "{self.bucket}") |> range(start: -{int(since_s)}s) '
            f'|> filter(fn: (r) => r._measurement == "{PIPELINE_MEASUREMENT}" and r._field == "events_in") '
            "|> group() |> count()"
        )
        return sum(int(r.get_value()) for r in records)

    def newest_points(self) -> dict[str, int]:
        records = self._flux(
            f'from(bucket: "{self.bucket}") '
            "|> range(start: 1970-01-01T00:00:00Z, stop: 2100-01-01T00:00:00Z) "
            '|> filter(fn: (r) => r._field == "event_count") '
            '|> group(columns: ["_measurement"]) |> last()'
        )
        return {str(r.get_measurement()): int(r.get_time().timestamp() * 1e9) for r in records}


def make_probe(config: DoctorConfig, timeout_s: float = DEFAULT_TIMEOUT_S) -> InfluxProbe:
    """The probe for ``config.influx_api``."""
    return V1Probe(config, timeout_s) if config.influx_api == "v1" else V2Probe(config, timeout_s)
