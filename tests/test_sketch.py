"""The quantile sketch: accuracy at every rank, merge = union, exact serialisation, bounded size."""

from __future__ import annotations

import math
import random

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.aggregation.sketch import MAX_BINS, QuantileSketch

QS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 1.0)


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def _sketch(values: list[float]) -> QuantileSketch:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(value)
    return sketch


_finite = st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(_finite, min_size=1, max_size=300))
def test_every_quantile_is_within_one_percent_of_the_value_at_its_rank(values: list[float]) -> None:
    sketch = _sketch(values)
    assert sketch.count == len(values)
    for q in QS:
        exact = _exact(values, q)
        assert abs(sketch.quantile(q) - exact) <= 0.01 * abs(exact), (q, exact)


@settings(max_examples=100, deadline=None)
@given(st.lists(_finite, max_size=100), st.lists(_finite, max_size=100))
def test_merge_is_the_sketch_of_the_union(left: list[float], right: list[float]) -> None:
    merged = _sketch(left)
    merged.merge(_sketch(right))
    assert merged == _sketch(left + right)
    assert merged.count == len(left) + len(right)


@settings(max_examples=100, deadline=None)
@given(st.lists(_finite, max_size=200))
def test_state_round_trips_exactly_through_msgpack(values: list[float]) -> None:
    sketch = _sketch(values)
    state = msgpack.unpackb(msgpack.packb(sketch.to_state()), raw=False)
    again = QuantileSketch.from_state(state)
    assert again == sketch and again.count == sketch.count
    assert [again.quantile(q) for q in QS] == [sketch.quantile(q) for q in QS] or not values


def test_clamping_to_min_and_max_makes_the_extremes_exact() -> None:
    values = [3.3, 1.1, 2.2]
    sketch = _sketch(values)
    assert sketch.quantile(0.0, 1.1, 3.3) == 1.1
    assert sketch.quantile(1.0, 1.1, 3.3) == 3.3
    assert math.isnan(QuantileSketch().quantile(0.5))


def test_zero_and_negative_values() -> None:
    sketch = _sketch([-5.0, 0.0, 0.0, 7.0])
    assert abs(sketch.quantile(0.0) + 5.0) <= 0.05
    assert sketch.quantile(0.4) == 0.0
    assert abs(sketch.quantile(1.0) - 7.0) <= 0.07


def test_serialisation_is_compact_for_a_realistic_latency_distribution() -> None:
    rng = random.Random(1)
    sketch = _sketch([rng.lognormvariate(3, 1) for _ in range(100_000)])
    size = len(msgpack.packb(sketch.to_state()))
    assert size < 2_000, size  # a few hundred buckets, mostly one-byte deltas and small counts


def test_bucket_count_is_bounded_and_high_quantiles_stay_accurate() -> None:
    values = [10.0 ** (e / 10) for e in range(-3000, 3000)]  # 600 decades: far more than MAX_BINS buckets
    sketch = _sketch(values)
    assert len(sketch.positive) <= MAX_BINS
    # the lowest buckets were folded together: ranks above them keep the guarantee
    for q in (0.7, 0.9, 0.99, 1.0):
        exact = _exact(values, q)
        assert abs(sketch.quantile(q) - exact) <= 0.01 * exact
