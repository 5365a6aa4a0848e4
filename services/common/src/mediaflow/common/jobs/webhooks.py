"""Signed webhooks: a job submitted with a `webhook_url` calls it when it ends.

The write that ends such a job also appends it to the `mediaflow:webhooks` stream, atomically
(store.py; keys.WEBHOOKS), so a notification is not lost with a crashed process. Every worker process delivers from
that stream as one consumer group: an entry is acknowledged once the receiver answers 2xx; otherwise it
stays pending and any worker claims it again after `webhook_retry_after` (XAUTOCLAIM), up to
`webhook_max_deliveries` times. Requests are signed per Standard Webhooks (`webhook-id`,
`webhook-timestamp`, `webhook-signature`, HMAC-SHA256 with MEDIAFLOW_WEBHOOK_SECRET). The id is the
stream entry's, the same on every try, so a receiver can drop duplicates. Webhook URLs go through the
URL-input policy (public addresses only, unless allow-listed) at submit and at every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from standardwebhooks.webhooks import Webhook

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
        self.signer = Webhook(settings.webhook_secret)

    async def run(self) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: another worker made it
            await self.redis.xgroup_create(keys.WEBHOOKS, GROUP, id="0", mkstream=True)
        while True:
            try:
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away, or a bug: keep the worker, try again shortly
                log.warning("webhook delivery round failed: %s", exc)
                await asyncio.sleep(1.0)

    async def _round(self) -> None:
        idle_ms = int(self.settings.webhook_retry_after * 1000)
        _, stale, *_ = await self.redis.xautoclaim(keys.WEBHOOKS, GROUP, self.consumer, idle_ms, count=10)
        fresh = await self.redis.xreadgroup(GROUP, self.consumer, {keys.WEBHOOKS: ">"}, count=10, block=1000)
        for entry_id, fields in [*stale, *(e for _, entries in fresh or [] for e in entries)]:
            if fields:  # None when the entry was trimmed away
                await self._deliver(entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
            else:
                await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)

    async def _deliver(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            job = await self.store.get(fields["job_id"])
        except NotFound:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            return
        if not job.webhook_url:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
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
            "webhook-signature": self.signer.sign(entry_id, now, body),
        }
        try:
            status = await asyncio.to_thread(self._post, job.webhook_url, body, headers)
            failure = None if 200 <= status < 300 else f"answered HTTP {status}"
        except MediaflowError as exc:
            failure = exc.message
        except Exception as exc:  # network errors, timeouts
            failure = f"{type(exc).__name__}: {exc}"
        target = redacted(job.webhook_url)
        if failure is None:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            await self.store.log(job.id, f"webhook delivered to {target} (job.{fields['state']})")
            return
        pending = await self.redis.xpending_range(keys.WEBHOOKS, GROUP, min=entry_id, max=entry_id, count=1)
        tries = pending[0]["times_delivered"] if pending else 1
        if tries >= self.settings.webhook_max_deliveries:
            await self.redis.xack(keys.WEBHOOKS, GROUP, entry_id)
            await self.store.log(job.id, f"webhook to {target} given up after {tries} tries: {failure}", "error")
        else:
            await self.store.log(
                job.id,
                f"webhook to {target} failed ({failure}); retrying in {self.settings.webhook_retry_after:g} s",
                "warning",
            )

    def _post(self, url: str, body: str, headers: dict[str, str]) -> int:
        with checked_client(self.settings, self.settings.webhook_timeout) as client:
            return client.post(url, content=body.encode(), headers=headers).status_code
