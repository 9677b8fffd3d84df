"""A mergeable quantile sketch (DDSketch) with a compact, exact serialisation.

Why a sketch: an ``observe``/``timer`` field needs percentiles per series-window, and a window
is retained (and checkpointed) until it falls out of allowed lateness. Keeping every value would
make both memory and the checkpoint grow with traffic; a DDSketch keeps one counter per
logarithmic bucket instead, and still answers every quantile within a fixed *relative* error.

How it works (Masson, Rim, Lee: "DDSketch", VLDB 2019): a positive value ``v`` goes to bucket
``k = ceil(log(v) / log(gamma))`` with ``gamma = (1 + a) / (1 - a)``; every value in bucket ``k``
lies in ``(gamma**(k-1), gamma**k]``, and the bucket's representative ``2 * gamma**k / (gamma + 1)``
is within relative error ``a`` of all of them. Negative values use a mirrored store, exact zeros
a counter. The quantile ``q`` of ``n`` values is the bucket holding the value of rank
``floor(q * (n - 1))`` in sorted order, so the answer is within ``a`` of the true value at that
rank. Two sketches merge by adding counters: the result is the sketch of the union.

Memory is bounded: a store holds at most :data:`MAX_BINS` buckets; past that its lowest buckets
(the values closest to zero) are collapsed into one, which keeps the upper quantiles exact to
``a`` and only coarsens values ``gamma**MAX_BINS`` (about 10**14) times smaller than the largest.

Usage::

    sketch = QuantileSketch()
    for latency_ms in (12.0, 15.5, 230.0):
        sketch.add(latency_ms)
    p90 = sketch.quantile(0.9)
    again = QuantileSketch.from_state(sketch.to_state())   # msgpack-friendly, exact round trip
"""

from __future__ import annotations

import math
from typing import Final

RELATIVE_ACCURACY: Final = 0.008
"""Guaranteed relative error of every quantile (below the 1% the contract promises)."""
GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA: Final = math.log(GAMMA)
_INV_LOG_GAMMA: Final = 1.0 / _LOG_GAMMA
_REPRESENTATIVE: Final = 2.0 / (1.0 + GAMMA)
MAX_BINS: Final = 2048
"""Most buckets one store (positive or negative values) keeps before collapsing its lowest."""

SketchState = list[object]


def _value(key: int) -> float:
    try:
        return math.exp(key * _LOG_GAMMA) * _REPRESENTATIVE
    except OverflowError:
        return math.inf


def _collapse(store: dict[int, int]) -> None:
    """Fold the lowest buckets into one so that ``store`` holds at most MAX_BINS buckets."""
    keys = sorted(store)
    keep_from = len(keys) - MAX_BINS
    target = keys[keep_from]
    for key in keys[:keep_from]:
        store[target] += store.pop(key)


def _encode_store(store: dict[int, int]) -> list[int]:
    """``[k0, c0, dk1, c1, ...]``: sorted keys as deltas, so most numbers are one msgpack byte."""
    flat: list[int] = []
    previous = 0
    for key in sorted(store):
        flat.append(key - previous)
        flat.append(store[key])
        previous = key
    return flat


def _decode_store(flat: list[int]) -> dict[int, int]:
    store: dict[int, int] = {}
    key = 0
    for i in range(0, len(flat), 2):
        key += flat[i]
        store[key] = flat[i + 1]
    return store


class QuantileSketch:
    """DDSketch over finite floats: ``add``, ``merge``, ``quantile``, ``to_state``/``from_state``."""

    __slots__ = ("count", "negative", "positive", "zero")

    def __init__(self) -> None:
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}
        self.zero = 0
        self.count = 0

    def add(self, value: float) -> None:
        """Count one finite value (the caller has rejected NaN and infinities)."""
        self.count += 1
        if value > 0.0:
            store = self.positive
            key = math.ceil(math.log(value) * _INV_LOG_GAMMA)
        elif value < 0.0:
            store = self.negative
            key = math.ceil(math.log(-value) * _INV_LOG_GAMMA)
        else:
            self.zero += 1
            return
        if key in store:
            store[key] += 1
        else:
            store[key] = 1
            if len(store) > MAX_BINS:
                _collapse(store)

    def merge(self, other: QuantileSketch) -> None:
        """Add ``other``'s counts: afterwards this is the sketch of both value sets."""
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
            if len(mine) > MAX_BINS:
                _collapse(mine)
        self.zero += other.zero
        self.count += other.count

    def quantile(self, q: float, low: float = -math.inf, high: float = math.inf) -> float:
        """Estimate of the value at rank ``floor(q * (count - 1))``, clamped to ``[low, high]``.

        Passing the exact minimum and maximum as ``low``/``high`` makes ``q=0`` and ``q=1`` exact
        and keeps every estimate inside the observed range. ``nan`` when the sketch is empty.
        """
        if self.count == 0:
            return math.nan
        rank = math.floor(q * (self.count - 1))
        if rank <= 0 and low > -math.inf:
            return low
        if rank >= self.count - 1 and high < math.inf:
            return high
        estimate = self._at_rank(rank)
        return min(max(estimate, low), high)

    def _at_rank(self, rank: int) -> float:
        seen = 0
        for key in sorted(self.negative, reverse=True):  # most negative values first
            seen += self.negative[key]
            if seen > rank:
                return -_value(key)
        seen += self.zero
        if seen > rank:
            return 0.0
        for key in sorted(self.positive):
            seen += self.positive[key]
            if seen > rank:
                return _value(key)
        return _value(max(self.positive)) if self.positive else 0.0

    def to_state(self) -> SketchState:
        """A msgpack-friendly list of ints: ``[zero, positive..., negative...]`` (delta-coded)."""
        return [self.zero, _encode_store(self.positive), _encode_store(self.negative)]

    @classmethod
    def from_state(cls, state: SketchState) -> QuantileSketch:
        """Rebuild the exact sketch :meth:`to_state` described."""
        zero, positive, negative = state
        sketch = cls()
        sketch.zero = int(zero)  # type: ignore[call-overload]
        sketch.positive = _decode_store(positive)  # type: ignore[arg-type]
        sketch.negative = _decode_store(negative)  # type: ignore[arg-type]
        sketch.count = sketch.zero + sum(sketch.positive.values()) + sum(sketch.negative.values())
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantileSketch):
            return NotImplemented
        return (self.zero, self.positive, self.negative) == (other.zero, other.positive, other.negative)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"QuantileSketch(count={self.count}, buckets={len(self.positive) + len(self.negative)})"
