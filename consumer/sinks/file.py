"""A sink that appends line protocol to a file: the demo without InfluxDB, and a debugging aid.

Every write appends its points, one line each, and flushes, so ``tail -f`` shows them as they
are written and ``influx -import`` or ``curl --data-binary @file /write`` can load them later.
Rewrites of a window are appended too; loading the file into InfluxDB applies them in order, so
the last one wins there as it does in a live write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from consumer.core.model import Point
from consumer.sinks.base import SinkError, SinkUnavailable, WriteResult
from consumer.sinks.line_protocol import encode_points


class FileSink:
    """Append points as line protocol to ``path`` (created with its directory when missing).

    Usage::

        sink = FileSink("/tmp/telemetry.lp")
        sink.write(points)
        sink.close()
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"FileSink({str(self.path)!r})"

    def _open(self) -> IO[bytes]:
        if self._closed:
            raise SinkError(f"file sink {self.path} is closed")
        if self._file is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "ab")  # noqa: SIM115 - kept open between writes
            except OSError as exc:
                raise SinkUnavailable(f"cannot open {self.path}: {exc}") from exc
        return self._file

    def write(self, points: Sequence[Point]) -> WriteResult:
        if not points:
            return WriteResult(written=0)
        body = encode_points(points) + b"\n"
        with self._lock:
            handle = self._open()
            try:
                handle.write(body)
                handle.flush()
                if self.fsync:
                    os.fsync(handle.fileno())
            except OSError as exc:  # disk full and the like: retry later
                raise SinkUnavailable(f"cannot write {self.path}: {exc}") from exc
        return WriteResult(written=len(points))

    def ping(self) -> bool:
        if self._closed:
            return False
        if self.path.exists():
            return os.access(self.path, os.W_OK)
        # The directory is created on first write: the nearest existing ancestor must be writable.
        existing = self.path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        return existing.is_dir() and os.access(existing, os.W_OK)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
