"""Sinks without servers: bisection, error mapping, Retry-After, Backoff, MemorySink, FileSink, make_sink."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import consumer.sinks as sinks
from consumer.core.model import FieldValue, Point
from consumer.sinks import Backoff, FileSink, MemorySink, make_sink
from consumer.sinks.base import (
    Sink,
    SinkAuthError,
    SinkError,
    SinkNotFound,
    SinkRejected,
    SinkUnavailable,
    WriteResult,
    error_for_status,
    error_message,
    parse_retry_after,
    write_bisecting,
)
from producers.durations import ConfigError

T0 = 1_700_000_000_000_000_000


def _p(i: int, fields: dict[str, FieldValue] | None = None, **tags: str) -> Point:
    return Point("m", tuple(sorted(tags.items())), fields or {"f": float(i)}, T0 + i)


def test_public_surface() -> None:
    assert sorted(sinks.__all__) == [
        "Backoff", "FileSink", "MemorySink", "Sink", "SinkAuthError", "SinkConfig", "SinkError",
        "SinkNotFound", "SinkRejected", "SinkUnavailable", "WriteResult", "make_sink"]


# -- bisection ------------------------------------------------------------------------------------

class FakeServer:
    """Refuses any body that contains a point whose index is in ``bad``; records each body."""

    def __init__(self, bad: set[int]) -> None:
        self.bad = bad
        self.bodies: list[list[int]] = []
        self.stored: list[int] = []

    def post(self, points: Sequence[Point]) -> None:
        indexes = [p.time_ns - T0 for p in points]
        self.bodies.append(indexes)
        bad = [i for i in indexes if i in self.bad]
        if bad:
            raise SinkRejected(f"unable to parse point {bad[0]}", status=400)
        self.stored.extend(indexes)


@pytest.mark.parametrize("bad", [set(), {0}, {63}, {17}, {3, 4}, {0, 31, 32, 63}, set(range(64))])
def test_bisection_isolates_exactly_the_bad_points(bad: set[int]) -> None:
    server = FakeServer(bad)
    points = [_p(i) for i in range(64)]
    result = write_bisecting(server.post, points)
    assert result.written == 64 - len(bad)
    assert [(p.time_ns - T0, reason) for p, reason in result.rejected] == [
        (i, f"unable to parse point {i}") for i in sorted(bad)]
    assert server.stored == [i for i in range(64) if i not in bad]  # in order, each once


def test_bisection_cost_is_logarithmic_for_one_bad_point() -> None:
    server = FakeServer({40})
    write_bisecting(server.post, [_p(i) for i in range(1024)])
    # one request per level on the bad path plus its good siblings: 1 + 2 * log2(1024)
    assert len(server.bodies) == 21


def test_bisection_lets_unavailable_through() -> None:
    def post(points: Sequence[Point]) -> None:
        if len(points) < 4:
            raise SinkUnavailable("went away", retry_after_s=2.0)
        raise SinkRejected("field type conflict", status=400)

    with pytest.raises(SinkUnavailable) as caught:
        write_bisecting(post, [_p(i) for i in range(4)])
    assert caught.value.retry_after_s == 2.0


def test_empty_write_posts_nothing() -> None:
    server = FakeServer(set())
    assert write_bisecting(server.post, []) == WriteResult(written=0, rejected=[])
    assert server.bodies == []


# -- error mapping -------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "kind"), [
    (400, SinkRejected), (413, SinkRejected), (422, SinkRejected),
    (401, SinkAuthError), (403, SinkAuthError), (404, SinkNotFound),
    (408, SinkUnavailable), (429, SinkUnavailable), (500, SinkUnavailable), (502, SinkUnavailable),
    (503, SinkUnavailable),
    (418, SinkError),
])
def test_error_for_status(status: int, kind: type[SinkError]) -> None:
    error = error_for_status(status, "boom", retry_after="3", target="db=x")
    assert type(error) is kind
    assert "boom" in str(error)
    if kind is SinkUnavailable:
        assert isinstance(error, SinkUnavailable) and error.retry_after_s == 3.0


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None), ("", None), ("7", 7.0), (" 1.5 ", 1.5), ("-4", 0.0), ("nan", None), ("soon", None),
    ("999999", 3600.0), ("Wed, 25 Nov 2026 19:00:30 GMT", 30.0), ("Wed, 25 Nov 2026 18:00:00 GMT", 0.0),
])
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now_s = 1795633200.0  # Wed, 25 Nov 2026 19:00:00 GMT
    assert parse_retry_after(header, now_s=now_s) == seconds


@pytest.mark.parametrize(("body", "message"), [
    (b'{"error":"database not found: \\"x\\""}\n', 'database not found: "x"'),
    (b'{"code":"invalid","message":"unable to parse"}', "unable to parse"),
    (b"plain text\n", "plain text"), (b"", "fallback"), (None, "fallback"), (b"[1]", "[1]"),
])
def test_error_message(body: bytes | None, message: str) -> None:
    assert error_message(body, "fallback") == message


# -- Backoff ---------------------------------------------------------------------------------------

def test_backoff_grows_exponentially_within_full_jitter_bounds_and_caps() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0, rng=random.Random(1))
    ceilings = []
    for _ in range(8):
        ceiling = backoff.ceiling()
        ceilings.append(ceiling)
        delay = backoff.next_delay()
        assert 0.0 <= delay <= ceiling
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert backoff.attempts == 8


def test_backoff_jitter_spreads_over_the_whole_range() -> None:
    rng = random.Random(42)
    samples = []
    for _ in range(2000):
        backoff = Backoff(base_s=1.0, cap_s=60.0, rng=rng)
        for _ in range(3):
            backoff.next_delay()
        samples.append(backoff.next_delay())  # 4th attempt: uniform in [0, 8]
    assert min(samples) >= 0.0 and max(samples) <= 8.0
    assert min(samples) < 0.5 and max(samples) > 7.5  # full jitter, not "equal jitter"
    assert 3.5 < sum(samples) / len(samples) < 4.5


def test_backoff_honours_retry_after_and_resets() -> None:
    backoff = Backoff(base_s=0.1, cap_s=1.0, max_retry_after_s=120.0, rng=random.Random(0))
    assert backoff.next_delay(retry_after_s=30.0) == 30.0
    assert backoff.next_delay(retry_after_s=10_000.0) == 120.0
    assert backoff.delay_for(SinkUnavailable("x", retry_after_s=5.0)) == 5.0
    assert backoff.delay_for(SinkUnavailable("x")) <= 1.0
    assert backoff.delay_for(RuntimeError("not a sink error")) <= 1.0
    assert backoff.attempts == 5
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.ceiling() == 0.1


def test_backoff_survives_a_very_long_outage() -> None:
    backoff = Backoff(base_s=0.5, cap_s=30.0)
    for _ in range(5000):
        assert 0.0 <= backoff.next_delay() <= 30.0


def test_backoff_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=0.0)
    with pytest.raises(ValueError, match="base_s"):
        Backoff(base_s=5.0, cap_s=1.0)


# -- MemorySink ------------------------------------------------------------------------------------

def test_memory_sink_overwrites_like_influxdb() -> None:
    sink = MemorySink()
    assert isinstance(sink, Sink)
    sink.write([_p(1, {"a": 1.0, "b": 2.0}, user="u1"), _p(2, {"a": 5.0}, user="u1")])
    sink.write([_p(1, {"b": 3.0, "c": "x"}, user="u1"), _p(1, {"a": 9.0}, user="u2")])
    assert sink.as_rows() == {
        ("m", (("user", "u1"),), T0 + 1): {"a": 1.0, "b": 3.0, "c": "x"},
        ("m", (("user", "u1"),), T0 + 2): {"a": 5.0},
        ("m", (("user", "u2"),), T0 + 1): {"a": 9.0},
    }
    assert sink.get("m", {"user": "u1"}, T0 + 2) == {"a": 5.0}
    assert sink.fields("m", user="u2") == {"a": 9.0}
    assert sink.series() == {("m", (("user", "u1"),)), ("m", (("user", "u2"),))}
    assert len(sink) == 3
    assert [p.time_ns for p in sink.points("m")] == [T0 + 1, T0 + 2, T0 + 1]
    with pytest.raises(AssertionError, match="2 points"):
        sink.fields("m", user="u1")


def test_memory_sink_rejects_field_type_conflicts() -> None:
    sink = MemorySink()
    first, clash, bool_clash, other = (_p(1, {"f": 1.0}), _p(2, {"f": 2}), _p(3, {"f": True}),
                                       _p(4, {"g": 2}))
    result = sink.write([first, clash, bool_clash, other])
    assert result.written == 2
    assert result.rejected == [
        (clash, 'field type conflict: input field "f" on measurement "m" is type integer, '
                'already exists as type float'),
        (bool_clash, 'field type conflict: input field "f" on measurement "m" is type boolean, '
                     'already exists as type float'),
    ]
    assert [p.time_ns - T0 for p in sink.points()] == [1, 4]


def test_memory_sink_injected_failures_then_recovery() -> None:
    sink = MemorySink()
    sink.fail_next(2, retry_after_s=1.5)
    for _ in range(2):
        with pytest.raises(SinkUnavailable) as caught:
            sink.write([_p(1)])
        assert caught.value.retry_after_s == 1.5
    assert len(sink) == 0
    sink.fail_next(error=SinkAuthError("bad token"))
    with pytest.raises(SinkAuthError):
        sink.write([_p(1)])
    sink.down = True
    assert not sink.ping()
    with pytest.raises(SinkUnavailable, match="down"):
        sink.write([_p(1)])
    sink.down = False
    assert sink.write([_p(1)]).written == 1
    assert sink.write_calls == 5
    assert sink.batches == [[_p(1)]]
    sink.close()
    assert not sink.ping()
    with pytest.raises(SinkError, match="closed"):
        sink.write([_p(1)])


# -- FileSink --------------------------------------------------------------------------------------

def test_file_sink_appends_line_protocol(tmp_path: Path) -> None:
    path = tmp_path / "out" / "points.lp"
    sink = FileSink(path)
    assert sink.ping()
    assert sink.write([_p(1, user="a b"), _p(2)]).written == 2
    assert sink.write([]).written == 0
    assert sink.write([_p(3, {"s": 'say "hi"'})]).written == 1
    sink.close()
    sink.close()
    assert path.read_text() == (f'm,user=a\\ b f=1.0 {T0 + 1}\nm f=2.0 {T0 + 2}\n'
                                f'm s="say \\"hi\\"" {T0 + 3}\n')
    assert not sink.ping()
    with pytest.raises(SinkError, match="closed"):
        sink.write([_p(4)])


def test_file_sink_unwritable_path_is_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    sink = FileSink(blocker / "points.lp")
    assert not sink.ping()
    with pytest.raises(SinkUnavailable, match="cannot open"):
        sink.write([_p(1)])


# -- make_sink -------------------------------------------------------------------------------------

@dataclass
class Cfg:
    influx_url: str = "http://127.0.0.1:8086"
    influx_api: str = "v2"
    influx_token: str | None = None
    influx_org: str = "whisperengine"
    influx_bucket: str = "whisperengine"
    influx_db: str | None = None
    influx_rp: str | None = None
    influx_user: str | None = None
    influx_password: str | None = None


def test_make_sink_picks_v1_and_v2() -> None:
    from consumer.sinks.influx_v1 import InfluxV1Sink
    from consumer.sinks.influx_v2 import InfluxV2Sink

    v2 = make_sink(Cfg(influx_token="t", influx_bucket="b"))
    assert isinstance(v2, InfluxV2Sink) and v2.bucket == "b" and v2.org == "whisperengine"
    v1 = make_sink(Cfg(influx_api="v1", influx_bucket="b", influx_rp="week", influx_user="u"))
    assert isinstance(v1, InfluxV1Sink) and (v1.db, v1.rp) == ("b", "week")
    v1_db = make_sink(Cfg(influx_api="v1", influx_db="d"))
    assert isinstance(v1_db, InfluxV1Sink) and v1_db.db == "d"
    for sink in (v1, v2, v1_db):
        sink.close()


def test_make_sink_accepts_the_worker_config() -> None:
    from consumer.core.config import WorkerConfig
    from consumer.sinks.influx_v1 import InfluxV1Sink

    sink = make_sink(WorkerConfig(influx_api="v1", influx_bucket="bk"))
    assert isinstance(sink, InfluxV1Sink) and sink.db == "bk"
    sink.close()


def test_make_sink_without_a_server(tmp_path: Path) -> None:
    assert isinstance(make_sink(Cfg(influx_url="memory://")), MemorySink)
    assert isinstance(make_sink(Cfg(influx_api="memory")), MemorySink)
    file_sink = make_sink(Cfg(influx_url=f"file://{tmp_path}/p.lp"))
    assert isinstance(file_sink, FileSink) and file_sink.path == tmp_path / "p.lp"


@pytest.mark.parametrize(("cfg", "message"), [
    (Cfg(influx_api="v3"), "TELEMETRY_INFLUX_API='v3'"),
    (Cfg(influx_url="ftp://x"), "TELEMETRY_INFLUX_URL='ftp://x'"),
    (Cfg(influx_url="file://"), "needs a path"),
    (Cfg(influx_bucket=""), "TELEMETRY_INFLUX_BUCKET"),
    (Cfg(influx_api="v1", influx_bucket=""), "TELEMETRY_INFLUX_DB"),
])
def test_make_sink_configuration_errors(cfg: Cfg, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        make_sink(cfg)


def test_bisection_sends_large_writes_in_chunks_and_isolates_within_one() -> None:
    server = FakeServer({25})
    result = write_bisecting(server.post, [_p(i) for i in range(50)], max_batch_points=20)
    assert result.written == 49
    assert [p.time_ns - T0 for p, _ in result.rejected] == [25]
    assert server.bodies[:2] == [list(range(20)), list(range(20, 40))]
    assert server.bodies[-1] == list(range(40, 50))
    assert server.stored == [i for i in range(50) if i != 25]
