"""Sinks: where aggregated points go (InfluxDB v2, InfluxDB v1, in-memory)."""
