"""Signed webhooks for real: a real HTTP receiver on 127.0.0.1 (allowed through
MEDIAFLOW_URL_ALLOWED_HOSTS), real workers delivering from the Redis stream, signatures checked with the
Standard Webhooks library, retries, giving up, cancel of a queued job, and the gateway's checks."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from gateway_support import ALICE, assert_problem, running_gateway
from job_support import in_process_worker, wait_state
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobState, JobType
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.compositor import jobs as compositor_jobs

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
KEY = "media/m_fixture/jfk.flac"


@dataclass
class Receiver:
    """A webhook receiver that answers with `statuses` in turn (then 200) and keeps what it got."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    got: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    seen = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(seen.statuses.pop(0) if seen.statuses else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            seen.got.set()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/mediaflow?token=abc"
    try:
        yield seen
    finally:
        server.shutdown()


@pytest.fixture
def hooked(settings: Settings, media) -> Settings:
    open_storage(settings.storage_url).put_file(KEY, media / "jfk.flac")
    return settings.model_copy(
        update={
            "webhook_secret": SECRET,
            "url_allowed_hosts": ["127.0.0.1"],
            "webhook_retry_after": 0.3,
            "webhook_max_deliveries": 3,
        }
    )


def probe_job(url: str, key: str = KEY) -> Job:
    return Job(id=new_job_id(), type=JobType.probe, queue=COMPOSE_QUEUE, input={"storage_key": key}, webhook_url=url)


@contextlib.asynccontextmanager
async def worker(settings: Settings):
    async with in_process_worker(settings, {JobType.probe: compositor_jobs.probe}) as w:
        yield w


async def wait_calls(receiver: Receiver, n: int, timeout: float = 15) -> None:
    for _ in range(int(timeout / 0.05)):
        if len(receiver.calls) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(receiver.calls)} webhook calls, expected {n}")


async def log_messages(dispatcher: Dispatcher, job_id: str) -> list[str]:
    return [d["message"] for _, e, d in await dispatcher.store.events(job_id, count=1000) if e == "log"]


async def test_a_finished_job_calls_its_signed_webhook(redis, hooked, receiver) -> None:
    dispatcher = Dispatcher(redis)
    async with worker(hooked):
        job, _ = await dispatcher.submit(probe_job(receiver.url))
        await wait_state(dispatcher, job.id, {JobState.succeeded})
        await wait_calls(receiver, 1)
    headers, body = receiver.calls[0]
    payload = Webhook(SECRET).verify(body, headers)  # raises unless the signature and timestamp hold
    assert payload["type"] == "job.succeeded"
    assert payload["data"]["id"] == job.id and payload["data"]["state"] == "succeeded"
    assert payload["data"]["result"]["duration"] == 11.0
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()).verify(body, headers)
    assert any("webhook delivered" in m for m in await log_messages(dispatcher, job.id))
    assert len(receiver.calls) == 1


async def test_a_failed_delivery_is_retried_with_the_same_id(redis, hooked, receiver) -> None:
    receiver.statuses = [500, 503]
    dispatcher = Dispatcher(redis)
    async with worker(hooked):
        job, _ = await dispatcher.submit(probe_job(receiver.url, key="media/m_missing/none.wav"))
        await wait_state(dispatcher, job.id, {JobState.failed})
        await wait_calls(receiver, 3)
    ids = {headers["webhook-id"] for headers, _ in receiver.calls}
    assert len(ids) == 1, "retries reuse the webhook id, so receivers can drop duplicates"
    payload = Webhook(SECRET).verify(receiver.calls[-1][1], receiver.calls[-1][0])
    assert payload["type"] == "job.failed" and payload["data"]["error"]["code"] == "object_not_found"
    messages = await log_messages(dispatcher, job.id)
    assert sum("failed (answered HTTP 5" in m for m in messages) == 2 and any("delivered" in m for m in messages)


async def test_delivery_gives_up_after_the_limit(redis, hooked, receiver) -> None:
    receiver.statuses = [500] * 10
    dispatcher = Dispatcher(redis)
    async with worker(hooked):
        job, _ = await dispatcher.submit(probe_job(receiver.url))
        await wait_state(dispatcher, job.id, {JobState.succeeded})
        await wait_calls(receiver, 3)
        await asyncio.sleep(1.5)  # several retry periods: no fourth try
    assert len(receiver.calls) == 3
    assert any("given up after 3 tries" in m for m in await log_messages(dispatcher, job.id))
    assert await redis.xpending("mediaflow:webhooks", "deliverers") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


async def test_a_job_cancelled_while_queued_notifies_too(redis, hooked, receiver) -> None:
    """No worker ever ran it: the gateway's cancel queued the webhook, a worker delivers it."""
    dispatcher = Dispatcher(redis)
    job, _ = await dispatcher.submit(probe_job(receiver.url))
    await dispatcher.cancel(job.id)
    async with worker(hooked):
        await wait_calls(receiver, 1)
    payload = Webhook(SECRET).verify(receiver.calls[0][1], receiver.calls[0][0])
    assert payload["type"] == "job.cancelled" and payload["data"]["state"] == "cancelled"


async def test_gateway_checks_webhook_urls(redis, settings, receiver) -> None:
    body = {
        "type": "probe",
        "input": {"path": str(settings.allowed_roots[0] / "jfk.flac")},
        "webhook_url": receiver.url,
    }
    async with (
        running_gateway(settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})) as base,
        httpx.AsyncClient(base_url=base, timeout=30) as client,
    ):
        assert_problem(await client.post("/v1/jobs", headers=ALICE, json=body), 422, "webhooks_disabled")
    with_secret = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1", "webhook_secret": SECRET})
    async with running_gateway(with_secret) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        # loopback is internal: refused unless the operator allows it
        assert_problem(await client.post("/v1/jobs", headers=ALICE, json=body), 422, "url_not_allowed")
        bad = {**body, "webhook_url": "ftp://example.com/hook"}
        assert_problem(await client.post("/v1/jobs", headers=ALICE, json=bad), 422, "url_not_allowed")
    allowed = with_secret.model_copy(update={"url_allowed_hosts": ["127.0.0.1"]})
    async with running_gateway(allowed) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        created = await client.post("/v1/jobs", headers=ALICE, json=body)
        assert created.status_code == 202, created.text
        assert created.json()["webhook_url"] == receiver.url
        assert (
            json.loads((await client.get(f"/v1/jobs/{created.json()['id']}", headers=ALICE)).text)["webhook_url"]
            == receiver.url
        )
