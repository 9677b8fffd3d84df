"""The telemetry worker: Redis Streams -> windowed aggregation -> InfluxDB."""
