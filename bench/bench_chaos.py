"""The chaos run as a report: faults injected by kind, what was compared, and recovery times.

Runs ``tests/chaos_scenario.py`` once against a private redis-server and influxd: a 6000-event
workload with late events streams in while the worker is SIGKILLed at random moments, inside a
write, between a write and its checkpoint and with influxd frozen, while Redis is killed and
restarted from its append-only file and while influxd is down. A final ``--drain`` flushes the
rest, then every point in InfluxDB is compared with a plain-Python reference.

Recovery is the time from the restart (or from the server coming back) until every shard has
acknowledged everything sent; about 2 s of it is the lease of a dead worker running out
(``TELEMETRY_LEASE=2s`` here), about 1 s the interpreter start. A kill that lands after the worker
caught up recovers in ~0 s: there is nothing to redo.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from pathlib import Path

from tests.chaos_scenario import DEFAULT_PLAN, FAULT_KINDS, ChaosResult, ChaosRunner
from tests.services import InfluxServer, RedisServer

SEED = int(os.environ.get("CHAOS_SEED", "20251125"))


def _section(result: ChaosResult) -> str:
    by_kind = result.faults_by_kind()
    lines = [
        "## Chaos run: exactly-once results under crashes",
        "",
        f"One run of `tests/chaos_scenario.py` (seed {result.seed}), {result.duration_s:.0f} s: "
        f"{result.events_sent} events in {result.entries_sent} stream entries, "
        f"{len(result.faults)} faults, final `--drain` exit {result.drain_returncode}.",
        "",
        "| fault | injected | recovery min / median / max (s) | proof (last one) |",
        "|---|---:|---|---|",
    ]
    for kind in FAULT_KINDS:
        faults = [f for f in result.faults if f.kind == kind]
        if not faults:
            continue
        times = [f.recovery_s for f in faults if f.recovery_s is not None]
        spread = (f"{min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f}" if times else "-")
        lines.append(f"| {kind} | {by_kind[kind]} | {spread} | {faults[-1].proof} |")
    lines += [
        "",
        "| check | result |",
        "|---|---|",
        f"| points compared with the reference | {result.points_read} read, "
        f"{result.points_expected} expected |",
        f"| mismatches (must be 0) | {len(result.mismatches)} |",
        f"| `event_count` total vs events sent | {result.event_total} / {result.events_sent} |",
        f"| dead letters (must be 0) | {result.dead_letters} |",
        f"| writes seen by the gateway (applied) | {result.writes_recorded} ({result.writes_applied}) |",
        f"| points written along the way, all explained by a stream prefix | {result.points_written}, "
        f"{len(result.written_value_problems)} unexplained |",
    ]
    if result.mismatches:
        lines += ["", "First mismatches:", "", *(f"- `{m}`" for m in result.mismatches[:10])]
    return "\n".join(lines) + "\n"


def run() -> str:
    """Run the chaos scenario once on private servers; the Markdown section for RESULTS.md."""
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    redis_server = RedisServer(work / "redis").start()
    influx = InfluxServer(work / "influxd").start()
    try:
        influx.create_database("chaos")
        result = ChaosRunner(redis_server, influx, "chaos", work, seed=SEED).run(DEFAULT_PLAN)
    finally:
        redis_server.kill()
        influx.kill()
    shutil.rmtree(work, ignore_errors=True)
    return _section(result)


if __name__ == "__main__":
    print(run())
