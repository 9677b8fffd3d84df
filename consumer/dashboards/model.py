"""The dashboard spec's vocabulary: dashboards, panels, targets, variables, links.

Plain frozen dataclasses, so the spec (``spec.py``) reads as a table of panels and the renderer
(``grafana.py``) is the only code that knows Grafana's JSON shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from consumer.dashboards.queries import Metric

PanelKind = Literal["timeseries", "stat", "piechart", "bargauge", "table", "gauge"]

# Threshold steps: (value or None for the base step, colour).
Steps = tuple[tuple[float | None, str], ...]

GREEN_ONLY: Final[Steps] = ((None, "green"),)


@dataclass(frozen=True, slots=True)
class Target:
    """One query of a panel; ``hidden`` targets only feed an expression."""

    ref_id: str
    metric: Metric
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class Expression:
    """A Grafana server-side math expression over other targets (``$A / $B``).

    Used where the two sides live in different measurements (feature adoption), which neither
    InfluxQL nor a simple Flux pipeline can divide in one query.
    """

    ref_id: str
    expression: str


@dataclass(frozen=True, slots=True)
class Link:
    """A data link: clicking a value opens ``dashboard_uid`` with variables set from the value."""

    title: str
    dashboard_uid: str
    dashboard_slug: str
    variables: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Panel:
    """One panel; width/height in grid units (24 columns)."""

    title: str
    kind: PanelKind
    targets: tuple[Target, ...]
    description: str = ""
    unit: str = "short"
    decimals: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    steps: Steps = GREEN_ONLY
    threshold_line: bool = False
    expressions: tuple[Expression, ...] = ()
    links: tuple[Link, ...] = ()
    width: int = 12
    height: int = 8
    table_format: bool = False


@dataclass(frozen=True, slots=True)
class Row:
    """A collapsible section heading."""

    title: str


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable whose values are a tag's values in ``measurement``."""

    name: str
    label: str
    measurement: str
    tag: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dashboard:
    """A dashboard: identity, time defaults, variables and panels (rows start new sections)."""

    uid: str
    title: str
    file_stem: str
    description: str
    refresh: str
    time_from: str
    items: tuple[Panel | Row, ...]
    variables: tuple[Variable, ...] = ()
    tags: tuple[str, ...] = field(default=("whisperengine", "telemetry"))

    @property
    def panels(self) -> tuple[Panel, ...]:
        """Panels only, in order."""
        return tuple(item for item in self.items if isinstance(item, Panel))
