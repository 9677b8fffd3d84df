"""``telemetry doctor``: the checks (``checks``), their probes, the downstream (InfluxDB and
Grafana) and worker checks, the points check, discovery of what is deployed, and the results.

May import: ``consumer.pipeline``, ``consumer.dlq``, ``consumer.admin``, ``consumer.dashboards``,
``consumer.aggregation``, ``consumer.sinks``, ``consumer.core``. Never the CLI or the demo.
"""
