"""Schemathesis over the gateway's OpenAPI document: every check and the stateful phase, against a
real gateway (uvicorn on a free port, real Valkey, file storage) with a compositor worker running
probe jobs. Zero failures in at least 1,000 generated requests."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import httpx
import pytest
from gateway_support import ALICE, running_compositor, running_gateway, upload

from mediaflow.common.settings import Settings

HERE = Path(__file__).parent
MIN_REQUESTS = 1000
# Schema-valid bodies a gateway still refuses, for reasons no schema can state: a URL whose host does
# not resolve or is private, a server path outside the allowed roots, a search query without a word...
# answer 422 (or 403/404).
# A 413 (a batch over its size, a body over its limit) is a rejection too; a file that is not media
# is schema-valid and refused with 415.
ACCEPTED = '"2xx", "3xx", "401", "403", "404", "409", "429", "5xx"'
CONFIG = f"""
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-name = [
  "POST /v1/jobs", "POST /v1/batches", "GET /v1/search", "POST /v1/speakers", "PATCH /v1/jobs/{{job_id}}/speakers"
]
checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "422"]

[[operations]]
include-name = "POST /v1/media"
checks.positive_data_acceptance.expected-statuses = [{ACCEPTED}, "415"]
"""

pytestmark = pytest.mark.timeout(900)


async def test_schemathesis_finds_nothing(settings: Settings, redis, media: Path, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"url_inputs": False})
    async with running_gateway(settings) as url, running_compositor(settings):
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            media_id = (await upload(client, media / "jfk.flac")).json()["id"]
        (tmp_path / "schemathesis.toml").write_text(CONFIG)
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "schemathesis_hooks", "MEDIAFLOW_FUZZ_MEDIA_ID": media_id}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "schemathesis"),
            "--config-file",
            str(tmp_path / "schemathesis.toml"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "60",
            "--seed",
            "11",
            "--workers",
            "1",
            "--request-timeout",
            "10",
            "--exclude-path-regex",
            "/events$|/audio/transcriptions$",
            "--header",
            ALICE["Authorization"].join(["Authorization: ", ""]),
            "--generation-allow-x00",
            "false",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    print(text)
    assert proc.returncode == 0, text[-20000:]
    generated = re.search(r"(\d+) generated", text)
    assert generated and int(generated.group(1)) >= MIN_REQUESTS, text[-3000:]
