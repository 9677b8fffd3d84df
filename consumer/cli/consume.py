"""``telemetry consume [--drain] [--redis-url ...] [--influx-url ...] ...``: run the worker.

Every ``TELEMETRY_*`` variable is also a flag without the prefix; the common ones are listed in
``--help``, the others (``--window``, ``--grace``, ``--lease``, ...) are accepted the same way.
"""

from __future__ import annotations

import typer

from consumer.core.config import WorkerConfig, parse_flags
from consumer.pipeline.worker import run_worker


def register(app: typer.Typer) -> None:
    """Add the ``consume`` command to ``app``."""

    @app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def consume(
        ctx: typer.Context,
        drain: bool = typer.Option(False, "--drain", help="Process everything in the streams, flush "
                                   "every open window, exit 0."),
        redis_url: str = typer.Option(None, "--redis-url", help="TELEMETRY_REDIS_URL"),
        stream_prefix: str = typer.Option(None, "--stream-prefix", help="TELEMETRY_STREAM_PREFIX"),
        shards: str = typer.Option(None, "--shards", help="TELEMETRY_SHARDS"),
        group: str = typer.Option(None, "--group", help="TELEMETRY_GROUP"),
        influx_url: str = typer.Option(None, "--influx-url", help="TELEMETRY_INFLUX_URL"),
        influx_api: str = typer.Option(None, "--influx-api", help="TELEMETRY_INFLUX_API (v2 or v1)"),
        influx_bucket: str = typer.Option(None, "--influx-bucket", help="TELEMETRY_INFLUX_BUCKET"),
        influx_db: str = typer.Option(None, "--influx-db", help="TELEMETRY_INFLUX_DB"),
        metrics_port: str = typer.Option(None, "--metrics-port", help="TELEMETRY_METRICS_PORT"),
    ) -> None:
        """Run the worker: Redis Streams -> windows -> InfluxDB (TELEMETRY_* configure it)."""
        flags = {
            "redis_url": redis_url, "stream_prefix": stream_prefix, "shards": shards, "group": group,
            "influx_url": influx_url, "influx_api": influx_api, "influx_bucket": influx_bucket,
            "influx_db": influx_db, "metrics_port": metrics_port, "drain": True if drain else None,
        }
        config = WorkerConfig.from_env().with_overrides(**flags, **parse_flags(list(ctx.args)))
        raise typer.Exit(run_worker(config))
