"""Dashboards as code: one spec (``spec.py``) rendered to Grafana JSON, provisioning and alert rules.

Usage::

    from consumer.dashboards import RenderOptions, build, validate
    build(Path("grafana_dashboards"), RenderOptions(datasource_uid="influxdb", bucket="whisperengine"))
    report = validate(Path("grafana_dashboards"))

See ``docs/dashboards.md``.
"""

from consumer.dashboards.build import build, generated_files
from consumer.dashboards.grafana import RenderOptions, render_dashboard
from consumer.dashboards.spec import all_dashboards
from consumer.dashboards.validate import Report, validate

__all__ = ["RenderOptions", "Report", "all_dashboards", "build", "generated_files", "render_dashboard",
           "validate"]
