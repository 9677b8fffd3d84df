"""``make_sink(config)``: the sink a configuration asks for.

``influx_api`` picks the InfluxDB API (``v2`` or ``v1``); the URL scheme can pick a sink that
needs no server instead:

    TELEMETRY_INFLUX_URL=http://influx:8086        InfluxDB, through TELEMETRY_INFLUX_API
    TELEMETRY_INFLUX_URL=file:///var/tmp/points.lp  line protocol appended to a file (demo)
    TELEMETRY_INFLUX_URL=memory://                  in memory (tests)

``influx_api`` may also be ``"memory"`` or ``"file"`` for code that builds its config by hand.
"""

from __future__ import annotations

from typing import Final, Protocol
from urllib.parse import unquote, urlsplit

from consumer.sinks.base import Sink
from producers.durations import ConfigError

DEFAULT_TIMEOUT_S: Final = 10.0


class SinkConfig(Protocol):
    """The attributes :func:`make_sink` reads (``consumer.core.config.WorkerConfig`` has them all).

    An optional ``influx_timeout_s`` (float seconds) sets the HTTP timeout; default 10 s.
    """

    influx_url: str
    influx_api: str
    influx_token: str | None
    influx_org: str
    influx_bucket: str
    influx_db: str | None
    influx_rp: str | None
    influx_user: str | None
    influx_password: str | None


def _file_path(url: str) -> str:
    parts = urlsplit(url)
    # file:///abs/path, file://localhost/abs/path, and file://relative/path (netloc = first part)
    netloc = "" if parts.netloc == "localhost" else parts.netloc
    path = unquote(netloc + parts.path)
    if not path:
        raise ConfigError(f"TELEMETRY_INFLUX_URL={url!r}: a file sink needs a path (file:///path/points.lp)")
    return path


def make_sink(config: SinkConfig) -> Sink:
    """Build the sink ``config`` describes; a bad combination is a :class:`ConfigError`."""
    url = config.influx_url or ""
    scheme = urlsplit(url).scheme.lower()
    api = (config.influx_api or "v2").lower()
    timeout_s = float(getattr(config, "influx_timeout_s", None) or DEFAULT_TIMEOUT_S)
    if scheme == "memory" or api == "memory":
        from consumer.sinks.memory import MemorySink
        return MemorySink()
    if scheme == "file" or api == "file":
        from consumer.sinks.file import FileSink
        return FileSink(_file_path(url))
    if scheme not in ("http", "https"):
        raise ConfigError(f"TELEMETRY_INFLUX_URL={url!r} must be http(s)://host:port, file:///path or memory://")
    if api == "v1":
        from consumer.sinks.influx_v1 import InfluxV1Sink
        db = config.influx_db or config.influx_bucket
        if not db:
            raise ConfigError("TELEMETRY_INFLUX_DB (or TELEMETRY_INFLUX_BUCKET) is required for the v1 API")
        return InfluxV1Sink(url, db=db, rp=config.influx_rp, user=config.influx_user,
                            password=config.influx_password, timeout_s=timeout_s)
    if api == "v2":
        from consumer.sinks.influx_v2 import InfluxV2Sink
        if not config.influx_bucket:
            raise ConfigError("TELEMETRY_INFLUX_BUCKET is required for the v2 API")
        token = config.influx_token
        if not token and config.influx_user:
            # InfluxDB 1.8's v2 compatibility API takes "user:password" as the token.
            token = f"{config.influx_user}:{config.influx_password or ''}"
        return InfluxV2Sink(url, token=token, org=config.influx_org, bucket=config.influx_bucket,
                            timeout_ms=int(timeout_s * 1000))
    raise ConfigError(f"TELEMETRY_INFLUX_API={config.influx_api!r} must be one of: v2, v1")
