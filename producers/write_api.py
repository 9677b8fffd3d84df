"""``tel.write_api()``: the object that replaces influxdb-client's ``WriteApi`` in one line.

Why: the bot's components already build ``influxdb_client.Point`` objects and call
``write_api.write(bucket=..., record=...)``, one blocking HTTP request per point. Replacing
``client.write_api(write_options=SYNCHRONOUS)`` by ``tel.write_api()`` keeps every call site as it
is; each ``write`` now only reads the record into point events and hands them to the producer's
buffer (no I/O, never raises). ``bucket`` and ``org`` are accepted and ignored: where the points
end up is the worker's configuration (``TELEMETRY_INFLUX_*``).

Usage::

    write_api = tel.write_api()            # was: client.write_api(write_options=SYNCHRONOUS)
    write_api.write(bucket="telemetry", record=Point("m").tag("user_id", "u1").field("x", 1.0))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.telemetry import Telemetry


class WriteApi:
    """influxdb-client's ``WriteApi`` surface (``write``, ``flush``, ``close``, ``with``) on a producer."""

    __slots__ = ("_telemetry",)

    def __init__(self, telemetry: Telemetry) -> None:
        self._telemetry = telemetry

    def write(self, bucket: str | None = None, org: str | None = None, record: Any = None,
              write_precision: Any = "ns", **kwargs: Any) -> None:
        """Record ``record`` (Point, line protocol, dict or a list of them); returns at once."""
        options = {k[len("record_"):]: kwargs[k] for k in _DICT_OPTIONS if k in kwargs}
        self._telemetry.write(record, write_precision, **options)

    def flush(self) -> None:
        """Wait (bounded by the producer's defaults) until what was written reached Redis."""
        self._telemetry.flush()

    def close(self) -> None:
        """Flush; the producer itself stays open (it is shared with ``emit``)."""
        self._telemetry.flush()

    def __enter__(self) -> WriteApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_DICT_OPTIONS = ("record_measurement_key", "record_time_key", "record_tag_keys", "record_field_keys",
                 "record_measurement_name")

__all__ = ["WriteApi"]
