"""The ``telemetry`` command line (see :mod:`consumer.cli.app`)."""
