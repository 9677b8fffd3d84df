"""``telemetry listen`` as a real child process in tests: the command, and waiting until it answers.

Usage::

    process = WorkerProcess(env, log, ["listen"], command=[telemetry_script()]).start()
    wait_listening(port, process.alive)
"""

from __future__ import annotations

import http.client
import sys
import time
from collections.abc import Callable
from pathlib import Path


def telemetry_script() -> str:
    """This environment's ``telemetry`` console script (what deploy files run as ``.../bin/telemetry``)."""
    return str(Path(sys.executable).with_name("telemetry"))


def http_status(port: int, path: str, timeout_s: float = 2.0) -> int | None:
    """The status of ``GET path`` on the loopback ``port``; ``None`` when nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def wait_listening(port: int, alive: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    """Wait until ``/ping`` on ``port`` answers 204; False when the process died or time ran out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if http_status(port, "/ping") == 204:
            return True
        time.sleep(0.05)
    return False
