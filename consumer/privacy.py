"""Pseudonymisation: configured tag values are replaced by a keyed hash before anything is stored.

Why keyed and deterministic: the dashboards drill down by ``user_id``, so the same user must get
the same pseudonym in every window, on every worker, after every restart; but without the key
nobody can recompute a pseudonym from a guessed id (a plain hash of a small id space is
reversible by enumeration). HMAC-SHA256 with a secret key gives both.

A pseudonym is ``p_`` plus the first 16 hex digits (64 bits) of the HMAC: short enough for a tag,
long enough that two users of one bot never collide in practice. The key is never logged or
shown; ``repr`` masks it. Changing the key changes every pseudonym (old series stay as they are).

Usage::

    pseudonymizer = Pseudonymizer(("user_id",), key=secret_bytes)
    event = pseudonymizer.apply(event)   # tags["user_id"] == "p_3fa1c2..." (16 hex digits)
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from consumer.model import Event
from consumer.validate import make_event

PREFIX: Final = "p_"
DIGEST_HEX_CHARS: Final = 16
_CACHE_LIMIT: Final = 100_000


class Pseudonymizer:
    """Replaces the values of ``tag_keys`` with ``p_`` + 16 hex digits of HMAC-SHA256(key, value)."""

    __slots__ = ("_cache", "_key", "tag_keys")

    def __init__(self, tag_keys: tuple[str, ...], key: bytes) -> None:
        if tag_keys and not key:
            raise ValueError("pseudonymisation needs a non-empty key")
        self.tag_keys = tuple(tag_keys)
        self._key = bytes(key)
        self._cache: dict[str, str] = {}

    def pseudonym(self, value: str) -> str:
        """The pseudonym of one tag value (cached: ids repeat far more often than they are new)."""
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        digest = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        result = PREFIX + digest[:DIGEST_HEX_CHARS]
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded memory under an id bomb; recomputing is cheap
        self._cache[value] = result
        return result

    def apply(self, event: Event) -> Event:
        """The event with configured tag values pseudonymised (the same object when none is present)."""
        tags = event.tags
        hit = [key for key in self.tag_keys if key in tags]
        if not hit:
            return event
        new_tags = dict(tags)
        for key in hit:
            new_tags[key] = self.pseudonym(tags[key])
        return make_event(event.kind, event.measurement, event.ts, new_tags, event.fields, event.position)

    def __repr__(self) -> str:
        return f"Pseudonymizer(tag_keys={self.tag_keys!r}, key=****)"
