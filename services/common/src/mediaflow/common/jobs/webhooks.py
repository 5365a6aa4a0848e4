"""Signed webhooks: a job submitted with a `webhook_url` calls it when it ends.

The write that ends such a job also appends it to the `mediaflow:webhooks` stream, atomically
(store.py; keys.WEBHOOKS), so a notification is not lost with a crashed process. Every worker process delivers from
that stream as one consumer group: an entry is acknowledged once the receiver answers 2xx; otherwise it
stays pending and any worker claims it again after `webhook_retry_after` (XAUTOCLAIM), up to
`webhook_max_deliveries` times. A worker has up to `webhook_concurrency` deliveries in flight at once
(each in its own thread of a pool that size), so one slow receiver does not hold up the others.
Requests are signed per Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
HMAC-SHA256) with the job's tenant's secret (MEDIAFLOW_TENANT_WEBHOOK_SECRETS), or MEDIAFLOW_WEBHOOK_SECRET
for a tenant without one. The id is the stream entry's, the same on every try, so a receiver can drop
duplicates. Webhook URLs go through the URL-input policy (public addresses only, unless allow-listed) at
submit and at every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from standardwebhooks.webhooks import Webhook

from .. import metrics
from ..errors import MediaflowError, NotFound
from ..fetch import UrlPolicy, checked_client, redacted
from ..settings import Settings
from . import keys
from .store import JobStore

log = logging.getLogger("mediaflow.webhooks")
GROUP = "deliverers"


class WebhooksDisabled(MediaflowError):
    status, code = 422, "webhooks_disabled"


def check_webhook_url(url: Any, settings: Settings) -> str:
    """Submit-time check (blocking: it resolves the host)."""
    if not settings.webhook_secret:
        raise WebhooksDisabled("webhooks are not configured on this server (MEDIAFLOW_WEBHOOK_SECRET)")
    return dataclasses.replace(UrlPolicy.from_settings(settings), enabled=True).check(url)


class WebhookDeliverer:
    """Delivers due webhooks; one per worker process, all in one consumer group."""

    def __init__(self, redis: Redis, store: JobStore, settings: Settings, consumer: str) -> None:
        self.redis, self.store, self.settings, self.consumer = redis, store, settings, consumer
        self.default_signer = Webhook(settings.webhook_secret)
        self.signers = {tenant: Webhook(secret) for tenant, secret in settings.tenant_webhook_secrets.items()}
        self.concurrency = max(1, settings.webhook_concurrency)
        self.inflight: dict[str, asyncio.Task[None]] = {}  # stream entry id -> its delivery
        self._executor: ThreadPoolExecutor | None = None

    def signer_for(self, tenant: str) -> Webhook:
        return self.signers.get(tenant, self.default_signer)

    async def run(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker made it
            await self.redis.xgroup_create(keys.WEBHOOKS, GROUP, id="0", mkstream=True)
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook")
        try:
            while True:
                try:
                    await self._round()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis away, or a bug: keep the worker, try again shortly
                    log.warning("webhook delivery round failed: %s", exc)
                    await asyncio.sleep(1.0)
        finally:
            # Deliveries cut short stay pending (never acknowledged): another worker retries them.
            tasks = list(self.inflight.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def _round(self) -> None:
        """Wait for a free slot, then start a delivery for each due entry, up to the free slots:
        first those pending past `webhook_retry_after`, then new ones (blocking up to 1 s)."""
        if len(self.inflight) >= self.concurrency:
            await asyncio.wait(list(self.inflight.values()), return_when=asyncio.FIRST_COMPLETED)
        free = self.concurrency - len(self.inflight)
        if free <= 0:
            return
        idle_ms = int(self.settings.webhook_retry_after * 1000)
        _, stale, *_ = await self.redis.xautoclaim(keys.WEBHOOKS, GROUP, self.consumer, idle_ms, count=free)
        entries = [(i, f) for i, f in stale if i.decode() not in self.inflight]  # ours, still in flight
        if len(entries) < free:
            fresh = await self.redis.xreadgroup(
                GROUP,
                self.consumer,
                {keys.WEBHOOKS: ">"},
                count=free - len(entries),
                block=None if entries else 1000,
            )
            entries += [e for _, stream_entries in fresh or [] for e in stream_entries]
        for raw_id, fields in entries:
            entry_id = raw_id.decode()
            if not fields:  # None when the entry was trimmed away
                await self.redis.xack(keys.WEBHOOKS, GROUP, raw_id)
                continue
            task = asyncio.create_task(self._deliver(entry_id, {k.decode(): v.decode() for k, v in fields.items()}))
            self.inflight[entry_id] = task
            task.add_done_callback(functools.partial(self._finished, entry_id))

    def _finished(self, entry_id: str, task: asyncio.Task[None]) -> None:
        self.inflight.pop(entry_id, None)
        if not task.cancelled() and task.exception() is not None:  # Redis away mid-delivery: retried later
            log.warning("webhook delivery %s failed: %s", entry_id, task.exception())

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            job = await self.store.get(fields["job_id"])
        except NotFound:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
            return
        if not job.webhook_url:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            metrics.WEBHOOK_DELIVERIES.labels("dropped").inc()
            return
        now = datetime.now(UTC)
        body = json.dumps(
            {"type": f"job.{fields['state']}", "timestamp": now.isoformat(), "data": job.public()},
            separators=(",", ":"),
        )
        headers = {
            "content-type": "application/json",
            "webhook-id": entry_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self.signer_for(job.tenant).sign(entry_id, now, body),
        }
        try:
            loop = asyncio.get_running_loop()
            status = await loop.run_in_executor(self._executor, self._post, job.webhook_url, body, headers)
            failure = None if 200 <= status < 300 else f"answered HTTP {status}"
        except MediaflowError as exc:
            failure = exc.message
        except Exception as exc:  # network errors, timeouts
            failure = f"{type(exc).__name__}: {exc}"
        target = redacted(job.webhook_url)
        if failure is None:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            await self.store.log(job.id, f"webhook delivered to {target} (job.{fields['state']})")
            return
        pending = await self.redis.xpending_range(keys.WEBHOOKS, GROUP, min=entry_id, max=entry_id, count=1)
        tries = pending[0]["times_delivered"] if pending else 1
        if tries >= self.settings.webhook_max_deliveries:
            metrics.WEBHOOK_DELIVERIES.labels("gave_up").inc()
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            await self.store.log(job.id, f"webhook to {target} given up after {tries} tries: {failure}", "error")
        else:
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            await self.store.log(
                job.id,
                f"webhook to {target} failed ({failure}); retrying in {self.settings.webhook_retry_after:g} s",
                "warning",
            )

    def _post(self, url: str, body: str, headers: dict[str, str]) -> int:
        with checked_client(self.settings, self.settings.webhook_timeout) as client:
            return client.post(url, content=body.encode(), headers=headers).status_code
