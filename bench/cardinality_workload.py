"""A backlog with an exact number of series per window, of the seed's main measurement.

``attachment_monitoring`` carries ``user_id`` as a tag, so one window holds one series per
(user, bot, risk level) that spoke in it: with thousands of users, tens of thousands of series
per window is the normal case. :func:`make_step` builds ``series`` such series (user ``u{i // 8}``,
bot ``i % 8``, a fixed risk level each), spreads ``events`` events evenly over them and over
``windows`` consecutive windows in the recent past, and packs them per shard into wire entries
of up to ``BATCH_EVENTS`` events in event-time order, as a busy producer would send them.

Usage::

    step = make_step(10_000, events=200_000, windows=4, shards=4, seed=1)
    step.entries          # [(stream key, entry fields)] to XADD
    step.by_window[0]     # the first window's wire events, for in-process measurements
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from producers.keys import shard_of_series, stream_key
from producers.wire import KIND_EMIT, WireEvent, encode_entry, encode_events
from tests import chaos_harness as ch

MEASUREMENT = "attachment_monitoring"
WINDOW_S = 10.0
BATCH_EVENTS = 500
PRODUCER_ID = "ca4d1a11ca4d1a11"
_BOTS = ("elena", "marcus", "jake", "ryan", "dream", "aethys", "gabriel", "sophia")
_RISK = ("LOW", "MEDIUM", "HIGH")

Entry = tuple[str, dict[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Step:
    """One sweep step: its shape, the wire entries to XADD, and the events per window."""

    series: int
    events: int
    windows: int
    entries: list[Entry]
    by_window: list[list[WireEvent]]

    @property
    def points(self) -> int:
        """Points the step must produce: one per series per window."""
        return self.series * self.windows


def _tags(index: int) -> dict[str, str]:
    """Series ``index``'s tags, in the order bot code passes them."""
    return {"user_id": f"u{index // len(_BOTS)}", "bot_name": _BOTS[index % len(_BOTS)],
            "risk_level": _RISK[(index // len(_BOTS)) % len(_RISK)]}


def _event(rng: random.Random, ts: float, tags: dict[str, str]) -> WireEvent:
    """An attachment check as ``AttachmentMonitor`` records it (fields of the seed's catalogue)."""
    return (KIND_EMIT, MEASUREMENT, ts, tags,
            {"emotional_intensity": rng.random(), "interaction_frequency": rng.uniform(0, 50),
             "dependency_count": rng.randrange(15), "consecutive_days": rng.randrange(31),
             "intervention_provided": rng.random() < 0.1})


def make_step(series: int, *, events: int, windows: int, shards: int, seed: int) -> Step:
    """``events`` events over exactly ``series`` series in each of ``windows`` windows.

    Every series has an event in every window (``events >= series * windows``), so each window
    holds exactly ``series`` series-windows and the step produces ``series * windows`` points.
    """
    per_window = events // windows
    if per_window < series:
        raise ValueError(f"{events} events over {windows} windows cannot touch {series} series each")
    rng = random.Random(seed)
    tags = [_tags(index) for index in range(series)]
    start = ch.first_window_for(time.time(), WINDOW_S, windows)
    by_window: list[list[WireEvent]] = []
    for window in range(windows):
        base = start + window * WINDOW_S
        stamped = sorted((base + rng.uniform(0.01, WINDOW_S - 0.01), n % series) for n in range(per_window))
        by_window.append([_event(rng, ts, tags[index]) for ts, index in stamped])
    by_shard: dict[int, list[WireEvent]] = {}
    for window_events in by_window:
        for event in window_events:
            by_shard.setdefault(shard_of_series(MEASUREMENT, event[3], shards), []).append(event)
    entries: list[Entry] = []
    for shard, shard_events in sorted(by_shard.items()):
        for number, begin in enumerate(range(0, len(shard_events), BATCH_EVENTS), start=1):
            batch = shard_events[begin:begin + BATCH_EVENTS]
            entries.append((stream_key(ch.PREFIX, shard),
                            encode_entry(PRODUCER_ID, number, encode_events(batch), len(batch))))
    return Step(series, per_window * windows, windows, entries, by_window)
