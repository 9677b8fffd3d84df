"""Run the benchmarks and write their figures into ``bench/RESULTS.md``.

Each ``bench/bench_<name>.py`` module defines ``run() -> str`` returning a Markdown section.
``python -m bench`` runs them all; ``python -m bench producer aggregation`` runs only those and
replaces just their sections, so one benchmark can be re-run without redoing the others.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import re
import sys
import time
from pathlib import Path

import bench

RESULTS = Path(__file__).with_name("RESULTS.md")
_SECTION = re.compile(r"<!-- bench:(?P<name>[\w-]+) -->\n.*?<!-- /bench:(?P=name) -->\n", re.S)


def _available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__)
                  if m.name.startswith("bench_"))


def _wrap(name: str, body: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return f"<!-- bench:{name} -->\n{body.rstrip()}\n\n_run {stamp}_\n<!-- /bench:{name} -->\n"


def _merge(existing: str, sections: dict[str, str]) -> str:
    found = {m.group("name") for m in _SECTION.finditer(existing)}
    merged = _SECTION.sub(lambda m: sections.get(m.group("name"), m.group(0)), existing)
    for name, text in sections.items():
        if name not in found:
            merged = merged.rstrip() + "\n\n" + text
    return merged


def main(argv: list[str]) -> int:
    names = argv or _available()
    unknown = sorted(set(names) - set(_available()))
    if unknown:
        print(f"bench: unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(_available())}")
        return 2
    header = (
        "# Benchmark results\n\n"
        "Written by `make bench` (`python -m bench [NAME...]`). Machine: "
        f"{platform.machine()}, Python {platform.python_version()}, 2 cores shared; figures are "
        "from one run and vary with load — compare rows within a section, not across runs.\n"
    )
    existing = RESULTS.read_text() if RESULTS.exists() else header
    sections: dict[str, str] = {}
    for name in names:
        print(f"bench: running {name} ...", flush=True)
        module = importlib.import_module(f"bench.bench_{name}")
        sections[name] = _wrap(name, module.run())
        RESULTS.write_text(_merge(existing, sections))
        print(sections[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
