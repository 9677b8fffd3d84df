"""Exactly-once results under crashes: the worker is SIGKILLed at random moments, in the middle of
an InfluxDB write, between a write and its checkpoint, and while influxd is frozen; restarted
each time; finally drained. What InfluxDB holds must equal the plain-Python reference exactly,
and no write along the way may carry a value that no prefix of the stream explains (an entry
counted twice, or half of one).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import pytest

from consumer.core.config import DEFAULT_MAX_OPEN_SERIES
from tests import chaos_harness as ch
from tests.chaos_scenario import DEFAULT_PLAN, FAULT_KINDS, WORKER_KILLS, ChaosResult, ChaosRunner
from tests.services import InfluxServer, RedisServer

SEED = int(os.environ.get("CHAOS_SEED", "20251125"))
HIGH_CARDINALITY_SERIES: Final = 2000
"""The least distinct attachment_monitoring series one window of a high-cardinality run holds."""


def assert_exact(result: ChaosResult) -> None:
    """Every check of a chaos run, with the evidence in the message when one fails."""
    assert result.drain_returncode == 0, f"--drain exited {result.drain_returncode}:\n{result.drain_log}"
    assert result.mismatches == [], (
        f"seed {result.seed}: {len(result.mismatches)} differences from the reference:\n"
        + "\n".join(result.mismatches[:15]))
    assert result.points_read == result.points_expected
    assert result.event_total == result.events_sent
    assert result.dead_letters == 0
    assert result.written_value_problems == [], (
        f"seed {result.seed}: {len(result.written_value_problems)} written values no stream prefix "
        "explains:\n" + "\n".join(result.written_value_problems[:10]))


def assert_faults_proven(result: ChaosResult) -> None:
    """Each fault really happened: the worker (or the server) died of SIGKILL, SIGTERM exited 0."""
    for fault in result.faults:
        if fault.kind in WORKER_KILLS:
            assert fault.kill is not None and fault.kill.returncode == -9, fault
        elif fault.kind == "sigterm":
            assert fault.kill is not None and fault.kill.returncode == 0, fault
        else:
            assert fault.kill is None and fault.server_returncode == -9, fault
        assert fault.recovery_s is not None


def high_cardinality_runner(redis_server: RedisServer, influx: InfluxServer, db: str, work_dir: Path, *,
                            seed: int, plan: Sequence[str], users: int, events: int) -> ChaosRunner:
    """A run where 90% of events are attachment checks of ``users`` users, one window per fault.

    ``user_id`` is a tag, so each (user, risk level) is a series: thousands per window. The
    worker's series limits are raised above what the workload can reach (``users`` x risk levels
    per window; at most one series-window per event) so that no series collapses into
    ``__overflow__`` and no written window is shed: the reference models neither.
    """
    env = {"TELEMETRY_MAX_SERIES": str(users * len(ch.RISK_LEVELS)),
           "TELEMETRY_MAX_OPEN_SERIES": str(max(DEFAULT_MAX_OPEN_SERIES, events))}
    runner = ChaosRunner(redis_server, influx, db, work_dir, seed=seed, events=events, windows=len(plan),
                         chunks=len(plan), users=users, attachment_share=0.9, batch_events=200, env=env)
    return runner


def assert_high_cardinality(runner: ChaosRunner, least: int = HIGH_CARDINALITY_SERIES) -> int:
    """The workload really has ``least`` distinct attachment series in some window; the most."""
    points = ch.reference_points(runner.workload.events, runner.workload.window_s)
    most = max(count for (measurement, _start), count in ch.series_per_window(points).items()
               if measurement == "attachment_monitoring")
    assert most >= least, f"seed {runner.result.seed}: at most {most} series in a window, wanted {least}"
    return most


def test_sigkill_at_random_moments_and_inside_writes_gives_exact_results(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    influx_server.create_database("chaos")
    runner = ChaosRunner(redis_server, influx_server, "chaos", tmp_path, seed=SEED)
    result = runner.run(DEFAULT_PLAN)

    assert sum(1 for fault in result.faults if fault.kind in WORKER_KILLS) >= 5
    assert set(result.faults_by_kind()) == set(FAULT_KINDS)
    assert_faults_proven(result)
    assert result.events_sent == 6000
    assert result.writes_applied > len(result.faults)
    assert_exact(result)


def test_sigkill_with_the_v2_write_api_gives_exact_results(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    from tests.influx_gateway import InfluxV2Gateway

    server, db = influx
    v2 = InfluxV2Gateway(server.url, token="chaos-token").start()
    try:
        env = {"TELEMETRY_INFLUX_API": "v2", "TELEMETRY_INFLUX_TOKEN": "chaos-token",
               "TELEMETRY_INFLUX_ORG": "whisperengine", "TELEMETRY_INFLUX_BUCKET": db}
        runner = ChaosRunner(redis_server, server, db, tmp_path, seed=SEED + 2, chunks=8, env=env,
                             upstream_url=v2.url)
        result = runner.run(("random", "after_write", "stuck_write", "random", "redis_restart",
                             "after_write"))
    finally:
        v2.stop()
    assert runner.gateway.writes
    assert all(w.query.get("bucket") == db for w in runner.gateway.writes), "the v2 write API was used"
    assert sum(1 for fault in result.faults if fault.kind in WORKER_KILLS) == 5
    assert_exact(result)


@pytest.mark.chaos
def test_soak_many_short_runs_gives_exact_results(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    influx_server.create_database("soak")
    plan = tuple(kind for _ in range(5) for kind in ("random", "after_write", "random", "stuck_write",
                                                      "redis_restart", "random", "influx_paused",
                                                      "influx_outage"))
    runner = ChaosRunner(redis_server, influx_server, "soak", tmp_path, seed=SEED + 1,
                         events=20000, windows=2 * len(plan), chunks=len(plan) + 2)
    result = runner.run(plan)
    assert len(result.faults) == len(plan)
    assert_exact(result)


def test_sigkill_with_thousands_of_series_per_window_gives_exact_results(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    """Kills and server faults while each window holds thousands of series: checkpoints, writes
    and recovery are all larger than with the 120-series workload, and must stay exactly-once."""
    influx_server.create_database("cardinality")
    plan = ("random", "after_write", "stuck_write", "redis_restart", "influx_outage")
    runner = high_cardinality_runner(redis_server, influx_server, "cardinality", tmp_path, seed=SEED + 4,
                                     plan=plan, users=3000, events=20000)
    assert_high_cardinality(runner)
    result = runner.run(plan)

    assert [fault.kind for fault in result.faults] == list(plan)
    assert_faults_proven(result)
    assert result.events_sent == 20000
    assert_exact(result)


@pytest.mark.chaos
def test_soak_high_cardinality_gives_exact_results(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    influx_server.create_database("cardinality_soak")
    plan = tuple(kind for _ in range(2) for kind in ("random", "after_write", "stuck_write", "random",
                                                      "redis_restart", "influx_paused", "sigterm",
                                                      "after_write", "influx_outage", "random"))
    runner = high_cardinality_runner(redis_server, influx_server, "cardinality_soak", tmp_path,
                                     seed=SEED + 5, plan=plan, users=12000, events=160000)
    assert_high_cardinality(runner, least=5000)
    result = runner.run(plan)

    assert len(result.faults) == len(plan)
    assert_faults_proven(result)
    assert_exact(result)
