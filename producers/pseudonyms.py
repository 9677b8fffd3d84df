"""Pseudonyms: the one keyed hash that producer and worker both use, so their outputs agree.

Configured tag values (``TELEMETRY_PSEUDONYMIZE``, e.g. ``user_id``) are replaced by a keyed hash
(``TELEMETRY_PSEUDONYM_KEY``). The producer can do it on its flusher thread, before an event
leaves the bot process; the worker does it before an event is validated, aggregated or
dead-lettered. Both call :meth:`Pseudonymizer.wire_event` on the wire array
``[kind, measurement, ts, tags, fields]``, so a mixed fleet writes the same series.

Why keyed and deterministic: the dashboards drill down by ``user_id``, so the same user must get
the same pseudonym in every window, on every worker, after every restart; but without the key
nobody can recompute a pseudonym from a guessed id (a plain hash of a small id space is
reversible by enumeration). HMAC-SHA256 with a secret key gives both.

A pseudonym is ``p_`` plus the first 16 lowercase hex digits (64 bits) of
HMAC-SHA256(key, UTF-8 of the value): short enough for a tag, long enough that two users of one
bot never collide in practice. The key is never logged or shown; ``repr`` masks it.

Rules, the same on both sides (a pseudonym of a pseudonym never happens):

- a value that already is a pseudonym (``p_`` + 16 lowercase hex digits) is kept: when the
  producer and the worker both pseudonymise, the worker recognises the producer's output. No
  flag travels with the event, so dead-letter replays and old entries need nothing special.
- an empty string is kept (the worker drops empty tags anyway).
- a value that is not a string cannot be hashed the same way on both sides (msgpack changes
  types in transit), so it is replaced by the marker ``{"redacted": "<type name>"}``: the raw
  value is gone, the event stays invalid and the worker dead-letters it naming the tag.
- tags that are not a map are replaced by ``None`` (the event stays invalid, nothing is kept).
- a ``rejected`` event (kind 5: input that could not be read as a point) carries the input's
  text, which may hold a raw value; when a configured tag key appears in it, the text and the
  parser's detail are withheld (the line number and reason stay).

Usage::

    pseudonymizer = Pseudonymizer(("user_id",), key=secret_bytes)
    pseudonymizer.pseudonym("u42")                       # "p_3fa1c2..." (16 hex digits)
    pseudonymizer.wire_event([0, "m", 1.7e9, {"user_id": "u42"}, {"x": 1}])
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

PREFIX: Final = "p_"
DIGEST_HEX_CHARS: Final = 16
REDACTED: Final = "redacted"
"""The key of the marker that replaces a value that is not a string."""
WITHHELD: Final = "withheld: it may hold a pseudonymised tag's raw value"
_CACHE_LIMIT: Final = 100_000
_PSEUDONYM: Final = re.compile(r"p_[0-9a-f]{16}")
_KIND_REJECTED: Final = 5   # producers.wire.KIND_REJECTED, not imported: this module stands alone


def pseudonym(key: bytes, value: str) -> str:
    """``p_`` + the first 16 hex digits of HMAC-SHA256(``key``, ``value`` as UTF-8)."""
    # str.encode: a str subclass (an enum member) hashes as the text msgpack would send
    digest = hmac.new(key, str.encode(value, "utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGEST_HEX_CHARS]


def is_pseudonym(value: object) -> bool:
    """Whether ``value`` already has the form of a pseudonym (so it is not hashed again)."""
    return isinstance(value, str) and len(value) == 18 and _PSEUDONYM.fullmatch(value) is not None


def _is_marker(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(REDACTED), str)


def _rebuilt(event: Any, tags: Any, fields: Any) -> Any:
    """``event`` with new tags and fields, of the same type (list as decoded, tuple as buffered)."""
    if isinstance(event, tuple):
        return (event[0], event[1], event[2], tags, fields)
    return [event[0], event[1], event[2], tags, fields]


class Pseudonymizer:
    """Replaces the values of ``tag_keys`` with their pseudonyms (see the module docstring)."""

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
        result = value if is_pseudonym(value) else pseudonym(self._key, value)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()  # bounded memory under an id bomb; recomputing is cheap
        self._cache[value] = result
        return result

    def value(self, value: Any) -> Any:
        """What one configured tag's value becomes: its pseudonym, ``""``, or the marker."""
        if isinstance(value, str):
            return self.pseudonym(value) if value else value
        if _is_marker(value):
            return value
        return {REDACTED: type(value).__name__}

    def tags(self, tags: Any) -> Any:
        """``tags`` with configured values replaced: the same object when none is present."""
        if tags.__class__ is not dict:
            if not isinstance(tags, Mapping):
                return None if tags is not None else tags
            tags = dict(tags)
        new: dict[Any, Any] | None = None
        for key in self.tag_keys:
            if key in tags:
                old = tags[key]
                replaced = self.value(old)
                if replaced is not old and replaced != old:
                    if new is None:
                        new = dict(tags)
                    new[key] = replaced
        return tags if new is None else new

    def wire_event(self, event: Any) -> Any:
        """A wire event (list or tuple ``[kind, measurement, ts, tags, fields]``) pseudonymised.

        Returns the same object when nothing changes, else a new one of the same type; anything
        that is not a 5-element array is returned as it is (the worker dead-letters it).
        """
        if (event.__class__ is not list and event.__class__ is not tuple) or len(event) != 5:
            return event
        tags = event[3]
        if event[0] == _KIND_REJECTED:
            return self._rejected(event)
        new_tags = self.tags(tags)
        if new_tags is tags:
            return event
        return _rebuilt(event, new_tags, event[4])

    def _rejected(self, event: Any) -> Any:
        """A kind-5 event with its text and detail withheld when they may hold a raw value."""
        tags, fields = event[3], event[4]
        text = repr(tags) + repr(fields)
        if not any(key in text for key in self.tag_keys):
            return event
        new_tags = dict(tags) if isinstance(tags, Mapping) else {}
        detail = str(new_tags.get("detail", ""))
        prefix = detail.split(":", 1)[0] if detail.startswith("line ") else ""
        new_tags["detail"] = f"{prefix}: {WITHHELD}" if prefix else WITHHELD
        return _rebuilt(event, new_tags, {"line": WITHHELD})

    def __repr__(self) -> str:
        return f"Pseudonymizer(tag_keys={self.tag_keys!r}, key=****)"


__all__ = ["DIGEST_HEX_CHARS", "PREFIX", "REDACTED", "WITHHELD", "Pseudonymizer", "is_pseudonym", "pseudonym"]
