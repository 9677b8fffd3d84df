"""What a doctor check reports: its status, what was found and the fix, and short constructors.

Shared by the Redis checks (:mod:`consumer.doctor.checks`) and the InfluxDB and Grafana checks
(:mod:`consumer.doctor.downstream`), so every line of the report has one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """The outcome of one check."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the doctor's report: what was checked, what was found, how to fix it."""

    name: str
    title: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


def ok(name: str, title: str, summary: str, **details: Any) -> CheckResult:
    """A passed check."""
    return CheckResult(name, title, Status.OK, summary, details=details)


def fail(name: str, title: str, summary: str, fix: str, **details: Any) -> CheckResult:
    """A failed check, with the fix."""
    return CheckResult(name, title, Status.FAIL, summary, fix, details)


def skip(name: str, title: str, because: str) -> CheckResult:
    """A check not run because a prerequisite failed (the first failure is the one to fix)."""
    return CheckResult(name, title, Status.SKIP, f"skipped: {because}")
