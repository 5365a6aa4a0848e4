"""The official `openai` client against the real gateway (uvicorn) and a real gRPC transcriber."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from gateway_support import running_gateway

from mediaflow.common.grpc import start_server
from mediaflow.common.settings import Settings
from mediaflow.common.storage import open_storage
from mediaflow.transcriber.grpc_service import service_entry
from mediaflow.transcriber.model import get_models


@pytest.fixture(scope="session")
def models():
    return get_models(Settings())


@contextlib.asynccontextmanager
async def transcriber(settings: Settings, models) -> AsyncIterator[str]:
    server, port = await start_server(0, [service_entry(models, open_storage(settings.storage_url))], host="127.0.0.1")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_openai_client_round_trip(redis, settings, media, models):
    async with transcriber(settings, models) as target:
        settings = settings.model_copy(update={"transcriber_grpc": target})
        async with running_gateway(settings) as base:
            client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="key-alice", max_retries=0)
            with open(media / "jfk.flac", "rb") as fh:
                text = await client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
            assert "ask not what your country can do for you" in str(text).lower()

            with open(media / "jfk.flac", "rb") as fh:
                verbose = await client.audio.transcriptions.create(
                    model="whisper-1",
                    file=fh,
                    response_format="verbose_json",
                    language="en",
                    timestamp_granularities=["word", "segment"],
                )
            assert verbose.language == "english" and abs(verbose.duration - 11.0) < 0.05
            assert len(verbose.words) >= 20
            starts = [w.start for w in verbose.words]
            assert starts == sorted(starts) and all(0 <= w.start <= w.end <= 11.0 for w in verbose.words)
            assert verbose.segments and verbose.segments[0].text

            with open(media / "sonnet001_librivox.mp3", "rb") as fh:
                srt_text = await client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="srt")
            assert str(srt_text).startswith("1\n00:00:")
            with open(media / "jfk.flac", "rb") as fh:
                plain = await client.audio.transcriptions.create(model="whisper-1", file=fh)
            assert "country" in plain.text.lower()

            async with httpx.AsyncClient(base_url=base, timeout=60) as http:
                with open(media / "jfk.flac", "rb") as fh:
                    vtt = await http.post(
                        "/v1/audio/transcriptions",
                        files={"file": ("jfk.flac", fh)},
                        data={"response_format": "vtt"},
                        headers={"Authorization": "Bearer key-alice"},
                    )
                assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
                with open(media / "jfk.flac", "rb") as fh:
                    bad = await http.post(
                        "/v1/audio/transcriptions",
                        files={"file": ("jfk.flac", fh)},
                        data={"language": "xx"},
                        headers={"Authorization": "Bearer key-alice"},
                    )
                assert bad.status_code == 400 and bad.json()["code"] == "unsupported_language"
                with open(media / "jfk.flac", "rb") as fh:
                    anonymous = await http.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", fh)})
                assert anonymous.status_code == 401


async def test_long_media_gets_413_and_no_transcriber_gets_503(redis, settings, media, tmp_path):
    long_file = tmp_path / "long.mp3"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=8000:cl=mono",
            "-t",
            "30",
            "-b:a",
            "8k",
            str(long_file),
        ],
        check=True,
    )
    # nothing listens on port 9 of localhost (discard): the transcriber is unreachable
    settings = settings.model_copy(
        update={"sync_max_duration": 20.0, "transcriber_grpc": "127.0.0.1:9", "grpc_deadline": 3.0}
    )
    async with running_gateway(settings) as base:
        client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="key-alice", max_retries=0)
        with open(long_file, "rb") as fh, pytest.raises(openai.APIStatusError) as too_long:
            await client.audio.transcriptions.create(model="whisper-1", file=fh)
        assert too_long.value.status_code == 413
        body = too_long.value.response.json()
        assert body["code"] == "media_too_long" and "POST /v1/jobs" in body["hint"]
        with open(media / "jfk.flac", "rb") as fh, pytest.raises(openai.APIStatusError) as down:
            await client.audio.transcriptions.create(model="whisper-1", file=fh)
        assert down.value.status_code == 503
        assert down.value.response.json()["code"] == "transcriber_unavailable"
