"""Helpers for the gateway tests: a real uvicorn server on a free port and an in-process compositor
worker (the real ARQ worker base running the real `probe` job)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from job_support import in_process_worker

from mediaflow.api.app import create_app
from mediaflow.common.jobs.model import JobType
from mediaflow.common.runtime.arq_worker import MediaflowWorker
from mediaflow.common.runtime.context import Handler
from mediaflow.common.settings import Settings
from mediaflow.compositor import jobs as compositor_jobs

ALICE = {"Authorization": "Bearer key-alice"}
BOB = {"Authorization": "Bearer key-bob"}
TERMINAL = {"succeeded", "failed", "cancelled"}
CLI = os.path.join(os.path.dirname(sys.executable), "mediaflow")


@contextlib.asynccontextmanager
async def running_gateway(settings: Settings, **app_kwargs: Any) -> AsyncIterator[str]:
    """Serve create_app(settings) with uvicorn on 127.0.0.1:<free port>; yields the base URL."""
    app = create_app(settings, **app_kwargs)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def running_compositor(
    settings: Settings, handlers: dict[JobType, Handler] | None = None
) -> contextlib.AbstractAsyncContextManager[MediaflowWorker]:
    """The compose pool's worker, in this process (no signal handlers)."""
    return in_process_worker(settings, handlers or {JobType.probe: compositor_jobs.probe})


async def upload(
    client: httpx.AsyncClient, path: Any, headers: dict[str, str] = ALICE, name: str | None = None
) -> httpx.Response:
    """Upload `path` (as `name`: `hold-<seconds>s.flac` makes a probe of it hold its worker, with the
    test settings' test_hooks)."""
    with open(path, "rb") as fh:
        return await client.post("/v1/media", files={"file": (name or path.name, fh)}, headers=headers)


async def wait_terminal(
    client: httpx.AsyncClient, job_id: str, headers: dict[str, str] = ALICE, timeout: float = 30.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=headers)).json()
        if job["state"] in TERMINAL:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} did not finish: {job}")
        await asyncio.sleep(0.05)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"].endswith("/" + code)
    assert body["title"] and "instance" in body and "detail" in body
    return body


async def cli(url: str, *args: str) -> tuple[int, str]:
    """The `mediaflow` command against the test's gateway (a subprocess: this loop keeps serving)."""
    env = {**os.environ, "MEDIAFLOW_URL": url, "MEDIAFLOW_API_KEY": "key-alice", "COLUMNS": "200"}
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, stdout.decode()
