"""``telemetry dlq list|replay|purge``: the dead letters, with their reasons, and what to do with them.

A thin shell over :mod:`consumer.dlq.ops`; see there for what replay guarantees. With
``TELEMETRY_PSEUDONYMIZE`` set, letters are listed and replayed as pseudonymised.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from consumer.admin.stream_admin import entry_ms
from consumer.aggregation.privacy import for_config
from consumer.cli.operator_options import (
    JsonFlag,
    RedisUrl,
    Shards,
    StreamPrefix,
    connect_redis,
    duration_flag,
    load_config,
    print_json,
    redis_errors,
)
from consumer.core.config import WorkerConfig
from consumer.dlq.ops import DeadLetterRecord, DeadLetters

Reason = Annotated[str | None, typer.Option("--reason", help="only dead letters with this reason")]

dlq_app = typer.Typer(help="Dead letters: list them with reasons, replay them through the pipeline, purge.",
                      no_args_is_help=True)


def _letters(redis_url: str | None, stream_prefix: str | None, shards: str | None) -> tuple[
        WorkerConfig, DeadLetters]:
    config = load_config(redis_url=redis_url, stream_prefix=stream_prefix, shards=shards)
    return config, DeadLetters(connect_redis(config), prefix=config.stream_prefix, shards=config.shards,
                               stream_maxlen=config.stream_maxlen, privacy=for_config(config))


def _row(record: DeadLetterRecord) -> list[str]:
    when = dt.datetime.fromtimestamp(entry_ms(record.dlq_id) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    what = "-"
    if record.event is not None:
        what = f"{record.event[1]} {record.event[3]} {record.event[4]}"
    position = f"{record.source} {record.entry_id}"
    if record.index is not None:
        position += f"[{record.index}]"
    return [when, f"[yellow]{escape(record.reason)}[/yellow]", escape(record.detail), escape(position),
            escape(what[:120])]


@dlq_app.command("list")
def list_command(reason: Reason = None,
                 limit: Annotated[int, typer.Option("--limit", help="show at most this many")] = 100,
                 redis_url: RedisUrl = None, stream_prefix: StreamPrefix = None, shards: Shards = None,
                 as_json: JsonFlag = False) -> None:
    """Dead letters, oldest first, with reason, detail, source position and the original event."""
    config, letters = _letters(redis_url, stream_prefix, shards)
    with redis_errors(config):
        records = letters.records(reason=reason, limit=limit)
        counts = letters.counts()
    if as_json:
        print_json({"total": sum(counts.values()), "by_reason": counts,
                    "dead_letters": [record.as_dict() for record in records]})
        return
    console = Console()
    table = Table(title=f"dead letters in {letters.key}: {sum(counts.values())} "
                        f"({', '.join(f'{k} {v}' for k, v in counts.items()) or 'none'})")
    for column in ("time (UTC)", "reason", "detail", "source", "event"):
        table.add_column(column, overflow="fold")
    for record in records:
        table.add_row(*_row(record))
    console.print(table)
    if records:
        console.print("replay with [bold]telemetry dlq replay[/bold] [--reason R] after fixing the cause; "
                      "drop old ones with [bold]telemetry dlq purge --older-than 7d[/bold]")


@dlq_app.command("replay")
def replay_command(reason: Reason = None,
                   dry_run: Annotated[bool, typer.Option("--dry-run", help="count only")] = False,
                   redis_url: RedisUrl = None, stream_prefix: StreamPrefix = None, shards: Shards = None,
                   as_json: JsonFlag = False) -> None:
    """Send dead letters back through the pipeline; the worker validates them again."""
    config, letters = _letters(redis_url, stream_prefix, shards)
    with redis_errors(config):
        report = letters.replay(reason=reason, dry_run=dry_run)
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    verb = "would replay" if dry_run else "replayed"
    shards_text = ", ".join(f"shard {s}: {n}" for s, n in sorted(report.by_shard.items())) or "nothing"
    typer.echo(f"{verb} {report.replayed} dead letter(s) ({shards_text})")
    for skipped_reason, count in sorted(report.skipped.items()):
        typer.echo(f"left {count} {skipped_reason} dead letter(s): their payload is not an event")


@dlq_app.command("purge")
def purge_command(older_than: Annotated[str, typer.Option("--older-than", help="age, e.g. 7d, 12h, 30m")],
                  redis_url: RedisUrl = None, stream_prefix: StreamPrefix = None, shards: Shards = None,
                  as_json: JsonFlag = False) -> None:
    """Delete dead letters older than a duration."""
    older_than_s = duration_flag("--older-than", older_than)
    config, letters = _letters(redis_url, stream_prefix, shards)
    with redis_errors(config):
        removed = letters.purge(older_than_s=older_than_s)
    if as_json:
        print_json({"removed": removed})
    else:
        typer.echo(f"removed {removed} dead letter(s) older than {older_than}")


def register(app: typer.Typer) -> None:
    """Add the ``dlq`` command group to the ``telemetry`` command line."""
    app.add_typer(dlq_app, name="dlq")
