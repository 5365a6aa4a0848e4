"""Back-pressure before resources run out: Redis memory (used_memory against maxmemory) and free disk
on file:// storage, each read at most once a second. Above the watermarks the gateway reports not
ready, refuses submits with 503 + Retry-After and uploads with 507, instead of Redis refusing writes
half-way or a disk filling up."""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from mediaflow.common.settings import Settings
from mediaflow.common.storage import FileStorage, Storage

from .problems import Problem

CACHE_S = 1.0
RETRY_AFTER_S = "5"


@dataclass
class Reading:
    at: float
    value: str | None  # None = fine, else why not


class Pressure:
    def __init__(self, redis: Redis, storage: Storage, settings: Settings) -> None:
        self.redis, self.storage, self.settings = redis, storage, settings
        self._memory = Reading(-CACHE_S, None)
        self._disk = Reading(-CACHE_S, None)
        self._lock = asyncio.Lock()

    async def memory(self) -> str | None:
        """Why Redis is too full to take more, or None. Redis errors propagate (503 store_unavailable)."""
        if time.monotonic() - self._memory.at < CACHE_S:
            return self._memory.value
        async with self._lock:
            if time.monotonic() - self._memory.at >= CACHE_S:
                info = await self.redis.info("memory")
                used, limit = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
                value = None
                if limit and used >= limit * self.settings.redis_memory_watermark:
                    value = f"Redis uses {used} of {limit} bytes (watermark {self.settings.redis_memory_watermark:.0%})"
                self._memory = Reading(time.monotonic(), value)
        return self._memory.value

    def disk(self) -> str | None:
        """Why the storage disk is too full for more, or None (only file:// storage is measured)."""
        if not isinstance(self.storage, FileStorage):
            return None
        if time.monotonic() - self._disk.at >= CACHE_S:
            free = shutil.disk_usage(self.storage.root).free
            floor = self.settings.min_free_disk_bytes
            value = f"{free} bytes free on the storage disk, below {floor}" if free < floor else None
            self._disk = Reading(time.monotonic(), value)
        return self._disk.value

    async def check_submit(self) -> None:
        """503 with Retry-After when a new job could not be kept (Redis memory) or run (disk)."""
        if why := await self.memory():
            raise Problem(
                503, "store_full", f"the job store is nearly full: {why}", headers={"Retry-After": RETRY_AFTER_S}
            )
        if why := self.disk():
            raise Problem(503, "storage_full", f"storage is nearly full: {why}", headers={"Retry-After": RETRY_AFTER_S})

    async def check_upload(self) -> None:
        """507 when the upload would eat the last free disk; 503 when Redis cannot take its record."""
        if why := self.disk():
            raise Problem(507, "insufficient_storage", f"storage is nearly full: {why}")
        if why := await self.memory():
            raise Problem(
                503, "store_full", f"the job store is nearly full: {why}", headers={"Retry-After": RETRY_AFTER_S}
            )
