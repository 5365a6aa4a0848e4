"""Log lines carry trace_id, job_id and tenant (telemetry.setup_logging's filter); a job logs its start,
each stage and its end; the resource honours every OTEL_* variable."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from mediaflow.common import telemetry
from mediaflow.common.telemetry import (
    LOG_FORMAT,
    LogCorrelation,
    job_log_context,
    job_span,
    service_resource,
    stage_span,
)


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(LogCorrelation())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_job_lines_carry_trace_job_and_tenant(lines: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    provider = TracerProvider()
    monkeypatch.setattr(telemetry, "tracer", lambda: provider.get_tracer("test"))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with (
        job_span("j_1", "compose", "mediaflow:queue:compose", traceparent, 1, tenant="alice"),
        stage_span("render"),
    ):
        logging.getLogger("mediaflow.compositor").info("inside the stage")
    logging.getLogger("other").info("outside any job")
    out = lines.getvalue().splitlines()
    job_lines = [line for line in out if "job_id=j_1" in line]
    assert len(job_lines) == 5, out  # start, stage start, the handler's line, stage end, end
    assert all("trace_id=0af7651916cd43dd8448eb211c80319c" in line and "tenant=alice" in line for line in job_lines)
    assert "job started: compose on compose, attempt 1" in job_lines[0]
    assert "stage render started" in job_lines[1] and "stage render done" in job_lines[3]
    assert "job attempt ended" in job_lines[4]
    assert out[-1].endswith("[trace_id=- job_id=- tenant=-]: outside any job")


def test_job_log_context_without_tracing(lines: io.StringIO) -> None:
    with job_log_context("j_2", "bob"):
        logging.getLogger("x").warning("hello")
    assert "[trace_id=- job_id=j_2 tenant=bob]: hello" in lines.getvalue()


def test_resource_honours_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    assert service_resource("mediaflow-api").attributes["service.name"] == "mediaflow-api"
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attributes,deployment.environment=prod")
    resource = service_resource("mediaflow-api")
    assert resource.attributes["service.name"] == "from-attributes"
    assert resource.attributes["deployment.environment"] == "prod"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-service-name")
    assert service_resource("mediaflow-api").attributes["service.name"] == "from-service-name"
