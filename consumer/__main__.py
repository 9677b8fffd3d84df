"""``python -m consumer [--drain] [--redis-url URL] ...``: run the worker.

Configuration comes from the ``TELEMETRY_*`` environment variables; every variable is also a flag
without the prefix (``TELEMETRY_REDIS_URL`` -> ``--redis-url``). A configuration error is one line
on stderr and exit code 2.
"""

from __future__ import annotations

import logging
import sys

from consumer.core.config import WorkerConfig, parse_flags
from consumer.pipeline.worker import run_worker
from producers.durations import ConfigError

EXIT_USAGE = 2


def main(argv: list[str]) -> int:
    """Parse flags over the environment and run the worker; returns the exit code."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__)
        return 0
    try:
        config = WorkerConfig.from_env().with_overrides(**parse_flags(argv))
    except ConfigError as exc:
        print(f"telemetry worker: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_worker(config)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
