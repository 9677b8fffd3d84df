"""The demo's live progress view: elapsed time, events per measurement, what the worker has done.

Refreshed in place (rich ``Live``) when the console is a terminal; otherwise silent apart from
phase lines, so ``--json`` output and logs stay clean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import redis
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from consumer.admin.stream_admin import StreamAdmin

REFRESH_S: Final = 0.25


class Progress:
    """Context manager: ``update(elapsed_s)`` as the demo runs, ``phase(text)`` between stages."""

    def __init__(
        self,
        console: Console,
        workload: Any,
        tel: Any,
        workers: Sequence[Any],
        admin: StreamAdmin,
        options: Any,
        *,
        live: bool,
    ) -> None:
        self.console = console
        self.workload = workload
        self.tel = tel
        self.workers = workers
        self.admin = admin
        self.options = options
        self.live_enabled = live and console.is_terminal
        self._live: Live | None = None
        self._phase = "sending"
        self._elapsed = 0.0
        self._last_render = 0.0

    def __enter__(self) -> Progress:
        if self.live_enabled:
            self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.__exit__(None, None, None)

    def phase(self, text: str) -> None:
        """A new stage (flushing, draining)."""
        self._phase = text
        if self._live is None:
            self.console.print(f"[dim]demo: {text}…[/dim]")
        else:
            self._live.update(self._render(), refresh=True)

    def update(self, elapsed_s: float) -> None:
        """Redraw (at most every REFRESH_S)."""
        self._elapsed = elapsed_s
        if self._live is not None and elapsed_s - self._last_render >= REFRESH_S:
            self._last_render = elapsed_s
            self._live.update(self._render(), refresh=True)

    def _lag(self) -> str:
        try:
            shards = self.admin.overview()
        except redis.RedisError:
            return "?"
        lag = sum(
            (g.lag_entries or 0) + g.pending for s in shards for g in s.groups if g.name == self.admin.group
        )
        return str(lag)

    def _render(self) -> RenderableType:
        duration = max(self.options.duration_s, 1e-9)
        bar = ProgressBar(total=duration, completed=min(self._elapsed, duration), width=40)
        stats = self.tel.stats()
        totals: dict[str, int] = {}
        for worker in self.workers:
            for name, value in worker.stats.totals.items():
                totals[name] = totals.get(name, 0) + value
        table = Table(expand=False, title="events sent per measurement")
        table.add_column("measurement")
        table.add_column("events", justify="right")
        for name, count in sorted(self.workload.sent.items()):
            table.add_row(name, f"{count:,}")
        risk = ", ".join(f"{level} {n}" for level, n in sorted(self.workload.risk_levels.items()))
        status = Text.from_markup(
            f"[bold]{self._phase}[/bold]  {self._elapsed:5.1f}s / {duration:g}s   "
            f"messages {self.workload.messages:,}\n"
            f"producer: sent {stats.get('sent', 0):,}  buffered {stats.get('buffered', 0):,}  "
            f"dropped {stats.get('dropped', 0):,}\n"
            f"worker: events in {totals.get('events_in', 0):,}  points out {totals.get('points_out', 0):,}  "
            f"dead letters {totals.get('dead_letters', 0):,}  waiting entries {self._lag()}\n"
            f"attachment risk levels: {risk or '-'}"
        )
        return Group(bar, status, table)
