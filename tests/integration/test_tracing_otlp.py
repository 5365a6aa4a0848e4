"""Traces reach a real OTLP/gRPC receiver: the gateway and a compositor worker run as subprocesses
(`mediaflow-api`, `mediaflow-compositor`) configured only by the standard OTEL_* variables, and export
to a tiny collector started here (opentelemetry-proto's TraceService on a free port).

One compose job is one trace: HTTP POST (SERVER) -> send (PRODUCER) -> process (CONSUMER, in the
worker) -> stage spans -> ffmpeg. An upload is another: HTTP POST -> gRPC Probe (CLIENT) -> the
compositor's gRPC server span. OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are honoured, and a
service without OTEL_SERVICE_NAME keeps its own default name."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

BIN = Path(sys.executable).parent
KEY = {"Authorization": "Bearer key-alice"}


@dataclass
class Received:
    service: str
    resource: dict[str, Any]
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent: str
    attributes: dict[str, Any]
    links: list[str] = field(default_factory=list)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """Keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for rs in request.resource_spans:
                resource = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        self.spans.append(
                            Received(
                                service=resource.get("service.name", ""),
                                resource=resource,
                                name=s.name,
                                kind=s.kind,
                                trace_id=s.trace_id.hex(),
                                span_id=s.span_id.hex(),
                                parent=s.parent_span_id.hex(),
                                attributes={a.key: _value(a.value) for a in s.attributes},
                                links=[link.span_id.hex() for link in s.links],
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.spans)


@pytest.fixture
def collector() -> Iterator[tuple[Collector, int]]:
    servicer = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(grace=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, check: Any, timeout: float, procs: list[subprocess.Popen[bytes]]) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for p in procs:
            assert p.poll() is None, f"{p.args[0]} exited with {p.returncode} while waiting for {what}"
        with_result = check()
        if with_result:
            return with_result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_one_trace_from_http_to_ffmpeg_reaches_the_collector(
    collector: tuple[Collector, int], redis_url: str, media: Path, tmp_path: Path
) -> None:
    received, otlp_port = collector
    api_port, grpc_port = free_port(), free_port()
    common = {
        **os.environ,
        "MEDIAFLOW_REDIS_URL": redis_url.replace("/0", "/3"),  # a database of its own: no other test's jobs
        "MEDIAFLOW_STORAGE_URL": f"file://{tmp_path / 'storage'}",
        "MEDIAFLOW_API_KEYS": "key-alice:alice",
        "MEDIAFLOW_ALLOWED_ROOTS": str(media),
        "MEDIAFLOW_COMPOSITOR_GRPC": f"127.0.0.1:{grpc_port}",
        "MEDIAFLOW_COMPOSITOR_GRPC_PORT": str(grpc_port),
        "MEDIAFLOW_GRPC_TOKEN": secrets.token_urlsafe(16),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=otlp-test",
    }
    common.pop("OTEL_SERVICE_NAME", None)
    logs = tmp_path / "logs"
    logs.mkdir()
    import redis as redis_sync

    redis_sync.Redis.from_url(common["MEDIAFLOW_REDIS_URL"]).flushdb()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with open(logs / "api.log", "wb") as api_log, open(logs / "compositor.log", "wb") as worker_log:
            procs.append(
                subprocess.Popen(
                    [str(BIN / "mediaflow-api"), "--host", "127.0.0.1", "--port", str(api_port)],
                    env={**common, "OTEL_SERVICE_NAME": "edge-gateway"},  # honoured, never overridden
                    stdout=api_log,
                    stderr=subprocess.STDOUT,
                )
            )
            procs.append(
                subprocess.Popen(
                    [str(BIN / "mediaflow-compositor"), "--queue", "compose"],
                    env=common,  # no OTEL_SERVICE_NAME: the worker's default name
                    stdout=worker_log,
                    stderr=subprocess.STDOUT,
                )
            )
            try:
                run_job_and_check(received, f"http://127.0.0.1:{api_port}", media, procs)
            except BaseException:
                for name in ("api.log", "compositor.log"):
                    sys.stderr.write(f"---- {name}\n{(logs / name).read_text(errors='replace')[-4000:]}\n")
                raise
    finally:
        for p in procs:
            stop(p)


def run_job_and_check(received: Collector, url: str, media: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    client = httpx.Client(base_url=url, headers=KEY, timeout=30)

    def compositor_ready() -> bool:
        try:
            queues = client.get("/v1/queues").json()
        except httpx.HTTPError:
            return False
        return any(q["workers"] for q in queues["queues"] if q["name"].endswith(":compose"))

    wait_for("the gateway and a compose worker", compositor_ready, 60, procs)
    time.sleep(0.5)  # the worker's gRPC server starts in its on_startup, before it registers; a little slack

    # 1. an upload: the gateway asks the compositor's gRPC Probe
    with open(media / "big_buck_bunny_small.mp4", "rb") as fh:
        reply = client.post("/v1/media", files={"file": ("bbb.mp4", fh)})
    assert reply.status_code == 201 or reply.status_code == 200, reply.text
    uploaded = reply.json()

    # 2. a compose job over HTTP: the worker runs ffmpeg
    body = {
        "type": "compose",
        "options": {"items": [{"kind": "video", "media_id": uploaded["id"], "trim": {"start": 0, "end": 1}}]},
    }
    reply = client.post("/v1/jobs", json=body)
    if reply.status_code == 422:  # no trim in this timeline schema: the whole (small) clip
        body["options"]["items"][0].pop("trim")
        reply = client.post("/v1/jobs", json=body)
    assert reply.status_code == 202, reply.text
    job_id = reply.json()["id"]

    def finished() -> dict[str, Any] | None:
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for("the compose job", finished, 120, procs)
    assert job["state"] == "succeeded", job

    def job_trace() -> list[Received] | None:
        spans = received.snapshot()
        consumer = [
            s
            for s in spans
            if s.kind == PbSpan.SPAN_KIND_CONSUMER and s.attributes.get("messaging.message.id") == job_id
        ]
        if not consumer:
            return None
        trace = [s for s in spans if s.trace_id == consumer[0].trace_id]
        done = any(s.name == "ffmpeg" for s in trace) and any(s.kind == PbSpan.SPAN_KIND_SERVER for s in trace)
        return trace if done else None

    trace = wait_for("the job's spans at the collector", job_trace, 20, procs)
    by_id = {s.span_id: s for s in trace}

    def ancestors(span: Received) -> list[Received]:
        chain = []
        while span.parent in by_id:
            span = by_id[span.parent]
            chain.append(span)
        return chain

    [consumer] = [s for s in trace if s.kind == PbSpan.SPAN_KIND_CONSUMER]
    [producer] = [s for s in trace if s.kind == PbSpan.SPAN_KIND_PRODUCER]
    servers = [s for s in trace if s.kind == PbSpan.SPAN_KIND_SERVER]
    assert consumer.parent == producer.span_id and consumer.links == [producer.span_id]
    submit = ancestors(producer)
    assert submit and submit[-1].kind == PbSpan.SPAN_KIND_SERVER and submit[-1] in servers, [s.name for s in submit]
    assert "POST" in submit[-1].name
    ffmpeg = [s for s in trace if s.name == "ffmpeg"]
    assert ffmpeg and all(consumer in ancestors(s) for s in ffmpeg)
    assert ffmpeg[0].attributes["process.exit.code"] == 0
    stages = [s for s in trace if s.parent == consumer.span_id and s.kind == PbSpan.SPAN_KIND_INTERNAL]
    assert stages, [s.name for s in trace]
    assert any(by_id[f.parent] in stages or any(a in stages for a in ancestors(f)) for f in ffmpeg)

    # resources: OTEL_SERVICE_NAME honoured for the gateway, the worker's own default without it;
    # OTEL_RESOURCE_ATTRIBUTES on both
    assert {s.service for s in (producer, *submit)} == {"edge-gateway"}
    assert {s.service for s in (consumer, *ffmpeg, *stages)} == {"mediaflow-compositor"}
    assert all(s.resource.get("deployment.environment") == "otlp-test" for s in trace)

    # the upload's trace: HTTP POST /v1/media -> gRPC client Probe -> the compositor's gRPC server span
    spans = received.snapshot()
    grpc_server = [
        s
        for s in spans
        if s.kind == PbSpan.SPAN_KIND_SERVER and s.service == "mediaflow-compositor" and "Probe" in s.name
    ]
    assert grpc_server, sorted({(s.service, s.name) for s in spans})
    all_by_id = {s.span_id: s for s in spans}
    client_span = all_by_id.get(grpc_server[0].parent)
    assert (
        client_span is not None
        and client_span.kind == PbSpan.SPAN_KIND_CLIENT
        and client_span.service == "edge-gateway"
    )
    root = client_span
    while root.parent in all_by_id:
        root = all_by_id[root.parent]
    assert root.kind == PbSpan.SPAN_KIND_SERVER and "POST" in root.name and root.service == "edge-gateway"
