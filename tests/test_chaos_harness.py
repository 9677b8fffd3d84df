"""The chaos harness checked on its own: the oracle must be right before it can judge the worker."""

from __future__ import annotations

import itertools
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from consumer.aggregation.catalogue import CATALOGUE, Semantics
from producers import keys, wire
from tests import chaos_harness as ch
from tests.chaos_gateway import RecordingGateway
from tests.services import InfluxServer, RedisServer

T0 = 1_764_000_000  # a fixed, window-aligned epoch second: the workload is a pure function of it


def test_workload_is_deterministic_for_a_seed() -> None:
    first = ch.make_workload(7, t0_s=T0, events=800)
    again = ch.make_workload(7, t0_s=T0, events=800)
    other = ch.make_workload(8, t0_s=T0, events=800)
    assert first == again
    assert first.events != other.events


def test_workload_shape_many_series_windows_and_kinds() -> None:
    workload = ch.make_workload(1, t0_s=T0)
    events = workload.events
    assert len(events) == 6000
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    assert len({e.ts for e in events}) == len(events), "unique event times: 'last' never ties"
    series = {(e.measurement, tuple(sorted(e.tags.items()))) for e in events}
    assert 150 <= len(series) <= 400
    assert {e.measurement for e in events} == {"attachment_monitoring", "vector_classification",
                                              "engagement_engine_telemetry", "trust_recovery_telemetry"}
    assert {e.kind for e in events} == {wire.KIND_EMIT, wire.KIND_COUNT, wire.KIND_GAUGE}
    value_types = {type(v) for e in events for v in e.fields.values()}
    assert value_types == {bool, int, float}
    windows = {workload.window_of(e) for e in events}
    assert windows == set(range(20))
    for event in events:  # never within 2.5% of a window edge
        offset = (event.ts - T0) % workload.window_s
        assert 0.25 <= offset <= 9.75
    assert max(e.ts for e in events) - min(e.ts for e in events) < 300  # within default lateness


def test_high_cardinality_option_keeps_the_default_and_makes_thousands_of_series() -> None:
    # the default mix is the historical one, so existing seeds still mean the same events
    assert ch.event_mix(None) == (0.40, 0.70, 0.85)
    assert ch.make_workload(7, t0_s=T0, events=800, attachment_share=None) == ch.make_workload(
        7, t0_s=T0, events=800)
    workload = ch.make_workload(7, t0_s=T0, windows=2, events=8000, users=3000, attachment_share=0.9)
    share = sum(e.measurement == "attachment_monitoring" for e in workload.events) / len(workload.events)
    assert 0.88 <= share <= 0.92
    assert {e.measurement for e in workload.events} == {"attachment_monitoring", "vector_classification",
                                                       "engagement_engine_telemetry",
                                                       "trust_recovery_telemetry"}
    points = ch.reference_points(workload.events, workload.window_s)
    per_window = ch.series_per_window(points)
    assert min(n for (m, _), n in per_window.items() if m == "attachment_monitoring") >= 2000
    assert sum(per_window.values()) == len(points)
    with pytest.raises(ValueError):
        ch.event_mix(1.0)


def test_first_window_is_aligned_and_in_the_past() -> None:
    now = time.time()
    t0 = ch.first_window_for(now, 10.0, 20)
    assert t0 % 10 == 0
    assert t0 + 20 * 10 <= now - 10


def test_chunks_split_by_window_and_keep_every_event() -> None:
    workload = ch.make_workload(3, t0_s=T0, events=1000)
    chunks = workload.chunks(5)
    assert sum(len(c) for c in chunks) == 1000
    for before, after in itertools.pairwise(chunks):
        assert max(e.ts for e in before) < min(e.ts for e in after)


def test_reference_semantics_agree_with_the_catalogue() -> None:
    names = {ch.MEAN: Semantics.MEAN, ch.TRUE: Semantics.TRUE, ch.LAST: Semantics.LAST, ch.SUM: Semantics.SUM}
    for (measurement, field), semantics in ch.EMIT_SEMANTICS.items():
        assert CATALOGUE[measurement].semantics_of(field) is names[semantics], (measurement, field)


def _ev(kind: int, measurement: str, ts: float, fields: dict[str, ch.FieldValue],
        **tags: str) -> ch.WorkEvent:
    return ch.WorkEvent(kind, measurement, ts, dict(tags), fields)


def test_reference_on_a_hand_computed_example() -> None:
    a = {"user_id": "u1", "bot_name": "elena", "risk_level": "LOW"}
    events = [
        _ev(wire.KIND_EMIT, "attachment_monitoring", T0 + 1.0,
            {"emotional_intensity": 0.5, "consecutive_days": 3, "intervention_provided": True}, **a),
        _ev(wire.KIND_EMIT, "attachment_monitoring", T0 + 4.0,
            {"emotional_intensity": 0.25, "interaction_frequency": 12.0, "consecutive_days": 9,
             "intervention_provided": False}, **a),
        _ev(wire.KIND_EMIT, "attachment_monitoring", T0 + 2.0,  # earlier in event time: not "last"
            {"emotional_intensity": 1.0, "consecutive_days": 30, "intervention_provided": True}, **a),
        _ev(wire.KIND_EMIT, "attachment_monitoring", T0 + 12.0, {"dependency_count": 4}, **a),
        _ev(wire.KIND_COUNT, "engagement_engine_telemetry", T0 + 3.0, {"interventions_generated": 2},
            bot_name="elena", component="engine"),
        _ev(wire.KIND_COUNT, "engagement_engine_telemetry", T0 + 5.0, {"interventions_generated": 5},
            bot_name="elena", component="engine"),
        _ev(wire.KIND_GAUGE, "trust_recovery_telemetry", T0 + 6.0, {"trust_value": 0.75},
            bot_name="elena", component="c", severity="minor"),
        _ev(wire.KIND_GAUGE, "trust_recovery_telemetry", T0 + 5.5, {"trust_value": 0.5},
            bot_name="elena", component="c", severity="minor"),
        _ev(wire.KIND_EMIT, "trust_recovery_telemetry", T0 + 7.0, {"recoveries_activated": 2},
            bot_name="elena", component="c", severity="minor"),
    ]
    tags = tuple(sorted(a.items()))
    trust = (("bot_name", "elena"), ("component", "c"), ("severity", "minor"))
    assert ch.reference_points(events, 10.0) == {
        ("attachment_monitoring", tags, T0 * 10**9): {
            "event_count": 3,
            "emotional_intensity": 1.75 / 3, "emotional_intensity_min": 0.25,
            "emotional_intensity_max": 1.0, "emotional_intensity_sum": 1.75,
            "interaction_frequency": 12.0, "interaction_frequency_min": 12.0,
            "interaction_frequency_max": 12.0, "interaction_frequency_sum": 12.0,
            "consecutive_days": 9.0, "intervention_provided": 2,
        },
        ("attachment_monitoring", tags, (T0 + 10) * 10**9): {
            "event_count": 1, "dependency_count": 4.0, "dependency_count_min": 4.0,
            "dependency_count_max": 4.0, "dependency_count_sum": 4.0,
        },
        ("engagement_engine_telemetry", (("bot_name", "elena"), ("component", "engine")), T0 * 10**9): {
            "event_count": 2, "interventions_generated": 7,
        },
        ("trust_recovery_telemetry", trust, T0 * 10**9): {
            "event_count": 3, "trust_value": 0.75, "recoveries_activated": 2,
        },
    }


def test_reference_value_types_follow_the_design() -> None:
    points = ch.reference_points(ch.make_workload(2, t0_s=T0, events=2000).events, 10.0)
    for (_measurement, _tags, _time), fields in points.items():
        assert type(fields["event_count"]) is int
        for name, value in fields.items():
            if name.endswith(("_min", "_max", "_sum")) or name in ("emotional_intensity", "trust_value",
                                                                   "consecutive_days", "confidence"):
                assert type(value) is float, name
            if name in ("intervention_provided", "classification_accurate", "declines_detected",
                        "recoveries_activated", "interventions_generated"):
                assert type(value) is int, name
    assert ch.event_total(points) == 2000


def test_compare_finds_every_kind_of_difference() -> None:
    key = ("m", (("t", "a"),), 0)
    expected = {key: {"event_count": 3, "x": 0.1 + 0.2}}
    assert ch.compare(expected, {key: {"event_count": 3, "x": 0.3}}) == []  # within 1e-9
    assert ch.compare(expected, {key: {"event_count": 3, "x": 0.3001}}) != []
    assert ch.compare(expected, {key: {"event_count": 4, "x": 0.3}}) != []
    assert ch.compare(expected, {key: {"event_count": 3}}) != []
    assert ch.compare(expected, {}) == [f"missing point {key}"]
    other = ("m", (("t", "b"),), 0)
    assert len(ch.compare(expected, {key: expected[key], other: {"event_count": 1}})) == 1
    float_stored_as_int = {("m", "event_count"): "integer", ("m", "x"): "integer"}
    assert ch.compare({key: {"event_count": 3, "x": 3.0}}, {key: {"event_count": 3, "x": 3}},
                      float_stored_as_int) == [f"{key}: x stored as integer, expected float"]


def test_raw_sender_writes_decodable_atomic_batches(redis_server: RedisServer) -> None:
    client = redis_server.client()
    workload = ch.make_workload(4, t0_s=T0, events=500)
    sender = ch.RawSender(client, batch_events=40)
    entries = sender.send(workload.events[:300]) + sender.send(workload.events[300:])
    assert entries == sum(ch.stream_lengths(client)) == len(sender.entries)
    received: list[ch.WorkEvent] = []
    for shard in range(ch.SHARDS):
        sequences = []
        for _id, fields in client.xrange(keys.stream_key(ch.PREFIX, shard)):
            batch = wire.decode_entry(fields)
            sequences.append(batch.sequence)
            assert batch.producer_id == sender.producer_id
            for kind, measurement, ts, tags, values in batch.events:
                event = ch.WorkEvent(kind, measurement, ts, tags, values)
                assert event.shard() == shard
                received.append(event)
        assert sequences == list(range(1, len(sequences) + 1))
    assert sorted(received, key=lambda e: e.ts) == list(workload.events)
    sender.resend(0)
    assert sum(ch.stream_lengths(client)) == entries + 1


def _line(key: ch.PointKey, fields: dict[str, ch.FieldValue]) -> str:
    measurement, tags, time_ns = key
    def value(v: ch.FieldValue) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        return f"{v}i" if isinstance(v, int) else repr(v)
    tag_text = "".join(f",{k}={v}" for k, v in tags)
    return f"{measurement}{tag_text} {','.join(f'{k}={value(v)}' for k, v in fields.items())} {time_ns}"


def test_read_back_from_influx_equals_what_was_written(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    expected = ch.reference_points(ch.make_workload(5, t0_s=T0, events=1500).events, 10.0)
    server.write_lines("\n".join(_line(k, dict(v)) for k, v in expected.items()), db=db)
    server.write_lines(f"{ch.SELF_MEASUREMENT},worker=w,shard=0 events_in=5i {T0 * 10**9}", db=db)
    actual = ch.read_points(server, db)
    assert ch.compare(expected, actual, ch.field_types(server, db)) == []
    assert ch.event_total(actual) == 1500
    some_key = next(iter(expected))
    server.write_lines(_line(some_key, {"event_count": 999}), db=db)
    assert ch.compare(expected, ch.read_points(server, db)) == [
        f"{some_key}: event_count=999, expected {expected[some_key]['event_count']!r}"]


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_gateway_records_and_holds_writes_before_and_after_influx(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    gateway = RecordingGateway(server.url).start()
    try:
        assert _post(f"{gateway.url}/write?db={db}", b"m f=1i 1000000000") == 204
        gateway.hold_before.set()
        statuses: list[int] = []
        thread = threading.Thread(target=lambda: statuses.append(
            _post(f"{gateway.url}/write?db={db}", b"m f=2i 2000000000")))
        thread.start()
        held = gateway.wait_held(timeout_s=10)
        assert held.held == "before" and not held.applied
        assert len(server.query("SELECT f FROM m", db=db)) == 1  # not in InfluxDB yet
        gateway.release()
        thread.join(timeout=10)
        gateway.hold_after.set()
        thread = threading.Thread(target=lambda: statuses.append(
            _post(f"{gateway.url}/write?db={db}", b"m f=3i 3000000000")))
        thread.start()
        held = gateway.wait_held(timeout_s=10)
        assert held.held == "after" and held.applied and not held.delivered
        assert len(server.query("SELECT f FROM m", db=db)) == 3  # applied, reply withheld
        gateway.release()
        thread.join(timeout=10)
        assert statuses == [204, 204]
        assert [w.body for w in gateway.writes] == [b"m f=1i 1000000000", b"m f=2i 2000000000",
                                                   b"m f=3i 3000000000"]
        ch.wait_for(lambda: all(w.delivered for w in gateway.writes), "replies delivered", 5.0)
    finally:
        gateway.stop()


def test_kill_proves_the_process_died_of_sigkill(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time, sys; sys.argv.append('chaos-sleeper'); time.sleep(60)"]
    process = ch.WorkerProcess({}, tmp_path / "sleeper.log", command=sleeper).start()
    process.pause()
    assert ch.proc_state(process.pid) == "T"
    record = process.kill("test")
    assert record.returncode == -9 and not process.alive()
    exits = ch.WorkerProcess({}, tmp_path / "exits.log", command=[sys.executable, "-c", "pass"]).start()
    exits.proc.wait(timeout=10)  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="exited on its own"):
        exits.kill()


def test_late_chunks_hold_events_back_and_lose_none() -> None:
    workload = ch.make_workload(6, t0_s=T0, events=2000)
    chunks = ch.late_chunks(workload, 10, late_per_chunk=12, seed=1)
    sent = [e for chunk in chunks for e in chunk]
    assert sorted(sent, key=lambda e: e.ts) == list(workload.events)
    plain = workload.chunks(10)
    late_total = 0
    for number, chunk in enumerate(chunks):
        own_windows = {workload.window_of(e) for e in plain[number]}
        late = [e for e in chunk if workload.window_of(e) not in own_windows]
        assert chunk[:len(late)] == late, "late events come first in their chunk"
        assert all(e.ts < min(x.ts for x in plain[number]) for e in late)
        late_total += len(late)
    assert late_total == 12 * 9


def test_entry_versions_end_at_the_reference_and_catch_double_counting(redis_server: RedisServer) -> None:
    workload = ch.make_workload(9, t0_s=T0, events=1500)
    sender = ch.RawSender(redis_server.client(), batch_events=30)
    for chunk in ch.late_chunks(workload, 5, late_per_chunk=10, seed=2):
        sender.send(chunk)
    versions = ch.entry_versions(sender, 10.0)
    reference = ch.reference_points(workload.events, 10.0)
    assert {key: values[-1] for key, values in versions.items()} == reference
    rewritten = [key for key, values in versions.items() if len(values) > 1]
    assert rewritten, "late events give some points more than one value"
    key = rewritten[0]
    first = dict(versions[key][0])
    assert ch.check_written_values([(key, first), (key, reference[key])], versions) == []
    doubled = {**reference[key], "event_count": int(reference[key]["event_count"]) * 2}
    problems = ch.check_written_values([(key, doubled)], versions)
    assert len(problems) == 1 and "matches none" in problems[0]
    stranger = (("m", (), 0), {"event_count": 1})
    assert "not in the workload" in ch.check_written_values([stranger], versions)[0]


def test_parse_write_reads_escaped_line_protocol() -> None:
    from tests.chaos_gateway import WriteRecord, parse_write

    body = (b'my\\ m,a\\=b=c\\,d,z=1 f=1.5,g=3i,h=t,s="x \\"y\\" z" 1700000000\n'
            b'\nother n=2i 1700000001')
    record = WriteRecord(0, "gw", 0.0, body, {"precision": "s"})
    assert parse_write(record) == [
        (("my m", (("a=b", "c,d"), ("z", "1")), 1_700_000_000 * 10**9),
         {"f": 1.5, "g": 3, "h": True, "s": 'x "y" z'}),
        (("other", (), 1_700_000_001 * 10**9), {"n": 2}),
    ]


def test_stale_writes_flags_an_older_value_put_back_after_a_newer_one() -> None:
    from tests.chaos_gateway import WriteRecord, stale_writes

    key = ("m", (("t", "a"),), 10**9)
    versions = {key: [{"event_count": 1}, {"event_count": 2}, {"event_count": 3}]}

    def write(number: int, label: str, count: int, arrived: float, done: float) -> WriteRecord:
        return WriteRecord(number, label, arrived, f"m,t=a event_count={count}i 1000000000".encode(), {},
                           upstream_status=204, upstream_done_s=done)

    new_owner = write(0, "w2", 3, arrived=1.0, done=1.1)
    zombie_stale = write(1, "w1", 2, arrived=2.0, done=2.1)
    zombie_current = write(2, "w1", 3, arrived=3.0, done=3.1)
    overlapping = write(3, "w1", 1, arrived=1.05, done=1.2)  # sent before the newer one landed
    writes = [new_owner, zombie_stale, zombie_current, overlapping]
    problems = stale_writes(writes, versions, lambda w: w.label == "w1")
    assert len(problems) == 1 and problems[0].startswith("write #1 (w1) put back version 1")
    assert stale_writes(writes, versions, lambda w: w.label == "w2") == []
