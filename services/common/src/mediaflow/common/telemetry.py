"""Tracing, set up once per process. OTLP export only when OTEL_EXPORTER_OTLP_ENDPOINT is set; the
exporter and the resource read the other standard OTEL_* variables themselves (OTEL_SERVICE_NAME wins
over the default name a service passes).

The submitting request's W3C `traceparent` is stored on the job; the worker's job span is a CONSUMER
span (messaging semantic conventions) *linked* to it, and every stage is a child span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind

from .settings import Settings

_configured = False


def setup_tracing(
    service_name: str, settings: Settings, processor: SpanProcessor | None = None
) -> TracerProvider | None:
    """Install a tracer provider. `processor` is for tests (an in-memory exporter)."""
    global _configured
    if _configured:
        provider = trace.get_tracer_provider()
        if processor is not None and isinstance(provider, TracerProvider):
            provider.add_span_processor(processor)
        return provider if isinstance(provider, TracerProvider) else None
    if processor is None and not settings.otel_exporter_otlp_endpoint:
        return None  # no exporter configured: keep the no-op provider, zero overhead
    # Resource.create reads OTEL_SERVICE_NAME itself; a name passed here would override it.
    attributes = {} if settings.otel_service_name else {"service.name": service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    if processor is not None:
        provider.add_span_processor(processor)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def tracer() -> trace.Tracer:
    return trace.get_tracer("mediaflow")


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def send_span(queue: str, job_id: str) -> Iterator[str | None]:
    """PRODUCER span around an enqueue; yields the traceparent to store on the job."""
    with tracer().start_as_current_span(
        f"send {queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": "arq",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
        },
    ):
        yield current_traceparent()


@contextlib.contextmanager
def job_span(job_id: str, job_type: str, queue: str, traceparent: str | None, attempt: int) -> Iterator[trace.Span]:
    """The CONSUMER span of one job attempt: a child of the submitting request's `send` span (so
    submit -> finish is one trace) and linked to it, as the messaging conventions ask."""
    parent = extract({"traceparent": traceparent}) if traceparent else context.Context()
    parent_span = trace.get_current_span(parent).get_span_context()
    links = [Link(parent_span)] if parent_span.is_valid else []
    with tracer().start_as_current_span(
        f"process {queue}",
        context=parent,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={
            "messaging.system": "arq",
            "messaging.operation.type": "process",
            "messaging.destination.name": queue,
            "messaging.message.id": job_id,
            "mediaflow.job.type": job_type,
            "mediaflow.job.attempt": attempt,
        },
    ) as span:
        yield span


def stage_span(name: str) -> contextlib.AbstractContextManager[trace.Span]:
    return tracer().start_as_current_span(name)
