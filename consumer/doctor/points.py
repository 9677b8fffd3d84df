"""The doctor's verdict on what InfluxDB holds: recent points per measurement, the worker's own.

Every measurement with points counts as data, catalogued or not: a bot that emits its own
measurements (``telemetry emit clibar_m x=1``) has a working pipeline. The catalogue only adds a
warning for a catalogued measurement that is silent while others of the catalogue receive (a
component of the seed's bot not emitting).

When no measurement has recent points, the verdict says why from the evidence at hand:

- dead letters in Redis: the worker received the events and rejected them (top reasons shown);
- points older than the window looked at: the events carry old timestamps (a wrong ``ts=`` or a
  producing host's clock), and the dashboards, which show the last
  :data:`DASHBOARD_RANGE_S`, may not show them at all;
- nothing at all: the data never reached InfluxDB (the first ✗ above is the cause).

Self-telemetry (measurement ``telemetry_pipeline``) is counted on its ``events_in`` field: the
worker writes it at each window while it runs and once at the end of a ``--drain`` run.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

from consumer.admin.stream_admin import DeadLetterCounts
from consumer.aggregation.catalogue import CATALOGUE, PIPELINE_MEASUREMENT
from consumer.doctor.results import CheckResult, Status, fail, ok

DASHBOARD_RANGE_S: Final = 24 * 3600.0
"""The time range the data dashboards open with (``now-24h``)."""
TOP_REASONS: Final = 3

_TITLE: Final = "recent points per measurement"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172_800:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86_400:.0f}d"


def _listing(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items()))


def points_check(counts: dict[str, int], since_s: float) -> CheckResult | None:
    """The verdict when some measurement has points in the last ``since_s``; None when none has."""
    since = _age(since_s)
    data = {name: n for name, n in counts.items() if n and name != PIPELINE_MEASUREMENT}
    if not data:
        return None
    catalogued = {name: data[name] for name in sorted(CATALOGUE) if name in data}
    other = {name: n for name, n in sorted(data.items()) if name not in CATALOGUE}
    silent = [name for name in sorted(CATALOGUE) if name not in data]
    details = {"points": catalogued, "silent": silent, "other": other}
    also = f"; outside the catalogue: {_listing(other)}" if other else ""
    if not catalogued:
        return ok("points", _TITLE,
                  f"{len(other)} measurement(s) receiving in the last {since}: {_listing(other)}", **details)
    if silent:
        return CheckResult(
            "points", _TITLE, Status.WARN,
            f"{len(catalogued)} catalogued receiving, silent in the last {since}: {', '.join(silent)}{also}",
            "a silent measurement's component is not emitting: is it enabled in the bot, "
            "and does it call tel.bind(...).emit? (`telemetry tail --measurement NAME`)",
            details,
        )
    return ok("points", _TITLE, f"all {len(catalogued)} catalogued receiving{also}", **details)


def no_points_check(newest_ns: dict[str, int], since_s: float, dead: DeadLetterCounts | None,
                    now_s: float | None = None) -> CheckResult:
    """The ✗ when no measurement has recent points, with the evidence of why."""
    now_s = time.time() if now_s is None else now_s
    summary = f"no points in the last {_age(since_s)}"
    details: dict[str, object] = {"points": {}, "silent": sorted(CATALOGUE), "other": {}}
    fix = ("data is not reaching InfluxDB: fix the first ✗ above; if all pass, check the worker's log and "
           "dead letters (`telemetry dlq list`)")
    if newest_ns:
        name = max(newest_ns, key=lambda n: newest_ns[n])
        at_s = newest_ns[name] / 1e9
        stamp = datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        details["newest"] = {"measurement": name, "time": stamp, "age_s": now_s - at_s}
        summary += f"; newest point {_age(max(0.0, now_s - at_s))} ago ({name} at {stamp})"
        if now_s - at_s > DASHBOARD_RANGE_S:
            summary += f", outside the dashboards' time range (last {_age(DASHBOARD_RANGE_S)})"
        fix = ("points are stamped with the events' time: check the ts= the bot passes to emit and the "
               f"producing host's clock (`date -u`); to see these, set Grafana's time picker to include "
               f"{stamp}")
    if dead is not None and dead.total:
        top = sorted(dead.by_reason.items(), key=lambda item: (-item[1], item[0]))[:TOP_REASONS]
        reasons = ", ".join(f"{reason} {n}" for reason, n in top)
        summary += f"; {dead.total} dead letter(s), top reasons: {reasons}"
        details["dead_letters"] = dict(top)
        fix = ("the worker rejected the events: `telemetry dlq list` shows each with its reason; fix the "
               "emitting code, then `telemetry dlq replay`")
    return fail("points", _TITLE, summary, fix, **details)


def self_telemetry_check(pipeline_points: int, since_s: float) -> CheckResult:
    """Whether the worker's own ``telemetry_pipeline`` points arrived in the last ``since_s``."""
    since = _age(since_s)
    if pipeline_points:
        return ok("self_telemetry", "worker self-telemetry",
                  f"{pipeline_points} {PIPELINE_MEASUREMENT} points in the last {since}")
    return CheckResult(
        "self_telemetry", "worker self-telemetry", Status.WARN,
        f"no {PIPELINE_MEASUREMENT} points in the last {since}",
        "the worker writes them every window while it runs and once at the end of `telemetry consume "
        "--drain`: start it (`telemetry consume`)",
    )
