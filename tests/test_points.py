"""producers.points: line protocol, influxdb-client Points and dicts read as InfluxDB reads them."""

from __future__ import annotations

import datetime as dt
import random
import string

import pytest
from influxdb_client import Point, WritePrecision

from producers import points
from producers.points import (
    REASON_UNPARSABLE,
    LineError,
    dict_event,
    parse_lines,
    point_event,
    precision_factor,
    record_events,
    rejected_event,
)
from producers.wire import KIND_POINT, KIND_REJECTED

NOW = 1_700_000_000_123_456_789


def one(line: str, precision: str = "ns") -> tuple:
    events, errors = parse_lines(line, precision, NOW)
    assert errors == []
    assert len(events) == 1
    return events[0]


def test_plain_line_with_every_value_type() -> None:
    event = one("attachment_monitoring,bot_name=elena,user_id=u1 "
                "intensity=0.82,n=3i,u=7u,ok=t,bad=FALSE 1700000000000000001")
    assert event == (
        KIND_POINT, "attachment_monitoring", 1_700_000_000_000_000_001,
        {"bot_name": "elena", "user_id": "u1"},
        {"intensity": 0.82, "n": 3, "u": 7, "ok": True, "bad": False},
    )
    assert type(event[4]["n"]) is int and type(event[4]["intensity"]) is float


def test_missing_timestamp_takes_the_default_and_precision_scales() -> None:
    assert one("m x=1")[2] == NOW
    assert one("m x=1 1700000000", "s")[2] == 1_700_000_000 * 10**9
    assert one("m x=1 1700000000123", "ms")[2] == 1_700_000_000_123 * 10**6
    assert one("m x=1 5", "u")[2] == 5_000
    assert one("m x=1 -5")[2] == -5


def test_escapes_and_strings() -> None:
    event = one(r'my\ meas\,x,tag\ k\=1=v\,a\ l\=ue f\=ld="say \"hi\", a=b c\\d",n=1 42')
    fields = {"f=ld": 'say "hi", a=b c\\d', "n": 1.0}
    assert event == (KIND_POINT, "my meas,x", 42, {"tag k=1": "v,a l=ue"}, fields)


def test_blank_lines_and_comments_are_skipped_and_line_numbers_count_them() -> None:
    body = b"# a comment\n\nm x=1 1\n  m x=2 2  \nnot a line\nm x=nan 3\r\nm,t= x=1\nm x=1 12ab\n"
    events, errors = parse_lines(body, "ns", NOW)
    assert [e[4]["x"] for e in events] == [1.0, 2.0]
    assert [e.lineno for e in errors] == [5, 6, 7, 8]
    assert {e.reason for e in errors} == {REASON_UNPARSABLE}
    assert "nan" in errors[1].detail and "tag" in errors[2].detail and "timestamp" in errors[3].detail
    assert errors[0].line == "not a line"


@pytest.mark.parametrize(
    "line",
    [
        "m",  # no fields
        "m x=",  # empty value
        "m x=1 2 3",  # extra section
        ",t=a x=1",  # no measurement
        "m x=1_000",  # underscores
        "m x=-1u",  # negative unsigned
        "m x=inf",
        'm s="open',  # unterminated string
        "m =1",  # empty key
        "m x=abc",
        "m x=1٣",  # a non-ASCII digit
        "m x=1٣i",
    ],
)
def test_not_line_protocol(line: str) -> None:
    events, errors = parse_lines(line, "ns", NOW)
    assert events == [] and len(errors) == 1 and errors[0].lineno == 1


def test_unknown_precision_is_a_value_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'fortnight'"):
        parse_lines("m x=1", "fortnight")
    assert precision_factor(WritePrecision.MS) == 1_000_000
    assert precision_factor(None) == 1


def _random_point(rng: random.Random) -> Point:
    # A backslash right before an escaped character is ambiguous in line protocol (InfluxDB's own
    # parser looks one character back), so names carry none; string values do.
    alphabet = string.ascii_letters + ' ,="=' + "é"
    word = lambda: "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))  # noqa: E731
    point = Point(word()).time(rng.randint(0, 2**62), WritePrecision.NS)
    for _ in range(rng.randint(0, 3)):
        point.tag(word(), word())
    for i in range(rng.randint(1, 4)):
        choices = [rng.randint(-(2**40), 2**40), rng.random() * 1000, rng.random() < 0.5, word() + '\\ \\"']
        value = rng.choice(choices)
        point.field(f"{word()}{i}", value)
    return point


def test_agrees_with_influxdb_client_serialisation() -> None:
    """Whatever influxdb-client writes as line protocol reads back as the Point it came from."""
    rng = random.Random(7)
    points = [_random_point(rng) for _ in range(400)]
    body = "\n".join(p.to_line_protocol() for p in points)
    events, errors = parse_lines(body, "ns", NOW)
    assert errors == []
    expected = [point_event(p, NOW) for p in points]
    for got, want in zip(events, expected, strict=True):
        # a float that happens to be whole is written without ".0": it reads back as the same number
        assert got[:4] == want[:4]
        assert got[4] == want[4]


def test_point_times_in_every_form() -> None:
    base = Point("m").field("x", 1)
    assert point_event(base, NOW)[2] == NOW
    assert point_event(Point("m").field("x", 1).time(1700, WritePrecision.S), NOW)[2] == 1700 * 10**9
    when = dt.datetime(2026, 12, 6, 4, 0, 0, 123456, tzinfo=dt.UTC)
    expected = int(when.timestamp()) * 10**9 + 123_456_000
    assert point_event(Point("m").field("x", 1).time(when), NOW)[2] == expected
    assert point_event(Point("m").field("x", 1).time(when.replace(tzinfo=None)), NOW)[2] == expected
    assert point_event(Point("m").field("x", 1).time("2026-12-06T04:00:00.123456Z"), NOW)[2] == expected


def test_point_drops_none_like_influxdb_client() -> None:
    point = Point("m").tag("a", None).tag("b", "").tag("c", 5).field("x", None).field("y", 2)
    assert point_event(point, NOW) == (KIND_POINT, "m", NOW, {"c": "5"}, {"y": 2})


def test_dicts_standard_and_with_keys() -> None:
    record = {"measurement": "m", "tags": {"t": "a"}, "fields": {"x": 1.5}, "time": 12}
    assert dict_event(record, "s", NOW) == (KIND_POINT, "m", 12 * 10**9, {"t": "a"}, {"x": 1.5})
    flat = {"name": "m", "host": "h", "load": 0.3, "ts": 5}
    assert dict_event(flat, "ns", NOW, measurement_key="name", time_key="ts", tag_keys=["host"],
                      field_keys=["load"]) == (KIND_POINT, "m", 5, {"host": "h"}, {"load": 0.3})


def test_record_events_accepts_what_write_api_accepts() -> None:
    point = Point("p").field("x", 1).time(3, WritePrecision.NS)
    records = [point, "l x=2 4", b"b x=3 5\nb x=4 6", {"measurement": "d", "fields": {"x": 5}, "time": 7}, 42]
    events, errors = record_events(records, "ns", NOW)
    assert [(e[1], e[2]) for e in events] == [("p", 3), ("l", 4), ("b", 5), ("b", 6), ("d", 7)]
    assert [(e.lineno, e.reason) for e in errors] == [(5, REASON_UNPARSABLE)]
    assert "int" in errors[0].detail
    assert record_events(point, "ns", NOW)[0] == [point_event(point, NOW)]
    assert record_events("m x=1", "ns", NOW)[0][0][1] == "m"
    missing, bad = record_events({"fields": {"x": 1}}, "ns", NOW)
    assert missing == [] and "measurement" in bad[0].detail


def test_rejected_event_carries_reason_detail_and_line() -> None:
    error = LineError(3, REASON_UNPARSABLE, "invalid field value 'abc'", "m x=abc")
    assert rejected_event(error, NOW) == (
        KIND_REJECTED, "", NOW, {"reason": REASON_UNPARSABLE, "detail": "line 3: invalid field value 'abc'"},
        {"line": "m x=abc"},
    )


def test_long_bad_lines_are_shortened_in_errors() -> None:
    _, errors = parse_lines("m " + "x" * 5000, "ns", NOW)
    assert len(errors[0].line) <= 1001


def test_remembered_series_and_values_answer_as_a_fresh_parse() -> None:
    """The fast path keeps parsed series and values by their text; repeats must parse the same,
    a bad line must stay bad the second time, and the caches stay bounded."""
    body = "m,host=a,dc=x v=0.5,n=3i,ok=true 10\nm,host=a,dc=x v=0.5,n=3i,ok=true 11\n"
    events, errors = parse_lines(body, "ns", NOW)
    assert not errors
    assert events[0][3] == events[1][3] == {"host": "a", "dc": "x"}
    assert events[0][4] == events[1][4] == {"v": 0.5, "n": 3, "ok": True}
    assert [e[2] for e in events] == [10, 11]
    for _ in range(2):   # errors are never remembered as values
        _events, errors = parse_lines("m,host= v=1 1\nm v=1_0 1\nm v=1 ٣\nm v=1 9223372036854775807\n",
                                      "ns", NOW)
        assert [e.lineno for e in errors] == [1, 2, 3, 4]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(points, "_PARSED_MAX", 8)
        lines = "\n".join(f"m,user=u{i} v={i}.5 {i}" for i in range(50))
        events, errors = parse_lines(lines, "ns", NOW)
        assert not errors and [e[3]["user"] for e in events] == [f"u{i}" for i in range(50)]
        assert [e[4]["v"] for e in events] == [i + 0.5 for i in range(50)]
        assert len(points._series_seen) <= 8 and len(points._values_seen) <= 8
