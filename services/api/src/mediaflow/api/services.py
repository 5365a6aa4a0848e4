"""What the routes share, built once per app: settings, the Redis client, job store, dispatcher,
storage, key ring, metrics, the compositor probe client, the SSE hub and the back-pressure gauges."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis

from mediaflow.common.jobs.dispatch import Dispatcher
from mediaflow.common.jobs.store import JobStore
from mediaflow.common.settings import Settings
from mediaflow.common.storage import Storage, open_storage

from .auth import KeyRing
from .compositor_probe import CompositorProbe
from .event_hub import EventHub
from .media_records import MediaRecords
from .metrics import Metrics
from .pressure import Pressure


@dataclass
class Services:
    settings: Settings
    redis: Redis
    store: JobStore
    dispatcher: Dispatcher
    storage: Storage
    keyring: KeyRing
    metrics: Metrics
    compositor: CompositorProbe
    media: MediaRecords
    events: EventHub
    pressure: Pressure
    sse_ping: float = 15.0  # seconds between keepalive comments on idle event streams

    @classmethod
    def build(cls, settings: Settings) -> Services:
        # Short connect timeout: when Redis is down, requests fail fast with 503 instead of hanging.
        # The pool drops broken connections, so the app recovers by itself when Redis returns.
        redis = Redis.from_url(
            settings.redis_url, socket_connect_timeout=2.0, socket_timeout=15.0, health_check_interval=30
        )
        store = JobStore(redis)
        storage = open_storage(settings.storage_url)
        return cls(
            settings=settings,
            redis=redis,
            store=store,
            dispatcher=Dispatcher(
                redis, max_tries=settings.max_tries, priority_aging_seconds=settings.priority_aging_seconds
            ),
            storage=storage,
            keyring=KeyRing(settings),
            metrics=Metrics(),
            compositor=CompositorProbe(settings.compositor_grpc, settings.grpc_deadline, settings.grpc_token),
            media=MediaRecords(store),
            events=EventHub(settings.redis_url, redis, settings.sse_streams_per_tenant),
            pressure=Pressure(redis, storage, settings),
        )

    async def close(self) -> None:
        await self.compositor.close()
        await self.events.close()
        await self.redis.aclose()


async def services(request: Request) -> Services:
    return request.app.state.services
