"""GET /v1/media/{id}/content: the uploaded bytes, whole or by Range, for their tenant only."""

from __future__ import annotations

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_gateway, upload


@pytest.fixture
async def client(redis, settings):
    async with running_gateway(settings) as base, httpx.AsyncClient(base_url=base, timeout=30) as client:
        yield client


async def test_uploaded_media_is_served_whole_and_by_range(client, media):
    original = (media / "jfk.flac").read_bytes()
    m = (await upload(client, media / "jfk.flac")).json()
    whole = await client.get(f"/v1/media/{m['id']}/content", headers=ALICE)
    assert whole.status_code == 200 and whole.content == original
    assert whole.headers["content-type"].startswith("audio/")
    part = await client.get(f"/v1/media/{m['id']}/content", headers={**ALICE, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == original[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(original)}"
    assert_problem(await client.get(f"/v1/media/{m['id']}/content", headers=BOB), 404, "media_not_found")
    assert_problem(await client.get("/v1/media/m_missing/content", headers=ALICE), 404, "media_not_found")
