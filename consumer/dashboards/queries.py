"""Panel metrics, each rendered both as Flux and as InfluxQL from one description.

The worker writes one point per series per window (``docs/semantics.md``), so a panel never
reads raw events: it re-aggregates window points. Getting that right is the point of this module:

- **counts** (``event_count``, a bool field's count of true, a ``count`` counter) add up:
  ``sum`` over the windows and series in the panel's interval.
- **means** are means of means, so they are weighted by how many events each window holds:
  ``sum(F_sum) / sum(event_count)``. That is exact when every event of the measurement carries
  ``F`` — true for every catalogued MEAN field, which the bots always record together. For a field
  that only some events carry, ``event_count`` over-counts and the mean reads low; such a field
  should be recorded with ``observe`` (it then has ``F_count``) and use :class:`Ratio` of
  ``F_sum`` over ``F_count``. Averaging the per-window ``F`` column (``mean(F)``) is wrong: a
  window with one event would weigh as much as a window with a thousand.
- **ratios** (accuracy, intervention rate, learning efficiency) divide two sums, never average
  per-window ratios.
- **last** values (gauges such as ``consecutive_days``) take the latest window's value.

Every query follows the time picker: Flux uses ``v.timeRangeStart``/``v.timeRangeStop`` and
``v.windowPeriod``, InfluxQL ``$timeFilter`` and ``$__interval``; the bucket is the dashboard
variable ``${bucket}``; tag filters use the dashboard variables with Grafana's ``:regex`` format
(``All`` is ``.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Over = Literal["window", "range"]

EVENT_COUNT: Final = "event_count"
FLUX_RANGE: Final = "|> range(start: v.timeRangeStart, stop: v.timeRangeStop)"
FLUX_WINDOW: Final = "v.windowPeriod"
INFLUXQL_WINDOW: Final = "$__interval"


def _flux_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _flux_columns(columns: tuple[str, ...]) -> str:
    return "[" + ", ".join(_flux_str(c) for c in columns) + "]"


@dataclass(frozen=True, slots=True)
class Metric:
    """What a panel target shows; subclasses say how it aggregates.

    ``filters`` are the tag keys filtered by the dashboard variable of the same name;
    ``group_by`` the tags that split the result into series; ``over`` whether the result is a
    series per window (``window``) or one value per series for the whole range (``range``).
    """

    measurement: str
    fields: tuple[str, ...]
    group_by: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    over: Over = "window"
    alias: str = ""
    every: str = ""
    """A fixed window (``1d``) instead of the panel's interval; empty follows the time picker."""

    # -- Flux -----------------------------------------------------------------------------------
    def _flux_source(self, fields: tuple[str, ...]) -> list[str]:
        lines = [
            "from(bucket: " + _flux_str("${bucket}") + ")",
            "  " + FLUX_RANGE,
            f"  |> filter(fn: (r) => r._measurement == {_flux_str(self.measurement)})",
            "  |> filter(fn: (r) => " + " or ".join(f"r._field == {_flux_str(f)}" for f in fields) + ")",
        ]
        lines += [f"  |> filter(fn: (r) => r[{_flux_str(tag)}] =~ /^${{{tag}:regex}}$/)"
                  for tag in self.filters]
        return lines

    def _flux_window(self, fn: str) -> str:
        return f"  |> aggregateWindow(every: {self.every or FLUX_WINDOW}, fn: {fn}, createEmpty: false)"

    def _flux_sum(self, keys: tuple[str, ...], *, pivot: bool = False) -> list[str]:
        """Sum per window (or over the range) within each group of ``keys``.

        Before a pivot over the range, ``_start`` stays in the group key to serve as its row key.
        """
        if self.over == "window":
            return [f"  |> group(columns: {_flux_columns(keys)})",
                    self._flux_window("sum")]
        keys = ("_start", *keys) if pivot else keys
        return [f"  |> group(columns: {_flux_columns(keys)})", "  |> sum()"]

    def _flux_divide(self, numerator: str, denominator: str) -> list[str]:
        row = '"_time"' if self.over == "window" else '"_start"'
        keep = ("_time", "_value", *self.group_by) if self.over == "window" else ("_value", *self.group_by)
        return [
            f'  |> pivot(rowKey: [{row}], columnKey: ["_field"], valueColumn: "_value")',
            "  |> map(fn: (r) => ({r with _value: "
            f"float(v: r[{_flux_str(numerator)}]) / float(v: r[{_flux_str(denominator)}])}}))",
            f"  |> keep(columns: {_flux_columns(keep)})",
        ]

    def flux(self) -> str:
        """The Flux query, as stored in the dashboard (Grafana interpolates variables)."""
        raise NotImplementedError

    # -- InfluxQL -------------------------------------------------------------------------------
    def _ql_where(self) -> str:
        clauses = ["$timeFilter"] + [f"{_ql_ident(tag)} =~ /^${{{tag}:regex}}$/" for tag in self.filters]
        return " AND ".join(clauses)

    def _ql_group(self) -> str:
        parts = [f"time({self.every or INFLUXQL_WINDOW})"] if self.over == "window" else []
        parts += [_ql_ident(tag) for tag in self.group_by]
        group = f" GROUP BY {', '.join(parts)}" if parts else ""
        return group + (" fill(none)" if self.over == "window" else "")

    def _ql(self, selection: str) -> str:
        return (f"SELECT {selection} FROM {_ql_ident(self.measurement)} "
                f"WHERE {self._ql_where()}{self._ql_group()}")

    def influxql(self) -> str:
        """The InfluxQL query, as stored in the dashboard."""
        raise NotImplementedError

    def fields_read(self) -> tuple[str, ...]:
        """The field keys this metric reads from InfluxDB (checked against the catalogue)."""
        return self.fields

    @property
    def label(self) -> str:
        """The name of the value column/series."""
        return self.alias or self.fields[0]


@dataclass(frozen=True, slots=True)
class Total(Metric):
    """Sum of count fields (``event_count``, count of true, counters): one series per field."""

    def flux(self) -> str:
        lines = self._flux_source(self.fields) + self._flux_sum((*self.group_by, "_field"))
        return "\n".join(lines)

    def influxql(self) -> str:
        if len(self.fields) == 1:
            return self._ql(f"sum({_ql_ident(self.fields[0])}) AS {_ql_ident(self.label)}")
        return self._ql(", ".join(f"sum({_ql_ident(f)}) AS {_ql_ident(f)}" for f in self.fields))


@dataclass(frozen=True, slots=True)
class WeightedMean(Metric):
    """Mean of a MEAN field over windows: ``sum(F_sum) / sum(event_count)`` (see module doc)."""

    def fields_read(self) -> tuple[str, ...]:
        return (self.fields[0] + "_sum", EVENT_COUNT)

    def flux(self) -> str:
        total = self.fields[0] + "_sum"
        lines = self._flux_source((total, EVENT_COUNT))
        lines += self._flux_sum((*self.group_by, "_field"), pivot=True)
        return "\n".join(lines + self._flux_divide(total, EVENT_COUNT))

    def influxql(self) -> str:
        total = _ql_ident(self.fields[0] + "_sum")
        return self._ql(f"sum({total}) / sum({_ql_ident(EVENT_COUNT)}) AS {_ql_ident(self.label)}")


@dataclass(frozen=True, slots=True)
class Ratio(Metric):
    """``sum(fields[0]) / sum(fields[1])``: accuracy, intervention rate, learning efficiency."""

    def flux(self) -> str:
        numerator, denominator = self.fields
        lines = self._flux_source(self.fields) + self._flux_sum((*self.group_by, "_field"), pivot=True)
        return "\n".join(lines + self._flux_divide(numerator, denominator))

    def influxql(self) -> str:
        numerator, denominator = (_ql_ident(f) for f in self.fields)
        return self._ql(f"sum({numerator}) / sum({denominator}) AS {_ql_ident(self.label)}")


@dataclass(frozen=True, slots=True)
class Last(Metric):
    """The latest value of a gauge field (by window time) per group."""

    def flux(self) -> str:
        keys = (*self.group_by, "_field")
        lines = self._flux_source(self.fields)
        if self.over == "window":
            lines += [f"  |> group(columns: {_flux_columns(keys)})",
                      self._flux_window("last")]
        else:
            lines += [f"  |> group(columns: {_flux_columns(keys)})",
                      '  |> sort(columns: ["_time"])', "  |> last()"]
        return "\n".join(lines)

    def influxql(self) -> str:
        return self._ql(f"last({_ql_ident(self.fields[0])}) AS {_ql_ident(self.label)}")


@dataclass(frozen=True, slots=True)
class Peak(Metric):
    """The highest value of a field (worst lag, slowest write) per window and group."""

    def flux(self) -> str:
        keys = (*self.group_by, "_field")
        lines = [*self._flux_source(self.fields), f"  |> group(columns: {_flux_columns(keys)})"]
        if self.over == "window":
            lines.append(self._flux_window("max"))
        else:
            lines.append("  |> max()")
        return "\n".join(lines)

    def influxql(self) -> str:
        return self._ql(f"max({_ql_ident(self.fields[0])}) AS {_ql_ident(self.label)}")


@dataclass(frozen=True, slots=True)
class PrefixTotal(Metric):
    """Sum of every field whose name starts with ``fields[0]`` (``dead_letters_<reason>``)."""

    def fields_read(self) -> tuple[str, ...]:
        return ()

    def flux(self) -> str:
        prefix = self.fields[0]
        lines = [
            "from(bucket: " + _flux_str("${bucket}") + ")",
            "  " + FLUX_RANGE,
            f"  |> filter(fn: (r) => r._measurement == {_flux_str(self.measurement)})",
            f"  |> filter(fn: (r) => r._field =~ /^{prefix}/)",
        ]
        return "\n".join(lines + self._flux_sum((*self.group_by, "_field")))

    def influxql(self) -> str:
        return self._ql(f"sum(/^{self.fields[0]}/)")


@dataclass(frozen=True, slots=True)
class CountBelow(Metric):
    """Events in windows whose mean ``fields[0]`` is below ``threshold`` (low-confidence counts).

    Points hold per-window means, not single events, so this counts the events of every
    series-window whose mean is below the threshold: exact when the bots' windows are small
    (one event per series-window is the common case), an approximation otherwise.
    """

    threshold: float = 0.5

    def fields_read(self) -> tuple[str, ...]:
        return (self.fields[0], EVENT_COUNT)

    def flux(self) -> str:
        value = self.fields[0]
        lines = [
            *self._flux_source((value, EVENT_COUNT)),
            '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            f"  |> filter(fn: (r) => r[{_flux_str(value)}] < {self.threshold})",
            f'  |> map(fn: (r) => ({{r with _value: r[{_flux_str(EVENT_COUNT)}], _field: "{self.label}"}}))',
        ]
        return "\n".join(lines + self._flux_sum((*self.group_by, "_field")))

    def influxql(self) -> str:
        selection = f"sum({_ql_ident(EVENT_COUNT)}) AS {_ql_ident(self.label)}"
        return (f"SELECT {selection} FROM {_ql_ident(self.measurement)} WHERE {self._ql_where()} "
                f"AND {_ql_ident(self.fields[0])} < {self.threshold}{self._ql_group()}")


@dataclass(frozen=True, slots=True)
class LastSeen(Metric):
    """When each measurement last received a point: silence made visible (a table)."""

    def flux(self) -> str:
        return "\n".join([
            "from(bucket: " + _flux_str("${bucket}") + ")",
            "  " + FLUX_RANGE,
            f"  |> filter(fn: (r) => r._field == {_flux_str(EVENT_COUNT)})",
            '  |> group(columns: ["_measurement"])',
            '  |> sort(columns: ["_time"])',
            "  |> last()",
            '  |> keep(columns: ["_measurement", "_time"])',
            '  |> group()',
        ])

    def influxql(self) -> str:
        return (f"SELECT last({_ql_ident(EVENT_COUNT)}) AS \"last_event_count\" FROM /.*/ "
                "WHERE $timeFilter")


__all__ = [
    "CountBelow", "Last", "LastSeen", "Metric", "Peak", "PrefixTotal", "Ratio", "Total", "WeightedMean",
]
