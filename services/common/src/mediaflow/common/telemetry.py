"""Tracing, set up once per process. OTLP export only when OTEL_EXPORTER_OTLP_ENDPOINT is set; the
exporter and the resource read the other standard OTEL_* variables themselves (OTEL_SERVICE_NAME wins
over the default name a service passes).

The submitting request's W3C `traceparent` is stored on the job; the worker's job span is a CONSUMER
span (messaging semantic conventions) *linked* to it, and every stage is a child span.

Logs and traces meet through `setup_logging`: every log line carries `trace_id`, `job_id` and `tenant`
(`-` when there is none). The job span sets the job's, and logs the attempt's start and end; a stage
span logs the stage's start and end.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator

from opentelemetry import context, trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanKind

from .settings import Settings

_configured = False
log = logging.getLogger("mediaflow.jobs")

LOG_FORMAT = (
    "%(asctime)s %(levelname)s %(name)s [trace_id=%(trace_id)s job_id=%(job_id)s tenant=%(tenant)s]: %(message)s"
)
_log_job: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("mediaflow_log_job", default=("-", "-"))


class LogCorrelation(logging.Filter):
    """Adds `trace_id` (and `span_id`), `job_id` and `tenant` to every record a handler emits: the
    current span's ids, and the job of `job_log_context` (job_span sets it). Install it on handlers
    (records of every logger pass through them), as `setup_logging` does."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        record.trace_id = format(span.trace_id, "032x") if span.is_valid else "-"
        record.span_id = format(span.span_id, "016x") if span.is_valid else "-"
        job_id, tenant = _log_job.get()
        if not hasattr(record, "job_id"):  # `extra={"job_id": ...}` wins
            record.job_id = job_id
        if not hasattr(record, "tenant"):
            record.tenant = tenant
        return True


def setup_logging(level: str = "INFO", fmt: str = LOG_FORMAT) -> None:
    """The process's logging: `fmt` on stderr, with the correlation fields on every record."""
    logging.basicConfig(level=level.upper(), format=fmt)
    install_log_correlation()


def install_log_correlation(logger: logging.Logger | None = None) -> None:
    """Put a `LogCorrelation` filter on every handler of `logger` (default: the root logger) that has none."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, LogCorrelation) for f in handler.filters):
            handler.addFilter(LogCorrelation())


@contextlib.contextmanager
def job_log_context(job_id: str, tenant: str | None = None) -> Iterator[None]:
    """Log records made inside (in this task and the threads it starts with to_thread) carry the job's ids."""
    token = _log_job.set((job_id, tenant or "-"))
    try:
        yield
    finally:
        _log_job.reset(token)


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
    provider = TracerProvider(resource=service_resource(service_name))
    if processor is not None:
        provider.add_span_processor(processor)
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True
    return provider


def service_resource(default_name: str) -> Resource:
    """The process's resource from the OTEL_* variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
    ...), which always win; `default_name` only fills in a service name neither of them gives."""
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_name}))
    return resource


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
def job_span(
    job_id: str,
    job_type: str,
    queue: str,
    traceparent: str | None,
    attempt: int,
    tenant: str | None = None,
) -> Iterator[trace.Span]:
    """The CONSUMER span of one job attempt: a child of the submitting request's `send` span (so
    submit -> finish is one trace) and linked to it, as the messaging conventions ask. Logs inside
    carry the job's ids; the attempt's start and end are logged."""
    parent = extract({"traceparent": traceparent}) if traceparent else context.Context()
    parent_span = trace.get_current_span(parent).get_span_context()
    links = [Link(parent_span)] if parent_span.is_valid else []
    with (
        tracer().start_as_current_span(
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
                **({"mediaflow.tenant": tenant} if tenant else {}),
            },
        ) as span,
        job_log_context(job_id, tenant),
    ):
        short_queue = queue.rsplit(":", 1)[-1]
        log.info("job started: %s on %s, attempt %d", job_type, short_queue, attempt)
        started = time.monotonic()
        try:
            yield span
        except BaseException as exc:
            log.warning("job attempt ended after %.2f s: %s", time.monotonic() - started, type(exc).__name__ or exc)
            raise
        log.info("job attempt ended after %.2f s", time.monotonic() - started)


@contextlib.contextmanager
def stage_span(name: str) -> Iterator[trace.Span]:
    """A stage of a job: a child span of the job's, with a log line at its start and its end."""
    with tracer().start_as_current_span(name) as span:
        log.info("stage %s started", name)
        started = time.monotonic()
        try:
            yield span
        except BaseException as exc:
            log.info("stage %s stopped after %.2f s (%s)", name, time.monotonic() - started, type(exc).__name__)
            raise
        log.info("stage %s done in %.2f s", name, time.monotonic() - started)
