"""The ``telemetry`` command line: a thin shell over library calls.

Each command lives in its own module under ``consumer/cli/`` and exposes ``register(app)``;
this module only assembles them and turns configuration and connection errors into one clear
line and the documented exit codes (0 ok, 1 a check failed, 2 usage or configuration error).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Final

import typer

from producers.durations import ConfigError

EXIT_OK: Final = 0
EXIT_CHECK_FAILED: Final = 1
EXIT_USAGE: Final = 2

# Command modules, in --help order. Each defines ``register(app: typer.Typer) -> None``.
COMMAND_MODULES: Final = (
    "consumer.cli.consume",
    "consumer.cli.emit",
    "consumer.cli.inspect",
    "consumer.cli.tail",
    "consumer.cli.dlq",
    "consumer.cli.doctor",
    "consumer.cli.top",
    "consumer.cli.demo",
    "consumer.cli.dashboards",
    "consumer.cli.influx",
    "consumer.cli.listen",
)

app = typer.Typer(
    name="telemetry",
    help=(
        "Telemetry pipeline for the bot's learning components: events -> Redis Streams -> "
        "windowed aggregation -> InfluxDB -> Grafana.\n\n"
        "Configuration comes from TELEMETRY_* environment variables; every variable is also a "
        "flag without the prefix (TELEMETRY_REDIS_URL -> --redis-url). Start with "
        "`telemetry demo`, and when a panel is empty, `telemetry doctor`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _register_commands() -> None:
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not built into this distribution
            raise
        module.register(app)


_register_commands()


def main() -> None:
    """Console-script entry point: configuration errors are one line and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app()
    except ConfigError as exc:
        typer.echo(f"telemetry: configuration error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
