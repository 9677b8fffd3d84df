"""Line protocol: escaping, the names it cannot carry, and a round trip through a real influxd."""

from __future__ import annotations

import itertools
import math
import re
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.core.model import FieldValue, Point
from consumer.sinks import line_protocol
from consumer.sinks.influx_v1 import InfluxV1Sink
from consumer.sinks.influx_v2 import InfluxV2Sink
from consumer.sinks.line_protocol import (
    RESERVED_KEYS,
    encode_point,
    encode_points,
    escape_key,
    format_value,
    name_problem,
    value_problem,
)
from tests.influx_gateway import InfluxV2Gateway
from tests.services import InfluxServer

T0 = 1_700_000_000_000_000_000


def _point(measurement: str, tags: dict[str, str], fields: dict[str, FieldValue], time_ns: int = T0) -> Point:
    return Point(measurement, tuple(sorted(tags.items())), fields, time_ns)


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Names that need escaping, or look as if they did, and all of which line protocol can carry.
NASTY_POINTS = [
    _point("cpu load, total", {"host name": "a,b=c d", "région": "Île-de-France"},
           {"user time": 1.5, "a=b,c": 2, "quote\"d": "x"}),
    _point("emoji 🚀 metric", {"bot": "élena 🤖", "q\"t": "v\"al"},
           {"msg": 'line one\nline two "quoted" back\\slash', "ok": True}),
    _point("m=eq\"uals", {"k": "back\\slash mid", "k2": "double\\\\back"},
           {"f\\x": -7, "big": 2**62, "tiny": 1e-05, "huge": 1e16, "neg": -0.25}),
    _point("日本語", {"empty_dropped": "", "t": "="},
           {"s": "", "s2": "tab\there", "b": False}),
]


def test_encode_point_escapes_each_part() -> None:
    point = _point("a b,c", {"k,1": "v 1=x"}, {"f=1": "say \"hi\"\\"}, 5)
    assert encode_point(point) == 'a\\ b\\,c,k\\,1=v\\ 1\\=x f\\=1="say \\"hi\\"\\\\" 5'


def test_encode_point_without_nonempty_tags_has_no_trailing_comma() -> None:
    assert encode_point(_point("m", {"a": ""}, {"f": 1}, 7)) == "m f=1i 7"
    two = [_point("m", {}, {"f": 1}, 1), _point("m", {}, {"f": 2}, 2)]
    assert encode_points(two) == b"m f=1i 1\nm f=2i 2"


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (3, "3i"), (-3, "-3i"), (0.5, "0.5"), (1e16, "1e+16"),
    ("a\"b\\c\nd", '"a\\"b\\\\c\nd"'),
])
def test_format_value(value: FieldValue, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(("name", "what", "problem"), [
    ("ok name, with = signs", "tag key", None),
    ("back\\slash", "tag value", None),
    ("é🚀", "measurement", None),
    ("", "tag key", "tag key is empty"),
    (3, "field key", "field key is int, not a string"),
    ("a\nb", "measurement", "measurement 'a\\nb' contains a newline"),
    ("a\rb", "tag value", "tag value 'a\\rb' contains a newline"),
    ("ends\\", "field key", "field key 'ends\\\\' ends with a backslash"),
    ("a\\,b", "tag key", "tag key 'a\\\\,b' has a backslash before ','"),
    ("a\\=b", "tag value", "tag value 'a\\\\=b' has a backslash before '='"),
    ("a\\ b", "measurement", "measurement 'a\\\\ b' has a backslash before ' '"),
    ("#comment", "measurement",
     "measurement '#comment' starts with '#' (line protocol reads the line as a comment)"),
    ("#fine", "tag key", None),
    ("x" * 257, "measurement", f"measurement {'x' * 40!r}... is 257 bytes (limit 256)"),
    ("\ud800", "tag key", "tag key '\\ud800' is not valid Unicode"),
    ("\tlead", "field key", "field key '\\tlead' contains the control character U+0009"),
    ("nul\x00", "measurement", "measurement 'nul\\x00' contains the control character U+0000"),
    ("c1\x85", "tag value", "tag value 'c1\\x85' contains the control character U+0085"),
    ("nbsp\u00a0 zw\u200b", "tag key", None),
])
def test_name_problem(name: object, what: str, problem: str | None) -> None:
    assert name_problem(name, what=what) == problem


@pytest.mark.parametrize(("value", "problem"), [
    (1.0, None), (True, None), ("s", None), (2**63 - 1, None), (-(2**63), None),
    (2**63, "integer 9223372036854775808 is outside the 64-bit range"),
    (float("nan"), "nan is not a finite number"),
    (float("-inf"), "-inf is not a finite number"),
    (None, "value of type NoneType is not a bool, int, float or str"),
    ("x" * (64 * 1024 + 1), "string value is 65537 bytes (limit 65536)"),
])
def test_value_problem(value: object, problem: str | None) -> None:
    assert value_problem(value) == problem


def test_every_nasty_name_passes_name_problem() -> None:
    for point in NASTY_POINTS:
        assert name_problem(point.measurement, what="measurement") is None
        for key, value in point.tags:
            assert name_problem(key, what="tag key") is None
            if value:
                assert name_problem(value, what="tag value") is None
        for key in point.fields:
            assert name_problem(key, what="field key") is None


def _read_back(server: InfluxServer, db: str) -> list[dict[str, Any]]:
    """Every point of NASTY_POINTS' measurements as {measurement, tags, fields, time}."""
    found = []
    for point in NASTY_POINTS:
        tag_keys = {key for key, _ in point.tags}
        rows = server.query(f"SELECT * FROM {quote_ident(point.measurement)} GROUP BY *", db=db)
        for row in rows:
            measurement = row.pop("_measurement")
            time_ns = row.pop("time")
            tags = {k: row.pop(k) for k in list(row) if k in tag_keys}
            fields = {k: v for k, v in row.items() if v is not None}
            found.append({"measurement": measurement, "tags": {k: v for k, v in tags.items() if v},
                          "fields": fields, "time": time_ns})
    return found


def _expected() -> list[dict[str, Any]]:
    return [{"measurement": p.measurement, "tags": {k: v for k, v in p.tags if v},
             "fields": dict(p.fields), "time": p.time_ns} for p in NASTY_POINTS]


def _comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # InfluxQL returns integers and booleans as JSON; floats that are whole come back as ints.
    out = []
    for row in rows:
        fields = {k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
                  for k, v in row["fields"].items()}
        out.append({**row, "fields": fields})
    return sorted(out, key=lambda r: r["measurement"])


def test_nasty_names_round_trip_through_v1_sink(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    sink = InfluxV1Sink(server.url, db=db)
    try:
        assert sink.write(NASTY_POINTS).written == len(NASTY_POINTS)
    finally:
        sink.close()
    assert _comparable(_read_back(server, db)) == _comparable(_expected())


def test_nasty_names_round_trip_through_v2_sink(influx_v2: tuple[InfluxV2Gateway, InfluxServer, str]) -> None:
    gateway, server, db = influx_v2
    sink = InfluxV2Sink(gateway.url, token="t0k", org="whisperengine", bucket=db)
    try:
        assert sink.write(NASTY_POINTS).written == len(NASTY_POINTS)
    finally:
        sink.close()
    assert [w.params["precision"] for w in gateway.writes()] == ["ns"]
    assert _comparable(_read_back(server, db)) == _comparable(_expected())


def test_integers_keep_their_exact_value(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    sink = InfluxV1Sink(server.url, db=db)
    sink.write([_point("ints", {}, {"big": 2**62 + 1, "neg": -(2**62) - 3})])
    sink.close()
    rows = server.query("SELECT big, neg FROM ints", db=db)
    assert rows == [{"time": T0, "big": 2**62 + 1, "neg": -(2**62) - 3, "_measurement": "ints"}]


_names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_measurements = _names.filter(lambda n: name_problem(n, what="measurement") is None)
_keys = _names.filter(lambda n: name_problem(n, what="tag key") is None and n not in RESERVED_KEYS)
_tag_values = _names.filter(lambda n: name_problem(n, what="tag value") is None)
_values = st.one_of(st.text(st.characters(codec="utf-8"), max_size=20), st.booleans(),
                    st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))
_db_numbers = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(measurement=_measurements, tags=st.dictionaries(_keys, _tag_values, max_size=3),
       fields=st.dictionaries(_keys, _values, min_size=1, max_size=3))
def test_any_name_that_passes_name_problem_round_trips(
        influx_session: InfluxServer, measurement: str, tags: dict[str, str],
        fields: dict[str, FieldValue]) -> None:
    if set(tags) & set(fields):
        return  # InfluxQL cannot tell a tag from a field of the same name when reading back
    db = f"lp{next(_db_numbers)}"
    influx_session.create_database(db)
    try:
        sink = InfluxV1Sink(influx_session.url, db=db)
        assert sink.write([_point(measurement, tags, fields)]).rejected == []
        sink.close()
        rows = influx_session.query("SELECT * FROM /.*/ GROUP BY *", db=db)
    finally:
        influx_session.execute(f'DROP DATABASE "{db}"')
    assert len(rows) == 1
    row = rows[0]
    assert (row.pop("_measurement"), row.pop("time")) == (measurement, T0)
    assert {key: row.pop(key) for key in tags} == tags
    # JSON prints a whole float without a fraction; compare floats as floats.
    assert {k: float(v) if isinstance(fields.get(k), float) else v for k, v in row.items()} == fields


_numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False))


@settings(max_examples=200, deadline=None)
@given(fields=st.dictionaries(_keys | st.sampled_from(["%", "a%d", "%%r", "x y", "a=b,c"]), _numbers,
                              min_size=1, max_size=6),
       again=st.dictionaries(st.just(0), _values), in_key_order=st.booleans())
def test_a_field_set_from_a_cached_template_is_the_line_each_value_gives(
        fields: dict[str, FieldValue], again: dict[int, FieldValue], in_key_order: bool) -> None:
    """Points of one shape reuse a ``%`` template of their field names (the collect path emits
    fields in key order); its lines must be exactly those of formatting each value alone, for
    the point that made the template, one with other value classes, and fields out of order."""
    line_protocol._templates.clear()
    if in_key_order:
        fields = dict(sorted(fields.items()))
    other = dict(fields)
    if again:  # the same names, one value of another class (a bool, a string, an int for a float)
        other[next(iter(other))] = again[0]

    def expected(point_fields: dict[str, FieldValue]) -> str:
        text = ",".join(f"{escape_key(k)}={format_value(v)}" for k, v in sorted(point_fields.items()))
        return f"m {text} 1"

    for point_fields in (fields, fields, other, fields):
        assert encode_point(Point("m", (), point_fields, 1)) == expected(point_fields)
    assert bool(line_protocol._templates[tuple(fields)]) == (in_key_order or list(fields) == sorted(fields))


def test_a_large_field_set_is_formatted_value_by_value_and_not_cached() -> None:
    line_protocol._templates.clear()
    fields: dict[str, FieldValue] = {f"f{i:03d}": float(i) for i in range(65)}
    text = ",".join(f"f{i:03d}={float(i)!r}" for i in range(65))
    assert encode_point(Point("m", (), fields, 1)) == f"m {text} 1"
    assert line_protocol._templates == {}
    del fields["f064"]   # 64 fields: cached
    assert encode_point(Point("m", (), fields, 1)) == f"m {text.rsplit(',', 1)[0]} 1"
    assert list(line_protocol._templates) == [tuple(fields)]


def _parsed(line: bytes) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """(head, [(field key, value text)], time) of a line whose fields are numbers (split where
    a space, comma or equals sign is not escaped)."""
    head, fields, time_text = re.split(rb"(?<!\\) ", line)
    pairs = [re.split(rb"(?<!\\)=", pair) for pair in re.split(rb"(?<!\\),", fields)]
    return head, [(key, value) for key, value in pairs], time_text


def _same_number(batched: bytes, alone: bytes) -> bool:
    """The same int (same text), or floats that read back bit for bit alike (``-0.0`` too)."""
    if alone.endswith(b"i"):
        return batched == alone
    return struct.pack("<d", float(batched)) == struct.pack("<d", float(alone))


_numbers = st.one_of(st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                     st.sampled_from([1e-05, 1e16, 5e-324, 1.7976931348623157e308, -0.0, 0.1, 26.0]))


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.tuples(st.dictionaries(st.sampled_from(["a", "b b", "c,d", "e=f", "100%"]), _numbers,
                                               min_size=1),
                               st.sampled_from(["u1", "u 2", ""])), min_size=1, max_size=6))
def test_a_body_of_number_fields_says_what_each_point_alone_says(
        rows: list[tuple[dict[str, Any], str]]) -> None:
    """encode_points formats the numbers of a whole body at once: every line must carry the same
    head, names and time as encode_point's, and numbers that read back exactly alike."""
    points = [_point("m x", {"user_id": user}, dict(sorted(fields.items())), T0 + n)
              for n, (fields, user) in enumerate(rows)]
    batched = encode_points(points).split(b"\n")
    alone = [encode_point(point).encode() for point in points]
    assert len(batched) == len(alone)
    for mine, theirs in zip(batched, alone, strict=True):
        head, fields, time_text = _parsed(mine)
        their_head, their_fields, their_time = _parsed(theirs)
        assert (head, time_text, [key for key, _ in fields]) == (their_head, their_time,
                                                                 [key for key, _ in their_fields])
        assert all(_same_number(value, their_value)
                   for (_, value), (_, their_value) in zip(fields, their_fields, strict=True))


@pytest.mark.parametrize("odd", [math.nan, math.inf, -math.inf, 2**64, -(2**63) - 1])
def test_a_body_with_a_non_finite_float_or_a_huge_int_is_written_point_by_point(odd: float | int) -> None:
    """orjson writes NaN as null and refuses ints beyond 64 bits: such a body is encoded as
    encode_point writes each point, so InfluxDB refuses exactly the bad point (bisection)."""
    points = [_point("m", {}, {"a": 1.5, "b": 2}, T0), _point("m", {}, {"a": odd, "b": 3}, T0 + 1),
              _point("m", {}, {"x": "text"}, T0 + 2)]
    assert encode_points(points) == "\n".join(encode_point(point) for point in points).encode()
    assert b"null" not in encode_points(points)


def test_a_body_mixing_number_points_and_others_keeps_their_order() -> None:
    points = [_point("m", {}, {"a": 0.5}, 1), _point("m", {}, {"s": "x", "t": True}, 2),
              _point("m", {}, {"b": 0.25, "a": 1}, 3), _point("m", {}, {"a": 7}, 4)]  # unsorted fields: alone
    assert encode_points(points) == b'm a=0.5 1\nm s="x",t=true 2\nm a=1i,b=0.25 3\nm a=7i 4'


def test_floats_of_a_batched_body_read_back_exactly_from_influxd(influx: tuple[InfluxServer, str]) -> None:
    """The digits orjson writes (``0.00001``, ``1e+16``, subnormals) are what influxd reads.
    (``-0.0`` is left out: InfluxQL's JSON answers it as ``0``, whoever wrote it.)"""
    server, db = influx
    edges = [1e-05, 1e16, 5e-324, 1.7976931348623157e308, 0.1, 26.0, 1 / 3, 2.5e-300, -123456.789]
    points = [_point("edges", {"n": str(n)}, {"v": value, "w": n}, T0) for n, value in enumerate(edges)]
    body = encode_points(points)
    assert b"v=0.00001," in body and b"v=1e+16," in body  # spelt unlike repr: the batched path ran
    server.write_lines(body.decode(), db=db)
    rows = server.query('SELECT v, w FROM edges GROUP BY "n"', db=db)
    found = {row["w"]: float(row["v"]) for row in rows}
    assert {n: struct.pack("<d", value) for n, value in found.items()} == {
        n: struct.pack("<d", value) for n, value in enumerate(edges)}
