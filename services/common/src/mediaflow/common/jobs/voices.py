"""The speakers registry: named voice prints per tenant (`POST /v1/speakers`), one Redis hash
`voices:{tenant}` of speaker id -> JSON. The gateway enrolls and deletes; the transcriber makes a clip's
entry ready (`enroll` jobs) and reads the ready prints to name the speakers it finds."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from ..errors import NotFound
from ..ids import new_id
from . import keys
from .model import utcnow

VoiceState = Literal["pending", "ready", "failed"]
# A diarized transcribe job's artifacts that speakers are enrolled and renamed from (the transcriber
# writes them; the gateway reads them).
SPEAKERS_ARTIFACT = "speakers.json"
TRANSCRIPT_ARTIFACT = "transcript.json"

# Writes an entry only while it still exists: a speaker deleted while its clip was being embedded
# stays deleted.
_UPDATE_SCRIPT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def new_voice_id() -> str:
    return new_id("v")


class Voice(BaseModel):
    id: str
    name: str
    state: VoiceState = "pending"
    seconds: float = 0.0  # speech behind the voice print
    source: dict[str, Any] = Field(default_factory=dict)  # {"media_id"} or {"job_id", "speaker"}
    job_id: str | None = None  # the enroll job embedding a clip
    error: dict[str, Any] | None = None
    created_at: datetime = Field(default_factory=utcnow)
    # L2-normalised speaker embedding (CAM++, 192 values); internal, never rendered to clients
    embedding: list[float] = Field(default_factory=list, exclude=True)

    def internal_json(self) -> str:
        data = self.model_dump(mode="json")
        data["embedding"] = [round(x, 6) for x in self.embedding]
        return json.dumps(data, separators=(",", ":"))

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class VoiceRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._update = redis.register_script(_UPDATE_SCRIPT)

    async def put(self, tenant: str, voice: Voice) -> None:
        await self.redis.hset(keys.voices(tenant), voice.id, voice.internal_json())  # type: ignore[misc]

    async def get(self, tenant: str, voice_id: str) -> Voice:
        raw = await self.redis.hget(keys.voices(tenant), voice_id)  # type: ignore[misc]
        if raw is None:
            raise NotFound(f"speaker {voice_id} does not exist", code="speaker_not_found")
        return Voice.model_validate_json(raw)

    async def all(self, tenant: str) -> list[Voice]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(keys.voices(tenant))  # type: ignore[misc]
        return sorted((Voice.model_validate_json(v) for v in raw.values()), key=lambda v: v.id)

    async def ready(self, tenant: str) -> list[Voice]:
        return [v for v in await self.all(tenant) if v.state == "ready" and v.embedding]

    async def update(self, tenant: str, voice: Voice) -> bool:
        """Write `voice` back unless it was deleted meanwhile (then False)."""
        return bool(await self._update(keys=[keys.voices(tenant)], args=[voice.id, voice.internal_json()]))

    async def delete(self, tenant: str, voice_id: str) -> None:
        if not await self.redis.hdel(keys.voices(tenant), voice_id):  # type: ignore[misc]
            raise NotFound(f"speaker {voice_id} does not exist", code="speaker_not_found")
