"""Window points written to a real InfluxDB: what a dashboard reads equals the reference model.

A seeded workload (catalogue and uncatalogued measurements, every kind, names and string values
full of line-protocol specials, late events, a restore from a snapshot midway) is aggregated,
each flush is written as line protocol to InfluxDB 1.x and committed only after the write
succeeded. InfluxDB would reject a batch whose field types conflict with earlier windows, so the
writes succeeding is itself part of the check; then the stored points are read back and compared
with the reference model, and each field's stored type with the documented one.
"""

from __future__ import annotations

import math
import random
from typing import Any

from consumer.aggregation.validate import validate
from consumer.aggregation.window import ShardWindows
from consumer.core.model import Event, Position
from consumer.sinks.line_protocol import encode_points
from tests.reference_model import ReferenceModel
from tests.services import InfluxServer

T0 = 1_600_000_000.0
CONFIG: dict[str, Any] = {"window_s": 10.0, "grace_s": 2.0, "allowed_lateness_s": 60.0, "max_future_s": 60.0,
                          "max_series": 6, "overflow_tags": ("user_id",)}
_WEIRD = ("plain", "with space", "com,ma", "eq=ual", 'quo"te', "back\\slash", "ユーザー", "emoji 🙂")


def _raw_event(rng: random.Random, clock: float) -> list[Any]:
    ts = clock - rng.choice((0.0, 0.0, 0.5, 3.0, 15.0, 45.0, 90.0))  # some late, some too late
    choice = rng.randrange(4)
    if choice == 0:
        user = f"u{rng.randrange(10)}"
        return [0, "attachment_monitoring", ts,
                {"user_id": user, "bot_name": rng.choice(("elena", "marcus")), "risk_level": "LOW"},
                {"emotional_intensity": rng.random(), "consecutive_days": rng.randrange(30),
                 "intervention_provided": rng.random() < 0.3}]
    if choice == 1:
        kind = rng.choice((1, 2, 3))
        value: dict[str, Any] = ({"k": rng.randrange(1, 5)} if kind == 1 else {"g": rng.uniform(-5, 5)}
                                 if kind == 2 else {"v": round(rng.uniform(0.1, 500), 3)})
        return [kind, "weird meas,urement", ts, {rng.choice(_WEIRD): rng.choice(_WEIRD)}, value]
    if choice == 2:
        text = rng.choice(("line\nbreak", 'say "hi"', "c:\\path\\", "ok"))
        return [0, "notes", ts, {"bot_name": rng.choice(_WEIRD)}, {"text": text, "score": rng.randrange(10)}]
    return [1, "engagement_engine_telemetry", ts, {"bot_name": "elena", "component": "engine"},
            {"interventions_generated": rng.randrange(3)}]


_MEASUREMENTS = ("attachment_monitoring", "weird meas,urement", "notes", "engagement_engine_telemetry")
PointKey = tuple[str, tuple[tuple[str, str], ...], int]


def _stored(server: InfluxServer, db: str) -> dict[PointKey, dict[str, Any]]:
    """Points as InfluxDB returns them (GROUP BY * reports other series' tag keys as "": dropped)."""
    points: dict[PointKey, dict[str, Any]] = {}
    for measurement in _MEASUREMENTS:
        quoted = measurement.replace("\\", "\\\\").replace('"', '\\"')
        for row in server.query(f'SELECT * FROM "{quoted}" GROUP BY *', db=db):
            keys = {key for key in row if key not in ("time", "_measurement")}
            tags = tuple(sorted((k, row[k]) for k in keys if k not in _FIELDS and row[k] not in ("", None)))
            fields = {k: row[k] for k in keys if k in _FIELDS and row[k] is not None}
            points[(measurement, tags, row["time"])] = fields
    return points


_FIELDS: set[str] = set()


def test_points_in_influxdb_equal_the_reference_model(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    rng = random.Random(20240611)
    windows = ShardWindows(**CONFIG)
    model = ReferenceModel(**CONFIG)
    clock = T0
    writes = 0
    for step in range(1500):
        clock += rng.choice((0.0, 0.1, 0.5, 1.0))
        event = validate(_raw_event(rng, clock), Position(step, 0, 0))
        assert isinstance(event, Event), event
        result, reference = windows.record(event, clock), model.record(event, clock)
        assert (None if result is None else result[0]) == (None if reference is None else reference[0])
        if step % 50 == 49:
            flush = windows.collect_due(clock, idle=step % 100 == 99)
            if flush.points:
                server.write_lines(encode_points(flush.points).decode(), db=db)  # raises on a 400
                writes += 1
            windows.commit(flush)
        if step == 700:
            windows = ShardWindows.restore(windows.snapshot(), **CONFIG)
    final = windows.collect_all()
    server.write_lines(encode_points(final.points).decode(), db=db)
    windows.commit(final)
    assert writes > 10 and windows.late_events > 0

    expected = model.points()
    _FIELDS.update(name for fields in expected.values() for name in fields)
    stored = _stored(server, db)
    assert set(stored) == set(expected)
    for key, fields in expected.items():
        got = stored[key]
        assert set(got) == set(fields), key
        for name, want in fields.items():
            if isinstance(want, float) and name.endswith(("_p50", "_p90", "_p99")):
                assert abs(got[name] - want) <= 0.01 * abs(want), (key, name)
            elif isinstance(want, float):
                assert math.isclose(got[name], want, rel_tol=1e-9, abs_tol=1e-12), (key, name)
            else:
                assert got[name] == want, (key, name)

    types = {(row["_measurement"], row["fieldKey"]): row["fieldType"]
             for row in server.query("SHOW FIELD KEYS", db=db)}
    assert types[("attachment_monitoring", "event_count")] == "integer"
    assert types[("attachment_monitoring", "emotional_intensity")] == "float"
    assert types[("attachment_monitoring", "consecutive_days")] == "float"
    assert types[("attachment_monitoring", "intervention_provided")] == "integer"
    assert types[("notes", "text")] == "string"
    assert types[("notes", "score_sum")] == "float"
    assert types[("engagement_engine_telemetry", "interventions_generated")] == "integer"
    assert types[("weird meas,urement", "v_p99")] == "float"
    assert types[("weird meas,urement", "v_count")] == "integer"
