"""``telemetry doctor``: "why is my panel empty?" — every link checked, ✓ or ✗ with the exact fix.

A thin shell over :mod:`consumer.doctor.checks`. Exit code 1 when any check fails.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from consumer.cli.operator_options import (
    EXIT_CHECK_FAILED,
    Group,
    JsonFlag,
    RedisUrl,
    Shards,
    StreamPrefix,
    duration_flag,
    env_option,
    load_config,
    print_json,
)
from consumer.doctor.checks import CheckResult, Doctor, Status

_MARKS = {
    Status.OK: "[green]✓[/green]",
    Status.FAIL: "[red]✗[/red]",
    Status.WARN: "[yellow]![/yellow]",
    Status.SKIP: "[dim]–[/dim]",
}


def print_report(results: list[CheckResult], console: Console) -> None:
    """One line per check, the fix indented under each failure or warning."""
    for result in results:
        console.print(
            f"{_MARKS[result.status]} [bold]{escape(result.title)}[/bold]: {escape(result.summary)}"
        )
        if result.fix and result.status in (Status.FAIL, Status.WARN):
            console.print(f"    [cyan]fix:[/cyan] {escape(result.fix)}", soft_wrap=True)
    failed = sum(r.status is Status.FAIL for r in results)
    if failed:
        console.print(f"[red]{failed} check(s) failed[/red] — fix the first ✗ first; later ones often follow")
    else:
        warned = sum(r.status is Status.WARN for r in results)
        note = f" ({warned} warning(s): worth knowing, nothing broken)" if warned else ""
        console.print(f"[green]all checks passed[/green]{note}")


def doctor_command(
    redis_url: RedisUrl = None,
    stream_prefix: StreamPrefix = None,
    shards: Shards = None,
    group: Group = None,
    influx_url: Annotated[str | None, env_option("--influx-url")] = None,
    influx_api: Annotated[str | None, env_option("--influx-api")] = None,
    influx_db: Annotated[str | None, env_option("--influx-db")] = None,
    influx_bucket: Annotated[str | None, env_option("--influx-bucket")] = None,
    influx_org: Annotated[str | None, env_option("--influx-org")] = None,
    influx_user: Annotated[str | None, env_option("--influx-user")] = None,
    grafana_url: Annotated[
        str | None,
        typer.Option(
            "--grafana-url",
            envvar="GRAFANA_URL",
            show_default=False,
            help="check Grafana too [env GRAFANA_URL]",
        ),
    ] = None,
    recent: Annotated[str, typer.Option("--recent", help="streams must have an entry this recent")] = "5m",
    lag_limit: Annotated[str, typer.Option("--lag-limit", help="largest acceptable lag")] = "60s",
    since: Annotated[str, typer.Option("--since", help="look for points this far back")] = "1h",
    as_json: JsonFlag = False,
) -> None:
    """The "dashboard shows no data" checklist: each check ✓/✗ with the fix; exit 1 on any ✗."""
    config = load_config(
        redis_url=redis_url,
        stream_prefix=stream_prefix,
        shards=shards,
        group=group,
        influx_url=influx_url,
        influx_api=influx_api,
        influx_db=influx_db,
        influx_bucket=influx_bucket,
        influx_org=influx_org,
        influx_user=influx_user,
    )
    doctor = Doctor(
        config,
        recent_s=duration_flag("--recent", recent),
        lag_limit_s=duration_flag("--lag-limit", lag_limit),
        points_since_s=duration_flag("--since", since),
        grafana_url=grafana_url,
        grafana_token=os.environ.get("GRAFANA_TOKEN") or None,
    )
    results = doctor.run()
    ok = not any(r.status is Status.FAIL for r in results)
    if as_json:
        first = next((r.name for r in results if r.status is Status.FAIL), None)
        print_json({"ok": ok, "first_failure": first, "checks": [dataclasses.asdict(r) for r in results]})
    else:
        print_report(results, Console(soft_wrap=True))
    if not ok:
        raise typer.Exit(EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to the ``telemetry`` command line."""
    app.command("doctor")(doctor_command)
