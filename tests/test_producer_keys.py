"""Shards are a cross-process contract: these values must never change between releases."""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from typing import Any

import pytest

from producers.keys import shard_of_series

PINNED: list[tuple[str, Any, int, int]] = [
    ("m", None, 4, 0),
    ("m", {}, 4, 0),
    ("attachment_monitoring", {"user_id": "u42", "bot_name": "elena", "risk_level": "HIGH"}, 4, 3),
    ("attachment_monitoring", {"user_id": "u42", "bot_name": "elena", "risk_level": "HIGH"}, 8, 7),
    ("cpu", {"host": "a"}, 16, 14),
    ("cpu", {"host": "b"}, 16, 4),
    ("ünïcode", {"é": "ß", "a": "\ud800"}, 7, 5),
    ("m", {"n": 3}, 5, 2),
    ("x", {"a": "b"}, 1, 0),
    ("m", {"b": "1", "a": "2"}, 1_000_003, 503_378),
]


def _reference(measurement: str, tags: Mapping[str, Any] | None, shards: int) -> int:
    """The canonical encoding spelled out once: measurement, then per sorted key 0x00 key 0x01 value."""
    if shards <= 1:
        return 0
    data = measurement.encode("utf-8", "surrogatepass")
    for key in sorted(tags or {}):
        data += b"\x00" + str(key).encode("utf-8", "surrogatepass")
        data += b"\x01" + str(tags[key]).encode("utf-8", "surrogatepass")  # type: ignore[index]
    return zlib.crc32(data) % shards


@pytest.mark.parametrize(("measurement", "tags", "shards", "expected"), PINNED)
def test_shard_of_series_pinned_values(measurement: str, tags: Any, shards: int, expected: int) -> None:
    assert shard_of_series(measurement, tags, shards) == expected
    assert _reference(measurement, tags, shards) == expected


def test_shard_of_series_matches_the_canonical_encoding_on_random_series() -> None:
    rng = random.Random(20261125)
    alphabet = "abcxyz_-:{} \x00\x01éß\u20ac\U0001f600"
    seen = set()
    for _ in range(3_000):
        tags = {"".join(rng.choices(alphabet, k=rng.randint(1, 6))):
                "".join(rng.choices(alphabet, k=rng.randint(0, 8))) for _ in range(rng.randint(0, 5))}
        measurement = "".join(rng.choices(alphabet, k=rng.randint(1, 10)))
        shards = rng.choice([2, 3, 4, 8, 64, 1_000_003])
        got = shard_of_series(measurement, tags, shards)
        assert got == _reference(measurement, tags, shards)
        seen.add(got % 2)
    assert seen == {0, 1}  # the values actually vary, so the comparison above means something


def test_shard_of_series_uses_str_of_non_string_tags() -> None:
    import enum

    class Risk(str, enum.Enum):  # noqa: UP042 - str() and format() differ here, StrEnum hides that
        HIGH = "HIGH"

    cases: list[dict[Any, Any]] = [{"risk": Risk.HIGH}, {Risk.HIGH: True, "n": 1.5, "k": 3}, {"u": None}]
    for tags in cases:
        for shards in (3, 8, 1_000_003):
            assert shard_of_series("m", tags, shards) == _reference("m", tags, shards)
