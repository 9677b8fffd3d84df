"""``telemetry inspect``: the streams at a glance (lengths, groups, consumers, pending, lag).

Everything shown is read from Redis with read-only commands (:mod:`consumer.admin.stream_admin`); the
``--json`` document has the same numbers, for scripts and tests. Dead letters are reported with
the oldest one's age and the retention after which the workers trim them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Final

import typer
from rich.console import Console
from rich.table import Table

from consumer.admin.stream_admin import DeadLetterCounts, ShardInfo, StreamAdmin, entry_ms
from consumer.cli.operator_options import (
    Group,
    JsonFlag,
    RedisUrl,
    Shards,
    StreamPrefix,
    connect_redis,
    load_config,
    print_json,
    redis_errors,
)
from consumer.core.config import DEFAULT_DLQ_RETENTION_S

LAG_WARN_S: Final = 10.0
LAG_ALARM_S: Final = 60.0
PENDING_WARN_S: Final = 30.0
IDLE_WARN_MS: Final = 60_000
RETENTION_SLACK_S: Final = 300.0
"""Workers trim dead letters every minute or so: older than the retention by this is a warning."""


def _iso(entry_id: str | None) -> str | None:
    if not entry_id:
        return None
    return dt.datetime.fromtimestamp(entry_ms(entry_id) / 1000, dt.UTC).isoformat(timespec="milliseconds")


def warnings_for(shards: list[ShardInfo], group: str) -> list[str]:
    """Plain-language problems worth an operator's attention (also in ``--json``)."""
    found: list[str] = []
    for shard in shards:
        if not shard.exists:
            found.append(f"{shard.key}: stream does not exist yet (no producer has sent to it)")
            continue
        info = shard.group(group)
        if info is None:
            found.append(f"{shard.key}: consumer group {group!r} missing (start the worker: "
                         "telemetry consume)")
            continue
        if not info.consumers or all(c.idle_ms > IDLE_WARN_MS for c in info.consumers):
            found.append(f"{shard.key}: no live consumer in group {group!r} (is the worker running?)")
        if info.lag_s >= LAG_WARN_S:
            found.append(f"{shard.key}: lag {info.lag_entries} entries, {info.lag_s:.1f}s behind")
        if info.oldest_pending_age_s is not None and info.oldest_pending_age_s >= PENDING_WARN_S:
            found.append(f"{shard.key}: oldest pending entry is {info.oldest_pending_age_s:.1f}s old")
    return found


def collect(admin: StreamAdmin) -> tuple[int, list[ShardInfo], DeadLetterCounts]:
    """Server time, every shard and the dead-letter counts, read in one pass."""
    now_ms = admin.server_time_ms()
    shards = [admin.shard_info(shard, now_ms) for shard in range(admin.shards)]
    return now_ms, shards, admin.dead_letter_counts()


def dead_letter_doc(dead: DeadLetterCounts, now_ms: int, retention_s: float) -> dict[str, Any]:
    """Dead letters by reason, the oldest one's age and the retention they age out after."""
    doc = dataclasses.asdict(dead)
    doc["oldest_time"] = _iso(dead.oldest_id)
    doc["oldest_age_s"] = (now_ms - entry_ms(dead.oldest_id)) / 1000 if dead.oldest_id else None
    doc["retention_s"] = retention_s
    return doc


def document(admin: StreamAdmin, now_ms: int, shards: list[ShardInfo],
             dead: DeadLetterCounts, *, dlq_retention_s: float = DEFAULT_DLQ_RETENTION_S) -> dict[str, Any]:
    """The whole ``inspect`` document (what ``--json`` prints)."""
    ours = [g for s in shards for g in s.groups if g.name == admin.group]
    shard_docs = []
    for shard in shards:
        doc = dataclasses.asdict(shard)
        doc["first_time"] = _iso(shard.first_id)
        doc["last_time"] = _iso(shard.last_id)
        shard_docs.append(doc)
    return {
        "server_time_ms": now_ms,
        "stream_prefix": admin.prefix,
        "group": admin.group,
        "shards": shard_docs,
        "totals": {
            "length": sum(s.length for s in shards),
            "pending": sum(g.pending for g in ours),
            "lag_entries": sum(g.lag_entries or 0 for g in ours),
        },
        "dead_letters": dead_letter_doc(dead, now_ms, dlq_retention_s),
        "warnings": warnings_for(shards, admin.group) + _retention_warnings(dead, now_ms, dlq_retention_s),
    }


def _retention_warnings(dead: DeadLetterCounts, now_ms: int, retention_s: float) -> list[str]:
    if dead.oldest_id is None:
        return []
    age_s = (now_ms - entry_ms(dead.oldest_id)) / 1000
    if age_s <= retention_s + RETENTION_SLACK_S:
        return []
    return [f"dead letters older than their retention ({retention_s:g}s) are still kept: the oldest is "
            f"{age_s:.0f}s old (is a worker running with the same TELEMETRY_DLQ_RETENTION?)"]


def _style_s(seconds: float | None, warn: float, alarm: float) -> str:
    if seconds is None:
        return "-"
    colour = "red" if seconds >= alarm else "yellow" if seconds >= warn else "green"
    return f"[{colour}]{seconds:.1f}s[/{colour}]"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{seconds:.0f}s"


def _shard_row(shard: ShardInfo, group: str) -> list[str]:
    if not shard.exists:
        return [shard.key, "[dim]missing[/dim]", "-", "-", "-", "-", "-", "-", "-"]
    info = shard.group(group)
    memory = f"{(shard.memory_bytes or 0) / 1024:.0f} KiB"
    span = f"{(_iso(shard.first_id) or '-')[11:23]} → {(_iso(shard.last_id) or '-')[11:23]}"
    others = ",".join(g.name for g in shard.groups if g.name != group)
    if info is None:
        return [shard.key, str(shard.length), span, memory, f"[red]no group {group}[/red] {others}",
                "-", "-", "-", "-"]
    consumers = ", ".join(f"{c.name} ({c.idle_ms / 1000:.0f}s idle, {c.pending} pend.)"
                          for c in info.consumers)
    lag = f"{info.lag_entries if info.lag_entries is not None else '?'} / " + _style_s(
        info.lag_s, LAG_WARN_S, LAG_ALARM_S)
    return [shard.key, str(shard.length), span, memory, info.name + (f" (+{others})" if others else ""),
            consumers or "[red]none[/red]", str(info.pending), lag,
            _style_s(info.oldest_pending_age_s, PENDING_WARN_S, PENDING_WARN_S * 4)]


def render(doc: dict[str, Any], shards: list[ShardInfo], dead: DeadLetterCounts, console: Console) -> None:
    """The human view: one table of shards, dead letters by reason, then warnings."""
    table = Table(title=f"streams {doc['stream_prefix']}:{{0..{len(shards) - 1}}}  group {doc['group']!r}")
    for column in ("stream", "length", "first → last (UTC)", "memory", "group", "consumers", "pending",
                   "lag entries / s", "oldest pending"):
        table.add_column(column, overflow="fold")
    for shard in shards:
        table.add_row(*_shard_row(shard, doc["group"]))
    console.print(table)
    if dead.total:
        reasons = ", ".join(f"{reason} {count}" for reason, count in dead.by_reason.items())
        more = "" if dead.complete else " (first part scanned)"
        oldest = doc["dead_letters"]["oldest_age_s"] or 0.0
        console.print(f"[yellow]dead letters: {dead.total}[/yellow] — {reasons}{more}  (telemetry dlq list)")
        console.print(f"dead letters are kept {_age(doc['dead_letters']['retention_s'])} "
                      f"(TELEMETRY_DLQ_RETENTION); the oldest is {_age(oldest)} old")
    else:
        console.print(f"[green]dead letters: 0[/green] (kept {_age(doc['dead_letters']['retention_s'])}, "
                      "TELEMETRY_DLQ_RETENTION)")
    for warning in doc["warnings"]:
        console.print(f"[yellow]! {warning}[/yellow]")


def inspect_command(redis_url: RedisUrl = None, stream_prefix: StreamPrefix = None, shards: Shards = None,
                    group: Group = None, as_json: JsonFlag = False) -> None:
    """Streams, lengths, groups, consumers, pending, lag, oldest pending age, dead letters."""
    config = load_config(redis_url=redis_url, stream_prefix=stream_prefix, shards=shards, group=group)
    admin = StreamAdmin(connect_redis(config), prefix=config.stream_prefix, shards=config.shards,
                        group=config.group)
    with redis_errors(config):
        now_ms, shard_list, dead = collect(admin)
    doc = document(admin, now_ms, shard_list, dead, dlq_retention_s=config.dlq_retention_s)
    if as_json:
        print_json(doc)
        return
    render(doc, shard_list, dead, Console())


def register(app: typer.Typer) -> None:
    """Add ``inspect`` to the ``telemetry`` command line."""
    app.command("inspect")(inspect_command)
