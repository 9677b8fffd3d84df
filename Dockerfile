# The telemetry worker image: `docker build -t whisperengine-telemetry .`
#
# Runs `telemetry consume` as a non-root user; every setting comes from TELEMETRY_* variables
# (see docs/deploy.md). The worker serves Prometheus /metrics and /healthz on
# TELEMETRY_METRICS_PORT (9108 here), which the HEALTHCHECK below and Kubernetes probes use.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the distribution needs: no tests, benchmarks or dev extras end up in the image.
COPY pyproject.toml README.md ./
COPY producers ./producers
COPY consumer ./consumer
RUN python -m venv /opt/telemetry \
    && /opt/telemetry/bin/pip install --upgrade pip \
    && /opt/telemetry/bin/pip install .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="whisperengine-telemetry" \
      org.opencontainers.image.description="Telemetry worker: Redis Streams -> windowed aggregation -> InfluxDB"
# A fixed uid/gid so volume permissions and Kubernetes securityContext can name it.
RUN groupadd --system --gid 10001 telemetry \
    && useradd --system --uid 10001 --gid telemetry --no-create-home --shell /usr/sbin/nologin telemetry
COPY --from=build /opt/telemetry /opt/telemetry
ENV PATH=/opt/telemetry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TELEMETRY_METRICS_PORT=9108 \
    TELEMETRY_METRICS_HOST=0.0.0.0
# 0.0.0.0: in a container, loopback is the container's own; the scraper and probes come from
# outside it, and publishing the port (or not) is where exposure is decided (docs/deploy.md).
USER 10001:10001
EXPOSE 9108
# SIGTERM: the worker stops reading, flushes what is due, checkpoints and exits.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TELEMETRY_METRICS_PORT', '9108') + '/healthz', timeout=4)"]
ENTRYPOINT ["telemetry"]
CMD ["consume"]
