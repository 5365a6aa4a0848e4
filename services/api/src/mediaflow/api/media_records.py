"""Media records, read through a small in-process cache.

A media record never changes after its upload, so a gateway can keep the ones it has seen: a submit
that names an uploaded `media_id` then costs one Redis round trip (the job's enqueue script) instead of two.
Media can be deleted, though (`DELETE /v1/media/{id}`, retention): the gateway that deletes it forgets
it at once, and every other gateway reads a cached record again after `CACHE_SECONDS`.
The tenant check runs on every read, cached or not.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from mediaflow.common.errors import NotFound
from mediaflow.common.jobs.model import Media
from mediaflow.common.jobs.store import JobStore

CACHE_ENTRIES = 50_000
CACHE_SECONDS = 60.0


class MediaRecords:
    def __init__(self, store: JobStore, capacity: int = CACHE_ENTRIES, ttl: float = CACHE_SECONDS) -> None:
        self.store, self.capacity, self.ttl = store, capacity, ttl
        self._cache: OrderedDict[str, tuple[Media, float]] = OrderedDict()

    def _remember(self, media: Media) -> None:
        self._cache[media.id] = (media, time.monotonic() + self.ttl)
        self._cache.move_to_end(media.id)
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)

    def forget(self, media_id: str) -> None:
        self._cache.pop(media_id, None)

    async def put(self, media: Media) -> None:
        await self.store.put_media(media)
        self._remember(media)

    async def get(self, media_id: str, tenant: str) -> Media:
        cached = self._cache.get(media_id)
        if cached is not None and cached[1] > time.monotonic():
            media = cached[0]
        else:
            media = await self.store.get_media(media_id)
            self._remember(media)
        if media.tenant != tenant:
            # Another tenant's media is indistinguishable from a missing one.
            raise NotFound(f"media {media_id} does not exist", code="media_not_found")
        return media
