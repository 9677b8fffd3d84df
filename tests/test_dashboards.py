"""The dashboard generator: determinism, the spec against the catalogue, provisioning, validation."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from consumer.aggregation.catalogue import CATALOGUE, PIPELINE_MEASUREMENT
from consumer.cli.app import app
from consumer.core.model import DEAD_LETTER_REASONS
from consumer.core.selftelemetry import COUNTERS, GAUGES
from consumer.dashboards.build import (
    ALERTS_FILE,
    ALERTS_INFLUXQL_FILE,
    DATASOURCES_FILE,
    PROVIDER_FILE,
    build,
    generated_files,
)
from consumer.dashboards.spec import LEARNING_PANELS, all_dashboards
from consumer.dashboards.validate import check_ranges, dashboard_queries, validate

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "grafana_dashboards"


def _load(name: str) -> dict[str, Any]:
    return json.loads((COMMITTED / name).read_text())


def _panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in document["panels"] if p["type"] != "row"]


def test_committed_files_are_exactly_what_the_spec_generates() -> None:
    expected = generated_files()
    committed = {str(p.relative_to(COMMITTED)): p.read_text() for p in COMMITTED.rglob("*") if p.is_file()}
    stale = sorted(set(committed) - set(expected))
    assert stale == [], f"files no longer generated: {stale}"
    changed = sorted(name for name, text in expected.items() if committed.get(name) != text)
    assert changed == [], f"run `telemetry dashboards build`: regenerating changes {changed}"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    build(tmp_path / "a")
    build(tmp_path / "b")
    first = {p.name: p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    second = {p.name: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert first == second
    assert len(first) == 13


def test_every_field_a_panel_reads_is_written_by_the_pipeline() -> None:
    pipeline = {*COUNTERS, *GAUGES, "write_latency_ms", *(f"dead_letters_{r}" for r in DEAD_LETTER_REASONS)}
    missing = []
    for dashboard in all_dashboards():
        for panel in dashboard.panels:
            for target in panel.targets:
                metric = target.metric
                if metric.measurement == "*":
                    continue
                if metric.measurement == PIPELINE_MEASUREMENT:
                    written = pipeline
                else:
                    spec = CATALOGUE[metric.measurement]
                    written = {"event_count", *(o for f in spec.fields.values() for o in f.outputs)}
                    tags = {*spec.tags, *spec.optional_tags}
                    assert set(metric.filters + metric.group_by) <= tags, panel.title
                missing += [f"{panel.title}: {metric.measurement}.{f}" for f in metric.fields_read()
                            if f not in written]
    assert missing == []


def test_the_seed_panels_and_every_component_have_a_panel() -> None:
    learning = _load("learning_system_telemetry.json")
    assert (learning["uid"], learning["refresh"], learning["time"]) == (
        "learning-telemetry", "30s", {"from": "now-24h", "to": "now"})
    titles = {p["title"] for p in _panels(learning)}
    seed = {"Risk level distribution", "Emotional intensity by risk level", "Interventions provided",
            "Interaction frequency per bot", "Consecutive days streak"}
    components = {title for title, _, _ in LEARNING_PANELS}
    composites = {"Intervention rate", "Learning efficiency", "Feature adoption",
                  "Engagement engine activity", "Trust recovery activity"}
    assert seed | components | composites <= titles
    assert len(components) == 7
    kinds = {p["title"]: p["type"] for p in _panels(learning)}
    seed_kinds = [kinds[t] for t in ("Risk level distribution", "Interventions provided",
                                     "Consecutive days streak")]
    assert seed_kinds == ["piechart", "stat", "bargauge"]
    steps = {p["title"]: p["fieldConfig"]["defaults"]["thresholds"]["steps"] for p in _panels(learning)}
    assert [s["value"] for s in steps["Interventions provided"]] == [None, 5, 10]
    assert [s["value"] for s in steps["Consecutive days streak"]] == [None, 7, 14, 21]


def test_variables_and_drill_down_links() -> None:
    for name in ("learning_system_telemetry.json", "learning_system_telemetry_influxql.json"):
        document = _load(name)
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert {"bot_name", "user_id"} <= set(variables)
        assert variables["user_id"]["allValue"] == ".*" and variables["user_id"]["multi"] is True
        links = {p["title"]: p["fieldConfig"]["defaults"].get("links", []) for p in _panels(document)}
        suffix = "" if name.endswith("telemetry.json") else "-influxql"
        risk = links["Risk level distribution"][0]["url"]
        assert risk.startswith(f"/d/learning-telemetry-user{suffix}/user-detail?")
        assert "var-risk_level=${__field.labels.risk_level}" in risk and "${__url_time_range}" in risk
        assert "var-user_id=${__field.labels.user_id}" in links["Consecutive days streak"][0]["url"]
        assert "var-user_id=${__data.fields.user_id}" in links["Users by checks"][0]["url"]
    flux = _load("learning_system_telemetry.json")
    assert next(v for v in flux["templating"]["list"] if v["name"] == "bucket")["query"] == "whisperengine"
    table = next(p for p in _panels(flux) if p["title"] == "Users by checks")
    assert table["targets"][0]["query"].endswith("|> group()")   # one frame: user_id is a column
    pie = next(p for p in _panels(flux) if p["title"] == "Risk level distribution")
    assert pie["fieldConfig"]["defaults"]["displayName"] == "${__field.labels.risk_level}"
    detail = {v["name"] for v in _load("learning_user_detail.json")["templating"]["list"]}
    assert {"bot_name", "user_id", "risk_level"} <= detail


def test_feature_adoption_divides_runs_by_messages_with_a_target_line() -> None:
    for name in ("learning_system_telemetry.json", "learning_system_telemetry_influxql.json"):
        panel = next(p for p in _panels(_load(name)) if p["title"] == "Feature adoption")
        expressions = {t["refId"]: t["expression"] for t in panel["targets"] if t.get("type") == "math"}
        hidden = {t["refId"] for t in panel["targets"] if t.get("hide")}
        assert expressions["learning_moments"] == "$learning_moments_runs / $messages"
        assert {e.split()[0][1:] for e in expressions.values()} | {"messages"} == hidden
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["custom"]["thresholdsStyle"]["mode"] == "dashed"
        assert defaults["thresholds"]["steps"][1]["value"] == 0.8


def test_queries_follow_the_time_picker_and_weight_means() -> None:
    for path in sorted(COMMITTED.glob("*.json")):
        for query in dashboard_queries(path):
            assert check_ranges(query) is None
            assert not re.search(r"range\(start: -", query.text)
            if query.language == "influxql" and query.text.startswith("SELECT"):
                assert "$timeFilter" in query.text
                assert "mean(" not in query.text  # means are sum(F_sum) / sum(event_count)
            if query.language == "flux":
                assert "fn: mean" not in query.text
    ql = next(p for p in _panels(_load("learning_system_telemetry_influxql.json"))
              if p["title"] == "Emotional intensity by risk level")["targets"][0]["query"]
    assert ql.startswith('SELECT sum("emotional_intensity_sum") / sum("event_count")')
    assert 'GROUP BY time($__interval), "risk_level" fill(none)' in ql


def test_datasource_uids_match_the_provisioning() -> None:
    datasources = yaml.safe_load((COMMITTED / DATASOURCES_FILE).read_text())["datasources"]
    versions = {d["uid"]: d["jsonData"]["version"] for d in datasources}
    assert versions == {"influxdb": "Flux", "influxdb-influxql": "InfluxQL"}
    flux = next(d for d in datasources if d["uid"] == "influxdb")
    assert flux["jsonData"]["organization"] == "whisperengine"
    assert flux["jsonData"]["defaultBucket"] == "whisperengine"
    for path in COMMITTED.glob("*.json"):
        expected = "influxdb-influxql" if path.stem.endswith("_influxql") else "influxdb"
        uids = {q.datasource_uid for q in dashboard_queries(path)}
        assert uids == {expected}, path.name
    provider = yaml.safe_load((COMMITTED / PROVIDER_FILE).read_text())["providers"][0]
    assert (provider["folder"], provider["type"]) == ("WhisperEngine", "file")


def test_alert_rules_cover_risk_surge_lag_dead_letters_and_silence() -> None:
    rules = yaml.safe_load((COMMITTED / ALERTS_FILE).read_text())["groups"][0]["rules"]
    titles = [r["title"] for r in rules]
    assert titles[:4] == ["HIGH attachment risk checks per bot", "Attachment intervention surge",
                          "Telemetry pipeline lag", "Telemetry dead letters rising"]
    silent = [r for r in rules if r["title"].startswith("No data from")]
    watched = {r["title"][len("No data from "):] for r in silent}
    assert watched >= {"attachment_monitoring", PIPELINE_MEASUREMENT}
    assert all(r["noDataState"] == "Alerting" for r in silent)
    for rule in rules:
        query = rule["data"][0]
        assert query["datasourceUid"] == "influxdb" and "v.timeRangeStart" in query["model"]["query"]
        assert rule["condition"] == "C" and rule["data"][2]["model"]["type"] == "threshold"
    high = rules[0]["data"][0]["model"]["query"]
    assert 'r.risk_level == "HIGH"' in high and 'group(columns: ["bot_name"])' in high


def test_influxql_alert_rules_mirror_the_flux_rules() -> None:
    """InfluxDB 1.x gets the same rules in InfluxQL, with their own uids, outside provisioning/."""
    flux = yaml.safe_load((COMMITTED / ALERTS_FILE).read_text())["groups"][0]["rules"]
    group = yaml.safe_load((COMMITTED / ALERTS_INFLUXQL_FILE).read_text())["groups"][0]
    influxql = group["rules"]
    assert group["name"] == "whisperengine-telemetry-influxql"
    assert [r["title"] for r in influxql] == [r["title"] for r in flux]
    assert [r["uid"] for r in influxql] == ["wq-" + r["uid"][3:] for r in flux]
    for mirror, rule in zip(influxql, flux, strict=True):
        query = mirror["data"][0]
        assert query["datasourceUid"] == "influxdb-influxql" and query["model"]["rawQuery"] is True
        assert query["model"]["query"].startswith("SELECT ") and "$timeFilter" in query["model"]["query"]
        assert mirror["data"][1:] == rule["data"][1:]          # the same reduce and threshold
        assert (mirror["for"], mirror["noDataState"]) == (rule["for"], rule["noDataState"])
    assert not ALERTS_INFLUXQL_FILE.startswith("provisioning/")


def test_build_injects_datasource_uid_and_bucket(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["dashboards", "build", "--datasource-uid", "ds9", "--bucket", "bots",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "vector_classification_intelligence.json").read_text())
    assert {t["datasource"]["uid"] for p in _panels(document) for t in p["targets"]} == {"ds9"}
    assert next(v for v in document["templating"]["list"] if v["name"] == "bucket")["query"] == "bots"
    datasources = yaml.safe_load((tmp_path / DATASOURCES_FILE).read_text())["datasources"]
    assert datasources[0]["uid"] == "ds9" and datasources[0]["jsonData"]["defaultBucket"] == "bots"
    assert 'from(bucket: "bots")' in (tmp_path / ALERTS_FILE).read_text().replace('\\"', '"')
    assert validate(tmp_path).problems == []


def _copy(tmp_path: Path) -> Path:
    target = tmp_path / "dash"
    shutil.copytree(COMMITTED, target)
    return target


def test_validate_rejects_a_drifted_uid_and_a_hard_coded_range(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    path = directory / "learning_system_telemetry.json"
    text = path.read_text()
    text = text.replace('"uid": "influxdb"', '"uid": "influxdb-old"', 1)
    text = text.replace("range(start: v.timeRangeStart, stop: v.timeRangeStop)", "range(start: -7d)", 1)
    path.write_text(text)
    ql = directory / "vector_classification_intelligence_influxql.json"
    ql.write_text(ql.read_text().replace("WHERE $timeFilter", "WHERE time > now() - 7d", 1))
    pipeline = directory / "pipeline_health.json"
    pipeline.write_text(pipeline.read_text().replace('"uid": "influxdb"', '"uid": "influxdb-influxql"'))
    problems = validate(directory).problems
    assert any("pipeline_health.json" in p and "flux query on the InfluxQL datasource" in p for p in problems)
    assert any("panel datasource uid 'influxdb-old' is not provisioned" in p for p in problems)
    assert any("hard-coded range(start: -7d)" in p for p in problems)
    assert any("hard-coded time condition" in p for p in problems)
    result = CliRunner().invoke(app, ["dashboards", "validate", "--out", str(directory), "--no-influx"])
    assert result.exit_code == 1


def test_validate_passes_on_the_committed_files() -> None:
    result = CliRunner().invoke(app, ["dashboards", "validate", "--out", str(COMMITTED), "--no-influx"])
    assert result.exit_code == 0, result.output
    assert "queries valid" in result.output
