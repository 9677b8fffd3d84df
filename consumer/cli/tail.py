"""``telemetry tail``: decoded events as they arrive, without joining the consumer group.

``tail`` reads with a plain ``XREAD`` from the newest entry of each shard at start, so it never
creates pending entries, never takes work from the worker, and can run beside it in production.
With ``TELEMETRY_PSEUDONYMIZE`` set, events are shown as the worker stores them: pseudonymised.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from consumer.admin.stream_admin import StreamAdmin, StreamEntry
from consumer.aggregation.privacy import Pseudonymizer, for_config
from consumer.cli.operator_options import (
    EXIT_USAGE,
    Group,
    JsonFlag,
    RedisUrl,
    Shards,
    StreamPrefix,
    connect_redis,
    fail,
    load_config,
    redis_errors,
)
from producers.keys import stream_key
from producers.wire import KIND_NAMES, WireError, decode_entry

BLOCK_MS = 1000


@dataclass(frozen=True, slots=True)
class TailFilter:
    """Which events to show: a measurement and tags that must all match (``None`` = any)."""

    measurement: str | None = None
    tags: Mapping[str, str] | None = None

    def matches(self, measurement: Any, tags: Any) -> bool:
        """Whether an event with ``measurement`` and ``tags`` passes."""
        if self.measurement is not None and measurement != self.measurement:
            return False
        if self.tags:
            if not isinstance(tags, Mapping):
                return False
            return all(str(tags.get(k)) == v for k, v in self.tags.items())
        return True


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """``["k=v", ...]`` -> ``{"k": "v"}``; a pair without ``=`` is a usage error."""
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--tag {pair!r} is not key=value", EXIT_USAGE)
        tags[key] = value
    return tags


def decode_events(key: str, entry: StreamEntry, wanted: TailFilter,
                  privacy: Pseudonymizer | None = None) -> Iterator[dict[str, Any]]:
    """The events of one stream entry as plain dicts (an undecodable entry yields one error dict);
    with ``privacy``, as pseudonymised (the filter's tag values are pseudonymised alike)."""
    try:
        batch = decode_entry(entry.fields)
    except WireError as exc:
        yield {"stream": key, "entry_id": entry.entry_id, "error": exc.reason, "detail": exc.detail}
        return
    for index, raw in enumerate(batch.events):
        if not isinstance(raw, list | tuple) or len(raw) != 5:
            shown = "withheld: pseudonymisation is on" if privacy is not None else repr(raw)
            yield {"stream": key, "entry_id": entry.entry_id, "index": index, "error": "invalid_event",
                   "detail": f"not a 5-element array: {shown}"[:200]}
            continue
        if privacy is not None:
            raw = privacy.wire_event(raw)
        kind, measurement, ts, tags, fields = raw
        if not wanted.matches(measurement, tags):
            continue
        yield {"stream": key, "entry_id": entry.entry_id, "index": index, "producer": batch.producer_id,
               "sequence": batch.sequence, "kind": KIND_NAMES.get(kind, str(kind)),
               "measurement": measurement, "ts": ts, "tags": tags, "fields": fields}


def _human(event: dict[str, Any]) -> str:
    if "error" in event:
        return f"[red]{escape(event['stream'])} {event['entry_id']}: {event['error']}: " \
               f"{escape(str(event['detail']))}[/red]"
    try:
        when = dt.datetime.fromtimestamp(float(event["ts"]), dt.UTC).strftime("%H:%M:%S.%f")[:-3]
    except (TypeError, ValueError, OverflowError):
        when = repr(event["ts"])
    tags = ",".join(f"{k}={v}" for k, v in sorted(dict(event["tags"] or {}).items()))
    fields = " ".join(f"{k}={v!r}" for k, v in dict(event["fields"] or {}).items())
    return (f"[dim]{when}[/dim] [cyan]{escape(event['stream'])}[/cyan] {event['kind']:<7} "
            f"[bold]{escape(str(event['measurement']))}[/bold],{escape(tags)} {escape(fields)}")


def tail_command(
    shard: Annotated[int | None, typer.Option("--shard", help="only this shard")] = None,
    measurement: Annotated[str | None, typer.Option("--measurement", help="only this measurement")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="only tag k=v (repeatable)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="stop after this many events")] = None,
    redis_url: RedisUrl = None, stream_prefix: StreamPrefix = None, shards: Shards = None,
    group: Group = None, as_json: JsonFlag = False,
) -> None:
    """Decoded events as they arrive (plain XREAD: does not join the consumer group)."""
    config = load_config(redis_url=redis_url, stream_prefix=stream_prefix, shards=shards, group=group)
    if shard is not None and not 0 <= shard < config.shards:
        fail(f"--shard {shard} is out of range (0..{config.shards - 1})", EXIT_USAGE)
    privacy = for_config(config)
    wanted_tags = parse_tags(tag or []) or None
    if privacy is not None and wanted_tags:  # `--tag user_id=u42` finds u42's events by pseudonym
        wanted_tags = privacy.tags(wanted_tags)
    wanted = TailFilter(measurement, wanted_tags)
    admin = StreamAdmin(connect_redis(config), prefix=config.stream_prefix, shards=config.shards,
                        group=config.group)
    keys = [stream_key(config.stream_prefix, shard)] if shard is not None else admin.shard_keys()
    console, out = Console(stderr=True), Console(highlight=False, soft_wrap=True)
    shown = 0
    with redis_errors(config):
        last_ids = admin.latest_ids(keys)
        console.print(f"[dim]tailing {len(keys)} stream(s) from the newest entry; Ctrl-C stops[/dim]")
        try:
            while limit is None or shown < limit:
                for key, entry in admin.read_new(last_ids, block_ms=BLOCK_MS):
                    for event in decode_events(key, entry, wanted, privacy):
                        if as_json:
                            sys.stdout.write(json.dumps(event, default=repr) + "\n")
                            sys.stdout.flush()
                        else:
                            out.print(_human(event))
                        shown += 1
                        if limit is not None and shown >= limit:
                            return
        except KeyboardInterrupt:
            return


def register(app: typer.Typer) -> None:
    """Add ``tail`` to the ``telemetry`` command line."""
    app.command("tail")(tail_command)
