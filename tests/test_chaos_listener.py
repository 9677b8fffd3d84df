"""Exactly-once through ``telemetry listen``: HTTP writers keep sending while the worker is killed,
the listener restarted and Redis restarted; every acknowledged point is in InfluxDB once.

The scenario is ``tests/chaos_listener.py``; the oracle and the processes are the chaos harness's.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.chaos_listener import FAULTS, ListenerChaosRunner
from tests.services import InfluxServer, RedisServer

SEED = int(os.environ.get("CHAOS_SEED", "20251125"))


def test_listener_path_loses_and_doubles_no_acknowledged_point_across_faults(
        redis_server: RedisServer, influx: tuple[InfluxServer, str], tmp_path: Path) -> None:
    server, db = influx
    result = ListenerChaosRunner(redis_server, server, db, tmp_path, seed=SEED + 3).run()

    # each fault happened, mid-stream
    assert [fault.kind for fault in result.faults] == list(FAULTS)
    for kind, acknowledged in result.acknowledged_at_fault.items():
        assert 0 < acknowledged < result.bodies, (kind, acknowledged)
    worker_kill = result.fault("worker_kill")
    assert worker_kill.kill is not None and worker_kill.kill.returncode == -9, worker_kill
    assert len(set(result.worker_pids)) == len(result.worker_pids) == 2
    restart = result.fault("listener_restart")
    assert restart.kill is not None and restart.kill.returncode == 0, restart   # a clean SIGTERM stop
    assert len(set(result.listener_pids)) == len(result.listener_pids) == 2
    assert result.fault("redis_restart").server_returncode == -9
    assert result.connection_errors > 0, "no writer saw the listener's port closed"
    assert result.statuses[503] > 0, "no writer was answered 503 while Redis was down"

    # every body was acknowledged in the end, and InfluxDB holds exactly the acknowledged points
    assert result.writer_errors == []
    assert result.acknowledged_bodies == result.bodies
    assert result.drain_returncode == 0, result.drain_log
    assert result.mismatches == [], (f"{len(result.mismatches)} differences from the reference:\n"
                                     + "\n".join(result.mismatches[:15]))
    assert result.points_read == result.points_expected > 0
    assert result.event_total == result.acknowledged_lines   # none lost, none doubled
    assert result.dead_letters == 0
