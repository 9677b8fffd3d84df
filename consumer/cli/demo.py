"""``telemetry demo``: the whole pipeline on a simulated bot workload; no set-up needed.

Uses the configured Redis and InfluxDB when they answer, else starts private ones (see
:mod:`consumer.demo.services`), and stops what it started before it exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from consumer.cli.operator_options import (
    EXIT_CHECK_FAILED,
    EXIT_USAGE,
    JsonFlag,
    RedisUrl,
    Shards,
    StreamPrefix,
    duration_flag,
    env_option,
    fail,
    load_config,
    print_json,
)
from consumer.demo import DemoOptions, DemoSummary, run_demo


def print_summary(summary: DemoSummary, console: Console) -> None:
    """The human summary: sent vs written per measurement, dead letters, the queries."""
    table = Table(
        title=f"{summary.messages:,} messages, {summary.events_total:,} events in {summary.duration_s:.1f}s",
        caption="sent: events the demo emitted; points: points written to InfluxDB; in points: events "
                "their event_count fields add up to; dead: dead letters",
    )
    # short headers: full measurement names must fit 80 columns (a log file, a narrow terminal)
    table.add_column("measurement", justify="left", no_wrap=True)
    for column in ("sent", "points", "in points", "dead"):
        table.add_column(column, justify="right")
    for name, sent in summary.events_sent.items():
        landed = summary.points.get(name, {})
        events = landed.get("events", 0)
        dead_n = summary.dead_letters_by_measurement.get(name, 0)
        colour = "green" if events + dead_n == sent else "red"
        table.add_row(
            name,
            f"{sent:,}",
            f"{landed.get('points', 0):,}",
            f"[{colour}]{events:,}[/{colour}]",
            f"{dead_n:,}" if dead_n else "",
        )
    console.print(table)
    dead = ", ".join(f"{reason} {n}" for reason, n in summary.dead_letters.items()) or "none"
    if summary.dead_letters:
        dead += " (see them: telemetry dlq list)"
    console.print(f"dead letters: {dead}")
    levels = ", ".join(f"{level} {n}" for level, n in summary.risk_levels.items()) or "none"
    console.print(f"risk levels checked: {levels}")
    console.print(
        f"worker: {summary.worker.get('events_in', 0):,} events in, "
        f"{summary.worker.get('points_out', 0):,} points out"
    )
    console.print("\n[bold]See the data[/bold] (InfluxQL):")
    console.print(summary.queries["influxql"], highlight=False, soft_wrap=True)
    console.print("[bold]Flux[/bold] (InfluxDB 2.x / Grafana):")
    console.print(summary.queries["flux"], highlight=False, soft_wrap=True)
    for key in ("curl", "file", "note"):
        if key in summary.queries:
            console.print(f"[dim]{summary.queries[key]}[/dim]", highlight=False, soft_wrap=True)


def demo_command(
    duration: Annotated[str, typer.Option("--duration", help="how long to send")] = "20s",
    rate: Annotated[float, typer.Option("--rate", help="user messages per second (~15 events each)")] = 50.0,
    users: Annotated[int, typer.Option("--users", help="simulated users")] = 200,
    bots: Annotated[int, typer.Option("--bots", help="simulated bots (1-9)")] = 3,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed (repeatable runs)")] = None,
    bad_rate: Annotated[
        float, typer.Option("--bad-rate", help="share of checks sent with a NaN value (shows dead letters)")
    ] = 0.002,
    redis_url: RedisUrl = None,
    stream_prefix: StreamPrefix = None,
    shards: Shards = None,
    influx_url: Annotated[str | None, env_option("--influx-url")] = None,
    influx_api: Annotated[str | None, env_option("--influx-api")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="show the worker's log")] = False,
    keep: Annotated[bool, typer.Option("--keep", help="keep private services running until Enter")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run a realistic bot workload through producer, Redis, worker and InfluxDB; no set-up needed."""
    duration_s = duration_flag("--duration", duration)
    if rate <= 0 or users < 1 or not 1 <= bots <= 9:
        fail("--rate must be > 0, --users >= 1, --bots 1-9", EXIT_USAGE)
    config = load_config(
        redis_url=redis_url,
        stream_prefix=stream_prefix,
        shards=shards,
        influx_url=influx_url,
        influx_api=influx_api,
    )
    options = DemoOptions(
        duration_s=duration_s,
        rate=rate,
        users=users,
        bots=bots,
        seed=seed,
        bad_rate=bad_rate,
        live=not as_json,
        # Only a Redis or InfluxDB the user named is used: the defaults may point at someone else's.
        use_configured_redis=bool(redis_url or os.environ.get("TELEMETRY_REDIS_URL")),
        use_configured_influx=bool(influx_url or os.environ.get("TELEMETRY_INFLUX_URL")),
    )
    console = Console(stderr=as_json)
    if not verbose:
        # The worker logs every shard it takes; the progress view already says what happens.
        logging.getLogger("consumer").setLevel(logging.WARNING)

    def show(summary: DemoSummary) -> None:
        if as_json:
            print_json(dataclasses.asdict(summary))
        else:
            print_summary(summary, console)
        if keep:
            console.print(
                "[bold]services kept running[/bold]: run the queries above; press Enter to stop them"
            )
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input()

    try:
        summary = run_demo(config, options, console, before_stop=show)
    except (OSError, RuntimeError) as exc:
        fail(f"demo failed: {exc}")
    if summary.unaccounted():
        raise typer.Exit(EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the ``telemetry`` command line."""
    app.command("demo")(demo_command)
