"""producers.points against a real influxd: the lines it reads are the lines InfluxDB reads, as
InfluxDB reads them (accepted or refused, and the same tags, fields and time)."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from producers.points import parse_lines
from tests.services import InfluxServer

# Each line's measurement is "m"; the test renames it per line so types never conflict.
LINES = [
    "m x=1", "m x=1i", "m x=-7i", "m x=t", "m x=TRUE", "m x=True", "m x=f", "m x=1e3", "m x=.5",
    "m x=-.5e-3", "m x=1.", "m x=1 -5", "m x=1i 1700000000000000001", "m  x=1", "m x=1   5",
    'm s="a\\"b"', 'm s="a\\\\b"', 'm s="a,b c=d"', 'm,t=a"b x=1', "m,t=a,u=b x=1,y=2i,z=true",
    "m\\ a,t\\=k=v\\,w x=1",
    # refused by both
    "m x=+1", "m x=1_000", "m x=inf", "m x=nan", "m x=0x10", "m x=1 2 3", "m", "m x=", "m =1",
    "m,t= x=1", "m,=a x=1", 'm s="open', "m x=1 12ab", "m x=1,", "m x=1,,y=2", "m,t=a,t=b x=1",
    "m x=1e", "m x=1 1.5", "m x=1i 9223372036854775807", "m x=9223372036854775808i", "m x=abc",
]


def _influx_accepts(server: InfluxServer, db: str, line: str) -> bool:
    request = urllib.request.Request(f"{server.url}/write?db={db}", data=line.encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30):
            return True
    except urllib.error.HTTPError as exc:
        assert exc.code == 400, exc.read()
        return False


def test_reads_what_influxd_reads(influx: tuple[InfluxServer, str]) -> None:
    server, db = influx
    refused = accepted = 0
    for index, text in enumerate(LINES):
        name = f"m{index}"
        line = name + text[1:]
        events, errors = parse_lines(line, "ns", 42)
        ours = bool(events)
        assert ours != bool(errors), line
        assert _influx_accepts(server, db, line) is ours, f"{line!r}: we {'accept' if ours else 'refuse'} it"
        if not ours:
            refused += 1
            continue
        accepted += 1
        _, measurement, ts, tags, fields = events[0]
        rows = server.query(f'SELECT * FROM "{measurement}"', db=db)
        assert len(rows) == 1, line
        row = rows[0]
        assert row["time"] == (ts if ts != 42 else row["time"]), line
        for key, value in {**tags, **fields}.items():
            assert row[key] == value, (line, key)
    assert accepted >= 20 and refused >= 20  # both halves of the table really ran


@pytest.mark.parametrize("line", ["m x=1u", "m x=18446744073709551615u"])
def test_unsigned_fields_are_read_although_influxdb_1_refuses_them(line: str) -> None:
    """InfluxDB 2 reads ``u`` integers; 1.x does not. We read them as int (the worker's
    validation then judges the value as it judges any integer)."""
    events, errors = parse_lines(line, "ns", 1)
    assert errors == [] and isinstance(events[0][4]["x"], int)
