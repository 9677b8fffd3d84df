"""``telemetry demo`` end to end: real producer, real worker, real InfluxDB; totals checked by InfluxQL."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consumer.aggregation.catalogue import CATALOGUE
from tests.cli_harness import make_app
from tests.services import InfluxServer, RedisServer, free_port


def _demo(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(
        make_app("consumer.cli.demo"),
        [
            "demo",
            "--duration",
            "3s",
            "--rate",
            "40",
            "--users",
            "50",
            "--bots",
            "2",
            "--seed",
            "7",
            "--json",
            "--bad-rate",
            "0",
            *args,
        ],
        env={"TELEMETRY_STREAM_PREFIX": "demo", "TELEMETRY_SHARDS": "2", **env},
    )
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_demo_with_configured_services_totals_match_influxql(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    server, db = influx
    code, summary = _demo(
        {
            "TELEMETRY_REDIS_URL": redis_server.url,
            "TELEMETRY_INFLUX_URL": server.url,
            "TELEMETRY_INFLUX_API": "v1",
            "TELEMETRY_INFLUX_DB": db,
        },
        "--bad-rate",
        "0.05",
    )
    assert code == 0
    assert summary["services"]["redis"] == {
        "kind": "external",
        "url": redis_server.url,
        "pid": None,
        "directory": None,
    }
    assert summary["services"]["influx"]["kind"] == "external"
    sent = summary["events_sent"]
    # every seed component took part, each at its own rate
    assert set(sent) == set(CATALOGUE)
    assert len(set(sent.values())) > 3
    assert summary["events_total"] == sum(sent.values()) == summary["producer"]["sent"]
    assert summary["producer"]["dropped"] == 0
    # the misbehaving sensor's NaN readings are dead letters; everything else is in InfluxDB
    bad = summary["dead_letters_by_measurement"].get("attachment_monitoring", 0)
    assert bad > 0
    assert summary["dead_letters_by_measurement"] == {"attachment_monitoring": bad}
    assert summary["dead_letters"] == {"invalid_value": bad}
    assert summary["worker"]["events_in"] + bad == summary["events_total"]
    dlq = redis_server.client().xrange("demo:dlq")
    assert [fields[b"reason"] for _id, fields in dlq] == [b"invalid_value"] * bad
    assert set(summary["risk_levels"]) <= {"LOW", "MEDIUM", "HIGH"} and len(summary["risk_levels"]) >= 2
    # what InfluxDB holds, asked independently
    for measurement, events in sent.items():
        rows = server.query(
            f'SELECT count("event_count") AS points, sum("event_count") AS events FROM "{measurement}"', db=db
        )
        assert len(rows) == 1, measurement
        stored = events - summary["dead_letters_by_measurement"].get(measurement, 0)
        assert rows[0]["events"] == stored, measurement
        assert summary["points"][measurement] == {"points": rows[0]["points"], "events": stored}
    risk = server.query('SELECT sum("event_count") FROM "attachment_monitoring" GROUP BY "risk_level"', db=db)
    assert {row["risk_level"]: row["sum"] for row in risk} == summary["risk_levels"]
    interventions = server.query('SELECT sum("intervention_provided") FROM "attachment_monitoring"', db=db)
    assert interventions[0]["sum"] == summary["risk_levels"].get("HIGH", 0)
    assert summary["worker"]["points_out"] >= sum(p["points"] for p in summary["points"].values())
    assert "SELECT" in summary["queries"]["influxql"] and "from(bucket:" in summary["queries"]["flux"]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_demo_starts_private_servers_and_stops_them() -> None:
    if not (shutil.which("redis-server") and shutil.which("influxd")):
        pytest.fail("redis-server and influxd are needed: make services")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here: the demo must start its own
    code, summary = _demo(
        {"TELEMETRY_REDIS_URL": f"redis://{dead}/0", "TELEMETRY_INFLUX_URL": f"http://{dead}"}
    )
    assert code == 0
    redis_info, influx_info = summary["services"]["redis"], summary["services"]["influx"]
    assert (redis_info["kind"], influx_info["kind"]) == ("redis-server", "influxd")
    for info in (redis_info, influx_info):
        assert _gone(info["pid"]), info
        assert not Path(info["directory"]).exists()
    assert all(summary["points"][m]["events"] == n for m, n in summary["events_sent"].items())
    assert summary["settings"]["influx_api"] == "v1"


def test_demo_without_binaries_uses_fakeredis_and_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import consumer.demo.services as services

    monkeypatch.setattr(services.shutil, "which", lambda _name: None)
    dead = f"127.0.0.1:{free_port()}"
    code, summary = _demo(
        {"TELEMETRY_REDIS_URL": f"redis://{dead}/0", "TELEMETRY_INFLUX_URL": f"http://{dead}"}
    )
    assert code == 0
    assert summary["services"]["redis"]["kind"] == "fakeredis"
    assert summary["services"]["influx"]["kind"] == "file"
    assert not Path(summary["services"]["influx"]["directory"]).exists()
    assert summary["events_total"] > 0
    assert {m: p["events"] for m, p in summary["points"].items()} == summary["events_sent"]
    assert "file" in summary["queries"]


def test_demo_twice_on_the_same_services_counts_only_its_own_run(
    redis_server: RedisServer, influx: tuple[InfluxServer, str]
) -> None:
    server, db = influx
    env = {
        "TELEMETRY_REDIS_URL": redis_server.url,
        "TELEMETRY_INFLUX_URL": server.url,
        "TELEMETRY_INFLUX_API": "v1",
        "TELEMETRY_INFLUX_DB": db,
        "TELEMETRY_WINDOW": "1s",
    }
    _first_code, first = _demo(env, "--duration", "1s")
    time.sleep(1.5)  # the next run's windows must not share a window with this one's
    code, second = _demo(env, "--duration", "1s")
    assert code == 0
    assert {m: p["events"] for m, p in second["points"].items()} == second["events_sent"]
    stored = server.query('SELECT sum("event_count") FROM "attachment_monitoring"', db=db)[0]["sum"]
    assert (
        stored
        == first["events_sent"]["attachment_monitoring"] + second["events_sent"]["attachment_monitoring"]
    )


def test_demo_never_probes_an_unnamed_default_redis_or_influxdb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without TELEMETRY_REDIS_URL/INFLUX_URL the defaults (localhost:6379/8086) may be somebody
    else's servers: the demo must start its own instead of writing into them."""
    import consumer.demo.services as services

    probed: list[str] = []
    real_redis_answers, real_influx_answers = services.redis_answers, services.influx_answers

    def redis_probe(url: str, *args: object) -> bool:
        probed.append(url)
        return real_redis_answers(url, *args)  # type: ignore[arg-type]

    def influx_probe(url: str, *args: object) -> bool:
        probed.append(url)
        return real_influx_answers(url, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(services, "redis_answers", redis_probe)
    monkeypatch.setattr(services, "influx_answers", influx_probe)
    monkeypatch.setattr(services.shutil, "which", lambda _name: None)  # fakeredis + file: fast
    monkeypatch.delenv("TELEMETRY_REDIS_URL", raising=False)
    monkeypatch.delenv("TELEMETRY_INFLUX_URL", raising=False)
    code, summary = _demo({}, "--duration", "1s")
    assert code == 0
    assert summary["services"]["redis"]["kind"] == "fakeredis"
    assert summary["services"]["influx"]["kind"] == "file"
    assert not any(":6379" in url or ":8086" in url for url in probed), probed


def test_summary_fits_every_catalogued_measurement_name_in_80_columns() -> None:
    """The human summary names each measurement in full on a narrow console (a log file, CI)."""
    from rich.console import Console

    from consumer.cli.demo import print_summary
    from consumer.demo import DemoSummary

    names = sorted(CATALOGUE)
    total = 1_000 * len(names)
    summary = DemoSummary(
        duration_s=3.0, messages=10, events_sent=dict.fromkeys(names, 1_000), events_total=total,
        producer={}, worker={"events_in": total, "points_out": 5 * len(names)},
        points={name: {"points": 5, "events": 1_000} for name in names},
        dead_letters={"invalid_value": 2}, dead_letters_by_measurement={names[0]: 2},
        risk_levels={"HIGH": 3, "LOW": 4}, services={}, settings={},
        queries={"influxql": "SELECT 1", "flux": "from()"})
    console = Console(width=80, record=True)
    print_summary(summary, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert [name for name in names if name not in text] == []
    assert "dead letters: invalid_value 2 (see them: telemetry dlq list)\n" in text
    assert "risk levels checked: HIGH 3, LOW 4\n" in text
