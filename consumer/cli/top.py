"""``telemetry top``: a live full-screen view of the pipeline, refreshed in place; ``q`` quits.

Where each number comes from:

* events/s per measurement: new entries read with a plain ``XREAD`` (no group: watching never
  creates pending entries) and decoded, counted over the refresh interval;
* lag and pending per shard: ``XINFO GROUPS`` / ``XPENDING`` (:mod:`consumer.admin.stream_admin`);
* dead letters: the length of ``PREFIX:dlq`` and its growth;
* open windows and write latency: the worker's Prometheus ``/metrics`` (``--metrics-url``, or
  ``http://127.0.0.1:$TELEMETRY_METRICS_PORT/metrics`` when that is set); without it those
  columns show ``-``.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Final

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from consumer.admin.stream_admin import StreamAdmin
from consumer.cli.operator_options import (
    Group as GroupOpt,
)
from consumer.cli.operator_options import (
    RedisUrl,
    Shards,
    StreamPrefix,
    connect_redis,
    duration_flag,
    load_config,
    redis_errors,
)
from producers.wire import WireError, decode_entry

READ_BUDGET: Final = 20_000
"""Most stream entries decoded per refresh (beyond it the rates are marked as a lower bound)."""


@dataclass(frozen=True, slots=True)
class WorkerMetrics:
    """What the worker's ``/metrics`` says, summed over shards (``None`` when not scraped)."""

    open_windows: dict[str, float] = field(default_factory=dict)
    latency_sum_s: float = 0.0
    latency_count: float = 0.0
    points_out: float = 0.0
    """Points InfluxDB has acknowledged since the worker started."""


def scrape(url: str | None, timeout_s: float = 1.0) -> WorkerMetrics | None:
    """Read the worker's Prometheus metrics; ``None`` when there is no URL or it does not answer."""
    if not url:
        return None
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return None
    windows: dict[str, float] = {}
    latency_sum = latency_count = points_out = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "telemetry_worker_open_windows":
                windows[sample.labels.get("shard", "?")] = sample.value
            elif sample.name == "telemetry_worker_write_latency_seconds_sum":
                latency_sum += sample.value
            elif sample.name == "telemetry_worker_write_latency_seconds_count":
                latency_count += sample.value
            elif sample.name == "telemetry_worker_points_out_total":
                points_out += sample.value
    return WorkerMetrics(windows, latency_sum, latency_count, points_out)


@dataclass(slots=True)
class Frame:
    """One refresh worth of numbers."""

    interval_s: float
    rates: dict[str, float]
    capped: bool
    shards: list[tuple[str, int, int | None, float, int, str]]
    """(stream, length, lag entries, lag seconds, pending, open windows)"""
    dead_letters: int
    dead_letters_per_s: float
    write_latency_ms: float | None
    events_total: int


class TopModel:
    """Samples the pipeline; each :meth:`sample` returns a :class:`Frame` for the time since the last."""

    def __init__(self, admin: StreamAdmin, metrics_url: str | None) -> None:
        self.admin = admin
        self.metrics_url = metrics_url
        self.last_ids = admin.latest_ids(admin.shard_keys())
        self.last_dead = admin.dead_letter_length()
        self.last_metrics = scrape(metrics_url)
        self.last_time = time.monotonic()
        self.events_total = 0

    def _count_new(self) -> tuple[Counter[str], bool]:
        counts: Counter[str] = Counter()
        read = 0
        while read < READ_BUDGET:
            entries = self.admin.read_new(self.last_ids, block_ms=1, count=1000)
            if not entries:
                return counts, False
            read += len(entries)
            for _key, entry in entries:
                try:
                    batch = decode_entry(entry.fields)
                except WireError:
                    counts["(undecodable)"] += 1
                    continue
                for event in batch.events:
                    name = event[1] if isinstance(event, list) and len(event) == 5 else "(invalid)"
                    counts[str(name)] += 1
        return counts, True

    def sample(self) -> Frame:
        """Read what happened since the previous sample."""
        counts, capped = self._count_new()
        now = time.monotonic()
        interval = max(now - self.last_time, 1e-3)
        self.last_time = now
        self.events_total += sum(counts.values())
        metrics = scrape(self.metrics_url)
        latency_ms = None
        if metrics and self.last_metrics and metrics.latency_count > self.last_metrics.latency_count:
            latency_ms = (
                1000
                * (metrics.latency_sum_s - self.last_metrics.latency_sum_s)
                / (metrics.latency_count - self.last_metrics.latency_count)
            )
        self.last_metrics = metrics or self.last_metrics
        shards = []
        for info in self.admin.overview():
            group = info.group(self.admin.group)
            windows = metrics.open_windows.get(str(info.shard)) if metrics else None
            shards.append(
                (
                    info.key,
                    info.length,
                    group.lag_entries if group else None,
                    group.lag_s if group else 0.0,
                    group.pending if group else 0,
                    "-" if windows is None else f"{windows:.0f}",
                )
            )
        dead = self.admin.dead_letter_length()
        frame = Frame(
            interval,
            {m: c / interval for m, c in sorted(counts.items())},
            capped,
            shards,
            dead,
            max(0, dead - self.last_dead) / interval,
            latency_ms,
            self.events_total,
        )
        self.last_dead = dead
        return frame


def render(frame: Frame, title: str) -> RenderableType:
    """The screen for one frame."""
    rates = Table(title="events/s per measurement" + (" (lower bound)" if frame.capped else ""), expand=True)
    rates.add_column("measurement")
    rates.add_column("events/s", justify="right")
    for name, rate in sorted(frame.rates.items(), key=lambda kv: -kv[1]):
        rates.add_row(escape(name), f"{rate:,.1f}")
    if not frame.rates:
        rates.add_row("[dim](no new events)[/dim]", "0.0")
    rates.add_row("[bold]total[/bold]", f"[bold]{sum(frame.rates.values()):,.1f}[/bold]")
    shards = Table(title="shards", expand=True)
    for column in ("stream", "length", "lag entries", "lag", "pending", "open windows"):
        shards.add_column(column, justify="left" if column == "stream" else "right")
    for key, length, lag_entries, lag_s, pending, windows in frame.shards:
        colour = "red" if lag_s >= 60 else "yellow" if lag_s >= 10 else "green"
        shards.add_row(
            escape(key),
            str(length),
            "-" if lag_entries is None else str(lag_entries),
            f"[{colour}]{lag_s:.1f}s[/{colour}]",
            str(pending),
            windows,
        )
    latency = "-" if frame.write_latency_ms is None else f"{frame.write_latency_ms:.1f} ms"
    dead_colour = "yellow" if frame.dead_letters_per_s > 0 else "green"
    footer = Text.from_markup(
        f"write latency: {latency}   dead letters: [{dead_colour}]{frame.dead_letters}"
        f" (+{frame.dead_letters_per_s:.1f}/s)[/{dead_colour}]   events seen: {frame.events_total}   "
        "[dim]q quits[/dim]"
    )
    return Group(Text(title, style="bold"), rates, shards, footer)


@contextlib.contextmanager
def cbreak_keys() -> Iterator[int | None]:
    """stdin in cbreak mode (single keys, no echo) when it is a terminal; yields its fd or ``None``."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def wait_for_quit(fd: int | None, timeout_s: float) -> bool:
    """Wait up to ``timeout_s``; True when ``q`` (or ``Q``) was pressed."""
    if fd is None:
        time.sleep(timeout_s)
        return False
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 32).lower().count(b"q"):
            return True
    return False


def top_command(
    interval: Annotated[str, typer.Option("--interval", help="refresh period")] = "1s",
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    metrics_url: Annotated[
        str | None, typer.Option("--metrics-url", show_default=False, help="worker /metrics URL")
    ] = None,
    redis_url: RedisUrl = None,
    stream_prefix: StreamPrefix = None,
    shards: Shards = None,
    group: GroupOpt = None,
) -> None:
    """Live view: events/s per measurement, lag per shard, open windows, write latency, dead letters."""
    interval_s = duration_flag("--interval", interval)
    config = load_config(redis_url=redis_url, stream_prefix=stream_prefix, shards=shards, group=group)
    if metrics_url is None and config.metrics_port:
        metrics_url = f"http://127.0.0.1:{config.metrics_port}/metrics"
    admin = StreamAdmin(
        connect_redis(config), prefix=config.stream_prefix, shards=config.shards, group=config.group
    )
    title = f"telemetry top — {config.redis_url}  {config.stream_prefix}:{{0..{config.shards - 1}}}"
    with redis_errors(config):
        model = TopModel(admin, metrics_url)
        if once:
            time.sleep(interval_s)
            Console().print(render(model.sample(), title))
            return
        with (
            contextlib.suppress(KeyboardInterrupt),  # Ctrl-C quits like q
            cbreak_keys() as fd,
            Live(render(model.sample(), title), screen=True, auto_refresh=False) as live,
        ):
            while not wait_for_quit(fd, interval_s):
                live.update(render(model.sample(), title), refresh=True)


def register(app: typer.Typer) -> None:
    """Add ``top`` to the ``telemetry`` command line."""
    app.command("top")(top_command)
