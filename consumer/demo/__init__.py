"""The embedded demo: a realistic bot workload through the whole pipeline, with no set-up.

``telemetry demo`` (and ``make demo``) runs :func:`run_demo`; see :mod:`consumer.demo.runner`
for the stages and :mod:`consumer.demo.services` for how Redis and InfluxDB are found or started.
"""

from consumer.demo.runner import DemoOptions, DemoSummary, run_demo
from consumer.demo.workload import Workload

__all__ = ["DemoOptions", "DemoSummary", "Workload", "run_demo"]
