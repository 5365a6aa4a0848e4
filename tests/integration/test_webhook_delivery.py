"""Webhook secrets per tenant and concurrent delivery, with real HTTP receivers on 127.0.0.1 and a real
worker delivering from the Redis stream: each tenant's webhooks verify with its own secret only, slow
receivers are called at once (but never more than MEDIAFLOW_WEBHOOK_CONCURRENCY at a time), and
malformed secrets stop the process at startup without being echoed."""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from job_support import in_process_worker
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from mediaflow.common.ids import new_job_id
from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.keys import COMPOSE_QUEUE
from mediaflow.common.jobs.model import Job, JobType
from mediaflow.common.settings import Settings
from mediaflow.compositor import jobs as compositor_jobs


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


DEFAULT, ALICE, BOB = new_secret(), new_secret(), new_secret()


@dataclass
class SlowReceiver:
    """A threaded HTTP receiver that holds each request `delay` seconds and records how many it held at once."""

    delay: float = 0.0
    url: str = ""
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each request
    active: int = 0
    most_active: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def slow_receiver() -> Iterator[SlowReceiver]:
    seen = SlowReceiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            start = time.monotonic()
            with seen.lock:
                seen.active += 1
                seen.most_active = max(seen.most_active, seen.active)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(seen.delay)
            with seen.lock:
                seen.active -= 1
                seen.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                seen.spans.append((start, time.monotonic()))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield seen
    finally:
        server.shutdown()


def hooked(settings: Settings, **update: object) -> Settings:
    return settings.model_copy(
        update={"webhook_secret": DEFAULT, "url_allowed_hosts": ["127.0.0.1"], "webhook_retry_after": 30.0, **update}
    )


async def queue_ended_jobs(redis, receiver: SlowReceiver, tenants: list[str]) -> list[Job]:
    """Jobs cancelled while queued: each cancel puts its webhook on the stream, before any worker runs."""
    dispatcher = Dispatcher(redis)
    jobs = []
    for tenant in tenants:
        job = Job(
            id=new_job_id(),
            type=JobType.probe,
            queue=COMPOSE_QUEUE,
            input={"storage_key": "media/m_none/none.wav"},
            webhook_url=receiver.url,
            tenant=tenant,
        )
        await dispatcher.submit(job)
        await dispatcher.cancel(job.id)
        jobs.append(job)
    return jobs


async def deliver_all(settings: Settings, receiver: SlowReceiver, n: int, timeout: float = 30) -> float:
    """Run a worker until the receiver has answered `n` calls; returns the first start to the last end."""
    async with in_process_worker(settings, {JobType.probe: compositor_jobs.probe}):
        deadline = time.monotonic() + timeout
        while len(receiver.calls) < n:
            assert time.monotonic() < deadline, f"{len(receiver.calls)} webhook calls, expected {n}"
            await asyncio.sleep(0.02)
    return max(end for _, end in receiver.spans) - min(start for start, _ in receiver.spans)


async def test_each_tenant_signs_with_its_own_secret(redis, settings, slow_receiver) -> None:
    tuned = hooked(settings, tenant_webhook_secrets={"alice": ALICE, "bob": BOB})
    jobs = await queue_ended_jobs(redis, slow_receiver, ["alice", "bob", "carol"])
    await deliver_all(tuned, slow_receiver, 3)
    received: dict[str, list[str]] = {}
    for headers, body in slow_receiver.calls:
        for name, secret in (("alice", ALICE), ("bob", BOB), ("default", DEFAULT)):
            try:
                payload = Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            received.setdefault(payload["data"]["id"], []).append(name)
    alice, bob, carol = (job.id for job in jobs)
    # each verifies with exactly one secret: its tenant's own, or the default for a tenant without one
    assert received == {alice: ["alice"], bob: ["bob"], carol: ["default"]}


async def test_slow_receivers_are_called_concurrently(redis, settings, slow_receiver) -> None:
    slow_receiver.delay = 1.0
    await queue_ended_jobs(redis, slow_receiver, ["alice"] * 6)
    span = await deliver_all(hooked(settings, webhook_concurrency=8), slow_receiver, 6)
    assert slow_receiver.most_active == 6
    assert span < 2 * slow_receiver.delay, f"6 deliveries of 1 s took {span:.2f} s: not concurrent"


async def test_concurrency_is_bounded(redis, settings, slow_receiver) -> None:
    slow_receiver.delay = 0.5
    await queue_ended_jobs(redis, slow_receiver, ["alice"] * 6)
    span = await deliver_all(hooked(settings, webhook_concurrency=2), slow_receiver, 6)
    assert slow_receiver.most_active == 2, "never more than MEDIAFLOW_WEBHOOK_CONCURRENCY in flight"
    assert span >= 3 * slow_receiver.delay * 0.95  # 6 deliveries, 2 at a time
    assert len({headers["webhook-id"] for headers, _ in slow_receiver.calls}) == 6  # each once
    assert await redis.xpending("mediaflow:webhooks", "deliverers") == {
        "pending": 0,
        "min": None,
        "max": None,
        "consumers": [],
    }


def test_webhook_secrets_are_checked_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MEDIAFLOW_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MEDIAFLOW_WEBHOOK_SECRET", DEFAULT)
    monkeypatch.setenv("MEDIAFLOW_TENANT_WEBHOOK_SECRETS", f"alice:{ALICE}, acme:corp:{BOB},")
    assert Settings().tenant_webhook_secrets == {"alice": ALICE, "acme:corp": BOB}  # a tenant may hold ':'
    assert Settings().webhook_concurrency == 8

    secretish = "whsec_not!base64"
    for malformed in (ALICE, f"alice:{secretish}", f"alice:{ALICE},bob:", f"alice:{ALICE},:{BOB}", "bob:whsec_QUJD"):
        monkeypatch.setenv("MEDIAFLOW_TENANT_WEBHOOK_SECRETS", malformed)
        with pytest.raises(ValidationError, match="not of the form tenant:whsec_") as caught:
            Settings()
        for part in (ALICE, BOB, secretish, "QUJD"):
            assert part not in str(caught.value), "a secret must never be echoed"

    monkeypatch.setenv("MEDIAFLOW_TENANT_WEBHOOK_SECRETS", f"alice:{ALICE}")
    monkeypatch.delenv("MEDIAFLOW_WEBHOOK_SECRET")
    with pytest.raises(ValidationError, match="needs MEDIAFLOW_WEBHOOK_SECRET"):
        Settings()
    monkeypatch.setenv("MEDIAFLOW_WEBHOOK_SECRET", DEFAULT)
    monkeypatch.setenv("MEDIAFLOW_WEBHOOK_CONCURRENCY", "0")
    with pytest.raises(ValidationError):
        Settings()
