"""Grafana provisioning generated beside the dashboards: datasources, the folder provider, alerts.

Generated from the same :class:`RenderOptions` as the dashboards, so the datasource uid a panel
names and the uid Grafana provisions cannot drift apart (the seed's dashboards went blank twice
that way). Files are YAML written by a tiny deterministic emitter (strings JSON-quoted, which is
valid YAML), so no YAML library is needed at build time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from consumer.aggregation.catalogue import PIPELINE_MEASUREMENT
from consumer.dashboards.grafana import (
    DEFAULT_FOLDER,
    DEFAULT_FOLDER_UID,
    EXPRESSION_DATASOURCE,
    Flavour,
    RenderOptions,
)

DASHBOARDS_PATH: Final = "/var/lib/grafana/dashboards/whisperengine"
INFLUX_URL: Final = "http://influxdb:8086"
ORG: Final = "whisperengine"
_PLAIN_KEY: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars; keys sorted; deterministic."""
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key in sorted(value):
            item = value[key]
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_key(key)}:\n{to_yaml(item, indent + 1)}")
            else:
                out.append(f"{pad}{_key(key)}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            nested = isinstance(item, (dict, list))
            text = to_yaml(item, indent + 1) if nested else f"{pad}  {_scalar(item)}\n"
            out.append(pad + "- " + text[len(pad) + 2:])
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _key(key: Any) -> str:
    text = str(key)
    return text if _PLAIN_KEY.match(text) else json.dumps(text)


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return json.dumps(value, ensure_ascii=False)


def datasources(options: RenderOptions) -> dict[str, Any]:
    """The Flux datasource (uid ``influxdb``) and its InfluxQL twin."""
    return {
        "apiVersion": 1,
        "datasources": [
            {"name": "InfluxDB", "uid": options.datasource_uid, "type": "influxdb", "access": "proxy",
             "url": INFLUX_URL, "isDefault": True, "editable": False,
             "jsonData": {"version": "Flux", "organization": ORG, "defaultBucket": options.bucket,
                          "tlsSkipVerify": False},
             "secureJsonData": {"token": "$INFLUXDB_TOKEN"}},
            {"name": "InfluxDB (InfluxQL)", "uid": options.influxql_datasource_uid, "type": "influxdb",
             "access": "proxy", "url": INFLUX_URL, "isDefault": False, "editable": False,
             "jsonData": {"version": "InfluxQL", "dbName": options.bucket, "httpMode": "POST",
                          "httpHeaderName1": "Authorization"},
             "secureJsonData": {"httpHeaderValue1": "Token $INFLUXDB_TOKEN"}},
        ],
    }


def dashboard_provider() -> dict[str, Any]:
    """Load every generated dashboard into the "WhisperEngine" folder."""
    return {
        "apiVersion": 1,
        "providers": [
            {"name": "whisperengine", "orgId": 1, "folder": DEFAULT_FOLDER, "folderUid": DEFAULT_FOLDER_UID,
             "type": "file", "disableDeletion": False, "allowUiUpdates": False,
             "updateIntervalSeconds": 30, "options": {"path": DASHBOARDS_PATH,
                                                      "foldersFromFilesStructure": False}},
        ],
    }


@dataclass(frozen=True, slots=True)
class AlertSpec:
    """One alert: a Flux query reduced to one number per series, compared with a threshold."""

    uid: str
    title: str
    query: str
    window_s: int
    reducer: str
    comparison: str  # gt | lt
    threshold: float
    summary: str
    severity: str = "warning"
    no_data: str = "OK"
    pending: str = "5m"
    influxql: str = ""
    """The same query in InfluxQL, for InfluxDB 1.x (the rule's other datasource)."""


HIGH_RISK_CHECKS: Final = 10
INTERVENTION_SURGE: Final = 20
LAG_ENTRIES: Final = 10_000
DEAD_LETTERS: Final = 0
SILENCE_MINUTES: Final = 30
WATCHED_MEASUREMENTS: Final = (
    ("attachment_monitoring", "event_count"),
    ("vector_classification", "event_count"),
    ("character_emotional_evolution", "event_count"),
    (PIPELINE_MEASUREMENT, "events_in"),
)


def _flux(bucket: str, measurement: str, predicate: str, tail: str) -> str:
    return (f'from(bucket: "{bucket}")\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n'
            f'  |> filter(fn: (r) => r._measurement == "{measurement}" and {predicate})\n{tail}')


def _influxql(aggregate: str, measurement: str, condition: str = "", group_by: str = "") -> str:
    where = f"{condition} AND $timeFilter" if condition else "$timeFilter"
    group = f' GROUP BY "{group_by}"' if group_by else ""
    return f'SELECT {aggregate} FROM "{measurement}" WHERE {where}{group}'


def alert_specs(bucket: str) -> list[AlertSpec]:
    """The alert rules: HIGH risk per bot, intervention surge, lag, dead letters, silence."""
    specs = [
        AlertSpec("we-high-risk-checks", "HIGH attachment risk checks per bot",
                  _flux(bucket, "attachment_monitoring",
                        'r._field == "event_count" and r.risk_level == "HIGH"',
                        '  |> group(columns: ["bot_name"])\n  |> sum()'),
                  900, "last", "gt", HIGH_RISK_CHECKS,
                  f"More than {HIGH_RISK_CHECKS} HIGH-risk attachment checks in 15 minutes for one bot",
                  influxql=_influxql('sum("event_count")', "attachment_monitoring", "\"risk_level\" = 'HIGH'",
                                     "bot_name")),
        AlertSpec("we-intervention-surge", "Attachment intervention surge",
                  _flux(bucket, "attachment_monitoring", 'r._field == "intervention_provided"',
                        '  |> group(columns: ["bot_name"])\n  |> sum()'),
                  900, "last", "gt", INTERVENTION_SURGE,
                  f"More than {INTERVENTION_SURGE} interventions in 15 minutes for one bot",
                  influxql=_influxql('sum("intervention_provided")', "attachment_monitoring",
                                     group_by="bot_name")),
        AlertSpec("we-pipeline-lag", "Telemetry pipeline lag",
                  _flux(bucket, PIPELINE_MEASUREMENT, 'r._field == "lag_entries"',
                        '  |> group(columns: ["shard"])\n  |> max()'),
                  300, "last", "gt", LAG_ENTRIES,
                  f"A shard is more than {LAG_ENTRIES} entries behind: the worker is down or too slow",
                  severity="critical",
                  influxql=_influxql('max("lag_entries")', PIPELINE_MEASUREMENT, group_by="shard")),
        AlertSpec("we-dead-letters", "Telemetry dead letters rising",
                  _flux(bucket, PIPELINE_MEASUREMENT, 'r._field == "dead_letters"',
                        '  |> group(columns: ["worker"])\n  |> sum()'),
                  900, "last", "gt", DEAD_LETTERS,
                  "Events are being dead-lettered: see `telemetry dlq list`",
                  influxql=_influxql('sum("dead_letters")', PIPELINE_MEASUREMENT, group_by="worker")),
    ]
    for measurement, field in WATCHED_MEASUREMENTS:
        specs.append(AlertSpec(
            f"we-silent-{measurement.replace('_', '-')}"[:40], f"No data from {measurement}",
            _flux(bucket, measurement, f'r._field == "{field}"', "  |> group()\n  |> count()"),
            SILENCE_MINUTES * 60, "last", "lt", 1,
            f"No {measurement} points for {SILENCE_MINUTES} minutes: run `telemetry doctor`",
            no_data="Alerting", pending="0s", influxql=_influxql(f'count("{field}")', measurement)))
    return specs


def _rule(spec: AlertSpec, datasource_uid: str, influxql: bool) -> dict[str, Any]:
    expr = dict(EXPRESSION_DATASOURCE)
    query: dict[str, Any] = {"refId": "A", "query": spec.query, "intervalMs": 60000, "maxDataPoints": 43200}
    if influxql:
        query.update(query=spec.influxql, rawQuery=True, resultFormat="time_series")
    return {
        "uid": "wq-" + spec.uid[3:] if influxql else spec.uid,
        "title": spec.title, "condition": "C", "for": spec.pending,
        "noDataState": spec.no_data, "execErrState": "Error", "isPaused": False,
        "annotations": {"summary": spec.summary},
        "labels": {"team": "whisperengine", "severity": spec.severity},
        "data": [
            {"refId": "A", "datasourceUid": datasource_uid,
             "relativeTimeRange": {"from": spec.window_s, "to": 0},
             "model": query},
            {"refId": "B", "datasourceUid": expr["uid"], "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": spec.reducer,
                       "datasource": expr}},
            {"refId": "C", "datasourceUid": expr["uid"], "relativeTimeRange": {"from": 0, "to": 0},
             "model": {"refId": "C", "type": "threshold", "expression": "B", "datasource": expr,
                       "conditions": [{"evaluator": {"type": spec.comparison, "params": [spec.threshold]}}]}},
        ],
    }


def alert_rules(options: RenderOptions, flavour: Flavour = "flux") -> dict[str, Any]:
    """Grafana unified-alerting file provisioning for every :func:`alert_specs` rule.

    ``flavour`` ``flux`` (InfluxDB 2) or ``influxql`` (InfluxDB 1.x): provision one of the two, as
    the rules of the other would query a datasource with no data and fail. InfluxQL rules get
    their own uids (``wq-`` for ``we-``), so a switch never collides with the old rules.
    """
    influxql = flavour == "influxql"
    uid = options.uid_for(flavour)
    rules = [_rule(spec, uid, influxql) for spec in alert_specs(options.bucket)]
    name = "whisperengine-telemetry" + ("-influxql" if influxql else "")
    return {"apiVersion": 1, "groups": [
        {"orgId": 1, "name": name, "folder": DEFAULT_FOLDER, "interval": "1m", "rules": rules}]}
