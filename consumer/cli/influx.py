"""``telemetry influx setup``: database/bucket, retention and downsampling in one command."""

from __future__ import annotations

from typing import Annotated

import typer

from consumer.admin.influx_admin import (
    DEFAULT_DOWNSAMPLE_EVERY,
    DEFAULT_DOWNSAMPLE_RETENTION,
    DEFAULT_RAW_RP,
    DEFAULT_RETENTION,
    InfluxAdminError,
    InfluxQLAdmin,
    SetupPlan,
    describe,
    setup_v1,
    setup_v2,
)
from consumer.cli.operator_options import EXIT_CHECK_FAILED, EXIT_USAGE, env_option, fail
from producers.durations import ConfigError

influx_app = typer.Typer(help="Prepare InfluxDB for the pipeline.", no_args_is_help=True)


@influx_app.command("setup")
def setup_command(
    influx_url: Annotated[str | None, env_option("--influx-url")] = None,
    influx_api: Annotated[str | None, env_option("--influx-api")] = None,
    influx_org: Annotated[str | None, env_option("--influx-org")] = None,
    influx_bucket: Annotated[str | None, env_option("--influx-bucket")] = None,
    influx_db: Annotated[str | None, env_option("--influx-db")] = None,
    influx_rp: Annotated[str | None, env_option("--influx-rp")] = None,
    influx_user: Annotated[str | None, env_option("--influx-user")] = None,
    retention: Annotated[str, typer.Option("--retention", help="how long window points are kept")]
    = DEFAULT_RETENTION,
    downsample_retention: Annotated[str, typer.Option("--downsample-retention",
                                                      help="how long downsampled points are kept")]
    = DEFAULT_DOWNSAMPLE_RETENTION,
    downsample_every: Annotated[str, typer.Option("--downsample-every", help="downsampled resolution")]
    = DEFAULT_DOWNSAMPLE_EVERY,
) -> None:
    """Create the database (v1) or bucket (v2) with retention and downsampling; idempotent."""
    from consumer.core.config import WorkerConfig

    try:
        config = WorkerConfig.from_env().with_overrides(
            influx_url=influx_url, influx_api=influx_api, influx_org=influx_org, influx_bucket=influx_bucket,
            influx_db=influx_db, influx_rp=influx_rp, influx_user=influx_user)
        if influx_bucket and not influx_db:  # the database follows the bucket unless given
            config = config.with_overrides(influx_db=influx_bucket)
        plan = SetupPlan(database=config.database if config.influx_api == "v1" else config.influx_bucket,
                         raw_rp=config.influx_rp or DEFAULT_RAW_RP, retention=retention,
                         downsample_retention=downsample_retention, downsample_every=downsample_every)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", EXIT_USAGE)
    try:
        if config.influx_api == "v1":
            admin = InfluxQLAdmin(config.influx_url, user=config.influx_user, password=config.influx_password)
            done = setup_v1(admin, plan)
        else:
            done = setup_v2(config.influx_url, config.influx_token, config.influx_org, plan)
    except InfluxAdminError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)
    typer.echo(describe(done))


def register(app: typer.Typer) -> None:
    """Add ``telemetry influx …`` to the main app."""
    app.add_typer(influx_app, name="influx")
