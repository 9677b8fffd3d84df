"""Where a draining worker's time goes: ``py-spy`` samples, summed per phase and per function.

:func:`profile_drain` runs ``python -m consumer --drain`` under ``py-spy record --idle`` (idle
samples included, so time spent waiting on Redis or InfluxDB shows up) and writes the collapsed
stacks (``-f raw``, which speedscope and flamegraph.pl both read). :func:`summarise` turns them
into shares of samples: per phase (the innermost frame that names one decides) and the functions
with the most samples of their own, over the main thread's samples.

Usage::

    stacks = profile_drain(env, out_path, log_path)     # None when py-spy is not installed
    print(summarise(stacks.read_text()).markdown())
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.chaos_harness import REPO

RATE_HZ: Final = 200
TOP: Final = 12

PHASES: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("line protocol encoding", ("encode_points", "encode_point", "format_value", "_cached_escape")),
    ("checkpoint: snapshot of the window state", ("ShardWindows.snapshot", "pack_snapshot", "encode_window",
                                                   "_encode_accumulator")),
    ("checkpoint: Redis call (Lua HSET + XACK)", ("CheckpointStore.save",)),
    ("InfluxDB write: waiting for influxd's answer", ("getresponse",)),
    ("InfluxDB write: sending the request", ("InfluxV1Sink._post", "InfluxV2Sink._post", "urlopen")),
    ("collect: points from dirty series", ("collect_due", "collect_all", "_collect", "Shape.fields")),
    ("record: series already in the window", ("update_fields", "fold")),  # fold: compiled per shape
    ("record: new series (validate, key, create)", ("_record_one", "validate", "ShardWindows.record",
                                                     "_find_series", "_open_series", "_new_series",
                                                     "_record_new_fields", "new_accumulator")),
    ("record: fast-path checks", ("record_batch",)),
    ("decode stream entries", ("decode_entry", "unpackb")),
    ("read from Redis", ("read_range", "read_new", "xrange", "xreadgroup")),
    ("trim, upkeep after a checkpoint", ("housekeeping",)),
    ("start-up: imports, leases, groups", ("_find_and_load", "maintain", "acquire", "ensure_group")),
    ("waiting for an InfluxDB write (nothing left to read)", ("WriteBehind.wait",)),
    ("waiting (drain poll, backoff)", ("Worker._read", "_wait")),  # after the two above: innermost wins
)
MAIN_THREAD: Final = "_run_module_as_main"
"""The outermost frame of the worker's main thread (``python -m``); other threads (the lease
keeper during a write) are idle nearly always and are left out of the shares."""


@dataclass(frozen=True, slots=True)
class Summary:
    """Sample shares per phase and the top functions by their own samples."""

    samples: int
    phases: list[tuple[str, int]]
    functions: list[tuple[str, int]]

    def markdown(self) -> str:
        if not self.samples:
            return "_no samples_\n"
        lines = ["| phase | share of samples |", "|---|---:|"]
        lines += [f"| {name} | {count / self.samples:.1%} |" for name, count in self.phases]
        lines += ["", "| function (own samples) | share |", "|---|---:|"]
        lines += [f"| `{name}` | {count / self.samples:.1%} |" for name, count in self.functions]
        return "\n".join(lines) + "\n"


def _frame_name(frame: str) -> str:
    """``func (path/to/file.py)`` -> ``func (pkg/file.py)``, short and stable across machines."""
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").split("/")
    return f"{name} ({'/'.join(parts[-2:])})" if where else name


def _phase(frames: list[str]) -> str:
    """The phase of the innermost frame that names one (bare or qualified function name)."""
    for frame in reversed(frames):
        function = frame.partition(" (")[0]
        bare = function.rsplit(".", 1)[-1]
        for phase, markers in PHASES:
            if function in markers or bare in markers:
                return phase
    return "other"


def summarise(raw: str) -> Summary:
    """Shares from py-spy's collapsed stacks (``frame;frame;... count`` per line)."""
    phases: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if not frames[0].startswith(MAIN_THREAD):
            continue
        total += count
        phases[_phase(frames)] += count
        functions[frames[-1]] += count
    return Summary(total, phases.most_common(), functions.most_common(TOP))


def py_spy() -> str | None:
    """The py-spy next to this interpreter, else on PATH (``pip install py-spy``)."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


def profile_drain(env: dict[str, str], out: Path, log: Path, timeout_s: float = 300.0) -> Path | None:
    """Drain the streams under py-spy; the collapsed-stacks file, or None without py-spy."""
    tool = py_spy()
    if tool is None:
        return None
    command = [tool, "record", "--idle", "--nolineno", "-r", str(RATE_HZ), "-f", "raw", "-o", str(out),
               "--", sys.executable, "-m", "consumer", "--drain"]
    with open(log, "ab") as handle:
        subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                       timeout=timeout_s, check=True)
    return out
