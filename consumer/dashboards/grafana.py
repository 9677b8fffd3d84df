"""Render the spec into Grafana dashboard JSON (Flux or InfluxQL flavour).

The only module that knows Grafana's JSON shapes. Output is deterministic: panel ids follow
spec order, grid positions are computed from widths, and the writer sorts keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from consumer.dashboards.model import Dashboard, Link, Panel, Row, Steps, Target, Variable

Flavour = Literal["flux", "influxql"]
FLAVOURS: Final[tuple[Flavour, ...]] = ("flux", "influxql")

DEFAULT_DATASOURCE_UID: Final = "influxdb"
DEFAULT_INFLUXQL_DATASOURCE_UID: Final = "influxdb-influxql"
DEFAULT_BUCKET: Final = "whisperengine"
DEFAULT_FOLDER: Final = "WhisperEngine"
DEFAULT_FOLDER_UID: Final = "whisperengine"
EXPRESSION_DATASOURCE: Final = {"type": "__expr__", "uid": "__expr__"}
SCHEMA_VERSION: Final = 39
GRID_WIDTH: Final = 24
ALL: Final = ".*"


@dataclass(frozen=True, slots=True)
class RenderOptions:
    """What is injected into every dashboard: datasource uids and the default bucket."""

    datasource_uid: str = DEFAULT_DATASOURCE_UID
    influxql_datasource_uid: str = DEFAULT_INFLUXQL_DATASOURCE_UID
    bucket: str = DEFAULT_BUCKET

    def uid_for(self, flavour: Flavour) -> str:
        """The datasource uid a flavour's dashboards use."""
        return self.datasource_uid if flavour == "flux" else self.influxql_datasource_uid


def dashboard_uid(uid: str, flavour: Flavour) -> str:
    """InfluxQL dashboards get their own uid so both flavours can live in one Grafana."""
    return uid if flavour == "flux" else f"{uid}-influxql"


def file_name(dashboard: Dashboard, flavour: Flavour) -> str:
    """``learning_system_telemetry.json`` / ``learning_system_telemetry_influxql.json``."""
    return f"{dashboard.file_stem}.json" if flavour == "flux" else f"{dashboard.file_stem}_influxql.json"


def _datasource(uid: str) -> dict[str, str]:
    return {"type": "influxdb", "uid": uid}


def _steps(steps: Steps) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": colour, "value": value} for value, colour in steps]}


def _link_url(link: Link, flavour: Flavour, table: bool) -> str:
    params = []
    for name, value in link.variables:
        if value == f"${{{name}}}":
            params.append(f"${{{name}:queryparam}}")
        else:
            if table:  # table rows are fields, not labelled series
                value = value.replace("${__field.labels.", "${__data.fields.")
            params.append(f"var-{name}={value}")
    params.append("${__url_time_range}")
    return f"/d/{dashboard_uid(link.dashboard_uid, flavour)}/{link.dashboard_slug}?" + "&".join(params)


def _target(target: Target, flavour: Flavour, uid: str, table: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"refId": target.ref_id, "datasource": _datasource(uid), "hide": target.hidden}
    if flavour == "flux":
        query = target.metric.flux()
        # A table wants one frame whose tags are columns (the links read ${__data.fields.<tag>}).
        if table and not query.endswith("|> group()"):
            query += "\n  |> group()"
        body["query"] = query
    else:
        body.update(query=target.metric.influxql(), rawQuery=True,
                    resultFormat="table" if table else "time_series")
    return body


def _options(panel: Panel) -> dict[str, Any]:
    reduce = {"calcs": ["sum" if panel.kind == "piechart" else "lastNotNull"], "fields": "", "values": False}
    legend = {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []}
    if panel.kind == "timeseries":
        return {"legend": legend, "tooltip": {"mode": "multi", "sort": "desc"}}
    if panel.kind == "stat":
        return {"reduceOptions": reduce, "colorMode": "value", "graphMode": "none", "textMode": "auto",
                "justifyMode": "auto", "orientation": "auto"}
    if panel.kind == "piechart":
        return {"reduceOptions": reduce, "pieType": "pie", "tooltip": {"mode": "single", "sort": "none"},
                "legend": {**legend, "displayMode": "table", "placement": "right",
                           "values": ["value", "percent"]}}
    if panel.kind == "bargauge":
        return {"reduceOptions": reduce, "orientation": "horizontal", "displayMode": "gradient",
                "showUnfilled": True, "minVizHeight": 10, "minVizWidth": 0}
    if panel.kind == "gauge":
        return {"reduceOptions": reduce, "showThresholdMarkers": True, "showThresholdLabels": False}
    return {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}


def _field_defaults(panel: Panel, flavour: Flavour) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "thresholds": _steps(panel.steps), "color": {
        "mode": "thresholds" if panel.kind in ("stat", "bargauge", "gauge") else "palette-classic"}}
    for key, value in (("min", panel.minimum), ("max", panel.maximum), ("decimals", panel.decimals)):
        if value is not None:
            defaults[key] = value
    if len(panel.targets) == 1 and len(panel.targets[0].metric.group_by) == 1 and not panel.table_format:
        # one series per tag value: name it by the value ("HIGH"), not by field and labels
        defaults["displayName"] = f"${{__field.labels.{panel.targets[0].metric.group_by[0]}}}"
    if panel.links:
        defaults["links"] = [{"title": link.title, "url": _link_url(link, flavour, panel.table_format)}
                             for link in panel.links]
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
            "spanNulls": False, "axisSoftMin": panel.minimum,
            "thresholdsStyle": {"mode": "dashed" if panel.threshold_line else "off"},
        }
    return defaults


def render_panel(panel: Panel, panel_id: int, grid: dict[str, int], flavour: Flavour,
                 options: RenderOptions) -> dict[str, Any]:
    """One panel's JSON."""
    uid = options.uid_for(flavour)
    targets = [_target(t, flavour, uid, panel.table_format) for t in panel.targets]
    targets += [{"refId": e.ref_id, "datasource": dict(EXPRESSION_DATASOURCE), "type": "math",
                 "expression": e.expression, "hide": False} for e in panel.expressions]
    body: dict[str, Any] = {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": _datasource(uid), "gridPos": grid, "targets": targets,
        "fieldConfig": {"defaults": _field_defaults(panel, flavour), "overrides": []},
        "options": _options(panel),
    }
    if panel.table_format:
        body["transformations"] = [{"id": "merge", "options": {}}]
    return body


def _variable_query(variable: Variable, flavour: Flavour, dependencies: tuple[str, ...]) -> str:
    if flavour == "flux":
        conditions = [f'r._measurement == "{variable.measurement}"']
        conditions += [f"r.{dep} =~ /^${{{dep}:regex}}$/" for dep in dependencies]
        return ('import "influxdata/influxdb/schema"\n\n'
                f'schema.tagValues(\n  bucket: "${{bucket}}",\n  tag: "{variable.tag}",\n'
                f"  predicate: (r) => {' and '.join(conditions)},\n"
                "  start: v.timeRangeStart,\n  stop: v.timeRangeStop,\n)")
    where = " AND ".join(f'"{dep}" =~ /^${{{dep}:regex}}$/' for dep in dependencies)
    return (f'SHOW TAG VALUES FROM "{variable.measurement}" WITH KEY = "{variable.tag}"'
            + (f" WHERE {where}" if where else ""))


def render_variables(dashboard: Dashboard, flavour: Flavour, options: RenderOptions) -> list[dict[str, Any]]:
    """Template variables: the bucket (Flux) and one multi-value query variable per tag."""
    out: list[dict[str, Any]] = []
    if flavour == "flux":
        out.append({"name": "bucket", "label": "Bucket", "type": "textbox", "query": options.bucket,
                    "current": {"selected": False, "text": options.bucket, "value": options.bucket},
                    "options": [{"selected": True, "text": options.bucket, "value": options.bucket}],
                    "hide": 0})
    for variable in dashboard.variables:
        query = _variable_query(variable, flavour, variable.depends_on)
        out.append({
            "name": variable.name, "label": variable.label, "type": "query",
            "datasource": _datasource(options.uid_for(flavour)), "query": query, "definition": query,
            "refresh": 2, "includeAll": True, "multi": True, "allValue": ALL, "sort": 1, "regex": "",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
        })
    return out


def _layout(items: tuple[Panel | Row, ...]) -> list[tuple[Panel | Row, dict[str, int]]]:
    placed: list[tuple[Panel | Row, dict[str, int]]] = []
    x = y = line_height = 0
    for item in items:
        if isinstance(item, Row):
            y += line_height
            x = line_height = 0
            placed.append((item, {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}))
            y += 1
            continue
        if x + item.width > GRID_WIDTH:
            y += line_height
            x = line_height = 0
        placed.append((item, {"h": item.height, "w": item.width, "x": x, "y": y}))
        x += item.width
        line_height = max(line_height, item.height)
    return placed


def render_dashboard(dashboard: Dashboard, flavour: Flavour,
                     options: RenderOptions | None = None) -> dict[str, Any]:
    """The complete dashboard JSON for one flavour."""
    options = options or RenderOptions()
    panels: list[dict[str, Any]] = []
    for panel_id, (item, grid) in enumerate(_layout(dashboard.items), start=1):
        if isinstance(item, Row):
            panels.append({"id": panel_id, "type": "row", "title": item.title, "gridPos": grid,
                           "collapsed": False, "panels": []})
        else:
            panels.append(render_panel(item, panel_id, grid, flavour, options))
    suffix = "" if flavour == "flux" else " (InfluxQL)"
    return {
        "uid": dashboard_uid(dashboard.uid, flavour), "title": dashboard.title + suffix,
        "description": dashboard.description, "tags": [*dashboard.tags, flavour],
        "editable": True, "graphTooltip": 1, "id": None, "version": 1, "schemaVersion": SCHEMA_VERSION,
        "refresh": dashboard.refresh, "time": {"from": dashboard.time_from, "to": "now"},
        "timepicker": {}, "timezone": "", "weekStart": "", "fiscalYearStartMonth": 0,
        "annotations": {"list": []}, "liveNow": False,
        "links": [{"title": "WhisperEngine", "type": "dashboards", "tags": ["whisperengine", flavour],
                   "asDropdown": True, "includeVars": True, "keepTime": True, "icon": "external link",
                   "targetBlank": False, "tooltip": "", "url": ""}],
        "templating": {"list": render_variables(dashboard, flavour, options)},
        "panels": panels,
    }
