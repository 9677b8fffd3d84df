"""The configuration tables of the docs tell the truth: every variable the code reads has a row in
the README, and every row's default, in README.md and docs/, is the code's default.

Why: the design notes live outside the repository; users read the README and docs/. A variable
added to the code without a row, or a default changed in one place only, fails here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.cli.listen import LISTEN_VARIABLES, listener_config
from consumer.core import config as worker_config
from consumer.core.config import WorkerConfig
from producers import config as producer_config
from producers.config import ProducerConfig

ROOT = Path(__file__).resolve().parents[1]
TABLE_DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
HEADER = re.compile(r"^\|\s*variable\s*\|\s*default\s*\|")
UNSET = ("off", "–")
PROSE_DEFAULTS = {"TELEMETRY_CONSUMER": "host name", "TELEMETRY_INFLUX_DB": "the bucket"}
"""Defaults computed at start, documented in words: the words each row must say."""
LISTENER_FIELDS = {"TELEMETRY_LISTEN_HOST": "host", "TELEMETRY_LISTEN_PORT": "port",
                   "TELEMETRY_LISTEN_MAX_BODY": "max_body_bytes", "TELEMETRY_LISTEN_TOKEN": "token"}


@dataclasses.dataclass(frozen=True)
class Row:
    """One variable's row in a ``| variable | default | meaning |`` table."""

    where: str
    variable: str
    default: str


def _defaults(names: list[str], cell: str) -> list[str]:
    """The default of each variable of a row: one cell for all, or one item per variable."""
    if len(names) == 1:
        return [cell]
    items = [item.strip() for item in re.findall(r"`[^`]*`|[^,`]+", cell) if item.strip()]
    if len(items) == 1:
        return items * len(names)
    assert len(items) == len(names), f"defaults {cell!r} do not pair with {names}"
    return items


def table_rows(path: Path) -> Iterator[Row]:
    in_table = False
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if HEADER.match(line):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not in_table or set(cells[0]) <= {"-"}:
            continue
        names = re.findall(r"`(TELEMETRY_[A-Z0-9_]+)`", cells[0])
        assert names, f"{path.name}:{number}: a row without a variable"
        for name, default in zip(names, _defaults(names, cells[1]), strict=True):
            yield Row(f"{path.relative_to(ROOT)}:{number}", name, default)


def all_rows() -> list[Row]:
    return [row for path in TABLE_DOCS for row in table_rows(path)]


def worker_variables() -> dict[str, str]:
    """Variable -> WorkerConfig field."""
    return {worker_config.variable_name(f.name): f.name for f in dataclasses.fields(WorkerConfig)}


def producer_variables() -> set[str]:
    return {value for name, value in vars(producer_config).items() if name.startswith("ENV_")}


def code_variables() -> set[str]:
    return set(worker_variables()) | producer_variables() | set(LISTEN_VARIABLES)


def _literal(default: str) -> str | None:
    """The value inside a backticked default, ``None`` for a default in words."""
    match = re.fullmatch(r"`([^`]*)`", default)
    return match.group(1) if match else None


def _worker_settings(env: dict[str, str]) -> dict[str, Any]:
    settings = dataclasses.asdict(WorkerConfig.from_env(env))
    settings.pop("consumer")   # a fresh random suffix each time
    return settings


def _listener(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in list(os.environ):
        if name.startswith("TELEMETRY_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return listener_config()


def test_every_variable_the_code_reads_has_a_row_in_the_readme() -> None:
    documented = {row.variable for row in table_rows(ROOT / "README.md")}
    assert {"TELEMETRY_DLQ_RETENTION", "TELEMETRY_METRICS_HOST", "TELEMETRY_PSEUDONYMIZE",
            "TELEMETRY_PSEUDONYM_KEY", *LISTEN_VARIABLES} <= code_variables()
    assert sorted(code_variables() - documented) == []
    assert sorted(documented - code_variables()) == []


def _problems(row: Row, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """How ``row``'s default differs from the code's, for each part of the code reading it."""
    value = _literal(row.default)
    said = f"{row.where}: {row.variable} default {row.default!r}"
    if row.variable in PROSE_DEFAULTS:
        if PROSE_DEFAULTS[row.variable] not in row.default:
            yield f"{said}: expected words like {PROSE_DEFAULTS[row.variable]!r}"
        return
    if value is None and row.default not in UNSET:
        yield f"{said} is neither `value` nor off/–"
        return
    workers = worker_variables()
    if row.variable in workers:
        ok = (getattr(WorkerConfig(), workers[row.variable]) in (None, (), False) if value is None
              else _worker_settings({row.variable: value}) == _worker_settings({}))
        if not ok:
            yield f"{said} is not the worker's"
    if row.variable in producer_variables() and value is not None and \
            ProducerConfig.from_env({row.variable: value}) != ProducerConfig.from_env({}):
        yield f"{said} is not the producer's"
    if row.variable in LISTENER_FIELDS:
        field = LISTENER_FIELDS[row.variable]
        actual = getattr(_listener({}, monkeypatch), field)
        documented = None if value is None else getattr(_listener({row.variable: value}, monkeypatch), field)
        if actual != documented:
            yield f"{said}: the listener's is {actual!r}"


def test_every_documented_default_is_the_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = all_rows()
    assert len({row.where.split(":")[0] for row in rows}) >= 3   # README and docs tables were read
    assert [problem for row in rows for problem in _problems(row, monkeypatch)] == []
