"""What the operator commands (inspect, tail, dlq, doctor, top) share: connection flags, the
configuration they resolve to, and one-line errors with the documented exit codes.

Every flag is the ``TELEMETRY_*`` variable without its prefix; a flag given on the command line
wins over the environment, and both are parsed by :class:`consumer.core.config.WorkerConfig`, so the
operator commands see exactly the settings the worker sees.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Final, NoReturn

import redis
import typer

from consumer.core.config import WorkerConfig
from producers.durations import ConfigError, parse_duration_s

EXIT_OK: Final = 0
EXIT_CHECK_FAILED: Final = 1
EXIT_USAGE: Final = 2

RedisUrl = Annotated[str | None, typer.Option("--redis-url", show_default=False,
                                              help="Redis URL [env TELEMETRY_REDIS_URL]")]
StreamPrefix = Annotated[str | None, typer.Option("--stream-prefix", show_default=False,
                                                  help="stream key prefix [env TELEMETRY_STREAM_PREFIX]")]
Shards = Annotated[str | None, typer.Option("--shards", show_default=False,
                                            help="number of shards [env TELEMETRY_SHARDS]")]
Group = Annotated[str | None, typer.Option("--group", show_default=False,
                                           help="consumer group [env TELEMETRY_GROUP]")]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def env_option(flag: str) -> Any:
    """A flag named after its variable (``--influx-url`` is ``TELEMETRY_INFLUX_URL``), so help says which."""
    variable = "TELEMETRY_" + flag.lstrip("-").replace("-", "_").upper()
    return typer.Option(flag, show_default=False, help=f"[env {variable}]")


def fail(message: str, code: int = EXIT_CHECK_FAILED) -> NoReturn:
    """Print one line to stderr and exit with ``code`` (never a traceback)."""
    typer.echo(f"telemetry: {message}", err=True)
    raise typer.Exit(code)


def duration_flag(flag: str, raw: str) -> float:
    """Seconds from a duration flag (``30s``, ``5m``); a bad one is a usage error, not a traceback."""
    try:
        return parse_duration_s(flag, raw)
    except ConfigError as exc:
        fail(str(exc), EXIT_USAGE)


def load_config(**flags: Any) -> WorkerConfig:
    """The worker configuration from the environment with the given flags applied."""
    try:
        return WorkerConfig.from_env().with_overrides(**flags)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)


def connect_redis(config: WorkerConfig, *, timeout_s: float = 5.0) -> redis.Redis[bytes]:
    """A client for ``config.redis_url`` (``redis+cluster://`` selects Redis Cluster)."""
    url = config.redis_url
    try:
        if url.startswith("redis+cluster://"):
            cluster: Any = redis.RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"),
                                                  socket_timeout=timeout_s,
                                                  socket_connect_timeout=timeout_s)
            return cluster  # type: ignore[no-any-return]  # same command surface for our use
        return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except (ValueError, redis.RedisError) as exc:
        fail(f"configuration error: TELEMETRY_REDIS_URL={url!r}: {exc}", EXIT_USAGE)


@contextlib.contextmanager
def redis_errors(config: WorkerConfig) -> Iterator[None]:
    """Turn a Redis failure into one line naming the URL and exit code 1."""
    try:
        yield
    except redis.ConnectionError as exc:
        fail(f"cannot reach Redis at {config.redis_url}: {exc} (is it running? check TELEMETRY_REDIS_URL)")
    except redis.RedisError as exc:
        fail(f"Redis at {config.redis_url} failed: {exc}")


def print_json(data: Any) -> None:
    """Write ``data`` as one JSON document to stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()
