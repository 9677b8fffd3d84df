"""Check Flux queries with InfluxData's own parser, run under node.

The npm package ``@influxdata/flux-lsp-browser`` ships the Flux parser and semantic checker as
WebAssembly; ``flux_validate.mjs`` (shipped beside this module) loads it and answers
``is_valid_flux`` for a list of scripts. A query is checked as Grafana sends it: template variables
interpolated with sample values and Grafana's ``v`` record defined first (Grafana provides
``v.timeRangeStart`` etc.), so a misspelt function, a bad argument or a type error fails here
instead of as a blank panel.

Usage::

    checker = FluxChecker.locate(install=True)      # None when node/npm are unavailable
    results = checker.check([interpolate_flux(q) for q in queries])
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PACKAGE: Final = "@influxdata/flux-lsp-browser"
PACKAGE_VERSION: Final = "0.8.40"
DEFAULT_CACHE: Final = Path.home() / ".cache" / "whisperengine-telemetry" / "flux-lsp"
HELPER: Final = Path(__file__).with_name("flux_validate.mjs")
TIMEOUT_S: Final = 120.0

GRAFANA_V_RECORD: Final = (
    "v = {timeRangeStart: 2026-01-01T00:00:00Z, timeRangeStop: 2026-01-02T00:00:00Z, "
    'windowPeriod: 1m, defaultBucket: "whisperengine", organization: "whisperengine"}\n'
)
SAMPLE_VALUES: Final[Mapping[str, str]] = {"bucket": "whisperengine"}

_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")


def interpolate(query: str, values: Mapping[str, str] | None = None, *, all_value: str = ".*") -> str:
    """Replace Grafana template variables (``${bucket}``, ``${bot_name:regex}``) with samples.

    A variable without a sample value takes ``all_value`` (what "All" sends).
    """
    samples = {**SAMPLE_VALUES, **(values or {})}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        return samples.get(name, all_value)

    return _VARIABLE.sub(replace, query)


def as_grafana_sends(query: str, values: Mapping[str, str] | None = None) -> str:
    """The script Flux sees: variables interpolated, ``v`` defined before the query.

    ``import`` statements must come first in Flux, so the ``v`` record goes after them.
    """
    text = interpolate(query, values)
    lines = text.split("\n")
    imports = [line for line in lines if line.startswith("import ")]
    body = [line for line in lines if not line.startswith("import ")]
    return "\n".join([*imports, GRAFANA_V_RECORD, *body])


@dataclass(frozen=True, slots=True)
class FluxResult:
    """The parser's verdict on one script."""

    valid: bool
    error: str | None


class FluxCheckerUnavailable(RuntimeError):
    """node, npm or the parser package is missing; the message says which."""


@dataclass(frozen=True, slots=True)
class FluxChecker:
    """Runs the helper under node against an installed parser package."""

    node: str
    package_dir: Path
    helper: Path = HELPER

    @classmethod
    def locate(cls, *, install: bool = False, cache_dir: Path | None = None) -> FluxChecker:
        """Find node and the parser package; with ``install`` fetch it with npm when missing."""
        node = shutil.which("node")
        if node is None:
            raise FluxCheckerUnavailable("node is not installed")
        if not HELPER.exists():
            raise FluxCheckerUnavailable(f"the Flux check helper is missing: {HELPER}")
        cache = cache_dir or Path(os.environ.get("TELEMETRY_FLUX_LSP_DIR", DEFAULT_CACHE))
        package_dir = cache / "node_modules" / "@influxdata" / "flux-lsp-browser"
        if not (package_dir / "flux-lsp-browser_bg.wasm").exists():
            if not install:
                raise FluxCheckerUnavailable(f"{PACKAGE} is not installed in {cache}")
            _npm_install(cache)
        return cls(node, package_dir)

    def check(self, scripts: Sequence[str]) -> list[FluxResult]:
        """One result per script, in order."""
        completed = subprocess.run(
            [self.node, str(self.helper), str(self.package_dir)], input=json.dumps(list(scripts)),
            capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if completed.returncode != 0:
            raise FluxCheckerUnavailable(f"the Flux parser failed to run: {completed.stderr.strip()[-300:]}")
        return [FluxResult(bool(r["valid"]), r.get("error")) for r in json.loads(completed.stdout)]


def _npm_install(cache: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise FluxCheckerUnavailable("npm is not installed (needed once to fetch the Flux parser)")
    cache.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(cache), f"{PACKAGE}@{PACKAGE_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False)
    if completed.returncode != 0:
        raise FluxCheckerUnavailable(f"npm install {PACKAGE} failed: {completed.stderr.strip()[-300:]}")
