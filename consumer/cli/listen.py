"""``telemetry listen``: serve InfluxDB's write APIs (1.x ``/write``, 2.x ``/api/v2/write``) into Redis.

Usage::

    telemetry listen                                  # http://127.0.0.1:8186, streams from TELEMETRY_*
    telemetry listen --host 0.0.0.0 --token s3cret    # reachable from other hosts: set a token
    curl -i --data-binary 'cpu,host=a usage=0.5' 'http://127.0.0.1:8186/write?precision=ns'

Point clients' InfluxDB URL here instead of influxd's (Telegraf's ``[[outputs.influxdb]]`` or
``[[outputs.influxdb_v2]]``, influxdb-client, curl). Each setting also reads a variable:
TELEMETRY_LISTEN_HOST, TELEMETRY_LISTEN_PORT, TELEMETRY_LISTEN_MAX_BODY (bytes),
TELEMETRY_LISTEN_TOKEN; Redis, prefix and shards come from the producer's variables, and so does
pseudonymisation (TELEMETRY_PSEUDONYMIZE, TELEMETRY_PSEUDONYM_KEY): set, raw values of those tags
never reach Redis.
"""

from __future__ import annotations

from typing import Annotated

import typer

from consumer.pipeline.listener import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_PORT,
    ListenerConfig,
    serve,
)
from producers import ProducerConfig
from producers.durations import ConfigError, env_value, parse_int

LISTEN_VARIABLES = ("TELEMETRY_LISTEN_HOST", "TELEMETRY_LISTEN_PORT", "TELEMETRY_LISTEN_MAX_BODY",
                    "TELEMETRY_LISTEN_TOKEN")
"""The variables only ``telemetry listen`` reads (Redis, prefix and shards are the producer's)."""


def listener_config(host: str | None = None, port: str | None = None, max_body: str | None = None,
                    token: str | None = None, redis_url: str | None = None) -> ListenerConfig:
    """The listener's settings: flags, else TELEMETRY_LISTEN_* variables, else the defaults.

    Raises:
        ConfigError: a bad value; the message names the flag or variable.
    """
    producer = ProducerConfig.from_env(redis_url=redis_url)
    port_text = port if port is not None else env_value(None, "TELEMETRY_LISTEN_PORT")
    body_text = max_body if max_body is not None else env_value(None, "TELEMETRY_LISTEN_MAX_BODY")
    port_name = "--port" if port is not None else "TELEMETRY_LISTEN_PORT"
    body_name = "--max-body" if max_body is not None else "TELEMETRY_LISTEN_MAX_BODY"
    chosen_port = parse_int(port_name, port_text, minimum=0) if port_text else DEFAULT_PORT
    if chosen_port > 65535:
        raise ConfigError(f"{port_name}={chosen_port} is not a TCP port (0-65535)")
    return ListenerConfig(
        redis_url=producer.redis_url, prefix=producer.prefix, shards=producer.shards,
        stream_maxlen=producer.stream_maxlen,
        host=host or env_value(None, "TELEMETRY_LISTEN_HOST") or DEFAULT_HOST,
        port=chosen_port,
        max_body_bytes=parse_int(body_name, body_text, minimum=1) if body_text else DEFAULT_MAX_BODY_BYTES,
        token=token or env_value(None, "TELEMETRY_LISTEN_TOKEN"),
        pseudonymize=tuple(producer.pseudonymize), pseudonym_key=producer.pseudonym_key,
    )


def listen_command(
    host: Annotated[str | None, typer.Option("--host", show_default=False,
                                             help=f"address to bind (env TELEMETRY_LISTEN_HOST; "
                                                  f"default {DEFAULT_HOST}: this host only)")] = None,
    port: Annotated[str | None, typer.Option("--port", show_default=False,
                                             help=f"TCP port (env TELEMETRY_LISTEN_PORT; {DEFAULT_PORT})")
                    ] = None,
    max_body: Annotated[str | None, typer.Option("--max-body", show_default=False,
                                                 help="largest body in bytes after gzip, else 413 "
                                                      "(env TELEMETRY_LISTEN_MAX_BODY; 32 MiB)")] = None,
    token: Annotated[str | None, typer.Option("--token", show_default=False,
                                              help="require this token, else 401 (TELEMETRY_LISTEN_TOKEN)")
                     ] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", show_default=False,
                                                  help="Redis URL (env TELEMETRY_REDIS_URL)")] = None,
    processes: Annotated[int, typer.Option("--processes", min=1,
                                           help="processes sharing the port, one core each")] = 1,
) -> None:
    """Accept InfluxDB line protocol over HTTP; 204 once the points are in Redis, 503 while it is not."""
    serve(listener_config(host, port, max_body, token, redis_url), processes)


def register(app: typer.Typer) -> None:
    """Add ``listen`` to the ``telemetry`` command line."""
    app.command("listen")(listen_command)
