"""Shared library of mediaflow: settings, jobs, queues, storage, telemetry, gRPC helpers."""
