"""The chaos harness: a fixed workload with a known exact result, and a worker we can kill.

Fault tests need an oracle that does not share code with what it checks. This module holds:

* :func:`make_workload`: a deterministic set of events (seed + first window) over several seed
  measurements, with bool, numeric, count and gauge fields, a few hundred series and many windows,
  all in the past and within the allowed lateness of each other;
* :func:`reference_points`: the InfluxDB points those events must produce, computed in plain
  Python straight from the aggregation table in DESIGN.md (it never imports the worker);
* :func:`send_raw`: the events written to Redis as wire-format stream entries, one ``MULTI`` per
  call, so a worker never sees half of a chunk;
* :class:`WorkerProcess`: ``python -m consumer`` as a child process, killed with SIGKILL by PID,
  and the proof that it died of that signal;
* :func:`read_points` and :func:`compare`: everything in InfluxDB read back with InfluxQL and
  compared field by field (integers exactly, floats to a relative 1e-9).
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import redis

from producers import keys, wire
from tests.services import InfluxServer

REPO: Final = Path(__file__).resolve().parent.parent
PREFIX: Final = "telemetry"
SHARDS: Final = 4
SELF_MEASUREMENT: Final = "telemetry_pipeline"
REL_TOL: Final = 1e-9

FieldValue = bool | int | float | str
Tags = tuple[tuple[str, str], ...]
PointKey = tuple[str, Tags, int]
"""(measurement, sorted tags, window start in ns): the identity InfluxDB overwrites on."""

# How an ``emit`` of each field used here aggregates, written out from the seed's catalogue table
# rather than imported, so the oracle stays independent (a test checks the two agree).
MEAN: Final = "mean"
TRUE: Final = "true_count"
LAST: Final = "last"
SUM: Final = "sum"
EMIT_SEMANTICS: Final[dict[tuple[str, str], str]] = {
    ("attachment_monitoring", "emotional_intensity"): MEAN,
    ("attachment_monitoring", "interaction_frequency"): MEAN,
    ("attachment_monitoring", "dependency_count"): MEAN,
    ("attachment_monitoring", "consecutive_days"): LAST,
    ("attachment_monitoring", "intervention_provided"): TRUE,
    ("vector_classification", "confidence"): MEAN,
    ("vector_classification", "results_quality"): MEAN,
    ("vector_classification", "query_length"): MEAN,
    ("vector_classification", "classification_accurate"): TRUE,
    ("trust_recovery_telemetry", "recoveries_activated"): SUM,
}

BOTS: Final = ("elena", "marcus", "jake")
RISK_LEVELS: Final = ("LOW", "MEDIUM", "HIGH")
QUERY_TYPES: Final = ("content_semantic", "emotional_context", "semantic_conceptual", "hybrid_multi",
                      "temporal_chronological")
PRIMARY_VECTORS: Final = ("content", "emotion", "semantic")
STRATEGIES: Final = ("single_vector", "multi_vector_fusion")
ENGAGEMENT_FIELDS: Final = ("analyze_engagement_potential_count", "analyze_conversation_engagement_count",
                            "interventions_generated", "total_recommendations")
SEVERITIES: Final = ("minor", "moderate", "severe")


@dataclass(frozen=True, slots=True)
class WorkEvent:
    """One producer event: the same five parts as the wire format."""

    kind: int
    measurement: str
    ts: float
    tags: dict[str, str]
    fields: dict[str, FieldValue]

    def wire(self) -> wire.WireEvent:
        return (self.kind, self.measurement, self.ts, self.tags, self.fields)

    def shard(self, shards: int = SHARDS) -> int:
        return keys.shard_of_series(self.measurement, self.tags, shards)


@dataclass(frozen=True, slots=True)
class Workload:
    """A deterministic workload: events in event-time order, and where its windows lie."""

    seed: int
    t0_s: int
    window_s: float
    windows: int
    events: tuple[WorkEvent, ...]

    @property
    def end_s(self) -> float:
        return self.t0_s + self.windows * self.window_s

    def window_of(self, event: WorkEvent) -> int:
        return int((event.ts - self.t0_s) // self.window_s)

    def chunks(self, count: int) -> list[list[WorkEvent]]:
        """Split into ``count`` chunks of consecutive windows (each chunk is later than the last)."""
        per = math.ceil(self.windows / count)
        out: list[list[WorkEvent]] = [[] for _ in range(count)]
        for event in self.events:
            out[min(self.window_of(event) // per, count - 1)].append(event)
        return out


def first_window_for(now_s: float, window_s: float, windows: int) -> int:
    """The first window start so ``windows`` whole windows end at least one window before now."""
    window_us = round(window_s * 1_000_000)
    now_us = int(now_s * 1_000_000)
    return (now_us // window_us - windows - 2) * window_us // 1_000_000


DEFAULT_MIX: Final = (0.40, 0.70, 0.85)
"""Cumulative shares of attachment checks, vector classifications and engagement counts (the
rest are trust-recovery events): one ``rng.random()`` roll picks the kind of each event."""


def event_mix(attachment_share: float | None) -> tuple[float, float, float]:
    """:data:`DEFAULT_MIX` with attachment checks at ``attachment_share`` and the other kinds
    keeping their proportions; ``None`` is the default mix itself, unchanged to the last bit, so
    existing seeds produce the same events."""
    if attachment_share is None:
        return DEFAULT_MIX
    if not 0.0 < attachment_share < 1.0:
        raise ValueError(f"attachment_share={attachment_share!r} must be between 0 and 1")
    scale = (1.0 - attachment_share) / (1.0 - DEFAULT_MIX[0])
    vector, engagement = (attachment_share + (edge - DEFAULT_MIX[0]) * scale for edge in DEFAULT_MIX[1:])
    return (attachment_share, vector, engagement)


def make_workload(seed: int, *, t0_s: int, window_s: float = 10.0, windows: int = 20,
                  events: int = 6000, users: int = 40,
                  attachment_share: float | None = None) -> Workload:
    """A deterministic workload of ``events`` events over ``windows`` windows from ``t0_s``.

    By default about 40% attachment checks (``users`` x 3 risk levels: 120 series), 30% vector
    classifications (90 series), 15% engagement counts and 15% trust-recovery counts, emits and
    gauges; ``attachment_share`` (see :func:`event_mix`) with many ``users`` makes a
    high-cardinality workload, thousands of series per window. Event times are unique
    microseconds, never within 2.5% of a window edge, so no rounding can move an event across a
    boundary and "last" never has to break a tie.
    """
    mix = event_mix(attachment_share)
    rng = random.Random(seed)
    window_us = round(window_s * 1_000_000)
    margin_us = max(1, window_us // 40)
    used: set[int] = set()
    out: list[WorkEvent] = []
    for _ in range(events):
        while True:
            us = rng.randrange(windows) * window_us + rng.randrange(margin_us, window_us - margin_us)
            if us not in used:
                used.add(us)
                break
        ts = (t0_s * 1_000_000 + us) / 1_000_000
        out.append(_event(rng, ts, users, mix))
    out.sort(key=lambda e: e.ts)
    return Workload(seed=seed, t0_s=t0_s, window_s=window_s, windows=windows, events=tuple(out))


def _event(rng: random.Random, ts: float, users: int,
           mix: tuple[float, float, float] = DEFAULT_MIX) -> WorkEvent:
    roll = rng.random()
    if roll < mix[0]:
        user = rng.randrange(users)
        tags = {"user_id": f"u{user:03d}", "bot_name": BOTS[user % len(BOTS)],
                "risk_level": rng.choice(RISK_LEVELS)}
        fields: dict[str, FieldValue] = {
            "emotional_intensity": rng.random(),
            "dependency_count": rng.randint(0, 14),
            "consecutive_days": rng.randint(0, 30),
            "intervention_provided": rng.random() < 0.3,
        }
        if rng.random() < 0.8:  # an event without a field counts in event_count only
            fields["interaction_frequency"] = round(rng.uniform(0.0, 60.0), 3)
        return WorkEvent(wire.KIND_EMIT, "attachment_monitoring", ts, tags, fields)
    if roll < mix[1]:
        tags = {"bot_name": rng.choice(BOTS), "query_type": rng.choice(QUERY_TYPES),
                "primary_vector": rng.choice(PRIMARY_VECTORS), "strategy": rng.choice(STRATEGIES)}
        fields = {"confidence": rng.random(), "results_quality": rng.uniform(0.2, 1.0),
                  "query_length": rng.randint(3, 400), "classification_accurate": rng.random() < 0.7}
        return WorkEvent(wire.KIND_EMIT, "vector_classification", ts, tags, fields)
    if roll < mix[2]:
        tags = {"bot_name": rng.choice(BOTS), "component": rng.choice(("engine", "scheduler"))}
        return WorkEvent(wire.KIND_COUNT, "engagement_engine_telemetry", ts, tags,
                         {rng.choice(ENGAGEMENT_FIELDS): rng.randint(1, 5)})
    tags = {"bot_name": rng.choice(BOTS), "component": "trust_recovery", "severity": rng.choice(SEVERITIES)}
    sub = rng.random()
    if sub < 0.4:
        return WorkEvent(wire.KIND_COUNT, "trust_recovery_telemetry", ts, tags,
                         {"declines_detected": rng.randint(1, 3)})
    if sub < 0.7:
        return WorkEvent(wire.KIND_GAUGE, "trust_recovery_telemetry", ts, tags, {"trust_value": rng.random()})
    return WorkEvent(wire.KIND_EMIT, "trust_recovery_telemetry", ts, tags,
                     {"recoveries_activated": rng.randint(0, 2)})


# --- the oracle ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Acc:
    """One series-window being accumulated by the reference."""

    events: int = 0
    numbers: dict[str, list[float]] = field(default_factory=dict)
    trues: dict[str, int] = field(default_factory=dict)
    sums: dict[str, int] = field(default_factory=dict)
    lasts: dict[str, tuple[float, int, float]] = field(default_factory=dict)


def _semantics(event: WorkEvent, name: str, value: FieldValue) -> str:
    if event.kind == wire.KIND_COUNT:
        return SUM
    if event.kind == wire.KIND_GAUGE:
        return LAST
    declared = EMIT_SEMANTICS.get((event.measurement, name))
    if declared is not None:
        return declared
    if isinstance(value, bool):
        return TRUE
    if isinstance(value, int | float):
        return MEAN
    raise ValueError(f"the reference does not model {name}={value!r}")


def _record(acc: _Acc, event: WorkEvent, order: int) -> None:
    acc.events += 1
    for name, value in event.fields.items():
        semantics = _semantics(event, name, value)
        if semantics == MEAN:
            acc.numbers.setdefault(name, []).append(float(value))
        elif semantics == TRUE:
            acc.trues[name] = acc.trues.get(name, 0) + (1 if value is True else 0)
        elif semantics == SUM:
            acc.sums[name] = acc.sums.get(name, 0) + int(value)
        else:
            previous = acc.lasts.get(name)
            if previous is None or (event.ts, order) >= previous[:2]:
                acc.lasts[name] = (event.ts, order, float(value))


def _fields_of(acc: _Acc) -> dict[str, FieldValue]:
    out: dict[str, FieldValue] = {"event_count": acc.events}
    for name, values in acc.numbers.items():
        total = math.fsum(values)
        out.update({name: total / len(values), f"{name}_min": min(values), f"{name}_max": max(values),
                    f"{name}_sum": total})
    out.update(acc.trues)
    out.update(acc.sums)
    out.update({name: last[2] for name, last in acc.lasts.items()})
    return out


def window_start_ns(ts: float, window_s: float) -> int:
    """Start of the epoch-aligned window holding ``ts``, in nanoseconds."""
    window_us = round(window_s * 1_000_000)
    return (round(ts * 1_000_000) // window_us) * window_us * 1000


def point_key(event: WorkEvent, window_s: float) -> PointKey:
    """The point an event lands in."""
    return (event.measurement, tuple(sorted(event.tags.items())), window_start_ns(event.ts, window_s))


def reference_points(events: Iterable[WorkEvent], window_s: float) -> dict[PointKey, dict[str, FieldValue]]:
    """The points ``events`` must produce, per DESIGN.md's aggregation table, in plain Python.

    ``events`` are in emission order (which breaks ties of "last").
    """
    accs: dict[PointKey, _Acc] = {}
    for order, event in enumerate(events):
        _record(accs.setdefault(point_key(event, window_s), _Acc()), event, order)
    return {key: _fields_of(acc) for key, acc in accs.items()}


# --- sending ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RawSender:
    """Writes events as wire-format entries, like a producer, keeping its sequence numbers.

    ``send`` groups each shard's events (in the order given) into batches of ``batch_events`` and
    adds them all in ONE ``MULTI``/``EXEC``, so a worker sees a chunk entirely or not at all.
    """

    client: redis.Redis
    producer_id: str = "c4a05c4a05c4a05c"
    shards: int = SHARDS
    prefix: str = PREFIX
    batch_events: int = 50
    sequences: dict[int, int] = field(default_factory=dict)
    entries: list[tuple[str, dict[bytes, bytes]]] = field(default_factory=list)
    sent_batches: list[tuple[int, list[WorkEvent]]] = field(default_factory=list)
    events_sent: int = 0

    def send(self, events: Sequence[WorkEvent]) -> int:
        by_shard: dict[int, list[WorkEvent]] = {}
        for event in events:
            by_shard.setdefault(event.shard(self.shards), []).append(event)
        pipe = self.client.pipeline(transaction=True)
        added = 0
        for shard, shard_events in sorted(by_shard.items()):
            for start in range(0, len(shard_events), self.batch_events):
                batch = shard_events[start:start + self.batch_events]
                sequence = self.sequences.get(shard, 0) + 1
                self.sequences[shard] = sequence
                entry = wire.encode_entry(self.producer_id, sequence,
                                          wire.encode_events(e.wire() for e in batch), len(batch))
                stream = keys.stream_key(self.prefix, shard)
                pipe.xadd(stream, entry)  # type: ignore[arg-type]
                self.entries.append((stream, entry))
                self.sent_batches.append((shard, batch))
                added += 1
        pipe.execute()
        self.events_sent += len(events)
        return added

    def resend(self, index: int) -> None:
        """XADD entry ``index`` again, as a producer retrying after a lost reply would."""
        stream, entry = self.entries[index]
        self.client.xadd(stream, entry)  # type: ignore[arg-type]


def late_chunks(workload: Workload, count: int, *, late_per_chunk: int, seed: int) -> list[list[WorkEvent]]:
    """:meth:`Workload.chunks`, except that each chunk holds back ``late_per_chunk`` of its events
    and the next chunk sends them first: they arrive after later windows, as late events that
    rewrite windows already written (within allowed lateness: at most two chunks late).

    Sent with :class:`RawSender` (``batch_events`` at least the late events per shard), a shard's
    late events travel in the first entry of their chunk.
    """
    rng = random.Random(seed)
    chunks = workload.chunks(count)
    out: list[list[WorkEvent]] = []
    held: list[WorkEvent] = []
    for number, chunk in enumerate(chunks):
        late = sorted(held, key=lambda e: e.ts)
        keep = list(chunk)
        last = number == len(chunks) - 1
        hold = 0 if last else min(late_per_chunk, len(keep) // 2)
        held = [keep.pop(rng.randrange(len(keep))) for _ in range(hold)]
        out.append(late + keep)
    return out


def stream_lengths(client: redis.Redis, shards: int = SHARDS, prefix: str = PREFIX) -> list[int]:
    return [int(client.xlen(keys.stream_key(prefix, shard))) for shard in range(shards)]


# --- the worker as a child process -----------------------------------------------------------


def worker_env(redis_url: str, influx_url: str, db: str, **overrides: str) -> dict[str, str]:
    """The environment of a worker: ours, never the machine's own Redis, no inherited TELEMETRY_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    env.update({
        "TELEMETRY_REDIS_URL": redis_url,
        "TELEMETRY_INFLUX_API": "v1",
        "TELEMETRY_INFLUX_URL": influx_url,
        "TELEMETRY_INFLUX_DB": db,
        "TELEMETRY_SHARDS": str(SHARDS),
        "TELEMETRY_STREAM_PREFIX": PREFIX,
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


@dataclass(frozen=True, slots=True)
class KillRecord:
    """Proof of one SIGKILL: which process, when, how long it had run, its exit status."""

    pid: int
    at_s: float
    uptime_s: float
    returncode: int
    label: str


class WorkerProcess:
    """``python -m consumer`` as a child we can kill, pause and measure.

    Usage::

        worker = WorkerProcess(env, tmp_path / "worker.log").start()
        record = worker.kill()          # SIGKILL; asserts it died of it
        rc = WorkerProcess(env, log).run(["--drain"], timeout_s=120)
    """

    def __init__(self, env: Mapping[str, str], log_path: Path, args: Sequence[str] = (),
                 *, command: Sequence[str] | None = None) -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.args = list(args)
        self.command = list(command) if command is not None else [sys.executable, "-m", "consumer"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {' '.join(self.args)} at {time.time():.3f}\n".encode())
            log.flush()
            self.proc = subprocess.Popen([*self.command, *self.args], cwd=REPO,
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, label: str = "") -> KillRecord:
        """SIGKILL by PID, reap, and prove the process is gone and died of SIGKILL."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.pid} exited on its own (rc {self.proc.returncode}) "
                                 f"before the kill; log:\n{self.log_tail()}")
        pid, uptime = self.proc.pid, time.monotonic() - self.started_at
        started = proc_start_ticks(pid)
        os.kill(pid, signal.SIGKILL)
        returncode = self.proc.wait(timeout=10)
        assert returncode == -signal.SIGKILL, f"worker {pid} exit status {returncode}, expected -9"
        after = proc_start_ticks(pid)  # None: gone; a different start time: the PID was reused
        assert after is None or after != started, f"worker {pid} still exists after SIGKILL"
        return KillRecord(pid=pid, at_s=time.time(), uptime_s=uptime, returncode=returncode, label=label)

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        _wait_for(lambda: proc_state(self.pid) == "T", f"worker {self.pid} to stop", 5.0)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self, label: str = "") -> KillRecord:
        """SIGTERM (a deploy, a scale-down) and the exit status it ended with."""
        assert self.proc is not None
        pid, uptime = self.proc.pid, time.monotonic() - self.started_at
        returncode = self.terminate()
        return KillRecord(pid=pid, at_s=time.time(), uptime_s=uptime, returncode=returncode, label=label)

    def terminate(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (a clean shutdown), SIGKILL if it does not stop in time; the exit status."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                return self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(timeout=10)

    def run(self, timeout_s: float) -> int:
        """Start and wait for exit (for ``--drain``); kill on timeout and fail."""
        self.start()
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"worker {' '.join(self.args)} did not exit within {timeout_s}s; "
                                 f"log:\n{self.log_tail()}") from None

    def memory_kb(self) -> dict[str, int]:
        """VmRSS (now) and VmHWM (peak) of the running worker, in kB, from /proc/<pid>/status."""
        out: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(rest.split()[0])
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def proc_state(pid: int) -> str:
    """The one-letter state of ``pid`` (R, S, T, Z...) from /proc/<pid>/stat; '' when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def proc_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): tells a reused PID from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _wait_for(predicate: Any, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


wait_for = _wait_for


# --- reading back and comparing --------------------------------------------------------------


def field_types(influx: InfluxServer, db: str) -> dict[tuple[str, str], str]:
    """``(measurement, field) -> integer|float|boolean|string`` from SHOW FIELD KEYS."""
    result = influx._request("/query", {"q": "SHOW FIELD KEYS", "db": db})
    types: dict[tuple[str, str], str] = {}
    for statement in result.get("results", []):
        for series in statement.get("series", []):
            for name, kind in series.get("values", []):
                types[(series["name"], name)] = kind
    return types


def read_points(influx: InfluxServer, db: str, *, include_self: bool = False
                ) -> dict[PointKey, dict[str, FieldValue]]:
    """Every point in ``db`` (except the worker's own measurement), keyed like the reference."""
    measurements = [row["name"] for row in influx.query("SHOW MEASUREMENTS", db=db)]
    points: dict[PointKey, dict[str, FieldValue]] = {}
    for measurement in measurements:
        if measurement == SELF_MEASUREMENT and not include_self:
            continue
        tag_keys = {row["tagKey"] for row in influx.query(f'SHOW TAG KEYS FROM "{measurement}"', db=db)}
        for row in influx.query(f'SELECT * FROM "{measurement}" GROUP BY *', db=db):
            tags = tuple(sorted((k, v) for k, v in row.items() if k in tag_keys and v not in (None, "")))
            fields = {k: v for k, v in row.items()
                      if k not in tag_keys and k not in ("time", "_measurement") and v is not None}
            points[(measurement, tags, int(row["time"]))] = fields
    return points


def _type_ok(expected: FieldValue, influx_type: str | None) -> bool:
    if isinstance(expected, bool):
        return influx_type == "boolean"
    if isinstance(expected, int):
        return influx_type == "integer"
    if isinstance(expected, float):
        return influx_type == "float"
    return influx_type == "string"


def _value_ok(expected: FieldValue, actual: FieldValue) -> bool:
    if isinstance(expected, float):
        return (isinstance(actual, int | float) and not isinstance(actual, bool)
                and math.isclose(expected, float(actual), rel_tol=REL_TOL, abs_tol=1e-12))
    if isinstance(expected, int) and not isinstance(expected, bool):
        return isinstance(actual, int) and not isinstance(actual, bool) and actual == expected
    return bool(expected == actual)


def compare(expected: Mapping[PointKey, Mapping[str, FieldValue]],
            actual: Mapping[PointKey, Mapping[str, FieldValue]],
            types: Mapping[tuple[str, str], str] | None = None) -> list[str]:
    """Every difference between two point sets, as readable lines (empty when identical).

    Integers must match exactly and floats to a relative 1e-9; with ``types`` (from
    :func:`field_types`) each field's stored InfluxDB type is checked too, since the JSON of a
    query cannot tell ``3.0`` from ``3``.
    """
    problems: list[str] = []
    for key in sorted(set(expected) - set(actual)):
        problems.append(f"missing point {key}")
    for key in sorted(set(actual) - set(expected)):
        problems.append(f"unexpected point {key}: {dict(actual[key])}")
    for key in sorted(set(expected) & set(actual)):
        want, got = expected[key], actual[key]
        if set(want) != set(got):
            problems.append(f"{key}: fields {sorted(want)} != {sorted(got)}")
        for name in sorted(set(want) & set(got)):
            if not _value_ok(want[name], got[name]):
                problems.append(f"{key}: {name}={got[name]!r}, expected {want[name]!r}")
            elif types is not None and not _type_ok(want[name], types.get((key[0], name))):
                problems.append(f"{key}: {name} stored as {types.get((key[0], name))}, "
                                f"expected {type(want[name]).__name__}")
    return problems


def series_per_window(points: Iterable[PointKey]) -> dict[tuple[str, int], int]:
    """Distinct series of each (measurement, window start in ns): the cardinality a worker holds."""
    counts: dict[tuple[str, int], int] = {}
    for measurement, _tags, start_ns in points:
        counts[(measurement, start_ns)] = counts.get((measurement, start_ns), 0) + 1
    return counts


def event_total(points: Mapping[PointKey, Mapping[str, FieldValue]]) -> int:
    """Sum of ``event_count`` over points: must equal the number of events sent."""
    return sum(int(fields.get("event_count", 0)) for fields in points.values())


def dead_letters(client: redis.Redis, prefix: str = PREFIX) -> int:
    return int(client.xlen(keys.dlq_key(prefix)))


def assert_matches_reference(influx: InfluxServer, db: str,
                             expected: Mapping[PointKey, Mapping[str, FieldValue]],
                             events_sent: int) -> dict[PointKey, dict[str, FieldValue]]:
    """Read everything back and fail with the first differences unless it equals the reference."""
    actual = read_points(influx, db)
    problems = compare(expected, actual, field_types(influx, db))
    assert not problems, f"{len(problems)} differences, first ones:\n" + "\n".join(problems[:15])
    assert event_total(actual) == events_sent
    return actual


def entry_versions(sender: RawSender, window_s: float) -> dict[PointKey, list[dict[str, FieldValue]]]:
    """Every value each point takes as its shard's entries are applied one by one, in order.

    A worker's state is always "its shard's entries up to some entry, each applied once", so any
    point it writes, at any moment, crash or not, must be one of these values. A value outside
    this list means an entry applied twice, skipped, or half applied.
    """
    accs: dict[PointKey, _Acc] = {}
    versions: dict[PointKey, list[dict[str, FieldValue]]] = {}
    order = 0
    for shard in sorted({shard for shard, _batch in sender.sent_batches}):
        for batch_shard, batch in sender.sent_batches:
            if batch_shard != shard:
                continue
            touched: set[PointKey] = set()
            for event in batch:
                key = point_key(event, window_s)
                _record(accs.setdefault(key, _Acc()), event, order)
                order += 1
                touched.add(key)
            for key in touched:
                versions.setdefault(key, []).append(_fields_of(accs[key]))
    return versions


def same_fields(want: Mapping[str, FieldValue], got: Mapping[str, FieldValue]) -> bool:
    return set(want) == set(got) and all(_value_ok(want[name], got[name]) for name in want)


def check_written_values(written: Iterable[tuple[PointKey, Mapping[str, FieldValue]]],
                         versions: Mapping[PointKey, Sequence[Mapping[str, FieldValue]]]) -> list[str]:
    """Points (from recorded writes) whose values no prefix of their shard's entries explains."""
    problems: list[str] = []
    for key, fields in written:
        if key[0] == SELF_MEASUREMENT:
            continue
        candidates = versions.get(key)
        if candidates is None:
            problems.append(f"written point {key} is not in the workload: {dict(fields)}")
        elif not any(same_fields(version, fields) for version in candidates):
            problems.append(f"written point {key} = {dict(fields)} matches none of its "
                            f"{len(candidates)} possible values (last: {dict(candidates[-1])})")
    return problems


def record_with_producer(telemetry: Any, events: Iterable[WorkEvent]) -> int:
    """Record ``events`` through the producer API (``Telemetry``), each with its own call kind."""
    recorded = 0
    for event in events:
        if event.kind == wire.KIND_COUNT:
            (name, value), = event.fields.items()
            telemetry.count(event.measurement, name, value, tags=event.tags, ts=event.ts)
        elif event.kind == wire.KIND_GAUGE:
            (name, value), = event.fields.items()
            telemetry.gauge(event.measurement, name, value, tags=event.tags, ts=event.ts)
        else:
            telemetry.emit(event.measurement, event.fields, tags=event.tags, ts=event.ts)
        recorded += 1
    return recorded


def lease_owners(client: redis.Redis, shards: int = SHARDS, prefix: str = PREFIX) -> list[str | None]:
    """The worker holding each shard's lease (``None`` when free), from ``PREFIX:{i}:lease``."""
    owners: list[str | None] = []
    for shard in range(shards):
        value = client.get(keys.lease_key(prefix, shard))
        owners.append(None if value is None else value.decode().rsplit(":", 1)[0])
    return owners
