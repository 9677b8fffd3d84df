"""``telemetry dashboards build|validate|push``: a thin shell over :mod:`consumer.dashboards`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from consumer.cli.operator_options import EXIT_CHECK_FAILED, EXIT_USAGE, fail, load_config
from consumer.dashboards.build import DEFAULT_OUT, build
from consumer.dashboards.grafana import (
    DEFAULT_BUCKET,
    DEFAULT_DATASOURCE_UID,
    DEFAULT_FOLDER_UID,
    DEFAULT_INFLUXQL_DATASOURCE_UID,
    FLAVOURS,
    RenderOptions,
)
from consumer.dashboards.push import GrafanaClient, PushError, dashboard_files
from consumer.dashboards.validate import InfluxQLTarget, validate

OutDir = Annotated[Path, typer.Option("--out", help="directory of the generated files")]

dashboards_app = typer.Typer(help="Generate, validate and upload the Grafana dashboards.",
                             no_args_is_help=True)


@dashboards_app.command("build")
def build_command(
    datasource_uid: Annotated[str, typer.Option("--datasource-uid", help="Flux datasource uid")]
    = DEFAULT_DATASOURCE_UID,
    influxql_datasource_uid: Annotated[str, typer.Option("--influxql-datasource-uid",
                                                         help="InfluxQL datasource uid")]
    = DEFAULT_INFLUXQL_DATASOURCE_UID,
    bucket: Annotated[str, typer.Option("--bucket", help="default of the dashboards' bucket variable")]
    = DEFAULT_BUCKET,
    out: OutDir = DEFAULT_OUT,
) -> None:
    """Generate dashboards (Flux and InfluxQL), provisioning and alert rules from the spec."""
    options = RenderOptions(datasource_uid, influxql_datasource_uid, bucket)
    written = build(out, options)
    typer.echo(f"wrote {len(written)} files to {out}")


def _influx_target() -> InfluxQLTarget | None:
    config = load_config()  # the worker's settings: TELEMETRY_INFLUX_*
    token = config.influx_token if config.influx_api == "v2" else None
    return InfluxQLTarget(config.influx_url, config.database, config.influx_user, config.influx_password,
                          token)


@dashboards_app.command("validate")
def validate_command(
    out: OutDir = DEFAULT_OUT,
    install_parser: Annotated[bool, typer.Option(
        "--install-parser/--no-install-parser",
        help="fetch the Flux parser with npm when it is missing")] = True,
    influx: Annotated[bool, typer.Option(
        "--influx/--no-influx",
        help="run InfluxQL queries against TELEMETRY_INFLUX_URL when reachable")] = True,
) -> None:
    """Check every query (Flux parser, InfluxQL on InfluxDB), datasource uids and time ranges."""
    report = validate(out, influx=_influx_target() if influx else None, install_parser=install_parser)
    for note in report.notes:
        typer.echo(f"note: {note}")
    for problem in report.problems:
        typer.echo(f"✗ {problem}")
    if not report.ok:
        typer.echo(f"{len(report.problems)} problem(s) in {report.checked} queries", err=True)
        raise typer.Exit(EXIT_CHECK_FAILED)
    typer.echo(f"✓ {report.checked} queries valid")


@dashboards_app.command("push")
def push_command(
    grafana_url: Annotated[str, typer.Option("--grafana-url", envvar="GRAFANA_URL")] = "http://localhost:3002",
    grafana_token: Annotated[str | None, typer.Option("--grafana-token", envvar="GRAFANA_TOKEN",
                                                      show_default=False)] = None,
    folder_uid: Annotated[str, typer.Option("--folder-uid")] = DEFAULT_FOLDER_UID,
    create_folder: Annotated[bool, typer.Option("--create-folder", help="create the folder if missing")]
    = False,
    flavour: Annotated[str, typer.Option("--flavour", help="flux or influxql")] = "flux",
    out: OutDir = DEFAULT_OUT,
) -> None:
    """Upload the generated dashboards (POST /api/dashboards/db, overwrite) into the folder."""
    if flavour not in FLAVOURS:
        fail(f"--flavour must be one of: {', '.join(FLAVOURS)}", EXIT_USAGE)
    if not grafana_token:
        fail("GRAFANA_TOKEN is not set (a service-account token with Editor role)", EXIT_USAGE)
    files = dashboard_files(out, "influxql" if flavour == "influxql" else "flux")
    if not files:
        fail(f"no dashboards in {out}: run `telemetry dashboards build`", EXIT_USAGE)
    client = GrafanaClient(grafana_url, grafana_token)
    try:
        if create_folder:
            client.create_folder(folder_uid)
        for path in files:
            result = client.push(json.loads(path.read_text(encoding="utf-8")), folder_uid=folder_uid)
            typer.echo(f"✓ {path.name} -> {result.url or result.uid} (version {result.version})")
    except PushError as exc:
        fail(str(exc), EXIT_CHECK_FAILED)


def register(app: typer.Typer) -> None:
    """Add ``telemetry dashboards …`` to the main app."""
    app.add_typer(dashboards_app, name="dashboards")
