"""Exactly-once results under crashes: the worker is SIGKILLed at random moments, in the middle of
an InfluxDB write, between a write and its checkpoint, and while influxd is frozen; restarted
each time; finally drained. What InfluxDB holds must equal the plain-Python reference exactly,
and no write along the way may carry a value that no prefix of the stream explains (an entry
counted twice, or half of one).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos_scenario import DEFAULT_PLAN, FAULT_KINDS, WORKER_KILLS, ChaosResult, ChaosRunner
from tests.services import InfluxServer, RedisServer

SEED = int(os.environ.get("CHAOS_SEED", "20251125"))


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


def test_sigkill_at_random_moments_and_inside_writes_gives_exact_results(
        redis_server: RedisServer, influx_server: InfluxServer, tmp_path: Path) -> None:
    influx_server.create_database("chaos")
    runner = ChaosRunner(redis_server, influx_server, "chaos", tmp_path, seed=SEED)
    result = runner.run(DEFAULT_PLAN)

    assert sum(1 for fault in result.faults if fault.kind in WORKER_KILLS) >= 5
    assert set(result.faults_by_kind()) == set(FAULT_KINDS)
    for fault in result.faults:  # each fault happened: the worker (or the server) died of SIGKILL
        if fault.kind in WORKER_KILLS:
            assert fault.kill is not None and fault.kill.returncode == -9, fault
        elif fault.kind == "sigterm":
            assert fault.kill is not None and fault.kill.returncode == 0, fault
        else:
            assert fault.kill is None and fault.server_returncode == -9, fault
        assert fault.recovery_s is not None
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
