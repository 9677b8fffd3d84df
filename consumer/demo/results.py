"""What landed: points and events per measurement, read back from where the demo wrote them,
and the queries a user runs to see the data themselves.

``events`` is the sum of ``event_count`` over a measurement's points: every event lands in
exactly one series-window, so it equals the number of events sent when nothing was dead-lettered.
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from consumer.core.config import WorkerConfig
from consumer.demo.services import Service

_EVENT_COUNT: Final = re.compile(r"(?:^|,)event_count=(\d+)i(?:,|$)")
_UNESCAPED_SPACE: Final = re.compile(r"(?<!\\) ")


def _v1_counts(config: WorkerConfig, measurements: Sequence[str], since_ns: int) -> dict[str, dict[str, int]]:
    source = ", ".join(f'"{m}"' for m in measurements)
    statement = f'SELECT count("event_count"), sum("event_count") FROM {source} WHERE time >= {since_ns}'
    params = {"q": statement, "db": config.database}
    if config.influx_rp:
        params["rp"] = config.influx_rp
    request = urllib.request.Request(
        f"{config.influx_url.rstrip('/')}/query?{urllib.parse.urlencode(params)}"
    )
    if config.influx_user:
        raw = f"{config.influx_user}:{config.influx_password or ''}".encode()
        request.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        result = json.loads(response.read())["results"][0]
    counts: dict[str, dict[str, int]] = {}
    for series in result.get("series", []):
        _time, points, events = series["values"][0]
        counts[series["name"]] = {"points": int(points), "events": int(events)}
    return counts


def _v2_counts(config: WorkerConfig, measurements: Sequence[str], since_ns: int) -> dict[str, dict[str, int]]:
    from influxdb_client.client.influxdb_client import InfluxDBClient

    names = json.dumps(list(measurements))
    base = (
        f'from(bucket: "{config.influx_bucket}") |> range(start: time(v: {since_ns})) '
        f'|> filter(fn: (r) => r._field == "event_count" and contains(value: r._measurement, set: {names})) '
        '|> group(columns: ["_measurement"])'
    )
    counts: dict[str, dict[str, int]] = {}
    with InfluxDBClient(
        url=config.influx_url, token=config.influx_token or "", org=config.influx_org
    ) as client:
        for what, fn in (("points", "count()"), ("events", "sum()")):
            for table in client.query_api().query(f"{base} |> {fn}"):
                for record in table.records:
                    counts.setdefault(str(record.get_measurement()), {})[what] = int(record.get_value())
    return counts


def file_counts(path: Path) -> dict[str, dict[str, int]]:
    """Points and events per measurement in a line-protocol file (a rewritten window counts once)."""
    latest: dict[tuple[str, str], int] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            parts = _UNESCAPED_SPACE.split(line)
            if len(parts) < 3:
                continue
            series, fields, timestamp = parts[0], " ".join(parts[1:-1]), parts[-1]
            match = _EVENT_COUNT.search(fields)
            if match:
                latest[(series, timestamp)] = int(match.group(1))
    counts: dict[str, dict[str, int]] = {}
    for (series, _timestamp), events in latest.items():
        measurement = re.split(r"(?<!\\),", series, maxsplit=1)[0].replace("\\ ", " ").replace("\\,", ",")
        entry = counts.setdefault(measurement, {"points": 0, "events": 0})
        entry["points"] += 1
        entry["events"] += events
    return counts


def count_points(
    config: WorkerConfig, influx: Service, measurements: Sequence[str], since_ns: int = 0
) -> dict[str, dict[str, int]]:
    """Points and events per measurement as stored from ``since_ns`` on (only the given measurements).

    ``since_ns`` keeps an earlier run's points in a long-lived InfluxDB out of this run's totals.
    """
    if influx.kind == "file":
        found = file_counts(Path(urllib.parse.urlsplit(influx.url).path))
    elif config.influx_api == "v1":
        found = _v1_counts(config, measurements, since_ns)
    else:
        found = _v2_counts(config, measurements, since_ns)
    return {m: found.get(m, {"points": 0, "events": 0}) for m in measurements}


def queries_for(config: WorkerConfig, influx: Service) -> dict[str, Any]:
    """The queries that show the demo's data (InfluxQL and Flux), and how to run them."""
    # A mean over windows is weighted by their event counts: sum of sums over sum of counts.
    influxql = (
        'SELECT sum("event_count") AS checks, '
        'sum("emotional_intensity_sum") / sum("event_count") AS intensity '
        'FROM "attachment_monitoring" WHERE time > now() - 1h GROUP BY time(10s), "risk_level" fill(none)'
    )
    flux = (
        f'from(bucket: "{config.influx_bucket}")\n'
        "  |> range(start: -1h)\n"
        '  |> filter(fn: (r) => r._measurement == "attachment_monitoring" and r._field == "event_count")\n'
        '  |> group(columns: ["risk_level"])\n'
        "  |> aggregateWindow(every: 10s, fn: sum, createEmpty: false)"
    )
    queries: dict[str, Any] = {"influxql": influxql, "flux": flux}
    if influx.kind == "file":
        queries["file"] = (
            f"the points are line protocol in {urllib.parse.urlsplit(influx.url).path} "
            "(removed at exit; set TELEMETRY_INFLUX_URL to a running InfluxDB to keep them)"
        )
    else:
        query = urllib.parse.urlencode({"db": config.database, "q": influxql})
        queries["curl"] = f"curl -G '{config.influx_url.rstrip('/')}/query?{query}'"
        if influx.kind == "influxd":
            queries["note"] = (
                "the private influxd is stopped at exit: run with --keep to query it first, or set "
                "TELEMETRY_INFLUX_URL to a running InfluxDB to keep the data"
            )
    return queries
