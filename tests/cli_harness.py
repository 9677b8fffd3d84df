"""Run operator commands in isolation: a ``telemetry`` app holding only the modules under test.

Tests of one command should not fail because another command's module is being changed, so they
assemble their own app from ``register(app)`` functions. ``python -m tests.cli_harness MODULE
ARGS...`` runs one in a child process (for ``tail`` and ``top``, which run until stopped).
"""

from __future__ import annotations

import importlib
import sys

import typer


def make_app(*module_names: str) -> typer.Typer:
    """A Typer app with the commands of ``module_names`` (each has ``register(app)``)."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Keep sub-command names even when only one command is registered."""

    for name in module_names:
        importlib.import_module(name).register(app)
    return app


def child_argv(module_name: str, *args: str) -> list[str]:
    """The command line running ``module_name``'s commands with ``args`` in a child process."""
    return [sys.executable, "-m", "tests.cli_harness", module_name, *args]


def stream_flags(redis_url: str, prefix: str, shards: int | str) -> list[str]:
    """The connection flags every operator command takes: Redis URL, stream prefix, shard count."""
    return ["--redis-url", redis_url, "--stream-prefix", prefix, "--shards", str(shards)]


if __name__ == "__main__":
    make_app(sys.argv[1])(sys.argv[2:], prog_name="telemetry")
