"""One trace from the HTTP submit to the finished job: gateway span -> PRODUCER send -> CONSUMER
process (child and link) -> stage spans; ARQ's idle polling adds no spans."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import create_worker
from mediaflow.common.telemetry import setup_tracing
from mediaflow.compositor import jobs as compositor_jobs

exporter = InMemorySpanExporter()


async def test_submit_to_finish_is_one_trace(redis, settings, media) -> None:
    setup_tracing("mediaflow-test", settings, SimpleSpanProcessor(exporter))
    from mediaflow.api.app import create_app

    app = create_app(settings)
    worker = create_worker(COMPOSE_QUEUE, {JobType.probe: compositor_jobs.probe}, settings, handle_signals=False)
    task = asyncio.create_task(worker.async_run())
    try:
        await asyncio.sleep(1.0)  # idle polling: must not produce spans
        exporter.clear()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            headers = {"Authorization": "Bearer key-alice"}
            body = {"type": "probe", "input": {"path": str(media / "jfk.flac")}}
            reply = await client.post("/v1/jobs", json=body, headers=headers)
            assert reply.status_code == 202, reply.text
            job_id = reply.json()["id"]
            for _ in range(200):
                state = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()["state"]
                if state in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.05)
            assert state == "succeeded"
        await asyncio.sleep(0.5)  # more idle polling after the job
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await worker.close()

    spans = exporter.get_finished_spans()
    process = [s for s in spans if s.kind == SpanKind.CONSUMER]
    send = [s for s in spans if s.kind == SpanKind.PRODUCER]
    assert len(process) == 1 and len(send) == 1, [s.name for s in spans]
    consumer, producer = process[0], send[0]
    submit = [
        s
        for s in spans
        if s.kind == SpanKind.SERVER
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
    ]
    assert submit, [s.name for s in spans]
    trace_id = submit[0].context.trace_id
    # one trace: HTTP POST -> send -> process
    assert producer.context.trace_id == trace_id
    assert consumer.context.trace_id == trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert [link.context.span_id for link in consumer.links] == [producer.context.span_id]
    assert consumer.attributes["messaging.system"] == "arq"
    assert consumer.attributes["messaging.destination.name"] == COMPOSE_QUEUE
    assert consumer.attributes["messaging.message.id"] == job_id
    assert producer.attributes["messaging.destination.name"] == COMPOSE_QUEUE
    stages = [s for s in spans if s.name == "probe"]
    assert len(stages) == 1 and stages[0].parent.span_id == consumer.context.span_id
    # every span of the job belongs to that trace: no spans from idle polling or heartbeats
    job_side = [
        s for s in spans if s.kind not in (SpanKind.SERVER,) and s.context.trace_id != trace_id and "GET" not in s.name
    ]
    assert job_side == [], [s.name for s in job_side]
