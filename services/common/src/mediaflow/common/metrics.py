"""Prometheus metrics of the worker processes (transcriber, compositor, compositor-heavy).

Every worker process serves its own registry (`REGISTRY`, not prometheus_client's global one, so a
gateway and workers living in one process never mix) on `MEDIAFLOW_WORKER_METRICS_PORT`
(`serve`, started by runtime/arq_worker.py; the URL goes into the worker registry as `metrics_url`).
The gateway's series are its own (mediaflow.api.metrics).

Labels are bounded: queue, job type, stage, outcome, error code, encoder, model/device — never a job id,
a tenant or a URL. Error codes are the stable `code`s of `MediaflowError` (docs/operations.md).
This module is a base module: it knows nothing of jobs, workers or workflows, so any layer may count.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("mediaflow.metrics")

REGISTRY = CollectorRegistry()

# Waits and durations span milliseconds (a probe) to hours (a long transcription).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)

QUEUE_WAIT = Histogram(
    "mediaflow_worker_queue_wait_seconds",
    "time a job waited on its queue: claim time minus the time it became due (enqueue, or retry delay end)",
    ["queue", "type"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "mediaflow_worker_job_duration_seconds",
    "one attempt of a job on this worker, from its start to its outcome",
    ["queue", "type", "outcome"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
STAGE_DURATION = Histogram(
    "mediaflow_worker_stage_duration_seconds",
    "time spent in one stage of a job (JobContext.stage: probe, prefetch, render, transcribe, ...)",
    ["queue", "type", "stage"],
    buckets=_SECONDS,
    registry=REGISTRY,
)
JOBS = Counter(
    "mediaflow_worker_jobs",
    "attempts that ended here, by outcome (succeeded, failed, cancelled, retried, requeued, detached, "
    "lease_lost) and error code ('' when none)",
    ["queue", "type", "outcome", "error_code"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "mediaflow_worker_job_retries",
    "jobs put back on their queue for another attempt, by reason: a retryable error's code, "
    "worker_lost (an attempt restarted after its worker died) or drained (worker shut down)",
    ["queue", "type", "reason"],
    registry=REGISTRY,
)
SLOTS = Gauge("mediaflow_worker_slots", "jobs this worker may run at once", ["queue"], registry=REGISTRY)
BUSY_SLOTS = Gauge("mediaflow_worker_busy_slots", "jobs this worker runs now", ["queue"], registry=REGISTRY)

WEBHOOK_DELIVERIES = Counter(
    "mediaflow_webhook_deliveries",
    "webhook delivery tries by outcome: delivered (2xx), failed (retried later), gave_up (last try failed), "
    "dropped (job or URL gone)",
    ["outcome"],
    registry=REGISTRY,
)

MODEL_LOAD = Gauge(
    "mediaflow_transcriber_model_load_seconds",
    "how long this transcriber took to load its models at start",
    ["model", "device"],
    registry=REGISTRY,
)
AUDIO_SECONDS = Counter(
    "mediaflow_transcriber_audio_seconds",
    "seconds of audio transcribed (queue jobs and gRPC calls)",
    registry=REGISTRY,
)
TRANSCRIBE_SECONDS = Counter(
    "mediaflow_transcriber_processing_seconds",
    "wall-clock seconds spent transcribing (rate over audio_seconds' rate = real-time factor)",
    registry=REGISTRY,
)
RTF = Histogram(
    "mediaflow_transcriber_rtf",
    "real-time factor of one transcription: processing seconds / audio seconds (below 1: faster than real time)",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
    registry=REGISTRY,
)

RENDER_FPS = Histogram(
    "mediaflow_render_fps",
    "frames rendered per wall-clock second, per compose render",
    ["encoder"],
    buckets=(1, 2.5, 5, 10, 25, 50, 100, 200, 400, 800, 1600),
    registry=REGISTRY,
)
RENDER_SPEED = Histogram(
    "mediaflow_render_speed",
    "seconds of output rendered per wall-clock second (ffmpeg's speed), per compose render",
    ["encoder"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
    registry=REGISTRY,
)
RENDER_MEDIA_SECONDS = Counter(
    "mediaflow_render_media_seconds", "seconds of output video rendered", ["encoder"], registry=REGISTRY
)
RENDER_SECONDS = Counter(
    "mediaflow_render_seconds", "wall-clock seconds spent rendering", ["encoder"], registry=REGISTRY
)


def count_job(queue: str, job_type: str, outcome: str, error_code: str = "", seconds: float | None = None) -> None:
    JOBS.labels(queue, job_type, outcome, error_code).inc()
    if seconds is not None:
        JOB_DURATION.labels(queue, job_type, outcome).observe(max(0.0, seconds))


@contextlib.contextmanager
def timed_stage(queue: str, job_type: str, stage: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    finally:
        STAGE_DURATION.labels(queue, job_type, stage).observe(time.monotonic() - start)


def observe_transcription(audio_seconds: float, processing_seconds: float) -> None:
    AUDIO_SECONDS.inc(max(0.0, audio_seconds))
    TRANSCRIBE_SECONDS.inc(max(0.0, processing_seconds))
    if audio_seconds > 0:
        RTF.observe(processing_seconds / audio_seconds)


def observe_render(encoder: str, media_seconds: float, frames: float, wall_seconds: float) -> None:
    RENDER_MEDIA_SECONDS.labels(encoder).inc(max(0.0, media_seconds))
    RENDER_SECONDS.labels(encoder).inc(max(0.0, wall_seconds))
    if wall_seconds > 0:
        RENDER_FPS.labels(encoder).observe(frames / wall_seconds)
        RENDER_SPEED.labels(encoder).observe(media_seconds / wall_seconds)


_server_lock = threading.Lock()
_server_url: str | None = None


def _advertised_host(bind_host: str) -> str:
    """The host other machines reach this process at: the bind address, or for a wildcard bind this
    host's address (a pod's IP in Kubernetes)."""
    host = bind_host.strip("[]")
    try:
        wildcard = ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return bind_host
    if not wildcard:
        return f"[{host}]" if ":" in host else host
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        return socket.gethostbyname(name)
    return name


def serve(port: int, host: str = "127.0.0.1") -> str | None:
    """Serve REGISTRY over HTTP (GET /metrics) from a daemon thread, once per process; returns its URL.
    `port` 0 picks a free port, a negative one serves nothing (None). A port already taken is logged
    and skipped (None): metrics are never a reason for a worker not to run."""
    global _server_url
    if port < 0:
        return None
    with _server_lock:
        if _server_url is None:
            addr = host.strip("[]") or "0.0.0.0"
            try:
                server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
            except OSError as exc:
                log.warning("worker metrics not served on %s:%s (%s)", host, port, exc)
                return None
            _server_url = f"http://{_advertised_host(host)}:{server.server_port}/metrics"
            log.info("worker metrics on %s", _server_url)
        return _server_url
