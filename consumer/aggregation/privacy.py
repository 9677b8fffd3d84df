"""Pseudonymisation in the worker: configured tag values are replaced by a keyed hash before
anything is validated, aggregated, written or dead-lettered.

The hash itself lives in :mod:`producers.pseudonyms`, shared with the producer (which can
pseudonymise on its flusher thread), so both give the same output by construction; see there
for the rules (a value that already is a pseudonym is kept, so producer and worker can both be
on). :meth:`Pseudonymizer.wire_event` works on the raw wire event and is what the worker's
windows call; :meth:`Pseudonymizer.apply` does the same for an already validated
:class:`~consumer.core.model.Event`.

Usage::

    pseudonymizer = Pseudonymizer(("user_id",), key=secret_bytes)
    raw = pseudonymizer.wire_event(raw)  # before validation: tags["user_id"] == "p_3fa1c2..."
    event = pseudonymizer.apply(event)   # the same for a validated Event
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from consumer.aggregation.validate import make_event
from consumer.core.model import Event
from producers import pseudonyms
from producers.pseudonyms import DIGEST_HEX_CHARS, PREFIX, is_pseudonym

if TYPE_CHECKING:
    from consumer.core.config import WorkerConfig

_CACHE_LIMIT: Final = pseudonyms._CACHE_LIMIT

__all__ = ["DIGEST_HEX_CHARS", "PREFIX", "Pseudonymizer", "for_config", "is_pseudonym"]


class Pseudonymizer(pseudonyms.Pseudonymizer):
    """:class:`producers.pseudonyms.Pseudonymizer` plus :meth:`apply` for validated events."""

    __slots__ = ()

    def apply(self, event: Event) -> Event:
        """The event with configured tag values pseudonymised (the same object when none is present)."""
        tags = self.tags(event.tags)
        if tags is event.tags:
            return event
        return make_event(event.kind, event.measurement, event.ts, tags, event.fields, event.position)


def for_config(config: WorkerConfig) -> Pseudonymizer | None:
    """The pseudonymizer ``config`` asks for (``TELEMETRY_PSEUDONYMIZE``), or ``None`` when off."""
    if not config.pseudonymize:
        return None
    return Pseudonymizer(config.pseudonymize, (config.pseudonym_key or "").encode())
