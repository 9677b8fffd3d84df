"""The worker's configuration: every ``TELEMETRY_*`` variable, read once at start.

The environment is read only here (:meth:`WorkerConfig.from_env`); everything else receives a
frozen :class:`WorkerConfig`. A bad value stops the worker at start with one line naming the
variable (:class:`~producers.durations.ConfigError`). Secrets (InfluxDB token and password, the
pseudonym key) never appear in ``repr`` or :meth:`WorkerConfig.describe`.

Usage::

    config = WorkerConfig.from_env()                       # TELEMETRY_* from os.environ
    config = config.with_overrides(redis_url="redis://db:6379/0", drain=True)   # CLI flags
    print(config.describe())                              # safe to log
"""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from producers.config import DEFAULT_REDIS_URL, DEFAULT_STREAM_MAXLEN
from producers.durations import (
    ConfigError,
    env_secret,
    env_value,
    mask_secret,
    parse_bool,
    parse_choice,
    parse_duration_s,
    parse_int,
    parse_list,
)
from producers.keys import DEFAULT_PREFIX, DEFAULT_SHARDS

ENV_PREFIX: Final = "TELEMETRY_"

DEFAULT_STREAM_PREFIX: Final = DEFAULT_PREFIX
DEFAULT_SHARD_COUNT: Final = DEFAULT_SHARDS
DEFAULT_GROUP: Final = "aggregator"
DEFAULT_WINDOW_S: Final = 10.0
DEFAULT_GRACE_S: Final = 2.0
DEFAULT_ALLOWED_LATENESS_S: Final = 300.0
DEFAULT_MAX_FUTURE_S: Final = 60.0
DEFAULT_INFLUX_URL: Final = "http://localhost:8086"
DEFAULT_INFLUX_API: Final = "v2"
DEFAULT_INFLUX_ORG: Final = "whisperengine"
DEFAULT_INFLUX_BUCKET: Final = "whisperengine"
DEFAULT_MAX_SERIES: Final = 10_000
DEFAULT_READ_COUNT: Final = 500
DEFAULT_BLOCK_MS: Final = 500
DEFAULT_LEASE_S: Final = 10.0
DEFAULT_MAX_OPEN_SERIES: Final = 200_000
DEFAULT_CHECKPOINT_INTERVAL_S: Final = 1.0
DEFAULT_DEDUPE_TTL_S: Final = 86_400.0
DEFAULT_DLQ_RETENTION_S: Final = 7 * 86_400.0
"""Dead letters older than this (by their entry id's time) are trimmed: they may hold personal
data, and a week is enough to notice, fix and replay."""
DEFAULT_METRICS_HOST: Final = "127.0.0.1"
"""Loopback: ``/metrics`` has no authentication, so it is reachable from elsewhere only when asked
(the container images and manifests in ``deploy/`` set ``0.0.0.0``; see docs/deploy.md)."""
INFLUX_APIS: Final = ("v2", "v1")
SECRET_FIELDS: Final = frozenset({"influx_token", "influx_password", "pseudonym_key"})


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, kw_only=True, repr=False)
class WorkerConfig:
    """Everything the worker needs, validated.

    ``consumer`` names this worker in the consumer group, the lease values and the heartbeat
    hash; ``read_count``/``block_ms`` size each read; ``lease_s`` is how long a silent owner keeps
    its shards; ``max_open_series`` is the memory budget (open series-windows per shard) past which
    reading pauses until the sink catches up; ``checkpoint_interval_s`` bounds work redone after a
    crash; ``dlq_retention_s`` is how long a dead letter is kept; ``metrics_host`` is the address
    ``/metrics`` listens on; ``raw_measurements`` are the names or globs of measurements not in the
    catalogue that are written raw (one point per input point, docs/semantics.md).
    """

    redis_url: str = DEFAULT_REDIS_URL
    stream_prefix: str = DEFAULT_STREAM_PREFIX
    shards: int = DEFAULT_SHARD_COUNT
    group: str = DEFAULT_GROUP
    stream_maxlen: int = DEFAULT_STREAM_MAXLEN
    window_s: float = DEFAULT_WINDOW_S
    grace_s: float = DEFAULT_GRACE_S
    allowed_lateness_s: float = DEFAULT_ALLOWED_LATENESS_S
    max_future_s: float = DEFAULT_MAX_FUTURE_S
    influx_url: str = DEFAULT_INFLUX_URL
    influx_api: str = DEFAULT_INFLUX_API
    influx_token: str | None = field(default=None, repr=False)
    influx_org: str = DEFAULT_INFLUX_ORG
    influx_bucket: str = DEFAULT_INFLUX_BUCKET
    influx_db: str | None = None
    influx_rp: str | None = None
    influx_user: str | None = None
    influx_password: str | None = field(default=None, repr=False)
    max_series: int = DEFAULT_MAX_SERIES
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    pseudonymize: tuple[str, ...] = ()
    pseudonym_key: str | None = field(default=None, repr=False)
    raw_measurements: tuple[str, ...] = ()
    consumer: str = field(default_factory=_default_consumer)
    read_count: int = DEFAULT_READ_COUNT
    block_ms: int = DEFAULT_BLOCK_MS
    lease_s: float = DEFAULT_LEASE_S
    max_open_series: int = DEFAULT_MAX_OPEN_SERIES
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    dedupe_ttl_s: float = DEFAULT_DEDUPE_TTL_S
    dlq_retention_s: float = DEFAULT_DLQ_RETENTION_S
    drain: bool = False

    def __post_init__(self) -> None:
        if self.influx_db is None:
            object.__setattr__(self, "influx_db", self.influx_bucket)
        if self.pseudonymize and not self.pseudonym_key:
            raise ConfigError("TELEMETRY_PSEUDONYMIZE is set but TELEMETRY_PSEUDONYM_KEY (or _FILE) is not")
        if self.shards < 1:
            raise ConfigError(f"TELEMETRY_SHARDS={self.shards!r} must be at least 1")
        if self.influx_api not in INFLUX_APIS:
            raise ConfigError(f"TELEMETRY_INFLUX_API={self.influx_api!r} must be one of: v2, v1")

    def __repr__(self) -> str:
        settings = ", ".join(f"{name}={value!r}" for name, value in self.describe().items())
        return f"WorkerConfig({settings})"

    @property
    def database(self) -> str:
        """The v1 database (defaults to the bucket)."""
        return self.influx_db or self.influx_bucket

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Build from ``TELEMETRY_*`` variables (``env`` defaults to ``os.environ``).

        Raises:
            ConfigError: a value is malformed; the message names the variable.
        """
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            variable = variable_name(name)
            raw = env_value(env, variable)
            if raw is not None:
                values[name] = parse(variable, raw)
        for name in SECRET_FIELDS:
            secret = env_secret(env, variable_name(name))
            if secret is not None:
                values[name] = secret
        return cls(**values)

    def with_overrides(self, **flags: Any) -> WorkerConfig:
        """A copy with CLI flags applied; ``None`` means "flag not given". Strings are parsed
        exactly like the environment variable of the same name."""
        values: dict[str, Any] = {}
        for name, raw in flags.items():
            if raw is None:
                continue
            if name not in _FIELD_NAMES:
                raise ConfigError(f"unknown setting {name!r}")
            parse = _PARSERS.get(name)
            values[name] = parse(flag_name(name), raw) if parse and isinstance(raw, str) else raw
        return dataclasses.replace(self, **values)

    def describe(self) -> dict[str, str]:
        """Every setting as text, secrets masked: safe for logs and ``doctor`` output."""
        described: dict[str, str] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in SECRET_FIELDS:
                described[item.name] = mask_secret(value)
            elif item.name in ("redis_url", "influx_url"):
                described[item.name] = redact_url(value)
            elif isinstance(value, tuple):
                described[item.name] = ",".join(value)
            else:
                described[item.name] = "-" if value is None else str(value)
        return described


def _text(_name: str, raw: str) -> str:
    return raw.strip()


def _positive_int(name: str, raw: str) -> int:
    return parse_int(name, raw, minimum=1)


def _port(name: str, raw: str) -> int | None:
    if raw.strip().lower() in ("off", "0", "false", "no"):
        return None
    port = parse_int(name, raw, minimum=1)
    if port > 65535:
        raise ConfigError(f"{name}={raw!r} is not a TCP port (1-65535)")
    return port


def _host(name: str, raw: str) -> str:
    host = raw.strip()
    if not host or any(c in host for c in " /@"):
        raise ConfigError(f"{name}={raw!r} is not a host name or address to listen on (e.g. 0.0.0.0)")
    return host


def _positive_duration(name: str, raw: str) -> float:
    value = parse_duration_s(name, raw)
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than zero")
    return value


def _api(name: str, raw: str) -> str:
    return parse_choice(name, raw, INFLUX_APIS)


def _tag_keys(_name: str, raw: str) -> tuple[str, ...]:
    return parse_list(raw)


def _measurement_patterns(name: str, raw: str) -> tuple[str, ...]:
    """Measurement names or globs, comma-separated; an empty item or an unclosed ``[`` is an error."""
    items = [item.strip() for item in raw.split(",")]
    for position, item in enumerate(items, 1):
        problem = ("is empty" if not item else "has an unclosed '['" if _unclosed_bracket(item)
                   else "holds a newline" if "\n" in item else None)
        if problem is not None:
            raise ConfigError(f"{name}={raw!r}: item {position} {problem}; give measurement names or globs "
                              "separated by commas (e.g. audit_log,events_*)")
    return tuple(items)


def _unclosed_bracket(pattern: str) -> bool:
    opened = pattern.rfind("[")
    return opened >= 0 and "]" not in pattern[opened + 2:]


def _flag(name: str, raw: str) -> bool:
    return parse_bool(name, raw)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``****``, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def parse_flags(args: list[str]) -> dict[str, str | bool]:
    """``["--redis-url", "redis://x", "--window=5s", "--drain"]`` -> settings by field name.

    Every setting is a flag (the variable without its prefix); a flag without a value is
    ``true``. An unknown flag is a :class:`ConfigError`.
    """
    by_flag = {flag_name(name): name for name in _FIELD_NAMES}
    settings: dict[str, str | bool] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        flag, has_value, value = arg.partition("=")
        if flag not in by_flag:
            raise ConfigError(f"unknown option {flag!r} (each TELEMETRY_* variable is a flag: --redis-url)")
        if not has_value:
            if index + 1 < len(args) and not args[index + 1].startswith("--"):
                index += 1
                value = args[index]
            else:
                value = "true"
        settings[by_flag[flag]] = value
        index += 1
    return settings


def variable_name(setting: str) -> str:
    """The environment variable of a setting: ``window_s`` -> ``TELEMETRY_WINDOW``."""
    base = setting[:-2] if setting.endswith("_s") else setting
    return ENV_PREFIX + base.upper()


def flag_name(setting: str) -> str:
    """The CLI flag of a setting: ``redis_url`` -> ``--redis-url``, ``window_s`` -> ``--window``."""
    return "--" + variable_name(setting)[len(ENV_PREFIX):].lower().replace("_", "-")


_PARSERS: Final[dict[str, Callable[[str, str], Any]]] = {
    "redis_url": _text,
    "stream_prefix": _text,
    "shards": _positive_int,
    "group": _text,
    "stream_maxlen": _positive_int,
    "window_s": _positive_duration,
    "grace_s": parse_duration_s,
    "allowed_lateness_s": parse_duration_s,
    "max_future_s": parse_duration_s,
    "influx_url": _text,
    "influx_api": _api,
    "influx_org": _text,
    "influx_bucket": _text,
    "influx_db": _text,
    "influx_rp": _text,
    "influx_user": _text,
    "max_series": _positive_int,
    "metrics_port": _port,
    "metrics_host": _host,
    "pseudonymize": _tag_keys,
    "raw_measurements": _measurement_patterns,
    "consumer": _text,
    "read_count": _positive_int,
    "block_ms": _positive_int,
    "lease_s": _positive_duration,
    "max_open_series": _positive_int,
    "checkpoint_interval_s": _positive_duration,
    "dedupe_ttl_s": _positive_duration,
    "dlq_retention_s": _positive_duration,
    "drain": _flag,
}
_FIELD_NAMES: Final = frozenset(f.name for f in dataclasses.fields(WorkerConfig))
