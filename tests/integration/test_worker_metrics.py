"""Worker metrics for real: a Prometheus server (Debian's `prometheus`, scripts/system-deps.sh test)
scrapes the gateway's /metrics, an in-process compositor worker and a transcriber worker running as
its own process (found through its `metrics_url` in the worker registry); real probe, compose and
transcribe jobs run through the gateway, and the series are read back with PromQL (/api/v1/query)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, running_gateway, upload, wait_terminal
from job_support import in_process_worker

from mediaflow.common import metrics
from mediaflow.common.errors import MediaflowError
from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs import keys
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE, TRANSCRIBE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker, create_worker
from mediaflow.common.runtime.context import JobContext
from mediaflow.common.settings import Settings
from mediaflow.compositor import jobs as compositor_jobs

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
VENV_BIN = Path(sys.executable).parent
DASHBOARD = Path(__file__).parents[2] / "helm/mediaflow/dashboards/workers/mediaflow-workers.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def transcriber_process(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MEDIAFLOW_REDIS_URL": settings.redis_url,
        "MEDIAFLOW_STORAGE_URL": settings.storage_url,
        "MEDIAFLOW_WORKER_METRICS_PORT": "0",  # a free port; the registry entry says which
        "MEDIAFLOW_SWEEP_INTERVAL_SECONDS": "0",
        "MEDIAFLOW_POLL_DELAY": "0.5",
        "MEDIAFLOW_GRPC_TOKEN": "",
        "HF_HUB_OFFLINE": "1",
        "PYANNOTE_METRICS_ENABLED": "false",
    }
    with open(tmp_path / "transcriber.log", "wb") as log:
        proc = subprocess.Popen(
            [str(VENV_BIN / "mediaflow-transcriber"), "--grpc-port", "0"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            stop(proc, signal.SIGINT)


def stop(proc: subprocess.Popen[bytes], sig: int) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def prometheus_server(targets: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping each `job name -> metrics URL` every second; yields its base URL."""
    scrape = []
    for name, url in targets.items():
        parsed = httpx.URL(url)
        scrape.append(
            {
                "job_name": name,
                "metrics_path": parsed.path,
                "static_configs": [{"targets": [f"{parsed.host}:{parsed.port}"]}],
            }
        )
    config = tmp_path / "prometheus.yml"
    # JSON is YAML: no YAML writer needed
    scrape_every = {"scrape_interval": "1s", "scrape_timeout": "1s"}
    config.write_text(json.dumps({"global": scrape_every, "scrape_configs": scrape}))
    port = free_port()
    with open(tmp_path / "prometheus.log", "wb") as log, _running(proc_args(config, tmp_path, port), log) as proc:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not start: {(tmp_path / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield url


def proc_args(config: Path, tmp_path: Path, port: int) -> list[str]:
    return [
        PROMETHEUS,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]


@contextlib.contextmanager
def _running(args: list[str], log: Any) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        stop(proc, signal.SIGTERM)


async def promql(client: httpx.AsyncClient, query: str) -> list[tuple[dict[str, str], float]]:
    body = (await client.get("/api/v1/query", params={"query": query})).json()
    assert body["status"] == "success", body
    return [(r["metric"], float(r["value"][1])) for r in body["data"]["result"]]


async def eventually(client: httpx.AsyncClient, query: str, timeout: float = 20.0) -> list[tuple[dict, float]]:
    """The query's result once it is not empty (after the next scrapes)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await promql(client, query)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"no result for {query}")
        await asyncio.sleep(0.25)


async def registry_entry(redis, queue: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        for raw in (await redis.hgetall(keys.WORKERS)).values():
            entry = json.loads(raw)
            if entry["queue"] == queue and entry.get("metrics_url"):
                return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker of {queue} registered a metrics_url")
        await asyncio.sleep(0.1)


def compositor(settings: Settings) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    return in_process_worker(settings, {JobType.probe: compositor_jobs.probe, JobType.compose: compositor_jobs.compose})


async def test_prometheus_scrapes_gateway_and_workers(redis, settings, media, tmp_path):
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is missing: run scripts/system-deps.sh test")
    settings = settings.model_copy(update={"worker_metrics_port": 0, "sweep_interval_seconds": 0})
    with transcriber_process(settings, tmp_path) as proc:  # loads its model while the rest runs
        async with running_gateway(settings) as base, compositor(settings):
            composer = await registry_entry(redis, COMPOSE_QUEUE, 10)
            async with httpx.AsyncClient(base_url=base, timeout=30) as api:
                media_id = (await upload(api, media / "jfk.flac")).json()["id"]
                clip_id = (await upload(api, media / "grid_bbaf2n.mp4")).json()["id"]
                submitted = [
                    {"type": "probe", "input": {"media_id": media_id}},
                    {
                        "type": "compose",
                        "options": {
                            "output": {"resolution": "1280x720", "fps": 25, "quality": "draft"},
                            "items": [{"kind": "video", "media_id": clip_id, "trim": {"end": 1.0}}],
                        },
                    },
                    {"type": "transcribe", "input": {"media_id": media_id}},
                ]
                ids = []
                for body in submitted:
                    response = await api.post("/v1/jobs", json=body, headers=ALICE)
                    assert response.status_code == 202, response.text
                    ids.append(response.json()["id"])
                # ~5 s for the model on an idle machine; far more on a busy one
                transcriber = await registry_entry(redis, TRANSCRIBE_QUEUE, 150)
                assert transcriber["pid"] == proc.pid and transcriber["metrics_url"] != composer["metrics_url"]
                for job_id in ids:
                    done = await wait_terminal(api, job_id, timeout=60)
                    assert done["state"] == "succeeded", done
            targets = {
                "gateway": f"{base}/metrics",
                "compositor": composer["metrics_url"],
                "transcriber": transcriber["metrics_url"],
            }
            with prometheus_server(targets, tmp_path) as prom:
                async with httpx.AsyncClient(base_url=prom, timeout=10) as q:
                    await check_series(q)


async def check_series(q: httpx.AsyncClient) -> None:
    ups = dict((m["job"], v) for m, v in await eventually(q, "count by (job) (up == 1)"))
    deadline = time.monotonic() + 15
    while len(ups) < 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        ups = {m["job"]: v for m, v in await promql(q, "count by (job) (up == 1)")}
    assert set(ups) == {"gateway", "compositor", "transcriber"}, await promql(q, "up")

    # the gateway's own series
    assert await eventually(q, 'mediaflow_http_requests_total{job="gateway",route="/v1/jobs",method="POST"} >= 3')

    # jobs by outcome, per queue and type (no job ids anywhere)
    # Each pool's series from its own target: the in-process compositor shares this test process's
    # registry with the workers of earlier tests (a transcribe worker among them).
    for queue, job_type, target in (
        (COMPOSE_QUEUE, "probe", "compositor"),
        (COMPOSE_QUEUE, "compose", "compositor"),
        (TRANSCRIBE_QUEUE, "transcribe", "transcriber"),
    ):
        sel = f'job="{target}",queue="{queue}",type="{job_type}"'
        [(labels, value)] = await eventually(q, f'mediaflow_worker_jobs_total{{{sel},outcome="succeeded"}}')
        assert value >= 1 and labels.get("error_code", "") == ""  # Prometheus drops empty labels
        assert "job_id" not in labels and "id" not in labels
        [(_, waits)] = await eventually(q, f"mediaflow_worker_queue_wait_seconds_count{{{sel}}}")
        assert waits >= 1
        [(_, wait_sum)] = await eventually(q, f"mediaflow_worker_queue_wait_seconds_sum{{{sel}}}")
        assert 0 <= wait_sum / waits < 180  # the transcribe job waits for the model to load
        [(_, runs)] = await eventually(q, f'mediaflow_worker_job_duration_seconds_count{{{sel},outcome="succeeded"}}')
        assert runs >= 1

    # stages, from JobContext.stage
    stages = {m["stage"] for m, _ in await eventually(q, "mediaflow_worker_stage_duration_seconds_count > 0")}
    assert {"probe", "prefetch", "render", "upload", "transcribe", "captions"} <= stages, stages
    [(_, render_sum)] = await eventually(
        q, 'sum(mediaflow_worker_stage_duration_seconds_sum{stage="render",type="compose"})'
    )
    assert 0 < render_sum < 60

    # the transcriber: model load at start, audio seconds, real-time factor
    [(labels, load)] = await eventually(q, 'mediaflow_transcriber_model_load_seconds{job="transcriber"}')
    assert 0 < load < 120 and labels["device"] == "cpu" and labels["model"]
    [(_, audio)] = await eventually(q, 'mediaflow_transcriber_audio_seconds_total{job="transcriber"} > 0')
    assert audio == pytest.approx(11.0, abs=0.5)  # jfk.flac
    [(_, rtf_count)] = await eventually(q, 'mediaflow_transcriber_rtf_count{job="transcriber"}')
    [(_, rtf_sum)] = await eventually(q, 'mediaflow_transcriber_rtf_sum{job="transcriber"}')
    assert rtf_count == 1 and 0 < rtf_sum < 10
    [(_, slots)] = await eventually(q, f'mediaflow_worker_slots{{job="transcriber",queue="{TRANSCRIBE_QUEUE}"}}')
    assert slots == 1

    # the compositor: render fps and speed (1 s at 25 fps, libx264)
    [(labels, fps_count)] = await eventually(q, 'mediaflow_render_fps_count{job="compositor"}')
    assert fps_count >= 1 and labels["encoder"] == "libx264"
    [(_, media_seconds)] = await eventually(q, 'mediaflow_render_media_seconds_total{encoder="libx264"}')
    assert media_seconds >= 1.0
    [(_, speed)] = await eventually(
        q, "sum(mediaflow_render_speed_sum{encoder='libx264'}) / sum(mediaflow_render_speed_count{encoder='libx264'})"
    )
    assert speed > 0
    # every query of the chart's worker dashboard is valid PromQL, and most already have data
    await eventually(q, "min(count_over_time(up[1m])) >= 3")  # rate() needs a few samples
    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            if not await promql(q, target["expr"].replace("$namespace", ".*")):
                empty.append(panel["title"])
    # no retries, failures or webhooks happened here; everything else has data
    assert set(empty) <= {"Failure ratio", "Failures by error code", "Retries by reason", "Webhook deliveries"}, empty


async def test_outcomes_retries_and_off_switch(redis, settings):
    """Counted in process: a retryable failure (retries + `retried`), then a failure with its code."""
    assert metrics.serve(-1) is None  # -1: no server
    calls = {"n": 0}

    async def flaky(ctx: JobContext) -> dict:
        calls["n"] += 1
        if calls["n"] == 1:
            raise MediaflowError("try again", code="url_fetch_failed", retryable=True)
        raise MediaflowError("no audio", code="empty_audio")

    def sample(name: str, **labels: str) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    sel = {"queue": COMPOSE_QUEUE, "type": "probe"}
    before = (
        sample("mediaflow_worker_job_retries_total", **sel, reason="url_fetch_failed"),
        sample("mediaflow_worker_jobs_total", **sel, outcome="retried", error_code="url_fetch_failed"),
        sample("mediaflow_worker_jobs_total", **sel, outcome="failed", error_code="empty_audio"),
    )
    dispatcher = Dispatcher(redis)
    job = Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"path": "/nowhere"})
    await dispatcher.submit(job)
    worker = create_worker(
        COMPOSE_QUEUE,
        {JobType.probe: flaky},
        settings.model_copy(update={"worker_metrics_port": -1, "sweep_interval_seconds": 0}),
        handle_signals=False,
    )
    task = asyncio.create_task(worker.async_run())
    try:
        deadline = time.monotonic() + 15  # the retry waits 2 s
        while (await dispatcher.store.get(job.id)).state != JobState.failed:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await worker.close()
    after = (
        sample("mediaflow_worker_job_retries_total", **sel, reason="url_fetch_failed"),
        sample("mediaflow_worker_jobs_total", **sel, outcome="retried", error_code="url_fetch_failed"),
        sample("mediaflow_worker_jobs_total", **sel, outcome="failed", error_code="empty_audio"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
