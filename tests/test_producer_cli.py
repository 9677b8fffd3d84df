"""``telemetry emit`` against a real redis-server, through typer's CliRunner."""

from __future__ import annotations

import datetime as dt
import math

import pytest
import typer
from typer.testing import CliRunner

from consumer.cli import emit as emit_cli
from producers.keys import shard_of_series, stream_key
from producers.wire import KIND_EMIT
from tests.services import RedisServer, free_port
from tests.test_producer_support import read_batches, read_events


@pytest.fixture
def app() -> typer.Typer:
    """A bare app holding only ``emit`` (the callback keeps it a sub-command, as in ``telemetry``)."""
    application = typer.Typer()

    @application.callback()
    def main() -> None:
        """telemetry"""

    emit_cli.register(application)
    return application


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("TELEMETRY_REDIS_URL", "TELEMETRY_STREAM_PREFIX", "TELEMETRY_SHARDS"):
        monkeypatch.delenv(name, raising=False)
    return CliRunner()


def test_emit_sends_one_typed_event(app: typer.Typer, runner: CliRunner, redis_server: RedisServer) -> None:
    result = runner.invoke(app, [
        "emit", "attachment_monitoring", "emotional_intensity=0.82", "dependency_count=3",
        "intervention_provided=true", "note=\"42\"", "risk=high", "big=1e3",
        "--tag", "user_id=u42", "--tag", "bot_name=elena", "--ts", "2026-11-25T12:00:00Z",
        "--redis-url", redis_server.url])
    assert result.exit_code == 0, result.output
    tags = {"user_id": "u42", "bot_name": "elena"}
    stream = stream_key("telemetry", shard_of_series("attachment_monitoring", tags, 4))
    assert result.stdout.startswith(f"sent to {stream}: attachment_monitoring user_id=u42 bot_name=elena ")
    assert "ts=2026-11-25T12:00:00.000Z" in result.stdout
    assert read_events(redis_server.client()) == [[
        KIND_EMIT, "attachment_monitoring", dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC).timestamp(), tags,
        {"emotional_intensity": 0.82, "dependency_count": 3, "intervention_provided": True, "note": "42",
         "risk": "high", "big": 1000.0}]]
    assert [shard for shard, _ in read_batches(redis_server.client())] == [int(stream[-2])]


def test_emit_flags_default_from_environment(app: typer.Typer, runner: CliRunner, redis_server: RedisServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_REDIS_URL", redis_server.url)
    monkeypatch.setenv("TELEMETRY_STREAM_PREFIX", "bots")
    monkeypatch.setenv("TELEMETRY_SHARDS", "2")
    result = runner.invoke(app, ["emit", "m", "x=1", "--ts", "1700000000.25"])
    assert result.exit_code == 0, result.output
    assert "sent to bots:{" in result.stdout
    assert read_events(redis_server.client(), prefix="bots", shards=2) == [
        [KIND_EMIT, "m", 1_700_000_000.25, {}, {"x": 1}]]


@pytest.mark.parametrize("args", [
    ["m"],                                   # no field
    ["m", "novalue"],                        # not NAME=VALUE
    ["m", "=1"],                             # empty name
    ["m", "x=1", "x=2"],                     # twice
    ["m", "x=1", "--tag", "bad"],            # tag without =
    ["m", "x=1", "--ts", "yesterday"],       # bad time
    ["m", "x=99999999999999999999999"],      # beyond 64 bits
    ["m", "x=1", "--shards", "zero"],        # bad setting
    ["m", "x=1", "--redis-url", "localhost"],
])
def test_bad_input_is_one_line_and_exit_2(app: typer.Typer, runner: CliRunner, redis_server: RedisServer,
                                          args: list[str]) -> None:
    full = ["emit", *args] if "--redis-url" in args else ["emit", *args, "--redis-url", redis_server.url]
    result = runner.invoke(app, full)
    assert result.exit_code == 2
    assert result.stderr.startswith("telemetry emit: ") and result.stderr.count("\n") == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert redis_server.client().keys("*") == []


def test_unreachable_redis_is_one_line_and_exit_1(app: typer.Typer, runner: CliRunner) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["emit", "m", "x=1", "--redis-url", url])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"telemetry emit: cannot reach Redis at {url}")
    assert result.stderr.count("\n") == 1


def test_parse_value_types() -> None:
    parse = emit_cli.parse_value
    raw = ["true", "FALSE", "42", "-7", "0.5", ".5", "1e3", "'x y'", '"true"', "nan", "a=b"]
    assert [parse(v) for v in raw] == [True, False, 42, -7, 0.5, 0.5, 1000.0, "x y", "true", "nan", "a=b"]
    assert not any(isinstance(parse(v), float) and math.isnan(parse(v)) for v in ["nan", "NaN"])


def test_emit_is_registered_in_the_telemetry_app() -> None:
    from consumer.cli.app import app as telemetry_app

    names = [command.name or command.callback.__name__ for command in telemetry_app.registered_commands]
    assert "emit" in names
