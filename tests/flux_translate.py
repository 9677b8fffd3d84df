"""A few Flux query shapes answered from InfluxDB 1.6 with InfluxQL, as InfluxDB 2 answers them.

The test suite's influxd is 1.6: no Flux. ``tests/influx_gateway.py`` puts InfluxDB 2's query API
in front of it for the shapes ``telemetry doctor`` sends (``consumer/doctor_probes.V2Probe``):

    from(bucket: "B") |> range(start: -3600s)                       # or start: and stop: RFC3339
      |> filter(fn: (r) => r._field == "F")                         # and r._measurement == "M"
      |> group(columns: ["_measurement"])                           # or group()
      |> count()                                                    # or last()

:func:`translate` parses one such query (anything else raises :class:`UnsupportedFlux`, so a
changed doctor query fails its tests instead of passing unchecked) into an InfluxQL statement;
:func:`annotated_csv` turns influxd's JSON answer into the annotated CSV InfluxDB 2 returns
(``#datatype``, ``#group``, ``#default`` rows, one table per group key, RFC3339 times).
Simplification: ``last()`` tables carry no tag columns (they hold the row of one series each in
InfluxDB 2; the doctor reads only the time and the measurement).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

_QUERY: Final = re.compile(
    r'^\s*from\(bucket:\s*"(?P<bucket>[^"]+)"\)\s*'
    r"\|>\s*range\(start:\s*(?P<start>[^,)]+?)\s*(?:,\s*stop:\s*(?P<stop>[^)]+?)\s*)?\)\s*"
    r"\|>\s*filter\(fn:\s*\(r\)\s*=>\s*(?P<predicate>[^|]+?)\)\s*"
    r"\|>\s*group\((?:columns:\s*\[(?P<columns>[^\]]*)\])?\)\s*"
    r"\|>\s*(?P<aggregate>count|last)\(\)\s*$")
_EQUALS: Final = re.compile(r'r\.(?P<column>_field|_measurement)\s*==\s*"(?P<value>[^"\\]*)"')
_RELATIVE: Final = re.compile(r"^-(?P<seconds>\d+)s$")
_ABSOLUTE: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z$")


class UnsupportedFlux(ValueError):
    """A query outside the shapes this module translates."""


@dataclass(frozen=True, slots=True)
class FluxQuery:
    """One translated query: where to run it, what to run, and how to shape the answer."""

    bucket: str
    influxql: str
    aggregate: str
    by_measurement: bool
    field: str
    start: str
    stop: str | None

    def bounds(self) -> tuple[str, str]:
        """The range's start and stop as RFC3339, as Flux puts them in ``_start`` and ``_stop``."""
        now_ns = time.time_ns()
        relative = _RELATIVE.match(self.start)
        start = _rfc3339(now_ns - int(relative.group("seconds")) * 10**9) if relative else self.start
        return start, self.stop or _rfc3339(now_ns)


def _time_condition(start: str, stop: str | None) -> str:
    relative = _RELATIVE.match(start)
    if relative:
        lower = f"time >= now() - {relative.group('seconds')}s"
    elif _ABSOLUTE.match(start):
        lower = f"time >= '{start}'"
    else:
        raise UnsupportedFlux(f"range start {start!r}")
    if stop is None:
        return f"{lower} AND time < now()"
    if not _ABSOLUTE.match(stop):
        raise UnsupportedFlux(f"range stop {stop!r}")
    return f"{lower} AND time < '{stop}'"


def translate(flux: str) -> FluxQuery:
    """The InfluxQL for one of the doctor's Flux queries; :class:`UnsupportedFlux` for any other."""
    match = _QUERY.match(" ".join(flux.split()))
    if match is None:
        raise UnsupportedFlux(f"not one of the translated shapes: {flux!r}")
    predicate = match.group("predicate").strip()
    terms = {m.group("column"): m.group("value") for m in _EQUALS.finditer(predicate)}
    if " and ".join(m.group(0) for m in _EQUALS.finditer(predicate)) != predicate or "_field" not in terms:
        raise UnsupportedFlux(f"filter {predicate!r}")
    columns = [c.strip().strip('"') for c in (match.group("columns") or "").split(",") if c.strip()]
    if columns not in ([], ["_measurement"]):
        raise UnsupportedFlux(f"group columns {columns}")
    measurement = terms.get("_measurement")
    source = '/.*/' if measurement is None else '"' + measurement + '"'
    aggregate = match.group("aggregate")
    where = _time_condition(match.group("start").strip(), match.group("stop"))
    return FluxQuery(bucket=match.group("bucket"), aggregate=aggregate, by_measurement=bool(columns),
                     field=terms["_field"], start=match.group("start").strip(), stop=match.group("stop"),
                     influxql=f'SELECT {aggregate}("{terms["_field"]}") FROM {source} WHERE {where}')


def _rfc3339(ns: int) -> str:
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z" if nanos else f"{stamp}Z"


def _datatype(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def _rows(query: FluxQuery, series: Sequence[Mapping[str, Any]]) -> list[tuple[str, int, Any]]:
    """(measurement, time in ns, value) per output table, merged into one without group columns."""
    rows = [(str(s["name"]), int(s["values"][0][0]), s["values"][0][1]) for s in series if s.get("values")]
    if query.by_measurement or not rows:
        return sorted(rows)
    if query.aggregate == "count":
        return [("", 0, sum(int(value) for _, _, value in rows))]
    return [max(rows, key=lambda row: row[1])]


def annotated_csv(query: FluxQuery, series: Sequence[Mapping[str, Any]]) -> bytes:
    """influxd's series for ``query.influxql`` as InfluxDB 2's annotated CSV (empty: no tables)."""
    rows = _rows(query, series)
    if not rows:
        return b""
    columns: list[tuple[str, str, bool]] = [("result", "string", False), ("table", "long", False)]
    if query.aggregate == "last":
        columns += [("_start", "dateTime:RFC3339", False), ("_stop", "dateTime:RFC3339", False),
                    ("_time", "dateTime:RFC3339", False), ("_value", _datatype(rows[0][2]), False),
                    ("_field", "string", False)]
    else:
        columns += [("_value", _datatype(rows[0][2]), False)]
    if query.by_measurement:
        columns.append(("_measurement", "string", True))
    lines = ["#datatype," + ",".join(kind for _, kind, _ in columns),
             "#group," + ",".join("true" if grouped else "false" for _, _, grouped in columns),
             "#default,_result" + "," * (len(columns) - 1),
             "," + ",".join(name for name, _, _ in columns)]
    for table, (measurement, time_ns, value) in enumerate(rows):
        cells: list[str] = ["", str(table)]
        if query.aggregate == "last":
            cells += [*query.bounds(), _rfc3339(time_ns), _cell(value), query.field]
        else:
            cells.append(_cell(value))
        if query.by_measurement:
            cells.append(measurement)
        lines.append("," + ",".join(cells))
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


__all__ = ["FluxQuery", "UnsupportedFlux", "annotated_csv", "translate"]
