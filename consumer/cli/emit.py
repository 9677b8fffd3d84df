"""``telemetry emit``: send one event from the shell, through the same producer bot code uses.

Usage::

    telemetry emit attachment_monitoring emotional_intensity=0.82 intervention_provided=true \\
        note='"42"' --tag user_id=u42 --tag bot_name=elena --ts 2026-11-25T12:00:00Z

Values: ``true``/``false`` are booleans, ``42`` an int, ``0.82`` or ``1e3`` a float, a value in
double or single quotes a string as written (``'"42"'`` keeps 42 a string), anything else a
bare string. ``--ts`` takes seconds since the epoch or an ISO 8601 time (UTC when no offset is
given); default now. Flags default from the TELEMETRY_* variables. Bad input, a bad setting or
an unreachable Redis is one line on stderr and exit code 1, as in every other command.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Final, NoReturn

import redis
import typer
from redis.exceptions import RedisClusterException

from producers import ProducerConfig, Telemetry
from producers._sender import client_from_url
from producers.durations import ConfigError, parse_int
from producers.keys import shard_of_series, stream_key

EXIT_USAGE: Final = 2
EXIT_UNREACHABLE: Final = 1
SEND_TIMEOUT_S: Final = 10.0
_INT: Final = re.compile(r"^[+-]?\d+$")
_FLOAT: Final = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_INT_RANGE: Final = (-(2 ** 63), 2 ** 64 - 1)   # what msgpack can carry


class BadInput(ValueError):
    """A field, tag or timestamp on the command line cannot be understood."""


def parse_value(raw: str) -> bool | int | float | str:
    """Turn a command-line value into the type it spells (see the module docstring)."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(raw):
        value = int(raw)
        if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
            raise BadInput(f"integer {raw} is out of the 64-bit range")
        return value
    if _FLOAT.match(raw):
        return float(raw)
    return raw


def parse_pairs(pairs: list[str], what: str, *, typed: bool) -> dict[str, Any]:
    """``["k=v", ...]`` into a dict; values typed for fields, kept as strings for tags."""
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"{what} {pair!r} is not NAME=VALUE")
        if key in result:
            raise BadInput(f"{what} {key!r} is given twice")
        result[key] = parse_value(value) if typed else value
    return result


def parse_ts(raw: str | None) -> float | None:
    """``--ts``: epoch seconds or ISO 8601 (naive means UTC); None means now."""
    if raw is None:
        return None
    text = raw.strip()
    if _FLOAT.match(text):
        return float(text)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadInput(f"--ts {raw!r} is neither epoch seconds nor an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    typer.echo(f"telemetry emit: {message}", err=True)
    raise typer.Exit(code)


def _config(redis_url: str | None, prefix: str | None, shards: str | None) -> ProducerConfig:
    try:
        shard_count = parse_int("--shards", shards, minimum=1) if shards is not None else None
        return ProducerConfig.from_env(redis_url=redis_url, prefix=prefix, shards=shard_count,
                                       exit_timeout_ms=0)
    except ConfigError as exc:
        _fail(f"configuration error: {exc}")


def _describe(measurement: str, fields: dict[str, Any], tags: dict[str, str], ts: float) -> str:
    def show(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) \
            else str(value)

    tag_text = "".join(f" {k}={v}" for k, v in tags.items())
    field_text = " ".join(f"{k}={show(v)}" for k, v in fields.items())
    when = dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{measurement}{tag_text} {field_text} ts={when}"


def send_one(config: ProducerConfig, measurement: str, fields: dict[str, Any], tags: dict[str, str],
             ts: float) -> str:
    """Send one event and wait for Redis to accept it; return the stream it went to.

    Raises:
        BadInput: the event cannot be encoded.
        redis.RedisError: Redis cannot be reached or did not accept the event in time.
    """
    client = client_from_url(config.redis_url, socket_timeout_s=5.0, connect_timeout_s=3.0)
    try:
        client.ping()
        tel = Telemetry(config=config, client=client)
        tel.emit(measurement, fields, tags=tags, ts=ts)
        delivered = tel.close(timeout=SEND_TIMEOUT_S)
        stats = tel.stats()
    finally:
        client.close()
    if stats["errors"]:
        raise BadInput("the event cannot be encoded (a value is out of range)")
    if not delivered or stats["sent"] != 1:
        raise redis.ConnectionError(f"Redis did not accept the event within {SEND_TIMEOUT_S:g}s")
    return stream_key(config.prefix, shard_of_series(measurement, tags, config.shards))


def emit_command(
    measurement: Annotated[str, typer.Argument(help="measurement name, e.g. attachment_monitoring")],
    fields: Annotated[list[str] | None, typer.Argument(help="FIELD=VALUE pairs (at least one)",
                                                       show_default=False)] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="TAG=VALUE, repeatable",
                                                  show_default=False)] = None,
    ts: Annotated[str | None, typer.Option("--ts", help="event time: epoch seconds or ISO 8601; default now",
                                           show_default=False)] = None,
    redis_url: Annotated[str | None, typer.Option("--redis-url", show_default=False,
                                                  help="Redis URL (env TELEMETRY_REDIS_URL)")] = None,
    shards: Annotated[str | None, typer.Option("--shards", show_default=False,
                                               help="number of shards (env TELEMETRY_SHARDS)")] = None,
    prefix: Annotated[str | None, typer.Option("--prefix", "--stream-prefix", show_default=False,
                                               help="stream prefix (env TELEMETRY_STREAM_PREFIX)")] = None,
) -> None:
    """Send one event (MEASUREMENT FIELD=VALUE... [--tag K=V]...) and print where it went."""
    config = _config(redis_url, prefix, shards)
    try:
        values = parse_pairs(fields or [], "field", typed=True)
        tags = parse_pairs(tag or [], "tag", typed=False)
        when = parse_ts(ts)
    except BadInput as exc:
        _fail(str(exc))
    if not measurement:
        _fail("the measurement name is empty")
    if not values:
        _fail("give at least one FIELD=VALUE")
    event_ts = when if when is not None else dt.datetime.now(dt.UTC).timestamp()
    try:
        stream = send_one(config, measurement, values, tags, event_ts)
    except BadInput as exc:
        _fail(str(exc))
    except (redis.RedisError, RedisClusterException) as exc:
        _fail(f"cannot reach Redis at {config.redis_url}: {exc} (is it running? check TELEMETRY_REDIS_URL)",
              EXIT_UNREACHABLE)
    typer.echo(f"sent to {stream}: {_describe(measurement, values, tags, event_ts)}")


def register(app: typer.Typer) -> None:
    """Add ``emit`` to the ``telemetry`` command line."""
    app.command("emit")(emit_command)
